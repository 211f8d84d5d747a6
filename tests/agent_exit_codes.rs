//! What the agent makes of restic's exit codes (restic ≥ 0.17: 3 partial, 10 no repository,
//! 11 locked, 12 wrong password), against a fake restic: some of these outcomes (an exit 3
//! whose unreadable files were never named, a lock held past the wait) cannot be produced
//! on demand with the real one. The fake logs every call, so the tests also see which
//! commands the agent ran and with which options.

#[path = "support/agent.rs"]
mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use baas::crd::RunState;
use support::Agent;

/// A stand-in for restic: logs its arguments to `$FAKE_RESTIC_DIR/calls` and answers as the
/// `FAKE_*` variables say. `cat config` fails with `$FAKE_CAT_CONFIG_EXIT` (default 10, "no
/// repository") until `init` ran; `backup` prints a summary and exits 3 without naming a
/// file, or with `FAKE_BACKUP_EXIT=11` reports a lock held by another process.
const FAKE_RESTIC: &str = r#"#!/bin/sh
printf '%s\n' "$*" >> "$FAKE_RESTIC_DIR/calls"
while [ $# -gt 0 ]; do
  case "$1" in
    --repo|--retry-lock) shift 2 ;;
    *) break ;;
  esac
done
id=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
case "$1" in
  cat)
    [ -e "$FAKE_RESTIC_DIR/initialised" ] && exit 0
    printf '%s\n' "Fatal: unable to open config file: Stat: The specified key does not exist." >&2
    printf '%s\n' "Is there a repository at the following location?" >&2
    exit "${FAKE_CAT_CONFIG_EXIT:-10}" ;;
  init)
    touch "$FAKE_RESTIC_DIR/initialised"
    printf '%s\n' "created restic repository" ;;
  list|unlock) ;;
  backup)
    if [ "${FAKE_BACKUP_EXIT:-3}" = 11 ]; then
      printf '%s\n' '{"message_type":"exit_error","code":11,"message":"unable to create lock in backend: repository is already locked exclusively by PID 7 on prune-x7k2p by root (UID 0, GID 0)\nlock was created at 2026-01-01 01:00:00 (2m5s ago)"}' >&2
      exit 11
    fi
    printf '%s\n' '{"message_type":"status","percent_done":1}'
    printf '%s\n' '{"message_type":"summary","files_new":1,"total_files_processed":1,"total_bytes_processed":4,"snapshot_id":"'"$id"'"}'
    printf '%s\n' '{"message_type":"exit_error","code":3,"message":"Warning: at least one source file could not be read"}' >&2
    exit 3 ;;
  snapshots)
    printf '%s\n' '[{"id":"'"$id"'","short_id":"01234567","time":"2026-01-01T00:00:00Z","paths":["/data/app"],"hostname":"shop"}]' ;;
  *)
    printf '%s\n' "fake restic: unexpected call: $*" >&2
    exit 1 ;;
esac
"#;

/// A directory with the fake restic and its log, and a data directory with one volume.
struct Fake {
    dir: tempfile::TempDir,
}

impl Fake {
    fn new() -> Fake {
        let dir = tempfile::tempdir().expect("temp dir");
        let script = dir.path().join("restic");
        std::fs::write(&script, FAKE_RESTIC).expect("write the fake restic");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
            .expect("chmod the fake restic");
        std::fs::create_dir_all(dir.path().join("data/app")).expect("volume dir");
        std::fs::write(dir.path().join("data/app/file"), "data").expect("volume file");
        Fake { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn initialised(self) -> Fake {
        std::fs::write(self.path().join("initialised"), "").expect("marker");
        self
    }

    /// An agent of namespace `shop` that runs this fake on a repository the fake pretends to be.
    fn agent(&self) -> Agent {
        let data: PathBuf = self.path().join("data");
        Agent::new("/srv/restic-repo", "shop")
            .env(
                "BAAS_RESTIC",
                Some(&self.path().join("restic").display().to_string()),
            )
            .env("FAKE_RESTIC_DIR", Some(&self.path().display().to_string()))
            .env("BAAS_DATA_DIR", Some(&data.display().to_string()))
    }

    /// restic's subcommands, in the order the agent called them.
    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.path().join("calls"))
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }
}

#[test]
fn exit_code_3_is_a_partial_backup_even_when_restic_named_no_file() {
    let fake = Fake::new().initialised();
    let outcome = fake.agent().run(&["backup"]);
    assert_eq!(
        outcome.report.state,
        Some(RunState::PartiallySucceeded),
        "{:?}\n{}",
        outcome.report,
        outcome.stderr
    );
    assert_eq!(outcome.code, Some(0), "partial is a final answer");
    assert_eq!(outcome.report.snapshots.len(), 1, "{:?}", outcome.report);
    assert_eq!(
        outcome.report.errors.len(),
        1,
        "{:?}",
        outcome.report.errors
    );
    assert!(
        outcome.report.errors[0].contains("exit code 3"),
        "{:?}",
        outcome.report.errors
    );
}

#[test]
fn every_restic_call_waits_a_bounded_time_for_locks() {
    let fake = Fake::new().initialised();
    fake.agent().run(&["backup"]);
    let calls = fake.calls();
    assert!(calls.iter().any(|c| c.contains(" backup ")), "{calls:?}");
    for call in &calls {
        assert!(call.contains(" --retry-lock 2m "), "{call}");
    }
}

#[test]
fn missing_repository_exit_code_10_is_initialised_once() {
    let fake = Fake::new();
    let outcome = fake.agent().run(&["backup"]);
    let inits = fake.calls().iter().filter(|c| c.contains(" init")).count();
    assert_eq!(inits, 1, "{:?}", fake.calls());
    assert_eq!(
        outcome.report.state,
        Some(RunState::PartiallySucceeded),
        "{:?}\n{}",
        outcome.report,
        outcome.stderr
    );
}

#[test]
fn unreadable_repository_config_is_not_mistaken_for_a_missing_repository() {
    // Exit 1 with the same words as a missing repository: only exit code 10 means "none".
    let fake = Fake::new();
    let outcome = fake
        .agent()
        .env("FAKE_CAT_CONFIG_EXIT", Some("1"))
        .run(&["backup"]);
    assert_eq!(
        outcome.report.state,
        Some(RunState::Failed),
        "{:?}",
        outcome.report
    );
    assert!(
        !fake.calls().iter().any(|c| c.contains(" init")),
        "an existing repository must never be initialised again: {:?}",
        fake.calls()
    );
    assert!(
        outcome.report.message.contains("exit code 1"),
        "{}",
        outcome.report.message
    );
}

#[test]
fn lock_held_past_the_wait_fails_naming_the_lock_and_the_wait() {
    let fake = Fake::new().initialised();
    let outcome = fake
        .agent()
        .env("FAKE_BACKUP_EXIT", Some("11"))
        .run(&["backup"]);
    assert_eq!(
        outcome.report.state,
        Some(RunState::Failed),
        "{:?}",
        outcome.report
    );
    let message = &outcome.report.message;
    assert!(message.contains("repository is locked"), "{message}");
    assert!(message.contains("waiting 2m"), "{message}");
    assert!(message.contains("PID 7 on prune-x7k2p"), "{message}");
    assert!(!message.contains("message_type"), "{message}");
}
