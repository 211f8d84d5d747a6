//! `Verify`: one proof that the newest snapshots of a namespace restore: each is restored into
//! scratch space, checked file by file against the snapshot and against the backup's recorded
//! summary, and optionally handed to an application check.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Backend, MAX_URL_LENGTH, RunStatus};

/// Longest image reference the webhook accepts.
pub const MAX_IMAGE_LENGTH: usize = 512;
/// Most arguments of an application check's command.
pub const MAX_COMMAND_ITEMS: usize = 64;
/// Longest argument of an application check's command.
pub const MAX_COMMAND_ITEM_LENGTH: usize = 16 * 1024;
/// Where the restored snapshots are mounted in the application check's container: each at its
/// own path below it (`/verify/data/<pvcname>/...`, `/verify/<namespace>-<pod>-<container>`).
pub const VERIFY_DIR: &str = "/verify";

/// One verification that the newest snapshots of a namespace restore
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "backup.appuio.ch",
    version = "v1alpha1",
    kind = "Verify",
    namespaced,
    status = "RunStatus",
    shortname = "vf",
    category = "baas",
    derive = "PartialEq",
    derive = "Default",
    doc = "One verification that the newest snapshots of a namespace restore",
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
        description = "First snapshot that was verified"
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
pub struct VerifySpec {
    /// The repository whose snapshots of this namespace are verified. The repository is only
    /// read, so a verification may run beside backups, but never during a prune.
    pub backend: Backend,
    /// A check of the restored data by the application itself, run after every snapshot has
    /// been restored and checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_check: Option<AppCheck>,
    /// URL of a Prometheus Pushgateway that receives the metrics of this run.
    #[serde(default, rename = "promURL", skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_URL_LENGTH))]
    pub prom_url: Option<String>,
}

/// A command that proves the restored data usable, for example: load the restored
/// `mysqldump` output into a throwaway database started from the database's own image, then
/// query it. It runs in its own container of the verification pod, under the same
/// restrictions as the agent (non-root, no privilege escalation, all capabilities dropped),
/// with the restored snapshots read-only at `/verify` and an empty writable `/tmp`. Exit code
/// 0 passes; otherwise the last lines of its output are the run's error.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppCheck {
    /// Container image of the check, for example the database pod's own image.
    #[schemars(length(max = MAX_IMAGE_LENGTH))]
    pub image: String,
    /// Command and arguments, run without a shell unless it names one
    /// (`["sh", "-c", "..."]`). Its output is the run's error when it fails, so it should
    /// not print secrets.
    #[schemars(length(min = 1, max = MAX_COMMAND_ITEMS), inner(length(max = MAX_COMMAND_ITEM_LENGTH)))]
    pub command: Vec<String>,
}
