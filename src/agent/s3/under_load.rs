//! The upload against a stand-in S3 that is slow, stalls or fails for a while: it must keep
//! going while data moves, retry what S3 calls transient, give up on a stall, and never
//! quote a presigned URL.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::stand_in::{Reply, StandIn};
use super::{Chunk, Destination, RetryPolicy, Transport, upload};

const ACCESS_KEY: &str = "AKIASTANDINKEY";

fn destination(endpoint: &str) -> Destination {
    Destination {
        endpoint: endpoint.into(),
        bucket: "restores".into(),
        access_key_id: ACCESS_KEY.into(),
        secret_access_key: "stand-in-secret".into(),
    }
}

fn transport(stall: Duration, attempts: u32) -> Transport {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Transport::with_policy(
        reqwest::Client::new(),
        RetryPolicy {
            stall,
            attempts,
            first_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
        },
    )
}

/// Uploads `parts` parts of `size` bytes each and returns the outcome and the time it took.
async fn upload_parts(
    transport: &Transport,
    endpoint: &str,
    parts: usize,
    size: usize,
) -> (crate::Result<u64>, Duration) {
    let (tx, rx) = mpsc::channel(1);
    let feeder = tokio::spawn(async move {
        for _ in 0..parts {
            if tx.send(Chunk::Part(vec![1u8; size])).await.is_err() {
                return;
            }
        }
        let _ = tx.send(Chunk::End).await;
    });
    let started = Instant::now();
    let outcome = upload(transport, &destination(endpoint), "ns/run.tar.gz", rx).await;
    let took = started.elapsed();
    feeder.abort();
    (outcome, took)
}

#[tokio::test]
async fn transient_503_and_500_are_retried_and_the_upload_completes() {
    let s3 = StandIn::start(None, |index, seen| match index {
        0 => Reply::new(
            503,
            "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>",
        ),
        2 => Reply::new(500, "<Error><Code>InternalError</Code></Error>"),
        _ => Reply::success_for(seen),
    })
    .await;
    let (outcome, _) =
        upload_parts(&transport(Duration::from_secs(5), 3), &s3.endpoint, 1, 1000).await;
    assert_eq!(outcome.expect("retried until S3 took it"), 1000);
    let seen: Vec<(String, usize)> = s3
        .seen()
        .iter()
        .map(|s| (s.method.clone(), s.body_len))
        .collect();
    let seen: Vec<(&str, usize)> = seen.iter().map(|(m, n)| (m.as_str(), *n)).collect();
    assert_eq!(
        &seen[..4],
        [("POST", 0), ("POST", 0), ("PUT", 1000), ("PUT", 1000)],
        "the start and the part were sent again, the part whole"
    );
    assert_eq!(seen[4].0, "POST", "then completed");
}

#[tokio::test]
async fn slow_but_progressing_upload_outlives_the_stall_timeout() {
    // Each request takes longer than the stall timeout while data moves all the while:
    // parts of the real size are read at 4 MiB/s, and the completion's answer trickles in a
    // byte every 40 ms. The kernel's send buffer (up to 4 MiB) drains unseen after the last
    // frame is handed over, so the stall timeout must outlast that drain: 2 s here, 60 s in
    // production.
    let stall = Duration::from_secs(2);
    let s3 = StandIn::start(Some(4 << 20), |_, seen| {
        let mut reply = Reply::success_for(seen);
        if seen.method == "POST" && !seen.target.contains("uploads") {
            reply.trickle = Some(Duration::from_millis(40));
        }
        reply
    })
    .await;
    let part = super::FIRST_PART_SIZE;
    let (outcome, took) = upload_parts(&transport(stall, 1), &s3.endpoint, 3, part).await;
    assert_eq!(outcome.expect("no stall while data moves"), 3 * part as u64);
    assert!(took > stall * 5 / 2, "the upload took {took:?}");
}

#[tokio::test]
async fn stalled_part_fails_after_the_stall_timeout_and_the_upload_is_aborted() {
    let s3 = StandIn::start(None, |_, seen| {
        let mut reply = Reply::success_for(seen);
        reply.hang = seen.method == "PUT";
        reply
    })
    .await;
    let stall = Duration::from_millis(300);
    let (outcome, took) = tokio::time::timeout(
        Duration::from_secs(20),
        upload_parts(&transport(stall, 2), &s3.endpoint, 1, 1000),
    )
    .await
    .expect("a stalled request ends");
    let error = outcome.expect_err("stalled").to_string();
    assert_eq!(
        error,
        "S3 part 1: no data moved for 0.3s (after 2 attempts)"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    let methods: Vec<String> = s3.seen().iter().map(|s| s.method.clone()).collect();
    assert_eq!(
        methods,
        ["POST", "PUT", "PUT", "DELETE"],
        "aborted at the end"
    );
}

#[tokio::test]
async fn unreachable_s3_is_named_without_the_presigned_url() {
    // A port nobody listens on: the connection is refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let endpoint = format!("http://{}", closed.local_addr().expect("address"));
    drop(closed);
    let (outcome, _) = upload_parts(&transport(Duration::from_secs(5), 2), &endpoint, 1, 10).await;
    let error = outcome.expect_err("refused").to_string();
    assert!(error.starts_with("S3 starting the upload: "), "{error}");
    assert!(error.contains("(after 2 attempts)"), "{error}");
    for secret in [ACCESS_KEY, "X-Amz-Signature", "X-Amz-Credential", "?"] {
        assert!(!error.contains(secret), "{secret} in {error}");
    }
}
