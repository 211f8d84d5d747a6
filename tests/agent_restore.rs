//! Which part of which snapshot a restore takes when the Restore leaves it open, through real
//! restic and a real S3 server: a PVC target without `path` gets `/data/<claimName>` when the
//! snapshot has it and the whole snapshot otherwise, and the snapshot chosen is the newest that
//! holds that path.

#[path = "support/agent.rs"]
mod support;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use baas::crd::RunState;
use support::{Agent, Outcome, S3Server};

fn write(path: &Path, data: &str) {
    fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
    fs::write(path, data).expect("write file");
}

/// Every file below `root`, relative to it, with its contents.
fn files(root: &Path) -> BTreeSet<(String, String)> {
    fn visit(root: &Path, dir: &Path, out: &mut BTreeSet<(String, String)>) {
        for entry in fs::read_dir(dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                visit(root, &path, out);
            } else {
                let name = path.strip_prefix(root).expect("below root");
                let data = fs::read_to_string(&path).expect("read");
                out.insert((name.display().to_string(), data));
            }
        }
    }
    let mut out = BTreeSet::new();
    visit(root, root, &mut out);
    out
}

fn set(entries: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    entries
        .iter()
        .map(|(n, d)| (n.to_string(), d.to_string()))
        .collect()
}

fn backup(repository: &str, volumes: &Path) -> String {
    let outcome = Agent::new(repository, "shop")
        .volumes(volumes)
        .run(&["backup"]);
    assert_eq!(
        outcome.report.state,
        Some(RunState::Succeeded),
        "{:?}\n{}",
        outcome.report,
        outcome.stderr
    );
    outcome.report.snapshots[0].id.clone()
}

/// A restore into `target` as the Job of a Restore into claim `claim` runs it, with no path.
fn restore_into_claim(
    repository: &str,
    claim: &str,
    snapshot: Option<&str>,
    target: &Path,
) -> Outcome {
    let outcome = Agent::new(repository, "shop")
        .env("BAAS_RESTORE_CLAIM", Some(claim))
        .env("BAAS_RESTORE_DIR", Some(&target.display().to_string()))
        .env("BAAS_SNAPSHOT", snapshot)
        .run(&["restore"]);
    assert_eq!(
        outcome.report.state,
        Some(RunState::Succeeded),
        "{:?}\n{}",
        outcome.report,
        outcome.stderr
    );
    outcome
}

#[tokio::test]
async fn pvc_restore_without_path_takes_the_claims_directory_else_the_whole_snapshot() {
    let Some(s3) = S3Server::start() else { return };
    if !support::can_mount() {
        return;
    }
    let repository = s3.repository("backups");
    let both = tempfile::tempdir().expect("temp dir");
    write(&both.path().join("app/index.html"), "app");
    write(&both.path().join("app/sub/conf"), "conf");
    write(&both.path().join("other/readme"), "other");
    let first = backup(&repository, both.path());

    // The claim's directory of the given snapshot, at the PVC's root.
    let target = tempfile::tempdir().expect("temp dir");
    let restore = restore_into_claim(&repository, "app", Some(&first[..8]), target.path());
    assert_eq!(
        files(target.path()),
        set(&[("index.html", "app"), ("sub/conf", "conf")])
    );
    assert_eq!(restore.report.snapshots[0].paths, ["/data/app"]);

    // A claim the snapshot does not have: the whole snapshot.
    let target = tempfile::tempdir().expect("temp dir");
    let restore = restore_into_claim(&repository, "fresh", Some(&first[..8]), target.path());
    assert_eq!(
        files(target.path()),
        set(&[
            ("data/app/index.html", "app"),
            ("data/app/sub/conf", "conf"),
            ("data/other/readme", "other")
        ])
    );
    assert_eq!(restore.report.snapshots[0].paths, ["/"]);

    // A newer snapshot without app (another Job of a later backup): with no snapshot given,
    // the newest that holds /data/app is taken, not the newest of the namespace.
    let only_other = tempfile::tempdir().expect("temp dir");
    write(&only_other.path().join("other/readme"), "other, later");
    let second = backup(&repository, only_other.path());
    let target = tempfile::tempdir().expect("temp dir");
    let restore = restore_into_claim(&repository, "app", None, target.path());
    assert_eq!(restore.report.snapshots[0].id, first);
    assert_eq!(
        files(target.path()),
        set(&[("index.html", "app"), ("sub/conf", "conf")])
    );

    // No snapshot holds the claim's directory: the namespace's newest, whole.
    let target = tempfile::tempdir().expect("temp dir");
    let restore = restore_into_claim(&repository, "fresh", None, target.path());
    assert_eq!(restore.report.snapshots[0].id, second);
    assert_eq!(
        files(target.path()),
        set(&[("data/other/readme", "other, later")])
    );
}
