//! A write transaction: the database transaction and the changes it records
//! in the feed. Committing writes what is still pending under the
//! transaction's revision (on PostgreSQL, moving the feed's head notifies
//! the other servers: a trigger of the schema), commits, and wakes this
//! process's watchers of the feed.

use super::{Conn, DbRow};
use neutrino_model::{NetworkId, Result};

use super::FeedSignal;
use super::batch::Batch;
use super::feed::{Appended, FeedTxn};
use super::{Backend, Tx, begin, begin_unordered, internal, scope};
use crate::feed::{ChangeOp, Subject};

pub(crate) struct Txn<'c> {
    tx: Tx<'c>,
    feed: FeedTxn,
    signal: &'c FeedSignal,
    /// Begun with [`Backend::unordered_txn`]: may record no change.
    unordered: bool,
}

impl Backend {
    /// Begins a write transaction on the writer connection.
    pub(crate) async fn write_txn<'c>(&'c self, conn: &'c mut Conn) -> Result<Txn<'c>> {
        Ok(Txn { tx: begin(conn).await?, feed: FeedTxn::default(), signal: &self.signal, unordered: false })
    }

    /// Begins a write transaction that needs no order with other writers:
    /// it records no change and writes only values that do not depend on
    /// what other transactions do (a heartbeat's timestamp). On PostgreSQL
    /// it does not take the cluster-wide write lock, so that thousands of
    /// hosts' heartbeats do not queue behind (or hold up) the writes that
    /// allocate.
    pub(crate) async fn unordered_txn<'c>(&'c self, conn: &'c mut Conn) -> Result<Txn<'c>> {
        Ok(Txn { tx: begin_unordered(conn).await?, feed: FeedTxn::default(), signal: &self.signal, unordered: true })
    }
}

impl Txn<'_> {
    /// Records a change of `subject` that touches no network or host.
    pub fn record(&mut self, subject: Subject, op: ChangeOp) {
        self.feed.changes().record(subject, op, [], []);
    }

    /// Records a change of `subject` that touches `networks`.
    pub fn record_networks(&mut self, subject: Subject, op: ChangeOp, networks: impl IntoIterator<Item = NetworkId>) {
        self.feed.changes().record(subject, op, networks, []);
    }

    /// Records a change of `subject` that touches `networks` and `hosts`
    /// (empty host names are no host).
    pub fn record_in<H: Into<String>>(
        &mut self,
        subject: Subject,
        op: ChangeOp,
        networks: impl IntoIterator<Item = NetworkId>,
        hosts: impl IntoIterator<Item = H>,
    ) {
        self.feed.changes().record(subject, op, networks, hosts.into_iter().map(Into::into));
    }

    /// Records a change of `subject` with the networks and hosts it touches
    /// as the database has them now ([`scope::of`]): call it before a
    /// delete, after a create, and both before and after an update that
    /// may move the resource.
    pub async fn record_scoped(&mut self, subject: Subject, op: ChangeOp) -> Result<()> {
        let (networks, hosts) = scope::of(&mut self.tx, &subject).await?;
        self.feed.changes().record(subject, op, networks, hosts);
        Ok(())
    }

    /// Adds the changes recorded so far to `batch` (see [`FeedTxn::append`]);
    /// hand the result and the batch's rows to [`Txn::feed_appended`].
    pub fn feed_into(&mut self, batch: &mut Batch) -> Option<Appended> {
        self.feed.append(batch)
    }

    pub fn feed_appended(&mut self, appended: Option<Appended>, rows: &[DbRow]) -> Result<()> {
        self.feed.appended(appended, rows)
    }

    pub async fn commit(mut self) -> Result<()> {
        if self.unordered && !self.feed.changes().pending().is_empty() {
            return Err(neutrino_model::Error::Internal("an unordered transaction recorded changes".into()));
        }
        self.feed.flush(&mut self.tx).await?;
        self.tx.commit().await.map_err(internal)?;
        if let Some(revision) = self.feed.revision() {
            self.signal.advance(revision);
        }
        Ok(())
    }
}

impl std::ops::Deref for Txn<'_> {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        &self.tx
    }
}

impl std::ops::DerefMut for Txn<'_> {
    fn deref_mut(&mut self) -> &mut Conn {
        &mut self.tx
    }
}
