//! A typed wrapper around the `restic` binary (0.17 and later: the agent relies on its exit
//! codes 10–12, on `restore <snapshot>:<subfolder>` and on error messages in `backup --json`;
//! the image and the tests pin 0.18.1). Every invocation reads only what it needs from
//! restic's output: JSON lines are parsed one at a time with a bounded line length, stdout
//! that must be parsed whole (`snapshots`, `forget`) is capped, and stderr is kept as a short
//! tail for error messages, so memory stays flat however much restic prints.
//!
//! Locks: every command is given `--retry-lock` ([`LOCK_WAIT`]), so a command that meets a
//! lock of a concurrent run (another Job's backup, a manual `restic check`) waits for it
//! instead of failing at once; restic ignores the flag for commands that take no lock or run
//! with `--no-lock`.

mod bounded;
mod explain;
mod output;
mod restore_output;

use std::path::PathBuf;
use std::process::Stdio;

use tokio::process::{Child, Command};

use super::locks::Lock;
use super::s3::{ConfigAnswer, RepositoryFiles};
use crate::{Error, Result};
use bounded::read_capped;
pub use bounded::{BoundedLines, stderr_tail};
pub use explain::explain;
use output::parse_snapshots;
pub use output::{
    BackupOutput, BackupSummary, Node, Snapshot, SnapshotSummary, UnreadableItem,
    read_backup_output,
};
pub use restore_output::{FailedItem, RestoreOutput, RestoreSummary, read_restore_output};

/// Exit code restic uses when it wrote a snapshot but could not read some files.
pub const EXIT_PARTIAL: i32 = 3;
/// Exit code of restic ≥ 0.17 when the repository does not exist.
pub const EXIT_NO_REPOSITORY: i32 = 10;
/// Exit code of restic ≥ 0.17 when the repository is locked (after `--retry-lock` ran out).
pub const EXIT_LOCKED: i32 = 11;
/// Exit code of restic ≥ 0.17 when no key of the repository opens with the password.
pub const EXIT_WRONG_PASSWORD: i32 = 12;
/// How long a command waits for a lock held by another process, as restic's `--retry-lock`
/// takes it. Long enough for a backup Job to outwait a short neighbour (the `restic unlock`,
/// `forget` or the start of a check of a parallel run); short enough that a Job stuck behind
/// a long prune fails with a clear message well before its deadline. The operator already
/// keeps checks and prunes apart from other runs on the same repository.
pub const LOCK_WAIT: &str = "2m";

/// How to call restic for one repository.
#[derive(Clone, Debug)]
pub struct Restic {
    binary: PathBuf,
    repository: String,
    files: Option<RepositoryFiles>,
}

/// What a finished restic invocation left behind.
#[derive(Debug)]
pub struct Finished {
    /// Exit code; `None` when restic was killed by a signal.
    pub code: Option<i32>,
    /// stdout, at most [`bounded::STDOUT_LIMIT`] bytes.
    pub stdout: Vec<u8>,
    /// The last lines of stderr.
    pub stderr_tail: String,
}

impl Restic {
    /// restic at `binary` working on `repository`; everything else (password, S3 keys, cache
    /// directory) comes from the environment restic inherits.
    pub fn new(binary: impl Into<PathBuf>, repository: impl Into<String>) -> Self {
        Restic {
            binary: binary.into(),
            repository: repository.into(),
            files: None,
        }
    }

    /// Answers bookkeeping questions from the repository's S3 files where possible (see
    /// [`RepositoryFiles`]), restic's own answer being the fallback.
    pub fn with_files(mut self, files: Option<RepositoryFiles>) -> Self {
        self.files = files;
        self
    }

    /// The restic binary.
    pub fn binary(&self) -> &std::path::Path {
        &self.binary
    }

    /// The repository this wrapper works on.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// A restic command for `args`, with piped stdout and stderr and no stdin. The child is
    /// killed when its handle is dropped, so an aborted run leaves no stray restic behind.
    pub fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut command = Command::new(&self.binary);
        command
            .arg("--repo")
            .arg(&self.repository)
            .args(["--retry-lock", LOCK_WAIT])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    /// Starts `command`, naming the binary when it cannot be started.
    pub fn spawn(&self, command: &mut Command) -> Result<Child> {
        command.spawn().map_err(|e| {
            Error::Restic(format!(
                "cannot start {}: {e} (is restic installed?)",
                self.binary.display()
            ))
        })
    }

    /// Runs restic with `args` to the end and collects its (bounded) output.
    pub async fn run<I, S>(&self, args: I) -> Result<Finished>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut child = self.spawn(&mut self.command(args))?;
        let stdout = child.stdout.take().expect("stdout is piped by command()");
        let stderr = child.stderr.take().expect("stderr is piped by command()");
        let (stdout, stderr_tail) = tokio::join!(read_capped(stdout), stderr_tail(stderr));
        let status = child.wait().await.map_err(|e| Error::Io {
            path: self.binary.display().to_string(),
            source: e,
        })?;
        let stdout = stdout.map_err(|e| Error::Restic(format!("reading restic's output: {e}")))?;
        Ok(Finished {
            code: status.code(),
            stdout,
            stderr_tail,
        })
    }

    /// Runs restic with `args` and returns its stdout, or an explained error when it fails.
    pub async fn run_ok<I, S>(&self, args: I) -> Result<Vec<u8>>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let finished = self.run(args).await?;
        if finished.code == Some(0) {
            Ok(finished.stdout)
        } else {
            Err(Error::Restic(explain(
                &finished.stderr_tail,
                &String::from_utf8_lossy(&finished.stdout),
                finished.code,
            )))
        }
    }

    /// Whether the repository exists; an error when it exists but cannot be opened (wrong
    /// password, credentials) or restic cannot tell (network).
    pub async fn exists(&self) -> Result<bool> {
        // S3's own answer first: restic ≥ 0.17 retries a missing bucket and refused
        // credentials for 15 minutes before it gives up, while a 404 for `config` already says
        // that there is no repository (and `restic init` refuses to overwrite one, should it
        // appear meanwhile).
        if let Some(files) = &self.files {
            match files.config().await {
                ConfigAnswer::Present => return Ok(true),
                ConfigAnswer::Absent => return Ok(false),
                ConfigAnswer::CredentialsRefused(reason) => {
                    return Err(Error::Restic(format!(
                        "S3 credentials refused: {reason} (check the Secrets that \
                         spec.backend.s3.accessKeyIDSecretRef and secretAccessKeySecretRef name)"
                    )));
                }
                ConfigAnswer::Unknown(reason) => {
                    tracing::debug!("asking restic whether the repository exists: {reason}");
                }
            }
        }
        let finished = self.run(["cat", "config", "--no-lock"]).await?;
        // restic's exit code alone decides: its messages change between versions, and an
        // `init` over a repository that exists but could not be read would be destructive.
        match finished.code {
            Some(0) => Ok(true),
            Some(EXIT_NO_REPOSITORY) => Ok(false),
            code => Err(Error::Restic(explain(&finished.stderr_tail, "", code))),
        }
    }

    /// Waits until another process (the first Job of the same run) has created the
    /// repository: two concurrent `restic init`s leave a config that only one key opens.
    pub async fn wait_until_created(&self, timeout: std::time::Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.exists().await? {
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Restic(format!(
                    "repository {} was not created within {}s by the run's first Job",
                    self.repository,
                    timeout.as_secs()
                )));
            }
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        }
        Ok(())
    }

    /// Opens the repository; when it does not exist yet and `create` is set, initialises it
    /// (restic creates the bucket too). Returns whether it was created.
    pub async fn open(&self, create: bool) -> Result<bool> {
        if self.exists().await? {
            return Ok(false);
        }
        if !create {
            return Err(Error::Restic(format!(
                "repository {} does not exist yet (a backup creates it)",
                self.repository
            )));
        }
        self.run_ok(["init"]).await?;
        tracing::info!(repository = %self.repository, "initialised the restic repository");
        Ok(true)
    }

    /// Proves that the password opens the repository.
    pub async fn verify(&self) -> Result<()> {
        self.run_ok(["cat", "config", "--no-lock"]).await.map(drop)
    }

    /// Removes stale locks (left by runs that died) and returns how many went away.
    pub async fn unlock(&self) -> Result<usize> {
        let before = self.count_locks().await?;
        if before == 0 {
            return Ok(0);
        }
        self.run_ok(["unlock"]).await?;
        let after = self.count_locks().await?;
        let removed = before.saturating_sub(after);
        if removed > 0 {
            tracing::info!(removed, "removed stale restic locks");
        }
        Ok(removed)
    }

    async fn count_locks(&self) -> Result<usize> {
        Ok(self.lock_ids().await?.len())
    }

    /// IDs of the repository's locks.
    pub async fn lock_ids(&self) -> Result<Vec<String>> {
        if let Some(files) = &self.files
            && let Ok(locks) = files.list("locks", "").await
        {
            return Ok(locks);
        }
        let out = self.run_ok(["list", "locks", "--no-lock"]).await?;
        Ok(String::from_utf8_lossy(&out)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect())
    }

    /// The lock with this ID; `None` when it is gone or cannot be read.
    pub async fn lock(&self, id: &str) -> Option<Lock> {
        let out = self.run_ok(["cat", "lock", "--no-lock", id]).await.ok()?;
        serde_json::from_slice(&out).ok()
    }

    /// Deletes the lock file with this ID, as `restic unlock` does for a stale one. Only
    /// possible on S3, where the agent reaches the repository's files.
    pub async fn remove_lock(&self, id: &str) -> Result<()> {
        match &self.files {
            Some(files) => files.delete("locks", id).await,
            None => Err(Error::Restic(format!(
                "lock {id}: the agent removes single locks only from S3 repositories"
            ))),
        }
    }

    /// Snapshots, optionally only those of `host`, oldest first.
    pub async fn snapshots(&self, host: Option<&str>) -> Result<Vec<Snapshot>> {
        let mut args = vec!["snapshots", "--json", "--no-lock"];
        if let Some(host) = host {
            args.extend(["--host", host]);
        }
        let out = self.run_ok(args).await?;
        let mut snapshots = parse_snapshots(&out)?;
        snapshots.sort_by_key(Snapshot::timestamp);
        Ok(snapshots)
    }

    /// The newest snapshot of each set of paths of `host` (restic groups `--latest` by host
    /// and paths), oldest first.
    pub async fn latest_snapshots(&self, host: &str) -> Result<Vec<Snapshot>> {
        let out = self
            .run_ok([
                "snapshots",
                "--json",
                "--no-lock",
                "--host",
                host,
                "--latest",
                "1",
            ])
            .await?;
        let mut snapshots = parse_snapshots(&out)?;
        snapshots.sort_by_key(Snapshot::timestamp);
        Ok(snapshots)
    }

    /// The snapshot of `host` with this ID or unique ID prefix. restic ignores `--host` once
    /// an ID is given, so the host's own list is searched: a snapshot of another namespace is
    /// never found by a prefix it happens to share.
    pub async fn snapshot_of_host(&self, host: &str, id: &str) -> Result<Snapshot> {
        let snapshots = self.snapshots(Some(host)).await?;
        let mut matching = snapshots.into_iter().filter(|s| s.id.starts_with(id));
        match (matching.next(), matching.next()) {
            (Some(snapshot), None) => Ok(snapshot),
            (None, _) => Err(Error::InvalidSpec(format!(
                "no snapshot {id} of namespace {host} in the repository"
            ))),
            (Some(_), Some(_)) => Err(Error::InvalidSpec(format!(
                "snapshot ID {id} is ambiguous among the snapshots of namespace {host}; give more \
                 of it"
            ))),
        }
    }

    /// `restic restore --json --verify` of snapshot `id` (only the `include`d paths when
    /// there are any) into `target`, read to the end. restic takes its shared lock for the
    /// restore alone and drops it when it exits; its exit code is in the output, for the
    /// caller to judge.
    pub async fn restore_verified(
        &self,
        id: &str,
        include: &[String],
        target: &std::path::Path,
    ) -> Result<RestoreOutput> {
        let mut args: Vec<std::ffi::OsString> = ["restore", "--json", "--verify", id, "--target"]
            .map(Into::into)
            .to_vec();
        args.push(target.as_os_str().to_owned());
        for path in include {
            args.push("--include".into());
            args.push(path.into());
        }
        let mut child = self.spawn(&mut self.command(&args))?;
        let stdout = child.stdout.take().expect("stdout is piped by command()");
        let stderr = child.stderr.take().expect("stderr is piped by command()");
        let mut output = read_restore_output(stdout, stderr).await;
        output.code = child.wait().await.ok().and_then(|s| s.code());
        Ok(output)
    }

    /// The full ID of the snapshot with this ID prefix.
    pub async fn full_id(&self, prefix: &str) -> Result<String> {
        // restic ≥ 0.17 reports the full ID in the backup summary already: asking S3 or
        // restic again would only lengthen every backup (an incremental one by a few %).
        if is_full_id(prefix) {
            return Ok(prefix.to_string());
        }
        if let Some(files) = &self.files
            && let Ok(ids) = files.list("snapshots", prefix).await
            && let [id] = ids.as_slice()
            && id.len() == 64
        {
            return Ok(id.clone());
        }
        Ok(self.snapshot(prefix).await?.id)
    }

    /// The snapshot with this ID or unique ID prefix.
    pub async fn snapshot(&self, id: &str) -> Result<Snapshot> {
        let out = self
            .run_ok(["snapshots", "--json", "--no-lock", id])
            .await?;
        parse_snapshots(&out)?
            .into_iter()
            .next()
            .ok_or_else(|| Error::Restic(format!("no snapshot {id} in the repository")))
    }

    /// Removes snapshots by ID (without pruning their data).
    pub async fn forget(&self, ids: &[String]) -> Result<()> {
        let mut args = vec!["forget".to_string()];
        args.extend(ids.iter().cloned());
        self.run_ok(args).await.map(drop)
    }
}

/// A whole restic ID: 64 lowercase hex digits (what `snapshot.ID.String()` prints).
fn is_full_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl Restic {
    /// The node at `path` in snapshot `id`, or `None` when the snapshot has no such path.
    /// `restic ls` lists a directory's whole subtree; reading stops at the node asked for.
    pub async fn node(&self, id: &str, path: &str) -> Result<Option<Node>> {
        let mut child = self.spawn(&mut self.command(["ls", "--json", "--no-lock", id, path]))?;
        let stdout = child.stdout.take().expect("stdout is piped by command()");
        let stderr = child.stderr.take().expect("stderr is piped by command()");
        let tail = tokio::spawn(stderr_tail(stderr));
        let mut lines = BoundedLines::new(stdout);
        while let Some(line) = lines.next().await {
            if let Ok(node) = serde_json::from_str::<Node>(&line)
                && node.path == path
            {
                // The rest of the listing is not needed.
                let _ = child.start_kill();
                let _ = child.wait().await;
                return Ok(Some(node));
            }
        }
        let status = child.wait().await.ok().and_then(|s| s.code());
        let tail = tail.await.unwrap_or_default();
        if status == Some(0) {
            Ok(None)
        } else {
            Err(Error::Restic(explain(&tail, "", status)))
        }
    }
}

#[cfg(test)]
mod tests;
