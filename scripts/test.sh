#!/usr/bin/env bash
# The project's test command (see README): format, lints, every Rust test (pure, real Redis,
# mocked API server), the real-server suites again on Valkey (SKIPPED without its binaries, an
# error in CI), the end-to-end cases (against a real API server when SESSIONSTORE_E2E_KUBECONFIG
# is set, else they print SKIPPED), then the Helm chart tests. The end-to-end cases run after the
# rest, so their Redis pods and the timed Sentinel tests never compete for the two cores.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo nextest run --locked --no-fail-fast -E 'not binary(e2e)'

# The suites that start real servers, again on Valkey (tests/support/engine.rs: the stores declare
# `engine: valkey` and every server, Sentinel, probe and startup.sh runs Valkey's binaries). A new
# suite that starts a server belongs in this list. Tests named for Valkey pin their stores'
# engines themselves and ran in the first pass, so they do not run again. The test groups of
# .config/nextest.toml apply to this pass as to the first (the timed Sentinel suites still run one
# at a time).
REAL_SERVER_SUITES='binary(controller_ha) | binary(controller_health) | binary(controller_rotation)
  | binary(extra_config_props) | binary(failover) | binary(handover) | binary(health_probe)
  | binary(least_privilege) | binary(no_leak) | binary(probes) | binary(redis_hardening)
  | binary(rollout) | binary(rotation) | binary(sentinel_rotation) | binary(sentinel_tls)'
VALKEY_BIN_DIR=${VALKEY_BIN_DIR:-$(pwd)/../shared/bin}
if [ -x "$VALKEY_BIN_DIR/valkey-server" ] && [ -x "$VALKEY_BIN_DIR/valkey-cli" ]; then
  echo "== the real-server suites on Valkey ($("$VALKEY_BIN_DIR/valkey-server" --version | cut -d' ' -f1-3))"
  SESSIONSTORE_TEST_ENGINE=valkey VALKEY_BIN_DIR=$VALKEY_BIN_DIR \
    cargo nextest run --locked --no-fail-fast -E "($REAL_SERVER_SUITES) and not test(/valkey/)"
elif [ -n "${CI:-}" ]; then
  echo "no Valkey binaries (valkey-server, valkey-cli) in $VALKEY_BIN_DIR: CI must run the Valkey pass (set VALKEY_BIN_DIR)" >&2
  exit 1
else
  echo "SKIPPED: the Valkey pass of the real-server suites (no valkey-server and valkey-cli in $VALKEY_BIN_DIR; set VALKEY_BIN_DIR)"
fi

cargo nextest run --locked --no-fail-fast -E 'binary(e2e)'
python3 -m pytest -q tests/chart
