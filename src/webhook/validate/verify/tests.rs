use serde_json::{Value, json};

use crate::crd::Kind;
use crate::lookup::StaticLookups;
use crate::webhook::validate::{ReviewContext, Verdict, validate_object};

fn backend() -> Value {
    json!({
        "repoPasswordSecretRef": {"name": "backup-repo", "key": "password"},
        "s3": {
            "endpoint": "http://s3.example.com:9000",
            "bucket": "baas",
            "accessKeyIDSecretRef": {"name": "backup-credentials", "key": "username"},
            "secretAccessKeySecretRef": {"name": "backup-credentials", "key": "password"}
        }
    })
}

fn schedule(verify: Value) -> Value {
    json!({
        "apiVersion": "backup.appuio.ch/v1alpha1",
        "kind": "Schedule",
        "metadata": {"name": "nightly", "namespace": "shop"},
        "spec": {
            "backend": backend(),
            "backup": {"schedule": "0 1 * * *"},
            "prune": {"schedule": "0 4 * * *"},
            "verify": verify
        }
    })
}

fn offline(kind: Kind, object: &Value) -> Verdict {
    validate_object(kind, object, ReviewContext::offline("shop"))
}

fn denial_on(verdict: &Verdict, path: &str) -> String {
    verdict
        .denials
        .iter()
        .find(|d| d.starts_with(&format!("{path}:")))
        .cloned()
        .unwrap_or_else(|| panic!("no denial on {path}: {verdict:?}"))
}

#[test]
fn a_full_verify_section_passes() {
    let verdict = offline(
        Kind::Schedule,
        &schedule(json!({
            "schedule": "0 3 * * *", "keepJobs": 3, "maxAge": "36h",
            "appCheck": {"image": "docker.io/library/mariadb:11", "command": ["sh", "-c", "true"]}
        })),
    );
    assert!(verdict.allowed(), "{verdict:?}");
}

#[test]
fn each_bad_verify_field_is_denied_by_its_path() {
    let verdict = offline(
        Kind::Schedule,
        &schedule(json!({
            "schedule": "61 * * * *", "keepJobs": -1, "maxAge": "0h",
            "appCheck": {"image": "Maria DB", "command": []}
        })),
    );
    assert!(denial_on(&verdict, "spec.verify.schedule").contains("invalid cron expression"));
    assert!(denial_on(&verdict, "spec.verify.keepJobs").contains("negative"));
    assert!(denial_on(&verdict, "spec.verify.maxAge").contains("positive"));
    assert!(denial_on(&verdict, "spec.verify.appCheck.image").contains("white space"));
    assert!(denial_on(&verdict, "spec.verify.appCheck.command").contains("Required value"));
    for (max_age, part) in [
        ("2 days", "unit"),
        ("-1h", "not a duration"),
        ("1w", "unit"),
    ] {
        let verdict = offline(
            Kind::Schedule,
            &schedule(json!({"schedule": "@daily", "maxAge": max_age})),
        );
        assert!(
            denial_on(&verdict, "spec.verify.maxAge").contains(part),
            "{max_age}: {verdict:?}"
        );
    }
}

#[test]
fn an_app_check_command_is_never_quoted_back() {
    let secret = format!("-p{}", "x".repeat(20_000));
    let verdict = offline(
        Kind::Schedule,
        &schedule(json!({
            "schedule": "@daily",
            "appCheck": {"image": "mariadb", "command": ["mariadb", secret]}
        })),
    );
    let denial = denial_on(&verdict, "spec.verify.appCheck.command[1]");
    assert!(!denial.contains("xxxx"), "{denial}");
}

#[test]
fn a_verify_run_is_validated_like_the_schedules_section() {
    let object = json!({
        "apiVersion": "backup.appuio.ch/v1alpha1",
        "kind": "Verify",
        "metadata": {"name": "now", "namespace": "shop"},
        "spec": {"backend": backend(), "appCheck": {"image": "mariadb:", "command": ["true"]}}
    });
    let verdict = offline(Kind::Verify, &object);
    assert!(denial_on(&verdict, "spec.appCheck.image").contains("tag"));
}

fn restore_from(source: &str) -> Value {
    json!({
        "apiVersion": "backup.appuio.ch/v1alpha1",
        "kind": "Restore",
        "metadata": {"name": "rebuild", "namespace": "shop-new"},
        "spec": {
            "backend": backend(),
            "sourceNamespace": source,
            "restoreMethod": {"s3": {
                "endpoint": "http://s3.example.com:9000", "bucket": "restores",
                "accessKeyIDSecretRef": {"name": "backup-credentials", "key": "username"},
                "secretAccessKeySecretRef": {"name": "backup-credentials", "key": "password"}
            }}
        }
    })
}

#[test]
fn a_restore_from_another_namespace_needs_the_credentials_in_its_own() {
    // the source namespace holds the Secrets, the Restore's own does not
    let lookups = StaticLookups::default()
        .with_secret("shop", "backup-repo", &["password"])
        .with_secret("shop", "backup-credentials", &["username", "password"]);
    let ctx = ReviewContext {
        namespace: "shop-new",
        lookups: Some(&lookups),
    };
    let verdict = validate_object(Kind::Restore, &restore_from("shop"), ctx);
    let denial = denial_on(&verdict, "spec.backend.repoPasswordSecretRef.name");
    assert!(
        denial.contains("namespace \"shop-new\"") && denial.contains("create it here first"),
        "{denial}"
    );
    denial_on(&verdict, "spec.backend.s3.accessKeyIDSecretRef.name");
    // with its own copy it passes
    let lookups = StaticLookups::default()
        .with_secret("shop-new", "backup-repo", &["password"])
        .with_secret("shop-new", "backup-credentials", &["username", "password"]);
    let ctx = ReviewContext {
        namespace: "shop-new",
        lookups: Some(&lookups),
    };
    let verdict = validate_object(Kind::Restore, &restore_from("shop"), ctx);
    assert!(verdict.allowed(), "{verdict:?}");
}

#[test]
fn a_source_namespace_must_be_a_namespace_name() {
    let verdict = offline(Kind::Restore, &restore_from("Shop_Old"));
    assert!(denial_on(&verdict, "spec.sourceNamespace").contains("not a namespace name"));
}
