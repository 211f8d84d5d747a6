//! `baas agent verify` and the source namespace of a disaster-recovery restore, through real
//! restic and a real S3 server: a verified backup is restored into the scratch layout an
//! application check reads, a pack file deleted from the bucket fails the snapshot that
//! needs it with the snapshot and the cause named, and a restore reads another namespace's
//! snapshots only when the run names that namespace.

#[path = "support/agent.rs"]
mod support;

use std::fs;
use std::path::{Path, PathBuf};

use baas::crd::RunState;
use support::{Agent, S3Server};

/// Bytes that do not compress, so sizes in the repository follow the data.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as u8
        })
        .collect()
}

fn write(path: &Path, data: &[u8]) {
    fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
    fs::write(path, data).expect("write file");
}

/// Volume `files` with three files in two directories, 2 MiB and a bit.
fn volume() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    write(&dir.path().join("files/big.bin"), &noise(2 << 20, 1));
    write(&dir.path().join("files/small.txt"), b"hello");
    write(&dir.path().join("files/sub/deep.bin"), &noise(4096, 2));
    dir
}

const VOLUME_FILES: u64 = 3;
const VOLUME_BYTES: u64 = (2 << 20) + 5 + 4096;
/// The backup command: its output, `seq 1 20000`, is 108894 bytes.
const DUMP_COMMAND: &str = "seq 1 20000";
const DUMP_BYTES: u64 = 108_894;

/// Backs up the volume and one backup command of namespace `ns`.
fn backup(repository: &str, ns: &str, volumes: &Path) -> Vec<String> {
    let outcome = Agent::new(repository, ns)
        .volumes(volumes)
        .backup_commands(&[("db-0", "db", DUMP_COMMAND)])
        .run(&["backup"]);
    outcome.assert_succeeded();
    outcome
        .report
        .snapshots
        .iter()
        .map(|s| s.id.clone())
        .collect()
}

fn verify(repository: &str, ns: &str, scratch: &Path) -> support::Outcome {
    Agent::new(repository, ns)
        .env("BAAS_VERIFY_DIR", Some(&scratch.display().to_string()))
        .run(&["verify"])
}

/// The largest object under `data/` of the bucket: the pack with the volume's big file
/// (restic keeps file contents apart from directory listings).
fn largest_pack(store: &Path, bucket: &str) -> String {
    let mut packs: Vec<(u64, PathBuf)> = Vec::new();
    for dir in fs::read_dir(store.join(bucket).join("data")).expect("data/") {
        for pack in fs::read_dir(dir.expect("entry").path()).expect("data/xx/") {
            let path = pack.expect("entry").path();
            packs.push((fs::metadata(&path).expect("stat").len(), path));
        }
    }
    let (_, path) = packs.into_iter().max().expect("a pack");
    path.strip_prefix(store.join(bucket))
        .expect("below the bucket")
        .display()
        .to_string()
}

#[tokio::test]
async fn verify_restores_each_snapshot_into_the_scratch_layout_and_names_a_missing_pack() {
    let Some(s3) = S3Server::start() else { return };
    if !support::can_mount() {
        return;
    }
    let repository = s3.repository("backups");
    let data = volume();
    backup(&repository, "shop", data.path());

    let scratch = tempfile::tempdir().expect("temp dir");
    let dir = scratch.path().join("verify");
    let outcome = verify(&repository, "shop", &dir);
    outcome.assert_succeeded();
    assert_eq!(outcome.code, Some(0));
    let report = &outcome.report;
    assert_eq!(report.verified.len(), 2, "{report:?}");
    let volume = report
        .verified
        .iter()
        .find(|v| v.paths == ["/data/files"])
        .expect("the volume's snapshot");
    assert_eq!(volume.checks, ["content", "summary"]);
    assert_eq!(
        (volume.files, volume.bytes),
        (Some(VOLUME_FILES), Some(VOLUME_BYTES))
    );
    assert!(volume.time.is_some() && volume.error.is_none());
    let stream = report
        .verified
        .iter()
        .find(|v| v.paths == ["/shop-db-0-db"])
        .expect("the backup command's snapshot");
    assert_eq!(stream.checks, ["content", "stream"]);
    assert_eq!((stream.files, stream.bytes), (Some(1), Some(DUMP_BYTES)));
    assert_eq!(report.summary.total_files, Some(VOLUME_FILES + 1));
    assert_eq!(report.summary.total_bytes, Some(VOLUME_BYTES + DUMP_BYTES));
    assert!(
        report
            .message
            .starts_with("verified 2 snapshots (4 files, 2.1 MiB): content, summary, stream"),
        "{}",
        report.message
    );
    // The layout an application check reads, left in place after the agent.
    assert_eq!(
        fs::read(dir.join("data/files/big.bin")).expect("restored"),
        noise(2 << 20, 1)
    );
    assert_eq!(
        fs::read(dir.join("data/files/small.txt")).expect("restored"),
        b"hello"
    );
    assert!(dir.join("data/files/sub/deep.bin").is_file());
    let dump = fs::read_to_string(dir.join("shop-db-0-db")).expect("restored dump");
    assert!(dump.starts_with("1\n2\n") && dump.ends_with("20000\n"));

    // A second run into the same directory would mix two runs' files.
    let again = Agent::new(&repository, "shop")
        .env("BAAS_VERIFY_DIR", Some(&dir.display().to_string()))
        .env("BAAS_RUN_NAME", Some("another-run"))
        .run(&["verify"]);
    assert_eq!(again.report.state, Some(RunState::Failed));
    assert!(
        again.report.message.contains("not empty"),
        "{}",
        again.report.message
    );

    // The pack with the volume's data is lost from the bucket.
    let pack = largest_pack(s3.store(), "backups");
    s3.delete("backups", &pack).await;
    let pack_id = &pack.rsplit('/').next().expect("a name")[..10];
    let outcome = verify(&repository, "shop", &scratch.path().join("after-loss"));
    assert_eq!(
        outcome.report.state,
        Some(RunState::Failed),
        "{:?}",
        outcome.report
    );
    assert_eq!(outcome.code, Some(1));
    let volume = outcome
        .report
        .verified
        .iter()
        .find(|v| v.paths == ["/data/files"])
        .expect("the volume's snapshot");
    let short = &volume.id[..8];
    assert_eq!(
        outcome.report.errors.len(),
        1,
        "{:?}",
        outcome.report.errors
    );
    let first = &outcome.report.errors[0];
    assert!(
        first.starts_with(&format!(
            "snapshot {short} (/data/files): restic restore --verify: pack {pack_id} is missing \
             from the repository"
        )),
        "{first}"
    );
    assert!(volume.checks.is_empty() && volume.error.is_some());
    // The other snapshot was still verified.
    let stream = outcome
        .report
        .verified
        .iter()
        .find(|v| v.paths == ["/shop-db-0-db"])
        .expect("the backup command's snapshot");
    assert_eq!(stream.checks, ["content", "stream"]);
    assert!(
        outcome
            .report
            .message
            .starts_with("1 of 2 snapshots failed verification")
    );
}

#[tokio::test]
async fn verify_of_a_namespace_without_snapshots_fails_and_says_so() {
    let Some(s3) = S3Server::start() else { return };
    let repository = s3.repository("backups");
    support::restic(&repository, &["init"]);
    let scratch = tempfile::tempdir().expect("temp dir");
    let outcome = verify(&repository, "empty", scratch.path());
    assert_eq!(outcome.report.state, Some(RunState::Failed));
    assert_eq!(outcome.code, Some(1));
    assert_eq!(
        outcome.report.message,
        "no snapshot of namespace empty to verify"
    );
}

#[tokio::test]
async fn restore_with_a_source_namespace_reads_that_namespaces_snapshot_and_only_then() {
    let Some(s3) = S3Server::start() else { return };
    if !support::can_mount() {
        return;
    }
    let repository = s3.repository("backups");
    let data = volume();
    let ids = backup(&repository, "shop", data.path());

    let restore = |source: Option<&str>, snapshot: Option<&str>, target: &Path| {
        Agent::new(&repository, "shop-recovery")
            .env("BAAS_SOURCE_NAMESPACE", source)
            .env("BAAS_SNAPSHOT", snapshot)
            .env("BAAS_RESTORE_CLAIM", Some("files"))
            .env("BAAS_RESTORE_DIR", Some(&target.display().to_string()))
            .run(&["restore"])
    };
    let target = tempfile::tempdir().expect("temp dir");
    let outcome = restore(Some("shop"), None, target.path());
    outcome.assert_succeeded();
    assert_eq!(outcome.report.snapshots[0].paths, ["/data/files"]);
    for file in ["big.bin", "small.txt", "sub/deep.bin"] {
        assert_eq!(
            fs::read(target.path().join(file)).expect("restored"),
            fs::read(data.path().join("files").join(file)).expect("original"),
            "{file}"
        );
    }

    // By ID prefix, too, within the source namespace.
    let target = tempfile::tempdir().expect("temp dir");
    let volume_id = ids
        .iter()
        .find(|id| outcome.report.snapshots[0].id == **id)
        .expect("the volume's snapshot");
    restore(Some("shop"), Some(&volume_id[..8]), target.path()).assert_succeeded();
    assert!(target.path().join("big.bin").is_file());

    // Without a source namespace the run's own is read, which has nothing.
    let target = tempfile::tempdir().expect("temp dir");
    let outcome = restore(None, None, target.path());
    assert_eq!(outcome.report.state, Some(RunState::Failed));
    assert!(
        outcome
            .report
            .message
            .ends_with("namespace shop-recovery has no snapshots"),
        "{}",
        outcome.report.message
    );
    let outcome = restore(None, Some(&volume_id[..8]), target.path());
    assert_eq!(outcome.report.state, Some(RunState::Failed));
    assert!(
        outcome
            .report
            .message
            .contains("of namespace shop-recovery"),
        "{}",
        outcome.report.message
    );
    assert_eq!(fs::read_dir(target.path()).expect("target").count(), 0);
}
