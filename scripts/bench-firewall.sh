#!/usr/bin/env bash
# The firewall benchmark (root): in-process ADD cost at 10 / 1,000 / 10,000
# endpoints, and whole-process ADD+DEL against the reference firewall plugin.
# Everything runs in a throwaway network namespace the bench creates and deletes.
# Extra arguments go to criterion (e.g. a filter: firewall_add).
# NETSVC_FW_BENCH_SIZES=10,1000 picks other network sizes.
set -euo pipefail
cd "$(dirname "$0")/.."
# The whole-process part spawns target/release/netsvc-firewall: build it first.
cargo build --release -p netsvc-firewall --bins
cargo bench -p netsvc-tests --bench firewall -- "$@"
