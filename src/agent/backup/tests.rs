use super::*;

fn part(what: &str, snapshot: bool, errors: &[&str], failed: bool) -> Part {
    Part {
        what: what.into(),
        snapshot: snapshot.then(|| SnapshotRef {
            id: format!("{what}-id"),
            paths: vec![],
        }),
        summary: Summary {
            total_files: Some(2),
            bytes_added: Some(10),
            ..Summary::default()
        },
        errors: errors.iter().map(|e| e.to_string()).collect(),
        failed,
    }
}

#[test]
fn all_parts_written_succeeds_and_sums_figures() {
    let report = combine(
        vec![
            part("volumes", true, &[], false),
            part("cmd", true, &[], false),
        ],
        0,
        Path::new("/data"),
    );
    assert_eq!(report.state, Some(RunState::Succeeded));
    assert_eq!(report.snapshots.len(), 2);
    assert_eq!(report.summary.total_files, Some(4));
    assert_eq!(report.summary.bytes_added, Some(20));
}

#[test]
fn failed_command_next_to_written_volumes_is_partial_with_the_reason() {
    let report = combine(
        vec![
            part("volumes", true, &[], false),
            part("cmd", false, &["cmd: `dump` failed: exit 1"], true),
        ],
        1,
        Path::new("/data"),
    );
    assert_eq!(report.state, Some(RunState::PartiallySucceeded));
    assert_eq!(report.errors, vec!["cmd: `dump` failed: exit 1"]);
    assert!(report.message.contains("failed: cmd"), "{}", report.message);
    assert!(report.message.contains("stale lock"), "{}", report.message);
}

#[test]
fn only_failed_parts_fail_the_run() {
    let report = combine(
        vec![part("cmd", false, &["cmd: broke"], true)],
        0,
        Path::new("/data"),
    );
    assert_eq!(report.state, Some(RunState::Failed));
    assert!(report.message.contains("cmd: broke"));
}

fn output(code: i32, unreadable: &[(&str, &str)]) -> BackupOutput {
    BackupOutput {
        code: Some(code),
        summary: None,
        unreadable: unreadable
            .iter()
            .map(|(item, message)| UnreadableItem {
                item: item.to_string(),
                during: "archival".into(),
                message: message.to_string(),
            })
            .collect(),
        stderr_tail: String::new(),
    }
}

#[test]
fn exit_code_3_without_named_files_is_still_partial() {
    let errors = written_part_errors("/data/app", &output(EXIT_PARTIAL, &[]));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("exit code 3"), "{errors:?}");
    let report = combine(
        vec![Part {
            errors,
            ..part("/data/app", true, &[], false)
        }],
        0,
        Path::new("/data"),
    );
    assert_eq!(report.state, Some(RunState::PartiallySucceeded));
    assert!(written_part_errors("/data/app", &output(0, &[])).is_empty());
}

#[test]
fn unreadable_file_error_names_the_file_and_the_missing_permission() {
    let errors = written_part_errors(
        "/data/app",
        &output(
            EXIT_PARTIAL,
            &[(
                "/data/app/private",
                "open /data/app/private: permission denied",
            )],
        ),
    );
    assert_eq!(
        errors,
        [
            "/data/app/private: not backed up: the agent lacks the permission to read it \
          (open /data/app/private: permission denied)"
        ]
    );
    let other = written_part_errors(
        "/data/app",
        &output(EXIT_PARTIAL, &[("/data/app/gone", "lstat: no such file")]),
    );
    assert_eq!(
        other,
        ["/data/app/gone: not backed up: lstat: no such file"]
    );
}

#[test]
fn unreadable_files_make_the_run_partial() {
    let report = combine(
        vec![part(
            "volumes",
            true,
            &["/data/a/x: permission denied"],
            false,
        )],
        0,
        Path::new("/data"),
    );
    assert_eq!(report.state, Some(RunState::PartiallySucceeded));
    assert_eq!(report.errors.len(), 1);
}

#[tokio::test]
async fn the_pipe_into_restic_holds_a_mebibyte() {
    let mut child = tokio::process::Command::new("cat")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("cat starts");
    let stdin = child.stdin.take().expect("stdin is piped");
    widen_pipe(&stdin);
    let size = rustix::pipe::fcntl_getpipe_size(&stdin).expect("a pipe has a size");
    assert_eq!(size, PIPE_SIZE);
}
