# shellcheck shell=bash
# The agent part of scripts/bench-peers: the same PVC data backed up by a baas Job, a K8up Job
# and plain restic in a Job (the baas image's restic, the same version as K8up's image has),
# then an incremental run after 1 % changed, then a restore of the whole PVC by each. A sampler
# on this machine (every node's pods run here) times each agent process from its start to its
# last sight, to 10 ms, and records its peak RSS and that of its restic; the three are timed
# the same way. Sourced by scripts/bench-peers; expects its variables and functions.

AGENT_NS=peers-agent
# each run writes to buckets of its own: fresh repositories, whatever an earlier run left
AGENT_RUN="$(date -u +%Y%m%d%H%M%S)"

# load_image NAME: builds one of scripts/lib/images.sh's images and imports it into every node
load_image() {
  local ref tar node
  read -r ref tar < <(BAAS_IMAGE_BINARY="$BAAS" scripts/lib/images.sh build "$1")
  for node in ${BAAS_CLUSTER_NODES:-node-a node-b}; do
    ctr --address "$BAAS_CLUSTER_DIR/nodes/$node/containerd/containerd.sock" -n k8s.io images import "$tar" >/dev/null
  done
  echo "$ref"
}

# pv_path CLAIM: where the claim's volume lives on this machine (every node shares its disk)
pv_path() {
  local pv
  pv="$(kubectl -n "$AGENT_NS" get pvc "$1" -o jsonpath='{.spec.volumeName}')"
  kubectl get pv "$pv" -o jsonpath='{.spec.hostPath.path}{.spec.local.path}'
}

claim() { # claim NAME: a 2 GiB shared claim, bound
  kubectl -n "$AGENT_NS" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: $1}
spec: {accessModes: [ReadWriteMany], storageClassName: $STORAGE_CLASS, resources: {requests: {storage: 2Gi}}}
EOF
  kubectl -n "$AGENT_NS" wait --for=jsonpath='{.status.phase}'=Bound --timeout=120s "pvc/$1" >/dev/null
}

backend() { # backend BUCKET: the backend block both operators' kinds share
  cat <<EOF
  backend:
    repoPasswordSecretRef: {name: backup-repo, key: password}
    s3:
      endpoint: $BAAS_S3_ENDPOINT
      bucket: $1
      accessKeyIDSecretRef: {name: backup-credentials, key: username}
      secretAccessKeySecretRef: {name: backup-credentials, key: password}
EOF
}

# plain_job NAME STEP: restic itself in a Job, the claim at the path the agents mount it at;
# the repository is initialised in the timed part, as the agents do on their first run
plain_job() {
  local name="$1" step="$2" script mounts claim_name
  if [[ "$step" == restore ]]; then
    script="restic restore latest --target /restore"
    mounts="[{name: data, mountPath: /restore}]"
    claim_name=restore-restic
  else
    # the full run's repository is new: restic >= 0.17 would retry `cat config` on a missing
    # bucket for 15 minutes, so it is created without asking, as the agents' S3 check decides
    script="restic backup --host $AGENT_NS /data/data"
    [[ "$step" == full ]] && script="restic init >/dev/null && $script"
    mounts="[{name: data, mountPath: /data/data}]"
    claim_name=data
  fi
  kubectl -n "$AGENT_NS" apply -f - >/dev/null <<EOF
apiVersion: batch/v1
kind: Job
metadata: {name: $name}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      securityContext: {runAsUser: 65532, runAsGroup: 65532, fsGroup: 65532}
      containers:
        - name: restic
          image: $BAAS_AGENT_IMAGE
          command: [sh, -c, ": plain-restic-bench; $script"]
          env:
            - {name: RESTIC_REPOSITORY, value: "s3:$BAAS_S3_ENDPOINT/peers-agent-restic-$AGENT_RUN"}
            - {name: RESTIC_PASSWORD, value: bench}
            - {name: AWS_ACCESS_KEY_ID, value: "$AWS_ACCESS_KEY_ID"}
            - {name: AWS_SECRET_ACCESS_KEY, value: "$AWS_SECRET_ACCESS_KEY"}
            - {name: HOME, value: /tmp}
          volumeMounts: $mounts
      volumes: [{name: data, persistentVolumeClaim: {claimName: $claim_name}}]
EOF
}

# start_run WHO STEP: creates the run of WHO (restic, k8up, baas) for STEP (full,
# incremental, restore), named WHO-STEP
start_run() {
  local who="$1" step="$2" name="$1-$2"
  case "$who/$step" in
    restic/*) plain_job "$name" "$step" ;;
    k8up/restore)
      printf 'apiVersion: k8up.io/v1\nkind: Restore\nmetadata: {name: %s}\nspec:\n%s\n  restoreMethod: {folder: {claimName: restore-k8up}}\n' \
        "$name" "$(backend peers-agent-k8up-$AGENT_RUN)" | kubectl -n "$AGENT_NS" apply -f - >/dev/null ;;
    k8up/*)
      printf 'apiVersion: k8up.io/v1\nkind: Backup\nmetadata: {name: %s}\nspec:\n%s\n' \
        "$name" "$(backend peers-agent-k8up-$AGENT_RUN)" | kubectl -n "$AGENT_NS" apply -f - >/dev/null ;;
    baas/restore)
      printf 'apiVersion: backup.appuio.ch/v1alpha1\nkind: Restore\nmetadata: {name: %s}\nspec:\n%s\n  path: /data/data\n  restoreMethod: {pvc: {claimName: restore-baas}}\n' \
        "$name" "$(backend peers-agent-baas-$AGENT_RUN)" | kubectl -n "$AGENT_NS" apply -f - >/dev/null ;;
    baas/*)
      printf 'apiVersion: backup.appuio.ch/v1alpha1\nkind: Backup\nmetadata: {name: %s}\nspec:\n%s\n' \
        "$name" "$(backend peers-agent-baas-$AGENT_RUN)" | kubectl -n "$AGENT_NS" apply -f - >/dev/null ;;
  esac
}

# run_state WHO STEP: running, ok or failed
run_state() {
  local who="$1" step="$2" name="$1-$2" out kind
  case "$who" in
    restic)
      out="$(kubectl -n "$AGENT_NS" get job "$name" -o jsonpath='{range .status.conditions[?(@.status=="True")]}{.type} {end}')"
      [[ "$out" == *Complete* ]] && { echo ok; return; }
      [[ "$out" == *Failed* ]] && { echo failed; return; } ;;
    k8up)
      kind="$([[ "$step" == restore ]] && echo restores.k8up.io || echo backups.k8up.io)"
      out="$(kubectl -n "$AGENT_NS" get "$kind" "$name" -o jsonpath='{range .status.conditions[?(@.type=="Completed")]}{.status} {.reason}{end}')"
      [[ "$out" == "True Succeeded" ]] && { echo ok; return; }
      [[ "$out" == True* ]] && { echo failed; return; } ;;
    baas)
      kind="$([[ "$step" == restore ]] && echo restores.backup.appuio.ch || echo backups.backup.appuio.ch)"
      out="$(kubectl -n "$AGENT_NS" get "$kind" "$name" -o jsonpath='{.status.state}')"
      [[ "$out" == Succeeded ]] && { echo ok; return; }
      [[ "$out" == PartiallySucceeded || "$out" == Failed ]] && { echo failed; return; } ;;
  esac
  echo running
}

# agent_run WHO STEP: one timed run; appends its figures to $WORK/agent-runs
agent_run() {
  local who="$1" step="$2" sampler state=running
  # the run before wrote a whole repository; its writeback must not land in this one
  sync
  python3 scripts/lib/bench_peers.py sample "$WORK/sample.json" &
  sampler=$!
  sleep 0.5
  start_run "$who" "$step"
  for _ in $(seq 1200); do
    state="$(run_state "$who" "$step")"
    [[ "$state" != running ]] && break
    sleep 0.5
  done
  kill "$sampler"
  wait "$sampler" || true
  if [[ "$state" != ok ]]; then
    kubectl -n "$AGENT_NS" get pods -o wide >&2 || true
    kubectl -n "$AGENT_NS" logs --tail 20 -l batch.kubernetes.io/job-name --all-containers >&2 || true
    die "the $step run of $who ended $state"
  fi
  python3 - "$WORK/sample.json" "$who" "$step" >>"$WORK/agent-runs" <<'EOF'
import json, sys
seen, who, step = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3]
agent = seen.get(who)
if agent is None:
    raise SystemExit(f"the {who} agent process was never seen")
child = seen.get("restic-child", {"hwm_kib": 0})
print(json.dumps({"who": who, "step": step, "seconds": agent["last"] - agent["first"],
                  "agent_hwm_kib": agent["hwm_kib"], "restic_hwm_kib": child["hwm_kib"]}))
EOF
  log "agent: $who $step: $(tail -n 1 "$WORK/agent-runs")"
}

write_data() { # write_data DIR MIB: three quarters in files of 64 MiB, a quarter in files of 64 KiB
  python3 - "$1" "$2" <<'EOF'
import json, os, sys
root, mib = sys.argv[1], int(sys.argv[2])
large, small = mib * 3 // 4 // 64, mib // 4 * 16
os.makedirs(f"{root}/large", exist_ok=True)
for i in range(large):
    with open(f"{root}/large/file-{i}.bin", "wb") as f:
        for _ in range(64):
            f.write(os.urandom(1 << 20))
for i in range(small):
    d = f"{root}/small/{i // 64:03d}"
    os.makedirs(d, exist_ok=True)
    with open(f"{d}/file-{i}.bin", "wb") as f:
        f.write(os.urandom(64 << 10))
print(json.dumps({"bytes": large * (64 << 20) + small * (64 << 10), "files": large + small, "large": large}))
EOF
  chmod -R a+rX "$1"
}

change_data() { # change_data DIR: 1 % of 1 GiB: 6 MiB at the start of a large file, 64 small files
  python3 - "$1" <<'EOF'
import os, sys
root = sys.argv[1]
with open(f"{root}/large/file-0.bin", "r+b") as f:
    f.write(os.urandom(6 << 20))
for i in range(64):
    with open(f"{root}/small/{i:03d}/file-{i * 64}.bin", "wb") as f:
        f.write(os.urandom(64 << 10))
EOF
}

agent_phase() {
  log "agent: images with the same restic for baas and K8up"
  BAAS_AGENT_IMAGE="$(load_image baas)"
  local k8up_image
  k8up_image="$(load_image k8up)"
  kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Namespace
metadata: {name: $AGENT_NS, labels: {baas-bench-peers: "true"}}
---
apiVersion: v1
kind: Secret
metadata: {name: backup-repo, namespace: $AGENT_NS}
stringData: {password: bench}
---
apiVersion: v1
kind: Secret
metadata: {name: backup-credentials, namespace: $AGENT_NS}
stringData: {username: "$AWS_ACCESS_KEY_ID", password: "$AWS_SECRET_ACCESS_KEY"}
---
# what K8up's chart installs for its Jobs, and K8up binds in each namespace
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: k8up-executor}
rules:
  - {apiGroups: [""], resources: [pods], verbs: [get, list, watch]}
  - {apiGroups: [""], resources: [pods/exec], verbs: [create]}
  - {apiGroups: [k8up.io], resources: ["*"], verbs: [get, list, watch, create, update, patch, delete]}
EOF
  claim data
  local data
  data="$(pv_path data)"
  [[ -d "$data" ]] || die "the volume of the claim data is not at $data"
  log "agent: writing $AGENT_MIB MiB of small and large files"
  write_data "$data" "$AGENT_MIB" >"$WORK/agent-data.json"

  ! curl -sf "http://$K8UP_METRICS/metrics" >/dev/null || die "something already serves $K8UP_METRICS: an operator left by an earlier run?"
  k8up_start_operator "$K8UP_METRICS" "$k8up_image" "$OUT/k8up-agent.log"
  # shellcheck disable=SC2153 # set by k8up_start_operator
  local k8up_pid="$K8UP_PID"
  [[ -f "$WORK/tls.key" ]] || openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
    -subj /CN=baas-bench -keyout "$WORK/tls.key" -out "$WORK/tls.crt" >/dev/null 2>&1
  BAAS_LOG=info "$BAAS" operator --leader-election=false \
    --tls-cert "$WORK/tls.crt" --tls-key "$WORK/tls.key" --listen "${BENCH_WEBHOOK_LISTEN:-127.0.0.1:19443}" \
    --metrics-listen "$BAAS_METRICS" --agent-image "$BAAS_AGENT_IMAGE" >"$OUT/baas-agent.log" 2>&1 &
  OPERATOR_PID=$!
  : >"$WORK/agent-runs"
  # BENCH_AGENT_ORDER: who runs first in each step, to tell a cost of going last from a cost
  # of the agent
  local who order="${BENCH_AGENT_ORDER:-restic k8up baas}"
  for who in $order; do agent_run "$who" full; done
  log "agent: changing 1 % of the data"
  change_data "$data"
  for who in $order; do agent_run "$who" incremental; done
  for who in restic k8up baas; do claim "restore-$who"; done
  for who in $order; do agent_run "$who" restore; done
  : >"$WORK/restored"
  for who in restic k8up baas; do
    echo "$who $(du -sb "$(pv_path "restore-$who")" | cut -f1)" >>"$WORK/restored"
  done
  kill "$k8up_pid" "$OPERATOR_PID"
  wait "$k8up_pid" "$OPERATOR_PID" 2>/dev/null || true
  OPERATOR_PID="" K8UP_PID=""
  python3 - "$WORK/agent-data.json" "$WORK/agent-runs" "$("$(scripts/lib/build-go-tool.sh restic)" version | cut -d' ' -f2)" "$WORK/restored" >"$OUT/agent.json" <<'EOF'
import json, sys
result = json.load(open(sys.argv[1]))
result["restic_version"] = sys.argv[3]
result["restored_bytes"] = {who: int(n) for who, n in (line.split() for line in open(sys.argv[4]))}
result["runs"] = {}
for line in open(sys.argv[2]):
    run = json.loads(line)
    result["runs"].setdefault(run["who"], {})[run["step"]] = run
print(json.dumps(result))
EOF
  python3 scripts/lib/bench_peers.py agent-report "$OUT/agent.json"
  kubectl delete ns "$AGENT_NS" --wait=false >/dev/null
}
