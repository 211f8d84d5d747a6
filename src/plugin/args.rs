//! The command line of `kubectl baas`, in kubectl's conventions: `-n/--namespace`,
//! `--context`, `--kubeconfig`, `-o json|yaml|wide` and `--no-headers` are accepted before
//! and after the verb, as kubectl accepts its own.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Everyday backups from the command line: status, one-off runs, snapshots and restores.
///
/// `kubectl baas` talks to the cluster with your kubeconfig and your own rights: it creates
/// Backup, Check, Prune, Restore and Verify objects, and the operator in the cluster runs them.
#[derive(Parser, Debug)]
#[command(
    name = "kubectl-baas",
    bin_name = "kubectl baas",
    version,
    propagate_version = true,
    disable_help_subcommand = true
)]
pub struct PluginCli {
    /// Options of every verb.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub verb: Verb,
}

/// Options every verb takes.
#[derive(Args, Debug, Clone, Default)]
pub struct GlobalArgs {
    /// Namespace to work in (default: the namespace of the kubeconfig context, else
    /// `default`).
    #[arg(short = 'n', long, env = "BAAS_PLUGIN_NAMESPACE", global = true)]
    pub namespace: Option<String>,
    /// The kubeconfig context to use (default: the current context).
    #[arg(long, env = "BAAS_PLUGIN_CONTEXT", global = true)]
    pub context: Option<String>,
    /// Path of the kubeconfig file (default: `$KUBECONFIG`, else `~/.kube/config`, else the
    /// in-cluster service account).
    #[arg(long, env = "BAAS_PLUGIN_KUBECONFIG", global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// Output format: `json` or `yaml` (machine-readable), `wide` (more columns); default a
    /// table.
    #[arg(
        short = 'o',
        long,
        env = "BAAS_PLUGIN_OUTPUT",
        value_enum,
        global = true
    )]
    pub output: Option<OutputFormat>,
    /// Print tables without their header line.
    #[arg(long, env = "BAAS_PLUGIN_NO_HEADERS", global = true)]
    pub no_headers: bool,
}

/// `-o` values.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    /// One JSON document.
    Json,
    /// One YAML document.
    Yaml,
    /// The table with more columns.
    Wide,
}

/// The verbs.
#[derive(Subcommand, Debug)]
pub enum Verb {
    /// One line per Schedule: the last backup (state, age, snapshot), the next one, failed
    /// runs kept in the history, and the Ready condition with its reason.
    Status(StatusArgs),
    /// Start a backup now from a Schedule's spec (same repository and settings as its ticks)
    /// and follow it to the end. Exits 1 when the backup did not succeed completely.
    Backup(RunArgs),
    /// Start a `restic check` of a Schedule's repository now and follow it to the end.
    Check(RunArgs),
    /// Start a prune with a Schedule's retention now and follow it to the end.
    Prune(RunArgs),
    /// Verify now that the namespace's newest snapshots restore, as a Schedule's `verify`
    /// ticks do (with its application check), and follow it to the end.
    Verify(RunArgs),
    /// List the namespace's snapshots in its Schedule's repository: time, host, paths, size.
    ///
    /// The repository password and S3 keys are read from the Secrets the Schedule references,
    /// with your own kubeconfig: this works only where you may get those Secrets. They reach
    /// restic through its environment only, never its command line or the output. restic
    /// runs on this machine: the `restic` on PATH, or `--restic PATH`; without it the verb
    /// fails with exit code 1 and says so.
    Snapshots(SnapshotsArgs),
    /// Restore a PVC's data from a snapshot: into the PVC itself, into another PVC
    /// (`--to-pvc`, created like the source when it does not exist) or to S3 as a `.tar.gz`
    /// (`--to-s3`), and wait for the Restore to end.
    Restore(RestoreArgs),
    /// Print a shell completion script for `kubectl-baas` (bash or zsh). For `kubectl baas`
    /// itself, kubectl 1.26 and later run `kubectl_complete-baas` from PATH: link this binary
    /// under that name too.
    Completion(CompletionArgs),
}

/// `kubectl baas status`.
#[derive(Args, Debug, Clone)]
pub struct StatusArgs {
    /// Schedules of every namespace (needs the right to list them cluster-wide).
    #[arg(short = 'A', long, env = "BAAS_PLUGIN_ALL_NAMESPACES")]
    pub all_namespaces: bool,
}

/// How long a verb waits for its run.
#[derive(Args, Debug, Clone)]
pub struct WaitArgs {
    /// Print the created object's name and return at once instead of following the run.
    #[arg(long, env = "BAAS_PLUGIN_NO_WAIT")]
    pub no_wait: bool,
    /// Give up following the run after this long (`90s`, `30m`, `2h`); the run goes on.
    #[arg(long, env = "BAAS_PLUGIN_TIMEOUT", default_value = "1h", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// `kubectl baas backup|check|prune SCHEDULE`.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// The Schedule whose spec the run takes.
    pub schedule: String,
    /// Waiting.
    #[command(flatten)]
    pub wait: WaitArgs,
}

/// `kubectl baas snapshots`.
#[derive(Args, Debug, Clone)]
pub struct SnapshotsArgs {
    /// Only snapshots that hold this PVC (`/data/<pvc>`).
    #[arg(long, env = "BAAS_PLUGIN_PVC")]
    pub pvc: Option<String>,
    /// The Schedule whose repository to read, when the namespace has several.
    #[arg(long, env = "BAAS_PLUGIN_SCHEDULE")]
    pub schedule: Option<String>,
    /// The restic binary (0.17 or later).
    #[arg(long, env = "BAAS_RESTIC", default_value = "restic")]
    pub restic: PathBuf,
}

/// `kubectl baas restore`.
#[derive(Args, Debug, Clone)]
pub struct RestoreArgs {
    /// The PVC whose backed-up data to restore (`/data/<pvc>` of the snapshot).
    #[arg(long, env = "BAAS_PLUGIN_PVC")]
    pub pvc: String,
    /// Snapshot ID or unique prefix (default: the namespace's newest snapshot of the PVC).
    #[arg(long, env = "BAAS_PLUGIN_SNAPSHOT")]
    pub snapshot: Option<String>,
    /// Restore into this PVC instead of the source one; created with the source's size,
    /// access modes and storage class when it does not exist.
    #[arg(long, env = "BAAS_PLUGIN_TO_PVC", conflicts_with = "to_s3")]
    pub to_pvc: Option<String>,
    /// Upload a `.tar.gz` into this bucket of the repository's S3 server (same keys) instead.
    #[arg(long, env = "BAAS_PLUGIN_TO_S3")]
    pub to_s3: Option<String>,
    /// The Schedule whose repository to restore from, when the namespace has several.
    #[arg(long, env = "BAAS_PLUGIN_SCHEDULE")]
    pub schedule: Option<String>,
    /// Waiting.
    #[command(flatten)]
    pub wait: WaitArgs,
}

/// `kubectl baas completion`.
#[derive(Args, Debug, Clone)]
pub struct CompletionArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: CompletionShell,
}

/// Shells with a completion script.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompletionShell {
    /// GNU bash.
    Bash,
    /// Z shell.
    Zsh,
}

/// `90s`, `30m`, `2h`, `1d` or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    crate::duration::parse(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<PluginCli, clap::Error> {
        PluginCli::try_parse_from(std::iter::once("kubectl-baas").chain(args.iter().copied()))
    }

    #[test]
    fn namespace_and_output_are_accepted_before_and_after_the_verb() {
        for args in [
            &["-n", "shop", "-o", "json", "status"][..],
            &["status", "-n", "shop", "-o", "json"][..],
        ] {
            let cli = parse(args).expect("parses");
            assert_eq!(cli.global.namespace.as_deref(), Some("shop"));
            assert_eq!(cli.global.output, Some(OutputFormat::Json));
        }
    }

    #[test]
    fn backup_takes_a_schedule_and_no_wait() {
        let cli = parse(&["backup", "nightly", "--no-wait"]).expect("parses");
        let Verb::Backup(run) = cli.verb else {
            panic!("not a backup: {:?}", cli.verb)
        };
        assert_eq!(run.schedule, "nightly");
        assert!(run.wait.no_wait);
        assert_eq!(run.wait.timeout, Duration::from_secs(3600));
    }

    #[test]
    fn backup_without_a_schedule_is_a_usage_error() {
        let error = parse(&["backup"]).expect_err("a schedule is required");
        assert_eq!(error.exit_code(), 2);
    }

    #[test]
    fn restore_to_a_pvc_and_to_s3_at_once_is_a_usage_error() {
        let error = parse(&["restore", "--pvc", "a", "--to-pvc", "b", "--to-s3", "c"])
            .expect_err("two targets");
        assert_eq!(error.kind(), clap::error::ErrorKind::ArgumentConflict);
        assert_eq!(error.exit_code(), 2);
    }

    #[test]
    fn unknown_output_format_is_a_usage_error() {
        assert!(parse(&["status", "-o", "xml"]).is_err());
    }

    #[test]
    fn durations_take_seconds_minutes_hours_and_days() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn every_verb_has_help() {
        use clap::CommandFactory;
        let command = PluginCli::command();
        for verb in [
            "status",
            "backup",
            "check",
            "prune",
            "verify",
            "snapshots",
            "restore",
        ] {
            let sub = command
                .find_subcommand(verb)
                .unwrap_or_else(|| panic!("no verb {verb}"));
            assert!(sub.get_about().is_some(), "{verb} has no help");
        }
        command.debug_assert();
    }
}
