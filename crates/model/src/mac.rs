//! MAC addresses: parsing in the notations Neutron accepts, the canonical
//! lower-case colon form, and generation under a configured base prefix.

use std::fmt;
use std::str::FromStr;

/// A 48-bit Ethernet address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddress(pub [u8; 6]);

/// Why a MAC address was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MacError {
    /// '{0}' is not a valid MAC address
    #[error("'{0}' is not a valid MAC address")]
    Malformed(String),
    /// all-zero and broadcast addresses cannot belong to a port
    #[error("'{0}' is not a valid MAC address")]
    Reserved(String),
}

impl MacAddress {
    pub const ZERO: MacAddress = MacAddress([0; 6]);
    pub const BROADCAST: MacAddress = MacAddress([0xff; 6]);

    /// Parses any of `aa:bb:cc:dd:ee:ff`, `AA-BB-CC-DD-EE-FF`,
    /// `aabb.ccdd.eeff` and `aabbccddeeff`, and refuses the all-zero and
    /// broadcast addresses, which can never be a port's address.
    pub fn parse_port_mac(s: &str) -> Result<Self, MacError> {
        let mac: MacAddress = s.parse()?;
        if mac == Self::ZERO || mac == Self::BROADCAST {
            return Err(MacError::Reserved(s.to_string()));
        }
        Ok(mac)
    }

    /// `00:00:00:00:00:00`, which VXLAN uses as its flood entry.
    pub fn is_zero(&self) -> bool {
        *self == Self::ZERO
    }

    /// The address in the first six bytes of `bytes`, if it has exactly six.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        Some(MacAddress(bytes.try_into().ok()?))
    }

    /// Multicast addresses have the low bit of the first octet set.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 == 1
    }

    /// A random address under `base`: the first three octets of the base are
    /// kept, and the fourth too when the base's fourth octet is not zero (as
    /// Neutron's `base_mac` works); the rest is random.
    pub fn random_with_base(base: MacAddress, rng: &mut impl rand::Rng) -> Self {
        let mut bytes = [0u8; 6];
        rng.fill_bytes(&mut bytes);
        let keep = if base.0[3] != 0 { 4 } else { 3 };
        bytes[..keep].copy_from_slice(&base.0[..keep]);
        MacAddress(bytes)
    }

    /// The default Neutron base, `fa:16:3e:00:00:00`.
    pub const fn openstack_base() -> Self {
        MacAddress([0xfa, 0x16, 0x3e, 0, 0, 0])
    }
}

impl FromStr for MacAddress {
    type Err = MacError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || MacError::Malformed(s.to_string());
        let hex: String = if s.len() == 17 {
            let sep = s.as_bytes()[2];
            if sep != b':' && sep != b'-' {
                return Err(bad());
            }
            let parts: Vec<&str> = s.split(sep as char).collect();
            if parts.len() != 6 || parts.iter().any(|p| p.len() != 2) {
                return Err(bad());
            }
            parts.concat()
        } else if s.len() == 14 {
            let parts: Vec<&str> = s.split('.').collect();
            if parts.len() != 3 || parts.iter().any(|p| p.len() != 4) {
                return Err(bad());
            }
            parts.concat()
        } else if s.len() == 12 {
            s.to_string()
        } else {
            return Err(bad());
        };
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let mut out = [0u8; 6];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(MacAddress(out))
    }
}

impl fmt::Display for MacAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3], b[4], b[5])
    }
}

impl serde::Serialize for MacAddress {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for MacAddress {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Debug for MacAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MacAddress({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_every_common_notation_and_prints_canonically() {
        for text in ["fa:16:3e:30:9c:b0", "FA-16-3E-30-9C-B0", "fa16.3e30.9cb0", "FA163E309CB0"] {
            let mac: MacAddress = text.parse().unwrap();
            assert_eq!(mac.to_string(), "fa:16:3e:30:9c:b0", "{text}");
        }
    }

    #[test]
    fn rejects_malformed_and_reserved_addresses() {
        for text in [
            "",
            "fa:16:3e:30:9c",
            "fa:16:3e:30:9c:zz",
            "fa:16-3e:30:9c:b0",
            " fa:16:3e:30:9c:b0",
            "fa:16:3e:30:9c:b0 ",
            "fa:16:3e:30:9cb0:",
        ] {
            assert!(MacAddress::parse_port_mac(text).is_err(), "{text:?}");
        }
        assert!(MacAddress::parse_port_mac("00:00:00:00:00:00").is_err());
        assert!(MacAddress::parse_port_mac("ff:ff:ff:ff:ff:ff").is_err());
    }

    #[test]
    fn generated_addresses_keep_the_base_prefix() {
        let mut rng = rand::rng();
        for _ in 0..100 {
            let mac = MacAddress::random_with_base(MacAddress::openstack_base(), &mut rng);
            assert_eq!(&mac.0[..3], &[0xfa, 0x16, 0x3e]);
        }
        let base = MacAddress([0xfa, 0x16, 0x3e, 0x42, 0, 0]);
        let mac = MacAddress::random_with_base(base, &mut rng);
        assert_eq!(&mac.0[..4], &[0xfa, 0x16, 0x3e, 0x42]);
    }
}
