//! The operator and the agent agree on the agent's environment: every Job the builders make
//! is started, in a child process of this test binary, with exactly that Job's command and
//! environment (Secret refs and field refs resolved as the kubelet would), and the agent's
//! command line must parse it to the values the Job meant. The child is needed because clap
//! reads the process environment, which a test may not change in place.

use std::path::PathBuf;
use std::process::Command;

use clap::Parser;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::EnvVar;

use super::fixtures::{backend, pod, pvc, run};
use super::*;
use crate::cli::{AgentArgs, AgentOp, Cli, ExecMode};
use crate::crd::{PvcTarget, RestoreMethod, S3Target, SecretKeyRef};

/// Set in the child to the case it checks.
const CHILD_CASE: &str = "JOB_AGENT_ARGS_CASE";
const PROM_URL: &str = "http://pushgateway:9091";
const NAMESPACE: &str = "team";

/// One Job and the arguments its agent must see.
struct Case {
    name: &'static str,
    job: Job,
    expected: AgentArgs,
}

fn job_name_of(job: &Job) -> String {
    job.metadata.name.clone().expect("a built Job has a name")
}

fn args(meta: &RunMeta, job: &Job, op: AgentOp) -> AgentArgs {
    AgentArgs {
        op,
        repository: Some("s3:http://minio:9000/baas".into()),
        namespace: Some(NAMESPACE.into()),
        run_name: Some(meta.name.clone()),
        prom_url: Some(PROM_URL.into()),
        data_dir: PathBuf::from("/data"),
        restic: PathBuf::from("restic"),
        schedule: Some("nightly".into()),
        exec_mode: ExecMode::Kube,
        hostname: Some(agent_hostname(meta, &job_name_of(job))),
        report_file: PathBuf::from("/dev/termination-log"),
    }
}

fn restore_spec(method: RestoreMethod) -> RestoreSpec {
    RestoreSpec {
        backend: backend(),
        restore_method: method,
        snapshot: Some("4bf9".into()),
        path: Some("/data/db".into()),
        source_namespace: None,
        prom_url: Some(PROM_URL.into()),
    }
}

fn cases() -> Vec<Case> {
    let settings = JobSettings::default();
    let prom = Some(PROM_URL);
    let mut cases = Vec::new();

    let backup = run(Operation::Backup);
    let pvcs = [
        pvc("shared", &["ReadWriteMany"], "Bound", &[]),
        pvc("db", &["ReadWriteOnce"], "Bound", &[]),
    ];
    let pods = [pod(
        "mariadb",
        "node-a",
        &["db"],
        "Running",
        &[(crate::crd::ANNOTATION_BACKUP_COMMAND, "mysqldump --all")],
    )];
    let plan = plan_backup(&pvcs, &pods);
    let jobs = build_backup_jobs(&backup, &backend(), prom, &plan, &settings).expect("backup");
    assert_eq!(jobs.len(), 2, "a shared and a pinned Job");
    let pods_json = serde_json::to_string(&[BackupPod {
        pod: "mariadb".into(),
        container: "app".into(),
    }])
    .expect("pods serialize");
    for (index, job) in jobs.into_iter().enumerate() {
        let expected = args(
            &backup,
            &job,
            AgentOp::Backup {
                backup_pods: (index == 0).then(|| pods_json.clone()),
                local_pods: None,
                wait_for_repository: index > 0,
            },
        );
        let name = if index == 0 {
            "backup"
        } else {
            "second backup"
        };
        cases.push(Case {
            name,
            job,
            expected,
        });
    }

    let check = run(Operation::Check);
    let job = build_check_job(&check, &backend(), prom, &settings).expect("check");
    let expected = args(&check, &job, AgentOp::Check);
    cases.push(Case {
        name: "check",
        job,
        expected,
    });

    let prune = run(Operation::Prune);
    let job = build_prune_job(&prune, &backend(), prom, None, &settings).expect("prune");
    let expected = args(
        &prune,
        &job,
        AgentOp::Prune {
            retention: r#"{"keepLast":5,"keepDaily":14}"#.into(),
        },
    );
    cases.push(Case {
        name: "prune",
        job,
        expected,
    });

    let restore = run(Operation::Restore);
    let to_s3 = restore_spec(RestoreMethod {
        s3: Some(S3Target {
            endpoint: "https://s3.example.com/".into(),
            bucket: "restores".into(),
            access_key_id_secret_ref: SecretKeyRef {
                name: "target".into(),
                key: "id".into(),
            },
            secret_access_key_secret_ref: SecretKeyRef {
                name: "target".into(),
                key: "secret".into(),
            },
        }),
        pvc: None,
    });
    let job = build_restore_job(&restore, &to_s3, None, &settings).expect("restore to s3");
    let expected = args(
        &restore,
        &job,
        AgentOp::Restore {
            snapshot: Some("4bf9".into()),
            source_namespace: None,
            path: Some("/data/db".into()),
            claim: None,
            target_dir: None,
            s3_endpoint: Some("https://s3.example.com".into()),
            s3_bucket: Some("restores".into()),
            s3_access_key_id: Some(resolved_secret("target", "id")),
            s3_secret_access_key: Some(resolved_secret("target", "secret")),
        },
    );
    cases.push(Case {
        name: "restore to s3",
        job,
        expected,
    });

    // rebuilding a lost namespace: the snapshots of another one
    let mut to_pvc = restore_spec(RestoreMethod {
        s3: None,
        pvc: Some(PvcTarget {
            claim_name: "db".into(),
        }),
    });
    to_pvc.source_namespace = Some("shop-old".into());
    let job = build_restore_job(&restore, &to_pvc, None, &settings).expect("restore to pvc");
    let expected = args(
        &restore,
        &job,
        AgentOp::Restore {
            snapshot: Some("4bf9".into()),
            source_namespace: Some("shop-old".into()),
            path: Some("/data/db".into()),
            claim: Some("db".into()),
            target_dir: Some(PathBuf::from("/restore/db")),
            s3_endpoint: None,
            s3_bucket: None,
            s3_access_key_id: None,
            s3_secret_access_key: None,
        },
    );
    cases.push(Case {
        name: "restore to pvc",
        job,
        expected,
    });

    let verify = run(Operation::Verify);
    let spec = crate::crd::VerifySpec {
        backend: backend(),
        app_check: Some(crate::crd::AppCheck {
            image: "mariadb:11".into(),
            command: vec!["true".into()],
        }),
        prom_url: Some(PROM_URL.into()),
    };
    let job =
        crate::job::build_verify_job(&verify, &spec, Some(1 << 30), &settings).expect("verify");
    let expected = args(
        &verify,
        &job,
        AgentOp::Verify {
            verify_dir: PathBuf::from("/verify"),
        },
    );
    cases.push(Case {
        name: "verify with an application check",
        job,
        expected,
    });
    cases
}

/// The value the kubelet would put in place of a Secret ref, made recognisable.
fn resolved_secret(name: &str, key: &str) -> String {
    format!("secret {name}/{key}")
}

/// A Job's environment as its pod sees it.
fn resolved_env(env: &[EnvVar]) -> Vec<(String, String)> {
    env.iter()
        .map(|var| {
            let source = var.value_from.as_ref();
            let value = match (&var.value, source) {
                (Some(value), None) => value.clone(),
                (None, Some(source)) => match (&source.secret_key_ref, &source.field_ref) {
                    (Some(secret), None) => resolved_secret(&secret.name, &secret.key),
                    (None, Some(field)) if field.field_path == "metadata.namespace" => {
                        NAMESPACE.into()
                    }
                    _ => panic!("{}: a source the test does not resolve", var.name),
                },
                _ => panic!("{}: neither a value nor one source", var.name),
            };
            (var.name.clone(), value)
        })
        .collect()
}

/// The agent's container: an init container when an application check runs after it.
fn container(job: &Job) -> &k8s_openapi::api::core::v1::Container {
    let pod = job
        .spec
        .as_ref()
        .and_then(|spec| spec.template.spec.as_ref())
        .expect("a pod template");
    pod.init_containers
        .iter()
        .flatten()
        .chain(pod.containers.iter())
        .find(|c| c.name == crate::job::AGENT_CONTAINER)
        .expect("an agent container")
}

/// In the child: parses this process's arguments-to-be and environment as `baas` would.
fn parse_in_child(name: &str) {
    let case = cases()
        .into_iter()
        .find(|case| case.name == name)
        .expect("the parent names a case");
    let command = container(&case.job).command.clone().expect("a command");
    let cli = match Cli::try_parse_from(&command) {
        Ok(cli) => cli,
        Err(error) => panic!("{name}: {command:?} does not parse: {error}"),
    };
    match cli.command {
        crate::cli::Command::Agent(args) => assert_eq!(args, case.expected, "{name}"),
        other => panic!("{name}: {command:?} is not `baas agent`: {other:?}"),
    }
}

#[test]
fn every_agent_job_environment_parses_to_the_arguments_it_means() {
    if let Ok(name) = std::env::var(CHILD_CASE) {
        parse_in_child(&name);
        return;
    }
    let exe = std::env::current_exe().expect("the test binary");
    let cases = cases();
    assert_eq!(cases.len(), 7);
    for case in cases {
        let env = resolved_env(container(&case.job).env.as_deref().unwrap_or_default());
        let output = Command::new(&exe)
            .args([
                "--exact",
                "job::agent_args_tests::every_agent_job_environment_parses_to_the_arguments_it_means",
                "--nocapture",
                "--test-threads=1",
            ])
            .env_clear()
            .envs(env)
            .env(CHILD_CASE, case.name)
            .output()
            .expect("the test binary starts");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains("1 passed"),
            "{}: {}\n{}",
            case.name,
            stdout,
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
