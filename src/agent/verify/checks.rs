//! The checks on what a restore left in the scratch directory: the restored tree counted
//! against the backup's recorded summary, and a backup command's stream measured.

use std::path::Path;

use crate::agent::restic::SnapshotSummary;

/// Regular files below `root` and the sum of their sizes, as restic's backup summary counts
/// them (directories, symlinks and other special files are not files there). Symlinks are
/// not followed. A missing `root` holds nothing.
pub fn count_files(root: &Path) -> std::io::Result<(u64, u64)> {
    let (mut files, mut bytes) = (0u64, 0u64);
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() {
                files += 1;
                bytes += entry.metadata()?.len();
            }
        }
    }
    Ok((files, bytes))
}

/// Whether `files` and `bytes` restored are what the backup recorded; `Err` says how not.
pub fn compare_summary(files: u64, bytes: u64, recorded: &SnapshotSummary) -> Result<(), String> {
    if files == recorded.total_files_processed && bytes == recorded.total_bytes_processed {
        return Ok(());
    }
    Err(format!(
        "restored {files} files ({bytes} bytes), but the backup recorded {} files ({} bytes)",
        recorded.total_files_processed, recorded.total_bytes_processed
    ))
}

/// Whether a backup command's stream came back whole: one regular file at `path`, as long
/// as the backup recorded (when it recorded a summary). Returns its length.
pub fn check_stream(path: &Path, recorded: Option<&SnapshotSummary>) -> Result<u64, String> {
    let metadata = std::fs::symlink_metadata(path)
        .map_err(|e| format!("the restored stream is not there: {e}"))?;
    if !metadata.is_file() {
        return Err("the restored stream is not a regular file".into());
    }
    let length = metadata.len();
    match recorded {
        Some(summary) if summary.total_files_processed != 1 => Err(format!(
            "the backup recorded {} files for a backup command's stream, not one",
            summary.total_files_processed
        )),
        Some(summary) if summary.total_bytes_processed != length => Err(format!(
            "the restored stream has {length} bytes, but the backup recorded {}",
            summary.total_bytes_processed
        )),
        _ => Ok(length),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorded(files: u64, bytes: u64) -> SnapshotSummary {
        SnapshotSummary {
            total_files_processed: files,
            total_bytes_processed: bytes,
        }
    }

    #[test]
    fn tree_counts_regular_files_and_their_bytes_only() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("a/b/empty")).expect("mkdir");
        std::fs::write(dir.path().join("a/one"), "12345").expect("write");
        std::fs::write(dir.path().join("a/b/two"), "").expect("write");
        std::os::unix::fs::symlink("one", dir.path().join("a/link")).expect("symlink");
        assert_eq!(count_files(dir.path()).expect("walk"), (2, 5));
        assert_eq!(
            count_files(&dir.path().join("missing")).expect("walk"),
            (0, 0)
        );
    }

    #[test]
    fn summary_that_differs_in_files_or_bytes_fails_with_both_figures() {
        assert_eq!(compare_summary(3, 10, &recorded(3, 10)), Ok(()));
        assert_eq!(
            compare_summary(2, 10, &recorded(3, 10)),
            Err("restored 2 files (10 bytes), but the backup recorded 3 files (10 bytes)".into())
        );
        assert!(compare_summary(3, 9, &recorded(3, 10)).is_err());
    }

    #[test]
    fn stream_shorter_than_recorded_or_of_several_files_fails() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("ns-pod-c");
        std::fs::write(&file, "dump").expect("write");
        assert_eq!(check_stream(&file, Some(&recorded(1, 4))), Ok(4));
        assert_eq!(check_stream(&file, None), Ok(4));
        assert_eq!(
            check_stream(&file, Some(&recorded(1, 5))),
            Err("the restored stream has 4 bytes, but the backup recorded 5".into())
        );
        assert!(check_stream(&file, Some(&recorded(2, 4))).is_err());
        assert!(check_stream(&dir.path().join("gone"), None).is_err());
        assert!(check_stream(dir.path(), None).is_err());
    }
}
