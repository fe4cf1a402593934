//! Neutrino's own DHCP server: one per DHCP service (network) scheduled to
//! this host, inside the service's `qdhcp-` namespace on its `ns-` port.
//!
//! Addresses are never allocated here: the server already decided every
//! port's fixed IPs, so a client is known by its MAC address and gets
//! exactly its fixed address, and an unknown MAC gets no answer at all
//! (another DHCP server on the segment may own it; Neutron's dnsmasq
//! behaves the same with its static-only host files).
//!
//! - [`v4`]: DHCPv4 answers (RFC 2131), pure and unit-tested.
//! - [`v6`]: DHCPv6 stateless answers (RFC 8415 Information-Request).
//! - [`DhcpServer`]: the sockets inside the namespace and the tasks serving
//!   them, with the data hot-swappable.

pub mod v4;
pub mod v6;

mod server;

pub use server::{DhcpServer, DhcpStats, FamilyStats};

use neutrino_proto::{DhcpHost, DhcpService};

/// `fa:16:3e:00:00:01` (either case, `:` or `-`) as bytes.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split([':', '-']);
    for byte in &mut mac {
        let part = parts.next()?;
        if part.is_empty() || part.len() > 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// The port with this MAC address, if the service knows it. Comparing
/// bytes makes the lookup independent of how the MAC was spelled.
pub(crate) fn find_host<'a>(service: &'a DhcpService, mac: &[u8]) -> Option<&'a DhcpHost> {
    service.hosts.iter().find(|h| parse_mac(&h.mac).is_some_and(|m| m[..] == *mac))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_parse_in_any_case() {
        assert_eq!(parse_mac("FA:16:3e:00:0a:Ff"), Some([0xfa, 0x16, 0x3e, 0, 0x0a, 0xff]));
        assert_eq!(parse_mac("fa-16-3e-00-0a-ff"), Some([0xfa, 0x16, 0x3e, 0, 0x0a, 0xff]));
        assert_eq!(parse_mac("fa:16:3e:00:0a"), None);
        assert_eq!(parse_mac("fa:16:3e:00:0a:ff:01"), None);
        assert_eq!(parse_mac("fa:16:3e:00:0a:fff"), None);
        assert_eq!(parse_mac("fa:16:3e:00::ff"), None);
        assert_eq!(parse_mac(""), None);
    }
}
