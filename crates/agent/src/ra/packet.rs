//! Router Advertisement and Router Solicitation messages (RFC 4861
//! sections 4.1, 4.2 and 4.6), as the ICMPv6 payload a raw `IPPROTO_ICMPV6`
//! socket sends and receives: no IPv6 header, and the checksum left zero
//! on encode because the kernel always computes it for such sockets
//! (RFC 3542 section 3.1).
//!
//! Only what a router needs: encode an advertisement with the prefix
//! information, MTU and source link-layer address options, decode a
//! solicitation, and decode an advertisement (for tests and to recognise
//! what is on the link). Unknown options are skipped, malformed ones make
//! the whole message invalid, as RFC 4861 section 6.1 asks.

use std::net::Ipv6Addr;

use ipnet::Ipv6Net;

pub const TYPE_ROUTER_SOLICITATION: u8 = 133;
pub const TYPE_ROUTER_ADVERTISEMENT: u8 = 134;

const OPT_SOURCE_LINK_LAYER: u8 = 1;
const OPT_PREFIX_INFORMATION: u8 = 3;
const OPT_MTU: u8 = 5;

const FLAG_MANAGED: u8 = 0x80;
const FLAG_OTHER: u8 = 0x40;
const PREFIX_FLAG_ON_LINK: u8 = 0x80;
const PREFIX_FLAG_AUTONOMOUS: u8 = 0x40;

/// A Prefix Information option (RFC 4861 section 4.6.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefixInformation {
    /// The prefix, host bits zero.
    pub prefix: Ipv6Net,
    /// L: the prefix is on the link.
    pub on_link: bool,
    /// A: hosts may make addresses in it (SLAAC).
    pub autonomous: bool,
    pub valid_lifetime: u32,
    pub preferred_lifetime: u32,
}

/// A Router Advertisement (RFC 4861 section 4.2) with the options a
/// Neutrino router sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterAdvertisement {
    /// Hop limit hosts should use (0: unspecified).
    pub cur_hop_limit: u8,
    /// M: addresses come from DHCPv6.
    pub managed: bool,
    /// O: other configuration (DNS, ...) comes from DHCPv6.
    pub other: bool,
    /// Seconds hosts may use this router as a default router (0: not one).
    pub router_lifetime: u16,
    /// Milliseconds (0: unspecified).
    pub reachable_time: u32,
    /// Milliseconds (0: unspecified).
    pub retrans_timer: u32,
    pub source_link_layer: Option<[u8; 6]>,
    pub mtu: Option<u32>,
    pub prefixes: Vec<PrefixInformation>,
}

/// A Router Solicitation (RFC 4861 section 4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouterSolicitation {
    pub source_link_layer: Option<[u8; 6]>,
}

/// Why a message was not understood.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("message too short")]
    Truncated,
    #[error("ICMPv6 type {0} is not the one expected")]
    WrongType(u8),
    #[error("ICMPv6 code {0} is not 0")]
    WrongCode(u8),
    #[error("option of length 0 or past the end")]
    BadOption,
}

impl RouterAdvertisement {
    /// The ICMPv6 message, checksum zero (the kernel fills it in).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + 8 + 8 + 32 * self.prefixes.len());
        out.extend_from_slice(&[TYPE_ROUTER_ADVERTISEMENT, 0, 0, 0, self.cur_hop_limit]);
        let mut flags = 0;
        if self.managed {
            flags |= FLAG_MANAGED;
        }
        if self.other {
            flags |= FLAG_OTHER;
        }
        out.push(flags);
        out.extend_from_slice(&self.router_lifetime.to_be_bytes());
        out.extend_from_slice(&self.reachable_time.to_be_bytes());
        out.extend_from_slice(&self.retrans_timer.to_be_bytes());
        if let Some(mac) = self.source_link_layer {
            out.extend_from_slice(&[OPT_SOURCE_LINK_LAYER, 1]);
            out.extend_from_slice(&mac);
        }
        if let Some(mtu) = self.mtu {
            out.extend_from_slice(&[OPT_MTU, 1, 0, 0]);
            out.extend_from_slice(&mtu.to_be_bytes());
        }
        for p in &self.prefixes {
            let mut flags = 0;
            if p.on_link {
                flags |= PREFIX_FLAG_ON_LINK;
            }
            if p.autonomous {
                flags |= PREFIX_FLAG_AUTONOMOUS;
            }
            out.extend_from_slice(&[OPT_PREFIX_INFORMATION, 4, p.prefix.prefix_len(), flags]);
            out.extend_from_slice(&p.valid_lifetime.to_be_bytes());
            out.extend_from_slice(&p.preferred_lifetime.to_be_bytes());
            out.extend_from_slice(&[0; 4]);
            out.extend_from_slice(&p.prefix.trunc().addr().octets());
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        check_header(bytes, TYPE_ROUTER_ADVERTISEMENT, 16)?;
        let mut ra = RouterAdvertisement {
            cur_hop_limit: bytes[4],
            managed: bytes[5] & FLAG_MANAGED != 0,
            other: bytes[5] & FLAG_OTHER != 0,
            router_lifetime: u16::from_be_bytes([bytes[6], bytes[7]]),
            reachable_time: be32(&bytes[8..12]),
            retrans_timer: be32(&bytes[12..16]),
            source_link_layer: None,
            mtu: None,
            prefixes: Vec::new(),
        };
        for (kind, body) in options(&bytes[16..])? {
            match kind {
                OPT_SOURCE_LINK_LAYER => ra.source_link_layer = link_layer(body),
                OPT_MTU if body.len() == 6 => ra.mtu = Some(be32(&body[2..6])),
                OPT_PREFIX_INFORMATION if body.len() == 30 => {
                    let mut octets = [0u8; 16];
                    octets.copy_from_slice(&body[14..30]);
                    let Ok(prefix) = Ipv6Net::new(Ipv6Addr::from(octets), body[0]) else {
                        continue;
                    };
                    ra.prefixes.push(PrefixInformation {
                        prefix,
                        on_link: body[1] & PREFIX_FLAG_ON_LINK != 0,
                        autonomous: body[1] & PREFIX_FLAG_AUTONOMOUS != 0,
                        valid_lifetime: be32(&body[2..6]),
                        preferred_lifetime: be32(&body[6..10]),
                    });
                }
                _ => {}
            }
        }
        Ok(ra)
    }
}

impl RouterSolicitation {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![TYPE_ROUTER_SOLICITATION, 0, 0, 0, 0, 0, 0, 0];
        if let Some(mac) = self.source_link_layer {
            out.extend_from_slice(&[OPT_SOURCE_LINK_LAYER, 1]);
            out.extend_from_slice(&mac);
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        check_header(bytes, TYPE_ROUTER_SOLICITATION, 8)?;
        let mut rs = RouterSolicitation { source_link_layer: None };
        for (kind, body) in options(&bytes[8..])? {
            if kind == OPT_SOURCE_LINK_LAYER {
                rs.source_link_layer = link_layer(body);
            }
        }
        Ok(rs)
    }
}

fn check_header(bytes: &[u8], kind: u8, len: usize) -> Result<(), DecodeError> {
    if bytes.len() < len {
        return Err(DecodeError::Truncated);
    }
    if bytes[0] != kind {
        return Err(DecodeError::WrongType(bytes[0]));
    }
    if bytes[1] != 0 {
        return Err(DecodeError::WrongCode(bytes[1]));
    }
    Ok(())
}

/// The options as (type, bytes after the type and length octets).
fn options(mut rest: &[u8]) -> Result<Vec<(u8, &[u8])>, DecodeError> {
    let mut found = Vec::new();
    while !rest.is_empty() {
        if rest.len() < 2 {
            return Err(DecodeError::BadOption);
        }
        let len = usize::from(rest[1]) * 8;
        if len == 0 || len > rest.len() {
            return Err(DecodeError::BadOption);
        }
        found.push((rest[0], &rest[2..len]));
        rest = &rest[len..];
    }
    Ok(found)
}

fn link_layer(body: &[u8]) -> Option<[u8; 6]> {
    body.get(..6)?.try_into().ok()
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RouterAdvertisement {
        RouterAdvertisement {
            cur_hop_limit: 64,
            managed: false,
            other: true,
            router_lifetime: 1800,
            reachable_time: 0,
            retrans_timer: 0,
            source_link_layer: Some([0xfa, 0x16, 0x3e, 0x11, 0x22, 0x33]),
            mtu: Some(1450),
            prefixes: vec![PrefixInformation {
                prefix: "2001:db8:1::/64".parse().unwrap(),
                on_link: true,
                autonomous: true,
                valid_lifetime: 86400,
                preferred_lifetime: 14400,
            }],
        }
    }

    /// The advertisement laid out by hand from RFC 4861 sections 4.2 and
    /// 4.6 (what radvd sends for `AdvOtherConfigFlag on; AdvLinkMTU 1450;
    /// prefix 2001:db8:1::/64 {};` with its defaults: hop limit 64,
    /// lifetime 1800, valid 86400, preferred 14400; radvd orders the
    /// options differently, which RFC 4861 leaves free), checksum zero.
    /// The real-kernel test (tests/ra_e2e.rs) shows Linux accepts it.
    #[rustfmt::skip]
    const KNOWN: [u8; 64] = [
        // type 134, code 0, checksum, hop limit 64, M=0 O=1, lifetime 1800
        0x86, 0x00, 0x00, 0x00, 0x40, 0x40, 0x07, 0x08,
        // reachable time 0, retrans timer 0
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        // source link-layer address: type 1, length 1 (8 octets), MAC
        0x01, 0x01, 0xfa, 0x16, 0x3e, 0x11, 0x22, 0x33,
        // MTU: type 5, length 1, reserved, 1450
        0x05, 0x01, 0x00, 0x00, 0x00, 0x00, 0x05, 0xaa,
        // prefix information: type 3, length 4 (32 octets), /64, L=1 A=1
        0x03, 0x04, 0x40, 0xc0,
        // valid lifetime 86400, preferred lifetime 14400, reserved
        0x00, 0x01, 0x51, 0x80, 0x00, 0x00, 0x38, 0x40, 0x00, 0x00, 0x00, 0x00,
        // 2001:db8:1::
        0x20, 0x01, 0x0d, 0xb8, 0x00, 0x01, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    ];

    #[test]
    fn an_advertisement_encodes_byte_for_byte() {
        assert_eq!(sample().encode(), KNOWN);
    }

    #[test]
    fn an_advertisement_decodes_to_what_was_encoded() {
        assert_eq!(RouterAdvertisement::decode(&KNOWN).unwrap(), sample());
    }

    #[test]
    fn flags_land_on_their_bits() {
        let mut ra = sample();
        ra.managed = true;
        ra.other = false;
        ra.prefixes[0].autonomous = false;
        let bytes = ra.encode();
        assert_eq!(bytes[5], 0x80, "M only");
        assert_eq!(bytes[35], 0x80, "L only");
        ra.prefixes[0].on_link = false;
        ra.managed = false;
        assert_eq!(ra.encode()[5], 0);
        assert_eq!(ra.encode()[35], 0);
        assert_eq!(RouterAdvertisement::decode(&ra.encode()).unwrap(), ra);
    }

    #[test]
    fn a_prefix_is_sent_with_its_host_bits_cleared() {
        let mut ra = sample();
        ra.prefixes[0].prefix = "2001:db8:1::1/64".parse().unwrap();
        assert_eq!(ra.encode(), KNOWN);
    }

    #[test]
    fn options_are_optional_and_unknown_ones_skipped() {
        let ra = RouterAdvertisement { source_link_layer: None, mtu: None, prefixes: vec![], ..sample() };
        let mut bytes = ra.encode();
        assert_eq!(bytes.len(), 16);
        // RDNSS (type 25), 24 octets, skipped.
        bytes.extend_from_slice(&[25, 3]);
        bytes.extend_from_slice(&[0; 22]);
        assert_eq!(RouterAdvertisement::decode(&bytes).unwrap(), ra);
    }

    #[test]
    fn a_solicitation_from_linux_decodes() {
        // What a Linux host sends when its link comes up.
        let bytes = [0x85, 0x00, 0x12, 0x34, 0, 0, 0, 0, 0x01, 0x01, 0xfa, 0x16, 0x3e, 0, 0, 0x05];
        let rs = RouterSolicitation::decode(&bytes).unwrap();
        assert_eq!(rs.source_link_layer, Some([0xfa, 0x16, 0x3e, 0, 0, 0x05]));
        assert_eq!(RouterSolicitation { source_link_layer: None }.encode(), [0x85, 0, 0, 0, 0, 0, 0, 0]);
        // Without options (sent from the unspecified address).
        assert_eq!(RouterSolicitation::decode(&bytes[..8]).unwrap().source_link_layer, None);
    }

    #[test]
    fn malformed_messages_are_refused() {
        assert_eq!(RouterSolicitation::decode(&[0x85, 0, 0]), Err(DecodeError::Truncated));
        assert_eq!(RouterSolicitation::decode(&KNOWN[..8]), Err(DecodeError::WrongType(134)));
        assert_eq!(
            RouterAdvertisement::decode(&[0x86, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(DecodeError::WrongCode(1))
        );
        // An option of length 0 would loop forever.
        let zero = [0x85, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00, 0, 0, 0, 0, 0, 0];
        assert_eq!(RouterSolicitation::decode(&zero), Err(DecodeError::BadOption));
        // One that claims more than there is.
        assert_eq!(RouterAdvertisement::decode(&KNOWN[..60]), Err(DecodeError::BadOption));
    }
}
