#!/usr/bin/env bash
# Runs Neutrino's whole test suite on a fresh machine: prepares the Python
# tools some tests drive (the real `openstack` CLI, a real Keystone,
# tempest), checks formatting and lints, runs every test of the workspace,
# then upstream tempest's network API suite against a fresh server.
#
#   scripts/test.sh
#
# Needs: the Rust toolchain of rust-toolchain.toml (cargo), python3 with the
# venv module and pip, and access to crates.io and PyPI. The tests create the
# Python environments themselves when missing; doing it here first keeps the
# install time out of the tests' own timeouts.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

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

step "tempest.api.network (upstream tempest 47.0.0)"
cargo build -p neutrino --locked
scripts/tempest/run-tempest.sh
