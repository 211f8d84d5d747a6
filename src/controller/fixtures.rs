//! Test fixtures of the controller: objects of each kind as the API server would hand them
//! over, and a mocked API server whose every request a test takes and answers in turn.

use std::sync::Arc;

use http::{Request, Response};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::client::Body;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use serde_json::{Value, json};

use super::context::{Context, Settings};
use super::kinds::RunKind;
use super::metrics::Metrics;
use super::run::with_state;
use super::stores::{FinishedRuns, Stores};
use crate::crd::{Backup, RunState, RunStatus, Schedule, SnapshotRef, Summary};
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

/// The pod of a verification with an application check: the agent ended as an init
/// container with `report`, then the check exited with `check_exit` and `check_output`.
pub fn pod_verified(job: &str, report: &RunReport, check_exit: i32, check_output: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": format!("{job}-abcde"), "labels": {"batch.kubernetes.io/job-name": job}, "creationTimestamp": "2026-01-01T00:00:00Z"},
        "status": {
            "initContainerStatuses": [{
                "name": "agent", "image": "baas", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 0, "reason": "Completed", "message": report.to_termination_message()}},
            }],
            "containerStatuses": [{
                "name": "app-check", "image": "mariadb", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": check_exit, "reason": if check_exit == 0 { "Completed" } else { "Error" }, "message": check_output}},
            }],
        },
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

/// The repository of the run builders: an S3 bucket with its credentials' Secret refs.
pub fn backend() -> Value {
    json!({
        "repoPasswordSecretRef": {"name": "backup-repo", "key": "password"},
        "s3": {"endpoint": "http://minio:9000", "bucket": "baas",
               "accessKeyIDSecretRef": {"name": "c", "key": "username"},
               "secretAccessKeySecretRef": {"name": "c", "key": "password"}},
    })
}

/// The Schedule `team/nightly` with `spec`.
pub fn schedule(spec: Value) -> Schedule {
    serde_json::from_value(json!({
        "apiVersion": "backup.appuio.ch/v1alpha1",
        "kind": "Schedule",
        "metadata": {"name": "nightly", "namespace": "team", "uid": "sched-uid", "generation": 1,
                     "creationTimestamp": "2020-01-01T00:00:00Z"},
        "spec": spec,
    }))
    .expect("test schedule")
}

/// A Backup of `nightly` in `team` on [`backend`], with `status`.
pub fn backup(status: Option<Value>) -> Backup {
    serde_json::from_value(json!({
        "apiVersion": "backup.appuio.ch/v1alpha1",
        "kind": "Backup",
        "metadata": {"name": "nightly-backup-202601010100", "namespace": "team", "uid": "bk-uid", "generation": 1,
                     "labels": {"backup.appuio.ch/schedule": "nightly"}},
        "spec": {"backend": backend()},
        "status": status,
    }))
    .expect("test backup")
}

/// A filled cache holding `objects`. The writer goes out of scope; the store keeps them.
pub fn filled<K>(objects: Vec<K>) -> Store<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    let (store, mut writer) = kube::runtime::reflector::store();
    writer.apply_watcher_event(&watcher::Event::Init);
    for object in objects {
        writer.apply_watcher_event(&watcher::Event::InitApply(object));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    store
}

/// A filled run cache holding `runs`, filled as the watch fills it: the finished runs of a
/// Schedule go to `finished` instead.
pub fn filled_runs<K: RunKind>(finished: &FinishedRuns, runs: Vec<K>) -> Store<K> {
    let (store, mut writer) = kube::runtime::reflector::store();
    finished.reflect(&mut writer, &watcher::Event::Init);
    for run in runs {
        finished.reflect(&mut writer, &watcher::Event::InitApply(run));
    }
    finished.reflect(&mut writer, &watcher::Event::InitDone);
    store
}

/// The test's side of the mocked API server: every request of a reconcile, in turn.
pub type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;
/// Where the answer to one request goes.
pub type Reply = tower_test::mock::SendResponse<Response<Body>>;

/// A client of a mocked API server.
pub fn mock_client() -> (kube::Client, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(service, "default"), handle)
}

/// A context around a mocked API server, with `stores`.
pub fn mock_context(stores: Stores) -> (Arc<Context>, Handle) {
    let (client, handle) = mock_client();
    let ctx = Context::new(client, Settings::default(), Metrics::default(), stores);
    (Arc::new(ctx), handle)
}

/// Takes the next request: its method, URI and JSON body (`null` when empty).
pub async fn next(handle: &mut Handle) -> (http::Method, String, Value, Reply) {
    let (request, send) = handle.next_request().await.expect("a request");
    let method = request.method().clone();
    let uri = request.uri().to_string();
    let bytes = request.into_body().collect_bytes().await.expect("body");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("json body")
    };
    (method, uri, body, send)
}

/// Answers with `code` and `body`.
pub fn respond(send: Reply, code: u16, body: &Value) {
    send.send_response(
        Response::builder()
            .status(code)
            .body(Body::from(serde_json::to_vec(body).expect("json")))
            .expect("response"),
    );
}

/// Answers with a Kubernetes `Status` error of `code`, as the API server does.
pub fn respond_error(send: Reply, code: u16, reason: &str, message: &str) {
    let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
        "reason": reason, "code": code, "message": message});
    respond(send, code, &status);
}

/// A list answer of `kind` objects.
pub fn list(kind: &str, items: Value) -> Value {
    json!({"apiVersion": "v1", "kind": format!("{kind}List"), "metadata": {"resourceVersion": "1"}, "items": items})
}
