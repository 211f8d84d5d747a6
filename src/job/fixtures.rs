//! Test objects of the Job builders: one backend, runs, claims and pods, built the same way
//! by every test of `job`.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use serde_json::json;

use super::{Operation, RunMeta};
use crate::crd::{Backend, S3Spec, SecretKeyRef};

/// The backend of every test run: a MinIO at `http://minio:9000/` (trailing slash kept, as
/// users write it), bucket `baas`, Secrets `backup-repo` and `backup-credentials`.
pub fn backend() -> Backend {
    Backend {
        repo_password_secret_ref: Some(SecretKeyRef {
            name: "backup-repo".into(),
            key: "password".into(),
        }),
        s3: S3Spec {
            endpoint: "http://minio:9000/".into(),
            bucket: "baas".into(),
            access_key_id_secret_ref: SecretKeyRef {
                name: "backup-credentials".into(),
                key: "username".into(),
            },
            secret_access_key_secret_ref: SecretKeyRef {
                name: "backup-credentials".into(),
                key: "password".into(),
            },
            repo_password_secret_ref: None,
        },
    }
}

/// A run of `op` named `nightly-backup-202611260100` in namespace `team`, made by Schedule
/// `nightly`.
pub fn run(op: Operation) -> RunMeta {
    RunMeta {
        op,
        name: "nightly-backup-202611260100".into(),
        namespace: "team".into(),
        uid: "uid-1".into(),
        schedule: Some("nightly".into()),
    }
}

/// A claim with access modes, phase and annotations.
pub fn pvc(
    name: &str,
    modes: &[&str],
    phase: &str,
    annotations: &[(&str, &str)],
) -> PersistentVolumeClaim {
    serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>()},
        "spec": {"accessModes": modes},
        "status": {"phase": phase},
    }))
    .expect("test pvc")
}

/// A pod on `node` with containers `app` and `sidecar`, mounting `claims`.
pub fn pod(
    name: &str,
    node: &str,
    claims: &[&str],
    phase: &str,
    annotations: &[(&str, &str)],
) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>()},
        "spec": {
            "nodeName": node,
            "containers": [{"name": "app"}, {"name": "sidecar"}],
            "volumes": claims.iter().map(|c| json!({"name": c, "persistentVolumeClaim": {"claimName": c}})).collect::<Vec<_>>(),
        },
        "status": {"phase": phase},
    }))
    .expect("test pod")
}

/// The agent container's env, by name, as JSON.
pub fn env_of(job: &Job) -> BTreeMap<String, serde_json::Value> {
    let container = &job
        .spec
        .as_ref()
        .expect("spec")
        .template
        .spec
        .as_ref()
        .expect("pod spec")
        .containers[0];
    container
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), serde_json::to_value(e).expect("env json")))
        .collect()
}
