#!/usr/bin/env bash
# Runs Neutrino's whole test suite on a fresh machine: prepares the Python
# tools some tests drive (the real `openstack` CLI, a real Keystone,
# tempest), checks formatting and lints, runs every test of the workspace,
# then upstream tempest's network API suite against a fresh server; then the
# store's, the API's and tempest's suites once more with the server on a
# throwaway PostgreSQL cluster (Debian's postgresql, started by
# scripts/pg-cluster.sh in a temporary directory and removed at the end).
#
#   scripts/test.sh
#
# Needs: the Rust toolchain of rust-toolchain.toml (cargo), python3 with the
# venv module and pip, access to crates.io and PyPI, and root (or sudo) for
# Debian packages and the dataplane tests' network namespaces. The tests create the
# Python environments themselves when missing; doing it here first keeps the
# install time out of the tests' own timeouts.
set -euo pipefail
cd "$(dirname "$0")/.."

# The root-only tests (network namespaces) fail instead of skipping: a
# green run of this script, which is what CI runs, includes the dataplane.
export NEUTRINO_REQUIRE_DATAPLANE=1

# One-shot runs gain nothing from incremental compilation, and its caches
# take gigabytes of a disk that CI machines have little of.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

step() { printf '\n==> %s\n' "$*"; }
disk() { df -h . | awk 'NR == 2 { printf "disk: %s free of %s\n", $4, $2 }'; }
disk

step "System tools of the dataplane tests (Debian packages, when missing)"
# The end-to-end tests build namespaced labs (iproute2, nsenter), run a
# real DHCP client in instances (busybox udhcpc) and ping; router NAT needs nft
# and conntrack (the agent runs both inside router namespaces).
missing=()
# Containers run under a real podman with runc (its CNI backend runs
# our plugin); their image is a static busybox.
for pair in ip:iproute2 nsenter:util-linux busybox:busybox-static udhcpc:udhcpc ping:iputils-ping nft:nftables conntrack:conntrack; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
# podman as Debian installs it (with what it recommends), as users have it.
runtime=()
for pair in podman:podman runc:runc; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || runtime+=("${pair#*:}")
done
# A dynamic busybox (Debian's `busybox`) cannot run in a bare image.
if command -v busybox >/dev/null 2>&1 && ldd "$(command -v busybox)" >/dev/null 2>&1; then
  missing+=(busybox-static)
fi
if [ $((${#missing[@]} + ${#runtime[@]})) -gt 0 ]; then
  SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  [ ${#missing[@]} -eq 0 ] ||
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
  [ ${#runtime[@]} -eq 0 ] || DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${runtime[@]}"
fi

step "Python tools (pinned, in target/)"
scripts/osc-venv.sh target/osc-venv
scripts/keystone/run-keystone.sh --install-only
scripts/tempest/run-tempest.sh --install-only

step "PostgreSQL (Debian's package when missing; no service left running) and a throwaway cluster"
scripts/pg-cluster.sh install
PG_DIR="$(mktemp -d "${TMPDIR:-/tmp}/neutrino-ci-pg.XXXXXX")"
# The cluster's user must reach its directory.
chmod 755 "$PG_DIR"
trap 'scripts/pg-cluster.sh stop "$PG_DIR" || true' EXIT
PG_URL="$(scripts/pg-cluster.sh start "$PG_DIR")"
echo "PostgreSQL: $PG_URL"

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test"
cargo test --workspace --locked

disk

step "tempest.api.network (upstream tempest 47.0.0), SQLite"
# `cargo test` built target/debug/neutrino for the integration tests; a
# separate `cargo build -p neutrino` would resolve features apart from the
# tests and compile a second copy of half the tree.
[ -x target/debug/neutrino ] || cargo build -p neutrino --locked
scripts/tempest/run-tempest.sh
disk

step "The store's, the API's and the multi-server suites on PostgreSQL"
# Every server these tests start gets a schema of its own in the cluster;
# the tests that need PostgreSQL fail rather than skip.
export NEUTRINO_TEST_DATABASE_URL="$PG_URL" NEUTRINO_REQUIRE_POSTGRES=1
cargo test --locked -p neutrino-store
pg_tests=()
for f in crates/neutrino/tests/api_*.rs; do pg_tests+=(--test "$(basename "$f" .rs)"); done
for t in authz policy identity_api concurrency smoke security_group_views router_scheduling agent_channel \
    agent_failover multi_server db_copy lab_postgres; do
  if [ -f "crates/neutrino/tests/$t.rs" ]; then pg_tests+=(--test "$t"); fi
done
cargo test --locked -p neutrino "${pg_tests[@]}"

step "tempest.api.network on PostgreSQL"
psql "$PG_URL" -qc "CREATE DATABASE tempest"
scripts/tempest/run-tempest.sh --database-url "$(sed -E 's#/neutrino([?]|$)#/tempest\1#' <<<"$PG_URL")" \
  --work target/tempest-pg --report target/tempest-pg-report.txt
disk
