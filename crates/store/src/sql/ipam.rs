//! The in-memory copy of each subnet's allocated addresses.
//!
//! Choosing "one of the first 1000 free addresses" from the database would
//! read every allocation of a busy subnet on each port create; instead the
//! writer keeps each subnet's allocated set in memory. The database stays the
//! truth: triggers move `subnets.ipam_generation` by one for every
//! allocation row added or removed and log the change in
//! `ip_allocation_log` under the new generation. A copy that is behind
//! (another server allocated or released meanwhile) replays the log rows
//! after its generation; one further behind than the log keeps, or facing
//! a gap, is reloaded whole. The (subnet, address) primary key refuses any
//! duplicate regardless. A transaction counts the rows it changes, so that after the
//! commit the copy's generation is what the database says without asking.
//!
//! A transaction adds addresses to the copy as it allocates them (so later
//! allocations in the same bulk request see them) and records them in an
//! [`IpamTxn`]; if the transaction does not commit, dropping the `IpamTxn`
//! takes them out again. Releases are applied only after the commit.

use std::collections::{BTreeSet, HashMap, HashSet};

use super::{Conn, DbRow, internal};
use neutrino_model::ipam;
use neutrino_model::resources::Subnet;
use neutrino_model::{Result, SubnetId};

use super::rows::{fetch, get};

#[derive(Default)]
pub(crate) struct IpamCache {
    subnets: HashMap<SubnetId, SubnetAllocations>,
}

struct SubnetAllocations {
    generation: i64,
    taken: BTreeSet<u128>,
}

/// The IPAM side of one write transaction.
pub(crate) struct IpamTxn<'a> {
    cache: &'a mut IpamCache,
    /// Addresses added to the cache by this transaction.
    added: Vec<(SubnetId, u128)>,
    /// Addresses to drop from the cache once committed.
    released: Vec<(SubnetId, u128)>,
    /// Allocation rows this transaction added or removed, per subnet (each
    /// moved the subnet's generation by one).
    pending: HashMap<SubnetId, i64>,
    /// Subnets found current in this transaction.
    ensured: HashSet<SubnetId>,
    committed: bool,
}

impl IpamCache {
    pub fn begin(&mut self) -> IpamTxn<'_> {
        IpamTxn {
            cache: self,
            added: Vec::new(),
            released: Vec::new(),
            pending: HashMap::new(),
            ensured: HashSet::new(),
            committed: false,
        }
    }
}

impl IpamTxn<'_> {
    /// Makes sure the cached set of `subnet` is current, reading the
    /// allocations from the database when it is missing or stale.
    /// `generation` is the subnet row's value read in this transaction.
    pub async fn ensure(&mut self, conn: &mut Conn, subnet: &SubnetId, generation: i64) -> Result<()> {
        // Once found current, every later change of this transaction went
        // through `take` (releases apply at commit: until then the address
        // just stays taken).
        if self.ensured.contains(subnet) {
            return Ok(());
        }
        // `generation` was read in this transaction, so it counts our own
        // changes so far; the copy does not until the commit.
        let pending = self.pending.get(subnet).copied().unwrap_or(0);
        if self.cache.subnets.get(subnet).is_some_and(|s| s.generation + pending == generation) {
            self.ensured.insert(*subnet);
            return Ok(());
        }
        // Others' changes came before ours (the write lock orders them):
        // theirs are generations (cached, generation - pending].
        let wanted = generation - pending;
        if let Some(s) = self.cache.subnets.get_mut(subnet)
            && s.generation < wanted
            && wanted - s.generation <= LOG_KEPT
            && catch_up(conn, subnet, s, wanted).await?
        {
            self.ensured.insert(*subnet);
            return Ok(());
        }
        let rows =
            fetch(conn, "SELECT ip_key FROM ip_allocations WHERE subnet_id = $1".to_string(), &[subnet.to_string()])
                .await?;
        let mut taken = BTreeSet::new();
        for row in rows {
            taken.insert(ip_key(&row, "ip_key")?);
        }
        self.cache.subnets.insert(*subnet, SubnetAllocations { generation: wanted, taken });
        self.ensured.insert(*subnet);
        Ok(())
    }

    pub fn is_taken(&self, subnet: &SubnetId, addr: u128) -> bool {
        self.cache.subnets.get(subnet).is_some_and(|s| s.taken.contains(&addr))
    }

    /// Chooses a free address from the subnet's pools (the subnet must have
    /// been `ensure`d).
    pub fn choose(&self, subnet: &Subnet, choice: ipam::Choice) -> Option<u128> {
        let empty = BTreeSet::new();
        let taken = self.cache.subnets.get(&subnet.id).map(|s| &s.taken).unwrap_or(&empty);
        ipam::choose_free(&subnet.allocation_pools, taken, choice, &mut rand::rng())
    }

    /// Records an address allocated in this transaction.
    pub fn take(&mut self, subnet: &SubnetId, addr: u128) {
        if let Some(s) = self.cache.subnets.get_mut(subnet)
            && s.taken.insert(addr)
        {
            self.added.push((*subnet, addr));
        }
    }

    /// Gives back an address this transaction took but will not use.
    pub fn untake(&mut self, subnet: &SubnetId, addr: u128) {
        if let Some(i) = self.added.iter().position(|(s, a)| s == subnet && *a == addr) {
            self.added.swap_remove(i);
            if let Some(s) = self.cache.subnets.get_mut(subnet) {
                s.taken.remove(&addr);
            }
        }
    }

    /// Records an address released in this transaction.
    pub fn release(&mut self, subnet: &SubnetId, addr: u128) {
        self.released.push((*subnet, addr));
    }

    /// Records allocation rows added or removed on `subnet` in the database
    /// (each moved its generation by one).
    pub fn rows_changed(&mut self, subnet: &SubnetId, rows: i64) {
        *self.pending.entry(*subnet).or_default() += rows;
    }

    pub fn forget(&mut self, subnet: &SubnetId) {
        self.cache.subnets.remove(subnet);
    }

    /// Call right after the database transaction committed.
    pub fn commit(mut self) {
        self.committed = true;
        for (subnet, addr) in std::mem::take(&mut self.released) {
            if let Some(s) = self.cache.subnets.get_mut(&subnet) {
                s.taken.remove(&addr);
            }
        }
        // A copy found current in this transaction is current now. One that
        // was not (a release needs no `ensure`) keeps its generation: moved
        // by our rows, it would claim a generation whose earlier changes it
        // never saw, and the log would not bring them. Left behind, the log
        // replays everything since, ours included, in order.
        for (subnet, rows) in std::mem::take(&mut self.pending) {
            if self.ensured.contains(&subnet)
                && let Some(s) = self.cache.subnets.get_mut(&subnet)
            {
                s.generation += rows;
            }
        }
    }
}

impl Drop for IpamTxn<'_> {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        for (subnet, addr) in &self.added {
            if let Some(s) = self.cache.subnets.get_mut(subnet) {
                s.taken.remove(addr);
            }
        }
    }
}

/// Generations of a subnet the `ip_allocation_log` keeps (its triggers
/// prune older rows).
const LOG_KEPT: i64 = 1024;

/// Brings `copy` forward to `wanted` from the IPAM change log. False when
/// the log does not hold every generation in between (pruned, or written
/// before the log existed, or emptied by `db copy`): then the caller
/// reloads the subnet whole.
async fn catch_up(conn: &mut Conn, subnet: &SubnetId, copy: &mut SubnetAllocations, wanted: i64) -> Result<bool> {
    let rows = sqlx::query(
        "SELECT generation, ip_key, allocated FROM ip_allocation_log \
         WHERE subnet_id = $1 AND generation > $2 AND generation <= $3 ORDER BY generation",
    )
    .bind(subnet.to_string())
    .bind(copy.generation)
    .bind(wanted)
    .fetch_all(&mut *conn)
    .await
    .map_err(internal)?;
    let mut expected = copy.generation + 1;
    let mut changes = Vec::with_capacity(rows.len());
    for row in &rows {
        if get::<i64>(row, "generation")? != expected {
            return Ok(false);
        }
        expected += 1;
        changes.push((ip_key(row, "ip_key")?, get::<bool>(row, "allocated")?));
    }
    if expected != wanted + 1 {
        return Ok(false);
    }
    for (addr, allocated) in changes {
        if allocated {
            copy.taken.insert(addr);
        } else {
            copy.taken.remove(&addr);
        }
    }
    copy.generation = wanted;
    Ok(true)
}

fn ip_key(row: &DbRow, col: &str) -> Result<u128> {
    let key: Vec<u8> = get(row, col)?;
    let bytes: [u8; 16] = key.try_into().map_err(|_| neutrino_model::Error::Internal("corrupt ip_key".into()))?;
    Ok(u128::from_be_bytes(bytes))
}
