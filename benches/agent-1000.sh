#!/usr/bin/env bash
# Benchmark the agent on a placement repository of 1,000 namespaces over the
# local clusters east and west: first sync, a no-change sync, and idle RSS.
#   benches/agent-1000.sh [STATE_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
STATE=${1:-${TMPDIR:-/tmp}/ferry-bench-harness}
if [ -z "${FERRY_BIN:-}" ]; then cargo build --release -q; fi
FERRY=$(realpath "${FERRY_BIN:-target/release/ferry}")
$FERRY dev up --state "$STATE" >/dev/null
WORK=$(mktemp -d)
trap 'kill $AGENT 2>/dev/null || true; rm -rf "$WORK"' EXIT
python3 - "$WORK/repo" <<'PY'
import os, sys
root = sys.argv[1]
os.makedirs(f"{root}/clusters"); os.makedirs(f"{root}/namespaces")
for c in ("east", "west"):
    open(f"{root}/clusters/{c}.yaml", "w").write(
        f"apiVersion: ferry.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: {c}\nspec:\n  access:\n    kubeconfigContext: {c}\n")
for i in range(1000):
    c = ("east", "west")[i % 2]
    open(f"{root}/namespaces/n-{i:04d}.yaml", "w").write(
        f"apiVersion: ferry.dev/v1alpha1\nkind: Placement\nmetadata:\n  name: n-{i:04d}\nspec:\n  cluster: {c}\n")
PY
git -C "$WORK/repo" init -q -b main && git -C "$WORK/repo" add -A && git -C "$WORK/repo" -c user.name=b -c user.email=b@b commit -qm init
git init -q --bare -b main "$WORK/bare.git" && git -C "$WORK/repo" push -q "$WORK/bare.git" main
run_once() {
  local s=$(date +%s.%N)
  $FERRY agent --once --repo "file://$WORK/bare.git" --cache-dir "$WORK/cache" --kubeconfig "$STATE/kubeconfig" 2>/dev/null
  python3 -c "print(round($(date +%s.%N) - $s, 2))"
}
echo "first sync (1,000 statuses, one commit):   $(run_once)s"
echo "no-change sync:                            $(run_once)s"
echo "status commits after two syncs:            $(git --git-dir "$WORK/bare.git" rev-list --count ferry-status)"
$FERRY agent --repo "file://$WORK/bare.git" --cache-dir "$WORK/cache" --kubeconfig "$STATE/kubeconfig" --interval 1h 2>/dev/null &
AGENT=$!
sleep 15
echo "agent RSS idle after its first sync:       $(( $(awk '/VmRSS/ {print $2}' /proc/$AGENT/status) / 1024 )) MiB (peak $(( $(awk '/VmHWM/ {print $2}' /proc/$AGENT/status) / 1024 )) MiB)"
