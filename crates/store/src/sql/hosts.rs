//! Hosts registered over the agent channel: their registration (with the
//! agent records they report), and the heartbeat that keeps those records
//! alive. Any server sharing the database serves them.

use super::{Conn, DbRow};
use neutrino_model::agents::{AgentReport, HostRegistration};
use neutrino_model::{Error, ResourceKind, Result};

use super::agents::{agent_now, upsert_agent};
use super::feed::now_ms;
use super::rows::{fetch, get};
use super::{Backend, from_json, internal, parse_col, to_json};
use crate::feed::{ChangeOp, Subject};

const HOST_COLS: &str = "host, tunnel_ip, bridge_mappings, roles, version, availability_zone";

fn host_from(row: &DbRow) -> Result<HostRegistration> {
    Ok(HostRegistration {
        host: get(row, "host")?,
        tunnel_ip: get::<Option<String>>(row, "tunnel_ip")?.map(|ip| parse_col(&ip, "tunnel ip")).transpose()?,
        bridge_mappings: from_json(&get::<String>(row, "bridge_mappings")?)?,
        roles: from_json(&get::<String>(row, "roles")?)?,
        version: get(row, "version")?,
        availability_zone: get(row, "availability_zone")?,
    })
}

async fn host_in(conn: &mut Conn, host: &str) -> Result<Option<HostRegistration>> {
    let rows = fetch(conn, format!("SELECT {HOST_COLS} FROM hosts WHERE host = $1"), &[host.to_string()]).await?;
    rows.first().map(host_from).transpose()
}

impl Backend {
    pub(crate) async fn register_host_impl(&self, reg: &HostRegistration, agents: &[AgentReport]) -> Result<()> {
        if let Some(r) = agents.iter().find(|r| r.host != reg.host) {
            return Err(Error::InvalidInput(format!(
                "the registration of host {} reports an agent of host {}",
                reg.host, r.host
            )));
        }
        let mut w = self.writer.lock().await;
        let mut tx = self.write_txn(&mut w.conn).await?;
        let now = now_ms();
        let current = host_in(&mut tx, &reg.host).await?;
        let sql = if current.is_some() {
            "UPDATE hosts SET tunnel_ip = $2, bridge_mappings = $3, roles = $4, version = $5, \
             availability_zone = $6, heartbeat_at = $7 WHERE host = $1"
        } else {
            "INSERT INTO hosts (host, tunnel_ip, bridge_mappings, roles, version, availability_zone, \
             registered_at, heartbeat_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)"
        };
        sqlx::query(sql)
            .bind(&reg.host)
            .bind(reg.tunnel_ip.map(|ip| ip.to_string()))
            .bind(to_json(&reg.bridge_mappings))
            .bind(to_json(&reg.roles))
            .bind(&reg.version)
            .bind(&reg.availability_zone)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(internal)?;
        match current {
            None => tx.record_scoped(Subject::Host(reg.host.clone()), ChangeOp::Created).await?,
            Some(c) if c != *reg => tx.record_scoped(Subject::Host(reg.host.clone()), ChangeOp::Updated).await?,
            Some(_) => {}
        }
        let started = agent_now();
        for report in agents {
            let report = AgentReport { start_flag: true, ..report.clone() };
            upsert_agent(&mut tx, &report, &started).await?;
        }
        tx.commit().await
    }

    pub(crate) async fn get_host_impl(&self, host: &str) -> Result<Option<HostRegistration>> {
        let mut conn = self.readers.acquire().await.map_err(internal)?;
        host_in(&mut conn, host).await
    }

    pub(crate) async fn list_hosts_impl(&self) -> Result<Vec<HostRegistration>> {
        let mut conn = self.readers.acquire().await.map_err(internal)?;
        let rows = fetch(&mut conn, format!("SELECT {HOST_COLS} FROM hosts ORDER BY host"), &[]).await?;
        rows.iter().map(host_from).collect()
    }

    pub(crate) async fn host_heartbeat_impl(&self, host: &str) -> Result<()> {
        // A timestamp, no change recorded: no order with other writes, so
        // (on PostgreSQL) not behind them either: thousands of hosts'
        // heartbeats must not time out while a bulk create holds the
        // writer.
        let mut conn = self.unordered_conn().await?;
        let mut tx = self.unordered_txn(&mut conn).await?;
        let known = sqlx::query("UPDATE hosts SET heartbeat_at = $1 WHERE host = $2")
            .bind(now_ms())
            .bind(host)
            .execute(&mut *tx)
            .await
            .map_err(internal)?
            .rows_affected();
        if known == 0 {
            return Err(Error::not_found(ResourceKind::Agent, host));
        }
        sqlx::query("UPDATE agents SET heartbeat_at = $1 WHERE host = $2")
            .bind(agent_now())
            .bind(host)
            .execute(&mut *tx)
            .await
            .map_err(internal)?;
        tx.commit().await
    }
}
