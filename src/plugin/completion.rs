//! Shell completion. `kubectl baas completion bash|zsh` prints a script for the
//! `kubectl-baas` command itself. `kubectl baas <TAB>` goes through kubectl (1.26 and
//! later), which runs an executable `kubectl_complete-baas` from PATH with the words typed
//! after `baas`, the last one being the word to complete, and reads Cobra's answer: one
//! candidate per line (`value<TAB>description`), then `:<directive>`. This binary answers
//! that when it is started under that name.

use clap::{Command, CommandFactory};
use clap_complete::Shell;

use super::args::{CompletionShell, PluginCli};

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

/// Cobra's answer for `words` (typed after `kubectl baas`; the last is being completed).
pub fn complete(words: &[String]) -> String {
    let mut command = PluginCli::command();
    command.build();
    let (partial, done) = match words.split_last() {
        Some((last, done)) => (last.as_str(), done),
        None => ("", &[][..]),
    };
    let mut current = &command;
    let mut pending_value: Option<String> = None;
    for word in done {
        if pending_value.take().is_some() {
            continue;
        }
        if let Some(flag) = word.strip_prefix('-') {
            if !word.contains('=') && takes_value(current, flag) {
                pending_value = Some(flag.to_string());
            }
        } else if let Some(sub) = current.find_subcommand(word) {
            current = sub;
        }
    }
    let mut candidates: Vec<String> = Vec::new();
    let mut directive = NO_FILE_COMPLETION;
    if let Some(flag) = pending_value {
        let values = flag_values(current, &flag);
        if values.is_empty() {
            directive = DEFAULT_COMPLETION;
        }
        candidates.extend(values.into_iter().filter(|v| v.starts_with(partial)));
    } else if partial.starts_with('-') {
        for arg in current.get_arguments() {
            if let Some(long) = arg.get_long() {
                let flag = format!("--{long}");
                if flag.starts_with(partial) {
                    candidates.push(described(&flag, arg.get_help()));
                }
            }
        }
    } else {
        for sub in current.get_subcommands() {
            if sub.get_name().starts_with(partial) {
                candidates.push(described(sub.get_name(), sub.get_about()));
            }
        }
        for arg in current.get_positionals() {
            for value in arg.get_possible_values() {
                if value.get_name().starts_with(partial) {
                    candidates.push(value.get_name().to_string());
                }
            }
        }
    }
    let mut out = String::new();
    for candidate in candidates {
        out.push_str(&candidate);
        out.push('\n');
    }
    out.push_str(&format!(":{directive}\n"));
    out
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
    fn completion_scripts_mention_every_verb() {
        for shell in [CompletionShell::Bash, CompletionShell::Zsh] {
            let text = script(shell);
            for verb in ["status", "backup", "snapshots", "restore"] {
                assert!(text.contains(verb), "{shell:?} script lacks {verb}");
            }
        }
    }
}
