//! Stale locks, removed before an operation starts.
//!
//! restic calls a lock stale when it has not been refreshed for 30 minutes, or when it was
//! taken on the same host by a process that no longer exists. Neither helps in a cluster: every
//! Job's pod is another host, so a lock left by a pod that was killed (deadline, eviction, lost
//! node) blocks every exclusive operation on the repository for 30 minutes, and a PID check in
//! a new container proves nothing. The agent adds two rules of its own, each resting on facts
//! it can check, and leaves every other lock (a person's `restic`, another namespace's runs) to
//! restic's rules:
//!
//! - A lock under the agent's own host name, when the operator made that name the Job's alone
//!   (`BAAS_HOSTNAME`, see [`crate::job::agent_hostname`]): the Job runs one pod at a time and
//!   replaces a pod only once it has stopped, and at the start no restic of this pod runs yet.
//! - A lock under the host name of a Job of the agent's own namespace that has finished and has
//!   no pod left that could still run ([`owner_of`]).
//!
//! Such a lock is removed by deleting its file `locks/<id>`, which is what `restic unlock` does
//! too; restic's own rules then run as before.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use serde::Deserialize;

use super::AgentEnv;
use crate::Result;
use crate::job::status::job_ended;
use crate::job::{LABEL_MANAGED_BY, MANAGER};

/// A lock as `restic cat lock <id>` prints it (the fields the rules need).
#[derive(Deserialize, Clone, Debug, PartialEq)]
pub struct Lock {
    /// When it was taken or last refreshed (RFC 3339).
    #[serde(default)]
    pub time: String,
    /// Whether it excludes every other lock.
    #[serde(default)]
    pub exclusive: bool,
    /// The host restic ran on: for a baas Job, the pod's host name.
    #[serde(default)]
    pub hostname: String,
    /// restic's PID on that host.
    #[serde(default)]
    pub pid: i64,
}

/// Where the agent learns whether the run behind a lock has finished.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LockOwners {
    /// The Kubernetes API of the agent's namespace (inside a Job).
    Cluster,
    /// Nowhere (a run without a cluster): only restic's rules and the own-host rule apply.
    Unknown,
}

/// What the cluster says about the run that holds a lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// A Job of this namespace that has finished, with no pod left that could still run.
    Finished,
    /// A Job of this namespace that runs, or has a pod that may still run.
    Live,
    /// No Job of this namespace has that host name: someone else's lock.
    Unknown,
}

/// Why the agent may remove a lock; `None` leaves it to restic's rules.
pub fn stale_reason(lock: &Lock, own_hostname: Option<&str>, owner: Owner) -> Option<&'static str> {
    if own_hostname.is_some_and(|own| own == lock.hostname) {
        return Some("left by an earlier pod of this Job");
    }
    (owner == Owner::Finished).then_some("left by a run whose Job has finished")
}

/// What `jobs` and `pods` (the baas Jobs and pods of one namespace) say about the run whose
/// pod had host name `hostname`.
pub fn owner_of(hostname: &str, jobs: &[Job], pods: &[Pod]) -> Owner {
    let template_hostname = |job: &Job| job.spec.as_ref()?.template.spec.as_ref()?.hostname.clone();
    let Some(job) = jobs
        .iter()
        .find(|job| template_hostname(job).as_deref() == Some(hostname))
    else {
        return Owner::Unknown;
    };
    let status = job.status.as_ref();
    let finished = job_ended(job);
    let counted =
        status.is_some_and(|s| s.active.unwrap_or(0) > 0 || s.terminating.unwrap_or(0) > 0);
    // A pod that is terminating, or on a node that stopped answering (phase Unknown), may
    // still be running restic; only Succeeded and Failed say it has stopped.
    let pod_may_run = pods.iter().any(|pod| {
        let spec_hostname = pod.spec.as_ref().and_then(|s| s.hostname.as_deref());
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        spec_hostname == Some(hostname) && !matches!(phase, Some("Succeeded" | "Failed"))
    });
    if finished && !counted && !pod_may_run {
        Owner::Finished
    } else {
        Owner::Live
    }
}

/// Removes the locks the agent can prove stale, then runs `restic unlock` for restic's own
/// rules; returns how many locks went away. Call it before the operation's first restic
/// command that takes a lock, never during the operation.
pub async fn remove_stale(ctx: &AgentEnv) -> Result<usize> {
    let ids = ctx.restic.lock_ids().await?;
    if ids.is_empty() {
        return Ok(0);
    }
    // A lock that vanished since the listing was refreshed or released: not stale.
    let mut locks = Vec::new();
    for id in &ids {
        if let Some(lock) = ctx.restic.lock(id).await {
            locks.push((id, lock));
        }
    }
    let own = ctx.hostname.as_deref();
    // The namespace's Jobs are listed once, and only when a lock of another host needs them.
    let (jobs, pods) = if locks.iter().any(|(_, l)| own != Some(l.hostname.as_str())) {
        namespace_runs(ctx).await
    } else {
        (Vec::new(), Vec::new())
    };
    let mut removed = 0;
    for (id, lock) in &locks {
        let owner = if own == Some(lock.hostname.as_str()) {
            Owner::Unknown
        } else {
            owner_of(&lock.hostname, &jobs, &pods)
        };
        let Some(reason) = stale_reason(lock, own, owner) else {
            continue;
        };
        match ctx.restic.remove_lock(id).await {
            Ok(()) => {
                removed += 1;
                tracing::info!(
                    lock = %id,
                    hostname = %lock.hostname,
                    pid = lock.pid,
                    exclusive = lock.exclusive,
                    time = %lock.time,
                    "removed a stale restic lock ({reason})"
                );
            }
            Err(e) => tracing::warn!(lock = %id, "cannot remove a stale restic lock: {e}"),
        }
    }
    if ids.len() > removed {
        removed += ctx.restic.unlock().await?;
    }
    Ok(removed)
}

/// The baas Jobs and pods of the agent's namespace; none when the cluster cannot say, which
/// leaves every lock to restic's rules.
async fn namespace_runs(ctx: &AgentEnv) -> (Vec<Job>, Vec<Pod>) {
    if ctx.owners != LockOwners::Cluster {
        return (Vec::new(), Vec::new());
    }
    let listed = async {
        let client = kube::Client::try_default().await?;
        let params = ListParams::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGER}"));
        let jobs = Api::<Job>::namespaced(client.clone(), &ctx.namespace)
            .list(&params)
            .await?;
        let pods = Api::<Pod>::namespaced(client, &ctx.namespace)
            .list(&params)
            .await?;
        Ok::<_, kube::Error>((jobs.items, pods.items))
    };
    match listed.await {
        Ok(runs) => runs,
        Err(e) => {
            tracing::warn!(
                namespace = %ctx.namespace,
                "cannot list the namespace's Jobs to judge restic locks (restic's own rules \
                 apply): {e}"
            );
            (Vec::new(), Vec::new())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job(hostname: &str, status: serde_json::Value) -> Job {
        serde_json::from_value(json!({
            "metadata": {"name": "x"},
            "spec": {"template": {"spec": {"hostname": hostname, "containers": []}}},
            "status": status,
        }))
        .expect("a Job")
    }

    fn pod(hostname: &str, phase: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {"hostname": hostname, "containers": []},
            "status": {"phase": phase},
        }))
        .expect("a Pod")
    }

    fn failed() -> serde_json::Value {
        json!({"conditions": [{"type": "Failed", "status": "True"}], "failed": 1})
    }

    fn lock(hostname: &str) -> Lock {
        Lock {
            time: "2026-01-01T00:00:00Z".into(),
            exclusive: false,
            hostname: hostname.into(),
            pid: 1,
        }
    }

    #[test]
    fn lock_of_a_finished_job_without_pods_is_stale() {
        let jobs = [job("other-run", json!({})), job("dead-run", failed())];
        assert_eq!(owner_of("dead-run", &jobs, &[]), Owner::Finished);
        assert_eq!(
            owner_of("dead-run", &jobs, &[pod("dead-run", "Failed")]),
            Owner::Finished
        );
        assert!(stale_reason(&lock("dead-run"), None, Owner::Finished).is_some());
    }

    #[test]
    fn lock_of_a_job_that_runs_or_may_still_run_is_kept() {
        let running = [job("run", json!({"active": 1}))];
        assert_eq!(owner_of("run", &running, &[]), Owner::Live);
        // Failed, but its pod still terminates or its node stopped answering.
        let jobs = [job("run", failed())];
        for phase in ["Running", "Pending", "Unknown"] {
            assert_eq!(owner_of("run", &jobs, &[pod("run", phase)]), Owner::Live);
        }
        let terminating = [job(
            "run",
            json!({"conditions": [{"type": "Failed", "status": "True"}], "terminating": 1}),
        )];
        assert_eq!(owner_of("run", &terminating, &[]), Owner::Live);
        let not_yet = [job(
            "run",
            json!({"conditions": [{"type": "Complete", "status": "False"}]}),
        )];
        assert_eq!(owner_of("run", &not_yet, &[]), Owner::Live);
        assert_eq!(stale_reason(&lock("run"), Some("me"), Owner::Live), None);
    }

    #[test]
    fn lock_of_an_unknown_host_is_left_to_restic() {
        let jobs = [job("dead-run", failed())];
        assert_eq!(owner_of("laptop", &jobs, &[]), Owner::Unknown);
        assert_eq!(
            stale_reason(&lock("laptop"), Some("me"), Owner::Unknown),
            None
        );
        assert_eq!(stale_reason(&lock("laptop"), None, Owner::Unknown), None);
    }

    #[test]
    fn lock_under_the_jobs_own_host_name_is_stale_only_when_the_operator_set_it() {
        assert!(stale_reason(&lock("backup-1a2b"), Some("backup-1a2b"), Owner::Unknown).is_some());
        assert_eq!(
            stale_reason(&lock("backup-1a2b"), None, Owner::Unknown),
            None
        );
    }
}
