//! Running a backup command and streaming its output. [`PodExec`] hides where the command
//! runs: [`KubeExec`] uses the Kubernetes exec API (what Jobs use), [`LocalExec`] runs it with
//! `sh -c` next to the agent (tests and benchmarks without a cluster).

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::process::Stdio;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::api::{Api, AttachParams};
use tokio::io::{AsyncRead, AsyncReadExt};

/// A command started somewhere, with its output streams and its outcome.
pub struct ExecSession {
    /// The command's stdout: the data to back up.
    pub stdout: Pin<Box<dyn AsyncRead + Send>>,
    /// The command's stderr.
    pub stderr: Pin<Box<dyn AsyncRead + Send>>,
    /// Resolves when the command has ended: `Ok` only for a reported exit status of 0.
    /// A stream that broke before an exit status arrived is an error.
    pub finished: Pin<Box<dyn Future<Output = Result<(), String>> + Send>>,
}

/// Reads pods and starts commands in them.
pub trait PodExec: Send + Sync {
    /// The pod named `name` as it is now; `None` when there is no such pod.
    fn get_pod(&self, name: &str) -> impl Future<Output = Result<Option<Pod>, String>> + Send;

    /// Starts `sh -c <command>` in `container` of `pod` (the first container when `None`).
    fn exec(
        &self,
        pod: &str,
        container: Option<&str>,
        command: &str,
    ) -> impl Future<Output = Result<ExecSession, String>> + Send;
}

/// Runs commands in pods of one namespace through the Kubernetes exec API.
pub struct KubeExec {
    pods: Api<Pod>,
}

impl KubeExec {
    /// Exec into pods of `namespace`.
    pub fn new(client: kube::Client, namespace: &str) -> Self {
        KubeExec {
            pods: Api::namespaced(client, namespace),
        }
    }
}

impl PodExec for KubeExec {
    async fn get_pod(&self, name: &str) -> Result<Option<Pod>, String> {
        self.pods.get_opt(name).await.map_err(|e| e.to_string())
    }

    async fn exec(
        &self,
        pod: &str,
        container: Option<&str>,
        command: &str,
    ) -> Result<ExecSession, String> {
        let mut params = AttachParams::default()
            .stdin(false)
            .stdout(true)
            .stderr(true);
        if let Some(container) = container {
            params = params.container(container);
        }
        let mut attached = self
            .pods
            .exec(pod, ["sh", "-c", command], &params)
            .await
            .map_err(|e| format!("cannot exec into pod {pod}: {e}"))?;
        let stdout = attached
            .stdout()
            .ok_or("the exec API gave no stdout stream")?;
        let stderr = attached
            .stderr()
            .ok_or("the exec API gave no stderr stream")?;
        let status = attached
            .take_status()
            .ok_or("the exec API gave no status channel")?;
        let finished = async move {
            let status = status.await;
            // The connection task has done its work once the status arrived (or was lost).
            let joined = attached.join().await.map_err(|e| e.to_string());
            exec_outcome(status, joined)
        };
        Ok(ExecSession {
            stdout: Box::pin(stdout),
            stderr: Box::pin(stderr),
            finished: Box::pin(finished),
        })
    }
}

/// The outcome of an exec from the API server's final Status. No Status means the stream
/// ended early: the command's output may be truncated, so that is a failure too.
fn exec_outcome(
    status: Option<Status>,
    joined: std::result::Result<(), String>,
) -> Result<(), String> {
    match status {
        Some(status) if status.status.as_deref() == Some("Success") => Ok(()),
        // The exit code from the Status' causes, never its message: kubelets put the command
        // line into it ("error executing command [sh -c ...]"), and a backup command may
        // hold credentials that must not reach the run's status.
        Some(status) => Err(match exit_code(&status) {
            Some(code) => format!("command terminated with non-zero exit code: {code}"),
            None => format!(
                "the exec failed: {}",
                status.reason.as_deref().unwrap_or("no reason given")
            ),
        }),
        None => Err(match joined {
            Err(e) => format!("the exec stream broke: {e}"),
            Ok(()) => "the exec stream ended without an exit status".into(),
        }),
    }
}

/// The exit code an exec Status reports in its `ExitCode` cause.
fn exit_code(status: &Status) -> Option<String> {
    status
        .details
        .as_ref()?
        .causes
        .as_ref()?
        .iter()
        .find(|c| c.reason.as_deref() == Some("ExitCode"))
        .and_then(|c| c.message.clone())
}

/// Runs commands with `sh -c` on this machine; the pods are read from a list given at the
/// start (a `kubectl get pods -o json` document), and containers are ignored.
#[derive(Clone, Debug, Default)]
pub struct LocalExec {
    pods: Vec<Pod>,
}

/// The shape of `kubectl get pods -o json`.
#[derive(serde::Deserialize)]
struct PodList {
    items: Vec<Pod>,
}

impl LocalExec {
    /// Pods from the JSON document at `path`: a pod list (`{"items": [...]}`) or an array.
    pub fn from_file(path: &Path) -> crate::Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| crate::Error::Io {
            path: path.display().to_string(),
            source,
        })?;
        let pods = serde_json::from_str::<PodList>(&text)
            .map(|list| list.items)
            .or_else(|_| serde_json::from_str::<Vec<Pod>>(&text))
            .map_err(|e| {
                crate::Error::InvalidSpec(format!("{} is not a list of pods: {e}", path.display()))
            })?;
        Ok(LocalExec { pods })
    }
}

impl PodExec for LocalExec {
    async fn get_pod(&self, name: &str) -> Result<Option<Pod>, String> {
        Ok(self
            .pods
            .iter()
            .find(|pod| pod.metadata.name.as_deref() == Some(name))
            .cloned())
    }

    async fn exec(
        &self,
        _pod: &str,
        _container: Option<&str>,
        command: &str,
    ) -> Result<ExecSession, String> {
        let mut child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(command)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start sh: {e}"))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        super::backup::widen_pipe(&stdout);
        let stderr = child.stderr.take().expect("stderr is piped");
        let finished = async move {
            let status = child.wait().await.map_err(|e| e.to_string())?;
            if status.success() {
                Ok(())
            } else {
                Err(match status.code() {
                    Some(code) => format!("command terminated with non-zero exit code: {code}"),
                    None => "command was killed by a signal".into(),
                })
            }
        };
        Ok(ExecSession {
            stdout: Box::pin(stdout),
            stderr: Box::pin(stderr),
            finished: Box::pin(finished),
        })
    }
}

/// The first `limit` bytes of `reader` as text; the rest is read and dropped so the command
/// never blocks on a full stderr pipe.
pub async fn capture_bounded(mut reader: impl AsyncRead + Unpin, limit: usize) -> String {
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    let mut more = false;
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = limit.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
                more |= n > room;
            }
        }
    }
    let mut text = String::from_utf8_lossy(&kept).trim().to_string();
    if more {
        text.push_str(" [...]");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_exec_reports_non_zero_exit() {
        let mut session = LocalExec::default()
            .exec("pod", None, "echo out; echo err >&2; exit 7")
            .await
            .expect("sh starts");
        let mut out = String::new();
        session
            .stdout
            .read_to_string(&mut out)
            .await
            .expect("stdout reads");
        let err = capture_bounded(session.stderr, 100).await;
        assert_eq!(out, "out\n");
        assert_eq!(err, "err");
        let outcome = session.finished.await;
        assert_eq!(
            outcome,
            Err("command terminated with non-zero exit code: 7".into())
        );
    }

    #[test]
    fn exec_status_success_is_the_only_success() {
        let status = |s: &str, message: Option<&str>| Status {
            status: Some(s.into()),
            message: message.map(String::from),
            ..Status::default()
        };
        assert_eq!(exec_outcome(Some(status("Success", None)), Ok(())), Ok(()));
        let refused = Status {
            reason: Some("InternalError".into()),
            ..status("Failure", Some("container not found"))
        };
        assert_eq!(
            exec_outcome(Some(refused), Ok(())),
            Err("the exec failed: InternalError".into())
        );
    }

    #[test]
    fn exit_code_is_reported_without_the_command_line() {
        // As a kubelet answers an exec whose command exited 3.
        let status: Status = serde_json::from_value(serde_json::json!({
            "status": "Failure",
            "reason": "NonZeroExitCode",
            "message": "command terminated with non-zero exit code: error executing command \
                        [sh -c mysqldump --password=hunter2 shop], exit code 3",
            "details": {"causes": [{"reason": "ExitCode", "message": "3"}]}
        }))
        .expect("status");
        let outcome = exec_outcome(Some(status), Ok(()));
        assert_eq!(
            outcome,
            Err("command terminated with non-zero exit code: 3".into())
        );
    }

    #[test]
    fn exec_stream_without_status_is_a_failure() {
        let outcome = exec_outcome(None, Err("websocket closed".into()));
        assert_eq!(
            outcome,
            Err("the exec stream broke: websocket closed".into())
        );
        assert!(exec_outcome(None, Ok(())).is_err());
    }

    #[tokio::test]
    async fn captured_stderr_is_bounded() {
        let text = capture_bounded("a".repeat(10_000).as_bytes(), 16).await;
        assert_eq!(text, format!("{} [...]", "a".repeat(16)));
    }
}
