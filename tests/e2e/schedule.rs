//! The seed's Schedule running every minute: what lands in the repository and the
//! Pushgateway, one run per tick even when the operator is killed at a tick, and a history
//! bounded by keepJobs. One test, because every phase waits for cron ticks and the e2e tier
//! must stay short.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value;

use crate::fixtures::{database_pod, seed_schedule};
use crate::harness::{
    Cluster, Namespace, OPERATOR_NAMESPACE, Repo, now_seconds, snapshot_paths, wait_for,
};

const TICK_ANNOTATION: &str = "backup.appuio.ch/tick";
const DUMP: &str = "CREATE TABLE t (id int);\nINSERT INTO t VALUES (42);\n";

/// Every Backup seen in the namespace while the test polls: name → tick (epoch seconds).
#[derive(Default)]
struct Runs {
    seen: BTreeMap<String, i64>,
}

impl Runs {
    /// Lists the Backups now, remembering each one's tick.
    fn poll(&mut self, ns: &Namespace) -> Vec<Value> {
        let backups = ns.list("backups");
        for b in &backups {
            let name = b["metadata"]["name"].as_str().unwrap_or_default();
            let tick = b["metadata"]["annotations"][TICK_ANNOTATION]
                .as_str()
                .unwrap_or_else(|| panic!("Backup {name} has no {TICK_ANNOTATION}: {b:#}"));
            let tick: jiff::Timestamp = tick
                .parse()
                .unwrap_or_else(|e| panic!("{TICK_ANNOTATION} {tick:?}: {e}"));
            self.seen.insert(name.to_string(), tick.as_second());
        }
        backups
    }

    /// Waits for the Backup of the tick at `tick` (epoch seconds) to finish; its JSON.
    fn wait_tick_finished(&mut self, ns: &Namespace, tick: i64) -> Value {
        wait_for(
            &format!("the Backup of the tick at {tick} to finish"),
            Duration::from_secs(180),
            Duration::from_secs(1),
            || {
                self.poll(ns).into_iter().find(|b| {
                    b["metadata"]["annotations"][TICK_ANNOTATION]
                        .as_str()
                        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                        .is_some_and(|t| t.as_second() == tick)
                        && b["status"]["finishedAt"].is_string()
                })
            },
        )
    }
}

fn name_of(object: &Value) -> String {
    object["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn tick_of(object: &Value) -> i64 {
    object["metadata"]["annotations"][TICK_ANNOTATION]
        .as_str()
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .map(|t| t.as_second())
        .expect("runs of a Schedule carry their tick")
}

/// Snapshots the agent wrote for one run (restic tag `run=<name>`).
fn snapshots_of_run(repo: &Repo, ns: &Namespace, run: &str) -> Vec<Value> {
    let tag = format!("run={run}");
    repo.snapshots(&ns.name)
        .into_iter()
        .filter(|s| {
            s["tags"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t == &Value::from(tag.as_str())))
        })
        .collect()
}

fn sleep_until(epoch_seconds: f64) {
    let now = now_seconds();
    if epoch_seconds > now {
        std::thread::sleep(Duration::from_secs_f64(epoch_seconds - now));
    }
}

#[test]
#[ignore = "needs the local cluster: scripts/cluster up"]
fn seed_schedule_every_minute_backs_up_once_per_tick_and_keeps_two_runs() {
    let ns = Namespace::create("schedule");
    let c = ns.cluster();
    ns.create_seed_secrets();
    ns.create_pvc("app-data", "ReadWriteMany", false);
    ns.create_pvc("mariadb", "ReadWriteOnce", false);
    ns.create_pvc("scratch", "ReadWriteOnce", true);
    let files = [
        ("app-data", "index.html", "<h1>hello</h1>"),
        ("app-data", "uploads/2024/photo.txt", "a cat picture"),
        ("mariadb", "ibdata1", "database pages"),
        ("scratch", "cache.bin", "throwaway"),
    ];
    ns.write_files("writer", &files);
    // the database keeps its ReadWriteOnce PVC mounted while the backup runs
    database_pod(
        &ns,
        "mariadb",
        &format!("printf '{}'", DUMP.replace('\n', "\\n")),
        Some("mariadb"),
    );
    let bucket = ns.bucket("schedule");
    ns.apply(&seed_schedule(&ns, &bucket, " * * * * *", 2));
    let mut runs = Runs::default();

    // -- the first tick: a Backup and its Job appear and complete
    let first = wait_for(
        "the first Backup of schedule-test",
        Duration::from_secs(90),
        Duration::from_secs(1),
        || runs.poll(&ns).into_iter().next(),
    );
    let first_name = name_of(&first);
    wait_for(
        &format!("a Job owned by Backup {first_name}"),
        Duration::from_secs(30),
        Duration::from_millis(500),
        || {
            ns.list("jobs")
                .into_iter()
                .find(|j| owned_by(j, "Backup", &first_name))
        },
    );
    let first = ns.wait_run_succeeded("backup", &first_name, Duration::from_secs(180));
    assert!(
        first["status"]["snapshotID"].is_string(),
        "no snapshotID: {:#}",
        first["status"]
    );
    for job in first["status"]["jobs"].as_array().into_iter().flatten() {
        let job = job.as_str().expect("job names are strings");
        let j = ns.get("job", job).expect("the run's Job exists");
        assert_eq!(j["status"]["succeeded"], 1, "Job {job}: {:#}", j["status"]);
    }

    // -- what the first run wrote: every PVC but the excluded one, and the dump
    let repo = ns.repo(&bucket);
    let written = snapshots_of_run(&repo, &ns, &first_name);
    let paths: BTreeSet<String> = written.iter().flat_map(snapshot_paths).collect();
    let dump_path = format!("/{}-mariadb-mariadb", ns.name);
    let expected: BTreeSet<String> = ["/data/app-data", "/data/mariadb", dump_path.as_str()]
        .map(String::from)
        .into();
    assert_eq!(paths, expected, "snapshots of {first_name}: {written:#?}");
    let snapshot_holding = |path: &str| -> String {
        written
            .iter()
            .find(|s| {
                snapshot_paths(s)
                    .iter()
                    .any(|p| path.starts_with(p.as_str()))
            })
            .and_then(|s| s["id"].as_str())
            .unwrap_or_else(|| panic!("no snapshot holds {path}"))
            .to_string()
    };
    for (pvc, file, content) in files.iter().filter(|f| f.0 != "scratch") {
        let path = format!("/data/{pvc}/{file}");
        assert_eq!(
            repo.dump(&snapshot_holding(&path), &path),
            *content,
            "{path}"
        );
    }
    assert_eq!(repo.dump(&snapshot_holding(&dump_path), &dump_path), DUMP);

    // -- the Pushgateway got the run's metrics for this namespace
    let metrics = c.http_get(&format!("{}/metrics", c.pushgateway()));
    let ours = |name: &str| {
        metrics.lines().find(|l| {
            l.starts_with(&format!("{name}{{"))
                && l.contains(&format!("namespace=\"{}\"", ns.name))
                && l.contains("kind=\"backup\"")
        })
    };
    let success = ours("baas_run_success")
        .unwrap_or_else(|| panic!("no baas_run_success for {} in the Pushgateway", ns.name));
    assert!(success.ends_with(" 1"), "{success}");

    // -- kill the leading operator pod just before the next tick: the other replica
    //    takes the lease over and runs the missed tick, once
    let missed_tick = (now_seconds() / 60.0).floor() as i64 * 60 + 60;
    sleep_until(missed_tick as f64 - 0.5);
    let old_leader = kill_operator(c);
    sleep_until(missed_tick as f64 + 1.0);
    let new_leader = restart_operator(c, &old_leader);
    assert_ne!(old_leader, new_leader, "another replica did not take over");
    let missed_run = runs.wait_tick_finished(&ns, missed_tick);
    assert_eq!(
        missed_run["status"]["state"], "Succeeded",
        "{:#}",
        missed_run["status"]
    );

    // -- and right after the following tick, when its run may just have been created
    let kill_tick = missed_tick + 60;
    sleep_until(kill_tick as f64 + 0.2);
    let old_leader = kill_operator(c);
    restart_operator(c, &old_leader);

    // -- that makes three finished runs: keepJobs 2 deletes the oldest, with its Jobs
    let third = runs.wait_tick_finished(&ns, kill_tick);
    let third_name = name_of(&third);
    assert_eq!(
        third["status"]["state"], "Succeeded",
        "{:#}",
        third["status"]
    );
    wait_for(
        "history bounded to 2 finished Backups whose Jobs are the only ones left",
        Duration::from_secs(60),
        Duration::from_secs(1),
        || {
            let backups = runs.poll(&ns);
            let names: BTreeSet<String> = backups.iter().map(name_of).collect();
            let finished = backups
                .iter()
                .filter(|b| b["status"]["finishedAt"].is_string())
                .count();
            let jobs = ns.list("jobs");
            let orphans = jobs.iter().any(|j| {
                !j["metadata"]["deletionTimestamp"].is_string()
                    && !names.iter().any(|n| owned_by(j, "Backup", n))
            });
            (finished <= 2 && !names.contains(&first_name) && !orphans).then_some(())
        },
    );

    // -- no tick ran twice: one run per tick, and each run wrote as much as the first
    let mut per_tick: BTreeMap<i64, Vec<&String>> = BTreeMap::new();
    for (name, tick) in &runs.seen {
        per_tick.entry(*tick).or_default().push(name);
    }
    assert!(
        per_tick.values().all(|names| names.len() == 1),
        "a tick has several runs: {per_tick:?}"
    );
    assert!(per_tick.contains_key(&missed_tick) && per_tick.contains_key(&tick_of(&third)));
    let missed_name = name_of(&missed_run);
    for run in [&missed_name, &third_name] {
        assert_eq!(
            snapshots_of_run(&repo, &ns, run).len(),
            written.len(),
            "run {run} wrote another number of snapshots than the first run"
        );
    }
}

fn owned_by(object: &Value, kind: &str, name: &str) -> bool {
    object["metadata"]["ownerReferences"]
        .as_array()
        .is_some_and(|refs| refs.iter().any(|r| r["kind"] == kind && r["name"] == name))
}

/// Kills the leading operator pod at once (no grace period, like a node or process crash);
/// its name. The Deployment starts a new pod, and the other replica takes the lease over.
fn kill_operator(c: &Cluster) -> String {
    let leader = wait_for(
        "an operator pod holding the lease",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || c.operator_leader(),
    );
    let run = c.kubectl(
        &[
            "-n",
            OPERATOR_NAMESPACE,
            "delete",
            "pod",
            &leader,
            "--grace-period=0",
            "--force",
            "--wait=false",
        ],
        None,
    );
    assert!(run.ok, "deleting the leader pod {leader}: {}", run.stderr);
    leader
}

/// Waits until both replicas run again and one of them, not `old`, holds the lease; its name.
fn restart_operator(c: &Cluster, old: &str) -> String {
    wait_for(
        "two operator pods and a new leader",
        Duration::from_secs(120),
        Duration::from_millis(500),
        || {
            let ready = c
                .operator_pods()
                .iter()
                .filter(|p| {
                    p["status"]["conditions"].as_array().is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c["type"] == "Ready" && c["status"] == "True")
                    })
                })
                .count();
            let leader = c.operator_leader()?;
            (ready == 2 && leader != old).then_some(leader)
        },
    )
}
