//! Prometheus metrics of the reconciler, registered in the registry the operator's `/metrics`
//! endpoint serves (shared with the webhook).

use crate::crd::Kind;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// The reconciler's metrics. Cheap to clone: every field is a shared handle.
#[derive(Clone, Debug)]
pub struct Metrics {
    /// Reconciles by kind.
    pub reconciles: Family<Labels, Counter>,
    /// Failed reconciles by kind and error category.
    pub reconcile_errors: Family<Labels, Counter>,
    /// Runs that reached a terminal state, by kind and state.
    pub runs_finished: Family<Labels, Counter>,
    /// Unix time of the last Succeeded backup, by namespace and Schedule.
    pub last_successful_backup: Family<Labels, Gauge>,
    /// Unix time a Schedule with a backup or verify section was created: the age an alert
    /// measures while the Schedule has never succeeded.
    pub schedule_created: Family<Labels, Gauge>,
    /// Unix time the newest snapshot a successful verification proved to restore was taken,
    /// by namespace and Schedule.
    pub last_verified_backup: Family<Labels, Gauge>,
    /// The Schedule's `verify.maxAge` in seconds: the age of the newest verified snapshot at
    /// which the alert fires.
    pub verify_max_age: Family<Labels, Gauge>,
    /// The (namespace, Schedule) pairs the gauges above hold, so a deleted Schedule's
    /// series can be removed instead of alerting forever.
    schedules: Arc<Mutex<BTreeSet<(String, String)>>>,
    /// Seconds from a cron tick to the creation of the run's first Job.
    pub tick_to_job_seconds: Histogram,
    /// Requests sent to the Kubernetes API, by HTTP method and resource.
    pub api_requests: Family<Labels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let buckets = [0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0];
        Metrics {
            reconciles: Family::default(),
            reconcile_errors: Family::default(),
            runs_finished: Family::default(),
            last_successful_backup: Family::default(),
            schedule_created: Family::default(),
            last_verified_backup: Family::default(),
            verify_max_age: Family::default(),
            schedules: Arc::default(),
            tick_to_job_seconds: Histogram::new(buckets),
            api_requests: Family::default(),
        }
    }
}

impl Metrics {
    /// Creates the metrics and registers them under the `baas_` prefix.
    pub fn register(registry: &mut Registry) -> Metrics {
        let metrics = Metrics::default();
        let registry = registry.sub_registry_with_prefix("baas");
        registry.register(
            "reconciles",
            "Reconciles by kind",
            metrics.reconciles.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Failed reconciles by kind and error category",
            metrics.reconcile_errors.clone(),
        );
        registry.register(
            "runs_finished",
            "Runs that ended, by kind and state",
            metrics.runs_finished.clone(),
        );
        registry.register(
            "last_successful_backup_timestamp_seconds",
            "Unix time when the last Succeeded backup of a Schedule finished",
            metrics.last_successful_backup.clone(),
        );
        registry.register(
            "schedule_created_timestamp_seconds",
            "Unix time when a Schedule with a backup or verify section was created",
            metrics.schedule_created.clone(),
        );
        registry.register(
            "last_verified_backup_timestamp_seconds",
            "Unix time when the newest snapshot that a verification proved to restore was taken",
            metrics.last_verified_backup.clone(),
        );
        registry.register(
            "verify_max_age_seconds",
            "How old the newest verified snapshot of a Schedule may be (its verify.maxAge)",
            metrics.verify_max_age.clone(),
        );
        registry.register(
            "tick_to_job_seconds",
            "Seconds from a cron tick to the creation of its run's first Job",
            metrics.tick_to_job_seconds.clone(),
        );
        registry.register(
            "kube_api_requests",
            "Requests the operator sent to the Kubernetes API, by HTTP method and resource",
            metrics.api_requests.clone(),
        );
        metrics
    }

    /// Counts one reconcile of `kind`.
    pub fn reconciled(&self, kind: Kind) {
        self.reconciles
            .get_or_create(&vec![("kind", kind.to_string())])
            .inc();
    }

    /// Counts one failed reconcile.
    pub fn failed(&self, kind: Kind, category: &str) {
        self.reconcile_errors
            .get_or_create(&vec![
                ("kind", kind.to_string()),
                ("category", category.to_string()),
            ])
            .inc();
    }

    /// Records a Schedule's backup: when it was created and, once there is one, when its last
    /// Succeeded backup finished.
    pub fn schedule_backup(
        &self,
        namespace: &str,
        schedule: &str,
        created: i64,
        last_success: Option<i64>,
    ) {
        let labels = vec![
            ("namespace", namespace.to_string()),
            ("schedule", schedule.to_string()),
        ];
        self.schedule_created.get_or_create(&labels).set(created);
        if let Some(success) = last_success {
            self.last_successful_backup
                .get_or_create(&labels)
                .set(success);
        }
        if let Ok(mut known) = self.schedules.lock() {
            known.insert((namespace.to_string(), schedule.to_string()));
        }
    }

    /// Records a Schedule's verification: when it was created, the bound of its alert and, once
    /// a verification has succeeded, when the newest snapshot it proved was taken.
    pub fn schedule_verify(
        &self,
        namespace: &str,
        schedule: &str,
        created: i64,
        max_age_seconds: i64,
        last_verified: Option<i64>,
    ) {
        let labels = vec![
            ("namespace", namespace.to_string()),
            ("schedule", schedule.to_string()),
        ];
        self.schedule_created.get_or_create(&labels).set(created);
        self.verify_max_age
            .get_or_create(&labels)
            .set(max_age_seconds);
        if let Some(verified) = last_verified {
            self.last_verified_backup
                .get_or_create(&labels)
                .set(verified);
        }
        if let Ok(mut known) = self.schedules.lock() {
            known.insert((namespace.to_string(), schedule.to_string()));
        }
    }

    /// Removes the series of every Schedule not in `live`.
    pub fn forget_schedules_except(&self, live: &BTreeSet<(String, String)>) {
        let Ok(mut known) = self.schedules.lock() else {
            return;
        };
        for (namespace, schedule) in known.iter().filter(|k| !live.contains(*k)) {
            let labels = vec![
                ("namespace", namespace.clone()),
                ("schedule", schedule.clone()),
            ];
            self.schedule_created.remove(&labels);
            self.last_successful_backup.remove(&labels);
            self.last_verified_backup.remove(&labels);
            self.verify_max_age.remove(&labels);
        }
        known.retain(|k| live.contains(k));
    }

    /// Counts one run that ended.
    pub fn finished(&self, kind: Kind, state: &str) {
        self.runs_finished
            .get_or_create(&vec![
                ("kind", kind.to_string()),
                ("state", state.to_string()),
            ])
            .inc();
    }
}

/// A tower layer that counts every request the Kubernetes client sends, so API load per tick
/// can be measured from the operator itself.
#[derive(Clone, Debug)]
pub struct CountRequestsLayer {
    counter: Family<Labels, Counter>,
}

impl CountRequestsLayer {
    /// Counts into the metrics' `api_requests` family.
    pub fn new(metrics: &Metrics) -> Self {
        CountRequestsLayer {
            counter: metrics.api_requests.clone(),
        }
    }
}

impl<S> tower::Layer<S> for CountRequestsLayer {
    type Service = CountRequests<S>;
    fn layer(&self, inner: S) -> Self::Service {
        CountRequests {
            inner,
            counter: self.counter.clone(),
        }
    }
}

/// The service of [`CountRequestsLayer`].
#[derive(Clone, Debug)]
pub struct CountRequests<S> {
    inner: S,
    counter: Family<Labels, Counter>,
}

impl<S, B> tower::Service<http::Request<B>> for CountRequests<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let verb = match (request.method().as_str(), request.uri().query()) {
            ("GET", Some(q)) if q.contains("watch=true") => "WATCH".to_string(),
            (method, _) => method.to_string(),
        };
        let resource = resource_of(request.uri().path());
        self.counter
            .get_or_create(&vec![("method", verb), ("resource", resource)])
            .inc();
        self.inner.call(request)
    }
}

/// The resource a Kubernetes API path is about, with its subresource (`jobs`,
/// `backups/status`), so that API load can be told apart by what it writes. The set of
/// values is bounded by the resources the operator uses, never by object names.
pub fn resource_of(path: &str) -> String {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest = match segments.as_slice() {
        ["api", _version, rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        _ => return "other".to_string(),
    };
    let rest = match rest {
        ["namespaces", _namespace, inner @ ..] if !inner.is_empty() => inner,
        other => other,
    };
    match rest {
        [] => "other".to_string(),
        [resource] | [resource, _] => (*resource).to_string(),
        [resource, _, subresource, ..] => format!("{resource}/{subresource}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_paths_name_their_resource_not_their_object() {
        let cases = [
            ("/api/v1/namespaces/ns/pods", "pods"),
            ("/api/v1/namespaces/ns/pods/db-0", "pods"),
            ("/api/v1/namespaces/ns/pods/db-0/exec", "pods/exec"),
            ("/apis/batch/v1/jobs", "jobs"),
            ("/apis/batch/v1/namespaces/ns/jobs", "jobs"),
            (
                "/apis/backup.appuio.ch/v1alpha1/namespaces/ns/backups/b-1/status",
                "backups/status",
            ),
            ("/apis/events.k8s.io/v1/namespaces/ns/events", "events"),
            ("/api/v1/namespaces", "namespaces"),
            ("/api/v1/namespaces/ns", "namespaces"),
            (
                "/apis/coordination.k8s.io/v1/namespaces/ns/leases/baas",
                "leases",
            ),
            ("/version", "other"),
        ];
        for (path, resource) in cases {
            assert_eq!(resource_of(path), resource, "{path}");
        }
    }

    #[test]
    fn registered_metrics_appear_in_the_text_exposition() {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        metrics.finished(Kind::Backup, "PartiallySucceeded");
        metrics.reconciled(Kind::Schedule);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        assert!(
            text.contains(
                "baas_runs_finished_total{kind=\"Backup\",state=\"PartiallySucceeded\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("baas_reconciles_total{kind=\"Schedule\"} 1"),
            "{text}"
        );
    }

    fn exposition(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).expect("encode");
        text
    }

    #[test]
    fn schedule_that_never_succeeded_still_has_a_series_to_alert_on() {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        metrics.schedule_backup("shop", "nightly", 1_700_000_000, None);
        let text = exposition(&registry);
        assert!(
            text.contains(
                "baas_schedule_created_timestamp_seconds{namespace=\"shop\",schedule=\"nightly\"} 1700000000"
            ),
            "{text}"
        );
        assert!(
            !text.contains("baas_last_successful_backup_timestamp_seconds{"),
            "{text}"
        );
        metrics.schedule_backup("shop", "nightly", 1_700_000_000, Some(1_700_086_400));
        assert!(
            exposition(&registry).contains(
                "baas_last_successful_backup_timestamp_seconds{namespace=\"shop\",schedule=\"nightly\"} 1700086400"
            )
        );
    }

    #[test]
    fn deleted_schedule_loses_its_series() {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        metrics.schedule_backup("shop", "nightly", 1, Some(2));
        metrics.schedule_backup("shop", "weekly", 1, Some(2));
        let live = BTreeSet::from([("shop".to_string(), "weekly".to_string())]);
        metrics.forget_schedules_except(&live);
        let text = exposition(&registry);
        assert!(!text.contains("schedule=\"nightly\""), "{text}");
        assert!(text.contains("schedule=\"weekly\""), "{text}");
    }
}
