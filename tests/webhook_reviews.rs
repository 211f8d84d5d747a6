//! Golden AdmissionReviews: every `webhooks/reviews/<kind>-<case>-<endpoint>.request.json` is
//! sent through the router to `/<endpoint>` and the answer compared with its
//! `.response.json`. Response files hold `{"httpStatus", "body"}`; a JSON patch is shown decoded
//! (the wire carries it base64). Regenerate with `BAAS_BLESS=1 cargo test --test webhook_reviews`.
//! The same cluster also stands behind a mocked API server, to check that Secrets fetched with
//! one get each give the recorded answers too.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine;
use serde_json::{Value, json};
use tower::ServiceExt;

use baas::lookup::{ApiSecrets, PvcInfo, StaticLookups};
use baas::webhook::metrics_auth::MetricsAccess;
use baas::webhook::{WebhookState, router};

/// The cluster the golden reviews are judged against. `team-a` is in order; `team-b` has PVCs
/// a backup cannot read and a ReadWriteOncePod claim in use.
fn cluster() -> StaticLookups {
    let pvc = |name: &str, mode: &str, bound: bool, used_by: &[&str]| PvcInfo {
        name: name.into(),
        access_modes: vec![mode.into()],
        bound,
        excluded: false,
        used_by: used_by.iter().map(|p| p.to_string()).collect(),
    };
    let mut lookups = StaticLookups::default();
    for ns in ["team-a", "team-b"] {
        lookups = lookups
            .with_secret(ns, "backup-repo", &["password"])
            .with_secret(ns, "backup-credentials", &["username", "password"]);
    }
    lookups
        .with_pvc("team-a", pvc("data", "ReadWriteOnce", true, &["app-0"]))
        .with_pvc("team-a", pvc("archive", "ReadOnlyMany", true, &[]))
        .with_pvc(
            "team-b",
            pvc("exclusive", "ReadWriteOncePod", true, &["db-0"]),
        )
        .with_pvc("team-b", pvc("pending", "ReadWriteOnce", false, &[]))
}

fn reviews_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("webhooks/reviews")
}

fn cases() -> Vec<(String, PathBuf)> {
    let mut cases: Vec<(String, PathBuf)> = std::fs::read_dir(reviews_dir())
        .expect("webhooks/reviews exists")
        .map(|entry| entry.expect("readable entry").path())
        .filter_map(|path| {
            let name = path.file_name()?.to_str()?;
            let case = name.strip_suffix(".request.json")?.to_string();
            Some((case, path))
        })
        .collect();
    cases.sort();
    cases
}

/// The golden cluster; Secrets go through the same fetch-then-judge path as in production.
fn golden_state() -> WebhookState {
    WebhookState::with_lookups(Arc::new(cluster())).with_secret_source(Arc::new(cluster()))
}

async fn send(path: &str, body: Vec<u8>) -> (StatusCode, Vec<u8>) {
    send_to(golden_state(), path, body).await
}

async fn send_to(state: WebhookState, path: &str, body: Vec<u8>) -> (StatusCode, Vec<u8>) {
    let app = router(state);
    let request = Request::post(path)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .expect("a valid request");
    let response = app.oneshot(request).await.expect("the router answers");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("a readable body");
    (status, bytes.to_vec())
}

/// The answer as stored in a response file: JSON body with the patch decoded, or text.
fn readable(status: StatusCode, body: &[u8]) -> Value {
    let body = match serde_json::from_slice::<Value>(body) {
        Ok(mut json) => {
            if let Some(patch) = json.pointer_mut("/response/patch") {
                let encoded = patch.as_str().expect("the patch is a base64 string");
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .expect("the patch is valid base64");
                *patch = serde_json::from_slice(&decoded).expect("the patch is JSON");
            }
            json
        }
        Err(_) => Value::String(String::from_utf8_lossy(body).into_owned()),
    };
    json!({"httpStatus": status.as_u16(), "body": body})
}

#[tokio::test]
async fn golden_reviews_get_their_recorded_answers() {
    let bless = std::env::var_os("BAAS_BLESS").is_some();
    let cases = cases();
    assert!(
        cases.len() >= 40,
        "golden reviews are missing: {}",
        cases.len()
    );
    let mut failures = Vec::new();
    for (case, request_path) in &cases {
        let endpoint = if case.ends_with("-mutate") {
            "/mutate"
        } else if case.ends_with("-validate") {
            "/validate"
        } else {
            panic!("{case}: the case name must end in -mutate or -validate");
        };
        let body = std::fs::read(request_path).expect("readable request");
        let (status, answer) = send(endpoint, body.clone()).await;
        let actual = readable(status, &answer);
        if status == StatusCode::OK {
            let sent: Value = serde_json::from_slice(&body).expect("a JSON request");
            assert_eq!(
                actual["body"]["response"]["uid"], sent["request"]["uid"],
                "{case}: the answer must carry the request's uid"
            );
        }
        let response_path = reviews_dir().join(format!("{case}.response.json"));
        let pretty = serde_json::to_string_pretty(&actual).expect("serializable") + "\n";
        if bless {
            std::fs::write(&response_path, pretty).expect("writable response file");
            continue;
        }
        let expected: Value = match std::fs::read(&response_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).expect("a JSON response file"),
            Err(_) => {
                failures.push(format!("{case}: no response file; run with BAAS_BLESS=1"));
                continue;
            }
        };
        if expected != actual {
            failures.push(format!(
                "{case}:\nexpected {expected:#}\nactual   {actual:#}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

async fn answer_of(case: &str) -> Value {
    let endpoint = if case.ends_with("-mutate") {
        "/mutate"
    } else {
        "/validate"
    };
    let body =
        std::fs::read(reviews_dir().join(format!("{case}.request.json"))).expect("request file");
    let (status, answer) = send(endpoint, body).await;
    assert_eq!(status, StatusCode::OK, "{case}");
    let mut answer = readable(status, &answer);
    answer["body"]["response"]
        .as_object_mut()
        .expect("a response")
        .remove("uid");
    answer
}

#[tokio::test]
async fn dry_run_reviews_get_the_same_answer() {
    for endpoint in ["mutate", "validate"] {
        assert_eq!(
            answer_of(&format!("schedule-seed-{endpoint}")).await,
            answer_of(&format!("schedule-seed-dry-run-{endpoint}")).await,
            "{endpoint}"
        );
    }
}

#[tokio::test]
async fn seed_schedule_mutated_then_validated_is_admitted_cleanly() {
    let body = std::fs::read(reviews_dir().join("schedule-seed-mutate.request.json"))
        .expect("request file");
    let mut review: Value = serde_json::from_slice(&body).expect("JSON");
    let (_, mutated) = send("/mutate", body).await;
    let mutated = readable(StatusCode::OK, &mutated);
    let patch: json_patch::Patch =
        serde_json::from_value(mutated["body"]["response"]["patch"].clone()).expect("a patch");
    json_patch::patch(&mut review["request"]["object"], &patch).expect("the patch applies");
    let object = review["request"]["object"].clone();
    assert_eq!(object["spec"]["backup"]["schedule"], "0 1 * * *");

    let (_, again) = send("/mutate", serde_json::to_vec(&review).expect("JSON")).await;
    let again: Value = serde_json::from_slice(&again).expect("JSON");
    assert!(
        again["response"].get("patch").is_none(),
        "mutating twice yields no patch"
    );

    let (_, validated) = send("/validate", serde_json::to_vec(&review).expect("JSON")).await;
    let validated: Value = serde_json::from_slice(&validated).expect("JSON");
    assert_eq!(validated["response"]["allowed"], true, "{validated:#}");
    assert!(
        validated["response"].get("warnings").is_none(),
        "{validated:#}"
    );
}

#[tokio::test]
async fn health_readiness_and_metrics_answer() {
    // Metrics open to anyone, as `baas webhook --offline --unauthenticated-metrics` serves
    // them; tests/webhook_metrics_auth.rs covers bearer tokens.
    let app = router(WebhookState::offline().with_metrics_access(MetricsAccess::Open));
    for (path, expected) in [("/healthz", "ok"), ("/readyz", "ok")] {
        let response = app
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).expect("request"))
            .await
            .expect("answer");
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .expect("body");
        assert_eq!(body, expected, "{path}");
    }
    let body = std::fs::read(reviews_dir().join("schedule-six-field-cron-validate.request.json"))
        .expect("request file");
    let response = app
        .clone()
        .oneshot(
            Request::post("/validate")
                .body(Body::from(body))
                .expect("request"),
        )
        .await
        .expect("answer");
    assert_eq!(response.status(), StatusCode::OK);
    let response = app
        .oneshot(
            Request::get("/metrics")
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("answer");
    let text = String::from_utf8(
        axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body")
            .to_vec(),
    )
    .expect("utf-8");
    assert!(
        text.contains(
            r#"baas_webhook_reviews_total{endpoint="validate",kind="Schedule",operation="CREATE",verdict="denied"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains("baas_webhook_review_duration_seconds_bucket"),
        "{text}"
    );
}

/// An API server for `cluster()`'s Secrets that answers each request with `answer` and keeps
/// every request line it saw.
type Seen = Arc<Mutex<Vec<(http::Method, http::Uri)>>>;

fn mocked_api(answer: fn(&http::Uri) -> Option<(u16, Value)>) -> (kube::Client, Seen) {
    type Req = http::Request<kube::client::Body>;
    type Resp = http::Response<kube::client::Body>;
    let (service, mut handle) = tower_test::mock::pair::<Req, Resp>();
    let seen: Seen = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some((request, send)) = handle.next_request().await {
            let uri = request.uri().clone();
            log.lock()
                .expect("not poisoned")
                .push((request.method().clone(), uri.clone()));
            match answer(&uri) {
                Some((code, body)) => send.send_response(
                    http::Response::builder()
                        .status(code)
                        .body(kube::client::Body::from(
                            serde_json::to_vec(&body).expect("json"),
                        ))
                        .expect("response"),
                ),
                None => held.push(send), // never answered
            }
        }
    });
    (kube::Client::new(service, "default"), seen)
}

/// `cluster()`'s Secrets as the API server returns them, values and all.
fn secret_from_cluster(uri: &http::Uri) -> Option<(u16, Value)> {
    let path = uri.path().strip_prefix("/api/v1/namespaces/")?;
    let (namespace, name) = path.split_once("/secrets/")?;
    let secrets = cluster().secrets;
    Some(
        match secrets.get(&(namespace.to_string(), name.to_string())) {
            Some(keys) => {
                let data: serde_json::Map<String, Value> = keys
                    .iter()
                    .map(|k| (k.clone(), json!("c2VjcmV0")))
                    .collect();
                (
                    200,
                    json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                        "metadata": {"name": name, "namespace": namespace}, "data": data}),
                )
            }
            None => (
                404,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                    "reason": "NotFound", "code": 404, "message": "not found"}),
            ),
        },
    )
}

fn api_state(client: kube::Client, timeout: Duration) -> WebhookState {
    let pvcs_only = StaticLookups {
        secrets: Default::default(),
        ..cluster()
    };
    WebhookState::with_lookups(Arc::new(pvcs_only))
        .with_secret_source(Arc::new(ApiSecrets::with_timeout(client, timeout)))
}

async fn answer_through(state: WebhookState, case: &str) -> Value {
    let body =
        std::fs::read(reviews_dir().join(format!("{case}.request.json"))).expect("request file");
    let (status, answer) = send_to(state, "/validate", body).await;
    readable(status, &answer)
}

fn recorded(case: &str) -> Value {
    let bytes =
        std::fs::read(reviews_dir().join(format!("{case}.response.json"))).expect("response file");
    serde_json::from_slice(&bytes).expect("a JSON response file")
}

#[tokio::test]
async fn secrets_got_from_the_api_give_the_recorded_answers_and_are_never_listed() {
    for case in [
        "schedule-secret-lacks-key-validate",
        "schedule-secret-missing-validate",
        "schedule-seed-validate",
    ] {
        let (client, seen) = mocked_api(secret_from_cluster);
        let answer = answer_through(api_state(client, Duration::from_secs(2)), case).await;
        assert_eq!(answer, recorded(case), "{case}");
        let seen = seen.lock().expect("not poisoned").clone();
        assert!(!seen.is_empty(), "{case}: the Secrets were fetched");
        for (method, uri) in &seen {
            assert_eq!(method, http::Method::GET, "{case}: {uri}");
            assert!(
                uri.path().contains("/secrets/")
                    && !uri.query().unwrap_or_default().contains("watch"),
                "{case}: one get by name, never a list or a watch: {uri}"
            );
        }
        let mut names: Vec<&str> = seen.iter().map(|(_, u)| u.path()).collect();
        names.dedup();
        assert_eq!(
            names.len(),
            seen.len(),
            "{case}: each Secret once: {seen:?}"
        );
    }
}

#[tokio::test]
async fn secret_that_cannot_be_fetched_skips_its_key_check() {
    // A refused get and a get that never returns: the key is not checked, as while the old
    // caches were still filling, and the rest of the review is judged as usual.
    let refuse: fn(&http::Uri) -> Option<(u16, Value)> = |_| {
        Some((
            503,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 503}),
        ))
    };
    let hang: fn(&http::Uri) -> Option<(u16, Value)> = |_| None;
    for answer in [refuse, hang] {
        let (client, _) = mocked_api(answer);
        let started = std::time::Instant::now();
        let state = api_state(client, Duration::from_millis(200));
        let lacks_key = answer_through(state.clone(), "schedule-secret-lacks-key-validate").await;
        assert_eq!(
            lacks_key["body"]["response"]["allowed"], true,
            "{lacks_key:#}"
        );
        assert!(
            lacks_key["body"]["response"].get("warnings").is_none(),
            "{lacks_key:#}"
        );
        let cron = answer_through(state, "schedule-six-field-cron-validate").await;
        assert_eq!(
            cron["body"]["response"],
            recorded("schedule-six-field-cron-validate")["body"]["response"]
        );
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
