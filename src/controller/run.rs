//! Runs (Backup, Check, Prune, Restore) become Jobs, and their Jobs' outcome becomes the run's
//! status. Every run ends in a terminal state: when its Job fails, is deleted, cannot start, or
//! could never be created.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::Store;
use kube::{Api, ResourceExt};
use tracing::{debug, info, warn};

use super::context::{Context, FIELD_MANAGER, now_seconds, requeue_after_error};
pub use super::kinds::RunKind;
use crate::crd::{Backend, Backup, Prune, Restore, RunState, RunStatus, Summary};
use crate::job::status::{is_pod_of, job_condition, job_ended};
use crate::job::{
    self, BackupPlan, LABEL_OPERATION, LABEL_RUN, LABEL_SCHEDULE, Operation, RunMeta,
};
use crate::report::RunReport;
use crate::{Error, Result};

/// On runs a Schedule created: the cron tick (RFC 3339) the run is for.
pub const ANNOTATION_TICK: &str = "backup.appuio.ch/tick";

/// While a run's Job is going, how often to look at its pods (a pod stuck on a missing Secret
/// changes no Job status, so no watch event would tell).
const RUNNING_RECHECK: Duration = Duration::from_secs(30);
/// How often a run waiting for its repository looks again.
const WAITING_RECHECK: Duration = Duration::from_secs(10);

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

/// One run as seen for repository exclusivity.
#[derive(Clone, Debug, PartialEq)]
pub struct RepoRun {
    /// The operation.
    pub op: Operation,
    /// `namespace/name`.
    pub key: String,
    /// Its repository URL.
    pub repository: String,
    /// Its state.
    pub state: Option<RunState>,
    /// Whether it has created Jobs (it holds the repository).
    pub started: bool,
    /// Its creationTimestamp.
    pub created: Option<jiff::Timestamp>,
}

impl RepoRun {
    /// `with_jobs` holds the uids of runs that own a Job: a run holds its repository from the
    /// moment its first Job exists, before any status says so.
    fn from<K: RunKind>(run: &K, with_jobs: &HashSet<String>) -> RepoRun {
        let status = run.run_status();
        RepoRun {
            op: K::OP,
            key: format!("{}/{}", run.namespace().unwrap_or_default(), run.name_any()),
            repository: job::repository_url(run.backend()),
            state: status.and_then(|s| s.state),
            started: status.is_some_and(|s| !s.jobs.is_empty())
                || run.uid().is_some_and(|uid| with_jobs.contains(&uid)),
            created: run.meta().creation_timestamp.as_ref().map(|t| t.0),
        }
    }

    fn active(&self) -> bool {
        self.started && !self.state.is_some_and(RunState::is_terminal)
    }

    fn waiting(&self) -> bool {
        !self.started && !self.state.is_some_and(RunState::is_terminal)
    }
}

/// Whether a repository is known to exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RepoExistence {
    /// A Backup on it has finished with a snapshot: its `config` exists.
    Proven,
    /// Not known to exist yet: a backup on it may be the one to create it.
    Unproven,
}

/// The run that `me` must wait for, if any, following the locks restic takes: `check` and
/// `prune` lock the repository exclusively, `backup`, `restore` and `dump` share it. So a
/// Check or Prune waits for every active run on the repository; a Backup or Restore waits
/// for an active Check or Prune. Either also waits for an older Check or Prune that waits
/// itself: runs start in the order they were created, so a steady stream of backups cannot
/// starve a check or prune that queued before them.
///
/// On a repository not known to exist, backups take turns among themselves by the same
/// rules: each may have to run `restic init`, and two concurrent ones leave a repository
/// that no command can open. Once one of them has written a snapshot, backups run side by
/// side again.
pub fn blocking_run<'a>(
    me: &RepoRun,
    existence: RepoExistence,
    others: &'a [RepoRun],
) -> Option<&'a RepoRun> {
    let exclusive = |op: Operation| matches!(op, Operation::Check | Operation::Prune);
    let may_create = |op: Operation| {
        existence == RepoExistence::Unproven
            && me.op == Operation::Backup
            && op == Operation::Backup
    };
    let mut same_repo = others
        .iter()
        .filter(|o| o.repository == me.repository && !(o.op == me.op && o.key == me.key));
    same_repo.find(|o| {
        let conflicts = exclusive(me.op) || exclusive(o.op) || may_create(o.op);
        let queued_before = o.waiting()
            && (exclusive(o.op) || may_create(o.op))
            && (o.created, &o.key) < (me.created, &me.key);
        (conflicts && o.active()) || queued_before
    })
}

/// Whether `me` must look at other backups: a Check or Prune conflicts with them, and so does
/// a Backup while its repository is not known to exist.
fn waits_for_backups(me: Operation, existence: RepoExistence) -> bool {
    match me {
        Operation::Check | Operation::Prune => true,
        Operation::Backup => existence == RepoExistence::Unproven,
        Operation::Restore => false,
    }
}

/// The runs `me` may have to wait for: a backup or restore on a repository known to exist
/// only ever waits for a check or prune, so it need not look at the thousands of other
/// backups. Only the first backups of a repository look at the others.
fn repo_runs(ctx: &Context, me: Operation, existence: RepoExistence) -> Vec<RepoRun> {
    fn add<K: RunKind>(runs: &mut Vec<RepoRun>, store: &Store<K>, with_jobs: &HashSet<String>) {
        runs.extend(
            store
                .state()
                .iter()
                .map(|r| RepoRun::from(r.as_ref(), with_jobs)),
        );
    }
    let stores = &ctx.stores;
    let with_jobs = stores.runs_with_jobs();
    let mut runs: Vec<RepoRun> = Vec::new();
    add(&mut runs, &stores.prunes, &with_jobs);
    add(&mut runs, &stores.checks, &with_jobs);
    if waits_for_backups(me, existence) {
        add(&mut runs, &stores.backups, &with_jobs);
    }
    if matches!(me, Operation::Check | Operation::Prune) {
        add(&mut runs, &stores.restores, &with_jobs);
    }
    runs
}

/// The label naming a run's repository. A finished run in the cache has lost its spec
/// ([`RunKind::forget_if_finished`]), so only its label can tell, when a Schedule gave it one.
fn repository_key<K: RunKind>(run: &K) -> Option<String> {
    if run.backend().s3.bucket.is_empty() {
        return run.labels().get(job::LABEL_REPOSITORY).cloned();
    }
    Some(job::repository_label(&job::repository_url(run.backend())))
}

/// Whether `run`'s repository is known to exist.
fn existence_of<K: RunKind>(ctx: &Context, run: &K) -> RepoExistence {
    match repository_key(run) {
        Some(key) if ctx.proven_repositories.contains(&key) => RepoExistence::Proven,
        _ => RepoExistence::Unproven,
    }
}

/// What a Backup that ended tells: its repository exists when it wrote a snapshot, and its
/// claim to create the repository, if it held one, is over.
fn note_ended<K: RunKind>(ctx: &Context, run: &K, state: Option<RunState>) {
    if K::OP != Operation::Backup || !state.is_some_and(RunState::is_terminal) {
        return;
    }
    let Some(key) = repository_key(run) else {
        return;
    };
    ctx.create_claims
        .release(&key, &run.uid().unwrap_or_default());
    if matches!(
        state,
        Some(RunState::Succeeded | RunState::PartiallySucceeded)
    ) {
        ctx.proven_repositories.insert(key);
    }
}

/// How long a backup's claim to create a repository lasts at most: long enough for its Jobs
/// to show in the cache, short enough that a claim whose run went away holds nobody up for
/// long.
const CLAIM_HOLD: Duration = Duration::from_secs(60);

/// For a Backup about to start on a repository not known to exist: claims the repository
/// for it, or names the Backup of this process that already did.
fn claimed_by<K: RunKind>(
    ctx: &Context,
    run: &K,
    key: &str,
    existence: RepoExistence,
) -> Option<Blocker> {
    if K::OP != Operation::Backup || existence != RepoExistence::Unproven {
        return None;
    }
    let label = repository_key(run)?;
    let uid = run.uid().unwrap_or_default();
    let holder =
        ctx.create_claims
            .claim(&label, &uid, key, std::time::Instant::now(), CLAIM_HOLD)?;
    Some(Blocker {
        what: format!("{} {holder}", Operation::Backup.kind()),
        op: Some(Operation::Backup),
    })
}

/// What a waiting run waits for: a run or a Job, and its operation when known.
#[derive(Clone, Debug, PartialEq)]
struct Blocker {
    /// `Backup ns/name`, `check Job ns/name`, ...
    what: String,
    /// The operation of the run or Job.
    op: Option<Operation>,
}

/// The message of a waiting run: what it waits for and, when a backup waits for another
/// backup, why.
fn waiting_message(blocker: &Blocker, me: Operation, existence: RepoExistence) -> String {
    let mut message = format!("waiting for {} on the same repository", blocker.what);
    if me == Operation::Backup
        && blocker.op == Some(Operation::Backup)
        && existence == RepoExistence::Unproven
    {
        message.push_str(
            ": the repository is not known to exist yet, and only one backup may create it",
        );
    }
    message
}

/// The caches can lag behind the API server (a replica that just became leader, a Job created
/// a moment ago), so before a run starts, the API server itself is asked for unfinished Jobs
/// on the repository that conflict with it: for a Check or Prune every Job, for a Backup or
/// Restore those of checks and prunes, and for a Backup on a repository not known to exist
/// those of other backups too.
async fn live_blocker(
    ctx: &Context,
    me: &RunMeta,
    backend: &Backend,
    existence: RepoExistence,
) -> Result<Option<Blocker>> {
    let mut selector = format!(
        "{}={},{}={}",
        job::LABEL_MANAGED_BY,
        job::MANAGER,
        job::LABEL_REPOSITORY,
        job::repository_label(&job::repository_url(backend)),
    );
    if !matches!(me.op, Operation::Check | Operation::Prune) {
        if waits_for_backups(me.op, existence) {
            selector.push_str(&format!(",{LABEL_OPERATION} in (backup,check,prune)"));
        } else {
            selector.push_str(&format!(",{LABEL_OPERATION} in (check,prune)"));
        }
    }
    let jobs = Api::<Job>::all(ctx.client.clone())
        .list(&ListParams::default().labels(&selector))
        .await?;
    Ok(jobs
        .items
        .iter()
        .find(|j| {
            j.metadata.deletion_timestamp.is_none()
                && !j.owner_references().iter().any(|o| o.uid == me.uid)
                && !job_ended(j)
        })
        .map(|j| {
            let label = j.labels().get(LABEL_OPERATION).map(String::as_str);
            Blocker {
                what: format!(
                    "{} Job {}/{}",
                    label.unwrap_or("a"),
                    j.namespace().unwrap_or_default(),
                    j.name_any()
                ),
                op: [
                    Operation::Backup,
                    Operation::Check,
                    Operation::Prune,
                    Operation::Restore,
                ]
                .into_iter()
                .find(|op| Some(op.as_str()) == label),
            }
        }))
}

/// A standard condition; its transition time is kept from `previous` when status and reason
/// did not change, so an unchanged status compares equal and is not written again.
pub fn condition(
    previous: &[Condition],
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: jiff::Timestamp,
) -> Condition {
    let status = if status { "True" } else { "False" };
    let since = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status && c.reason == reason)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: since,
    }
}

fn state_name(state: RunState) -> &'static str {
    match state {
        RunState::Pending => "Pending",
        RunState::Running => "Running",
        RunState::Succeeded => "Succeeded",
        RunState::PartiallySucceeded => "PartiallySucceeded",
        RunState::Failed => "Failed",
    }
}

/// Condition types of a run, each one a question a user can `kubectl wait` on:
/// - `Finished`: the run ended, whatever the outcome (wait for this one, then read `state`);
/// - `Complete`: it ended and did everything it was asked (state `Succeeded`), as a Job's;
/// - `Failed`: it ended without doing everything: state `Failed`, or `PartiallySucceeded`
///   (a snapshot was written, but some files or backup commands are missing from it);
/// - `Running`: its Jobs are running (`False` with reason `WaitingForRepository` while it
///   waits for another run on the same repository).
///
/// All four are always present, so `kubectl get -o jsonpath` never finds a gap.
pub const CONDITION_TYPES: [&str; 4] = ["Finished", "Complete", "Failed", "Running"];

/// Sets state, conditions and observedGeneration consistently. `reason` is the
/// CamelCase cause of the state (`Succeeded`, `PodsRefused`, `WaitingForRepository`, ...).
pub fn with_state(
    mut status: RunStatus,
    state: RunState,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: jiff::Timestamp,
) -> RunStatus {
    let terminal = state.is_terminal();
    let failed = matches!(state, RunState::Failed | RunState::PartiallySucceeded);
    // A condition that does not hold says why with the state it is in instead.
    let not_yet = if terminal { state_name(state) } else { reason };
    let conditions = [
        (terminal, if terminal { reason } else { not_yet }),
        (
            state == RunState::Succeeded,
            if state == RunState::Succeeded {
                reason
            } else {
                not_yet
            },
        ),
        (failed, if failed { reason } else { not_yet }),
        (
            state == RunState::Running,
            if state == RunState::Running {
                "JobRunning"
            } else {
                not_yet
            },
        ),
    ];
    let previous = std::mem::take(&mut status.conditions);
    status.conditions = CONDITION_TYPES
        .iter()
        .zip(conditions)
        .map(|(type_, (holds, why))| {
            condition(&previous, type_, holds, why, message, generation, now)
        })
        .collect();
    status.state = Some(state);
    status.observed_generation = generation;
    status.message = (!message.is_empty()).then(|| message.to_string());
    if terminal && status.finished_at.is_none() {
        status.finished_at = Some(Time(now));
    }
    status
}

/// How one Job ended (or that it has not).
#[derive(Clone, Debug, PartialEq)]
pub enum JobOutcome {
    /// Still going.
    Running,
    /// Ended with the agent's report.
    Reported(Box<RunReport>),
    /// Ended (or cannot start) without a report; the reason says why.
    Failed(String),
}

/// The outcome of one Job from its status and its pods: the agent's termination message wins;
/// without one the reason comes from the Job's conditions or the pod (OOMKilled, a missing
/// Secret that keeps the container from starting, ...). A pod stuck before its container
/// starts for longer than `stuck_after` fails the Job's part of the run.
pub fn job_outcome(
    job: &Job,
    pods: &[Pod],
    now: jiff::Timestamp,
    stuck_after: jiff::SignedDuration,
) -> JobOutcome {
    let name = job.metadata.name.clone().unwrap_or_default();
    let mine: Vec<&Pod> = pods.iter().filter(|p| is_pod_of(p, &name)).collect();
    let statuses = || {
        mine.iter()
            .flat_map(|p| p.status.iter())
            .flat_map(|s| s.container_statuses.iter().flatten())
    };
    let report = statuses()
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref())
        .find_map(|t| RunReport::from_termination_message(t.message.as_deref()?));
    let complete = job_condition(job, "Complete").is_some();
    let failed = job_condition(job, "Failed");
    if complete || failed.is_some() {
        if let Some(mut report) = report {
            if failed.is_some() && report.state != Some(RunState::Failed) {
                // The agent may have written a report and then been killed or exited non-zero:
                // a failed Job never shows as success.
                report.state = Some(RunState::Failed);
                let reason = failed.and_then(|c| c.reason.clone()).unwrap_or_default();
                report.errors.push(format!("Job {name} failed: {reason}"));
            }
            return JobOutcome::Reported(Box::new(report));
        }
        if complete {
            return JobOutcome::Failed(format!(
                "Job {name} completed but its agent left no report"
            ));
        }
        let terminated = statuses()
            .filter_map(|c| c.state.as_ref()?.terminated.as_ref())
            .map(|t| {
                format!(
                    "container exited with code {}{}{}",
                    t.exit_code,
                    t.reason
                        .as_ref()
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default(),
                    t.message
                        .as_deref()
                        .map(|m| {
                            let m = crate::redact::redact(m);
                            format!(": {}", m.chars().take(300).collect::<String>())
                        })
                        .unwrap_or_default()
                )
            })
            .next();
        let condition = failed
            .map(|c| {
                format!(
                    "{}{}",
                    c.reason.clone().unwrap_or_else(|| "Failed".into()),
                    c.message
                        .as_ref()
                        .map(|m| format!(": {m}"))
                        .unwrap_or_default()
                )
            })
            .unwrap_or_default();
        let detail = [condition, terminated.unwrap_or_default()]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        return JobOutcome::Failed(format!("Job {name} failed: {detail}"));
    }
    for pod in &mine {
        let started = pod
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0)
            .unwrap_or(now);
        for status in pod
            .status
            .iter()
            .flat_map(|s| s.container_statuses.iter().flatten())
        {
            let Some(waiting) = status.state.as_ref().and_then(|s| s.waiting.as_ref()) else {
                continue;
            };
            let reason = waiting.reason.as_deref().unwrap_or_default();
            let broken = matches!(
                reason,
                "CreateContainerConfigError"
                    | "CreateContainerError"
                    | "ErrImagePull"
                    | "ImagePullBackOff"
                    | "InvalidImageName"
            );
            if broken && now.duration_since(started) > stuck_after {
                return JobOutcome::Failed(format!(
                    "Job {name}: pod {} cannot start: {reason}: {}",
                    pod.name_any(),
                    waiting.message.as_deref().unwrap_or_default()
                ));
            }
        }
    }
    JobOutcome::Running
}

fn add_summary(total: &mut Summary, part: &Summary) {
    fn add(a: &mut Option<u64>, b: Option<u64>) {
        if let Some(b) = b {
            *a = Some(a.unwrap_or(0) + b);
        }
    }
    add(&mut total.files_new, part.files_new);
    add(&mut total.files_changed, part.files_changed);
    add(&mut total.files_unmodified, part.files_unmodified);
    add(&mut total.total_files, part.total_files);
    add(&mut total.total_bytes, part.total_bytes);
    add(&mut total.bytes_added, part.bytes_added);
    add(&mut total.snapshots_removed, part.snapshots_removed);
    add(&mut total.snapshots_kept, part.snapshots_kept);
}

/// The run's status once every Job has ended: snapshots, summary and errors of all Jobs
/// together. The run Succeeded only when every Job succeeded and nothing was left out
/// (`previous.errors` holds what planning could not back up); it Failed when no Job wrote
/// anything; anything between is PartiallySucceeded.
pub fn finished_status(
    previous: &RunStatus,
    outcomes: &[(String, JobOutcome)],
    generation: Option<i64>,
    now: jiff::Timestamp,
) -> RunStatus {
    let mut status = previous.clone();
    let mut summary = Summary::default();
    let mut errors = previous.errors.clone();
    let mut snapshots = Vec::new();
    let mut messages = Vec::new();
    let mut succeeded = 0usize;
    let mut failed = 0usize;
    let mut duration = 0f64;
    for (job, outcome) in outcomes {
        match outcome {
            JobOutcome::Reported(report) => {
                match report.state {
                    Some(RunState::Succeeded) => succeeded += 1,
                    Some(RunState::Failed) | None => failed += 1,
                    _ => {}
                }
                snapshots.extend(report.snapshots.iter().cloned());
                add_summary(&mut summary, &report.summary);
                duration = duration.max(report.duration_seconds);
                errors.extend(report.errors.iter().cloned());
                if !report.message.is_empty() {
                    messages.push(report.message.clone());
                }
                if status.restored_to.is_none() {
                    status.restored_to = report.restored_to.clone();
                }
            }
            JobOutcome::Failed(reason) => {
                failed += 1;
                errors.push(reason.clone());
                messages.push(reason.clone());
            }
            JobOutcome::Running => debug!(job, "finished_status called with a running Job"),
        }
    }
    let total = outcomes.len();
    let state = if total > 0 && succeeded == total && previous.errors.is_empty() {
        RunState::Succeeded
    } else if failed == total || (snapshots.is_empty() && total > 0 && failed > 0 && succeeded == 0)
    {
        RunState::Failed
    } else {
        RunState::PartiallySucceeded
    };
    let message = if total == 1 && messages.len() == 1 {
        messages.remove(0)
    } else {
        let mut text = format!("{succeeded} of {total} Jobs succeeded");
        if let Some(first) = messages.first() {
            text.push_str(": ");
            text.push_str(first);
        }
        text
    };
    status.snapshot_id = snapshots.first().map(|s| s.id.clone());
    status.snapshots = snapshots;
    status.summary = (summary != Summary::default()).then_some(summary);
    status.duration_seconds = (duration > 0.0).then_some(duration);
    status.errors = errors;
    with_state(status, state, state_name(state), &message, generation, now)
}

/// The run's status from its Jobs: still Running while any Job runs; otherwise finished. A Job
/// named in `previous.jobs` that no longer exists failed its part (it was deleted); so did
/// one in `refused` (Job name → why the API server refused its pods).
pub fn status_from_jobs(
    previous: &RunStatus,
    jobs: &[Job],
    pods: &[Pod],
    refused: &BTreeMap<String, String>,
    generation: Option<i64>,
    now: jiff::Timestamp,
    stuck_after: jiff::SignedDuration,
) -> RunStatus {
    let outcomes: Vec<(String, JobOutcome)> = previous
        .jobs
        .iter()
        .map(|name| {
            let outcome = match jobs.iter().find(|j| j.metadata.name.as_ref() == Some(name)) {
                Some(job) if job.metadata.deletion_timestamp.is_some() => {
                    JobOutcome::Failed(format!("Job {name} was deleted before it finished"))
                }
                Some(_) if refused.contains_key(name) => JobOutcome::Failed(format!(
                    "Job {name} could not create its pod: {}",
                    refused.get(name).map(String::as_str).unwrap_or_default()
                )),
                Some(job) => job_outcome(job, pods, now, stuck_after),
                None => JobOutcome::Failed(format!("Job {name} was deleted before it finished")),
            };
            (name.clone(), outcome)
        })
        .collect();
    if outcomes.iter().any(|(_, o)| *o == JobOutcome::Running) {
        let running = previous.state == Some(RunState::Running);
        let status = previous.clone();
        if running {
            return status;
        }
        return with_state(status, RunState::Running, "JobRunning", "", generation, now);
    }
    finished_status(previous, &outcomes, generation, now)
}

/// Writes the status through server-side apply of the status subresource, only when it
/// differs from `current` (so that an idle reconcile costs no write).
pub async fn apply_status<K: RunKind>(
    ctx: &Context,
    api: &Api<K>,
    run: &K,
    current: &RunStatus,
    status: &RunStatus,
) -> Result<bool> {
    if current == status {
        return Ok(false);
    }
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        &run.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    if let Some(uid) = run.uid() {
        // Compared with the cache later, so in the form the cache keeps.
        ctx.recent_runs.wrote(&uid, status.as_cached());
    }
    Ok(true)
}

async fn publish<K: RunKind>(ctx: &Context, run: &K, warning: bool, reason: &str, note: &str) {
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
    ctx.publish(&event, &run.object_ref(&())).await;
}

/// Reports a terminal status: metrics, log, and one Event (Normal for a success, Warning
/// otherwise). The contract reports every state change as an Event, and `kubectl describe`
/// and event-based alerting rely on seeing the end of each run, so the success Event is
/// worth its one write.
async fn report_end<K: RunKind>(ctx: &Context, run: &K, status: &RunStatus) {
    let state = status.state.map(state_name).unwrap_or("Failed");
    ctx.metrics.finished(K::OP.kind(), state);
    let message = status.message.clone().unwrap_or_default();
    info!(kind = %K::OP.kind(), namespace = ?run.namespace(), name = %run.name_any(), state, %message, "run ended");
    publish(ctx, run, state != "Succeeded", state, &message).await;
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
async fn build_jobs<K: RunKind>(
    ctx: &Context,
    run: &K,
    meta: &RunMeta,
) -> Result<(Vec<Job>, Vec<String>)> {
    let settings = &ctx.settings.jobs;
    let any = run as &dyn std::any::Any;
    if let Some(backup) = any.downcast_ref::<Backup>() {
        let plan = plan_backup(ctx, &meta.namespace).await?;
        if plan.jobs.is_empty() {
            let mut reasons = plan.problems.clone();
            reasons.insert(
                0,
                "nothing to back up: no bound PersistentVolumeClaim without appuio.ch/backup=false and no pod with appuio.ch/backupcommand".into(),
            );
            return Err(Error::InvalidSpec(reasons.join("; ")));
        }
        let jobs = job::build_backup_jobs(
            meta,
            &backup.spec.backend,
            backup.spec.prom_url.as_deref(),
            &plan,
            settings,
        )?;
        return Ok((jobs, plan.problems));
    }
    if let Some(prune) = any.downcast_ref::<Prune>() {
        let job = job::build_prune_job(
            meta,
            &prune.spec.backend,
            prune.spec.prom_url.as_deref(),
            prune.spec.retention.as_ref(),
            settings,
        )?;
        return Ok((vec![job], Vec::new()));
    }
    if let Some(restore) = any.downcast_ref::<Restore>() {
        let node = match &restore.spec.restore_method.pvc {
            Some(target) => {
                let cached = ctx
                    .stores
                    .cluster
                    .as_ref()
                    .and_then(|cluster| cluster.namespace_objects(&meta.namespace));
                let pods = match cached {
                    Some((_, pods)) => pods,
                    None => {
                        Api::<Pod>::namespaced(ctx.client.clone(), &meta.namespace)
                            .list(&ListParams::default())
                            .await?
                            .items
                    }
                };
                job::node_using_claim(&target.claim_name, &pods)
            }
            None => None,
        };
        return Ok((
            vec![job::build_restore_job(meta, &restore.spec, node, settings)?],
            Vec::new(),
        ));
    }
    let job = job::build_check_job(meta, run.backend(), run.prom_url(), settings)?;
    Ok((vec![job], Vec::new()))
}

async fn ensure_rbac(ctx: &Context, namespace: &str) -> Result<()> {
    let done = ctx
        .rbac_done
        .lock()
        .map(|set| set.contains(namespace))
        .unwrap_or(false);
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
    super::rbac::apply_agent_rbac(&ctx.client, namespace).await?;
    if let Ok(mut set) = ctx.rbac_done.lock() {
        set.insert(namespace.to_string());
    }
    Ok(())
}

fn tick_of<K: RunKind>(run: &K) -> Option<jiff::Timestamp> {
    run.annotations().get(ANNOTATION_TICK)?.parse().ok()
}

/// The status of a run whose Jobs exist although no status names them yet: the Running status
/// is written late (see [`reconcile`]), so the Jobs in the cache are the truth.
fn started_from_jobs(
    previous: &RunStatus,
    jobs: &[Job],
    generation: Option<i64>,
) -> Option<RunStatus> {
    if !previous.jobs.is_empty() || jobs.is_empty() {
        return None;
    }
    let started = jobs
        .iter()
        .filter_map(|j| j.metadata.creation_timestamp.as_ref().map(|t| t.0))
        .min()
        .unwrap_or_else(now_seconds);
    let mut status = previous.clone();
    status.jobs = jobs.iter().map(|j| j.name_any()).collect();
    status.started_at = Some(Time(started));
    Some(with_state(
        status,
        RunState::Running,
        "JobRunning",
        "",
        generation,
        started,
    ))
}

/// Whether the outcome of these Jobs needs their pods: a Job that ended (its report is the
/// pod's termination message) or one old enough to be stuck on a pod that cannot start.
fn needs_pods(jobs: &[Job], now: jiff::Timestamp, stuck_after: jiff::SignedDuration) -> bool {
    jobs.iter().any(|j| {
        job_ended(j)
            || j.metadata
                .creation_timestamp
                .as_ref()
                .is_none_or(|t| now.duration_since(t.0) > stuck_after)
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
    let written = ctx
        .recent_runs
        .freshest(&run.uid().unwrap_or_default(), run.run_status())
        .unwrap_or_default();
    if written.state.is_some_and(RunState::is_terminal) {
        ctx.unwritten_starts.forget(&run.uid().unwrap_or_default());
        // At startup every cached Backup comes by here: the finished ones prove their
        // repositories before most new ones need to know.
        note_ended(&ctx, run.as_ref(), written.state);
        debug!(name = %run.name_any(), "run already ended");
        return Ok(Action::await_change());
    }
    let meta = run_meta(run.as_ref())?;
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &meta.namespace);
    let generation = run.meta().generation;
    let now = now_seconds();
    let cached_jobs = ctx.stores.jobs_of_run(&meta.namespace, &meta.uid);
    let previous = if written.jobs.is_empty() {
        ctx.unwritten_starts
            .get(&meta.uid)
            .or_else(|| {
                cached_jobs
                    .as_deref()
                    .and_then(|jobs| started_from_jobs(&written, jobs, generation))
            })
            .unwrap_or_else(|| written.clone())
    } else {
        written.clone()
    };

    if previous.jobs.is_empty() {
        // A run that cannot start ends here: Failed with `cause`, written and reported once.
        let fail = async |cause: &str, message: &str| -> Result<Action> {
            let status = with_state(
                previous.clone(),
                RunState::Failed,
                cause,
                message,
                generation,
                now,
            );
            apply_status(&ctx, &api, run.as_ref(), &written, &status).await?;
            report_end(&ctx, run.as_ref(), &status).await;
            Ok(Action::await_change())
        };
        let me = RepoRun::from(run.as_ref(), &HashSet::new());
        let existence = existence_of(&ctx, run.as_ref());
        let others = repo_runs(&ctx, K::OP, existence);
        let blocker = match blocking_run(&me, existence, &others) {
            Some(run) => Some(Blocker {
                what: format!("{} {}", run.op.kind(), run.key),
                op: Some(run.op),
            }),
            None => live_blocker(&ctx, &meta, run.backend(), existence).await?,
        };
        // Last, so that only a run free to start holds a claim.
        let blocker = blocker.or_else(|| claimed_by(&ctx, run.as_ref(), &me.key, existence));
        if let Some(blocker) = blocker {
            let message = waiting_message(&blocker, K::OP, existence);
            let status = with_state(
                previous.clone(),
                RunState::Pending,
                "WaitingForRepository",
                &message,
                generation,
                now,
            );
            let was_waiting = previous
                .conditions
                .iter()
                .any(|c| c.type_ == "Running" && c.reason == "WaitingForRepository");
            if apply_status(&ctx, &api, run.as_ref(), &written, &status).await? && !was_waiting {
                info!(kind = %K::OP.kind(), name = %meta.name, %message, "run waits");
                publish(&ctx, run.as_ref(), false, "WaitingForRepository", &message).await;
            }
            return Ok(Action::requeue(WAITING_RECHECK));
        }
        let (jobs, problems) = match build_jobs(&ctx, run.as_ref(), &meta).await {
            Ok(built) => built,
            Err(Error::InvalidSpec(reason)) => return fail("InvalidSpec", &reason).await,
            Err(error) => return Err(error),
        };
        ensure_rbac(&ctx, &meta.namespace).await?;
        let job_api: Api<Job> = Api::namespaced(ctx.client.clone(), &meta.namespace);
        let mut names = Vec::new();
        let mut created = false;
        for job in &jobs {
            let name = job.metadata.name.clone().unwrap_or_default();
            match job_api.create(&PostParams::default(), job).await {
                Ok(_) => {
                    created = true;
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
                        return fail("JobNameTaken", &reason).await;
                    }
                }
                Err(error) => {
                    let age = run
                        .meta()
                        .creation_timestamp
                        .as_ref()
                        .map(|t| now.duration_since(t.0))
                        .unwrap_or_default();
                    if age <= ctx.settings.stuck_after {
                        return Err(error.into());
                    }
                    // Retried for the whole start grace: the cause will not go away by itself.
                    let cause = match &error {
                        kube::Error::Api(status) => status.message.chars().take(300).collect(),
                        other => other.to_string(),
                    };
                    let reason = format!("creating Job {name} failed: {cause}");
                    return fail("JobNotCreated", &reason).await;
                }
            }
            names.push(name);
        }
        if created {
            let note = format!("created Job {}", names.join(", "));
            publish(&ctx, run.as_ref(), false, "Started", &note).await;
        }
        if let Some(tick) = tick_of(run.as_ref()).filter(|_| created) {
            let delay = jiff::Timestamp::now().duration_since(tick).as_secs_f64();
            ctx.metrics.tick_to_job_seconds.observe(delay.max(0.0));
        }
        let mut status = previous.clone();
        status.jobs = names;
        status.errors = problems;
        status.started_at = Some(Time(now));
        let status = with_state(status, RunState::Running, "JobRunning", "", generation, now);
        // Problems of planning exist nowhere else: they must be in the status now. Without
        // them, or without a Job cache to find the Jobs in, the status waits.
        if !status.errors.is_empty() || !ctx.stores.is_ready() {
            apply_status(&ctx, &api, run.as_ref(), &written, &status).await?;
        } else {
            ctx.unwritten_starts.wrote(&meta.uid, status);
        }
        return Ok(Action::requeue(RUNNING_RECHECK));
    }

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
    let pods = if needs_pods(&jobs, now, ctx.settings.stuck_after) {
        Api::<Pod>::namespaced(ctx.client.clone(), &meta.namespace)
            .list(&ListParams::default().labels(&selector))
            .await?
            .items
    } else {
        Vec::new()
    };
    let refused = if needs_pods(&jobs, now, ctx.settings.stuck_after) {
        refused::refused_jobs(&ctx, &meta.namespace, &jobs, &pods, now).await?
    } else {
        BTreeMap::new()
    };
    let status = status_from_jobs(
        &previous,
        &jobs,
        &pods,
        &refused,
        generation,
        now,
        ctx.settings.stuck_after,
    );
    if !status.state.is_some_and(RunState::is_terminal) {
        // Until a pod of the run has been going for a while, "Running" is not worth a write:
        // most runs end first, and a Job without pods (quota, admission) shows nothing.
        let has_pod = jobs
            .iter()
            .any(|j| j.status.as_ref().and_then(|s| s.active).unwrap_or(0) > 0);
        if written.jobs.is_empty() && !has_pod {
            return Ok(Action::requeue(RUNNING_RECHECK));
        }
        if written.jobs.is_empty() {
            let running_for = status
                .started_at
                .as_ref()
                .map(|t| now.duration_since(t.0))
                .unwrap_or_default();
            let wait = jiff::SignedDuration::try_from(RUNNING_RECHECK)
                .unwrap_or_default()
                .checked_sub(running_for)
                .unwrap_or_default();
            if wait.is_positive() {
                return Ok(Action::requeue(
                    Duration::try_from(wait).unwrap_or(RUNNING_RECHECK),
                ));
            }
        }
        apply_status(&ctx, &api, run.as_ref(), &written, &status).await?;
        ctx.unwritten_starts.forget(&meta.uid);
        return Ok(Action::requeue(RUNNING_RECHECK));
    }
    apply_status(&ctx, &api, run.as_ref(), &written, &status).await?;
    ctx.unwritten_starts.forget(&meta.uid);
    note_ended(&ctx, run.as_ref(), status.state);
    report_end(&ctx, run.as_ref(), &status).await;
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

mod refused;
#[cfg(test)]
mod tests;
