//! What every end-to-end test needs: the cluster's addresses, `kubectl` and `restic` runs,
//! a namespace per test that explains itself when the test fails, polling with deadlines and
//! plain S3 reads.
//!
//! Every address comes from the environment that `scripts/cluster env` prints; when that is
//! not exported, the script is asked (it honours the same `BAAS_*_PORT` variables as `up`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// The variables `scripts/cluster env` exports that the tests use.
const CLUSTER_VARS: [&str; 11] = [
    "KUBECONFIG",
    "BAAS_S3_ENDPOINT",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "BAAS_S3_TENANT_ACCESS_KEY",
    "BAAS_S3_TENANT_SECRET_KEY",
    "BAAS_PUSHGATEWAY_URL",
    "BAAS_CLUSTER_DIR",
    "BAAS_CLUSTER_NODES",
    "BAAS_TEST_BUSYBOX_IMAGE",
    "BAAS_TEST_MARIADB_IMAGE",
];

/// The Pod Security level every test namespace enforces, as docs/install.md asks of users.
pub const POD_SECURITY: &str = "baseline";

/// The namespace and labels of the operator's pods, as `manifests/` installs them.
pub const OPERATOR_NAMESPACE: &str = "baas-system";
/// Selects the operator's pods.
pub const OPERATOR_SELECTOR: &str = "app.kubernetes.io/component=operator";

/// The password the tests store in the seed's `backup-repo` Secret.
pub const REPO_PASSWORD: &str = "mybackupencryptionpassword";

/// The local cluster started by `scripts/cluster up`.
pub struct Cluster {
    /// Environment for child processes (KUBECONFIG, AWS_* and, when the script says so, PATH).
    vars: BTreeMap<String, String>,
    /// Checkout root, for `scripts/` and `manifests/`.
    pub repo: PathBuf,
}

/// What a finished process said.
pub struct Run {
    /// Exit status was 0.
    pub ok: bool,
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(out: Output) -> Self {
        Run {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Cluster {
    /// The cluster of this test process, read once.
    pub fn get() -> &'static Cluster {
        static CLUSTER: OnceLock<Cluster> = OnceLock::new();
        CLUSTER.get_or_init(Cluster::load)
    }

    fn load() -> Cluster {
        let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let exported: BTreeMap<String, String> = CLUSTER_VARS
            .iter()
            .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
            .collect();
        // the pinned restic comes first on the PATH that `env` prints
        let vars = if exported.len() == CLUSTER_VARS.len() && std::env::var("PATH").is_ok() {
            let mut vars = exported;
            vars.insert("PATH".into(), std::env::var("PATH").unwrap_or_default());
            vars
        } else {
            let out = Command::new("bash")
                .arg("-c")
                .arg(r#"eval "$(scripts/cluster env)" && env"#)
                .current_dir(&repo)
                .output()
                .expect("bash runs");
            let run = Run::from(out);
            assert!(
                run.ok,
                "no local cluster: run `scripts/cluster up` first\n{}",
                run.stderr
            );
            run.stdout
                .lines()
                .filter_map(|l| l.split_once('='))
                .filter(|(k, _)| CLUSTER_VARS.contains(k) || *k == "PATH")
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        Cluster { vars, repo }
    }

    /// A variable of the cluster environment (e.g. `BAAS_S3_ENDPOINT`).
    pub fn var(&self, name: &str) -> &str {
        self.vars
            .get(name)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("{name} is not in the cluster environment"))
    }

    /// The S3 endpoint, e.g. `http://127.0.0.1:9900`.
    pub fn s3_endpoint(&self) -> &str {
        self.var("BAAS_S3_ENDPOINT")
    }

    /// The Pushgateway URL.
    pub fn pushgateway(&self) -> &str {
        self.var("BAAS_PUSHGATEWAY_URL")
    }

    /// A command with the cluster environment.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.envs(&self.vars).current_dir(&self.repo);
        cmd
    }

    /// Runs a command, optionally feeding `stdin`.
    pub fn run(&self, mut cmd: Command, stdin: Option<&str>) -> Run {
        let described = format!("{cmd:?}");
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {described}: {e}"));
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .expect("stdin was piped")
                .write_all(input.as_bytes())
                .expect("child reads its stdin");
        }
        child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("{described}: {e}"))
            .into()
    }

    /// `kubectl ARGS` (cluster-wide).
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Run {
        let mut cmd = self.command("kubectl");
        cmd.args(args);
        self.run(cmd, stdin)
    }

    /// The nodes of the cluster (`node-a node-b`).
    pub fn nodes(&self) -> Vec<String> {
        self.var("BAAS_CLUSTER_NODES")
            .split_whitespace()
            .map(str::to_string)
            .collect()
    }

    /// The busybox image the test pods run.
    pub fn busybox_image(&self) -> &str {
        self.var("BAAS_TEST_BUSYBOX_IMAGE")
    }

    /// The MariaDB image (Debian's mariadb-server) of the seed's story.
    pub fn mariadb_image(&self) -> &str {
        self.var("BAAS_TEST_MARIADB_IMAGE")
    }

    /// The last `lines` lines of every operator pod's log, each line prefixed by its pod.
    pub fn operator_log_tail(&self, lines: usize) -> String {
        let tail = format!("--tail={lines}");
        let run = self.kubectl(
            &[
                "-n",
                OPERATOR_NAMESPACE,
                "logs",
                "-l",
                OPERATOR_SELECTOR,
                "--prefix",
                &tail,
            ],
            None,
        );
        format!("{}{}", run.stdout, run.stderr)
    }

    /// The operator pods that are not being deleted, as JSON.
    pub fn operator_pods(&self) -> Vec<Value> {
        let run = self.kubectl(
            &[
                "-n",
                OPERATOR_NAMESPACE,
                "get",
                "pods",
                "-l",
                OPERATOR_SELECTOR,
                "-o",
                "json",
            ],
            None,
        );
        assert!(run.ok, "listing the operator pods: {}", run.stderr);
        let list: Value = serde_json::from_str(&run.stdout).expect("kubectl prints JSON");
        list["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|p| !p["metadata"]["deletionTimestamp"].is_string())
            .collect()
    }

    /// The pod that holds the operator's leader Lease now, if any.
    pub fn operator_leader(&self) -> Option<String> {
        let run = self.kubectl(
            &[
                "-n",
                OPERATOR_NAMESPACE,
                "get",
                "lease",
                "baas-operator",
                "-o",
                "jsonpath={.spec.holderIdentity}",
            ],
            None,
        );
        (run.ok && !run.stdout.trim().is_empty()).then(|| run.stdout.trim().to_string())
    }

    /// `curl -sf URL` (plain HTTP, e.g. the Pushgateway).
    pub fn http_get(&self, url: &str) -> String {
        let mut cmd = self.command("curl");
        cmd.args(["-sf", url]);
        let run = self.run(cmd, None);
        assert!(run.ok, "GET {url} failed: {}", run.stderr);
        run.stdout
    }

    fn s3_curl(&self, method: &str, url: &str) -> Vec<u8> {
        let user = format!(
            "{}:{}",
            self.var("AWS_ACCESS_KEY_ID"),
            self.var("AWS_SECRET_ACCESS_KEY")
        );
        let out = self
            .command("curl")
            .args(["-sS", "--fail", "-X", method])
            .args(["--aws-sigv4", "aws:amz:us-east-1:s3"])
            .args(["--user", &user, url])
            .output()
            .expect("curl runs");
        assert!(
            out.status.success(),
            "S3 {method} {url} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// Keys of the objects in an S3 bucket (ListObjectsV2, signed with the cluster's keys).
    pub fn s3_list(&self, bucket: &str) -> Vec<String> {
        let url = format!("{}/{bucket}?list-type=2", self.s3_endpoint());
        let xml = String::from_utf8_lossy(&self.s3_curl("GET", &url)).into_owned();
        xml.split("<Key>")
            .skip(1)
            .filter_map(|s| s.split_once("</Key>").map(|(k, _)| k.to_string()))
            .collect()
    }

    /// Keys and sizes in bytes of the objects in an S3 bucket.
    pub fn s3_list_sizes(&self, bucket: &str) -> Vec<(String, u64)> {
        let url = format!("{}/{bucket}?list-type=2", self.s3_endpoint());
        let xml = String::from_utf8_lossy(&self.s3_curl("GET", &url)).into_owned();
        let field = |object: &str, name: &str| {
            let open = format!("<{name}>");
            let close = format!("</{name}>");
            object
                .split_once(&open)
                .and_then(|(_, rest)| rest.split_once(&close))
                .map(|(value, _)| value.to_string())
        };
        xml.split("<Contents>")
            .skip(1)
            .filter_map(|object| {
                let key = field(object, "Key")?;
                let size = field(object, "Size")?.parse().ok()?;
                Some((key, size))
            })
            .collect()
    }

    /// Deletes one S3 object.
    pub fn s3_delete(&self, bucket: &str, key: &str) {
        self.s3_curl("DELETE", &format!("{}/{bucket}/{key}", self.s3_endpoint()));
    }

    /// The bytes of one S3 object.
    pub fn s3_get(&self, bucket: &str, key: &str) -> Vec<u8> {
        self.s3_curl("GET", &format!("{}/{bucket}/{key}", self.s3_endpoint()))
    }
}

/// Polls `probe` every `every` until it yields a value; panics naming `what` after `timeout`.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {}s waiting for {what}",
            timeout.as_secs()
        );
        std::thread::sleep(every);
    }
}

/// `text` as one single-quoted shell word.
pub fn sh_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// A short lowercase suffix that keeps names of concurrent or repeated runs apart.
pub fn unique_suffix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos();
    let mut n = (nanos ^ (u128::from(std::process::id()) << 40)) as u64;
    let mut s = String::new();
    for _ in 0..6 {
        s.push(char::from(
            b"0123456789abcdefghijklmnopqrstuvwxyz"[(n % 36) as usize],
        ));
        n /= 36;
    }
    s
}

/// Seconds since the epoch.
pub fn now_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

/// Seconds since the epoch of an API time (`creationTimestamp`, a status time).
pub fn seconds_of(time: &Value) -> f64 {
    let text = time
        .as_str()
        .unwrap_or_else(|| panic!("not a time: {time}"));
    let at: jiff::Timestamp = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
    at.as_second() as f64
}

/// Replaces `from` with `to` in `text`, failing when `from` is absent: a rewrite of an
/// example that silently did nothing would test the wrong manifest.
pub fn rewrite(text: &str, replacements: &[(&str, &str)]) -> String {
    let mut out = text.to_string();
    for (from, to) in replacements {
        assert!(out.contains(from), "{from:?} not found in\n{out}");
        out = out.replace(from, to);
    }
    out
}

/// A manifest from `manifests/examples/`.
pub fn example(name: &str) -> String {
    let path = Cluster::get().repo.join("manifests/examples").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One test's namespace; deleted when the test ends. When the test fails, the namespace's
/// objects, pod logs, events and the operator's log tail are printed first
/// (`BAAS_E2E_KEEP=1` keeps the namespace for a closer look).
pub struct Namespace {
    /// Its name, `e2e-<scenario>-<suffix>`.
    pub name: String,
    /// The unique suffix, also used for bucket names.
    pub suffix: String,
    cluster: &'static Cluster,
}

impl Namespace {
    /// Creates `e2e-<scenario>-<suffix>` and waits for its default ServiceAccount (pods are
    /// refused until it exists).
    pub fn create(scenario: &str) -> Namespace {
        let cluster = Cluster::get();
        let suffix = unique_suffix();
        let name = format!("e2e-{scenario}-{suffix}");
        let run = cluster.kubectl(&["create", "namespace", &name], None);
        assert!(run.ok, "creating namespace {name}: {}", run.stderr);
        let label = format!("pod-security.kubernetes.io/enforce={POD_SECURITY}");
        let run = cluster.kubectl(&["label", "namespace", &name, &label], None);
        assert!(run.ok, "labelling namespace {name}: {}", run.stderr);
        let ns = Namespace {
            name,
            suffix,
            cluster,
        };
        wait_for(
            "the default ServiceAccount",
            Duration::from_secs(30),
            Duration::from_millis(200),
            || {
                ns.kubectl(&["get", "serviceaccount", "default"])
                    .ok
                    .then_some(())
            },
        );
        ns
    }

    /// The cluster.
    pub fn cluster(&self) -> &'static Cluster {
        self.cluster
    }

    /// A bucket name of this test: `e2e-<purpose>-<suffix>`.
    pub fn bucket(&self, purpose: &str) -> String {
        format!("e2e-{purpose}-{}", self.suffix)
    }

    /// `kubectl -n NS ARGS`.
    pub fn kubectl(&self, args: &[&str]) -> Run {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        self.cluster.kubectl(&all, None)
    }

    /// `kubectl -n NS ARGS`, which must succeed; its stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let run = self.kubectl(args);
        assert!(run.ok, "kubectl {args:?} failed: {}", run.stderr);
        run.stdout
    }

    /// `kubectl -n NS apply -f -` (plus `extra` flags) with `yaml` on stdin.
    pub fn apply_with(&self, yaml: &str, extra: &[&str]) -> Run {
        let mut args = vec!["-n", &self.name, "apply", "-f", "-"];
        args.extend_from_slice(extra);
        self.cluster.kubectl(&args, Some(yaml))
    }

    /// `kubectl apply`, which must succeed; its stderr (warnings).
    pub fn apply(&self, yaml: &str) -> String {
        let run = self.apply_with(yaml, &[]);
        assert!(run.ok, "kubectl apply failed: {}\n{yaml}", run.stderr);
        run.stderr
    }

    /// One object as JSON, `None` when it does not exist.
    pub fn get(&self, kind: &str, name: &str) -> Option<Value> {
        let run = self.kubectl(&["get", kind, name, "-o", "json"]);
        if !run.ok {
            assert!(
                run.stderr.contains("NotFound"),
                "kubectl get {kind} {name}: {}",
                run.stderr
            );
            return None;
        }
        Some(serde_json::from_str(&run.stdout).expect("kubectl prints JSON"))
    }

    /// All objects of a kind.
    pub fn list(&self, kind: &str) -> Vec<Value> {
        let out = self.kubectl_ok(&["get", kind, "-o", "json"]);
        let list: Value = serde_json::from_str(&out).expect("kubectl prints JSON");
        list["items"].as_array().cloned().unwrap_or_default()
    }

    /// The seed's two Secrets, created exactly as the seed does, with the local S3 keys.
    pub fn create_seed_secrets(&self) {
        let c = self.cluster;
        let username = format!("--from-literal=username={}", c.var("AWS_ACCESS_KEY_ID"));
        let password = format!("--from-literal=password={}", c.var("AWS_SECRET_ACCESS_KEY"));
        let repo_password = format!("--from-literal=password={REPO_PASSWORD}");
        self.kubectl_ok(&[
            "create",
            "secret",
            "generic",
            "backup-credentials",
            &username,
            &password,
        ]);
        self.kubectl_ok(&["create", "secret", "generic", "backup-repo", &repo_password]);
    }

    /// A PersistentVolumeClaim, annotated `appuio.ch/backup=false` when `excluded`.
    /// ReadWriteMany claims get the shared storage class; others the default, node-local one,
    /// which binds when the first pod uses the claim.
    pub fn create_pvc(&self, name: &str, access_mode: &str, excluded: bool) {
        let annotations = if excluded {
            "\n  annotations:\n    appuio.ch/backup: \"false\""
        } else {
            ""
        };
        let class = if access_mode == "ReadWriteMany" {
            "\n  storageClassName: local-shared"
        } else {
            ""
        };
        self.apply(&format!(
            "apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: {name}{annotations}
spec:{class}
  accessModes: [{access_mode}]
  resources: {{requests: {{storage: 1Gi}}}}
"
        ));
    }

    /// Writes `files` (`(pvc, path inside it, content)`) through a pod that mounts the PVCs
    /// at `/mnt/<pvc>`, as an application would, and waits for it to finish. The first use
    /// of a node-local claim binds it to the node the pod runs on.
    pub fn write_files(&self, pod: &str, files: &[(&str, &str, &str)]) {
        self.write_files_on(pod, None, files);
    }

    /// [`Namespace::write_files`] on a given node.
    pub fn write_files_on(&self, pod: &str, node: Option<&str>, files: &[(&str, &str, &str)]) {
        let mut pvcs: Vec<&str> = files.iter().map(|f| f.0).collect();
        pvcs.sort_unstable();
        pvcs.dedup();
        let mut script = String::from("set -e\n");
        for (pvc, path, content) in files {
            let full = format!("/mnt/{pvc}/{path}");
            let dir = Path::new(&full)
                .parent()
                .expect("a file path has a parent")
                .display()
                .to_string();
            script.push_str(&format!(
                "mkdir -p {}\nprintf '%s' {} > {}\n",
                sh_quote(&dir),
                sh_quote(content),
                sh_quote(&full)
            ));
        }
        let mounts: Vec<Value> = pvcs
            .iter()
            .map(|p| serde_json::json!({"name": p, "mountPath": format!("/mnt/{p}")}))
            .collect();
        let volumes: Vec<Value> = pvcs
            .iter()
            .map(|p| serde_json::json!({"name": p, "persistentVolumeClaim": {"claimName": p}}))
            .collect();
        // kubectl takes JSON as well as YAML
        let mut pod_json = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": pod},
            "spec": {
                "restartPolicy": "Never",
                "containers": [{
                    "name": "writer",
                    "image": self.cluster.busybox_image(),
                    "command": ["sh", "-c", script],
                    "volumeMounts": mounts,
                }],
                "volumes": volumes,
            }
        });
        if let Some(node) = node {
            pod_json["spec"]["nodeSelector"] = serde_json::json!({"kubernetes.io/hostname": node});
        }
        self.apply(&pod_json.to_string());
        self.wait_pod_phase(pod, "Succeeded", Duration::from_secs(60));
    }

    /// Binds a node-local claim to `node` the way its first user would: a pod on that node
    /// mounts it and exits, leaving the claim empty.
    pub fn bind_claim_on(&self, pvc: &str, node: &str) {
        let pod = format!("bind-{pvc}");
        let pod_json = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": pod},
            "spec": {
                "restartPolicy": "Never",
                "nodeSelector": {"kubernetes.io/hostname": node},
                "containers": [{
                    "name": "bind",
                    "image": self.cluster.busybox_image(),
                    "command": ["true"],
                    "volumeMounts": [{"name": "claim", "mountPath": "/mnt"}],
                }],
                "volumes": [{"name": "claim", "persistentVolumeClaim": {"claimName": pvc}}],
            }
        });
        self.apply(&pod_json.to_string());
        self.wait_pod_phase(&pod, "Succeeded", Duration::from_secs(60));
        self.kubectl_ok(&["delete", "pod", &pod, "--wait=true"]);
    }

    /// Waits until a pod reaches `phase`; fails early when it ends in another phase.
    pub fn wait_pod_phase(&self, pod: &str, phase: &str, timeout: Duration) {
        wait_for(
            &format!("pod {pod} to be {phase}"),
            timeout,
            Duration::from_millis(300),
            || {
                let p = self.get("pod", pod)?;
                let now = p["status"]["phase"].as_str().unwrap_or("").to_string();
                assert!(
                    !(now == "Failed" && phase != "Failed"),
                    "pod {pod} failed: {}",
                    p["status"]
                );
                (now == phase).then_some(())
            },
        );
    }

    /// Waits until a run object (Backup, Prune, Restore, ...) reaches a terminal state; its JSON.
    pub fn wait_run_finished(&self, kind: &str, name: &str, timeout: Duration) -> Value {
        wait_for(
            &format!("{kind} {name} to finish"),
            timeout,
            Duration::from_millis(500),
            || {
                let run = self.get(kind, name)?;
                let state = run["status"]["state"].as_str()?;
                ["Succeeded", "PartiallySucceeded", "Failed"]
                    .contains(&state)
                    .then_some(run)
            },
        )
    }

    /// Waits until a run object succeeded completely; fails with its status otherwise.
    pub fn wait_run_succeeded(&self, kind: &str, name: &str, timeout: Duration) -> Value {
        let run = self.wait_run_finished(kind, name, timeout);
        assert_eq!(
            run["status"]["state"], "Succeeded",
            "{kind} {name} did not succeed: {:#}",
            run["status"]
        );
        // what `kubectl wait --for=condition=...` sees
        let condition = |type_: &str| {
            run["status"]["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
                .and_then(|c| c["status"].as_str())
                .unwrap_or_default()
                .to_string()
        };
        assert_eq!(
            [
                condition("Finished"),
                condition("Complete"),
                condition("Failed")
            ],
            ["True", "True", "False"],
            "{kind} {name}: {:#}",
            run["status"]["conditions"]
        );
        let waited = self.kubectl(&[
            "wait",
            "--for=condition=Complete",
            &format!("{kind}/{name}"),
            "--timeout=5s",
        ]);
        assert!(waited.ok, "kubectl wait for Complete: {}", waited.stderr);
        run
    }

    /// The restic repository in `bucket` of the local S3 server, as the seed's manual
    /// restore reaches it.
    pub fn repo(&self, bucket: &str) -> Repo {
        Repo {
            url: format!("s3:{}/{bucket}", self.cluster.s3_endpoint()),
        }
    }

    fn diagnostics(&self) {
        let c = self.cluster;
        eprintln!("\n===== diagnostics of namespace {} =====", self.name);
        let kinds = "schedules,backups,checks,prunes,restores,verifies,jobs,pods,pvc";
        let objects = self.kubectl(&["get", kinds, "-o", "yaml"]);
        eprintln!(
            "--- kubectl get {kinds} -o yaml\n{}{}",
            objects.stdout, objects.stderr
        );
        let events = self.kubectl(&["get", "events", "--sort-by=.lastTimestamp"]);
        eprintln!("--- events\n{}", events.stdout);
        let pods = self.kubectl(&["get", "pods", "-o", "name"]);
        for pod in pods.stdout.lines() {
            let logs = self.kubectl(&["logs", pod, "--all-containers", "--tail=40"]);
            eprintln!("--- logs of {pod}\n{}{}", logs.stdout, logs.stderr);
        }
        // Long enough to cover the minutes a timing test spans: one line per run step.
        eprintln!("--- operator log (tail)\n{}", c.operator_log_tail(400));
        eprintln!("===== end of diagnostics =====\n");
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.diagnostics();
        }
        if std::env::var("BAAS_E2E_KEEP").is_ok_and(|v| v == "1") {
            eprintln!("keeping namespace {}", self.name);
            return;
        }
        // --wait=false: the test's result does not depend on the cleanup
        let _ = self
            .cluster
            .kubectl(&["delete", "namespace", &self.name, "--wait=false"], None);
    }
}

/// A restic repository, used with plain `restic` and the seed's environment variables.
pub struct Repo {
    /// `s3:<endpoint>/<bucket>`.
    pub url: String,
}

impl Repo {
    /// `restic ARGS` with RESTIC_REPOSITORY, RESTIC_PASSWORD and AWS_* set, as in the seed.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Cluster::get().command("restic");
        cmd.env("RESTIC_REPOSITORY", &self.url)
            .env("RESTIC_PASSWORD", REPO_PASSWORD)
            .env(
                "RESTIC_CACHE_DIR",
                std::env::temp_dir().join("baas-e2e-restic-cache"),
            )
            .args(args);
        cmd
    }

    /// `restic ARGS`, which must succeed; its stdout.
    pub fn run_ok(&self, args: &[&str]) -> String {
        let run = Cluster::get().run(self.command(args), None);
        assert!(run.ok, "restic {args:?} failed: {}", run.stderr);
        run.stdout
    }

    /// `restic snapshots --json --host HOST`, oldest first.
    pub fn snapshots(&self, host: &str) -> Vec<Value> {
        let out = self.run_ok(&["snapshots", "--json", "--host", host]);
        serde_json::from_str::<Value>(&out)
            .expect("restic prints JSON")
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// `restic dump SNAPSHOT PATH`: the bytes of one file of a snapshot.
    pub fn dump(&self, snapshot: &str, path: &str) -> String {
        self.run_ok(&["dump", snapshot, path])
    }
}

/// The paths of a snapshot as restic reports them.
pub fn snapshot_paths(snapshot: &Value) -> Vec<String> {
    snapshot["paths"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}
