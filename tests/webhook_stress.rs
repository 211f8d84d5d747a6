//! The webhook under a flood of bad input: for a bounded time, concurrent clients send the
//! `baas webhook --offline` binary (a child process, so its memory is its own) reviews of
//! more than 3 MiB, deeply nested objects, Schedules with crons never seen before, and bodies
//! that are not reviews at all. Every well-formed review must get HTTP 200 with its own uid,
//! every other body HTTP 400, and the server's peak RSS must stay bounded.
//!
//! `BAAS_STRESS_SECONDS` sets the duration (default 8) and `BAAS_STRESS_CLIENTS` the
//! concurrency (default 16); `scripts/stress-webhook` runs the long form.

#[path = "support/webhook.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Webhook, review, seed_schedule};

/// Generous: a quiet server holds about 10 MiB, and each review in flight a few times its size.
const PEAK_RSS_LIMIT_MIB: u64 = 200;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Default)]
struct Counts {
    large: AtomicU64,
    nested: AtomicU64,
    unique: AtomicU64,
    malformed: AtomicU64,
    bytes: AtomicU64,
}

/// What one request sends, and whether it is a review (200 expected) or not (400).
enum Case {
    Review { uid: String, body: Vec<u8> },
    NotAReview(Vec<u8>),
}

/// An UPDATE whose object and oldObject each carry a 1.6 MiB annotation: more than 3 MiB.
/// The annotation is spliced into the serialized review, so clients spend their time sending.
fn large(uid: &str, annotation: &str) -> Vec<u8> {
    const MARK: &str = "@@annotation@@";
    let mut old = seed_schedule();
    old["metadata"]["annotations"] = json!({"example.com/blob": MARK});
    let mut object = old.clone();
    object["spec"]["backup"]["schedule"] = json!(format!("{uid} is no cron"));
    let small = serde_json::to_string(&review(uid, "UPDATE", object, Some(old))).expect("JSON");
    let mut body = Vec::with_capacity(small.len() + 2 * annotation.len());
    for (i, part) in small.split(MARK).enumerate() {
        if i > 0 {
            body.extend_from_slice(annotation.as_bytes());
        }
        body.extend_from_slice(part.as_bytes());
    }
    body
}

/// A Schedule with an unknown field nested 100 levels deep, under serde_json's depth limit of
/// 128 with the review around it, and a wide list beside it.
fn nested(uid: &str, n: u64) -> Vec<u8> {
    let mut value = json!(n);
    for depth in 0..100 {
        value = if depth % 2 == 0 {
            json!([value, depth])
        } else {
            json!({"k": value, "n": depth})
        };
    }
    let mut object = seed_schedule();
    object["spec"]["nested"] = value;
    object["spec"]["wide"] = Value::Array((0..20_000).map(Value::from).collect());
    serde_json::to_vec(&review(uid, "CREATE", object, None)).expect("JSON")
}

/// A Schedule whose crons no review had before, valid or not.
fn unique(uid: &str, n: u64) -> Vec<u8> {
    let mut object = seed_schedule();
    object["metadata"]["name"] = json!(format!("s-{n}"));
    object["spec"]["backup"]["schedule"] = json!(format!("{} {} * * *", n % 60, n % 24));
    object["spec"]["check"]["schedule"] = json!(format!("{n} {n}-{} */{n} * MON", n + 1));
    object["spec"]["prune"]["schedule"] = json!(format!("@{n}{}", "x".repeat(200)));
    serde_json::to_vec(&review(uid, "CREATE", object, None)).expect("JSON")
}

/// Bodies that are not reviews: truncated, nested beyond any parser's patience, of another
/// version, or not JSON.
fn malformed(n: u64) -> Vec<u8> {
    match n % 4 {
        0 => {
            let mut body = unique("truncated", n);
            body.truncate(body.len() / 2);
            body
        }
        1 => "[".repeat(200_000).into_bytes(),
        2 => {
            let mut value = review("v1beta1", "CREATE", seed_schedule(), None);
            value["apiVersion"] = json!("admission.k8s.io/v1beta1");
            serde_json::to_vec(&value).expect("JSON")
        }
        _ => (0..100_000u32).map(|i| (i % 251) as u8).collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_flooded_with_large_nested_unique_and_malformed_bodies_stays_bounded() {
    let seconds = env_or("BAAS_STRESS_SECONDS", 8);
    let clients = env_or("BAAS_STRESS_CLIENTS", 16);
    let webhook = Arc::new(Webhook::start(&[]).await);
    let annotation: Arc<str> = "x".repeat(1_600_000).into();
    let counts = Arc::new(Counts::default());
    let next = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);

    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (webhook, annotation, counts, next) = (
            webhook.clone(),
            annotation.clone(),
            counts.clone(),
            next.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            while Instant::now() < deadline {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let uid = format!("uid-{n}");
                let (case, counter) = match n % 4 {
                    0 => (
                        Case::Review {
                            body: large(&uid, &annotation),
                            uid,
                        },
                        &counts.large,
                    ),
                    1 => (
                        Case::Review {
                            body: nested(&uid, n),
                            uid,
                        },
                        &counts.nested,
                    ),
                    2 => (
                        Case::Review {
                            body: unique(&uid, n),
                            uid,
                        },
                        &counts.unique,
                    ),
                    _ => (Case::NotAReview(malformed(n)), &counts.malformed),
                };
                let endpoint = if n % 8 < 4 { "/validate" } else { "/mutate" };
                let (body, expected_uid) = match case {
                    Case::Review { uid, body } => (body, Some(uid)),
                    Case::NotAReview(body) => (body, None),
                };
                counts.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
                let answer = webhook.post(endpoint, body).await;
                counter.fetch_add(1, Ordering::Relaxed);
                let problem = match (answer, expected_uid) {
                    (Err(error), _) => Some(format!("{endpoint} #{n}: no answer: {error}")),
                    (Ok((200, text)), Some(uid)) => {
                        let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                        (answer["response"]["uid"] != uid.as_str())
                            .then(|| format!("{endpoint} #{n}: answer without uid {uid}"))
                    }
                    (Ok((400, _)), None) => None,
                    (Ok((status, text)), _) => {
                        let start: String = text.chars().take(200).collect();
                        Some(format!("{endpoint} #{n}: HTTP {status}: {start}"))
                    }
                };
                failures.extend(problem);
            }
            failures
        }));
    }
    let mut failures = Vec::new();
    for task in tasks {
        failures.extend(task.await.expect("a client task"));
    }

    let peak_mib = webhook.peak_rss_kib() / 1024;
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let total =
        load(&counts.large) + load(&counts.nested) + load(&counts.unique) + load(&counts.malformed);
    println!(
        "webhook stress: {seconds} s, {clients} clients: {total} requests ({} large > 3 MiB, {} nested, \
         {} unique crons, {} malformed), {} MiB sent; server peak RSS {peak_mib} MiB",
        load(&counts.large),
        load(&counts.nested),
        load(&counts.unique),
        load(&counts.malformed),
        load(&counts.bytes) / (1024 * 1024),
    );
    assert!(
        failures.is_empty(),
        "{} failures, first: {:#?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(
        load(&counts.large) > 0 && load(&counts.malformed) > 0,
        "every kind of body was sent"
    );
    let mut webhook = Arc::into_inner(webhook).expect("the only handle");
    assert!(webhook.running(), "the server survived");
    assert!(
        peak_mib < PEAK_RSS_LIMIT_MIB,
        "peak RSS {peak_mib} MiB, limit {PEAK_RSS_LIMIT_MIB} MiB"
    );
}
