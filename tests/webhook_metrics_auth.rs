//! `/metrics` on the webhook's port is for bearer tokens whose user may get `/metrics`, checked
//! with a TokenReview and a SubjectAccessReview against a mocked API server, and cached; the
//! probes stay open.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use serde_json::{Value, json};
use tower::ServiceExt;

use baas::webhook::metrics_auth::MetricsAccess;
use baas::webhook::{WebhookState, router};

type Handle = tower_test::mock::Handle<Request<kube::client::Body>, Response<kube::client::Body>>;

fn mocked_api() -> (MetricsAccess, Handle) {
    let (service, handle) =
        tower_test::mock::pair::<Request<kube::client::Body>, Response<kube::client::Body>>();
    let client = kube::Client::new(service, "default");
    (MetricsAccess::kubernetes(client), handle)
}

/// GETs `path` with `token`; status and body.
async fn scrape(app: &axum::Router, path: &str, token: Option<&str>) -> (StatusCode, String) {
    let mut request = Request::get(path);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).expect("a request"))
        .await
        .expect("an answer");
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("a body");
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Answers the next API request, which must be a POST to `path`; returns its body.
async fn answer(handle: &mut Handle, path: &str, response: Value) -> Value {
    let (request, send) = tokio::time::timeout(Duration::from_secs(5), handle.next_request())
        .await
        .expect("an API request in time")
        .expect("an API request");
    assert_eq!(request.method(), "POST");
    assert_eq!(request.uri().path(), path);
    let bytes = request
        .into_body()
        .collect_bytes()
        .await
        .expect("a request body");
    send.send_response(
        Response::builder()
            .status(201)
            .body(kube::client::Body::from(
                serde_json::to_vec(&response).expect("JSON"),
            ))
            .expect("a response"),
    );
    serde_json::from_slice(&bytes).expect("a JSON request")
}

const TOKEN_REVIEWS: &str = "/apis/authentication.k8s.io/v1/tokenreviews";
const ACCESS_REVIEWS: &str = "/apis/authorization.k8s.io/v1/subjectaccessreviews";

fn token_review(authenticated: bool) -> Value {
    let mut status = json!({"authenticated": authenticated});
    if authenticated {
        status["user"] = json!({
            "username": "system:serviceaccount:monitoring:prometheus",
            "uid": "1234",
            "groups": ["system:serviceaccounts", "system:authenticated"]
        });
    }
    json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {}, "status": status})
}

fn access_review(allowed: bool) -> Value {
    json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": {},
        "status": {"allowed": allowed}})
}

/// Scrapes with `token` while the mocked API answers the TokenReview (and, when it
/// authenticates, the SubjectAccessReview); returns the answer and the access review sent.
async fn scrape_checked(
    app: &axum::Router,
    handle: &mut Handle,
    token: &str,
    authenticated: bool,
    allowed: bool,
) -> ((StatusCode, String), Option<Value>) {
    let api = async {
        let sent = answer(handle, TOKEN_REVIEWS, token_review(authenticated)).await;
        assert_eq!(sent["spec"]["token"], token);
        if authenticated {
            Some(answer(handle, ACCESS_REVIEWS, access_review(allowed)).await)
        } else {
            None
        }
    };
    tokio::join!(scrape(app, "/metrics", Some(token)), api)
}

#[tokio::test]
async fn metrics_without_a_token_get_401_and_probes_stay_open() {
    let (access, _handle) = mocked_api();
    let app = router(WebhookState::offline().with_metrics_access(access));
    let (status, body) = scrape(&app, "/metrics", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body, "a bearer token is required");
    for path in ["/healthz", "/readyz"] {
        assert_eq!(
            scrape(&app, path, None).await,
            (StatusCode::OK, "ok".into())
        );
    }
}

#[tokio::test]
async fn metrics_with_a_token_the_api_server_rejects_get_401() {
    let (access, mut handle) = mocked_api();
    let app = router(WebhookState::offline().with_metrics_access(access));
    let ((status, body), _) = scrape_checked(&app, &mut handle, "forged", false, false).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body, "the bearer token is not valid");
    assert!(!body.contains("forged"));
}

#[tokio::test]
async fn metrics_for_a_user_without_the_permission_get_403() {
    let (access, mut handle) = mocked_api();
    let app = router(WebhookState::offline().with_metrics_access(access));
    let ((status, body), sent) = scrape_checked(&app, &mut handle, "t0ken", true, false).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("baas-metrics-reader"), "{body}");
    let sent = sent.expect("a SubjectAccessReview");
    assert_eq!(
        sent["spec"]["user"],
        "system:serviceaccount:monitoring:prometheus"
    );
    assert_eq!(sent["spec"]["uid"], "1234");
    assert_eq!(sent["spec"]["groups"][0], "system:serviceaccounts");
    assert_eq!(
        sent["spec"]["nonResourceAttributes"],
        json!({"path": "/metrics", "verb": "get"})
    );
}

#[tokio::test]
async fn metrics_for_an_allowed_user_are_served_and_the_verdict_is_cached() {
    let (access, mut handle) = mocked_api();
    let app = router(WebhookState::offline().with_metrics_access(access));
    let ((status, body), _) = scrape_checked(&app, &mut handle, "t0ken", true, true).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body.contains("baas_webhook_malformed_bodies_total 0"),
        "{body}"
    );

    // Nobody answers the mocked API now: a second scrape that asked it would hang.
    let (status, body) = tokio::time::timeout(
        Duration::from_secs(2),
        scrape(&app, "/metrics", Some("t0ken")),
    )
    .await
    .expect("the second scrape is answered from the cache");
    assert_eq!(status, StatusCode::OK, "{body}");

    // Another token is checked anew.
    let ((status, _), _) = scrape_checked(&app, &mut handle, "other", true, false).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn metrics_offline_are_not_served_unless_opened() {
    let app = router(WebhookState::offline());
    let (status, body) = scrape(&app, "/metrics", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("--unauthenticated-metrics"), "{body}");
    let app = router(WebhookState::offline().with_metrics_access(MetricsAccess::Open));
    let (status, body) = scrape(&app, "/metrics", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.ends_with("# EOF\n"), "{body}");
}
