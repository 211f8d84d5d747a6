#!/usr/bin/env bash
# Builds one Go command from the Go module proxy at a pinned version and caches it, so that
# the tests, the image and the docs all use the same binary.
#
#   scripts/lib/build-go-tool.sh restic                 # -> <cache>/restic-v0.18.1/restic
#   scripts/lib/build-go-tool.sh local-path-provisioner
#   scripts/lib/build-go-tool.sh helm
#   scripts/lib/build-go-tool.sh k8up                   # the peer that scripts/bench-peers measures
#
# Prints the path of the binary. Versions are pinned here and nowhere else.
set -euo pipefail

CACHE_DIR="${BAAS_CACHE_DIR:-$HOME/.cache/baas}"
export GOFLAGS="${GOFLAGS:--buildvcs=false}" CGO_ENABLED=0 GOTOOLCHAIN="${GOTOOLCHAIN:-auto}"

RESTIC_VERSION="${BAAS_RESTIC_VERSION:-0.18.1}"
LOCAL_PATH_VERSION="${BAAS_LOCAL_PATH_VERSION:-0.0.30}"
HELM_VERSION="${BAAS_HELM_VERSION:-3.22.0}"
K8UP_VERSION="${BAAS_K8UP_VERSION:-2.13.1}"

case "${1:-}" in
  restic)
    module=github.com/restic/restic version="v$RESTIC_VERSION" pkg=./cmd/restic
    ldflags="-s -w -X main.version=$RESTIC_VERSION" ;;
  local-path-provisioner)
    module=github.com/rancher/local-path-provisioner version="v$LOCAL_PATH_VERSION" pkg=.
    ldflags="-s -w -X main.VERSION=v$LOCAL_PATH_VERSION" ;;
  helm)
    # the version stamps Helm's own release build sets; the Kubernetes version that
    # `helm template` and `helm lint` assume is added below from Helm's go.mod
    module=helm.sh/helm/v3 version="v$HELM_VERSION" pkg=./cmd/helm
    ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=v$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean" ;;
  k8up)
    # operator and Job agent in one binary, stamped as K8up's release build stamps it
    module=github.com/k8up-io/k8up/v2 version="v$K8UP_VERSION" pkg=./cmd/k8up
    ldflags="-s -w -X main.version=$K8UP_VERSION" ;;
  *) echo "usage: $0 restic|local-path-provisioner|helm|k8up" >&2; exit 2 ;;
esac

name="$1"
out="$CACHE_DIR/$name-$version"
bin="$out/$name"
mkdir -p "$out"
exec 9>"$out/.lock"
flock 9
if [[ ! -x "$bin" ]]; then
  echo "[build-go-tool] building $name $version from $module (log: $out/build.log)" >&2
  start=$SECONDS
  (
    src="$(cd "$out" && go mod download -json "$module@$version" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
    cd "$src"
    if [[ "$name" == helm ]]; then
      # as Helm's Makefile does: the client-go minor version it was built with (v0.37 -> 1.37),
      # otherwise .Capabilities.KubeVersion says 1.20 outside a cluster
      k8s_minor="$(awk '$1 == "k8s.io/client-go" { split($2, v, "."); print v[2] }' go.mod)"
      for pkg_var in lint/rules chartutil; do
        ldflags+=" -X helm.sh/helm/v3/pkg/$pkg_var.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/$pkg_var.k8sVersionMinor=$k8s_minor"
      done
    fi
    # the module cache is read-only; build from it with its own go.mod and go.sum
    go build -mod=mod -trimpath -ldflags "$ldflags" -o "$bin.tmp" "$pkg"
  ) >>"$out/build.log" 2>&1 || { tail -n 30 "$out/build.log" >&2; echo "[build-go-tool] building $name failed; see $out/build.log" >&2; exit 1; }
  mv -f "$bin.tmp" "$bin"
  echo "[build-go-tool] built $name $version in $((SECONDS - start))s" >&2
fi
echo "$bin"
