//! Schedules: at each cron tick, create the run object for it, keep the history bounded and
//! tell the user in the status what ran and what runs next.
//!
//! [`reconcile`] goes through the scheduled operations one after the other
//! ([`Pass::operation`], generic over the run kind, see [`runs`]), then writes the status when
//! it tells more than the ticks. The decisions themselves are in [`tick`].

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use tracing::{debug, info, warn};

use super::context::{Context, FIELD_MANAGER, now_seconds, requeue_after_error};
use super::run::condition;
use crate::crd::schedule::DEFAULT_VERIFY_MAX_AGE;
use crate::crd::{
    Backup, Check, DEFAULT_KEEP_JOBS, Kind, Operation, Prune, Schedule, ScheduleStatus, Verify,
};
use crate::job::run_name;
use crate::{Error, Result};
pub use runs::schedule_run_meta;
use runs::{ScheduledKind, create_run, listed_runs, owned_runs, trim_history};
pub use tick::{
    OwnedRun, TickDecision, catch_up_last_run, changed_beyond_ticks, decide_tick, last_outcome,
    last_verified,
};

/// Reconciles one Schedule.
pub async fn reconcile(schedule: Arc<Schedule>, ctx: Arc<Context>) -> Result<Action> {
    ctx.metrics.reconciled(Kind::Schedule);
    let uid = schedule.uid().unwrap_or_default();
    let generation = schedule.meta().generation;
    let previous = ctx
        .recent_schedules
        .freshest(&uid, schedule.status.as_ref())
        .unwrap_or_default();
    let mut pass = Pass {
        ctx: &ctx,
        schedule: &schedule,
        name: schedule.name_any(),
        namespace: schedule.namespace().unwrap_or_default(),
        uid,
        now: jiff::Timestamp::now(),
        created: schedule.meta().creation_timestamp.as_ref().map(|t| t.0),
        suspended: schedule.spec.suspend == Some(true),
        status: ScheduleStatus {
            observed_generation: generation,
            ..ScheduleStatus::default()
        },
        previous,
        problems: Vec::new(),
        wake: None,
        skipped: false,
        ended_unrecorded: false,
    };
    // In the order of the spec, which is that of `Operation::SCHEDULED`.
    pass.operation::<Backup>().await?;
    pass.operation::<Check>().await?;
    pass.operation::<Prune>().await?;
    pass.operation::<Verify>().await?;
    pass.finish(generation).await
}

/// One reconcile of one Schedule: what it reads, and what its operations have found so far.
struct Pass<'a> {
    ctx: &'a Context,
    schedule: &'a Schedule,
    name: String,
    namespace: String,
    uid: String,
    now: jiff::Timestamp,
    created: Option<jiff::Timestamp>,
    suspended: bool,
    /// The status last written: the cache's, or this process's while the cache lags.
    previous: ScheduleStatus,
    /// The status being made.
    status: ScheduleStatus,
    /// What is wrong with the spec, by field.
    problems: Vec<String>,
    /// The next tick of any operation.
    wake: Option<jiff::Timestamp>,
    /// A tick was skipped: only the status can record it.
    skipped: bool,
    /// A run ended that the status does not show yet.
    ended_unrecorded: bool,
}

impl Pass<'_> {
    /// Handles one operation of the Schedule, if it has it: creates the run of a due tick,
    /// trims the history, and fills the operation's status.
    async fn operation<K: ScheduledKind>(&mut self) -> Result<()> {
        let Some(spec) = K::settings(self.schedule) else {
            return Ok(());
        };
        let op = K::OP;
        let (ctx, schedule, now, suspended) = (self.ctx, self.schedule, self.now, self.suspended);
        let (name, namespace) = (self.name.as_str(), self.namespace.as_str());
        let cron = match crate::cron::parse(spec.schedule) {
            Ok(cron) => cron,
            Err(error) => {
                self.problems.push(format!("spec.{op}.schedule: {error}"));
                return Ok(());
            }
        };
        let mut previous_op = self.previous.clone();
        let mut op_status = K::status_of(&mut previous_op).clone().unwrap_or_default();
        // At a tick, "is the previous run still going" must not be answered by a cache that
        // is still filling after a start: then ask the API server.
        let decide = |status: &crate::crd::schedule::OperationStatus| {
            decide_tick(
                &cron,
                now,
                status.last_run.as_ref().map(|t| t.0),
                self.created,
                ctx.settings.catch_up,
            )
        };
        let tick_now = decide(&op_status);
        let runs = if tick_now.due.is_some() && !suspended && !ctx.stores.is_ready() {
            listed_runs::<K>(ctx, namespace, name, &self.uid).await?
        } else {
            owned_runs::<K>(ctx, namespace, &self.uid)
        };
        // A run that ended since the status was written is news even when its state is the
        // same as the one before (failure after failure): the status then catches up on the
        // ticks too.
        let written_last_run = op_status.last_run.as_ref().map(|t| t.0);
        self.ended_unrecorded |= runs.iter().any(|r| {
            r.terminal()
                && r.tick
                    .is_some_and(|tick| written_last_run.is_none_or(|last| last < tick))
        });
        catch_up_last_run(&mut op_status, &runs);
        let decision = decide(&op_status);
        if let (Some(tick), false) = (decision.due, suspended) {
            let run = run_name(name, op, tick);
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
                    publish(ctx, schedule, &format!("{}Skipped", op.kind()), &note).await;
                    // No run records this tick: only the status can.
                    self.skipped = true;
                }
                None => {
                    if create_run::<K>(ctx, schedule, &run, tick).await? {
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
        let created = self.created.map_or(0, |t| t.as_second());
        if op == Operation::Backup {
            ctx.metrics.schedule_backup(
                namespace,
                name,
                created,
                op_status.last_success.as_ref().map(|t| t.0.as_second()),
            );
        }
        if op == Operation::Verify {
            op_status.last_verified_snapshot = last_verified(&op_status, &runs);
            let max_age = schedule
                .spec
                .verify
                .as_ref()
                .and_then(|v| v.max_age.as_deref())
                .unwrap_or(DEFAULT_VERIFY_MAX_AGE);
            match crate::duration::parse(max_age) {
                Ok(bound) => ctx.metrics.schedule_verify(
                    namespace,
                    name,
                    created,
                    i64::try_from(bound.as_secs()).unwrap_or(i64::MAX),
                    op_status
                        .last_verified_snapshot
                        .as_ref()
                        .map(|t| t.0.as_second()),
                ),
                Err(error) => self.problems.push(format!("spec.verify.maxAge: {error}")),
            }
        }
        let keep = usize::try_from(spec.keep_jobs.unwrap_or(DEFAULT_KEEP_JOBS)).unwrap_or(0);
        trim_history::<K>(ctx, schedule, &runs, keep).await?;
        if !suspended {
            self.wake = match (self.wake, decision.next) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        *K::status_of(&mut self.status) = Some(op_status);
        Ok(())
    }

    /// Sets the Ready condition, writes the status when it tells more than the ticks, reports
    /// an invalid spec once, and says when to look again.
    async fn finish(mut self, generation: Option<i64>) -> Result<Action> {
        let (ctx, schedule, previous) = (self.ctx, self.schedule, &self.previous);
        let (name, namespace) = (&self.name, &self.namespace);
        let problems = &self.problems;
        let (ready, reason, message) = if !problems.is_empty() {
            (false, "InvalidSchedule", problems.join("; "))
        } else if self.suspended {
            (
                true,
                "Suspended",
                "suspended: no runs are created".to_string(),
            )
        } else {
            (true, "Scheduled", String::new())
        };
        self.status.conditions = vec![condition(
            &previous.conditions,
            "Ready",
            ready,
            reason,
            &message,
            generation,
            now_seconds(),
        )];
        let status = self.status;
        if self.skipped || self.ended_unrecorded || changed_beyond_ticks(previous, &status) {
            let patch = serde_json::json!({
                "apiVersion": Schedule::api_version(&()),
                "kind": Schedule::kind(&()),
                "status": status,
            });
            Api::<Schedule>::namespaced(ctx.client.clone(), namespace)
                .patch_status(
                    name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&patch),
                )
                .await?;
            ctx.recent_schedules.wrote(&self.uid, status);
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
                publish(ctx, schedule, "InvalidSchedule", &message).await;
            }
        }
        Ok(match self.wake {
            // A little past the tick, so that the tick is at or before "now" when we wake.
            Some(next) => Action::requeue(
                Duration::try_from(next.duration_since(self.now)).unwrap_or_default()
                    + Duration::from_millis(50),
            ),
            None => Action::await_change(),
        })
    }
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

mod runs;
#[cfg(test)]
mod tests;
mod tick;
