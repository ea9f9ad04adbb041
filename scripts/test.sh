#!/usr/bin/env bash
# The project's test command (see README): format, lints, every Rust test (pure, real Redis,
# mocked API server), the end-to-end cases (against a real API server when SESSIONSTORE_E2E_KUBECONFIG
# is set, else they print SKIPPED), then the Helm chart tests. The end-to-end cases run after the
# rest, so their Redis pods and the timed Sentinel tests never compete for the two cores.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo nextest run --locked --no-fail-fast -E 'not binary(e2e)'
cargo nextest run --locked --no-fail-fast -E 'binary(e2e)'
python3 -m pytest -q tests/chart
