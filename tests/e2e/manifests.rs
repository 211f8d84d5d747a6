//! What a platform team installs: every manifest of the repository must be accepted by a real
//! API server, and `kubectl explain` must show the API's documentation.

use std::path::Path;
use std::time::Duration;

use crate::harness::{Cluster, Namespace, wait_for};

fn yaml_files(dir: &str) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|entry| entry.expect("dir entry").path())
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("yaml"))
        .map(|p| p.display().to_string())
        .collect();
    files.sort();
    files
}

#[test]
#[ignore = "needs the local cluster: scripts/cluster up"]
fn every_manifest_is_accepted_by_the_api_server_in_a_server_dry_run() {
    let cluster = Cluster::get();
    let stand_ins = "tests/e2e/fixtures/third-party-crds.yaml";
    let run = cluster.kubectl(&["apply", "--server-side", "-f", stand_ins], None);
    assert!(run.ok, "applying {stand_ins}: {}", run.stderr);
    let run = cluster.kubectl(
        &[
            "wait",
            "--for",
            "condition=Established",
            "--timeout=60s",
            "-f",
            stand_ins,
        ],
        None,
    );
    assert!(run.ok, "waiting for {stand_ins}: {}", run.stderr);

    let mut files = yaml_files("manifests");
    files.extend(yaml_files("webhooks"));
    assert!(
        files.len() >= 10,
        "expected the whole install, found {files:?}"
    );
    for file in &files {
        // Kinds that were just established may take a moment to be served for dry runs.
        wait_for(
            &format!("the API server to accept {file}"),
            Duration::from_secs(30),
            Duration::from_millis(500),
            || {
                let run =
                    cluster.kubectl(&["apply", "--dry-run=server", "-f", file.as_str()], None);
                if run.ok {
                    Some(())
                } else {
                    eprintln!("{file}: {}", run.stderr.trim());
                    None
                }
            },
        );
    }

    // The examples go through our webhook in a namespace of their own, with what they refer
    // to: the seed's Secrets and the claim restore-pvc.yaml restores into.
    let ns = Namespace::create("examples");
    ns.create_seed_secrets();
    ns.create_pvc("mariadb-restored", "ReadWriteOnce", false);
    for file in yaml_files("manifests/examples") {
        let name = Path::new(&file)
            .file_name()
            .map(|n| n.to_string_lossy().to_string());
        let run = ns.kubectl(&["apply", "--dry-run=server", "-f", &file]);
        assert!(run.ok, "{name:?} was refused: {}", run.stderr);
    }
}

#[test]
#[ignore = "needs the local cluster: scripts/cluster up"]
fn kubectl_explain_shows_the_field_documentation() {
    let cluster = Cluster::get();
    let run = cluster.kubectl(&["explain", "schedules.spec.backup.keepJobs"], None);
    assert!(run.ok, "kubectl explain failed: {}", run.stderr);
    assert!(
        run.stdout.contains("How many finished Backup objects"),
        "{}",
        run.stdout
    );
    let run = cluster.kubectl(&["explain", "restores.spec.restoreMethod"], None);
    assert!(run.ok, "kubectl explain failed: {}", run.stderr);
    assert!(run.stdout.contains("exactly one of"), "{}", run.stdout);
}
