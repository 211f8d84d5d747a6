//! Schedules: at each cron tick, create the run object for it, keep the history bounded and
//! tell the user in the status what ran and what runs next.

use crate::crd::Kind;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::Store;
use kube::{Api, Resource, ResourceExt};
use tracing::{debug, info, warn};

use super::history::{RunEntry, delete_runs, runs_to_delete};
use super::run::{ANNOTATION_TICK, RunKind, condition, schedule_run_labels};
use super::{Context, FIELD_MANAGER, requeue_after_error};
use crate::crd::schedule::OperationStatus;
use crate::crd::{Backup, Check, DEFAULT_KEEP_JOBS, Prune, RunState, Schedule, ScheduleStatus};
use crate::cron::CronSchedule;
use crate::job::{Operation, run_name};
use crate::{Error, Result};

/// What to do about one operation's cron at `now`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TickDecision {
    /// The tick to create a run for now, if one is due.
    pub due: Option<jiff::Timestamp>,
    /// The next tick after now.
    pub next: Option<jiff::Timestamp>,
}

/// Decides whether a tick is due: the latest tick at or before `now` runs when it is newer
/// than the last one handled, not older than the Schedule itself, and within `window` of now.
/// Ticks missed while the operator was down therefore collapse into one run of the latest
/// tick, and only when it is recent; older ones are skipped rather than started all at once.
pub fn decide_tick(
    cron: &CronSchedule,
    now: jiff::Timestamp,
    last_handled: Option<jiff::Timestamp>,
    created: Option<jiff::Timestamp>,
    window: jiff::SignedDuration,
) -> TickDecision {
    let due = cron
        .latest_at_or_before(now)
        .filter(|tick| last_handled.is_none_or(|last| *tick > last))
        .filter(|tick| created.is_none_or(|created| *tick >= created))
        .filter(|tick| now.duration_since(*tick) <= window);
    TickDecision {
        due,
        next: cron.next_after(now),
    }
}

/// One operation's settings in a Schedule.
struct OperationSpec<'a> {
    op: Operation,
    schedule: &'a str,
    keep_jobs: Option<i32>,
}

fn operations(schedule: &Schedule) -> Vec<OperationSpec<'_>> {
    let spec = &schedule.spec;
    let mut ops = Vec::new();
    if let Some(backup) = &spec.backup {
        ops.push(OperationSpec {
            op: Operation::Backup,
            schedule: &backup.schedule,
            keep_jobs: backup.keep_jobs,
        });
    }
    if let Some(check) = &spec.check {
        ops.push(OperationSpec {
            op: Operation::Check,
            schedule: &check.schedule,
            keep_jobs: check.keep_jobs,
        });
    }
    if let Some(prune) = &spec.prune {
        ops.push(OperationSpec {
            op: Operation::Prune,
            schedule: &prune.schedule,
            keep_jobs: prune.keep_jobs,
        });
    }
    ops
}

fn operation_status(status: &mut ScheduleStatus, op: Operation) -> &mut Option<OperationStatus> {
    match op {
        Operation::Check => &mut status.check,
        Operation::Prune => &mut status.prune,
        _ => &mut status.backup,
    }
}

/// A run of this Schedule as the Schedule sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct OwnedRun {
    /// Name.
    pub name: String,
    /// creationTimestamp.
    pub created: Option<jiff::Timestamp>,
    /// State, if reported.
    pub state: Option<RunState>,
    /// When it ended.
    pub finished: Option<jiff::Timestamp>,
    /// The cron tick it was created for.
    pub tick: Option<jiff::Timestamp>,
}

impl OwnedRun {
    fn terminal(&self) -> bool {
        self.state.is_some_and(RunState::is_terminal)
    }
}

async fn listed_runs(
    ctx: &Context,
    op: Operation,
    namespace: &str,
    schedule: &str,
    uid: &str,
) -> Result<Vec<OwnedRun>> {
    let selector = format!(
        "{}={},{}={}",
        crate::job::LABEL_SCHEDULE,
        crate::job::label_value(schedule),
        crate::job::LABEL_OPERATION,
        op.as_str()
    );
    let params = ListParams::default().labels(&selector);
    let client = ctx.client.clone();
    Ok(match op {
        Operation::Backup => owned(
            Api::<Backup>::namespaced(client, namespace)
                .list(&params)
                .await?
                .items
                .iter(),
            uid,
        ),
        Operation::Check => owned(
            Api::<Check>::namespaced(client, namespace)
                .list(&params)
                .await?
                .items
                .iter(),
            uid,
        ),
        _ => owned(
            Api::<Prune>::namespaced(client, namespace)
                .list(&params)
                .await?
                .items
                .iter(),
            uid,
        ),
    })
}

fn owned_runs<K: RunKind>(store: &Store<K>, namespace: &str, uid: &str) -> Vec<OwnedRun> {
    let state = store.state();
    owned(
        state
            .iter()
            .map(|r| r.as_ref())
            .filter(|r| r.namespace().as_deref() == Some(namespace)),
        uid,
    )
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
        })
        .collect()
}

/// Moves `lastRun` and `lastRunName` to the newest run created for a tick, when the status
/// does not show it yet: the run object itself records that its tick was handled, so the
/// status need not be written at the tick.
pub fn catch_up_last_run(status: &mut OperationStatus, runs: &[OwnedRun]) {
    let newest = runs
        .iter()
        .filter_map(|r| Some((r.tick?, r)))
        .max_by(|a, b| (a.0, &a.1.name).cmp(&(b.0, &b.1.name)));
    if let Some((tick, run)) = newest
        && status.last_run.as_ref().is_none_or(|last| last.0 < tick)
    {
        status.last_run = Some(Time(tick));
        status.last_run_name = Some(run.name.clone());
    }
}

/// Whether `status` tells the user more than `previous` beyond the bookkeeping of ticks
/// (`lastRun`, `lastRunName`, `nextRun`). Those change at every tick, and are written with the
/// next change that matters (the run's outcome) instead of in a write of their own.
pub fn changed_beyond_ticks(previous: &ScheduleStatus, status: &ScheduleStatus) -> bool {
    fn without_ticks(status: &ScheduleStatus) -> ScheduleStatus {
        let mut status = status.clone();
        for op in [&mut status.backup, &mut status.check, &mut status.prune] {
            if let Some(op) = op.as_mut() {
                op.last_run = None;
                op.last_run_name = None;
                op.next_run = None;
            }
        }
        status
    }
    let presence = |s: &ScheduleStatus| {
        [
            s.backup.is_some(),
            s.check.is_some(),
            s.prune.is_some(),
            s.backup.as_ref().is_some_and(|o| o.next_run.is_some()),
            s.check.as_ref().is_some_and(|o| o.next_run.is_some()),
            s.prune.as_ref().is_some_and(|o| o.next_run.is_some()),
        ]
    };
    without_ticks(previous) != without_ticks(status) || presence(previous) != presence(status)
}

/// The last outcome of an operation from its runs: state of the newest finished run, and
/// when the newest Succeeded one ended (PartiallySucceeded is never counted as success).
/// Without finished runs in view (history deleted them) the previous values stay.
pub fn last_outcome(
    previous: &OperationStatus,
    runs: &[OwnedRun],
) -> (Option<String>, Option<Time>) {
    let newest = |filter: &dyn Fn(&OwnedRun) -> bool| {
        runs.iter()
            .filter(|r| filter(r))
            .max_by(|a, b| (a.created, &a.name).cmp(&(b.created, &b.name)))
    };
    let last_state = newest(&|r: &OwnedRun| r.terminal())
        .and_then(|r| r.state)
        .map(|s| format!("{s:?}"))
        .or_else(|| previous.last_state.clone());
    let last_success = newest(&|r: &OwnedRun| r.state == Some(RunState::Succeeded))
        .and_then(|r| r.finished)
        .map(Time)
        .or_else(|| previous.last_success.clone());
    (last_state, last_success)
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

fn new_run_meta(
    schedule: &Schedule,
    op: Operation,
    name: &str,
    tick: jiff::Timestamp,
) -> Result<ObjectMeta> {
    Ok(ObjectMeta {
        name: Some(name.to_string()),
        annotations: Some([(ANNOTATION_TICK.to_string(), tick.to_string())].into()),
        ..schedule_run_meta(schedule, op)?
    })
}

/// Creates the run object for a tick; an existing one (409) means the tick was already handled
/// by an earlier reconcile or another replica.
async fn create_run(
    ctx: &Context,
    schedule: &Schedule,
    op: Operation,
    name: &str,
    tick: jiff::Timestamp,
) -> Result<bool> {
    let namespace = schedule.namespace().unwrap_or_default();
    let metadata = new_run_meta(schedule, op, name, tick)?;
    let spec = &schedule.spec;
    let params = PostParams::default();
    let client = ctx.client.clone();
    let result = match op {
        Operation::Backup => {
            let run = Backup {
                metadata,
                spec: spec.backup_spec(),
                status: None,
            };
            Api::<Backup>::namespaced(client, &namespace)
                .create(&params, &run)
                .await
                .map(|_| ())
        }
        Operation::Check => {
            let run = Check {
                metadata,
                spec: spec.check_spec(),
                status: None,
            };
            Api::<Check>::namespaced(client, &namespace)
                .create(&params, &run)
                .await
                .map(|_| ())
        }
        Operation::Prune | Operation::Restore => {
            let run = Prune {
                metadata,
                spec: spec.prune_spec(),
                status: None,
            };
            Api::<Prune>::namespaced(client, &namespace)
                .create(&params, &run)
                .await
                .map(|_| ())
        }
    };
    match result {
        Ok(()) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(error) => Err(error.into()),
    }
}

async fn trim_history(
    ctx: &Context,
    schedule: &Schedule,
    op: Operation,
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
    let client = ctx.client.clone();
    match op {
        Operation::Backup => {
            delete_runs(&Api::<Backup>::namespaced(client, &namespace), &doomed).await
        }
        Operation::Check => {
            delete_runs(&Api::<Check>::namespaced(client, &namespace), &doomed).await
        }
        _ => delete_runs(&Api::<Prune>::namespaced(client, &namespace), &doomed).await,
    }
}

/// Reconciles one Schedule.
pub async fn reconcile(schedule: Arc<Schedule>, ctx: Arc<Context>) -> Result<Action> {
    ctx.metrics.reconciled(Kind::Schedule);
    let name = schedule.name_any();
    let namespace = schedule.namespace().unwrap_or_default();
    let uid = schedule.uid().unwrap_or_default();
    let now = jiff::Timestamp::now();
    let created = schedule.meta().creation_timestamp.as_ref().map(|t| t.0);
    let suspended = schedule.spec.suspend == Some(true);
    let generation = schedule.meta().generation;
    let previous = ctx
        .recent_schedules
        .freshest(&uid, schedule.status.as_ref())
        .unwrap_or_default();
    let mut status = ScheduleStatus {
        observed_generation: generation,
        ..ScheduleStatus::default()
    };
    let mut problems = Vec::new();
    let mut wake: Option<jiff::Timestamp> = None;
    let mut skipped = false;
    let mut ended_unrecorded = false;

    for spec in operations(&schedule) {
        let op = spec.op;
        let cron = match crate::cron::parse(spec.schedule) {
            Ok(cron) => cron,
            Err(error) => {
                problems.push(format!("spec.{op}.schedule: {error}"));
                continue;
            }
        };
        let mut previous_op = previous.clone();
        let mut op_status = operation_status(&mut previous_op, op)
            .clone()
            .unwrap_or_default();
        // At a tick, "is the previous run still going" must not be answered by a cache that
        // is still filling after a start: then ask the API server.
        let decide = |status: &OperationStatus| {
            decide_tick(
                &cron,
                now,
                status.last_run.as_ref().map(|t| t.0),
                created,
                ctx.settings.catch_up,
            )
        };
        let tick_now = decide(&op_status);
        let runs = if tick_now.due.is_some() && !suspended && !ctx.stores.is_ready() {
            listed_runs(&ctx, op, &namespace, &name, &uid).await?
        } else {
            match op {
                Operation::Backup => owned_runs(&ctx.stores.backups, &namespace, &uid),
                Operation::Check => owned_runs(&ctx.stores.checks, &namespace, &uid),
                _ => owned_runs(&ctx.stores.prunes, &namespace, &uid),
            }
        };
        // A run that ended since the status was written is news even when its state is the
        // same as the one before (failure after failure): the status then catches up on the
        // ticks too.
        let written_last_run = op_status.last_run.as_ref().map(|t| t.0);
        ended_unrecorded |= runs.iter().any(|r| {
            r.terminal()
                && r.tick
                    .is_some_and(|tick| written_last_run.is_none_or(|last| last < tick))
        });
        catch_up_last_run(&mut op_status, &runs);
        let decision = decide(&op_status);
        if let (Some(tick), false) = (decision.due, suspended) {
            let run = run_name(&name, op, tick);
            match runs.iter().find(|r| !r.terminal() && r.name != run) {
                Some(busy) => {
                    let note = format!(
                        "{} {} of the tick at {tick} not started: {} {} is still running",
                        op.kind(),
                        run,
                        op.kind(),
                        busy.name
                    );
                    info!(schedule = %name, %namespace, %note, "tick skipped");
                    publish(&ctx, &schedule, &format!("{}Skipped", op.kind()), &note).await;
                    // No run records this tick: only the status can.
                    skipped = true;
                }
                None => {
                    if create_run(&ctx, &schedule, op, &run, tick).await? {
                        info!(schedule = %name, %namespace, run = %run, %tick, "created run");
                    }
                    op_status.last_run_name = Some(run);
                }
            }
            op_status.last_run = Some(Time(tick));
        }
        let (last_state, last_success) = last_outcome(&op_status, &runs);
        op_status.last_state = last_state;
        op_status.last_success = last_success;
        op_status.next_run = if suspended {
            None
        } else {
            decision.next.map(Time)
        };
        if op == Operation::Backup {
            let created = schedule
                .meta()
                .creation_timestamp
                .as_ref()
                .map_or(0, |t| t.0.as_second());
            ctx.metrics.schedule_backup(
                &namespace,
                &name,
                created,
                op_status.last_success.as_ref().map(|t| t.0.as_second()),
            );
        }
        let keep = usize::try_from(spec.keep_jobs.unwrap_or(DEFAULT_KEEP_JOBS)).unwrap_or(0);
        trim_history(&ctx, &schedule, op, &runs, keep).await?;
        if !suspended {
            wake = match (wake, decision.next) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        *operation_status(&mut status, op) = Some(op_status);
    }

    let (ready, reason, message) = if !problems.is_empty() {
        (false, "InvalidSchedule", problems.join("; "))
    } else if suspended {
        (
            true,
            "Suspended",
            "suspended: no runs are created".to_string(),
        )
    } else {
        (true, "Scheduled", String::new())
    };
    status.conditions = vec![condition(
        &previous.conditions,
        "Ready",
        ready,
        reason,
        &message,
        generation,
        super::now_seconds(),
    )];
    if skipped || ended_unrecorded || changed_beyond_ticks(&previous, &status) {
        let patch = serde_json::json!({
            "apiVersion": Schedule::api_version(&()),
            "kind": Schedule::kind(&()),
            "status": status,
        });
        Api::<Schedule>::namespaced(ctx.client.clone(), &namespace)
            .patch_status(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await?;
        ctx.recent_schedules.wrote(&uid, status);
    } else {
        debug!(schedule = %name, %namespace, "status unchanged but for the ticks");
    }
    if !problems.is_empty() {
        warn!(schedule = %name, %namespace, problems = %problems.join("; "), "invalid schedule");
        // One Event when the Schedule becomes invalid (or invalid in another way), not one
        // per reconcile.
        let already = previous
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.reason == reason && c.message == message);
        if !already {
            publish(&ctx, &schedule, "InvalidSchedule", &message).await;
        }
    }
    Ok(match wake {
        // A little past the tick, so that the tick is at or before "now" when we wake.
        Some(next) => Action::requeue(
            Duration::try_from(next.duration_since(now)).unwrap_or_default()
                + Duration::from_millis(50),
        ),
        None => Action::await_change(),
    })
}

async fn publish(ctx: &Context, schedule: &Schedule, reason: &str, note: &str) {
    let event = Event {
        type_: EventType::Warning,
        reason: reason.into(),
        note: Some(note.into()),
        action: "Schedule".into(),
        secondary: None,
    };
    ctx.publish(&event, &schedule.object_ref(&())).await;
}

/// Retry policy of the Schedule controller.
pub fn error_policy(schedule: Arc<Schedule>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failed(Kind::Schedule, error.category());
    warn!(schedule = %schedule.name_any(), %error, "reconcile failed");
    requeue_after_error(error)
}

#[cfg(test)]
mod tests;
