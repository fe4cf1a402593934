//! `/v2.0/extensions`: only what Neutrino really implements.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use neutrino_model::Error;
use serde_json::{Value, json};

use super::{Ctx, respond};
use crate::error::ApiResult;
use crate::server::App;

/// (alias, name, updated, description)
pub const CORE: &[(&str, &str, &str, &str)] = &[
    (
        "project-id",
        "project_id field enabled",
        "2016-09-09T09:09:09-09:09",
        "Resources carry project_id as well as tenant_id.",
    ),
    (
        "pagination",
        "Pagination support",
        "2016-06-12T00:00:00-00:00",
        "List requests accept limit, marker and page_reverse.",
    ),
    ("sorting", "Sorting support", "2016-06-12T00:00:00-00:00", "List requests accept sort_key and sort_dir."),
    ("sort-key-validation", "Sort keys validation", "2018-07-04T10:00:00-00:00", "Unknown sort keys are refused."),
    ("filter-validation", "Filter parameters validation", "2018-07-04T10:00:00-00:00", "Unknown filters are refused."),
    (
        "empty-string-filtering",
        "Empty String Filtering Extension",
        "2018-05-01T10:00:00-00:00",
        "An empty filter value matches empty strings.",
    ),
    (
        "ip-substring-filtering",
        "IP address substring filtering",
        "2017-11-28T09:00:00-00:00",
        "Ports can be filtered by part of an address.",
    ),
    (
        "standard-attr-description",
        "standard-attr-description",
        "2016-02-10T10:00:00-00:00",
        "Resources have a description.",
    ),
    (
        "standard-attr-timestamp",
        "Resource timestamps",
        "2016-09-12T10:00:00-00:00",
        "Resources have created_at and updated_at.",
    ),
    (
        "standard-attr-revisions",
        "Resource revision numbers",
        "2016-04-11T10:00:00-00:00",
        "Resources have a revision_number.",
    ),
    (
        "revision-if-match",
        "If-Match constraints based on revision_number",
        "2016-12-11T00:00:00-00:00",
        "Updates and deletes honour If-Match: revision_number=N.",
    ),
    (
        "standard-attr-tag",
        "Tag support for resources with standard attribute: network, subnet, port, subnetpool, segment, router, floatingip, security_group",
        "2017-01-01T00:00:00-00:00",
        "Resources can be tagged.",
    ),
    (
        "tag-creation",
        "Tag creation extension",
        "2024-07-23T10:00:00-00:00",
        "Several tags can be added in one request.",
    ),
    (
        "tag-ports-during-bulk-creation",
        "Tag Ports During Bulk Creation",
        "2019-12-29T19:00:00-00:00",
        "Ports accept tags when created.",
    ),
    ("provider", "Provider Network", "2012-09-07T10:00:00-00:00", "Admins choose a network's segment."),
    ("multi-provider", "Multi Provider Network", "2013-06-27T10:00:00-00:00", "Networks may have several segments."),
    ("segment", "Segment", "2016-02-24T17:00:00-00:00", "Segments are resources of their own."),
    (
        "standard-attr-segment",
        "Standard Attribute Segment Extension",
        "2018-04-09T10:00:00-00:00",
        "Segments have standard attributes.",
    ),
    (
        "subnet-segmentid-writable",
        "Subnet SegmentID (writable)",
        "2018-03-12T00:00:00-00:00",
        "A subnet's segment can be changed.",
    ),
    ("external-net", "Neutron external network", "2013-01-14T10:00:00-00:00", "Networks can be marked external."),
    (
        "port-security",
        "Port Security",
        "2012-07-23T10:00:00-00:00",
        "Port security can be switched off per network or port.",
    ),
    (
        "allowed-address-pairs",
        "Allowed Address Pairs",
        "2013-07-23T10:00:00-00:00",
        "Ports may send from extra addresses.",
    ),
    ("extra_dhcp_opt", "Neutron Extra DHCP options", "2013-03-17T12:00:00-00:00", "Ports carry extra DHCP options."),
    ("binding", "Port Binding", "2014-02-03T10:00:00-00:00", "Ports are bound to hosts."),
    ("net-mtu", "Network MTU", "2015-03-25T10:00:00-00:00", "Networks report their MTU."),
    ("net-mtu-writable", "Network MTU (writable)", "2017-07-12T00:00:00-00:00", "A network's MTU can be set."),
    ("quotas", "Quota management support", "2012-07-29T10:00:00-00:00", "Per-project limits."),
    ("quota_details", "Quota details management support", "2017-02-10T10:00:00-00:00", "Quota usage details."),
    ("network-ip-availability", "Network IP Availability", "2015-09-24T00:00:00-00:00", "Address usage per network."),
    (
        "subnet_allocation",
        "Subnet Allocation",
        "2015-03-30T10:00:00-00:00",
        "Subnets can take their CIDR from a subnet pool.",
    ),
    ("default-subnetpools", "Default Subnetpools", "2016-02-18T18:00:00-00:00", "Subnets can use the default pool."),
    (
        "subnet-service-types",
        "Subnet service types",
        "2016-03-15T18:00:00-00:00",
        "Subnets can be reserved to device owners.",
    ),
    (
        "subnet-external-network",
        "Subnet belongs to an external network",
        "2024-02-05T18:00:00-00:00",
        "Subnets of external networks are visible to all.",
    ),
    ("ip_allocation", "IP Allocation", "2016-06-10T23:00:00-00:00", "Ports report how their addresses were allocated."),
    ("l2_adjacency", "L2 Adjacency", "2016-04-12T16:00:00-00:00", "Networks report whether they are one L2 domain."),
    (
        "service-type",
        "Neutron Service Type Management",
        "2013-01-20T00:00:00-00:00",
        "Lists the providers of services.",
    ),
    ("availability_zone", "Availability Zone", "2015-01-01T10:00:00-00:00", "Availability zones of agents."),
    (
        "network_availability_zone",
        "Network Availability Zone",
        "2015-01-01T10:00:00-00:00",
        "Networks carry availability zone hints.",
    ),
    (
        "dns-integration",
        "DNS Integration",
        "2015-08-15T18:00:00-00:00",
        "Ports have a DNS name and report the names of their addresses; networks have a DNS domain.",
    ),
    (
        "dns-domain-ports",
        "dns_domain for ports",
        "2017-04-24T10:00:00-00:00",
        "Ports can be given a DNS domain of their own.",
    ),
];

/// Every advertised extension: the core's and each module's own.
fn all() -> impl Iterator<Item = &'static (&'static str, &'static str, &'static str, &'static str)> {
    CORE.iter()
        .chain(super::security_groups::EXTENSIONS)
        .chain(super::routers::EXTENSIONS)
        .chain(super::floatingips::EXTENSIONS)
        .chain(super::agents::EXTENSIONS)
        .chain(super::rbac::EXTENSIONS)
}

fn entry(e: &(&str, &str, &str, &str)) -> Value {
    json!({"alias": e.0, "name": e.1, "updated": e.2, "description": e.3, "links": []})
}

pub async fn list(State(_app): State<Arc<App>>, _ctx: Ctx) -> ApiResult<Response> {
    Ok(respond(StatusCode::OK, json!({"extensions": all().map(entry).collect::<Vec<_>>()})))
}

pub async fn show(_ctx: Ctx, Path(alias): Path<String>) -> ApiResult<Response> {
    let e = all().find(|e| e.0 == alias).ok_or(Error::HttpNotFound)?;
    Ok(respond(StatusCode::OK, json!({"extension": entry(e)})))
}
