# K8up, the open-source successor of the operator in the seed, as scripts/bench-peers runs it:
# the binary from scripts/lib/build-go-tool.sh (pinned there), the CRDs from the same Go
# module, and its operator as a host process with the admin kubeconfig, as bench-peers runs
# the baas operator. Sourced; expects REPO.

# k8up_bin: the path of the pinned k8up binary (built and cached on first use)
k8up_bin() { "$REPO/scripts/lib/build-go-tool.sh" k8up; }

# k8up_module_dir: the module source of the pinned release, which ships the CRDs
k8up_module_dir() {
  local version
  version="$(basename "$(dirname "$(k8up_bin)")")" # k8up-v2.13.1
  GOFLAGS=-mod=mod go mod download -json "github.com/k8up-io/k8up/v2@${version#k8up-}" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])'
}

# k8up_install_crds: K8up's CRDs (group k8up.io), Established
k8up_install_crds() {
  local dir
  dir="$(k8up_module_dir)/config/crd/apiextensions.k8s.io/v1"
  kubectl apply --server-side --force-conflicts -f "$dir" >/dev/null
  kubectl wait --for condition=Established --timeout=60s -f "$dir" >/dev/null
}

# k8up_start_operator METRICS_ADDR IMAGE LOG: starts K8up's operator in the background with
# its default settings but leader election (one replica) and the Job image; sets K8UP_PID
k8up_start_operator() {
  local metrics="$1" image="$2" log="$3" bin
  bin="$(k8up_bin)"
  kubectl create namespace k8up-system --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  BACKUP_OPERATOR_NAMESPACE=k8up-system BACKUP_ENABLE_LEADER_ELECTION=false \
    BACKUP_METRICS_BINDADDRESS="$metrics" BACKUP_IMAGE="$image" \
    "$bin" operator >"$log" 2>&1 &
  # shellcheck disable=SC2034 # the caller's
  K8UP_PID=$!
}
