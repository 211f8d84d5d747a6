//! Properties of the webhook under arbitrary input: no body makes it panic or fail with a 5xx,
//! a well-formed review is always answered with a review carrying the same uid, a patch always
//! applies to the object it was computed for, and mutating a defaulted object yields no patch.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};
use tower::ServiceExt;

use baas::crd::Kind;
use baas::webhook::mutate::{Mutation, mutate_object};
use baas::webhook::{WebhookState, router};

const KINDS: [&str; 6] = ["Schedule", "Backup", "Check", "Prune", "Restore", "Pod"];

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "[ -~]{0,12}".prop_map(Value::from),
        prop::sample::select(vec![
            "spec",
            "backend",
            "s3",
            "schedule",
            " 0 1 * * *",
            "http://h/",
            "retention",
            "{}"
        ])
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(
                prop::sample::select(vec![
                    "spec",
                    "backend",
                    "s3",
                    "endpoint",
                    "bucket",
                    "backup",
                    "check",
                    "prune",
                    "schedule",
                    "keepJobs",
                    "retention",
                    "keepLast",
                    "restoreMethod",
                    "pvc",
                    "claimName",
                    "metadata",
                    "deletionTimestamp",
                    "repoPasswordSecretRef",
                    "name",
                    "key",
                ])
                .prop_map(String::from),
                inner,
                0..5,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn review(uid: &str, kind: &str, operation: &str, object: Value, old: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "backup.appuio.ch", "version": "v1alpha1", "kind": kind},
            "resource": {"group": "backup.appuio.ch", "version": "v1alpha1", "resource": "x"},
            "name": "x", "namespace": "team-a", "operation": operation,
            "userInfo": {}, "object": object, "oldObject": old, "dryRun": false
        }
    })
}

async fn post(path: &str, body: Vec<u8>) -> (StatusCode, Vec<u8>) {
    let response = router(WebhookState::offline())
        .oneshot(Request::post(path).body(Body::from(body)).expect("request"))
        .await
        .expect("the router answers");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    (status, bytes.to_vec())
}

fn runtime() -> tokio::runtime::Runtime {
    // With a timer, as a server's runtime has one: the router bounds how long a body takes.
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a Tokio runtime")
}

#[test]
fn arbitrary_bodies_are_answered_with_200_or_400() {
    let rt = runtime();
    let mut runner = TestRunner::new(Config::with_cases(200));
    let bodies = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        any_json().prop_map(|v| serde_json::to_vec(&v).expect("JSON")),
        any_json().prop_map(|v| {
            serde_json::to_vec(&json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": v}))
                .expect("JSON")
        }),
    ];
    runner
        .run(&(bodies, any::<bool>()), |(body, validate)| {
            let path = if validate { "/validate" } else { "/mutate" };
            let (status, answer) = rt.block_on(post(path, body));
            prop_assert!(status == StatusCode::OK || status == StatusCode::BAD_REQUEST);
            if status == StatusCode::OK {
                let json: Value = serde_json::from_slice(&answer).expect("a JSON answer");
                prop_assert!(json["response"]["allowed"].is_boolean());
            }
            Ok(())
        })
        .expect("no body breaks the webhook");
}

#[test]
fn well_formed_reviews_with_arbitrary_objects_get_answers_with_their_uid() {
    let rt = runtime();
    let mut runner = TestRunner::new(Config::with_cases(300));
    let inputs = (
        "[a-f0-9-]{1,36}",
        prop::sample::select(KINDS.to_vec()),
        prop::sample::select(vec!["CREATE", "UPDATE", "DELETE"]),
        any_json(),
        any_json(),
        any::<bool>(),
    );
    runner
        .run(&inputs, |(uid, kind, operation, object, old, validate)| {
            let path = if validate { "/validate" } else { "/mutate" };
            let body = review(&uid, kind, operation, object.clone(), old);
            let (status, answer) =
                rt.block_on(post(path, serde_json::to_vec(&body).expect("JSON")));
            prop_assert_eq!(status, StatusCode::OK);
            let json: Value = serde_json::from_slice(&answer).expect("a JSON answer");
            prop_assert_eq!(json["apiVersion"].as_str(), Some("admission.k8s.io/v1"));
            prop_assert_eq!(json["response"]["uid"].as_str(), Some(uid.as_str()));
            let allowed = json["response"]["allowed"].as_bool();
            prop_assert!(allowed.is_some());
            if allowed == Some(false) {
                let message = json["response"]["status"]["message"].as_str().unwrap_or("");
                prop_assert!(!message.is_empty(), "a denial says why");
            }
            if let Some(patch) = json["response"]["patch"].as_str() {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(patch)
                    .expect("base64");
                let patch: json_patch::Patch = serde_json::from_slice(&bytes).expect("a patch");
                let mut patched = object.clone();
                prop_assert!(
                    json_patch::patch(&mut patched, &patch).is_ok(),
                    "the patch applies to {object}"
                );
            }
            Ok(())
        })
        .expect("every well-formed review is answered");
}

fn schedule_like() -> impl Strategy<Value = Value> {
    let padded = prop::sample::select(vec![" 0 1 * * *", "0 1 * * *", "@daily  ", "\t*/5 * * * *"]);
    let retention = prop::option::of(prop::sample::select(vec![
        json!({}),
        json!({"keepLast": 3}),
        Value::Null,
    ]));
    let section = (padded, prop::option::of(0..20i32), retention).prop_map(|(s, keep, r)| {
        let mut v = json!({"schedule": s});
        if let Some(k) = keep {
            v["keepJobs"] = json!(k);
        }
        if let Some(r) = r {
            v["retention"] = r;
        }
        v
    });
    let endpoint = prop::sample::select(vec![
        "http://s3:9000",
        "http://s3:9000/",
        "https://s3//",
        "http://",
    ]);
    let legacy = prop::option::of(prop::sample::select(vec![
        json!({"name": "repo", "key": "password"}),
        json!({"name": "other", "key": "password"}),
    ]));
    let current = prop::option::of(Just(json!({"name": "repo", "key": "password"})));
    (
        prop::option::of(section.clone()),
        prop::option::of(section.clone()),
        prop::option::of(section),
        endpoint,
        legacy,
        current,
    )
        .prop_map(|(backup, check, prune, endpoint, legacy, current)| {
            let mut spec = json!({"backend": {"s3": {"endpoint": endpoint, "bucket": "baas"}}});
            if let Some(l) = legacy {
                spec["backend"]["s3"]["repoPasswordSecretRef"] = l;
            }
            if let Some(c) = current {
                spec["backend"]["repoPasswordSecretRef"] = c;
            }
            for (name, section) in [("backup", backup), ("check", check), ("prune", prune)] {
                if let Some(s) = section {
                    spec[name] = s;
                }
            }
            json!({"spec": spec})
        })
}

#[test]
fn mutating_a_defaulted_object_yields_no_patch() {
    let mut runner = TestRunner::new(Config::with_cases(300));
    runner
        .run(
            &(schedule_like(), prop::sample::select(KINDS.to_vec())),
            |(object, kind)| {
                let mut as_prune = object.clone();
                as_prune["spec"]["retention"] = object["spec"]["prune"]["retention"].clone();
                let object = if kind == "Prune" { as_prune } else { object };
                let mutate = |object: &Value| {
                    Kind::from_name(kind)
                        .map_or_else(Mutation::default, |k| mutate_object(k, object))
                };
                let first = mutate(&object);
                let patched = first.apply(&object).expect("the patch applies");
                let second = mutate(&patched);
                prop_assert!(
                    second.patch.is_empty(),
                    "second patch {:?} for {}",
                    second.patch,
                    patched
                );
                Ok(())
            },
        )
        .expect("mutation is idempotent");
}
