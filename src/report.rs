//! The report an agent leaves when its work is done. It travels from the Job's pod to the
//! operator through the container's termination message, which the kubelet caps at 4096
//! bytes, so it stays compact and is trimmed to fit.

use serde::{Deserialize, Serialize};

use crate::crd::{RunState, SnapshotRef, Summary};

/// The kubelet keeps at most this many bytes of a termination message.
pub const TERMINATION_MESSAGE_LIMIT: usize = 4096;

/// What one agent run did.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RunReport {
    /// How the run ended: Succeeded, PartiallySucceeded or Failed.
    pub state: Option<RunState>,
    /// Snapshots written (backup) or read (restore).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<SnapshotRef>,
    /// restic's figures, summed over all snapshots.
    #[serde(default)]
    pub summary: Summary,
    /// Wall-clock seconds of the work.
    #[serde(default)]
    pub duration_seconds: f64,
    /// Where a restore put the data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_to: Option<String>,
    /// Problems, one line each, most important first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// One-line outcome for humans.
    #[serde(default)]
    pub message: String,
}

impl RunReport {
    /// The report as JSON no longer than the termination message limit. Errors are dropped
    /// from the end (and the count of dropped ones noted) until it fits, so the state, the
    /// snapshot IDs and the first errors always arrive.
    pub fn to_termination_message(&self) -> String {
        let mut report = self.clone();
        let mut dropped = 0usize;
        loop {
            let json = serde_json::to_string(&report).unwrap_or_default();
            if json.len() <= TERMINATION_MESSAGE_LIMIT {
                return json;
            }
            if report.errors.len() > 1 || (report.errors.len() == 1 && dropped == 0) {
                report.errors.pop();
                dropped += 1;
                let note = format!("... and {dropped} more errors (see the Job's log)");
                if dropped > 1 {
                    report.errors.pop();
                }
                report.errors.push(note);
            } else if report.message.len() > 200 {
                let mut cut = 200;
                while !report.message.is_char_boundary(cut) {
                    cut -= 1;
                }
                report.message.truncate(cut);
            } else if report.snapshots.len() > 1 {
                report.snapshots.pop();
            } else {
                report.errors.clear();
                report.snapshots.clear();
            }
        }
    }

    /// Reads a report from a termination message; `None` when the message is not one (for
    /// example when the agent was killed before it could write it). Redacted again, since
    /// the run's status and Events are read more widely than the pod, and an agent of an
    /// older image may have written it.
    pub fn from_termination_message(message: &str) -> Option<RunReport> {
        serde_json::from_str::<RunReport>(message.trim())
            .ok()
            .map(RunReport::redacted)
    }

    /// The report with URL queries, user info and signing parameters removed from its free
    /// text (see [`crate::redact`]).
    pub fn redacted(mut self) -> RunReport {
        self.message = crate::redact::redact(&self.message);
        for error in &mut self.errors {
            *error = crate::redact::redact(error);
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn termination_message_with_a_presigned_url_is_read_redacted() {
        let leaky = RunReport {
            message: "S3 part 1: error sending request for url \
                      (http://s3:9000/b/k?X-Amz-Credential=AKIAEXAMPLE%2F2026&X-Amz-Signature=ab)"
                .into(),
            errors: vec!["see http://u:p@s3:9000/b?uploads".into()],
            ..RunReport::default()
        };
        let read =
            RunReport::from_termination_message(&leaky.to_termination_message()).expect("a report");
        assert_eq!(
            read.message,
            "S3 part 1: error sending request for url (http://s3:9000/b/k?<redacted>)"
        );
        assert_eq!(read.errors, ["see http://s3:9000/b?<redacted>"]);
    }

    #[test]
    fn report_with_many_errors_is_trimmed_to_the_limit_and_keeps_its_snapshot() {
        let report = RunReport {
            state: Some(RunState::PartiallySucceeded),
            snapshots: vec![SnapshotRef {
                id: "a".repeat(64),
                paths: vec!["/data/pvc".into()],
            }],
            errors: (0..500)
                .map(|i| format!("/data/pvc/file-{i}: permission denied"))
                .collect(),
            message: "partial".into(),
            ..Default::default()
        };
        let message = report.to_termination_message();
        assert!(
            message.len() <= TERMINATION_MESSAGE_LIMIT,
            "{}",
            message.len()
        );
        let back = RunReport::from_termination_message(&message).expect("valid JSON");
        assert_eq!(back.snapshots, report.snapshots);
        assert_eq!(back.state, Some(RunState::PartiallySucceeded));
        assert!(
            back.errors
                .last()
                .is_some_and(|e| e.contains("more errors"))
        );
        assert_eq!(back.errors[0], report.errors[0]);
    }

    #[test]
    fn garbage_termination_message_is_no_report() {
        assert_eq!(RunReport::from_termination_message("killed"), None);
    }
}
