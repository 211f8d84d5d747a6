# PVC provisioning on the local cluster: rancher's local-path-provisioner, built from its Go
# module and run as a Deployment from a locally built image, as on a real cluster.
# - `local-path` (the default class): ReadWriteOnce volumes in a directory of the node that
#   first uses them (WaitForFirstConsumer), with node affinity, like any node-local storage.
# - `local-shared`: ReadWriteMany volumes in one directory that every node sees (all nodes
#   share this machine's disk), bound at once, like NFS.
# Sourced by scripts/cluster.

apply_storage() {
  local node_paths="" node sep=""
  for node in $(node_names); do
    mkdir -p "$(node_dir "$node")/volumes"
    node_paths+="$sep{\"node\": \"$node\", \"paths\": [\"$(node_dir "$node")/volumes\"]}"
    sep=", "
  done
  mkdir -p "$STATE/shared-volumes"
  # upstream deploy/local-path-storage.yaml of the pinned release, with the local images,
  # one path per node and the second class
  kc apply -f - >/dev/null <<YAML || die "applying the local-path-provisioner failed"
apiVersion: v1
kind: Namespace
metadata:
  name: local-path-storage
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: local-path-provisioner-service-account
  namespace: local-path-storage
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: local-path-provisioner-role
  namespace: local-path-storage
rules:
  - apiGroups: [""]
    resources: ["pods"]
    verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: local-path-provisioner-role
rules:
  - apiGroups: [""]
    resources: ["nodes", "persistentvolumeclaims", "configmaps", "pods", "pods/log"]
    verbs: ["get", "list", "watch"]
  - apiGroups: [""]
    resources: ["persistentvolumes"]
    verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
  - apiGroups: [""]
    resources: ["events"]
    verbs: ["create", "patch"]
  - apiGroups: ["storage.k8s.io"]
    resources: ["storageclasses"]
    verbs: ["get", "list", "watch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: local-path-provisioner-bind
  namespace: local-path-storage
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: local-path-provisioner-role}
subjects:
  - {kind: ServiceAccount, name: local-path-provisioner-service-account, namespace: local-path-storage}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: local-path-provisioner-bind
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: local-path-provisioner-role}
subjects:
  - {kind: ServiceAccount, name: local-path-provisioner-service-account, namespace: local-path-storage}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: local-path-provisioner
  namespace: local-path-storage
spec:
  replicas: 1
  selector:
    matchLabels: {app: local-path-provisioner}
  template:
    metadata:
      labels: {app: local-path-provisioner}
    spec:
      serviceAccountName: local-path-provisioner-service-account
      containers:
        - name: local-path-provisioner
          image: $LOCAL_PATH_IMAGE
          imagePullPolicy: Never
          command: [local-path-provisioner, start, --config, /etc/config/config.json, --helper-image, $BUSYBOX_IMAGE]
          volumeMounts:
            - {name: config-volume, mountPath: /etc/config/}
          env:
            - name: POD_NAMESPACE
              valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
            - {name: CONFIG_MOUNT_PATH, value: /etc/config/}
      volumes:
        - name: config-volume
          configMap: {name: local-path-config}
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: local-path
  annotations:
    storageclass.kubernetes.io/is-default-class: "true"
provisioner: rancher.io/local-path
volumeBindingMode: WaitForFirstConsumer
reclaimPolicy: Delete
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: local-shared
provisioner: rancher.io/local-path
volumeBindingMode: Immediate
reclaimPolicy: Delete
---
kind: ConfigMap
apiVersion: v1
metadata:
  name: local-path-config
  namespace: local-path-storage
data:
  config.json: |-
    {"storageClassConfigs": {
      "local-path": {"nodePathMap": [$node_paths]},
      "local-shared": {"sharedFileSystemPath": "$STATE/shared-volumes"}
    }}
  setup: |-
    #!/bin/sh
    set -eu
    mkdir -m 0777 -p "\$VOL_DIR"
  teardown: |-
    #!/bin/sh
    set -eu
    rm -rf "\$VOL_DIR"
  helperPod.yaml: |-
    apiVersion: v1
    kind: Pod
    metadata:
      name: helper-pod
    spec:
      priorityClassName: system-node-critical
      tolerations:
        - key: node.kubernetes.io/disk-pressure
          operator: Exists
          effect: NoSchedule
      containers:
      - name: helper-pod
        image: $BUSYBOX_IMAGE
        imagePullPolicy: Never
YAML
}

storage_ready() {
  [[ "$(kc -n local-path-storage get deployment local-path-provisioner -o jsonpath='{.status.availableReplicas}' 2>/dev/null)" == 1 ]]
}
