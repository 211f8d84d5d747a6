//! A Prune applies its retention to the repository and reports what it kept and removed.

use std::time::Duration;

use crate::fixtures::{backup_now, one_off};
use crate::harness::{Namespace, rewrite};

#[test]
#[ignore = "needs the local cluster: scripts/cluster up"]
fn prune_with_keep_last_two_keeps_the_two_newest_snapshots() {
    let ns = Namespace::create("prune");
    ns.create_seed_secrets();
    ns.create_pvc("data", "ReadWriteOnce", false);
    ns.write_files("writer", &[("data", "a.txt", "first")]);
    let bucket = ns.bucket("prune");
    let repo = ns.repo(&bucket);

    // the first backup creates the repository; the next two run side by side
    backup_now(&ns, "backup-1", &bucket);
    for name in ["backup-2", "backup-3"] {
        ns.apply(&one_off(
            &ns,
            "backup.yaml",
            "before-upgrade",
            name,
            &bucket,
        ));
    }
    for name in ["backup-2", "backup-3"] {
        ns.wait_run_succeeded("backup", name, Duration::from_secs(180));
    }
    let before = repo.snapshots(&ns.name);
    assert_eq!(before.len(), 3, "snapshots before the prune: {before:#?}");

    let prune = rewrite(
        &one_off(&ns, "prune.yaml", "prune-now", "prune-now", &bucket),
        &[("keepLast: 3", "keepLast: 2")],
    );
    ns.apply(&prune);
    let done = ns.wait_run_succeeded("prune", "prune-now", Duration::from_secs(180));

    let after = repo.snapshots(&ns.name);
    let ids = |list: &[serde_json::Value]| -> Vec<String> {
        list.iter()
            .filter_map(|s| s["id"].as_str().map(str::to_string))
            .collect()
    };
    // restic lists oldest first: the two newest remain
    assert_eq!(ids(&after), ids(&before)[1..].to_vec(), "after the prune");
    let summary = &done["status"]["summary"];
    assert_eq!(summary["snapshotsKept"], 2, "{:#}", done["status"]);
    assert_eq!(summary["snapshotsRemoved"], 1, "{:#}", done["status"]);
}
