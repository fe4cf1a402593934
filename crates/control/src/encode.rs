//! Watch events as the newline-delimited JSON lines the channel sends.
//!
//! A port created on one host is the same l2population entry for each of
//! the (up to hundreds of) hosts that have its network: only the revisions
//! around it differ. So a batch's deltas are serialised once per distinct
//! content, and each host's line is that text with its own revisions in
//! front.

use bytes::Bytes;
use neutrino_proto::{HostViewDelta, WatchEvent};

/// One event as one line.
pub fn line(event: &WatchEvent) -> Bytes {
    // The contract's own types always serialise.
    let mut text = serde_json::to_vec(event).unwrap_or_default();
    text.push(b'\n');
    Bytes::from(text)
}

/// How an encoded delta starts, up to its revisions.
fn head(from: u64, to: u64) -> String {
    format!(r#"{{"type":"delta","delta":{{"from_revision":{from},"revision":{to}"#)
}

/// Distinct contents remembered while encoding a batch: deltas to hosts
/// with the same change come one after the other.
const REMEMBERED: usize = 4;

/// Encodes the deltas of one batch, each distinct content once.
#[derive(Default)]
pub struct DeltaEncoder {
    /// (a delta, the text of its line after its revisions).
    recent: Vec<(HostViewDelta, Bytes)>,
}

impl DeltaEncoder {
    pub fn line(&mut self, delta: &HostViewDelta) -> Bytes {
        let rest = match self.recent.iter().find(|(d, _)| d.same_sections(delta)) {
            Some((_, rest)) => rest.clone(),
            None => {
                let full = line(&WatchEvent::Delta { delta: delta.clone() });
                let own = head(delta.from_revision, delta.revision);
                if !full.starts_with(own.as_bytes()) {
                    // Not the layout expected: no sharing, still correct.
                    return full;
                }
                let rest = full.slice(own.len()..);
                if self.recent.len() == REMEMBERED {
                    self.recent.remove(0);
                }
                self.recent.push((delta.clone(), rest.clone()));
                rest
            }
        };
        let head = head(delta.from_revision, delta.revision);
        let mut text = Vec::with_capacity(head.len() + rest.len());
        text.extend_from_slice(head.as_bytes());
        text.extend_from_slice(&rest);
        Bytes::from(text)
    }
}

#[cfg(test)]
mod tests {
    use neutrino_model::{MacAddress, NetworkId, PortId};
    use neutrino_proto::RemotePort;

    use super::*;

    fn delta(from: u64, to: u64, port: PortId, network: NetworkId) -> HostViewDelta {
        let mut d = HostViewDelta::empty(from, to);
        d.remote_ports.set(
            port,
            RemotePort {
                network_id: network,
                vtep: "172.31.0.9".parse().unwrap(),
                mac: MacAddress([0xfa, 0x16, 0x3e, 0, 0, 1]),
                ips: vec!["10.0.0.9".parse().unwrap()],
            },
        );
        d
    }

    #[test]
    fn shared_text_gives_each_host_its_own_revisions_and_the_same_event() {
        let (port, network) = (PortId::new(), NetworkId::new());
        let mut encoder = DeltaEncoder::default();
        for (from, to) in [(3, 9), (7, 9), (1_000_000, 1_000_001), (0, 0)] {
            let d = delta(from, to, port, network);
            let shared = encoder.line(&d);
            assert_eq!(shared, line(&WatchEvent::Delta { delta: d.clone() }), "byte for byte");
            let back: WatchEvent = serde_json::from_slice(&shared).unwrap();
            assert_eq!(back, WatchEvent::Delta { delta: d });
        }
        // Another content is not mistaken for the first.
        let other = delta(3, 9, PortId::new(), network);
        let text = encoder.line(&other);
        assert_eq!(serde_json::from_slice::<WatchEvent>(&text).unwrap(), WatchEvent::Delta { delta: other });
        let empty = HostViewDelta::empty(4, 5);
        assert_eq!(encoder.line(&empty), line(&WatchEvent::Delta { delta: empty }));
    }
}
