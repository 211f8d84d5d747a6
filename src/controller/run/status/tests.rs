use super::*;

use crate::controller::fixtures::{at, job, pod_terminated, pod_waiting, report, running};

const STUCK: jiff::SignedDuration = jiff::SignedDuration::from_mins(3);

#[test]
fn completed_job_with_report_gives_succeeded_status_with_snapshot() {
    let message = report(RunState::Succeeded, "abc").to_termination_message();
    let status = status_from_jobs(
        &running(&["r-backup"]),
        &[job("r-backup", Some(("Complete", "Completed")))],
        &[pod_terminated("r-backup", 0, "Completed", Some(message))],
        &BTreeMap::new(),
        Some(1),
        at("2026-01-01T00:05:00Z"),
        STUCK,
    );
    assert_eq!(status.state, Some(RunState::Succeeded));
    assert_eq!(status.snapshot_id.as_deref(), Some("abc"));
    assert_eq!(
        status.summary.as_ref().and_then(|s| s.total_bytes),
        Some(1000)
    );
    assert_eq!(status.duration_seconds, Some(2.5));
    assert!(status.finished_at.is_some());
    assert_eq!(
        conditions(&status),
        [
            ("Finished", "True", "Succeeded"),
            ("Complete", "True", "Succeeded"),
            ("Failed", "False", "Succeeded"),
            ("Running", "False", "Succeeded"),
        ]
    );
}

/// (type, status, reason) of each condition.
fn conditions(status: &RunStatus) -> Vec<(&str, &str, &str)> {
    status
        .conditions
        .iter()
        .map(|c| (c.type_.as_str(), c.status.as_str(), c.reason.as_str()))
        .collect()
}

#[test]
fn failed_run_is_finished_and_failed_never_complete() {
    let status = with_state(
        RunStatus::default(),
        RunState::Failed,
        "PodsRefused",
        "pods are forbidden",
        Some(1),
        at("2026-01-01T00:05:00Z"),
    );
    assert_eq!(
        conditions(&status),
        [
            ("Finished", "True", "PodsRefused"),
            ("Complete", "False", "Failed"),
            ("Failed", "True", "PodsRefused"),
            ("Running", "False", "Failed"),
        ]
    );
}

#[test]
fn partial_backup_counts_as_failed_for_waiters() {
    let status = with_state(
        RunStatus::default(),
        RunState::PartiallySucceeded,
        "PartiallySucceeded",
        "1 of 2 Jobs succeeded",
        Some(1),
        at("2026-01-01T00:05:00Z"),
    );
    let of = |type_: &str| {
        conditions(&status)
            .into_iter()
            .find(|c| c.0 == type_)
            .map(|c| c.1.to_string())
    };
    assert_eq!(of("Complete").as_deref(), Some("False"));
    assert_eq!(of("Failed").as_deref(), Some("True"));
    assert_eq!(of("Finished").as_deref(), Some("True"));
}

#[test]
fn waiting_and_running_runs_are_not_finished() {
    let waiting = with_state(
        RunStatus::default(),
        RunState::Pending,
        "WaitingForRepository",
        "waiting for Prune a/p",
        Some(1),
        at("2026-01-01T00:05:00Z"),
    );
    assert_eq!(
        conditions(&waiting),
        [
            ("Finished", "False", "WaitingForRepository"),
            ("Complete", "False", "WaitingForRepository"),
            ("Failed", "False", "WaitingForRepository"),
            ("Running", "False", "WaitingForRepository"),
        ]
    );
    let running = with_state(
        waiting,
        RunState::Running,
        "JobRunning",
        "",
        Some(1),
        at("2026-01-01T00:06:00Z"),
    );
    assert_eq!(conditions(&running)[3], ("Running", "True", "JobRunning"));
    assert_eq!(conditions(&running)[0], ("Finished", "False", "JobRunning"));
}

#[test]
fn failed_job_with_success_report_never_shows_success() {
    let message = report(RunState::Succeeded, "abc").to_termination_message();
    let status = status_from_jobs(
        &running(&["r-backup"]),
        &[job("r-backup", Some(("Failed", "BackoffLimitExceeded")))],
        &[pod_terminated("r-backup", 1, "Error", Some(message))],
        &BTreeMap::new(),
        Some(1),
        at("2026-01-01T00:05:00Z"),
        STUCK,
    );
    assert_eq!(status.state, Some(RunState::Failed));
}

#[test]
fn partial_report_stays_partial() {
    let mut partial = report(RunState::PartiallySucceeded, "abc");
    partial.errors = vec!["/data/db/secret: permission denied".into()];
    let status = status_from_jobs(
        &running(&["r-backup"]),
        &[job("r-backup", Some(("Complete", "Completed")))],
        &[pod_terminated(
            "r-backup",
            0,
            "Completed",
            Some(partial.to_termination_message()),
        )],
        &BTreeMap::new(),
        Some(1),
        at("2026-01-01T00:05:00Z"),
        STUCK,
    );
    assert_eq!(status.state, Some(RunState::PartiallySucceeded));
    assert_eq!(status.errors, vec!["/data/db/secret: permission denied"]);
}

#[test]
fn job_past_deadline_without_report_fails_with_the_reason() {
    let status = status_from_jobs(
        &running(&["r-check"]),
        &[job("r-check", Some(("Failed", "DeadlineExceeded")))],
        &[],
        &BTreeMap::new(),
        Some(1),
        at("2026-01-01T00:05:00Z"),
        STUCK,
    );
    assert_eq!(status.state, Some(RunState::Failed));
    assert!(
        status
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("DeadlineExceeded"),
        "{:?}",
        status.message
    );
}

#[test]
fn oom_killed_agent_fails_with_oomkilled() {
    let status = status_from_jobs(
        &running(&["r-prune"]),
        &[job("r-prune", Some(("Failed", "BackoffLimitExceeded")))],
        &[pod_terminated("r-prune", 137, "OOMKilled", None)],
        &BTreeMap::new(),
        Some(1),
        at("2026-01-01T00:05:00Z"),
        STUCK,
    );
    assert_eq!(status.state, Some(RunState::Failed));
    assert!(
        status
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("OOMKilled"),
        "{:?}",
        status.message
    );
}

#[test]
fn pod_stuck_on_missing_secret_fails_after_grace() {
    let pods = [pod_waiting(
        "r-backup",
        "CreateContainerConfigError",
        "secret \"backup-repo\" not found",
    )];
    let jobs = [job("r-backup", None)];
    let early = status_from_jobs(
        &running(&["r-backup"]),
        &jobs,
        &pods,
        &BTreeMap::new(),
        Some(1),
        at("2026-01-01T00:01:00Z"),
        STUCK,
    );
    assert_eq!(early.state, Some(RunState::Running));
    let late = status_from_jobs(
        &running(&["r-backup"]),
        &jobs,
        &pods,
        &BTreeMap::new(),
        Some(1),
        at("2026-01-01T00:04:00Z"),
        STUCK,
    );
    assert_eq!(late.state, Some(RunState::Failed));
    assert!(
        late.message
            .as_deref()
            .unwrap_or_default()
            .contains("secret \"backup-repo\" not found"),
        "{:?}",
        late.message
    );
}

#[test]
fn deleted_job_fails_the_run() {
    let status = status_from_jobs(
        &running(&["r-backup"]),
        &[],
        &[],
        &BTreeMap::new(),
        Some(1),
        at("2026-01-01T00:05:00Z"),
        STUCK,
    );
    assert_eq!(status.state, Some(RunState::Failed));
    assert!(
        status
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("deleted"),
        "{:?}",
        status.message
    );
}

#[test]
fn running_job_keeps_status_unchanged() {
    let previous = running(&["r-backup"]);
    let status = status_from_jobs(
        &previous,
        &[job("r-backup", None)],
        &[],
        &BTreeMap::new(),
        Some(1),
        at("2026-01-01T00:05:00Z"),
        STUCK,
    );
    assert_eq!(status, previous);
}

#[test]
fn one_of_two_jobs_failing_is_partial_and_keeps_the_snapshot() {
    let ok = report(RunState::Succeeded, "abc").to_termination_message();
    let status = status_from_jobs(
        &running(&["r-a", "r-b"]),
        &[
            job("r-a", Some(("Complete", "Completed"))),
            job("r-b", Some(("Failed", "BackoffLimitExceeded"))),
        ],
        &[
            pod_terminated("r-a", 0, "Completed", Some(ok)),
            pod_terminated("r-b", 1, "Error", None),
        ],
        &BTreeMap::new(),
        Some(1),
        at("2026-01-01T00:05:00Z"),
        STUCK,
    );
    assert_eq!(status.state, Some(RunState::PartiallySucceeded));
    assert_eq!(status.snapshot_id.as_deref(), Some("abc"));
    assert!(
        status
            .message
            .as_deref()
            .unwrap_or_default()
            .starts_with("1 of 2 Jobs succeeded"),
        "{:?}",
        status.message
    );
}

#[test]
fn planning_problem_makes_successful_backup_partial() {
    let mut previous = running(&["r-backup"]);
    previous.errors = vec!["persistentvolumeclaim solo: ReadWriteOncePod and in use".into()];
    let message = report(RunState::Succeeded, "abc").to_termination_message();
    let status = status_from_jobs(
        &previous,
        &[job("r-backup", Some(("Complete", "Completed")))],
        &[pod_terminated("r-backup", 0, "Completed", Some(message))],
        &BTreeMap::new(),
        Some(1),
        at("2026-01-01T00:05:00Z"),
        STUCK,
    );
    assert_eq!(status.state, Some(RunState::PartiallySucceeded));
    assert_eq!(status.errors.len(), 1);
}

#[test]
fn unchanged_condition_keeps_its_transition_time() {
    let first = with_state(
        RunStatus::default(),
        RunState::Pending,
        "WaitingForRepository",
        "m",
        None,
        at("2026-01-01T00:00:00Z"),
    );
    let again = with_state(
        first.clone(),
        RunState::Pending,
        "WaitingForRepository",
        "m",
        None,
        at("2026-01-01T00:10:00Z"),
    );
    assert_eq!(first, again);
}

fn verify_report() -> RunReport {
    let time = |t: &str| Some(Time(at(t)));
    RunReport {
        state: Some(RunState::Succeeded),
        verified: vec![
            crate::crd::VerifiedSnapshot {
                id: "aaa".into(),
                paths: vec!["/data/db".into()],
                time: time("2026-01-01T01:00:00Z"),
                checks: vec!["content".into(), "summary".into()],
                ..Default::default()
            },
            crate::crd::VerifiedSnapshot {
                id: "bbb".into(),
                paths: vec!["/team-db-0-mariadb".into()],
                time: time("2026-01-01T01:00:05Z"),
                checks: vec!["stream".into()],
                ..Default::default()
            },
        ],
        message: "verified 2 snapshots".into(),
        ..RunReport::default()
    }
}

#[test]
fn verification_whose_app_check_passed_succeeds_and_names_its_newest_snapshot() {
    let status = status_from_jobs(
        &running(&["r-verify"]),
        &[job("r-verify", Some(("Complete", "Completed")))],
        &[crate::controller::fixtures::pod_verified(
            "r-verify",
            &verify_report(),
            0,
            "ok",
        )],
        &BTreeMap::new(),
        Some(1),
        at("2026-01-01T02:00:00Z"),
        STUCK,
    );
    assert_eq!(status.state, Some(RunState::Succeeded), "{status:#?}");
    assert_eq!(status.verified.len(), 2);
    assert_eq!(
        status.newest_verified_snapshot,
        Some(Time(at("2026-01-01T01:00:05Z")))
    );
    assert!(
        status
            .message
            .as_deref()
            .is_some_and(|m| m.contains("application check passed")),
        "{status:#?}"
    );
}

#[test]
fn failed_app_check_fails_the_verification_with_its_last_output_lines_first() {
    let output = "loading the dump\nERROR 1064 (42000) at line 12: syntax error\nno rows\n";
    let status = status_from_jobs(
        &running(&["r-verify"]),
        &[job("r-verify", Some(("Failed", "BackoffLimitExceeded")))],
        &[crate::controller::fixtures::pod_verified(
            "r-verify",
            &verify_report(),
            1,
            output,
        )],
        &BTreeMap::new(),
        Some(1),
        at("2026-01-01T02:00:00Z"),
        STUCK,
    );
    assert_eq!(status.state, Some(RunState::Failed));
    let first = status.errors.first().cloned().unwrap_or_default();
    assert!(
        first.starts_with("application check failed: container app-check exited with code 1")
            && first.contains("ERROR 1064"),
        "{first}"
    );
    assert_eq!(
        status.newest_verified_snapshot, None,
        "a failed run proves nothing"
    );
}

#[test]
fn verification_with_a_failed_snapshot_keeps_every_entry_but_moves_no_verified_time() {
    let mut report = verify_report();
    report.state = Some(RunState::Failed);
    report.verified[0].error = Some("pack 5f3e is missing".into());
    report.errors = vec!["snapshot aaa (/data/db): pack 5f3e is missing".into()];
    let status = status_from_jobs(
        &running(&["r-verify"]),
        &[job("r-verify", Some(("Failed", "BackoffLimitExceeded")))],
        &[pod_terminated(
            "r-verify",
            1,
            "Error",
            Some(report.to_termination_message()),
        )],
        &BTreeMap::new(),
        Some(1),
        at("2026-01-01T02:00:00Z"),
        STUCK,
    );
    assert_eq!(status.state, Some(RunState::Failed));
    assert_eq!(status.verified.len(), 2);
    assert_eq!(status.newest_verified_snapshot, None);
    assert!(
        status.errors[0].contains("snapshot aaa (/data/db)"),
        "{:?}",
        status.errors
    );
}
