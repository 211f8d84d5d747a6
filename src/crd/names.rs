//! What a valid object name is, and how a too-long value is reported: the format rules that
//! admission and the cluster lookups share, kept beside the types so that neither imports
//! the other.

use super::common::MAX_NAME_LENGTH;
use super::schema::too_long;

/// Why a name is not a valid Kubernetes object name (RFC 1123 subdomain), if it is not.
pub fn dns_subdomain_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("must not be empty".into());
    }
    if let Some(problem) = length_problem(name, MAX_NAME_LENGTH) {
        return Some(problem);
    }
    let valid_chars = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    let ends_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !valid_chars || !ends_ok(name.chars().next()) || !ends_ok(name.chars().last()) {
        return Some(format!(
            "{name:?} is not a valid name: lowercase letters, digits, '-' and '.', starting and ending with a letter or digit"
        ));
    }
    None
}

/// Why a string is over its limit, if it is. Counted in characters, as the API server counts
/// `maxLength`, and never quoted: it is long, and may be anything.
pub fn length_problem(value: &str, limit: usize) -> Option<String> {
    let length = value.chars().count();
    (length > limit).then(|| too_long(limit as u64, length))
}
