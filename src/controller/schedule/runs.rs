//! The runs of a Schedule: which kinds it creates, how it finds the ones it owns, creates one
//! for a tick, and deletes those beyond its history. One trait says, for each scheduled kind,
//! where its operation lives in the Schedule, so no `match` folds one operation into another.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{ListParams, PostParams};
use kube::runtime::reflector::Store;
use kube::{Api, Resource, ResourceExt};

use super::tick::OwnedRun;
use crate::controller::context::Context;
use crate::controller::history::{RunEntry, delete_runs, runs_to_delete};
use crate::controller::kinds::RunKind;
use crate::controller::run::{ANNOTATION_TICK, schedule_run_labels};
use crate::controller::stores::Stores;
use crate::crd::schedule::OperationStatus;
use crate::crd::{Backup, Check, Operation, Prune, Schedule, ScheduleStatus, Verify};
use crate::{Error, Result};

/// One operation's settings in a Schedule.
pub struct OperationSpec<'a> {
    /// Its cron expression.
    pub schedule: &'a str,
    /// How many finished runs to keep.
    pub keep_jobs: Option<i32>,
}

/// A run kind a Schedule creates on its cron ticks.
pub trait ScheduledKind: RunKind {
    /// The operation's settings, when the Schedule has the operation.
    fn settings(schedule: &Schedule) -> Option<OperationSpec<'_>>;
    /// The operation's part of the Schedule's status.
    fn status_of(status: &mut ScheduleStatus) -> &mut Option<OperationStatus>;
    /// The cache of this kind.
    fn cache(stores: &Stores) -> &Store<Self>;
    /// The run of `schedule` with `metadata`, for one tick.
    fn for_tick(schedule: &Schedule, metadata: ObjectMeta) -> Self;
}

impl ScheduledKind for Backup {
    fn settings(schedule: &Schedule) -> Option<OperationSpec<'_>> {
        let backup = schedule.spec.backup.as_ref()?;
        Some(OperationSpec {
            schedule: &backup.schedule,
            keep_jobs: backup.keep_jobs,
        })
    }
    fn status_of(status: &mut ScheduleStatus) -> &mut Option<OperationStatus> {
        &mut status.backup
    }
    fn cache(stores: &Stores) -> &Store<Self> {
        &stores.backups
    }
    fn for_tick(schedule: &Schedule, metadata: ObjectMeta) -> Self {
        Backup {
            metadata,
            spec: schedule.spec.backup_spec(),
            status: None,
        }
    }
}

impl ScheduledKind for Check {
    fn settings(schedule: &Schedule) -> Option<OperationSpec<'_>> {
        let check = schedule.spec.check.as_ref()?;
        Some(OperationSpec {
            schedule: &check.schedule,
            keep_jobs: check.keep_jobs,
        })
    }
    fn status_of(status: &mut ScheduleStatus) -> &mut Option<OperationStatus> {
        &mut status.check
    }
    fn cache(stores: &Stores) -> &Store<Self> {
        &stores.checks
    }
    fn for_tick(schedule: &Schedule, metadata: ObjectMeta) -> Self {
        Check {
            metadata,
            spec: schedule.spec.check_spec(),
            status: None,
        }
    }
}

impl ScheduledKind for Prune {
    fn settings(schedule: &Schedule) -> Option<OperationSpec<'_>> {
        let prune = schedule.spec.prune.as_ref()?;
        Some(OperationSpec {
            schedule: &prune.schedule,
            keep_jobs: prune.keep_jobs,
        })
    }
    fn status_of(status: &mut ScheduleStatus) -> &mut Option<OperationStatus> {
        &mut status.prune
    }
    fn cache(stores: &Stores) -> &Store<Self> {
        &stores.prunes
    }
    fn for_tick(schedule: &Schedule, metadata: ObjectMeta) -> Self {
        Prune {
            metadata,
            spec: schedule.spec.prune_spec(),
            status: None,
        }
    }
}

impl ScheduledKind for Verify {
    fn settings(schedule: &Schedule) -> Option<OperationSpec<'_>> {
        let verify = schedule.spec.verify.as_ref()?;
        Some(OperationSpec {
            schedule: &verify.schedule,
            keep_jobs: verify.keep_jobs,
        })
    }
    fn status_of(status: &mut ScheduleStatus) -> &mut Option<OperationStatus> {
        &mut status.verify
    }
    fn cache(stores: &Stores) -> &Store<Self> {
        &stores.verifies
    }
    fn for_tick(schedule: &Schedule, metadata: ObjectMeta) -> Self {
        Verify {
            metadata,
            spec: schedule.spec.verify_spec(),
            status: None,
        }
    }
}

/// The runs of this kind that the Schedule with `uid` owns, listed from the API server.
pub async fn listed_runs<K: ScheduledKind>(
    ctx: &Context,
    namespace: &str,
    schedule: &str,
    uid: &str,
) -> Result<Vec<OwnedRun>> {
    let selector = format!(
        "{}={},{}={}",
        crate::job::LABEL_SCHEDULE,
        crate::job::label_value(schedule),
        crate::job::LABEL_OPERATION,
        K::OP.as_str()
    );
    let params = ListParams::default().labels(&selector);
    let runs = Api::<K>::namespaced(ctx.client.clone(), namespace)
        .list(&params)
        .await?
        .items;
    Ok(owned(runs.iter(), uid))
}

/// The runs of this kind that the Schedule with `uid` owns, from the caches: the finished
/// ones from `stores.finished`, the others from the cache of the kind. A run that this process
/// has just ended may be in both, and counts as ended.
pub fn owned_runs<K: ScheduledKind>(ctx: &Context, namespace: &str, uid: &str) -> Vec<OwnedRun> {
    let finished = ctx.stores.finished.of_schedule(K::OP, uid);
    let state = K::cache(&ctx.stores).state();
    let mut runs = owned(
        state
            .iter()
            .map(|r| r.as_ref())
            .filter(|r| r.namespace().as_deref() == Some(namespace))
            .filter(|r| {
                !finished
                    .iter()
                    .any(|f| r.meta().name.as_deref() == Some(&*f.name))
            }),
        uid,
    );
    runs.extend(finished.into_iter().map(|f| OwnedRun {
        name: f.name.into(),
        created: f.created,
        state: Some(f.state),
        finished: f.finished,
        tick: f.tick,
        verified_snapshot: f.verified_snapshot,
    }));
    runs
}

fn owned<'a, K: RunKind>(runs: impl Iterator<Item = &'a K>, uid: &str) -> Vec<OwnedRun> {
    runs.filter(|r| r.meta().deletion_timestamp.is_none())
        .filter(|r| r.owner_references().iter().any(|o| o.uid == uid))
        .map(|r| OwnedRun {
            name: r.name_any(),
            created: r.meta().creation_timestamp.as_ref().map(|t| t.0),
            state: r.run_status().and_then(|s| s.state),
            finished: r
                .run_status()
                .and_then(|s| s.finished_at.as_ref())
                .map(|t| t.0),
            tick: r
                .annotations()
                .get(ANNOTATION_TICK)
                .and_then(|t| t.parse().ok()),
            verified_snapshot: r
                .run_status()
                .and_then(|s| s.newest_verified_snapshot.as_ref())
                .map(|t| t.0),
        })
        .collect()
}

/// The metadata every run a Schedule starts carries, scheduled or started by hand: the
/// namespace, the controller owner reference to the Schedule (history, and "never two backups
/// at once", count the run) and the Schedule's run labels (which repository it works on).
pub fn schedule_run_meta(schedule: &Schedule, op: Operation) -> Result<ObjectMeta> {
    let owner = schedule
        .controller_owner_ref(&())
        .ok_or_else(|| Error::InvalidSpec("Schedule has no uid yet".into()))?;
    Ok(ObjectMeta {
        namespace: schedule.namespace(),
        labels: Some(schedule_run_labels(
            &schedule.name_any(),
            op,
            &schedule.spec.backend,
        )),
        owner_references: Some(vec![owner]),
        ..ObjectMeta::default()
    })
}

fn new_run_meta<K: ScheduledKind>(
    schedule: &Schedule,
    name: &str,
    tick: jiff::Timestamp,
) -> Result<ObjectMeta> {
    Ok(ObjectMeta {
        name: Some(name.to_string()),
        annotations: Some([(ANNOTATION_TICK.to_string(), tick.to_string())].into()),
        ..schedule_run_meta(schedule, K::OP)?
    })
}

/// Creates the run object for a tick; an existing one (409) means the tick was already handled
/// by an earlier reconcile or another replica.
pub async fn create_run<K: ScheduledKind>(
    ctx: &Context,
    schedule: &Schedule,
    name: &str,
    tick: jiff::Timestamp,
) -> Result<bool> {
    let namespace = schedule.namespace().unwrap_or_default();
    let run = K::for_tick(schedule, new_run_meta::<K>(schedule, name, tick)?);
    match Api::<K>::namespaced(ctx.client.clone(), &namespace)
        .create(&PostParams::default(), &run)
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(error) => Err(error.into()),
    }
}

/// Deletes the finished runs beyond the newest `keep`.
pub async fn trim_history<K: ScheduledKind>(
    ctx: &Context,
    schedule: &Schedule,
    runs: &[OwnedRun],
    keep: usize,
) -> Result<()> {
    let entries: Vec<RunEntry> = runs
        .iter()
        .map(|r| RunEntry {
            name: r.name.clone(),
            created: r.created,
            terminal: r.terminal(),
        })
        .collect();
    let doomed = runs_to_delete(&entries, keep);
    if doomed.is_empty() {
        return Ok(());
    }
    let namespace = schedule.namespace().unwrap_or_default();
    delete_runs(
        &Api::<K>::namespaced(ctx.client.clone(), &namespace),
        &doomed,
    )
    .await
}
