//! The verification's report from its entries: state, sums, one error line per failed
//! snapshot in the order they were verified, and a one-line message.

use crate::crd::{RunState, SnapshotRef, Summary, VerifiedSnapshot};
use crate::report::RunReport;

/// The order checks are named in the message.
const CHECK_ORDER: [&str; 3] = ["content", "summary", "stream"];

/// One verified snapshot with the words its error line starts with.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// What the status lists.
    pub verified: VerifiedSnapshot,
    /// `snapshot 1a2b3c4d (/data/files)`.
    pub label: String,
}

/// The report of a verification of `entries`.
pub fn build(entries: Vec<Entry>, unlocked: usize) -> RunReport {
    let errors: Vec<String> = entries
        .iter()
        .filter_map(|e| {
            e.verified
                .error
                .as_ref()
                .map(|error| format!("{}: {error}", e.label))
        })
        .collect();
    let files: u64 = entries.iter().filter_map(|e| e.verified.files).sum();
    let bytes: u64 = entries.iter().filter_map(|e| e.verified.bytes).sum();
    let checks: Vec<&str> = CHECK_ORDER
        .into_iter()
        .filter(|c| {
            entries
                .iter()
                .any(|e| e.verified.checks.iter().any(|x| x == c))
        })
        .collect();
    let count = entries.len();
    let mut message = match errors.first() {
        None => format!(
            "verified {count} snapshot{} ({files} files, {}): {}",
            plural(count),
            human_bytes(bytes),
            checks.join(", ")
        ),
        Some(first) => format!(
            "{} of {count} snapshot{} failed verification; first: {first}",
            errors.len(),
            plural(count)
        ),
    };
    if unlocked > 0 {
        message.push_str(&format!(
            " (removed {unlocked} stale lock(s) left by an earlier run)"
        ));
    }
    RunReport {
        state: Some(if errors.is_empty() {
            RunState::Succeeded
        } else {
            RunState::Failed
        }),
        snapshots: entries
            .iter()
            .map(|e| SnapshotRef {
                id: e.verified.id.clone(),
                paths: e.verified.paths.clone(),
            })
            .collect(),
        summary: Summary {
            total_files: Some(files),
            total_bytes: Some(bytes),
            ..Summary::default()
        },
        verified: entries.into_iter().map(|e| e.verified).collect(),
        errors,
        message,
        ..RunReport::default()
    }
}

fn plural(count: usize) -> &'static str {
    if count == 1 { "" } else { "s" }
}

/// `3.4 MiB`: binary units, one decimal above bytes.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(short: &str, path: &str, checks: &[&str], error: Option<&str>) -> Entry {
        Entry {
            verified: VerifiedSnapshot {
                id: short.repeat(8),
                paths: vec![path.into()],
                files: Some(6),
                bytes: Some(1_782_579),
                checks: checks.iter().map(|c| c.to_string()).collect(),
                error: error.map(String::from),
                ..VerifiedSnapshot::default()
            },
            label: format!("snapshot {short} ({path})"),
        }
    }

    #[test]
    fn all_verified_is_succeeded_with_sums_and_the_checks_made() {
        let report = build(
            vec![
                entry("1a2b3c4d", "/ns-db-0-db", &["content", "stream"], None),
                entry("5e6f7a8b", "/data/files", &["content", "summary"], None),
            ],
            0,
        );
        assert_eq!(report.state, Some(RunState::Succeeded));
        assert_eq!(
            report.message,
            "verified 2 snapshots (12 files, 3.4 MiB): content, summary, stream"
        );
        assert_eq!(report.summary.total_files, Some(12));
        assert_eq!(report.summary.total_bytes, Some(3_565_158));
        assert_eq!(report.snapshots.len(), 2);
        assert!(report.errors.is_empty());
    }

    #[test]
    fn failures_are_listed_in_order_each_with_its_snapshot_and_path() {
        let report = build(
            vec![
                entry("1a2b3c4d", "/data/files", &[], Some("pack 5f3e is missing")),
                entry("5e6f7a8b", "/data/db", &["content", "summary"], None),
                entry("9c0d1e2f", "/ns-db-0-db", &[], Some("stream short")),
            ],
            0,
        );
        assert_eq!(report.state, Some(RunState::Failed));
        assert_eq!(
            report.errors,
            [
                "snapshot 1a2b3c4d (/data/files): pack 5f3e is missing",
                "snapshot 9c0d1e2f (/ns-db-0-db): stream short"
            ]
        );
        assert_eq!(
            report.message,
            "2 of 3 snapshots failed verification; first: snapshot 1a2b3c4d (/data/files): \
             pack 5f3e is missing"
        );
        assert_eq!(report.verified.len(), 3);
    }

    #[test]
    fn bytes_read_in_binary_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(1 << 30), "1.0 GiB");
    }
}
