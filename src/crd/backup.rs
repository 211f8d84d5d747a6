//! `Backup`: one backup run.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Backend, MAX_URL_LENGTH, RunStatus};

/// One backup run: every eligible PVC and backup command of the namespace, into one repository
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "backup.appuio.ch",
    version = "v1alpha1",
    kind = "Backup",
    namespaced,
    status = "RunStatus",
    shortname = "bk",
    category = "baas",
    derive = "PartialEq",
    derive = "Default",
    doc = "One backup run: every eligible PVC and backup command of the namespace, into one repository",
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
        description = "Snapshot written by this backup"
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
pub struct BackupSpec {
    /// The repository this run works on.
    pub backend: Backend,
    /// URL of a Prometheus Pushgateway that receives the metrics of this run.
    #[serde(default, rename = "promURL", skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_URL_LENGTH))]
    pub prom_url: Option<String>,
}
