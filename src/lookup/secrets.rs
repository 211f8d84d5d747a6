//! Secrets at review time. No Secret is watched or cached: before the rules run, the webhook
//! learns which Secrets they will ask about, fetches each with one `get` (in parallel, with a
//! short timeout), and hands the key names to the rules through [`Lookups`], so they stay pure.
//! Values are skipped while the answer is parsed and never logged.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use kube::Client;
use kube::api::GetParams;
use kube::client::Body;
use serde::Deserialize;
use serde::de::IgnoredAny;

use super::{Lookups, PvcInfo, PvcLookup, SecretInfo, StaticLookups};

/// How long a review waits for one Secret. The API server gives the whole webhook call
/// `timeoutSeconds: 5`; the gets run in parallel, so a review waits this long at most.
pub const SECRET_GET_TIMEOUT: Duration = Duration::from_secs(2);

/// Where the key names of a Secret come from while a review waits.
pub trait SecretSource: Send + Sync {
    /// The Secret `namespace/name`: its keys, `Absent`, or `Unknown` when it cannot be told
    /// in time.
    fn secret_keys<'a>(&'a self, namespace: &'a str, name: &'a str) -> BoxFuture<'a, SecretInfo>;
}

impl SecretSource for StaticLookups {
    fn secret_keys<'a>(&'a self, namespace: &'a str, name: &'a str) -> BoxFuture<'a, SecretInfo> {
        futures::future::ready(Lookups::secret(self, namespace, name)).boxed()
    }
}

/// Secrets from the API server: one `GET /api/v1/namespaces/<ns>/secrets/<name>` each, never a
/// list or a watch, so the operator needs only `get` on Secrets.
#[derive(Clone)]
pub struct ApiSecrets {
    client: Client,
    timeout: Duration,
}

impl ApiSecrets {
    /// Gets with [`SECRET_GET_TIMEOUT`].
    pub fn new(client: Client) -> Self {
        Self::with_timeout(client, SECRET_GET_TIMEOUT)
    }

    /// Gets that give up after `timeout`.
    pub fn with_timeout(client: Client, timeout: Duration) -> Self {
        Self { client, timeout }
    }

    async fn get(&self, namespace: &str, name: &str) -> Result<SecretInfo, String> {
        let path = format!("/api/v1/namespaces/{namespace}/secrets");
        let request = kube::core::Request::new(path)
            .get(name, &GetParams::default())
            .map_err(|e| e.to_string())?;
        let response = self
            .client
            .send(request.map(Body::from))
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        if status == http::StatusCode::NOT_FOUND {
            return Ok(SecretInfo::Absent);
        }
        if !status.is_success() {
            // Error bodies are Status objects without values, but the code says enough.
            return Err(format!("the API server answered {status}"));
        }
        let bytes = response
            .into_body()
            .collect_bytes()
            .await
            .map_err(|e| e.to_string())?;
        // Parsed here rather than by the client, which logs a body it cannot parse, and with
        // every value skipped, so none is ever decoded or kept.
        let keys: SecretKeys =
            serde_json::from_slice(&bytes).map_err(|_| "the answer is not a Secret".to_string())?;
        Ok(SecretInfo::Keys(
            keys.data.unwrap_or_default().into_keys().collect(),
        ))
    }
}

/// A Secret as far as admission cares: the names of its data keys.
#[derive(Deserialize)]
struct SecretKeys {
    #[serde(default)]
    data: Option<BTreeMap<String, IgnoredAny>>,
}

impl SecretSource for ApiSecrets {
    fn secret_keys<'a>(&'a self, namespace: &'a str, name: &'a str) -> BoxFuture<'a, SecretInfo> {
        async move {
            // The rules ask only about well-formed names; this keeps any other out of a URL.
            if crate::crd::names::dns_subdomain_problem(name).is_some() {
                return SecretInfo::Unknown;
            }
            match tokio::time::timeout(self.timeout, self.get(namespace, name)).await {
                Ok(Ok(info)) => info,
                Ok(Err(error)) => {
                    tracing::warn!(namespace, name, %error, "cannot get a referenced Secret; its keys are not checked");
                    SecretInfo::Unknown
                }
                Err(_) => {
                    tracing::warn!(namespace, name, timeout = ?self.timeout, "getting a referenced Secret timed out; its keys are not checked");
                    SecretInfo::Unknown
                }
            }
        }
        .boxed()
    }
}

/// Fetches every `(namespace, name)` at once.
pub async fn fetch_secrets(
    source: &dyn SecretSource,
    wanted: BTreeSet<(String, String)>,
) -> BTreeMap<(String, String), SecretInfo> {
    let answers =
        futures::future::join_all(wanted.iter().map(|(ns, name)| source.secret_keys(ns, name)))
            .await;
    wanted.into_iter().zip(answers).collect()
}

/// Lookups that answer nothing about Secrets but note every one asked about; the rest is
/// `cluster`'s. A first pass of the rules with it tells which Secrets to fetch, so that list
/// is never written a second time beside the rules.
pub struct RecordingLookups<'a> {
    cluster: &'a dyn Lookups,
    asked: Mutex<BTreeSet<(String, String)>>,
}

impl<'a> RecordingLookups<'a> {
    /// Records over `cluster`.
    pub fn new(cluster: &'a dyn Lookups) -> Self {
        Self {
            cluster,
            asked: Mutex::default(),
        }
    }

    /// The Secrets asked about, as `(namespace, name)`.
    pub fn asked(self) -> BTreeSet<(String, String)> {
        self.asked
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Lookups for RecordingLookups<'_> {
    fn secret(&self, namespace: &str, name: &str) -> SecretInfo {
        self.asked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((namespace.to_string(), name.to_string()));
        SecretInfo::Unknown
    }

    fn pvc(&self, namespace: &str, name: &str) -> PvcLookup {
        self.cluster.pvc(namespace, name)
    }

    fn pvcs(&self, namespace: &str) -> Option<Vec<PvcInfo>> {
        self.cluster.pvcs(namespace)
    }

    fn ready(&self) -> bool {
        self.cluster.ready()
    }
}

/// Lookups whose Secrets were fetched for this review; the rest is `cluster`'s.
pub struct FetchedLookups<'a> {
    cluster: &'a dyn Lookups,
    secrets: BTreeMap<(String, String), SecretInfo>,
}

impl<'a> FetchedLookups<'a> {
    /// `secrets` as fetched, over `cluster`.
    pub fn new(cluster: &'a dyn Lookups, secrets: BTreeMap<(String, String), SecretInfo>) -> Self {
        Self { cluster, secrets }
    }
}

impl Lookups for FetchedLookups<'_> {
    fn secret(&self, namespace: &str, name: &str) -> SecretInfo {
        self.secrets
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
            .unwrap_or(SecretInfo::Unknown)
    }

    fn pvc(&self, namespace: &str, name: &str) -> PvcLookup {
        self.cluster.pvc(namespace, name)
    }

    fn pvcs(&self, namespace: &str) -> Option<Vec<PvcInfo>> {
        self.cluster.pvcs(namespace)
    }

    fn ready(&self) -> bool {
        self.cluster.ready()
    }
}

#[cfg(test)]
mod tests;
