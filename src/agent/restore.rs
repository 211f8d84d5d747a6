//! `baas agent restore`: one snapshot (or part of it) into a directory or to S3 as `.tar.gz`.
//!
//! The snapshot is the one asked for, or else the newest of the namespace that holds the path;
//! never the repository-wide latest. The namespace is the run's own, or the source namespace
//! a disaster-recovery restore names; a snapshot ID is looked up among that namespace's
//! snapshots only, so another namespace's data is read only when it is asked for. The contents of the path become the root of the target.
//! A PVC target without a path takes `/data/<claim>` when the snapshot has it, else the whole
//! snapshot (see [`Wanted`]); the snapshot is then the newest that holds `/data/<claim>`,
//! since with one backup Job per node the newest snapshot may hold other claims only.
//!
//! - Directory: `restic restore <id>:<path> --target <dir>` (restic ≥ 0.17) writes the path's
//!   contents straight into the target, with their modes, owners and times (nanoseconds),
//!   replacing entries of the same name and leaving others alone; the agent then gives the target
//!   directory itself the path's mode, owner and times, which restic leaves untouched. A file
//!   path (a backup command's dump) is restored by its name from its parent directory.
//! - S3: `restic dump --archive tar` is read entry by entry, renamed so the path becomes the root,
//!   gzipped and uploaded in parts while it is produced (see [`super::s3`]). A file path (a
//!   backup command's dump) becomes a one-file archive.

mod snapshot;
mod to_dir;
mod to_s3;

use std::path::PathBuf;

use super::AgentEnv;
use super::restic::Snapshot;
use super::s3::Destination;
use crate::crd::{RunState, SnapshotRef, Summary};
use crate::report::RunReport;
use crate::{Error, Result};

pub use snapshot::{Wanted, choose, holds, normalize_path};
use to_dir::restore_to_dir;
pub use to_dir::{escape_pattern, restore_args};
use to_s3::restore_to_s3;

/// Where a restore writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A directory: the mounted target PVC, when `claim` names it.
    Dir {
        /// Where the files go.
        dir: PathBuf,
        /// The claim mounted there, which the status names instead of the pod's mount path.
        claim: Option<String>,
    },
    /// One `.tar.gz` object in an S3 bucket.
    S3(Destination),
}

/// Restores from the snapshots of namespace `source` (restic's host) and reports.
pub async fn run(
    ctx: &AgentEnv,
    source: &str,
    snapshot: Option<&str>,
    wanted: &Wanted,
    target: &Target,
) -> Result<RunReport> {
    ctx.restic.open(false).await?;
    let unlocked = super::locks::remove_stale(ctx).await?;
    let (snapshot, mut path) = choose_snapshot(ctx, source, snapshot, wanted).await?;
    let node = if path == "/" {
        None
    } else {
        match ctx.restic.node(&snapshot.id, &path).await? {
            Some(node) => Some(node),
            // Held by one of the snapshot's paths (`/data`) but absent inside it.
            None if matches!(wanted, Wanted::ClaimOrWhole(_)) => {
                path = "/".into();
                None
            }
            None => {
                return Err(Error::InvalidSpec(format!(
                    "snapshot {} has no {path} (its paths: {})",
                    snapshot.short_id,
                    snapshot.paths.join(", ")
                )));
            }
        }
    };
    let (restored_to, summary) = match target {
        Target::Dir { dir, claim } => {
            restore_to_dir(ctx, &snapshot, &path, node.as_ref(), dir).await?;
            let restored_to = match claim.as_deref().map(str::trim) {
                Some(claim) if !claim.is_empty() => format!("pvc/{claim}"),
                _ => dir.display().to_string(),
            };
            (restored_to, Summary::default())
        }
        Target::S3(destination) => {
            let run = ctx.run_name.as_deref().unwrap_or("restore");
            let key = format!("{}/{run}-{}.tar.gz", ctx.namespace, snapshot.short_id);
            let summary = restore_to_s3(ctx, &snapshot, &path, node, destination, &key).await?;
            (format!("s3://{}/{key}", destination.bucket), summary)
        }
    };
    let mut message = format!(
        "restored {path} of snapshot {} ({}) to {restored_to}",
        snapshot.short_id, snapshot.time
    );
    if unlocked > 0 {
        message.push_str(&format!(
            " (removed {unlocked} stale lock(s) left by an earlier run)"
        ));
    }
    Ok(RunReport {
        state: Some(RunState::Succeeded),
        snapshots: vec![SnapshotRef {
            id: snapshot.id,
            paths: vec![path],
        }],
        summary,
        restored_to: Some(restored_to),
        message,
        ..RunReport::default()
    })
}

async fn choose_snapshot(
    ctx: &AgentEnv,
    source: &str,
    wanted_id: Option<&str>,
    wanted: &Wanted,
) -> Result<(Snapshot, String)> {
    if let Some(id) = wanted_id.map(str::trim).filter(|id| !id.is_empty()) {
        let snapshot = ctx.restic.snapshot_of_host(source, id).await?;
        return choose(std::slice::from_ref(&snapshot), wanted).ok_or_else(|| {
            Error::InvalidSpec(format!(
                "snapshot {} does not hold {} (its paths: {})",
                snapshot.short_id,
                wanted_path(wanted),
                snapshot.paths.join(", ")
            ))
        });
    }
    let snapshots = ctx.restic.snapshots(Some(source)).await?;
    choose(&snapshots, wanted).ok_or_else(|| match wanted {
        Wanted::Path(path) => {
            Error::InvalidSpec(format!("no snapshot of namespace {source} holds {path}"))
        }
        Wanted::ClaimOrWhole(_) | Wanted::Whole => {
            Error::InvalidSpec(format!("namespace {source} has no snapshots"))
        }
    })
}

fn wanted_path(wanted: &Wanted) -> &str {
    match wanted {
        Wanted::Path(path) | Wanted::ClaimOrWhole(path) => path,
        Wanted::Whole => "/",
    }
}

#[cfg(test)]
mod tests;
