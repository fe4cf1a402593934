//! What a change touches, for its feed entry: the networks and hosts of a
//! resource, read inside the writing transaction. Writers that already
//! hold the resource record them directly instead.

use super::Conn;
use neutrino_model::{NetworkId, Result};

use super::parse_col;
use super::rows::{fetch, get};
use crate::feed::Subject;

/// The networks and hosts `subject` touches as the database has it now:
/// a network itself; a subnet's or segment's network; a port's network
/// and binding host; the networks of a router's ports; a floating IP's
/// external network and its internal port's network; a port forwarding's
/// floating IP's networks and its internal port's network; an agent's
/// host; a binding's network (or router's networks) and agent's host; a
/// host itself. Nothing for the rest, or for what does not exist.
pub(crate) async fn of(conn: &mut Conn, subject: &Subject) -> Result<(Vec<NetworkId>, Vec<String>)> {
    // Each statement returns rows of (network id or NULL, host or NULL).
    let (sql, args): (&str, Vec<String>) = match subject {
        Subject::Network(id) => return Ok((vec![*id], Vec::new())),
        Subject::Host(host) => return Ok((Vec::new(), vec![host.clone()])),
        Subject::Subnet(id) => ("SELECT network_id AS n, NULL AS h FROM subnets WHERE id = $1", vec![id.to_string()]),
        Subject::Segment(id) => ("SELECT network_id AS n, NULL AS h FROM segments WHERE id = $1", vec![id.to_string()]),
        Subject::Port(id) => {
            ("SELECT network_id AS n, binding_host_id AS h FROM ports WHERE id = $1", vec![id.to_string()])
        }
        Subject::Router(id) => {
            ("SELECT DISTINCT network_id AS n, NULL AS h FROM ports WHERE device_id = $1", vec![id.to_string()])
        }
        Subject::FloatingIp(id) => (
            "SELECT floating_network_id AS n, NULL AS h FROM floatingips WHERE id = $1 \
             UNION SELECT p.network_id AS n, NULL AS h FROM floatingips f JOIN ports p ON p.id = f.fixed_port_id \
             WHERE f.id = $1",
            vec![id.to_string()],
        ),
        Subject::PortForwarding(id) => (
            "SELECT f.floating_network_id AS n, NULL AS h FROM port_forwardings pf \
             JOIN floatingips f ON f.id = pf.floatingip_id WHERE pf.id = $1 \
             UNION SELECT p.network_id AS n, NULL AS h FROM port_forwardings pf \
             JOIN ports p ON p.id = pf.internal_port_id WHERE pf.id = $1",
            vec![id.to_string()],
        ),
        Subject::Agent(id) => ("SELECT NULL AS n, host AS h FROM agents WHERE id = $1", vec![id.to_string()]),
        Subject::DhcpBinding { network, agent } => (
            "SELECT $1 AS n, NULL AS h UNION ALL SELECT NULL AS n, host AS h FROM agents WHERE id = $2",
            vec![network.to_string(), agent.to_string()],
        ),
        Subject::L3Binding { router, agent } => (
            "SELECT DISTINCT network_id AS n, NULL AS h FROM ports WHERE device_id = $1 \
             UNION ALL SELECT NULL AS n, host AS h FROM agents WHERE id = $2",
            vec![router.to_string(), agent.to_string()],
        ),
        _ => return Ok((Vec::new(), Vec::new())),
    };
    let rows = fetch(conn, sql.into(), &args).await?;
    let mut networks = Vec::with_capacity(rows.len());
    let mut hosts = Vec::new();
    for row in &rows {
        if let Some(n) = get::<Option<String>>(row, "n")? {
            networks.push(parse_col(&n, "network id")?);
        }
        if let Some(h) = get::<Option<String>>(row, "h")?.filter(|h| !h.is_empty()) {
            hosts.push(h);
        }
    }
    Ok((networks, hosts))
}
