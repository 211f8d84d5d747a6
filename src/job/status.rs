//! Reading a Job as Kubernetes reports it: its conditions and its pods. The reconciler, the
//! start grace and the agent's lock rules all ask the same questions.

use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

/// The Job's condition of `type_` when it is True.
pub fn job_condition<'a>(job: &'a Job, type_: &str) -> Option<&'a JobCondition> {
    condition(job.status.as_ref(), type_)
}

/// The condition of `type_` of a Job's status when it is True.
fn condition<'a>(status: Option<&'a JobStatus>, type_: &str) -> Option<&'a JobCondition> {
    status?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
}

/// Whether the Job has ended: its `Complete` or `Failed` condition is True.
pub fn job_ended(job: &Job) -> bool {
    status_ended(job.status.as_ref())
}

/// Whether a Job with this status has ended, for callers that keep only the status.
pub fn status_ended(status: Option<&JobStatus>) -> bool {
    condition(status, "Complete").is_some() || condition(status, "Failed").is_some()
}

/// Whether `pod` was created by the Job named `job` (the label the Job controller sets; the
/// short form is what Kubernetes before 1.27 set).
pub fn is_pod_of(pod: &Pod, job: &str) -> bool {
    let labels = pod.labels();
    labels
        .get("batch.kubernetes.io/job-name")
        .map(String::as_str)
        == Some(job)
        || labels.get("job-name").map(String::as_str) == Some(job)
}
