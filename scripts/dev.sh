#!/usr/bin/env bash
# The README's run command: installs what is missing, builds keel, runs `keel dev`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/keel-target}"
cargo build --release --bin keel
mkdir -p "$HOME/.local/bin"
ln -sf "$CARGO_TARGET_DIR/release/keel" "$HOME/.local/bin/keel"
echo "keel is at $HOME/.local/bin/keel (add that directory to PATH to use the CLI)"
exec "$CARGO_TARGET_DIR/release/keel" dev "$@"
