#!/usr/bin/env bash
# Build the upstream Kubernetes components Ferry's test clusters run, from their
# Go modules, into a cache outside the repository. Re-running is cheap: binaries
# already present (and answering --version) are reused.
#
#   scripts/build-k8s.sh            # build what is missing, print the bin dir
#   FERRY_CACHE=/some/dir scripts/build-k8s.sh
#
# Pinned versions live here and nowhere else.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.36.3}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
KWOK_VERSION=${KWOK_VERSION:-v0.8.0}
CACHE=${FERRY_CACHE:-$HOME/.cache/ferry}
BIN="$CACHE/k8s/$K8S_VERSION-etcd$ETCD_VERSION-kwok$KWOK_VERSION/bin"
mkdir -p "$BIN"

log() { printf '[build-k8s] %s\n' "$*" >&2; }

ensure_go() {
  if command -v go >/dev/null 2>&1; then return; fi
  [ -x /usr/local/go/bin/go ] && { export PATH=/usr/local/go/bin:$PATH; return; }
  log "go not found; installing Debian's golang (needs Go >= 1.26 for kwok)"
  apt-get update -qq && apt-get install -y -qq golang-go >/dev/null
}

# Generate a throw-away wrapper module that requires MODULE@VERSION and replaces
# each local "./staging/..." or "../x" replace of that module's go.mod with the
# published module at STAGING_VERSION (see ../shared/notes/test-clusters.md).
make_wrapper() { # dir module version rewrite-fn
  local dir=$1 module=$2 version=$3 rewrite=$4
  rm -rf "$dir"; mkdir -p "$dir"
  local gomod
  gomod=$(cd "$dir" && go mod download -json "$module@$version" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  {
    echo "module ferry.local/build-$(basename "$dir")"
    echo
    echo "go 1.26"
    echo
    echo "require $module $version"
    echo
    # Lines like:  k8s.io/api => ./staging/src/k8s.io/api   or   go.etcd.io/etcd/api/v3 => ../api
    grep -E '^\s*(replace\s+)?[^ ]+\s+=>\s+\.\.?/' "$gomod" | sed -E 's/^\s*replace\s+//' | while read -r mod _arrow _path; do
      v=$($rewrite "$mod"); [ -n "$v" ] && echo "replace $mod => $mod $v"
    done
  } > "$dir/go.mod"
}

k8s_staging_version() { echo "v0.${K8S_VERSION#v1.}"; }
# Only etcd's own /v3 modules are published at the etcd version; other local
# replaces (e.g. a FORBIDDEN_DEPENDENCY guard) are dropped.
etcd_staging_version() { case "$1" in */v3) echo "$ETCD_VERSION";; esac; }

version_of() { if [ "$1" = kubectl ]; then "$BIN/kubectl" version --client 2>&1 | head -1; else "$BIN/$1" --version 2>&1 | head -1; fi; }
have() { [ -x "$BIN/$1" ] && version_of "$1" >/dev/null; }

ensure_go
export CGO_ENABLED=0
WORK="$CACHE/build"
mkdir -p "$WORK"
total_start=$(date +%s)
built=()

# kubelet: each harness cluster has one real node (containerd + runc from Debian).
k8s_cmds=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet)
missing=()
for c in "${k8s_cmds[@]}"; do have "$c" || missing+=("$c"); done
if [ ${#missing[@]} -gt 0 ]; then
  start=$(date +%s)
  log "building ${missing[*]} $K8S_VERSION (cold: tens of minutes on 2 cores)"
  make_wrapper "$WORK/k8s" k8s.io/kubernetes "$K8S_VERSION" k8s_staging_version
  pkgs=(); for c in "${missing[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
  minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  ld="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
  ld="$ld -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor"
  (cd "$WORK/k8s" && for p in "${pkgs[@]}"; do go get "$p@$K8S_VERSION" >/dev/null 2>&1 || go get "$p@$K8S_VERSION"; done \
    && go build -trimpath -tags selinux,notest,grpcnotrace -ldflags "$ld" -o "$BIN/" "${pkgs[@]}")
  built+=("${missing[*]}: $(( $(date +%s) - start ))s")
fi

if ! have etcd; then
  start=$(date +%s)
  log "building etcd $ETCD_VERSION"
  make_wrapper "$WORK/etcd" go.etcd.io/etcd/server/v3 "$ETCD_VERSION" etcd_staging_version
  (cd "$WORK/etcd" && go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null 2>&1 || true
   cd "$WORK/etcd" && go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" \
    && go build -trimpath -ldflags "-s -w" -o "$BIN/etcd" go.etcd.io/etcd/server/v3)
  built+=("etcd: $(( $(date +%s) - start ))s")
fi

if ! have kwok; then
  start=$(date +%s)
  log "building kwok $KWOK_VERSION"
  GOBIN="$BIN" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  built+=("kwok: $(( $(date +%s) - start ))s")
fi

if [ ${#built[@]} -gt 0 ]; then
  log "built in $(( $(date +%s) - total_start ))s total: ${built[*]}"
else
  log "all binaries cached in $BIN"
fi
for c in "${k8s_cmds[@]}" etcd kwok; do
  log "  $c: $(version_of "$c")"
done
echo "$BIN"
