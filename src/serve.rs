//! What every HTTP listener of the process shares: the shutdown signal, `/healthz`, and the
//! OpenMetrics encoding of `/metrics`. The webhook's HTTPS listener and the operator's plain
//! metrics listener both use these, so they answer alike.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::registry::Registry;

/// The content type of an OpenMetrics text exposition.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `GET /healthz`: the process answers. Unauthenticated, for the kubelet's probes.
pub async fn healthz() -> &'static str {
    "ok"
}

/// A `/metrics` answer with every registry in `registries`, one after the other, and one
/// end-of-file marker: one scrape covers them all.
pub fn openmetrics(registries: &[&Registry]) -> Response {
    use prometheus_client::encoding::text::{encode_eof, encode_registry};
    let mut text = String::new();
    let encoded = registries
        .iter()
        .try_for_each(|registry| encode_registry(&mut text, registry))
        .and_then(|()| encode_eof(&mut text));
    match encoded {
        Ok(()) => ([(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], text).into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "encoding the metrics failed",
        )
            .into_response(),
    }
}

/// Completes on ctrl-c or SIGTERM (what the kubelet sends). A signal that cannot be listened
/// for is logged and never completes, rather than shutting the process down at once.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;

    #[tokio::test]
    async fn metrics_of_two_registries_end_in_one_eof() {
        let mut first = Registry::with_prefix("one");
        first.register("things", "Things", Counter::<u64>::default());
        let mut second = Registry::with_prefix("two");
        second.register("things", "Things", Counter::<u64>::default());
        let answer = openmetrics(&[&first, &second]);
        assert_eq!(answer.status(), StatusCode::OK);
        assert_eq!(
            answer.headers()[header::CONTENT_TYPE],
            OPENMETRICS_CONTENT_TYPE
        );
        let body = axum::body::to_bytes(answer.into_body(), usize::MAX)
            .await
            .expect("body");
        let text = String::from_utf8(body.to_vec()).expect("utf-8");
        assert!(text.contains("one_things_total 0"), "{text}");
        assert!(text.contains("two_things_total 0"), "{text}");
        assert_eq!(text.matches("# EOF").count(), 1, "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
