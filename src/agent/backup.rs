//! `baas agent backup`: every PVC directory under the data directory into one snapshot, then
//! each backup command's stdout streamed into a snapshot of its own.
//!
//! A failed backup command never leaves a snapshot that looks like a good dump: restic's stdin
//! stays open until the command's exit status is known, and restic is killed (not allowed to
//! commit) when the command failed or its stream broke.
//!
//! restic ≥ 0.17 has `backup --stdin-from-command`, which commits only when a command it
//! starts itself exits 0. It does not fit: the command runs in another pod, reached through
//! the Kubernetes exec API from this process, so restic would have to start a local proxy (the
//! agent again, with its own API client) just to learn the remote exit status that
//! [`stream_command`] already waits for before closing restic's stdin.

use std::path::{Path, PathBuf};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::AgentEnv;
use super::exec::{PodExec, capture_bounded};
use super::restic::{self, BackupOutput, EXIT_PARTIAL, UnreadableItem};

pub mod pods;
use crate::crd::{RunState, SnapshotRef, Summary};
use crate::job::BackupPod;
use crate::report::RunReport;
use crate::{Error, Result};

/// Bytes of a failed command's stderr quoted in the report.
const COMMAND_STDERR_LIMIT: usize = 1024;
/// Copy buffer between the command's stdout and restic's stdin.
const PUMP_BUFFER: usize = 256 << 10;

/// The outcome of one part of a backup (the volumes, or one command).
struct Part {
    /// What was backed up, for messages.
    what: String,
    snapshot: Option<SnapshotRef>,
    summary: Summary,
    /// Unreadable files (partial part) or the reason of a failure. A written part with
    /// errors is partial.
    errors: Vec<String>,
    failed: bool,
}

/// Runs the backup and reports on it.
pub async fn run<E: PodExec>(
    ctx: &AgentEnv,
    exec: &E,
    commands: &[BackupPod],
) -> Result<RunReport> {
    ctx.restic.open(true).await?;
    let unlocked = super::locks::remove_stale(ctx).await?;
    let volumes = list_volumes(&ctx.data_dir)?;
    if volumes.is_empty() && commands.is_empty() {
        // No restic run will prove the password right: check it, or "nothing to back up"
        // would hide a broken configuration until there is something to lose.
        ctx.restic.verify().await?;
    }
    // Commands first, volumes last: restic dates a snapshot by its start, so the volumes'
    // snapshot is then the newest of the host, and the seed's manual restore path
    // `restic mount` → `hosts/<namespace>/latest/data/<pvcname>/` finds the data. The report
    // still lists the volumes first, as the run's main snapshot.
    let mut parts = Vec::new();
    for command in commands {
        parts.push(backup_command(ctx, exec, command).await);
    }
    if !volumes.is_empty() {
        parts.insert(0, backup_volumes(ctx, &volumes).await?);
    }
    Ok(combine(parts, unlocked, &ctx.data_dir))
}

/// Subdirectories of the data directory, one per mounted PVC, sorted.
fn list_volumes(data_dir: &Path) -> Result<Vec<PathBuf>> {
    let io = |source| Error::Io {
        path: data_dir.display().to_string(),
        source,
    };
    let mut volumes = Vec::new();
    match std::fs::read_dir(data_dir) {
        Ok(entries) => {
            for entry in entries {
                let entry = entry.map_err(io)?;
                if entry.file_type().map_err(io)?.is_dir() {
                    volumes.push(entry.path());
                }
            }
        }
        // No volumes mounted: a backup of backup commands only.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    volumes.sort();
    Ok(volumes)
}

fn tag_args(ctx: &AgentEnv) -> Vec<String> {
    let mut args = vec!["--tag".to_string(), "baas".to_string()];
    if let Some(run) = &ctx.run_name {
        args.push("--tag".into());
        args.push(format!("run={run}"));
    }
    args
}

async fn backup_volumes(ctx: &AgentEnv, volumes: &[PathBuf]) -> Result<Part> {
    let mut args: Vec<String> = ["backup", "--json", "--host", &ctx.namespace]
        .map(String::from)
        .to_vec();
    args.extend(tag_args(ctx));
    // Absolute paths: in the pod the data directory is /data, so the snapshot holds exactly
    // /data/<pvc>, which is what `restic restore` and `restic mount` users look for.
    args.extend(volumes.iter().map(|v| v.display().to_string()));
    let what = volumes
        .iter()
        .map(|v| v.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let mut child = ctx.restic.spawn(&mut ctx.restic.command(&args))?;
    let stdout = child.stdout.take().expect("stdout is piped by command()");
    let stderr = child.stderr.take().expect("stderr is piped by command()");
    let mut output = restic::read_backup_output(stdout, stderr).await;
    output.code = child.wait().await.ok().and_then(|s| s.code());
    let paths = volumes.iter().map(|v| v.display().to_string()).collect();
    finish_part(ctx, what, paths, output).await
}

/// Turns restic's backup output into a part: Succeeded (0), partial (3), or failed.
async fn finish_part(
    ctx: &AgentEnv,
    what: String,
    paths: Vec<String>,
    output: BackupOutput,
) -> Result<Part> {
    let written = matches!(output.code, Some(0) | Some(EXIT_PARTIAL));
    let Some(summary) = output.summary.as_ref().filter(|_| written) else {
        return Ok(Part {
            errors: vec![format!(
                "{what}: {}",
                restic::explain(&output.stderr_tail, "", output.code)
            )],
            what,
            snapshot: None,
            summary: Summary::default(),
            failed: true,
        });
    };
    let id = ctx.restic.full_id(&summary.snapshot_id).await?;
    let errors = written_part_errors(&what, &output);
    Ok(Part {
        what,
        snapshot: Some(SnapshotRef { id, paths }),
        summary: summary.to_summary(),
        errors,
        failed: false,
    })
}

/// The errors of a part restic wrote a snapshot for: one per unreadable item. Exit code 3
/// makes the part partial even when no item could be parsed (a line longer than the agent
/// reads is cut and no longer JSON): a partial backup must never pass for a full one.
fn written_part_errors(what: &str, output: &BackupOutput) -> Vec<String> {
    let mut errors: Vec<String> = output.unreadable.iter().map(describe_unreadable).collect();
    if errors.is_empty() && output.code == Some(EXIT_PARTIAL) {
        errors.push(format!(
            "{what}: restic could not read some files (exit code 3) and named none of them"
        ));
    }
    errors
}

/// Names the file and why it was not backed up. The cause is restic's error, or, when restic
/// gave none, the file system's answer to the agent, which reads with the same rights.
fn describe_unreadable(item: &UnreadableItem) -> String {
    let cause = if item.message.is_empty() {
        probe_unreadable(Path::new(&item.item))
    } else {
        Some(Cause {
            denied: {
                let lower = item.message.to_lowercase();
                lower.contains("permission denied") || lower.contains("operation not permitted")
            },
            text: item.message.clone(),
        })
    };
    match cause {
        // In a Job the agent is root with DAC_OVERRIDE, so a refusal there comes from outside
        // the container's rights (NFS root squashing, a security module): say so plainly.
        Some(cause) if cause.denied => format!(
            "{}: not backed up: the agent lacks the permission to read it ({})",
            item.item, cause.text
        ),
        Some(cause) => format!("{}: not backed up: {}", item.item, cause.text),
        None => format!(
            "{}: not backed up: could not be read during {}",
            item.item, item.during
        ),
    }
}

struct Cause {
    denied: bool,
    text: String,
}

fn probe_unreadable(path: &Path) -> Option<Cause> {
    let error = match std::fs::symlink_metadata(path) {
        Err(e) => Some(e),
        Ok(meta) if meta.is_dir() => std::fs::read_dir(path).err(),
        Ok(meta) if meta.is_file() => std::fs::File::open(path).err(),
        Ok(_) => None,
    }?;
    Some(Cause {
        denied: error.kind() == std::io::ErrorKind::PermissionDenied,
        text: error.to_string(),
    })
}

async fn backup_command<E: PodExec>(ctx: &AgentEnv, exec: &E, target: &BackupPod) -> Part {
    let filename = pods::stdin_filename(&ctx.namespace, target);
    let what = pods::describe(target);
    let failed = |reason: String| Part {
        errors: vec![format!("{what}: {reason}")],
        what: what.clone(),
        snapshot: None,
        summary: Summary::default(),
        failed: true,
    };
    // Read at run time, not from the Job: the command may hold a password.
    let command = match exec.get_pod(&target.pod).await {
        Ok(pod) => pods::command_of(pod.as_ref()),
        Err(e) => Err(format!("cannot read the pod: {e}")),
    };
    let command = match command {
        Ok(command) => command,
        Err(reason) => return failed(format!("{reason}; nothing was stored for it")),
    };
    match stream_command(ctx, exec, target, &command, &filename).await {
        Ok(output) => match finish_part(ctx, what.clone(), vec![filename], output).await {
            Ok(part) => part,
            Err(e) => failed(e.to_string()),
        },
        Err(reason) => failed(reason),
    }
}

/// Streams the command's stdout into `restic backup --stdin`. `Err` carries why nothing was
/// stored.
async fn stream_command<E: PodExec>(
    ctx: &AgentEnv,
    exec: &E,
    target: &BackupPod,
    command: &str,
    filename: &str,
) -> std::result::Result<BackupOutput, String> {
    let mut session = exec
        .exec(&target.pod, Some(&target.container), command)
        .await?;
    let mut args: Vec<String> = [
        "backup",
        "--json",
        "--host",
        &ctx.namespace,
        "--stdin",
        "--stdin-filename",
        filename,
    ]
    .map(String::from)
    .to_vec();
    args.extend(tag_args(ctx));
    let mut restic_command = ctx.restic.command(&args);
    restic_command.stdin(std::process::Stdio::piped());
    let mut child = ctx
        .restic
        .spawn(&mut restic_command)
        .map_err(|e| e.to_string())?;
    let mut stdin = child.stdin.take().expect("stdin is piped above");
    widen_pipe(&stdin);
    let output = tokio::spawn(restic::read_backup_output(
        child.stdout.take().expect("stdout is piped by command()"),
        child.stderr.take().expect("stderr is piped by command()"),
    ));
    let stderr = tokio::spawn(capture_bounded(session.stderr, COMMAND_STDERR_LIMIT));

    let pumped = pump(&mut session.stdout, &mut stdin).await;
    let outcome = match pumped {
        Ok(_) => session.finished.await,
        Err(Pump::Read(e)) => Err(format!("reading the command's output failed: {e}")),
        // restic stopped reading: its own error explains why.
        Err(Pump::Write(e)) => {
            tracing::debug!("restic stopped reading the command's output: {e}");
            Ok(())
        }
    };
    if let Err(reason) = outcome {
        // restic has not seen the end of its input, so it has written no snapshot; killing
        // it keeps the truncated dump out of the repository.
        let _ = child.start_kill();
        let _ = child.wait().await;
        let written = output.await.ok().and_then(|o| o.summary);
        // The killed restic left its lock; it is stale (same host, process gone), and it
        // would keep the exclusive `forget` below waiting for it.
        let _ = ctx.restic.unlock().await;
        if let Some(summary) = written {
            // Defensive: should restic have committed anyway, the dump must not survive.
            let _ = ctx.restic.forget(&[summary.snapshot_id]).await;
        }
        let stderr = tokio::time::timeout(std::time::Duration::from_secs(5), stderr)
            .await
            .ok()
            .and_then(|r| r.ok())
            .unwrap_or_default();
        let stderr = if stderr.is_empty() {
            String::new()
        } else {
            format!("; stderr: {stderr}")
        };
        // The command line is never repeated: it may hold a password (`mysqldump -p...`).
        return Err(format!(
            "the command failed: {reason}{stderr}; nothing was stored for it"
        ));
    }
    drop(stdin);
    let code = child.wait().await.ok().and_then(|s| s.code());
    let mut output = output
        .await
        .map_err(|e| format!("reading restic's output failed: {e}"))?;
    output.code = code;
    Ok(output)
}

/// Bytes a pipe between the command and restic holds. Linux's default of 64 KiB makes the
/// writer, the agent and restic take turns on every 64 KiB of a dump; a larger pipe lets each
/// run for longer between switches (1 MiB is the most an unprivileged process may set).
pub const PIPE_SIZE: usize = 1 << 20;

/// Enlarges a pipe to [`PIPE_SIZE`] where the kernel allows it; the default size still
/// works, only slower.
pub fn widen_pipe(pipe: &impl std::os::fd::AsFd) {
    if let Err(e) = rustix::pipe::fcntl_setpipe_size(pipe, PIPE_SIZE) {
        tracing::debug!("keeping the default pipe size: {e}");
    }
}

enum Pump {
    Read(std::io::Error),
    Write(std::io::Error),
}

/// Copies `from` into `to` through one fixed buffer: memory stays constant for any size.
async fn pump(
    from: &mut (impl AsyncRead + Unpin + ?Sized),
    to: &mut (impl tokio::io::AsyncWrite + Unpin),
) -> std::result::Result<u64, Pump> {
    let mut buf = vec![0u8; PUMP_BUFFER];
    let mut total = 0u64;
    loop {
        let n = from.read(&mut buf).await.map_err(Pump::Read)?;
        if n == 0 {
            return Ok(total);
        }
        to.write_all(&buf[..n]).await.map_err(Pump::Write)?;
        total += n as u64;
    }
}

fn add(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
    }
}

fn combine(parts: Vec<Part>, unlocked: usize, data_dir: &Path) -> RunReport {
    let mut report = RunReport::default();
    let mut failed = Vec::new();
    let mut partial = Vec::new();
    let mut failure_errors = Vec::new();
    let mut file_errors = Vec::new();
    for part in parts {
        if part.failed {
            failed.push(part.what.clone());
        } else if !part.errors.is_empty() {
            partial.push(part.what.clone());
        }
        // Failures first: they matter more than single unreadable files.
        if part.failed {
            failure_errors.extend(part.errors);
        } else {
            file_errors.extend(part.errors);
        }
        if let Some(snapshot) = part.snapshot {
            report.snapshots.push(snapshot);
        }
        let s = &mut report.summary;
        let p = part.summary;
        s.files_new = add(s.files_new, p.files_new);
        s.files_changed = add(s.files_changed, p.files_changed);
        s.files_unmodified = add(s.files_unmodified, p.files_unmodified);
        s.total_files = add(s.total_files, p.total_files);
        s.total_bytes = add(s.total_bytes, p.total_bytes);
        s.bytes_added = add(s.bytes_added, p.bytes_added);
    }
    report.errors = failure_errors;
    report.errors.extend(file_errors);
    let written = report.snapshots.len();
    let (state, mut message) = if written == 0 && failed.is_empty() {
        (
            RunState::Succeeded,
            format!(
                "nothing to back up: no volume under {} and no backup command",
                data_dir.display()
            ),
        )
    } else if written == 0 {
        (
            RunState::Failed,
            format!("backup failed: {}", report.errors.join("; ")),
        )
    } else if failed.is_empty() && partial.is_empty() {
        (
            RunState::Succeeded,
            format!("backed up {written} snapshot(s)"),
        )
    } else {
        let mut why = Vec::new();
        if !failed.is_empty() {
            why.push(format!("failed: {}", failed.join(", ")));
        }
        if !partial.is_empty() {
            why.push(format!(
                "files that could not be read are missing from: {}",
                partial.join(", ")
            ));
        }
        (
            RunState::PartiallySucceeded,
            format!(
                "backed up {written} snapshot(s), partially: {}",
                why.join("; ")
            ),
        )
    };
    if unlocked > 0 {
        message.push_str(&format!(
            " (removed {unlocked} stale lock(s) left by an earlier run)"
        ));
    }
    report.state = Some(state);
    report.message = message;
    report
}

#[cfg(test)]
mod tests;
