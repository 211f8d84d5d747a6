#!/usr/bin/env bash
# The Helm chart on the local cluster, as a platform team uses it: `helm template` passes a
# server dry run; the manifests install is removed (CRDs kept) and `helm install` runs the
# locally built image with the chart's own serving certificate; a bad value is refused; a
# PVC is backed up to the local S3 server; `helm upgrade` with other values takes effect and
# keeps the certificate, and a backup still works; `helm uninstall` leaves only the CRDs and
# the baas objects. The manifests install is restored at the end, also on failure.
# Prints PASS/FAIL per check and "N passed, M failed" last; exits 1 on any failure.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO"
eval "$(scripts/cluster env)"
helm="$(scripts/lib/build-go-tool.sh helm)"
OPNS=baas-system
NS="e2e-helm-$RANDOM$RANDOM"
BUCKET="$NS"
T=180s
passed=0 failed=0 finished="" restored=""

pass() { echo "PASS: $1"; passed=$((passed + 1)); }
fail() { echo "FAIL: $1${2:+ — $2}"; failed=$((failed + 1)); }
k() { kubectl -n "$NS" "$@"; }
ko() { kubectl -n "$OPNS" "$@"; }
finish() {
  local rc=$?
  if ((failed)) || [[ -z "$finished" ]]; then
    ko get pods -o wide 2>&1 | sed 's/^/  /' >&2 || true
    ko logs -l app.kubernetes.io/component=operator --tail=20 --prefix 2>&1 | sed 's/^/  /' >&2 || true
    k get backups,jobs,pods -o wide 2>&1 | sed 's/^/  /' >&2 || true
  fi
  # the cluster as the other tests expect it: the operator from manifests/
  if [[ -z "$restored" ]]; then
    "$helm" uninstall baas -n "$OPNS" --wait >/dev/null 2>&1 || true
    scripts/cluster install-operator >/dev/null || echo "FAIL: restoring the manifests install" >&2
  fi
  kubectl delete namespace "$NS" --wait=false >/dev/null 2>&1 || true
  if [[ -z "$finished" ]]; then
    echo "FAIL: the helm script itself stopped early (exit $rc)"
    echo "$passed passed, $((failed + 1)) failed"
    exit 1
  fi
}
trap finish EXIT

image="${BAAS_IMAGE:?scripts/cluster env names no BAAS_IMAGE}"
chart=(charts/baas -n "$OPNS" --set "image.repository=${image%:*}" --set "image.tag=${image##*:}")

# 1. what `helm template` renders is accepted by the API server, with each certificate mode
for mode in generate certManager; do
  if out="$("$helm" template baas "${chart[@]}" --set certificate.mode=$mode \
      --api-versions monitoring.coreos.com/v1/PrometheusRule | kubectl apply --dry-run=server -f - 2>&1)"; then
    pass "helm template (certificate.mode=$mode) passes a server dry run ($(grep -c . <<<"$out") objects)"
  else
    fail "server dry run of helm template, certificate.mode=$mode" "$(tail -3 <<<"$out")"
  fi
done

# test data, made while the manifests install still answers
kubectl create namespace "$NS" >/dev/null
kubectl label namespace "$NS" pod-security.kubernetes.io/enforce=baseline >/dev/null
for _ in $(seq 50); do k get serviceaccount default >/dev/null 2>&1 && break; sleep 0.2; done
k create secret generic backup-credentials --from-literal=username="$AWS_ACCESS_KEY_ID" --from-literal=password="$AWS_SECRET_ACCESS_KEY" >/dev/null
k create secret generic backup-repo --from-literal=password=helm-e2e-repo-password >/dev/null
k apply -f - >/dev/null <<EOF2
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: files}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
---
apiVersion: v1
kind: Pod
metadata: {name: writer}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: $BAAS_TEST_BUSYBOX_IMAGE
    command: [sh, -c, 'echo installed by helm > /mnt/hello.txt']
    volumeMounts: [{name: data, mountPath: /mnt}]
  volumes: [{name: data, persistentVolumeClaim: {claimName: files}}]
EOF2
k wait --for=jsonpath='{.status.phase}'=Succeeded pod/writer --timeout=60s >/dev/null

# backup NAME: a one-off Backup of the namespace (manifests/examples/backup.yaml) that must
# succeed, then the file read back from the repository with plain restic
backup() {
  local name="$1"
  sed -e "s#name: before-upgrade#name: $name#" -e "s#https://objects.example.com#$BAAS_S3_ENDPOINT#" \
    -e "s#bucket: team-a-backups#bucket: $BUCKET#" manifests/examples/backup.yaml | k apply -f - >/dev/null
  k wait --for=jsonpath='{.status.state}'=Succeeded "backup/$name" --timeout="$T" >/dev/null 2>&1 || return 1
  [[ "$(RESTIC_PASSWORD=helm-e2e-repo-password RESTIC_CACHE_DIR="$(mktemp -d)" \
    restic -r "s3:$BAAS_S3_ENDPOINT/$BUCKET" dump latest /data/files/hello.txt 2>/dev/null)" == "installed by helm" ]]
}

# 2. the manifests install goes, the CRDs stay
t0=$SECONDS
scripts/cluster remove-operator
if ! ko get deployment baas >/dev/null 2>&1 && ! kubectl get clusterrole baas-operator >/dev/null 2>&1 &&
  kubectl get crd backups.backup.appuio.ch >/dev/null 2>&1; then
  pass "manifests install removed, CRDs kept"
else
  fail "removing the manifests install"
fi

# 3. a bad value is refused with its path, and nothing is installed
if out="$("$helm" install baas "${chart[@]}" --set replicas=two 2>&1)"; then
  fail "helm install with replicas=two was accepted"
elif grep -q "/replicas" <<<"$out" && ! "$helm" status baas -n "$OPNS" >/dev/null 2>&1; then
  pass "helm install refuses replicas=two naming /replicas, installs nothing"
else
  fail "helm install with replicas=two" "$out"
fi

# 4. helm install with the chart's generated certificate
if out="$("$helm" install baas "${chart[@]}" --wait --timeout 3m 2>&1)"; then
  pass "helm install ready in $((SECONDS - t0))s since the manifests install was removed"
else
  fail "helm install" "$out"
fi
images="$(ko get pods -l app.kubernetes.io/component=operator -o jsonpath='{range .items[*]}{.spec.containers[0].image}{" "}{.status.phase}{"\n"}{end}')"
[[ "$(grep -c "^$image Running$" <<<"$images")" == 2 ]] && pass "two operator pods run $image" || fail "operator pods" "$images"
# the API server reaches the webhook with the chart's CA: a bad cron is denied with its path
out="$(sed -e "s#https://objects.example.com#$BAAS_S3_ENDPOINT#" manifests/examples/schedule.yaml 2>/dev/null |
  sed -E "s#schedule: .*#schedule: '0 1 * *'#" | k apply --dry-run=server -f - 2>&1 || true)"
grep -q "invalid cron expression" <<<"$out" && pass "webhook behind the generated certificate denies a bad cron" || fail "webhook denial" "$out"
if backup helm-install; then pass "backup after helm install succeeded; restic reads the file back"; else fail "backup after helm install"; fi
first_line="$(ko logs deploy/baas --tail=1 2>/dev/null)"
[[ "$first_line" == "{"* ]] && pass "operator logs JSON by default" || fail "default log format" "$first_line"

# 5. helm upgrade with other values: one replica, text logs, agent resources
ca_before="$(kubectl get validatingwebhookconfiguration baas-validating -o jsonpath='{.webhooks[0].clientConfig.caBundle}')"
crt_before="$(ko get secret baas-webhook-tls -o jsonpath='{.data.tls\.crt}')"
if out="$("$helm" upgrade baas "${chart[@]}" --reuse-values --set replicas=1 --set log.format=text \
    --set-json 'agent.resources={"limits":{"memory":"300Mi"}}' --wait --timeout 3m 2>&1)"; then
  pass "helm upgrade ready"
else
  fail "helm upgrade" "$out"
fi
ko rollout status deployment/baas --timeout=120s >/dev/null 2>&1 || true
for _ in $(seq 60); do
  [[ "$(ko get pods -l app.kubernetes.io/component=operator --no-headers 2>/dev/null | wc -l)" == 1 ]] && break
  sleep 1
done
pods="$(ko get pods -l app.kubernetes.io/component=operator --no-headers 2>/dev/null | wc -l)"
[[ "$pods" == 1 && "$(ko get deployment baas -o jsonpath='{.status.readyReplicas}')" == 1 ]] &&
  pass "upgrade to replicas=1: one operator pod" || fail "replicas after upgrade" "$pods pods"
[[ "$(kubectl get mutatingwebhookconfiguration baas-mutating -o jsonpath='{.webhooks[0].clientConfig.caBundle}')" == "$ca_before" &&
  "$(ko get secret baas-webhook-tls -o jsonpath='{.data.tls\.crt}')" == "$crt_before" ]] &&
  pass "upgrade kept the generated CA and certificate" || fail "certificate changed on upgrade"
if backup helm-upgrade; then pass "backup after helm upgrade succeeded"; else fail "backup after helm upgrade"; fi
limit="$(k get jobs -l backup.appuio.ch/run=helm-upgrade -o jsonpath='{.items[0].spec.template.spec.containers[0].resources.limits.memory}')"
[[ "$limit" == 300Mi ]] && pass "agent.resources reached the backup Job (limits.memory $limit)" || fail "agent resources" "got '$limit' (an image built before --agent-resources ignores it: scripts/cluster image)"
line="$(ko logs deploy/baas --tail=1 2>/dev/null)"
[[ -n "$line" && "$line" != "{"* ]] && pass "operator logs text after upgrade" || fail "log format after upgrade" "$line"

# 6. helm uninstall leaves the CRDs and the users' objects, nothing else
"$helm" uninstall baas -n "$OPNS" --wait >/dev/null
left=()
for obj in deployment/baas service/baas-webhook serviceaccount/baas-operator secret/baas-webhook-tls \
  poddisruptionbudget/baas networkpolicy/baas-operator configmap/baas-grafana-dashboard \
  role/baas-operator-leader-election rolebinding/baas-operator-leader-election prometheusrule/baas servicemonitor/baas; do
  ko get "$obj" >/dev/null 2>&1 && left+=("$obj")
done
for obj in clusterrole/baas-operator clusterrole/baas-agent clusterrole/baas-metrics-reader clusterrolebinding/baas-operator \
  mutatingwebhookconfiguration/baas-mutating validatingwebhookconfiguration/baas-validating; do
  kubectl get "$obj" >/dev/null 2>&1 && left+=("$obj")
done
((${#left[@]} == 0)) && pass "helm uninstall removed every object of the chart" || fail "left after helm uninstall" "${left[*]}"
# every CRD the chart ships, counted from the chart so that a new kind is counted too
shipped="$(grep -c '^kind: CustomResourceDefinition' charts/baas/crds/crds.yaml)"
crds="$(kubectl get crd -o name | grep -c 'backup.appuio.ch$' || true)"
backups="$(k get backups --no-headers 2>/dev/null | wc -l)"
[[ "$crds" == "$shipped" && "$backups" == 2 ]] && pass "the $shipped CRDs and both Backups remain" \
  || fail "CRDs after uninstall" "$crds of $shipped CRDs, $backups Backups"

# 7. back to the manifests install
scripts/cluster install-operator >/dev/null
restored=1
[[ "$(ko get deployment baas -o jsonpath='{.status.readyReplicas}')" == 2 ]] &&
  pass "manifests install restored in $((SECONDS - t0))s after it was removed" || fail "restoring the manifests install"

finished=1
echo "$passed passed, $failed failed"
((failed == 0))
