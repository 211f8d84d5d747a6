//! The admission webhook: validating and mutating AdmissionReviews over HTTPS, plus health,
//! readiness and Prometheus metrics on the same listener.
//!
//! Handlers are thin: [`review::parse_review`], [`review::decide_fetching`] (which fetches the
//! Secrets a review names, then calls the pure `validate_*` and `mutate_*` functions), answer.
//! PVCs and pods come from [`lookup::Lookups`] caches; the only API calls of a review are one
//! `get` per Secret it names.

pub mod body;
pub mod metrics_auth;
pub mod mutate;
pub mod review;
pub mod tls;
pub mod validate;
pub mod validate_command;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum_server::tls_rustls::RustlsConfig;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tracing::Instrument;
use tracing::field::Empty;

use crate::cli::{ServeArgs, ValidateArgs, WebhookArgs};
use crate::lookup::{self, Lookups, SecretSource};
use crate::{Error, Result};
use metrics_auth::MetricsAccess;
use review::Endpoint;

/// How long in-flight reviews may take to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReviewLabels {
    endpoint: &'static str,
    kind: String,
    operation: &'static str,
    verdict: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: &'static str,
}

fn latency_histogram() -> Histogram {
    // 50 µs to about 0.4 s: reviews are answered from memory, so the interesting part is
    // well under a millisecond.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 14))
}

struct Metrics {
    registry: Registry,
    reviews: Family<ReviewLabels, Counter>,
    latency: Family<EndpointLabels, Histogram, fn() -> Histogram>,
    rejected_bodies: Counter,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("baas_webhook");
        let reviews = Family::<ReviewLabels, Counter>::default();
        let latency = Family::<EndpointLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        let rejected_bodies = Counter::default();
        registry.register(
            "reviews",
            "AdmissionReviews answered, by endpoint, kind, operation and verdict",
            reviews.clone(),
        );
        registry.register(
            "review_duration_seconds",
            "Time from receiving a review body to having its answer",
            latency.clone(),
        );
        registry.register(
            "malformed_bodies",
            "Request bodies that were not an admission.k8s.io/v1 AdmissionReview (HTTP 400)",
            rejected_bodies.clone(),
        );
        Self {
            registry,
            reviews,
            latency,
            rejected_bodies,
        }
    }
}

/// What the webhook's handlers share: cluster lookups (none offline), where Secrets are
/// fetched from, and metrics.
#[derive(Clone)]
pub struct WebhookState {
    lookups: Option<Arc<dyn Lookups>>,
    /// `None`: `lookups` answers Secrets itself (tests, fixed facts).
    secrets: Option<Arc<dyn SecretSource>>,
    metrics: Arc<Metrics>,
    /// The reconciler's metrics, served on the same `/metrics` inside `baas operator`.
    operator_metrics: Option<Arc<Registry>>,
    /// Who may read `/metrics`.
    metrics_access: MetricsAccess,
    /// The body bytes reviews in flight may hold together.
    body_budget: body::BodyBudget,
}

impl WebhookState {
    /// A webhook without an API server: Secret and PVC rules are skipped, and `/metrics` is
    /// not served until [`WebhookState::with_metrics_access`] says to whom.
    pub fn offline() -> Self {
        Self {
            lookups: None,
            secrets: None,
            metrics: Arc::new(Metrics::new()),
            operator_metrics: None,
            metrics_access: MetricsAccess::Off,
            body_budget: body::BodyBudget::default(),
        }
    }

    /// A webhook that answers Secret and PVC rules from `lookups` alone, such as
    /// [`lookup::StaticLookups`]; `/metrics` is not served until
    /// [`WebhookState::with_metrics_access`] says to whom.
    pub fn with_lookups(lookups: Arc<dyn Lookups>) -> Self {
        Self {
            lookups: Some(lookups),
            ..Self::offline()
        }
    }

    /// The webhook of a cluster: PVCs and pods from `caches`, each Secret a review names
    /// fetched with one `get` through `client` ([`lookup::ApiSecrets`]), and `/metrics` for
    /// bearer tokens whose user may get it.
    pub fn for_cluster(caches: Arc<lookup::ReflectorLookups>, client: kube::Client) -> Self {
        Self::with_lookups(caches)
            .with_secret_source(Arc::new(lookup::ApiSecrets::new(client.clone())))
            .with_metrics_access(MetricsAccess::kubernetes(client))
    }

    /// Fetches the Secrets a review names from `source` before the rules run.
    pub fn with_secret_source(mut self, source: Arc<dyn SecretSource>) -> Self {
        self.secrets = Some(source);
        self
    }

    /// Who may read `/metrics` (production: [`MetricsAccess::kubernetes`]).
    pub fn with_metrics_access(mut self, access: MetricsAccess) -> Self {
        self.metrics_access = access;
        self
    }

    /// Serves `registry` (the reconciler's metrics) next to the webhook's own on `/metrics`,
    /// so one scrape covers the whole operator.
    pub fn with_operator_metrics(mut self, registry: Arc<Registry>) -> Self {
        self.operator_metrics = Some(registry);
        self
    }

    /// Ready when offline, or once the lookup caches are filled.
    pub fn ready(&self) -> bool {
        self.lookups.as_ref().is_none_or(|l| l.ready())
    }
}

/// The webhook's routes: `POST /validate`, `POST /mutate`, `GET /healthz`, `GET /readyz`
/// (both unauthenticated, for the kubelet's probes), `GET /metrics` (see [`metrics_auth`]).
/// It runs on a Tokio runtime with a timer: a review's body must arrive within
/// [`body::BODY_TIMEOUT`].
pub fn router(state: WebhookState) -> Router {
    Router::new()
        .route("/validate", post(validate))
        .route("/mutate", post(mutate))
        .route("/healthz", get(crate::serve::healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn validate(State(state): State<WebhookState>, headers: HeaderMap, body: Body) -> Response {
    match body::read_review_body(&headers, body, &state.body_budget).await {
        Ok((bytes, _in_flight)) => handle(&state, Endpoint::Validate, &bytes).await,
        Err(answer) => answer,
    }
}

async fn mutate(State(state): State<WebhookState>, headers: HeaderMap, body: Body) -> Response {
    match body::read_review_body(&headers, body, &state.body_budget).await {
        Ok((bytes, _in_flight)) => handle(&state, Endpoint::Mutate, &bytes).await,
        Err(answer) => answer,
    }
}

async fn handle(state: &WebhookState, endpoint: Endpoint, body: &[u8]) -> Response {
    let started = Instant::now();
    let review = match review::parse_review(body) {
        Ok(review) => review,
        Err(reason) => {
            state.metrics.rejected_bodies.inc();
            tracing::warn!(endpoint = endpoint.as_str(), %reason, "not an AdmissionReview");
            return (StatusCode::BAD_REQUEST, reason).into_response();
        }
    };
    let kind = review.request.kind.kind.as_str();
    let span = tracing::info_span!(
        "review",
        uid = %review.request.uid,
        kind,
        namespace = review.namespace(),
        name = review.name(),
        operation = review.operation(),
        endpoint = endpoint.as_str(),
        dry_run = review.request.dry_run,
        allowed = Empty,
        patched = Empty,
    );
    let answer = review::decide_fetching(
        endpoint,
        &review,
        state.lookups.as_deref(),
        state.secrets.as_deref(),
    )
    .instrument(span.clone())
    .await;
    let _entered = span.enter();
    span.record("allowed", answer.allowed);
    span.record("patched", !answer.patch.is_empty());
    if answer.allowed {
        tracing::debug!(warnings = answer.warnings.len(), "admitted");
    } else {
        tracing::info!(message = %answer.message, "denied");
    }
    let json = answer.to_review_json(&review);
    let metrics = &state.metrics;
    metrics
        .reviews
        .get_or_create(&ReviewLabels {
            endpoint: endpoint.as_str(),
            kind: review
                .our_kind()
                .map_or("other", crate::crd::Kind::as_str)
                .to_string(),
            operation: review.operation(),
            verdict: if answer.allowed { "allowed" } else { "denied" },
        })
        .inc();
    metrics
        .latency
        .get_or_create(&EndpointLabels {
            endpoint: endpoint.as_str(),
        })
        .observe(started.elapsed().as_secs_f64());
    axum::Json(json).into_response()
}

async fn readyz(State(state): State<WebhookState>) -> Response {
    if state.ready() {
        (StatusCode::OK, "ok").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "PVC and Pod caches are still filling",
        )
            .into_response()
    }
}

async fn metrics(State(state): State<WebhookState>, headers: HeaderMap) -> Response {
    if let Err(answer) = state.metrics_access.authorize(&headers).await {
        return answer;
    }
    let webhook = &state.metrics.registry;
    match &state.operator_metrics {
        Some(operator) => crate::serve::openmetrics(&[webhook, operator]),
        None => crate::serve::openmetrics(&[webhook]),
    }
}

/// Serves [`router`] over HTTPS until `shutdown` completes, then lets in-flight reviews finish.
/// The cert/key pair is re-read every [`tls::RELOAD_INTERVAL`] when the files change.
pub async fn serve(
    args: &ServeArgs,
    state: WebhookState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    serve_with_reload(args, state, shutdown, tls::RELOAD_INTERVAL).await
}

/// [`serve`] with another interval for checking the cert/key files.
pub async fn serve_with_reload(
    args: &ServeArgs,
    state: WebhookState,
    shutdown: impl Future<Output = ()> + Send + 'static,
    reload_every: Duration,
) -> Result<()> {
    let server_config = tls::load_server_config(&args.tls_cert, &args.tls_key)?;
    let rustls = RustlsConfig::from_config(Arc::new(server_config));
    let reload = tokio::spawn(tls::reload_forever(
        rustls.clone(),
        args.tls_cert.clone(),
        args.tls_key.clone(),
        reload_every,
    ));
    let handle = axum_server::Handle::<SocketAddr>::new();
    let on_signal = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down the webhook; letting in-flight reviews finish");
        on_signal.graceful_shutdown(Some(SHUTDOWN_GRACE));
    });
    tracing::info!(listen = %args.listen, offline = state.lookups.is_none(), "admission webhook listening");
    let served = axum_server::bind_rustls(args.listen, rustls)
        .handle(handle)
        .serve(router(state).into_make_service())
        .await;
    reload.abort();
    served.map_err(|source| Error::Io {
        path: args.listen.to_string(),
        source,
    })
}

/// `baas webhook`: serves the admission webhook alone.
pub async fn run_webhook(args: WebhookArgs) -> Result<()> {
    let state = if args.offline {
        let access = if args.unauthenticated_metrics {
            MetricsAccess::Open
        } else {
            MetricsAccess::Off
        };
        WebhookState::offline().with_metrics_access(access)
    } else {
        let client = kube::Client::try_default().await?;
        WebhookState::for_cluster(lookup::ReflectorLookups::start(client.clone()), client)
    };
    serve(&args.serve, state, crate::serve::shutdown_signal()).await
}

/// `baas validate`: returns whether every object would be admitted.
pub async fn run_validate(args: ValidateArgs) -> Result<bool> {
    let stdout = std::io::stdout();
    validate_command::validate_paths(&args.files, &mut stdout.lock())
}

/// The ValidatingWebhookConfiguration for a cluster with cert-manager (`webhooks/validating.yaml`).
pub const VALIDATING_CONFIGURATION_YAML: &str = include_str!("../webhooks/validating.yaml");
/// The MutatingWebhookConfiguration for a cluster with cert-manager (`webhooks/mutating.yaml`).
pub const MUTATING_CONFIGURATION_YAML: &str = include_str!("../webhooks/mutating.yaml");
