//! Leader election through a `coordination.k8s.io/v1` Lease, so that of several replicas only
//! one reconciles. Every replica serves the webhook regardless.
//!
//! The timings follow client-go: a holder that has not renewed within the renew deadline
//! stops writing, and only a lease duration later may another replica take over, so that the
//! two never act at once. The gap between the two (5 s by default) covers a renewal that was
//! on its way when the holder stalled. A lease's age is measured from when this replica saw it
//! change, on this replica's own clock: the holder's clock may be off by any amount.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::{Error, Result};

pub mod fence;

/// Name of the Lease the replicas compete for.
pub const LEASE_NAME: &str = "baas-operator";

/// How long the lease lasts, how soon its holder must have renewed, and how often everyone
/// tries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timings {
    /// How long another replica waits, after it last saw the lease change, before it takes it.
    pub lease: Duration,
    /// How long the holder keeps acting without a successful renewal.
    pub renew_deadline: Duration,
    /// The pause between two attempts to take or renew the lease.
    pub retry: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Timings {
            lease: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry: Duration::from_secs(2),
        }
    }
}

impl Timings {
    /// Checks that a stalled holder stops before another may take over; the error names the
    /// flags.
    pub fn checked(self) -> Result<Timings> {
        if self.renew_deadline.is_zero() || self.retry.is_zero() {
            return Err(Error::InvalidSpec(
                "--lease-renew-deadline and --lease-retry-period must be positive".into(),
            ));
        }
        if self.renew_deadline >= self.lease {
            return Err(Error::InvalidSpec(format!(
                "--lease-renew-deadline ({}s) must be shorter than --lease-duration ({}s): \
                 otherwise a stalled leader and its successor act at the same time",
                self.renew_deadline.as_secs(),
                self.lease.as_secs()
            )));
        }
        if self.retry >= self.renew_deadline {
            return Err(Error::InvalidSpec(format!(
                "--lease-retry-period ({}s) must be shorter than --lease-renew-deadline ({}s): \
                 otherwise the leader cannot renew in time",
                self.retry.as_secs(),
                self.renew_deadline.as_secs()
            )));
        }
        Ok(self)
    }
}

/// Whether this replica may act as the leader right now: it renewed the lease within the
/// renew deadline. Shared by the lease loop, which records renewals, and by every write the
/// reconciler makes, which checks it.
#[derive(Clone, Debug)]
pub struct Leadership {
    renewed: Arc<Mutex<Option<Instant>>>,
    renew_deadline: Duration,
}

impl Leadership {
    /// Not leading, with the deadline of `timings`.
    pub fn new(timings: Timings) -> Leadership {
        Leadership {
            renewed: Arc::default(),
            renew_deadline: timings.renew_deadline,
        }
    }

    /// Always leading: for a single replica without election.
    pub fn unconditional() -> Leadership {
        Leadership {
            renewed: Arc::default(),
            renew_deadline: Duration::MAX,
        }
    }

    /// Whether writes are allowed now.
    pub fn is_current(&self) -> bool {
        self.is_current_at(Instant::now())
    }

    fn is_current_at(&self, now: Instant) -> bool {
        if self.renew_deadline == Duration::MAX {
            return true;
        }
        let Ok(renewed) = self.renewed.lock() else {
            return false;
        };
        renewed.is_some_and(|at| now.saturating_duration_since(at) < self.renew_deadline)
    }

    fn renewed_at(&self, at: Instant) {
        if let Ok(mut renewed) = self.renewed.lock() {
            *renewed = Some(at);
        }
    }

    fn lost(&self) {
        if let Ok(mut renewed) = self.renewed.lock() {
            *renewed = None;
        }
    }
}

/// What this replica last saw of the Lease, and when by its own clock.
#[derive(Clone, Debug, PartialEq)]
struct Observed {
    holder: Option<String>,
    renewed: Option<MicroTime>,
    resource_version: Option<String>,
}

/// One replica's claim on the Lease.
pub struct LeaseLock {
    api: Api<Lease>,
    identity: String,
    timings: Timings,
    leadership: Leadership,
    observed: Mutex<Option<(Observed, Instant)>>,
}

/// Whether `identity` may take or keep the lease described by `spec`, which this replica has
/// seen unchanged for `unchanged_for`.
pub fn may_hold(
    spec: Option<&LeaseSpec>,
    identity: &str,
    unchanged_for: Duration,
    default_lease: Duration,
) -> bool {
    let Some(spec) = spec else {
        return true;
    };
    match spec.holder_identity.as_deref() {
        None | Some("") => true,
        Some(holder) if holder == identity => true,
        Some(_) => {
            let lease = spec
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map_or(default_lease, Duration::from_secs);
            unchanged_for > lease
        }
    }
}

impl LeaseLock {
    /// A lock on the Lease in `namespace` for this replica, reporting to `leadership`.
    pub fn new(
        client: Client,
        namespace: &str,
        identity: String,
        timings: Timings,
        leadership: Leadership,
    ) -> LeaseLock {
        LeaseLock {
            api: Api::namespaced(client, namespace),
            identity,
            timings,
            leadership,
            observed: Mutex::new(None),
        }
    }

    /// Waits until this replica holds the Lease.
    pub async fn acquire(&self) -> Result<()> {
        info!(identity = %self.identity, lease = LEASE_NAME, "waiting for leadership");
        loop {
            match self.try_hold().await {
                Ok(true) => {
                    info!(identity = %self.identity, "became leader");
                    return Ok(());
                }
                Ok(false) => debug!("another replica leads"),
                Err(error) => warn!(%error, "leader election failed, retrying"),
            }
            tokio::time::sleep(self.timings.retry).await;
        }
    }

    /// Renews the Lease; returns an error once leadership is lost (another replica took the
    /// lease, or no renewal succeeded within the renew deadline), so that the reconciler stops
    /// instead of competing with the new leader.
    pub async fn hold(&self) -> Result<()> {
        let result = self.renew_until_lost().await;
        self.leadership.lost();
        result
    }

    async fn renew_until_lost(&self) -> Result<()> {
        loop {
            tokio::time::sleep(self.timings.retry).await;
            match self.try_hold().await {
                Ok(true) => {}
                Ok(false) => {
                    return Err(Error::Leadership(
                        "another replica took over the lease".into(),
                    ));
                }
                Err(error) => {
                    warn!(%error, "renewing the lease failed");
                    if !self.leadership.is_current() {
                        return Err(Error::Leadership(format!(
                            "the lease was not renewed within {}s: {error}",
                            self.timings.renew_deadline.as_secs()
                        )));
                    }
                }
            }
        }
    }

    /// How long the lease has looked as it does now to this replica.
    fn unchanged_for(&self, lease: Option<&Lease>, now: Instant) -> Duration {
        let seen = Observed {
            holder: lease
                .and_then(|l| l.spec.as_ref())
                .and_then(|s| s.holder_identity.clone()),
            renewed: lease
                .and_then(|l| l.spec.as_ref())
                .and_then(|s| s.renew_time.clone()),
            resource_version: lease.and_then(|l| l.metadata.resource_version.clone()),
        };
        let Ok(mut observed) = self.observed.lock() else {
            return Duration::ZERO;
        };
        match &*observed {
            Some((last, since)) if *last == seen => now.duration_since(*since),
            _ => {
                *observed = Some((seen, now));
                Duration::ZERO
            }
        }
    }

    /// Takes or renews the Lease once; `Ok(false)` when another replica holds it. Optimistic
    /// concurrency (the resourceVersion of the replaced object) makes two replicas that race
    /// for an expired lease end with one winner.
    async fn try_hold(&self) -> Result<bool> {
        // Taken before the request: the renewal counts from when it was sent, not answered.
        let started = Instant::now();
        let existing = self.api.get_opt(LEASE_NAME).await?;
        let unchanged_for = self.unchanged_for(existing.as_ref(), Instant::now());
        if !may_hold(
            existing.as_ref().and_then(|l| l.spec.as_ref()),
            &self.identity,
            unchanged_for,
            self.timings.lease,
        ) {
            return Ok(false);
        }
        let now = jiff::Timestamp::now();
        let previous = existing
            .as_ref()
            .and_then(|l| l.spec.clone())
            .unwrap_or_default();
        let taking_over = previous.holder_identity.as_deref() != Some(self.identity.as_str());
        let spec = LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: i32::try_from(self.timings.lease.as_secs()).ok(),
            acquire_time: if taking_over {
                Some(MicroTime(now))
            } else {
                previous.acquire_time.clone()
            },
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(
                previous.lease_transitions.unwrap_or(0)
                    + i32::from(taking_over && existing.is_some()),
            ),
            ..LeaseSpec::default()
        };
        let result = match existing {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(LEASE_NAME.into()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(spec),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            Some(mut lease) => {
                lease.spec = Some(spec);
                self.api
                    .replace(LEASE_NAME, &PostParams::default(), &lease)
                    .await
            }
        };
        match result {
            Ok(_) => {
                self.leadership.renewed_at(started);
                Ok(true)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(error.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(15);

    fn held_by(holder: &str) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            // far in the future: the holder's clock must not matter
            renew_time: Some(MicroTime(
                "2099-01-01T00:00:00Z".parse().expect("test timestamp"),
            )),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn lease_held_by_other_is_taken_only_after_it_looked_unchanged_for_its_duration() {
        let spec = held_by("a");
        assert!(!may_hold(Some(&spec), "b", Duration::from_secs(10), LEASE));
        assert!(!may_hold(Some(&spec), "b", Duration::from_secs(15), LEASE));
        assert!(may_hold(Some(&spec), "b", Duration::from_secs(16), LEASE));
    }

    #[test]
    fn lease_held_by_self_or_absent_is_kept() {
        let spec = held_by("a");
        assert!(may_hold(Some(&spec), "a", Duration::ZERO, LEASE));
        assert!(may_hold(None, "a", Duration::ZERO, LEASE));
    }

    #[test]
    fn renew_deadline_must_be_shorter_than_the_lease() {
        assert!(Timings::default().checked().is_ok());
        let equal = Timings {
            lease: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(15),
            retry: Duration::from_secs(2),
        };
        let error = equal.checked().expect_err("equal deadlines are refused");
        assert!(
            error.to_string().contains("--lease-renew-deadline"),
            "{error}"
        );
        let slow_retry = Timings {
            retry: Duration::from_secs(10),
            ..Timings::default()
        };
        assert!(slow_retry.checked().is_err());
    }

    #[test]
    fn leadership_ends_at_the_renew_deadline() {
        let leadership = Leadership::new(Timings::default());
        assert!(!leadership.is_current(), "not leading before a renewal");
        let renewed = Instant::now();
        leadership.renewed_at(renewed);
        assert!(leadership.is_current_at(renewed + Duration::from_secs(9)));
        assert!(
            !leadership.is_current_at(renewed + Duration::from_secs(11)),
            "a stalled leader stops writing"
        );
        leadership.lost();
        assert!(!leadership.is_current_at(renewed));
        assert!(Leadership::unconditional().is_current());
    }

    #[tokio::test]
    async fn a_lease_ages_from_when_this_replica_saw_it_change() {
        let client = Client::try_from(kube::Config::new(
            "http://127.0.0.1:1".parse().expect("test url"),
        ))
        .expect("client");
        let lock = LeaseLock::new(
            client,
            "ns",
            "b".into(),
            Timings::default(),
            Leadership::new(Timings::default()),
        );
        let mut lease = Lease {
            metadata: ObjectMeta {
                resource_version: Some("1".into()),
                ..ObjectMeta::default()
            },
            spec: Some(held_by("a")),
        };
        let start = Instant::now();
        assert_eq!(lock.unchanged_for(Some(&lease), start), Duration::ZERO);
        let later = start + Duration::from_secs(20);
        assert_eq!(
            lock.unchanged_for(Some(&lease), later),
            Duration::from_secs(20)
        );
        // a renewal by the holder restarts the count, whatever time it claims
        lease.metadata.resource_version = Some("2".into());
        assert_eq!(lock.unchanged_for(Some(&lease), later), Duration::ZERO);
    }
}
