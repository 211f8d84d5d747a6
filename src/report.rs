//! The report an agent leaves when its work is done. It travels from the Job's pod to the
//! operator through the container's termination message, which the kubelet caps at 4096
//! bytes, so it stays compact and is trimmed to fit.

use serde::{Deserialize, Serialize};

use crate::crd::{RunState, SnapshotRef, Summary, VerifiedSnapshot};

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
    /// Snapshots a verification restored and checked, with what was checked and any failure.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verified: Vec<VerifiedSnapshot>,
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
    /// The report as JSON no longer than the termination message limit. Errors after the
    /// first are dropped from the end (and the count of dropped ones noted) until it fits;
    /// then a long message is cut, then verified entries go from the end, once the failed ones
    /// stand first (a failure is what a user looks for), then snapshots after the first, and
    /// the first error last of all. So the state, the snapshot IDs, the first error and the
    /// failed verifications arrive whenever they can.
    pub fn to_termination_message(&self) -> String {
        let mut report = self.clone();
        let mut dropped = 0usize;
        loop {
            let json = serde_json::to_string(&report).unwrap_or_default();
            if json.len() <= TERMINATION_MESSAGE_LIMIT {
                return json;
            }
            // Errors still there, not counting the note about dropped ones.
            let real_errors = report.errors.len().saturating_sub(usize::from(dropped > 0));
            if real_errors > 1 {
                drop_last_error(&mut report.errors, &mut dropped);
            } else if report.message.len() > 200 {
                truncate(&mut report.message, 200);
            } else if let Some(long) = report
                .verified
                .iter_mut()
                .filter_map(|v| v.error.as_mut())
                .find(|e| e.len() > VERIFIED_ERROR_LIMIT)
            {
                truncate(long, VERIFIED_ERROR_LIMIT);
            } else if !report.verified.is_empty() {
                // Stable: failures keep their order among themselves, as do the others.
                report.verified.sort_by_key(|v| v.error.is_none());
                report.verified.pop();
            } else if report.snapshots.len() > 1 {
                report.snapshots.pop();
            } else if real_errors == 1 {
                drop_last_error(&mut report.errors, &mut dropped);
            } else if !report.errors.is_empty() || !report.snapshots.is_empty() {
                report.errors.clear();
                report.snapshots.clear();
            } else {
                // Nothing left to drop but free text: the state must arrive.
                report.restored_to = None;
                truncate(&mut report.message, 200);
                return serde_json::to_string(&report).unwrap_or_default();
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
        for error in self.verified.iter_mut().filter_map(|v| v.error.as_mut()) {
            *error = crate::redact::redact(error);
        }
        self
    }
}

/// Drops the last real error and counts it in the closing note.
fn drop_last_error(errors: &mut Vec<String>, dropped: &mut usize) {
    if *dropped > 0 {
        errors.pop();
    }
    errors.pop();
    *dropped += 1;
    errors.push(format!("... and {dropped} more errors (see the Job's log)"));
}

/// How long a verified entry's error may stay when the report must shrink: the full text is
/// in `errors` and in the Job's log.
const VERIFIED_ERROR_LIMIT: usize = 200;

/// Cuts `text` to at most `limit` bytes at a character boundary.
fn truncate(text: &mut String, limit: usize) {
    let mut cut = limit.min(text.len());
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
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

    fn verified(i: usize, error: Option<&str>) -> VerifiedSnapshot {
        VerifiedSnapshot {
            id: format!("{i:064}"),
            paths: vec![format!("/data/pvc-{i}")],
            files: Some(10),
            bytes: Some(1024),
            checks: vec!["content".into(), "summary".into()],
            error: error.map(String::from),
            ..VerifiedSnapshot::default()
        }
    }

    #[test]
    fn report_with_many_verified_snapshots_is_trimmed_and_keeps_the_failed_ones() {
        let mut entries: Vec<VerifiedSnapshot> = (0..60).map(|i| verified(i, None)).collect();
        entries[40] = verified(40, Some(&"pack 5f3e is missing ".repeat(40)));
        entries[50] = verified(50, Some("file count 9, recorded 10"));
        let report = RunReport {
            state: Some(RunState::Failed),
            verified: entries,
            errors: vec!["snapshot 00000000 (/data/pvc-40): pack missing".into()],
            message: "2 of 60 snapshots failed verification".into(),
            ..Default::default()
        };
        let message = report.to_termination_message();
        assert!(
            message.len() <= TERMINATION_MESSAGE_LIMIT,
            "{}",
            message.len()
        );
        let back = RunReport::from_termination_message(&message).expect("valid JSON");
        assert!(back.verified.len() > 2, "{}", back.verified.len());
        assert!(back.verified.len() < 60);
        assert_eq!(back.verified[0].paths, ["/data/pvc-40"]);
        assert!(
            back.verified[0]
                .error
                .as_ref()
                .is_some_and(|e| e.starts_with("pack 5f3e"))
        );
        assert_eq!(back.verified[1].paths, ["/data/pvc-50"]);
        assert_eq!(back.verified[2].paths, ["/data/pvc-0"]);
        assert_eq!(back.errors, report.errors);
    }

    #[test]
    fn verified_error_with_a_presigned_url_is_redacted() {
        let report = RunReport {
            verified: vec![verified(1, Some("see http://u:p@s3:9000/b?uploads"))],
            ..Default::default()
        }
        .redacted();
        assert_eq!(
            report.verified[0].error.as_deref(),
            Some("see http://s3:9000/b?<redacted>")
        );
    }

    #[test]
    fn garbage_termination_message_is_no_report() {
        assert_eq!(RunReport::from_termination_message("killed"), None);
    }
}
