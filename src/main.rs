#![forbid(unsafe_code)]

use anyhow::Context;
use clap::Parser;
use tracing_subscriber::EnvFilter;

use baas::cli::{Cli, Command, LogFormat};
use baas::plugin::Invocation;

/// jemalloc instead of the C library's allocator: the operator's caches churn through watch
/// events of thousands of objects, and glibc kept more of that churn resident (64 MB against
/// 59 MB at 2,000 Schedules in `scripts/bench-operator`). Its settings are compiled in from
/// `.cargo/config.toml` (one arena, freed pages returned after 1 s).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn init_tracing(cli: &Cli) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(&cli.log).with_context(|| format!("--log {:?}", cli.log))?;
    // Every line is redacted: an HTTP client's error may quote a presigned URL, whose query
    // holds an access key ID and a signature.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| baas::redact::RedactingWriter(std::io::stderr()));
    match cli.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Started as `kubectl-baas` (or its completion helper), the binary is the kubectl plugin.
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_default();
    match baas::plugin::invoked_as(&argv0) {
        Some(Invocation::Plugin) => {
            std::process::exit(baas::plugin::run(std::iter::once(argv0).chain(args)).await)
        }
        Some(Invocation::Completion) => {
            std::process::exit(baas::plugin::complete(&args.collect::<Vec<_>>()).await)
        }
        None => {}
    }
    let cli = Cli::parse();
    init_tracing(&cli)?;
    match cli.command {
        Command::Operator(args) => baas::controller::run_operator(args).await?,
        Command::Webhook(args) => baas::webhook::run_webhook(args).await?,
        // Exit codes a CI pipeline can tell apart: 1 means "would be denied", 2 means the
        // manifests could not even be read.
        Command::Validate(args) => match baas::webhook::run_validate(args).await {
            Ok(true) => {}
            Ok(false) => std::process::exit(1),
            Err(error) => {
                eprintln!("error: {error}");
                std::process::exit(2);
            }
        },
        Command::Agent(args) => {
            let code = baas::agent::run(args).await?;
            std::process::exit(code);
        }
        Command::Kubectl(args) => {
            let argv = std::iter::once(baas::plugin::PLUGIN_NAME.into()).chain(args.args);
            std::process::exit(baas::plugin::run(argv).await);
        }
        Command::Crds(args) => {
            print!("{}", baas::crd::crds_yaml().context("rendering the CRDs")?);
            if args.with_webhooks {
                for configuration in [
                    baas::webhook::VALIDATING_CONFIGURATION_YAML,
                    baas::webhook::MUTATING_CONFIGURATION_YAML,
                ] {
                    print!("---\n{configuration}");
                }
            }
        }
    }
    Ok(())
}
