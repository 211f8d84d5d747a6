//! Streaming an object of unknown size into S3 with a multipart upload, in constant memory:
//! a blocking producer fills parts of [`FIRST_PART_SIZE`] bytes, hands each over a channel of
//! one slot, and the uploader sends them one by one. At most three parts exist at a time.

use std::time::Duration;

use rusty_s3::actions::{
    AbortMultipartUpload, CompleteMultipartUpload, CreateBucket, CreateMultipartUpload, UploadPart,
};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use tokio::sync::mpsc;

use super::chain;
use crate::{Error, Result};

/// Size of the first parts (S3's minimum for all but the last part is 5 MiB).
pub const FIRST_PART_SIZE: usize = 8 << 20;
/// Part sizes double after this many parts, so S3's limit of 10 000 parts is never reached.
const PARTS_PER_SIZE: usize = 1000;
/// Presigned URLs are used at once; this only has to outlast one slow part.
const SIGNATURE_LIFETIME: Duration = Duration::from_secs(3600);

/// Where a restore archive goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination {
    /// Absolute http(s) URL of the S3 server.
    pub endpoint: String,
    /// Bucket that receives the archive; created when it does not exist.
    pub bucket: String,
    /// Access key ID.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
}

impl Destination {
    fn bucket(&self) -> Result<Bucket> {
        let endpoint = self.endpoint.parse().map_err(|e| {
            Error::InvalidSpec(format!("S3 endpoint {:?} is not a URL: {e}", self.endpoint))
        })?;
        // Path style works with every S3 implementation; the region is ignored by most
        // servers other than AWS, which accepts us-east-1 signatures for path-style requests.
        Bucket::new(endpoint, UrlStyle::Path, self.bucket.clone(), "us-east-1")
            .map_err(|e| Error::InvalidSpec(format!("S3 bucket {}: {e}", self.bucket)))
    }

    fn credentials(&self) -> Result<Credentials> {
        if self.access_key_id.is_empty() || self.secret_access_key.is_empty() {
            return Err(Error::InvalidSpec(
                "no credentials for the restore bucket: BAAS_RESTORE_S3_ACCESS_KEY_ID and \
                 BAAS_RESTORE_S3_SECRET_ACCESS_KEY must be set"
                    .into(),
            ));
        }
        Ok(Credentials::new(
            self.access_key_id.clone(),
            self.secret_access_key.clone(),
        ))
    }
}

/// A read-only look at the files of a restic repository on S3, whose layout (`config`,
/// `locks/<id>`, `snapshots/<id>`) is part of restic's documented repository format.
///
/// Every restic invocation spends about half a second deriving the key from the password, so
/// the bookkeeping around a backup (does the repository exist, are there locks, what is the
/// new snapshot's full ID) is answered with plain S3 requests instead. Callers fall back to
/// restic whenever a request fails.
#[derive(Clone, Debug)]
pub struct RepositoryFiles {
    http: reqwest::Client,
    bucket: Bucket,
    credentials: Credentials,
    prefix: String,
}

impl RepositoryFiles {
    /// For an `s3:` repository with credentials in the environment; `None` otherwise.
    pub fn for_repository(http: &reqwest::Client, repository: &str) -> Option<RepositoryFiles> {
        let (endpoint, bucket_name, prefix) = split_repository(repository)?;
        let key = std::env::var("AWS_ACCESS_KEY_ID").ok()?;
        let secret = std::env::var("AWS_SECRET_ACCESS_KEY").ok()?;
        let credentials = match std::env::var("AWS_SESSION_TOKEN") {
            Ok(token) if !token.is_empty() => Credentials::new_with_token(key, secret, token),
            _ => Credentials::new(key, secret),
        };
        let region = std::env::var("AWS_DEFAULT_REGION").unwrap_or_else(|_| "us-east-1".into());
        let bucket =
            Bucket::new(endpoint.parse().ok()?, UrlStyle::Path, bucket_name, region).ok()?;
        Some(RepositoryFiles {
            http: http.clone(),
            bucket,
            credentials,
            prefix,
        })
    }

    /// Whether the repository's `config` file exists. A GET, not a HEAD: the file is tiny,
    /// and only a GET's answer carries S3's error code, which tells refused credentials
    /// (that restic would retry for 15 minutes) from other refusals.
    pub async fn config(&self) -> ConfigAnswer {
        let key = format!("{}config", self.prefix);
        let url = self
            .bucket
            .get_object(Some(&self.credentials), &key)
            .sign(SIGNATURE_LIFETIME);
        let response = match self
            .http
            .get(url)
            .timeout(Duration::from_secs(30))
            .send()
            .await
        {
            Ok(response) => response,
            Err(e) => return ConfigAnswer::Unknown(format!("S3 GET {key}: {}", chain(&e))),
        };
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        config_answer(status, &body)
    }

    /// Names of the files in `dir` (`locks`, `snapshots`) that start with `start`, at most
    /// 1000 (more are never needed: a handful of locks, one snapshot per prefix).
    pub async fn list(&self, dir: &str, start: &str) -> Result<Vec<String>> {
        let prefix = format!("{}{dir}/", self.prefix);
        let mut action = self.bucket.list_objects_v2(Some(&self.credentials));
        action.with_prefix(format!("{prefix}{start}"));
        let url = action.sign(SIGNATURE_LIFETIME);
        let body = send(
            self.http.get(url).timeout(Duration::from_secs(30)),
            "listing the repository",
        )
        .await?;
        let mut names = Vec::new();
        let mut rest = body.as_str();
        while let Some(at) = rest.find("<Key>") {
            rest = &rest[at + "<Key>".len()..];
            let Some(end) = rest.find("</Key>") else {
                break;
            };
            if let Some(name) = rest[..end].strip_prefix(&prefix) {
                names.push(name.to_string());
            }
            rest = &rest[end..];
        }
        Ok(names)
    }
}

impl RepositoryFiles {
    /// Deletes the file `name` in `dir`; S3 answers a missing file with success too.
    pub async fn delete(&self, dir: &str, name: &str) -> Result<()> {
        let key = format!("{}{dir}/{name}", self.prefix);
        let url = self
            .bucket
            .delete_object(Some(&self.credentials), &key)
            .sign(SIGNATURE_LIFETIME);
        send(
            self.http.delete(url).timeout(Duration::from_secs(30)),
            &format!("deleting {key}"),
        )
        .await
        .map(drop)
    }
}

/// What S3 says about a repository's `config` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigAnswer {
    /// It exists: so does the repository.
    Present,
    /// No such file or no such bucket: there is no repository (yet).
    Absent,
    /// S3 does not know the access key or the signature does not match: the credentials are
    /// wrong, and restic would only retry. Carries S3's code and message.
    CredentialsRefused(String),
    /// Anything else; restic has to answer.
    Unknown(String),
}

/// Reads an answer to `GET config`.
fn config_answer(status: u16, body: &str) -> ConfigAnswer {
    let code = xml_field(body, "Code").unwrap_or_default();
    match (status, code.as_str()) {
        (200, _) => ConfigAnswer::Present,
        (404, _) => ConfigAnswer::Absent,
        (_, "InvalidAccessKeyId" | "SignatureDoesNotMatch") => {
            ConfigAnswer::CredentialsRefused(shorten(body))
        }
        _ => ConfigAnswer::Unknown(format!("S3 GET config: status {status}: {}", shorten(body))),
    }
}

/// Endpoint, bucket and key prefix (empty or ending in `/`) of an `s3:` repository.
pub fn split_repository(repository: &str) -> Option<(String, String, String)> {
    let endpoint = super::s3_endpoint(repository)?;
    let rest = repository.strip_prefix("s3:")?;
    let path = rest.split_once("://").map_or(rest, |(_, r)| r);
    let mut segments = path.splitn(3, '/').skip(1);
    let bucket = segments.next().filter(|b| !b.is_empty())?.to_string();
    let prefix = segments
        .next()
        .map(|p| p.trim_matches('/'))
        .filter(|p| !p.is_empty())
        .map(|p| format!("{p}/"))
        .unwrap_or_default();
    Some((endpoint, bucket, prefix))
}

/// What the producer hands the uploader. The upload is completed only on `End`: a producer
/// that fails and drops its sender leaves an aborted upload, never a truncated object.
#[derive(Debug, PartialEq, Eq)]
pub enum Chunk {
    /// The next part.
    Part(Vec<u8>),
    /// The object is complete.
    End,
}

/// The uploader's error when the producer stopped without `End`.
pub const INCOMPLETE: &str = "the archive ended before it was complete";

/// The producer side: a `std::io::Write` that cuts its input into parts and hands them to the
/// uploader, blocking while the uploader is busy (backpressure instead of buffering).
pub struct PartWriter {
    buf: Vec<u8>,
    part_size: usize,
    parts: usize,
    tx: mpsc::Sender<Chunk>,
}

impl PartWriter {
    /// A writer feeding `tx`.
    pub fn new(tx: mpsc::Sender<Chunk>) -> Self {
        PartWriter {
            buf: Vec::with_capacity(FIRST_PART_SIZE),
            part_size: FIRST_PART_SIZE,
            parts: 0,
            tx,
        }
    }

    fn send(&mut self) -> std::io::Result<()> {
        let part = std::mem::replace(&mut self.buf, Vec::with_capacity(self.part_size));
        self.tx
            .blocking_send(Chunk::Part(part))
            .map_err(|_| std::io::Error::other("the upload stopped"))?;
        self.parts += 1;
        if self.parts.is_multiple_of(PARTS_PER_SIZE) {
            self.part_size *= 2;
        }
        Ok(())
    }

    /// Sends the last part and marks the object complete.
    pub fn finish(mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() || self.parts == 0 {
            self.send()?;
        }
        self.tx
            .blocking_send(Chunk::End)
            .map_err(|_| std::io::Error::other("the upload stopped"))
    }
}

impl std::io::Write for PartWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let room = self.part_size - self.buf.len();
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == self.part_size {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Uploads the parts arriving on `parts` as object `key`; returns the object's size. On any
/// error the multipart upload is aborted so no hidden parts are left to pay for.
pub async fn upload(
    http: &reqwest::Client,
    destination: &Destination,
    key: &str,
    mut parts: mpsc::Receiver<Chunk>,
) -> Result<u64> {
    let bucket = destination.bucket()?;
    let credentials = destination.credentials()?;
    let start = || {
        let url =
            CreateMultipartUpload::new(&bucket, Some(&credentials), key).sign(SIGNATURE_LIFETIME);
        send(http.post(url), "starting the upload")
    };
    let body = match start().await {
        // A download bucket is the restore's target, like a directory: create it as restic
        // creates the repository's bucket, so the seed's Restore works on a fresh server.
        Err(Error::Http(message)) if message.contains("NoSuchBucket") => {
            tracing::info!(bucket = %destination.bucket, "creating the restore bucket");
            let url = CreateBucket::new(&bucket, &credentials).sign(SIGNATURE_LIFETIME);
            send(http.put(url), "creating the bucket").await?;
            start().await?
        }
        other => other?,
    };
    // Read the one field needed instead of the whole document: S3 implementations differ in
    // the root element's name (rclone answers `InitiateMultipartUpload`).
    let upload_id = xml_field(&body, "UploadId")
        .map(|id| {
            id.replace("&quot;", "\"")
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&amp;", "&")
        })
        .ok_or_else(|| {
            Error::Http(format!(
                "S3 gave no UploadId when starting the upload: {}",
                shorten(&body)
            ))
        })?;

    let uploaded = async {
        let mut etags = Vec::new();
        let mut size = 0u64;
        loop {
            let part = match parts.recv().await {
                Some(Chunk::Part(part)) => part,
                Some(Chunk::End) => break,
                None => return Err(Error::Http(INCOMPLETE.into())),
            };
            let number = u16::try_from(etags.len() + 1)
                .map_err(|_| Error::Http("more than 65535 parts".into()))?;
            size += part.len() as u64;
            let url = UploadPart::new(&bucket, Some(&credentials), key, number, &upload_id)
                .sign(SIGNATURE_LIFETIME);
            let response = http
                .put(url)
                .body(part)
                .send()
                .await
                .map_err(|e| Error::Http(format!("S3 part {number}: {}", chain(&e))))?;
            let response = check_status(response, &format!("part {number}")).await?;
            let etag = response
                .headers()
                .get("etag")
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| Error::Http(format!("S3 gave no ETag for part {number}")))?
                .to_string();
            etags.push(etag);
        }
        let complete = CompleteMultipartUpload::new(
            &bucket,
            Some(&credentials),
            key,
            &upload_id,
            etags.iter().map(String::as_str),
        );
        let url = complete.sign(SIGNATURE_LIFETIME);
        let body = complete.body();
        let answer = send(http.post(url).body(body), "completing the upload").await?;
        // S3 may answer 200 with an error document.
        if answer.contains("<Error>") {
            return Err(Error::Http(format!(
                "S3 refused to complete the upload: {}",
                shorten(&answer)
            )));
        }
        Ok(size)
    }
    .await;
    if uploaded.is_err() {
        parts.close();
        let url = AbortMultipartUpload::new(&bucket, Some(&credentials), key, &upload_id)
            .sign(SIGNATURE_LIFETIME);
        if let Err(e) = http.delete(url).send().await {
            tracing::warn!(key, "aborting the multipart upload failed: {e}");
        }
    }
    uploaded
}

async fn send(request: reqwest::RequestBuilder, what: &str) -> Result<String> {
    let response = request
        .send()
        .await
        .map_err(|e| Error::Http(format!("S3 {what}: {}", chain(&e))))?;
    let response = check_status(response, what).await?;
    response
        .text()
        .await
        .map_err(|e| Error::Http(format!("S3 {what}: {}", chain(&e))))
}

async fn check_status(response: reqwest::Response, what: &str) -> Result<reqwest::Response> {
    if response.status().is_success() {
        return Ok(response);
    }
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    Err(Error::Http(format!(
        "S3 {what}: {status}: {}",
        shorten(&body)
    )))
}

/// The text of the first `<tag>` element of an XML document.
fn xml_field(body: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = body.find(&open)? + open.len();
    let end = body[start..].find("</")? + start;
    Some(body[start..end].to_string())
}

/// The S3 error code and message from an XML error document, or its first characters.
fn shorten(body: &str) -> String {
    match (xml_field(body, "Code"), xml_field(body, "Message")) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code,
        _ => body.chars().take(300).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn config_answer_tells_absent_from_refused_credentials() {
        assert_eq!(config_answer(200, "x"), ConfigAnswer::Present);
        let no_bucket = "<Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist</Message></Error>";
        assert_eq!(config_answer(404, no_bucket), ConfigAnswer::Absent);
        let refused = "<Error><Code>InvalidAccessKeyId</Code><Message>The Access Key Id you provided does not exist in our records.</Message></Error>";
        assert_eq!(
            config_answer(403, refused),
            ConfigAnswer::CredentialsRefused(
                "InvalidAccessKeyId: The Access Key Id you provided does not exist in our records."
                    .into()
            )
        );
        let denied = "<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>";
        assert!(matches!(
            config_answer(403, denied),
            ConfigAnswer::Unknown(_)
        ));
    }

    #[test]
    fn s3_error_document_is_shortened_to_code_and_message() {
        let body = "<?xml version=\"1.0\"?><Error><Code>NoSuchBucket</Code>\
                    <Message>The specified bucket does not exist</Message></Error>";
        assert_eq!(
            shorten(body),
            "NoSuchBucket: The specified bucket does not exist"
        );
    }

    #[test]
    fn repository_is_split_into_endpoint_bucket_and_prefix() {
        let split = |r: &str| split_repository(r);
        assert_eq!(
            split("s3:http://h:9000/b/team/repo/"),
            Some(("http://h:9000".into(), "b".into(), "team/repo/".into()))
        );
        assert_eq!(
            split("s3:s3.amazonaws.com/b"),
            Some(("https://s3.amazonaws.com".into(), "b".into(), String::new()))
        );
        assert_eq!(split("s3:http://h:9000/"), None);
        assert_eq!(split("/srv/restic"), None);
    }

    #[test]
    fn upload_id_is_read_whatever_the_root_element_is_called() {
        for root in ["InitiateMultipartUploadResult", "InitiateMultipartUpload"] {
            let body = format!(
                "<{root}><Bucket>b</Bucket><Key>k</Key><UploadId>abc-1</UploadId></{root}>"
            );
            assert_eq!(xml_field(&body, "UploadId").as_deref(), Some("abc-1"));
        }
    }

    #[test]
    fn part_writer_cuts_parts_and_ends_with_the_rest_and_the_end_mark() {
        let (tx, mut rx) = mpsc::channel(8);
        let mut writer = PartWriter::new(tx);
        let data = vec![7u8; FIRST_PART_SIZE + 10];
        writer.write_all(&data).expect("channel has room");
        writer.finish().expect("channel has room");
        let chunks: Vec<Chunk> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        let sizes: Vec<usize> = chunks
            .iter()
            .filter_map(|c| match c {
                Chunk::Part(p) => Some(p.len()),
                Chunk::End => None,
            })
            .collect();
        assert_eq!(sizes, [FIRST_PART_SIZE, 10]);
        assert_eq!(chunks.last(), Some(&Chunk::End));
    }
}
