#!/usr/bin/env bash
# Regenerates every generated file from its source, in dependency order: the CRD from the Rust
# types, its copies in the chart and deploy/, and deploy/operator.yaml from the chart. Tests fail
# (tests/crd.rs, tests/chart_sync.rs, tests/chart/) when any of these is stale.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --quiet -- crd > crds/sessionstore.dev_sessionstores.yaml
cp crds/sessionstore.dev_sessionstores.yaml charts/sessionstore-operator/crds/
python3 scripts/render-deploy.py
