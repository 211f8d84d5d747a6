//! The command line. Every flag can also be set through the environment variable named in
//! its help, so the same binary is configured the same way in a Deployment, a Job or a shell.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use k8s_openapi::api::core::v1::{Affinity, ResourceRequirements, Toleration};

use crate::job::placement::{AgentPlacement, parse_json};

use crate::job::{DATA_DIR, env};

/// baas — Backup as a Service for Kubernetes, with restic and S3.
#[derive(Parser, Debug)]
#[command(name = "baas", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Log format: human-readable text or one JSON object per line.
    #[arg(long, env = "BAAS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// Log filter in `tracing` syntax, for example `info` or `baas=debug,kube=info`.
    #[arg(long, env = "BAAS_LOG", default_value = "info", global = true)]
    pub log: String,
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output formats.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The subcommands of `baas`.
// Parsed once at start-up: boxing the larger variants would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the admission webhook and the reconciler (the normal deployment).
    Operator(OperatorArgs),
    /// Run the admission webhook alone.
    Webhook(WebhookArgs),
    /// Check manifests offline with the webhook's rules, defaults first, as the API server does.
    Validate(ValidateArgs),
    /// Run one operation inside a Job (started by the operator, not by hand).
    Agent(AgentArgs),
    /// Print the CustomResourceDefinitions as YAML (what `manifests/crds.yaml` holds).
    Crds(CrdsArgs),
    /// The kubectl plugin under another name: `baas kubectl status` is `kubectl baas status`
    /// (see `baas kubectl --help`).
    #[command(disable_help_flag = true)]
    Kubectl(KubectlArgs),
}

/// `baas kubectl`: everything after it goes to the plugin, `--help` included.
#[derive(Args, Debug, Clone)]
pub struct KubectlArgs {
    /// The plugin's verb and options.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<std::ffi::OsString>,
}

/// `baas crds`.
#[derive(Args, Debug, Clone)]
pub struct CrdsArgs {
    /// Also print the validating and mutating webhook configurations (for a cluster with
    /// cert-manager), so one `kubectl apply -f -` registers the whole API.
    #[arg(long, env = "BAAS_CRDS_WITH_WEBHOOKS")]
    pub with_webhooks: bool,
}

/// Where and how the HTTPS server of the webhook listens.
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address the HTTPS server listens on (webhook, health and metrics).
    #[arg(long, env = "BAAS_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// PEM file with the serving certificate chain; re-read when it changes.
    #[arg(long, env = "BAAS_TLS_CERT")]
    pub tls_cert: PathBuf,
    /// PEM file with the serving private key; re-read when it changes.
    #[arg(long, env = "BAAS_TLS_KEY")]
    pub tls_key: PathBuf,
}

/// `baas webhook`.
#[derive(Args, Debug, Clone)]
pub struct WebhookArgs {
    /// Listener and TLS material.
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Run without an API server: Secret and PVC lookups are skipped, and `/metrics` is not
    /// served (there is no API server to check bearer tokens with) unless
    /// `--unauthenticated-metrics` is given.
    #[arg(long, env = "BAAS_OFFLINE")]
    pub offline: bool,
    /// With `--offline`: serve `/metrics` to anyone, without a bearer token (local benchmarks
    /// and tests). Without `--offline`, a scrape needs a bearer token whose user may get
    /// `/metrics`.
    #[arg(long, env = "BAAS_UNAUTHENTICATED_METRICS", requires = "offline")]
    pub unauthenticated_metrics: bool,
}

/// `baas operator`.
#[derive(Args, Debug, Clone)]
pub struct OperatorArgs {
    /// Listener and TLS material of the webhook.
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Container image the Jobs run `baas agent` from (the operator's own image).
    #[arg(
        long,
        env = "BAAS_AGENT_IMAGE",
        default_value = "ghcr.io/appuio/baas:latest"
    )]
    pub agent_image: String,
    /// Take part in leader election so that only one replica reconciles at a time.
    #[arg(long, env = "BAAS_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,
    /// Namespace of the leader-election Lease.
    #[arg(long, env = "BAAS_LEASE_NAMESPACE", default_value = "baas-system")]
    pub lease_namespace: String,
    /// Identity of this replica in leader election (the pod name in a Deployment).
    #[arg(long, env = "BAAS_POD_NAME")]
    pub pod_name: Option<String>,
    /// Seconds another replica waits, after it last saw the leader renew, before it takes
    /// over.
    #[arg(long, env = "BAAS_LEASE_DURATION", default_value_t = 15)]
    pub lease_duration: u64,
    /// Seconds the leader keeps reconciling without a successful renewal; shorter than
    /// `--lease-duration`, so that a stalled leader stops before another takes over.
    #[arg(long, env = "BAAS_LEASE_RENEW_DEADLINE", default_value_t = 10)]
    pub lease_renew_deadline: u64,
    /// Seconds between two attempts to take or renew the lease.
    #[arg(long, env = "BAAS_LEASE_RETRY_PERIOD", default_value_t = 2)]
    pub lease_retry_period: u64,
    /// Address of a plain-HTTP endpoint with the reconciler's `/metrics` and `/healthz`, served
    /// without authentication; off unless set. Meant for a loopback address, as local
    /// benchmarks use it: in a cluster, Prometheus scrapes the HTTPS port with a bearer token.
    #[arg(long, env = "BAAS_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Placement and resources of the agent Jobs.
    #[command(flatten)]
    pub agent_placement: AgentPlacementArgs,
}

/// `baas validate`.
#[derive(Args, Debug, Clone)]
pub struct ValidateArgs {
    /// Manifest file, directory (searched for *.yaml, *.yml, *.json) or `-` for stdin; may
    /// be given several times.
    #[arg(
        short = 'f',
        long = "filename",
        env = "BAAS_VALIDATE_FILES",
        required = true,
        value_delimiter = ','
    )]
    pub files: Vec<PathBuf>,
}

/// `baas agent`: settings the operator passes to the Job through its environment.
#[derive(Args, Debug, Clone, PartialEq)]
pub struct AgentArgs {
    /// The operation to run.
    #[command(subcommand)]
    pub op: AgentOp,
    /// restic repository, `s3:<endpoint>/<bucket>`.
    #[arg(long, env = env::ENV_REPOSITORY, global = true)]
    pub repository: Option<String>,
    /// Namespace of the run; used as restic's host name.
    #[arg(long, env = env::ENV_NAMESPACE, global = true)]
    pub namespace: Option<String>,
    /// Name of the run object (Backup, Check, Prune or Restore).
    #[arg(long, env = env::ENV_RUN_NAME, global = true)]
    pub run_name: Option<String>,
    /// Prometheus Pushgateway that receives the run's metrics.
    #[arg(long, env = env::ENV_PROM_URL, global = true)]
    pub prom_url: Option<String>,
    /// Directory that holds one subdirectory per mounted PVC.
    #[arg(long, env = env::ENV_DATA_DIR, default_value = DATA_DIR, global = true)]
    pub data_dir: PathBuf,
    /// The restic binary.
    #[arg(long, env = "BAAS_RESTIC", default_value = "restic", global = true)]
    pub restic: PathBuf,
    /// Name of the Schedule that started the run, if any; a label of the pushed metrics.
    #[arg(long, env = env::ENV_SCHEDULE, global = true)]
    pub schedule: Option<String>,
    /// How backup commands reach their pods: through the Kubernetes exec API, or (for tests
    /// and benchmarks without a cluster) as `sh -c` in the agent's own container.
    #[arg(long, env = "BAAS_EXEC_MODE", value_enum, default_value_t = ExecMode::Kube, global = true)]
    pub exec_mode: ExecMode,
    /// The pod's host name as the operator made it: its Job's alone, so a lock restic took
    /// under it and still finds at the agent's start was left by an earlier pod of the same
    /// Job, which is gone. Trusted only when it is the host name the agent runs under.
    #[arg(long, env = env::ENV_HOSTNAME, global = true)]
    pub hostname: Option<String>,
    /// Where the run report goes (the container's termination message).
    #[arg(
        long,
        env = "BAAS_REPORT_FILE",
        default_value = "/dev/termination-log",
        global = true
    )]
    pub report_file: PathBuf,
}

/// Where `baas agent backup` runs backup commands.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecMode {
    /// Inside the annotated pod, through the Kubernetes exec API.
    Kube,
    /// Locally with `sh -c`, ignoring pod and container (tests and benchmarks).
    Local,
}

/// The operations of `baas agent`.
#[derive(Subcommand, Debug, Clone, PartialEq)]
pub enum AgentOp {
    /// Back up every directory under the data directory and every backup command.
    Backup {
        /// Pods whose backup command to run, as JSON: `[{"pod": "...", "container": "..."}]`.
        /// Each command is read from its pod's `appuio.ch/backupcommand` annotation at run
        /// time, never passed here (it may hold a password).
        #[arg(long, env = env::ENV_BACKUP_PODS)]
        backup_pods: Option<String>,
        /// With `--exec-mode local`: a JSON pod list (`kubectl get pods -o json`) that stands
        /// in for the namespace's pods (tests and benchmarks without a cluster).
        #[arg(long, env = "BAAS_LOCAL_PODS")]
        local_pods: Option<PathBuf>,
        /// Never create the repository; wait for the run's first Job to do so (set on the
        /// other Jobs of a run, since concurrent `restic init`s break a new repository).
        #[arg(long, env = env::ENV_WAIT_FOR_REPOSITORY)]
        wait_for_repository: bool,
    },
    /// Verify the repository with `restic check`.
    Check,
    /// Remove snapshots the retention does not keep, then prune unused data.
    Prune {
        /// The retention as JSON, in the CRD's field names (`{"keepLast": 5}`).
        #[arg(long, env = env::ENV_RETENTION)]
        retention: String,
    },
    /// Restore the newest snapshot of each path into a scratch directory, with every file
    /// checked against the repository and the backup's recorded summary.
    Verify {
        /// The scratch directory: volume snapshots land at `<dir>/data/<pvc>/`, backup
        /// command streams at `<dir>/<namespace>-<pod>-<container>`, and stay there for an
        /// application check to read.
        #[arg(long, env = env::ENV_VERIFY_DIR, default_value = "/verify")]
        verify_dir: PathBuf,
    },
    /// Restore a snapshot into a directory or to S3 as a `.tar.gz` object.
    Restore {
        /// Snapshot ID or unique prefix; default the newest of the namespace holding `path`.
        #[arg(long, env = env::ENV_SNAPSHOT)]
        snapshot: Option<String>,
        /// The namespace whose snapshots to read (restic's host), for a restore into
        /// another namespace after a disaster; default the run's own.
        #[arg(long, env = env::ENV_SOURCE_NAMESPACE)]
        source_namespace: Option<String>,
        /// Part of the snapshot to restore.
        #[arg(long, env = env::ENV_RESTORE_PATH)]
        path: Option<String>,
        /// The target PVC's name (PVC restores): without a path, `/data/<claim>` is restored
        /// when the snapshot has it, else the whole snapshot.
        #[arg(long, env = env::ENV_RESTORE_CLAIM)]
        claim: Option<String>,
        /// Directory the target PVC is mounted at (PVC restores).
        #[arg(long, env = env::ENV_RESTORE_DIR)]
        target_dir: Option<PathBuf>,
        /// S3 endpoint that receives the archive (S3 restores).
        #[arg(long, env = env::ENV_RESTORE_S3_ENDPOINT)]
        s3_endpoint: Option<String>,
        /// Bucket that receives the archive (S3 restores).
        #[arg(long, env = env::ENV_RESTORE_S3_BUCKET)]
        s3_bucket: Option<String>,
        /// Access key ID for the archive's bucket.
        #[arg(long, env = env::ENV_RESTORE_S3_ACCESS_KEY_ID, hide_env_values = true)]
        s3_access_key_id: Option<String>,
        /// Secret access key for the archive's bucket.
        #[arg(
            long,
            env = env::ENV_RESTORE_S3_SECRET_ACCESS_KEY,
            hide_env_values = true
        )]
        s3_secret_access_key: Option<String>,
    },
}

/// A list of tolerations taken as one JSON value: a `Vec` field would make clap expect the
/// flag once per item.
type Tolerations = Vec<Toleration>;

/// Where the agent Jobs run and what they may use, each as JSON in Kubernetes' own field
/// names (the chart's `agent.*` values).
#[derive(Args, Debug, Clone, Default)]
pub struct AgentPlacementArgs {
    /// Node labels of agent Jobs that may run on any node, e.g. `{"pool":"backup"}`. Jobs
    /// pinned to the node their claims are attached to ignore it.
    #[arg(long, env = "BAAS_AGENT_NODE_SELECTOR", value_parser = parse_json::<BTreeMap<String, String>>)]
    pub agent_node_selector: Option<BTreeMap<String, String>>,
    /// Tolerations of every agent Job, e.g. `[{"key":"backup","operator":"Exists"}]`.
    #[arg(long, env = "BAAS_AGENT_TOLERATIONS", value_parser = parse_json::<Tolerations>)]
    pub agent_tolerations: Option<Tolerations>,
    /// Affinity of agent Jobs that may run on any node (a pod's `affinity`). Jobs pinned to
    /// the node their claims are attached to ignore it.
    #[arg(long, env = "BAAS_AGENT_AFFINITY", value_parser = parse_json::<Affinity>)]
    pub agent_affinity: Option<Affinity>,
    /// Requests and limits of the agent container, e.g. `{"limits":{"memory":"1Gi"}}`.
    #[arg(long, env = "BAAS_AGENT_RESOURCES", value_parser = parse_json::<ResourceRequirements>)]
    pub agent_resources: Option<ResourceRequirements>,
}

impl AgentPlacementArgs {
    /// The settings the Job builders apply.
    pub fn placement(&self) -> AgentPlacement {
        AgentPlacement {
            node_selector: self.agent_node_selector.clone().unwrap_or_default(),
            tolerations: self.agent_tolerations.clone().unwrap_or_default(),
            affinity: self.agent_affinity.clone(),
            resources: self.agent_resources.clone(),
        }
    }
}
