//! `baas agent check`: `restic check` on the repository, after clearing stale locks.

use super::AgentEnv;
use super::restic;
use crate::Result;
use crate::crd::RunState;
use crate::report::RunReport;

/// Verifies the repository's structure and reports what restic found.
pub async fn run(ctx: &AgentEnv) -> Result<RunReport> {
    // A check must not create a repository: a missing one is the finding.
    ctx.restic.open(false).await?;
    let unlocked = super::locks::remove_stale(ctx).await?;
    let finished = ctx.restic.run(["check"]).await?;
    let mut report = RunReport::default();
    if finished.code == Some(0) {
        report.state = Some(RunState::Succeeded);
        report.message = "repository checked: no errors were found".into();
    } else {
        let stdout = String::from_utf8_lossy(&finished.stdout);
        report.state = Some(RunState::Failed);
        report.message = format!(
            "repository check failed: {}",
            restic::explain(&finished.stderr_tail, &stdout, finished.code)
        );
        report.errors = finished
            .stderr_tail
            .lines()
            .chain(stdout.lines())
            .map(str::trim)
            .filter(|l| l.starts_with("error") || l.starts_with("Fatal") || l.contains("damaged"))
            .map(String::from)
            .collect();
    }
    if unlocked > 0 {
        report.message.push_str(&format!(
            " (removed {unlocked} stale lock(s) left by an earlier run)"
        ));
    }
    Ok(report)
}
