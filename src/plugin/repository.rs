//! The namespace's repository as the user reaches it: the Schedule that names it (the only
//! one, or `--schedule`) and the credentials in the Secrets it references, read with the
//! user's own rights. The values only ever go into a child's environment.

use k8s_openapi::api::core::v1::Secret;
use kube::api::ListParams;
use kube::{Api, ResourceExt};

use super::connect::Connection;
use super::error::{PluginError, PluginResult};
use crate::crd::{Backend, Schedule, SecretKeyRef};
use crate::job::{self, env};

/// The Schedule named `wanted`, or the namespace's only one.
pub async fn schedule(conn: &Connection, wanted: Option<&str>) -> PluginResult<Schedule> {
    let api: Api<Schedule> = Api::namespaced(conn.client.clone(), &conn.namespace);
    if let Some(name) = wanted {
        return Ok(api.get(name).await?);
    }
    let schedules = api.list(&ListParams::default()).await?.items;
    pick_schedule(schedules, &conn.namespace)
}

/// The one Schedule of a namespace: none and several are both answered with what to do.
pub fn pick_schedule(mut schedules: Vec<Schedule>, namespace: &str) -> PluginResult<Schedule> {
    match schedules.len() {
        0 => Err(PluginError::Failed(format!(
            "namespace {namespace} has no Schedule, so no repository is known: create one \
             (see `kubectl explain schedule.spec`) or pass -n"
        ))),
        1 => Ok(schedules.remove(0)),
        _ => {
            let mut names: Vec<String> = schedules.iter().map(|s| s.name_any()).collect();
            names.sort();
            Err(PluginError::Usage(format!(
                "namespace {namespace} has {} Schedules ({}): say which with --schedule NAME",
                names.len(),
                names.join(", ")
            )))
        }
    }
}

/// restic's environment for a backend: repository, password and S3 keys.
pub struct Credentials {
    /// `(variable, value)` pairs; the values are secret.
    pub env: Vec<(&'static str, String)>,
}

// Deliberately no Debug: the values must never be formatted.

/// Reads the three Secret keys of `backend` with the user's rights.
pub async fn credentials(conn: &Connection, backend: &Backend) -> PluginResult<Credentials> {
    let secrets: Api<Secret> = Api::namespaced(conn.client.clone(), &conn.namespace);
    let password = backend.repo_password().ok_or_else(|| {
        PluginError::Failed(
            "the Schedule has no spec.backend.repoPasswordSecretRef: the repository cannot be \
             opened"
                .into(),
        )
    })?;
    let namespace = &conn.namespace;
    let s3 = &backend.s3;
    Ok(Credentials {
        env: vec![
            (env::ENV_REPOSITORY, job::repository_url(backend)),
            (
                env::ENV_PASSWORD,
                secret_value(&secrets, password, namespace).await?,
            ),
            (
                env::ENV_ACCESS_KEY_ID,
                secret_value(&secrets, &s3.access_key_id_secret_ref, namespace).await?,
            ),
            (
                env::ENV_SECRET_ACCESS_KEY,
                secret_value(&secrets, &s3.secret_access_key_secret_ref, namespace).await?,
            ),
        ],
    })
}

async fn secret_value(
    secrets: &Api<Secret>,
    reference: &SecretKeyRef,
    namespace: &str,
) -> PluginResult<String> {
    let name = &reference.name;
    let key = &reference.key;
    let secret = secrets.get(name).await.map_err(|error| match &error {
        kube::Error::Api(status) if status.code == 403 => PluginError::Failed(format!(
            "you may not read Secret {namespace}/{name}, which holds the repository's \
             credentials: `snapshots` needs `get` on Secrets in {namespace} ({})",
            status.message
        )),
        _ => PluginError::from(error),
    })?;
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| b.0.clone())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|s| s.clone().into_bytes())
        })
        .ok_or_else(|| {
            PluginError::Failed(format!("Secret {namespace}/{name} has no key {key:?}"))
        })?;
    String::from_utf8(bytes).map_err(|_| {
        PluginError::Failed(format!(
            "Secret {namespace}/{name} key {key:?} is not UTF-8 text"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn named(name: &str) -> Schedule {
        Schedule {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            ..Schedule::default()
        }
    }

    #[test]
    fn the_only_schedule_is_picked() {
        let picked = pick_schedule(vec![named("nightly")], "shop").expect("one Schedule");
        assert_eq!(picked.name_any(), "nightly");
    }

    #[test]
    fn several_schedules_ask_for_schedule_naming_them() {
        let error = pick_schedule(vec![named("b"), named("a")], "shop").expect_err("ambiguous");
        assert_eq!(error.exit_code(), 2);
        assert_eq!(
            error.to_string(),
            "namespace shop has 2 Schedules (a, b): say which with --schedule NAME"
        );
    }

    #[test]
    fn no_schedule_is_a_failure_that_says_so() {
        let error = pick_schedule(Vec::new(), "shop").expect_err("none");
        assert_eq!(error.exit_code(), 1);
        assert!(error.to_string().contains("has no Schedule"), "{error}");
    }
}
