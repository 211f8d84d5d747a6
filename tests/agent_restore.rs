//! Which part of which snapshot a restore takes when the Restore leaves it open, through real
//! restic and a real S3 server: a PVC target without `path` gets `/data/<claimName>` when the
//! snapshot has it and the whole snapshot otherwise, and the snapshot chosen is the newest that
//! holds that path.

#[path = "support/agent.rs"]
mod support;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

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
    outcome.assert_succeeded();
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
    outcome.assert_succeeded();
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

/// Runs restic on `repository` with the test credentials and `args`, returning stdout.
fn restic_ok(repository: &str, args: &[&str]) -> String {
    String::from_utf8_lossy(&support::restic(repository, args).stdout).into_owned()
}

/// Whether `restic mount` can work here: FUSE and `fusermount`.
fn fuse_available() -> bool {
    let on_path = |name: &str| {
        std::env::var_os("PATH")
            .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(name).is_file()))
    };
    let ok = Path::new("/dev/fuse").exists() && (on_path("fusermount") || on_path("fusermount3"));
    if !ok {
        eprintln!("skipping the restic mount part: no /dev/fuse or fusermount");
    }
    ok
}

/// `restic mount <args> <dir>` until dropped.
struct Mount {
    child: std::process::Child,
    dir: tempfile::TempDir,
}

impl Mount {
    fn start(repository: &str, args: &[&str]) -> Mount {
        let dir = tempfile::tempdir().expect("mount point");
        let child = std::process::Command::new(support::restic_binary().expect("restic"))
            .args(["--repo", repository, "mount"])
            .args(args)
            .arg(dir.path())
            .env("RESTIC_PASSWORD", support::PASSWORD)
            .env("AWS_ACCESS_KEY_ID", support::ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", support::SECRET_KEY)
            .env(
                "RESTIC_CACHE_DIR",
                std::env::temp_dir().join("baas-test-restic-cache"),
            )
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("restic mount starts");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !dir.path().join("hosts").exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "restic mount did not serve"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        Mount { child, dir }
    }

    /// The names in `<mount>/<path>`, sorted.
    fn list(&self, path: &str) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.dir.path().join(path))
            .map(|entries| {
                entries
                    .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One backup with PVCs on two nodes is two Jobs, each writing a snapshot of host `shop`:
/// the commands docs/restore.md gives for the manual restore find each PVC.
#[tokio::test]
async fn manual_restore_commands_find_every_pvc_of_a_backup_with_several_jobs() {
    let Some(s3) = S3Server::start() else { return };
    if !support::can_mount() {
        return;
    }
    let repository = s3.repository("backups");
    let node_a = tempfile::tempdir().expect("temp dir");
    write(&node_a.path().join("app/index.html"), "app");
    let node_b = tempfile::tempdir().expect("temp dir");
    write(&node_b.path().join("db/dump.sql"), "db");
    let app = backup(&repository, node_a.path());
    let db = backup(&repository, node_b.path());

    // restic snapshots --host shop --path /data/<pvc> --latest 1
    for (pvc, id) in [("app", &app), ("db", &db)] {
        let path = format!("/data/{pvc}");
        let listed = restic_ok(
            &repository,
            &[
                "snapshots",
                "--host",
                "shop",
                "--path",
                &path,
                "--latest",
                "1",
                "--json",
            ],
        );
        let listed: Vec<serde_json::Value> = serde_json::from_str(&listed).expect("JSON");
        assert_eq!(listed.len(), 1, "{pvc}: {listed:?}");
        assert_eq!(listed[0]["id"], id.as_str(), "{pvc}");
    }

    // restic restore latest:/data/<pvc> --host shop --path /data/<pvc> --target ./out
    for (pvc, expected) in [("app", ("index.html", "app")), ("db", ("dump.sql", "db"))] {
        let out = tempfile::tempdir().expect("temp dir");
        let path = format!("/data/{pvc}");
        let target = out.path().display().to_string();
        restic_ok(
            &repository,
            &[
                "restore",
                &format!("latest:{path}"),
                "--host",
                "shop",
                "--path",
                &path,
                "--target",
                &target,
            ],
        );
        assert_eq!(files(out.path()), set(&[expected]), "{pvc}");
    }

    if !fuse_available() {
        return;
    }
    // Without a filter, hosts/shop/latest is the newest snapshot only: db's Job ran last.
    let mount = Mount::start(&repository, &[]);
    assert_eq!(mount.list("hosts/shop/latest/data"), ["db"]);
    assert_eq!(
        mount.list("hosts/shop").len(),
        3,
        "two snapshots and latest"
    );
    drop(mount);
    // With --path, latest is the newest snapshot holding that PVC.
    let mount = Mount::start(&repository, &["--host", "shop", "--path", "/data/app"]);
    assert_eq!(mount.list("hosts/shop/latest/data/app"), ["index.html"]);
}
