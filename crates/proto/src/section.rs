//! The one generic piece of a host view: a section is a map keyed by the
//! id of what it holds, and a change to it is a set of upserts and
//! removals. Every section of [`crate::HostView`] is diffed, applied and
//! compared by this code; adding a section never means writing another
//! diff.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Upserts and removals of one section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound(
    serialize = "K: Serialize + Ord, V: Serialize",
    deserialize = "K: Deserialize<'de> + Ord, V: Deserialize<'de>"
))]
pub struct SectionDelta<K, V> {
    #[serde(default = "BTreeMap::new", skip_serializing_if = "BTreeMap::is_empty")]
    pub upsert: BTreeMap<K, V>,
    #[serde(default = "Vec::new", skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<K>,
}

impl<K, V> Default for SectionDelta<K, V> {
    fn default() -> Self {
        SectionDelta { upsert: BTreeMap::new(), remove: Vec::new() }
    }
}

impl<K: Ord + Clone, V: Clone + PartialEq> SectionDelta<K, V> {
    /// What turns `old` into `new`.
    pub fn between(old: &BTreeMap<K, V>, new: &BTreeMap<K, V>) -> Self {
        let upsert = new.iter().filter(|(k, v)| old.get(*k) != Some(*v)).map(|(k, v)| (k.clone(), v.clone())).collect();
        let remove = old.keys().filter(|k| !new.contains_key(*k)).cloned().collect();
        SectionDelta { upsert, remove }
    }

    pub fn is_empty(&self) -> bool {
        self.upsert.is_empty() && self.remove.is_empty()
    }

    /// Number of entries this delta touches.
    pub fn len(&self) -> usize {
        self.upsert.len() + self.remove.len()
    }

    /// Applies the delta: removals first, then upserts (a key both removed
    /// and upserted ends up upserted).
    pub fn apply(&self, map: &mut BTreeMap<K, V>) {
        for k in &self.remove {
            map.remove(k);
        }
        for (k, v) in &self.upsert {
            map.insert(k.clone(), v.clone());
        }
    }

    /// Records that `key` now holds `value`.
    pub fn set(&mut self, key: K, value: V) {
        self.remove.retain(|k| *k != key);
        self.upsert.insert(key, value);
    }

    /// Records that `key` is gone.
    pub fn unset(&mut self, key: K) {
        self.upsert.remove(&key);
        if !self.remove.contains(&key) {
            self.remove.push(key);
        }
    }

    /// This delta followed by `later`, as one delta.
    pub fn then(&mut self, later: SectionDelta<K, V>) {
        for k in later.remove {
            self.unset(k);
        }
        for (k, v) in later.upsert {
            self.set(k, v);
        }
    }
}

/// Declares [`crate::HostView`] and [`crate::HostViewDelta`] from a list of
/// sections, with their diff, apply, emptiness and content comparison all
/// going through [`SectionDelta`]. A section is `name: Key => Value`.
macro_rules! host_view_sections {
    ($( $(#[$doc:meta])* $name:ident : $key:ty => $value:ty ),+ $(,)?) => {
        /// Everything one host needs, and nothing more, as typed sections.
        #[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
        pub struct HostView {
            pub host: String,
            /// The server's revision of this view: a revision of the change
            /// feed, so it only grows, across server restarts too.
            pub revision: u64,
            $( $(#[$doc])* #[serde(default)] pub $name: std::collections::BTreeMap<$key, $value>, )+
        }

        /// The change from one revision of a host view to a later one.
        #[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
        pub struct HostViewDelta {
            pub from_revision: u64,
            pub revision: u64,
            $( #[serde(default, skip_serializing_if = "SectionDelta::is_empty")]
               pub $name: SectionDelta<$key, $value>, )+
        }

        /// Names of the sections, in declaration order.
        pub const SECTIONS: &[&str] = &[$( stringify!($name) ),+];

        impl HostView {
            /// The delta from `self` to `newer` (revisions taken from both).
            pub fn diff(&self, newer: &HostView) -> HostViewDelta {
                HostViewDelta {
                    from_revision: self.revision,
                    revision: newer.revision,
                    $( $name: SectionDelta::between(&self.$name, &newer.$name), )+
                }
            }

            /// Applies a delta that follows this revision.
            pub fn apply(&mut self, delta: &HostViewDelta) -> Result<(), RevisionGap> {
                if delta.from_revision != self.revision {
                    return Err(RevisionGap { have: self.revision, delta_from: delta.from_revision });
                }
                $( delta.$name.apply(&mut self.$name); )+
                self.revision = delta.revision;
                Ok(())
            }

            /// Same sections, whatever the host name and revision.
            pub fn same_content(&self, other: &HostView) -> bool {
                true $( && self.$name == other.$name )+
            }

            /// Writes the sections (not the host name or revision) as
            /// canonical JSON: maps are ordered by key.
            pub fn write_content<W: std::io::Write>(&self, w: W) -> serde_json::Result<()> {
                serde_json::to_writer(w, &( $( &self.$name, )+ ))
            }

            /// Entries per section, for logs.
            pub fn sizes(&self) -> Vec<(&'static str, usize)> {
                vec![$( (stringify!($name), self.$name.len()) ),+]
            }

            /// Entries in all sections.
            pub fn len(&self) -> usize {
                0 $( + self.$name.len() )+
            }

            pub fn is_empty(&self) -> bool {
                self.len() == 0
            }
        }

        impl HostViewDelta {
            pub fn is_empty(&self) -> bool {
                true $( && self.$name.is_empty() )+
            }

            /// Entries touched in all sections.
            pub fn len(&self) -> usize {
                0 $( + self.$name.len() )+
            }

            /// Same changes, whatever the revisions.
            pub fn same_sections(&self, other: &HostViewDelta) -> bool {
                true $( && self.$name == other.$name )+
            }

            /// An empty delta from one revision to another.
            pub fn empty(from_revision: u64, revision: u64) -> Self {
                HostViewDelta { from_revision, revision, ..Default::default() }
            }

            /// This delta followed by `later`, as one delta.
            pub fn then(&mut self, later: HostViewDelta) {
                self.revision = later.revision;
                $( self.$name.then(later.$name); )+
            }
        }
    };
}

pub(crate) use host_view_sections;
