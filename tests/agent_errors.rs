//! Misconfigurations must fail fast with the cause named in the report.

#[path = "support/agent.rs"]
mod support;

use baas::crd::RunState;
use support::{Agent, S3Server};

#[test]
fn wrong_password_fails_naming_the_password() {
    let Some(s3) = S3Server::start() else { return };
    let repository = s3.repository("backups");
    support::restic(&repository, &["init"]);
    let with_work = Agent::new(&repository, "shop")
        .env("RESTIC_PASSWORD", Some("not the password"))
        .backup_commands(&[("db-0", "pg", "printf data")])
        .run(&["backup"]);
    // With nothing to back up, the password is still checked.
    let without_work = Agent::new(&repository, "shop")
        .env("RESTIC_PASSWORD", Some("not the password"))
        .run(&["backup"]);
    for outcome in [with_work, without_work] {
        assert_eq!(outcome.code, Some(1));
        assert_eq!(outcome.report.state, Some(RunState::Failed));
        assert!(
            outcome.report.message.contains("wrong repository password"),
            "{}",
            outcome.report.message
        );
        assert!(
            outcome
                .report
                .message
                .contains("spec.backend.repoPasswordSecretRef"),
            "{}",
            outcome.report.message
        );
        assert!(
            !outcome.report.message.contains("not the password"),
            "the password never reaches the status: {}",
            outcome.report.message
        );
    }
    assert!(support::snapshots(&repository).is_empty());
}

#[test]
fn unreachable_endpoint_fails_fast_naming_the_endpoint() {
    let Some(_s3) = S3Server::start() else { return };
    let repository = "s3:http://127.0.0.1:9/backups";
    let started = std::time::Instant::now();
    let outcome = Agent::new(repository, "shop").run(&["backup"]);
    assert_eq!(outcome.report.state, Some(RunState::Failed));
    let message = &outcome.report.message;
    assert!(
        message.contains("http://127.0.0.1:9 is unreachable"),
        "{message}"
    );
    assert!(message.to_lowercase().contains("refused"), "{message}");
    assert!(
        started.elapsed().as_secs() < 30,
        "no long restic retry loop"
    );
}

#[test]
fn missing_s3_credentials_fail_naming_the_variable() {
    let Some(s3) = S3Server::start() else { return };
    let outcome = Agent::new(&s3.repository("backups"), "shop")
        .env("AWS_SECRET_ACCESS_KEY", None)
        .run(&["check"]);
    assert_eq!(outcome.report.state, Some(RunState::Failed));
    assert!(
        outcome.report.message.contains("AWS_SECRET_ACCESS_KEY"),
        "{}",
        outcome.report.message
    );
}

#[test]
fn refused_s3_credentials_are_named() {
    let Some(s3) = S3Server::start() else { return };
    let outcome = Agent::new(&s3.repository("backups"), "shop")
        .env("AWS_ACCESS_KEY_ID", Some("nobodyknowsme"))
        .run(&["backup"]);
    assert_eq!(outcome.report.state, Some(RunState::Failed));
    assert!(
        outcome.report.message.contains("S3 credentials refused"),
        "{}",
        outcome.report.message
    );
}

#[test]
fn check_of_a_repository_that_does_not_exist_fails_without_creating_it() {
    let Some(s3) = S3Server::start() else { return };
    let outcome = Agent::new(&s3.repository("never-written"), "shop").run(&["check"]);
    assert_eq!(outcome.report.state, Some(RunState::Failed));
    assert!(
        outcome.report.message.contains("does not exist"),
        "{}",
        outcome.report.message
    );
}

/// Backs up one small dump of namespace `shop`, then restores it to `bucket` on the same
/// server; the agent's outcome.
fn restore_one_dump_to_bucket(s3: &S3Server, bucket: &str) -> support::Outcome {
    restore_one_dump_to(s3, &s3.endpoint, bucket, support::SECRET_KEY)
}

/// Backs up one small dump of namespace `shop` on `s3`, then restores it to `bucket` at
/// `endpoint`, signing with `secret`; the agent's outcome.
fn restore_one_dump_to(
    s3: &S3Server,
    endpoint: &str,
    bucket: &str,
    secret: &str,
) -> support::Outcome {
    let repository = s3.repository("backups");
    support::restic(&repository, &["init"]);
    support::restic_with_stdin(
        &repository,
        &[
            "backup",
            "--host",
            "shop",
            "--stdin",
            "--stdin-filename",
            "/shop-db",
        ],
        Some(b"data"),
    );
    Agent::new(&repository, "shop").run(&[
        "restore",
        "--s3-endpoint",
        endpoint,
        "--s3-bucket",
        bucket,
        "--s3-access-key-id",
        support::ACCESS_KEY,
        "--s3-secret-access-key",
        secret,
    ])
}

#[test]
fn failed_s3_restore_names_the_cause_without_the_access_key_or_a_signature() {
    // A port nobody listens on: the HTTP client's error quotes the presigned URL it could
    // not send, which holds the access key ID and the signature.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let refused = format!("http://{}", closed.local_addr().expect("address"));
    drop(closed);
    for (refuse, secret, cause) in [
        (true, support::SECRET_KEY, "(after 5 attempts)"),
        (false, "not the secret", "403 Forbidden"),
    ] {
        let Some(s3) = S3Server::start() else { return };
        let endpoint = if refuse { &refused } else { &s3.endpoint };
        let outcome = restore_one_dump_to(&s3, endpoint, "restores", secret);
        assert_eq!(
            outcome.report.state,
            Some(RunState::Failed),
            "{}",
            outcome.stderr
        );
        let message = &outcome.report.message;
        assert!(message.starts_with("S3 starting the upload: "), "{message}");
        assert!(message.contains(cause), "{message}");
        let report = format!("{:?}", outcome.report);
        for text in [&report, &outcome.stderr] {
            for secret in [support::ACCESS_KEY, "X-Amz-Signature", "X-Amz-Credential"] {
                assert!(!text.contains(secret), "{secret} leaked: {text}");
            }
        }
    }
}

#[test]
fn restore_to_a_missing_bucket_creates_it_and_uploads_the_archive() {
    let Some(s3) = S3Server::start() else { return };
    let outcome = restore_one_dump_to_bucket(&s3, "restoremini");
    assert_eq!(
        outcome.report.state,
        Some(RunState::Succeeded),
        "{}",
        outcome.stderr
    );
    let restored_to = outcome.report.restored_to.clone().unwrap_or_default();
    assert!(
        restored_to.starts_with("s3://restoremini/shop/") && restored_to.ends_with(".tar.gz"),
        "{restored_to}"
    );
}

#[test]
fn restore_to_a_bucket_that_cannot_be_created_names_the_error() {
    let Some(s3) = S3Server::start() else { return };
    // Upper case is not a valid bucket name: S3 refuses to create it.
    let outcome = restore_one_dump_to_bucket(&s3, "No_Such_Bucket");
    assert_eq!(
        outcome.report.state,
        Some(RunState::Failed),
        "{}",
        outcome.stderr
    );
    assert!(
        outcome.report.message.contains("creating the bucket"),
        "{}",
        outcome.report.message
    );
}
