//! A restore into a directory: `restic restore <id>:<path>`, then the path's own mode, owner
//! and times on the target directory, which restic leaves untouched.

use std::fs::{self, FileTimes};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::agent::AgentEnv;
use crate::agent::restic::{Node, Snapshot};
use crate::{Error, Result};

pub(super) async fn restore_to_dir(
    ctx: &AgentEnv,
    snapshot: &Snapshot,
    path: &str,
    node: Option<&Node>,
    dir: &Path,
) -> Result<()> {
    fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.display().to_string(),
        source,
    })?;
    let is_dir = node.is_none_or(|n| n.kind == "dir");
    ctx.restic
        .run_ok(restore_args(&snapshot.id, path, is_dir, dir))
        .await?;
    // restic restores what is inside the subfolder but gives the target directory itself
    // nothing: it takes the path's mode, owner and times here, last, since restic's writes
    // into it changed its times.
    match node.filter(|n| n.kind == "dir") {
        Some(node) => apply_node_metadata(dir, node),
        None => Ok(()),
    }
}

/// `restic restore` of `path` in snapshot `id` into `dir`, so that the path's contents become
/// the directory's: `<id>:<path>` for a directory (restic ≥ 0.17), the whole snapshot for `/`,
/// and for a single file its parent directory limited to that one name, which keeps the file's
/// name inside the target.
pub fn restore_args(id: &str, path: &str, is_dir: bool, dir: &Path) -> Vec<String> {
    let target = dir.display().to_string();
    if path == "/" {
        return vec!["restore".into(), id.into(), "--target".into(), target];
    }
    if is_dir {
        return vec![
            "restore".into(),
            format!("{id}:{path}"),
            "--target".into(),
            target,
        ];
    }
    let file = Path::new(path);
    let parent = file
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "/".into());
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    vec![
        "restore".into(),
        format!("{id}:{parent}"),
        "--include".into(),
        format!("/{}", escape_pattern(&name)),
        "--target".into(),
        target,
    ]
}

/// A file name as a restic pattern that matches only itself: restic matches patterns like
/// Go's `filepath.Match`, where `*`, `?`, `[` and a backslash are special unless escaped.
pub fn escape_pattern(name: &str) -> String {
    let mut escaped = String::with_capacity(name.len());
    for c in name.chars() {
        if matches!(c, '*' | '?' | '[' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// Gives `dir` the mode, owner and times that `node` recorded, in restic's order: owner
/// first (a chown clears setuid and setgid bits), times, then the mode.
pub(super) fn apply_node_metadata(dir: &Path, node: &Node) -> Result<()> {
    let io = |source| Error::Io {
        path: dir.display().to_string(),
        source,
    };
    // Only root (CHOWN) may give files away; as another user, keeping one's own is what
    // restic does too.
    let _ = std::os::unix::fs::chown(
        dir,
        u32::try_from(node.uid).ok(),
        u32::try_from(node.gid).ok(),
    );
    if let Some(modified) = system_time(&node.mtime) {
        // restic records a missing access time as year 1, which some file systems refuse.
        let accessed = system_time(&node.atime)
            .filter(|t| *t >= UNIX_EPOCH)
            .unwrap_or(modified);
        let times = FileTimes::new()
            .set_accessed(accessed)
            .set_modified(modified);
        fs::File::open(dir)
            .and_then(|f| f.set_times(times))
            .map_err(io)?;
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(node.unix_mode())).map_err(io)
}

/// An RFC 3339 time from restic, with its nanoseconds.
pub(super) fn system_time(text: &str) -> Option<SystemTime> {
    let time: jiff::Timestamp = text.parse().ok()?;
    Some(SystemTime::from(time))
}
