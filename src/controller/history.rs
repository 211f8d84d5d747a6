//! Bounded history: a Schedule keeps its newest `keepJobs` finished runs per operation and
//! deletes the older ones (their Jobs and pods follow through owner references).

use kube::api::DeleteParams;
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tracing::info;

use crate::Result;

/// What history needs to know about one run.
#[derive(Clone, Debug, PartialEq)]
pub struct RunEntry {
    /// Name of the run object.
    pub name: String,
    /// Its creationTimestamp.
    pub created: Option<jiff::Timestamp>,
    /// Whether it has ended.
    pub terminal: bool,
}

/// Names of the finished runs beyond the newest `keep`; runs still going are never deleted
/// and do not count.
pub fn runs_to_delete(runs: &[RunEntry], keep: usize) -> Vec<String> {
    let mut finished: Vec<&RunEntry> = runs.iter().filter(|r| r.terminal).collect();
    finished.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| b.name.cmp(&a.name)));
    finished
        .into_iter()
        .skip(keep)
        .map(|r| r.name.clone())
        .collect()
}

/// Deletes runs in the background: the API server removes their Jobs and pods afterwards.
pub async fn delete_runs<K>(api: &Api<K>, names: &[String]) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    for name in names {
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => info!(run = %name, "deleted run beyond keepJobs"),
            // Already gone: the cache that listed it was a moment behind.
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, minute: i64, terminal: bool) -> RunEntry {
        RunEntry {
            name: name.into(),
            created: Some(jiff::Timestamp::from_second(minute * 60).expect("ts")),
            terminal,
        }
    }

    #[test]
    fn history_beyond_keep_deletes_oldest_finished_runs() {
        let runs = [
            entry("r1", 1, true),
            entry("r2", 2, true),
            entry("r3", 3, true),
            entry("r4", 4, true),
        ];
        assert_eq!(runs_to_delete(&runs, 2), vec!["r2", "r1"]);
    }

    #[test]
    fn history_never_deletes_running_runs_nor_counts_them() {
        let runs = [
            entry("old-running", 1, false),
            entry("r2", 2, true),
            entry("r3", 3, true),
            entry("new-running", 4, false),
        ];
        assert_eq!(runs_to_delete(&runs, 1), vec!["r2"]);
        assert!(runs_to_delete(&runs, 2).is_empty());
    }

    #[test]
    fn history_with_keep_zero_deletes_every_finished_run() {
        let runs = [entry("a", 1, true), entry("b", 2, false)];
        assert_eq!(runs_to_delete(&runs, 0), vec!["a"]);
    }
}
