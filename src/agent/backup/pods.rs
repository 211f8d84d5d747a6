//! Which pods a backup runs commands in, and what each command is.
//!
//! The Job names only pods and containers ([`BackupPod`], from `BAAS_BACKUP_PODS`). The
//! command is read from the pod's annotation when it is run: it may hold a password
//! (`mysqldump -psecret`), so it stays in the pod's metadata and is never copied into a Job
//! spec, an error, a log line or a snapshot's file name.

use k8s_openapi::api::core::v1::Pod;

use crate::crd::ANNOTATION_BACKUP_COMMAND;
use crate::job::{BackupPod, ENV_BACKUP_PODS};
use crate::{Error, Result};

/// Parses `BAAS_BACKUP_PODS`; absent or empty means none.
pub fn parse_pods(json: Option<&str>) -> Result<Vec<BackupPod>> {
    match json.map(str::trim) {
        None | Some("") => Ok(Vec::new()),
        Some(json) => serde_json::from_str(json).map_err(|e| {
            Error::InvalidSpec(format!(
                "{ENV_BACKUP_PODS} is not a list of pods and containers: {e}"
            ))
        }),
    }
}

/// The file name of the dump inside the snapshot: `/<namespace>-<pod>-<container>`.
pub fn stdin_filename(namespace: &str, target: &BackupPod) -> String {
    format!("/{namespace}-{}-{}", target.pod, target.container)
}

/// How messages name a backup command: by pod and container, never by its text.
pub fn describe(target: &BackupPod) -> String {
    format!(
        "backup command in pod {}, container {}",
        target.pod, target.container
    )
}

/// The backup command of `pod` as its annotation holds it now. `Err` says why there is none,
/// without any part of a command: the pod is gone, or its annotation was removed or emptied
/// since the backup was planned.
pub fn command_of(pod: Option<&Pod>) -> std::result::Result<String, String> {
    let pod = pod.ok_or("the pod is gone (it was deleted after the backup was planned)")?;
    crate::job::backup_command(pod)
        .map(String::from)
        .ok_or_else(|| {
            format!(
                "the pod no longer has the annotation {ANNOTATION_BACKUP_COMMAND} (it was \
                 removed after the backup was planned)"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::BackupJobPlan;

    fn annotated(command: Option<&str>) -> Pod {
        let mut pod = Pod::default();
        pod.metadata.name = Some("db-0".into());
        if let Some(command) = command {
            pod.metadata.annotations = Some(
                [(ANNOTATION_BACKUP_COMMAND.to_string(), command.to_string())]
                    .into_iter()
                    .collect(),
            );
        }
        pod
    }

    #[test]
    fn pods_json_parses_and_names_the_dump_by_pod_and_container() {
        let pods = parse_pods(Some(r#"[{"pod":"db-0","container":"mysql"}]"#)).expect("valid");
        assert_eq!(stdin_filename("ns", &pods[0]), "/ns-db-0-mysql");
        assert_eq!(
            describe(&pods[0]),
            "backup command in pod db-0, container mysql"
        );
        assert!(parse_pods(None).expect("absent is none").is_empty());
        assert!(parse_pods(Some("{")).is_err());
    }

    #[test]
    fn agent_reads_the_pods_the_operator_writes() {
        let plan = BackupJobPlan {
            commands: vec![BackupPod {
                pod: "db-0".into(),
                container: "mysql".into(),
            }],
            ..BackupJobPlan::default()
        };
        let json = serde_json::to_string(&plan.commands).expect("serialises");
        assert_eq!(parse_pods(Some(&json)).expect("parses"), plan.commands);
        let pod = annotated(Some(" pg_dumpall "));
        assert_eq!(command_of(Some(&pod)).as_deref(), Ok("pg_dumpall"));
    }

    #[test]
    fn command_of_a_gone_or_unannotated_pod_says_so_without_a_command() {
        let gone = command_of(None).expect_err("no pod");
        assert!(gone.contains("the pod is gone"), "{gone}");
        for pod in [annotated(None), annotated(Some("  "))] {
            let removed = command_of(Some(&pod)).expect_err("no command");
            assert!(
                removed.contains("no longer has the annotation appuio.ch/backupcommand"),
                "{removed}"
            );
        }
    }
}
