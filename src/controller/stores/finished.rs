//! The finished runs of Schedules, kept apart from the run caches as the few fields the
//! Schedule reads of them.
//!
//! A Schedule keeps up to `keepJobs` finished runs per operation (10 by default), so they are
//! most of the runs in a cluster, and all the reconciler ever reads of them again is their
//! name, state and times: the Schedule's history and last outcome. Even as an outline
//! ([`super::strip_run`]) a run object costs some 3 kB in a cache (the object itself, two
//! label and annotation maps, the owner reference and the cache's key); these entries cost a
//! few dozen bytes. A run the Schedule does not own (started without one, or a Restore) stays
//! in its cache as an outline: the run reconciler still looks at it once.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use kube::ResourceExt;
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher::Event;

use crate::controller::kinds::RunKind;
use crate::controller::memory::ProvenRepositories;
use crate::crd::{Operation, RunState, RunStatus};
use crate::job::LABEL_REPOSITORY;

/// On runs a Schedule created: the cron tick (RFC 3339) the run is for.
pub const ANNOTATION_TICK: &str = "backup.appuio.ch/tick";

/// What the Schedule reads of one of its finished runs.
#[derive(Clone, Debug, PartialEq)]
pub struct FinishedRun {
    /// Name of the run object.
    pub name: Box<str>,
    /// Its creationTimestamp.
    pub created: Option<jiff::Timestamp>,
    /// When it ended.
    pub finished: Option<jiff::Timestamp>,
    /// The cron tick it was created for, if a tick created it.
    pub tick: Option<jiff::Timestamp>,
    /// How it ended.
    pub state: RunState,
    /// For a Verify: when the newest snapshot it proved was taken.
    pub verified_snapshot: Option<jiff::Timestamp>,
}

/// The finished runs of one operation of one Schedule, by the Schedule's uid.
type Key = (Operation, Box<str>);

#[derive(Default)]
struct Inner {
    runs: HashMap<Key, Vec<FinishedRun>>,
    /// A watch that lists its kind again (after it lost track) fills a new set of runs and
    /// swaps it in when the list is complete, as the run caches do.
    relists: HashMap<Operation, Relist>,
}

#[derive(Default)]
struct Relist {
    runs: HashMap<Key, Vec<FinishedRun>>,
    /// Runs this process ended while the list was being read: the list may predate them.
    written: Vec<(Key, FinishedRun)>,
}

fn insert(runs: &mut HashMap<Key, Vec<FinishedRun>>, key: Key, run: FinishedRun) {
    let entries = runs.entry(key).or_default();
    entries.retain(|r| r.name != run.name);
    entries.push(run);
}

fn remove(runs: &mut HashMap<Key, Vec<FinishedRun>>, key: &Key, name: &str) {
    if let Some(entries) = runs.get_mut(key) {
        entries.retain(|r| &*r.name != name);
        if entries.is_empty() {
            runs.remove(key);
        }
    }
}

/// The finished runs of every Schedule, shared by the watches that fill it and the
/// reconcilers that read it.
#[derive(Clone, Default)]
pub struct FinishedRuns {
    inner: Arc<RwLock<Inner>>,
    proven: Arc<ProvenRepositories>,
}

/// The uid of the Schedule that owns `run`, if one does.
fn schedule_of<K: RunKind>(run: &K) -> Option<&str> {
    run.owner_references()
        .iter()
        .find(|o| o.kind == "Schedule")
        .map(|o| o.uid.as_str())
}

/// `run` as an entry, when it is a Schedule's run that has finished and is not being deleted.
fn entry_of<K: RunKind>(run: &K, status: Option<&RunStatus>) -> Option<(Key, FinishedRun)> {
    let status = status.filter(|s| s.is_finished())?;
    let state = status.state?;
    if run.meta().deletion_timestamp.is_some() {
        return None;
    }
    let schedule = schedule_of(run)?;
    let entry = FinishedRun {
        name: run.name_any().into(),
        created: run.meta().creation_timestamp.as_ref().map(|t| t.0),
        finished: status.finished_at.as_ref().map(|t| t.0),
        tick: run
            .annotations()
            .get(ANNOTATION_TICK)
            .and_then(|t| t.parse().ok()),
        state,
        verified_snapshot: status.newest_verified_snapshot.as_ref().map(|t| t.0),
    };
    Some(((K::OP, schedule.into()), entry))
}

impl FinishedRuns {
    /// The repositories known to exist, which finished Backups prove as they come by.
    pub fn proven(&self) -> Arc<ProvenRepositories> {
        self.proven.clone()
    }

    /// The finished runs of operation `op` that the Schedule with `uid` owns.
    pub fn of_schedule(&self, op: Operation, uid: &str) -> Vec<FinishedRun> {
        self.inner
            .read()
            .ok()
            .and_then(|inner| inner.runs.get(&(op, uid.into())).cloned())
            .unwrap_or_default()
    }

    /// Whether `run` is kept here as finished: its cache no longer holds it, or holds a
    /// status from before the end this process wrote.
    pub fn contains<K: RunKind>(&self, run: &K) -> bool {
        let Some(schedule) = schedule_of(run) else {
            return false;
        };
        let name = run.name_any();
        self.inner.read().is_ok_and(|inner| {
            inner
                .runs
                .get(&(K::OP, schedule.into()))
                .is_some_and(|runs| runs.iter().any(|r| *r.name == *name))
        })
    }

    /// Notes the end of `run` that this process has just written, before the watch shows
    /// it; false when the run is not kept here (not finished, or no Schedule's).
    pub fn wrote<K: RunKind>(&self, run: &K, status: &RunStatus) -> bool {
        let Some((key, entry)) = entry_of(run, Some(status)) else {
            return false;
        };
        let Ok(mut inner) = self.inner.write() else {
            return false;
        };
        if let Some(relist) = inner.relists.get_mut(&K::OP) {
            relist.written.push((key.clone(), entry.clone()));
        }
        insert(&mut inner.runs, key, entry);
        true
    }

    /// Applies one watch event of a run kind to its cache and to this index: a Schedule's
    /// finished run comes here and leaves the cache (as if deleted there), any other run goes
    /// to the cache.
    pub fn reflect<K: RunKind>(&self, writer: &mut Writer<K>, event: &Event<K>) {
        match event {
            Event::Apply(run) => match entry_of(run, run.run_status()) {
                Some((key, entry)) => {
                    self.prove(run);
                    if let Ok(mut inner) = self.inner.write() {
                        insert(&mut inner.runs, key, entry);
                    }
                    writer.apply_watcher_event(&Event::Delete(run.clone()));
                }
                None => {
                    self.forget(run);
                    writer.apply_watcher_event(event);
                }
            },
            Event::InitApply(run) => match entry_of(run, run.run_status()) {
                Some((key, entry)) => {
                    self.prove(run);
                    if let Ok(mut inner) = self.inner.write() {
                        let relist = inner.relists.entry(K::OP).or_default();
                        insert(&mut relist.runs, key, entry);
                    }
                }
                None => writer.apply_watcher_event(event),
            },
            Event::Delete(run) => {
                self.forget(run);
                writer.apply_watcher_event(event);
            }
            Event::Init => {
                if let Ok(mut inner) = self.inner.write() {
                    inner.relists.insert(K::OP, Relist::default());
                }
                writer.apply_watcher_event(event);
            }
            Event::InitDone => {
                if let Ok(mut inner) = self.inner.write() {
                    let relist = inner.relists.remove(&K::OP).unwrap_or_default();
                    inner.runs.retain(|key, _| key.0 != K::OP);
                    inner.runs.extend(relist.runs);
                    for (key, entry) in relist.written {
                        insert(&mut inner.runs, key, entry);
                    }
                }
                writer.apply_watcher_event(event);
            }
        }
    }

    fn forget<K: RunKind>(&self, run: &K) {
        let Some(schedule) = schedule_of(run) else {
            return;
        };
        if let Ok(mut inner) = self.inner.write() {
            remove(&mut inner.runs, &(K::OP, schedule.into()), &run.name_any());
        }
    }

    /// A Backup that wrote a snapshot proves its repository. The run reconciler does this for
    /// the runs in its cache; these no longer come by it.
    fn prove<K: RunKind>(&self, run: &K) {
        let state = run.run_status().and_then(|s| s.state);
        if K::OP == Operation::Backup
            && matches!(
                state,
                Some(RunState::Succeeded | RunState::PartiallySucceeded)
            )
            && let Some(label) = run.labels().get(LABEL_REPOSITORY)
        {
            self.proven.insert(label.clone());
        }
    }
}

#[cfg(test)]
mod tests;
