# Installs the operator into the local cluster exactly as docs/install.md tells a user to,
# with the serving certificate from certs/dev-certs.sh instead of cert-manager and the locally
# built image instead of a registry's. Sourced by scripts/cluster.

# install_operator IMAGE: namespace, CRDs, RBAC, certificate Secret, Service, Deployment, and,
# once a replica answers, the webhook configurations with the dev CA as caBundle
install_operator() {
  local image="$1" m="$REPO/manifests"
  kc apply -f "$m/namespace.yaml" >/dev/null || die "applying manifests/namespace.yaml failed"
  kc apply --server-side --force-conflicts -f "$m/crds.yaml" >/dev/null || die "applying manifests/crds.yaml failed"
  kc wait --for condition=Established --timeout=60s -f "$m/crds.yaml" >/dev/null || die "CRDs did not become Established"
  kc apply -f "$m/rbac.yaml" >/dev/null || die "applying manifests/rbac.yaml failed"
  kc -n baas-system create secret tls baas-webhook-tls --cert "$STATE/webhook/tls.crt" --key "$STATE/webhook/tls.key" \
    --dry-run=client -o yaml | kc apply -f - >/dev/null || die "creating the Secret baas-webhook-tls failed"
  kc apply -f "$m/service.yaml" -f "$m/networkpolicy.yaml" >/dev/null || die "applying manifests/service.yaml and networkpolicy.yaml failed"
  # the one substitution a user makes too: their registry's image for the published one
  grep -q "$PUBLISHED_IMAGE" "$m/deployment.yaml" || die "manifests/deployment.yaml no longer names $PUBLISHED_IMAGE"
  sed "s#$PUBLISHED_IMAGE#$image#g" "$m/deployment.yaml" | kc apply -f - >/dev/null || die "applying manifests/deployment.yaml failed"
  if ! kc -n baas-system rollout status deployment/baas --timeout=180s >/dev/null; then
    kc -n baas-system get pods -o wide >&2 || true
    kc -n baas-system logs -l app.kubernetes.io/component=operator --tail=20 --all-containers >&2 || true
    die "the operator Deployment did not become ready"
  fi
  register_webhooks
}

register_webhooks() {
  local dir="$STATE/webhooks" kind
  mkdir -p "$dir"
  for kind in mutating validating; do
    kc create --dry-run=client -o json -f "$REPO/webhooks/$kind.yaml" >"$dir/$kind.source.json" || die "kubectl could not read webhooks/$kind.yaml"
    python3 - "$dir/$kind.source.json" "$STATE/webhook/ca.crt" >"$dir/$kind.json" <<'PY' || die "preparing webhooks/$kind.yaml failed"
import base64, json, sys
src, ca_file = sys.argv[1:3]
doc = json.load(open(src))
ca = base64.b64encode(open(ca_file, "rb").read()).decode()
for obj in doc["items"] if doc.get("kind") == "List" else [doc]:
    for wh in obj.get("webhooks", []):
        wh["clientConfig"]["caBundle"] = ca
print(json.dumps(doc))
PY
    kc apply -f "$dir/$kind.json" >/dev/null || die "registering webhooks/$kind.yaml failed"
  done
}

unregister_webhooks() {
  local kind
  for kind in mutating validating; do
    kc delete --ignore-not-found -f "$REPO/webhooks/$kind.yaml" >/dev/null 2>&1 || true
  done
}

uninstall_operator() {
  unregister_webhooks
  kc -n baas-system delete deployment baas --ignore-not-found --wait=false >/dev/null 2>&1 || true
}

# remove_operator: everything install_operator (or a user following docs/install.md) applied,
# but the CRDs, and so every baas object, and the namespace; waits until the pods are gone
remove_operator() {
  local m="$REPO/manifests" f
  unregister_webhooks
  for f in deployment service networkpolicy rbac certificate alerts grafana-dashboard; do
    kc delete --ignore-not-found -f "$m/$f.yaml" >/dev/null 2>&1 || true
  done
  kc -n baas-system delete secret baas-webhook-tls --ignore-not-found >/dev/null || die "deleting the Secret baas-webhook-tls failed"
  kc -n baas-system wait --for=delete pod -l app.kubernetes.io/component=operator --timeout=120s >/dev/null 2>&1 || true
}

operator_pods_running() {
  local want="$1"
  [[ "$(kc -n baas-system get deployment baas -o jsonpath='{.status.updatedReplicas}/{.status.readyReplicas}' 2>/dev/null)" == "$want/$want" ]]
}
