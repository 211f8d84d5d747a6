//! Body limits over real HTTPS: the largest review an API server can send (an UPDATE whose
//! object and oldObject are both near etcd's 1.5 MiB) is answered like any other, and only a
//! body over the limit gets HTTP 413, with a message that names the limit.

#[path = "support/webhook.rs"]
mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use tower::ServiceExt;

use baas::webhook::body::MAX_REVIEW_BYTES;
use baas::webhook::{WebhookState, router};
use support::{Webhook, review, seed_schedule};

/// The seed Schedule with an annotation of `bytes` bytes, as large objects carry
/// (`kubectl.kubernetes.io/last-applied-configuration` of a big manifest).
fn schedule_of(bytes: usize) -> Value {
    let mut object = seed_schedule();
    object["metadata"]["annotations"] = json!({"example.com/blob": "x".repeat(bytes)});
    object
}

#[tokio::test]
async fn update_review_over_three_mib_is_answered_with_its_verdict() {
    let webhook = Webhook::start(&[]).await;
    let old = schedule_of(1_600_000);
    let mut object = schedule_of(1_600_000);
    object["spec"]["backup"]["schedule"] = json!("0 1 * *");
    let body =
        serde_json::to_vec(&review("big-update", "UPDATE", object, Some(old))).expect("JSON");
    assert!(body.len() > 3 * 1024 * 1024, "{} bytes", body.len());

    let (status, text) = webhook
        .post("/validate", body.clone())
        .await
        .expect("an answer");
    assert_eq!(status, 200, "{text}");
    let answer: Value = serde_json::from_str(&text).expect("an AdmissionReview");
    assert_eq!(answer["kind"], "AdmissionReview");
    assert_eq!(answer["response"]["uid"], "big-update");
    assert_eq!(answer["response"]["allowed"], false);
    let message = answer["response"]["status"]["message"]
        .as_str()
        .expect("a message");
    assert!(
        message.starts_with("spec.backup.schedule: invalid cron expression \"0 1 * *\""),
        "{message}"
    );

    let (status, text) = webhook.post("/mutate", body).await.expect("an answer");
    assert_eq!(status, 200, "{text}");
    let answer: Value = serde_json::from_str(&text).expect("an AdmissionReview");
    assert_eq!(answer["response"]["uid"], "big-update");
    assert_eq!(answer["response"]["allowed"], true);
}

#[tokio::test]
async fn body_over_the_limit_gets_413_naming_the_limit() {
    let webhook = Webhook::start(&[]).await;
    let body = serde_json::to_vec(&review(
        "huge",
        "CREATE",
        schedule_of(MAX_REVIEW_BYTES),
        None,
    ))
    .expect("JSON");
    let (status, answer) = webhook.post_early_answer("/validate", body).await;
    assert_eq!(status, 413, "{answer}");
    assert!(
        answer.ends_with(
            "\r\n\r\nrequest body is larger than 6 MiB (6291456 bytes), the most an API server sends in an AdmissionReview"
        ),
        "{answer}"
    );
    // The server carries on.
    let seed = serde_json::to_vec(&review("after", "CREATE", seed_schedule(), None)).expect("JSON");
    let (status, _) = webhook.post("/validate", seed).await.expect("an answer");
    assert_eq!(status, 200);
}

#[tokio::test]
async fn streamed_body_without_length_is_cut_off_at_the_limit() {
    let chunk = vec![b' '; 1024 * 1024];
    let chunks = (0..7).map(move |_| Ok::<_, std::io::Error>(chunk.clone()));
    let request = Request::post("/validate")
        .header("content-type", "application/json")
        .body(Body::from_stream(futures::stream::iter(chunks)))
        .expect("a request");
    let response = router(WebhookState::offline())
        .oneshot(request)
        .await
        .expect("an answer");
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let text = axum::body::to_bytes(response.into_body(), 1024)
        .await
        .expect("a body");
    assert!(
        text.starts_with(b"request body is larger than 6 MiB"),
        "{text:?}"
    );
}
