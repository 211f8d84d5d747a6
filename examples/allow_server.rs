//! A minimal admission webhook that admits everything: same TLS stack (axum, axum-server,
//! rustls with ring) and same review parsing as `baas webhook`, no rules. `scripts/bench-webhook`
//! measures it as the practical limit of this machine.
//!
//! Usage: `cargo run --release --example allow_server -- ADDR CERT.pem KEY.pem`

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum_server::tls_rustls::RustlsConfig;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};

async fn allow(body: Bytes) -> Response {
    let review: AdmissionReview<DynamicObject> = match serde_json::from_slice(&body) {
        Ok(review) => review,
        Err(error) => return (StatusCode::BAD_REQUEST, error.to_string()).into_response(),
    };
    let request: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(request) => request,
        Err(error) => return (StatusCode::BAD_REQUEST, error.to_string()).into_response(),
    };
    Json(AdmissionResponse::from(&request).into_review()).into_response()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: allow_server ADDR CERT.pem KEY.pem";
    let addr: SocketAddr = args.next().ok_or(usage)?.parse()?;
    let cert = args.next().ok_or(usage)?;
    let key = args.next().ok_or(usage)?;
    let config = baas::webhook::tls::load_server_config(cert.as_ref(), key.as_ref())?;
    let app = Router::new()
        .route("/validate", post(allow))
        .route("/mutate", post(allow));
    axum_server::bind_rustls(addr, RustlsConfig::from_config(Arc::new(config)))
        .serve(app.into_make_service())
        .await?;
    Ok(())
}
