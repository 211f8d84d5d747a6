//! restic's failures in words a user can act on: the cause first, from restic's exit code
//! and the tail of its stderr.

use super::output::plain_lines;
use super::{EXIT_LOCKED, EXIT_NO_REPOSITORY, EXIT_WRONG_PASSWORD, LOCK_WAIT};

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
