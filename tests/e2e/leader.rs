//! Two operator replicas, one leader, under the fault that hurts leader election most: a
//! leader that stalls (SIGSTOP: a frozen process, a node under memory pressure) past its
//! lease, while its successor takes over, and then wakes up believing it still leads. Round
//! after round, no tick may run twice and none may be lost.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::fixtures::{backup_now, seed_schedule};
use crate::harness::{Cluster, Namespace, Repo, now_seconds, rewrite, wait_for};

const TICK_ANNOTATION: &str = "backup.appuio.ch/tick";
const SCHEDULES: [&str; 3] = ["every-minute-a", "every-minute-b", "every-minute-c"];
/// How often the leader is paused.
const ROUND: Duration = Duration::from_secs(30);

/// How many times the leader is paused; `BAAS_TEST_LEADER_ROUNDS` overrides it.
fn rounds() -> usize {
    std::env::var("BAAS_TEST_LEADER_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(20)
}

/// The host process of an operator pod: the pods run under containerd on this machine, and
/// the operator's environment names its pod.
fn operator_pid(pod: &str) -> u32 {
    let wanted = format!("BAAS_POD_NAME={pod}");
    let found = std::fs::read_dir("/proc")
        .expect("/proc is readable")
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            cmdline.split(|b| *b == 0).any(|arg| arg == b"operator")
                && environ
                    .split(|b| *b == 0)
                    .any(|var| var == wanted.as_bytes())
        });
    found.unwrap_or_else(|| panic!("no host process of operator pod {pod}"))
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// A paused process, resumed when dropped, so that a failing assertion never leaves an
/// operator replica frozen for the tests after this one.
struct Paused(u32);

impl Paused {
    fn pause(pid: u32) -> Paused {
        signal(pid, "STOP");
        Paused(pid)
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        signal(self.0, "CONT");
    }
}

fn ready_operator_pods(c: &Cluster) -> usize {
    c.operator_pods()
        .iter()
        .filter(|p| {
            p["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
        })
        .count()
}

/// The tick of a Schedule's run; 0 for a one-off run.
fn tick_of(run: &Value) -> i64 {
    run["metadata"]["annotations"][TICK_ANNOTATION]
        .as_str()
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .map_or(0, |t| t.as_second())
}

fn schedule_of(run: &Value) -> String {
    run["metadata"]["ownerReferences"][0]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn snapshots_per_run(repo: &Repo, ns: &Namespace) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for snapshot in repo.snapshots(&ns.name) {
        for tag in snapshot["tags"].as_array().into_iter().flatten() {
            if let Some(run) = tag.as_str().and_then(|t| t.strip_prefix("run=")) {
                *counts.entry(run.to_string()).or_insert(0) += 1;
            }
        }
    }
    counts
}

#[test]
#[ignore = "needs the local cluster: scripts/cluster up"]
fn a_leader_paused_past_its_lease_never_runs_a_tick_twice_or_loses_one() {
    let ns = Namespace::create("leader");
    let c = ns.cluster();
    ns.create_seed_secrets();
    ns.create_pvc("app-data", "ReadWriteMany", false);
    ns.write_files("writer", &[("app-data", "index.html", "<h1>hello</h1>")]);
    let bucket = ns.bucket("leader");
    // A repository in use: the first backups of a new one take turns, which is not what this
    // test is about.
    backup_now(&ns, "first", &bucket);
    for name in SCHEDULES {
        ns.apply(&rewrite(
            &seed_schedule(&ns, &bucket, "* * * * *", 1000),
            &[("name: schedule-test", &format!("name: {name}"))],
        ));
    }
    // The first tick the Schedules can see whole: the one after they were all created.
    let first_tick = (now_seconds() / 60.0).floor() as i64 * 60 + 60;

    let mut takeovers = Vec::new();
    for round in 0..rounds() {
        let started = Instant::now();
        let leader = wait_for(
            &format!("round {round}: both replicas ready and one leading"),
            Duration::from_secs(120),
            Duration::from_millis(500),
            || {
                (ready_operator_pods(c) == 2)
                    .then(|| c.operator_leader())
                    .flatten()
            },
        );
        let paused = Paused::pause(operator_pid(&leader));
        let stopped = Instant::now();
        let successor = wait_for(
            &format!("round {round}: another replica to take the lease from the paused {leader}"),
            Duration::from_secs(90),
            Duration::from_millis(250),
            || c.operator_leader().filter(|holder| *holder != leader),
        );
        takeovers.push(stopped.elapsed());
        // Past its lease and after the takeover: the paused leader wakes up to find a
        // successor, with reconciles of its own still queued.
        std::thread::sleep(Duration::from_secs(2));
        drop(paused);
        println!(
            "round {round}: {leader} paused, {successor} took over after {:.1}s",
            takeovers[round].as_secs_f64()
        );
        // A pause every ROUND keeps the cluster leaderless for half the time: runs are
        // delayed, but one that a Job finishes in seconds still ends before the next tick.
        if let Some(rest) = ROUND.checked_sub(started.elapsed()) {
            std::thread::sleep(rest);
        }
    }
    // The tick after the last round must be handled too.
    let last_tick = (now_seconds() / 60.0).floor() as i64 * 60;
    let repo = ns.repo(&bucket);
    // Every run up to the last tick finished, those of the last tick included; a lost tick
    // shows in the count below, not as a timeout here.
    let listed = || -> Vec<Value> {
        ns.list("backups")
            .into_iter()
            .filter(|r| (first_tick..=last_tick).contains(&tick_of(r)))
            .collect()
    };
    let settled = Instant::now();
    let runs = loop {
        let runs = listed();
        let finished = runs.iter().all(|r| r["status"]["finishedAt"].is_string());
        let last = runs.iter().filter(|r| tick_of(r) == last_tick).count();
        if (finished && last == SCHEDULES.len()) || settled.elapsed() > Duration::from_secs(240) {
            break runs;
        }
        std::thread::sleep(Duration::from_secs(2));
    };
    let mut per_tick: BTreeMap<(String, i64), Vec<String>> = BTreeMap::new();
    for run in &runs {
        per_tick
            .entry((schedule_of(run), tick_of(run)))
            .or_default()
            .push(run["metadata"]["name"].as_str().unwrap_or_default().into());
    }
    let mut lost = Vec::new();
    for schedule in SCHEDULES {
        let mut tick = first_tick;
        while tick <= last_tick {
            if !per_tick.contains_key(&(schedule.to_string(), tick)) {
                lost.push(format!("{schedule}@{tick}"));
            }
            tick += 60;
        }
    }
    let duplicate_runs: Vec<_> = per_tick.values().filter(|names| names.len() > 1).collect();
    let mut jobs_per_run: BTreeMap<String, usize> = BTreeMap::new();
    for job in ns.list("jobs") {
        for owner in job["metadata"]["ownerReferences"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if owner["kind"] == "Backup" {
                *jobs_per_run
                    .entry(owner["name"].as_str().unwrap_or_default().into())
                    .or_insert(0) += 1;
            }
        }
    }
    let duplicate_jobs: Vec<_> = jobs_per_run.iter().filter(|(_, n)| **n > 1).collect();
    let snapshots = snapshots_per_run(&repo, &ns);
    let duplicate_snapshots: Vec<_> = snapshots.iter().filter(|(_, n)| **n > 1).collect();
    let failed: Vec<_> = runs
        .iter()
        .filter(|r| r["status"]["state"] != "Succeeded")
        .map(|r| format!("{}: {}", r["metadata"]["name"], r["status"]))
        .collect();
    let slowest = takeovers.iter().max().copied().unwrap_or_default();
    println!(
        "{} rounds, {} ticks of {} Schedules: {} runs, {} duplicate runs, {} duplicate Jobs, \
         {} runs with more than one snapshot, {} lost ticks; slowest takeover {:.1}s",
        takeovers.len(),
        (last_tick - first_tick) / 60 + 1,
        SCHEDULES.len(),
        runs.len(),
        duplicate_runs.len(),
        duplicate_jobs.len(),
        duplicate_snapshots.len(),
        lost.len(),
        slowest.as_secs_f64()
    );
    assert!(lost.is_empty(), "ticks without a run: {lost:?}");
    assert!(
        duplicate_runs.is_empty(),
        "ticks with several runs: {duplicate_runs:?}"
    );
    assert!(
        duplicate_jobs.is_empty(),
        "runs with several Jobs: {duplicate_jobs:?}"
    );
    assert!(
        duplicate_snapshots.is_empty(),
        "runs that wrote twice: {duplicate_snapshots:?}"
    );
    assert!(failed.is_empty(), "runs that did not succeed: {failed:#?}");
}
