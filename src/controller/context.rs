//! What every reconcile gets: the client, settings, metrics, the shared caches and what this
//! process remembers. It sits below the reconcilers and imports none of them.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::controller::Action;
use kube::runtime::events::{Recorder, Reporter};
use tracing::warn;

use super::memory::{CreateClaims, ProvenRepositories, Recent};
use super::metrics::Metrics;
use super::stores::Stores;
use crate::Error;
use crate::job::JobSettings;

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
    /// Repositories a Backup has written a snapshot to; shared with the cache of finished
    /// runs, which proves them from the Backups it keeps.
    pub proven_repositories: Arc<ProvenRepositories>,
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
        let proven_repositories = stores.finished.proven();
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
            proven_repositories,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_spec_waits_longer_than_transient_errors() {
        let invalid = requeue_after_error(&Error::InvalidSpec("x".into()));
        let io = requeue_after_error(&Error::Restic("x".into()));
        assert_eq!(invalid, Action::requeue(Duration::from_secs(3600)));
        assert_eq!(io, Action::requeue(Duration::from_secs(15)));
    }
}
