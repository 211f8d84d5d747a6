//! `Restore`: one restore of a snapshot.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{
    Backend, MAX_PATH_LENGTH, MAX_SNAPSHOT_LENGTH, MAX_URL_LENGTH, RestoreMethod, RunStatus,
};

/// One restore of a snapshot, as a .tar.gz object in S3 or into a PVC
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "backup.appuio.ch",
    version = "v1alpha1",
    kind = "Restore",
    namespaced,
    status = "RunStatus",
    category = "baas",
    derive = "PartialEq",
    derive = "Default",
    doc = "One restore of a snapshot, as a .tar.gz object in S3 or into a PVC",
    printcolumn(
        name = "State",
        type_ = "string",
        json_path = ".status.state",
        description = "Pending, Running, Succeeded, PartiallySucceeded or Failed"
    ),
    printcolumn(
        name = "Snapshot",
        type_ = "string",
        json_path = ".status.snapshotID",
        description = "Snapshot that was restored"
    ),
    printcolumn(name = "Started", type_ = "date", json_path = ".status.startedAt"),
    printcolumn(
        name = "Finished",
        type_ = "date",
        json_path = ".status.finishedAt",
        priority = 1
    ),
    printcolumn(
        name = "Message",
        type_ = "string",
        json_path = ".status.message",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct RestoreSpec {
    /// The repository this run works on.
    pub backend: Backend,
    /// Where the restored files go: exactly one of `s3` or `pvc`.
    pub restore_method: RestoreMethod,
    /// Snapshot ID or unique ID prefix to restore. Default: the newest snapshot of this
    /// namespace that holds `path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_SNAPSHOT_LENGTH))]
    pub snapshot: Option<String>,
    /// Part of the snapshot to restore, for example `/data/mypvc`; its contents become the root
    /// of the target. Default for a PVC target: `/data/<claimName>` when the snapshot has it,
    /// else the whole snapshot. An absolute, clean path: no `..`, `.` or empty segments
    /// (trailing slashes are dropped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_PATH_LENGTH))]
    pub path: Option<String>,
    /// The namespace whose snapshots are restored: default this Restore's own. Set it to
    /// rebuild a lost namespace in a new one from the same repository. Anyone holding the
    /// repository's credentials can read every namespace's snapshots in it, so this grants
    /// nothing beyond them; this namespace must hold the Secrets that `backend` names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub source_namespace: Option<String>,
    /// URL of a Prometheus Pushgateway that receives the metrics of this run.
    #[serde(default, rename = "promURL", skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_URL_LENGTH))]
    pub prom_url: Option<String>,
}
