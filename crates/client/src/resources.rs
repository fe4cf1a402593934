//! Neutron resources: the same five operations on every collection,
//! selected by the model's typed id, plus the few operations that are not
//! one of those (router interfaces, quotas).

use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;

use neutrino_model::{
    AgentId, FloatingIpId, NetworkId, PortId, ProjectId, RbacPolicyId, RouterId, SecurityGroupId, SecurityGroupRuleId,
    SegmentId, SubnetId, SubnetPoolId,
};
use reqwest::Method;
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::neutron::{Client, with_query};

/// An id that names a Neutron collection: where it lives and the JSON keys
/// of its bodies.
pub trait ResourceId: fmt::Display + FromStr + Send + Sync + 'static {
    /// Key of one resource in a body (`port`).
    const SINGULAR: &'static str;
    /// Key of a list in a body (`ports`, `security_groups`).
    const PLURAL: &'static str;
    /// Path of the collection (`/v2.0/security-groups`).
    const PATH: &'static str;
}

macro_rules! resource_ids {
    ($($id:ty => $singular:literal, $plural:literal, $path:literal;)*) => {
        $(impl ResourceId for $id {
            const SINGULAR: &'static str = $singular;
            const PLURAL: &'static str = $plural;
            const PATH: &'static str = $path;
        })*
    };
}

resource_ids! {
    NetworkId => "network", "networks", "/v2.0/networks";
    SubnetId => "subnet", "subnets", "/v2.0/subnets";
    SubnetPoolId => "subnetpool", "subnetpools", "/v2.0/subnetpools";
    SegmentId => "segment", "segments", "/v2.0/segments";
    PortId => "port", "ports", "/v2.0/ports";
    RouterId => "router", "routers", "/v2.0/routers";
    FloatingIpId => "floatingip", "floatingips", "/v2.0/floatingips";
    SecurityGroupId => "security_group", "security_groups", "/v2.0/security-groups";
    SecurityGroupRuleId => "security_group_rule", "security_group_rules", "/v2.0/security-group-rules";
    RbacPolicyId => "rbac_policy", "rbac_policies", "/v2.0/rbac-policies";
    AgentId => "agent", "agents", "/v2.0/agents";
}

/// One collection of a [`Client`]. Bodies go in and come out without their
/// envelope: `create(json!({"name": "n"}))` sends `{"network": {"name": "n"}}`
/// and returns the network object. Any answer other than a success is an
/// [`Error::Status`].
pub struct Collection<I> {
    client: Client,
    id: PhantomData<fn() -> I>,
}

impl<I: ResourceId> Collection<I> {
    pub async fn create(&self, body: Value) -> Result<Value> {
        let answer = self.client.call(Method::POST, I::PATH, Some(&json!({ I::SINGULAR: body }))).await?;
        unwrap(answer, I::SINGULAR, "POST", I::PATH)
    }

    /// One request creating all of `bodies`, all or none.
    pub async fn create_bulk(&self, bodies: Vec<Value>) -> Result<Vec<Value>> {
        let answer = self.client.call(Method::POST, I::PATH, Some(&json!({ I::PLURAL: bodies }))).await?;
        unwrap_list(answer, I::PLURAL, "POST", I::PATH)
    }

    pub async fn show(&self, id: &I) -> Result<Value> {
        let path = member(id);
        unwrap(self.client.call(Method::GET, &path, None).await?, I::SINGULAR, "GET", &path)
    }

    /// The resources matching `filters` (`[("network_id", &id)]`; a key may
    /// repeat, as in `fields`).
    pub async fn list(&self, filters: &[(&str, &str)]) -> Result<Vec<Value>> {
        let path = with_query(I::PATH, filters);
        unwrap_list(self.client.call(Method::GET, &path, None).await?, I::PLURAL, "GET", &path)
    }

    pub async fn update(&self, id: &I, body: Value) -> Result<Value> {
        let path = member(id);
        let answer = self.client.call(Method::PUT, &path, Some(&json!({ I::SINGULAR: body }))).await?;
        unwrap(answer, I::SINGULAR, "PUT", &path)
    }

    pub async fn delete(&self, id: &I) -> Result<()> {
        self.client.call(Method::DELETE, &member(id), None).await.map(drop)
    }
}

fn member<I: ResourceId>(id: &I) -> String {
    format!("{}/{id}", I::PATH)
}

fn unwrap(mut answer: Value, key: &str, method: &str, path: &str) -> Result<Value> {
    match answer.get_mut(key) {
        Some(inner) if inner.is_object() => Ok(inner.take()),
        _ => Err(unexpected(method, path, format!("no {key:?} object in {answer}"))),
    }
}

fn unwrap_list(mut answer: Value, key: &str, method: &str, path: &str) -> Result<Vec<Value>> {
    match answer.get_mut(key).map(Value::take) {
        Some(Value::Array(items)) => Ok(items),
        _ => Err(unexpected(method, path, format!("no {key:?} list in {answer}"))),
    }
}

fn unexpected(method: &str, path: &str, detail: String) -> Error {
    Error::Unexpected { what: format!("{method} {path}"), detail }
}

/// The typed id of a resource body (`id_of::<NetworkId>(&network)`).
pub fn id_of<I: FromStr>(resource: &Value) -> Result<I> {
    parse_at(resource, "/id")
}

/// The string at JSON `pointer`, parsed.
fn parse_at<T: FromStr>(value: &Value, pointer: &str) -> Result<T> {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::Unexpected { what: format!("{pointer} of a resource"), detail: value.to_string() })
}

impl Client {
    pub fn collection<I: ResourceId>(&self) -> Collection<I> {
        Collection { client: self.clone(), id: PhantomData }
    }

    pub fn networks(&self) -> Collection<NetworkId> {
        self.collection()
    }
    pub fn subnets(&self) -> Collection<SubnetId> {
        self.collection()
    }
    pub fn ports(&self) -> Collection<PortId> {
        self.collection()
    }
    pub fn routers(&self) -> Collection<RouterId> {
        self.collection()
    }
    pub fn floating_ips(&self) -> Collection<FloatingIpId> {
        self.collection()
    }
    pub fn security_groups(&self) -> Collection<SecurityGroupId> {
        self.collection()
    }
    pub fn security_group_rules(&self) -> Collection<SecurityGroupRuleId> {
        self.collection()
    }
    pub fn rbac_policies(&self) -> Collection<RbacPolicyId> {
        self.collection()
    }
    /// Agents are listed, shown, updated (`admin_state_up`) and deleted;
    /// the server creates them.
    pub fn agents(&self) -> Collection<AgentId> {
        self.collection()
    }

    /// `PUT /v2.0/routers/{id}/add_router_interface` with `{"subnet_id"}`
    /// or `{"port_id"}`; returns the interface info.
    pub async fn add_router_interface(&self, router: &RouterId, body: Value) -> Result<Value> {
        self.call(Method::PUT, &format!("/v2.0/routers/{router}/add_router_interface"), Some(&body)).await
    }

    pub async fn remove_router_interface(&self, router: &RouterId, body: Value) -> Result<Value> {
        self.call(Method::PUT, &format!("/v2.0/routers/{router}/remove_router_interface"), Some(&body)).await
    }

    /// The project's limits, resource name to limit (-1: unlimited).
    pub async fn quota(&self, project: &ProjectId) -> Result<Value> {
        let path = format!("/v2.0/quotas/{project}");
        unwrap(self.call(Method::GET, &path, None).await?, "quota", "GET", &path)
    }

    /// Sets the limits in `limits` (`{"port": -1}`); returns all of them.
    pub async fn update_quota(&self, project: &ProjectId, limits: Value) -> Result<Value> {
        let path = format!("/v2.0/quotas/{project}");
        let answer = self.call(Method::PUT, &path, Some(&json!({ "quota": limits }))).await?;
        unwrap(answer, "quota", "PUT", &path)
    }

    /// Back to the defaults.
    pub async fn reset_quota(&self, project: &ProjectId) -> Result<()> {
        self.call(Method::DELETE, &format!("/v2.0/quotas/{project}"), None).await.map(drop)
    }
}
