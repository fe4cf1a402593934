//! What the agent's root-only tests share: whether they may run here.

/// Set (to anything but empty or `0`) by `scripts/test.sh`, so by CI: a
/// root-only test that cannot run fails instead of skipping, and a green
/// run always includes the dataplane tier.
pub const REQUIRE_DATAPLANE: &str = "NEUTRINO_REQUIRE_DATAPLANE";

/// Whether the effective user is root.
pub fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    // "Uid: real effective saved fs"
    status.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|ids| ids.split_whitespace().nth(1)) == Some("0")
}

/// Says why a root-only test cannot run, for it to skip; fails the test
/// instead when `REQUIRE_DATAPLANE` is set.
pub fn cannot_run(why: &str) {
    let required = std::env::var(REQUIRE_DATAPLANE).is_ok_and(|v| !v.is_empty() && v != "0");
    assert!(!required, "{why}, and {REQUIRE_DATAPLANE} is set: the dataplane tests must run");
    eprintln!("skipped: {why}");
}
