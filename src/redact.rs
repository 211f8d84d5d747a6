//! Keeps credentials out of text that leaves the process: run reports (the termination
//! message, and from it the run's status and Events), logs and pushed metrics.
//!
//! HTTP clients put the request URL into their errors (`error sending request for url
//! (https://...)`), and a presigned S3 URL carries the access key ID (`X-Amz-Credential`) and
//! a signature valid for an hour in its query. A URL may also carry a user and password. The
//! code that makes requests is written not to format such URLs; this is the net behind it,
//! applied once where text leaves the agent, so a library's wording can never leak one.

use std::io::Write;

/// What stands in for a removed query, user info or signing parameter.
pub const REDACTED: &str = "<redacted>";

/// Query parameters that carry credentials even outside a whole URL (S3 error documents
/// quote the canonical request, which holds the query on a line of its own).
const SECRET_PARAMETERS: [&str; 5] = [
    "x-amz-credential=",
    "x-amz-signature=",
    "x-amz-security-token=",
    "awsaccesskeyid=",
    "signature=",
];

/// `text` with every URL cut to `scheme://host/path` (a query or fragment becomes
/// `?<redacted>`, user info is dropped) and every signing parameter's value replaced.
pub fn redact(text: &str) -> String {
    redact_parameters(&redact_urls(text))
}

fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = find_scheme(rest) {
        out.push_str(&rest[..start]);
        let url_and_more = &rest[start..];
        let end = url_and_more
            .find(|c: char| c.is_whitespace() || "\"'<>`)]}\\,".contains(c))
            .unwrap_or(url_and_more.len());
        out.push_str(&redact_url(&url_and_more[..end]));
        rest = &url_and_more[end..];
    }
    out.push_str(rest);
    out
}

/// Where the next `http://` or `https://` starts, in any case.
fn find_scheme(text: &str) -> Option<usize> {
    let lower = text.to_ascii_lowercase();
    [lower.find("http://"), lower.find("https://")]
        .into_iter()
        .flatten()
        .min()
}

fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (without_query, had_query) = match rest.find(['?', '#']) {
        Some(at) => (&rest[..at], true),
        None => (rest, false),
    };
    let authority_end = without_query.find('/').unwrap_or(without_query.len());
    let (authority, path) = without_query.split_at(authority_end);
    let host = match authority.rsplit_once('@') {
        Some((_, host)) => host,
        None => authority,
    };
    let mut redacted = format!("{scheme}://{host}{path}");
    if had_query {
        redacted.push('?');
        redacted.push_str(REDACTED);
    }
    redacted
}

fn redact_parameters(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let lower = rest.to_ascii_lowercase();
        let found = SECRET_PARAMETERS
            .iter()
            .filter_map(|p| lower.find(p).map(|at| (at, p.len())))
            // `Signature=` also ends `X-Amz-Signature=`: the earliest match wins.
            .min();
        let Some((at, len)) = found else {
            out.push_str(rest);
            return out;
        };
        let value_start = at + len;
        out.push_str(&rest[..value_start]);
        let value = &rest[value_start..];
        let value_end = value
            .find(|c: char| c.is_whitespace() || "&\"'<>`)]}\\,;".contains(c))
            .unwrap_or(value.len());
        if value_end > 0 && !value[..value_end].starts_with(REDACTED) {
            out.push_str(REDACTED);
        } else {
            out.push_str(&value[..value_end]);
        }
        rest = &value[value_end..];
    }
}

/// A log writer that redacts each write. The log formatter writes one event per call, so a
/// URL is never split between two writes.
#[derive(Debug)]
pub struct RedactingWriter<W>(pub W);

impl<W: Write> Write for RedactingWriter<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(data);
        self.0.write_all(redact(&text).as_bytes())?;
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // As reqwest describes a failed presigned request.
    const PRESIGNED: &str = "S3 part 1: error sending request for url \
        (http://127.0.0.1:9000/restores/shop/run-1.tar.gz?partNumber=1&uploadId=abc\
        &X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAEXAMPLE%2F20261201%2Fus-east-1\
        %2Fs3%2Faws4_request&X-Amz-Date=20261201T120000Z&X-Amz-Expires=3600\
        &X-Amz-SignedHeaders=host&X-Amz-Signature=0123abcd): connection refused";

    #[test]
    fn presigned_url_keeps_host_and_path_and_loses_its_query() {
        assert_eq!(
            redact(PRESIGNED),
            "S3 part 1: error sending request for url \
             (http://127.0.0.1:9000/restores/shop/run-1.tar.gz?<redacted>): connection refused"
        );
    }

    #[test]
    fn user_info_and_fragment_are_dropped_and_plain_urls_stay() {
        assert_eq!(
            redact("push to https://user:pw@push.example:9091/metrics#tok failed"),
            "push to https://push.example:9091/metrics?<redacted> failed"
        );
        let plain = "endpoint http://127.0.0.1:9 is unreachable: Connection refused";
        assert_eq!(redact(plain), plain);
        assert_eq!(redact("HTTPS://h/p?a=b"), "HTTPS://h/p?<redacted>");
    }

    #[test]
    fn signing_parameters_outside_a_url_are_replaced() {
        let canonical = "<CanonicalRequest>GET\n/b/config\nX-Amz-Algorithm=AWS4-HMAC-SHA256\
            &amp;X-Amz-Credential=AKIAEXAMPLE%2F2026&amp;X-Amz-Signature=ffee\n</CanonicalRequest>";
        let redacted = redact(canonical);
        assert!(!redacted.contains("AKIAEXAMPLE"), "{redacted}");
        assert!(!redacted.contains("ffee"), "{redacted}");
        assert!(
            redacted.contains("X-Amz-Credential=<redacted>"),
            "{redacted}"
        );
        assert_eq!(redact("Signature=abc, x"), "Signature=<redacted>, x");
    }

    #[test]
    fn text_without_urls_or_parameters_is_unchanged() {
        let text = "backup command in pod db-0, container mysql: exit code 2 (ü)";
        assert_eq!(redact(text), text);
        assert_eq!(redact(""), "");
        assert_eq!(redact("http://"), "http://");
    }

    #[test]
    fn writer_redacts_what_it_writes() {
        let mut writer = RedactingWriter(Vec::new());
        writer.write_all(PRESIGNED.as_bytes()).expect("vec");
        let written = String::from_utf8(writer.0).expect("utf-8");
        assert!(!written.contains("AKIAEXAMPLE") && !written.contains("X-Amz-Signature"));
    }
}
