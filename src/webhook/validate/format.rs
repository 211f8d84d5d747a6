//! Format checks: rules about one field's value alone, with no context: names, keys, URLs,
//! buckets, snapshot IDs and paths, lengths and cron expressions. Each returns the sentence
//! after the field path, or `None` when the value is fine.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{LazyLock, Mutex, MutexGuard, PoisonError};

use super::memo;
use crate::crd::common::{MAX_BUCKET_LENGTH, MAX_NAME_LENGTH};
// Name and length rules live with the types, because cluster lookups apply them too.
pub use crate::crd::names::{dns_subdomain_problem, length_problem};

/// Why a key is not a valid Secret data key, if it is not.
pub fn secret_key_problem(key: &str) -> Option<String> {
    if key.is_empty() {
        return Some("must not be empty".into());
    }
    if let Some(problem) = length_problem(key, MAX_NAME_LENGTH) {
        return Some(problem);
    }
    let valid = key
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && key != "."
        && key != "..";
    (!valid).then(|| {
        format!("{key:?} is not a valid Secret key: up to 253 letters, digits, '-', '_' and '.'")
    })
}

/// Why an S3 endpoint is not an absolute http(s) URL with a host, if it is not.
pub fn endpoint_problem(endpoint: &str) -> Option<String> {
    if endpoint.is_empty() {
        return Some(
            "must not be empty; use an absolute URL such as https://objects.example.com".into(),
        );
    }
    // Before anything that quotes the endpoint: its user info is a password.
    if has_user_info(endpoint) {
        return Some(
            "must not hold user info: credentials belong in Secrets, referenced by accessKeyIDSecretRef and secretAccessKeySecretRef"
                .into(),
        );
    }
    let explain = |why: &str| {
        Some(format!(
            "{endpoint:?} is not an absolute http(s) URL with a host: {why}"
        ))
    };
    if endpoint.chars().any(char::is_whitespace) {
        return explain("it contains whitespace");
    }
    let Ok(uri) = endpoint.parse::<axum::http::Uri>() else {
        return explain("it does not parse as a URL");
    };
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => return explain(&format!("scheme {other:?} is not http or https")),
        None => return explain("the scheme (https://) is missing"),
    }
    if uri.host().is_none_or(str::is_empty) {
        return explain("the host is missing");
    }
    if uri.query().is_some() {
        return explain("it has a query string");
    }
    None
}

/// Whether a URL carries `user[:password]@` before its host, with or without a scheme.
fn has_user_info(url: &str) -> bool {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = after_scheme
        .split(['/', '?', '#'])
        .next()
        .unwrap_or_default();
    authority.contains('@')
}

/// Why a Restore's `path` cannot be restored, if it cannot. restic names a snapshot's contents
/// by absolute paths without `.`, `..` or empty segments, so any such segment either finds
/// nothing or climbs out of the part the user meant; trailing slashes are harmless, the agent
/// drops them.
pub fn snapshot_path_problem(path: &str) -> Option<String> {
    if !path.starts_with('/') {
        return Some(format!(
            "{path:?} must be an absolute path inside the snapshot, such as /data/mypvc"
        ));
    }
    let inner = path.trim_end_matches('/');
    let segments: Vec<&str> = inner.split('/').skip(1).collect();
    if segments.contains(&"..") {
        return Some(format!(
            "{path:?} must not have \"..\" segments; name the path as the snapshot lists it, such as /data/mypvc"
        ));
    }
    if segments.iter().any(|s| s.is_empty() || *s == ".") && !inner.is_empty() {
        let clean: Vec<&str> = segments
            .into_iter()
            .filter(|s| !s.is_empty() && *s != ".")
            .collect();
        return Some(format!(
            "{path:?} is not clean (empty or \".\" segments); write \"/{}\"",
            clean.join("/")
        ));
    }
    None
}

/// Why S3 would refuse a bucket name, if it would.
pub fn bucket_problem(bucket: &str) -> Option<String> {
    if let Some(problem) = length_problem(bucket, MAX_BUCKET_LENGTH) {
        return Some(problem);
    }
    let why = if bucket.len() < 3 {
        format!("must be 3 to 63 characters long, found {}", bucket.len())
    } else if let Some(c) = bucket
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '.' || *c == '-'))
    {
        format!("may hold only lowercase letters, digits, '.' and '-', found {c:?}")
    } else if !bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
        || !bucket.ends_with(|c: char| c.is_ascii_alphanumeric())
    {
        "must start and end with a letter or digit".into()
    } else if bucket.contains("..") {
        "must not contain \"..\"".into()
    } else if bucket.parse::<Ipv4Addr>().is_ok() || bucket.parse::<IpAddr>().is_ok() {
        "must not be an IP address".into()
    } else {
        return None;
    };
    Some(format!("bucket name {bucket:?} {why}"))
}

/// Why a snapshot is not a snapshot ID or ID prefix, if it is not.
pub fn snapshot_id_problem(snapshot: &str) -> Option<String> {
    (snapshot.is_empty() || !snapshot.chars().all(|c| c.is_ascii_hexdigit()))
        .then(|| format!("{snapshot:?} is not a snapshot ID or ID prefix (hexadecimal digits)"))
}

/// Why a cron expression is invalid, if it is. Verdicts are remembered in a memo bounded by
/// bytes (see [`memo`]); the bytes it holds are [`cron_memo_bytes`].
pub fn cron_problem(expression: &str) -> Option<String> {
    if let Some(known) = lock_memo().get(expression) {
        return known.clone();
    }
    let problem = crate::cron::parse(expression).err().map(|e| e.to_string());
    lock_memo().insert(expression, problem.clone());
    problem
}

/// The bytes the process-wide cron memo holds (at most [`memo::BUDGET_BYTES`]).
pub fn cron_memo_bytes() -> usize {
    lock_memo().bytes()
}

fn lock_memo() -> MutexGuard<'static, memo::CronMemo> {
    static MEMO: LazyLock<Mutex<memo::CronMemo>> =
        LazyLock::new(|| Mutex::new(memo::CronMemo::new(memo::BUDGET_BYTES)));
    // A poisoned memo only means another review panicked mid-insert; its map is still usable.
    MEMO.lock().unwrap_or_else(PoisonError::into_inner)
}
