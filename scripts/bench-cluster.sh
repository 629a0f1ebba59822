#!/usr/bin/env bash
# Propagation across nodes through etcd: from an ADD on node A to the change
# being live on node C (DNS answer, LB backend, firewall set); prints median
# and p99. Everything runs in throwaway namespaces the bench creates.
# Usage: scripts/bench-cluster.sh [ADDS (200)]
set -euo pipefail
cd "$(dirname "$0")/.."
# The bench runs the release binaries: build them first.
cargo build --release --workspace --bins
NETSVC_BENCH_ADDS="${1:-200}" cargo bench -p netsvc-tests --bench cluster
