#!/usr/bin/env bash
# The whole test suite, from a fresh machine: builds every binary the multi-process tests
# start (the `rayr` CLI, the driver programs, the examples), then runs every crate's tests.
# Needs only the Rust toolchain; nothing else to install yet.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "cargo is required: install Rust from https://rustup.rs" >&2; exit 1; }
cargo build --workspace --bins --examples
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace 2>&1 | tee "$log"
# One closing line for the whole run (cargo prints one per test binary, the last of
# which is often a doc-test run with nothing in it).
awk '/^test result:/ { p += $4; f += $6 } END { printf "%d passed, %d failed\n", p, f }' "$log"
