//! Jobs whose pods the API server refuses. Pod Security, a ResourceQuota or a missing
//! ServiceAccount stop the Job controller from creating the pod at all: the Job then has no
//! pod, no condition and no status change, only `FailedCreate` Events, and would sit until its
//! deadline while blocking every later tick of its Schedule. After the start grace such a Job
//! fails its part of the run, with the API server's own words as the reason.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::ListParams;
use kube::{Api, ResourceExt};

use crate::Result;
use crate::controller::context::Context;
use crate::job::status::{is_pod_of, job_ended};

/// Whether `job` is old enough, unfinished and without a single pod.
pub fn lacks_pods(
    job: &Job,
    pods: &[Pod],
    now: jiff::Timestamp,
    grace: jiff::SignedDuration,
) -> bool {
    let name = job.name_any();
    let old = job
        .metadata
        .creation_timestamp
        .as_ref()
        .is_some_and(|t| now.duration_since(t.0) > grace);
    let has_pod = pods.iter().any(|p| is_pod_of(p, &name));
    old && !job_ended(job) && !has_pod && job.metadata.deletion_timestamp.is_none()
}

/// Job name → why its pod could not be created, for each Job of `jobs` that has had no pod
/// for longer than the start grace. One Event list per such Job, only once it is that late.
pub async fn refused_jobs(
    ctx: &Context,
    namespace: &str,
    jobs: &[Job],
    pods: &[Pod],
    now: jiff::Timestamp,
) -> Result<BTreeMap<String, String>> {
    let grace = ctx.settings.stuck_after;
    let mut refused = BTreeMap::new();
    let events: Api<Event> = Api::namespaced(ctx.client.clone(), namespace);
    for job in jobs.iter().filter(|j| lacks_pods(j, pods, now, grace)) {
        let name = job.name_any();
        let selector =
            format!("involvedObject.kind=Job,involvedObject.name={name},reason=FailedCreate");
        let newest = events
            .list(&ListParams::default().fields(&selector))
            .await?
            .items
            .into_iter()
            .max_by_key(|e| e.last_timestamp.as_ref().map(|t| t.0))
            .and_then(|e| e.message);
        let why = newest.map_or_else(
            || format!("no pod was created within {grace:#}"),
            |message| message.chars().take(500).collect(),
        );
        refused.insert(name, why);
    }
    Ok(refused)
}
