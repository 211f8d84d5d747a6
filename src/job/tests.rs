use std::collections::BTreeMap;

use super::fixtures::{backend, env_of, pod, pvc, run};
use super::*;
use serde::Deserialize;

use crate::crd::{PvcTarget, RestoreMethod, S3Target, SecretKeyRef};
use serde_json::json;

#[test]
fn repository_url_drops_trailing_slash_of_endpoint() {
    assert_eq!(repository_url(&backend()), "s3:http://minio:9000/baas");
}

#[test]
fn repository_label_is_a_valid_label_and_differs_per_bucket() {
    let a = repository_label("s3:http://minio:9000/a");
    let b = repository_label("s3:http://minio:9000/b");
    assert_eq!(a.len(), 16);
    assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
    assert_ne!(a, b);
    assert_eq!(a, repository_label("s3:http://minio:9000/a"));
}

#[test]
fn run_name_of_tick_is_deterministic_and_readable() {
    let tick: jiff::Timestamp = "2026-11-26T01:00:00Z".parse().expect("ts");
    assert_eq!(
        run_name("nightly", Operation::Backup, tick),
        "nightly-backup-202611260100"
    );
    assert_eq!(
        run_name("nightly", Operation::Backup, tick),
        run_name("nightly", Operation::Backup, tick)
    );
    assert_ne!(
        run_name("nightly", Operation::Check, tick),
        run_name("nightly", Operation::Backup, tick)
    );
}

#[test]
fn run_name_of_long_schedule_stays_a_dns_label_and_unique() {
    let tick: jiff::Timestamp = "2026-11-26T01:00:00Z".parse().expect("ts");
    let a = run_name(&"a".repeat(60), Operation::Prune, tick);
    let b = run_name(&format!("{}b", "a".repeat(59)), Operation::Prune, tick);
    for name in [&a, &b] {
        assert!(name.len() <= MAX_NAME, "{name}");
        assert!(name.ends_with("-prune-202611260100"), "{name}");
        assert!(!name.contains("--"), "{name}");
    }
    assert_ne!(a, b);
}

#[test]
fn names_that_differ_only_in_dots_get_different_jobs() {
    // Run names may hold dots, Job names (DNS labels) may not: `a.b` must not take `a-b`'s Job.
    let dotted = job_name("nightly.db", Operation::Backup, None);
    let dashed = job_name("nightly-db", Operation::Backup, None);
    assert_ne!(dotted, dashed);
    assert_eq!(dashed, "nightly-db-backup");
    assert!(
        dotted.starts_with("nightly-db-") && dotted.ends_with("-backup"),
        "{dotted}"
    );
    assert!(dotted.len() <= MAX_NAME);
    let tick: jiff::Timestamp = "2026-11-26T01:00:00Z".parse().expect("ts");
    assert_ne!(
        run_name("a.b", Operation::Check, tick),
        run_name("a-b", Operation::Check, tick)
    );
}

#[test]
fn job_names_of_nodes_differ_and_fit() {
    let a = job_name(&"x".repeat(63), Operation::Backup, Some("node-a"));
    let b = job_name(&"x".repeat(63), Operation::Backup, Some("node-b"));
    assert_ne!(a, b);
    assert!(a.len() <= MAX_NAME && b.len() <= MAX_NAME);
    assert_eq!(job_name("r", Operation::Check, None), "r-check");
}

#[test]
fn plan_with_opted_out_and_unbound_claims_backs_up_only_the_rest() {
    let pvcs = [
        pvc("data", &["ReadWriteMany"], "Bound", &[]),
        pvc(
            "cache",
            &["ReadWriteMany"],
            "Bound",
            &[("appuio.ch/backup", "false")],
        ),
        pvc("pending", &["ReadWriteMany"], "Pending", &[]),
        pvc(
            "keep",
            &["ReadWriteMany"],
            "Bound",
            &[("appuio.ch/backup", "true")],
        ),
    ];
    let plan = plan_backup(&pvcs, &[]);
    assert_eq!(plan.jobs.len(), 1);
    assert_eq!(plan.jobs[0].claims, vec!["data", "keep"]);
    assert_eq!(plan.jobs[0].node, None);
    assert!(plan.problems.is_empty());
}

#[test]
fn plan_with_rwo_claims_in_use_pins_one_job_per_node() {
    let pvcs = [
        pvc("shared", &["ReadWriteMany"], "Bound", &[]),
        pvc("db-a", &["ReadWriteOnce"], "Bound", &[]),
        pvc("db-b", &["ReadWriteOnce"], "Bound", &[]),
        pvc("db-c", &["ReadWriteOnce"], "Bound", &[]),
        pvc("idle", &["ReadWriteOnce"], "Bound", &[]),
    ];
    let pods = [
        pod("a", "node-1", &["db-a", "shared"], "Running", &[]),
        pod("b", "node-2", &["db-b"], "Running", &[]),
        pod("c", "node-1", &["db-c"], "Running", &[]),
        pod("done", "node-3", &["idle"], "Succeeded", &[]),
    ];
    let plan = plan_backup(&pvcs, &pods);
    assert_eq!(
        plan.jobs,
        vec![
            BackupJobPlan {
                node: None,
                claims: vec!["idle".into(), "shared".into()],
                commands: vec![]
            },
            BackupJobPlan {
                node: Some("node-1".into()),
                claims: vec!["db-a".into(), "db-c".into()],
                commands: vec![]
            },
            BackupJobPlan {
                node: Some("node-2".into()),
                claims: vec!["db-b".into()],
                commands: vec![]
            },
        ]
    );
}

#[test]
fn plan_with_rwop_claim_in_use_reports_a_problem() {
    let pvcs = [pvc("solo", &["ReadWriteOncePod"], "Bound", &[])];
    let pods = [pod("app", "node-1", &["solo"], "Running", &[])];
    let plan = plan_backup(&pvcs, &pods);
    assert!(plan.jobs.is_empty());
    assert_eq!(plan.problems.len(), 1);
    assert!(
        plan.problems[0].contains("solo") && plan.problems[0].contains("pod app"),
        "{:?}",
        plan.problems
    );
}

#[test]
fn plan_backup_commands_go_into_exactly_one_job_with_chosen_container() {
    let pvcs = [
        pvc("shared", &["ReadWriteMany"], "Bound", &[]),
        pvc("db", &["ReadWriteOnce"], "Bound", &[]),
    ];
    let pods = [
        pod(
            "mysql",
            "node-1",
            &["db"],
            "Running",
            &[
                ("appuio.ch/backupcommand", "mysqldump --all-databases"),
                ("appuio.ch/backupcommand-container", "sidecar"),
            ],
        ),
        pod(
            "pg",
            "node-2",
            &[],
            "Running",
            &[("appuio.ch/backupcommand", "pg_dumpall")],
        ),
        pod(
            "gone",
            "node-2",
            &[],
            "Failed",
            &[("appuio.ch/backupcommand", "true")],
        ),
    ];
    let plan = plan_backup(&pvcs, &pods);
    let with_commands: Vec<_> = plan
        .jobs
        .iter()
        .filter(|j| !j.commands.is_empty())
        .collect();
    assert_eq!(with_commands.len(), 1);
    assert_eq!(
        with_commands[0].commands,
        vec![
            BackupPod {
                pod: "mysql".into(),
                container: "sidecar".into(),
            },
            BackupPod {
                pod: "pg".into(),
                container: "app".into(),
            },
        ]
    );
}

#[test]
fn plan_with_only_backup_commands_makes_one_job_without_claims() {
    let pods = [pod(
        "pg",
        "node-2",
        &[],
        "Running",
        &[("appuio.ch/backupcommand", "pg_dumpall")],
    )];
    let plan = plan_backup(&[], &pods);
    assert_eq!(plan.jobs.len(), 1);
    assert!(plan.jobs[0].claims.is_empty());
    assert_eq!(plan.jobs[0].commands.len(), 1);
}

#[test]
fn backup_job_passes_credentials_only_as_secret_refs() {
    let plan = BackupJobPlan {
        node: Some("node-1".into()),
        claims: vec!["db".into()],
        commands: vec![],
    };
    let job = build_backup_job(
        &run(Operation::Backup),
        &backend(),
        Some("http://push:9091"),
        &plan,
        &JobSettings::default(),
    )
    .expect("job");
    let env = env_of(&job);
    assert_eq!(
        env["RESTIC_REPOSITORY"]["value"],
        "s3:http://minio:9000/baas"
    );
    assert_eq!(
        env["RESTIC_PASSWORD"]["valueFrom"]["secretKeyRef"],
        json!({"name": "backup-repo", "key": "password", "optional": false})
    );
    assert_eq!(
        env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["key"],
        "username"
    );
    assert_eq!(
        env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["key"],
        "password"
    );
    assert_eq!(
        env["BAAS_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    assert_eq!(env["BAAS_RUN_NAME"]["value"], "nightly-backup-202611260100");
    // each Schedule pushes into its own Pushgateway group
    assert_eq!(env["BAAS_SCHEDULE"]["value"], "nightly");
    assert_eq!(env["BAAS_PROM_URL"]["value"], "http://push:9091");
    assert!(!env.contains_key(ENV_BACKUP_PODS));
    for (name, var) in &env {
        if name.contains("PASSWORD") || name.contains("KEY") {
            assert!(
                var.get("value").is_none(),
                "{name} must not carry a literal value"
            );
        }
    }
}

#[test]
fn backup_job_mounts_claims_read_only_and_is_pinned_and_owned() {
    let plan = BackupJobPlan {
        node: Some("node-1".into()),
        claims: vec!["db".into()],
        commands: vec![],
    };
    let meta = run(Operation::Backup);
    let job =
        build_backup_job(&meta, &backend(), None, &plan, &JobSettings::default()).expect("job");
    let value = serde_json::to_value(&job).expect("json");
    let pod = &value["spec"]["template"]["spec"];
    assert_eq!(pod["nodeName"], "node-1");
    assert_eq!(pod["restartPolicy"], "Never");
    assert_eq!(pod["serviceAccountName"], "baas-agent");
    assert_eq!(
        pod["volumes"][0]["persistentVolumeClaim"],
        json!({"claimName": "db", "readOnly": true})
    );
    let container = &pod["containers"][0];
    assert_eq!(container["command"], json!(["baas", "agent", "backup"]));
    assert_eq!(container["volumeMounts"][0]["mountPath"], "/data/db");
    assert_eq!(container["terminationMessagePolicy"], "File");
    assert_eq!(value["spec"]["backoffLimit"], 0);
    assert_eq!(value["metadata"]["ownerReferences"][0]["kind"], "Backup");
    assert_eq!(value["metadata"]["ownerReferences"][0]["controller"], true);
    assert_eq!(
        value["metadata"]["labels"]["backup.appuio.ch/schedule"],
        "nightly"
    );
    assert_eq!(
        value["metadata"]["labels"]["backup.appuio.ch/run"],
        meta.name
    );
    assert!(value["spec"].get("ttlSecondsAfterFinished").is_none());
}

#[test]
fn backup_job_without_repository_password_is_an_invalid_spec() {
    let mut backend = backend();
    backend.repo_password_secret_ref = None;
    let err = build_check_job(
        &run(Operation::Check),
        &backend,
        None,
        &JobSettings::default(),
    )
    .expect_err("no password");
    assert_eq!(err.category(), "invalid_spec");
}

#[test]
fn legacy_password_place_is_used_when_backend_has_none() {
    let mut backend = backend();
    backend.s3.repo_password_secret_ref = backend.repo_password_secret_ref.take();
    let job = build_check_job(
        &run(Operation::Check),
        &backend,
        None,
        &JobSettings::default(),
    )
    .expect("job");
    assert_eq!(
        env_of(&job)["RESTIC_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"],
        "backup-repo"
    );
}

#[test]
fn prune_job_with_empty_retention_gets_the_default() {
    let job = build_prune_job(
        &run(Operation::Prune),
        &backend(),
        None,
        Some(&Retention::default()),
        &JobSettings::default(),
    )
    .expect("job");
    let retention: serde_json::Value = serde_json::from_str(
        env_of(&job)["BAAS_RETENTION"]["value"]
            .as_str()
            .expect("string"),
    )
    .expect("json");
    assert_eq!(retention, json!({"keepLast": 5, "keepDaily": 14}));
}

#[test]
fn backup_job_names_the_command_pods_but_never_their_commands() {
    let pods = [pod(
        "mysql",
        "node-1",
        &[],
        "Running",
        &[(
            "appuio.ch/backupcommand",
            "mysqldump -uroot -psecure --all-databases",
        )],
    )];
    let plan = plan_backup(&[], &pods);
    let job = build_backup_job(
        &run(Operation::Backup),
        &backend(),
        None,
        &plan.jobs[0],
        &JobSettings::default(),
    )
    .expect("job");
    let pods: serde_json::Value = serde_json::from_str(
        env_of(&job)[ENV_BACKUP_PODS]["value"]
            .as_str()
            .expect("string"),
    )
    .expect("json");
    assert_eq!(pods, json!([{"pod": "mysql", "container": "app"}]));
    // The command (and its password) is read from the pod at run time, never copied into
    // the Job, whose spec every reader of Jobs sees.
    let spec = serde_json::to_string(&job).expect("job serialises");
    assert!(!spec.contains("mysqldump"), "{spec}");
    assert!(!spec.contains("secure"), "{spec}");
    assert!(!spec.contains("BAAS_BACKUP_COMMANDS"), "{spec}");
}

#[test]
fn restore_to_pvc_mounts_claim_writable() {
    let spec = RestoreSpec {
        backend: backend(),
        restore_method: RestoreMethod {
            s3: None,
            pvc: Some(PvcTarget {
                claim_name: "target".into(),
            }),
        },
        snapshot: Some("abc123".into()),
        path: None,
        source_namespace: None,
        prom_url: None,
    };
    let job = build_restore_job(
        &run(Operation::Restore),
        &spec,
        None,
        &JobSettings::default(),
    )
    .expect("job");
    let env = env_of(&job);
    assert_eq!(env["BAAS_RESTORE_DIR"]["value"], "/restore/target");
    assert_eq!(env["BAAS_RESTORE_CLAIM"]["value"], "target");
    assert_eq!(env["BAAS_SNAPSHOT"]["value"], "abc123");
    assert!(!env.contains_key("BAAS_RESTORE_PATH"));
    let value = serde_json::to_value(&job).expect("json");
    assert_eq!(
        value["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"],
        json!({"claimName": "target", "readOnly": false})
    );
    assert_eq!(
        value["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0]["mountPath"],
        "/restore/target"
    );
}

#[test]
fn restore_to_s3_passes_target_credentials_as_secret_refs() {
    let spec = RestoreSpec {
        backend: backend(),
        restore_method: RestoreMethod {
            s3: Some(S3Target {
                endpoint: "https://s3.example.com/".into(),
                bucket: "restores".into(),
                access_key_id_secret_ref: SecretKeyRef {
                    name: "t".into(),
                    key: "id".into(),
                },
                secret_access_key_secret_ref: SecretKeyRef {
                    name: "t".into(),
                    key: "secret".into(),
                },
            }),
            pvc: None,
        },
        snapshot: None,
        source_namespace: None,
        path: Some("/data/db".into()),
        prom_url: None,
    };
    let env = env_of(
        &build_restore_job(
            &run(Operation::Restore),
            &spec,
            None,
            &JobSettings::default(),
        )
        .expect("job"),
    );
    assert_eq!(
        env["BAAS_RESTORE_S3_ENDPOINT"]["value"],
        "https://s3.example.com"
    );
    assert_eq!(env["BAAS_RESTORE_S3_BUCKET"]["value"], "restores");
    assert_eq!(env["BAAS_RESTORE_PATH"]["value"], "/data/db");
    assert_eq!(
        env["BAAS_RESTORE_S3_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["key"],
        "id"
    );
    assert_eq!(
        env["BAAS_RESTORE_S3_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["key"],
        "secret"
    );
}

#[test]
fn restore_without_method_is_an_invalid_spec() {
    let spec = RestoreSpec {
        backend: backend(),
        ..RestoreSpec::default()
    };
    let err = build_restore_job(
        &run(Operation::Restore),
        &spec,
        None,
        &JobSettings::default(),
    )
    .expect_err("no method");
    assert_eq!(err.category(), "invalid_spec");
}

#[test]
fn restore_into_claim_in_use_runs_on_the_node_of_its_pod() {
    let pods = [
        pod("old", "node-9", &["target"], "Succeeded", &[]),
        pod("app", "node-2", &["target"], "Running", &[]),
    ];
    assert_eq!(node_using_claim("target", &pods).as_deref(), Some("node-2"));
    assert_eq!(node_using_claim("other", &pods), None);
}

#[test]
fn plan_backup_with_agent_pod_mounting_claim_is_not_pinned() {
    let mut agent = pod("nightly-backup-x7k2p", "node-a", &["data"], "Running", &[]);
    agent.metadata.labels = Some(BTreeMap::from([(
        LABEL_RUN.to_string(),
        "nightly".to_string(),
    )]));
    let plan = plan_backup(&[pvc("data", &["ReadWriteOnce"], "Bound", &[])], &[agent]);
    assert_eq!(plan.jobs.len(), 1);
    assert_eq!(plan.jobs[0].node, None, "{plan:?}");
    assert_eq!(plan.jobs[0].claims, ["data"]);
}

#[test]
fn backup_jobs_after_the_first_wait_for_the_repository() {
    let pvcs = [
        pvc("shared", &["ReadWriteMany"], "Bound", &[]),
        pvc("db", &["ReadWriteOnce"], "Bound", &[]),
    ];
    let pods = [pod("mariadb", "node-a", &["db"], "Running", &[])];
    let plan = plan_backup(&pvcs, &pods);
    let jobs = build_backup_jobs(
        &run(Operation::Backup),
        &backend(),
        None,
        &plan,
        &JobSettings::default(),
    )
    .expect("jobs");
    assert_eq!(jobs.len(), 2);
    let waits = |job: &Job| env_of(job).contains_key("BAAS_WAIT_FOR_REPOSITORY");
    assert!(!waits(&jobs[0]), "the first Job creates the repository");
    assert!(waits(&jobs[1]), "the second Job must wait for it");
}

#[test]
fn plan_with_unused_local_claims_on_two_nodes_pins_one_job_per_node() {
    let pvcs = [
        pvc(
            "db-a",
            &["ReadWriteOnce"],
            "Bound",
            &[(ANNOTATION_SELECTED_NODE, "node-a")],
        ),
        pvc(
            "db-b",
            &["ReadWriteOnce"],
            "Bound",
            &[(ANNOTATION_SELECTED_NODE, "node-b")],
        ),
    ];
    let plan = plan_backup(&pvcs, &[]);
    assert_eq!(
        plan.jobs,
        vec![
            BackupJobPlan {
                node: Some("node-a".into()),
                claims: vec!["db-a".into()],
                commands: vec![]
            },
            BackupJobPlan {
                node: Some("node-b".into()),
                claims: vec!["db-b".into()],
                commands: vec![]
            },
        ]
    );
}

#[test]
fn plan_with_claim_in_use_and_unused_local_claim_of_one_node_makes_one_job() {
    let pvcs = [
        pvc(
            "cache",
            &["ReadWriteOnce"],
            "Bound",
            &[(ANNOTATION_SELECTED_NODE, "node-b")],
        ),
        pvc(
            "db",
            &["ReadWriteOnce"],
            "Bound",
            &[(ANNOTATION_SELECTED_NODE, "node-b")],
        ),
        pvc("plain", &["ReadWriteOnce"], "Bound", &[]),
    ];
    let pods = [pod(
        "mariadb",
        "node-b",
        &["db"],
        "Running",
        &[("appuio.ch/backupcommand", "mariadb-dump")],
    )];
    let plan = plan_backup(&pvcs, &pods);
    assert_eq!(plan.jobs.len(), 2, "{plan:?}");
    assert_eq!(plan.jobs[0].node, None, "claims without a node stay shared");
    assert_eq!(plan.jobs[0].claims, ["plain"]);
    assert_eq!(
        plan.jobs[0].commands.len(),
        1,
        "commands go into the first Job"
    );
    assert_eq!(plan.jobs[1].node.as_deref(), Some("node-b"));
    assert_eq!(plan.jobs[1].claims, ["cache", "db"]);
}

#[test]
fn plan_with_only_local_claims_puts_commands_into_the_first_pinned_job() {
    let pvcs = [pvc(
        "db",
        &["ReadWriteOncePod"],
        "Bound",
        &[(ANNOTATION_SELECTED_NODE, "node-c")],
    )];
    let pods = [pod(
        "pg",
        "node-a",
        &[],
        "Running",
        &[("appuio.ch/backupcommand", "pg_dumpall")],
    )];
    let plan = plan_backup(&pvcs, &pods);
    assert_eq!(plan.jobs.len(), 1, "{plan:?}");
    assert_eq!(plan.jobs[0].node.as_deref(), Some("node-c"));
    assert_eq!(plan.jobs[0].claims, ["db"]);
    assert_eq!(plan.jobs[0].commands.len(), 1);
    assert!(
        plan.problems.is_empty(),
        "an unused ReadWriteOncePod claim can be mounted"
    );
}

#[test]
fn plan_with_shareable_claims_ignores_their_selected_node() {
    let pvcs = [
        pvc(
            "files",
            &["ReadWriteMany"],
            "Bound",
            &[(ANNOTATION_SELECTED_NODE, "node-a")],
        ),
        pvc(
            "assets",
            &["ReadOnlyMany"],
            "Bound",
            &[(ANNOTATION_SELECTED_NODE, "node-b")],
        ),
    ];
    let plan = plan_backup(&pvcs, &[]);
    assert_eq!(
        plan.jobs,
        vec![BackupJobPlan {
            node: None,
            claims: vec!["assets".into(), "files".into()],
            commands: vec![]
        }]
    );
}

/// Capabilities Pod Security `baseline` lets a container add.
const BASELINE_CAPABILITIES: [&str; 13] = [
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// The pod template of a Job, as JSON.
fn template_of(job: &Job) -> serde_json::Value {
    serde_json::to_value(job).expect("job json")["spec"]["template"].take()
}

/// The `baseline` rules of the Pod Security Standards, as the PodSecurity admission plugin
/// applies them to a pod template: every violation, one sentence each. Works on the JSON
/// form so that containers, init containers and ephemeral containers are read alike.
fn baseline_violations(template: &serde_json::Value) -> Vec<String> {
    let spec = &template["spec"];
    let mut found = Vec::new();
    for field in ["hostNetwork", "hostPID", "hostIPC"] {
        if spec[field] == true {
            found.push(format!("spec.{field} is true"));
        }
    }
    for volume in spec["volumes"].as_array().into_iter().flatten() {
        if !volume["hostPath"].is_null() {
            found.push(format!("volume {} is a hostPath", volume["name"]));
        }
    }
    let sysctls = &spec["securityContext"]["sysctls"];
    if sysctls.as_array().is_some_and(|s| !s.is_empty()) {
        found.push(format!("pod sets sysctls {sysctls}"));
    }
    common_violations("pod", &spec["securityContext"], &mut found);
    for (key, profile) in template["metadata"]["annotations"]
        .as_object()
        .into_iter()
        .flatten()
    {
        let profile = profile.as_str().unwrap_or_default();
        let apparmor = key.starts_with("container.apparmor.security.beta.kubernetes.io/");
        let seccomp = key.starts_with("seccomp.security.alpha.kubernetes.io/")
            || key.starts_with("container.seccomp.security.alpha.kubernetes.io/");
        if (apparmor && profile != "runtime/default" && !profile.starts_with("localhost/"))
            || (seccomp && profile == "unconfined")
        {
            found.push(format!("annotation {key} is {profile}"));
        }
    }
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        for container in spec[list].as_array().into_iter().flatten() {
            let name = format!("container {}", container["name"]);
            let context = &container["securityContext"];
            if context["privileged"] == true {
                found.push(format!("{name} is privileged"));
            }
            for cap in context["capabilities"]["add"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let cap = cap.as_str().unwrap_or_default();
                if !BASELINE_CAPABILITIES.contains(&cap) {
                    found.push(format!("{name} adds capability {cap}"));
                }
            }
            for port in container["ports"].as_array().into_iter().flatten() {
                if port["hostPort"].as_i64().is_some_and(|p| p != 0) {
                    found.push(format!("{name} uses hostPort {}", port["hostPort"]));
                }
            }
            if let Some(mount) = context["procMount"].as_str()
                && mount != "Default"
            {
                found.push(format!("{name} has procMount {mount}"));
            }
            common_violations(&name, context, &mut found);
        }
    }
    found
}

/// The rules `restricted` adds to `baseline`, on top of the `baseline` violations.
fn restricted_violations(template: &serde_json::Value) -> Vec<String> {
    let spec = &template["spec"];
    let mut found = baseline_violations(template);
    let allowed_volumes = [
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    ];
    for volume in spec["volumes"].as_array().into_iter().flatten() {
        let kinds = volume.as_object().into_iter().flatten().map(|(k, _)| k);
        for kind in kinds.filter(|k| *k != "name" && !allowed_volumes.contains(&k.as_str())) {
            found.push(format!("volume {} is of type {kind}", volume["name"]));
        }
    }
    let pod = &spec["securityContext"];
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        for container in spec[list].as_array().into_iter().flatten() {
            let name = format!("container {}", container["name"]);
            let context = &container["securityContext"];
            let inherited = |field: &str| match &context[field] {
                serde_json::Value::Null => pod[field].clone(),
                own => own.clone(),
            };
            if context["allowPrivilegeEscalation"] != false {
                found.push(format!("{name} may escalate privileges"));
            }
            if inherited("runAsNonRoot") != true {
                found.push(format!("{name} does not set runAsNonRoot"));
            }
            if inherited("runAsUser") == 0 {
                found.push(format!("{name} runs as user 0"));
            }
            let seccomp = inherited("seccompProfile");
            if !matches!(
                seccomp["type"].as_str(),
                Some("RuntimeDefault" | "Localhost")
            ) {
                found.push(format!("{name} sets no RuntimeDefault seccomp profile"));
            }
            let drops = context["capabilities"]["drop"].as_array().cloned();
            if !drops.into_iter().flatten().any(|c| c == "ALL") {
                found.push(format!("{name} does not drop ALL capabilities"));
            }
            for cap in context["capabilities"]["add"]
                .as_array()
                .into_iter()
                .flatten()
            {
                if cap != "NET_BIND_SERVICE" {
                    found.push(format!("{name} adds {cap} beyond NET_BIND_SERVICE"));
                }
            }
        }
    }
    found
}

/// The rules that pod and container security contexts share.
fn common_violations(whose: &str, context: &serde_json::Value, found: &mut Vec<String>) {
    if context["seccompProfile"]["type"] == "Unconfined" {
        found.push(format!("{whose} has seccomp profile Unconfined"));
    }
    if context["appArmorProfile"]["type"] == "Unconfined" {
        found.push(format!("{whose} has AppArmor profile Unconfined"));
    }
    if context["windowsOptions"]["hostProcess"] == true {
        found.push(format!("{whose} is a Windows host process"));
    }
    let selinux = &context["seLinuxOptions"];
    let allowed_types = [
        "container_t",
        "container_init_t",
        "container_kvm_t",
        "container_engine_t",
    ];
    if let Some(kind) = selinux["type"].as_str()
        && !kind.is_empty()
        && !allowed_types.contains(&kind)
    {
        found.push(format!("{whose} has SELinux type {kind}"));
    }
    for field in ["user", "role"] {
        if selinux[field].as_str().is_some_and(|v| !v.is_empty()) {
            found.push(format!("{whose} sets SELinux {field}"));
        }
    }
}

/// Every Job the builders make: backup (shared, pinned, waiting), check, prune, and restore
/// into a PVC and to S3.
fn every_kind_of_job() -> Vec<(&'static str, Job)> {
    let settings = JobSettings::default();
    let backend = backend();
    let pvcs = [
        pvc("shared", &["ReadWriteMany"], "Bound", &[]),
        pvc("db", &["ReadWriteOnce"], "Bound", &[]),
    ];
    let pods = [pod("mariadb", "node-a", &["db"], "Running", &[])];
    let plan = plan_backup(&pvcs, &pods);
    let backups = build_backup_jobs(&run(Operation::Backup), &backend, None, &plan, &settings)
        .expect("backup jobs");
    assert_eq!(backups.len(), 2, "a shared and a pinned Job");
    let restore = |method: RestoreMethod| RestoreSpec {
        backend: backend.clone(),
        restore_method: method,
        ..RestoreSpec::default()
    };
    let to_pvc = restore(RestoreMethod {
        s3: None,
        pvc: Some(PvcTarget {
            claim_name: "target".into(),
        }),
    });
    let to_s3 = restore(RestoreMethod {
        s3: Some(S3Target {
            endpoint: "https://s3.example.com".into(),
            bucket: "restores".into(),
            access_key_id_secret_ref: SecretKeyRef {
                name: "t".into(),
                key: "id".into(),
            },
            secret_access_key_secret_ref: SecretKeyRef {
                name: "t".into(),
                key: "secret".into(),
            },
        }),
        pvc: None,
    });
    let restore_run = run(Operation::Restore);
    let mut jobs: Vec<(&'static str, Job)> = vec![];
    let mut backups = backups.into_iter();
    jobs.push(("backup", backups.next().expect("shared Job")));
    jobs.push(("pinned backup", backups.next().expect("pinned Job")));
    jobs.push((
        "check",
        build_check_job(&run(Operation::Check), &backend, None, &settings).expect("check"),
    ));
    jobs.push((
        "prune",
        build_prune_job(&run(Operation::Prune), &backend, None, None, &settings).expect("prune"),
    ));
    jobs.push((
        "restore to pvc",
        build_restore_job(&restore_run, &to_pvc, Some("node-a".into()), &settings)
            .expect("restore to pvc"),
    ));
    jobs.push((
        "restore to s3",
        build_restore_job(&restore_run, &to_s3, None, &settings).expect("restore to s3"),
    ));
    jobs
}

#[test]
fn every_agent_job_has_a_host_name_of_its_own_and_runs_one_pod_at_a_time() {
    let jobs = every_kind_of_job();
    // Job name → host name; the two restores are alternatives of one run, with one name.
    let mut hostnames = std::collections::BTreeMap::new();
    for (kind, job) in &jobs {
        let value = serde_json::to_value(job).expect("json");
        let spec = &value["spec"];
        let hostname = spec["template"]["spec"]["hostname"]
            .as_str()
            .unwrap_or_else(|| panic!("{kind}: no hostname"));
        assert!(
            hostname.len() <= MAX_NAME
                && hostname
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !hostname.starts_with('-')
                && !hostname.ends_with('-'),
            "{kind}: {hostname} is not a DNS label"
        );
        let name = job.metadata.name.as_deref().expect("name");
        assert!(
            hostname.starts_with(name),
            "{kind}: {hostname} names its Job"
        );
        assert_eq!(env_of(job)["BAAS_HOSTNAME"]["value"], hostname, "{kind}");
        hostnames.insert(name.to_string(), hostname.to_string());
        assert_eq!(spec["parallelism"], 1, "{kind}");
        assert_eq!(spec["completions"], 1, "{kind}");
        assert_eq!(spec["backoffLimit"], 0, "{kind}");
        assert_eq!(spec["podReplacementPolicy"], "Failed", "{kind}");
    }
    let distinct: std::collections::BTreeSet<&String> = hostnames.values().collect();
    assert_eq!(distinct.len(), hostnames.len(), "{hostnames:?}");
    // The same Job name in another namespace, or of another run object with that name,
    // is another host.
    let mut other = run(Operation::Check);
    let check = agent_hostname(&other, "x-check");
    other.namespace = "elsewhere".into();
    assert_ne!(agent_hostname(&other, "x-check"), check);
    let mut recreated = run(Operation::Check);
    recreated.uid = "another-uid".into();
    assert_ne!(agent_hostname(&recreated, "x-check"), check);
    let long = agent_hostname(&run(Operation::Backup), &"a".repeat(MAX_NAME));
    assert!(long.len() <= MAX_NAME, "{long}");
}

#[test]
fn every_agent_job_passes_pod_security_baseline() {
    for (kind, job) in every_kind_of_job() {
        assert_eq!(
            baseline_violations(&template_of(&job)),
            Vec::<String>::new(),
            "{kind}"
        );
        let value = serde_json::to_value(&job).expect("json");
        let pod = &value["spec"]["template"]["spec"];
        let context = &pod["containers"][0]["securityContext"];
        assert_eq!(context["capabilities"]["drop"], json!(["ALL"]), "{kind}");
        assert_eq!(
            context["capabilities"]["add"],
            json!(["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID"]),
            "{kind}"
        );
        assert_eq!(context["runAsUser"], 0, "{kind}");
        assert_eq!(context["allowPrivilegeEscalation"], false, "{kind}");
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
            "{kind}"
        );
    }
}

#[test]
fn baseline_checker_finds_each_kind_of_violation() {
    let job: Job = serde_json::from_value(json!({
        "spec": {"template": {
            "metadata": {"annotations": {
                "container.apparmor.security.beta.kubernetes.io/agent": "unconfined"
            }},
            "spec": {
                "hostNetwork": true,
                "hostPID": true,
                "hostIPC": true,
                "securityContext": {
                    "sysctls": [{"name": "kernel.msgmax", "value": "1"}],
                    "seccompProfile": {"type": "Unconfined"}
                },
                "volumes": [{"name": "root", "hostPath": {"path": "/"}}],
                "containers": [{
                    "name": "agent",
                    "ports": [{"containerPort": 80, "hostPort": 80}],
                    "securityContext": {
                        "privileged": true,
                        "procMount": "Unmasked",
                        "capabilities": {"add": ["CHOWN", "DAC_READ_SEARCH"]},
                        "appArmorProfile": {"type": "Unconfined"},
                        "seLinuxOptions": {"type": "spc_t", "user": "system_u"}
                    }
                }]
            }
        }}
    }))
    .expect("test job");
    let found = baseline_violations(&template_of(&job));
    for expected in [
        "spec.hostNetwork",
        "spec.hostPID",
        "spec.hostIPC",
        "sysctls",
        "pod has seccomp profile Unconfined",
        "hostPath",
        "annotation container.apparmor",
        "is privileged",
        "procMount Unmasked",
        "adds capability DAC_READ_SEARCH",
        "hostPort 80",
        "AppArmor profile Unconfined",
        "SELinux type spc_t",
        "SELinux user",
    ] {
        assert!(
            found.iter().any(|f| f.contains(expected)),
            "{expected} not found in {found:?}"
        );
    }
    assert!(
        !found.iter().any(|f| f.contains("capability CHOWN")),
        "{found:?}"
    );
}

#[test]
fn agent_jobs_cannot_meet_restricted_because_they_run_as_root_with_capabilities() {
    // docs/install.md says why: a non-root agent could read only what its ids may, and a
    // restore could not give files back to their owners.
    for (kind, job) in every_kind_of_job() {
        let found = restricted_violations(&template_of(&job));
        assert!(
            found.iter().any(|f| f.contains("runAsNonRoot")),
            "{kind}: {found:?}"
        );
        assert!(
            found.iter().any(|f| f.contains("adds \"CHOWN\"")),
            "{kind}: {found:?}"
        );
    }
}

/// Every document of a multi-document YAML file.
fn yaml_documents(text: &str) -> Vec<serde_json::Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|document| serde_json::Value::deserialize(document).expect("a YAML document"))
        .collect()
}

#[test]
fn operator_deployment_passes_restricted_and_matches_its_rbac_and_agent_image() {
    let deployment = yaml_documents(include_str!("../../manifests/deployment.yaml")).remove(0);
    assert_eq!(deployment["kind"], "Deployment");
    let template = &deployment["spec"]["template"];
    assert_eq!(restricted_violations(template), Vec::<String>::new());
    let container = &template["spec"]["containers"][0];
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    let agent_image = container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["name"] == "BAAS_AGENT_IMAGE")
        .map(|e| e["value"].clone());
    assert_eq!(
        agent_image.as_ref(),
        Some(&container["image"]),
        "one substitution of the image must change the operator and its Jobs alike"
    );

    let account = &template["spec"]["serviceAccountName"];
    let documents = yaml_documents(include_str!("../../manifests/rbac.yaml"));
    let accounts: Vec<&serde_json::Value> = documents
        .iter()
        .filter(|d| d["kind"] == "ServiceAccount")
        .map(|d| &d["metadata"]["name"])
        .collect();
    assert_eq!(
        accounts,
        [account],
        "the Deployment runs as rbac.yaml's ServiceAccount"
    );
    for binding in documents
        .iter()
        .filter(|d| d["kind"] == "ClusterRoleBinding" || d["kind"] == "RoleBinding")
    {
        assert_eq!(binding["subjects"][0]["name"], *account, "{binding}");
    }
    assert!(
        !documents.iter().any(|d| d["kind"] == "Namespace"),
        "namespace.yaml alone defines baas-system, with its Pod Security label"
    );
}
