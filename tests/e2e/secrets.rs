//! Secrets never leave their Secret: a backup whose backup commands and credentials carry
//! distinctive strings, and restores that succeed and fail with them, and then a search of
//! everything a user of the namespace, another tenant or a monitoring system can read:
//! run status, Events, the Jobs and pods baas created, the operator's and the agents' logs,
//! the operator's metrics and the Pushgateway. None of the strings may appear anywhere.

use std::time::Duration;

use serde_json::Value;

use crate::harness::{Namespace, OPERATOR_NAMESPACE};

const COMMAND_PASSWORD: &str = "cmd-password-8b2f6";
const REPO_PASSWORD: &str = "repo-password-8b2f6";
const WRONG_SECRET: &str = "wrong-secret-key-8b2f6";

fn backend(ns: &Namespace, bucket: &str) -> String {
    format!(
        "  backend:
    repoPasswordSecretRef: {{name: repo, key: password}}
    s3:
      endpoint: {}
      bucket: {bucket}
      accessKeyIDSecretRef: {{name: tenant-s3, key: id}}
      secretAccessKeySecretRef: {{name: tenant-s3, key: secret}}
",
        ns.cluster().s3_endpoint()
    )
}

fn restore_to_s3(ns: &Namespace, name: &str, bucket: &str, secret: &str) -> String {
    format!(
        "apiVersion: backup.appuio.ch/v1alpha1
kind: Restore
metadata:
  name: {name}
spec:
  restoreMethod:
    s3:
      endpoint: {}
      bucket: {bucket}-restored
      accessKeyIDSecretRef: {{name: {secret}, key: id}}
      secretAccessKeySecretRef: {{name: {secret}, key: secret}}
{}",
        ns.cluster().s3_endpoint(),
        backend(ns, bucket)
    )
}

/// A pod whose backup command holds a password on its command line, as the seed's
/// `mysqldump -uroot -psecure` does.
fn database_pod(ns: &Namespace, name: &str, command: &str) {
    let pod = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": {"appuio.ch/backupcommand": command}},
        "spec": {"containers": [{"name": "db", "image": ns.cluster().busybox_image(), "command": ["sleep", "3600"]}]},
    });
    ns.apply(&pod.to_string());
    ns.wait_pod_phase(name, "Running", Duration::from_secs(60));
}

/// The operator's `/metrics` of every replica, read as Prometheus would: with the token of a
/// ServiceAccount bound to `baas-metrics-reader`.
pub fn operator_metrics(ns: &Namespace) -> String {
    let c = ns.cluster();
    // Read more than once by some tests: the account may exist already.
    let account = ns.kubectl(&["create", "serviceaccount", "scraper"]);
    assert!(
        account.ok || account.stderr.contains("already exists"),
        "creating ServiceAccount scraper: {}",
        account.stderr
    );
    let binding = format!("{}-scraper", ns.name);
    let subject = format!("--serviceaccount={}:scraper", ns.name);
    let run = c.kubectl(
        &[
            "create",
            "clusterrolebinding",
            &binding,
            "--clusterrole=baas-metrics-reader",
            &subject,
        ],
        None,
    );
    assert!(run.ok, "binding baas-metrics-reader: {}", run.stderr);
    let token = ns.kubectl_ok(&["create", "token", "scraper"]);
    let mut text = String::new();
    for pod in c.operator_pods() {
        let ip = pod["status"]["podIP"].as_str().unwrap_or_default();
        let url = format!("https://{ip}:8443/metrics");
        let mut anonymous = c.command("curl");
        anonymous.args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", &url]);
        let status = c.run(anonymous, None).stdout;
        assert_eq!(status, "401", "{url} answers without a token");
        let mut curl = c.command("curl");
        curl.args([
            "-skf",
            "-H",
            &format!("Authorization: Bearer {}", token.trim()),
            &url,
        ]);
        let run = c.run(curl, None);
        assert!(run.ok, "GET {url} with a reader's token: {}", run.stderr);
        text.push_str(&run.stdout);
    }
    let _ = c.kubectl(&["delete", "clusterrolebinding", &binding], None);
    text
}

#[test]
#[ignore = "needs the local cluster: scripts/cluster up"]
fn credentials_and_backup_commands_appear_nowhere_a_user_can_read() {
    let ns = Namespace::create("secrets");
    let c = ns.cluster();
    let tenant_id = c.var("BAAS_S3_TENANT_ACCESS_KEY").to_string();
    let tenant_secret = c.var("BAAS_S3_TENANT_SECRET_KEY").to_string();
    let literal = |key: &str, value: &str| format!("--from-literal={key}={value}");
    ns.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "tenant-s3",
        &literal("id", &tenant_id),
        &literal("secret", &tenant_secret),
    ]);
    ns.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "wrong-s3",
        &literal("id", &tenant_id),
        &literal("secret", WRONG_SECRET),
    ]);
    ns.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "repo",
        &literal("password", REPO_PASSWORD),
    ]);
    ns.create_pvc("app-data", "ReadWriteMany", false);
    ns.write_files("writer", &[("app-data", "index.html", "<h1>hello</h1>")]);
    database_pod(
        &ns,
        "dumps",
        &format!("echo 'a dump'; : -uroot -p{COMMAND_PASSWORD}"),
    );
    database_pod(
        &ns,
        "broken",
        &format!("exit 3; : -uroot -p{COMMAND_PASSWORD}"),
    );
    let bucket = ns.bucket("secrets");

    // -- a backup with one command that works and one that fails
    ns.apply(&format!(
        "apiVersion: backup.appuio.ch/v1alpha1
kind: Backup
metadata:
  name: marked
spec:
{}",
        backend(&ns, &bucket)
    ));
    let backup = ns.wait_run_finished("backup", "marked", Duration::from_secs(180));
    assert_eq!(
        backup["status"]["state"], "PartiallySucceeded",
        "{:#}",
        backup["status"]
    );
    let message = backup["status"].to_string();
    assert!(
        message.contains("broken"),
        "the failure names the pod whose command failed: {message}"
    );

    // -- a restore that succeeds, and one whose upload S3 refuses
    ns.apply(&restore_to_s3(&ns, "restored", &bucket, "tenant-s3"));
    ns.wait_run_succeeded("restore", "restored", Duration::from_secs(180));
    ns.apply(&restore_to_s3(&ns, "refused", &bucket, "wrong-s3"));
    let refused = ns.wait_run_finished("restore", "refused", Duration::from_secs(180));
    assert_eq!(
        refused["status"]["state"], "Failed",
        "{:#}",
        refused["status"]
    );

    // -- everything readable, in one text
    let mut readable = String::new();
    for kinds in ["backups,restores", "events", "jobs"] {
        readable.push_str(&ns.kubectl_ok(&["get", kinds, "-o", "json"]));
    }
    let agent_pods = ns.kubectl_ok(&[
        "get",
        "pods",
        "-l",
        "app.kubernetes.io/managed-by=baas",
        "-o",
        "json",
    ]);
    let pods: Value = serde_json::from_str(&agent_pods).expect("kubectl prints JSON");
    let names: Vec<String> = pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    assert!(names.len() >= 3, "agent pods of the three runs: {names:?}");
    readable.push_str(&agent_pods);
    for pod in &names {
        readable.push_str(&ns.kubectl_ok(&["logs", pod, "--all-containers"]));
    }
    let operator_logs = c.kubectl(
        &[
            "-n",
            OPERATOR_NAMESPACE,
            "logs",
            "-l",
            "app.kubernetes.io/component=operator",
            "--tail=-1",
        ],
        None,
    );
    assert!(operator_logs.ok, "operator logs: {}", operator_logs.stderr);
    assert!(
        operator_logs.stdout.contains(&ns.name),
        "the operator logged about this namespace's runs"
    );
    readable.push_str(&operator_logs.stdout);
    readable.push_str(&operator_metrics(&ns));
    readable.push_str(&c.http_get(&format!("{}/metrics", c.pushgateway())));

    for secret in [
        COMMAND_PASSWORD,
        REPO_PASSWORD,
        WRONG_SECRET,
        tenant_secret.as_str(),
        tenant_id.as_str(),
        "X-Amz-Signature",
        "X-Amz-Credential",
    ] {
        assert!(
            !readable.contains(secret),
            "{secret:?} is readable:\n{}",
            readable
                .lines()
                .filter(|l| l.contains(secret))
                .take(5)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}
