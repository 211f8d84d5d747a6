//! `baas agent restore`: one snapshot (or part of it) into a directory or to S3 as `.tar.gz`.
//!
//! The snapshot is the one asked for, or else the newest of the namespace that holds the path;
//! never the repository-wide latest. The contents of the path become the root of the target.
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

use std::fs::{self, FileTimes};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flate2::Compression;
use flate2::write::GzEncoder;
use tokio::sync::mpsc;

use super::AgentEnv;
use super::restic::{LOCK_WAIT, Node, Snapshot};
use super::s3::{self, Destination, PartWriter};
use crate::crd::{RunState, SnapshotRef, Summary};
use crate::job::DATA_DIR;
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

/// Restores and reports.
pub async fn run(
    ctx: &AgentEnv,
    snapshot: Option<&str>,
    wanted: &Wanted,
    target: &Target,
) -> Result<RunReport> {
    ctx.restic.open(false).await?;
    let unlocked = super::locks::remove_stale(ctx).await?;
    let (snapshot, mut path) = choose_snapshot(ctx, snapshot, wanted).await?;
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
        Target::Dir(dir) => {
            restore_to_dir(ctx, &snapshot, &path, node.as_ref(), dir).await?;
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

async fn choose_snapshot(
    ctx: &AgentEnv,
    wanted_id: Option<&str>,
    wanted: &Wanted,
) -> Result<(Snapshot, String)> {
    if let Some(id) = wanted_id.map(str::trim).filter(|id| !id.is_empty()) {
        let snapshot = ctx.restic.snapshot(id).await?;
        return choose(std::slice::from_ref(&snapshot), wanted).ok_or_else(|| {
            Error::InvalidSpec(format!(
                "snapshot {} does not hold {} (its paths: {})",
                snapshot.short_id,
                wanted_path(wanted),
                snapshot.paths.join(", ")
            ))
        });
    }
    let snapshots = ctx.restic.snapshots(Some(&ctx.namespace)).await?;
    choose(&snapshots, wanted).ok_or_else(|| match wanted {
        Wanted::Path(path) => Error::InvalidSpec(format!(
            "no snapshot of namespace {} holds {path}",
            ctx.namespace
        )),
        Wanted::ClaimOrWhole(_) | Wanted::Whole => {
            Error::InvalidSpec(format!("namespace {} has no snapshots", ctx.namespace))
        }
    })
}

fn wanted_path(wanted: &Wanted) -> &str {
    match wanted {
        Wanted::Path(path) | Wanted::ClaimOrWhole(path) => path,
        Wanted::Whole => "/",
    }
}

async fn restore_to_dir(
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
fn escape_pattern(name: &str) -> String {
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
fn apply_node_metadata(dir: &Path, node: &Node) -> Result<()> {
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
fn system_time(text: &str) -> Option<SystemTime> {
    let time: jiff::Timestamp = text.parse().ok()?;
    Some(SystemTime::from(time))
}

async fn restore_to_s3(
    ctx: &AgentEnv,
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
        .args(["--retry-lock", LOCK_WAIT])
        .args(["dump", "--archive", "tar", &snapshot.id, path])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let path = path.to_string();
    let producer = tokio::task::spawn_blocking(move || write_archive(command, &path, node, tx));
    let uploaded = s3::upload(&s3::Transport::new(ctx.http.clone()), destination, key, rx).await;
    let produced = producer
        .await
        .map_err(|e| Error::Restic(format!("archive task failed: {e}")))?;
    let ((files, bytes), size) = first_cause(produced, uploaded)?;
    tracing::info!(key, size, files, bytes, "uploaded the restore archive");
    Ok(Summary {
        total_files: Some(files),
        total_bytes: Some(bytes),
        ..Summary::default()
    })
}

/// The outcome of an archive's production and upload. Whichever side stopped first holds
/// the cause; the other only saw it stop (the uploader's [`s3::INCOMPLETE`], the producer's
/// "the upload stopped").
fn first_cause(produced: Result<(u64, u64)>, uploaded: Result<u64>) -> Result<((u64, u64), u64)> {
    match (produced, uploaded) {
        (Ok(counts), Ok(size)) => Ok((counts, size)),
        (Err(produced), Err(Error::Http(m))) if m == s3::INCOMPLETE => Err(produced),
        (_, Err(uploaded)) => Err(uploaded),
        (Err(produced), Ok(_)) => Err(produced),
    }
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
    let mut stdout = child.stdout.take().expect("stdout is piped");
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
        Some(node) if node.kind != "dir" => append_single_file(&mut builder, node, &mut stdout),
        _ => append_tree(&mut builder, path, &mut stdout),
    };
    let finished = archived.and_then(|counts| {
        let gz = builder.into_inner()?;
        gz.finish()?.finish()?;
        // restic still writes the archive's end (tar stops reading at its first zero block)
        // and exits; closing the pipe before would kill it with SIGPIPE.
        std::io::copy(&mut stdout, &mut std::io::sink())?;
        Ok(counts)
    });
    if finished.is_err() {
        // The archive or its upload broke: restic would block on a full pipe otherwise.
        let _ = child.kill();
    }
    drop(stdout);
    let status = child.wait().ok().and_then(|s| s.code());
    let stderr = stderr_reader.join().unwrap_or_default();
    match (finished, status) {
        (Ok(counts), Some(0)) => Ok(counts),
        // restic did not fail on its own (it finished, or the kill above stopped it): the
        // archive's error is the cause.
        (Err(e), Some(0) | None) => Err(Error::Restic(format!("writing the archive failed: {e}"))),
        (_, status) => Err(Error::Restic(format!(
            "restic dump failed: {}",
            super::restic::explain(&stderr, "", status)
        ))),
    }
}

fn append_tree<W: std::io::Write>(
    builder: &mut tar::Builder<W>,
    path: &str,
    dump: &mut impl Read,
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
    dump: &mut impl Read,
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
    header.set_mode(node.unix_mode());
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

    fn at(mut s: Snapshot, time: &str) -> Snapshot {
        s.time = time.into();
        s.short_id = time.into();
        s
    }

    #[test]
    fn claim_without_path_takes_its_directory_from_the_newest_snapshot_holding_it() {
        let older = at(snapshot(&["/data/app", "/data/other"]), "1");
        let newer = at(snapshot(&["/data/other"]), "2");
        let wanted = Wanted::new(None, Some("app"));
        assert_eq!(wanted, Wanted::ClaimOrWhole("/data/app".into()));
        let (chosen, path) = choose(&[older, newer.clone()], &wanted).expect("a snapshot");
        assert_eq!(
            (chosen.short_id.as_str(), path.as_str()),
            ("1", "/data/app")
        );
        let (chosen, path) = choose(&[newer], &Wanted::new(None, Some("app"))).expect("a snapshot");
        assert_eq!((chosen.short_id.as_str(), path.as_str()), ("2", "/"));
    }

    #[test]
    fn given_path_wins_over_the_claim_and_must_be_held() {
        let s = snapshot(&["/data/other"]);
        let wanted = Wanted::new(Some("data/app/"), Some("other"));
        assert_eq!(wanted, Wanted::Path("/data/app".into()));
        assert_eq!(choose(std::slice::from_ref(&s), &wanted), None);
        assert_eq!(
            choose(&[s], &Wanted::new(None, None)).map(|(_, p)| p),
            Some("/".into())
        );
        assert_eq!(choose(&[], &Wanted::new(None, Some("app"))), None);
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
    fn directory_path_is_restored_as_the_snapshots_subfolder() {
        let args = restore_args("abc", "/data/app", true, Path::new("/restore/app"));
        assert_eq!(
            args,
            ["restore", "abc:/data/app", "--target", "/restore/app"]
        );
        let whole = restore_args("abc", "/", true, Path::new("/restore/app"));
        assert_eq!(whole, ["restore", "abc", "--target", "/restore/app"]);
    }

    #[test]
    fn file_path_is_restored_by_name_from_its_parent() {
        let dump = restore_args("abc", "/shop-db-0-mysql", false, Path::new("/r"));
        assert_eq!(
            dump,
            [
                "restore",
                "abc:/",
                "--include",
                "/shop-db-0-mysql",
                "--target",
                "/r"
            ]
        );
        let nested = restore_args("abc", "/data/app/a*[1]?.txt", false, Path::new("/r"));
        assert_eq!(
            nested,
            [
                "restore",
                "abc:/data/app",
                "--include",
                r"/a\*\[1]\?.txt",
                "--target",
                "/r"
            ]
        );
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
        let counts = append_tree(&mut out, "/data/pvc", &mut source.as_slice()).expect("valid tar");
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

    /// Runs `write_archive` on `script` (a stand-in for `restic dump`) and collects the
    /// uploaded bytes.
    fn archive_of(script: &str) -> (Result<(u64, u64)>, Vec<u8>) {
        let (tx, mut rx) = mpsc::channel(1);
        let uploaded = std::thread::spawn(move || {
            let mut bytes = Vec::new();
            while let Some(chunk) = rx.blocking_recv() {
                if let s3::Chunk::Part(part) = chunk {
                    bytes.extend(part);
                }
            }
            bytes
        });
        let mut command = std::process::Command::new("sh");
        command
            .args(["-c", script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let result = write_archive(command, "/", None, tx);
        (result, uploaded.join().expect("collector"))
    }

    #[test]
    fn archive_end_written_late_is_read_before_restic_is_waited_for() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut source = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(4);
        header.set_mode(0o644);
        builder_append(&mut source, &mut header, "shop-db", "data");
        // tar stops at the first zero block; restic writes the second one in its own write,
        // which on a loaded machine comes after the reader has finished.
        let mut first = source.into_inner().expect("in memory");
        first.extend([0u8; 512]);
        std::fs::write(dir.path().join("first"), &first).expect("write");
        let script = format!(
            "cat {0}/first && sleep 0.3 && head -c 512 /dev/zero",
            dir.path().display()
        );
        let (result, uploaded) = archive_of(&script);
        assert_eq!(result.expect("the dump succeeds"), (1, 4));
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(uploaded.as_slice()));
        let names: Vec<String> = archive
            .entries()
            .expect("tar")
            .map(|e| {
                e.expect("entry")
                    .path()
                    .expect("path")
                    .display()
                    .to_string()
            })
            .collect();
        assert_eq!(names, ["shop-db"]);
    }

    #[test]
    fn failed_dump_names_restics_error() {
        let (result, _) = archive_of("echo 'Fatal: no snapshot found' >&2; exit 1");
        let message = result.expect_err("the dump fails").to_string();
        assert!(message.contains("no snapshot found"), "{message}");
        assert!(message.contains("exit code 1"), "{message}");
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

    #[test]
    fn failed_s3_restore_reports_the_side_that_failed_first() {
        let cause = |produced: Result<(u64, u64)>, uploaded: Result<u64>| {
            first_cause(produced, uploaded).map_err(|e| e.to_string())
        };
        let restic_failed = || Err(Error::Restic("snapshot not found".into()));
        let upload_stopped = || Err(Error::Restic("the upload stopped".into()));
        let stalled = "S3 part 2: no data moved for 60s (after 5 attempts)";
        assert_eq!(
            cause(restic_failed(), Err(Error::Http(s3::INCOMPLETE.into()))),
            Err(Error::Restic("snapshot not found".into()).to_string())
        );
        assert_eq!(
            cause(upload_stopped(), Err(Error::Http(stalled.into()))),
            Err(Error::Http(stalled.into()).to_string())
        );
        assert_eq!(cause(Ok((1, 2)), Ok(3)), Ok(((1, 2), 3)));
    }
}
