//! Following a run object until it ends, as `kubectl wait` would, and saying how it ended in
//! one line a user reads: state, snapshot, what was saved or restored, and the message.

use std::time::{Duration, Instant};

use kube::Api;

use super::error::{PluginError, PluginResult};
use super::output::{human_bytes, short_id};
use crate::controller::run::RunKind;
use crate::crd::{RunState, RunStatus};

/// How often the run is read again while it goes.
const POLL: Duration = Duration::from_secs(1);

/// Reads the run until its state is terminal; every change of state (and of the message of
/// a waiting run) is told on stderr. Fails when `timeout` passes first; the run goes on.
pub async fn until_finished<K: RunKind>(
    api: &Api<K>,
    name: &str,
    timeout: Duration,
) -> PluginResult<K> {
    let kind = K::OP.kind();
    let deadline = Instant::now() + timeout;
    let mut told: Option<(Option<RunState>, Option<String>)> = None;
    loop {
        let run = api.get(name).await?;
        let status = run.run_status().cloned().unwrap_or_default();
        if status.is_finished() {
            return Ok(run);
        }
        let now = (status.state, status.message.clone());
        if told.as_ref() != Some(&now) {
            eprintln!("{}", progress(kind.as_str(), name, &status));
            told = Some(now);
        }
        if Instant::now() >= deadline {
            return Err(PluginError::Failed(format!(
                "{kind} {name} has not ended after {}s; it goes on in the cluster \
                 (kubectl get {} {name})",
                timeout.as_secs(),
                kind.as_str().to_lowercase(),
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `Backup nightly-x: Pending (waiting for ...)`.
pub fn progress(kind: &str, name: &str, status: &RunStatus) -> String {
    let state = status
        .state
        .map_or_else(|| "Pending".to_string(), |s| format!("{s:?}"));
    match status.message.as_deref().filter(|m| !m.is_empty()) {
        Some(message) => format!("{kind} {name}: {state} ({message})"),
        None => format!("{kind} {name}: {state}"),
    }
}

/// The outcome line of a finished run, e.g. `Backup nightly-x Succeeded: snapshot 1a2b3c4d,
/// 12 files, 3.4 MiB read, 1.2 MiB added, in 4s`. `target` names where a restore went when
/// the user knows it better than `restoredTo` says it (a PVC, not its mount in the Job).
pub fn outcome(kind: &str, name: &str, status: &RunStatus, target: Option<&str>) -> String {
    let state = status
        .state
        .map_or_else(|| "Unknown".to_string(), |s| format!("{s:?}"));
    let mut parts = Vec::new();
    if let Some(id) = &status.snapshot_id {
        parts.push(format!("snapshot {}", short_id(id)));
    }
    if let Some(to) = target.or(status.restored_to.as_deref()) {
        let path = status
            .snapshots
            .first()
            .and_then(|s| s.paths.first())
            .map(|p| format!(" ({p})"))
            .unwrap_or_default();
        parts.push(format!("restored{path} to {to}"));
    }
    if let Some(summary) = &status.summary {
        if let Some(files) = summary.total_files {
            parts.push(format!("{files} files"));
        }
        if let Some(bytes) = summary.total_bytes {
            parts.push(human_bytes(bytes));
        }
        if let Some(added) = summary.bytes_added {
            parts.push(format!("{} added", human_bytes(added)));
        }
        if let (Some(kept), Some(removed)) = (summary.snapshots_kept, summary.snapshots_removed) {
            parts.push(format!("{kept} snapshots kept, {removed} removed"));
        }
    }
    if let Some(seconds) = status.duration_seconds {
        parts.push(format!("in {seconds:.0}s"));
    }
    let mut line = format!("{kind} {name} {state}");
    if !parts.is_empty() {
        line.push_str(": ");
        line.push_str(&parts.join(", "));
    }
    if status.state != Some(RunState::Succeeded) {
        if let Some(message) = status.message.as_deref().filter(|m| !m.is_empty()) {
            line.push_str(&format!("\n  {message}"));
        }
        for error in &status.errors {
            line.push_str(&format!("\n  {error}"));
        }
    }
    line.push('\n');
    line
}

/// Exit status of a finished run: only `Succeeded` is success; a partial backup lacks
/// files or backup commands, so it is a failure of the operation the user asked for.
pub fn succeeded(status: Option<&RunStatus>) -> bool {
    status.and_then(|s| s.state) == Some(RunState::Succeeded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{SnapshotRef, Summary};

    #[test]
    fn succeeded_backup_says_snapshot_files_and_bytes() {
        let status = RunStatus {
            state: Some(RunState::Succeeded),
            snapshot_id: Some("1a2b3c4d5e6f".into()),
            summary: Some(Summary {
                total_files: Some(12),
                total_bytes: Some(2048),
                bytes_added: Some(1024),
                ..Summary::default()
            }),
            duration_seconds: Some(4.2),
            message: Some("backed up".into()),
            ..RunStatus::default()
        };
        assert_eq!(
            outcome("Backup", "nightly-1", &status, None),
            "Backup nightly-1 Succeeded: snapshot 1a2b3c4d, 12 files, 2.0 KiB, 1.0 KiB added, in 4s\n"
        );
        assert!(succeeded(Some(&status)));
    }

    #[test]
    fn failed_backup_says_why_and_is_not_success() {
        let status = RunStatus {
            state: Some(RunState::Failed),
            message: Some("nothing to back up".into()),
            errors: vec!["backup command in pod db failed".into()],
            ..RunStatus::default()
        };
        let line = outcome("Backup", "b", &status, None);
        assert!(line.starts_with("Backup b Failed\n"), "{line}");
        assert!(
            line.contains("nothing to back up") && line.contains("pod db"),
            "{line}"
        );
        assert!(!succeeded(Some(&status)));
        assert!(!succeeded(None));
    }

    #[test]
    fn partial_backup_is_not_success() {
        let status = RunStatus {
            state: Some(RunState::PartiallySucceeded),
            ..RunStatus::default()
        };
        assert!(!succeeded(Some(&status)));
    }

    #[test]
    fn restore_says_which_path_went_where() {
        let status = RunStatus {
            state: Some(RunState::Succeeded),
            snapshot_id: Some("abcdef0123".into()),
            snapshots: vec![SnapshotRef {
                id: "abcdef0123".into(),
                paths: vec!["/data/db".into()],
            }],
            restored_to: Some("/restore/db-copy".into()),
            ..RunStatus::default()
        };
        assert_eq!(
            outcome("Restore", "r", &status, Some("pvc/db-copy")),
            "Restore r Succeeded: snapshot abcdef01, restored (/data/db) to pvc/db-copy\n"
        );
    }

    #[test]
    fn progress_names_the_state_and_why_it_waits() {
        let status = RunStatus {
            state: Some(RunState::Pending),
            message: Some("waiting for Prune p".into()),
            ..RunStatus::default()
        };
        assert_eq!(
            progress("Backup", "b", &status),
            "Backup b: Pending (waiting for Prune p)"
        );
        assert_eq!(
            progress("Backup", "b", &RunStatus::default()),
            "Backup b: Pending"
        );
    }
}
