//! A read cache of ports keyed by id and revision.
//!
//! Listing thousands of ports is dominated by reading and decoding their
//! rows. Every change to a port — its row, its addresses, its tags — bumps
//! its `revision_number` in the same transaction, so a port read once at a
//! given revision can be reused as long as the database still reports that
//! revision. Lists therefore read only `(id, revision)` pairs and load the
//! rest for ports not cached at that revision. The key makes the cache safe
//! with several servers on one database as well: a stale entry is never
//! served, merely replaced.
//!
//! Only data read from committed state (the read pool) is cached.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use neutrino_model::PortId;
use neutrino_model::resources::Port;

/// Beyond this many entries the cache starts over (a crude bound on memory:
/// a port takes about a kilobyte).
const CAPACITY: usize = 200_000;

#[derive(Default)]
pub(crate) struct PortCache {
    ports: Mutex<HashMap<PortId, Arc<Port>>>,
}

impl PortCache {
    /// The cached port of each `(id, revision)`, if cached at that revision.
    pub fn lookup(&self, wanted: &[(PortId, i64)]) -> Vec<Option<Arc<Port>>> {
        let map = self.ports.lock().unwrap_or_else(|e| e.into_inner());
        wanted.iter().map(|(id, rev)| map.get(id).filter(|p| p.std.revision_number == *rev).cloned()).collect()
    }

    pub fn put(&self, ports: impl IntoIterator<Item = Arc<Port>>) {
        let mut map = self.ports.lock().unwrap_or_else(|e| e.into_inner());
        for p in ports {
            if map.len() >= CAPACITY && !map.contains_key(&p.id) {
                map.clear();
            }
            map.insert(p.id, p);
        }
    }

    pub fn forget(&self, id: &PortId) {
        self.ports.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
    }
}
