use super::bounded::LINE_LIMIT;
use super::output::{GO_SETGID, GO_SETUID, GO_STICKY};
use super::*;

#[test]
fn wrong_password_is_named_as_the_cause() {
    let message = explain("Fatal: wrong password or no key found\n", "", Some(1));
    assert!(
        message.starts_with("wrong repository password"),
        "{message}"
    );
    assert!(message.contains("exit code 1"), "{message}");
}

#[test]
fn exit_code_12_names_the_secret_ref_and_never_the_password() {
    let stderr = r#"{"message_type":"exit_error","code":12,"message":"Fatal: wrong password or no key found"}"#;
    let message = explain(stderr, "", Some(EXIT_WRONG_PASSWORD));
    assert!(
        message.starts_with("wrong repository password"),
        "{message}"
    );
    assert!(
        message.contains("spec.backend.repoPasswordSecretRef"),
        "{message}"
    );
    assert!(!message.contains("message_type"), "{message}");
    // The code alone is enough, whatever restic printed.
    assert!(explain("", "", Some(12)).contains("repoPasswordSecretRef"));
}

#[test]
fn exit_code_11_says_the_repository_is_locked_and_how_long_it_waited() {
    let stderr = "unable to create lock in backend: repository is already locked \
                  exclusively by PID 7 on prune-x7k2p by root (UID 0, GID 0)\n\
                  lock was created at 2026-01-01 01:00:00 (1m0s ago)";
    let message = explain(stderr, "", Some(EXIT_LOCKED));
    assert!(message.starts_with("repository is locked"), "{message}");
    assert!(message.contains(LOCK_WAIT), "{message}");
    assert!(message.contains("PID 7 on prune-x7k2p"), "{message}");
    assert!(message.contains("exit code 11"), "{message}");
}

#[test]
fn json_exit_error_is_explained_by_its_message() {
    let stderr = r#"{"message_type":"exit_error","code":1,"message":"Fatal: unable to save snapshot: disk full"}"#;
    assert_eq!(
        explain(stderr, "", Some(1)),
        "Fatal: unable to save snapshot: disk full (exit code 1)"
    );
}

#[test]
fn every_command_waits_a_bounded_time_for_locks() {
    let restic = Restic::new("restic", "s3:http://s3/bucket");
    let command = restic.command(["check"]);
    let args: Vec<String> = command
        .as_std()
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        args,
        [
            "--repo",
            "s3:http://s3/bucket",
            "--retry-lock",
            "2m",
            "check"
        ]
    );
}

#[test]
fn node_mode_maps_gos_setuid_setgid_and_sticky_bits() {
    let node = |mode: u32| Node {
        kind: "file".into(),
        path: "/x".into(),
        size: 0,
        mode,
        mtime: String::new(),
        atime: String::new(),
        uid: 0,
        gid: 0,
    };
    assert_eq!(node(0o755 | GO_SETUID).unix_mode(), 0o4755);
    assert_eq!(node(0o750 | GO_SETGID).unix_mode(), 0o2750);
    assert_eq!(node((1 << 31) | GO_STICKY | 0o777).unix_mode(), 0o1777);
    assert_eq!(node(0o640).unix_mode(), 0o640);
}

#[test]
fn refused_access_key_is_named_as_the_cause() {
    let stderr = "Fatal: unable to open config file: Stat: The Access Key Id you provided \
                  does not exist in our records.\nIs there a repository at the following location?";
    assert!(explain(stderr, "", Some(1)).starts_with("S3 credentials refused"));
}

#[test]
fn unknown_failure_keeps_restics_last_lines() {
    let message = explain("something odd\nanother line", "", Some(2));
    assert_eq!(message, "something odd / another line (exit code 2)");
}

#[tokio::test]
async fn backup_output_yields_summary_and_each_unreadable_item_once() {
    let stdout = concat!(
        r#"{"message_type":"status","percent_done":0.5}"#,
        "\n",
        r#"{"message_type":"summary","files_new":2,"data_added":1751,"total_files_processed":2,"total_bytes_processed":6,"snapshot_id":"50f6aa5f"}"#,
        "\n"
    );
    let stderr = concat!(
        r#"{"message_type":"error","error":{"message":"open /data/pvc1/locked: permission denied"},"during":"scan","item":"/data/pvc1/locked"}"#,
        "\n",
        r#"{"message_type":"error","error":{},"during":"archival","item":"/data/pvc1/locked"}"#,
        "\n",
        r#"{"message_type":"exit_error","code":3,"message":"Warning: at least one source file could not be read"}"#,
        "\n"
    );
    let out = read_backup_output(stdout.as_bytes(), stderr.as_bytes()).await;
    let summary = out.summary.expect("summary line is parsed");
    assert_eq!(summary.snapshot_id, "50f6aa5f");
    assert_eq!(summary.to_summary().bytes_added, Some(1751));
    assert_eq!(out.unreadable.len(), 1);
    assert_eq!(out.unreadable[0].item, "/data/pvc1/locked");
    assert_eq!(
        out.unreadable[0].message,
        "open /data/pvc1/locked: permission denied"
    );
    assert_eq!(
        out.stderr_tail,
        "Warning: at least one source file could not be read"
    );
}

#[tokio::test]
async fn overlong_line_is_cut_not_buffered() {
    let long = "x".repeat(LINE_LIMIT * 3);
    let input = format!("{long}\nshort\n");
    let mut lines = BoundedLines::new(input.as_bytes());
    assert_eq!(lines.next().await.map(|l| l.len()), Some(LINE_LIMIT));
    assert_eq!(lines.next().await.as_deref(), Some("short"));
    assert_eq!(lines.next().await, None);
}

#[tokio::test]
async fn a_full_snapshot_id_is_taken_as_it_is_and_a_prefix_is_looked_up() {
    // No restic and no S3: any lookup fails, so only an ID taken as it is comes back.
    let restic = Restic::new("/nonexistent/restic", "s3:http://127.0.0.1:1/bucket");
    let full = "6fa59793ebf2340b0c228b6c4d4a44acb627534bbb001ba31f6b8561a0185bbc";
    assert_eq!(restic.full_id(full).await.expect("a full ID"), full);
    assert!(restic.full_id("6fa59793").await.is_err());
    assert!(restic.full_id(&full.to_uppercase()).await.is_err());
}
