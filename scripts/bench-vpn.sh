#!/usr/bin/env bash
# The VPN benchmark (root): iperf3 through a tunnel netsvc-vpn configured
# against one configured by hand with wireguard-go, wg and ip, in the same
# run; prints the medians and the ratio. Everything runs in throwaway
# network namespaces the bench creates and deletes.
# Usage: scripts/bench-vpn.sh [SECONDS_PER_RUN (5)] [ROUNDS (3)]
set -euo pipefail
cd "$(dirname "$0")/.."
# The bench runs target/release/netsvc-vpn: build it first.
cargo build --release -p netsvc-vpn --bins
NETSVC_BENCH_SECONDS="${1:-5}" NETSVC_BENCH_ROUNDS="${2:-3}" cargo bench -p netsvc-tests --bench vpn
