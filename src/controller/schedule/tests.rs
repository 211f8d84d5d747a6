use super::*;
use crate::controller::Stores;
use crate::controller::fixtures::{
    Handle, at, backend, filled, filled_runs, mock_context, respond, schedule,
};
use crate::controller::stores::FinishedRuns;
use crate::crd::RunState;
use crate::crd::schedule::OperationStatus;
use crate::cron::CronSchedule;
use http::Request;
use kube::client::Body;
use serde_json::{Value, json};

fn cron(expression: &str) -> CronSchedule {
    crate::cron::parse(expression).expect("test cron")
}

const HOUR: jiff::SignedDuration = jiff::SignedDuration::from_hours(1);

#[test]
fn tick_just_passed_is_due_and_next_is_the_following_tick() {
    let decision = decide_tick(
        &cron("0 1 * * *"),
        at("2026-01-02T01:00:00.2Z"),
        Some(at("2026-01-01T01:00:00Z")),
        None,
        HOUR,
    );
    assert_eq!(decision.due, Some(at("2026-01-02T01:00:00Z")));
    assert_eq!(decision.next, Some(at("2026-01-03T01:00:00Z")));
}

#[test]
fn tick_already_handled_is_not_due_again() {
    let decision = decide_tick(
        &cron("0 1 * * *"),
        at("2026-01-02T01:00:30Z"),
        Some(at("2026-01-02T01:00:00Z")),
        None,
        HOUR,
    );
    assert_eq!(decision.due, None);
}

#[test]
fn missed_ticks_collapse_into_one_run_of_the_latest() {
    // Operator down from 00:03 to 00:40 with a tick every 5 minutes: one run, for 00:40.
    let decision = decide_tick(
        &cron("*/5 * * * *"),
        at("2026-01-01T00:41:10Z"),
        Some(at("2026-01-01T00:00:00Z")),
        None,
        HOUR,
    );
    assert_eq!(decision.due, Some(at("2026-01-01T00:40:00Z")));
}

#[test]
fn missed_tick_older_than_the_window_is_skipped() {
    let decision = decide_tick(
        &cron("0 1 * * *"),
        at("2026-01-02T03:00:00Z"),
        Some(at("2026-01-01T01:00:00Z")),
        None,
        HOUR,
    );
    assert_eq!(decision.due, None);
    assert_eq!(decision.next, Some(at("2026-01-03T01:00:00Z")));
}

#[test]
fn tick_before_the_schedule_existed_does_not_run() {
    let decision = decide_tick(
        &cron("0 * * * *"),
        at("2026-01-01T10:30:00Z"),
        None,
        Some(at("2026-01-01T10:20:00Z")),
        HOUR,
    );
    assert_eq!(decision.due, None);
    let decision = decide_tick(
        &cron("0 * * * *"),
        at("2026-01-01T11:00:01Z"),
        None,
        Some(at("2026-01-01T10:20:00Z")),
        HOUR,
    );
    assert_eq!(decision.due, Some(at("2026-01-01T11:00:00Z")));
}

fn owned_run(name: &str, tick: &str, state: Option<RunState>) -> OwnedRun {
    OwnedRun {
        verified_snapshot: None,
        name: name.into(),
        created: Some(at(tick)),
        state,
        finished: None,
        tick: Some(at(tick)),
    }
}

#[test]
fn last_run_catches_up_with_the_newest_run_object() {
    let mut status = OperationStatus {
        last_run: Some(Time(at("2026-01-01T00:01:00Z"))),
        last_run_name: Some("s-backup-202601010001".into()),
        ..OperationStatus::default()
    };
    let runs = [
        owned_run(
            "s-backup-202601010001",
            "2026-01-01T00:01:00Z",
            Some(RunState::Failed),
        ),
        owned_run("s-backup-202601010002", "2026-01-01T00:02:00Z", None),
    ];
    catch_up_last_run(&mut status, &runs);
    assert_eq!(status.last_run, Some(Time(at("2026-01-01T00:02:00Z"))));
    assert_eq!(
        status.last_run_name.as_deref(),
        Some("s-backup-202601010002")
    );
    // The tick of the newest run is handled: it is not due again.
    let decision = decide_tick(
        &cron("* * * * *"),
        at("2026-01-01T00:02:05Z"),
        status.last_run.as_ref().map(|t| t.0),
        None,
        HOUR,
    );
    assert_eq!(decision.due, None);
}

#[test]
fn new_tick_alone_is_no_reason_to_write_the_status() {
    let op = |tick: &str, next: &str, state: &str| OperationStatus {
        last_run: Some(Time(at(tick))),
        last_run_name: Some(format!("s-{tick}")),
        next_run: Some(Time(at(next))),
        last_state: Some(state.into()),
        ..OperationStatus::default()
    };
    let previous = ScheduleStatus {
        backup: Some(op(
            "2026-01-01T00:01:00Z",
            "2026-01-01T00:02:00Z",
            "Succeeded",
        )),
        ..ScheduleStatus::default()
    };
    let ticked = ScheduleStatus {
        backup: Some(op(
            "2026-01-01T00:02:00Z",
            "2026-01-01T00:03:00Z",
            "Succeeded",
        )),
        ..ScheduleStatus::default()
    };
    assert!(!changed_beyond_ticks(&previous, &ticked));
    let failed = ScheduleStatus {
        backup: Some(op("2026-01-01T00:02:00Z", "2026-01-01T00:03:00Z", "Failed")),
        ..ScheduleStatus::default()
    };
    assert!(changed_beyond_ticks(&previous, &failed));
    let suspended = ScheduleStatus {
        backup: Some(OperationStatus {
            next_run: None,
            ..op("2026-01-01T00:01:00Z", "2026-01-01T00:02:00Z", "Succeeded")
        }),
        ..ScheduleStatus::default()
    };
    assert!(
        changed_beyond_ticks(&previous, &suspended),
        "nextRun going away is news"
    );
}

#[test]
fn last_outcome_takes_newest_finished_and_newest_success() {
    let run = |name: &str, minute: i64, state: Option<RunState>| OwnedRun {
        verified_snapshot: None,
        name: name.into(),
        created: Some(jiff::Timestamp::from_second(minute * 60).expect("ts")),
        state,
        finished: Some(jiff::Timestamp::from_second(minute * 60 + 30).expect("ts")),
        tick: Some(jiff::Timestamp::from_second(minute * 60).expect("ts")),
    };
    let runs = [
        run("a", 1, Some(RunState::Succeeded)),
        run("b", 2, Some(RunState::PartiallySucceeded)),
        run("c", 3, Some(RunState::Running)),
    ];
    let (state, success) = last_outcome(&OperationStatus::default(), &runs);
    assert_eq!(state.as_deref(), Some("PartiallySucceeded"));
    assert_eq!(success.map(|t| t.0.as_second()), Some(90));
}

/// What the API server answers to a status patch: the whole object with the new status.
fn with_status(patch: &Value) -> Value {
    let mut object = serde_json::to_value(schedule(json!({"backend": backend()}))).expect("json");
    object["status"] = patch["status"].clone();
    object
}

/// The status of the every-minute Schedule `nightly` as written when the run of
/// `previous_tick` ended: Ready, and its backup section with that run, the next tick and
/// `outcome` (`lastState`, `lastSuccess`).
fn status_after<T: serde::de::DeserializeOwned>(
    previous_tick: jiff::Timestamp,
    outcome: Value,
) -> T {
    let mut backup = json!({
        "lastRun": previous_tick.to_string(),
        "lastRunName": run_name("nightly", Operation::Backup, previous_tick),
        "nextRun": (previous_tick + jiff::SignedDuration::from_secs(60)).to_string(),
    });
    if let (Some(fields), Some(extra)) = (backup.as_object_mut(), outcome.as_object()) {
        fields.extend(extra.clone());
    }
    serde_json::from_value(json!({
        "observedGeneration": 1,
        "conditions": [{"type": "Ready", "status": "True", "reason": "Scheduled", "message": "",
                        "observedGeneration": 1, "lastTransitionTime": "2020-01-01T00:00:00Z"}],
        "backup": backup,
    }))
    .expect("test status")
}

async fn body_json(request: Request<Body>) -> Value {
    let bytes = request.into_body().collect_bytes().await.expect("body");
    serde_json::from_slice(&bytes).expect("json body")
}

async fn expect_run_list(handle: &mut Handle, plural: &str, items: Value) {
    let (request, send) = handle.next_request().await.expect("list request");
    assert_eq!(request.method(), http::Method::GET);
    assert_eq!(
        request.uri().path(),
        format!("/apis/backup.appuio.ch/v1alpha1/namespaces/team/{plural}")
    );
    assert!(
        request
            .uri()
            .query()
            .unwrap_or_default()
            .contains("labelSelector=backup.appuio.ch%2Fschedule%3Dnightly"),
        "{}",
        request.uri()
    );
    respond(
        send,
        200,
        &json!({"apiVersion": "backup.appuio.ch/v1alpha1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": items}),
    );
}

#[tokio::test]
async fn schedule_at_tick_creates_exactly_one_owned_backup_then_writes_status() {
    let (ctx, mut handle) = mock_context(Stores::empty());
    let sched = schedule(
        json!({"backend": backend(), "backup": {"schedule": "* * * * *", "promURL": "http://push:9091"}}),
    );
    let server = tokio::spawn(async move {
        expect_run_list(&mut handle, "backups", json!([])).await;
        let (request, send) = handle.next_request().await.expect("create request");
        assert_eq!(request.method(), http::Method::POST);
        assert_eq!(
            request.uri().path(),
            "/apis/backup.appuio.ch/v1alpha1/namespaces/team/backups"
        );
        let backup = body_json(request).await;
        let name = backup["metadata"]["name"]
            .as_str()
            .expect("name")
            .to_string();
        assert!(name.starts_with("nightly-backup-"), "{name}");
        let tick: jiff::Timestamp = backup["metadata"]["annotations"]["backup.appuio.ch/tick"]
            .as_str()
            .expect("tick")
            .parse()
            .expect("tick time");
        assert_eq!(name, run_name("nightly", Operation::Backup, tick));
        assert_eq!(
            backup["metadata"]["labels"]["backup.appuio.ch/schedule"],
            "nightly"
        );
        assert_eq!(
            backup["metadata"]["labels"]["backup.appuio.ch/operation"],
            "backup"
        );
        assert_eq!(backup["metadata"]["ownerReferences"][0]["uid"], "sched-uid");
        assert_eq!(backup["metadata"]["ownerReferences"][0]["controller"], true);
        assert_eq!(backup["spec"]["promURL"], "http://push:9091");
        assert_eq!(backup["spec"]["backend"], backend());
        respond(send, 201, &backup);

        let (request, send) = handle.next_request().await.expect("status request");
        assert_eq!(request.method(), http::Method::PATCH);
        assert_eq!(
            request.uri().path(),
            "/apis/backup.appuio.ch/v1alpha1/namespaces/team/schedules/nightly/status"
        );
        assert!(
            request
                .uri()
                .query()
                .unwrap_or_default()
                .contains("fieldManager=baas")
        );
        let patch = body_json(request).await;
        assert_eq!(patch["status"]["backup"]["lastRunName"], name.as_str());
        assert!(patch["status"]["backup"]["nextRun"].is_string());
        assert_eq!(patch["status"]["conditions"][0]["type"], "Ready");
        assert_eq!(patch["status"]["conditions"][0]["status"], "True");
        respond(send, 200, &with_status(&patch));
        handle
    });
    let action = reconcile(Arc::new(sched), ctx).await.expect("reconcile");
    assert!(
        action != Action::await_change(),
        "a scheduled Schedule must requeue for its next tick"
    );
    let mut handle = server.await.expect("mock server");
    // Nothing else was sent: exactly one run.
    let more =
        tokio::time::timeout(std::time::Duration::from_millis(50), handle.next_request()).await;
    assert!(
        matches!(more, Err(_) | Ok(None)),
        "unexpected further request"
    );
}

#[tokio::test]
async fn existing_run_for_the_tick_is_not_an_error() {
    let (ctx, mut handle) = mock_context(Stores::empty());
    let sched = schedule(json!({"backend": backend(), "check": {"schedule": "* * * * *"}}));
    let server = tokio::spawn(async move {
        expect_run_list(&mut handle, "checks", json!([])).await;
        let (request, send) = handle.next_request().await.expect("create request");
        assert_eq!(
            request.uri().path(),
            "/apis/backup.appuio.ch/v1alpha1/namespaces/team/checks"
        );
        respond(
            send,
            409,
            &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "AlreadyExists", "code": 409, "message": "exists"}),
        );
        let (request, send) = handle.next_request().await.expect("status request");
        assert_eq!(request.method(), http::Method::PATCH);
        let patch = body_json(request).await;
        assert!(patch["status"]["check"]["lastRunName"].is_string());
        respond(send, 200, &with_status(&patch));
    });
    reconcile(Arc::new(sched), ctx).await.expect("409 is fine");
    server.await.expect("mock server");
}

#[tokio::test]
async fn invalid_cron_sets_ready_false_and_creates_nothing() {
    let (ctx, mut handle) = mock_context(Stores::empty());
    let sched = schedule(json!({"backend": backend(), "backup": {"schedule": "0 1 * *"}}));
    let server = tokio::spawn(async move {
        let (request, send) = handle.next_request().await.expect("status request");
        assert_eq!(request.method(), http::Method::PATCH);
        let patch = body_json(request).await;
        let ready = &patch["status"]["conditions"][0];
        assert_eq!(ready["status"], "False");
        assert_eq!(ready["reason"], "InvalidSchedule");
        assert!(
            ready["message"]
                .as_str()
                .unwrap_or_default()
                .starts_with("spec.backup.schedule: "),
            "{ready}"
        );
        respond(send, 200, &with_status(&patch));
        let (request, send) = handle.next_request().await.expect("event request");
        assert_eq!(request.method(), http::Method::POST);
        let event = body_json(request).await;
        assert_eq!(
            (event["type"].as_str(), event["reason"].as_str()),
            (Some("Warning"), Some("InvalidSchedule"))
        );
        assert!(
            event["note"]
                .as_str()
                .unwrap_or_default()
                .starts_with("spec.backup.schedule: "),
            "{event}"
        );
        respond(send, 201, &event);
        patch
    });
    let action = reconcile(Arc::new(sched.clone()), ctx.clone())
        .await
        .expect("reconcile");
    assert_eq!(action, Action::await_change());
    let written = server.await.expect("mock server");
    // The same problem again: no second Event, and no write either.
    let mut again = sched;
    again.status = serde_json::from_value(written["status"].clone()).expect("status");
    let (ctx, mut handle) = mock_context(Stores::empty());
    let server = tokio::spawn(async move {
        let more =
            tokio::time::timeout(std::time::Duration::from_millis(200), handle.next_request())
                .await;
        if let Ok(Some((request, _))) = more {
            panic!(
                "a request followed an unchanged invalid Schedule: {} {}",
                request.method(),
                request.uri()
            );
        }
    });
    reconcile(Arc::new(again), ctx).await.expect("reconcile");
    server.await.expect("mock server");
}

#[tokio::test]
async fn suspended_schedule_creates_no_run() {
    let (ctx, mut handle) = mock_context(Stores::empty());
    let sched = schedule(
        json!({"backend": backend(), "suspend": true, "backup": {"schedule": "* * * * *"}}),
    );
    let server = tokio::spawn(async move {
        let (request, send) = handle.next_request().await.expect("status request");
        assert_eq!(
            request.method(),
            http::Method::PATCH,
            "no run may be created"
        );
        let patch = body_json(request).await;
        assert_eq!(patch["status"]["conditions"][0]["reason"], "Suspended");
        respond(send, 200, &with_status(&patch));
    });
    reconcile(Arc::new(sched), ctx).await.expect("reconcile");
    server.await.expect("mock server");
}

#[tokio::test]
async fn tick_while_previous_backup_runs_is_skipped_with_an_event() {
    let (ctx, mut handle) = mock_context(Stores::empty());
    let sched = schedule(json!({"backend": backend(), "backup": {"schedule": "* * * * *"}}));
    let server = tokio::spawn(async move {
        let running = json!({
            "apiVersion": "backup.appuio.ch/v1alpha1", "kind": "Backup",
            "metadata": {"name": "nightly-backup-202001010000", "namespace": "team", "creationTimestamp": "2020-01-01T00:00:00Z",
                         "ownerReferences": [{"apiVersion": "backup.appuio.ch/v1alpha1", "kind": "Schedule", "name": "nightly", "uid": "sched-uid", "controller": true}]},
            "spec": {"backend": backend()},
            "status": {"state": "Running", "jobs": ["j"]},
        });
        expect_run_list(&mut handle, "backups", json!([running])).await;
        let (request, send) = handle.next_request().await.expect("event request");
        assert_eq!(
            request.method(),
            http::Method::POST,
            "no Backup may be created"
        );
        assert!(
            request
                .uri()
                .path()
                .starts_with("/apis/events.k8s.io/v1/namespaces/team/events"),
            "{}",
            request.uri()
        );
        let event = body_json(request).await;
        assert_eq!(event["reason"], "BackupSkipped");
        assert!(
            event["note"]
                .as_str()
                .unwrap_or_default()
                .contains("nightly-backup-202001010000"),
            "{event}"
        );
        respond(send, 201, &event);
        let (request, send) = handle.next_request().await.expect("status request");
        assert_eq!(request.method(), http::Method::PATCH);
        let patch = body_json(request).await;
        assert!(
            patch["status"]["backup"]["lastRun"].is_string(),
            "the skipped tick counts as handled"
        );
        assert!(
            patch["status"]["backup"].get("lastRunName").is_none(),
            "{patch}"
        );
        respond(send, 200, &with_status(&patch));
    });
    reconcile(Arc::new(sched), ctx).await.expect("reconcile");
    server.await.expect("mock server");
}

#[tokio::test]
async fn tick_with_filled_caches_creates_the_run_without_a_status_write() {
    let now = jiff::Timestamp::now();
    let previous_tick = jiff::Timestamp::from_second(now.as_second() - now.as_second() % 60 - 60)
        .expect("previous minute");
    let finished = previous_tick + jiff::SignedDuration::from_secs(20);
    let previous_run: Backup = serde_json::from_value(json!({
        "apiVersion": "backup.appuio.ch/v1alpha1", "kind": "Backup",
        "metadata": {"name": run_name("nightly", Operation::Backup, previous_tick), "namespace": "team",
                     "uid": "run-uid", "creationTimestamp": previous_tick.to_string(),
                     "annotations": {"backup.appuio.ch/tick": previous_tick.to_string()},
                     "ownerReferences": [{"apiVersion": "backup.appuio.ch/v1alpha1", "kind": "Schedule", "name": "nightly", "uid": "sched-uid", "controller": true}]},
        "spec": {"backend": backend()},
        "status": {"state": "Succeeded", "finishedAt": finished.to_string()},
    }))
    .expect("test backup");
    let stores = Stores {
        backups: filled(vec![previous_run]),
        ready: Arc::new(std::sync::atomic::AtomicBool::new(true)),
        ..Stores::empty()
    };
    let (ctx, mut handle) = mock_context(stores);
    // The status written when the previous run ended.
    let mut sched = schedule(json!({"backend": backend(), "backup": {"schedule": "* * * * *"}}));
    sched.status = status_after(
        previous_tick,
        json!({"lastState": "Succeeded", "lastSuccess": finished.to_string()}),
    );
    let server = tokio::spawn(async move {
        let (request, send) = handle.next_request().await.expect("create request");
        assert_eq!(request.method(), http::Method::POST);
        assert_eq!(
            request.uri().path(),
            "/apis/backup.appuio.ch/v1alpha1/namespaces/team/backups"
        );
        let backup = body_json(request).await;
        respond(send, 201, &backup);
        assert!(
            handle.next_request().await.is_none(),
            "the tick alone writes no Schedule status"
        );
    });
    reconcile(Arc::new(sched), ctx).await.expect("reconcile");
    server.await.expect("mock server");
}

#[test]
fn last_verified_is_the_newest_successful_verification_and_survives_its_run() {
    let verified = |name: &str, state: RunState, snapshot: Option<&str>| OwnedRun {
        verified_snapshot: snapshot.map(at),
        ..owned_run(name, "2026-01-01T03:00:00Z", Some(state))
    };
    let previous = OperationStatus {
        last_verified_snapshot: Some(Time(at("2026-01-01T01:00:00Z"))),
        ..OperationStatus::default()
    };
    // a failed run's snapshot time is never taken, even when newer
    let runs = [
        verified("a", RunState::Succeeded, Some("2026-01-02T01:00:00Z")),
        verified("b", RunState::Failed, Some("2026-01-03T01:00:00Z")),
    ];
    assert_eq!(
        last_verified(&previous, &runs),
        Some(Time(at("2026-01-02T01:00:00Z")))
    );
    // once the run left the history, the status remembers
    assert_eq!(
        last_verified(&previous, &[]),
        Some(Time(at("2026-01-01T01:00:00Z")))
    );
    assert_eq!(last_verified(&OperationStatus::default(), &runs[1..]), None);
}

#[tokio::test]
async fn history_beyond_keep_jobs_deletes_the_oldest_finished_run_kept_apart_from_the_cache() {
    let now = jiff::Timestamp::now();
    let minute = jiff::SignedDuration::from_secs(60);
    let previous_tick = jiff::Timestamp::from_second(now.as_second() - now.as_second() % 60)
        .expect("this minute")
        - minute;
    let run = |tick: jiff::Timestamp| -> Backup {
        serde_json::from_value(json!({
            "apiVersion": "backup.appuio.ch/v1alpha1", "kind": "Backup",
            "metadata": {"name": run_name("nightly", Operation::Backup, tick), "namespace": "team",
                         "uid": format!("run-{}", tick.as_second()), "creationTimestamp": tick.to_string(),
                         "annotations": {"backup.appuio.ch/tick": tick.to_string()},
                         "ownerReferences": [{"apiVersion": "backup.appuio.ch/v1alpha1", "kind": "Schedule",
                                              "name": "nightly", "uid": "sched-uid", "controller": true}]},
            "spec": {"backend": backend()},
            "status": {"state": "Failed", "finishedAt": (tick + minute / 2).to_string()},
        }))
        .expect("test backup")
    };
    let finished = FinishedRuns::default();
    let stores = Stores {
        backups: filled_runs(
            &finished,
            vec![run(previous_tick - minute), run(previous_tick)],
        ),
        finished,
        ready: Arc::new(std::sync::atomic::AtomicBool::new(true)),
        ..Stores::empty()
    };
    assert!(
        stores.backups.state().is_empty(),
        "finished runs are kept apart"
    );
    let (ctx, mut handle) = mock_context(stores);
    let mut sched =
        schedule(json!({"backend": backend(), "backup": {"schedule": "* * * * *", "keepJobs": 1}}));
    sched.status = status_after(previous_tick, json!({"lastState": "Failed"}));
    let oldest = run_name("nightly", Operation::Backup, previous_tick - minute);
    let server = tokio::spawn(async move {
        let (request, send) = handle.next_request().await.expect("create request");
        assert_eq!(request.method(), http::Method::POST);
        let backup = body_json(request).await;
        respond(send, 201, &backup);
        let (request, send) = handle.next_request().await.expect("delete request");
        assert_eq!(request.method(), http::Method::DELETE);
        assert_eq!(
            request.uri().path(),
            format!("/apis/backup.appuio.ch/v1alpha1/namespaces/team/backups/{oldest}")
        );
        respond(send, 200, &json!({"kind": "Status", "status": "Success"}));
        assert!(handle.next_request().await.is_none(), "nothing else");
    });
    reconcile(Arc::new(sched), ctx).await.expect("reconcile");
    server.await.expect("mock server");
}
