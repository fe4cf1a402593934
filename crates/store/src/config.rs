use std::collections::BTreeMap;

use neutrino_model::MacAddress;
use neutrino_model::quota::default_limits;
use neutrino_model::segments::SegmentConfig;
use neutrino_model::subnets::SubnetLimits;

/// What the store needs to know of the server's configuration to apply
/// Neutron's rules inside its transactions.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub segments: SegmentConfig,
    pub base_mac: MacAddress,
    pub subnet_limits: SubnetLimits,
    pub max_allowed_address_pairs: usize,
    /// Default quota limits by resource (`-1` = unlimited).
    pub default_quotas: BTreeMap<String, i64>,
    /// `PRAGMA synchronous=FULL` (survives power loss) instead of NORMAL
    /// (survives a crash of the process, which is what WAL guarantees).
    pub sync_full: bool,
    /// Apply missing migrations when opening (else refuse a schema that is
    /// not current: operators who run `neutrino db migrate` themselves).
    pub migrate: bool,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            segments: SegmentConfig::default(),
            base_mac: MacAddress::openstack_base(),
            subnet_limits: SubnetLimits::default(),
            max_allowed_address_pairs: 10,
            default_quotas: default_limits(),
            sync_full: false,
            migrate: true,
        }
    }
}
