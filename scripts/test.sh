#!/usr/bin/env bash
# The README's test command: installs what is missing, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/keel-target}"
export KEEL_SCHEMATHESIS="${KEEL_SCHEMATHESIS:-${KEEL_VENV:-/var/tmp/keel-venv}/bin/st}"
# Integration tests start whole clusters; one at a time keeps 2-core machines honest.
cargo test --workspace --all-targets -- --test-threads=1
