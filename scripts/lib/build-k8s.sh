#!/usr/bin/env bash
# Builds the Kubernetes binaries (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubelet) from the Go module proxy and caches them.
#
#   scripts/lib/build-k8s.sh            # build whatever is missing
#   BAAS_BUILD_KUBECTL=1 scripts/lib/build-k8s.sh   # also build kubectl
#
# Output: ${BAAS_CACHE_DIR:-$HOME/.cache/baas}/k8s-v${K8S_VERSION}/bin
#
# k8s.io/kubernetes requires its staging modules at v0.0.0 (they are replaced
# by ./staging in its own repository), so a tiny wrapper module is generated
# that replaces every k8s.io staging module with its published v0.<minor>.<patch>.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-1.37.2}"
ETCD_VERSION="${ETCD_VERSION:-3.7.0}"
CACHE_DIR="${BAAS_CACHE_DIR:-$HOME/.cache/baas}"
OUT="$CACHE_DIR/k8s-v$K8S_VERSION"
BIN="$OUT/bin"
WRAP="$OUT/wrapper"
LOG="$OUT/build.log"
mkdir -p "$BIN" "$WRAP"

export GOFLAGS="${GOFLAGS:--buildvcs=false}"
export CGO_ENABLED="${CGO_ENABLED:-0}"
# Honour an already-set toolchain request; the module needs go >= 1.26.
export GOTOOLCHAIN="${GOTOOLCHAIN:-auto}"

log() { echo "[build-k8s] $*" >&2; }

# one build at a time per cache (several checkouts may share it)
exec 9>"$OUT/.lock"
flock 9

need=()
for b in etcd kube-apiserver kube-controller-manager kube-scheduler kubelet; do
  [[ -x "$BIN/$b" ]] || need+=("$b")
done
if [[ "${BAAS_BUILD_KUBECTL:-0}" == 1 && ! -x "$BIN/kubectl" ]]; then need+=(kubectl); fi

if ((${#need[@]})); then
  staging_version="v0.${K8S_VERSION#*.}"
  go_mod_dir="$(cd "$OUT" && go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
  {
    echo "module baas.local/k8s-build"
    echo
    grep -m1 '^go ' "$go_mod_dir"
    echo
    # etcd's server module is built here too: its own go.mod has replace
    # directives, so "go install ...@version" refuses it.
    echo "require ("
    echo "	k8s.io/kubernetes v$K8S_VERSION"
    echo "	go.etcd.io/etcd/server/v3 v$ETCD_VERSION"
    echo ")"
    echo
    echo "replace ("
    # every "k8s.io/X => ./staging/src/k8s.io/X" line of the upstream go.mod
    sed -n 's#^\s*\(k8s\.io/[a-z0-9-]*\) => \./staging/src/.*#\t\1 => \1 '"$staging_version"'#p' "$go_mod_dir"
    echo ")"
  } >"$WRAP/go.mod.new"
  mv "$WRAP/go.mod.new" "$WRAP/go.mod"
  touch "$WRAP/go.sum"
  minor="${K8S_VERSION#*.}"; minor="${minor%%.*}"
  ldflags="-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=v$ETCD_VERSION"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $p.gitVersion=v$K8S_VERSION -X $p.gitMajor=${K8S_VERSION%%.*} -X $p.gitMinor=$minor"
    ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  pkgs=()
  for b in "${need[@]}"; do
    case "$b" in
      etcd) pkgs+=("go.etcd.io/etcd/server/v3") ;;
      *) pkgs+=("k8s.io/kubernetes/cmd/$b") ;;
    esac
  done
  log "building ${need[*]} (Kubernetes v$K8S_VERSION, etcd v$ETCD_VERSION); cold builds take 10+ minutes on 2 cores; log: $LOG"
  start=$SECONDS
  rm -rf "$WRAP/out"
  (
    cd "$WRAP"
    go build -mod=mod -trimpath -ldflags "$ldflags" -o "$WRAP/out/" "${pkgs[@]}"
  ) >>"$LOG" 2>&1 || { log "FAILED building ${need[*]}; see $LOG"; tail -n 30 "$LOG" >&2; exit 1; }
  for b in "${need[@]}"; do
    case "$b" in
      etcd) mv "$WRAP/out/v3" "$BIN/etcd" 2>/dev/null || mv "$WRAP/out/server" "$BIN/etcd" ;;
      *) mv "$WRAP/out/$b" "$BIN/$b" ;;
    esac
  done
  log "built ${need[*]} in $((SECONDS - start))s"
fi
echo "$BIN"
