//! Verified backups on real parts: a Schedule verifies every minute that the newest snapshots
//! of its namespace restore (a PVC and a MariaDB dump), with an application check that loads
//! the restored dump into a throwaway MariaDB and queries it. Then one pack file is deleted
//! from the bucket, and the next verification fails, naming the snapshot and the missing data,
//! while the Schedule's status and the alert's metrics show it.

use std::time::Duration;

use serde_json::Value;

use crate::harness::{Namespace, now_seconds, seconds_of, wait_for};
use crate::restore::host_dir_of;
use crate::secrets::operator_metrics;
use crate::seed::{mariadb, pod_of, sql};

/// The application check: a MariaDB of the database's own image on a scratch data directory,
/// loaded from the restored stream of the backup command, must return the row written.
const APP_CHECK: &str = r#"set -e
dump=$(ls -d /verify/*-mariadb | head -n 1)
test -s "$dump"
mariadb-install-db --user=root --datadir=/tmp/db --skip-test-db --cross-bootstrap --auth-root-authentication-method=socket >/dev/null
mariadbd --user=root --datadir=/tmp/db --skip-networking --socket=/tmp/db.sock --pid-file=/tmp/db.pid &
tries=0
until mariadb-admin --socket=/tmp/db.sock -uroot ping >/dev/null 2>&1; do
  tries=$((tries + 1)); [ "$tries" -lt 120 ] || { echo "mariadbd did not start"; exit 1; }
  sleep 0.5
done
mariadb --socket=/tmp/db.sock -uroot < "$dump"
item=$(mariadb --socket=/tmp/db.sock -uroot -N -B -e 'SELECT item FROM shop.orders WHERE id = 2')
echo "restored row 2: $item"
test "$item" = ristretto
"#;

/// A Schedule that backs up and verifies every minute, with the application check.
fn verifying_schedule(ns: &Namespace, bucket: &str) -> String {
    let c = ns.cluster();
    serde_json::json!({
        "apiVersion": "backup.appuio.ch/v1alpha1",
        "kind": "Schedule",
        "metadata": {"name": "verified"},
        "spec": {
            "backend": {
                "repoPasswordSecretRef": {"name": "backup-repo", "key": "password"},
                "s3": {
                    "endpoint": c.s3_endpoint(),
                    "bucket": bucket,
                    "accessKeyIDSecretRef": {"name": "backup-credentials", "key": "username"},
                    "secretAccessKeySecretRef": {"name": "backup-credentials", "key": "password"},
                },
            },
            "backup": {"schedule": "* * * * *", "keepJobs": 2},
            "verify": {
                "schedule": "* * * * *",
                "keepJobs": 4,
                "maxAge": "1m",
                "appCheck": {
                    "image": c.mariadb_image(),
                    "command": ["sh", "-c", APP_CHECK],
                },
            },
        },
    })
    .to_string()
}

fn verified_entry<'a>(run: &'a Value, path: &str) -> &'a Value {
    run["status"]["verified"]
        .as_array()
        .and_then(|v| {
            v.iter().find(|e| {
                e["paths"]
                    .as_array()
                    .is_some_and(|p| p.iter().any(|x| x == path))
            })
        })
        .unwrap_or_else(|| panic!("no verified snapshot of {path}: {:#}", run["status"]))
}

fn checks_of(entry: &Value) -> Vec<String> {
    entry["checks"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The value of one series of the operator's metrics for this namespace's Schedule.
fn gauge(metrics: &str, name: &str, ns: &Namespace) -> Option<f64> {
    metrics
        .lines()
        .find(|l| {
            l.starts_with(&format!("{name}{{"))
                && l.contains(&format!("namespace=\"{}\"", ns.name))
                && l.contains("schedule=\"verified\"")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
#[ignore = "needs the local cluster: scripts/cluster up"]
fn schedule_verifies_a_pvc_and_a_dump_with_an_app_check_then_names_a_deleted_pack() {
    let ns = Namespace::create("verify");
    let c = ns.cluster();
    ns.create_seed_secrets();
    ns.create_pvc("files", "ReadWriteOnce", false);
    ns.write_files(
        "writer",
        &[
            ("files", "conf/app.yaml", "replicas: 3\n"),
            ("files", "notes.txt", "verified backups\n"),
        ],
    );
    // One large file whose data fills the volume's biggest pack: the pack deleted below.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let random: Vec<u8> = (0..2 * 1024 * 1024)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect();
    std::fs::write(host_dir_of(&ns, "files").join("random.bin"), &random)
        .expect("the claim's directory on this node is writable");
    mariadb(&ns, "mariadb", &c.nodes()[0], false);
    sql(
        &ns,
        "mariadb",
        "CREATE DATABASE shop; CREATE TABLE shop.orders (id INT PRIMARY KEY, item VARCHAR(40)); \
         INSERT INTO shop.orders VALUES (1, 'espresso'), (2, 'ristretto');",
    );
    let db_pod = pod_of(&ns, "mariadb")["metadata"]["name"]
        .as_str()
        .expect("pod name")
        .to_string();
    let dump_path = format!("/{}-{db_pod}-mariadb", ns.name);

    let bucket = ns.bucket("verify");
    ns.apply(&verifying_schedule(&ns, &bucket));
    // The first ticks may verify before any backup exists; the first success counts.
    let good = wait_for(
        "a Verify of the Schedule to succeed",
        Duration::from_secs(420),
        Duration::from_secs(2),
        || {
            ns.list("verifies")
                .into_iter()
                .find(|v| v["status"]["state"] == "Succeeded")
        },
    );
    let status = &good["status"];
    let volume = verified_entry(&good, "/data/files");
    let volume_checks = checks_of(volume);
    assert!(
        volume_checks.contains(&"content".to_string())
            && volume_checks.contains(&"summary".to_string()),
        "{volume:#}"
    );
    assert_eq!(volume["files"], 3, "{volume:#}");
    assert!(
        volume["bytes"].as_u64().unwrap_or(0) >= random.len() as u64,
        "{volume:#}"
    );
    let dump = verified_entry(&good, &dump_path);
    assert!(checks_of(dump).contains(&"stream".to_string()), "{dump:#}");
    assert!(dump["bytes"].as_u64().unwrap_or(0) > 0, "{dump:#}");
    let message = status["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("application check passed"),
        "the application check did not run: {status:#}"
    );
    assert!(status["durationSeconds"].as_f64().unwrap_or(0.0) > 0.0);
    let newest = status["newestVerifiedSnapshot"].clone();
    assert!(newest.is_string(), "{status:#}");
    // the scratch space is the pod's own emptyDir; no PVC of the namespace is mounted
    let run_name = good["metadata"]["name"].as_str().expect("name").to_string();
    let job = ns
        .list("jobs")
        .into_iter()
        .find(|j| j["metadata"]["labels"]["backup.appuio.ch/run"] == run_name.as_str())
        .expect("the Verify's Job is kept with its run");
    let volumes = job["spec"]["template"]["spec"]["volumes"].to_string();
    assert!(
        volumes.contains("emptyDir") && !volumes.contains("persistentVolumeClaim"),
        "{volumes}"
    );

    let verified_at = wait_for(
        "the Schedule's Verified time",
        Duration::from_secs(120),
        Duration::from_secs(1),
        || {
            let schedule = ns.get("schedule", "verified")?;
            schedule["status"]["verify"]["lastVerifiedSnapshot"]
                .as_str()
                .map(String::from)
        },
    );
    let printed = ns.kubectl_ok(&["get", "schedule", "verified"]);
    assert!(printed.contains("VERIFIED"), "{printed}");
    let metrics = operator_metrics(&ns);
    let verified_metric = gauge(&metrics, "baas_last_verified_backup_timestamp_seconds", &ns)
        .unwrap_or_else(|| panic!("no verified timestamp in the operator's metrics"));
    assert_eq!(
        verified_metric,
        seconds_of(&Value::from(verified_at.clone()))
    );
    assert_eq!(
        gauge(&metrics, "baas_verify_max_age_seconds", &ns),
        Some(60.0)
    );

    // -- one pack file of the volume's data goes missing
    let packs: Vec<(String, u64)> = c
        .s3_list_sizes(&bucket)
        .into_iter()
        .filter(|(key, _)| key.starts_with("data/"))
        .collect();
    let (biggest, _) = packs
        .iter()
        .max_by_key(|(_, size)| *size)
        .cloned()
        .unwrap_or_else(|| panic!("no pack files in {bucket}"));
    let deleted_at = now_seconds();
    c.s3_delete(&bucket, &biggest);
    let pack_id = biggest.rsplit('/').next().unwrap_or_default().to_string();

    let failed = wait_for(
        "a Verify created after the pack was deleted to fail",
        Duration::from_secs(300),
        Duration::from_secs(2),
        || {
            ns.list("verifies").into_iter().find(|v| {
                v["status"]["state"] == "Failed"
                    && seconds_of(&v["metadata"]["creationTimestamp"]) >= deleted_at.floor()
            })
        },
    );
    let errors: Vec<String> = failed["status"]["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let first = errors
        .first()
        .unwrap_or_else(|| panic!("a failed Verify without errors: {:#}", failed["status"]));
    let snapshot = verified_entry(&failed, "/data/files");
    let short_id: String = snapshot["id"]
        .as_str()
        .unwrap_or_default()
        .chars()
        .take(8)
        .collect();
    assert!(
        first.contains(&short_id) && first.contains("/data/files"),
        "the first error names neither the snapshot {short_id} nor its path: {first}"
    );
    assert!(
        first.contains(&pack_id[..8.min(pack_id.len())]) || first.contains("missing"),
        "the first error does not name the missing data (pack {pack_id}): {first}"
    );
    assert!(snapshot["error"].is_string(), "{snapshot:#}");
    assert!(
        failed["status"]["newestVerifiedSnapshot"].is_null(),
        "a failed verification moved the verified time: {:#}",
        failed["status"]
    );

    // the Schedule shows the failure and keeps the last verified time; the alert's metrics
    // show the newest verified snapshot growing older than the Schedule's bound of 1 minute
    wait_for(
        "the Schedule's status to show the failed verification",
        Duration::from_secs(120),
        Duration::from_secs(1),
        || {
            let schedule = ns.get("schedule", "verified")?;
            let verify = &schedule["status"]["verify"];
            (verify["lastState"] == "Failed").then_some(())
        },
    );
    let schedule = ns.get("schedule", "verified").expect("the Schedule");
    let kept = schedule["status"]["verify"]["lastVerifiedSnapshot"].clone();
    assert!(
        seconds_of(&kept) >= seconds_of(&Value::from(verified_at)),
        "{kept}"
    );
    let metrics = operator_metrics(&ns);
    let last = gauge(&metrics, "baas_last_verified_backup_timestamp_seconds", &ns)
        .expect("the verified timestamp stays exported");
    let bound = gauge(&metrics, "baas_verify_max_age_seconds", &ns).expect("the bound");
    assert_eq!(last, seconds_of(&kept));
    assert!(
        now_seconds() - last > bound,
        "the alert's condition does not hold: newest verified snapshot at {last}, bound {bound}"
    );
    let events = ns.kubectl_ok(&["get", "events", "-o", "json"]);
    assert!(
        events.contains(
            &failed["metadata"]["name"]
                .as_str()
                .unwrap_or("?")
                .to_string()
        ),
        "no Event about the failed Verify"
    );
}
