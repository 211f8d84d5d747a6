//! S3 with presigned requests: a restore's archive uploaded in parts ([`upload`]) and a
//! read-only look at a restic repository's files ([`RepositoryFiles`]). Every request goes
//! through [`Transport`], which retries transient failures and gives up only on a stall.

use std::time::Duration;

use bytes::Bytes;
use reqwest::Method;
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

use crate::job::env::{ENV_ACCESS_KEY_ID, ENV_SECRET_ACCESS_KEY};
use crate::{Error, Result};

pub mod transport;
pub mod upload;

#[cfg(test)]
mod stand_in;
#[cfg(test)]
mod under_load;

pub use transport::{RetryPolicy, Transport};
pub use upload::{Chunk, FIRST_PART_SIZE, INCOMPLETE, PartWriter, upload};
/// Presigned URLs are used at once; this only has to outlast one slow part.
pub(crate) const SIGNATURE_LIFETIME: Duration = Duration::from_secs(3600);

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
    transport: Transport,
    bucket: Bucket,
    credentials: Credentials,
    prefix: String,
}

impl RepositoryFiles {
    /// For an `s3:` repository with credentials in the environment; `None` otherwise.
    pub fn for_repository(http: &reqwest::Client, repository: &str) -> Option<RepositoryFiles> {
        let (endpoint, bucket_name, prefix) = split_repository(repository)?;
        let key = std::env::var(ENV_ACCESS_KEY_ID).ok()?;
        let secret = std::env::var(ENV_SECRET_ACCESS_KEY).ok()?;
        let credentials = match std::env::var("AWS_SESSION_TOKEN") {
            Ok(token) if !token.is_empty() => Credentials::new_with_token(key, secret, token),
            _ => Credentials::new(key, secret),
        };
        let region = std::env::var("AWS_DEFAULT_REGION").unwrap_or_else(|_| "us-east-1".into());
        let bucket =
            Bucket::new(endpoint.parse().ok()?, UrlStyle::Path, bucket_name, region).ok()?;
        Some(RepositoryFiles {
            transport: Transport::new(http.clone()),
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
        let what = format!("GET {key}");
        let exchange = self.exchange(
            Method::GET,
            self.bucket
                .get_object(Some(&self.credentials), &key)
                .sign(SIGNATURE_LIFETIME),
            &what,
        );
        match self.transport.send(&exchange).await {
            Ok(answer) => config_answer(answer.status.as_u16(), &answer.body),
            Err(e) => ConfigAnswer::Unknown(e.to_string()),
        }
    }

    /// Names of the files in `dir` (`locks`, `snapshots`) that start with `start`, at most
    /// 1000 (more are never needed: a handful of locks, one snapshot per prefix).
    pub async fn list(&self, dir: &str, start: &str) -> Result<Vec<String>> {
        let prefix = format!("{}{dir}/", self.prefix);
        let mut action = self.bucket.list_objects_v2(Some(&self.credentials));
        action.with_prefix(format!("{prefix}{start}"));
        let what = "listing the repository";
        let exchange = self.exchange(Method::GET, action.sign(SIGNATURE_LIFETIME), what);
        let body = self.transport.send(&exchange).await?.success(what)?.body;
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

    /// Deletes the file `name` in `dir`; S3 answers a missing file with success too.
    pub async fn delete(&self, dir: &str, name: &str) -> Result<()> {
        let key = format!("{}{dir}/{name}", self.prefix);
        let what = format!("deleting {key}");
        let exchange = self.exchange(
            Method::DELETE,
            self.bucket
                .delete_object(Some(&self.credentials), &key)
                .sign(SIGNATURE_LIFETIME),
            &what,
        );
        self.transport
            .send(&exchange)
            .await?
            .success(&what)
            .map(drop)
    }

    /// A bodiless request: every one of these reads or deletes, so it may be repeated.
    fn exchange<'a>(
        &self,
        method: Method,
        url: reqwest::Url,
        what: &'a str,
    ) -> transport::Exchange<'a> {
        transport::Exchange {
            method,
            url,
            body: Bytes::new(),
            what,
            idempotent: transport::Idempotent::Yes,
        }
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

/// The text of the first `<tag>` element of an XML document.
pub(crate) fn xml_field(body: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = body.find(&open)? + open.len();
    let end = body[start..].find("</")? + start;
    Some(body[start..end].to_string())
}

/// The S3 error code and message from an XML error document, or its first characters.
pub(crate) fn shorten(body: &str) -> String {
    match (xml_field(body, "Code"), xml_field(body, "Message")) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code,
        _ => body.chars().take(300).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
