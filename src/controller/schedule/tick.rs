//! The pure decisions of a Schedule: which tick is due, and what its status says about its
//! runs. Times come in as parameters, so each is a plain function of its inputs.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::crd::schedule::OperationStatus;
use crate::crd::{RunState, ScheduleStatus};
use crate::cron::CronSchedule;

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
    /// A Verify that succeeded: when the newest snapshot it verified was taken.
    pub verified_snapshot: Option<jiff::Timestamp>,
}

impl OwnedRun {
    /// Whether it has ended.
    pub fn terminal(&self) -> bool {
        self.state.is_some_and(RunState::is_terminal)
    }
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
        for op in [
            &mut status.backup,
            &mut status.check,
            &mut status.prune,
            &mut status.verify,
        ] {
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

/// When the newest snapshot proven to restore was taken: the newest of the successful
/// verifications' snapshots and of what the status recorded before, since the run that proved
/// it may have left the history since.
pub fn last_verified(previous: &OperationStatus, runs: &[OwnedRun]) -> Option<Time> {
    runs.iter()
        .filter(|r| r.state == Some(RunState::Succeeded))
        .filter_map(|r| r.verified_snapshot)
        .chain(previous.last_verified_snapshot.as_ref().map(|t| t.0))
        .max()
        .map(Time)
}
