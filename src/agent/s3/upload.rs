//! Streaming an object of unknown size into S3 with a multipart upload, in constant memory:
//! a blocking producer fills parts of [`FIRST_PART_SIZE`] bytes, hands each over a channel of
//! one slot, and the uploader sends them one by one. At most three parts exist at a time.

use bytes::Bytes;
use reqwest::{Method, StatusCode};
use rusty_s3::S3Action;
use rusty_s3::actions::{
    AbortMultipartUpload, CompleteMultipartUpload, CreateBucket, CreateMultipartUpload, UploadPart,
};
use tokio::sync::mpsc;

use super::transport::{Exchange, Idempotent, Transport};
use super::{Destination, SIGNATURE_LIFETIME, shorten, xml_field};
use crate::{Error, Result};

/// Size of the first parts (S3's minimum for all but the last part is 5 MiB).
pub const FIRST_PART_SIZE: usize = 8 << 20;
/// Part sizes double after this many parts, so S3's limit of 10 000 parts is never reached.
const PARTS_PER_SIZE: usize = 1000;

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
    transport: &Transport,
    destination: &Destination,
    key: &str,
    mut parts: mpsc::Receiver<Chunk>,
) -> Result<u64> {
    let bucket = destination.bucket()?;
    let credentials = destination.credentials()?;
    let start = || {
        let url =
            CreateMultipartUpload::new(&bucket, Some(&credentials), key).sign(SIGNATURE_LIFETIME);
        let exchange = Exchange {
            method: Method::POST,
            url,
            body: Bytes::new(),
            what: "starting the upload",
            idempotent: Idempotent::No,
        };
        async move { transport.send(&exchange).await }
    };
    let mut answer = start().await?;
    // A download bucket is the restore's target, like a directory: create it as restic
    // creates the repository's bucket, so the seed's Restore works on a fresh server.
    if answer.status == StatusCode::NOT_FOUND
        && xml_field(&answer.body, "Code").as_deref() == Some("NoSuchBucket")
    {
        tracing::info!(bucket = %destination.bucket, "creating the restore bucket");
        let exchange = Exchange {
            method: Method::PUT,
            url: CreateBucket::new(&bucket, &credentials).sign(SIGNATURE_LIFETIME),
            body: Bytes::new(),
            what: "creating the bucket",
            idempotent: Idempotent::Yes,
        };
        transport
            .send(&exchange)
            .await?
            .success("creating the bucket")?;
        answer = start().await?;
    }
    let body = answer.success("starting the upload")?.body;
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
            let what = format!("part {number}");
            // A part of the same number replaces the one before: safe to send again.
            let exchange = Exchange {
                method: Method::PUT,
                url: UploadPart::new(&bucket, Some(&credentials), key, number, &upload_id)
                    .sign(SIGNATURE_LIFETIME),
                body: Bytes::from(part),
                what: &what,
                idempotent: Idempotent::Yes,
            };
            let answer = transport.send(&exchange).await?.success(&what)?;
            let etag = answer
                .headers
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
        let exchange = Exchange {
            method: Method::POST,
            url: complete.sign(SIGNATURE_LIFETIME),
            body: Bytes::from(complete.body()),
            what: "completing the upload",
            idempotent: Idempotent::No,
        };
        let answer = transport
            .send(&exchange)
            .await?
            .success("completing the upload")?;
        // S3 may answer 200 with an error document.
        if answer.body.contains("<Error>") {
            return Err(Error::Http(format!(
                "S3 refused to complete the upload: {}",
                shorten(&answer.body)
            )));
        }
        Ok(size)
    }
    .await;
    if uploaded.is_err() {
        parts.close();
        let exchange = Exchange {
            method: Method::DELETE,
            url: AbortMultipartUpload::new(&bucket, Some(&credentials), key, &upload_id)
                .sign(SIGNATURE_LIFETIME),
            body: Bytes::new(),
            what: "aborting the upload",
            idempotent: Idempotent::Yes,
        };
        let aborted = match transport.send(&exchange).await {
            Ok(answer) => answer.success("aborting the upload").map(drop),
            Err(e) => Err(e),
        };
        if let Err(e) = aborted {
            tracing::warn!(key, "aborting the multipart upload failed: {e}");
        }
    }
    uploaded
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

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
