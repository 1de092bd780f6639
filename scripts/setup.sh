#!/usr/bin/env bash
# Installs what building and testing Keel needs on a fresh Debian machine, and
# nothing that is already there. Safe to run any number of times.
#   scripts/setup.sh          build + test needs
#   scripts/setup.sh --bench  also the peers the benchmarks compare against
set -euo pipefail

want=()
need_pkg() { dpkg -s "$1" >/dev/null 2>&1 || want+=("$1"); }

need_pkg clang          # bindgen for rocksdb's bindings
need_pkg libclang-dev
need_pkg g++            # rocksdb itself is C++
need_pkg make
need_pkg postgresql     # PostgreSQL 15 server binaries and the postgres OS user (host managers)
need_pkg protobuf-compiler  # protoc for tonic-build (ours and etcd-client's)
need_pkg dnsutils       # dig, the DNS tests' client
need_pkg nsd            # a real secondary the DNS tests transfer the zone into
need_pkg nftables       # the failover tests cut one network path (host ↔ control plane, host ↔ standby) with nft
need_pkg iproute2       # ip netns: each data host of the failover tests in a network namespace of its own
need_pkg lz4            # snapshots are lz4 tars (pg_basebackup --compress=lz4; tar unpacks them with lz4)
need_pkg python3        # schemathesis, the API fuzzer the tests run over the OpenAPI document
need_pkg python3-venv
if [[ "${1:-}" == "--bench" ]]; then
  need_pkg etcd-server  # the Raft peer for `keel-lab bench raft`
  need_pkg etcd-client
  need_pkg knot         # DNS peers for `keel-lab bench dns` (with nsd)
  need_pkg dnsperf
  need_pkg pgbackrest   # the backup peer for `keel-lab bench backups`
  need_pkg patroni      # the failover peer for `keel-lab bench failover` (with etcd-server)
fi

if ((${#want[@]})); then
  echo "setup: installing ${want[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || true   # a stale index is still usable for packages it already lists
  apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
fi
# schemathesis in its own virtualenv beside the build cache (pinned: its checks are
# part of what the tests assert). node/tests/it/fuzz.rs runs it from there.
venv="${KEEL_VENV:-/var/tmp/keel-venv}"
schemathesis_version="4.32.5"
if ! "$venv/bin/st" --version 2>/dev/null | grep -q "$schemathesis_version"; then
  echo "setup: installing schemathesis $schemathesis_version into $venv" >&2
  /usr/bin/python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "schemathesis==$schemathesis_version"
fi

if ! command -v cargo >/dev/null; then
  echo "setup: cargo is missing; install Rust (https://rustup.rs) and re-run" >&2
  exit 1
fi

# s3s-fs: a real S3-compatible server (SigV4, multipart uploads, objects on disk) that the
# backup-store tests start. Pinned: 0.15 and later need a newer rustc. Built once, beside
# the build cache; node/tests/it/backup_store.rs runs it from there.
tools="${KEEL_TOOLS:-/var/tmp/keel-tools}"
if [[ ! -x "$tools/bin/s3s-fs" ]]; then
  echo "setup: building s3s-fs 0.14.1 into $tools (once)" >&2
  CARGO_TARGET_DIR="$tools/target" cargo install -q s3s-fs --version 0.14.1 --features binary --locked --root "$tools"
fi
