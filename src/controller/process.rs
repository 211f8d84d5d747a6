//! The `baas operator` process: leader election, the webhook and metrics servers, and the
//! controllers, until a shutdown signal and a bounded grace after it.

use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use prometheus_client::registry::Registry;
use tracing::{info, warn};

use super::context::Settings;
use super::leader;
use super::metrics::{self, Metrics};
use super::watch::run_controllers;
use crate::cli::{OperatorArgs, ServeArgs};
use crate::job::JobSettings;
use crate::serve::shutdown_signal;
use crate::{Error, Result};

/// `baas operator`: the webhook and the reconciler in one process.
pub async fn run_operator(args: OperatorArgs) -> Result<()> {
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let timings = leader::Timings {
        lease: Duration::from_secs(args.lease_duration),
        renew_deadline: Duration::from_secs(args.lease_renew_deadline),
        retry: Duration::from_secs(args.lease_retry_period),
    }
    .checked()?;
    let leadership = if args.leader_election {
        leader::Leadership::new(timings)
    } else {
        leader::Leadership::unconditional()
    };
    let config = kube::Config::infer()
        .await
        .map_err(|e| Error::Kube(kube::Error::InferConfig(e)))?;
    // The lease and the webhook's lookups use a client of their own: only the reconciler's
    // writes are fenced by leadership.
    let client = counted_client(config.clone(), &metrics, None)?;
    let reconciler_client = counted_client(
        config,
        &metrics,
        Some(leader::fence::FenceLayer::new(leadership.clone())),
    )?;
    let registry = Arc::new(registry);
    let settings = Settings {
        jobs: JobSettings {
            image: args.agent_image.clone(),
            placement: args.agent_placement.placement(),
            ..JobSettings::default()
        },
        ..Settings::default()
    };

    // One set of PVC and pod caches serves both the webhook and backup planning.
    let lookups = crate::lookup::ReflectorLookups::start(client.clone());
    let controllers = || {
        run_controllers(
            reconciler_client.clone(),
            settings.clone(),
            metrics.clone(),
            Some(lookups.clone()),
        )
    };
    let reconcile = async {
        if !args.leader_election {
            return controllers().await;
        }
        let identity = args
            .pod_name
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| format!("baas-{}", std::process::id()));
        let lease = leader::LeaseLock::new(
            client.clone(),
            &args.lease_namespace,
            identity,
            timings,
            leadership.clone(),
        );
        // A replica that lost the lease steps down and competes again, in the same process:
        // a restart would put it into crash-loop back-off, and then no replica would be ready
        // to take over the next time the leader stalls.
        loop {
            lease.acquire().await?;
            tokio::select! {
                result = controllers() => return result,
                lost = lease.hold() => {
                    if let Err(error) = lost {
                        warn!(%error, "lost leadership; reconciling stops until this replica leads again");
                    }
                }
            }
        }
    };
    let everything = async {
        tokio::try_join!(
            reconcile,
            serve_plain_metrics(args.metrics_listen, registry.clone()),
            serve_webhook(
                args.serve.clone(),
                lookups.clone(),
                registry.clone(),
                client.clone()
            ),
        )
        .map(|_| ())
    };
    // Reconciles in flight get some time to finish after SIGTERM, not forever: the next
    // leader picks up whatever is left, because all state is in the API server.
    let deadline = async {
        shutdown_signal().await;
        tokio::time::sleep(Duration::from_secs(20)).await;
        warn!("reconciles did not finish within 20s of the shutdown signal; exiting anyway");
    };
    tokio::select! {
        result = everything => result,
        () = deadline => Ok(()),
    }
}

/// The webhook's HTTPS server inside the operator: every replica answers reviews, leader or
/// not, from its own watch caches and a get per named Secret; its `/metrics` also carries the
/// reconciler's metrics, for bearer tokens whose user may get `/metrics` (checked through
/// `client`).
async fn serve_webhook(
    serve: ServeArgs,
    lookups: Arc<crate::lookup::ReflectorLookups>,
    registry: Arc<Registry>,
    client: Client,
) -> Result<()> {
    let state =
        crate::webhook::WebhookState::for_cluster(lookups, client).with_operator_metrics(registry);
    crate::webhook::serve(&serve, state, shutdown_signal()).await
}

/// The plain-HTTP metrics endpoint when `--metrics-listen` asks for it; off otherwise.
async fn serve_plain_metrics(
    listen: Option<std::net::SocketAddr>,
    registry: Arc<Registry>,
) -> Result<()> {
    let Some(listen) = listen else {
        return Ok(());
    };
    if !listen.ip().is_loopback() {
        warn!(%listen, "serving /metrics without authentication beyond this host; in a cluster, scrape the HTTPS port with a bearer token instead");
    }
    serve_metrics(listen, registry).await
}

/// Plain-HTTP `/metrics` (and health), unauthenticated: for local benchmarks that run the
/// operator as a host process.
async fn serve_metrics(listen: std::net::SocketAddr, registry: Arc<Registry>) -> Result<()> {
    use axum::routing::get;
    let router = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                async move { crate::serve::openmetrics(&[&registry]) }
            }),
        )
        .route("/healthz", get(crate::serve::healthz));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| Error::Io {
            path: listen.to_string(),
            source,
        })?;
    info!(%listen, "serving metrics");
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|source| Error::Io {
            path: listen.to_string(),
            source,
        })
}

/// A client whose every request is counted in the metrics, and whose writes pass `fence`.
fn counted_client(
    config: kube::Config,
    metrics: &Metrics,
    fence: Option<leader::fence::FenceLayer>,
) -> Result<Client> {
    let builder = kube::client::ClientBuilder::try_from(config)?
        .with_layer(&metrics::CountRequestsLayer::new(metrics));
    Ok(match fence {
        Some(fence) => builder.with_layer(&fence).build(),
        None => builder.build(),
    })
}
