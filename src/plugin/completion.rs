//! Shell completion. `kubectl baas completion bash|zsh` prints a script for the
//! `kubectl-baas` command itself. `kubectl baas <TAB>` goes through kubectl (1.26 and
//! later), which runs an executable `kubectl_complete-baas` from PATH with the words typed
//! after `baas`, the last one being the word to complete, and reads Cobra's answer: one
//! candidate per line (`value<TAB>description`), then `:<directive>`. This binary answers
//! that when it is started under that name.

use clap::{Command, CommandFactory};
use clap_complete::Shell;

use super::args::{CompletionShell, GlobalArgs, PluginCli};

/// Cobra's directive: complete nothing but the candidates (no file names).
const NO_FILE_COMPLETION: u32 = 4;
/// Cobra's directive: no candidates of ours, let the shell complete file names.
const DEFAULT_COMPLETION: u32 = 0;

/// The completion script for `shell`.
pub fn script(shell: CompletionShell) -> String {
    let shell = match shell {
        CompletionShell::Bash => Shell::Bash,
        CompletionShell::Zsh => Shell::Zsh,
    };
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut PluginCli::command(), "kubectl-baas", &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Names only the cluster knows, completed by asking it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Schedules of the namespace (`backup SCHEDULE`, `--schedule`).
    Schedules,
    /// PersistentVolumeClaims of the namespace (`--pvc`).
    Claims,
    /// Namespaces (`-n`).
    Namespaces,
}

/// What to answer for the words typed so far.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// Candidates known without the cluster.
    pub candidates: Vec<String>,
    /// Cobra's directive.
    pub directive: u32,
    /// Names to add from the cluster, if any.
    pub lookup: Option<Lookup>,
    /// The word being completed.
    pub partial: String,
    /// `-n`, `--context` and `--kubeconfig` as typed, for the lookup.
    pub global: GlobalArgs,
}

/// Cobra's answer for `words` (typed after `kubectl baas`; the last is being completed),
/// without names from the cluster.
pub fn complete(words: &[String]) -> String {
    render(&plan(words), &[])
}

/// The answer: the plan's candidates, then the `names` found for its lookup that start
/// with the word being completed.
pub fn render(plan: &Plan, names: &[String]) -> String {
    let mut out = String::new();
    let found = names.iter().filter(|n| n.starts_with(&plan.partial));
    for candidate in plan.candidates.iter().chain(found) {
        out.push_str(candidate);
        out.push('\n');
    }
    out.push_str(&format!(":{}\n", plan.directive));
    out
}

/// Works out what `words` ask to complete.
pub fn plan(words: &[String]) -> Plan {
    let mut command = PluginCli::command();
    command.build();
    let (partial, done) = match words.split_last() {
        Some((last, done)) => (last.as_str(), done),
        None => ("", &[][..]),
    };
    let mut global = GlobalArgs::default();
    let mut current = &command;
    let mut pending_value: Option<String> = None;
    let mut positionals = 0;
    for word in done {
        if let Some(flag) = pending_value.take() {
            remember(&mut global, &flag, word);
            continue;
        }
        if let Some(flag) = word.strip_prefix('-') {
            match flag.split_once('=') {
                Some((flag, value)) => remember(&mut global, flag, value),
                None if takes_value(current, flag) => pending_value = Some(flag.to_string()),
                None => {}
            }
        } else if let Some(sub) = current.find_subcommand(word) {
            current = sub;
            positionals = 0;
        } else {
            positionals += 1;
        }
    }
    let mut plan = Plan {
        directive: NO_FILE_COMPLETION,
        partial: partial.to_string(),
        ..Plan::default()
    };
    if let Some(flag) = pending_value {
        plan.lookup = match flag.trim_start_matches('-') {
            "n" | "namespace" => Some(Lookup::Namespaces),
            "schedule" => Some(Lookup::Schedules),
            "pvc" => Some(Lookup::Claims),
            _ => None,
        };
        let values = flag_values(current, &flag);
        if values.is_empty() && plan.lookup.is_none() {
            plan.directive = DEFAULT_COMPLETION;
        }
        plan.candidates
            .extend(values.into_iter().filter(|v| v.starts_with(partial)));
    } else if partial.starts_with('-') {
        for arg in current.get_arguments() {
            if let Some(long) = arg.get_long() {
                let flag = format!("--{long}");
                if flag.starts_with(partial) {
                    plan.candidates.push(described(&flag, arg.get_help()));
                }
            }
        }
    } else {
        for sub in current.get_subcommands() {
            if sub.get_name().starts_with(partial) {
                plan.candidates
                    .push(described(sub.get_name(), sub.get_about()));
            }
        }
        for arg in current.get_positionals() {
            for value in arg.get_possible_values() {
                if value.get_name().starts_with(partial) {
                    plan.candidates.push(value.get_name().to_string());
                }
            }
        }
        if ["backup", "check", "prune", "verify"].contains(&current.get_name()) && positionals == 0
        {
            plan.lookup = Some(Lookup::Schedules);
        }
    }
    plan.global = global;
    plan
}

/// Keeps the connection options among the typed flags.
fn remember(global: &mut GlobalArgs, flag: &str, value: &str) {
    match flag.trim_start_matches('-') {
        "n" | "namespace" => global.namespace = Some(value.to_string()),
        "context" => global.context = Some(value.to_string()),
        "kubeconfig" => global.kubeconfig = Some(value.into()),
        _ => {}
    }
}

fn described(value: &str, help: Option<&clap::builder::StyledStr>) -> String {
    match help.map(|h| h.to_string()) {
        Some(help) => {
            let first = help.lines().next().unwrap_or_default().to_string();
            format!("{value}\t{first}")
        }
        None => value.to_string(),
    }
}

fn find_flag<'a>(command: &'a Command, flag: &str) -> Option<&'a clap::Arg> {
    command
        .get_arguments()
        .find(|arg| match flag.strip_prefix('-') {
            Some(long) => arg.get_long() == Some(long),
            None => flag.chars().count() == 1 && arg.get_short() == flag.chars().next(),
        })
}

fn takes_value(command: &Command, flag: &str) -> bool {
    find_flag(command, flag).is_some_and(|arg| arg.get_action().takes_values())
}

fn flag_values(command: &Command, flag: &str) -> Vec<String> {
    find_flag(command, flag)
        .map(|arg| {
            arg.get_possible_values()
                .iter()
                .map(|v| v.get_name().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &[&str]) -> Vec<String> {
        text.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn an_empty_word_completes_every_verb() {
        let answer = complete(&words(&[""]));
        for verb in [
            "status",
            "backup",
            "check",
            "prune",
            "snapshots",
            "restore",
            "completion",
        ] {
            assert!(
                answer.lines().any(|l| l.split('\t').next() == Some(verb)),
                "{verb} missing from {answer}"
            );
        }
        assert!(answer.ends_with(":4\n"), "{answer}");
    }

    #[test]
    fn a_prefix_completes_only_the_verbs_it_starts() {
        let answer = complete(&words(&["sn"]));
        assert!(answer.starts_with("snapshots\t"), "{answer}");
        assert_eq!(answer.lines().count(), 2, "{answer}");
    }

    #[test]
    fn flags_of_the_verb_and_global_ones_are_completed() {
        let answer = complete(&words(&["restore", "--to"]));
        assert!(
            answer.contains("--to-pvc\t") && answer.contains("--to-s3\t"),
            "{answer}"
        );
        let answer = complete(&words(&["status", "--name"]));
        assert!(answer.starts_with("--namespace\t"), "{answer}");
    }

    #[test]
    fn output_formats_are_completed_after_o() {
        let answer = complete(&words(&["status", "-o", ""]));
        assert_eq!(answer, "json\nyaml\nwide\n:4\n");
    }

    #[test]
    fn a_path_flag_leaves_completion_to_the_shell() {
        let answer = complete(&words(&["snapshots", "--restic", ""]));
        assert_eq!(answer, ":0\n");
    }

    #[test]
    fn a_schedule_is_looked_up_for_backup_in_the_namespace_typed() {
        let plan = plan(&words(&["-n", "shop", "backup", "ni"]));
        assert_eq!(plan.lookup, Some(Lookup::Schedules));
        assert_eq!(plan.global.namespace.as_deref(), Some("shop"));
        let names = ["nightly".to_string(), "weekly".to_string()];
        assert_eq!(render(&plan, &names), "nightly\n:4\n");
        // once the Schedule is given, nothing more is looked up
        assert_eq!(plan_of(&["backup", "nightly", ""]).lookup, None);
    }

    fn plan_of(text: &[&str]) -> Plan {
        plan(&words(text))
    }

    #[test]
    fn pvcs_and_namespaces_are_looked_up_for_their_flags() {
        let plan = plan_of(&["restore", "--namespace=shop", "--pvc", ""]);
        assert_eq!(plan.lookup, Some(Lookup::Claims));
        assert_eq!(plan.global.namespace.as_deref(), Some("shop"));
        assert_eq!(
            plan_of(&["status", "-n", ""]).lookup,
            Some(Lookup::Namespaces)
        );
        assert_eq!(
            plan_of(&["snapshots", "--schedule", ""]).lookup,
            Some(Lookup::Schedules)
        );
        assert_eq!(plan_of(&["status", ""]).lookup, None);
    }

    #[test]
    fn completion_scripts_mention_every_verb() {
        for shell in [CompletionShell::Bash, CompletionShell::Zsh] {
            let text = script(shell);
            for verb in ["status", "backup", "snapshots", "restore"] {
                assert!(text.contains(verb), "{shell:?} script lacks {verb}");
            }
        }
    }
}
