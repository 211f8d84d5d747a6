//! The seed's manifests with their addresses pointed at the local servers, and the
//! workloads the scenarios back up.

use std::time::Duration;

use serde_json::Value;

use crate::harness::{Namespace, example, rewrite};

/// The seed's Schedule (`manifests/examples/schedule-seed.yaml`) with only the endpoint, the
/// promURL, the bucket and the backup cron rewritten; `backup_cron` keeps the seed's leading
/// space so that trimming is exercised too.
pub fn seed_schedule(ns: &Namespace, bucket: &str, backup_cron: &str, keep_jobs: u32) -> String {
    let c = ns.cluster();
    rewrite(
        &example("schedule-seed.yaml"),
        &[
            (
                "endpoint: http://10.144.1.224:9000",
                &format!("endpoint: {}", c.s3_endpoint()),
            ),
            (
                "promURL: http://10.144.1.224:9000",
                &format!("promURL: {}", c.pushgateway()),
            ),
            ("bucket: baas", &format!("bucket: {bucket}")),
            (
                "schedule: ' 0 1 * * *'",
                &format!("schedule: '{backup_cron}'"),
            ),
            ("keepJobs: 10", &format!("keepJobs: {keep_jobs}")),
        ],
    )
}

/// A one-off run from one of the examples that use `https://objects.example.com` and the
/// bucket `team-a-backups` (`backup.yaml`, `prune.yaml`, `restore-pvc.yaml`), renamed.
pub fn one_off(
    ns: &Namespace,
    example_file: &str,
    old_name: &str,
    name: &str,
    bucket: &str,
) -> String {
    rewrite(
        &example(example_file),
        &[
            (&format!("name: {old_name}"), &format!("name: {name}")),
            ("https://objects.example.com", ns.cluster().s3_endpoint()),
            ("bucket: team-a-backups", &format!("bucket: {bucket}")),
        ],
    )
}

/// Creates a one-off Backup of the namespace into `bucket` and waits for it to succeed.
pub fn backup_now(ns: &Namespace, name: &str, bucket: &str) -> Value {
    ns.apply(&one_off(ns, "backup.yaml", "before-upgrade", name, bucket));
    ns.wait_run_succeeded("backup", name, Duration::from_secs(180))
}

/// A long-running "database" pod with the seed's backup command annotation; `volume`
/// mounts a PVC the way a real database would hold its data.
pub fn database_pod(ns: &Namespace, name: &str, command: &str, volume: Option<&str>) {
    let mut pod = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": {"app": "mariadb"},
            "annotations": {"appuio.ch/backupcommand": command},
        },
        "spec": {
            "containers": [{"name": name, "image": ns.cluster().busybox_image(), "command": ["sleep", "3600"]}],
        }
    });
    if let Some(pvc) = volume {
        pod["spec"]["containers"][0]["volumeMounts"] =
            serde_json::json!([{"name": pvc, "mountPath": "/var/lib/mysql"}]);
        pod["spec"]["volumes"] =
            serde_json::json!([{"name": pvc, "persistentVolumeClaim": {"claimName": pvc}}]);
    }
    ns.apply(&pod.to_string());
    ns.wait_pod_phase(name, "Running", Duration::from_secs(60));
}
