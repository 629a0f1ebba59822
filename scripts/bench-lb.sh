#!/usr/bin/env bash
# The load balancer benchmark (root): in-process ADD cost of one backend at
# 10 / 1,000 / 10,000 backends across 1,000 services, and connection setup
# through a VIP with 10 and with 10,000 services.
# Everything runs in throwaway network namespaces the bench creates and deletes.
# Extra arguments go to criterion (e.g. a filter: lb_add).
# NETSVC_LB_BENCH_SIZES=10,1000 picks other backend counts;
# NETSVC_LB_BENCH_CONNECTIONS=500 other connection counts (0 skips that part).
set -euo pipefail
cd "$(dirname "$0")/.."
# The connection part runs the chain with target/release/netsvc-lb: build it first.
cargo build --release -p netsvc-lb --bins
cargo bench -p netsvc-tests --bench lb -- "$@"
