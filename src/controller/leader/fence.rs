//! The reconciler's writes pass through [`FenceLayer`]: a replica whose lease renewal is
//! overdue (a paused process, a partitioned node) refuses to write before it even knows that
//! another replica has taken over, so that two leaders never write at once. Reads pass, so
//! caches stay warm for when leadership comes back.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tower::BoxError;

use super::Leadership;

/// The error of a refused write.
#[derive(Debug, thiserror::Error)]
#[error("not writing: this replica's leader lease is not current")]
pub struct NotLeader;

/// Wraps the reconciler's client.
#[derive(Clone, Debug)]
pub struct FenceLayer {
    leadership: Leadership,
}

impl FenceLayer {
    /// Refuses writes whenever `leadership` is not current.
    pub fn new(leadership: Leadership) -> FenceLayer {
        FenceLayer { leadership }
    }
}

impl<S> tower::Layer<S> for FenceLayer {
    type Service = Fence<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Fence {
            inner,
            leadership: self.leadership.clone(),
        }
    }
}

/// The service of [`FenceLayer`].
#[derive(Clone, Debug)]
pub struct Fence<S> {
    inner: S,
    leadership: Leadership,
}

fn is_write(method: &http::Method) -> bool {
    !matches!(
        *method,
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
    )
}

impl<S, B> tower::Service<http::Request<B>> for Fence<S>
where
    S: tower::Service<http::Request<B>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if is_write(request.method()) && !self.leadership.is_current() {
            return Box::pin(std::future::ready(Err(NotLeader.into())));
        }
        let response = self.inner.call(request);
        Box::pin(async move { response.await.map_err(Into::into) })
    }
}

#[cfg(test)]
mod tests {
    use super::super::Timings;
    use super::*;
    use tower::{Layer, Service, ServiceExt};

    async fn answer(leadership: &Leadership, method: http::Method) -> Result<u16, BoxError> {
        let inner = tower::service_fn(|_request: http::Request<()>| async {
            Ok::<_, BoxError>(
                http::Response::builder()
                    .status(200)
                    .body(())
                    .expect("response"),
            )
        });
        let mut fence = FenceLayer::new(leadership.clone()).layer(inner);
        let request = http::Request::builder()
            .method(method)
            .uri("/apis/batch/v1/namespaces/ns/jobs")
            .body(())
            .expect("request");
        let response = fence.ready().await?.call(request).await?;
        Ok(response.status().as_u16())
    }

    #[tokio::test]
    async fn a_replica_without_a_current_lease_reads_but_does_not_write() {
        let leadership = Leadership::new(Timings::default());
        assert_eq!(answer(&leadership, http::Method::GET).await.ok(), Some(200));
        for method in [
            http::Method::POST,
            http::Method::PATCH,
            http::Method::DELETE,
            http::Method::PUT,
        ] {
            let error = answer(&leadership, method.clone())
                .await
                .expect_err("a write without a current lease is refused");
            assert!(error.is::<NotLeader>(), "{method}: {error}");
        }
        leadership.renewed_at(tokio::time::Instant::now());
        assert_eq!(
            answer(&leadership, http::Method::POST).await.ok(),
            Some(200)
        );
    }
}
