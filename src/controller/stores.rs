//! The caches the controllers share: run objects and Jobs, kept once for every reader, and
//! stripped of what no reconciler reads.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{Job, JobStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use kube::runtime::reflector::Store;

use super::kinds::RunKind;
use crate::crd::{Backup, Check, Prune, Restore, Verify};
pub use finished::{ANNOTATION_TICK, FinishedRun, FinishedRuns};
#[cfg(test)]
pub use live_jobs::trusted_long_ago;
pub use live_jobs::{LiveJob, LiveJobs};

mod finished;
mod live_jobs;

/// The caches of run objects kept by the run controllers, read by the Schedule reconciler
/// (history, last state) and for repository exclusivity without extra API calls.
#[derive(Clone)]
pub struct Stores {
    /// Every Backup of the cluster but the finished ones of Schedules (in `finished`).
    pub backups: Store<Backup>,
    /// Every Check.
    pub checks: Store<Check>,
    /// Every Prune.
    pub prunes: Store<Prune>,
    /// Every Restore.
    pub restores: Store<Restore>,
    /// Every Verify.
    pub verifies: Store<Verify>,
    /// Every Job the operator made, without their specs.
    pub jobs: Store<JobState>,
    /// The finished runs of Schedules, which the run caches above do not hold.
    pub finished: FinishedRuns,
    /// The unfinished Jobs of `jobs` by repository, with the Jobs this process created
    /// before the watch shows them.
    pub live_jobs: LiveJobs,
    /// Set once the Backup, Check, Prune, Verify and Job caches hold the cluster's state; until then
    /// the reconcilers ask the API server instead.
    pub ready: Arc<std::sync::atomic::AtomicBool>,
    /// The webhook's caches of PVCs and pods, for planning backups without API calls.
    pub cluster: Option<Arc<crate::lookup::ReflectorLookups>>,
}

impl Stores {
    /// Empty stores that never fill, for tests.
    pub fn empty() -> Stores {
        Stores {
            backups: kube::runtime::reflector::store().0,
            checks: kube::runtime::reflector::store().0,
            prunes: kube::runtime::reflector::store().0,
            restores: kube::runtime::reflector::store().0,
            verifies: kube::runtime::reflector::store().0,
            jobs: kube::runtime::reflector::store().0,
            finished: FinishedRuns::default(),
            live_jobs: LiveJobs::default(),
            ready: Arc::default(),
            cluster: None,
        }
    }

    /// The Jobs of the run with `uid` in namespace `namespace`, from the cache; `None` while the
    /// cache is not filled.
    pub fn jobs_of_run(&self, namespace: &str, uid: &str) -> Option<Vec<Job>> {
        if !self.is_ready() {
            return None;
        }
        let mut jobs: Vec<Job> = self
            .jobs
            .state()
            .iter()
            .filter(|job| job.metadata.namespace.as_deref() == Some(namespace))
            .filter(|job| job.owner_references().iter().any(|o| o.uid == uid))
            .map(|job| job.to_job())
            .collect();
        jobs.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        Some(jobs)
    }

    /// The uids of the runs that own a Job: they hold their repository even before a status
    /// names their Jobs.
    pub fn runs_with_jobs(&self) -> HashSet<String> {
        self.jobs
            .state()
            .iter()
            .flat_map(|job| job.owner_references().iter().map(|o| o.uid.clone()))
            .collect()
    }

    /// Whether the run caches can be trusted.
    pub fn is_ready(&self) -> bool {
        self.ready.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Marks the stores ready once the Schedule-owned caches and the Job cache are. It polls with a
    /// timeout instead of awaiting once: a store's readiness future wakes only its latest
    /// poller, and the controllers poll it too.
    pub(super) async fn watch_readiness(self) {
        async fn ready<K>(store: &Store<K>)
        where
            K: kube::Resource<DynamicType = ()> + Clone + 'static,
        {
            while tokio::time::timeout(Duration::from_millis(250), store.wait_until_ready())
                .await
                .is_err()
            {}
        }
        ready(&self.backups).await;
        ready(&self.checks).await;
        ready(&self.prunes).await;
        ready(&self.verifies).await;
        ready(&self.jobs).await;
        self.ready.store(true, std::sync::atomic::Ordering::Release);
        tracing::debug!("run caches are ready");
    }
}

/// The last-applied annotation of `kubectl apply` repeats the whole object.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops what no reconciler reads and what often outweighs the rest of an object: the
/// managed fields and the last-applied copy.
pub fn strip_meta(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
}

/// A Job as the run reconcilers read it: metadata and status. The spec, pod template included,
/// is most of a Job and is never read back; leaving it out of the type keeps it out of the
/// cache, where a `Job` takes close to 3 kB before any of its strings. It is a `batch/v1` Job
/// to the API: `kube::Resource` is inherited from `Job`.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize, kube::Resource)]
#[resource(inherit = "Job")]
pub struct JobState {
    /// The Job's metadata.
    pub metadata: ObjectMeta,
    /// The Job's status, once the job controller wrote one.
    #[serde(default)]
    pub status: Option<JobStatus>,
}

impl JobState {
    /// The Job, without its spec.
    pub fn to_job(&self) -> Job {
        Job {
            metadata: self.metadata.clone(),
            spec: None,
            status: self.status.clone(),
        }
    }
}

impl From<Job> for JobState {
    fn from(job: Job) -> Self {
        JobState {
            metadata: job.metadata,
            status: job.status,
        }
    }
}

/// A run as the caches keep it. A finished run is only read for its state and times (the
/// Schedule's history and last outcome; its own reconcile stops at the state), so its spec
/// and the details of its status are dropped: finished runs are most of the cache, up to
/// `keepJobs` of them per Schedule and operation.
pub fn strip_run<K: RunKind>(run: &mut K) {
    strip_meta(run.meta_mut());
    run.forget_if_finished();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup_in_state(state: &str) -> Backup {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "backup.appuio.ch/v1alpha1",
            "kind": "Backup",
            "metadata": {
                "name": "nightly-backup-202611260300", "namespace": "team", "uid": "bk-uid",
                "creationTimestamp": "2026-11-26T03:00:00Z",
                "labels": {"backup.appuio.ch/schedule": "nightly"},
                "annotations": {"backup.appuio.ch/tick": "2026-11-26T03:00:00Z", LAST_APPLIED: "{}"},
                "managedFields": [{"manager": "baas"}],
                "ownerReferences": [{"apiVersion": "backup.appuio.ch/v1alpha1", "kind": "Schedule",
                                     "name": "nightly", "uid": "sched-uid", "controller": true}]
            },
            "spec": {"backend": {"s3": {"endpoint": "http://127.0.0.1:9900", "bucket": "team",
                                        "accessKeyIDSecretRef": {"name": "s3", "key": "id"},
                                        "secretAccessKeySecretRef": {"name": "s3", "key": "secret"}}},
                     "promURL": "http://127.0.0.1:19091"},
            "status": {"state": state, "startedAt": "2026-11-26T03:00:01Z",
                       "finishedAt": "2026-11-26T03:00:09Z", "snapshotID": "0123abcd",
                       "jobs": ["nightly-backup-202611260300-backup"], "message": "done",
                       "summary": {"filesNew": 3}, "errors": ["x: permission denied"]}
        }))
        .expect("test backup")
    }

    #[test]
    fn finished_runs_are_cached_as_their_outline() {
        let mut finished = backup_in_state("Succeeded");
        strip_run(&mut finished);
        let status = finished.status.as_ref().expect("status");
        assert_eq!(status.state, Some(crate::crd::RunState::Succeeded));
        assert!(status.started_at.is_some() && status.finished_at.is_some());
        assert!(status.jobs.is_empty() && status.summary.is_none() && status.errors.is_empty());
        assert!(status.message.is_none() && status.snapshot_id.is_none());
        assert_eq!(finished.spec, Default::default());
        // What the Schedule reads of its runs stays.
        assert_eq!(finished.owner_references()[0].uid, "sched-uid");
        assert!(finished.annotations().contains_key("backup.appuio.ch/tick"));
        assert!(finished.labels().contains_key("backup.appuio.ch/schedule"));
        // What nobody reads goes.
        assert!(!finished.annotations().contains_key(LAST_APPLIED));
        assert!(finished.metadata.managed_fields.is_none());
    }

    #[test]
    fn running_runs_are_cached_whole() {
        let mut running = backup_in_state("Running");
        strip_run(&mut running);
        let status = running.status.as_ref().expect("status");
        assert_eq!(status.jobs, ["nightly-backup-202611260300-backup"]);
        assert_eq!(running.spec.backend.s3.bucket, "team");
    }

    #[test]
    fn cached_jobs_keep_metadata_and_status_but_not_the_spec() {
        let job: JobState = serde_json::from_value(serde_json::json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "j", "namespace": "team"},
            "spec": {"template": {"spec": {"containers": [{"name": "agent", "image": "baas"}]}}},
            "status": {"active": 1}
        }))
        .expect("job");
        assert_eq!(job.status.as_ref().and_then(|s| s.active), Some(1));
        let back = job.to_job();
        assert!(back.spec.is_none());
        assert_eq!(back.metadata.name.as_deref(), Some("j"));
        assert_eq!(
            <JobState as kube::Resource>::url_path(&(), Some("team")),
            <Job as kube::Resource>::url_path(&(), Some("team")),
        );
        assert_eq!(<JobState as kube::Resource>::api_version(&()), "batch/v1");
    }
}
