//! restic's output, typed: what `snapshots`, `ls` and `backup --json` print, read line by line
//! where restic streams it.

use serde::Deserialize;
use tokio::io::AsyncRead;

use super::bounded::{BoundedLines, Tail};
use crate::crd::Summary;
use crate::{Error, Result};

/// Unreadable items kept from one backup; the report is trimmed further to fit.
const ERROR_ITEMS_LIMIT: usize = 1000;

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
    /// What the backup recorded about itself (restic ≥ 0.17); absent in older snapshots.
    #[serde(default)]
    pub summary: Option<SnapshotSummary>,
}

/// The part of a snapshot's recorded `summary` a verification compares with what it
/// restored: the files and bytes the backup read.
#[derive(Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotSummary {
    /// Regular files the backup read.
    #[serde(default)]
    pub total_files_processed: u64,
    /// Bytes of those files.
    #[serde(default)]
    pub total_bytes_processed: u64,
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
pub(super) const GO_SETUID: u32 = 1 << 23;
pub(super) const GO_SETGID: u32 = 1 << 22;
pub(super) const GO_STICKY: u32 = 1 << 20;

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

pub(super) fn parse_snapshots(out: &[u8]) -> Result<Vec<Snapshot>> {
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
pub(super) fn plain_lines(line: &str) -> Vec<String> {
    match serde_json::from_str::<ErrorMessage>(line) {
        Ok(json) if json.message_type == "exit_error" => {
            json.message.lines().map(String::from).collect()
        }
        _ => vec![line.to_string()],
    }
}
