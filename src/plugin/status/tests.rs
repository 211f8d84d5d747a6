use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};

use super::*;
use crate::crd::ScheduleStatus;

fn ts(text: &str) -> jiff::Timestamp {
    text.parse().expect("a timestamp")
}

fn schedule(name: &str, uid: &str) -> Schedule {
    Schedule {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("shop".into()),
            uid: Some(uid.into()),
            ..ObjectMeta::default()
        },
        status: Some(ScheduleStatus {
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: "True".into(),
                reason: "Scheduled".into(),
                message: String::new(),
                last_transition_time: Time(ts("2026-12-01T00:00:00Z")),
                observed_generation: None,
            }],
            backup: Some(OperationStatus {
                next_run: Some(Time(ts("2026-12-02T01:00:00Z"))),
                last_state: Some("Succeeded".into()),
                ..OperationStatus::default()
            }),
            ..ScheduleStatus::default()
        }),
        spec: crate::crd::ScheduleSpec {
            backup: Some(crate::crd::schedule::BackupSchedule {
                schedule: "0 1 * * *".into(),
                ..Default::default()
            }),
            ..Default::default()
        },
    }
}

fn run(owner: &str, op: Operation, name: &str, minute: i64, state: RunState) -> RunView {
    let at = |m: i64| Some(ts("2026-12-01T12:00:00Z") + jiff::SignedDuration::from_mins(m));
    RunView {
        owner: Some(owner.into()),
        op,
        name: name.into(),
        state: Some(state),
        created: at(minute),
        started: at(minute),
        finished: state.is_terminal().then(|| at(minute + 1)).flatten(),
        snapshot: Some(format!("{name}0123456789")),
    }
}

#[test]
fn status_shows_the_newest_backup_of_its_own_schedule_and_counts_failures() {
    let runs = [
        run("uid-1", Operation::Backup, "old", 0, RunState::Failed),
        run("uid-1", Operation::Backup, "new", 10, RunState::Succeeded),
        run("uid-1", Operation::Check, "chk", 5, RunState::Failed),
        run("uid-1", Operation::Prune, "prn", 6, RunState::Succeeded),
        // a newer backup of another Schedule (another UID) never counts
        run("uid-2", Operation::Backup, "other", 20, RunState::Failed),
    ];
    let report = report(
        &schedule("nightly", "uid-1"),
        &runs,
        ts("2026-12-01T12:16:00Z"),
    );
    let last = report.last_backup.clone().expect("a last backup");
    assert_eq!(last.name.as_deref(), Some("new"));
    assert_eq!(last.state.as_deref(), Some("Succeeded"));
    assert_eq!(last.snapshot_id.as_deref(), Some("new0123456789"));
    assert_eq!(
        report.failed_runs,
        FailedRuns {
            backup: 1,
            check: 1,
            prune: 0,
            verify: 0
        }
    );
    assert_eq!(report.kept_runs, 4);

    let now = ts("2026-12-01T12:16:00Z");
    assert_eq!(
        table(std::slice::from_ref(&report), now, false, false).render(true),
        "NAME      LAST BACKUP   AGE   SNAPSHOT   NEXT BACKUP   FAILED   READY   REASON\n\
         nightly   Succeeded     5m    new01234   in 12h        2        True    Scheduled\n"
    );
    let wide = table(&[report], now, true, true).render(false);
    assert_eq!(
        wide,
        "shop   nightly   Succeeded   5m   new01234   in 12h   2   True   Scheduled   new   <none>   <none>   <none>\n"
    );
}

#[test]
fn running_backup_shows_as_the_last_one_without_a_snapshot() {
    let mut running = run("uid-1", Operation::Backup, "now", 10, RunState::Running);
    running.snapshot = None;
    let report = report(
        &schedule("nightly", "uid-1"),
        &[running],
        ts("2026-12-01T12:10:30Z"),
    );
    let row = table(&[report], ts("2026-12-01T12:10:30Z"), false, false).render(false);
    assert!(
        row.starts_with("nightly   Running   30s   <none>   in 12h"),
        "{row}"
    );
}

#[test]
fn next_backup_comes_from_the_cron_and_a_suspended_schedule_has_none() {
    let mut schedule = schedule("nightly", "uid-1");
    // the status still names a tick that has passed
    let now = ts("2026-12-02T01:00:30Z");
    let report = report(&schedule, &[], now);
    assert_eq!(report.next_backup, Some(ts("2026-12-03T01:00:00Z")));
    schedule.spec.suspend = Some(true);
    assert_eq!(super::report(&schedule, &[], now).next_backup, None);
}

#[test]
fn backup_without_status_yet_is_pending() {
    let mut fresh = run("uid-1", Operation::Backup, "b", 0, RunState::Pending);
    fresh.state = None;
    let report = report(
        &schedule("nightly", "uid-1"),
        &[fresh],
        ts("2026-12-01T12:00:00Z"),
    );
    assert_eq!(
        report.last_backup.and_then(|l| l.state).as_deref(),
        Some("Pending")
    );
}

#[test]
fn schedule_whose_runs_are_gone_still_shows_its_last_state() {
    let report = report(
        &schedule("nightly", "uid-1"),
        &[],
        ts("2026-12-01T12:00:00Z"),
    );
    let last = report.last_backup.expect("from the status");
    assert_eq!(last.state.as_deref(), Some("Succeeded"));
    assert_eq!(last.name, None);
}

#[test]
fn new_schedule_without_status_shows_none() {
    let mut new = schedule("fresh", "uid-9");
    new.status = None;
    new.spec.backup = None;
    let report = report(&new, &[], ts("2026-12-01T12:00:00Z"));
    let row = table(
        std::slice::from_ref(&report),
        ts("2026-12-01T12:00:00Z"),
        false,
        false,
    )
    .render(false);
    assert_eq!(
        row,
        "fresh   <none>   <none>   <none>   <none>   0   <none>   <none>\n"
    );
    let json = serde_json::to_value(&report).expect("serialises");
    assert_eq!(json["name"], "fresh");
    assert_eq!(json["failedRuns"]["backup"], 0);
    assert!(json.get("lastBackup").is_none());
}
