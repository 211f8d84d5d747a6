//! The watch fan-out: each kind is watched once, into one cache, and every changed or deleted
//! object is handed to the controllers that react to it.
//!
//! kube-runtime's shared streams (`reflector::store_shared`, `Controller::for_shared_stream`)
//! would do the same with less code, but a shared store hands on only applied objects: a
//! deleted Job would not wake its run, which must then fail instead of waiting for its Job
//! forever. So the watch is ours, with `touched_objects`, which also yields deletions.

use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use kube::runtime::controller::Controller;
use kube::runtime::reflector::Store;
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use tracing::{debug, info, warn};

use super::context::{Context, Settings};
use super::kinds::RunKind;
use super::metrics::Metrics;
use super::stores::{FinishedRuns, JobState, Stores, strip_meta, strip_run};
use super::{run, schedule};
use crate::Result;
use crate::crd::{Backup, Check, Kind, Prune, Restore, Schedule, Verify};
use crate::job::{LABEL_MANAGED_BY, MANAGER};
use crate::serve::shutdown_signal;

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
    writer: Writer<K>,
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

    /// Watches until shutdown, with the watcher's backoff after errors. `cache` applies each
    /// event to the cache (see [`cache_all`]).
    async fn run(
        self,
        api: Api<K>,
        config: watcher::Config,
        strip: fn(&mut K),
        mut cache: impl FnMut(&mut Writer<K>, &watcher::Event<K>) + Send,
    ) {
        use futures::{SinkExt, TryStreamExt};
        use kube::runtime::WatchStreamExt;
        let mut routes = self.routes;
        let mut writer = self.writer;
        let stream = watcher(api, config)
            .default_backoff()
            .modify(strip)
            .map_ok(move |event| {
                cache(&mut writer, &event);
                event
            })
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

impl<K: RunKind> Feed<K> {
    /// Watches every run of the kind, each cached as its outline, except a Schedule's finished
    /// runs, which go to `finished` instead (see [`FinishedRuns::reflect`]).
    async fn run_runs(self, client: Client, finished: FinishedRuns) {
        self.run(
            Api::all(client),
            watcher::Config::default(),
            strip_run::<K>,
            move |writer, event| finished.reflect(writer, event),
        )
        .await;
    }
}

/// Caches every object of the watch.
fn cache_all<K>(writer: &mut Writer<K>, event: &watcher::Event<K>)
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    writer.apply_watcher_event(event);
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
async fn run_controller<K: RunKind>(
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

/// Runs the six controllers until shutdown. Each kind is watched once: Jobs feed the five run
/// controllers (by owner kind), runs feed their own controller and the Schedule controller.
pub async fn run_controllers(
    client: Client,
    settings: Settings,
    metrics: Metrics,
    cluster: Option<Arc<crate::lookup::ReflectorLookups>>,
) -> Result<()> {
    let mut jobs = Feed::<JobState>::new();
    let backup_jobs = jobs.route(owned_by::<Backup>);
    let check_jobs = jobs.route(owned_by::<Check>);
    let prune_jobs = jobs.route(owned_by::<Prune>);
    let restore_jobs = jobs.route(owned_by::<Restore>);
    let verify_jobs = jobs.route(owned_by::<Verify>);
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
    let mut verifies = Feed::<Verify>::new();
    let verify_runs = verifies.route(everything);
    let scheduled_verifies = verifies.route(created_by_schedule);
    let mut schedules = Feed::<Schedule>::new();
    let schedule_triggers = schedules.route(everything);

    let stores = Stores {
        backups: backups.store.clone(),
        checks: checks.store.clone(),
        prunes: prunes.store.clone(),
        restores: restores.store.clone(),
        verifies: verifies.store.clone(),
        jobs: jobs.store.clone(),
        finished: FinishedRuns::default(),
        live_jobs: Default::default(),
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
        .owns_stream(scheduled_verifies)
        .with_config(controller_config())
        .graceful_shutdown_on(shutdown_signal());

    let (job_api, job_config) = (
        Api::<JobState>::all(client.clone()),
        watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGER}")),
    );
    let all = watcher::Config::default;
    // A Schedule's finished runs go to `stores.finished` instead of their caches.
    let finished = &stores.finished;
    let live_jobs = stores.live_jobs.clone();
    let feeds = futures::future::join_all([
        jobs.run(
            job_api,
            job_config,
            |j: &mut JobState| strip_meta(&mut j.metadata),
            move |writer, event| {
                cache_all(writer, event);
                live_jobs.reflect(event, std::time::Instant::now());
            },
        )
        .boxed(),
        backups.run_runs(client.clone(), finished.clone()).boxed(),
        checks.run_runs(client.clone(), finished.clone()).boxed(),
        prunes.run_runs(client.clone(), finished.clone()).boxed(),
        restores.run_runs(client.clone(), finished.clone()).boxed(),
        verifies.run_runs(client.clone(), finished.clone()).boxed(),
        schedules
            .run(
                Api::all(client.clone()),
                all(),
                |s: &mut Schedule| strip_meta(&mut s.metadata),
                cache_all,
            )
            .boxed(),
    ]);

    let context = Arc::new(Context::new(client, settings, metrics, stores.clone()));
    info!("reconciling Schedules, Backups, Checks, Prunes, Restores and Verifies");
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
            run_controller(verify_runs, stores.verifies.clone(), verify_jobs, &context),
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
