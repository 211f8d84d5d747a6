//! `kubectl baas restore --pvc NAME`: a Restore of the PVC's data (`/data/<pvc>` of the
//! snapshot) from the namespace's repository, into the PVC itself, into another PVC
//! (created like the source when missing) or to S3 as a `.tar.gz`; then followed to its end.

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, PersistentVolumeClaimSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::{Api, ResourceExt};

use super::Report;
use super::args::{GlobalArgs, RestoreArgs};
use super::backup::start_and_follow;
use super::connect::Connection;
use super::error::{PluginError, PluginResult};
use super::repository::schedule;
use crate::crd::{PvcTarget, Restore, RestoreMethod, RestoreSpec, S3Target, Schedule};

/// The Restore the arguments ask for, from the Schedule's repository. An S3 target is a
/// bucket of the repository's own S3 server, reached with the same keys.
pub fn build_restore(schedule: &Schedule, args: &RestoreArgs) -> Restore {
    let backend = &schedule.spec.backend;
    let restore_method = match &args.to_s3 {
        Some(bucket) => RestoreMethod {
            s3: Some(S3Target {
                endpoint: backend.s3.endpoint.clone(),
                bucket: bucket.clone(),
                access_key_id_secret_ref: backend.s3.access_key_id_secret_ref.clone(),
                secret_access_key_secret_ref: backend.s3.secret_access_key_secret_ref.clone(),
            }),
            pvc: None,
        },
        None => RestoreMethod {
            s3: None,
            pvc: Some(PvcTarget {
                claim_name: args.to_pvc.clone().unwrap_or_else(|| args.pvc.clone()),
            }),
        },
    };
    Restore {
        metadata: ObjectMeta {
            generate_name: Some(format!("restore-{}-", args.pvc)),
            namespace: schedule.namespace(),
            ..ObjectMeta::default()
        },
        spec: RestoreSpec {
            backend: backend.clone(),
            restore_method,
            snapshot: args.snapshot.clone(),
            path: Some(format!("{}/{}", crate::job::DATA_DIR, args.pvc)),
            source_namespace: None,
            prom_url: None,
        },
        status: None,
    }
}

/// A new claim `name` like `source`: same size, access modes, storage class and volume mode,
/// so that what fitted in the source fits in it.
pub fn claim_like(source: &PersistentVolumeClaim, name: &str) -> PersistentVolumeClaim {
    let spec = source.spec.clone().unwrap_or_default();
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: source.namespace(),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: spec.access_modes,
            resources: spec.resources,
            storage_class_name: spec.storage_class_name,
            volume_mode: spec.volume_mode,
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    }
}

/// Creates the target claim when it does not exist yet.
async fn ensure_target(conn: &Connection, source: &str, target: &str) -> PluginResult<()> {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(conn.client.clone(), &conn.namespace);
    if claims.get_opt(target).await?.is_some() {
        return Ok(());
    }
    let Some(source_claim) = claims.get_opt(source).await? else {
        return Err(PluginError::Failed(format!(
            "PVC {target} does not exist and PVC {source} is gone too, so its size is unknown: \
             create {target} first"
        )));
    };
    claims
        .create(&PostParams::default(), &claim_like(&source_claim, target))
        .await?;
    eprintln!("persistentvolumeclaim/{target} created");
    Ok(())
}

/// Runs the verb.
pub async fn run(
    conn: &Connection,
    global: &GlobalArgs,
    args: &RestoreArgs,
) -> PluginResult<Report> {
    let schedule = schedule(conn, args.schedule.as_deref()).await?;
    if let Some(target) = &args.to_pvc {
        ensure_target(conn, &args.pvc, target).await?;
    }
    let restore = build_restore(&schedule, args);
    // `restoredTo` of a PVC restore names the claim's mount inside the Job.
    let target = restore
        .spec
        .restore_method
        .pvc
        .as_ref()
        .map(|p| format!("pvc/{}", p.claim_name));
    start_and_follow(conn, global, &args.wait, restore, target.as_deref()).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{Backend, S3Spec, ScheduleSpec, SecretKeyRef};
    use k8s_openapi::api::core::v1::VolumeResourceRequirements;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn schedule() -> Schedule {
        let key = |name: &str| SecretKeyRef {
            name: name.into(),
            key: "k".into(),
        };
        Schedule {
            metadata: ObjectMeta {
                name: Some("nightly".into()),
                namespace: Some("shop".into()),
                ..ObjectMeta::default()
            },
            spec: ScheduleSpec {
                backend: Backend {
                    repo_password_secret_ref: Some(key("repo")),
                    s3: S3Spec {
                        endpoint: "https://objects.example.com".into(),
                        bucket: "shop".into(),
                        access_key_id_secret_ref: key("id"),
                        secret_access_key_secret_ref: key("secret"),
                        repo_password_secret_ref: None,
                    },
                },
                ..ScheduleSpec::default()
            },
            status: None,
        }
    }

    fn args(extra: &[&str]) -> RestoreArgs {
        use clap::Parser;
        let cli = super::super::args::PluginCli::try_parse_from(
            ["kubectl-baas", "restore", "--pvc", "db"]
                .iter()
                .chain(extra),
        )
        .expect("parses");
        match cli.verb {
            super::super::args::Verb::Restore(args) => args,
            other => panic!("not a restore: {other:?}"),
        }
    }

    #[test]
    fn restore_into_a_new_pvc_restores_the_source_pvc_path() {
        let restore = build_restore(
            &schedule(),
            &args(&["--to-pvc", "db-copy", "--snapshot", "1a2b"]),
        );
        assert_eq!(restore.spec.path.as_deref(), Some("/data/db"));
        assert_eq!(restore.spec.snapshot.as_deref(), Some("1a2b"));
        assert_eq!(
            restore
                .spec
                .restore_method
                .pvc
                .map(|p| p.claim_name)
                .as_deref(),
            Some("db-copy")
        );
        assert_eq!(restore.spec.restore_method.s3, None);
        assert_eq!(restore.spec.backend, schedule().spec.backend);
        assert_eq!(
            restore.metadata.generate_name.as_deref(),
            Some("restore-db-")
        );
        assert_eq!(restore.metadata.namespace.as_deref(), Some("shop"));
    }

    #[test]
    fn restore_without_a_target_goes_back_into_the_pvc_itself() {
        let restore = build_restore(&schedule(), &args(&[]));
        assert_eq!(
            restore
                .spec
                .restore_method
                .pvc
                .map(|p| p.claim_name)
                .as_deref(),
            Some("db")
        );
        assert_eq!(restore.spec.snapshot, None);
    }

    #[test]
    fn restore_to_s3_uses_the_repository_server_and_keys() {
        let restore = build_restore(&schedule(), &args(&["--to-s3", "downloads"]));
        let s3 = restore.spec.restore_method.s3.expect("an S3 target");
        assert_eq!(s3.endpoint, "https://objects.example.com");
        assert_eq!(s3.bucket, "downloads");
        assert_eq!(s3.access_key_id_secret_ref.name, "id");
        assert_eq!(s3.secret_access_key_secret_ref.name, "secret");
        assert_eq!(restore.spec.restore_method.pvc, None);
    }

    #[test]
    fn new_claim_is_sized_and_classed_like_its_source() {
        let source = PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some("db".into()),
                namespace: Some("shop".into()),
                annotations: Some([("appuio.ch/backup".to_string(), "false".to_string())].into()),
                ..ObjectMeta::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec!["ReadWriteOnce".into()]),
                storage_class_name: Some("fast".into()),
                volume_name: Some("pv-1".into()),
                resources: Some(VolumeResourceRequirements {
                    requests: Some([("storage".to_string(), Quantity("5Gi".into()))].into()),
                    ..VolumeResourceRequirements::default()
                }),
                ..PersistentVolumeClaimSpec::default()
            }),
            status: None,
        };
        let claim = claim_like(&source, "db-copy");
        let spec = claim.spec.expect("a spec");
        assert_eq!(claim.metadata.name.as_deref(), Some("db-copy"));
        assert_eq!(claim.metadata.namespace.as_deref(), Some("shop"));
        // not bound to the source's volume, and not excluded from backups like the source
        assert_eq!(spec.volume_name, None);
        assert_eq!(claim.metadata.annotations, None);
        assert_eq!(spec.storage_class_name.as_deref(), Some("fast"));
        assert_eq!(spec.access_modes, Some(vec!["ReadWriteOnce".to_string()]));
        assert_eq!(
            spec.resources
                .and_then(|r| r.requests)
                .map(|r| r["storage"].0.clone()),
            Some("5Gi".to_string())
        );
    }
}
