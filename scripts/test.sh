#!/usr/bin/env bash
# Runs Neutrino's whole test suite on a fresh machine: prepares the Python
# tools some tests drive (the real `openstack` CLI, a real Keystone,
# tempest), checks formatting and lints, runs every test of the workspace,
# then upstream tempest's network API suite against a fresh server.
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

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test"
cargo test --workspace --locked

disk

step "tempest.api.network (upstream tempest 47.0.0)"
# `cargo test` built target/debug/neutrino for the integration tests; a
# separate `cargo build -p neutrino` would resolve features apart from the
# tests and compile a second copy of half the tree.
[ -x target/debug/neutrino ] || cargo build -p neutrino --locked
scripts/tempest/run-tempest.sh
disk
