//! The operator's unfinished Jobs by repository, for the repository check before a run
//! starts. Asking the API server instead costs a cluster-wide list per run start, and the API
//! server reads every kept Job to answer it: at a tick of thousands of Schedules that list was
//! the most expensive request the operator made, and it grew with the square of the runs.
//!
//! The index answers for the API server once it can: only the leader creates the operator's
//! Jobs, and this index lives as long as one term of leadership. Every Job of an earlier
//! leader is in its first listing, every Job of this term is either in the watch or was
//! created by this process, which puts it here the moment the create returns.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::ResourceExt;
use kube::runtime::watcher;

use super::JobState;
use crate::crd::Operation;
use crate::job::status::status_ended;
use crate::job::{LABEL_OPERATION, LABEL_REPOSITORY};

/// How long after the first listing the index is trusted. A create of an earlier leader can
/// still be on its way to etcd when this replica takes over; the API server gives up on a
/// request after a minute (its default `--request-timeout`), so by then it has landed and the
/// watch has shown it, or it failed.
pub const TRUSTED_AFTER: Duration = Duration::from_secs(60);

/// How long a Job this process created counts without the watch having shown it. The watch
/// shows it within moments; only a Job that ended before its create returned is never shown
/// again, and it must not hold its repository for long.
pub const UNSEEN_HOLD: Duration = Duration::from_secs(60);

/// An unfinished Job of the operator.
#[derive(Clone, Debug, PartialEq)]
pub struct LiveJob {
    /// `namespace/name`.
    pub key: String,
    /// The operation its label names.
    pub op: Option<Operation>,
    /// The uids of its owners.
    pub owners: Vec<String>,
    /// When this process created it, until the watch shows it.
    unseen_since: Option<Instant>,
}

/// Unfinished Jobs by repository label, then by uid.
type ByRepository = HashMap<String, HashMap<String, LiveJob>>;

#[derive(Default)]
struct Index {
    jobs: ByRepository,
    /// The listing in progress when the watch (re)lists.
    relisting: Option<ByRepository>,
    /// When the first listing was complete.
    listed_at: Option<Instant>,
}

/// The operator's unfinished, undeleted Jobs, by repository.
#[derive(Clone, Default)]
pub struct LiveJobs {
    index: Arc<Mutex<Index>>,
}

/// The repository label and the entry of a Job that holds its repository; `None` for one
/// that ended, is being deleted or names no repository.
fn live(job: &JobState, unseen_since: Option<Instant>) -> Option<(String, String, LiveJob)> {
    if job.metadata.deletion_timestamp.is_some() || status_ended(job.status.as_ref()) {
        return None;
    }
    let repository = job.labels().get(LABEL_REPOSITORY)?.clone();
    let entry = LiveJob {
        key: format!("{}/{}", job.namespace().unwrap_or_default(), job.name_any()),
        op: job
            .labels()
            .get(LABEL_OPERATION)
            .and_then(|l| Operation::from_label(l)),
        owners: job
            .owner_references()
            .iter()
            .map(|o| o.uid.clone())
            .collect(),
        unseen_since,
    };
    Some((repository, job.uid().unwrap_or_default(), entry))
}

/// Forgets a Job. Its repository label is the one it was created with: the operator sets it
/// and nobody changes it.
fn remove(jobs: &mut ByRepository, job: &JobState) {
    let Some(repository) = job.labels().get(LABEL_REPOSITORY) else {
        return;
    };
    if let Some(entries) = jobs.get_mut(repository) {
        entries.remove(&job.uid().unwrap_or_default());
        if entries.is_empty() {
            jobs.remove(repository);
        }
    }
}

fn apply(jobs: &mut ByRepository, job: &JobState) {
    remove(jobs, job);
    if let Some((repository, uid, entry)) = live(job, None) {
        jobs.entry(repository).or_default().insert(uid, entry);
    }
}

impl LiveJobs {
    /// Follows one event of the Job watch, as the Job cache does.
    pub fn reflect(&self, event: &watcher::Event<JobState>, now: Instant) {
        let Ok(mut index) = self.index.lock() else {
            return;
        };
        match event {
            watcher::Event::Apply(job) => apply(&mut index.jobs, job),
            watcher::Event::Delete(job) => remove(&mut index.jobs, job),
            watcher::Event::Init => index.relisting = Some(ByRepository::new()),
            watcher::Event::InitApply(job) => {
                if let Some(relisting) = index.relisting.as_mut() {
                    apply(relisting, job);
                }
            }
            watcher::Event::InitDone => {
                let mut listed = index.relisting.take().unwrap_or_default();
                // A Job created after the listing was read shows in the watch only later.
                for (repository, entries) in &index.jobs {
                    for (uid, entry) in entries {
                        if entry
                            .unseen_since
                            .is_some_and(|at| now.saturating_duration_since(at) < UNSEEN_HOLD)
                        {
                            listed
                                .entry(repository.clone())
                                .or_default()
                                .entry(uid.clone())
                                .or_insert_with(|| entry.clone());
                        }
                    }
                }
                index.jobs = listed;
                index.listed_at.get_or_insert(now);
            }
        }
    }

    /// Notes a Job this process has just created, before the watch shows it. A Job the watch
    /// showed already keeps what the watch said.
    pub fn created(&self, job: &JobState, now: Instant) {
        let Some((repository, uid, entry)) = live(job, Some(now)) else {
            return;
        };
        if let Ok(mut index) = self.index.lock() {
            index
                .jobs
                .entry(repository)
                .or_default()
                .entry(uid)
                .or_insert(entry);
        }
    }

    /// Whether the index can answer for the API server at `now`.
    pub fn is_trusted(&self, now: Instant) -> bool {
        self.index.lock().is_ok_and(|index| {
            index
                .listed_at
                .is_some_and(|at| now.saturating_duration_since(at) >= TRUSTED_AFTER)
        })
    }

    /// An unfinished Job on `repository` of an operation `conflicts` accepts and not owned by
    /// `owner`, the first by key.
    pub fn blocker(
        &self,
        repository: &str,
        conflicts: impl Fn(Option<Operation>) -> bool,
        owner: &str,
        now: Instant,
    ) -> Option<LiveJob> {
        let index = self.index.lock().ok()?;
        index
            .jobs
            .get(repository)?
            .values()
            .filter(|job| {
                job.unseen_since
                    .is_none_or(|at| now.saturating_duration_since(at) < UNSEEN_HOLD)
            })
            .filter(|job| conflicts(job.op) && !job.owners.iter().any(|o| o == owner))
            .min_by(|a, b| a.key.cmp(&b.key))
            .cloned()
    }
}

/// An index that was filled with `jobs` long enough ago to be trusted.
#[cfg(test)]
pub fn trusted_long_ago(jobs: Vec<JobState>) -> LiveJobs {
    let live = LiveJobs::default();
    let then = Instant::now()
        .checked_sub(TRUSTED_AFTER)
        .unwrap_or_else(Instant::now);
    live.reflect(&watcher::Event::Init, then);
    for job in jobs {
        live.reflect(&watcher::Event::InitApply(job), then);
    }
    live.reflect(&watcher::Event::InitDone, then);
    live
}

#[cfg(test)]
mod tests;
