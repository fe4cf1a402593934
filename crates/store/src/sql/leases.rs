//! Named leases: a job that must run on one server at a time (scheduling)
//! runs while its server holds the lease, and renews it as it goes. One
//! conditional statement decides, so two servers asking at once cannot
//! both win.

use std::time::Duration;

use neutrino_model::Result;

use super::feed::now_ms;
use super::{Backend, internal};

impl Backend {
    pub(crate) async fn acquire_lease_impl(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool> {
        let now = now_ms();
        let until = now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
        let mut w = self.writer.lock().await;
        let taken = sqlx::query(
            "INSERT INTO leases (name, holder, expires_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_ms = excluded.expires_ms \
             WHERE leases.holder = excluded.holder OR leases.expires_ms <= $4",
        )
        .bind(name)
        .bind(holder)
        .bind(until)
        .bind(now)
        .execute(&mut w.conn)
        .await
        .map_err(internal)?
        .rows_affected();
        Ok(taken == 1)
    }

    pub(crate) async fn release_lease_impl(&self, name: &str, holder: &str) -> Result<()> {
        let mut w = self.writer.lock().await;
        sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
            .bind(name)
            .bind(holder)
            .execute(&mut w.conn)
            .await
            .map_err(internal)?;
        Ok(())
    }
}
