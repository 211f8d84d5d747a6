//! Which snapshot a restore reads and which part of it: never the repository-wide latest, but
//! the newest that holds the path asked for.

use crate::agent::restic::Snapshot;
use crate::job::DATA_DIR;

/// `path` in the form restic uses: absolute, no trailing slash.
pub fn normalize_path(path: &str) -> String {
    let trimmed = path.trim().trim_end_matches('/');
    if trimmed.is_empty() {
        "/".into()
    } else if trimmed.starts_with('/') {
        trimmed.into()
    } else {
        format!("/{trimmed}")
    }
}

/// Whether `snapshot` contains `path`: one of its paths is the path, lies below it, or holds it.
pub fn holds(snapshot: &Snapshot, path: &str) -> bool {
    path == "/"
        || snapshot.paths.iter().any(|p| {
            p == path || path.starts_with(&format!("{p}/")) || p.starts_with(&format!("{path}/"))
        })
}

/// Which part of a snapshot a restore takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wanted {
    /// The path the Restore names (normalized).
    Path(String),
    /// A PVC target without a path: `/data/<claim>` when the snapshot has it (the claim's own
    /// backup), else the whole snapshot (a new claim of another name).
    ClaimOrWhole(String),
    /// The whole snapshot (an S3 target without a path).
    Whole,
}

impl Wanted {
    /// From the Restore's `path` and the target claim's name, as the Job passes them.
    pub fn new(path: Option<&str>, claim: Option<&str>) -> Wanted {
        let given = |v: Option<&str>| v.map(str::trim).filter(|v| !v.is_empty()).map(String::from);
        match (given(path), given(claim)) {
            (Some(path), _) => Wanted::Path(normalize_path(&path)),
            (None, Some(claim)) => Wanted::ClaimOrWhole(format!("{DATA_DIR}/{claim}")),
            (None, None) => Wanted::Whole,
        }
    }
}

/// The snapshot to restore from `snapshots` (oldest first) and the path to take from it: the
/// newest that holds the path asked for; for [`Wanted::ClaimOrWhole`] the newest that holds
/// the claim's directory, else the newest, whole. `None` when no snapshot fits.
pub fn choose(snapshots: &[Snapshot], wanted: &Wanted) -> Option<(Snapshot, String)> {
    let newest_holding = |path: &str| snapshots.iter().rev().find(|s| holds(s, path)).cloned();
    match wanted {
        Wanted::Path(path) => newest_holding(path).map(|s| (s, path.clone())),
        Wanted::ClaimOrWhole(path) => newest_holding(path)
            .map(|s| (s, path.clone()))
            .or_else(|| snapshots.last().cloned().map(|s| (s, "/".to_string()))),
        Wanted::Whole => snapshots.last().cloned().map(|s| (s, "/".to_string())),
    }
}
