#!/usr/bin/env bash
# Runs Neutrino's whole test suite on a fresh machine: prepares the Python
# tools some tests drive (the real `openstack` CLI, a real Keystone), checks
# formatting and lints, then runs every test of the workspace.
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

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test"
cargo test --workspace --locked
