//! The reconciler: Schedules become runs, runs become Jobs, Jobs become run status.
//!
//! Stateless: everything needed to resume after a crash is in the API server. Run names are
//! derived from the Schedule and the tick, Job names from the run, so a restarted operator or
//! a second replica finds what was already done instead of doing it again.

pub mod history;
pub mod leader;
pub mod metrics;
pub mod rbac;
pub mod run;
pub mod schedule;

use crate::crd::Kind;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::batch::v1::{Job, JobStatus};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use prometheus_client::registry::Registry;
use tracing::{debug, info, warn};

use crate::cli::{OperatorArgs, ServeArgs};
use crate::crd::{Backup, Check, Prune, Restore, Schedule};
use crate::job::{JobSettings, LABEL_MANAGED_BY, MANAGER};
use crate::{Error, Result};

pub use metrics::Metrics;

/// The field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "baas";

/// Operator-wide settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How Jobs are built.
    pub jobs: JobSettings,
    /// How old a missed tick may be and still run when the operator (re)starts.
    pub catch_up: jiff::SignedDuration,
    /// How long a pod may wait on a broken container config (missing Secret, image that
    /// cannot be pulled) before its run is declared Failed.
    pub stuck_after: jiff::SignedDuration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            jobs: JobSettings::default(),
            catch_up: jiff::SignedDuration::from_hours(1),
            stuck_after: jiff::SignedDuration::from_mins(3),
        }
    }
}

/// The caches of run objects kept by the run controllers, read by the Schedule reconciler
/// (history, last state) and for repository exclusivity without extra API calls.
#[derive(Clone)]
pub struct Stores {
    /// Every Backup of the cluster.
    pub backups: Store<Backup>,
    /// Every Check.
    pub checks: Store<Check>,
    /// Every Prune.
    pub prunes: Store<Prune>,
    /// Every Restore.
    pub restores: Store<Restore>,
    /// Every Job the operator made, without their specs.
    pub jobs: Store<JobState>,
    /// Set once the Backup, Check, Prune and Job caches hold the cluster's state; until then
    /// the reconcilers ask the API server instead.
    pub ready: Arc<std::sync::atomic::AtomicBool>,
    /// The webhook's caches of PVCs and pods, for planning backups without API calls.
    pub cluster: Option<Arc<crate::webhook::lookup::ReflectorLookups>>,
}

impl Stores {
    /// Empty stores that never fill, for tests.
    pub fn empty() -> Stores {
        Stores {
            backups: kube::runtime::reflector::store().0,
            checks: kube::runtime::reflector::store().0,
            prunes: kube::runtime::reflector::store().0,
            restores: kube::runtime::reflector::store().0,
            jobs: kube::runtime::reflector::store().0,
            ready: Arc::default(),
            cluster: None,
        }
    }

    /// The Jobs of the run with `uid` in namespace `namespace`, from the cache; `None` while the
    /// cache is not filled.
    pub fn jobs_of_run(&self, namespace: &str, uid: &str) -> Option<Vec<Job>> {
        if !self.is_ready() {
            return None;
        }
        let mut jobs: Vec<Job> = self
            .jobs
            .state()
            .iter()
            .filter(|job| job.metadata.namespace.as_deref() == Some(namespace))
            .filter(|job| job.owner_references().iter().any(|o| o.uid == uid))
            .map(|job| job.to_job())
            .collect();
        jobs.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        Some(jobs)
    }

    /// The uids of the runs that own a Job: they hold their repository even before a status
    /// names their Jobs.
    pub fn runs_with_jobs(&self) -> HashSet<String> {
        self.jobs
            .state()
            .iter()
            .flat_map(|job| job.owner_references().iter().map(|o| o.uid.clone()))
            .collect()
    }

    /// Whether the run caches can be trusted.
    pub fn is_ready(&self) -> bool {
        self.ready.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Marks the stores ready once the Schedule-owned caches and the Job cache are. It polls with a
    /// timeout instead of awaiting once: a store's readiness future wakes only its latest
    /// poller, and the controllers poll it too.
    async fn watch_readiness(self) {
        async fn ready<K>(store: &Store<K>)
        where
            K: kube::Resource<DynamicType = ()> + Clone + 'static,
        {
            while tokio::time::timeout(Duration::from_millis(250), store.wait_until_ready())
                .await
                .is_err()
            {}
        }
        ready(&self.backups).await;
        ready(&self.checks).await;
        ready(&self.prunes).await;
        ready(&self.jobs).await;
        self.ready.store(true, std::sync::atomic::Ordering::Release);
        tracing::debug!("run caches are ready");
    }
}

/// Statuses this process wrote that the watch cache may not show yet. A reconcile triggered
/// right after a status write (by the write itself, or by a Job it just created) would
/// otherwise act on the older status and repeat the work and the writes. An entry is dropped
/// as soon as the cache shows the same status, so the map only holds writes in flight.
pub struct Recent<S> {
    map: Mutex<HashMap<String, S>>,
}

impl<S> Default for Recent<S> {
    fn default() -> Self {
        Recent {
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl<S: Clone + PartialEq> Recent<S> {
    /// The newest status of the object with `uid`: ours while the cache lags behind it.
    pub fn freshest(&self, uid: &str, cached: Option<&S>) -> Option<S> {
        let Ok(mut map) = self.map.lock() else {
            return cached.cloned();
        };
        match map.get(uid) {
            Some(mine) if Some(mine) == cached => {
                map.remove(uid);
                cached.cloned()
            }
            Some(mine) => Some(mine.clone()),
            None => cached.cloned(),
        }
    }

    /// The remembered status of `uid`, whatever the cache shows.
    pub fn get(&self, uid: &str) -> Option<S> {
        self.map.lock().ok()?.get(uid).cloned()
    }

    /// Forgets `uid`.
    pub fn forget(&self, uid: &str) {
        if let Ok(mut map) = self.map.lock() {
            map.remove(uid);
        }
    }

    /// Remembers a status just written.
    pub fn wrote(&self, uid: &str, status: S) {
        if let Ok(mut map) = self.map.lock() {
            // Objects deleted before the cache caught up leave entries behind; bound them.
            if map.len() > 50_000 {
                map.clear();
            }
            map.insert(uid.to_string(), status);
        }
    }
}

/// Repositories known to exist, by their `backup.appuio.ch/repository` label: a Backup on
/// each has finished with a snapshot, so its `config` exists. Until then the first backups of
/// a repository take turns, so that only one of them can run `restic init` (two concurrent
/// ones leave keys that cannot open the one `config`). Filled from the Backups the run
/// reconciler sees, and it sees every cached one at startup: the set follows from the API
/// server's state, and a restart only makes the first backups of a repository wait longer.
#[derive(Default)]
pub struct ProvenRepositories {
    set: Mutex<HashSet<String>>,
}

impl ProvenRepositories {
    /// Whether the repository with this label is known to exist.
    pub fn contains(&self, label: &str) -> bool {
        self.set.lock().is_ok_and(|set| set.contains(label))
    }

    /// Remembers that the repository with this label exists.
    pub fn insert(&self, label: String) {
        if let Ok(mut set) = self.set.lock() {
            set.insert(label);
        }
    }
}

/// Backups this process let through to start on a repository not known to exist, by
/// repository label. Between that decision and the Job cache showing the backup's Job, a
/// backup of the same repository reconciled at the same moment (created in the same second,
/// its watch event first) finds nothing in the caches or the API server that stops it; the
/// claim does. A claim ends when its run ends or after `hold`, by which time its Jobs are in
/// the cache.
#[derive(Default)]
pub struct CreateClaims {
    map: Mutex<HashMap<String, CreateClaim>>,
}

struct CreateClaim {
    uid: String,
    key: String,
    at: std::time::Instant,
}

impl CreateClaims {
    /// Claims the repository `label` for the run `uid` (`key` is its `namespace/name`);
    /// the key of the run that holds it instead, if another does.
    pub fn claim(
        &self,
        label: &str,
        uid: &str,
        key: &str,
        now: std::time::Instant,
        hold: Duration,
    ) -> Option<String> {
        let Ok(mut map) = self.map.lock() else {
            return None;
        };
        map.retain(|_, c| now.saturating_duration_since(c.at) < hold);
        if let Some(other) = map.get(label).filter(|c| c.uid != uid) {
            return Some(other.key.clone());
        }
        map.insert(
            label.to_string(),
            CreateClaim {
                uid: uid.to_string(),
                key: key.to_string(),
                at: now,
            },
        );
        None
    }

    /// Ends the claim of the run `uid` on `label`, if it holds one.
    pub fn release(&self, label: &str, uid: &str) {
        if let Ok(mut map) = self.map.lock()
            && map.get(label).is_some_and(|c| c.uid == uid)
        {
            map.remove(label);
        }
    }
}

/// What every reconcile gets.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// Who the operator's Events say they come from.
    pub reporter: Reporter,
    /// Operator-wide settings.
    pub settings: Settings,
    /// Metrics.
    pub metrics: Metrics,
    /// Caches of run objects.
    pub stores: Stores,
    /// Run statuses written and not yet seen in the cache.
    pub recent_runs: Recent<crate::crd::RunStatus>,
    /// Runs whose Jobs this process created before any status names them: a Job deleted then
    /// must fail its run, not look like one never started (a restart forgets this; a run whose
    /// Jobs were deleted while no operator ran gets new ones).
    pub unwritten_starts: Recent<crate::crd::RunStatus>,
    /// Schedule statuses written and not yet seen in the cache.
    pub recent_schedules: Recent<crate::crd::ScheduleStatus>,
    /// Namespaces whose agent RBAC this process has applied (an optimisation only: applying
    /// again is harmless).
    pub rbac_done: Mutex<HashSet<String>>,
    /// Repositories a Backup has written a snapshot to.
    pub proven_repositories: ProvenRepositories,
    /// Backups starting on a repository that is not proven.
    pub create_claims: CreateClaims,
}

impl Context {
    /// A context around a client.
    pub fn new(client: Client, settings: Settings, metrics: Metrics, stores: Stores) -> Context {
        let reporter = Reporter {
            controller: "baas".into(),
            instance: std::env::var("BAAS_POD_NAME").ok(),
        };
        Context {
            reporter,
            client,
            settings,
            metrics,
            stores,
            recent_runs: Recent::default(),
            unwritten_starts: Recent::default(),
            recent_schedules: Recent::default(),
            rbac_done: Mutex::new(HashSet::new()),
            proven_repositories: ProvenRepositories::default(),
            create_claims: CreateClaims::default(),
        }
    }

    /// Publishes one Event about `regarding`, logging a failure: an Event is worth a try,
    /// never a failed reconcile.
    ///
    /// Each Event gets its own [`Recorder`]. A shared one keeps every Event it sent for six
    /// minutes, to turn repeats into a series, but the operator never repeats one: its
    /// Events are about runs that end once, and object references that carry a new
    /// resourceVersion each time. At a tick of thousands of Schedules that cache held
    /// thousands of Events and was scanned on every publish, for nothing.
    pub async fn publish(&self, event: &kube::runtime::events::Event, regarding: &ObjectReference) {
        let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
        if let Err(error) = recorder.publish(event, regarding).await {
            warn!(%error, reason = %event.reason, "publishing an Event failed");
        }
    }
}

/// Now, to the second: the API server keeps times to the second, so a status computed with
/// them compares equal to the one read back and an unchanged status is not written again.
pub fn now_seconds() -> jiff::Timestamp {
    let now = jiff::Timestamp::now();
    jiff::Timestamp::from_second(now.as_second()).unwrap_or(now)
}

/// How long to wait after an error: an invalid spec waits for the user (a change of the
/// object triggers a reconcile anyway), anything else is retried soon.
pub fn requeue_after_error(error: &Error) -> Action {
    match error {
        Error::InvalidSpec(_) => Action::requeue(Duration::from_secs(3600)),
        Error::Kube(kube::Error::Api(status)) if status.code == 409 => {
            Action::requeue(Duration::from_secs(1))
        }
        _ => Action::requeue(Duration::from_secs(15)),
    }
}

/// Drops the metrics of deleted Schedules once a minute: a deleted Schedule must not keep an
/// old `last_successful_backup` series that fires `BaasBackupTooOld` a day later.
async fn forget_deleted_schedules(schedules: Store<Schedule>, metrics: Metrics) {
    // An empty cache before the first listing would look like every Schedule was deleted.
    if schedules.wait_until_ready().await.is_err() {
        return;
    }
    let mut every = tokio::time::interval(Duration::from_secs(60));
    loop {
        every.tick().await;
        let live = schedules
            .state()
            .iter()
            .map(|s| (s.namespace().unwrap_or_default(), s.name_any()))
            .collect();
        metrics.forget_schedules_except(&live);
    }
}

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
    let lookups = crate::webhook::lookup::ReflectorLookups::start(client.clone());
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
    lookups: Arc<crate::webhook::lookup::ReflectorLookups>,
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
    use axum::response::IntoResponse;
    use axum::routing::get;
    let router = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                async move {
                    let mut text = String::new();
                    match prometheus_client::encoding::text::encode(&mut text, &registry) {
                        Ok(()) => (
                            [(
                                "content-type",
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )],
                            text,
                        )
                            .into_response(),
                        Err(_) => (
                            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                            "encoding the metrics failed",
                        )
                            .into_response(),
                    }
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }));
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

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
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

async fn log_result<T, E: std::fmt::Display>(kind: Kind, result: std::result::Result<T, E>) {
    if let Err(error) = result {
        tracing::debug!(%kind, %error, "reconcile failed");
    }
}

/// Reconciles of one kind that run at the same time. Unbounded, a tick of thousands of
/// Schedules opens thousands of API connections at once, each with its own TLS buffers,
/// which costs far more memory and not less time than working through them in batches.
const CONCURRENCY: u16 = 16;

/// Objects a watch may hand on to a controller before the watch waits for it.
const TRIGGER_BUFFER: usize = 1024;

fn controller_config() -> kube::runtime::controller::Config {
    kube::runtime::controller::Config::default().concurrency(CONCURRENCY)
}

/// The last-applied annotation of `kubectl apply` repeats the whole object.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops what no reconciler reads and what often outweighs the rest of an object: the
/// managed fields and the last-applied copy.
pub fn strip_meta(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
}

/// A Job as the run reconcilers read it: metadata and status. The spec, pod template included,
/// is most of a Job and is never read back; leaving it out of the type keeps it out of the
/// cache, where a `Job` takes close to 3 kB before any of its strings. It is a `batch/v1` Job
/// to the API: `kube::Resource` is inherited from `Job`.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize, kube::Resource)]
#[resource(inherit = "Job")]
pub struct JobState {
    /// The Job's metadata.
    pub metadata: ObjectMeta,
    /// The Job's status, once the job controller wrote one.
    #[serde(default)]
    pub status: Option<JobStatus>,
}

impl JobState {
    /// The Job, without its spec.
    pub fn to_job(&self) -> Job {
        Job {
            metadata: self.metadata.clone(),
            spec: None,
            status: self.status.clone(),
        }
    }
}

impl From<Job> for JobState {
    fn from(job: Job) -> Self {
        JobState {
            metadata: job.metadata,
            status: job.status,
        }
    }
}

/// A run as the caches keep it. A finished run is only read for its state and times (the
/// Schedule's history and last outcome; its own reconcile stops at the state), so its spec
/// and the details of its status are dropped: finished runs are most of the cache, up to
/// `keepJobs` of them per Schedule and operation.
pub fn strip_run<K: run::RunKind>(run: &mut K) {
    strip_meta(run.meta_mut());
    run.forget_if_finished();
}

type Trigger<K> = futures::channel::mpsc::Receiver<std::result::Result<K, watcher::Error>>;
type Route<K> = (
    fn(&K) -> bool,
    futures::channel::mpsc::Sender<std::result::Result<K, watcher::Error>>,
);

/// One watch of `K` that fills one cache and hands every changed or deleted object to the
/// controllers whose route accepts it. Each kind is watched once, however many controllers
/// react to it, and its objects are kept once, stripped by `strip`.
struct Feed<K: kube::Resource<DynamicType = ()> + Clone + 'static> {
    store: Store<K>,
    writer: kube::runtime::reflector::store::Writer<K>,
    routes: Vec<Route<K>>,
}

impl<K> Feed<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    fn new() -> Self {
        let (store, writer) = kube::runtime::reflector::store();
        Feed {
            store,
            writer,
            routes: Vec::new(),
        }
    }

    /// A trigger stream of the objects `accept` takes.
    fn route(&mut self, accept: fn(&K) -> bool) -> Trigger<K> {
        let (sender, receiver) = futures::channel::mpsc::channel(TRIGGER_BUFFER);
        self.routes.push((accept, sender));
        receiver
    }

    /// Watches until shutdown, with the watcher's backoff after errors.
    async fn run(self, api: Api<K>, config: watcher::Config, strip: fn(&mut K)) {
        use futures::SinkExt;
        use kube::runtime::WatchStreamExt;
        let mut routes = self.routes;
        let stream = watcher(api, config)
            .default_backoff()
            .modify(strip)
            .reflect(self.writer)
            .touched_objects();
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            let object = match item {
                Ok(object) => object,
                Err(error) => {
                    warn!(kind = %K::kind(&()), %error, "watch failed; retrying");
                    continue;
                }
            };
            for (accept, sender) in &mut routes {
                // A controller that stopped (shutdown) no longer takes triggers.
                if accept(&object) && sender.send(Ok(object.clone())).await.is_err() {
                    debug!(kind = %K::kind(&()), "a controller stopped taking triggers");
                }
            }
        }
    }
}

fn everything<K>(_: &K) -> bool {
    true
}

fn owned_by<K: kube::Resource<DynamicType = ()>>(job: &JobState) -> bool {
    let kind = K::kind(&());
    job.owner_references().iter().any(|o| o.kind == kind)
}

fn created_by_schedule<K: kube::Resource>(run: &K) -> bool {
    run.meta()
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(crate::job::LABEL_SCHEDULE))
}

/// The controller of one run kind until shutdown: woken by its runs and by the Jobs they own.
async fn run_controller<K: run::RunKind>(
    runs: Trigger<K>,
    store: Store<K>,
    jobs: Trigger<JobState>,
    context: &Arc<Context>,
) {
    Controller::for_stream(runs, store)
        .owns_stream(jobs)
        .with_config(controller_config())
        .graceful_shutdown_on(shutdown_signal())
        .run(run::reconcile::<K>, run::error_policy::<K>, context.clone())
        .for_each(|result| log_result(K::OP.kind(), result))
        .await
}

/// Tasks that end when their owner is dropped.
struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Runs the five controllers until shutdown. Each kind is watched once: Jobs feed the four run
/// controllers (by owner kind), runs feed their own controller and the Schedule controller.
pub async fn run_controllers(
    client: Client,
    settings: Settings,
    metrics: Metrics,
    cluster: Option<Arc<crate::webhook::lookup::ReflectorLookups>>,
) -> Result<()> {
    let mut jobs = Feed::<JobState>::new();
    let backup_jobs = jobs.route(owned_by::<Backup>);
    let check_jobs = jobs.route(owned_by::<Check>);
    let prune_jobs = jobs.route(owned_by::<Prune>);
    let restore_jobs = jobs.route(owned_by::<Restore>);
    let mut backups = Feed::<Backup>::new();
    let backup_runs = backups.route(everything);
    let scheduled_backups = backups.route(created_by_schedule);
    let mut checks = Feed::<Check>::new();
    let check_runs = checks.route(everything);
    let scheduled_checks = checks.route(created_by_schedule);
    let mut prunes = Feed::<Prune>::new();
    let prune_runs = prunes.route(everything);
    let scheduled_prunes = prunes.route(created_by_schedule);
    let mut restores = Feed::<Restore>::new();
    let restore_runs = restores.route(everything);
    let mut schedules = Feed::<Schedule>::new();
    let schedule_triggers = schedules.route(everything);

    let stores = Stores {
        backups: backups.store.clone(),
        checks: checks.store.clone(),
        prunes: prunes.store.clone(),
        restores: restores.store.clone(),
        jobs: jobs.store.clone(),
        ready: Arc::default(),
        cluster,
    };
    // Ends with the controllers: a replica that steps down must not keep these going.
    let _background = AbortOnDrop(vec![
        tokio::spawn(stores.clone().watch_readiness()),
        tokio::spawn(forget_deleted_schedules(
            schedules.store.clone(),
            metrics.clone(),
        )),
    ]);

    let schedule_controller = Controller::for_stream(schedule_triggers, schedules.store.clone())
        .owns_stream(scheduled_backups)
        .owns_stream(scheduled_checks)
        .owns_stream(scheduled_prunes)
        .with_config(controller_config())
        .graceful_shutdown_on(shutdown_signal());

    let (job_api, job_config) = (
        Api::<JobState>::all(client.clone()),
        watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGER}")),
    );
    let all = watcher::Config::default;
    let feeds = futures::future::join_all([
        jobs.run(job_api, job_config, |j: &mut JobState| {
            strip_meta(&mut j.metadata)
        })
        .boxed(),
        backups
            .run(Api::all(client.clone()), all(), strip_run::<Backup>)
            .boxed(),
        checks
            .run(Api::all(client.clone()), all(), strip_run::<Check>)
            .boxed(),
        prunes
            .run(Api::all(client.clone()), all(), strip_run::<Prune>)
            .boxed(),
        restores
            .run(Api::all(client.clone()), all(), strip_run::<Restore>)
            .boxed(),
        schedules
            .run(Api::all(client.clone()), all(), |s: &mut Schedule| {
                strip_meta(&mut s.metadata)
            })
            .boxed(),
    ]);

    let context = Arc::new(Context::new(client, settings, metrics, stores.clone()));
    info!("reconciling Schedules, Backups, Checks, Prunes and Restores");
    let controllers = async {
        tokio::join!(
            schedule_controller
                .run(schedule::reconcile, schedule::error_policy, context.clone())
                .for_each(|result| log_result(Kind::Schedule, result)),
            run_controller(backup_runs, stores.backups.clone(), backup_jobs, &context),
            run_controller(check_runs, stores.checks.clone(), check_jobs, &context),
            run_controller(prune_runs, stores.prunes.clone(), prune_jobs, &context),
            run_controller(
                restore_runs,
                stores.restores.clone(),
                restore_jobs,
                &context
            ),
        );
    };
    // The watches never end by themselves; the controllers end at shutdown.
    tokio::select! {
        () = controllers => {},
        _ = feeds => {},
    }
    info!("controllers stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_status_wins_until_the_cache_shows_it() {
        let recent: Recent<u32> = Recent::default();
        assert_eq!(recent.freshest("a", Some(&1)), Some(1));
        recent.wrote("a", 2);
        assert_eq!(
            recent.freshest("a", Some(&1)),
            Some(2),
            "cache lags behind the write"
        );
        assert_eq!(recent.freshest("a", Some(&2)), Some(2), "cache caught up");
        assert_eq!(
            recent.freshest("a", Some(&3)),
            Some(3),
            "entry dropped once seen"
        );
    }

    #[test]
    fn one_claim_to_create_a_repository_at_a_time_until_it_ends_or_expires() {
        let claims = CreateClaims::default();
        let hold = Duration::from_secs(60);
        let t0 = std::time::Instant::now();
        assert_eq!(claims.claim("repo", "uid-a", "a/first", t0, hold), None);
        assert_eq!(
            claims.claim("repo", "uid-b", "b/second", t0, hold),
            Some("a/first".into())
        );
        assert_eq!(
            claims.claim("repo", "uid-a", "a/first", t0, hold),
            None,
            "its own"
        );
        assert_eq!(claims.claim("other", "uid-b", "b/second", t0, hold), None);
        claims.release("repo", "uid-b");
        assert_eq!(
            claims.claim("repo", "uid-c", "c/third", t0, hold),
            Some("a/first".into()),
            "only the holder releases"
        );
        claims.release("repo", "uid-a");
        assert_eq!(claims.claim("repo", "uid-c", "c/third", t0, hold), None);
        let later = t0 + hold;
        assert_eq!(
            claims.claim("repo", "uid-d", "d/fourth", later, hold),
            None,
            "expired"
        );
    }

    fn backup_in_state(state: &str) -> Backup {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "backup.appuio.ch/v1alpha1",
            "kind": "Backup",
            "metadata": {
                "name": "nightly-backup-202611260300", "namespace": "team", "uid": "bk-uid",
                "creationTimestamp": "2026-11-26T03:00:00Z",
                "labels": {"backup.appuio.ch/schedule": "nightly"},
                "annotations": {"backup.appuio.ch/tick": "2026-11-26T03:00:00Z", LAST_APPLIED: "{}"},
                "managedFields": [{"manager": "baas"}],
                "ownerReferences": [{"apiVersion": "backup.appuio.ch/v1alpha1", "kind": "Schedule",
                                     "name": "nightly", "uid": "sched-uid", "controller": true}]
            },
            "spec": {"backend": {"s3": {"endpoint": "http://127.0.0.1:9900", "bucket": "team",
                                        "accessKeyIDSecretRef": {"name": "s3", "key": "id"},
                                        "secretAccessKeySecretRef": {"name": "s3", "key": "secret"}}},
                     "promURL": "http://127.0.0.1:19091"},
            "status": {"state": state, "startedAt": "2026-11-26T03:00:01Z",
                       "finishedAt": "2026-11-26T03:00:09Z", "snapshotID": "0123abcd",
                       "jobs": ["nightly-backup-202611260300-backup"], "message": "done",
                       "summary": {"filesNew": 3}, "errors": ["x: permission denied"]}
        }))
        .expect("test backup")
    }

    #[test]
    fn finished_runs_are_cached_as_their_outline() {
        let mut finished = backup_in_state("Succeeded");
        strip_run(&mut finished);
        let status = finished.status.as_ref().expect("status");
        assert_eq!(status.state, Some(crate::crd::RunState::Succeeded));
        assert!(status.started_at.is_some() && status.finished_at.is_some());
        assert!(status.jobs.is_empty() && status.summary.is_none() && status.errors.is_empty());
        assert!(status.message.is_none() && status.snapshot_id.is_none());
        assert_eq!(finished.spec, Default::default());
        // What the Schedule reads of its runs stays.
        assert_eq!(finished.owner_references()[0].uid, "sched-uid");
        assert!(finished.annotations().contains_key("backup.appuio.ch/tick"));
        assert!(finished.labels().contains_key("backup.appuio.ch/schedule"));
        // What nobody reads goes.
        assert!(!finished.annotations().contains_key(LAST_APPLIED));
        assert!(finished.metadata.managed_fields.is_none());
    }

    #[test]
    fn running_runs_are_cached_whole() {
        let mut running = backup_in_state("Running");
        strip_run(&mut running);
        let status = running.status.as_ref().expect("status");
        assert_eq!(status.jobs, ["nightly-backup-202611260300-backup"]);
        assert_eq!(running.spec.backend.s3.bucket, "team");
    }

    #[test]
    fn cached_jobs_keep_metadata_and_status_but_not_the_spec() {
        let job: JobState = serde_json::from_value(serde_json::json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "j", "namespace": "team"},
            "spec": {"template": {"spec": {"containers": [{"name": "agent", "image": "baas"}]}}},
            "status": {"active": 1}
        }))
        .expect("job");
        assert_eq!(job.status.as_ref().and_then(|s| s.active), Some(1));
        let back = job.to_job();
        assert!(back.spec.is_none());
        assert_eq!(back.metadata.name.as_deref(), Some("j"));
        assert_eq!(
            <JobState as kube::Resource>::url_path(&(), Some("team")),
            <Job as kube::Resource>::url_path(&(), Some("team")),
        );
        assert_eq!(<JobState as kube::Resource>::api_version(&()), "batch/v1");
    }

    #[test]
    fn invalid_spec_waits_longer_than_transient_errors() {
        let invalid = requeue_after_error(&Error::InvalidSpec("x".into()));
        let io = requeue_after_error(&Error::Restic("x".into()));
        assert_eq!(invalid, Action::requeue(Duration::from_secs(3600)));
        assert_eq!(io, Action::requeue(Duration::from_secs(15)));
    }
}
