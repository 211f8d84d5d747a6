//! Faults a real cluster has: an agent pod deleted in the middle of a backup, a node whose
//! kubelet stops, and an admission webhook nothing answers. (The operator's leader pod killed
//! at a tick is in `schedule.rs`.)

use std::time::Duration;

use serde_json::Value;

use crate::fixtures::{backup_now, database_pod, one_off, seed_schedule};
use crate::harness::{Cluster, Namespace, now_seconds, rewrite, seconds_of, wait_for};

/// The agent pods of one run.
fn agent_pods(ns: &Namespace, run: &str) -> Vec<Value> {
    ns.list("pods")
        .into_iter()
        .filter(|p| p["metadata"]["labels"]["backup.appuio.ch/run"] == run)
        .collect()
}

#[test]
#[ignore = "needs the local cluster: scripts/cluster up"]
fn agent_pod_deleted_mid_backup_fails_the_run_and_the_next_one_succeeds() {
    let ns = Namespace::create("agentkill");
    ns.create_seed_secrets();
    ns.create_pvc("files", "ReadWriteOnce", false);
    ns.write_files("writer", &[("files", "kept.txt", "kept")]);
    // a dump that takes a minute to stream, so that the backup is surely in flight
    database_pod(
        &ns,
        "slow-db",
        "for i in $(seq 1 60); do echo row $i; sleep 1; done",
        None,
    );
    let bucket = ns.bucket("agentkill");
    ns.apply(&one_off(
        &ns,
        "backup.yaml",
        "before-upgrade",
        "slow",
        &bucket,
    ));
    let agent = wait_for(
        "the agent pod of the slow Backup to run",
        Duration::from_secs(90),
        Duration::from_millis(500),
        || {
            agent_pods(&ns, "slow")
                .into_iter()
                .find(|p| p["status"]["phase"] == "Running")
        },
    );
    // let restic open the repository and start reading the stream
    std::thread::sleep(Duration::from_secs(8));
    let pod = agent["metadata"]["name"].as_str().expect("pod name");
    ns.kubectl_ok(&[
        "delete",
        "pod",
        pod,
        "--grace-period=0",
        "--force",
        "--wait=false",
    ]);

    let failed = ns.wait_run_finished("backup", "slow", Duration::from_secs(120));
    assert_eq!(
        failed["status"]["state"], "Failed",
        "{:#}",
        failed["status"]
    );
    let message = failed["status"]["message"].as_str().unwrap_or_default();
    assert!(
        !message.trim().is_empty(),
        "a failed run must say why: {:#}",
        failed["status"]
    );

    // nothing half-written: no snapshot of the killed run, and the repository is whole
    let repo = ns.repo(&bucket);
    let tagged = |run: &str| {
        repo.snapshots(&ns.name)
            .into_iter()
            .filter(|s| {
                s["tags"]
                    .as_array()
                    .is_some_and(|t| t.iter().any(|t| t == &Value::from(format!("run={run}"))))
            })
            .count()
    };
    assert_eq!(tagged("slow"), 0, "the killed run left a snapshot");

    // the next backup succeeds without anyone unlocking by hand
    ns.kubectl_ok(&["delete", "pod", "slow-db", "--wait=true"]);
    backup_now(&ns, "after", &bucket);
    assert_eq!(tagged("after"), 1);
    repo.run_ok(&["check", "--no-lock"]);
}

/// Starts a node's kubelet again when dropped, so that a failing test leaves the cluster whole.
struct StoppedNode<'a> {
    cluster: &'a Cluster,
    node: String,
}

impl StoppedNode<'_> {
    fn stop<'a>(cluster: &'a Cluster, node: &str) -> StoppedNode<'a> {
        let mut cmd = cluster.command("scripts/cluster");
        cmd.args(["stop-node", node]);
        let run = cluster.run(cmd, None);
        assert!(run.ok, "scripts/cluster stop-node {node}: {}", run.stderr);
        StoppedNode {
            cluster,
            node: node.to_string(),
        }
    }
}

impl Drop for StoppedNode<'_> {
    fn drop(&mut self) {
        let mut cmd = self.cluster.command("scripts/cluster");
        cmd.args(["start-node", &self.node]);
        let run = self.cluster.run(cmd, None);
        if !std::thread::panicking() {
            assert!(
                run.ok,
                "scripts/cluster start-node {}: {}",
                self.node, run.stderr
            );
        }
    }
}

#[test]
#[ignore = "needs the local cluster: scripts/cluster up"]
fn a_stopped_kubelet_does_not_hold_up_backups_on_the_other_node() {
    let ns = Namespace::create("nodedown");
    let c = ns.cluster();
    let nodes = c.nodes();
    assert!(nodes.len() >= 2, "needs two nodes: {nodes:?}");
    let (up, down) = (&nodes[0], &nodes[1]);
    ns.create_seed_secrets();
    ns.create_pvc("files", "ReadWriteOnce", false);
    ns.write_files_on("writer", Some(up), &[("files", "kept.txt", "kept")]);
    let bucket = ns.bucket("nodedown");
    {
        let _stopped = StoppedNode::stop(c, down);
        let backup = backup_now(&ns, "while-down", &bucket);
        let pods = agent_pods(&ns, "while-down");
        assert!(
            !pods.is_empty() && pods.iter().all(|p| p["spec"]["nodeName"] == up.as_str()),
            "the backup ran elsewhere than {up}: {pods:#?} {:#}",
            backup["status"]
        );
    }
    // and the node comes back
    wait_for(
        &format!("node {down} Ready again"),
        Duration::from_secs(90),
        Duration::from_secs(1),
        || {
            let ready = c.kubectl(
                &[
                    "get",
                    "node",
                    down,
                    "-o",
                    r#"jsonpath={.status.conditions[?(@.type=="Ready")].status}"#,
                ],
                None,
            );
            (ready.stdout.trim() == "True").then_some(())
        },
    );
}

/// The two admission webhooks, by kind and name.
const WEBHOOKS: [(&str, &str); 2] = [
    ("mutatingwebhookconfiguration", "baas-mutating"),
    ("validatingwebhookconfiguration", "baas-validating"),
];

/// Both admission webhooks pointed at a port their Service does not have, as when every
/// replica that serves them stalls; pointed back when dropped.
struct UnreachableWebhooks<'a>(&'a Cluster);

impl UnreachableWebhooks<'_> {
    fn point_at(c: &Cluster, port: u16) {
        let patch = format!(
            r#"[{{"op": "replace", "path": "/webhooks/0/clientConfig/service/port", "value": {port}}}]"#
        );
        for (kind, name) in WEBHOOKS {
            let run = c.kubectl(&["patch", kind, name, "--type=json", "-p", &patch], None);
            assert!(run.ok, "patching {kind} {name}: {}", run.stderr);
        }
    }

    fn new(c: &Cluster) -> UnreachableWebhooks<'_> {
        Self::point_at(c, 1);
        UnreachableWebhooks(c)
    }
}

impl Drop for UnreachableWebhooks<'_> {
    fn drop(&mut self) {
        Self::point_at(self.0, 443);
    }
}

#[test]
#[ignore = "needs the local cluster: scripts/cluster up"]
fn scheduled_backups_go_on_while_the_webhook_is_unreachable() {
    let ns = Namespace::create("nowebhook");
    let c = ns.cluster();
    ns.create_seed_secrets();
    ns.create_pvc("app-data", "ReadWriteMany", false);
    ns.write_files("writer", &[("app-data", "index.html", "<h1>hello</h1>")]);
    let bucket = ns.bucket("nowebhook");
    ns.apply(&seed_schedule(&ns, &bucket, "* * * * *", 10));
    let down = UnreachableWebhooks::new(c);
    let since = now_seconds().floor();
    // Nothing answers the webhooks: a user's object is refused, they fail closed.
    let refused = ns.apply_with(
        &rewrite(
            &seed_schedule(&ns, &bucket, "* * * * *", 10),
            &[("name: schedule-test", "name: refused")],
        ),
        &[],
    );
    assert!(
        !refused.ok && refused.stderr.contains("webhook"),
        "a Schedule was admitted with no webhook to admit it: {} {}",
        refused.stdout,
        refused.stderr
    );
    // The Schedule admitted before goes on: its next tick's run is created and backs up.
    let run = wait_for(
        "a Backup of the Schedule, created and succeeded with the webhook unreachable",
        Duration::from_secs(180),
        Duration::from_secs(2),
        || {
            ns.list("backups").into_iter().find(|b| {
                seconds_of(&b["metadata"]["creationTimestamp"]) >= since
                    && b["status"]["state"] == "Succeeded"
            })
        },
    );
    drop(down);
    let snapshots = ns.repo(&bucket).snapshots(&ns.name);
    assert!(
        !snapshots.is_empty(),
        "run {} succeeded but the repository has no snapshot",
        run["metadata"]["name"]
    );
}
