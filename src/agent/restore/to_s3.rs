//! A restore to S3: `restic dump --archive tar` rewritten entry by entry so the path becomes the
//! root, gzipped and uploaded in parts while it is produced.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flate2::Compression;
use flate2::write::GzEncoder;
use tokio::sync::mpsc;

use crate::agent::AgentEnv;
use crate::agent::restic::{LOCK_WAIT, Node, Snapshot};
use crate::agent::s3::{self, Destination, PartWriter};
use crate::crd::Summary;
use crate::{Error, Result};

pub(super) async fn restore_to_s3(
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
pub(super) fn first_cause(
    produced: Result<(u64, u64)>,
    uploaded: Result<u64>,
) -> Result<((u64, u64), u64)> {
    match (produced, uploaded) {
        (Ok(counts), Ok(size)) => Ok((counts, size)),
        (Err(produced), Err(Error::Http(m))) if m == s3::INCOMPLETE => Err(produced),
        (_, Err(uploaded)) => Err(uploaded),
        (Err(produced), Ok(_)) => Err(produced),
    }
}

/// Runs `restic dump`, rewrites its output into the archive and feeds the uploader; returns
/// the files and bytes archived.
pub(super) fn write_archive(
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
            crate::agent::restic::explain(&stderr, "", status)
        ))),
    }
}

pub(super) fn append_tree<W: std::io::Write>(
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

pub(super) fn append_single_file<W: std::io::Write>(
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
