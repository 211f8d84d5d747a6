//! One S3 request, sent with patience: retried with exponential backoff when S3 or the
//! network failed transiently, and given up only when no byte has moved for a while.
//!
//! A whole-request deadline does not fit an upload under load: an 8 MiB part on a slow link
//! takes minutes while data flows the whole time, and a deadline long enough for it would
//! leave a dead connection hanging as long. So the watch is on progress instead: every body
//! frame handed to the connection and every answer chunk received restarts the
//! [`RetryPolicy::stall`] clock.
//!
//! Errors never quote the request's URL: it is presigned, and its query holds the access key
//! ID and a signature.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use tokio::time::Instant;

use super::{shorten, xml_field};
use crate::agent::chain;
use crate::{Error, Result};

/// A request fails once no byte has moved, in either direction, for this long. Longer than
/// the kernel needs to drain a full socket send buffer (a few MiB) over a slow link, during
/// which the agent sees no progress although the data flows.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Attempts per request, the first included.
pub const ATTEMPTS: u32 = 5;
/// Pause before the second attempt; it doubles before every further one.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest pause between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Body frames of at most this size, so progress is seen while a part is sent.
const FRAME_SIZE: usize = 64 << 10;
/// The most of an answer's body that is kept (a listing of 1000 keys is a few hundred KiB).
const ANSWER_LIMIT: usize = 4 << 20;

/// How S3 requests are retried and when one counts as stalled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// A request fails once no byte has moved for this long.
    pub stall: Duration,
    /// Attempts per request, the first included (at least one is made).
    pub attempts: u32,
    /// Pause before the second attempt, doubled before each further one.
    pub first_backoff: Duration,
    /// The longest pause.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            stall: STALL_TIMEOUT,
            attempts: ATTEMPTS,
            first_backoff: FIRST_BACKOFF,
            max_backoff: MAX_BACKOFF,
        }
    }
}

impl RetryPolicy {
    /// The pause after failed attempt `attempt` (1 for the first).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.first_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

/// Whether a request may be sent again after it may have reached S3.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Idempotent {
    /// Sending it twice does what sending it once does (GET, DELETE, a part's PUT, abort).
    Yes,
    /// A second one may do more (a second multipart upload, a complete of an upload already
    /// completed): repeated only when S3 answered that it failed, or the connection was
    /// never made.
    No,
}

/// One request to send: a presigned URL and its body.
pub struct Exchange<'a> {
    /// Method.
    pub method: Method,
    /// Presigned URL; never formatted into messages.
    pub url: reqwest::Url,
    /// Body, empty for none.
    pub body: Bytes,
    /// What the request does, for messages ("part 3", "listing the repository").
    pub what: &'a str,
    /// Whether it may be repeated.
    pub idempotent: Idempotent,
}

/// S3's final answer to a request.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: StatusCode,
    /// Headers (an uploaded part's ETag).
    pub headers: HeaderMap,
    /// Body as text, at most [`ANSWER_LIMIT`] bytes of it.
    pub body: String,
    /// Attempts it took.
    pub attempts: u32,
}

impl Answer {
    /// The answer when S3 says success, else an error with S3's code and message.
    pub fn success(self, what: &str) -> Result<Answer> {
        if self.status.is_success() {
            return Ok(self);
        }
        Err(Error::Http(format!(
            "S3 {what}: {}: {}{}",
            self.status,
            shorten(&self.body),
            after(self.attempts)
        )))
    }
}

fn after(attempts: u32) -> String {
    if attempts > 1 {
        format!(" (after {attempts} attempts)")
    } else {
        String::new()
    }
}

/// Why an attempt got no answer.
#[derive(Debug)]
enum Failure {
    /// The connection was never made: nothing reached S3.
    Connect(String),
    /// The request may have reached S3, and the answer broke off.
    Broken(String),
    /// No byte moved for the stall timeout.
    Stalled(Duration),
}

impl Failure {
    fn retryable(&self, idempotent: Idempotent) -> bool {
        matches!(self, Failure::Connect(_)) || idempotent == Idempotent::Yes
    }

    fn describe(&self) -> String {
        match self {
            Failure::Connect(reason) | Failure::Broken(reason) => reason.clone(),
            Failure::Stalled(stall) => format!("no data moved for {}s", stall.as_secs_f64()),
        }
    }
}

/// S3 answers that say "try again": its own failures, throttling, and its timeout for a
/// client it found too slow.
fn retryable_status(status: StatusCode, body: &str) -> bool {
    matches!(status.as_u16(), 429 | 500 | 502 | 503 | 504)
        || (status == StatusCode::BAD_REQUEST
            && xml_field(body, "Code").as_deref() == Some("RequestTimeout"))
}

/// An HTTP client with a [`RetryPolicy`].
#[derive(Clone, Debug)]
pub struct Transport {
    http: reqwest::Client,
    policy: RetryPolicy,
}

impl Transport {
    /// `http` with the default policy.
    pub fn new(http: reqwest::Client) -> Self {
        Self::with_policy(http, RetryPolicy::default())
    }

    /// `http` with `policy` (shorter timeouts in tests).
    pub fn with_policy(http: reqwest::Client, policy: RetryPolicy) -> Self {
        Transport { http, policy }
    }

    /// Sends `exchange` until S3 gives a final answer (success, or a refusal that a retry
    /// would only repeat) or the attempts are used up. `Err` only when no answer came.
    pub async fn send(&self, exchange: &Exchange<'_>) -> Result<Answer> {
        let attempts = self.policy.attempts.max(1);
        let mut attempt = 1;
        loop {
            let outcome = self.attempt(exchange).await;
            let (retry, reason) = match &outcome {
                Ok(answer) => (
                    retryable_status(answer.status, &answer.body),
                    format!("{}: {}", answer.status, shorten(&answer.body)),
                ),
                Err(failure) => (failure.retryable(exchange.idempotent), failure.describe()),
            };
            if !retry || attempt >= attempts {
                return match outcome {
                    Ok(answer) => Ok(Answer {
                        attempts: attempt,
                        ..answer
                    }),
                    Err(failure) => Err(Error::Http(format!(
                        "S3 {}: {}{}",
                        exchange.what,
                        failure.describe(),
                        after(attempt)
                    ))),
                };
            }
            let pause = self.policy.backoff(attempt);
            tracing::warn!(
                what = exchange.what,
                attempt,
                "S3 request failed, retrying in {}s: {reason}",
                pause.as_secs_f64()
            );
            tokio::time::sleep(pause).await;
            attempt += 1;
        }
    }

    async fn attempt(&self, exchange: &Exchange<'_>) -> std::result::Result<Answer, Failure> {
        let progress = Progress::default();
        let mut request = self
            .http
            .request(exchange.method.clone(), exchange.url.clone());
        if !exchange.body.is_empty() {
            request = request.body(reqwest::Body::wrap(ProgressBody {
                data: exchange.body.clone(),
                progress: progress.clone(),
            }));
        }
        let answer = async {
            let mut response = request.send().await.map_err(|e| {
                let reason = describe(e.is_connect(), e);
                match reason {
                    (true, reason) => Failure::Connect(reason),
                    (false, reason) => Failure::Broken(reason),
                }
            })?;
            progress.mark();
            let status = response.status();
            let headers = response.headers().clone();
            let mut body = Vec::new();
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| Failure::Broken(describe(false, e).1))?
            {
                progress.mark();
                let room = ANSWER_LIMIT.saturating_sub(body.len());
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(Answer {
                status,
                headers,
                body: String::from_utf8_lossy(&body).into_owned(),
                attempts: 1,
            })
        };
        watch_progress(&progress, self.policy.stall, answer)
            .await
            .unwrap_or(Err(Failure::Stalled(self.policy.stall)))
    }
}

/// A reqwest error's text and causes without its URL, which is presigned.
fn describe(connect: bool, error: reqwest::Error) -> (bool, String) {
    (connect, chain(&error.without_url()))
}

/// When a byte last moved.
#[derive(Clone, Debug)]
struct Progress(Arc<Mutex<Instant>>);

impl Default for Progress {
    fn default() -> Self {
        Progress(Arc::new(Mutex::new(Instant::now())))
    }
}

impl Progress {
    fn mark(&self) {
        if let Ok(mut last) = self.0.lock() {
            *last = Instant::now();
        }
    }

    fn last(&self) -> Instant {
        self.0
            .lock()
            .map(|last| *last)
            .unwrap_or_else(|_| Instant::now())
    }
}

/// Runs `work` until it ends (`Some`) or until no progress was marked for `stall` (`None`).
async fn watch_progress<F: std::future::Future>(
    progress: &Progress,
    stall: Duration,
    work: F,
) -> Option<F::Output> {
    tokio::pin!(work);
    loop {
        let deadline = progress.last() + stall;
        tokio::select! {
            output = &mut work => return Some(output),
            () = tokio::time::sleep_until(deadline) => {
                if progress.last() + stall <= Instant::now() {
                    return None;
                }
            }
        }
    }
}

/// A request body that hands itself over in frames and marks progress at each one, which
/// the connection asks for only once it has sent the one before.
struct ProgressBody {
    data: Bytes,
    progress: Progress,
}

impl http_body::Body for ProgressBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.data.is_empty() {
            return Poll::Ready(None);
        }
        this.progress.mark();
        let frame = this.data.split_to(this.data.len().min(FRAME_SIZE));
        Poll::Ready(Some(Ok(Frame::data(frame))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        // Exact, so the request has a Content-Length: S3 refuses chunked part uploads.
        SizeHint::with_exact(self.data.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_first_pause_up_to_the_longest() {
        let policy = RetryPolicy::default();
        let pauses: Vec<u64> = (1..=7).map(|a| policy.backoff(a).as_secs()).collect();
        assert_eq!(pauses, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(policy.backoff(u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn only_transient_answers_are_retried() {
        for status in [500, 502, 503, 504, 429] {
            let status = StatusCode::from_u16(status).expect("status");
            assert!(retryable_status(status, ""), "{status}");
        }
        let timeout = "<Error><Code>RequestTimeout</Code><Message>slow</Message></Error>";
        assert!(retryable_status(StatusCode::BAD_REQUEST, timeout));
        let denied = "<Error><Code>AccessDenied</Code></Error>";
        assert!(!retryable_status(StatusCode::FORBIDDEN, denied));
        assert!(!retryable_status(StatusCode::NOT_FOUND, ""));
        assert!(!retryable_status(StatusCode::BAD_REQUEST, denied));
    }

    #[test]
    fn a_request_that_may_have_reached_s3_is_repeated_only_when_idempotent() {
        let broken = Failure::Broken("reset".into());
        assert!(broken.retryable(Idempotent::Yes));
        assert!(!broken.retryable(Idempotent::No));
        assert!(!Failure::Stalled(STALL_TIMEOUT).retryable(Idempotent::No));
        assert!(Failure::Connect("refused".into()).retryable(Idempotent::No));
    }
}
