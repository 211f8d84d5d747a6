# An optional audit log of the API server's writes, for benchmarks that count every write by
# verb, resource and client, whatever the client's own metrics say (scripts/bench-peers).
# Off unless BAAS_APISERVER_AUDIT=1; then $LOGS/audit.log holds one JSON line per write
# (create, update, patch, delete, deletecollection) at the Metadata level, reads not at all.
# Sourced by scripts/cluster; expects STATE and LOGS.

# audit_args: the kube-apiserver flags for the audit log, none when it is off
audit_args() {
  [[ "${BAAS_APISERVER_AUDIT:-0}" == 1 ]] || return 0
  mkdir -p "$STATE" "$LOGS"
  cat >"$STATE/audit-policy.yaml" <<'YAML'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
    verbs: [create, update, patch, delete, deletecollection]
  - level: None
YAML
  printf '%s\n' "--audit-policy-file=$STATE/audit-policy.yaml" "--audit-log-path=$LOGS/audit.log" \
    --audit-log-format=json --audit-log-maxsize=0 --audit-log-mode=batch --audit-log-batch-max-wait=1s
}
