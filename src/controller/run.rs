//! Runs (Backup, Check, Prune, Restore, Verify) become Jobs, and their Jobs' outcome becomes the run's
//! status. Every run ends in a terminal state: when its Job fails, is deleted, cannot start, or
//! could never be created.
//!
//! [`reconcile`] finds the run's current status, then either [`start`]s it (no Jobs yet) or
//! [`observe`]s its Jobs. What a status is made of is in [`status`], which run waits for
//! which in [`exclusive`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Api, ResourceExt};
use tracing::{debug, info, warn};

use super::context::{Context, FIELD_MANAGER, now_seconds, requeue_after_error};
pub use super::kinds::RunKind;
use crate::crd::{Backend, RunState, RunStatus};
use crate::job::{self, LABEL_OPERATION, LABEL_SCHEDULE, Operation, RunMeta};
use crate::{Error, Result};
pub use exclusive::{RepoExistence, RepoRun, blocking_run};
pub use status::{
    CONDITION_TYPES, JobOutcome, condition, finished_status, job_outcome, status_from_jobs,
    with_state,
};

pub use super::stores::ANNOTATION_TICK;

/// While a run's Job is going, how often to look at its pods (a pod stuck on a missing Secret
/// changes no Job status, so no watch event would tell).
const RUNNING_RECHECK: Duration = Duration::from_secs(30);

/// The identity of a run object for names, labels and owner references.
pub fn run_meta<K: RunKind>(run: &K) -> Result<RunMeta> {
    let name = run.name_any();
    let namespace = run
        .namespace()
        .ok_or_else(|| Error::InvalidSpec(format!("{} {name} has no namespace", K::OP.kind())))?;
    let uid = run
        .uid()
        .ok_or_else(|| Error::InvalidSpec(format!("{} {name} has no uid", K::OP.kind())))?;
    Ok(RunMeta {
        op: K::OP,
        name,
        namespace,
        uid,
        // The owner's name: the label holds a hash for names longer than a label value.
        schedule: run
            .owner_references()
            .iter()
            .find(|o| o.kind == "Schedule")
            .map(|o| o.name.clone())
            .or_else(|| run.labels().get(LABEL_SCHEDULE).cloned()),
    })
}

/// Reconciles one run.
///
/// API writes of a run that ends well: its Job(s), and one status write when it ends. The
/// `Running` status (with `startedAt` and `jobs`) is written only once the run has been going
/// for [`RUNNING_RECHECK`] and one of its Jobs has a pod, or at once when planning left
/// problems to report: until then the Jobs in the cache say that the run started, for this
/// reconciler and for repository exclusivity.
pub async fn reconcile<K: RunKind>(run: Arc<K>, ctx: Arc<Context>) -> Result<Action> {
    ctx.metrics.reconciled(K::OP.kind());
    let run = run.as_ref();
    // A Schedule's run that ended is kept apart from the caches; its end may be this
    // process's own write that the cache does not show yet.
    if ctx.stores.finished.contains(run) {
        ctx.unwritten_starts.forget(&run.uid().unwrap_or_default());
        debug!(name = %run.name_any(), "run already ended");
        return Ok(Action::await_change());
    }
    let written = ctx
        .recent_runs
        .freshest(&run.uid().unwrap_or_default(), run.run_status())
        .unwrap_or_default();
    if written.state.is_some_and(RunState::is_terminal) {
        ctx.unwritten_starts.forget(&run.uid().unwrap_or_default());
        // At startup every cached Backup comes by here: the finished ones prove their
        // repositories before most new ones need to know.
        exclusive::note_ended(&ctx, run, written.state);
        debug!(name = %run.name_any(), "run already ended");
        return Ok(Action::await_change());
    }
    let meta = run_meta(run)?;
    let cached_jobs = ctx.stores.jobs_of_run(&meta.namespace, &meta.uid);
    let r = Reconcile {
        api: Api::namespaced(ctx.client.clone(), &meta.namespace),
        ctx: &ctx,
        run,
        meta,
        generation: run.meta().generation,
        now: now_seconds(),
        written,
    };
    let current = r.current_status(cached_jobs.as_deref());
    if current.jobs.is_empty() {
        start::start(&r, &current).await
    } else {
        observe::observe(&r, &current, cached_jobs).await
    }
}

/// One reconcile of one run that has not ended: what every step reads.
struct Reconcile<'a, K: RunKind> {
    ctx: &'a Context,
    run: &'a K,
    meta: RunMeta,
    api: Api<K>,
    generation: Option<i64>,
    now: jiff::Timestamp,
    /// The status last written: the cache's, or this process's while the cache lags.
    written: RunStatus,
}

impl<K: RunKind> Reconcile<'_, K> {
    /// The status the run is in. Once a status names the run's Jobs, that is the one written.
    /// Before, it is the start this process noted without writing it, or else one made from
    /// Jobs of the run found in the cache (created by an earlier reconcile, or by another
    /// replica), or else the written one: the run has not started.
    fn current_status(&self, cached_jobs: Option<&[Job]>) -> RunStatus {
        if !self.written.jobs.is_empty() {
            return self.written.clone();
        }
        self.ctx
            .unwritten_starts
            .get(&self.meta.uid)
            .or_else(|| {
                cached_jobs.and_then(|jobs| {
                    status::started_from_jobs(&self.written, jobs, self.generation)
                })
            })
            .unwrap_or_else(|| self.written.clone())
    }

    /// Writes `status` through server-side apply of the status subresource, only when it
    /// differs from the one written (so that an idle reconcile costs no write).
    async fn write(&self, status: &RunStatus) -> Result<bool> {
        if self.written == *status {
            return Ok(false);
        }
        let patch = serde_json::json!({
            "apiVersion": K::api_version(&()),
            "kind": K::kind(&()),
            "status": status,
        });
        self.api
            .patch_status(
                &self.run.name_any(),
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await?;
        if let Some(uid) = self.run.uid() {
            if self.ctx.stores.finished.wrote(self.run, status) {
                // Its end is known from there on; no reconcile will compare it with the cache.
                self.ctx.recent_runs.forget(&uid);
            } else {
                // Compared with the cache later, so in the form the cache keeps.
                self.ctx.recent_runs.wrote(&uid, status.as_cached());
            }
        }
        Ok(true)
    }

    /// Ends a run that cannot start: Failed with `cause`, written and reported once.
    async fn fail(&self, current: &RunStatus, cause: &str, message: &str) -> Result<Action> {
        let status = with_state(
            current.clone(),
            RunState::Failed,
            cause,
            message,
            self.generation,
            self.now,
        );
        self.write(&status).await?;
        self.report_end(&status).await;
        Ok(Action::await_change())
    }

    /// Publishes one Event about the run.
    async fn publish(&self, warning: bool, reason: &str, note: &str) {
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.into(),
            note: Some(note.chars().take(1000).collect()),
            action: "Reconcile".into(),
            secondary: None,
        };
        self.ctx.publish(&event, &self.run.object_ref(&())).await;
    }

    /// Reports the first `Running` status written: one Normal `Started` Event naming the
    /// run's Jobs. It comes with the write rather than with the Jobs' creation, since a run
    /// that ends before its `Running` status is due says all in its end Event, and one
    /// write per run fewer counts at thousands of Schedules.
    async fn report_running(&self, status: &RunStatus) {
        let note = format!("created Job {}", status.jobs.join(", "));
        self.publish(false, "Started", &note).await;
    }

    /// Reports a terminal status: metrics, log, and one Event (Normal for a success, Warning
    /// otherwise). The contract reports every state change as an Event, and `kubectl
    /// describe` and event-based alerting rely on seeing the end of each run, so the success
    /// Event is worth its one write.
    async fn report_end(&self, status: &RunStatus) {
        let state = status.state.map(status::state_name).unwrap_or("Failed");
        self.ctx.metrics.finished(K::OP.kind(), state);
        let message = status.message.clone().unwrap_or_default();
        info!(kind = %K::OP.kind(), namespace = ?self.run.namespace(), name = %self.run.name_any(), state, %message, "run ended");
        self.publish(state != "Succeeded", state, &message).await;
    }
}

/// Retry policy of the run controllers.
pub fn error_policy<K: RunKind>(run: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failed(K::OP.kind(), error.category());
    warn!(kind = %K::OP.kind(), name = %run.name_any(), %error, "reconcile failed");
    requeue_after_error(error)
}

/// The labels a Schedule gives the runs it creates.
pub fn schedule_run_labels(
    schedule: &str,
    op: Operation,
    backend: &Backend,
) -> BTreeMap<String, String> {
    BTreeMap::from([
        (job::LABEL_MANAGED_BY.to_string(), job::MANAGER.to_string()),
        (LABEL_SCHEDULE.to_string(), job::label_value(schedule)),
        (LABEL_OPERATION.to_string(), op.as_str().to_string()),
        (
            job::LABEL_REPOSITORY.to_string(),
            job::repository_label(&job::repository_url(backend)),
        ),
    ])
}

mod exclusive;
mod observe;
mod refused;
mod start;
pub mod status;
#[cfg(test)]
mod tests;
