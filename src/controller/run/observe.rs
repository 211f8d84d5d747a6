//! Observing a started run: its Jobs and, when they are needed, its pods become its status;
//! a run that ended is reported once and its Jobs that never started are deleted.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use tracing::warn;

use super::status::{needs_pods, status_from_jobs};
use super::{RUNNING_RECHECK, Reconcile, exclusive, refused};
use crate::Result;
use crate::controller::kinds::RunKind;
use crate::crd::{RunState, RunStatus};
use crate::job::status::job_ended;
use crate::job::{self, LABEL_OPERATION, LABEL_RUN};

/// Observes a run whose status names its Jobs (`current`); `cached_jobs` are its Jobs in the
/// cache, `None` while the cache is not filled.
pub(super) async fn observe<K: RunKind>(
    r: &Reconcile<'_, K>,
    current: &RunStatus,
    cached_jobs: Option<Vec<Job>>,
) -> Result<Action> {
    let (ctx, meta) = (r.ctx, &r.meta);
    // Jobs and pods of this run carry the same labels.
    let selector = format!(
        "{LABEL_RUN}={},{LABEL_OPERATION}={}",
        job::label_value(&meta.name),
        K::OP.as_str()
    );
    let jobs = match cached_jobs {
        Some(jobs) => jobs,
        None => Api::<Job>::namespaced(ctx.client.clone(), &meta.namespace)
            .list(&ListParams::default().labels(&selector))
            .await?
            .items
            .into_iter()
            .filter(|j| j.owner_references().iter().any(|o| o.uid == meta.uid))
            .collect(),
    };
    let (pods, refused) = if needs_pods(&jobs, r.now, ctx.settings.stuck_after) {
        let pods = Api::<Pod>::namespaced(ctx.client.clone(), &meta.namespace)
            .list(&ListParams::default().labels(&selector))
            .await?
            .items;
        let refused = refused::refused_jobs(ctx, &meta.namespace, &jobs, &pods, r.now).await?;
        (pods, refused)
    } else {
        (Vec::new(), BTreeMap::new())
    };
    let status = status_from_jobs(
        current,
        &jobs,
        &pods,
        &refused,
        r.generation,
        r.now,
        ctx.settings.stuck_after,
    );
    if !status.state.is_some_and(RunState::is_terminal) {
        if let Some(wait) = running_write_wait(r, &jobs, &status) {
            return Ok(Action::requeue(wait));
        }
        let first_running = r.written.jobs.is_empty();
        if r.write(&status).await? && first_running {
            r.report_running(&status).await;
        }
        ctx.unwritten_starts.forget(&meta.uid);
        return Ok(Action::requeue(RUNNING_RECHECK));
    }
    r.write(&status).await?;
    ctx.unwritten_starts.forget(&meta.uid);
    exclusive::note_ended(ctx, r.run, status.state);
    r.report_end(&status).await;
    // A Job that cannot start would otherwise linger until its deadline.
    for job in jobs
        .iter()
        .filter(|j| j.metadata.deletion_timestamp.is_none() && !job_ended(j))
    {
        let name = job.name_any();
        if let Err(error) = Api::<Job>::namespaced(ctx.client.clone(), &meta.namespace)
            .delete(&name, &DeleteParams::background())
            .await
        {
            warn!(%error, job = %name, "deleting a stuck Job failed");
        }
    }
    Ok(Action::await_change())
}

/// How long the first `Running` status of a going run waits before it is written, if it waits:
/// until a pod of the run has been going for a while it is not worth a write, since most runs
/// end first, and a Job without pods (quota, admission) shows nothing.
fn running_write_wait<K: RunKind>(
    r: &Reconcile<'_, K>,
    jobs: &[Job],
    status: &RunStatus,
) -> Option<Duration> {
    if !r.written.jobs.is_empty() {
        return None;
    }
    let has_pod = jobs
        .iter()
        .any(|j| j.status.as_ref().and_then(|s| s.active).unwrap_or(0) > 0);
    if !has_pod {
        return Some(RUNNING_RECHECK);
    }
    let running_for = status
        .started_at
        .as_ref()
        .map(|t| r.now.duration_since(t.0))
        .unwrap_or_default();
    let wait = jiff::SignedDuration::try_from(RUNNING_RECHECK)
        .unwrap_or_default()
        .checked_sub(running_for)
        .unwrap_or_default();
    wait.is_positive()
        .then(|| Duration::try_from(wait).unwrap_or(RUNNING_RECHECK))
}
