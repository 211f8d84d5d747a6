//! `kubectl baas status`: one line per Schedule from what the Schedule's status and its kept
//! runs hold: the newest backup (its state, age and snapshot), the next tick, how many kept
//! runs failed, and the Ready condition with its reason.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::ListParams;
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;

use super::args::{GlobalArgs, OutputFormat, StatusArgs};
use super::connect::Connection;
use super::error::PluginResult;
use super::output::{NONE, Table, age, short_id, structured, until};
use crate::controller::run::RunKind;
use crate::crd::schedule::OperationStatus;
use crate::crd::{Backup, Check, Operation, Prune, RunState, Schedule, Verify};

/// One run as the status line needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct RunView {
    /// UID of the Schedule that owns it, if one does.
    pub owner: Option<String>,
    /// Its operation.
    pub op: Operation,
    /// Its name.
    pub name: String,
    /// Where it stands.
    pub state: Option<RunState>,
    /// creationTimestamp.
    pub created: Option<jiff::Timestamp>,
    /// When it started.
    pub started: Option<jiff::Timestamp>,
    /// When it ended.
    pub finished: Option<jiff::Timestamp>,
    /// The snapshot it wrote.
    pub snapshot: Option<String>,
}

impl RunView {
    /// The view of one run object.
    pub fn of<K: RunKind>(run: &K) -> RunView {
        let status = run.run_status();
        RunView {
            owner: run
                .owner_references()
                .iter()
                .find(|o| o.kind == "Schedule" && o.controller == Some(true))
                .map(|o| o.uid.clone()),
            op: K::OP,
            name: run.name_any(),
            state: status.and_then(|s| s.state),
            created: run.meta().creation_timestamp.as_ref().map(|t| t.0),
            started: status.and_then(|s| s.started_at.as_ref()).map(|t| t.0),
            finished: status.and_then(|s| s.finished_at.as_ref()).map(|t| t.0),
            snapshot: status.and_then(|s| s.snapshot_id.clone()),
        }
    }

    fn failed(&self) -> bool {
        matches!(
            self.state,
            Some(RunState::Failed | RunState::PartiallySucceeded)
        )
    }
}

/// The newest backup of a Schedule.
#[derive(Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LastBackup {
    /// The Backup object, when it is still kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Pending, Running, Succeeded, PartiallySucceeded or Failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// When it started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<jiff::Timestamp>,
    /// When it ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<jiff::Timestamp>,
    /// The snapshot it wrote.
    #[serde(rename = "snapshotID", skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<String>,
}

/// Kept runs that did not succeed, per operation.
#[derive(Serialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct FailedRuns {
    /// Backups Failed or PartiallySucceeded.
    pub backup: usize,
    /// Checks Failed.
    pub check: usize,
    /// Prunes Failed.
    pub prune: usize,
    /// Verifications Failed.
    pub verify: usize,
}

impl FailedRuns {
    fn total(&self) -> usize {
        self.backup + self.check + self.prune + self.verify
    }
}

/// The Schedule's `Ready` condition.
#[derive(Serialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Ready {
    /// `True` or `False`.
    pub status: String,
    /// `Scheduled`, `Suspended`, `InvalidSchedule`.
    pub reason: String,
    /// What is wrong, when something is.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// What `status` says about one Schedule (also its `-o json|yaml` document).
#[derive(Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleReport {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The newest backup, if any ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_backup: Option<LastBackup>,
    /// The next backup tick.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_backup: Option<jiff::Timestamp>,
    /// The next check tick.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_check: Option<jiff::Timestamp>,
    /// The next prune tick.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_prune: Option<jiff::Timestamp>,
    /// The next verification tick.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_verify: Option<jiff::Timestamp>,
    /// When the newest snapshot that a successful verification proved to restore was taken.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_verified_snapshot: Option<jiff::Timestamp>,
    /// Runs kept in the history (`keepJobs`) that did not succeed.
    pub failed_runs: FailedRuns,
    /// Runs kept in the history.
    pub kept_runs: usize,
    /// The Ready condition, once the operator wrote one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready: Option<Ready>,
}

/// The next tick of one operation, from its cron: the status's `nextRun` is only written
/// with the next change that matters, so right after a tick it may still name that tick.
/// The status's value stands in when the cron does not parse (Ready says why then).
fn next(
    cron: Option<&str>,
    op: Option<&OperationStatus>,
    suspended: bool,
    now: jiff::Timestamp,
) -> Option<jiff::Timestamp> {
    if suspended {
        return None;
    }
    let cron = cron?;
    match crate::cron::parse(cron) {
        Ok(parsed) => parsed.next_after(now),
        Err(_) => op.and_then(|o| o.next_run.as_ref()).map(|t: &Time| t.0),
    }
}

/// The report of one Schedule from its status and `runs` (any runs: those it owns are
/// picked by UID, so a Backup of another Schedule of the same name never counts).
pub fn report(schedule: &Schedule, runs: &[RunView], now: jiff::Timestamp) -> ScheduleReport {
    let uid = schedule.uid();
    let owned: Vec<&RunView> = runs
        .iter()
        .filter(|r| r.owner.is_some() && r.owner == uid)
        .collect();
    let status = schedule.status.clone().unwrap_or_default();
    let spec = &schedule.spec;
    let suspended = spec.suspend == Some(true);
    let newest = owned
        .iter()
        .filter(|r| r.op == Operation::Backup)
        .max_by(|a, b| (a.created, &a.name).cmp(&(b.created, &b.name)));
    // Without a kept Backup (history deleted it), the status still names the last outcome.
    let last_backup = match newest {
        Some(run) => Some(LastBackup {
            name: Some(run.name.clone()),
            // The operator writes no status before the run ends or has gone for 30 s.
            state: Some(format!("{:?}", run.state.unwrap_or(RunState::Pending))),
            started_at: run.started.or(run.created),
            finished_at: run.finished,
            snapshot_id: run.snapshot.clone(),
        }),
        None => status.backup.as_ref().and_then(|b| {
            b.last_state.as_ref().map(|state| LastBackup {
                state: Some(state.clone()),
                finished_at: b.last_success.as_ref().map(|t| t.0),
                ..LastBackup::default()
            })
        }),
    };
    let count = |op: Operation| owned.iter().filter(|r| r.op == op && r.failed()).count();
    ScheduleReport {
        namespace: schedule.namespace().unwrap_or_default(),
        name: schedule.name_any(),
        last_backup,
        next_backup: next(
            spec.backup.as_ref().map(|b| b.schedule.as_str()),
            status.backup.as_ref(),
            suspended,
            now,
        ),
        next_check: next(
            spec.check.as_ref().map(|c| c.schedule.as_str()),
            status.check.as_ref(),
            suspended,
            now,
        ),
        next_prune: next(
            spec.prune.as_ref().map(|p| p.schedule.as_str()),
            status.prune.as_ref(),
            suspended,
            now,
        ),
        next_verify: next(
            spec.verify.as_ref().map(|v| v.schedule.as_str()),
            status.verify.as_ref(),
            suspended,
            now,
        ),
        last_verified_snapshot: status
            .verify
            .as_ref()
            .and_then(|v| v.last_verified_snapshot.as_ref())
            .map(|t| t.0),
        failed_runs: FailedRuns {
            backup: count(Operation::Backup),
            check: count(Operation::Check),
            prune: count(Operation::Prune),
            verify: count(Operation::Verify),
        },
        kept_runs: owned.len(),
        ready: status
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .map(|c| Ready {
                status: c.status.clone(),
                reason: c.reason.clone(),
                message: c.message.clone(),
            }),
    }
}

/// The status table; `namespaces` adds the NAMESPACE column (`-A`), `wide` the run's name,
/// the next check and prune and the Ready message.
pub fn table(
    reports: &[ScheduleReport],
    now: jiff::Timestamp,
    namespaces: bool,
    wide: bool,
) -> Table {
    let mut header = Vec::new();
    if namespaces {
        header.push("NAMESPACE");
    }
    header.extend([
        "NAME",
        "LAST BACKUP",
        "AGE",
        "SNAPSHOT",
        "NEXT BACKUP",
        "FAILED",
        "READY",
        "REASON",
    ]);
    if wide {
        header.extend(["BACKUP RUN", "NEXT CHECK", "NEXT PRUNE", "MESSAGE"]);
    }
    let mut table = Table::new(&header);
    let or_none = |v: Option<String>| v.unwrap_or_else(|| NONE.to_string());
    let when = |t: Option<jiff::Timestamp>| or_none(t.map(|t| until(t, now)));
    for r in reports {
        let last = r.last_backup.as_ref();
        let mut row = Vec::new();
        if namespaces {
            row.push(r.namespace.clone());
        }
        row.push(r.name.clone());
        row.push(or_none(last.and_then(|l| l.state.clone())));
        row.push(or_none(
            last.and_then(|l| l.finished_at.or(l.started_at))
                .map(|t| age(t, now)),
        ));
        row.push(or_none(
            last.and_then(|l| l.snapshot_id.as_deref()).map(short_id),
        ));
        row.push(when(r.next_backup));
        row.push(r.failed_runs.total().to_string());
        row.push(or_none(r.ready.as_ref().map(|c| c.status.clone())));
        row.push(or_none(r.ready.as_ref().map(|c| c.reason.clone())));
        if wide {
            row.push(or_none(last.and_then(|l| l.name.clone())));
            row.push(when(r.next_check));
            row.push(when(r.next_prune));
            row.push(
                r.ready
                    .as_ref()
                    .map(|c| c.message.clone())
                    .filter(|m| !m.is_empty())
                    .unwrap_or_else(|| NONE.to_string()),
            );
        }
        table.rows.push(row);
    }
    table
}

async fn list<K: RunKind>(api: Api<K>) -> PluginResult<Vec<RunView>> {
    Ok(api
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .map(RunView::of)
        .collect())
}

fn api<K>(conn: &Connection, all: bool) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    if all {
        Api::all(conn.client.clone())
    } else {
        Api::namespaced(conn.client.clone(), &conn.namespace)
    }
}

/// Runs the verb; its output.
pub async fn run(
    conn: &Connection,
    global: &GlobalArgs,
    args: &StatusArgs,
) -> PluginResult<String> {
    let all = args.all_namespaces;
    let mut schedules = api::<Schedule>(conn, all)
        .list(&ListParams::default())
        .await?
        .items;
    schedules.sort_by_key(|s| (s.namespace(), s.name_any()));
    let mut runs = list(api::<Backup>(conn, all)).await?;
    runs.extend(list(api::<Check>(conn, all)).await?);
    runs.extend(list(api::<Prune>(conn, all)).await?);
    runs.extend(list(api::<Verify>(conn, all)).await?);
    let now = jiff::Timestamp::now();
    let reports: Vec<ScheduleReport> = schedules.iter().map(|s| report(s, &runs, now)).collect();
    if let Some(document) = structured(&serde_json::json!({ "items": reports }), global.output)? {
        return Ok(document);
    }
    if reports.is_empty() {
        let scope = if all {
            "any namespace".to_string()
        } else {
            format!("namespace {}", conn.namespace)
        };
        // On stderr, as kubectl says "No resources found": scripts reading stdout see nothing.
        eprintln!("No Schedules found in {scope}.");
        return Ok(String::new());
    }
    let wide = global.output == Some(OutputFormat::Wide);
    Ok(table(&reports, now, all, wide).render(!global.no_headers))
}

#[cfg(test)]
mod tests;
