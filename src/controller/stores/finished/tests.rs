use super::*;
use crate::crd::Backup;
use kube::runtime::reflector::{Store, store};
use serde_json::{Value, json};

/// A Backup of the Schedule `nightly` (uid `sched-uid`) with `status`; `owner` false leaves
/// out the owner reference, as on a Backup started without a Schedule.
fn backup(name: &str, owner: bool, status: Value) -> Backup {
    let owners = if owner {
        json!([{"apiVersion": "backup.appuio.ch/v1alpha1", "kind": "Schedule", "name": "nightly",
                "uid": "sched-uid", "controller": true}])
    } else {
        json!([])
    };
    serde_json::from_value(json!({
        "apiVersion": "backup.appuio.ch/v1alpha1", "kind": "Backup",
        "metadata": {"name": name, "namespace": "team", "uid": format!("{name}-uid"),
                     "creationTimestamp": "2026-11-26T03:00:00Z",
                     "labels": {"backup.appuio.ch/repository": "repo-label"},
                     "annotations": {"backup.appuio.ch/tick": "2026-11-26T03:00:00Z"},
                     "ownerReferences": owners},
        "spec": {"backend": {"s3": {"endpoint": "http://127.0.0.1:9900", "bucket": "team",
                                    "accessKeyIDSecretRef": {"name": "s3", "key": "id"},
                                    "secretAccessKeySecretRef": {"name": "s3", "key": "secret"}}}},
        "status": status,
    }))
    .expect("test backup")
}

fn ended(state: &str) -> Value {
    json!({"state": state, "startedAt": "2026-11-26T03:00:01Z", "finishedAt": "2026-11-26T03:00:09Z"})
}

fn names(store: &Store<Backup>) -> Vec<String> {
    let mut names: Vec<String> = store.state().iter().map(|b| b.name_any()).collect();
    names.sort();
    names
}

fn finished_names(finished: &FinishedRuns) -> Vec<String> {
    let mut names: Vec<String> = finished
        .of_schedule(Operation::Backup, "sched-uid")
        .into_iter()
        .map(|r| r.name.into())
        .collect();
    names.sort();
    names
}

#[test]
fn a_schedules_run_that_ends_leaves_the_cache_for_its_outline() {
    let finished = FinishedRuns::default();
    let (cache, mut writer) = store::<Backup>();
    let running = backup("b1", true, json!({"state": "Running"}));
    finished.reflect(&mut writer, &Event::Apply(running.clone()));
    assert_eq!(names(&cache), ["b1"]);
    assert!(!finished.contains(&running));

    let done = backup("b1", true, ended("Failed"));
    finished.reflect(&mut writer, &Event::Apply(done.clone()));
    assert!(names(&cache).is_empty(), "no longer cached as a Backup");
    assert!(finished.contains(&done) && finished.contains(&running));
    let outline = finished.of_schedule(Operation::Backup, "sched-uid");
    assert_eq!(
        outline,
        [FinishedRun {
            name: "b1".into(),
            created: Some("2026-11-26T03:00:00Z".parse().expect("ts")),
            finished: Some("2026-11-26T03:00:09Z".parse().expect("ts")),
            tick: Some("2026-11-26T03:00:00Z".parse().expect("ts")),
            state: RunState::Failed,
            verified_snapshot: None,
        }]
    );
    assert!(
        finished
            .of_schedule(Operation::Check, "sched-uid")
            .is_empty()
    );

    finished.reflect(&mut writer, &Event::Delete(done));
    assert!(
        finished_names(&finished).is_empty(),
        "deleted by the history"
    );
}

#[test]
fn a_run_without_a_schedule_stays_in_its_cache() {
    let finished = FinishedRuns::default();
    let (cache, mut writer) = store::<Backup>();
    let done = backup("by-hand", false, ended("Succeeded"));
    finished.reflect(&mut writer, &Event::Apply(done.clone()));
    assert_eq!(names(&cache), ["by-hand"]);
    assert!(!finished.contains(&done));
    assert!(!finished.wrote(&done, done.status.as_ref().expect("status")));
}

#[test]
fn a_relist_replaces_the_outlines_but_keeps_ends_written_meanwhile() {
    let finished = FinishedRuns::default();
    let (cache, mut writer) = store::<Backup>();
    finished.reflect(
        &mut writer,
        &Event::Apply(backup("gone", true, ended("Failed"))),
    );
    finished.reflect(&mut writer, &Event::Init);
    finished.reflect(
        &mut writer,
        &Event::InitApply(backup("old", true, ended("Failed"))),
    );
    finished.reflect(
        &mut writer,
        &Event::InitApply(backup("going", true, json!({"state": "Running"}))),
    );
    // Ended by this process after the list was read.
    let just_ended = backup("just-ended", true, ended("Succeeded"));
    assert!(finished.wrote(&just_ended, just_ended.status.as_ref().expect("status")));
    assert_eq!(
        finished_names(&finished),
        ["gone", "just-ended"],
        "old set until the list is complete"
    );
    finished.reflect(&mut writer, &Event::InitDone);
    assert_eq!(finished_names(&finished), ["just-ended", "old"]);
    assert_eq!(names(&cache), ["going"]);
}

#[test]
fn finished_backups_with_a_snapshot_prove_their_repository() {
    let finished = FinishedRuns::default();
    let (_cache, mut writer) = store::<Backup>();
    finished.reflect(
        &mut writer,
        &Event::Apply(backup("failed", true, ended("Failed"))),
    );
    assert!(!finished.proven().contains("repo-label"));
    finished.reflect(&mut writer, &Event::Init);
    finished.reflect(
        &mut writer,
        &Event::InitApply(backup("partial", true, ended("PartiallySucceeded"))),
    );
    finished.reflect(&mut writer, &Event::InitDone);
    assert!(finished.proven().contains("repo-label"));
}

#[test]
fn finished_verify_keeps_the_time_of_the_snapshot_it_proved() {
    let finished = FinishedRuns::default();
    let (cache, mut writer) = store::<crate::crd::Verify>();
    let mut verify: crate::crd::Verify = serde_json::from_value(json!({
        "apiVersion": "backup.appuio.ch/v1alpha1", "kind": "Verify",
        "metadata": {"name": "v1", "namespace": "team", "uid": "v1-uid",
                     "creationTimestamp": "2026-11-26T03:00:00Z",
                     "ownerReferences": [{"apiVersion": "backup.appuio.ch/v1alpha1", "kind": "Schedule",
                                          "name": "nightly", "uid": "sched-uid", "controller": true}]},
        "spec": {"backend": {"s3": {"endpoint": "http://127.0.0.1:9900", "bucket": "team",
                                    "accessKeyIDSecretRef": {"name": "s3", "key": "id"},
                                    "secretAccessKeySecretRef": {"name": "s3", "key": "secret"}}}},
    }))
    .expect("test verify");
    verify.status = serde_json::from_value(json!({
        "state": "Succeeded", "finishedAt": "2026-11-26T03:00:09Z",
        "newestVerifiedSnapshot": "2026-11-26T01:00:00Z"}))
    .expect("status");
    finished.reflect(&mut writer, &Event::Apply(verify));
    assert!(cache.state().is_empty(), "kept apart from the Verify cache");
    let runs = finished.of_schedule(Operation::Verify, "sched-uid");
    assert_eq!(
        runs.iter().map(|r| r.verified_snapshot).collect::<Vec<_>>(),
        [Some("2026-11-26T01:00:00Z".parse().expect("ts"))],
        "the Schedule's Verified column reads it from here once the run left its cache"
    );
}
