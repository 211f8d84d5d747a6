//! Leader election through a `coordination.k8s.io/v1` Lease, so that of several replicas only
//! one reconciles. Every replica serves the webhook regardless.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tracing::{debug, info, warn};

use crate::{Error, Result};

/// Name of the Lease the replicas compete for.
pub const LEASE_NAME: &str = "baas-operator";
/// How long a lease is valid without renewal.
const LEASE_SECONDS: i32 = 15;
/// How often the holder renews (and others retry).
const RETRY: Duration = Duration::from_secs(5);

/// One replica's claim on the Lease.
pub struct LeaseLock {
    api: Api<Lease>,
    identity: String,
}

/// Whether `identity` may take or keep the lease described by `spec` at `now`.
pub fn may_hold(spec: Option<&LeaseSpec>, identity: &str, now: jiff::Timestamp) -> bool {
    let Some(spec) = spec else {
        return true;
    };
    match spec.holder_identity.as_deref() {
        None | Some("") => true,
        Some(holder) if holder == identity => true,
        Some(_) => {
            let seconds = i64::from(spec.lease_duration_seconds.unwrap_or(LEASE_SECONDS));
            let renewed = spec
                .renew_time
                .as_ref()
                .or(spec.acquire_time.as_ref())
                .map(|t| t.0);
            match renewed {
                Some(renewed) => now.duration_since(renewed).as_secs() > seconds,
                None => true,
            }
        }
    }
}

impl LeaseLock {
    /// A lock on the Lease in `namespace` for this replica.
    pub fn new(client: Client, namespace: &str, identity: String) -> LeaseLock {
        LeaseLock {
            api: Api::namespaced(client, namespace),
            identity,
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
            tokio::time::sleep(RETRY).await;
        }
    }

    /// Renews the Lease; returns an error once leadership is lost, so that the process stops
    /// reconciling (and is restarted) instead of competing with the new leader.
    pub async fn hold(&self) -> Result<()> {
        let mut last_renewal = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(RETRY).await;
            match self.try_hold().await {
                Ok(true) => last_renewal = tokio::time::Instant::now(),
                Ok(false) => {
                    return Err(Error::Leadership(
                        "another replica took over the lease".into(),
                    ));
                }
                Err(error) => {
                    warn!(%error, "renewing the lease failed");
                    if last_renewal.elapsed() > Duration::from_secs(LEASE_SECONDS as u64) {
                        return Err(error);
                    }
                }
            }
        }
    }

    /// Takes or renews the Lease once; `Ok(false)` when another replica holds it. Optimistic
    /// concurrency (the resourceVersion of the replaced object) makes two replicas that race
    /// for an expired lease end with one winner.
    async fn try_hold(&self) -> Result<bool> {
        let now = jiff::Timestamp::now();
        let existing = self.api.get_opt(LEASE_NAME).await?;
        if !may_hold(
            existing.as_ref().and_then(|l| l.spec.as_ref()),
            &self.identity,
            now,
        ) {
            return Ok(false);
        }
        let previous = existing
            .as_ref()
            .and_then(|l| l.spec.clone())
            .unwrap_or_default();
        let taking_over = previous.holder_identity.as_deref() != Some(self.identity.as_str());
        let spec = LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(LEASE_SECONDS),
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
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(error.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> jiff::Timestamp {
        text.parse().expect("test timestamp")
    }

    fn held_by(holder: &str, renewed: &str) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(at(renewed))),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn lease_held_by_other_and_fresh_is_not_taken() {
        let spec = held_by("a", "2026-01-01T00:00:00Z");
        assert!(!may_hold(Some(&spec), "b", at("2026-01-01T00:00:10Z")));
    }

    #[test]
    fn lease_held_by_other_and_expired_is_taken() {
        let spec = held_by("a", "2026-01-01T00:00:00Z");
        assert!(may_hold(Some(&spec), "b", at("2026-01-01T00:00:16Z")));
    }

    #[test]
    fn lease_held_by_self_or_absent_is_kept() {
        let spec = held_by("a", "2026-01-01T00:00:00Z");
        assert!(may_hold(Some(&spec), "a", at("2026-01-01T01:00:00Z")));
        assert!(may_hold(None, "a", at("2026-01-01T01:00:00Z")));
    }
}
