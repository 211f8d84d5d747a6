//! End to end against the local control plane with a running operator:
//!
//!   scripts/cluster up && eval "$(scripts/cluster env)"
//!   cargo test --test controller_e2e -- --ignored --test-threads 1
//!
//! Ignored by default because they need that cluster and take up to three minutes.

use std::time::Duration;

use baas::crd::{Backup, RunState, Schedule};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Pod, Secret};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

async fn client() -> Client {
    Client::try_default()
        .await
        .expect("KUBECONFIG of a running cluster (scripts/cluster env)")
}

async fn create<K>(api: &Api<K>, value: serde_json::Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let object: K = serde_json::from_value(value).expect("valid test object");
    api.create(&PostParams::default(), &object)
        .await
        .expect("create test object");
}

async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[tokio::test]
#[ignore = "needs scripts/cluster up (with the operator)"]
async fn schedule_tick_creates_backup_whose_job_mounts_eligible_pvcs_and_ends() {
    let client = client().await;
    let ns = format!("e2e-ctl-{}", std::process::id());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    create(
        &namespaces,
        json!({"metadata": {"name": ns, "labels": {"pod-security.kubernetes.io/enforce": "baseline"}}}),
    )
    .await;

    let endpoint =
        std::env::var("BAAS_S3_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:9900".into());
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    create(
        &secrets,
        json!({"metadata": {"name": "backup-repo"}, "stringData": {"password": "e2e"}}),
    )
    .await;
    create(
        &secrets,
        json!({"metadata": {"name": "backup-credentials"}, "stringData": {
        "username": std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_default(),
        "password": std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_default()}}),
    )
    .await;
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    create(&pvcs, json!({"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Mi"}}}})).await;
    create(
        &pvcs,
        json!({"metadata": {"name": "cache", "annotations": {"appuio.ch/backup": "false"}},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Mi"}}}}),
    )
    .await;
    // a pod that uses both claims binds them (node-local storage binds on first use), so
    // the exclusion below is a real choice between two bound claims
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let image = std::env::var("BAAS_TEST_BUSYBOX_IMAGE").expect("scripts/cluster env");
    create(
        &pods,
        json!({"metadata": {"name": "writer"}, "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "writer", "image": image,
                "command": ["sh", "-c", "echo kept > /mnt/data/file; echo dropped > /mnt/cache/file"],
                "volumeMounts": [{"name": "data", "mountPath": "/mnt/data"}, {"name": "cache", "mountPath": "/mnt/cache"}]}],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
                {"name": "cache", "persistentVolumeClaim": {"claimName": "cache"}}]}}),
    )
    .await;
    wait_for(
        "the writer pod to succeed",
        Duration::from_secs(90),
        || async {
            let pod = pods.get("writer").await.ok()?;
            (pod.status?.phase.as_deref() == Some("Succeeded")).then_some(())
        },
    )
    .await;
    wait_for("PVCs to be bound", Duration::from_secs(30), || async {
        let list = pvcs.list(&ListParams::default()).await.ok()?;
        list.items
            .iter()
            .all(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound"))
            .then_some(())
    })
    .await;

    let schedules: Api<Schedule> = Api::namespaced(client.clone(), &ns);
    create(
        &schedules,
        json!({
        "apiVersion": "backup.appuio.ch/v1alpha1", "kind": "Schedule",
        "metadata": {"name": "every-minute"},
        "spec": {
            "backend": {"repoPasswordSecretRef": {"name": "backup-repo", "key": "password"},
                "s3": {"endpoint": endpoint, "bucket": format!("e2e-ctl-{}", std::process::id()),
                    "accessKeyIDSecretRef": {"name": "backup-credentials", "key": "username"},
                    "secretAccessKeySecretRef": {"name": "backup-credentials", "key": "password"}}},
            "backup": {"schedule": "* * * * *", "keepJobs": 1}}}),
    )
    .await;

    let backups: Api<Backup> = Api::namespaced(client.clone(), &ns);
    let backup = wait_for(
        "the first tick's Backup",
        Duration::from_secs(75),
        || async {
            backups
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .into_iter()
                .next()
        },
    )
    .await;
    let name = backup.name_any();
    assert!(name.starts_with("every-minute-backup-"), "{name}");
    assert_eq!(
        backup.owner_references()[0].kind,
        "Schedule",
        "the Backup is owned by its Schedule"
    );

    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let job = wait_for("the Backup's Job", Duration::from_secs(20), || async {
        jobs.list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .next()
    })
    .await;
    let job_json = serde_json::to_value(&job).expect("json");
    let pod = &job_json["spec"]["template"]["spec"];
    assert_eq!(
        pod["containers"][0]["volumeMounts"],
        json!([{"name": "claim-0", "mountPath": "/data/data", "readOnly": true}]),
        "only the PVC without appuio.ch/backup=false is mounted"
    );
    assert_eq!(pod["serviceAccountName"], "baas-agent");

    let ended = wait_for("the Backup to end", Duration::from_secs(120), || async {
        let backup = backups.get(&name).await.ok()?;
        let status = backup.status?;
        status.state.filter(|s| s.is_terminal()).map(|_| status)
    })
    .await;
    assert_eq!(
        ended.state,
        Some(RunState::Succeeded),
        "the backup did not succeed: {ended:?}"
    );
    assert!(ended.finished_at.is_some());
    let snapshot = ended
        .snapshot_id
        .clone()
        .expect("a successful backup names its snapshot");
    // the data is in that snapshot, read back with plain restic
    let dump = std::process::Command::new("restic")
        .env(
            "RESTIC_REPOSITORY",
            format!("s3:{endpoint}/e2e-ctl-{}", std::process::id()),
        )
        .env("RESTIC_PASSWORD", "e2e")
        .args(["dump", &snapshot, "/data/data/file"])
        .output()
        .expect("restic runs");
    assert_eq!(
        String::from_utf8_lossy(&dump.stdout),
        "kept\n",
        "restic dump: {}",
        String::from_utf8_lossy(&dump.stderr)
    );

    let schedule = schedules.get("every-minute").await.expect("schedule");
    let status = schedule
        .status
        .and_then(|s| s.backup)
        .expect("status.backup");
    assert!(status.next_run.is_some());
    assert!(status.last_run_name.is_some());

    namespaces
        .delete(&ns, &DeleteParams::background())
        .await
        .expect("delete namespace");
}
