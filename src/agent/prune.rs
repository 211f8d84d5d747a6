//! `baas agent prune`: `restic forget` with the retention, then `restic prune`.
//!
//! Scope: only snapshots of the run's namespace (`--host <namespace>`), because a repository
//! may be shared by several namespaces and one team's retention must not delete another's
//! snapshots. Grouping: restic's default, by host and paths, so the volumes' snapshot and each
//! backup command's dump keep their own history: `keepLast: 5` keeps the last five of each, not
//! five in total. When the set of PVCs changes, the old set is its own group and ages out by the
//! same rules.

use serde::Deserialize;

use super::AgentEnv;
use crate::crd::{Retention, RunState, Summary};
use crate::report::RunReport;
use crate::{Error, Result};

/// restic's `forget` arguments for a retention; an error when it keeps nothing, since restic
/// would then refuse (and an empty policy must never mean "delete everything").
pub fn retention_args(retention: &Retention) -> Result<Vec<String>> {
    let mut args = Vec::new();
    for rule in retention.rules() {
        match rule.value {
            Some(n) if n < 0 => {
                return Err(Error::InvalidSpec(format!(
                    "retention: {} must not be negative, got {n}",
                    rule.flag
                )));
            }
            Some(n) if n > 0 => {
                args.push(rule.flag.to_string());
                args.push(n.to_string());
            }
            _ => {}
        }
    }
    for tag in retention.keep_tags.iter().flatten() {
        args.push("--keep-tag".into());
        args.push(tag.clone());
    }
    if args.is_empty() {
        return Err(Error::InvalidSpec(
            "retention keeps nothing: set a keep rule greater than 0 or keepTags".into(),
        ));
    }
    Ok(args)
}

#[derive(Deserialize)]
struct ForgetGroup {
    #[serde(default)]
    keep: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    remove: Option<Vec<serde_json::Value>>,
}

/// Applies the retention and removes data no snapshot uses any more.
pub async fn run(ctx: &AgentEnv, retention_json: &str) -> Result<RunReport> {
    let retention: Retention = serde_json::from_str(retention_json)
        .map_err(|e| Error::InvalidSpec(format!("BAAS_RETENTION is not a retention: {e}")))?;
    let rules = retention_args(&retention)?;
    ctx.restic.open(false).await?;
    let unlocked = super::locks::remove_stale(ctx).await?;
    let mut args: Vec<String> = [
        "forget",
        "--json",
        "--host",
        &ctx.namespace,
        "--group-by",
        "host,paths",
    ]
    .map(String::from)
    .to_vec();
    args.extend(rules);
    let out = ctx.restic.run_ok(&args).await?;
    // `null` when the namespace has no snapshots at all.
    let groups: Option<Vec<ForgetGroup>> = serde_json::from_slice(&out)
        .map_err(|e| Error::Restic(format!("unexpected `restic forget --json` output: {e}")))?;
    let groups = groups.unwrap_or_default();
    let kept: usize = groups
        .iter()
        .map(|g| g.keep.as_ref().map_or(0, Vec::len))
        .sum();
    let removed: usize = groups
        .iter()
        .map(|g| g.remove.as_ref().map_or(0, Vec::len))
        .sum();
    if removed > 0 {
        ctx.restic.run_ok(["prune"]).await?;
    }
    let mut message = format!(
        "kept {kept} snapshot(s) and removed {removed} of namespace {}{}",
        ctx.namespace,
        if removed > 0 {
            "; unused data pruned"
        } else {
            ""
        }
    );
    if unlocked > 0 {
        message.push_str(&format!(
            " (removed {unlocked} stale lock(s) left by an earlier run)"
        ));
    }
    Ok(RunReport {
        state: Some(RunState::Succeeded),
        summary: Summary {
            snapshots_kept: Some(kept as u64),
            snapshots_removed: Some(removed as u64),
            ..Summary::default()
        },
        message,
        ..RunReport::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_maps_each_rule_and_tag_to_restic_flags() {
        let retention = Retention {
            keep_last: Some(5),
            keep_daily: Some(14),
            keep_weekly: Some(0),
            keep_tags: Some(vec!["keep".into()]),
            ..Retention::default()
        };
        assert_eq!(
            retention_args(&retention).expect("keeps something"),
            [
                "--keep-last",
                "5",
                "--keep-daily",
                "14",
                "--keep-tag",
                "keep"
            ]
        );
    }

    #[test]
    fn retention_that_keeps_nothing_is_refused() {
        let retention = Retention {
            keep_last: Some(0),
            ..Retention::default()
        };
        assert!(retention_args(&retention).is_err());
    }

    #[test]
    fn negative_retention_is_refused() {
        let retention = Retention {
            keep_last: Some(-1),
            ..Retention::default()
        };
        assert!(retention_args(&retention).is_err());
    }
}
