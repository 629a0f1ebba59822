#!/usr/bin/env bash
# The QoS benchmark (root): whole-process ADD+DEL of netsvc-qos against the
# reference bandwidth plugin, same config and prevResult, in the same run.
# Everything runs in throwaway network namespaces the bench creates and deletes.
# Extra arguments go to criterion.
set -euo pipefail
cd "$(dirname "$0")/.."
# The bench spawns target/release/netsvc-qos: build it first.
cargo build --release -p netsvc-qos --bins
cargo bench -p netsvc-tests --bench qos -- "$@"
