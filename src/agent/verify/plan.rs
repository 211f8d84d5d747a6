//! Which snapshots a verification restores, and which of their paths: the newest snapshot of
//! each path. restic's `--latest 1` gives the newest of each *set* of paths, so a claim backed
//! up first with others and later alone (or the reverse) appears in two snapshots; only the
//! newer one is restored for it, so two snapshots never write into the same directory.

use crate::agent::restic::Snapshot;
use crate::job::DATA_DIR;

/// What a snapshot holds, which decides its checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// Directories (the claims under `/data`): `content` and `summary`.
    Tree,
    /// One file a backup command's output was streamed into: `content` and `stream`.
    Stream,
}

/// One snapshot to restore.
#[derive(Clone, Debug, PartialEq)]
pub struct Planned {
    /// The snapshot.
    pub snapshot: Snapshot,
    /// Its paths that no newer snapshot holds, in the snapshot's order.
    pub paths: Vec<String>,
    /// Whether that is all of its paths (then its recorded summary describes the restore).
    pub whole: bool,
    /// What it holds.
    pub shape: Shape,
}

/// The plan for `latest` (oldest first, as [`crate::agent::restic::Restic::latest_snapshots`]
/// lists them): each path goes to the newest snapshot that holds it, and a snapshot left
/// with no path is not restored. The plan keeps the listing's order.
pub fn plan(latest: &[Snapshot]) -> Vec<Planned> {
    let mut claimed: Vec<&str> = Vec::new();
    let mut planned = Vec::new();
    for snapshot in latest.iter().rev() {
        let paths: Vec<String> = snapshot
            .paths
            .iter()
            .filter(|p| !claimed.contains(&p.as_str()))
            .cloned()
            .collect();
        claimed.extend(snapshot.paths.iter().map(String::as_str));
        if paths.is_empty() {
            continue;
        }
        planned.push(Planned {
            whole: paths.len() == snapshot.paths.len(),
            shape: shape_of(snapshot),
            snapshot: snapshot.clone(),
            paths,
        });
    }
    planned.reverse();
    planned
}

/// A backup command's snapshot holds one path outside the data directory (`/<ns>-<pod>-<c>`,
/// see [`crate::agent::backup::pods::stdin_filename`]); everything else is a tree.
fn shape_of(snapshot: &Snapshot) -> Shape {
    match snapshot.paths.as_slice() {
        [path] if !path.starts_with(&format!("{DATA_DIR}/")) && path.matches('/').count() == 1 => {
            Shape::Stream
        }
        _ => Shape::Tree,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(id: &str, paths: &[&str]) -> Snapshot {
        Snapshot {
            id: id.repeat(64),
            short_id: id.repeat(8),
            time: "2026-01-01T00:00:00Z".into(),
            paths: paths.iter().map(|p| p.to_string()).collect(),
            hostname: "ns".into(),
            tags: vec![],
            summary: None,
        }
    }

    #[test]
    fn path_in_an_older_and_a_newer_snapshot_is_restored_from_the_newer_only() {
        let older = snapshot("a", &["/data/app", "/data/db"]);
        let newer = snapshot("b", &["/data/app"]);
        let stream = snapshot("c", &["/ns-mariadb-0-mariadb"]);
        let planned = plan(&[older.clone(), newer.clone(), stream]);
        let summary: Vec<_> = planned
            .iter()
            .map(|p| {
                (
                    p.snapshot.short_id.as_str(),
                    p.paths.clone(),
                    p.whole,
                    p.shape,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("aaaaaaaa", vec!["/data/db".to_string()], false, Shape::Tree),
                ("bbbbbbbb", vec!["/data/app".to_string()], true, Shape::Tree),
                (
                    "cccccccc",
                    vec!["/ns-mariadb-0-mariadb".to_string()],
                    true,
                    Shape::Stream
                ),
            ]
        );
    }

    #[test]
    fn snapshot_whose_paths_all_have_newer_snapshots_is_not_restored() {
        let older = snapshot("a", &["/data/app"]);
        let newer = snapshot("b", &["/data/app", "/data/db"]);
        let planned = plan(&[older, newer]);
        assert_eq!(planned.len(), 1);
        assert_eq!(planned[0].snapshot.short_id, "bbbbbbbb");
        assert!(planned[0].whole);
    }

    #[test]
    fn single_directory_under_data_is_a_tree_and_a_nested_path_is_no_stream() {
        assert_eq!(shape_of(&snapshot("a", &["/data/app"])), Shape::Tree);
        assert_eq!(shape_of(&snapshot("a", &["/srv/files"])), Shape::Tree);
        assert_eq!(shape_of(&snapshot("a", &["/ns-pod-c"])), Shape::Stream);
    }
}
