//! Pure builders for the Kubernetes objects the reconciler creates: names, labels, the choice
//! of PVCs and nodes for a backup, and the Jobs that run `baas agent`. Nothing here talks to
//! the API server, so every decision is unit-tested.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EnvVar, EnvVarSource, ObjectFieldSelector, PersistentVolumeClaim,
    PersistentVolumeClaimVolumeSource, Pod, PodSecurityContext, PodSpec, PodTemplateSpec,
    SecretKeySelector, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde::{Deserialize, Serialize};

use crate::crd::{
    ANNOTATION_BACKUP, ANNOTATION_BACKUP_COMMAND, ANNOTATION_BACKUP_COMMAND_CONTAINER, Backend,
    RestoreSpec, Retention, SecretKeyRef,
};
use crate::{Error, Result};

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
/// Where backed-up PVCs are mounted, one subdirectory per claim.
pub const DATA_DIR: &str = "/data";
/// Where a restore's target PVC is mounted, one subdirectory named after the claim.
pub const RESTORE_DIR: &str = "/restore";
/// The longest valid DNS label, the limit for Job names and label values.
pub const MAX_NAME: usize = 63;
/// Set on a claim by the scheduler when its volume binds on first use (`WaitForFirstConsumer`,
/// e.g. local-path-provisioner): the node the volume lives on. Such a volume can only ever be
/// mounted on that node.
pub const ANNOTATION_SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// The capabilities the agent keeps after dropping all: exactly what reading every file of a
/// volume and restoring files with their owners and modes needs, and all of them in the list
/// that Pod Security `baseline` admits (it refuses `DAC_READ_SEARCH`, which `DAC_OVERRIDE`
/// makes redundant: it bypasses read and directory-search checks as well as write checks).
pub const AGENT_CAPABILITIES: [&str; 4] = [
    // restore: give files back to their original owner and group.
    "CHOWN",
    // backup: read files and enter directories of any owner and mode; restore: write into them.
    "DAC_OVERRIDE",
    // restore: set modes and times of files owned by someone else (after the chown); backup:
    // lets restic read files of other owners with O_NOATIME, so a backup leaves atimes alone.
    "FOWNER",
    // restore: keep setuid/setgid bits, which the kernel clears on a chmod by a caller outside
    // the file's group.
    "FSETID",
];

pub use crate::crd::Operation;

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

/// Environment variable that names the pods whose backup command a backup Job runs.
pub const ENV_BACKUP_PODS: &str = "BAAS_BACKUP_PODS";

/// A pod (and container) with a backup command; the JSON shape of [`ENV_BACKUP_PODS`].
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

/// Operator-wide settings that shape every Job.
#[derive(Clone, Debug)]
pub struct JobSettings {
    /// Image that holds `baas` and `restic`.
    pub image: String,
    /// Longest a Job may run before Kubernetes kills it.
    pub active_deadline_seconds: i64,
    /// Node selector, tolerations, affinity and resources of every Job.
    pub placement: placement::AgentPlacement,
}

impl Default for JobSettings {
    fn default() -> Self {
        JobSettings {
            image: "ghcr.io/appuio/baas:latest".into(),
            active_deadline_seconds: 12 * 3600,
            placement: placement::AgentPlacement::default(),
        }
    }
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

fn plain_env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn secret_env(name: &str, secret: &SecretKeyRef) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.name.clone(),
                key: secret.key.clone(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
    }
}

/// The environment every agent needs: repository, credentials (only as `secretKeyRef`, so the
/// operator never reads a secret), namespace and run name.
fn base_env(run: &RunMeta, backend: &Backend, prom_url: Option<&str>) -> Result<Vec<EnvVar>> {
    let password = backend.repo_password().ok_or_else(|| {
        Error::InvalidSpec(
            "spec.backend.repoPasswordSecretRef: required to open the repository".into(),
        )
    })?;
    let mut env = vec![
        plain_env("RESTIC_REPOSITORY", repository_url(backend)),
        secret_env("RESTIC_PASSWORD", password),
        secret_env("AWS_ACCESS_KEY_ID", &backend.s3.access_key_id_secret_ref),
        secret_env(
            "AWS_SECRET_ACCESS_KEY",
            &backend.s3.secret_access_key_secret_ref,
        ),
        EnvVar {
            name: "BAAS_NAMESPACE".into(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    api_version: None,
                    field_path: "metadata.namespace".into(),
                }),
                ..EnvVarSource::default()
            }),
        },
        plain_env("BAAS_RUN_NAME", run.name.clone()),
    ];
    // The Pushgateway group and the metrics' `schedule` label: without it every Schedule of
    // a namespace would push into one group and overwrite the others.
    if let Some(schedule) = &run.schedule {
        env.push(plain_env("BAAS_SCHEDULE", schedule.clone()));
    }
    if let Some(url) = prom_url.filter(|u| !u.trim().is_empty()) {
        env.push(plain_env("BAAS_PROM_URL", url.trim()));
    }
    Ok(env)
}

/// What differs between the Jobs of the four operations.
struct JobShape {
    name: String,
    env: Vec<EnvVar>,
    /// (claim, mount path, read only)
    mounts: Vec<(String, String, bool)>,
    node: Option<String>,
}

fn build_job(run: &RunMeta, backend: &Backend, shape: JobShape, settings: &JobSettings) -> Job {
    let labels = run_labels(run, backend);
    let hostname = agent_hostname(run, &shape.name);
    let mut env = shape.env;
    // The agent trusts its host name to be its Job's alone only when the operator says so.
    env.push(plain_env("BAAS_HOSTNAME", hostname.clone()));
    let volumes: Vec<Volume> = shape
        .mounts
        .iter()
        .enumerate()
        .map(|(i, (claim, _, read_only))| Volume {
            name: format!("claim-{i}"),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.clone(),
                read_only: Some(*read_only),
            }),
            ..Volume::default()
        })
        .collect();
    let volume_mounts: Vec<VolumeMount> = shape
        .mounts
        .iter()
        .enumerate()
        .map(|(i, (_, path, read_only))| VolumeMount {
            name: format!("claim-{i}"),
            mount_path: path.clone(),
            read_only: Some(*read_only),
            ..VolumeMount::default()
        })
        .collect();
    let container = Container {
        name: "agent".into(),
        image: Some(settings.image.clone()),
        command: Some(vec!["baas".into(), "agent".into(), run.op.as_str().into()]),
        env: Some(env),
        volume_mounts: (!volume_mounts.is_empty()).then_some(volume_mounts),
        termination_message_policy: Some("File".into()),
        termination_message_path: Some("/dev/termination-log".into()),
        // Root inside the container, without privileges, so files of any owner in the PVCs
        // can be read (backup) and written with their original owners (restore). Pod Security
        // `baseline` admits this; `restricted` cannot (it demands a non-root user, who could
        // read only what its ids may and could not restore owners): see docs/install.md.
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            run_as_user: Some(0),
            run_as_non_root: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: Some(AGENT_CAPABILITIES.iter().map(|c| c.to_string()).collect()),
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    };
    let mut job = Job {
        metadata: ObjectMeta {
            name: Some(shape.name),
            namespace: Some(run.namespace.clone()),
            labels: Some(labels.clone()),
            owner_references: Some(vec![run.owner_reference()]),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            // restic is not idempotent enough to retry blindly (a half-written backup is
            // reported, not repeated): the next tick is the retry.
            backoff_limit: Some(0),
            // One pod at a time, and a replacement (should a retry ever be allowed) only once
            // the pod before it has stopped: a lock under this Job's host name that the
            // agent meets at its start is then never held by a live process.
            parallelism: Some(1),
            completions: Some(1),
            pod_replacement_policy: Some("Failed".into()),
            active_deadline_seconds: Some(settings.active_deadline_seconds),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    service_account_name: Some(AGENT_SERVICE_ACCOUNT.into()),
                    hostname: Some(hostname),
                    node_name: shape.node,
                    containers: vec![container],
                    volumes: (!volumes.is_empty()).then_some(volumes),
                    security_context: Some(PodSecurityContext {
                        seccomp_profile: Some(k8s_openapi::api::core::v1::SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            localhost_profile: None,
                        }),
                        ..PodSecurityContext::default()
                    }),
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        status: None,
    };
    settings.placement.apply(&mut job);
    job
}

/// The Job of one part of a backup.
pub fn build_backup_job(
    run: &RunMeta,
    backend: &Backend,
    prom_url: Option<&str>,
    plan: &BackupJobPlan,
    settings: &JobSettings,
) -> Result<Job> {
    let mut env = base_env(run, backend, prom_url)?;
    if !plan.commands.is_empty() {
        let json = serde_json::to_string(&plan.commands)
            .map_err(|e| Error::Serialization(e.to_string()))?;
        env.push(plain_env(ENV_BACKUP_PODS, json));
    }
    let mounts = plan
        .claims
        .iter()
        .map(|claim| (claim.clone(), format!("{DATA_DIR}/{claim}"), true))
        .collect();
    let shape = JobShape {
        name: job_name(&run.name, run.op, plan.node.as_deref()),
        env,
        mounts,
        node: plan.node.clone(),
    };
    Ok(build_job(run, backend, shape, settings))
}

/// The Jobs of a backup, one per part of the plan. Only the first may create a new
/// repository; the others wait for it, since concurrent `restic init`s write configs that
/// only one of the keys opens.
pub fn build_backup_jobs(
    run: &RunMeta,
    backend: &Backend,
    prom_url: Option<&str>,
    plan: &BackupPlan,
    settings: &JobSettings,
) -> Result<Vec<Job>> {
    let mut jobs = Vec::new();
    for (index, part) in plan.jobs.iter().enumerate() {
        let mut job = build_backup_job(run, backend, prom_url, part, settings)?;
        if index > 0 {
            let containers = job
                .spec
                .iter_mut()
                .flat_map(|spec| spec.template.spec.iter_mut())
                .flat_map(|pod| pod.containers.iter_mut());
            for container in containers {
                container
                    .env
                    .get_or_insert_with(Vec::new)
                    .push(plain_env("BAAS_WAIT_FOR_REPOSITORY", "true"));
            }
        }
        jobs.push(job);
    }
    Ok(jobs)
}

/// The Job of a check.
pub fn build_check_job(
    run: &RunMeta,
    backend: &Backend,
    prom_url: Option<&str>,
    settings: &JobSettings,
) -> Result<Job> {
    let shape = JobShape {
        name: job_name(&run.name, run.op, None),
        env: base_env(run, backend, prom_url)?,
        mounts: Vec::new(),
        node: None,
    };
    Ok(build_job(run, backend, shape, settings))
}

/// The Job of a prune; an absent or empty retention becomes the default one.
pub fn build_prune_job(
    run: &RunMeta,
    backend: &Backend,
    prom_url: Option<&str>,
    retention: Option<&Retention>,
    settings: &JobSettings,
) -> Result<Job> {
    let retention = match retention {
        Some(r) if *r != Retention::default() => r.clone(),
        _ => crate::crd::default_retention(),
    };
    let mut env = base_env(run, backend, prom_url)?;
    let json =
        serde_json::to_string(&retention).map_err(|e| Error::Serialization(e.to_string()))?;
    env.push(plain_env("BAAS_RETENTION", json));
    let shape = JobShape {
        name: job_name(&run.name, run.op, None),
        env,
        mounts: Vec::new(),
        node: None,
    };
    Ok(build_job(run, backend, shape, settings))
}

/// The Job of a restore. A PVC target is mounted read-write at `/restore/<claimName>`, which
/// `BAAS_RESTORE_DIR` names, and `BAAS_RESTORE_CLAIM` names the claim, whose `/data/<claim>`
/// the agent restores when the Restore has no path; S3 target credentials come as
/// `secretKeyRef`s.
pub fn build_restore_job(
    run: &RunMeta,
    spec: &RestoreSpec,
    node: Option<String>,
    settings: &JobSettings,
) -> Result<Job> {
    let mut env = base_env(run, &spec.backend, spec.prom_url.as_deref())?;
    if let Some(snapshot) = spec.snapshot.as_deref().filter(|s| !s.trim().is_empty()) {
        env.push(plain_env("BAAS_SNAPSHOT", snapshot.trim()));
    }
    if let Some(path) = spec.path.as_deref().filter(|s| !s.trim().is_empty()) {
        env.push(plain_env("BAAS_RESTORE_PATH", path.trim()));
    }
    let mut mounts = Vec::new();
    match (&spec.restore_method.s3, &spec.restore_method.pvc) {
        (Some(s3), None) => {
            env.push(plain_env(
                "BAAS_RESTORE_S3_ENDPOINT",
                s3.endpoint.trim_end_matches('/'),
            ));
            env.push(plain_env("BAAS_RESTORE_S3_BUCKET", s3.bucket.clone()));
            env.push(secret_env(
                "BAAS_RESTORE_S3_ACCESS_KEY_ID",
                &s3.access_key_id_secret_ref,
            ));
            env.push(secret_env(
                "BAAS_RESTORE_S3_SECRET_ACCESS_KEY",
                &s3.secret_access_key_secret_ref,
            ));
        }
        (None, Some(pvc)) => {
            let dir = format!("{RESTORE_DIR}/{}", pvc.claim_name);
            env.push(plain_env("BAAS_RESTORE_DIR", dir.clone()));
            env.push(plain_env("BAAS_RESTORE_CLAIM", pvc.claim_name.clone()));
            mounts.push((pvc.claim_name.clone(), dir, false));
        }
        _ => {
            return Err(Error::InvalidSpec(
                "spec.restoreMethod: exactly one of s3 or pvc is required".into(),
            ));
        }
    }
    let shape = JobShape {
        name: job_name(&run.name, run.op, None),
        env,
        mounts,
        node,
    };
    Ok(build_job(run, &spec.backend, shape, settings))
}

pub mod placement;
pub mod status;
#[cfg(test)]
mod tests;
