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

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Stdio;

use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

use super::locks::Lock;
use super::s3::{ConfigAnswer, RepositoryFiles};
use crate::crd::Summary;
use crate::{Error, Result};

/// Largest stdout that is collected whole (the JSON of `snapshots` or `forget`): about
/// 150 000 snapshots, far beyond any sane repository.
const STDOUT_LIMIT: usize = 64 << 20;
/// Longest line kept from restic's output; longer lines are cut (never buffered whole).
const LINE_LIMIT: usize = 64 << 10;
/// Lines of stderr kept for error messages.
const STDERR_TAIL_LINES: usize = 40;
/// Unreadable items kept from one backup; the report is trimmed further to fit.
const ERROR_ITEMS_LIMIT: usize = 1000;

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

/// One snapshot as `restic snapshots --json` lists it.
#[derive(Deserialize, Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// Full ID.
    pub id: String,
    /// The first 8 characters of the ID.
    pub short_id: String,
    /// When the snapshot was taken (RFC 3339).
    pub time: String,
    /// Paths given to `restic backup`.
    #[serde(default)]
    pub paths: Vec<String>,
    /// restic's host name: the namespace.
    #[serde(default)]
    pub hostname: String,
    /// Tags of the snapshot.
    #[serde(default)]
    pub tags: Vec<String>,
}

impl Snapshot {
    /// The snapshot's time as a timestamp; unparseable times sort first.
    pub fn timestamp(&self) -> jiff::Timestamp {
        self.time.parse().unwrap_or(jiff::Timestamp::MIN)
    }
}

/// The `summary` message of `restic backup --json`.
#[derive(Deserialize, Clone, Debug, Default, PartialEq)]
pub struct BackupSummary {
    /// Files new since the parent snapshot.
    #[serde(default)]
    pub files_new: u64,
    /// Files changed since the parent snapshot.
    #[serde(default)]
    pub files_changed: u64,
    /// Files unchanged since the parent snapshot.
    #[serde(default)]
    pub files_unmodified: u64,
    /// Bytes added to the repository.
    #[serde(default)]
    pub data_added: u64,
    /// All files read.
    #[serde(default)]
    pub total_files_processed: u64,
    /// All bytes read.
    #[serde(default)]
    pub total_bytes_processed: u64,
    /// ID of the new snapshot (full since restic 0.17; older versions gave the short form).
    #[serde(default)]
    pub snapshot_id: String,
}

impl BackupSummary {
    /// restic's figures in the CRD's terms.
    pub fn to_summary(&self) -> Summary {
        Summary {
            files_new: Some(self.files_new),
            files_changed: Some(self.files_changed),
            files_unmodified: Some(self.files_unmodified),
            total_files: Some(self.total_files_processed),
            total_bytes: Some(self.total_bytes_processed),
            bytes_added: Some(self.data_added),
            ..Summary::default()
        }
    }
}

/// An item restic could not read during a backup.
#[derive(Clone, Debug, PartialEq)]
pub struct UnreadableItem {
    /// The file or directory.
    pub item: String,
    /// The phase restic was in (`scan`, `archival`).
    pub during: String,
    /// restic's error (`open /data/app/x: permission denied`); empty when it gave none.
    pub message: String,
}

/// What `restic backup --json` reported.
#[derive(Debug, Default)]
pub struct BackupOutput {
    /// restic's exit code; `None` when it was killed.
    pub code: Option<i32>,
    /// The summary, when a snapshot was written.
    pub summary: Option<BackupSummary>,
    /// Items that could not be read, once each.
    pub unreadable: Vec<UnreadableItem>,
    /// The last lines of stderr that were not JSON messages.
    pub stderr_tail: String,
}

/// What a finished restic invocation left behind.
#[derive(Debug)]
pub struct Finished {
    /// Exit code; `None` when restic was killed by a signal.
    pub code: Option<i32>,
    /// stdout, at most [`STDOUT_LIMIT`] bytes.
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

    /// The full ID of the snapshot with this ID prefix.
    pub async fn full_id(&self, prefix: &str) -> Result<String> {
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

/// One entry of `restic ls --json`.
#[derive(Deserialize, Clone, Debug, PartialEq)]
pub struct Node {
    /// `file`, `dir`, `symlink`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// Absolute path inside the snapshot.
    pub path: String,
    /// Size of a file.
    #[serde(default)]
    pub size: u64,
    /// Go's `os.FileMode`: permissions in the low 9 bits, setuid, setgid, sticky and the file
    /// type in high bits of Go's own (see [`Node::unix_mode`]).
    #[serde(default)]
    pub mode: u32,
    /// Modification time (RFC 3339).
    #[serde(default)]
    pub mtime: String,
    /// Access time (RFC 3339); empty when restic did not record one.
    #[serde(default)]
    pub atime: String,
    /// Owner.
    #[serde(default)]
    pub uid: u64,
    /// Group.
    #[serde(default)]
    pub gid: u64,
}

/// Go's `os.ModeSetuid`, `os.ModeSetgid` and `os.ModeSticky`.
const GO_SETUID: u32 = 1 << 23;
const GO_SETGID: u32 = 1 << 22;
const GO_STICKY: u32 = 1 << 20;

impl Node {
    /// The permission bits as `chmod` takes them, setuid, setgid and sticky included.
    pub fn unix_mode(&self) -> u32 {
        let mut mode = self.mode & 0o777;
        for (go, unix) in [
            (GO_SETUID, 0o4000),
            (GO_SETGID, 0o2000),
            (GO_STICKY, 0o1000),
        ] {
            if self.mode & go != 0 {
                mode |= unix;
            }
        }
        mode
    }
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

fn parse_snapshots(out: &[u8]) -> Result<Vec<Snapshot>> {
    // restic prints `null` instead of `[]` when nothing matches.
    let parsed: Option<Vec<Snapshot>> = serde_json::from_slice(out)
        .map_err(|e| Error::Restic(format!("unexpected `restic snapshots --json` output: {e}")))?;
    Ok(parsed.unwrap_or_default())
}

/// Reads `restic backup --json` output to the end: stdout for the summary, stderr for the
/// unreadable items and the tail of other messages. Status lines are parsed and dropped.
pub async fn read_backup_output(
    stdout: impl AsyncRead + Unpin,
    stderr: impl AsyncRead + Unpin,
) -> BackupOutput {
    let summary = async {
        let mut summary = None;
        let mut lines = BoundedLines::new(stdout);
        while let Some(line) = lines.next().await {
            if line.starts_with(r#"{"message_type":"summary""#) {
                summary = serde_json::from_str::<BackupSummary>(&line).ok();
            }
        }
        summary
    };
    let errors = async {
        let mut unreadable: Vec<UnreadableItem> = Vec::new();
        let mut tail = Tail::default();
        let mut lines = BoundedLines::new(stderr);
        while let Some(line) = lines.next().await {
            match serde_json::from_str::<ErrorMessage>(&line) {
                Ok(message) if message.message_type == "error" => {
                    let seen = unreadable.iter().any(|u| u.item == message.item);
                    if !seen && unreadable.len() < ERROR_ITEMS_LIMIT {
                        unreadable.push(UnreadableItem {
                            item: message.item,
                            during: message.during,
                            message: message.error.message,
                        });
                    }
                }
                _ => plain_lines(&line).into_iter().for_each(|l| tail.push(l)),
            }
        }
        (unreadable, tail.into_string())
    };
    let (summary, (unreadable, stderr_tail)) = tokio::join!(summary, errors);
    BackupOutput {
        code: None,
        summary,
        unreadable,
        stderr_tail,
    }
}

#[derive(Deserialize)]
struct ErrorMessage {
    message_type: String,
    #[serde(default)]
    during: String,
    #[serde(default)]
    item: String,
    #[serde(default)]
    error: ErrorDetail,
    /// Of an `exit_error` message.
    #[serde(default)]
    message: String,
}

#[derive(Deserialize, Default)]
struct ErrorDetail {
    #[serde(default)]
    message: String,
}

/// A line of restic's stderr as text: with `--json`, restic ≥ 0.17 prints its final error as
/// `{"message_type":"exit_error","code":..,"message":..}`, whose message is what a human reads.
fn plain_lines(line: &str) -> Vec<String> {
    match serde_json::from_str::<ErrorMessage>(line) {
        Ok(json) if json.message_type == "exit_error" => {
            json.message.lines().map(String::from).collect()
        }
        _ => vec![line.to_string()],
    }
}

/// Turns restic's stderr into one message that names the cause first: from restic's exit code
/// where it has one for the cause, else from its words.
pub fn explain(stderr_tail: &str, stdout: &str, code: Option<i32>) -> String {
    let lines: Vec<String> = stderr_tail
        .lines()
        .chain(stdout.lines())
        .flat_map(plain_lines)
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    let fatal: Vec<&str> = lines
        .iter()
        .map(String::as_str)
        .filter(|l| l.starts_with("Fatal:") || l.starts_with("error:"))
        .collect();
    let detail = if fatal.is_empty() {
        let start = lines.len().saturating_sub(5);
        lines[start..].join(" / ")
    } else {
        fatal.join(" / ")
    };
    let lower = detail.to_lowercase();
    let locked = format!(
        "repository is locked by another operation, still after waiting {LOCK_WAIT} for it \
         (a lock left by a finished Job of this namespace is removed by the next run at once, \
         any other once it has not been refreshed for 30 minutes)"
    );
    let cause = if code == Some(EXIT_WRONG_PASSWORD) || lower.contains("wrong password") {
        // Never the password itself: the message ends up in the run's status.
        "wrong repository password: no key of the repository opens with RESTIC_PASSWORD; check \
         the Secret and key that spec.backend.repoPasswordSecretRef names"
    } else if code == Some(EXIT_LOCKED) {
        &locked
    } else if code == Some(EXIT_NO_REPOSITORY) {
        "repository does not exist"
    } else if lower.contains("access key id you provided does not exist")
        || lower.contains("signature we calculated does not match")
        || lower.contains("access denied")
        || lower.contains("invalidaccesskeyid")
    {
        "S3 credentials refused (check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
    } else if lower.contains("connection refused")
        || lower.contains("no such host")
        || lower.contains("i/o timeout")
        || lower.contains("network is unreachable")
    {
        "S3 endpoint unreachable"
    } else if lower.contains("bucket does not exist") {
        "S3 bucket does not exist"
    } else if lower.contains("repository is already locked") {
        &locked
    } else {
        ""
    };
    let code = code.map_or_else(|| "killed".to_string(), |c| format!("exit code {c}"));
    match (cause.is_empty(), detail.is_empty()) {
        (true, true) => format!("restic failed ({code}) without a message"),
        (true, false) => format!("{detail} ({code})"),
        (false, true) => format!("{cause} ({code})"),
        (false, false) => format!("{cause}: {detail} ({code})"),
    }
}

/// Reads all of `reader`, failing beyond [`STDOUT_LIMIT`] bytes.
async fn read_capped(reader: impl AsyncRead + Unpin) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut limited = reader.take(STDOUT_LIMIT as u64 + 1);
    limited.read_to_end(&mut out).await?;
    if out.len() > STDOUT_LIMIT {
        return Err(std::io::Error::other(format!(
            "more than {STDOUT_LIMIT} bytes of output"
        )));
    }
    Ok(out)
}

/// The last [`STDERR_TAIL_LINES`] lines of `reader`, each at most [`LINE_LIMIT`] bytes.
pub async fn stderr_tail(reader: impl AsyncRead + Unpin) -> String {
    let mut tail = Tail::default();
    let mut lines = BoundedLines::new(reader);
    while let Some(line) = lines.next().await {
        tail.push(line);
    }
    tail.into_string()
}

#[derive(Default)]
struct Tail(VecDeque<String>);

impl Tail {
    fn push(&mut self, line: String) {
        if line.trim().is_empty() {
            return;
        }
        if self.0.len() == STDERR_TAIL_LINES {
            self.0.pop_front();
        }
        self.0.push_back(line);
    }

    fn into_string(self) -> String {
        Vec::from(self.0).join("\n")
    }
}

/// Lines of a reader, each cut at [`LINE_LIMIT`] bytes without buffering the rest.
pub struct BoundedLines<R> {
    reader: BufReader<R>,
    done: bool,
}

impl<R: AsyncRead + Unpin> BoundedLines<R> {
    /// Lines of `reader`.
    pub fn new(reader: R) -> Self {
        BoundedLines {
            reader: BufReader::new(reader),
            done: false,
        }
    }

    /// The next line without its newline; `None` at the end or on a read error.
    pub async fn next(&mut self) -> Option<String> {
        if self.done {
            return None;
        }
        let mut line = Vec::new();
        loop {
            let buf = match self.reader.fill_buf().await {
                Ok(buf) => buf,
                Err(_) => {
                    self.done = true;
                    break;
                }
            };
            if buf.is_empty() {
                self.done = true;
                break;
            }
            let (chunk, used, end) = match buf.iter().position(|b| *b == b'\n') {
                Some(i) => (&buf[..i], i + 1, true),
                None => (buf, buf.len(), false),
            };
            let room = LINE_LIMIT.saturating_sub(line.len());
            line.extend_from_slice(&chunk[..chunk.len().min(room)]);
            self.reader.consume(used);
            if end {
                return Some(String::from_utf8_lossy(&line).into_owned());
            }
        }
        (!line.is_empty()).then(|| String::from_utf8_lossy(&line).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_password_is_named_as_the_cause() {
        let message = explain("Fatal: wrong password or no key found\n", "", Some(1));
        assert!(
            message.starts_with("wrong repository password"),
            "{message}"
        );
        assert!(message.contains("exit code 1"), "{message}");
    }

    #[test]
    fn exit_code_12_names_the_secret_ref_and_never_the_password() {
        let stderr = r#"{"message_type":"exit_error","code":12,"message":"Fatal: wrong password or no key found"}"#;
        let message = explain(stderr, "", Some(EXIT_WRONG_PASSWORD));
        assert!(
            message.starts_with("wrong repository password"),
            "{message}"
        );
        assert!(
            message.contains("spec.backend.repoPasswordSecretRef"),
            "{message}"
        );
        assert!(!message.contains("message_type"), "{message}");
        // The code alone is enough, whatever restic printed.
        assert!(explain("", "", Some(12)).contains("repoPasswordSecretRef"));
    }

    #[test]
    fn exit_code_11_says_the_repository_is_locked_and_how_long_it_waited() {
        let stderr = "unable to create lock in backend: repository is already locked \
                      exclusively by PID 7 on prune-x7k2p by root (UID 0, GID 0)\n\
                      lock was created at 2026-01-01 01:00:00 (1m0s ago)";
        let message = explain(stderr, "", Some(EXIT_LOCKED));
        assert!(message.starts_with("repository is locked"), "{message}");
        assert!(message.contains(LOCK_WAIT), "{message}");
        assert!(message.contains("PID 7 on prune-x7k2p"), "{message}");
        assert!(message.contains("exit code 11"), "{message}");
    }

    #[test]
    fn json_exit_error_is_explained_by_its_message() {
        let stderr = r#"{"message_type":"exit_error","code":1,"message":"Fatal: unable to save snapshot: disk full"}"#;
        assert_eq!(
            explain(stderr, "", Some(1)),
            "Fatal: unable to save snapshot: disk full (exit code 1)"
        );
    }

    #[test]
    fn every_command_waits_a_bounded_time_for_locks() {
        let restic = Restic::new("restic", "s3:http://s3/bucket");
        let command = restic.command(["check"]);
        let args: Vec<String> = command
            .as_std()
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "--repo",
                "s3:http://s3/bucket",
                "--retry-lock",
                "2m",
                "check"
            ]
        );
    }

    #[test]
    fn node_mode_maps_gos_setuid_setgid_and_sticky_bits() {
        let node = |mode: u32| Node {
            kind: "file".into(),
            path: "/x".into(),
            size: 0,
            mode,
            mtime: String::new(),
            atime: String::new(),
            uid: 0,
            gid: 0,
        };
        assert_eq!(node(0o755 | GO_SETUID).unix_mode(), 0o4755);
        assert_eq!(node(0o750 | GO_SETGID).unix_mode(), 0o2750);
        assert_eq!(node((1 << 31) | GO_STICKY | 0o777).unix_mode(), 0o1777);
        assert_eq!(node(0o640).unix_mode(), 0o640);
    }

    #[test]
    fn refused_access_key_is_named_as_the_cause() {
        let stderr = "Fatal: unable to open config file: Stat: The Access Key Id you provided \
                      does not exist in our records.\nIs there a repository at the following location?";
        assert!(explain(stderr, "", Some(1)).starts_with("S3 credentials refused"));
    }

    #[test]
    fn unknown_failure_keeps_restics_last_lines() {
        let message = explain("something odd\nanother line", "", Some(2));
        assert_eq!(message, "something odd / another line (exit code 2)");
    }

    #[tokio::test]
    async fn backup_output_yields_summary_and_each_unreadable_item_once() {
        let stdout = concat!(
            r#"{"message_type":"status","percent_done":0.5}"#,
            "\n",
            r#"{"message_type":"summary","files_new":2,"data_added":1751,"total_files_processed":2,"total_bytes_processed":6,"snapshot_id":"50f6aa5f"}"#,
            "\n"
        );
        let stderr = concat!(
            r#"{"message_type":"error","error":{"message":"open /data/pvc1/locked: permission denied"},"during":"scan","item":"/data/pvc1/locked"}"#,
            "\n",
            r#"{"message_type":"error","error":{},"during":"archival","item":"/data/pvc1/locked"}"#,
            "\n",
            r#"{"message_type":"exit_error","code":3,"message":"Warning: at least one source file could not be read"}"#,
            "\n"
        );
        let out = read_backup_output(stdout.as_bytes(), stderr.as_bytes()).await;
        let summary = out.summary.expect("summary line is parsed");
        assert_eq!(summary.snapshot_id, "50f6aa5f");
        assert_eq!(summary.to_summary().bytes_added, Some(1751));
        assert_eq!(out.unreadable.len(), 1);
        assert_eq!(out.unreadable[0].item, "/data/pvc1/locked");
        assert_eq!(
            out.unreadable[0].message,
            "open /data/pvc1/locked: permission denied"
        );
        assert_eq!(
            out.stderr_tail,
            "Warning: at least one source file could not be read"
        );
    }

    #[tokio::test]
    async fn overlong_line_is_cut_not_buffered() {
        let long = "x".repeat(LINE_LIMIT * 3);
        let input = format!("{long}\nshort\n");
        let mut lines = BoundedLines::new(input.as_bytes());
        assert_eq!(lines.next().await.map(|l| l.len()), Some(LINE_LIMIT));
        assert_eq!(lines.next().await.as_deref(), Some("short"));
        assert_eq!(lines.next().await, None);
    }
}
