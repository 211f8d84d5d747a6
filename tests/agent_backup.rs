//! Backups that go partly or wholly wrong, a streamed backup command of several hundred MB,
//! and metrics, against real restic and a real S3 server.

#[path = "support/agent.rs"]
mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use baas::crd::RunState;
use support::{Agent, Pushgateway, S3Server};

fn sha256_of_command(script: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("{script} | sha256sum"))
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn unreadable_directory_makes_a_partial_backup_that_names_it() {
    let Some(s3) = S3Server::start() else { return };
    if !support::can_mount() {
        return;
    }
    let data = tempfile::tempdir().expect("temp dir");
    let app = data.path().join("app");
    fs::create_dir_all(app.join("private")).expect("mkdir");
    fs::write(app.join("ok.txt"), "fine").expect("write");
    fs::write(app.join("private/hidden.txt"), "hidden").expect("write");
    // The agent runs as nobody, like an unprivileged Job: mode 000 really locks it out.
    fs::set_permissions(data.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    fs::set_permissions(&app, fs::Permissions::from_mode(0o755)).expect("chmod");
    fs::set_permissions(app.join("ok.txt"), fs::Permissions::from_mode(0o644)).expect("chmod");
    fs::set_permissions(app.join("private"), fs::Permissions::from_mode(0o000)).expect("chmod");
    let repository = s3.repository("backups");

    let outcome = Agent::new(&repository, "shop")
        .volumes(data.path())
        .unprivileged()
        .run(&["backup"]);

    assert_eq!(
        outcome.report.state,
        Some(RunState::PartiallySucceeded),
        "{:?}\n{}",
        outcome.report,
        outcome.stderr
    );
    // Partial is a final answer, not something a Job retry can fix.
    assert_eq!(outcome.code, Some(0));
    assert_eq!(
        outcome.report.snapshots.len(),
        1,
        "the readable files were saved"
    );
    assert_eq!(
        outcome.report.errors.len(),
        1,
        "{:?}",
        outcome.report.errors
    );
    let error = &outcome.report.errors[0];
    assert!(error.starts_with("/data/app/private"), "{error}");
    assert!(
        error.contains("the agent lacks the permission to read it"),
        "{error}"
    );
    assert!(
        error.to_lowercase().contains("permission denied"),
        "{error}"
    );
    assert!(
        outcome.report.message.contains("could not be read"),
        "{}",
        outcome.report.message
    );
    let listing = support::restic(&repository, &["ls", &outcome.report.snapshots[0].id]);
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(listing.contains("/data/app/ok.txt"), "{listing}");
    assert!(!listing.contains("hidden.txt"), "{listing}");
}

#[test]
fn failed_backup_command_stores_nothing_and_says_why() {
    let Some(s3) = S3Server::start() else { return };
    let repository = s3.repository("backups");
    let outcome = Agent::new(&repository, "shop")
        .backup_commands(&[
            (
                "db-0",
                "mysql",
                "echo half-a-dump; echo 'mysqldump: Access denied' >&2; exit 2",
            ),
            ("web-0", "nginx", "printf hello"),
        ])
        .run(&["backup"]);

    assert_eq!(
        outcome.report.state,
        Some(RunState::PartiallySucceeded),
        "{:?}\n{}",
        outcome.report,
        outcome.stderr
    );
    let error = &outcome.report.errors[0];
    assert!(error.contains("pod db-0, container mysql"), "{error}");
    assert!(error.contains("exit code: 2"), "{error}");
    assert!(error.contains("Access denied"), "{error}");
    assert!(error.contains("nothing was stored"), "{error}");
    // the command line (which may hold a password) appears nowhere in the report
    let report = format!("{:?}", outcome.report);
    assert!(!report.contains("half-a-dump"), "{report}");
    let paths: Vec<String> = support::snapshots(&repository)
        .iter()
        .map(|s| s["paths"][0].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        paths,
        ["/shop-web-0-nginx"],
        "no snapshot of the truncated dump"
    );
    let dumped = support::restic(&repository, &["dump", "latest", "/shop-web-0-nginx"]);
    assert_eq!(dumped.stdout, b"hello");
    let locks = support::restic(&repository, &["list", "locks", "--no-lock"]);
    assert!(locks.stdout.is_empty(), "the killed restic left no lock");
}

#[test]
fn only_failing_backup_command_fails_the_run() {
    let Some(s3) = S3Server::start() else { return };
    let repository = s3.repository("backups");
    let outcome = Agent::new(&repository, "shop")
        .backup_commands(&[("db-0", "mysql", "exit 1")])
        .run(&["backup"]);
    assert_eq!(
        outcome.report.state,
        Some(RunState::Failed),
        "{:?}",
        outcome.report
    );
    assert_eq!(outcome.code, Some(1));
    assert!(outcome.report.snapshots.is_empty());
}

#[test]
fn streamed_backup_command_of_400_mb_keeps_the_agent_small() {
    let Some(s3) = S3Server::start() else { return };
    let repository = s3.repository("backups");
    let work = tempfile::tempdir().expect("temp dir");
    let file = work.path().join("dump.bin");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("head -c 400M /dev/urandom > {}", file.display()))
        .status()
        .expect("sh");
    assert!(status.success());
    let command = format!("cat {}", file.display());

    let outcome = Agent::new(&repository, "shop")
        .backup_commands(&[("db-0", "pg", &command)])
        .run(&["backup"]);

    outcome.assert_succeeded();
    assert_eq!(outcome.report.summary.total_bytes, Some(400 << 20));
    assert!(outcome.peak_rss_kib > 0, "VmHWM was sampled");
    assert!(outcome.peak_anon_kib > 0, "RssAnon was sampled");
    // The heap and stacks are what would grow with a dump held in memory. The whole RSS of a
    // test build also counts tens of MB of its own mapped, unoptimised binary, which says
    // nothing about streaming (a release agent's whole peak is measured by bench-agent).
    assert!(
        outcome.peak_anon_kib < 16 * 1024,
        "agent peak heap and stacks {} KiB (peak RSS {} KiB)",
        outcome.peak_anon_kib,
        outcome.peak_rss_kib
    );
    let id = &outcome.report.snapshots[0].id;
    let restored = sha256_of_command(&format!(
        "RESTIC_PASSWORD='{}' AWS_ACCESS_KEY_ID={} AWS_SECRET_ACCESS_KEY={} RESTIC_CACHE_DIR={} {} --repo {repository} dump {id} /shop-db-0-pg",
        support::PASSWORD,
        support::ACCESS_KEY,
        support::SECRET_KEY,
        work.path().join("cache").display(),
        support::restic_binary()
            .expect("checked by S3Server::start")
            .display()
    ));
    assert_eq!(
        restored,
        sha256_of_command(&format!("cat {}", file.display()))
    );
}

#[test]
fn backup_pushes_its_metrics_and_a_dead_pushgateway_does_not_fail_it() {
    let Some(s3) = S3Server::start() else { return };
    let Some(gateway) = Pushgateway::start() else {
        return;
    };
    let repository = s3.repository("backups");
    let commands = [("web-0", "nginx", "printf hello")];

    let outcome = Agent::new(&repository, "shop")
        .backup_commands(&commands)
        .env("BAAS_PROM_URL", Some(&gateway.url))
        .env("BAAS_SCHEDULE", Some("nightly"))
        .run(&["backup"]);
    assert_eq!(
        outcome.report.state,
        Some(RunState::Succeeded),
        "{}",
        outcome.stderr
    );

    let metrics = gateway.metrics();
    let value = |name: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(&format!("{name}{{")) && l.contains(r#"namespace="shop""#))
            .unwrap_or_else(|| panic!("{name} missing in:\n{metrics}"))
            .to_string()
    };
    let success = value("baas_run_success");
    assert!(
        success.contains(r#"kind="backup""#) && success.contains(r#"schedule="nightly""#),
        "{success}"
    );
    assert!(success.ends_with(" 1"), "{success}");
    assert!(value("baas_backup_files_total").ends_with(" 1"));
    assert!(!value("baas_backup_bytes_added").ends_with(" 0"));
    assert!(value("baas_backup_last_success_timestamp_seconds").contains("e+09"));

    let unreachable = Agent::new(&repository, "shop")
        .backup_commands(&commands)
        .env("BAAS_PROM_URL", Some("http://127.0.0.1:9"))
        .run(&["backup"]);
    assert_eq!(
        unreachable.report.state,
        Some(RunState::Succeeded),
        "{}",
        unreachable.stderr
    );
    assert_eq!(unreachable.code, Some(0));
    assert!(
        unreachable.stderr.contains("pushing metrics failed"),
        "{}",
        unreachable.stderr
    );
}

#[test]
fn backup_command_killed_mid_stream_leaves_no_snapshot() {
    let Some(s3) = S3Server::start() else { return };
    let repository = s3.repository("backups");
    // 5 MB reach restic before the command dies: exactly the truncated dump that must not
    // look like a good one.
    let outcome = Agent::new(&repository, "shop")
        .backup_commands(&[("db-0", "pg", "head -c 5000000 /dev/urandom; kill -KILL $$")])
        .run(&["backup"]);
    assert_eq!(
        outcome.report.state,
        Some(RunState::Failed),
        "{:?}",
        outcome.report
    );
    // The whole report and the agent's log on failure: a run that failed before it reached
    // the command (S3, restic init) has no errors to show.
    assert!(
        outcome
            .report
            .errors
            .first()
            .is_some_and(|e| e.contains("killed by a signal")),
        "{:?}\n{}",
        outcome.report,
        outcome.stderr
    );
    assert!(support::snapshots(&repository).is_empty());
}

#[test]
fn backup_command_is_read_from_its_pod_and_a_gone_pod_or_annotation_is_named() {
    let Some(s3) = S3Server::start() else { return };
    let repository = s3.repository("backups");
    // The command carries a password, as the seed's `mysqldump -uroot -psecure` does.
    let command = "printf dump # --password=hunter2-secret";
    let pods = serde_json::json!({"items": [
        {"metadata": {"name": "db-0", "annotations": {"appuio.ch/backupcommand": command}}},
        {"metadata": {"name": "cache-0", "annotations": {"other": "x"}}}
    ]});
    let targets = r#"[
        {"pod":"db-0","container":"mysql"},
        {"pod":"web-0","container":"nginx"},
        {"pod":"cache-0","container":"redis"}
    ]"#;

    let outcome = Agent::new(&repository, "shop")
        .backup_pods(targets, &pods)
        .run(&["backup"]);

    assert_eq!(
        outcome.report.state,
        Some(RunState::PartiallySucceeded),
        "{:?}\n{}",
        outcome.report,
        outcome.stderr
    );
    assert_eq!(
        outcome.report.errors,
        [
            "backup command in pod web-0, container nginx: the pod is gone (it was deleted \
             after the backup was planned); nothing was stored for it",
            "backup command in pod cache-0, container redis: the pod no longer has the \
             annotation appuio.ch/backupcommand (it was removed after the backup was planned); \
             nothing was stored for it",
        ]
    );
    let dumped = support::restic(&repository, &["dump", "latest", "/shop-db-0-mysql"]);
    assert_eq!(dumped.stdout, b"dump");
    let snapshots = serde_json::Value::Array(support::snapshots(&repository)).to_string();
    let report = format!("{:?}", outcome.report);
    for text in [&report, &outcome.stderr, &snapshots] {
        assert!(!text.contains("hunter2"), "the command leaked: {text}");
    }
}
