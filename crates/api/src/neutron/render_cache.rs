//! Rendered JSON of ports, kept per port, revision and kind of caller.
//!
//! A list of ten thousand ports is mostly serialisation. A port's JSON only
//! changes when its revision does (every change bumps it) and differs only
//! between privileged callers (who see `binding:*` details) and the rest,
//! so each rendering is kept and reused until the port's revision moves.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use neutrino_model::PortId;

/// Beyond this many entries the cache starts over.
const CAPACITY: usize = 400_000;

/// A port, and whether the caller is privileged.
type Key = (PortId, bool);
/// The revision rendered, and the JSON.
type Rendered = (i64, Arc<str>);

#[derive(Default)]
pub struct RenderCache {
    entries: Mutex<HashMap<Key, Rendered>>,
}

impl RenderCache {
    /// The JSON of each `(id, revision)`, rendering (and keeping) the ones
    /// not cached at that revision with `render`.
    pub fn get_or_render<T>(
        &self,
        items: &[T],
        privileged: bool,
        key: impl Fn(&T) -> (PortId, i64),
        render: impl Fn(&T) -> Arc<str>,
    ) -> Vec<Arc<str>> {
        let mut out: Vec<Option<Arc<str>>> = {
            let map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            items
                .iter()
                .map(|it| {
                    let (id, rev) = key(it);
                    map.get(&(id, privileged)).filter(|(r, _)| *r == rev).map(|(_, j)| j.clone())
                })
                .collect()
        };
        let mut fresh = Vec::new();
        for (slot, it) in out.iter_mut().zip(items) {
            if slot.is_none() {
                let json = render(it);
                let (id, rev) = key(it);
                fresh.push(((id, privileged), (rev, json.clone())));
                *slot = Some(json);
            }
        }
        if !fresh.is_empty() {
            let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            if map.len() + fresh.len() > CAPACITY {
                map.clear();
            }
            map.extend(fresh);
        }
        out.into_iter().flatten().collect()
    }
}
