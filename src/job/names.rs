//! Names, labels and owner references of what the operator creates: deterministic, valid DNS
//! labels, so a restarted or second operator finds the objects the first one created instead
//! of duplicating them.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use crate::crd::{Backend, Operation};

/// Marks every object the operator creates.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Value of [`LABEL_MANAGED_BY`].
pub const MANAGER: &str = "baas";
/// On runs created by a Schedule (and their Jobs): the Schedule's name.
pub const LABEL_SCHEDULE: &str = "backup.appuio.ch/schedule";
/// On runs and Jobs: `backup`, `check`, `prune` or `restore`.
pub const LABEL_OPERATION: &str = "backup.appuio.ch/operation";
/// On Jobs and their pods: the name of the run object.
pub const LABEL_RUN: &str = "backup.appuio.ch/run";
/// On runs and Jobs: a hash of the restic repository URL, to find every operation on one
/// repository across namespaces.
pub const LABEL_REPOSITORY: &str = "backup.appuio.ch/repository";
/// The ServiceAccount the agent Jobs run as, created by the operator in each namespace.
pub const AGENT_SERVICE_ACCOUNT: &str = "baas-agent";
/// The longest valid DNS label, the limit for Job names and label values.
pub const MAX_NAME: usize = 63;
/// The restic repository of a backend: `s3:<endpoint>/<bucket>`.
pub fn repository_url(backend: &Backend) -> String {
    format!(
        "s3:{}/{}",
        backend.s3.endpoint.trim_end_matches('/'),
        backend.s3.bucket
    )
}

/// A label value naming a repository: label values cannot hold a URL, so it is a hash.
pub fn repository_label(url: &str) -> String {
    format!("{:016x}", fnv1a64(url.as_bytes()))
}

/// FNV-1a: stable across releases and platforms, unlike `std`'s hasher, which matters
/// because the hashes end up in names and labels stored in the cluster.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// `<base>-<suffix>` as a valid DNS label of at most 63 characters. When it would be longer,
/// or when the base had characters a label cannot hold (a run `a.b` beside a run `a-b`), the
/// base is cut or rewritten and a hash of the whole base keeps names of different bases apart.
pub fn dns_label(base: &str, suffix: &str) -> String {
    let clean: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let full = format!("{clean}-{suffix}");
    if full.len() <= MAX_NAME && clean == base {
        return full;
    }
    let hash = format!("{:08x}", fnv1a64(base.as_bytes()) as u32);
    let room = MAX_NAME - suffix.len() - hash.len() - 2;
    let cut = clean[..room.min(clean.len())].trim_end_matches('-');
    format!("{cut}-{hash}-{suffix}")
}

/// Name of the run a Schedule creates for a tick: `<schedule>-<op>-<yyyymmddhhmm>`. The same
/// tick always gives the same name, so a restarted or second operator cannot duplicate it.
pub fn run_name(schedule: &str, op: Operation, tick: jiff::Timestamp) -> String {
    let stamp = tick.strftime("%Y%m%d%H%M").to_string();
    dns_label(schedule, &format!("{}-{stamp}", op.as_str()))
}

/// Name of a run's Job; `node` is set for a backup Job pinned to a node.
pub fn job_name(run: &str, op: Operation, node: Option<&str>) -> String {
    match node {
        None => dns_label(run, op.as_str()),
        Some(node) => dns_label(
            run,
            &format!("{}-{:08x}", op.as_str(), fnv1a64(node.as_bytes()) as u32),
        ),
    }
}

/// The host name of a Job's pod. restic writes it into every lock it takes, so it names the
/// one Job that holds a lock: the Job's name (readable in `restic list locks` output and
/// error messages) and a hash of its namespace, run UID and name, since Job names repeat
/// across namespaces that share a repository and across runs of the same name. The agent
/// finds the Job by this name in its pod template and so tells a lock of a finished run from
/// one of a live run (docs/troubleshooting.md).
pub fn agent_hostname(run: &RunMeta, job_name: &str) -> String {
    let identity = format!("{}/{}/{job_name}", run.namespace, run.uid);
    dns_label(job_name, &format!("{:016x}", fnv1a64(identity.as_bytes())))
}

/// The identity of a run object, for owner references, labels and names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunMeta {
    /// The operation, which also gives the kind.
    pub op: Operation,
    /// Name of the run object.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// Its UID (owner references need it).
    pub uid: String,
    /// The Schedule that created it, if any.
    pub schedule: Option<String>,
}

impl RunMeta {
    /// The controller owner reference that makes the run own its Jobs.
    pub fn owner_reference(&self) -> OwnerReference {
        OwnerReference {
            api_version: format!("{}/{}", crate::crd::GROUP, crate::crd::VERSION),
            kind: self.op.kind().as_str().into(),
            name: self.name.clone(),
            uid: self.uid.clone(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }
}

/// Labels of a run's Jobs and pods.
pub fn run_labels(run: &RunMeta, backend: &Backend) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        (LABEL_MANAGED_BY.to_string(), MANAGER.to_string()),
        (LABEL_OPERATION.to_string(), run.op.as_str().to_string()),
        (LABEL_RUN.to_string(), label_value(&run.name)),
        (
            LABEL_REPOSITORY.to_string(),
            repository_label(&repository_url(backend)),
        ),
    ]);
    if let Some(schedule) = &run.schedule {
        labels.insert(LABEL_SCHEDULE.to_string(), label_value(schedule));
    }
    labels
}

/// Object names can be longer than label values; a long one is hashed into a fitting value.
pub fn label_value(name: &str) -> String {
    if name.len() <= MAX_NAME {
        name.to_string()
    } else {
        let hash = format!("{:08x}", fnv1a64(name.as_bytes()) as u32);
        format!(
            "{}-{hash}",
            name[..MAX_NAME - 9].trim_end_matches(['-', '.'])
        )
    }
}
