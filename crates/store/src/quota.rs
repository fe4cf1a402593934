//! Neutron's quota rules as every backend applies them: which rows count
//! against a limit, how a bulk request is counted, and when a create goes
//! over. Backends only count rows and read limits.

use std::collections::BTreeMap;

use neutrino_model::{Error, Result};

/// The table whose rows (one per resource, owned through its `project_id`
/// column) count against each quota resource. The schema is the same for
/// every backend.
pub(crate) fn counted_table(resource: &str) -> Option<&'static str> {
    match resource {
        "network" => Some("networks"),
        "subnet" => Some("subnets"),
        "port" => Some("ports"),
        "subnetpool" => Some("subnetpools"),
        "router" => Some("routers"),
        "floatingip" => Some("floatingips"),
        "security_group" => Some("security_groups"),
        "security_group_rule" => Some("security_group_rules"),
        "rbac_policy" => Some("network_rbacs"),
        _ => None,
    }
}

/// A bulk create is checked per project, all its items at once: `projects`
/// holds one entry per resource created.
pub(crate) fn per_project<'a>(projects: impl IntoIterator<Item = &'a str>) -> BTreeMap<&'a str, i64> {
    let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
    for project in projects {
        *counts.entry(project).or_default() += 1;
    }
    counts
}

/// Refuses `adding` more of `resource` when `used` of them already count
/// against `limit` (`-1`: unlimited).
pub(crate) fn check(resource: &str, limit: i64, used: i64, adding: i64) -> Result<()> {
    if neutrino_model::quota::within_limit(limit, used, adding) {
        Ok(())
    } else {
        Err(Error::OverQuota(format!("['{resource}']")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_quota_resource_counts_rows_of_a_table() {
        for r in neutrino_model::quota::QUOTA_RESOURCES {
            assert!(counted_table(r).is_some(), "{r}");
        }
        assert_eq!(counted_table("nonsense"), None);
    }

    #[test]
    fn bulk_requests_count_per_project() {
        let counts = per_project(["a", "b", "a"]);
        assert_eq!(counts.into_iter().collect::<Vec<_>>(), [("a", 2), ("b", 1)]);
    }

    #[test]
    fn over_the_limit_is_refused_and_unlimited_never_is() {
        assert_eq!(check("port", 2, 1, 1), Ok(()));
        assert_eq!(check("port", 2, 2, 1), Err(Error::OverQuota("['port']".into())));
        assert_eq!(check("port", -1, 1_000, 5), Ok(()));
    }
}
