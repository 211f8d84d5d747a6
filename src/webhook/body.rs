//! Reading a review's body, up to the largest review an API server can send. axum's default
//! limit (2 MiB) answered HTTP 413 to well-formed reviews of large objects; the contract
//! promises every well-formed review HTTP 200.

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

/// The largest body accepted, in bytes. The API server accepts request bodies up to 3 MiB
/// (`maxRequestBodyBytes`), so `object` is at most about 3 MiB once re-encoded as JSON; on
/// UPDATE, `oldObject` is the stored object, at most 1.5 MiB (etcd's default request limit).
/// With the review's envelope (uid, kinds, userInfo, options: a few KiB) that is about
/// 4.5 MiB; 6 MiB leaves room for JSON that grows when re-encoded (escapes, a YAML or
/// protobuf request rendered as JSON) and for an etcd limit raised a little.
pub const MAX_REVIEW_BYTES: usize = 6 * 1024 * 1024;

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

/// The whole body, or the answer to send instead: HTTP 413 over [`MAX_REVIEW_BYTES`] (told
/// by `Content-Length` before reading, or while reading a body sent without one), HTTP 400
/// when the client stops sending.
pub async fn read_review_body(headers: &HeaderMap, body: Body) -> Result<Vec<u8>, Response> {
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if announced.is_some_and(|length| length > MAX_REVIEW_BYTES) {
        return Err(too_large());
    }
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
