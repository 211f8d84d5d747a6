//! Reading a review's body, up to the largest review an API server can send. axum's default
//! limit (2 MiB) answered HTTP 413 to well-formed reviews of large objects; the contract
//! promises every well-formed review HTTP 200.
//!
//! Reviews in flight share a budget of [`IN_FLIGHT_BYTES`]: a review waits for its share
//! before its body is read and holds it until it is answered, so a flood of large reviews is
//! answered a few at a time instead of holding them all in memory at once. A body must
//! arrive within [`BODY_TIMEOUT`], so a client that announces a large body and sends it
//! slowly holds its share only that long.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The largest body accepted, in bytes. The API server accepts request bodies up to 3 MiB
/// (`maxRequestBodyBytes`), so `object` is at most about 3 MiB once re-encoded as JSON; on
/// UPDATE, `oldObject` is the stored object, at most 1.5 MiB (etcd's default request limit).
/// With the review's envelope (uid, kinds, userInfo, options: a few KiB) that is about
/// 4.5 MiB; 6 MiB leaves room for JSON that grows when re-encoded (escapes, a YAML or
/// protobuf request rendered as JSON) and for an etcd limit raised a little.
pub const MAX_REVIEW_BYTES: usize = 6 * 1024 * 1024;

/// Body bytes of all reviews in flight together: five of the largest, thousands of ordinary
/// ones (a few KiB each). A parsed review takes about as much again as its body, so this
/// bounds the memory reviews take to about twice as much.
pub const IN_FLIGHT_BYTES: usize = 32 * 1024 * 1024;

/// The budget is counted in KiB: a semaphore takes at most `u32::MAX` permits at once.
const PERMIT_BYTES: usize = 1024;

/// The share of [`IN_FLIGHT_BYTES`] that reviews in flight hold.
#[derive(Clone, Debug)]
pub struct BodyBudget(Arc<Semaphore>);

impl Default for BodyBudget {
    fn default() -> Self {
        Self(Arc::new(Semaphore::new(IN_FLIGHT_BYTES / PERMIT_BYTES)))
    }
}

impl BodyBudget {
    /// Waits until `bytes` fit (at least one KiB; at most the whole budget).
    async fn reserve(&self, bytes: usize) -> Option<OwnedSemaphorePermit> {
        let permits = bytes
            .div_ceil(PERMIT_BYTES)
            .clamp(1, IN_FLIGHT_BYTES / PERMIT_BYTES);
        let permits = u32::try_from(permits).unwrap_or(u32::MAX);
        self.0.clone().acquire_many_owned(permits).await.ok()
    }
}

/// How long a body may take to arrive. The API server sends a review at once and gives up on
/// the webhook after its `timeoutSeconds` (5 in `webhooks/*.yaml`, 30 at most).
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// The limit as the 413 answer names it.
const MAX_REVIEW_TEXT: &str = "6 MiB";

fn too_large() -> Response {
    (
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "request body is larger than {MAX_REVIEW_TEXT} ({MAX_REVIEW_BYTES} bytes), \
             the most an API server sends in an AdmissionReview"
        ),
    )
        .into_response()
}

/// The whole body and its share of `budget` (hold it until the review is answered), or the
/// answer to send instead: HTTP 413 over [`MAX_REVIEW_BYTES`] (told by `Content-Length`
/// before reading, or while reading a body sent without one), HTTP 408 when it does not
/// arrive within [`BODY_TIMEOUT`], HTTP 400 when the client stops sending. A body without
/// `Content-Length` reserves the largest share.
pub async fn read_review_body(
    headers: &HeaderMap,
    body: Body,
    budget: &BodyBudget,
) -> Result<(Vec<u8>, OwnedSemaphorePermit), Response> {
    read_review_body_within(headers, body, budget, BODY_TIMEOUT).await
}

/// [`read_review_body`] with another deadline for the body to arrive.
pub async fn read_review_body_within(
    headers: &HeaderMap,
    body: Body,
    budget: &BodyBudget,
    timeout: Duration,
) -> Result<(Vec<u8>, OwnedSemaphorePermit), Response> {
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if announced.is_some_and(|length| length > MAX_REVIEW_BYTES) {
        return Err(too_large());
    }
    let Some(permit) = budget.reserve(announced.unwrap_or(MAX_REVIEW_BYTES)).await else {
        return Err((StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response());
    };
    match tokio::time::timeout(timeout, collect(body, announced)).await {
        Ok(Ok(bytes)) => Ok((bytes, permit)),
        Ok(Err(answer)) => Err(answer),
        Err(_) => Err((
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "request body did not arrive within {} s",
                timeout.as_secs_f64()
            ),
        )
            .into_response()),
    }
}

async fn collect(body: Body, announced: Option<usize>) -> Result<Vec<u8>, Response> {
    // Reserved once: growing by doubling would briefly hold twice a large body.
    let mut bytes = Vec::with_capacity(announced.unwrap_or(0));
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|error| {
            (
                StatusCode::BAD_REQUEST,
                format!("reading the request body failed: {error}"),
            )
                .into_response()
        })?;
        if bytes.len() + chunk.len() > MAX_REVIEW_BYTES {
            return Err(too_large());
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn body_that_stalls_gets_408_and_returns_its_share() {
        let first = futures::stream::iter([Ok::<_, std::io::Error>(vec![b'{'])]);
        let stalled = first.chain(futures::stream::pending());
        let budget = BodyBudget::default();
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, "5000000".parse().expect("a value"));
        let answer = read_review_body_within(
            &headers,
            Body::from_stream(stalled),
            &budget,
            Duration::from_millis(100),
        )
        .await
        .expect_err("no body in time");
        assert_eq!(answer.status(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(budget.0.available_permits(), IN_FLIGHT_BYTES / PERMIT_BYTES);
    }
}
