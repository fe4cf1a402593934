//! Agents: registration, heartbeats, and what is scheduled to them.

use super::{Conn, DbRow};
use async_trait::async_trait;
use neutrino_model::agents::{Agent, AgentReport, AgentUpdate, HostRegistration};
use neutrino_model::l3::FIP_DOWN;
use neutrino_model::{AgentId, Error, FloatingIpId, NetworkId, PortId, ResourceKind, Result, RouterId};

use super::rows::{fetch, get};
use super::txn::Txn;
use super::{Backend, from_json, internal, now_iso, parse_col, to_json};
use crate::AgentStore;
use crate::feed::{ChangeOp, Subject};

const COLS: &str = "id, agent_type, binary_name, topic, host, admin_state_up, description, availability_zone, \
     configurations, resources_synced, created_at, started_at, heartbeat_at";

/// Now, as agent timestamps are written.
pub(super) fn agent_now() -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    time::OffsetDateTime::now_utc().format(&fmt).unwrap_or_default()
}

fn agent_from(row: &DbRow) -> Result<Agent> {
    Ok(Agent {
        id: parse_col(&get::<String>(row, "id")?, "agent id")?,
        agent_type: get(row, "agent_type")?,
        binary: get(row, "binary_name")?,
        topic: get(row, "topic")?,
        host: get(row, "host")?,
        admin_state_up: get(row, "admin_state_up")?,
        description: get(row, "description")?,
        availability_zone: get(row, "availability_zone")?,
        configurations: from_json(&get::<String>(row, "configurations")?)?,
        resources_synced: get(row, "resources_synced")?,
        created_at: get(row, "created_at")?,
        started_at: get(row, "started_at")?,
        heartbeat_timestamp: get(row, "heartbeat_at")?,
    })
}

async fn agent_in(conn: &mut Conn, id: &AgentId) -> Result<Agent> {
    let rows = fetch(conn, format!("SELECT {COLS} FROM agents WHERE id = $1"), &[id.to_string()]).await?;
    rows.first().map(agent_from).transpose()?.ok_or_else(|| Error::not_found(ResourceKind::Agent, id))
}

impl Backend {
    async fn agents_where(&self, cond: &str, arg: String) -> Result<Vec<Agent>> {
        let mut conn = self.readers.acquire().await.map_err(internal)?;
        let rows =
            fetch(&mut conn, format!("SELECT {COLS} FROM agents a WHERE {cond} ORDER BY host, agent_type"), &[arg])
                .await?;
        rows.iter().map(agent_from).collect()
    }

    async fn ids_where(&self, sql: &'static str, arg: String, column: &str) -> Result<Vec<String>> {
        let mut conn = self.readers.acquire().await.map_err(internal)?;
        let rows = fetch(&mut conn, sql.into(), &[arg]).await?;
        rows.iter().map(|r| get::<String>(r, column)).collect()
    }

    /// Schedules or unschedules (`sql` binds the agent, then the other id);
    /// `false` when that changed nothing.
    async fn link(&self, sql: &'static str, agent: &AgentId, other: String, binding: Subject) -> Result<bool> {
        let mut w = self.writer.lock().await;
        let mut tx = self.write_txn(&mut w.conn).await?;
        let op = if sql.starts_with("DELETE") { ChangeOp::Deleted } else { ChangeOp::Created };
        if op == ChangeOp::Deleted {
            // Before the row goes: its agent's host is read through it.
            tx.record_scoped(binding.clone(), op).await?;
        }
        let done = sqlx::query(sql).bind(agent.to_string()).bind(other).execute(&mut *tx).await.map_err(internal)?;
        let changed = done.rows_affected() > 0;
        if !changed {
            return Ok(false);
        }
        if op == ChangeOp::Created {
            tx.record_scoped(binding, op).await?;
        }
        tx.commit().await?;
        Ok(true)
    }
}

/// Records an agent's report: creates its record, or updates it. The
/// feed hears of a new record, or of a changed one (a restart counts); a
/// report that only moves the heartbeat is not a change.
pub(crate) async fn upsert_agent(tx: &mut Txn<'_>, r: &AgentReport, now: &str) -> Result<AgentId> {
    let rows = fetch(
        tx,
        format!("SELECT {COLS} FROM agents WHERE agent_type = $1 AND host = $2"),
        &[r.agent_type.clone(), r.host.clone()],
    )
    .await?;
    let Some(current) = rows.first().map(agent_from).transpose()? else {
        let id = AgentId::new();
        sqlx::query(
            "INSERT INTO agents (id, agent_type, binary_name, topic, host, admin_state_up, description, \
             availability_zone, configurations, resources_synced, created_at, started_at, heartbeat_at) \
             VALUES ($1, $2, $3, $4, $5, TRUE, NULL, $6, $7, NULL, $8, $8, $8)",
        )
        .bind(id.to_string())
        .bind(&r.agent_type)
        .bind(&r.binary)
        .bind(&r.topic)
        .bind(&r.host)
        .bind(&r.availability_zone)
        .bind(to_json(&r.configurations))
        .bind(now)
        .execute(&mut **tx)
        .await
        .map_err(internal)?;
        tx.record_in(Subject::Agent(id), ChangeOp::Created, [], [r.host.as_str()]);
        return Ok(id);
    };
    sqlx::query(
        "UPDATE agents SET binary_name = $1, topic = $2, availability_zone = $3, configurations = $4, \
         heartbeat_at = $5, started_at = CASE WHEN $6 THEN $5 ELSE started_at END WHERE id = $7",
    )
    .bind(&r.binary)
    .bind(&r.topic)
    .bind(&r.availability_zone)
    .bind(to_json(&r.configurations))
    .bind(now)
    .bind(r.start_flag)
    .bind(current.id.to_string())
    .execute(&mut **tx)
    .await
    .map_err(internal)?;
    let changed = r.start_flag
        || current.binary != r.binary
        || current.topic != r.topic
        || current.availability_zone != r.availability_zone
        || current.configurations != r.configurations;
    if changed {
        tx.record_in(Subject::Agent(current.id), ChangeOp::Updated, [], [r.host.as_str()]);
    }
    Ok(current.id)
}

/// Records the DHCP bindings whose `column` (`network_id`, `agent_id`) is
/// `id` as deleted: they go with the network or agent being deleted.
pub(crate) async fn record_dhcp_bindings_gone(tx: &mut Txn<'_>, column: &str, id: &str) -> Result<()> {
    let sql = format!("SELECT network_id, agent_id FROM network_dhcp_agents WHERE {column} = $1");
    for row in fetch(tx, sql, &[id.to_string()]).await? {
        let network = parse_col(&get::<String>(&row, "network_id")?, "network id")?;
        let agent = parse_col(&get::<String>(&row, "agent_id")?, "agent id")?;
        tx.record_scoped(Subject::DhcpBinding { network, agent }, ChangeOp::Deleted).await?;
    }
    Ok(())
}

/// [`record_dhcp_bindings_gone`] for L3 bindings (`router_id`, `agent_id`).
pub(crate) async fn record_l3_bindings_gone(tx: &mut Txn<'_>, column: &str, id: &str) -> Result<()> {
    let sql = format!("SELECT router_id, agent_id FROM router_l3_agents WHERE {column} = $1");
    for row in fetch(tx, sql, &[id.to_string()]).await? {
        let router = parse_col(&get::<String>(&row, "router_id")?, "router id")?;
        let agent = parse_col(&get::<String>(&row, "agent_id")?, "agent id")?;
        tx.record_scoped(Subject::L3Binding { router, agent }, ChangeOp::Deleted).await?;
        router_fips_down(tx, &router).await?;
    }
    Ok(())
}

/// A router taken off its L3 agent: nothing realises its floating IPs
/// any more, until the next host reports them.
async fn router_fips_down(tx: &mut Txn<'_>, router: &RouterId) -> Result<()> {
    let down = fetch(
        tx,
        "UPDATE floatingips SET status = $1, updated_at = $2, revision_number = revision_number + 1 \
         WHERE router_id = $3 AND status <> $1 RETURNING id"
            .into(),
        &[FIP_DOWN.to_string(), now_iso(), router.to_string()],
    )
    .await?;
    for row in &down {
        let id: FloatingIpId = parse_col(&get::<String>(row, "id")?, "floating IP id")?;
        tx.record_scoped(Subject::FloatingIp(id), ChangeOp::Updated).await?;
    }
    Ok(())
}

#[async_trait]
impl AgentStore for Backend {
    async fn report_agent(&self, r: &AgentReport) -> Result<Agent> {
        let mut w = self.writer.lock().await;
        let mut tx = self.write_txn(&mut w.conn).await?;
        let id = upsert_agent(&mut tx, r, &agent_now()).await?;
        let agent = agent_in(&mut tx, &id).await?;
        tx.commit().await?;
        Ok(agent)
    }

    async fn list_agents(&self) -> Result<Vec<Agent>> {
        let mut conn = self.readers.acquire().await.map_err(internal)?;
        let rows = fetch(&mut conn, format!("SELECT {COLS} FROM agents ORDER BY host, agent_type"), &[]).await?;
        rows.iter().map(agent_from).collect()
    }

    async fn get_agent(&self, id: &AgentId) -> Result<Agent> {
        let mut conn = self.readers.acquire().await.map_err(internal)?;
        agent_in(&mut conn, id).await
    }

    async fn update_agent(&self, id: &AgentId, u: AgentUpdate) -> Result<Agent> {
        let mut w = self.writer.lock().await;
        let mut tx = self.write_txn(&mut w.conn).await?;
        let current = agent_in(&mut tx, id).await?;
        sqlx::query("UPDATE agents SET admin_state_up = $1, description = $2 WHERE id = $3")
            .bind(u.admin_state_up.unwrap_or(current.admin_state_up))
            .bind(u.description.unwrap_or_else(|| current.description.clone()))
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(internal)?;
        let agent = agent_in(&mut tx, id).await?;
        if agent != current {
            tx.record_in(Subject::Agent(*id), ChangeOp::Updated, [], [agent.host.as_str()]);
        }
        tx.commit().await?;
        Ok(agent)
    }

    async fn delete_agent(&self, id: &AgentId) -> Result<()> {
        let mut w = self.writer.lock().await;
        let mut tx = self.write_txn(&mut w.conn).await?;
        let current = agent_in(&mut tx, id).await?;
        // Its bindings go with it (the schema cascades).
        record_dhcp_bindings_gone(&mut tx, "agent_id", &id.to_string()).await?;
        record_l3_bindings_gone(&mut tx, "agent_id", &id.to_string()).await?;
        sqlx::query("DELETE FROM agents WHERE id = $1")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(internal)?;
        tx.record_in(Subject::Agent(*id), ChangeOp::Deleted, [], [current.host.as_str()]);
        tx.commit().await
    }

    async fn network_dhcp_agents(&self, network: &NetworkId) -> Result<Vec<Agent>> {
        self.agents_where(
            "a.id IN (SELECT agent_id FROM network_dhcp_agents WHERE network_id = $1)",
            network.to_string(),
        )
        .await
    }

    async fn dhcp_agent_networks(&self, agent: &AgentId) -> Result<Vec<NetworkId>> {
        let ids = self
            .ids_where(
                "SELECT network_id FROM network_dhcp_agents WHERE agent_id = $1 ORDER BY network_id",
                agent.to_string(),
                "network_id",
            )
            .await?;
        ids.iter().map(|s| parse_col(s, "network id")).collect()
    }

    async fn add_network_to_dhcp_agent(&self, agent: &AgentId, network: &NetworkId) -> Result<bool> {
        self.link(
            "INSERT INTO network_dhcp_agents (agent_id, network_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            agent,
            network.to_string(),
            Subject::DhcpBinding { network: *network, agent: *agent },
        )
        .await
    }

    async fn remove_network_from_dhcp_agent(&self, agent: &AgentId, network: &NetworkId) -> Result<bool> {
        self.link(
            "DELETE FROM network_dhcp_agents WHERE agent_id = $1 AND network_id = $2",
            agent,
            network.to_string(),
            Subject::DhcpBinding { network: *network, agent: *agent },
        )
        .await
    }

    async fn router_l3_agents(&self, router: &RouterId) -> Result<Vec<Agent>> {
        self.agents_where("a.id IN (SELECT agent_id FROM router_l3_agents WHERE router_id = $1)", router.to_string())
            .await
    }

    async fn l3_agent_routers(&self, agent: &AgentId) -> Result<Vec<RouterId>> {
        let ids = self
            .ids_where(
                "SELECT router_id FROM router_l3_agents WHERE agent_id = $1 ORDER BY router_id",
                agent.to_string(),
                "router_id",
            )
            .await?;
        ids.iter().map(|s| parse_col(s, "router id")).collect()
    }

    async fn add_router_to_l3_agent(&self, agent: &AgentId, router: &RouterId) -> Result<bool> {
        self.link(
            "INSERT INTO router_l3_agents (agent_id, router_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            agent,
            router.to_string(),
            Subject::L3Binding { router: *router, agent: *agent },
        )
        .await
    }

    async fn remove_router_from_l3_agent(&self, agent: &AgentId, router: &RouterId) -> Result<bool> {
        let mut w = self.writer.lock().await;
        let mut tx = self.write_txn(&mut w.conn).await?;
        // Before the row goes: its agent's host is read through it.
        tx.record_scoped(Subject::L3Binding { router: *router, agent: *agent }, ChangeOp::Deleted).await?;
        let done = sqlx::query("DELETE FROM router_l3_agents WHERE agent_id = $1 AND router_id = $2")
            .bind(agent.to_string())
            .bind(router.to_string())
            .execute(&mut *tx)
            .await
            .map_err(internal)?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        router_fips_down(&mut tx, router).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn dhcp_bindings(&self) -> Result<Vec<(NetworkId, AgentId)>> {
        let mut conn = self.readers.acquire().await.map_err(internal)?;
        let sql = "SELECT network_id, agent_id FROM network_dhcp_agents ORDER BY network_id, agent_id";
        let rows = fetch(&mut conn, sql.into(), &[]).await?;
        rows.iter()
            .map(|r| {
                Ok((
                    parse_col(&get::<String>(r, "network_id")?, "network id")?,
                    parse_col(&get::<String>(r, "agent_id")?, "agent id")?,
                ))
            })
            .collect()
    }

    async fn l3_bindings(&self) -> Result<Vec<(RouterId, AgentId)>> {
        let mut conn = self.readers.acquire().await.map_err(internal)?;
        let sql = "SELECT router_id, agent_id FROM router_l3_agents ORDER BY router_id, agent_id";
        let rows = fetch(&mut conn, sql.into(), &[]).await?;
        rows.iter()
            .map(|r| {
                Ok((
                    parse_col(&get::<String>(r, "router_id")?, "router id")?,
                    parse_col(&get::<String>(r, "agent_id")?, "agent id")?,
                ))
            })
            .collect()
    }

    async fn register_host(&self, registration: &HostRegistration, agents: &[AgentReport]) -> Result<()> {
        self.register_host_impl(registration, agents).await
    }

    async fn get_host(&self, host: &str) -> Result<Option<HostRegistration>> {
        self.get_host_impl(host).await
    }

    async fn list_hosts(&self) -> Result<Vec<HostRegistration>> {
        self.list_hosts_impl().await
    }

    async fn host_heartbeat(&self, host: &str) -> Result<()> {
        self.host_heartbeat_impl(host).await
    }

    async fn acquire_lease(&self, name: &str, holder: &str, ttl: std::time::Duration) -> Result<bool> {
        self.acquire_lease_impl(name, holder, ttl).await
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        self.release_lease_impl(name, holder).await
    }

    async fn set_port_status(&self, host: &str, ports: &[(PortId, String)]) -> Result<usize> {
        if ports.is_empty() {
            return Ok(0);
        }
        let mut w = self.writer.lock().await;
        let mut tx = self.write_txn(&mut w.conn).await?;
        let now = now_iso();
        let mut changed = 0;
        for (id, status) in ports {
            // The revision moves with the status: caches key ports by it.
            let updated = fetch(
                &mut tx,
                "UPDATE ports SET status = $1, updated_at = $2, revision_number = revision_number + 1 \
                 WHERE id = $3 AND binding_host_id = $4 AND status <> $1 RETURNING network_id"
                    .into(),
                &[status.clone(), now.clone(), id.to_string(), host.to_string()],
            )
            .await?;
            if let Some(row) = updated.first() {
                let network = parse_col(&get::<String>(row, "network_id")?, "network id")?;
                tx.record_in(Subject::Port(*id), ChangeOp::Updated, [network], [host]);
                changed += 1;
            }
        }
        tx.commit().await?;
        Ok(changed)
    }

    async fn set_floatingip_status(&self, host: &str, fips: &[(FloatingIpId, String)]) -> Result<usize> {
        if fips.is_empty() {
            return Ok(0);
        }
        let mut w = self.writer.lock().await;
        let mut tx = self.write_txn(&mut w.conn).await?;
        let now = now_iso();
        let mut changed = 0;
        for (id, status) in fips {
            let updated = fetch(
                &mut tx,
                "UPDATE floatingips SET status = $1, updated_at = $2, revision_number = revision_number + 1 \
                 WHERE id = $3 AND status <> $1 AND router_id IN (SELECT b.router_id FROM router_l3_agents b \
                 JOIN agents a ON a.id = b.agent_id WHERE a.host = $4) RETURNING id"
                    .into(),
                &[status.clone(), now.clone(), id.to_string(), host.to_string()],
            )
            .await?;
            if !updated.is_empty() {
                tx.record_scoped(Subject::FloatingIp(*id), ChangeOp::Updated).await?;
                changed += 1;
            }
        }
        tx.commit().await?;
        Ok(changed)
    }
}
