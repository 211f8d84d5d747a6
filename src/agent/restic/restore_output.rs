//! What `restic restore --json --verify` prints, read line by line: the files it could not
//! restore or whose restored content did not match the snapshot, and the pack files it found
//! missing or damaged, in bounded memory however many files are affected.

use serde::Deserialize;
use tokio::io::AsyncRead;

use super::bounded::{BoundedLines, Tail};
use super::output::plain_lines;

/// Affected files kept by name; the rest are only counted.
const ITEMS_LIMIT: usize = 100;
/// Pack files kept by name.
const PACKS_LIMIT: usize = 20;

/// The `summary` message of `restic restore --json`.
#[derive(Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct RestoreSummary {
    /// Files and directories in the restored part of the snapshot.
    #[serde(default)]
    pub total_files: u64,
    /// Files and directories restored.
    #[serde(default)]
    pub files_restored: u64,
    /// Bytes in the restored part of the snapshot.
    #[serde(default)]
    pub total_bytes: u64,
    /// Bytes restored.
    #[serde(default)]
    pub bytes_restored: u64,
}

/// A file restic could not restore or verify, with its first error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailedItem {
    /// Path as restic names it, relative to what was restored (`/sub/file`).
    pub item: String,
    /// restic's error.
    pub message: String,
}

/// What one `restic restore --json --verify` reported.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestoreOutput {
    /// restic's exit code; `None` when it was killed.
    pub code: Option<i32>,
    /// The summary, when restic got as far.
    pub summary: Option<RestoreSummary>,
    /// The first affected files, once each.
    pub failed: Vec<FailedItem>,
    /// How many distinct files were affected, beyond those kept too.
    pub failed_count: usize,
    /// Short IDs of pack files the repository does not have (deleted from the bucket).
    pub missing_packs: Vec<String>,
    /// Short IDs of pack files whose content did not decrypt or hash to what the index says.
    pub damaged_packs: Vec<String>,
    /// The last lines of stderr, JSON error messages as their text.
    pub stderr_tail: String,
}

impl RestoreOutput {
    /// Notes one line of stderr.
    pub(super) fn observe_stderr(&mut self, line: &str, tail: &mut Tail) {
        let text = match serde_json::from_str::<ErrorLine>(line) {
            Ok(message) if message.message_type == "error" => {
                let text = message.error.message;
                self.note_item(&message.item, &text);
                text
            }
            _ => {
                let lines = plain_lines(line);
                lines.iter().for_each(|l| tail.push(l.clone()));
                lines.join(" ")
            }
        };
        self.note_pack(&text);
    }

    /// Notes one line of stdout (status lines are dropped, the summary kept).
    pub(super) fn observe_stdout(&mut self, line: &str) {
        if line.starts_with(r#"{"message_type":"summary""#) {
            self.summary = serde_json::from_str(line).ok();
        }
    }

    fn note_item(&mut self, item: &str, message: &str) {
        // restic reports a file again when it then cannot set its owner or times: the first
        // error is the cause, and the file counts once.
        if item.is_empty() || self.failed.iter().any(|f| f.item == item) {
            return;
        }
        if self.failed.len() < ITEMS_LIMIT {
            self.failed.push(FailedItem {
                item: item.to_string(),
                message: message.to_string(),
            });
        }
        self.failed_count += 1;
    }

    fn note_pack(&mut self, text: &str) {
        let Some(pack) = pack_named_in(text) else {
            return;
        };
        let lower = text.to_lowercase();
        let list = if ["does not exist", "no such file", "not found", "nosuchkey"]
            .iter()
            .any(|m| lower.contains(m))
        {
            &mut self.missing_packs
        } else if [
            "ciphertext verification failed",
            "hash mismatch",
            "invalid data returned",
            "wrong length",
        ]
        .iter()
        .any(|m| lower.contains(m))
        {
            &mut self.damaged_packs
        } else {
            return;
        };
        if !list.iter().any(|p| p == pack) && list.len() < PACKS_LIMIT {
            list.push(pack.to_string());
        }
    }
}

/// The short ID of the pack file restic names as `<data/5f3e0a1b2c>`.
pub fn pack_named_in(text: &str) -> Option<&str> {
    let start = text.find("<data/")? + "<data/".len();
    let rest = &text[start..];
    let id = &rest[..rest.find('>')?];
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

/// Reads `restic restore --json` output to the end.
pub async fn read_restore_output(
    stdout: impl AsyncRead + Unpin,
    stderr: impl AsyncRead + Unpin,
) -> RestoreOutput {
    let summary = async {
        let mut output = RestoreOutput::default();
        let mut lines = BoundedLines::new(stdout);
        while let Some(line) = lines.next().await {
            output.observe_stdout(&line);
        }
        output.summary
    };
    let errors = async {
        let mut output = RestoreOutput::default();
        let mut tail = Tail::default();
        let mut lines = BoundedLines::new(stderr);
        while let Some(line) = lines.next().await {
            output.observe_stderr(&line, &mut tail);
        }
        output.stderr_tail = tail.into_string();
        output
    };
    let (summary, mut output) = tokio::join!(summary, errors);
    output.summary = summary;
    output
}

#[derive(Deserialize)]
struct ErrorLine {
    message_type: String,
    #[serde(default)]
    item: String,
    #[serde(default)]
    error: ErrorText,
}

#[derive(Deserialize, Default)]
struct ErrorText {
    #[serde(default)]
    message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What restic 0.18.1 printed for a restore from which one pack file had been deleted.
    const MISSING_PACK: &str = r#"Load(<data/49e9ab92b6>, 3000327, 0) failed: The specified key does not exist.
{"message_type":"error","error":{"message":"ReadFull(\u003cdata/49e9ab92b6\u003e): The specified key does not exist."},"during":"restore","item":"/sub/c"}
{"message_type":"error","error":{"message":"ReadFull(\u003cdata/49e9ab92b6\u003e): The specified key does not exist."},"during":"restore","item":"/a"}
{"message_type":"error","error":{"message":"ReadFull(\u003cdata/49e9ab92b6\u003e): The specified key does not exist."},"during":"restore","item":"/b"}
{"message_type":"error","error":{"message":"ReadFull(\u003cdata/49e9ab92b6\u003e): The specified key does not exist."},"during":"restore","item":"/a"}
{"message_type":"error","error":{"message":"lchown /verify/data/files/a: no such file or directory"},"during":"restore","item":"/a"}
{"message_type":"exit_error","code":1,"message":"Fatal: There were 8 errors\n"}"#;

    #[tokio::test]
    async fn restore_with_a_deleted_pack_names_the_pack_and_each_file_once() {
        let stdout =
            br#"{"message_type":"status","percent_done":0,"total_files":4,"total_bytes":3000005}
{"message_type":"summary","total_files":4,"files_restored":1,"total_bytes":3000005}
"#;
        let output = read_restore_output(&stdout[..], MISSING_PACK.as_bytes()).await;
        assert_eq!(output.missing_packs, ["49e9ab92b6"]);
        assert!(output.damaged_packs.is_empty());
        let items: Vec<_> = output.failed.iter().map(|f| f.item.as_str()).collect();
        assert_eq!(items, ["/sub/c", "/a", "/b"]);
        assert_eq!(output.failed_count, 3);
        assert!(output.failed[1].message.contains("key does not exist"));
        assert_eq!(
            output.summary.map(|s| s.files_restored),
            Some(1),
            "the summary is read"
        );
        assert!(output.stderr_tail.contains("Fatal: There were 8 errors"));
    }

    #[test]
    fn lchown_of_a_missing_file_names_no_pack() {
        assert_eq!(
            pack_named_in("lchown /verify/data/files/a: no such file or directory"),
            None
        );
        assert_eq!(pack_named_in("ReadFull(<data/0a1b>): x"), Some("0a1b"));
        assert_eq!(pack_named_in("<data/zz>"), None);
    }

    #[test]
    fn damaged_pack_is_told_apart_from_a_missing_one() {
        let mut output = RestoreOutput::default();
        let mut tail = Tail::default();
        output.observe_stderr(
            r#"{"message_type":"error","error":{"message":"ReadFull(<data/5f3e0a1b2c>): ciphertext verification failed"},"item":"/x"}"#,
            &mut tail,
        );
        assert_eq!(output.damaged_packs, ["5f3e0a1b2c"]);
        assert!(output.missing_packs.is_empty());
    }
}
