#!/usr/bin/env bash
# Measures Sentinel failover with real processes: median failover time and acknowledged writes lost,
# with async replication and with WAIT 1 100. Usage: scripts/failover-bench.sh [runs] [down_after_ms]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --quiet --example failover_bench -- "${1:-5}" "${2:-1000}"
