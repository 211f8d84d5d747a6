//! Which claims a backup mounts in which Job, on which node, and which pods' backup commands
//! it runs; and the node a restore into a claim must run on.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use serde::{Deserialize, Serialize};

use super::names::LABEL_RUN;
use crate::crd::{
    ANNOTATION_BACKUP, ANNOTATION_BACKUP_COMMAND, ANNOTATION_BACKUP_COMMAND_CONTAINER,
};

/// Set on a claim by the scheduler when its volume binds on first use (`WaitForFirstConsumer`,
/// e.g. local-path-provisioner): the node the volume lives on. Such a volume can only ever be
/// mounted on that node.
pub const ANNOTATION_SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// A pod (and container) with a backup command; the JSON shape of
/// [`ENV_BACKUP_PODS`](super::env::ENV_BACKUP_PODS).
///
/// The command itself is not here: it may hold a password (`mysqldump -psecret`), and a Job's
/// environment is readable by everyone who may read Jobs. The agent reads the command from
/// the pod's annotation when it runs it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct BackupPod {
    /// Pod name.
    pub pod: String,
    /// Container name.
    pub container: String,
}

/// One Job of a backup.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackupJobPlan {
    /// The node the Job must run on: a ReadWriteOnce claim is in use there, or its volume is
    /// local to that node.
    pub node: Option<String>,
    /// Claims mounted read-only at `/data/<claim>`.
    pub claims: Vec<String>,
    /// Pods whose backup commands this Job runs (all of them go into one Job).
    pub commands: Vec<BackupPod>,
}

/// What one backup does: its Jobs and the claims it cannot back up.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackupPlan {
    /// One Job for the claims any node can mount, one per node that holds claims only it can
    /// mount (in use there, or local to it).
    pub jobs: Vec<BackupJobPlan>,
    /// Claims that cannot be backed up, one sentence each.
    pub problems: Vec<String>,
}

fn pod_is_live(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    pod.metadata.deletion_timestamp.is_none() && matches!(phase, Some("Running" | "Pending"))
}

/// Whether a pod belongs to a Job of a baas run (its template carries the run label).
fn is_agent_pod(pod: &Pod) -> bool {
    pod.metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(LABEL_RUN))
}

fn pod_claims(pod: &Pod) -> impl Iterator<Item = &str> {
    pod.spec
        .iter()
        .flat_map(|spec| spec.volumes.iter().flatten())
        .filter_map(|volume| volume.persistent_volume_claim.as_ref())
        .map(|claim| claim.claim_name.as_str())
}

/// Decides which claims a backup mounts in which Job. Every Bound claim not annotated
/// `appuio.ch/backup: "false"` is backed up: ReadWriteMany and ReadOnlyMany claims go into one
/// shared Job; a ReadWriteOnce claim used by a pod goes into a Job on that pod's node; a claim
/// that is neither shared nor in use goes into the Job of the node its
/// `volume.kubernetes.io/selected-node` annotation names (a node-local volume: a pod anywhere
/// else could never be scheduled), else into the shared Job; a ReadWriteOncePod claim in use
/// cannot be mounted and is a problem. Backup commands of annotated running pods go into the
/// first Job.
pub fn plan_backup(pvcs: &[PersistentVolumeClaim], pods: &[Pod]) -> BackupPlan {
    // Our own agent pods mount claims too; counting them as users would pin a second Job of
    // the same run to their node.
    let live: Vec<&Pod> = pods
        .iter()
        .filter(|p| pod_is_live(p) && !is_agent_pod(p))
        .collect();
    let mut shared = Vec::new();
    let mut pinned: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut problems = Vec::new();
    let mut claims: Vec<&PersistentVolumeClaim> = pvcs.iter().collect();
    claims.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    for pvc in claims {
        let Some(name) = pvc.metadata.name.clone() else {
            continue;
        };
        let excluded = pvc
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_BACKUP))
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("false"));
        let bound = pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
        if excluded || !bound || pvc.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let modes: Vec<&str> = pvc
            .spec
            .as_ref()
            .and_then(|s| s.access_modes.as_ref())
            .map(|m| m.iter().map(String::as_str).collect())
            .unwrap_or_default();
        let user = live
            .iter()
            .filter(|pod| pod_claims(pod).any(|c| c == name))
            .find_map(|pod| {
                let node = pod.spec.as_ref()?.node_name.clone()?;
                Some((pod.metadata.name.clone().unwrap_or_default(), node))
            });
        let shareable = modes.contains(&"ReadWriteMany") || modes.contains(&"ReadOnlyMany");
        match user {
            Some((pod, _)) if !shareable && modes.contains(&"ReadWriteOncePod") => {
                problems.push(format!(
                    "persistentvolumeclaim {name}: ReadWriteOncePod and in use by pod {pod}, so no backup Job can mount it"
                ));
            }
            Some((_, node)) if !shareable => pinned.entry(node).or_default().push(name),
            None if !shareable => match selected_node(pvc) {
                Some(node) => pinned.entry(node).or_default().push(name),
                None => shared.push(name),
            },
            _ => shared.push(name),
        }
    }
    let mut jobs = Vec::new();
    if !shared.is_empty() {
        jobs.push(BackupJobPlan {
            node: None,
            claims: shared,
            commands: Vec::new(),
        });
    }
    for (node, claims) in pinned {
        jobs.push(BackupJobPlan {
            node: Some(node),
            claims,
            commands: Vec::new(),
        });
    }
    let commands = backup_commands(&live);
    if !commands.is_empty() {
        match jobs.first_mut() {
            Some(job) => job.commands = commands,
            None => jobs.push(BackupJobPlan {
                node: None,
                claims: Vec::new(),
                commands,
            }),
        }
    }
    BackupPlan { jobs, problems }
}

/// The node a claim's volume was provisioned on, from the scheduler's annotation.
fn selected_node(pvc: &PersistentVolumeClaim) -> Option<String> {
    pvc.metadata
        .annotations
        .as_ref()?
        .get(ANNOTATION_SELECTED_NODE)
        .map(|node| node.trim())
        .filter(|node| !node.is_empty())
        .map(String::from)
}

/// The backup command a pod's `appuio.ch/backupcommand` annotation holds, trimmed; `None`
/// when it has none or an empty one. Planning reads it to pick the pods, the agent to run it.
pub fn backup_command(pod: &Pod) -> Option<&str> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(ANNOTATION_BACKUP_COMMAND)
        .map(|command| command.trim())
        .filter(|command| !command.is_empty())
}

fn backup_commands(live: &[&Pod]) -> Vec<BackupPod> {
    let mut commands: Vec<BackupPod> = live
        .iter()
        .filter(|pod| pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .filter_map(|pod| {
            backup_command(pod)?;
            let annotations = pod.metadata.annotations.as_ref()?;
            let container = match annotations.get(ANNOTATION_BACKUP_COMMAND_CONTAINER) {
                Some(container) if !container.trim().is_empty() => container.trim().to_string(),
                _ => pod.spec.as_ref()?.containers.first()?.name.clone(),
            };
            Some(BackupPod {
                pod: pod.metadata.name.clone()?,
                container,
            })
        })
        .collect();
    commands.sort_by(|a, b| a.pod.cmp(&b.pod));
    commands
}

/// The node a restore into `claim` must run on: where a live pod has the claim attached, so
/// that a ReadWriteOnce volume in use can still be written. `None` when no pod uses it.
pub fn node_using_claim(claim: &str, pods: &[Pod]) -> Option<String> {
    pods.iter()
        .filter(|pod| pod_is_live(pod))
        .filter(|pod| pod_claims(pod).any(|c| c == claim))
        .find_map(|pod| pod.spec.as_ref()?.node_name.clone())
}
