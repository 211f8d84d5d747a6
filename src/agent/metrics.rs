//! Pushing a run's metrics to a Prometheus Pushgateway.
//!
//! The grouping key is job `baas`, `namespace`, `kind` and `schedule`, so each Schedule's
//! backups, checks and prunes keep one series each instead of one per run. Metrics are sent
//! with POST, which replaces only the metrics named in the request: a failed backup leaves
//! `baas_backup_last_success_timestamp_seconds` of the last good one in place, so an alert on
//! its age fires when backups keep failing.

use std::fmt::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::crd::RunState;
use crate::report::RunReport;
use crate::{Error, Result};

/// The labels of the pushed group.
#[derive(Clone, Copy, Debug)]
pub struct Labels<'a> {
    /// backup, check, prune, restore or verify.
    pub kind: &'a str,
    /// Namespace of the run.
    pub namespace: &'a str,
    /// Schedule that started the run; empty for a run created by hand.
    pub schedule: &'a str,
}

/// The Pushgateway URL path of the group; empty label values use the documented
/// `@base64/=` form, since an empty path segment is not allowed.
pub fn group_path(labels: &Labels<'_>) -> String {
    let segment = |name: &str, value: &str| {
        if value.is_empty() {
            format!("/{name}@base64/=")
        } else {
            format!("/{name}/{value}")
        }
    };
    format!(
        "/metrics/job/baas{}{}{}",
        segment("namespace", labels.namespace),
        segment("kind", labels.kind),
        segment("schedule", labels.schedule)
    )
}

/// The report in Prometheus text format.
pub fn render(kind: &str, report: &RunReport, now_seconds: f64) -> String {
    let state = report.state.unwrap_or(RunState::Failed);
    let mut text = String::new();
    let mut gauge = |name: &str, help: &str, value: f64| {
        let _ = writeln!(text, "# HELP {name} {help}");
        let _ = writeln!(text, "# TYPE {name} gauge");
        let _ = writeln!(text, "{name} {value}");
    };
    gauge(
        "baas_run_success",
        "1 when the last run succeeded completely, else 0.",
        f64::from(u8::from(state == RunState::Succeeded)),
    );
    gauge(
        "baas_run_partial",
        "1 when the last run succeeded only partially (unreadable files, failed backup commands).",
        f64::from(u8::from(state == RunState::PartiallySucceeded)),
    );
    gauge(
        "baas_run_errors",
        "Problems reported by the last run.",
        report.errors.len() as f64,
    );
    gauge(
        "baas_run_duration_seconds",
        "Wall-clock duration of the last run.",
        report.duration_seconds,
    );
    gauge(
        "baas_run_timestamp_seconds",
        "When the last run ended.",
        now_seconds,
    );
    if kind == "backup" {
        let s = &report.summary;
        gauge(
            "baas_backup_bytes_added",
            "Bytes the last backup added to the repository.",
            s.bytes_added.unwrap_or(0) as f64,
        );
        gauge(
            "baas_backup_bytes_total",
            "Bytes the last backup read.",
            s.total_bytes.unwrap_or(0) as f64,
        );
        gauge(
            "baas_backup_files_total",
            "Files the last backup read.",
            s.total_files.unwrap_or(0) as f64,
        );
        if state == RunState::Succeeded {
            gauge(
                "baas_backup_last_success_timestamp_seconds",
                "When the last completely successful backup ended.",
                now_seconds,
            );
        }
    }
    text
}

/// Pushes the report's metrics to the Pushgateway at `url`.
pub async fn push(
    http: &reqwest::Client,
    url: &str,
    labels: &Labels<'_>,
    report: &RunReport,
) -> Result<()> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let target = format!("{}{}", url.trim_end_matches('/'), group_path(labels));
    let response = http
        .post(&target)
        .header("content-type", "text/plain; version=0.0.4")
        .body(render(labels.kind, report, now))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .map_err(|e| Error::Http(format!("Pushgateway {target}: {}", super::chain(&e))))?;
    if !response.status().is_success() {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        return Err(Error::Http(format!(
            "Pushgateway {target} answered {status}: {}",
            body.trim()
        )));
    }
    tracing::debug!(target, "pushed metrics");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_path_encodes_an_empty_schedule() {
        let labels = Labels {
            kind: "backup",
            namespace: "shop",
            schedule: "",
        };
        assert_eq!(
            group_path(&labels),
            "/metrics/job/baas/namespace/shop/kind/backup/schedule@base64/="
        );
    }

    #[test]
    fn failed_backup_does_not_move_the_last_success_time() {
        let report = RunReport {
            state: Some(RunState::Failed),
            ..RunReport::default()
        };
        let text = render("backup", &report, 100.0);
        assert!(text.contains("baas_run_success 0\n"), "{text}");
        assert!(!text.contains("baas_backup_last_success_timestamp_seconds"));
    }

    #[test]
    fn successful_backup_reports_bytes_and_success_time() {
        let mut report = RunReport {
            state: Some(RunState::Succeeded),
            ..RunReport::default()
        };
        report.summary.bytes_added = Some(42);
        let text = render("backup", &report, 100.0);
        assert!(text.contains("baas_backup_bytes_added 42\n"), "{text}");
        assert!(text.contains("baas_backup_last_success_timestamp_seconds 100\n"));
    }
}
