//! `Prune`: one `restic forget --prune` run.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Backend, MAX_URL_LENGTH, Retention, RunStatus};

/// One restic forget --prune of a repository with a retention policy
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "backup.appuio.ch",
    version = "v1alpha1",
    kind = "Prune",
    namespaced,
    status = "RunStatus",
    category = "baas",
    derive = "PartialEq",
    derive = "Default",
    doc = "One restic forget --prune of a repository with a retention policy",
    printcolumn(
        name = "State",
        type_ = "string",
        json_path = ".status.state",
        description = "Pending, Running, Succeeded, PartiallySucceeded or Failed"
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
pub struct PruneSpec {
    /// The repository this run works on.
    pub backend: Backend,
    /// Which snapshots to keep. Default `{keepLast: 5, keepDaily: 14}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
    /// URL of a Prometheus Pushgateway that receives the metrics of this run.
    #[serde(default, rename = "promURL", skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_URL_LENGTH))]
    pub prom_url: Option<String>,
}
