//! One-off backups whose backup command fails.

use std::time::Duration;

use crate::fixtures::{database_pod, one_off};
use crate::harness::{Namespace, snapshot_paths, wait_for};

#[test]
#[ignore = "needs the local cluster: scripts/cluster up"]
fn backup_with_failing_command_is_never_succeeded() {
    let ns = Namespace::create("failcmd");
    ns.create_seed_secrets();
    ns.create_pvc("files", "ReadWriteOnce", false);
    ns.write_files("writer", &[("files", "kept.txt", "still backed up")]);
    database_pod(&ns, "broken-db", "echo partial dump; exit 3", None);
    let bucket = ns.bucket("failcmd");

    ns.apply(&one_off(
        &ns,
        "backup.yaml",
        "before-upgrade",
        "nightly",
        &bucket,
    ));
    let backup = ns.wait_run_finished("backup", "nightly", Duration::from_secs(180));

    let status = &backup["status"];
    let state = status["state"].as_str().unwrap_or_default();
    assert!(
        state == "Failed" || state == "PartiallySucceeded",
        "a backup whose command exited 3 ended {state}: {status:#}"
    );
    // the user must learn which command failed and how, from the status alone
    let errors = status["errors"].to_string();
    assert!(
        errors.contains("backup command in pod broken-db")
            && errors.contains("command terminated with non-zero exit code: 3"),
        "status does not name the pod and exit code: {status:#}"
    );
    // the command line itself (which may hold credentials) is not repeated
    assert!(
        !status.to_string().contains("partial dump"),
        "the status repeats the command: {status:#}"
    );
    // and `kubectl get events` shows it as a warning
    wait_for(
        "a Warning event about the Backup",
        Duration::from_secs(30),
        Duration::from_secs(1),
        || {
            let events = ns.kubectl_ok(&[
                "get",
                "events",
                "--field-selector",
                "involvedObject.kind=Backup,involvedObject.name=nightly,type=Warning",
                "-o",
                "jsonpath={.items[*].message}",
            ]);
            (!events.trim().is_empty()).then_some(())
        },
    );

    // the PVC's data still made it into the repository
    let repo = ns.repo(&bucket);
    let snapshots = repo.snapshots(&ns.name);
    let data = snapshots
        .iter()
        .find(|s| snapshot_paths(s).contains(&"/data/files".to_string()))
        .unwrap_or_else(|| panic!("no snapshot of /data/files: {snapshots:#?}"));
    let id = data["id"].as_str().expect("snapshots have ids");
    assert_eq!(repo.dump(id, "/data/files/kept.txt"), "still backed up");
}
