//! The environment of an agent Job: the names the operator sets and `baas agent` reads (the
//! agent's arguments in `cli.rs` take their `env` from these constants, so the two sides
//! cannot drift apart), and the variables every Job carries. Credentials are only ever
//! `secretKeyRef`s, so the operator never reads a Secret and no value appears in a Job spec.

use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, SecretKeySelector};

use super::names::{RunMeta, repository_url};
use crate::crd::{Backend, SecretKeyRef};
use crate::{Error, Result};

/// The restic repository, `s3:<endpoint>/<bucket>` (read by restic too).
pub const ENV_REPOSITORY: &str = "RESTIC_REPOSITORY";
/// The repository password, from `repoPasswordSecretRef` (read by restic).
pub const ENV_PASSWORD: &str = "RESTIC_PASSWORD";
/// The repository bucket's access key ID (read by restic).
pub const ENV_ACCESS_KEY_ID: &str = "AWS_ACCESS_KEY_ID";
/// The repository bucket's secret access key (read by restic).
pub const ENV_SECRET_ACCESS_KEY: &str = "AWS_SECRET_ACCESS_KEY";
/// Namespace of the run, from the pod's own metadata.
pub const ENV_NAMESPACE: &str = "BAAS_NAMESPACE";
/// Name of the run object.
pub const ENV_RUN_NAME: &str = "BAAS_RUN_NAME";
/// The Schedule that created the run, if one did.
pub const ENV_SCHEDULE: &str = "BAAS_SCHEDULE";
/// The Pushgateway of the run's metrics.
pub const ENV_PROM_URL: &str = "BAAS_PROM_URL";
/// The pod's host name as the operator made it (see [`super::agent_hostname`]).
pub const ENV_HOSTNAME: &str = "BAAS_HOSTNAME";
/// Where the backed-up claims are mounted; the Jobs leave it at its default.
pub const ENV_DATA_DIR: &str = "BAAS_DATA_DIR";
/// The pods whose backup command a backup Job runs, as JSON.
pub const ENV_BACKUP_PODS: &str = "BAAS_BACKUP_PODS";
/// Set on every backup Job but the first: wait for the repository instead of creating it.
pub const ENV_WAIT_FOR_REPOSITORY: &str = "BAAS_WAIT_FOR_REPOSITORY";
/// A prune's retention as JSON, in the CRD's field names.
pub const ENV_RETENTION: &str = "BAAS_RETENTION";
/// The snapshot a restore reads.
pub const ENV_SNAPSHOT: &str = "BAAS_SNAPSHOT";
/// The namespace whose snapshots a restore reads (restic's host); default the run's own.
pub const ENV_SOURCE_NAMESPACE: &str = "BAAS_SOURCE_NAMESPACE";
/// The scratch directory a verification restores into (default `/verify`), which an
/// application check reads after the agent.
pub const ENV_VERIFY_DIR: &str = "BAAS_VERIFY_DIR";
/// The part of the snapshot a restore reads.
pub const ENV_RESTORE_PATH: &str = "BAAS_RESTORE_PATH";
/// Where a restore's target claim is mounted.
pub const ENV_RESTORE_DIR: &str = "BAAS_RESTORE_DIR";
/// The name of a restore's target claim.
pub const ENV_RESTORE_CLAIM: &str = "BAAS_RESTORE_CLAIM";
/// The S3 server that receives a restore archive.
pub const ENV_RESTORE_S3_ENDPOINT: &str = "BAAS_RESTORE_S3_ENDPOINT";
/// The bucket that receives a restore archive.
pub const ENV_RESTORE_S3_BUCKET: &str = "BAAS_RESTORE_S3_BUCKET";
/// Access key ID of the archive's bucket.
pub const ENV_RESTORE_S3_ACCESS_KEY_ID: &str = "BAAS_RESTORE_S3_ACCESS_KEY_ID";
/// Secret access key of the archive's bucket.
pub const ENV_RESTORE_S3_SECRET_ACCESS_KEY: &str = "BAAS_RESTORE_S3_SECRET_ACCESS_KEY";

pub(super) fn plain_env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

pub(super) fn secret_env(name: &str, secret: &SecretKeyRef) -> EnvVar {
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
pub(super) fn base_env(
    run: &RunMeta,
    backend: &Backend,
    prom_url: Option<&str>,
) -> Result<Vec<EnvVar>> {
    let password = backend.repo_password().ok_or_else(|| {
        Error::InvalidSpec(
            "spec.backend.repoPasswordSecretRef: required to open the repository".into(),
        )
    })?;
    let mut env = vec![
        plain_env(ENV_REPOSITORY, repository_url(backend)),
        secret_env(ENV_PASSWORD, password),
        secret_env(ENV_ACCESS_KEY_ID, &backend.s3.access_key_id_secret_ref),
        secret_env(
            ENV_SECRET_ACCESS_KEY,
            &backend.s3.secret_access_key_secret_ref,
        ),
        EnvVar {
            name: ENV_NAMESPACE.into(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    api_version: None,
                    field_path: "metadata.namespace".into(),
                }),
                ..EnvVarSource::default()
            }),
        },
        plain_env(ENV_RUN_NAME, run.name.clone()),
    ];
    // The Pushgateway group and the metrics' `schedule` label: without it every Schedule of
    // a namespace would push into one group and overwrite the others.
    if let Some(schedule) = &run.schedule {
        env.push(plain_env(ENV_SCHEDULE, schedule.clone()));
    }
    if let Some(url) = prom_url.filter(|u| !u.trim().is_empty()) {
        env.push(plain_env(ENV_PROM_URL, url.trim()));
    }
    Ok(env)
}
