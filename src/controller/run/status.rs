//! The status arithmetic of a run, without IO: conditions, the outcome of each Job from its
//! status and pods, and the run's status from its Jobs. Times come in as `now`, so every
//! decision here is a plain function of its inputs.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;
use tracing::debug;

use crate::controller::context::now_seconds;
use crate::crd::{RunState, RunStatus, Summary};
use crate::job::status::{is_pod_of, job_condition, job_ended};
use crate::job::{AGENT_CONTAINER, APP_CHECK_CONTAINER};
use crate::report::RunReport;

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

pub fn state_name(state: RunState) -> &'static str {
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
    // A verification's agent runs as an init container, before its application check.
    let statuses = || {
        mine.iter().flat_map(|p| p.status.iter()).flat_map(|s| {
            s.init_container_statuses
                .iter()
                .flatten()
                .chain(s.container_statuses.iter().flatten())
        })
    };
    let report = statuses()
        .filter(|c| c.name == AGENT_CONTAINER)
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref())
        .find_map(|t| RunReport::from_termination_message(t.message.as_deref()?));
    let complete = job_condition(job, "Complete").is_some();
    let failed = job_condition(job, "Failed");
    if complete || failed.is_some() {
        if let Some(mut report) = report {
            if let Some(check) = statuses().find(|c| c.name == APP_CHECK_CONTAINER) {
                app_check_outcome(&mut report, check);
            }
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

/// Adds the application check's outcome to the agent's report: a check that exited non-zero
/// fails the run with the last lines of its output as the cause.
fn app_check_outcome(report: &mut RunReport, check: &ContainerStatus) {
    let Some(ended) = check.state.as_ref().and_then(|s| s.terminated.as_ref()) else {
        return;
    };
    if ended.exit_code == 0 {
        report.message.push_str("; application check passed");
        return;
    }
    let output = ended
        .message
        .as_deref()
        .map(crate::redact::redact)
        .map(|m| {
            let lines: Vec<&str> = m.lines().filter(|l| !l.trim().is_empty()).collect();
            let tail = lines[lines.len().saturating_sub(3)..].join(" | ");
            let skip = tail.chars().count().saturating_sub(300);
            format!(": {}", tail.chars().skip(skip).collect::<String>())
        })
        .unwrap_or_default();
    let cause = format!(
        "application check failed: container {APP_CHECK_CONTAINER} exited with code {}{output}",
        ended.exit_code
    );
    report.state = Some(RunState::Failed);
    report.errors.insert(0, cause.clone());
    report.message = cause;
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
    let mut verified = Vec::new();
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
                verified.extend(report.verified.iter().cloned());
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
    // Only a verification that proved everything moves the Schedule's "verified" time on.
    status.newest_verified_snapshot = if state == RunState::Succeeded {
        verified
            .iter()
            .filter(|v| v.error.is_none())
            .filter_map(|v| v.time.clone())
            .max_by_key(|t| t.0)
    } else {
        None
    };
    status.verified = verified;
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

/// The status of a run whose Jobs exist although no status names them yet: the Running status
/// is written late (see [`reconcile`]), so the Jobs in the cache are the truth.
pub fn started_from_jobs(
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
pub fn needs_pods(jobs: &[Job], now: jiff::Timestamp, stuck_after: jiff::SignedDuration) -> bool {
    jobs.iter().any(|j| {
        job_ended(j)
            || j.metadata
                .creation_timestamp
                .as_ref()
                .is_none_or(|t| now.duration_since(t.0) > stuck_after)
    })
}

#[cfg(test)]
mod tests;
