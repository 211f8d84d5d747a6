//! Test fixtures of the controller: objects of each kind as the API server would hand them
//! over, and a mocked API server whose every request a test takes and answers in turn.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;

use super::run::with_state;
use crate::crd::{RunState, RunStatus, SnapshotRef, Summary};
use crate::report::RunReport;

pub fn at(text: &str) -> jiff::Timestamp {
    text.parse().expect("test timestamp")
}

pub fn job(name: &str, condition: Option<(&str, &str)>) -> Job {
    let conditions = condition
        .map(|(type_, reason)| {
            vec![json!({"type": type_, "status": "True", "reason": reason, "message": "details"})]
        })
        .unwrap_or_default();
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "status": {"conditions": conditions},
    }))
    .expect("test job")
}

pub fn pod_terminated(job: &str, exit_code: i32, reason: &str, message: Option<String>) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": format!("{job}-abcde"), "labels": {"batch.kubernetes.io/job-name": job}, "creationTimestamp": "2026-01-01T00:00:00Z"},
        "status": {"containerStatuses": [{
            "name": "agent", "image": "baas", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": exit_code, "reason": reason, "message": message}},
        }]},
    }))
    .expect("test pod")
}

pub fn pod_waiting(job: &str, reason: &str, message: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": format!("{job}-abcde"), "labels": {"batch.kubernetes.io/job-name": job}, "creationTimestamp": "2026-01-01T00:00:00Z"},
        "status": {"containerStatuses": [{
            "name": "agent", "image": "baas", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": reason, "message": message}},
        }]},
    }))
    .expect("test pod")
}

pub fn report(state: RunState, snapshot: &str) -> RunReport {
    RunReport {
        state: Some(state),
        snapshots: vec![SnapshotRef {
            id: snapshot.into(),
            paths: vec!["/data/db".into()],
        }],
        summary: Summary {
            total_files: Some(10),
            total_bytes: Some(1000),
            ..Summary::default()
        },
        duration_seconds: 2.5,
        message: format!("{state:?}"),
        ..RunReport::default()
    }
}

pub fn running(jobs: &[&str]) -> RunStatus {
    with_state(
        RunStatus {
            jobs: jobs.iter().map(|j| j.to_string()).collect(),
            ..RunStatus::default()
        },
        RunState::Running,
        "JobRunning",
        "",
        Some(1),
        at("2026-01-01T00:00:00Z"),
    )
}
