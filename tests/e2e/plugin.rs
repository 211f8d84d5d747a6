//! `kubectl baas` against the real cluster, run as a user runs it: the built binary linked
//! as `kubectl-baas` (and `kubectl_complete-baas`) into a directory on PATH, called directly
//! and through `kubectl baas`. The tests read what a user reads: the lines it prints, its
//! exit codes, and the data a restore brings back.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::fixtures::seed_schedule;
use crate::harness::{Cluster, Namespace, REPO_PASSWORD, Run, wait_for};

/// A directory holding the plugin under kubectl's names, as docs/plugin.md installs it.
struct Plugin {
    dir: tempfile::TempDir,
}

impl Plugin {
    fn install() -> Plugin {
        let dir = tempfile::tempdir().expect("temp dir");
        let binary = PathBuf::from(env!("CARGO_BIN_EXE_baas"));
        for name in ["kubectl-baas", "kubectl_complete-baas"] {
            std::os::unix::fs::symlink(&binary, dir.path().join(name)).expect("symlink");
        }
        Plugin { dir }
    }

    /// The cluster environment's PATH with the plugin's directory first.
    fn path(&self) -> String {
        let command = Cluster::get().command("true");
        let inherited = command
            .get_envs()
            .find(|(k, _)| *k == "PATH")
            .and_then(|(_, v)| v)
            .map(|v| v.to_string_lossy().into_owned())
            .unwrap_or_else(|| std::env::var("PATH").unwrap_or_default());
        format!("{}:{inherited}", self.dir.path().display())
    }

    fn command(&self, program: &Path, args: &[&str]) -> Command {
        let mut command = Cluster::get().command(&program.display().to_string());
        command.env("PATH", self.path()).args(args);
        command
    }

    /// `kubectl-baas ARGS`, the binary under the plugin's name.
    fn direct(&self, args: &[&str]) -> (Run, Option<i32>) {
        run_with_code(self.command(&self.dir.path().join("kubectl-baas"), args))
    }

    /// `kubectl baas ARGS`, found by kubectl on PATH.
    fn kubectl(&self, args: &[&str]) -> (Run, Option<i32>) {
        let mut all = vec!["baas"];
        all.extend_from_slice(args);
        run_with_code(self.command(Path::new("kubectl"), &all))
    }
}

fn run_with_code(mut command: Command) -> (Run, Option<i32>) {
    let described = format!("{command:?}");
    let output = command
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot start {described}: {e}"));
    let code = output.status.code();
    (Run::from(output), code)
}

/// Asserts a run succeeded; its stdout.
fn ok(what: &str, (run, code): (Run, Option<i32>)) -> String {
    assert_eq!(
        code,
        Some(0),
        "{what} exited {code:?}\nstdout: {}\nstderr: {}",
        run.stdout,
        run.stderr
    );
    never_shows_secrets(what, &run);
    run.stdout
}

/// No output of the plugin holds a credential of the test's Secrets.
fn never_shows_secrets(what: &str, run: &Run) {
    let cluster = Cluster::get();
    for secret in [REPO_PASSWORD, cluster.var("AWS_SECRET_ACCESS_KEY")] {
        assert!(
            !run.stdout.contains(secret) && !run.stderr.contains(secret),
            "{what} printed a credential:\n{}\n{}",
            run.stdout,
            run.stderr
        );
    }
}

/// The seed's Schedule (nightly, so no tick comes during the test), once the operator has
/// reconciled it.
fn nightly_schedule(ns: &Namespace, bucket: &str) {
    ns.apply(&seed_schedule(ns, bucket, " 0 1 * * *", 3));
    wait_for(
        "the Schedule's Ready condition",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || {
            let schedule = ns.get("schedule", "schedule-test")?;
            let ready = schedule["status"]["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            ready.then_some(())
        },
    );
}

/// The line of `kubectl baas status` about `schedule`, split into its columns.
fn status_line(stdout: &str, schedule: &str) -> Vec<String> {
    stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(schedule))
        .unwrap_or_else(|| panic!("no status line for {schedule}:\n{stdout}"))
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// The contents of `file` in `pvc`, read by a pod that mounts it, as a user would look.
fn read_from_pvc(ns: &Namespace, pvc: &str, file: &str) -> String {
    let pod = format!("reader-{pvc}");
    let pod_json = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": pod},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{
                "name": "reader",
                "image": ns.cluster().busybox_image(),
                "command": ["cat", format!("/mnt/{file}")],
                "volumeMounts": [{"name": "claim", "mountPath": "/mnt"}],
            }],
            "volumes": [{"name": "claim", "persistentVolumeClaim": {"claimName": pvc}}],
        }
    });
    ns.apply(&pod_json.to_string());
    ns.wait_pod_phase(&pod, "Succeeded", Duration::from_secs(90));
    ns.kubectl_ok(&["logs", &pod])
}

#[test]
#[ignore = "needs the local cluster: scripts/cluster up"]
fn plugin_backs_up_lists_and_restores_a_pvc_without_yaml() {
    let plugin = Plugin::install();
    let ns = Namespace::create("plugin");
    ns.create_seed_secrets();
    ns.create_pvc("files", "ReadWriteOnce", false);
    ns.write_files(
        "writer",
        &[("files", "notes/hello.txt", "hello from the plugin")],
    );
    let bucket = ns.bucket("plugin");
    nightly_schedule(&ns, &bucket);
    let n = ns.name.as_str();

    // `kubectl baas -n NS backup <TAB>` offers the namespace's Schedule
    let (names, _) = run_with_code(plugin.command(
        Path::new("kubectl"),
        &["__complete", "baas", "-n", n, "backup", ""],
    ));
    assert!(
        names.stdout.lines().any(|l| l == "schedule-test"),
        "completion of the Schedule: {}",
        names.stdout
    );

    // before any backup: no last backup, the next one at 01:00, Ready
    let before = ok("status", plugin.kubectl(&["status", "-n", n]));
    assert!(
        before.starts_with("NAME "),
        "a header line first:\n{before}"
    );
    let line = status_line(&before, "schedule-test");
    assert_eq!(line[1..4], ["<none>", "<none>", "<none>"], "{before}");
    assert!(line[4] == "in", "next backup is `in ...`: {before}");
    assert_eq!(
        line[line.len() - 3..],
        ["0", "True", "Scheduled"],
        "{before}"
    );

    // a backup now, followed to its end
    let backed_up = ok(
        "backup",
        plugin.kubectl(&["backup", "schedule-test", "-n", n]),
    );
    let first = backed_up.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("Backup schedule-test-backup-")
            && first.contains(" Succeeded: snapshot "),
        "backup's outcome: {backed_up}"
    );
    let name = first.split_whitespace().nth(1).expect("the Backup's name");
    let short = first
        .split("snapshot ")
        .nth(1)
        .and_then(|s| s.get(..8))
        .expect("a short snapshot ID");
    let backup = ns.get("backup", name).expect("the Backup exists");
    let snapshot = backup["status"]["snapshotID"].as_str().expect("snapshotID");
    assert!(snapshot.starts_with(short), "{short} vs {snapshot}");
    // it is one of the Schedule's runs, with its repository
    assert_eq!(
        backup["metadata"]["ownerReferences"][0]["name"],
        "schedule-test"
    );
    assert_eq!(backup["spec"]["backend"]["s3"]["bucket"], bucket.as_str());

    // status shows it, and -o json says the same in full
    let after = ok("status", plugin.direct(&["-n", n, "status"]));
    let line = status_line(&after, "schedule-test");
    assert_eq!(line[1], "Succeeded", "{after}");
    assert_eq!(line[3], short, "{after}");
    let json: Value = serde_json::from_str(&ok(
        "status -o json",
        plugin.direct(&["status", "-n", n, "-o", "json"]),
    ))
    .expect("status -o json is JSON");
    assert_eq!(json["items"][0]["lastBackup"]["snapshotID"], snapshot);
    assert_eq!(json["items"][0]["lastBackup"]["name"], name);
    assert_eq!(json["items"][0]["ready"]["reason"], "Scheduled");

    // snapshots of the PVC: the backup's, with the namespace as host and the PVC's path
    let listing = ok(
        "snapshots",
        plugin.kubectl(&["snapshots", "-n", n, "--pvc", "files"]),
    );
    let row = listing
        .lines()
        .find(|l| l.starts_with(short))
        .unwrap_or_else(|| panic!("snapshot {short} not listed:\n{listing}"));
    assert!(row.contains(n) && row.contains("/data/files"), "{listing}");
    let listed: Value = serde_json::from_str(&ok(
        "snapshots -o json",
        plugin.direct(&["snapshots", "-n", n, "-o", "json"]),
    ))
    .expect("snapshots -o json is JSON");
    assert!(
        listed
            .as_array()
            .is_some_and(|a| a.iter().any(|s| s["id"] == snapshot)),
        "{listed:#}"
    );
    // a PVC that was never backed up has no snapshots
    let none = ok(
        "snapshots",
        plugin.direct(&["snapshots", "-n", n, "--pvc", "other", "--no-headers"]),
    );
    assert!(none.trim().is_empty(), "{none}");

    // restore into a new PVC, which the plugin creates like the source
    let restored = ok(
        "restore",
        plugin.kubectl(&[
            "restore",
            "-n",
            n,
            "--pvc",
            "files",
            "--to-pvc",
            "files-copy",
        ]),
    );
    assert!(
        restored.contains(" Succeeded: snapshot ")
            && restored.contains(short)
            && restored.contains("restored (/data/files) to pvc/files-copy"),
        "restore's outcome: {restored}"
    );
    assert_eq!(
        read_from_pvc(&ns, "files-copy", "notes/hello.txt"),
        "hello from the plugin"
    );

    // and as a .tar.gz into a bucket of the same S3 server
    let downloads = ns.bucket("plugindl");
    let uploaded = ok(
        "restore --to-s3",
        plugin.direct(&["restore", "-n", n, "--pvc", "files", "--to-s3", &downloads]),
    );
    let keys = ns.cluster().s3_list(&downloads);
    assert_eq!(keys.len(), 1, "objects in {downloads}: {keys:?}");
    assert!(
        uploaded.contains(&format!("to s3://{downloads}/{}", keys[0]))
            && keys[0].ends_with(".tar.gz"),
        "restore's outcome: {uploaded}"
    );

    // check and prune run on the Schedule's repository the same way
    let checked = ok(
        "check",
        plugin.kubectl(&["check", "schedule-test", "-n", n]),
    );
    assert!(
        checked.starts_with("Check schedule-test-check-") && checked.contains(" Succeeded"),
        "{checked}"
    );
    let pruned = ok(
        "prune",
        plugin.kubectl(&["prune", "schedule-test", "-n", n]),
    );
    assert!(
        pruned.starts_with("Prune schedule-test-prune-")
            && pruned.contains("1 snapshots kept, 0 removed"),
        "{pruned}"
    );
}

#[test]
#[ignore = "needs the local cluster: scripts/cluster up"]
fn plugin_backup_that_fails_exits_1_and_status_counts_it() {
    let plugin = Plugin::install();
    // nothing to back up: no PVC, no backup command, so the Backup fails
    let ns = Namespace::create("pluginfail");
    ns.create_seed_secrets();
    let bucket = ns.bucket("pluginfail");
    nightly_schedule(&ns, &bucket);
    let n = ns.name.as_str();

    let created = ok(
        "backup --no-wait",
        plugin.direct(&["backup", "schedule-test", "-n", n, "--no-wait"]),
    );
    assert!(
        created.starts_with("backups.backup.appuio.ch/schedule-test-backup-")
            && created.trim_end().ends_with(" created"),
        "{created}"
    );
    let early = created
        .trim()
        .trim_start_matches("backups.backup.appuio.ch/")
        .trim_end_matches(" created")
        .to_string();
    ns.wait_run_finished("backup", &early, Duration::from_secs(120));

    let (run, code) = plugin.kubectl(&["backup", "schedule-test", "-n", n]);
    never_shows_secrets("failing backup", &run);
    assert_eq!(
        code,
        Some(1),
        "a failed backup exits 1: {}\n{}",
        run.stdout,
        run.stderr
    );
    assert!(
        run.stdout.starts_with("Backup schedule-test-backup-") && run.stdout.contains(" Failed"),
        "the outcome names the failure: {}",
        run.stdout
    );
    assert!(
        run.stdout.lines().count() > 1,
        "and says why: {}",
        run.stdout
    );

    let status = ok(
        "status",
        plugin.direct(&["status", "-n", n, "--no-headers"]),
    );
    let line = status_line(&status, "schedule-test");
    assert_eq!(line[1], "Failed", "{status}");
    assert_eq!(
        line[line.len() - 3],
        "2",
        "both failed backups count: {status}"
    );

    // usage errors exit 2; a missing restic is a failure that says what to do
    let (usage, code) = plugin.direct(&["backup"]);
    assert_eq!(code, Some(2), "{}", usage.stderr);
    let (missing, code) = plugin.direct(&["snapshots", "-n", n, "--restic", "/nonexistent/restic"]);
    never_shows_secrets("snapshots without restic", &missing);
    assert_eq!(code, Some(1), "{}", missing.stderr);
    assert!(
        missing.stderr.contains("restic not found"),
        "{}",
        missing.stderr
    );
    let (absent, code) = plugin.direct(&["backup", "no-such-schedule", "-n", n]);
    assert_eq!(code, Some(1));
    assert!(absent.stderr.contains("NotFound"), "{}", absent.stderr);
}

#[test]
#[ignore = "needs the local cluster: scripts/cluster up"]
fn plugin_completes_its_verbs_for_the_shell_and_for_kubectl() {
    let plugin = Plugin::install();
    for shell in ["bash", "zsh"] {
        let script = ok("completion", plugin.direct(&["completion", shell]));
        for verb in ["status", "backup", "check", "prune", "snapshots", "restore"] {
            assert!(script.contains(verb), "the {shell} script lacks {verb}");
        }
        assert!(
            script.contains("kubectl-baas"),
            "{shell} script is for another command"
        );
    }
    // `kubectl baas <TAB>`: kubectl asks kubectl_complete-baas on PATH
    let mut command = plugin.command(Path::new("kubectl"), &["__complete", "baas", "sn"]);
    command.env_remove("BASH_COMP_DEBUG_FILE");
    let (run, code) = run_with_code(command);
    assert_eq!(code, Some(0), "{}", run.stderr);
    assert!(
        run.stdout.starts_with("snapshots\t"),
        "kubectl's completion: {}",
        run.stdout
    );
    let (run, _) = run_with_code(plugin.command(
        Path::new("kubectl"),
        &["__complete", "baas", "status", "-o", ""],
    ));
    assert!(
        run.stdout.lines().take(3).eq(["json", "yaml", "wide"]),
        "{}",
        run.stdout
    );
}
