#!/usr/bin/env bash
# The project's test command (see README): format, lints, every Rust test (pure, real Redis,
# mocked API server; end-to-end only with SESSIONSTORE_E2E_KUBECONFIG), then the Helm chart tests.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo nextest run --locked --no-fail-fast
python3 -m pytest -q tests/chart
