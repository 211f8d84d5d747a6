//! Pure builders of the Jobs that run `baas agent` for a run: its names and labels come from
//! [`names`], the claims and nodes of a backup from [`plan`], the agent's environment from
//! [`env`]. Nothing here talks to the API server, so every decision is unit-tested.

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EnvVar, PersistentVolumeClaimVolumeSource, PodSecurityContext,
    PodSpec, PodTemplateSpec, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::crd::{Backend, RestoreSpec, Retention};
use crate::{Error, Result};

pub mod env;
pub mod names;
pub mod placement;
pub mod plan;
pub mod status;
pub mod verify;

pub use crate::crd::Operation;
pub use env::ENV_BACKUP_PODS;
pub use names::{
    AGENT_SERVICE_ACCOUNT, LABEL_MANAGED_BY, LABEL_OPERATION, LABEL_REPOSITORY, LABEL_RUN,
    LABEL_SCHEDULE, MANAGER, MAX_NAME, RunMeta, agent_hostname, dns_label, job_name, label_value,
    repository_label, repository_url, run_labels, run_name,
};
pub use plan::{
    ANNOTATION_SELECTED_NODE, BackupJobPlan, BackupPlan, BackupPod, backup_command,
    node_using_claim, plan_backup,
};
pub use verify::{APP_CHECK_CONTAINER, build_verify_job};

use env::{base_env, plain_env, secret_env};

/// Name of the container that runs `baas agent` in every Job.
pub const AGENT_CONTAINER: &str = "agent";
/// Where backed-up PVCs are mounted, one subdirectory per claim.
pub const DATA_DIR: &str = "/data";
/// Where a restore's target PVC is mounted, one subdirectory named after the claim.
pub const RESTORE_DIR: &str = "/restore";
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

/// What differs between the Jobs of the five operations.
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
    env.push(plain_env(env::ENV_HOSTNAME, hostname.clone()));
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
        name: AGENT_CONTAINER.into(),
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
                    .push(plain_env(env::ENV_WAIT_FOR_REPOSITORY, "true"));
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
    let retention = Retention::effective(retention);
    let mut env = base_env(run, backend, prom_url)?;
    let json =
        serde_json::to_string(&retention).map_err(|e| Error::Serialization(e.to_string()))?;
    env.push(plain_env(env::ENV_RETENTION, json));
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
        env.push(plain_env(env::ENV_SNAPSHOT, snapshot.trim()));
    }
    if let Some(path) = spec.path.as_deref().filter(|s| !s.trim().is_empty()) {
        env.push(plain_env(env::ENV_RESTORE_PATH, path.trim()));
    }
    if let Some(source) = spec
        .source_namespace
        .as_deref()
        .filter(|s| !s.trim().is_empty())
    {
        env.push(plain_env(env::ENV_SOURCE_NAMESPACE, source.trim()));
    }
    let mut mounts = Vec::new();
    match (&spec.restore_method.s3, &spec.restore_method.pvc) {
        (Some(s3), None) => {
            env.push(plain_env(
                env::ENV_RESTORE_S3_ENDPOINT,
                s3.endpoint.trim_end_matches('/'),
            ));
            env.push(plain_env(env::ENV_RESTORE_S3_BUCKET, s3.bucket.clone()));
            env.push(secret_env(
                env::ENV_RESTORE_S3_ACCESS_KEY_ID,
                &s3.access_key_id_secret_ref,
            ));
            env.push(secret_env(
                env::ENV_RESTORE_S3_SECRET_ACCESS_KEY,
                &s3.secret_access_key_secret_ref,
            ));
        }
        (None, Some(pvc)) => {
            let dir = format!("{RESTORE_DIR}/{}", pvc.claim_name);
            env.push(plain_env(env::ENV_RESTORE_DIR, dir.clone()));
            env.push(plain_env(env::ENV_RESTORE_CLAIM, pvc.claim_name.clone()));
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

#[cfg(test)]
mod agent_args_tests;
#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod tests;
