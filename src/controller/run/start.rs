//! Starting a run: wait while its repository is in use, build its Jobs, create them, and
//! note the start. Every way a run cannot start ends it as Failed with the cause.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{ListParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use tracing::info;

use super::status::with_state;
use super::{ANNOTATION_TICK, RUNNING_RECHECK, Reconcile, exclusive};
use crate::controller::context::Context;
use crate::controller::kinds::{JobRequest, RunKind};
use crate::controller::stores::JobState;
use crate::crd::{Backup, RunState, RunStatus};
use crate::job::{self, BackupPlan, RunMeta};
use crate::{Error, Result};

/// How often a run waiting for its repository looks again.
pub(super) const WAITING_RECHECK: Duration = Duration::from_secs(10);

/// Starts a run whose status names no Jobs yet (`current`).
///
/// The `Running` status is written only when planning left problems to report (they exist
/// nowhere else) or when there is no Job cache to find the Jobs in: otherwise the Jobs in the
/// cache say that the run started, and the status waits (see [`super::reconcile`]). The
/// `Started` Event goes with that write, wherever it happens: a run that ends first goes from
/// no state to its end, in its status and in its Events alike.
pub(super) async fn start<K: RunKind>(r: &Reconcile<'_, K>, current: &RunStatus) -> Result<Action> {
    let (ctx, run, meta) = (r.ctx, r.run, &r.meta);
    if let Some(message) = exclusive::wait_reason(ctx, run, meta).await? {
        wait(r, current, &message).await?;
        return Ok(Action::requeue(WAITING_RECHECK));
    }
    let (jobs, problems) = match build_jobs(ctx, run, meta).await {
        Ok(built) => built,
        Err(Error::InvalidSpec(reason)) => return r.fail(current, "InvalidSpec", &reason).await,
        Err(error) => return Err(error),
    };
    let created = if rbac_applied_here(ctx, &meta.namespace) {
        // Then one read tells whether the namespace still has the agent's account, and it
        // goes alongside the Jobs' creation: a Job's pod waits for its account (the Job
        // controller retries), and every start saves a round trip.
        let (rbac, created) =
            tokio::join!(ensure_rbac(ctx, &meta.namespace), create_jobs(r, &jobs));
        rbac?;
        created?
    } else {
        ensure_rbac(ctx, &meta.namespace).await?;
        create_jobs(r, &jobs).await?
    };
    let (names, created) = match created {
        Created::All { names, created } => (names, created),
        Created::Failed { cause, reason } => return r.fail(current, cause, &reason).await,
    };
    if created && let Some(tick) = tick_of(run) {
        let delay = jiff::Timestamp::now().duration_since(tick).as_secs_f64();
        ctx.metrics.tick_to_job_seconds.observe(delay.max(0.0));
    }
    let mut status = current.clone();
    status.jobs = names;
    status.errors = problems;
    status.started_at = Some(Time(r.now));
    let status = with_state(
        status,
        RunState::Running,
        "JobRunning",
        "",
        r.generation,
        r.now,
    );
    if !status.errors.is_empty() || !ctx.stores.is_ready() {
        if r.write(&status).await? {
            r.report_running(&status).await;
        }
    } else {
        ctx.unwritten_starts.wrote(&meta.uid, status);
    }
    Ok(Action::requeue(RUNNING_RECHECK))
}

/// Writes the Pending status of a run that waits for its repository, and says so once.
async fn wait<K: RunKind>(r: &Reconcile<'_, K>, current: &RunStatus, message: &str) -> Result<()> {
    let status = with_state(
        current.clone(),
        RunState::Pending,
        "WaitingForRepository",
        message,
        r.generation,
        r.now,
    );
    let was_waiting = current
        .conditions
        .iter()
        .any(|c| c.type_ == "Running" && c.reason == "WaitingForRepository");
    if r.write(&status).await? && !was_waiting {
        info!(kind = %K::OP.kind(), name = %r.meta.name, %message, "run waits");
        r.publish(false, "WaitingForRepository", message).await;
    }
    Ok(())
}

/// What creating a run's Jobs came to.
enum Created {
    /// Every Job exists: their names, and whether this reconcile created any.
    All { names: Vec<String>, created: bool },
    /// A Job cannot be created: the run fails with `cause` and `reason`.
    Failed { cause: &'static str, reason: String },
}

/// Creates the Jobs; one that exists already and is the run's own counts as created by an
/// earlier reconcile.
async fn create_jobs<K: RunKind>(r: &Reconcile<'_, K>, jobs: &[Job]) -> Result<Created> {
    let meta = &r.meta;
    let job_api: Api<Job> = Api::namespaced(r.ctx.client.clone(), &meta.namespace);
    let mut names = Vec::new();
    let mut created = false;
    for job in jobs {
        let name = job.metadata.name.clone().unwrap_or_default();
        match job_api.create(&PostParams::default(), job).await {
            Ok(job) => {
                created = true;
                let now = std::time::Instant::now();
                r.ctx.stores.live_jobs.created(&JobState::from(job), now);
                info!(kind = %K::OP.kind(), run = %meta.name, job = %name, "created Job");
            }
            // Created by an earlier reconcile that the Job cache did not show yet, unless
            // the name is taken by a Job of someone else.
            Err(kube::Error::Api(status)) if status.code == 409 => {
                let existing = job_api.get(&name).await?;
                if !existing
                    .owner_references()
                    .iter()
                    .any(|o| o.uid == meta.uid)
                {
                    let reason = format!(
                        "the Job name {name} is taken by a Job this run does not own; \
                         delete that Job or rename the run"
                    );
                    return Ok(Created::Failed {
                        cause: "JobNameTaken",
                        reason,
                    });
                }
            }
            Err(error) => {
                let age = r
                    .run
                    .meta()
                    .creation_timestamp
                    .as_ref()
                    .map(|t| r.now.duration_since(t.0))
                    .unwrap_or_default();
                if age <= r.ctx.settings.stuck_after {
                    return Err(error.into());
                }
                // Retried for the whole start grace: the cause will not go away by itself.
                let cause = match &error {
                    kube::Error::Api(status) => status.message.chars().take(300).collect(),
                    other => other.to_string(),
                };
                return Ok(Created::Failed {
                    cause: "JobNotCreated",
                    reason: format!("creating Job {name} failed: {cause}"),
                });
            }
        }
        names.push(name);
    }
    Ok(Created::All { names, created })
}

/// Plans from the webhook's caches when they are filled, else from lists.
async fn plan_backup(ctx: &Context, namespace: &str) -> Result<BackupPlan> {
    let cached = ctx
        .stores
        .cluster
        .as_ref()
        .and_then(|cluster| cluster.namespace_objects(namespace));
    if let Some((pvcs, pods)) = cached {
        return Ok(job::plan_backup(&pvcs, &pods));
    }
    let pvcs = Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), namespace)
        .list(&ListParams::default())
        .await?;
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), namespace)
        .list(&ListParams::default())
        .await?;
    Ok(job::plan_backup(&pvcs.items, &pods.items))
}

/// The Jobs of a run that has none yet, and the problems of planning (a backup's claims it
/// cannot mount).
pub(super) async fn build_jobs<K: RunKind>(
    ctx: &Context,
    run: &K,
    meta: &RunMeta,
) -> Result<(Vec<Job>, Vec<String>)> {
    let settings = &ctx.settings.jobs;
    let (backend, prom_url) = (run.backend(), run.prom_url());
    match run.job_request() {
        JobRequest::Backup => {
            let plan = plan_backup(ctx, &meta.namespace).await?;
            if plan.jobs.is_empty() {
                let mut reasons = plan.problems.clone();
                reasons.insert(
                    0,
                    "nothing to back up: no bound PersistentVolumeClaim without appuio.ch/backup=false and no pod with appuio.ch/backupcommand".into(),
                );
                return Err(Error::InvalidSpec(reasons.join("; ")));
            }
            let jobs = job::build_backup_jobs(meta, backend, prom_url, &plan, settings)?;
            Ok((jobs, plan.problems))
        }
        JobRequest::Check => {
            let job = job::build_check_job(meta, backend, prom_url, settings)?;
            Ok((vec![job], Vec::new()))
        }
        JobRequest::Prune(retention) => {
            let job = job::build_prune_job(meta, backend, prom_url, retention, settings)?;
            Ok((vec![job], Vec::new()))
        }
        JobRequest::Restore(spec) => {
            let node = match &spec.restore_method.pvc {
                Some(target) => {
                    let pods = namespace_pods(ctx, &meta.namespace).await?;
                    job::node_using_claim(&target.claim_name, &pods)
                }
                None => None,
            };
            let job = job::build_restore_job(meta, spec, node, settings)?;
            Ok((vec![job], Vec::new()))
        }
        JobRequest::Verify(spec) => {
            let bytes = newest_backup_bytes(ctx, run, &meta.namespace).await?;
            let job = job::build_verify_job(meta, spec, bytes, settings)?;
            Ok((vec![job], Vec::new()))
        }
    }
}

/// The bytes the newest finished backup of `namespace` to the run's repository read: what a
/// verification restores, which sizes its scratch space. One list per verification, which
/// are rare, instead of keeping every backup's summary in the caches.
async fn newest_backup_bytes<K: RunKind>(
    ctx: &Context,
    run: &K,
    namespace: &str,
) -> Result<Option<u64>> {
    let repository = job::repository_label(&job::repository_url(run.backend()));
    let selector = format!("{}={repository}", job::LABEL_REPOSITORY);
    let backups = Api::<Backup>::namespaced(ctx.client.clone(), namespace)
        .list(&ListParams::default().labels(&selector))
        .await?;
    Ok(backups
        .items
        .iter()
        .filter_map(|b| b.status.as_ref())
        .filter(|s| {
            matches!(
                s.state,
                Some(RunState::Succeeded | RunState::PartiallySucceeded)
            )
        })
        .max_by_key(|s| s.finished_at.as_ref().map(|t| t.0))
        .and_then(|s| s.summary.as_ref()?.total_bytes))
}

/// The pods of `namespace`, from the webhook's caches when they are filled, else listed.
async fn namespace_pods(ctx: &Context, namespace: &str) -> Result<Vec<Pod>> {
    let cached = ctx
        .stores
        .cluster
        .as_ref()
        .and_then(|cluster| cluster.namespace_objects(namespace));
    match cached {
        Some((_, pods)) => Ok(pods),
        None => Ok(Api::<Pod>::namespaced(ctx.client.clone(), namespace)
            .list(&ListParams::default())
            .await?
            .items),
    }
}

/// Whether this process has applied the agent's RBAC in `namespace`.
fn rbac_applied_here(ctx: &Context, namespace: &str) -> bool {
    ctx.rbac_done
        .lock()
        .map(|set| set.contains(namespace))
        .unwrap_or(false)
}

pub(super) async fn ensure_rbac(ctx: &Context, namespace: &str) -> Result<()> {
    let done = rbac_applied_here(ctx, namespace);
    // A namespace deleted and created again under the same name has lost the agent's
    // ServiceAccount, and its Jobs could never start a pod. One read per run tells; the
    // two writes happen only when it is gone.
    if done {
        let accounts: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), namespace);
        if accounts
            .get_opt(job::AGENT_SERVICE_ACCOUNT)
            .await?
            .is_some()
        {
            return Ok(());
        }
    }
    crate::controller::rbac::apply_agent_rbac(&ctx.client, namespace).await?;
    if let Ok(mut set) = ctx.rbac_done.lock() {
        set.insert(namespace.to_string());
    }
    Ok(())
}

fn tick_of<K: RunKind>(run: &K) -> Option<jiff::Timestamp> {
    run.annotations().get(ANNOTATION_TICK)?.parse().ok()
}
