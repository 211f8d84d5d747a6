//! Repository exclusivity: which run must wait for which, following the locks restic takes,
//! from the caches first and then from the API server, and the claims of first backups to
//! create a repository.

use std::collections::HashSet;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use kube::api::ListParams;
use kube::runtime::reflector::Store;
use kube::{Api, ResourceExt};

use crate::Result;
use crate::controller::context::Context;
use crate::controller::kinds::RunKind;
use crate::crd::{Backend, Operation, RunState};
use crate::job::status::job_ended;
use crate::job::{self, LABEL_OPERATION, RunMeta};

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
/// `prune` lock the repository exclusively, `backup`, `restore` and `dump` share it (a
/// Verify only restores). So a Check or Prune waits for every active run on the repository;
/// a Backup, Restore or Verify waits for an active Check or Prune. Either also waits for an older Check or Prune that waits
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
        Operation::Restore | Operation::Verify => false,
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
        add(&mut runs, &stores.verifies, &with_jobs);
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
pub fn note_ended<K: RunKind>(ctx: &Context, run: &K, state: Option<RunState>) {
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

/// Whether an unfinished Job of `op` (`None`: a Job that names none) conflicts with `me`:
/// for a Check or Prune every Job does, for a Backup, Restore or Verify those of checks and
/// prunes, and for a Backup on a repository not known to exist those of other backups too.
fn job_conflicts(me: Operation, existence: RepoExistence, op: Option<Operation>) -> bool {
    match me {
        Operation::Check | Operation::Prune => true,
        _ => match op {
            Some(Operation::Check | Operation::Prune) => true,
            Some(Operation::Backup) => waits_for_backups(me, existence),
            _ => false,
        },
    }
}

fn job_blocker(op: Option<Operation>, key: &str) -> Blocker {
    Blocker {
        what: format!("{} Job {key}", op.map_or("a", Operation::as_str)),
        op,
    }
}

/// The label selector of the Jobs on `repository` that `conflicts` may count, narrowed to
/// their operations when it does not count every Job: the rule is [`job_conflicts`] alone.
fn conflict_selector(repository: &str, conflicts: impl Fn(Option<Operation>) -> bool) -> String {
    let mut selector = format!(
        "{}={},{}={repository}",
        job::LABEL_MANAGED_BY,
        job::MANAGER,
        job::LABEL_REPOSITORY,
    );
    if !conflicts(None) {
        let ops: Vec<&str> = Operation::ALL
            .into_iter()
            .filter(|op| conflicts(Some(*op)))
            .map(Operation::as_str)
            .collect();
        selector.push_str(&format!(",{LABEL_OPERATION} in ({})", ops.join(",")));
    }
    selector
}

/// The unfinished Job on the repository that conflicts with `me`, if any. The run caches can
/// lag behind the Jobs (a Job created a moment ago shows in its run's status later), so the
/// Jobs themselves tell: from the index of live Jobs once it can be trusted (see
/// [`crate::controller::stores::LiveJobs`]), else from the API server.
async fn live_blocker(
    ctx: &Context,
    me: &RunMeta,
    backend: &Backend,
    existence: RepoExistence,
) -> Result<Option<Blocker>> {
    let repository = job::repository_label(&job::repository_url(backend));
    let conflicts = |op| job_conflicts(me.op, existence, op);
    let now = std::time::Instant::now();
    let live = &ctx.stores.live_jobs;
    if ctx.stores.is_ready() && live.is_trusted(now) {
        return Ok(live
            .blocker(&repository, conflicts, &me.uid, now)
            .map(|j| job_blocker(j.op, &j.key)));
    }
    let selector = conflict_selector(&repository, conflicts);
    let jobs = Api::<Job>::all(ctx.client.clone())
        .list(&ListParams::default().labels(&selector))
        .await?;
    Ok(jobs
        .items
        .iter()
        .map(|j| {
            let op = j.labels().get(LABEL_OPERATION);
            (j, op.and_then(|l| Operation::from_label(l)))
        })
        .find(|(j, op)| {
            j.metadata.deletion_timestamp.is_none()
                && !j.owner_references().iter().any(|o| o.uid == me.uid)
                && !job_ended(j)
                && conflicts(*op)
        })
        .map(|(j, op)| {
            let key = format!("{}/{}", j.namespace().unwrap_or_default(), j.name_any());
            job_blocker(op, &key)
        }))
}

/// What `run` must wait for before it starts, as the message of its waiting status: a run in
/// the caches, else a Job the API server knows of, and last another backup's claim to create
/// the repository, so that only a run free to start holds a claim.
pub async fn wait_reason<K: RunKind>(
    ctx: &Context,
    run: &K,
    meta: &RunMeta,
) -> Result<Option<String>> {
    let me = RepoRun::from(run, &HashSet::new());
    let existence = existence_of(ctx, run);
    let others = repo_runs(ctx, K::OP, existence);
    let blocker = match blocking_run(&me, existence, &others) {
        Some(run) => Some(Blocker {
            what: format!("{} {}", run.op.kind(), run.key),
            op: Some(run.op),
        }),
        None => live_blocker(ctx, meta, run.backend(), existence).await?,
    };
    let blocker = blocker.or_else(|| claimed_by(ctx, run, &me.key, existence));
    Ok(blocker.map(|blocker| waiting_message(&blocker, K::OP, existence)))
}

#[cfg(test)]
mod tests;
