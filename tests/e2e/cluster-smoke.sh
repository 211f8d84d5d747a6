#!/usr/bin/env bash
# Smoke checks of the local cluster (run after `scripts/cluster up`): real nodes with
# containerd, PVC provisioning on first use, Jobs, termination messages, secretKeyRef env,
# exec, logs, pods reaching the API server and the S3 server, pod deletion, restic from the
# baas image against the local S3 server, node pinning, and the operator's Deployment.
# Prints PASS/FAIL per check and "N passed, M failed" last; exits 1 on any failure.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
NS="smoke-$$-$RANDOM"
T="${SMOKE_TIMEOUT:-60s}"
passed=0 failed=0

pass() { echo "PASS: $1"; passed=$((passed + 1)); }
fail() { echo "FAIL: $1${2:+ — $2}"; failed=$((failed + 1)); }
k() { kubectl -n "$NS" "$@"; }
# test pods run the locally built busybox; manifests below say BUSYBOX and BAAS_IMAGE
kapply() {
  sed -e "s#image: BUSYBOX#image: $BAAS_TEST_BUSYBOX_IMAGE#" -e "s#image: BAAS_IMAGE#image: $BAAS_IMAGE#" |
    k apply -f - >/dev/null || echo "(kubectl apply failed)" >&2
}
finish() {
  local rc=$?
  kubectl delete namespace "$NS" --wait=false >/dev/null 2>&1 || true
  if [[ -z "${finished:-}" ]]; then
    echo "FAIL: the smoke script itself stopped early (exit $rc)"
    echo "$passed passed, $((failed + 1)) failed"
    exit 1
  fi
}
trap finish EXIT
finished=""
eval "$("$REPO/scripts/cluster" env)"

kubectl create namespace "$NS" >/dev/null
# the ServiceAccount admission plugin rejects pods until "default" exists
for _ in $(seq 50); do k get serviceaccount default >/dev/null 2>&1 && break; sleep 0.2; done

# 1. nodes
if nodes="$(kubectl get nodes --no-headers 2>&1)" && [[ -n "$nodes" ]] && ! grep -qv ' Ready ' <<<"$nodes"; then
  pass "all nodes Ready: $(awk '{print $1}' <<<"$nodes" | paste -sd, -)"
else
  fail "nodes Ready" "$nodes"
fi
node="$(kubectl get nodes -o jsonpath='{.items[0].metadata.name}')"

# 2. PVC provisioning and binding
kapply <<'EOF'
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: mypvc}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
EOF
sleep 1
if [[ "$(k get pvc mypvc -o jsonpath='{.status.phase}')" == Pending ]]; then
  pass "PVC mypvc waits for its first consumer (node-local storage)"
else
  fail "PVC Pending before first use" "$(k get pvc mypvc -o wide 2>&1 | tail -1)"
fi

# 3. a pod writes into the PVC
kapply <<'EOF'
apiVersion: v1
kind: Pod
metadata: {name: writer}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: BUSYBOX
    command: [sh, -c, 'echo hello > /data/mypvc/hello.txt && echo wrote']
    volumeMounts: [{name: data, mountPath: /data/mypvc}]
  volumes: [{name: data, persistentVolumeClaim: {claimName: mypvc}}]
EOF
if k wait --for=jsonpath='{.status.phase}'=Succeeded pod/writer --timeout="$T" >/dev/null 2>&1; then
  pass "pod writer Succeeded (wrote into the PVC)"
else
  fail "pod writer Succeeded" "$(k get pod writer -o jsonpath='{.status}' 2>&1 | head -c 600)"
fi
pv="$(k get pvc mypvc -o jsonpath='{.spec.volumeName}')"
writer_node="$(k get pod writer -o jsonpath='{.spec.nodeName}')"
if [[ -n "$pv" ]] && kubectl get pv "$pv" -o jsonpath='{.spec.nodeAffinity}' | grep -q "\"$writer_node\""; then
  pass "PVC mypvc Bound to $pv on $writer_node, where its first pod ran"
else
  fail "PVC Bound with node affinity" "pv='$pv' node='$writer_node'"
fi
cid="$(k get pod writer -o jsonpath='{.status.containerStatuses[0].containerID}')"
if [[ "$cid" == containerd://* ]]; then pass "containers run in containerd ($cid)"; else fail "containerd container ID" "got '$cid'"; fi

# 4. logs of a finished pod
if [[ "$(k logs writer 2>&1)" == wrote ]]; then pass "kubectl logs"; else fail "kubectl logs" "$(k logs writer 2>&1 | head -5)"; fi

# 5. a Job reads the PVC and leaves a termination message
kapply <<'EOF'
apiVersion: batch/v1
kind: Job
metadata: {name: reader}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: main
        image: BUSYBOX
        command: [sh, -c, 'ls /data/mypvc && grep -q hello /data/mypvc/hello.txt && echo done > /dev/termination-log']
        volumeMounts: [{name: data, mountPath: /data/mypvc}]
      volumes: [{name: data, persistentVolumeClaim: {claimName: mypvc}}]
EOF
if k wait --for=condition=Complete job/reader --timeout="$T" >/dev/null 2>&1; then
  pass "Job reader Complete"
else
  fail "Job reader Complete" "$(k get job reader -o jsonpath='{.status}' 2>&1 | head -c 600)"
fi
msg="$(k get pods -l job-name=reader -o jsonpath='{.items[0].status.containerStatuses[0].state.terminated.message}' 2>&1)"
if [[ "$msg" == done* ]]; then pass "termination message '$msg' in the Job's pod"; else fail "termination message" "got '$msg'"; fi

# 6. secretKeyRef env reaches the process; missing secret blocks the container
k create secret generic creds --from-literal=password=s3cr3t >/dev/null || true
kapply <<'EOF'
apiVersion: v1
kind: Pod
metadata: {name: envcheck}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: BUSYBOX
    command: [sh, -c, 'echo "password=$PASSWORD pod=$POD_NAME ns=$POD_NS node=$NODE"; test "$PASSWORD" = s3cr3t']
    env:
    - name: PASSWORD
      valueFrom: {secretKeyRef: {name: creds, key: password}}
    - name: POD_NAME
      valueFrom: {fieldRef: {fieldPath: metadata.name}}
    - name: POD_NS
      valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
    - name: NODE
      valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
---
apiVersion: v1
kind: Pod
metadata: {name: nosecret}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: BUSYBOX
    command: [sh, -c, 'true']
    env:
    - name: PASSWORD
      valueFrom: {secretKeyRef: {name: does-not-exist, key: password}}
EOF
if k wait --for=jsonpath='{.status.phase}'=Succeeded pod/envcheck --timeout="$T" >/dev/null 2>&1 &&
  [[ "$(k logs envcheck)" == "password=s3cr3t pod=envcheck ns=$NS node=$(k get pod envcheck -o jsonpath='{.spec.nodeName}')" ]]; then
  pass "secretKeyRef and fieldRef env reach the process"
else
  fail "secretKeyRef env" "$(k logs envcheck 2>&1 | head -3)"
fi
if k wait --for=jsonpath='{.status.containerStatuses[0].state.waiting.reason}'=CreateContainerConfigError pod/nosecret --timeout="$T" >/dev/null 2>&1; then
  pass "missing Secret: container waits with CreateContainerConfigError"
else
  fail "missing Secret" "$(k get pod nosecret -o jsonpath='{.status.containerStatuses}' 2>&1 | head -c 400)"
fi

# 7. exec into a running pod, exit code propagated; in-cluster token works
kapply <<'EOF'
apiVersion: v1
kind: Pod
metadata: {name: sleeper}
spec:
  terminationGracePeriodSeconds: 5
  containers:
  - name: main
    image: BUSYBOX
    command: [sleep, "3600"]
EOF
if k wait --for=condition=Ready pod/sleeper --timeout="$T" >/dev/null 2>&1; then
  set +e
  out="$(k exec sleeper -- sh -c 'echo hi; exit 3' 2>/dev/null)"
  rc=$?
  set -e
  if [[ "$out" == hi && $rc == 3 ]]; then pass "kubectl exec prints 'hi' and exits 3"; else fail "kubectl exec" "out='$out' rc=$rc"; fi
  out="$(echo from-stdin | k exec -i sleeper -- cat 2>&1)" || true
  if [[ "$out" == from-stdin ]]; then pass "kubectl exec -i streams stdin"; else fail "kubectl exec -i" "got '$out'"; fi
  # busybox nc fails when it cannot connect; its wget speaks no TLS, so the operator pods
  # (below) are the proof that a token gets through
  if k exec sleeper -- sh -c 'test -s /var/run/secrets/kubernetes.io/serviceaccount/token && echo | nc -w 3 "$KUBERNETES_SERVICE_HOST" "$KUBERNETES_SERVICE_PORT"' >/dev/null 2>&1; then
    pass "a pod has its token and reaches the API server at the kubernetes Service"
  else
    fail "pod to API server" "$(k exec sleeper -- sh -c 'echo $KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT' 2>&1)"
  fi
  s3="${BAAS_S3_ENDPOINT#http://}"
  if k exec sleeper -- sh -c "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 ${s3%:*} ${s3##*:}" 2>/dev/null | grep '^HTTP/1' >/dev/null; then
    pass "a pod reaches the S3 server at $BAAS_S3_ENDPOINT"
  else
    fail "pod to S3" "no connection to $s3"
  fi
else
  fail "sleeper Ready" "$(k get pod sleeper -o jsonpath='{.status}' 2>&1 | head -c 400)"
fi

# 8. a failing Job with backoffLimit 0 fails
kapply <<'EOF'
apiVersion: batch/v1
kind: Job
metadata: {name: failing}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: main
        image: BUSYBOX
        command: [sh, -c, 'echo failing on purpose >&2; exit 1']
EOF
if k wait --for=condition=Failed job/failing --timeout="$T" >/dev/null 2>&1; then
  pass "Job failing (exit 1, backoffLimit 0) Failed"
else
  fail "Job failing Failed" "$(k get job failing -o jsonpath='{.status}' 2>&1 | head -c 600)"
fi

# 9. deleting a running pod stops its process and removes the pod
if k get pod sleeper >/dev/null 2>&1; then
  start=$SECONDS
  if k delete pod sleeper --timeout="$T" >/dev/null 2>&1; then
    pass "running pod deleted in $((SECONDS - start))s"
  else
    fail "delete running pod" "$(k get pod sleeper -o jsonpath='{.status.phase}' 2>&1)"
  fi
fi

# 10. restic in a Job backs the PVC up into the local S3 server
bucket="smoke-$RANDOM$RANDOM"
k create secret generic s3 --from-literal=id="$AWS_ACCESS_KEY_ID" --from-literal=secret="$AWS_SECRET_ACCESS_KEY" \
  --from-literal=repo=restic-pass >/dev/null || true
kapply <<EOF
apiVersion: batch/v1
kind: Job
metadata: {name: restic}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: main
        image: BAAS_IMAGE
        command: [sh, -c, 'restic init && restic backup --host \$(NS) /data/mypvc && restic snapshots --json > /dev/termination-log']
        env:
        - {name: RESTIC_CACHE_DIR, value: /tmp/restic-cache}
        - {name: RESTIC_REPOSITORY, value: "s3:$BAAS_S3_ENDPOINT/$bucket"}
        - {name: NS, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
        - {name: AWS_ACCESS_KEY_ID, valueFrom: {secretKeyRef: {name: s3, key: id}}}
        - {name: AWS_SECRET_ACCESS_KEY, valueFrom: {secretKeyRef: {name: s3, key: secret}}}
        - {name: RESTIC_PASSWORD, valueFrom: {secretKeyRef: {name: s3, key: repo}}}
        volumeMounts: [{name: data, mountPath: /data/mypvc, readOnly: true}]
      volumes: [{name: data, persistentVolumeClaim: {claimName: mypvc}}]
EOF
if k wait --for=condition=Complete job/restic --timeout="$T" >/dev/null 2>&1 &&
  k get pods -l job-name=restic -o jsonpath='{.items[0].status.containerStatuses[0].state.terminated.message}' | grep -q "\"hostname\":\"$NS\""; then
  pass "restic in a Job of the baas image backed up the PVC into S3 bucket $bucket"
else
  fail "restic Job" "$(k logs job/restic 2>&1 | tail -5)"
fi

# 11. with two or more nodes: node pinning through nodeSelector and required affinity
nodes=($(kubectl get nodes -o jsonpath='{.items[*].metadata.name}'))
if ((${#nodes[@]} >= 2)); then
  last="${nodes[${#nodes[@]}-1]}"
  kapply <<EOF || true
apiVersion: v1
kind: Pod
metadata: {name: pinned}
spec:
  restartPolicy: Never
  nodeSelector: {kubernetes.io/hostname: $last}
  containers: [{name: main, image: BUSYBOX, command: [sh, -c, 'echo \$(NODE)'], env: [{name: NODE, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: affine}
spec:
  restartPolicy: Never
  affinity:
    nodeAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        nodeSelectorTerms: [{matchExpressions: [{key: kubernetes.io/hostname, operator: In, values: [$last]}]}]
  containers: [{name: main, image: BUSYBOX, command: ['true']}]
EOF
  if k wait --for=jsonpath='{.status.phase}'=Succeeded pod/pinned pod/affine --timeout="$T" >/dev/null 2>&1 &&
    [[ "$(k logs pinned)" == "$last" && "$(k get pod affine -o jsonpath='{.spec.nodeName}')" == "$last" ]]; then
    pass "pods pinned to node $last by nodeSelector and node affinity"
  else
    fail "node pinning" "$(k get pods pinned affine -o wide 2>&1)"
  fi
fi

# 12. the operator runs in the cluster from the locally built image, two replicas, one leader
images="$(kubectl -n baas-system get pods -l app.kubernetes.io/component=operator -o jsonpath='{range .items[*]}{.spec.containers[0].image}{" "}{.status.phase}{"\n"}{end}')"
if [[ "$(grep -c "^$BAAS_IMAGE Running$" <<<"$images")" == 2 ]]; then
  pass "two operator pods run $BAAS_IMAGE"
else
  fail "operator pods" "$images"
fi
leader="$(kubectl -n baas-system get lease baas-operator -o jsonpath='{.spec.holderIdentity}' 2>/dev/null || true)"
if [[ -n "$leader" ]] && kubectl -n baas-system get pod "$leader" >/dev/null 2>&1; then
  pass "operator pod $leader holds the leader lease"
else
  fail "leader election" "holder '$leader'"
fi

finished=1
echo "$passed passed, $failed failed"
((failed == 0))
