//! `baas agent verify`: restores the newest snapshot of each path of the namespace into a
//! scratch directory and checks what came back, so a backup is known to restore before
//! anyone needs it.
//!
//! Each snapshot is restored whole at its own paths, `restic restore <id> --target <dir>
//! --verify`: a claim's `/data/<pvc>` lands at `<dir>/data/<pvc>/`, a backup command's stream
//! `/<namespace>-<pod>-<container>` at the file `<dir>/<namespace>-<pod>-<container>`, which
//! is the layout an application check reads after the agent (see [`scratch`]). Checks:
//!
//! - `content`: the restore succeeded and restic read every restored file back against the
//!   snapshot (`--verify`); every blob was checked against its hash on the way in.
//! - `summary` (trees): regular files and their bytes equal what the backup recorded in the
//!   snapshot (restic ≥ 0.17); skipped for snapshots without a summary and for those only
//!   partly restored because a newer snapshot holds some of their paths.
//! - `stream` (backup commands): one regular file, as long as the backup recorded.
//!
//! One snapshot's failure does not stop the others, so every failure is reported. Each
//! restore holds restic's shared lock only while it runs; nothing is written to the
//! repository.

mod checks;
mod explain;
mod plan;
mod report;
mod scratch;

use std::path::Path;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::AgentEnv;
use crate::crd::VerifiedSnapshot;
use crate::report::RunReport;
use crate::{Error, Result};

pub use plan::{Planned, Shape, plan};
pub use scratch::MARKER;

/// Verifies and reports.
pub async fn run(ctx: &AgentEnv, verify_dir: &Path) -> Result<RunReport> {
    ctx.restic.open(false).await?;
    let latest = ctx.restic.latest_snapshots(&ctx.namespace).await?;
    let planned = plan(&latest);
    if planned.is_empty() {
        // Not a fault of the spec or the agent: the namespace has no backup yet (or lost
        // them all), which is exactly what a verification is there to tell.
        return Ok(RunReport {
            state: Some(crate::crd::RunState::Failed),
            message: format!("no snapshot of namespace {} to verify", ctx.namespace),
            ..RunReport::default()
        });
    }
    scratch::prepare(verify_dir, ctx.run_name.as_deref().unwrap_or("verify"))?;
    let unlocked = super::locks::remove_stale(ctx).await?;
    let mut entries = Vec::with_capacity(planned.len());
    for planned in &planned {
        let entry = verify_one(ctx, planned, verify_dir).await?;
        match &entry.verified.error {
            Some(error) => {
                tracing::warn!(snapshot = %planned.snapshot.id, "{}: {error}", entry.label)
            }
            None => tracing::info!(
                snapshot = %planned.snapshot.id,
                files = entry.verified.files,
                bytes = entry.verified.bytes,
                checks = ?entry.verified.checks,
                "{} verified",
                entry.label
            ),
        }
        entries.push(entry);
    }
    Ok(report::build(entries, unlocked))
}

/// Restores one snapshot and checks it. `Err` only when the agent itself cannot go on (restic
/// cannot be started); a snapshot that fails its checks is an entry with an error.
async fn verify_one(ctx: &AgentEnv, planned: &Planned, dir: &Path) -> Result<report::Entry> {
    let snapshot = &planned.snapshot;
    let include: Vec<String> = if planned.whole {
        Vec::new()
    } else {
        planned
            .paths
            .iter()
            .map(|p| super::restore::escape_pattern(p))
            .collect()
    };
    let output = ctx
        .restic
        .restore_verified(&snapshot.id, &include, dir)
        .await?;
    let mut checks = Vec::new();
    let mut error = None;
    if output.code == Some(0) && output.failed_count == 0 {
        checks.push("content".to_string());
    } else {
        error = Some(explain::restore_failure(&output));
    }
    let restored = |path: &str| dir.join(path.trim_start_matches('/'));
    let (mut files, mut bytes) = (0u64, 0u64);
    match planned.shape {
        Shape::Tree => {
            for path in &planned.paths {
                let (f, b) = checks::count_files(&restored(path)).map_err(|source| Error::Io {
                    path: restored(path).display().to_string(),
                    source,
                })?;
                files += f;
                bytes += b;
            }
            if error.is_none()
                && planned.whole
                && let Some(recorded) = &snapshot.summary
            {
                match checks::compare_summary(files, bytes, recorded) {
                    Ok(()) => checks.push("summary".into()),
                    Err(why) => error = Some(why),
                }
            }
        }
        Shape::Stream => {
            let path = restored(&planned.paths[0]);
            match checks::check_stream(&path, snapshot.summary.as_ref()) {
                Ok(length) => {
                    (files, bytes) = (1, length);
                    if error.is_none() {
                        checks.push("stream".into());
                    }
                }
                Err(why) => {
                    error.get_or_insert(why);
                }
            }
        }
    }
    Ok(report::Entry {
        label: format!(
            "snapshot {} ({})",
            snapshot.short_id,
            planned.paths.join(", ")
        ),
        verified: VerifiedSnapshot {
            id: snapshot.id.clone(),
            paths: planned.paths.clone(),
            time: snapshot.time.parse::<jiff::Timestamp>().ok().map(Time),
            files: Some(files),
            bytes: Some(bytes),
            checks,
            error,
        },
    })
}
