//! `Check`: one `restic check` run.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Backend, MAX_URL_LENGTH, RunStatus};

/// One restic check of a repository
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "backup.appuio.ch",
    version = "v1alpha1",
    kind = "Check",
    namespaced,
    status = "RunStatus",
    category = "baas",
    derive = "PartialEq",
    derive = "Default",
    doc = "One restic check of a repository",
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
pub struct CheckSpec {
    /// The repository this run works on.
    pub backend: Backend,
    /// URL of a Prometheus Pushgateway that receives the metrics of this run.
    #[serde(default, rename = "promURL", skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_URL_LENGTH))]
    pub prom_url: Option<String>,
}
