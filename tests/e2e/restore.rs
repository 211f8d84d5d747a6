//! Getting data back: by hand with plain restic as the seed describes, and with `Restore`
//! objects to S3 (`.tar.gz`) and into a new PVC.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::fixtures::{backup_now, one_off};
use crate::harness::{Namespace, Repo, rewrite, wait_for};

const FILES: [(&str, &str); 3] = [
    ("dump.sql", "INSERT INTO t VALUES (42);\n"),
    ("conf/my.cnf", "[mysqld]\nmax_connections = 100\n"),
    ("empty.txt", ""),
];

/// A namespace with the seed's Secrets, a PVC `pvc` holding [`FILES`] and one successful
/// Backup into `bucket`.
fn backed_up_namespace(scenario: &str, pvc: &str) -> (Namespace, String) {
    let ns = Namespace::create(scenario);
    ns.create_seed_secrets();
    ns.create_pvc(pvc, "ReadWriteOnce", false);
    let files: Vec<(&str, &str, &str)> = FILES.iter().map(|(f, c)| (pvc, *f, *c)).collect();
    ns.write_files("writer", &files);
    let bucket = ns.bucket(scenario);
    backup_now(&ns, "before-upgrade", &bucket);
    (ns, bucket)
}

/// Reads every file of [`FILES`] below `root` and compares it with what was written.
fn assert_files_under(root: &Path) {
    for (file, content) in FILES {
        let path = root.join(file);
        let read =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(read, content, "{}", path.display());
    }
}

#[test]
#[ignore = "needs the local cluster: scripts/cluster up"]
fn backup_restores_manually_with_plain_restic_as_in_seed() {
    let (ns, bucket) = backed_up_namespace("manual", "pvcname");
    let repo = ns.repo(&bucket);

    // `restic snapshots` lists the snapshot with the namespace as host and /data/<pvc>
    let listing = repo.run_ok(&["snapshots"]);
    assert!(
        listing.contains(&ns.name) && listing.contains("/data/pvcname"),
        "restic snapshots: {listing}"
    );

    // the seed's `restic mount ~/mnt` and `.../hosts/<ns>/latest/data/<pvc>/`; FUSE is needed
    // (/dev/fuse and fusermount), as on a user's workstation
    if Path::new("/dev/fuse").exists() && which("fusermount") {
        let mnt = tempfile::tempdir().expect("temp dir");
        let latest = mnt
            .path()
            .join(format!("hosts/{}/latest/data/pvcname", ns.name));
        with_restic_mount(&repo, mnt.path(), || assert_files_under(&latest));
    } else {
        eprintln!("no FUSE here: skipping `restic mount`, checking restore and dump only");
    }

    // `restic restore latest --host <ns> --target DIR` puts the PVC under DIR/data/<pvc>
    let target = tempfile::tempdir().expect("temp dir");
    let dir = target.path().display().to_string();
    repo.run_ok(&["restore", "latest", "--host", &ns.name, "--target", &dir]);
    assert_files_under(&target.path().join("data/pvcname"));

    // and `restic dump` reads a single file
    assert_eq!(
        repo.run_ok(&[
            "dump",
            "--host",
            &ns.name,
            "latest",
            "/data/pvcname/dump.sql"
        ]),
        FILES[0].1
    );
}

fn which(program: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `check` while `restic mount DIR` serves the repository; unmounts afterwards.
fn with_restic_mount(repo: &Repo, dir: &Path, check: impl FnOnce()) {
    let mut mount = repo.command(&["mount", &dir.display().to_string()]);
    mount.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = mount.spawn().expect("restic mount starts");
    let hosts = dir.join("hosts");
    wait_for(
        "restic mount to serve the repository",
        Duration::from_secs(60),
        Duration::from_millis(300),
        || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("restic mount exited with {status}");
            }
            hosts.is_dir().then_some(())
        },
    );
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(check));
    let _ = std::process::Command::new("fusermount")
        .args(["-u", &dir.display().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

#[test]
#[ignore = "needs the local cluster: scripts/cluster up"]
fn restore_to_s3_and_to_pvc_yields_the_backed_up_bytes() {
    let (ns, bucket) = backed_up_namespace("restore", "mariadb");
    let c = ns.cluster();
    // another namespace backs up a PVC of the same name into the same bucket afterwards: its
    // snapshot is the repository's latest, and a restore must still take this namespace's
    let other = Namespace::create("neighbour");
    other.create_seed_secrets();
    other.create_pvc("mariadb", "ReadWriteOnce", false);
    other.write_files("writer", &[("mariadb", "dump.sql", "the neighbour's data")]);
    backup_now(&other, "neighbour", &bucket);

    // the seed's Restore: repoPasswordSecretRef under backend.s3 is moved, with a warning
    let target_bucket = ns.bucket("restoremini");
    // the target bucket does not exist yet: the agent creates it, as restic creates the
    // repository's bucket
    let restore = rewrite(
        &crate::harness::example("restore-seed.yaml"),
        &[
            ("http://10.144.1.224:9000", c.s3_endpoint()),
            ("bucket: restoremini", &format!("bucket: {target_bucket}")),
            ("bucket: baas", &format!("bucket: {bucket}")),
        ],
    );
    let warnings = ns.apply(&restore);
    assert!(
        warnings.contains("Warning:") && warnings.contains("repoPasswordSecretRef"),
        "kubectl printed no warning about the moved repoPasswordSecretRef: {warnings}"
    );
    let stored = ns
        .get("restore", "restore-test")
        .expect("the Restore is stored");
    assert_eq!(
        stored["spec"]["backend"]["repoPasswordSecretRef"]["name"],
        "backup-repo"
    );
    let done = ns.wait_run_succeeded("restore", "restore-test", Duration::from_secs(180));

    let keys = c.s3_list(&target_bucket);
    assert_eq!(keys.len(), 1, "objects in {target_bucket}: {keys:?}");
    assert!(keys[0].ends_with(".tar.gz"), "{keys:?}");
    let restored_to = done["status"]["restoredTo"].as_str().unwrap_or_default();
    assert!(
        restored_to.ends_with(&keys[0]),
        "status.restoredTo {restored_to:?} vs {keys:?}"
    );
    let unpacked = untar(&c.s3_get(&target_bucket, &keys[0]));
    assert_files_under(&unpacked.path().join("data/mariadb"));

    // disaster recovery into a new PVC: the PVC's files become the root of the new claim
    ns.create_pvc("mariadb-restored", "ReadWriteOnce", false);
    ns.apply(&one_off(
        &ns,
        "restore-pvc.yaml",
        "restore-to-pvc",
        "restore-to-pvc",
        &bucket,
    ));
    let done = ns.wait_run_succeeded("restore", "restore-to-pvc", Duration::from_secs(180));
    assert_eq!(
        done["status"]["restoredTo"], "pvc/mariadb-restored",
        "status.restoredTo names the claim, as its field doc says"
    );
    assert_files_under(&host_dir_of(&ns, "mariadb-restored"));
}

/// Unpacks a `.tar.gz` with the system's tar, as a user who downloaded it would.
pub fn untar(bytes: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let archive = dir.path().join("restore.tar.gz");
    std::fs::write(&archive, bytes).expect("temp dir is writable");
    let status = std::process::Command::new("tar")
        .args(["-xzf", &archive.display().to_string(), "-C"])
        .arg(dir.path())
        .status()
        .expect("tar runs");
    assert!(
        status.success(),
        "the restored object is not a valid .tar.gz"
    );
    dir
}

/// The directory of a PVC's volume on its node (local-path-provisioner PersistentVolumes).
pub fn host_dir_of(ns: &Namespace, pvc: &str) -> PathBuf {
    let claim = ns.get("pvc", pvc).expect("the PVC exists");
    let volume = claim["spec"]["volumeName"]
        .as_str()
        .unwrap_or_else(|| panic!("PVC {pvc} is not bound"));
    let pv = ns.cluster().kubectl(
        &[
            "get",
            "pv",
            volume,
            "-o",
            "jsonpath={.spec.hostPath.path}{.spec.local.path}",
        ],
        None,
    );
    assert!(pv.ok, "kubectl get pv {volume}: {}", pv.stderr);
    PathBuf::from(pv.stdout.trim())
}

#[test]
#[ignore = "needs the local cluster: scripts/cluster up"]
fn restore_from_another_namespace_rebuilds_its_pvc_byte_for_byte() {
    let (lost, bucket) = backed_up_namespace("lost", "mariadb");
    let restore = |ns: &Namespace| {
        rewrite(
            &one_off(ns, "restore-pvc.yaml", "restore-to-pvc", "rebuild", &bucket),
            &[(
                "spec:\n",
                &format!("spec:\n  sourceNamespace: {}\n", lost.name),
            )],
        )
    };

    // a namespace without its own copy of the credentials is refused at apply time
    let bare = Namespace::create("bare");
    let refused = bare.apply_with(&restore(&bare), &[]);
    assert!(
        !refused.ok,
        "a Restore without credentials here was admitted"
    );
    assert!(
        refused
            .stderr
            .contains("spec.backend.repoPasswordSecretRef.name")
            && refused.stderr.contains("create it here first"),
        "{}",
        refused.stderr
    );

    // the new namespace holds its own copy of the Secrets and an empty claim
    let rebuilt = Namespace::create("rebuilt");
    rebuilt.create_seed_secrets();
    rebuilt.create_pvc("mariadb-restored", "ReadWriteOnce", false);
    rebuilt.apply(&restore(&rebuilt));
    let done = rebuilt.wait_run_succeeded("restore", "rebuild", Duration::from_secs(180));
    let snapshot = done["status"]["snapshotID"].as_str().unwrap_or_default();
    let of_lost = lost.repo(&bucket).snapshots(&lost.name);
    assert!(
        of_lost.iter().any(|s| s["id"] == snapshot),
        "the restored snapshot {snapshot} is not one of namespace {}",
        lost.name
    );
    assert_files_under(&host_dir_of(&rebuilt, "mariadb-restored"));
}
