//! The agent that runs inside a Job and drives restic:
//! `baas agent backup|check|prune|restore|verify`.
//!
//! Every operation ends in a [`RunReport`] written to the termination message file, whatever
//! happened; the operator reads it into the run's status. The process exits 0 when the report
//! says Succeeded or PartiallySucceeded and 1 when it says Failed, so a Job is not retried for a
//! partial backup that retrying cannot fix (the state is in the report, not in the exit code).

pub mod backup;
pub mod check;
pub mod exec;
pub mod locks;
pub mod metrics;
pub mod prune;
pub mod restic;
pub mod restore;
pub mod s3;
pub mod verify;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::cli::{AgentArgs, AgentOp, ExecMode};
use crate::crd::RunState;
use crate::job::env::{ENV_ACCESS_KEY_ID, ENV_PASSWORD, ENV_SECRET_ACCESS_KEY};
use crate::redact::redact;
use crate::report::RunReport;
use crate::{Error, Result};

use self::restic::Restic;

/// Exit code of a run that Succeeded or PartiallySucceeded.
pub const EXIT_OK: i32 = 0;
/// Exit code of a run that Failed.
pub const EXIT_FAILED: i32 = 1;

/// What every operation needs: restic, the namespace, an HTTP client.
#[derive(Clone, Debug)]
pub struct AgentEnv {
    /// restic on the run's repository.
    pub restic: Restic,
    /// Namespace of the run: restic's host name.
    pub namespace: String,
    /// Name of the run object, for tags and object names.
    pub run_name: Option<String>,
    /// Directory with one subdirectory per PVC.
    pub data_dir: PathBuf,
    /// HTTP client for S3 and the Pushgateway.
    pub http: reqwest::Client,
    /// The pod's host name when the operator made it the Job's alone (see [`locks`]).
    pub hostname: Option<String>,
    /// Where the agent asks whether the run behind a lock has finished.
    pub owners: locks::LockOwners,
}

/// How long a backup Job that must not create the repository waits for the run's first Job
/// to create it: longer than that Job normally needs to be scheduled and started.
const REPOSITORY_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

/// `baas agent <op>`: runs the operation, writes the report and returns the exit code.
pub async fn run(args: AgentArgs) -> Result<i32> {
    let started = Instant::now();
    let kind = op_kind(&args.op);
    let http = http_client()?;
    let mut report = match execute(&args, http.clone()).await {
        Ok(report) => report,
        Err(error) => RunReport {
            state: Some(RunState::Failed),
            message: error.to_string(),
            ..RunReport::default()
        },
    };
    // Here the run's words leave the process (log, termination message, and from it the
    // run's status and Events): no URL query or signing parameter goes with them.
    report = report.redacted();
    report.duration_seconds = started.elapsed().as_secs_f64();
    let state = report.state.unwrap_or(RunState::Failed);
    tracing::info!(
        kind,
        state = ?state,
        snapshots = ?report.snapshots.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        files = report.summary.total_files,
        bytes = report.summary.total_bytes,
        bytes_added = report.summary.bytes_added,
        errors = report.errors.len(),
        duration_seconds = report.duration_seconds,
        peak_rss_kib = peak_rss_kib(),
        "{}",
        report.message
    );
    for error in &report.errors {
        tracing::warn!(kind, "{error}");
    }
    if let Err(e) = std::fs::write(&args.report_file, report.to_termination_message()) {
        tracing::warn!(file = %args.report_file.display(), "cannot write the run report: {e}");
    }
    if let (Some(url), Some(namespace)) = (&args.prom_url, &args.namespace) {
        let labels = metrics::Labels {
            kind,
            namespace,
            schedule: args.schedule.as_deref().unwrap_or(""),
        };
        if let Err(e) = metrics::push(&http, url, &labels, &report).await {
            tracing::warn!(
                url = %redact(url),
                "pushing metrics failed (the run's result stands): {}",
                redact(&e.to_string())
            );
        }
    }
    Ok(match state {
        RunState::Succeeded | RunState::PartiallySucceeded => EXIT_OK,
        _ => EXIT_FAILED,
    })
}

async fn execute(args: &AgentArgs, http: reqwest::Client) -> Result<RunReport> {
    let repository = args.repository.clone().ok_or_else(|| {
        Error::InvalidSpec("no repository: RESTIC_REPOSITORY (--repository) is not set".into())
    })?;
    let namespace = args.namespace.clone().ok_or_else(|| {
        Error::InvalidSpec("no namespace: BAAS_NAMESPACE (--namespace) is not set".into())
    })?;
    check_environment(&repository)?;
    probe_endpoint(&http, &repository).await?;
    let ctx = AgentEnv {
        restic: Restic::new(&args.restic, &repository)
            .with_files(s3::RepositoryFiles::for_repository(&http, &repository)),
        namespace,
        run_name: args.run_name.clone(),
        data_dir: args.data_dir.clone(),
        http,
        hostname: own_hostname(args.hostname.as_deref()),
        owners: match args.exec_mode {
            ExecMode::Kube => locks::LockOwners::Cluster,
            ExecMode::Local => locks::LockOwners::Unknown,
        },
    };
    match &args.op {
        AgentOp::Backup {
            backup_pods,
            local_pods,
            wait_for_repository,
        } => {
            let commands = backup::pods::parse_pods(backup_pods.as_deref())?;
            if *wait_for_repository {
                ctx.restic.wait_until_created(REPOSITORY_WAIT).await?;
            }
            match args.exec_mode {
                ExecMode::Local => {
                    let exec = match local_pods {
                        Some(path) => exec::LocalExec::from_file(path)?,
                        None => exec::LocalExec::default(),
                    };
                    backup::run(&ctx, &exec, &commands).await
                }
                ExecMode::Kube if commands.is_empty() => {
                    backup::run(&ctx, &exec::LocalExec::default(), &commands).await
                }
                ExecMode::Kube => {
                    let client = kube::Client::try_default().await?;
                    let exec = exec::KubeExec::new(client, &ctx.namespace);
                    backup::run(&ctx, &exec, &commands).await
                }
            }
        }
        AgentOp::Check => check::run(&ctx).await,
        AgentOp::Prune { retention } => prune::run(&ctx, retention).await,
        AgentOp::Verify { verify_dir } => verify::run(&ctx, verify_dir).await,
        AgentOp::Restore {
            snapshot,
            source_namespace,
            path,
            claim,
            target_dir,
            s3_endpoint,
            s3_bucket,
            s3_access_key_id,
            s3_secret_access_key,
        } => {
            let target = match (target_dir, s3_endpoint, s3_bucket) {
                (Some(dir), None, None) => restore::Target::Dir {
                    dir: dir.clone(),
                    claim: claim.clone(),
                },
                (None, Some(endpoint), Some(bucket)) => restore::Target::S3(s3::Destination {
                    endpoint: endpoint.clone(),
                    bucket: bucket.clone(),
                    access_key_id: s3_access_key_id.clone().unwrap_or_default(),
                    secret_access_key: s3_secret_access_key.clone().unwrap_or_default(),
                }),
                _ => {
                    return Err(Error::InvalidSpec(
                        "a restore needs exactly one target: BAAS_RESTORE_DIR, or \
                         BAAS_RESTORE_S3_ENDPOINT with BAAS_RESTORE_S3_BUCKET"
                            .into(),
                    ));
                }
            };
            let wanted = restore::Wanted::new(path.as_deref(), claim.as_deref());
            // A disaster-recovery restore reads another namespace's snapshots; an empty
            // value (an unset field rendered into the Job) means the run's own.
            let source = source_namespace
                .as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .unwrap_or(&ctx.namespace);
            restore::run(&ctx, source, snapshot.as_deref(), &wanted, &target).await
        }
    }
}

/// The host name the operator gave the pod, when the agent really runs under it (restic
/// records the kernel's host name, which Go reads from the same file).
fn own_hostname(declared: Option<&str>) -> Option<String> {
    let declared = declared.map(str::trim).filter(|h| !h.is_empty())?;
    let actual = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    if actual.trim() == declared {
        Some(declared.to_string())
    } else {
        tracing::warn!(
            declared,
            actual = actual.trim(),
            "BAAS_HOSTNAME is not the host name the agent runs under; ignored"
        );
        None
    }
}

fn op_kind(op: &AgentOp) -> &'static str {
    match op {
        AgentOp::Backup { .. } => "backup",
        AgentOp::Check => "check",
        AgentOp::Prune { .. } => "prune",
        AgentOp::Restore { .. } => "restore",
        // Not a `crd::Operation` yet: the name of the metrics' `kind` label and the logs.
        AgentOp::Verify { .. } => "verify",
    }
}

/// One HTTP client for S3 and the Pushgateway, with the same TLS stack as the rest of baas.
fn http_client() -> Result<reqwest::Client> {
    // Another part of the process may have installed the provider already; either is ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| Error::Http(format!("cannot build the HTTP client: {}", chain(&e))))
}

/// Credentials restic needs come from Secrets through env vars; a missing one is named here
/// instead of surfacing later as an obscure restic error.
fn check_environment(repository: &str) -> Result<()> {
    let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    if ![
        ENV_PASSWORD,
        "RESTIC_PASSWORD_FILE",
        "RESTIC_PASSWORD_COMMAND",
    ]
    .iter()
    .any(|name| set(name))
    {
        return Err(Error::InvalidSpec(
            "no repository password: RESTIC_PASSWORD is not set (from repoPasswordSecretRef)"
                .into(),
        ));
    }
    if repository.starts_with("s3:") {
        for name in [ENV_ACCESS_KEY_ID, ENV_SECRET_ACCESS_KEY] {
            if !set(name) {
                return Err(Error::InvalidSpec(format!(
                    "no S3 credentials: {name} is not set (from the backend's s3 secret refs)"
                )));
            }
        }
    }
    Ok(())
}

/// The `http(s)://host:port` of an `s3:` repository, as restic reads it.
pub fn s3_endpoint(repository: &str) -> Option<String> {
    let rest = repository.strip_prefix("s3:")?;
    let (scheme, rest) = match rest.split_once("://") {
        Some((scheme, rest)) => (scheme, rest),
        None => ("https", rest),
    };
    let host = rest.split('/').next().filter(|h| !h.is_empty())?;
    Some(format!("{scheme}://{host}"))
}

/// restic retries an unreachable S3 server for many minutes; one quick request tells the
/// user at once.
async fn probe_endpoint(http: &reqwest::Client, repository: &str) -> Result<()> {
    let Some(endpoint) = s3_endpoint(repository) else {
        return Ok(());
    };
    match http
        .get(&endpoint)
        .timeout(Duration::from_secs(20))
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(e) => Err(Error::Http(format!(
            "endpoint {endpoint} is unreachable: {}",
            chain(&e)
        ))),
    }
}

/// An error with its sources, which carry the useful part (`Connection refused`).
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The agent's peak resident memory in KiB, from the kernel's accounting.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_endpoint_of_http_repository_keeps_scheme_and_port() {
        assert_eq!(
            s3_endpoint("s3:http://127.0.0.1:9000/bucket").as_deref(),
            Some("http://127.0.0.1:9000")
        );
    }

    #[test]
    fn s3_endpoint_without_scheme_is_https() {
        assert_eq!(
            s3_endpoint("s3:s3.amazonaws.com/bucket").as_deref(),
            Some("https://s3.amazonaws.com")
        );
        assert_eq!(s3_endpoint("/srv/restic"), None);
    }

    #[test]
    fn error_chain_includes_each_cause_once() {
        let inner = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let outer = std::io::Error::other(inner);
        assert_eq!(chain(&outer), "refused");
    }
}
