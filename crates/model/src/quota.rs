//! Quota resources and their default limits (`-1` = unlimited).

use std::collections::BTreeMap;

/// The resources that count against quotas, by their Neutron quota key.
pub const QUOTA_RESOURCES: &[&str] = &[
    "network",
    "subnet",
    "port",
    "subnetpool",
    "router",
    "floatingip",
    "security_group",
    "security_group_rule",
    "rbac_policy",
];

/// Default limits, as Neutron ships them.
pub fn default_limits() -> BTreeMap<String, i64> {
    [
        ("network", 100),
        ("subnet", 100),
        ("port", 500),
        ("subnetpool", -1),
        ("router", 10),
        ("floatingip", 50),
        ("security_group", 10),
        ("security_group_rule", 100),
        ("rbac_policy", 10),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Whether creating `adding` more of a resource with `used` existing ones
/// stays within `limit`.
pub fn within_limit(limit: i64, used: i64, adding: i64) -> bool {
    limit < 0 || used + adding <= limit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_limits_are_unlimited() {
        assert!(within_limit(-1, 1_000_000, 1));
        assert!(within_limit(2, 1, 1));
        assert!(!within_limit(2, 2, 1));
        assert!(!within_limit(0, 0, 1));
        assert_eq!(default_limits()["port"], 500);
    }
}
