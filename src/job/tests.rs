use super::*;
use crate::crd::{PvcTarget, RestoreMethod, S3Spec, S3Target};
use serde_json::json;

fn backend() -> Backend {
    Backend {
        repo_password_secret_ref: Some(SecretKeyRef {
            name: "backup-repo".into(),
            key: "password".into(),
        }),
        s3: S3Spec {
            endpoint: "http://minio:9000/".into(),
            bucket: "baas".into(),
            access_key_id_secret_ref: SecretKeyRef {
                name: "backup-credentials".into(),
                key: "username".into(),
            },
            secret_access_key_secret_ref: SecretKeyRef {
                name: "backup-credentials".into(),
                key: "password".into(),
            },
            repo_password_secret_ref: None,
        },
    }
}

fn run(op: Operation) -> RunMeta {
    RunMeta {
        op,
        name: "nightly-backup-202611260100".into(),
        namespace: "team".into(),
        uid: "uid-1".into(),
        schedule: Some("nightly".into()),
    }
}

fn pvc(
    name: &str,
    modes: &[&str],
    phase: &str,
    annotations: &[(&str, &str)],
) -> PersistentVolumeClaim {
    serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>()},
        "spec": {"accessModes": modes},
        "status": {"phase": phase},
    }))
    .expect("test pvc")
}

fn pod(name: &str, node: &str, claims: &[&str], phase: &str, annotations: &[(&str, &str)]) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>()},
        "spec": {
            "nodeName": node,
            "containers": [{"name": "app"}, {"name": "sidecar"}],
            "volumes": claims.iter().map(|c| json!({"name": c, "persistentVolumeClaim": {"claimName": c}})).collect::<Vec<_>>(),
        },
        "status": {"phase": phase},
    }))
    .expect("test pod")
}

fn env_of(job: &Job) -> BTreeMap<String, serde_json::Value> {
    let container = &job
        .spec
        .as_ref()
        .expect("spec")
        .template
        .spec
        .as_ref()
        .expect("pod spec")
        .containers[0];
    container
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), serde_json::to_value(e).expect("env json")))
        .collect()
}

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
            BackupCommand {
                pod: "mysql".into(),
                container: "sidecar".into(),
                command: "mysqldump --all-databases".into()
            },
            BackupCommand {
                pod: "pg".into(),
                container: "app".into(),
                command: "pg_dumpall".into()
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
    assert_eq!(env["BAAS_PROM_URL"]["value"], "http://push:9091");
    assert!(!env.contains_key("BAAS_BACKUP_COMMANDS"));
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
fn backup_job_carries_commands_as_json() {
    let plan = BackupJobPlan {
        node: None,
        claims: vec![],
        commands: vec![BackupCommand {
            pod: "pg".into(),
            container: "app".into(),
            command: "pg_dumpall".into(),
        }],
    };
    let job = build_backup_job(
        &run(Operation::Backup),
        &backend(),
        None,
        &plan,
        &JobSettings::default(),
    )
    .expect("job");
    let commands: serde_json::Value = serde_json::from_str(
        env_of(&job)["BAAS_BACKUP_COMMANDS"]["value"]
            .as_str()
            .expect("string"),
    )
    .expect("json");
    assert_eq!(
        commands,
        json!([{"pod": "pg", "container": "app", "command": "pg_dumpall"}])
    );
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
