//! Where agent Jobs run and what they may use, set once for the whole operator
//! (`--agent-node-selector`, `--agent-tolerations`, `--agent-affinity`, `--agent-resources`;
//! the chart's `agent.*` values). A platform team keeps backups off some nodes or gives
//! restic its memory here; users' objects cannot change it.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Affinity, ResourceRequirements, Toleration};
use serde::de::DeserializeOwned;

/// The operator-wide placement and resources of every agent Job.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AgentPlacement {
    /// Node labels a Job that may run anywhere must match.
    pub node_selector: BTreeMap<String, String>,
    /// Taints every Job tolerates.
    pub tolerations: Vec<Toleration>,
    /// Affinity of a Job that may run anywhere.
    pub affinity: Option<Affinity>,
    /// Requests and limits of the agent container.
    pub resources: Option<ResourceRequirements>,
}

impl AgentPlacement {
    /// Sets the placement on a built Job. A Job pinned to a node (`nodeName`: its claims are
    /// attached there) keeps only tolerations and resources: a node selector or affinity
    /// that the node does not match would make its kubelet refuse the pod, and the backup
    /// cannot run anywhere else.
    pub fn apply(&self, job: &mut Job) {
        let pods = job
            .spec
            .iter_mut()
            .flat_map(|spec| spec.template.spec.iter_mut());
        for pod in pods {
            if pod.node_name.is_none() {
                if !self.node_selector.is_empty() {
                    pod.node_selector = Some(self.node_selector.clone());
                }
                pod.affinity = self.affinity.clone();
            }
            if !self.tolerations.is_empty() {
                pod.tolerations = Some(self.tolerations.clone());
            }
            for container in &mut pod.containers {
                container.resources = self.resources.clone();
            }
        }
    }
}

/// Parses one flag's JSON value (clap's value parser for the placement flags), naming what
/// is wrong without echoing the value.
pub fn parse_json<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    serde_json::from_str(text).map_err(|e| format!("not the expected JSON: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::JobSpec;
    use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};

    fn job(node: Option<&str>) -> Job {
        Job {
            spec: Some(JobSpec {
                template: PodTemplateSpec {
                    spec: Some(PodSpec {
                        node_name: node.map(str::to_string),
                        containers: vec![Container {
                            name: "agent".into(),
                            ..Container::default()
                        }],
                        ..PodSpec::default()
                    }),
                    ..PodTemplateSpec::default()
                },
                ..JobSpec::default()
            }),
            ..Job::default()
        }
    }

    fn placement() -> AgentPlacement {
        AgentPlacement {
            node_selector: parse_json(r#"{"pool":"backup"}"#).expect("object"),
            tolerations: parse_json(r#"[{"key":"backup","operator":"Exists"}]"#)
                .expect("tolerations"),
            affinity: parse_json(
                r#"{"nodeAffinity":{"preferredDuringSchedulingIgnoredDuringExecution":[{"weight":1,"preference":{"matchExpressions":[{"key":"zone","operator":"In","values":["a"]}]}}]}}"#,
            )
            .expect("affinity"),
            resources: parse_json(r#"{"limits":{"memory":"1Gi"}}"#).expect("resources"),
        }
    }

    fn pod(job: &Job) -> serde_json::Value {
        serde_json::to_value(&job.spec.as_ref().expect("spec").template.spec).expect("json")
    }

    #[test]
    fn unpinned_job_gets_every_setting() {
        let mut job = job(None);
        placement().apply(&mut job);
        let pod = pod(&job);
        assert_eq!(pod["nodeSelector"], serde_json::json!({"pool": "backup"}));
        assert_eq!(pod["tolerations"][0]["key"], "backup");
        assert_eq!(
            pod["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]["weight"],
            1
        );
        assert_eq!(pod["containers"][0]["resources"]["limits"]["memory"], "1Gi");
    }

    #[test]
    fn pinned_job_keeps_its_node_and_gets_only_tolerations_and_resources() {
        let mut job = job(Some("node-b"));
        placement().apply(&mut job);
        let pod = pod(&job);
        assert_eq!(pod["nodeName"], "node-b");
        assert!(pod.get("nodeSelector").is_none(), "{pod}");
        assert!(pod.get("affinity").is_none(), "{pod}");
        assert_eq!(pod["tolerations"][0]["key"], "backup");
        assert_eq!(pod["containers"][0]["resources"]["limits"]["memory"], "1Gi");
    }

    #[test]
    fn default_placement_changes_nothing() {
        let mut placed = job(None);
        AgentPlacement::default().apply(&mut placed);
        assert_eq!(placed, job(None));
    }

    #[test]
    fn malformed_json_is_refused_without_repeating_it() {
        let error = parse_json::<Vec<Toleration>>(r#"{"key":"secret-looking"}"#)
            .expect_err("an object is no list");
        assert!(error.starts_with("not the expected JSON"), "{error}");
        assert!(!error.contains("secret-looking"), "{error}");
    }
}
