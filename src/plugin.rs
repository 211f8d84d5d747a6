//! `kubectl baas`: the everyday actions of baas from the command line, without hand-written
//! YAML. The same binary is the plugin when it is started as `kubectl-baas` (kubectl runs
//! `kubectl-baas` from PATH for `kubectl baas`), or as `baas kubectl`. It is a client only:
//! it reads and creates objects with the user's kubeconfig and rights, and the operator in
//! the cluster does the work.

pub mod args;
pub mod backup;
pub mod completion;
pub mod connect;
pub mod error;
pub mod follow;
pub mod output;
pub mod repository;
pub mod restore;
pub mod snapshots;
pub mod status;

use std::ffi::{OsStr, OsString};
use std::path::Path;

use clap::Parser;

use args::{PluginCli, Verb};
use error::{EXIT_FAILED, PluginResult};

use crate::crd::Operation;

/// The file name under which the binary is the kubectl plugin.
pub const PLUGIN_NAME: &str = "kubectl-baas";
/// The file name under which the binary answers kubectl's completion requests.
pub const COMPLETION_NAME: &str = "kubectl_complete-baas";

/// How the binary was started, judged by the file name of `argv[0]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invocation {
    /// `kubectl-baas`: the plugin.
    Plugin,
    /// `kubectl_complete-baas`: completion for `kubectl baas`.
    Completion,
}

/// The plugin role of a binary started as `argv0`, if it has one. A `.exe` suffix is
/// ignored, as kubectl finds plugins with it on Windows.
pub fn invoked_as(argv0: &OsStr) -> Option<Invocation> {
    let name = Path::new(argv0).file_name()?.to_str()?;
    let name = name.strip_suffix(".exe").unwrap_or(name);
    match name {
        PLUGIN_NAME => Some(Invocation::Plugin),
        COMPLETION_NAME => Some(Invocation::Completion),
        _ => None,
    }
}

/// What a verb prints on stdout and whether the operation succeeded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Printed on stdout.
    pub stdout: String,
    /// Exit code 0 when true, 1 otherwise.
    pub ok: bool,
}

/// Runs the plugin with `args` (the first is the program name); the exit code.
pub async fn run(args: impl IntoIterator<Item = OsString>) -> i32 {
    let cli = match PluginCli::try_parse_from(args) {
        Ok(cli) => cli,
        // clap prints help (exit 0) and usage errors (exit 2) where kubectl would.
        Err(error) => {
            let _ = error.print();
            return error.exit_code();
        }
    };
    match dispatch(cli).await {
        Ok(report) => {
            print!("{}", report.stdout);
            if report.ok { 0 } else { EXIT_FAILED }
        }
        Err(error) => {
            eprintln!("error: {error}");
            error.exit_code()
        }
    }
}

/// Answers kubectl's completion request for `words` (typed after `kubectl baas`). Names of
/// Schedules, PVCs and namespaces come from the cluster when it answers within two seconds;
/// without it the static candidates still come.
pub async fn complete(words: &[OsString]) -> i32 {
    let words: Vec<String> = words
        .iter()
        .map(|w| w.to_string_lossy().into_owned())
        .collect();
    let plan = completion::plan(&words);
    let names = match plan.lookup {
        Some(lookup) => tokio::time::timeout(
            std::time::Duration::from_secs(2),
            lookup_names(&plan.global, lookup),
        )
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default(),
        None => Vec::new(),
    };
    print!("{}", completion::render(&plan, &names));
    0
}

async fn lookup_names(
    global: &args::GlobalArgs,
    lookup: completion::Lookup,
) -> PluginResult<Vec<String>> {
    use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim};
    use kube::ResourceExt;
    use kube::api::{Api, ListParams};
    let conn = connect::connect(global).await?;
    let params = ListParams::default();
    let names = match lookup {
        completion::Lookup::Schedules => {
            Api::<crate::crd::Schedule>::namespaced(conn.client, &conn.namespace)
                .list_metadata(&params)
                .await?
                .items
                .iter()
                .map(|o| o.name_any())
                .collect()
        }
        completion::Lookup::Claims => {
            Api::<PersistentVolumeClaim>::namespaced(conn.client, &conn.namespace)
                .list_metadata(&params)
                .await?
                .items
                .iter()
                .map(|o| o.name_any())
                .collect()
        }
        completion::Lookup::Namespaces => Api::<Namespace>::all(conn.client)
            .list_metadata(&params)
            .await?
            .items
            .iter()
            .map(|o| o.name_any())
            .collect(),
    };
    Ok(names)
}

async fn dispatch(cli: PluginCli) -> PluginResult<Report> {
    let global = cli.global;
    if let Verb::Completion(args) = &cli.verb {
        return Ok(Report {
            stdout: completion::script(args.shell),
            ok: true,
        });
    }
    let conn = connect::connect(&global).await?;
    let listed = |stdout: String| Report { stdout, ok: true };
    match &cli.verb {
        Verb::Status(args) => status::run(&conn, &global, args).await.map(listed),
        Verb::Backup(args) => backup::run(&conn, &global, args, Operation::Backup).await,
        Verb::Check(args) => backup::run(&conn, &global, args, Operation::Check).await,
        Verb::Prune(args) => backup::run(&conn, &global, args, Operation::Prune).await,
        Verb::Verify(args) => backup::run(&conn, &global, args, Operation::Verify).await,
        Verb::Snapshots(args) => snapshots::run(&conn, &global, args).await.map(listed),
        Verb::Restore(args) => restore::run(&conn, &global, args).await,
        Verb::Completion(_) => Ok(Report::default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_binary_is_the_plugin_under_kubectls_names_only() {
        assert_eq!(
            invoked_as(OsStr::new("/usr/local/bin/kubectl-baas")),
            Some(Invocation::Plugin)
        );
        assert_eq!(
            invoked_as(OsStr::new("kubectl-baas.exe")),
            Some(Invocation::Plugin)
        );
        assert_eq!(
            invoked_as(OsStr::new("bin/kubectl_complete-baas")),
            Some(Invocation::Completion)
        );
        assert_eq!(invoked_as(OsStr::new("/usr/bin/baas")), None);
        assert_eq!(invoked_as(OsStr::new("kubectl-baas-old")), None);
    }
}
