use super::*;
use crate::lookup::ReflectorLookups;
use http::{Method, Request, Response};
use serde_json::{Value, json};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;
type Send = tower_test::mock::SendResponse<Response<Body>>;

fn mock() -> (Client, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "default"), handle)
}

fn respond(send: Send, code: u16, body: &Value) {
    send.send_response(
        Response::builder()
            .status(code)
            .body(Body::from(serde_json::to_vec(body).expect("json")))
            .expect("response"),
    );
}

fn secret(name: &str, data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": name, "namespace": "team-a",
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"data\":{\"password\":\"aHVudGVyMg==\"}}"}},
        "data": data})
}

fn not_found() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
        "reason": "NotFound", "code": 404, "message": "secrets \"gone\" not found"})
}

fn keys(names: &[&str]) -> SecretInfo {
    SecretInfo::Keys(names.iter().map(|k| k.to_string()).collect())
}

fn wanted(names: &[&str]) -> BTreeSet<(String, String)> {
    names
        .iter()
        .map(|n| ("team-a".to_string(), n.to_string()))
        .collect()
}

#[tokio::test]
async fn each_named_secret_is_one_get_and_only_its_key_names_are_kept() {
    let (client, mut handle) = mock();
    let server = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some((request, send)) = handle.next_request().await {
            let (method, uri) = (request.method().clone(), request.uri().clone());
            match uri.path() {
                "/api/v1/namespaces/team-a/secrets/backup-credentials" => respond(
                    send,
                    200,
                    &secret(
                        "backup-credentials",
                        json!({"username": "YWxpY2U=", "password": "aHVudGVyMg=="}),
                    ),
                ),
                "/api/v1/namespaces/team-a/secrets/empty" => {
                    respond(send, 200, &secret("empty", Value::Null))
                }
                _ => respond(send, 404, &not_found()),
            }
            seen.push((method, uri));
        }
        seen
    });
    let source = ApiSecrets::new(client);
    let fetched = fetch_secrets(&source, wanted(&["backup-credentials", "empty", "gone"])).await;
    drop(source);
    let seen = server.await.expect("mock server");
    assert_eq!(
        fetched,
        BTreeMap::from([
            (
                ("team-a".to_string(), "backup-credentials".to_string()),
                keys(&["password", "username"])
            ),
            (("team-a".to_string(), "empty".to_string()), keys(&[])),
            (
                ("team-a".to_string(), "gone".to_string()),
                SecretInfo::Absent
            ),
        ])
    );
    assert_eq!(seen.len(), 3, "{seen:?}");
    for (method, uri) in &seen {
        assert_eq!(method, Method::GET, "{uri}");
        assert!(
            !uri.query().unwrap_or_default().contains("watch"),
            "never a watch: {uri}"
        );
        let name = uri
            .path()
            .strip_prefix("/api/v1/namespaces/team-a/secrets/")
            .unwrap_or_default();
        assert!(!name.is_empty(), "a get by name, never a list: {uri}");
    }
}

#[tokio::test]
async fn secret_that_cannot_be_read_is_unknown() {
    let (client, mut handle) = mock();
    let server = tokio::spawn(async move {
        while let Some((_, send)) = handle.next_request().await {
            respond(
                send,
                403,
                &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                    "reason": "Forbidden", "code": 403, "message": "forbidden"}),
            );
        }
    });
    let source = ApiSecrets::new(client);
    assert_eq!(
        source.secret_keys("team-a", "backup-repo").await,
        SecretInfo::Unknown
    );
    drop(source);
    server.await.expect("mock server");
}

#[tokio::test]
async fn answer_that_is_not_a_secret_is_unknown() {
    let (client, mut handle) = mock();
    let server = tokio::spawn(async move {
        while let Some((_, send)) = handle.next_request().await {
            respond(send, 200, &json!({"data": "aHVudGVyMg=="}));
        }
    });
    let source = ApiSecrets::new(client);
    assert_eq!(
        source.secret_keys("team-a", "backup-repo").await,
        SecretInfo::Unknown
    );
    drop(source);
    server.await.expect("mock server");
}

#[tokio::test]
async fn secret_get_that_hangs_is_unknown_after_the_timeout() {
    let (client, mut handle) = mock();
    let server = tokio::spawn(async move {
        // Takes the request and never answers it.
        let held = handle.next_request().await;
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        drop(held);
    });
    let source = ApiSecrets::with_timeout(client, std::time::Duration::from_millis(100));
    let started = std::time::Instant::now();
    assert_eq!(
        source.secret_keys("team-a", "backup-repo").await,
        SecretInfo::Unknown
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    server.abort();
}

#[tokio::test]
async fn malformed_name_is_never_put_into_a_url() {
    let (client, mut handle) = mock();
    let source = ApiSecrets::new(client);
    assert_eq!(
        source.secret_keys("team-a", "../pods").await,
        SecretInfo::Unknown
    );
    drop(source);
    assert!(handle.next_request().await.is_none(), "no request was made");
}

#[tokio::test]
async fn cluster_caches_never_list_or_watch_secrets() {
    let (client, mut handle) = mock();
    let lookups = ReflectorLookups::start(client);
    let mut paths = Vec::new();
    let mut held = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(500);
    while let Ok(Some((request, send))) =
        tokio::time::timeout_at(deadline, handle.next_request()).await
    {
        let uri = request.uri().clone();
        paths.push(uri.path().to_string());
        if uri.query().unwrap_or_default().contains("watch=true") {
            held.push(send); // a watch that stays open and quiet
        } else {
            let kind = if uri.path().ends_with("/pods") {
                "PodList"
            } else {
                "PersistentVolumeClaimList"
            };
            respond(
                send,
                200,
                &json!({"apiVersion": "v1", "kind": kind,
                    "metadata": {"resourceVersion": "1"}, "items": []}),
            );
        }
    }
    assert!(
        paths.iter().any(|p| p.ends_with("/persistentvolumeclaims")),
        "{paths:?}"
    );
    assert!(paths.iter().any(|p| p.ends_with("/pods")), "{paths:?}");
    assert!(!paths.iter().any(|p| p.contains("secrets")), "{paths:?}");
    assert!(lookups.ready(), "PVCs and pods alone make the caches ready");
    assert_eq!(lookups.secret("team-a", "backup-repo"), SecretInfo::Unknown);
}

#[test]
fn recorder_notes_secrets_and_answers_none() {
    let cluster = StaticLookups::default().with_secret("team-a", "backup-repo", &["password"]);
    let recorder = RecordingLookups::new(&cluster);
    assert_eq!(
        recorder.secret("team-a", "backup-repo"),
        SecretInfo::Unknown
    );
    assert_eq!(
        recorder.secret("team-a", "backup-repo"),
        SecretInfo::Unknown
    );
    assert_eq!(recorder.asked(), wanted(&["backup-repo"]));
}
