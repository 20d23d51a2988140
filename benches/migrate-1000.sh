#!/usr/bin/env bash
# Benchmark: migrate a namespace of 1,000 objects (250 each of ConfigMaps,
# Secrets, Services and Deployments) east → west with Ferry, next to the same
# copy done by hand with kubectl (get -o json | strip server fields | apply).
# Prints wall times and Ferry's peak RSS. Uses its own harness state dir.
#   benches/migrate-1000.sh [STATE_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
STATE=${1:-${TMPDIR:-/tmp}/ferry-bench-harness}
if [ -z "${FERRY_BIN:-}" ]; then cargo build --release -q; fi
FERRY=${FERRY_BIN:-target/release/ferry}
$FERRY dev up --state "$STATE" >/dev/null
KCFG=$STATE/kubeconfig
BIN=$($FERRY dev binaries 2>/dev/null)
K() { "$BIN/kubectl" --kubeconfig "$KCFG" "$@"; }

gen() { # namespace
  python3 - "$1" <<'PY'
import json, sys
ns = sys.argv[1]
items = []
for i in range(250):
    items.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"cm-{i}"}, "data": {"k": "v" * 200}})
    items.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"secret-{i}"}, "stringData": {"password": f"p{i}"}})
    items.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"svc-{i}"},
                  "spec": {"selector": {"app": f"app-{i}"}, "ports": [{"port": 80}]}})
    items.append({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": f"app-{i}"},
                  "spec": {"replicas": 0, "selector": {"matchLabels": {"app": f"app-{i}"}},
                           "template": {"metadata": {"labels": {"app": f"app-{i}"}},
                                        "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}})
print(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
PY
}

for ns in bench-ferry bench-kubectl; do
  K --context east delete ns $ns --ignore-not-found --wait >/dev/null
  K --context west delete ns $ns --ignore-not-found --wait >/dev/null
  K --context east create ns $ns >/dev/null
  gen $ns | K --context east apply -n $ns --server-side -f - >/dev/null
done
echo "objects per namespace: $(K --context east get cm,secret,svc,deploy -n bench-ferry --no-headers | wc -l) (plus kube-root-ca.crt)"

start=$(date +%s.%N)
/usr/bin/time -f "%M" -o /tmp/ferry-bench-rss $FERRY migrate bench-ferry --from east --to west --kubeconfig "$KCFG" --retain 1h -o json >/tmp/ferry-bench.json 2>/tmp/ferry-bench.log
ferry_wall=$(python3 -c "print(round($(date +%s.%N) - $start, 2))")

start=$(date +%s.%N)
K --context east get cm,secret,svc,deploy -n bench-kubectl -o json | python3 -c '
import json, sys
d = json.load(sys.stdin)
for o in d["items"]:
    m = o["metadata"]
    for k in ("uid", "resourceVersion", "creationTimestamp", "managedFields", "generation", "namespace"):
        m.pop(k, None)
    o.pop("status", None)
    if o["kind"] == "Service":
        o["spec"].pop("clusterIP", None); o["spec"].pop("clusterIPs", None)
d["items"] = [o for o in d["items"] if o["metadata"]["name"] != "kube-root-ca.crt"]
print(json.dumps(d))' > /tmp/kubectl-bench.json
K --context west create ns bench-kubectl >/dev/null
K --context west apply -n bench-kubectl -f /tmp/kubectl-bench.json >/dev/null
kubectl_wall=$(python3 -c "print(round($(date +%s.%N) - $start, 2))")

echo "ferry migrate:            ${ferry_wall}s wall, peak RSS $(( $(cat /tmp/ferry-bench-rss) / 1024 )) MiB, outcome $(python3 -c 'import json;print(json.load(open("/tmp/ferry-bench.json"))["outcome"])')"
echo "kubectl get | apply:      ${kubectl_wall}s wall (objects only: no quiesce, no verify, no rollback)"
python3 - <<'PY'
import json
for s in json.load(open("/tmp/ferry-bench.json"))["stages"]:
    print("  %-10s %6.2fs  %s" % (s["stage"], (s.get("duration_ms") or 0) / 1000, s.get("counts")))
PY
