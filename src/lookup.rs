//! What the webhook knows about the cluster: Secrets (key names only), PVCs and the pods that
//! mount them. Validators ask through [`Lookups`], so they stay pure and are tested with
//! [`StaticLookups`]. In production PVCs and pods come from [`ReflectorLookups`], watch caches
//! that no review waits for; Secrets are never cached: the few a review names are fetched
//! before its rules run ([`secrets`]).

mod secrets;

pub use secrets::{
    ApiSecrets, FetchedLookups, RecordingLookups, SECRET_GET_TIMEOUT, SecretSource, fetch_secrets,
};

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

/// What is known about a Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretInfo {
    /// The Secret exists with these data keys.
    Keys(BTreeSet<String>),
    /// The API server has no such Secret (it may still be created later).
    Absent,
    /// Nothing is known (the get failed or timed out, or nobody fetched it).
    Unknown,
}

/// How a PVC can be mounted, as far as restores and backups care.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PvcInfo {
    /// Name of the claim.
    pub name: String,
    /// `spec.accessModes`, for example `ReadWriteOnce`.
    pub access_modes: Vec<String>,
    /// `status.phase == Bound`.
    pub bound: bool,
    /// Annotated `appuio.ch/backup: "false"`.
    pub excluded: bool,
    /// Running pods that mount the claim.
    pub used_by: Vec<String>,
}

impl PvcInfo {
    /// Whether the claim has this access mode.
    pub fn has_mode(&self, mode: &str) -> bool {
        self.access_modes.iter().any(|m| m == mode)
    }
}

/// What is known about a PVC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PvcLookup {
    /// The claim exists.
    Found(PvcInfo),
    /// The cache is complete and holds no such claim.
    Absent,
    /// Nothing is known (the cache is not filled yet).
    Unknown,
}

/// The cluster facts validation needs. Implementations answer from memory: what a review must
/// fetch (its Secrets) is fetched before the rules run, so they never wait.
pub trait Lookups: Send + Sync {
    /// The Secret `namespace/name`.
    fn secret(&self, namespace: &str, name: &str) -> SecretInfo;
    /// The PVC `namespace/name`, with the pods that mount it.
    fn pvc(&self, namespace: &str, name: &str) -> PvcLookup;
    /// Every PVC of the namespace (`used_by` may be left empty), or `None` while nothing is
    /// known.
    fn pvcs(&self, namespace: &str) -> Option<Vec<PvcInfo>>;
    /// Whether the caches are filled, for `/readyz`.
    fn ready(&self) -> bool;
}

/// Fixed facts: for tests, and for tools that know the cluster from files.
#[derive(Clone, Debug, Default)]
pub struct StaticLookups {
    /// Secret keys by `(namespace, name)`.
    pub secrets: BTreeMap<(String, String), BTreeSet<String>>,
    /// PVCs by namespace.
    pub pvcs: BTreeMap<String, Vec<PvcInfo>>,
}

impl StaticLookups {
    /// Adds a Secret with these keys.
    pub fn with_secret(mut self, namespace: &str, name: &str, keys: &[&str]) -> Self {
        self.secrets.insert(
            (namespace.into(), name.into()),
            keys.iter().map(|k| k.to_string()).collect(),
        );
        self
    }

    /// Adds a PVC.
    pub fn with_pvc(mut self, namespace: &str, pvc: PvcInfo) -> Self {
        self.pvcs.entry(namespace.into()).or_default().push(pvc);
        self
    }
}

impl Lookups for StaticLookups {
    fn secret(&self, namespace: &str, name: &str) -> SecretInfo {
        match self.secrets.get(&(namespace.to_string(), name.to_string())) {
            Some(keys) => SecretInfo::Keys(keys.clone()),
            None => SecretInfo::Absent,
        }
    }

    fn pvc(&self, namespace: &str, name: &str) -> PvcLookup {
        self.pvcs
            .get(namespace)
            .and_then(|pvcs| pvcs.iter().find(|p| p.name == name))
            .map_or(PvcLookup::Absent, |p| PvcLookup::Found(p.clone()))
    }

    fn pvcs(&self, namespace: &str) -> Option<Vec<PvcInfo>> {
        Some(self.pvcs.get(namespace).cloned().unwrap_or_default())
    }

    fn ready(&self) -> bool {
        true
    }
}

/// Lookups from watch caches of PVCs and Pods in every namespace; pods are kept only with
/// what admission and backup planning read. Secrets are not watched: [`Lookups::secret`]
/// answers `Unknown`, and the webhook fetches the Secrets a review names
/// ([`SecretSource`], [`ApiSecrets`]).
#[derive(Clone)]
pub struct ReflectorLookups {
    pvcs: Store<PersistentVolumeClaim>,
    pods: Store<Pod>,
    ready: Arc<AtomicBool>,
}

impl ReflectorLookups {
    /// Starts the two watches on the Tokio runtime and returns the caches they fill. The
    /// watches retry with backoff for as long as the process runs.
    pub fn start(client: Client) -> Arc<Self> {
        let (pvcs, pvc_writer) = reflector::store();
        let (pods, pod_writer) = reflector::store();
        let config = watcher::Config::default();
        tokio::spawn(
            watcher(
                Api::<PersistentVolumeClaim>::all(client.clone()),
                config.clone(),
            )
            .default_backoff()
            .modify(|pvc: &mut PersistentVolumeClaim| pvc.metadata.managed_fields = None)
            .reflect(pvc_writer)
            .for_each(|event| log_watch_error("persistentvolumeclaims", event.err())),
        );
        tokio::spawn(
            watcher(Api::<Pod>::all(client), config)
                .default_backoff()
                .modify(strip_pod)
                .reflect(pod_writer)
                .for_each(|event| log_watch_error("pods", event.err())),
        );
        let ready = Arc::new(AtomicBool::new(false));
        let (v, p, flag) = (pvcs.clone(), pods.clone(), ready.clone());
        tokio::spawn(async move {
            let filled = v.wait_until_ready().await.is_ok() && p.wait_until_ready().await.is_ok();
            if filled {
                tracing::info!("admission lookups are filled: PVCs and Pods are known");
                flag.store(true, Ordering::Release);
            }
        });
        Arc::new(Self { pvcs, pods, ready })
    }

    /// The cached claims and pods of a namespace, for planning backups without API calls;
    /// `None` until the caches are filled. Pods carry only volumes, node, phase, labels,
    /// container names and the backup-command annotations.
    pub fn namespace_objects(
        &self,
        namespace: &str,
    ) -> Option<(Vec<PersistentVolumeClaim>, Vec<Pod>)> {
        if !self.ready() {
            return None;
        }
        let mine = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
            meta.namespace.as_deref() == Some(namespace)
        };
        let pvcs = self
            .pvcs
            .state()
            .iter()
            .filter(|pvc| mine(&pvc.metadata))
            .map(|pvc| pvc.as_ref().clone())
            .collect();
        let pods = self
            .pods
            .state()
            .iter()
            .filter(|pod| mine(&pod.metadata))
            .map(|pod| pod.as_ref().clone())
            .collect();
        Some((pvcs, pods))
    }

    fn pods_using(&self, namespace: &str, claim: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .pods
            .state()
            .iter()
            .filter(|pod| pod.metadata.namespace.as_deref() == Some(namespace))
            .filter(|pod| pod_is_running(pod) && pod_mounts(pod, claim))
            .filter_map(|pod| pod.metadata.name.clone())
            .collect();
        names.sort();
        names
    }

    /// `with_users` scans every cached pod, so only the restore-target rule asks for it.
    fn info(&self, pvc: &PersistentVolumeClaim, with_users: bool) -> PvcInfo {
        let name = pvc.metadata.name.clone().unwrap_or_default();
        let namespace = pvc.metadata.namespace.clone().unwrap_or_default();
        PvcInfo {
            used_by: if with_users {
                self.pods_using(&namespace, &name)
            } else {
                Vec::new()
            },
            name,
            access_modes: pvc
                .spec
                .as_ref()
                .and_then(|s| s.access_modes.clone())
                .unwrap_or_default(),
            bound: pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound"),
            excluded: pvc
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(crate::crd::ANNOTATION_BACKUP))
                .is_some_and(|v| v == "false"),
        }
    }
}

async fn log_watch_error(resource: &str, error: Option<watcher::Error>) {
    if let Some(error) = error {
        tracing::warn!(resource, %error, "watch for admission lookups failed; retrying");
    }
}

/// Keeps what admission and backup planning read: volumes, node, phase, labels, container
/// names and the backup-command annotations.
fn strip_pod(pod: &mut Pod) {
    pod.metadata.managed_fields = None;
    if let Some(annotations) = pod.metadata.annotations.as_mut() {
        annotations.retain(|key, _| {
            key == crate::crd::ANNOTATION_BACKUP_COMMAND
                || key == crate::crd::ANNOTATION_BACKUP_COMMAND_CONTAINER
        });
    }
    if let Some(spec) = pod.spec.as_mut() {
        for container in &mut spec.containers {
            *container = k8s_openapi::api::core::v1::Container {
                name: std::mem::take(&mut container.name),
                ..Default::default()
            };
        }
        spec.init_containers = None;
        spec.ephemeral_containers = None;
    }
    if let Some(status) = pod.status.as_mut() {
        *status = k8s_openapi::api::core::v1::PodStatus {
            phase: status.phase.take(),
            ..Default::default()
        };
    }
}

fn pod_is_running(pod: &Pod) -> bool {
    !matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

fn pod_mounts(pod: &Pod, claim: &str) -> bool {
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| v.persistent_volume_claim.as_ref())
        .any(|source| source.claim_name == claim)
}

impl Lookups for ReflectorLookups {
    /// Secrets are not cached; see [`ReflectorLookups`].
    fn secret(&self, _namespace: &str, _name: &str) -> SecretInfo {
        SecretInfo::Unknown
    }

    fn pvc(&self, namespace: &str, name: &str) -> PvcLookup {
        if !self.ready() {
            return PvcLookup::Unknown;
        }
        match self.pvcs.get(&ObjectRef::new(name).within(namespace)) {
            Some(pvc) => PvcLookup::Found(self.info(&pvc, true)),
            None => PvcLookup::Absent,
        }
    }

    fn pvcs(&self, namespace: &str) -> Option<Vec<PvcInfo>> {
        if !self.ready() {
            return None;
        }
        let mut infos: Vec<PvcInfo> = self
            .pvcs
            .state()
            .iter()
            .filter(|pvc| pvc.metadata.namespace.as_deref() == Some(namespace))
            .map(|pvc| self.info(pvc, false))
            .collect();
        infos.sort_by(|a, b| a.name.cmp(&b.name));
        Some(infos)
    }

    fn ready(&self) -> bool {
        // Until the first full list of each store has arrived, "not in the cache" means
        // nothing.
        self.ready.load(Ordering::Acquire)
    }
}
