//! Routers, floating IPs and port forwardings.

use async_trait::async_trait;
use neutrino_model::l3::*;
use neutrino_model::policy::Viewer;
use neutrino_model::resources::HostRoute;
use neutrino_model::{FloatingIpId, PortForwardingId, Result, RouterId};

use crate::ListQuery;

#[async_trait]
pub trait L3Store: Send + Sync + 'static {
    // ---- routers ---------------------------------------------------------------
    /// Creates all routers (with their gateway ports) or none.
    async fn create_routers(&self, requests: Vec<RouterCreate>) -> Result<Vec<Router>>;
    async fn get_router(&self, viewer: &Viewer, id: &RouterId) -> Result<Router>;
    async fn list_routers(&self, query: &ListQuery) -> Result<Vec<Router>>;
    async fn update_router(&self, id: &RouterId, update: RouterUpdate, if_match: Option<i64>) -> Result<Router>;
    /// Refused while interfaces exist; the gateway port goes with the router.
    async fn delete_router(&self, id: &RouterId, if_match: Option<i64>) -> Result<()>;
    async fn add_router_interface(&self, id: &RouterId, target: InterfaceTarget) -> Result<RouterInterface>;
    async fn remove_router_interface(&self, id: &RouterId, target: InterfaceTarget) -> Result<RouterInterface>;
    /// Sets the status the scheduler decides (`ACTIVE` when hosted,
    /// `ALLOCATING` when no L3 agent can host it); `false` when it already
    /// had it.
    async fn set_router_status(&self, id: &RouterId, status: &str) -> Result<bool>;
    /// `add_extraroutes` (`add` true) or `remove_extraroutes`.
    async fn change_extraroutes(&self, id: &RouterId, routes: Vec<HostRoute>, add: bool) -> Result<Router>;

    // ---- floating IPs ------------------------------------------------------------
    /// Creates all floating IPs (with their ports) or none.
    async fn create_floatingips(&self, requests: Vec<FloatingIpCreate>) -> Result<Vec<FloatingIp>>;
    async fn get_floatingip(&self, viewer: &Viewer, id: &FloatingIpId) -> Result<FloatingIp>;
    async fn list_floatingips(&self, query: &ListQuery) -> Result<Vec<FloatingIp>>;
    async fn update_floatingip(
        &self,
        id: &FloatingIpId,
        update: FloatingIpUpdate,
        if_match: Option<i64>,
    ) -> Result<FloatingIp>;
    async fn delete_floatingip(&self, id: &FloatingIpId, if_match: Option<i64>) -> Result<()>;
    /// IPv4 subnets of external networks that floating IPs may come from.
    async fn floatingip_pools(&self) -> Result<Vec<FloatingIpPool>>;

    // ---- port forwardings --------------------------------------------------------
    async fn create_port_forwarding(&self, fip: &FloatingIpId, request: PortForwardingCreate)
    -> Result<PortForwarding>;
    async fn list_port_forwardings(&self, fip: &FloatingIpId) -> Result<Vec<PortForwarding>>;
    async fn update_port_forwarding(
        &self,
        fip: &FloatingIpId,
        id: &PortForwardingId,
        update: PortForwardingUpdate,
    ) -> Result<PortForwarding>;
    async fn delete_port_forwarding(&self, fip: &FloatingIpId, id: &PortForwardingId) -> Result<()>;
}
