//! Retention, check, stale locks and snapshot choice, against real restic and S3.

#[path = "support/agent.rs"]
mod support;

use baas::crd::RunState;
use support::{Agent, S3Server};

fn stdin_snapshot(repository: &str, host: &str, file: &str, data: &str) -> String {
    let out = support::restic_with_stdin(
        repository,
        &[
            "backup",
            "--json",
            "--host",
            host,
            "--stdin",
            "--stdin-filename",
            file,
        ],
        Some(data.as_bytes()),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let summary = text.lines().last().unwrap_or_default();
    let value: serde_json::Value = serde_json::from_str(summary).expect("summary JSON");
    value["snapshot_id"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn ids_of(repository: &str, host: &str, path: &str) -> Vec<String> {
    support::snapshots(repository)
        .iter()
        .filter(|s| s["hostname"] == host && s["paths"][0] == path)
        // restic ≥ 0.17 reports full IDs in the backup summary.
        .map(|s| s["id"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn prune_keeps_exactly_what_the_retention_says_per_path_and_only_in_its_namespace() {
    let Some(s3) = S3Server::start() else { return };
    let repository = s3.repository("backups");
    support::restic(&repository, &["init"]);
    let db: Vec<String> = (0..4)
        .map(|i| stdin_snapshot(&repository, "shop", "/shop-db", &format!("v{i}")))
        .collect();
    let web = stdin_snapshot(&repository, "shop", "/shop-web", "w");
    let other: Vec<String> = (0..3)
        .map(|i| stdin_snapshot(&repository, "blog", "/blog-db", &format!("b{i}")))
        .collect();

    let outcome =
        Agent::new(&repository, "shop").run(&["prune", "--retention", r#"{"keepLast": 2}"#]);

    outcome.assert_succeeded();
    assert_eq!(outcome.report.summary.snapshots_kept, Some(3));
    assert_eq!(outcome.report.summary.snapshots_removed, Some(2));
    assert_eq!(ids_of(&repository, "shop", "/shop-db"), db[2..].to_vec());
    assert_eq!(ids_of(&repository, "shop", "/shop-web"), [web]);
    assert_eq!(
        ids_of(&repository, "blog", "/blog-db"),
        other,
        "another namespace's snapshots stay"
    );

    let check = Agent::new(&repository, "shop").run(&["check"]);
    check.assert_succeeded();
}

#[test]
fn stale_lock_is_removed_and_reported() {
    let Some(s3) = S3Server::start() else { return };
    let repository = s3.repository("backups");
    support::restic(&repository, &["init"]);
    stdin_snapshot(&repository, "shop", "/shop-db", "v");
    // A restic killed mid-run leaves its lock; SIGKILL gives it no chance to clean up. It is
    // this test's own child, so it is reaped and its PID is really gone, as after a pod died.
    let mut hung = std::process::Command::new(support::restic_binary().expect("checked above"))
        .args([
            "--repo",
            &repository,
            "backup",
            "--stdin",
            "--stdin-filename",
            "/x",
            "--host",
            "shop",
        ])
        .env("RESTIC_PASSWORD", support::PASSWORD)
        .env("AWS_ACCESS_KEY_ID", support::ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", support::SECRET_KEY)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("restic starts");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while support::restic(&repository, &["list", "locks", "--no-lock"])
        .stdout
        .is_empty()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "restic never took its lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    hung.kill().expect("kill restic");
    hung.wait().expect("reap restic");

    let outcome = Agent::new(&repository, "shop").run(&["check"]);
    outcome.assert_succeeded();
    assert!(
        outcome.report.message.contains("removed 1 stale lock"),
        "{}",
        outcome.report.message
    );
}

#[test]
fn restore_without_snapshot_takes_the_newest_of_the_namespace_holding_the_path() {
    let Some(s3) = S3Server::start() else { return };
    let repository = s3.repository("backups");
    support::restic(&repository, &["init"]);
    let oldest = stdin_snapshot(&repository, "shop", "/shop-db", "old");
    let newest = stdin_snapshot(&repository, "shop", "/shop-db", "new");
    stdin_snapshot(
        &repository,
        "shop",
        "/shop-web",
        "a later snapshot of another path",
    );
    stdin_snapshot(
        &repository,
        "blog",
        "/shop-db",
        "a later snapshot of another namespace",
    );
    let target = tempfile::tempdir().expect("temp dir");

    let outcome = Agent::new(&repository, "shop").run(&[
        "restore",
        "--path",
        "/shop-db",
        "--target-dir",
        &target.path().display().to_string(),
    ]);

    outcome.assert_succeeded();
    assert!(
        outcome.report.snapshots[0].id.starts_with(&newest),
        "{:?}",
        outcome.report.snapshots
    );
    assert_eq!(
        std::fs::read_to_string(target.path().join("shop-db")).expect("restored file"),
        "new"
    );
    let left: Vec<_> = std::fs::read_dir(target.path())
        .expect("read")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(left.len(), 1, "no staging directory left behind: {left:?}");

    // An explicit ID prefix wins over "newest".
    let older = tempfile::tempdir().expect("temp dir");
    let outcome = Agent::new(&repository, "shop").run(&[
        "restore",
        "--snapshot",
        &oldest[..6],
        "--path",
        "/shop-db",
        "--target-dir",
        &older.path().display().to_string(),
    ]);
    assert_eq!(
        outcome.report.state,
        Some(RunState::Succeeded),
        "{:?}",
        outcome.report
    );
    assert!(outcome.report.snapshots[0].id.starts_with(&oldest));
    assert_eq!(
        std::fs::read_to_string(older.path().join("shop-db")).expect("restored file"),
        "old"
    );
}
