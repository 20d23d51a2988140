#!/usr/bin/env bash
# Ferry's whole test suite, as CI runs it: installs what it needs, builds the
# upstream Kubernetes binaries (cached outside the repo), starts the shared
# two-cluster harness, runs every test, and always stops the harness again.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)

scripts/install-deps.sh
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
[ -x /usr/local/go/bin/go ] && export PATH="/usr/local/go/bin:$PATH"
export GOTOOLCHAIN=${GOTOOLCHAIN:-auto}

FERRY_K8S_BIN=$(scripts/build-k8s.sh)
export FERRY_K8S_BIN
export FERRY_TEST_STATE=${FERRY_TEST_STATE:-$PWD/target/tmp/harness}
export FERRY_LOG_FORMAT=${FERRY_LOG_FORMAT:-text}

cargo build --all-targets
cleanup() { target/debug/ferry dev down --state "$FERRY_TEST_STATE" --purge >/dev/null 2>&1 || true; }
trap cleanup EXIT
cleanup
echo "[test] starting the shared harness in $FERRY_TEST_STATE" >&2
if ! target/debug/ferry dev up --state "$FERRY_TEST_STATE"; then
  # The error above names the component and quotes its log. A start can fail
  # for reasons outside the project (a port taken by another program); try
  # once more from scratch before giving up.
  echo "[test] the harness did not start; retrying once from a clean state" >&2
  cleanup
  target/debug/ferry dev up --state "$FERRY_TEST_STATE"
fi

# Every test binary's summary is kept in this log and checked below: a harness
# or runner problem must not leave a test unrun without anyone noticing.
summary=target/test-summary.log
set +e
cargo test --no-fail-fast --all-targets "$@" 2>&1 | tee "$summary"
rc=${PIPESTATUS[0]}
set -e
ran=$(grep -cE '^test .* \.\.\. (ok|FAILED|ignored)$' "$summary" || true)
listed=$(grep -E '^running [0-9]+ tests?$' "$summary" | awk '{s+=$2} END{print s+0}')
echo "[test] $ran of $listed tests reported a result; wall time: $(( $(date +%s) - start ))s" >&2
if [ "$rc" = 0 ] && [ "$ran" != "$listed" ]; then
  echo "[test] some tests never reported a result" >&2
  exit 1
fi
exit "$rc"
