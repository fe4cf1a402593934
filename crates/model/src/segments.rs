//! Network segments: types, the configuration of which ids may be used, the
//! validation of provider requests, and MTU arithmetic.

use std::collections::BTreeSet;
use std::fmt;

use rand::RngExt;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The segment types Neutrino realises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkType {
    Flat,
    Vlan,
    Vxlan,
}

impl NetworkType {
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkType::Flat => "flat",
            NetworkType::Vlan => "vlan",
            NetworkType::Vxlan => "vxlan",
        }
    }

    /// Parses a `provider:network_type` value; types Neutron knows but
    /// Neutrino does not realise (gre, geneve, local) are "not supported".
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "flat" => Ok(NetworkType::Flat),
            "vlan" => Ok(NetworkType::Vlan),
            "vxlan" => Ok(NetworkType::Vxlan),
            other => Err(Error::InvalidInput(format!("network_type value '{other}' not supported"))),
        }
    }

    pub fn is_tunnel(self) -> bool {
        matches!(self, NetworkType::Vxlan)
    }
}

impl fmt::Display for NetworkType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Largest VXLAN network identifier (24 bits).
pub const MAX_VNI: i64 = (1 << 24) - 1;
/// VLAN ids usable on a trunk.
pub const VLAN_RANGE: (i64, i64) = (1, 4094);

/// A VXLAN network identifier: 24 bits, checked when made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Vni(u32);

/// A VLAN id usable on a trunk (1..=4094), checked when made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct VlanId(u16);

/// A segmentation id that does not fit the segment type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} id {value} is out of range ({min} through {max})")]
pub struct SegmentIdRangeError {
    pub kind: NetworkType,
    pub value: i64,
    pub min: i64,
    pub max: i64,
}

impl Vni {
    pub fn get(self) -> u32 {
        self.0
    }
}

impl VlanId {
    pub fn get(self) -> u16 {
        self.0
    }
}

impl TryFrom<i64> for Vni {
    type Error = SegmentIdRangeError;
    fn try_from(value: i64) -> std::result::Result<Self, Self::Error> {
        match u32::try_from(value) {
            Ok(v) if (1..=MAX_VNI).contains(&value) => Ok(Vni(v)),
            _ => Err(SegmentIdRangeError { kind: NetworkType::Vxlan, value, min: 1, max: MAX_VNI }),
        }
    }
}

impl TryFrom<i64> for VlanId {
    type Error = SegmentIdRangeError;
    fn try_from(value: i64) -> std::result::Result<Self, Self::Error> {
        match u16::try_from(value) {
            Ok(v) if (VLAN_RANGE.0..=VLAN_RANGE.1).contains(&value) => Ok(VlanId(v)),
            _ => Err(SegmentIdRangeError { kind: NetworkType::Vlan, value, min: VLAN_RANGE.0, max: VLAN_RANGE.1 }),
        }
    }
}

/// Deserialising checks the range too: a peer cannot hand us a bad id.
macro_rules! checked_deserialize {
    ($t:ty) => {
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let raw = i64::deserialize(d)?;
                <$t>::try_from(raw).map_err(serde::de::Error::custom)
            }
        }
    };
}
checked_deserialize!(Vni);
checked_deserialize!(VlanId);

impl fmt::Display for Vni {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for VlanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Why a configured range of segmentation ids was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error("'{0}' is not FIRST:LAST")]
    NotARange(String),
    #[error("'{0}' is not an integer")]
    NotAnInteger(String),
    #[error("range '{0}' ends before it starts")]
    Reversed(String),
    #[error("VLAN range '{0}' is outside 1-4094")]
    VlanOutOfRange(String),
    #[error("VNI range {}:{} is outside 1-{MAX_VNI}", .0.first, .0.last)]
    VniOutOfRange(IdRange),
}

/// An inclusive range of segmentation ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdRange {
    pub first: i64,
    pub last: i64,
}

impl IdRange {
    /// Parses `"first:last"`.
    pub fn parse(text: &str) -> std::result::Result<Self, RangeError> {
        let (a, b) = text.split_once(':').ok_or_else(|| RangeError::NotARange(text.to_string()))?;
        let first: i64 = a.trim().parse().map_err(|_| RangeError::NotAnInteger(a.to_string()))?;
        let last: i64 = b.trim().parse().map_err(|_| RangeError::NotAnInteger(b.to_string()))?;
        if first > last {
            return Err(RangeError::Reversed(text.to_string()));
        }
        Ok(IdRange { first, last })
    }

    pub fn contains(&self, id: i64) -> bool {
        self.first <= id && id <= self.last
    }

    pub fn size(&self) -> i64 {
        self.last - self.first + 1
    }
}

/// A physical network allowed for VLAN segments, with the VLAN ids (if any)
/// that project networks may be given on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VlanPhysnet {
    pub physnet: String,
    pub ranges: Vec<IdRange>,
}

impl VlanPhysnet {
    /// Parses `"physnet"` (provider networks only) or `"physnet:first:last"`.
    pub fn parse(text: &str) -> std::result::Result<Self, RangeError> {
        match text.split_once(':') {
            None => Ok(VlanPhysnet { physnet: text.to_string(), ranges: vec![] }),
            Some((name, range)) => {
                let r = IdRange::parse(range)?;
                if r.first < VLAN_RANGE.0 || r.last > VLAN_RANGE.1 {
                    return Err(RangeError::VlanOutOfRange(range.to_string()));
                }
                Ok(VlanPhysnet { physnet: name.to_string(), ranges: vec![r] })
            }
        }
    }
}

/// Which segments may exist and how project networks get theirs
/// (Neutron's `[ml2]` and `[ml2_type_*]` options).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentConfig {
    /// Types tried in order for networks created without provider attributes.
    pub project_network_types: Vec<NetworkType>,
    pub vni_ranges: Vec<IdRange>,
    /// Physical networks usable by flat networks; `*` allows any.
    pub flat_networks: Vec<String>,
    pub vlan_physnets: Vec<VlanPhysnet>,
    pub mtu: MtuConfig,
}

impl Default for SegmentConfig {
    fn default() -> Self {
        SegmentConfig {
            project_network_types: vec![NetworkType::Vxlan],
            vni_ranges: vec![IdRange { first: 1, last: 65535 }],
            flat_networks: vec!["provider".to_string()],
            vlan_physnets: vec![VlanPhysnet { physnet: "provider".to_string(), ranges: vec![] }],
            mtu: MtuConfig::default(),
        }
    }
}

impl SegmentConfig {
    pub fn flat_allowed(&self, physnet: &str) -> bool {
        self.flat_networks.iter().any(|p| p == "*" || p == physnet)
    }

    pub fn vlan_physnet(&self, physnet: &str) -> Option<&VlanPhysnet> {
        self.vlan_physnets.iter().find(|p| p.physnet == physnet)
    }

    /// Checks the configured ranges once at start-up.
    pub fn validate(&self) -> std::result::Result<(), RangeError> {
        for r in &self.vni_ranges {
            if r.first < 1 || r.last > MAX_VNI {
                return Err(RangeError::VniOutOfRange(*r));
            }
        }
        Ok(())
    }
}

/// The MTU settings of Neutron's reference plug-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MtuConfig {
    /// MTU of the underlying physical networks (`global_physnet_mtu`).
    pub global_physnet_mtu: i64,
    /// MTU of the underlay between hosts, if smaller (`path_mtu`; 0 = unset).
    pub path_mtu: i64,
    /// IP version of the overlay's outer header.
    pub overlay_ip_version: u8,
}

impl Default for MtuConfig {
    fn default() -> Self {
        MtuConfig { global_physnet_mtu: 1500, path_mtu: 0, overlay_ip_version: 4 }
    }
}

/// VXLAN encapsulation cost beyond the outer IP header: UDP 8 + VXLAN 8 +
/// inner Ethernet 14.
const VXLAN_OVERHEAD: i64 = 30;

impl MtuConfig {
    /// The largest MTU a segment of this type can carry.
    pub fn segment_mtu(&self, network_type: NetworkType) -> i64 {
        match network_type {
            NetworkType::Flat | NetworkType::Vlan => self.global_physnet_mtu,
            NetworkType::Vxlan => {
                let underlay = if self.path_mtu > 0 {
                    self.global_physnet_mtu.min(self.path_mtu)
                } else {
                    self.global_physnet_mtu
                };
                let ip_header = if self.overlay_ip_version == 6 { 40 } else { 20 };
                underlay - ip_header - VXLAN_OVERHEAD
            }
        }
    }

    /// A network's maximum MTU: the smallest over its segments.
    pub fn network_mtu<'a>(&self, types: impl IntoIterator<Item = &'a NetworkType>) -> i64 {
        types.into_iter().map(|t| self.segment_mtu(*t)).min().unwrap_or(self.global_physnet_mtu)
    }
}

/// A segment as requested through provider attributes or `/v2.0/segments`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentRequest {
    pub network_type: NetworkType,
    pub physical_network: Option<String>,
    pub segmentation_id: Option<i64>,
}

/// Validates a provider segment request against the configuration (the
/// per-type table of the spec, §3.7). Availability (in use or exhausted)
/// is the store's business.
pub fn validate_segment_request(config: &SegmentConfig, req: &SegmentRequest) -> Result<()> {
    match req.network_type {
        NetworkType::Flat => {
            let Some(physnet) = &req.physical_network else {
                return Err(Error::InvalidInput("physical_network required for flat provider network".into()));
            };
            if req.segmentation_id.is_some() {
                return Err(Error::InvalidInput("segmentation_id specified for flat provider network".into()));
            }
            if !config.flat_allowed(physnet) {
                return Err(Error::InvalidInput(format!(
                    "physical_network '{physnet}' unknown for flat provider network"
                )));
            }
        }
        NetworkType::Vlan => {
            let Some(physnet) = &req.physical_network else {
                if req.segmentation_id.is_some() {
                    return Err(Error::InvalidInput(
                        "segmentation_id requires physical_network for VLAN provider network".into(),
                    ));
                }
                return Err(Error::InvalidInput("physical_network required for VLAN provider network".into()));
            };
            if config.vlan_physnet(physnet).is_none() {
                return Err(Error::InvalidInput(format!(
                    "physical_network '{physnet}' unknown for VLAN provider network"
                )));
            }
            if let Some(id) = req.segmentation_id
                && !(VLAN_RANGE.0..=VLAN_RANGE.1).contains(&id)
            {
                return Err(Error::InvalidInput(format!(
                    "segmentation_id out of range ({} through {})",
                    VLAN_RANGE.0, VLAN_RANGE.1
                )));
            }
        }
        NetworkType::Vxlan => {
            if req.physical_network.is_some() {
                return Err(Error::InvalidInput("provider:physical_network specified for vxlan network".into()));
            }
            if let Some(id) = req.segmentation_id
                && !(1..=MAX_VNI).contains(&id)
            {
                return Err(Error::InvalidInput(format!("segmentation_id out of range (1 through {MAX_VNI})")));
            }
        }
    }
    Ok(())
}

/// Picks a random id from `ranges` that is not in `used`, uniformly over the
/// free ids. `used` need only hold the ids that fall inside the ranges.
pub fn choose_free_id(ranges: &[IdRange], used: &BTreeSet<i64>, rng: &mut impl rand::Rng) -> Option<i64> {
    let mut free_total: i64 = 0;
    for r in ranges {
        let taken = used.range(r.first..=r.last).count() as i64;
        free_total += r.size() - taken;
    }
    if free_total <= 0 {
        return None;
    }
    // The k-th free id, counting across ranges in order.
    let mut k = rng.random_range(0..free_total);
    for r in ranges {
        let taken: Vec<i64> = used.range(r.first..=r.last).copied().collect();
        let free_here = r.size() - taken.len() as i64;
        if k >= free_here {
            k -= free_here;
            continue;
        }
        let mut candidate = r.first + k;
        for t in taken {
            if t <= candidate {
                candidate += 1;
            } else {
                break;
            }
        }
        return Some(candidate);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_ids_are_checked_when_made_and_when_read() {
        assert_eq!(Vni::try_from(5000).unwrap().get(), 5000);
        assert!(Vni::try_from(0).is_err());
        assert!(Vni::try_from(MAX_VNI + 1).is_err());
        assert!(Vni::try_from(-1).is_err());
        let err = Vni::try_from(1 << 32).unwrap_err();
        assert_eq!(err.to_string(), "vxlan id 4294967296 is out of range (1 through 16777215)");
        assert_eq!(VlanId::try_from(100).unwrap().get(), 100);
        assert!(VlanId::try_from(4095).is_err());
        assert!(serde_json::from_str::<Vni>("16777216").is_err());
        assert_eq!(serde_json::from_str::<Vni>("42").unwrap().get(), 42);
        assert!(serde_json::from_str::<VlanId>("0").is_err());
    }

    #[test]
    fn vxlan_mtu_is_1450_on_a_1500_ipv4_underlay() {
        let mtu = MtuConfig::default();
        assert_eq!(mtu.segment_mtu(NetworkType::Vxlan), 1450);
        assert_eq!(mtu.segment_mtu(NetworkType::Flat), 1500);
        assert_eq!(mtu.segment_mtu(NetworkType::Vlan), 1500);
        let v6 = MtuConfig { overlay_ip_version: 6, ..mtu };
        assert_eq!(v6.segment_mtu(NetworkType::Vxlan), 1430);
        let path = MtuConfig { path_mtu: 9000, global_physnet_mtu: 9000, ..mtu };
        assert_eq!(path.segment_mtu(NetworkType::Vxlan), 8950);
        assert_eq!(mtu.network_mtu(&[NetworkType::Flat, NetworkType::Vxlan]), 1450);
        assert_eq!(mtu.network_mtu(&[]), 1500);
    }

    #[test]
    fn provider_requests_are_checked_per_type() {
        let cfg = SegmentConfig::default();
        let req = |t, p: Option<&str>, id| SegmentRequest {
            network_type: t,
            physical_network: p.map(str::to_string),
            segmentation_id: id,
        };
        assert!(validate_segment_request(&cfg, &req(NetworkType::Flat, Some("provider"), None)).is_ok());
        assert!(validate_segment_request(&cfg, &req(NetworkType::Flat, None, None)).is_err());
        assert!(validate_segment_request(&cfg, &req(NetworkType::Flat, Some("other"), None)).is_err());
        assert!(validate_segment_request(&cfg, &req(NetworkType::Flat, Some("provider"), Some(3))).is_err());
        assert!(validate_segment_request(&cfg, &req(NetworkType::Vlan, Some("provider"), Some(100))).is_ok());
        assert!(validate_segment_request(&cfg, &req(NetworkType::Vlan, Some("provider"), Some(4095))).is_err());
        assert!(validate_segment_request(&cfg, &req(NetworkType::Vxlan, None, Some(5000))).is_ok());
        assert!(validate_segment_request(&cfg, &req(NetworkType::Vxlan, Some("provider"), None)).is_err());
        assert!(validate_segment_request(&cfg, &req(NetworkType::Vxlan, None, Some(1 << 24))).is_err());
        assert!(NetworkType::parse("gre").is_err());
    }

    #[test]
    fn free_ids_are_chosen_uniformly_and_never_reused() {
        let ranges = [IdRange { first: 10, last: 14 }, IdRange { first: 100, last: 101 }];
        let mut used = BTreeSet::new();
        let mut rng = rand::rng();
        for _ in 0..7 {
            let id = choose_free_id(&ranges, &used, &mut rng).unwrap();
            assert!(ranges.iter().any(|r| r.contains(id)));
            assert!(used.insert(id));
        }
        assert_eq!(choose_free_id(&ranges, &used, &mut rng), None);
    }

    #[test]
    fn range_parsing() {
        assert_eq!(IdRange::parse("1:1000").unwrap(), IdRange { first: 1, last: 1000 });
        assert_eq!(IdRange::parse("5:1"), Err(RangeError::Reversed("5:1".into())));
        assert_eq!(IdRange::parse("x"), Err(RangeError::NotARange("x".into())));
        assert_eq!(IdRange::parse("1:y"), Err(RangeError::NotAnInteger("y".into())));
        let p = VlanPhysnet::parse("physnet1:100:200").unwrap();
        assert_eq!(p.physnet, "physnet1");
        assert_eq!(p.ranges, vec![IdRange { first: 100, last: 200 }]);
        assert!(VlanPhysnet::parse("provider").unwrap().ranges.is_empty());
        let refused = VlanPhysnet::parse("p:1:5000").unwrap_err();
        assert_eq!(refused.to_string(), "VLAN range '1:5000' is outside 1-4094");
    }

    #[test]
    fn vni_ranges_beyond_24_bits_are_refused() {
        let mut cfg = SegmentConfig::default();
        assert!(cfg.validate().is_ok());
        cfg.vni_ranges.push(IdRange { first: 0, last: 20_000_000 });
        assert_eq!(cfg.validate().unwrap_err().to_string(), "VNI range 0:20000000 is outside 1-16777215");
    }
}
