//! Backup → restore round trips through real restic and a real S3 server: every file's bytes,
//! mode and modification time must come back.

#[path = "support/agent.rs"]
mod support;

use std::collections::BTreeMap;
use std::fs::{self, FileTimes};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use baas::crd::RunState;
use support::{Agent, S3Server};

#[derive(Debug, PartialEq, Eq)]
enum Kind {
    File(Vec<u8>),
    Dir,
    Symlink(String),
}

#[derive(Debug, PartialEq, Eq)]
struct Entry {
    kind: Kind,
    mode: u32,
    /// Nanoseconds since the epoch (or whole seconds when `seconds` is asked for).
    mtime: i128,
}

fn set_mtime(path: &Path, seconds: u64, nanos: u32) {
    let time = UNIX_EPOCH + Duration::new(seconds, nanos);
    fs::File::open(path)
        .and_then(|f| f.set_times(FileTimes::new().set_modified(time).set_accessed(time)))
        .expect("set mtime");
}

fn write(path: &Path, data: &[u8], mode: u32, seconds: u64) {
    fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
    fs::write(path, data).expect("write file");
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
    set_mtime(path, seconds, 123_456_789);
}

/// Two PVCs with the things that tend to go wrong: modes, empty files, nested directories
/// with their own modes and times, a symlink, a file of several MB.
fn make_volumes(root: &Path) {
    let app = root.join("app");
    write(
        &app.join("index.html"),
        b"<h1>shop</h1>\n",
        0o644,
        1_600_000_000,
    );
    write(
        &app.join("bin/run.sh"),
        b"#!/bin/sh\necho run\n",
        0o755,
        1_600_000_100,
    );
    write(&app.join("secret.key"), b"s3cr3t", 0o600, 1_600_000_200);
    write(&app.join("empty"), b"", 0o644, 1_600_000_300);
    let big: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    write(&app.join("media/big.bin"), &big, 0o640, 1_600_000_400);
    std::os::unix::fs::symlink("index.html", app.join("home")).expect("symlink");
    fs::set_permissions(app.join("media"), fs::Permissions::from_mode(0o750)).expect("chmod");
    set_mtime(&app.join("media"), 1_500_000_000, 5);
    set_mtime(&app.join("bin"), 1_500_000_100, 0);
    set_mtime(&app, 1_500_000_200, 0);
    let db = root.join("db");
    write(
        &db.join("dump.sql"),
        b"CREATE TABLE t (id int);\n",
        0o600,
        1_600_000_500,
    );
}

fn walk(root: &Path, seconds: bool) -> BTreeMap<String, Entry> {
    fn visit(root: &Path, dir: &Path, seconds: bool, out: &mut BTreeMap<String, Entry>) {
        for entry in fs::read_dir(dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            let meta = fs::symlink_metadata(&path).expect("metadata");
            let name = path
                .strip_prefix(root)
                .expect("below root")
                .display()
                .to_string();
            let kind = if meta.file_type().is_symlink() {
                Kind::Symlink(fs::read_link(&path).expect("link").display().to_string())
            } else if meta.is_dir() {
                visit(root, &path, seconds, out);
                Kind::Dir
            } else {
                Kind::File(fs::read(&path).expect("read"))
            };
            let mtime = if seconds {
                i128::from(meta.mtime())
            } else {
                i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec())
            };
            // A symlink's own mode and time are not restorable through std; its target is.
            let (mode, mtime) = match kind {
                Kind::Symlink(_) => (0, 0),
                _ => (meta.mode() & 0o7777, mtime),
            };
            out.insert(name, Entry { kind, mode, mtime });
        }
    }
    let mut out = BTreeMap::new();
    visit(root, root, seconds, &mut out);
    out
}

fn tar_entries(archive: &[u8]) -> BTreeMap<String, Entry> {
    let mut out = BTreeMap::new();
    let gz = flate2::read::GzDecoder::new(archive);
    let mut tar = tar::Archive::new(gz);
    for entry in tar.entries().expect("a tar archive") {
        let mut entry = entry.expect("tar entry");
        let name = entry.path().expect("path").display().to_string();
        let name = name.trim_end_matches('/').to_string();
        let header = entry.header().clone();
        let kind = match header.entry_type() {
            tar::EntryType::Directory => Kind::Dir,
            tar::EntryType::Symlink => Kind::Symlink(
                entry
                    .link_name()
                    .expect("link")
                    .expect("has a target")
                    .display()
                    .to_string(),
            ),
            _ => {
                let mut data = Vec::new();
                entry.read_to_end(&mut data).expect("file data");
                Kind::File(data)
            }
        };
        let (mode, mtime) = match kind {
            Kind::Symlink(_) => (0, 0),
            _ => (
                header.mode().expect("mode") & 0o7777,
                i128::from(header.mtime().expect("mtime")),
            ),
        };
        out.insert(name, Entry { kind, mode, mtime });
    }
    out
}

#[tokio::test]
async fn volumes_restore_byte_identical_to_a_directory_and_to_s3() {
    let Some(s3) = S3Server::start() else { return };
    if !support::can_mount() {
        return;
    }
    let data = tempfile::tempdir().expect("temp dir");
    make_volumes(data.path());
    let repository = s3.repository("backups");

    let backup = Agent::new(&repository, "shop")
        .volumes(data.path())
        .run(&["backup"]);
    assert_eq!(backup.code, Some(0), "{}", backup.stderr);
    assert_eq!(
        backup.report.state,
        Some(RunState::Succeeded),
        "{:?}",
        backup.report
    );
    assert_eq!(backup.report.snapshots.len(), 1);
    let snapshot = &backup.report.snapshots[0];
    assert_eq!(snapshot.id.len(), 64, "full snapshot ID: {}", snapshot.id);
    assert_eq!(snapshot.paths, ["/data/app", "/data/db"]);
    assert_eq!(backup.report.summary.total_files, Some(6));
    let listed = support::snapshots(&repository);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["hostname"], "shop");
    assert_eq!(listed[0]["id"], snapshot.id.as_str());

    // Into a directory that already holds stale data: restored files replace it.
    let target = tempfile::tempdir().expect("temp dir");
    fs::write(target.path().join("index.html"), "stale").expect("write");
    let restore = Agent::new(&repository, "shop").run(&[
        "restore",
        "--path",
        "/data/app",
        "--target-dir",
        &target.path().display().to_string(),
    ]);
    restore.assert_succeeded();
    assert_eq!(restore.report.snapshots[0].id, snapshot.id);
    // A directory that is no claim is reported as the directory.
    assert_eq!(
        restore.report.restored_to,
        Some(target.path().display().to_string())
    );
    let expected = walk(&data.path().join("app"), false);
    assert_eq!(walk(target.path(), false), expected);
    let root = fs::metadata(target.path()).expect("target");
    assert_eq!(
        root.mode() & 0o7777,
        fs::metadata(data.path().join("app")).expect("app").mode() & 0o7777
    );
    assert_eq!(root.mtime(), 1_500_000_200);

    // Into a claim, as a Restore's Job mounts it: the status names the claim, as
    // `kubectl explain restore.status.restoredTo` says, not the pod's mount path.
    let claim_dir = tempfile::tempdir().expect("temp dir");
    let restore = Agent::new(&repository, "shop").run(&[
        "restore",
        "--path",
        "/data/app",
        "--claim",
        "app-copy",
        "--target-dir",
        &claim_dir.path().display().to_string(),
    ]);
    restore.assert_succeeded();
    assert_eq!(restore.report.restored_to.as_deref(), Some("pvc/app-copy"));
    assert_eq!(walk(claim_dir.path(), false), expected);

    // To S3 as one .tar.gz whose root is the PVC's contents.
    s3.create_bucket("downloads").await;
    let restore = Agent::new(&repository, "shop")
        .env("BAAS_RUN_NAME", Some("get-app"))
        .run(&[
            "restore",
            "--path",
            "/data/app",
            "--s3-endpoint",
            &s3.endpoint,
            "--s3-bucket",
            "downloads",
            "--s3-access-key-id",
            support::ACCESS_KEY,
            "--s3-secret-access-key",
            support::SECRET_KEY,
        ]);
    restore.assert_succeeded();
    let key = format!("shop/get-app-{}.tar.gz", &snapshot.id[..8]);
    assert_eq!(
        restore.report.restored_to,
        Some(format!("s3://downloads/{key}"))
    );
    let archive = s3.get("downloads", &key).await;
    assert_eq!(tar_entries(&archive), walk(&data.path().join("app"), true));
}

#[tokio::test]
async fn backup_command_dump_restores_to_s3_as_a_one_file_archive() {
    let Some(s3) = S3Server::start() else { return };
    let repository = s3.repository("backups");
    let backup = Agent::new(&repository, "shop")
        .backup_commands(&[("db-0", "mysql", "printf 'dump of %s' db")])
        .run(&["backup"]);
    backup.assert_succeeded();
    assert_eq!(backup.report.snapshots[0].paths, ["/shop-db-0-mysql"]);

    s3.create_bucket("downloads").await;
    let restore = Agent::new(&repository, "shop").run(&[
        "restore",
        "--path",
        "/shop-db-0-mysql",
        "--s3-endpoint",
        &s3.endpoint,
        "--s3-bucket",
        "downloads",
        "--s3-access-key-id",
        support::ACCESS_KEY,
        "--s3-secret-access-key",
        support::SECRET_KEY,
    ]);
    restore.assert_succeeded();
    let key = restore
        .report
        .restored_to
        .expect("restoredTo")
        .replace("s3://downloads/", "");
    let entries = tar_entries(&s3.get("downloads", &key).await);
    let names: Vec<&String> = entries.keys().collect();
    assert_eq!(names, ["shop-db-0-mysql"]);
    assert_eq!(
        entries["shop-db-0-mysql"].kind,
        Kind::File(b"dump of db".to_vec())
    );
}

#[test]
fn restore_into_a_directory_keeps_owners_and_setuid_setgid_bits() {
    let Some(s3) = S3Server::start() else { return };
    if !support::can_mount() {
        return;
    }
    use std::os::unix::fs::chown;
    let data = tempfile::tempdir().expect("temp dir");
    let app = data.path().join("app");
    write(&app.join("tool"), b"#!/bin/sh\n", 0o755, 1_600_000_000);
    write(
        &app.join("shared/group-tool"),
        b"#!/bin/sh\n",
        0o755,
        1_600_000_100,
    );
    // Modes after the owners: a chown clears setuid and setgid.
    chown(app.join("tool"), Some(0), Some(0)).expect("chown");
    chown(app.join("shared/group-tool"), Some(1000), Some(1001)).expect("chown");
    chown(app.join("shared"), Some(1002), Some(1003)).expect("chown");
    chown(&app, Some(1004), Some(1005)).expect("chown");
    fs::set_permissions(app.join("tool"), fs::Permissions::from_mode(0o4755)).expect("chmod");
    fs::set_permissions(
        app.join("shared/group-tool"),
        fs::Permissions::from_mode(0o2755),
    )
    .expect("chmod");
    fs::set_permissions(app.join("shared"), fs::Permissions::from_mode(0o2770)).expect("chmod");
    fs::set_permissions(&app, fs::Permissions::from_mode(0o750)).expect("chmod");
    let repository = s3.repository("backups");
    let backup = Agent::new(&repository, "shop")
        .volumes(data.path())
        .run(&["backup"]);
    backup.assert_succeeded();

    let target = tempfile::tempdir().expect("temp dir");
    let restore = Agent::new(&repository, "shop").run(&[
        "restore",
        "--path",
        "/data/app",
        "--target-dir",
        &target.path().display().to_string(),
    ]);
    restore.assert_succeeded();
    let owner_and_mode = |path: &Path| {
        let meta = fs::symlink_metadata(path).expect("restored");
        (meta.uid(), meta.gid(), meta.mode() & 0o7777)
    };
    assert_eq!(owner_and_mode(&target.path().join("tool")), (0, 0, 0o4755));
    assert_eq!(
        owner_and_mode(&target.path().join("shared/group-tool")),
        (1000, 1001, 0o2755)
    );
    assert_eq!(
        owner_and_mode(&target.path().join("shared")),
        (1002, 1003, 0o2770)
    );
    assert_eq!(
        owner_and_mode(target.path()),
        (1004, 1005, 0o750),
        "the target takes the restored path's owner and mode"
    );

    // A single file below a volume comes back by its name, with its owner and bits.
    let single = tempfile::tempdir().expect("temp dir");
    let restore = Agent::new(&repository, "shop").run(&[
        "restore",
        "--path",
        "/data/app/shared/group-tool",
        "--target-dir",
        &single.path().display().to_string(),
    ]);
    restore.assert_succeeded();
    let names: Vec<_> = fs::read_dir(single.path())
        .expect("read")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, ["group-tool"]);
    assert_eq!(
        owner_and_mode(&single.path().join("group-tool")),
        (1000, 1001, 0o2755)
    );
}
