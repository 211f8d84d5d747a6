//! Why a snapshot's restore failed, in plain words: which pack files the repository lacks or
//! holds damaged, how many files could not be restored or did not match, and otherwise
//! restic's own error through [`crate::agent::restic::explain`].

use crate::agent::restic::{RestoreOutput, explain};

/// Files named in a failure; the rest are counted.
const FILES_NAMED: usize = 3;

/// One line about a failed `restic restore --verify`.
pub fn restore_failure(output: &RestoreOutput) -> String {
    let mut causes = Vec::new();
    if !output.missing_packs.is_empty() {
        causes.push(packs(&output.missing_packs, "missing from the repository"));
    }
    if !output.damaged_packs.is_empty() {
        causes.push(packs(
            &output.damaged_packs,
            "damaged (its content does not match its ID)",
        ));
    }
    if output.failed_count > 0 {
        let named: Vec<&str> = output
            .failed
            .iter()
            .take(FILES_NAMED)
            .map(|f| f.item.as_str())
            .collect();
        let more = output.failed_count.saturating_sub(named.len());
        let mut files = format!(
            "{} file(s) not restored or not matching the snapshot: {}",
            output.failed_count,
            named.join(", ")
        );
        if more > 0 {
            files.push_str(&format!(" and {more} more"));
        }
        // Without a pack to blame, restic's first error is the cause.
        if causes.is_empty()
            && let Some(first) = output.failed.first()
        {
            files.push_str(&format!(" ({}: {})", first.item, first.message));
        }
        causes.push(files);
    }
    let code = output
        .code
        .map_or_else(|| "killed".to_string(), |c| format!("exit code {c}"));
    if causes.is_empty() {
        return format!(
            "restic restore --verify: {}",
            explain(&output.stderr_tail, "", output.code)
        );
    }
    format!("restic restore --verify: {} ({code})", causes.join("; "))
}

fn packs(ids: &[String], what: &str) -> String {
    match ids {
        [one] => format!("pack {one} is {what}"),
        many => format!("packs {} are {what}", many.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::restic::FailedItem;

    fn item(item: &str, message: &str) -> FailedItem {
        FailedItem {
            item: item.into(),
            message: message.into(),
        }
    }

    #[test]
    fn missing_pack_is_named_first_with_the_files_it_held() {
        let output = RestoreOutput {
            code: Some(1),
            failed: vec![
                item("/a", "x"),
                item("/b", "x"),
                item("/c", "x"),
                item("/d", "x"),
            ],
            failed_count: 5,
            missing_packs: vec!["49e9ab92b6".into()],
            ..RestoreOutput::default()
        };
        assert_eq!(
            restore_failure(&output),
            "restic restore --verify: pack 49e9ab92b6 is missing from the repository; 5 file(s) \
             not restored or not matching the snapshot: /a, /b, /c and 2 more (exit code 1)"
        );
    }

    #[test]
    fn file_error_without_a_pack_quotes_restics_first_error() {
        let output = RestoreOutput {
            code: Some(1),
            failed: vec![item("/a", "Invalid file size for /a: expected 5, got 4")],
            failed_count: 1,
            ..RestoreOutput::default()
        };
        assert!(
            restore_failure(&output).ends_with(
                "1 file(s) not restored or not matching the snapshot: /a \
                 (/a: Invalid file size for /a: expected 5, got 4) (exit code 1)"
            ),
            "{}",
            restore_failure(&output)
        );
    }

    #[test]
    fn failure_without_files_is_explained_from_stderr() {
        let output = RestoreOutput {
            code: Some(12),
            stderr_tail: "Fatal: wrong password or no key found".into(),
            ..RestoreOutput::default()
        };
        assert!(
            restore_failure(&output)
                .starts_with("restic restore --verify: wrong repository password")
        );
    }
}
