//! Attribute tables of the Neutron resources: which attributes exist, which
//! may be set on create and update, which are required, and which can be
//! filtered and sorted on. The request pipeline and the list machinery are
//! driven by these tables, as Neutron's are by its attribute maps.

/// How a filter value is converted before comparing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterKind {
    /// Not filterable.
    No,
    /// Exact string match.
    Text,
    /// String match after lower-casing the filter value, for attributes
    /// stored in lower case (DNS names and domains).
    Lower,
    Bool,
    Int,
    /// MAC addresses, compared in canonical form.
    Mac,
    /// CIDRs, compared in canonical form.
    Cidr,
    /// IP addresses, compared in canonical form.
    Ip,
    /// The attribute is a list; matches when it contains the value.
    Member,
    /// Special handling (fixed_ips, tags, ...).
    Special,
}

#[derive(Debug, Clone, Copy)]
pub struct Attr {
    pub name: &'static str,
    /// May appear in a create body.
    pub post: bool,
    /// May appear in an update body.
    pub put: bool,
    /// Must appear in a create body.
    pub required: bool,
    pub filter: FilterKind,
    pub sort: bool,
}

/// Shorthand constructor: `attr(name, post, put, filter, sort)`.
pub const fn attr(name: &'static str, post: bool, put: bool, filter: FilterKind, sort: bool) -> Attr {
    Attr { name, post, put, required: false, filter, sort }
}

pub const fn required(name: &'static str, filter: FilterKind, sort: bool) -> Attr {
    Attr { name, post: true, put: false, required: true, filter, sort }
}

use FilterKind::*;

/// Standard attributes shared by resources that have them.
pub const STANDARD: &[Attr] = &[
    attr("description", true, true, Text, true),
    attr("created_at", false, false, Text, true),
    attr("updated_at", false, false, Text, true),
    attr("revision_number", false, false, Int, true),
    attr("tags", false, false, Special, false),
];

pub struct ResourceSpec {
    pub singular: &'static str,
    pub plural: &'static str,
    /// URL collection name (hyphenated where Neutron hyphenates).
    pub collection: &'static str,
    pub attrs: &'static [Attr],
    /// Whether the resource has standard attributes.
    pub standard: bool,
    /// Whether `project_id`/`tenant_id` are attributes.
    pub owned: bool,
    /// Whether `project_id`/`tenant_id` are returned.
    pub shows_project: bool,
}

impl ResourceSpec {
    pub fn find(&self, name: &str) -> Option<Attr> {
        if self.owned && (name == "project_id" || name == "tenant_id") {
            return Some(attr(if name == "project_id" { "project_id" } else { "tenant_id" }, true, false, Text, true));
        }
        self.attrs
            .iter()
            .copied()
            .find(|a| a.name == name)
            .or_else(|| if self.standard { STANDARD.iter().copied().find(|a| a.name == name) } else { None })
    }
}

pub const NETWORK: ResourceSpec = ResourceSpec {
    singular: "network",
    plural: "networks",
    collection: "networks",
    standard: true,
    owned: true,
    shows_project: true,
    attrs: &[
        attr("id", false, false, Text, true),
        attr("name", true, true, Text, true),
        attr("admin_state_up", true, true, Bool, true),
        attr("status", false, false, Text, true),
        attr("shared", true, true, Bool, false),
        attr("subnets", false, false, Member, false),
        attr("mtu", true, true, Int, true),
        attr("router:external", true, true, Bool, false),
        attr("provider:network_type", true, true, Text, false),
        attr("provider:physical_network", true, true, Text, false),
        attr("provider:segmentation_id", true, true, Int, false),
        attr("segments", true, true, No, false),
        attr("port_security_enabled", true, true, Bool, false),
        attr("availability_zone_hints", true, false, No, true),
        attr("availability_zones", false, false, No, false),
        attr("l2_adjacency", false, false, No, false),
        // `dns-integration`
        attr("dns_domain", true, true, Lower, false),
    ],
};

pub const SUBNET: ResourceSpec = ResourceSpec {
    singular: "subnet",
    plural: "subnets",
    collection: "subnets",
    standard: true,
    owned: true,
    shows_project: true,
    attrs: &[
        attr("id", false, false, Text, true),
        attr("name", true, true, Text, true),
        required("network_id", Text, true),
        required("ip_version", Int, true),
        attr("cidr", true, false, Cidr, true),
        attr("prefixlen", true, false, No, false),
        attr("subnetpool_id", true, false, Text, true),
        attr("use_default_subnetpool", true, false, No, false),
        attr("gateway_ip", true, true, Ip, true),
        attr("allocation_pools", true, true, No, false),
        attr("dns_nameservers", true, true, No, false),
        attr("host_routes", true, true, No, false),
        attr("enable_dhcp", true, true, Bool, true),
        attr("ipv6_ra_mode", true, false, Text, true),
        attr("ipv6_address_mode", true, false, Text, true),
        attr("segment_id", true, true, Text, true),
        attr("service_types", true, true, Member, false),
        attr("router:external", false, false, Bool, false),
        attr("shared", false, false, Special, false),
    ],
};

pub const SUBNETPOOL: ResourceSpec = ResourceSpec {
    singular: "subnetpool",
    plural: "subnetpools",
    collection: "subnetpools",
    standard: true,
    owned: true,
    shows_project: true,
    attrs: &[
        attr("id", false, false, Text, true),
        Attr { name: "name", post: true, put: true, required: true, filter: Text, sort: true },
        Attr { name: "prefixes", post: true, put: true, required: true, filter: No, sort: false },
        attr("ip_version", false, false, Int, true),
        attr("default_prefixlen", true, true, Int, true),
        attr("min_prefixlen", true, true, Int, true),
        attr("max_prefixlen", true, true, Int, true),
        attr("default_quota", true, true, Int, true),
        attr("is_default", true, true, Bool, true),
        attr("shared", true, false, Bool, true),
    ],
};

pub const PORT: ResourceSpec = ResourceSpec {
    singular: "port",
    plural: "ports",
    collection: "ports",
    standard: true,
    owned: true,
    shows_project: true,
    attrs: &[
        attr("id", false, false, Text, true),
        attr("name", true, true, Text, true),
        required("network_id", Text, true),
        attr("admin_state_up", true, true, Bool, true),
        attr("mac_address", true, true, Mac, true),
        attr("fixed_ips", true, true, Special, false),
        attr("device_id", true, true, Text, true),
        attr("device_owner", true, true, Text, true),
        attr("status", false, false, Text, true),
        attr("port_security_enabled", true, true, Bool, false),
        attr("security_groups", true, true, Member, false),
        attr("allowed_address_pairs", true, true, No, false),
        attr("extra_dhcp_opts", true, true, No, false),
        attr("binding:host_id", true, true, Text, false),
        attr("binding:profile", true, true, No, false),
        attr("binding:vnic_type", true, true, Text, false),
        attr("binding:vif_type", false, false, Text, false),
        attr("binding:vif_details", false, false, No, false),
        attr("ip_allocation", false, false, Text, true),
        // `dns-integration`, `dns-domain-ports`
        attr("dns_name", true, true, Lower, false),
        attr("dns_assignment", false, false, No, false),
        attr("dns_domain", true, true, Lower, false),
        // Ports alone may be tagged while being created.
        attr("tags", true, false, Special, false),
    ],
};

pub const SEGMENT: ResourceSpec = ResourceSpec {
    singular: "segment",
    plural: "segments",
    collection: "segments",
    standard: true,
    owned: true,
    shows_project: false,
    attrs: &[
        attr("id", false, false, Text, true),
        attr("name", true, true, Text, true),
        required("network_id", Text, true),
        required("network_type", Text, true),
        attr("physical_network", true, false, Text, true),
        attr("segmentation_id", true, false, Int, true),
    ],
};
