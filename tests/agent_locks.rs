//! Locks left by killed agent pods, through real restic and a real S3 server.
//!
//! Each pod is another host to restic, and PIDs repeat between containers, so restic's own rule
//! (stale when 30 minutes old, or same host with its process gone) would keep such a lock for
//! 30 minutes. A lock holder here is a real restic in its own UTS and PID namespaces, as in a
//! pod: its lock names the host name given to it and PID 1, a PID that exists on every host.
//! What the cluster knows about the holder's Job comes from a stand-in API server.

#[path = "support/agent.rs"]
mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use support::{Agent, S3Server};

/// A restic backup that holds a (non-exclusive) lock under `hostname` until it is killed or
/// released.
struct Holder {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Holder {
    fn start(repository: &str, hostname: &str) -> Holder {
        let restic = support::restic_binary().expect("restic is available");
        let cache = tempfile::tempdir().expect("temp dir").keep();
        let mut child = Command::new("unshare")
            .args([
                "--uts",
                "--pid",
                "--fork",
                "--kill-child=SIGKILL",
                "sh",
                "-c",
            ])
            .arg(r#"hostname "$0" && exec "$@""#)
            .arg(hostname)
            .arg(&restic)
            .args(["--repo", repository, "backup", "--stdin", "--host", "shop"])
            .args(["--stdin-filename", "/held"])
            .env("RESTIC_PASSWORD", support::PASSWORD)
            .env("AWS_ACCESS_KEY_ID", support::ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", support::SECRET_KEY)
            .env("RESTIC_CACHE_DIR", cache)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("unshare starts");
        let stdin = child.stdin.take();
        let deadline = Instant::now() + Duration::from_secs(30);
        while locks(repository).is_empty() {
            assert!(Instant::now() < deadline, "restic took no lock within 30 s");
            std::thread::sleep(Duration::from_millis(200));
        }
        Holder { child, stdin }
    }

    /// SIGKILL, as a deadline or a lost node ends a pod: the lock stays behind.
    fn kill(mut self) {
        self.child.kill().expect("kill");
        let _ = self.child.wait();
    }

    /// Ends its input: restic writes its snapshot and releases its lock.
    fn release(mut self) -> std::process::Output {
        // restic refuses an empty stdin.
        let mut stdin = self.stdin.take().expect("stdin is piped");
        stdin.write_all(b"held\n").expect("restic reads its input");
        drop(stdin);
        self.child.wait_with_output().expect("restic ends")
    }
}

fn locks(repository: &str) -> Vec<String> {
    let out = support::restic(repository, &["list", "locks", "--no-lock"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect()
}

/// A stand-in Kubernetes API for namespace `shop`: `jobs` and `pods` are the items of the
/// lists it answers. Returns a kubeconfig file for it.
fn api_server(jobs: serde_json::Value, pods: serde_json::Value) -> tempfile::NamedTempFile {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a port");
    let port = listener.local_addr().expect("address").port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let text = String::from_utf8_lossy(&request);
            let path = text.split_whitespace().nth(1).unwrap_or("");
            let (status, body) = if path.starts_with("/apis/batch/v1/namespaces/shop/jobs") {
                (
                    "200 OK",
                    serde_json::json!({"apiVersion": "batch/v1", "kind": "JobList", "metadata": {}, "items": jobs}),
                )
            } else if path.starts_with("/api/v1/namespaces/shop/pods") {
                (
                    "200 OK",
                    serde_json::json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": pods}),
                )
            } else {
                (
                    "404 Not Found",
                    serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404}),
                )
            };
            let body = body.to_string();
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let mut config = tempfile::NamedTempFile::new().expect("kubeconfig");
    write!(
        config,
        "apiVersion: v1\nkind: Config\ncurrent-context: test\n\
         clusters: [{{name: test, cluster: {{server: 'http://127.0.0.1:{port}'}}}}]\n\
         users: [{{name: test, user: {{token: test}}}}]\n\
         contexts: [{{name: test, context: {{cluster: test, user: test, namespace: shop}}}}]\n"
    )
    .expect("write kubeconfig");
    config
}

fn job(hostname: &str, status: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "metadata": {"name": hostname, "namespace": "shop"},
        "spec": {"template": {"spec": {"hostname": hostname, "containers": []}}},
        "status": status,
    })
}

/// An agent inside a Job, asking the stand-in API about lock holders.
fn agent_in_cluster(repository: &str, kubeconfig: &tempfile::NamedTempFile) -> Agent {
    Agent::new(repository, "shop")
        .env("BAAS_EXEC_MODE", Some("kube"))
        .env("KUBECONFIG", Some(&kubeconfig.path().display().to_string()))
}

fn init(repository: &str) {
    support::restic(repository, &["init"]);
}

#[test]
fn lock_of_a_killed_pod_whose_job_has_failed_is_removed_at_once() {
    let Some(s3) = S3Server::start() else { return };
    if !support::can_mount() {
        return;
    }
    let repository = s3.repository("backups");
    init(&repository);
    Holder::start(&repository, "nightly-backup-1a2b3c").kill();
    assert_eq!(
        locks(&repository).len(),
        1,
        "the killed restic left its lock"
    );

    let failed = serde_json::json!({
        "conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}],
        "failed": 1,
    });
    let kubeconfig = api_server(
        serde_json::json!([job("nightly-backup-1a2b3c", failed)]),
        serde_json::json!([]),
    );
    let started = Instant::now();
    let check = agent_in_cluster(&repository, &kubeconfig).run(&["check"]);
    check.assert_succeeded();
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the check waited for a dead lock: {:?}",
        started.elapsed()
    );
    assert!(
        check.report.message.contains("removed 1 stale lock"),
        "{}",
        check.report.message
    );
    assert!(locks(&repository).is_empty());
}

#[test]
fn lock_of_an_earlier_pod_of_the_same_job_is_removed_at_once() {
    let Some(s3) = S3Server::start() else { return };
    if !support::can_mount() {
        return;
    }
    let repository = s3.repository("backups");
    init(&repository);
    Holder::start(&repository, "weekly-check-4d5e6f").kill();

    // No cluster to ask: the host name the operator gave the Job is the proof.
    let started = Instant::now();
    let check = Agent::new(&repository, "shop")
        .hostname("weekly-check-4d5e6f")
        .env("BAAS_HOSTNAME", Some("weekly-check-4d5e6f"))
        .run(&["check"]);
    check.assert_succeeded();
    assert!(started.elapsed() < Duration::from_secs(60));
    assert!(check.report.message.contains("removed 1 stale lock"));
}

#[test]
fn lock_of_a_live_run_on_another_host_is_waited_for_never_removed() {
    let Some(s3) = S3Server::start() else { return };
    if !support::can_mount() {
        return;
    }
    let repository = s3.repository("backups");
    init(&repository);
    let holder = Holder::start(&repository, "nightly-backup-7a8b9c");
    let held = locks(&repository);
    // The holder's Job runs; a lock of a host the cluster does not know (another namespace, a
    // person's restic) is kept just the same.
    let kubeconfig = api_server(
        serde_json::json!([job(
            "nightly-backup-7a8b9c",
            serde_json::json!({"active": 1})
        )]),
        serde_json::json!([]),
    );
    let repo = repository.clone();
    let agent = agent_in_cluster(&repository, &kubeconfig);
    let check = std::thread::spawn(move || agent.run(&["check"]));
    std::thread::sleep(Duration::from_secs(10));
    assert!(
        !check.is_finished(),
        "the check did not wait for the live lock"
    );
    assert_eq!(locks(&repo), held, "the live lock is untouched");

    let released = holder.release();
    assert!(
        released.status.success(),
        "the holder's backup failed: {}",
        String::from_utf8_lossy(&released.stderr)
    );
    let check = check.join().expect("the check thread");
    check.assert_succeeded();
    assert!(
        !check.report.message.contains("stale"),
        "{}",
        check.report.message
    );
}
