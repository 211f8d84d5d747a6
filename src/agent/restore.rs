//! `baas agent restore`: one snapshot (or part of it) into a directory or to S3 as `.tar.gz`.
//!
//! The snapshot is the one asked for, or else the newest of the namespace that holds the path;
//! never the repository-wide latest. The contents of the path become the root of the target.
//!
//! - Directory: restic 0.14 cannot restore `<id>:<path>`, so `restic restore --include <path>`
//!   writes into a staging directory inside the target (same file system), whose entries are then
//!   renamed into place. restic sets contents, modes, owners and times (nanoseconds); the agent
//!   re-applies directory times after the renames touched them.
//! - S3: `restic dump --archive tar` is read entry by entry, renamed so the path becomes the root,
//!   gzipped and uploaded in parts while it is produced (see [`super::s3`]). A file path (a
//!   backup command's dump) becomes a one-file archive.

use std::fs::{self, FileTimes};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flate2::Compression;
use flate2::write::GzEncoder;
use tokio::sync::mpsc;

use super::Context;
use super::restic::{Node, Snapshot};
use super::s3::{self, Destination, PartWriter};
use crate::crd::{RunState, SnapshotRef, Summary};
use crate::report::RunReport;
use crate::{Error, Result};

/// Where a restore writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A directory, normally the mounted target PVC.
    Dir(PathBuf),
    /// One `.tar.gz` object in an S3 bucket.
    S3(Destination),
}

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

/// Restores and reports.
pub async fn run(
    ctx: &Context,
    snapshot: Option<&str>,
    path: Option<&str>,
    target: &Target,
) -> Result<RunReport> {
    let path = normalize_path(path.unwrap_or("/"));
    ctx.restic.open(false).await?;
    let unlocked = ctx.restic.unlock().await?;
    let snapshot = choose_snapshot(ctx, snapshot, &path).await?;
    let node = if path == "/" {
        None
    } else {
        Some(ctx.restic.node(&snapshot.id, &path).await?.ok_or_else(|| {
            Error::InvalidSpec(format!(
                "snapshot {} has no {path} (its paths: {})",
                snapshot.short_id,
                snapshot.paths.join(", ")
            ))
        })?)
    };
    let (restored_to, summary) = match target {
        Target::Dir(dir) => {
            restore_to_dir(ctx, &snapshot, &path, dir).await?;
            (dir.display().to_string(), Summary::default())
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

async fn choose_snapshot(ctx: &Context, wanted: Option<&str>, path: &str) -> Result<Snapshot> {
    if let Some(id) = wanted.map(str::trim).filter(|id| !id.is_empty()) {
        let snapshot = ctx.restic.snapshot(id).await?;
        if !holds(&snapshot, path) {
            return Err(Error::InvalidSpec(format!(
                "snapshot {} does not hold {path} (its paths: {})",
                snapshot.short_id,
                snapshot.paths.join(", ")
            )));
        }
        return Ok(snapshot);
    }
    ctx.restic
        .snapshots(Some(&ctx.namespace))
        .await?
        .into_iter()
        .rev()
        .find(|s| holds(s, path))
        .ok_or_else(|| {
            Error::InvalidSpec(format!(
                "no snapshot of namespace {} holds {path}",
                ctx.namespace
            ))
        })
}

async fn restore_to_dir(ctx: &Context, snapshot: &Snapshot, path: &str, dir: &Path) -> Result<()> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| Error::Io { path, source }
    };
    fs::create_dir_all(dir).map_err(io(dir))?;
    let staging = dir.join(format!(".baas-restore-{}", std::process::id()));
    let mut args = vec![
        "restore".to_string(),
        snapshot.id.clone(),
        "--target".into(),
        staging.display().to_string(),
    ];
    if path != "/" {
        args.push("--include".into());
        args.push(path.into());
    }
    let result = async {
        ctx.restic.run_ok(&args).await?;
        let source = staging.join(path.trim_start_matches('/'));
        let blocking_dir = dir.to_path_buf();
        tokio::task::spawn_blocking(move || merge_root(&source, &blocking_dir))
            .await
            .map_err(|e| Error::Restic(format!("restore task failed: {e}")))?
    }
    .await;
    if let Err(e) = fs::remove_dir_all(&staging)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(staging = %staging.display(), "cannot remove the staging directory: {e}");
    }
    // Last, since removing the staging directory touched the target's time.
    match result? {
        Some(root) => apply_dir_metadata(dir, &root),
        None => Ok(()),
    }
}

/// Moves the contents of `source` into `dir`; returns the metadata of `source` when it is a
/// directory, for the caller to give `dir` its mode, owner and times at the very end.
fn merge_root(source: &Path, dir: &Path) -> Result<Option<fs::Metadata>> {
    let meta = fs::symlink_metadata(source).map_err(|e| Error::Io {
        path: source.display().to_string(),
        source: e,
    })?;
    if !meta.is_dir() {
        // A single file: it keeps its name inside the target directory.
        let name = source.file_name().unwrap_or_default();
        move_entry(source, &dir.join(name))?;
        return Ok(None);
    }
    merge_dir(source, dir)?;
    Ok(Some(meta))
}

fn merge_dir(source: &Path, dir: &Path) -> Result<()> {
    let io = |path: &Path, source| Error::Io {
        path: path.display().to_string(),
        source,
    };
    for entry in fs::read_dir(source).map_err(|e| io(source, e))? {
        let entry = entry.map_err(|e| io(source, e))?;
        let from = entry.path();
        let to = dir.join(entry.file_name());
        let from_meta = fs::symlink_metadata(&from).map_err(|e| io(&from, e))?;
        let to_is_dir = fs::symlink_metadata(&to).is_ok_and(|m| m.is_dir());
        if from_meta.is_dir() && to_is_dir {
            merge_dir(&from, &to)?;
            apply_dir_metadata(&to, &from_meta)?;
        } else {
            move_entry(&from, &to)?;
        }
    }
    Ok(())
}

/// Renames `from` to `to`, replacing what is there; a renamed directory gets its time back.
fn move_entry(from: &Path, to: &Path) -> Result<()> {
    let io = |path: &Path, source| Error::Io {
        path: path.display().to_string(),
        source,
    };
    let meta = fs::symlink_metadata(from).map_err(|e| io(from, e))?;
    match fs::symlink_metadata(to) {
        Ok(existing) if existing.is_dir() => fs::remove_dir_all(to).map_err(|e| io(to, e))?,
        Ok(_) => fs::remove_file(to).map_err(|e| io(to, e))?,
        Err(_) => {}
    }
    fs::rename(from, to).map_err(|e| io(to, e))?;
    if meta.is_dir() {
        set_times(to, &meta)?;
    }
    Ok(())
}

fn apply_dir_metadata(dir: &Path, meta: &fs::Metadata) -> Result<()> {
    let io = |source| Error::Io {
        path: dir.display().to_string(),
        source,
    };
    fs::set_permissions(dir, fs::Permissions::from_mode(meta.mode() & 0o7777)).map_err(io)?;
    // Only root may give files away; as another user, keeping one's own is what restic does too.
    let _ = std::os::unix::fs::chown(dir, Some(meta.uid()), Some(meta.gid()));
    set_times(dir, meta)
}

fn set_times(path: &Path, meta: &fs::Metadata) -> Result<()> {
    let io = |source| Error::Io {
        path: path.display().to_string(),
        source,
    };
    let times = FileTimes::new()
        .set_accessed(meta.accessed().map_err(io)?)
        .set_modified(meta.modified().map_err(io)?);
    fs::File::open(path)
        .and_then(|f| f.set_times(times))
        .map_err(io)
}

async fn restore_to_s3(
    ctx: &Context,
    snapshot: &Snapshot,
    path: &str,
    node: Option<Node>,
    destination: &Destination,
    key: &str,
) -> Result<Summary> {
    let (tx, rx) = mpsc::channel(1);
    let mut command = std::process::Command::new(ctx.restic.binary());
    command
        .arg("--repo")
        .arg(ctx.restic.repository())
        .args(["dump", "--archive", "tar", &snapshot.id, path])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let path = path.to_string();
    let producer = tokio::task::spawn_blocking(move || write_archive(command, &path, node, tx));
    let uploaded = s3::upload(&ctx.http, destination, key, rx).await;
    let produced = producer
        .await
        .map_err(|e| Error::Restic(format!("archive task failed: {e}")))?;
    // Whichever side stopped first holds the cause; the other only saw it stop.
    let ((files, bytes), size) = match (produced, uploaded) {
        (Ok(counts), Ok(size)) => (counts, size),
        (Err(produced), Err(Error::Http(m))) if m == s3::INCOMPLETE => return Err(produced),
        (_, Err(uploaded)) => return Err(uploaded),
        (Err(produced), Ok(_)) => return Err(produced),
    };
    tracing::info!(key, size, files, bytes, "uploaded the restore archive");
    Ok(Summary {
        total_files: Some(files),
        total_bytes: Some(bytes),
        ..Summary::default()
    })
}

/// Runs `restic dump`, rewrites its output into the archive and feeds the uploader; returns
/// the files and bytes archived.
fn write_archive(
    mut command: std::process::Command,
    path: &str,
    node: Option<Node>,
    tx: mpsc::Sender<s3::Chunk>,
) -> Result<(u64, u64)> {
    let mut child = command
        .spawn()
        .map_err(|e| Error::Restic(format!("cannot start restic: {e}")))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        // Bounded: restic's error messages are short; the rest is drained and dropped.
        let _ = stderr.take(64 << 10).read_to_string(&mut text);
        text
    });
    let gz = GzEncoder::new(PartWriter::new(tx), Compression::default());
    let mut builder = tar::Builder::new(gz);
    let archived = match &node {
        Some(node) if node.kind != "dir" => append_single_file(&mut builder, node, stdout),
        _ => append_tree(&mut builder, path, stdout),
    };
    let finished = archived.and_then(|counts| {
        let gz = builder.into_inner()?;
        gz.finish()?.finish()?;
        Ok(counts)
    });
    let status = child.wait().ok().and_then(|s| s.code());
    let stderr = stderr_reader.join().unwrap_or_default();
    if status != Some(0) {
        return Err(Error::Restic(format!(
            "restic dump failed: {}",
            super::restic::explain(&stderr, "", status)
        )));
    }
    finished.map_err(|e| Error::Restic(format!("writing the archive failed: {e}")))
}

fn append_tree<W: std::io::Write>(
    builder: &mut tar::Builder<W>,
    path: &str,
    dump: impl Read,
) -> std::io::Result<(u64, u64)> {
    let prefix = Path::new(path.trim_start_matches('/'));
    let mut archive = tar::Archive::new(dump);
    let (mut files, mut bytes) = (0u64, 0u64);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let name = entry.path()?.into_owned();
        let Ok(relative) = name.strip_prefix(prefix) else {
            continue;
        };
        if relative.as_os_str().is_empty() {
            continue;
        }
        let relative = relative.to_path_buf();
        let mut header = entry.header().clone();
        let kind = header.entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            let target = entry
                .link_name()?
                .map(|t| t.into_owned())
                .unwrap_or_default();
            let target = if kind.is_hard_link() {
                target
                    .strip_prefix(prefix)
                    .map(Path::to_path_buf)
                    .unwrap_or(target)
            } else {
                target
            };
            builder.append_link(&mut header, &relative, &target)?;
        } else {
            if kind.is_file() {
                files += 1;
                bytes += entry.size();
            }
            builder.append_data(&mut header, &relative, &mut entry)?;
        }
    }
    Ok((files, bytes))
}

fn append_single_file<W: std::io::Write>(
    builder: &mut tar::Builder<W>,
    node: &Node,
    dump: impl Read,
) -> std::io::Result<(u64, u64)> {
    let name = Path::new(&node.path)
        .file_name()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("dump"));
    let mtime = node
        .mtime
        .parse::<jiff::Timestamp>()
        .map(|t| t.as_second().max(0) as u64)
        .unwrap_or_else(|_| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or(Duration::ZERO)
                .as_secs()
        });
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(node.size);
    header.set_mode(node.mode & 0o7777);
    header.set_mtime(mtime);
    header.set_uid(node.uid);
    header.set_gid(node.gid);
    builder.append_data(&mut header, &name, dump.take(node.size))?;
    Ok((1, node.size))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(paths: &[&str]) -> Snapshot {
        Snapshot {
            id: "a".repeat(64),
            short_id: "aaaaaaaa".into(),
            time: "2026-01-01T00:00:00Z".into(),
            paths: paths.iter().map(|p| p.to_string()).collect(),
            hostname: "ns".into(),
            tags: vec![],
        }
    }

    #[test]
    fn path_is_normalized_to_restics_form() {
        assert_eq!(normalize_path("data/pvc/"), "/data/pvc");
        assert_eq!(normalize_path("/"), "/");
        assert_eq!(normalize_path(""), "/");
    }

    #[test]
    fn snapshot_holds_its_paths_their_subdirectories_and_parents() {
        let s = snapshot(&["/data/app", "/data/db"]);
        assert!(holds(&s, "/data/app"));
        assert!(holds(&s, "/data/app/uploads"));
        assert!(holds(&s, "/data"));
        assert!(!holds(&s, "/data/application"));
        assert!(!holds(&s, "/ns-db-0-mysql"));
    }

    #[test]
    fn tree_entries_are_renamed_below_the_restored_path() {
        let mut source = tar::Builder::new(Vec::new());
        for (name, data) in [
            ("data/pvc/a", "A"),
            ("data/pvc/sub/b", "BB"),
            ("data/other/c", "C"),
        ] {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o640);
            header.set_mtime(1_700_000_000);
            builder_append(&mut source, &mut header, name, data);
        }
        let source = source.into_inner().expect("in memory");
        let mut out = tar::Builder::new(Vec::new());
        let counts = append_tree(&mut out, "/data/pvc", source.as_slice()).expect("valid tar");
        assert_eq!(counts, (2, 3));
        let out = out.into_inner().expect("in memory");
        let mut archive = tar::Archive::new(out.as_slice());
        let names: Vec<(String, u32, u64)> = archive
            .entries()
            .expect("valid tar")
            .map(|e| {
                let e = e.expect("entry");
                (
                    e.path().expect("path").display().to_string(),
                    e.header().mode().expect("mode"),
                    e.header().mtime().expect("mtime"),
                )
            })
            .collect();
        assert_eq!(
            names,
            [
                ("a".to_string(), 0o640, 1_700_000_000),
                ("sub/b".to_string(), 0o640, 1_700_000_000)
            ]
        );
    }

    fn builder_append(
        builder: &mut tar::Builder<Vec<u8>>,
        header: &mut tar::Header,
        name: &str,
        data: &str,
    ) {
        builder
            .append_data(header, name, data.as_bytes())
            .expect("in memory");
    }
}
