//! Test support for the webhook over real HTTPS: the `baas webhook --offline` binary started
//! as a child process with a generated certificate (so its memory is its own, readable in
//! /proc), and a client that trusts exactly that certificate.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

/// A running `baas webhook --offline`, stopped when dropped.
pub struct Webhook {
    child: Child,
    /// Where it listens (127.0.0.1).
    pub addr: SocketAddr,
    /// A client that trusts the server's certificate and connects as `localhost`.
    pub client: reqwest::Client,
    tls: Arc<rustls::ClientConfig>,
    _dir: tempfile::TempDir,
}

fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("an address")
}

impl Webhook {
    /// Starts the server with `extra` arguments and waits until `/healthz` answers.
    pub async fn start(extra: &[&str]) -> Webhook {
        let dir = tempfile::tempdir().expect("temp dir");
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
            .expect("a self-signed certificate");
        let cert = dir.path().join("tls.pem");
        let key = dir.path().join("tls.key");
        std::fs::write(&cert, certified.cert.pem()).expect("write cert");
        std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write key");
        let addr = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_baas"))
            .args(["webhook", "--offline", "--listen", &addr.to_string()])
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .args(extra)
            .env("BAAS_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("baas starts");

        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(certified.cert.der().clone())
            .expect("a usable root");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls.clone())
            .resolve("localhost", addr)
            .timeout(Duration::from_secs(30))
            .build()
            .expect("a client");
        let webhook = Webhook {
            child,
            addr,
            client,
            tls: Arc::new(tls),
            _dir: dir,
        };
        for _ in 0..100 {
            if webhook.get("/healthz").await.is_ok() {
                return webhook;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the webhook did not answer /healthz within 5 s");
    }

    /// `https://localhost:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }

    /// GET `path`.
    pub async fn get(&self, path: &str) -> reqwest::Result<reqwest::Response> {
        self.client.get(self.url(path)).send().await
    }

    /// POST `body` to `path` as JSON; the status and the body as text.
    pub async fn post(&self, path: &str, body: Vec<u8>) -> reqwest::Result<(u16, String)> {
        let response = self
            .client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        let status = response.status().as_u16();
        Ok((status, response.text().await?))
    }

    /// POST over a connection of its own, reading the answer while the body is still being
    /// written: a server that answers early and closes (HTTP 413) breaks the writer's pipe,
    /// which an ordinary client reports instead of the answer. The status and the raw answer.
    pub async fn post_early_answer(&self, path: &str, body: Vec<u8>) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let tcp = tokio::net::TcpStream::connect(self.addr)
            .await
            .expect("connects");
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("a name");
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
            .expect("a TLS session");
        let (mut reader, mut writer) = tokio::io::split(tls);
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let writing = tokio::spawn(async move {
            // Fails with a broken pipe once the server has answered and closed.
            let _ = writer.write_all(head.as_bytes()).await;
            let _ = writer.write_all(&body).await;
            writer
        });
        let mut answer = Vec::new();
        // The server's close may come without TLS close_notify: keep what was read.
        let _ = reader.read_to_end(&mut answer).await;
        writing.abort();
        let answer = String::from_utf8_lossy(&answer).into_owned();
        let status = answer
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or(0);
        (status, answer)
    }

    /// The server's peak resident memory in KiB (`VmHWM`).
    pub fn peak_rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/<pid>/status")
    }

    /// Whether the server is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The seed's Schedule, as `/validate` sees it after `/mutate`.
pub fn seed_schedule() -> Value {
    json!({
        "apiVersion": "backup.appuio.ch/v1alpha1",
        "kind": "Schedule",
        "metadata": {"name": "schedule-test", "namespace": "team-a"},
        "spec": {
            "backend": {
                "repoPasswordSecretRef": {"name": "backup-repo", "key": "password"},
                "s3": {
                    "endpoint": "http://10.144.1.224:9000",
                    "bucket": "baas",
                    "accessKeyIDSecretRef": {"name": "backup-credentials", "key": "username"},
                    "secretAccessKeySecretRef": {"name": "backup-credentials", "key": "password"}
                }
            },
            "backup": {"schedule": "0 1 * * *", "keepJobs": 10},
            "check": {"schedule": "0 0 * * 0", "keepJobs": 10},
            "prune": {"schedule": "0 4 * * *", "keepJobs": 10, "retention": {"keepLast": 5, "keepDaily": 14}}
        }
    })
}

/// An AdmissionReview of a Schedule as the API server sends it.
pub fn review(uid: &str, operation: &str, object: Value, old: Option<Value>) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "backup.appuio.ch", "version": "v1alpha1", "kind": "Schedule"},
            "resource": {"group": "backup.appuio.ch", "version": "v1alpha1", "resource": "schedules"},
            "requestKind": {"group": "backup.appuio.ch", "version": "v1alpha1", "kind": "Schedule"},
            "requestResource": {"group": "backup.appuio.ch", "version": "v1alpha1", "resource": "schedules"},
            "name": "schedule-test", "namespace": "team-a", "operation": operation,
            "userInfo": {"username": "alice", "groups": ["system:authenticated"]},
            "object": object, "oldObject": old, "dryRun": false
        }
    })
}
