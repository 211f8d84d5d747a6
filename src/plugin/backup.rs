//! `kubectl baas backup|check|prune SCHEDULE`: a run started now from the Schedule's spec,
//! with the same repository, settings, owner and labels as the runs its ticks create, then
//! followed to its end.

use kube::api::PostParams;
use kube::{Api, ResourceExt};

use super::Report;
use super::args::{GlobalArgs, RunArgs};
use super::connect::Connection;
use super::error::{PluginError, PluginResult};
use super::follow::{outcome, succeeded, until_finished};
use super::output::structured;
use crate::controller::run::RunKind;
use crate::controller::schedule::schedule_run_meta;
use crate::crd::{Backup, Check, Operation, Prune, Schedule, Verify};

/// A run started by hand, of the Schedule's operation.
#[derive(Clone, Debug, PartialEq)]
pub enum OneOff {
    /// `kubectl baas backup`.
    Backup(Backup),
    /// `kubectl baas check`.
    Check(Check),
    /// `kubectl baas prune`.
    Prune(Prune),
    /// `kubectl baas verify`.
    Verify(Verify),
}

/// The run object for `op` from `schedule`: its spec as a tick would make it, owned by the
/// Schedule (so `keepJobs` and "never two backups at once" count it, and `status` shows it)
/// and named `<schedule>-<op>-<random>` by the API server, never like a tick's run.
pub fn build_run(schedule: &Schedule, op: Operation) -> PluginResult<OneOff> {
    let mut metadata = schedule_run_meta(schedule, op)
        .map_err(|e| PluginError::Failed(format!("Schedule {}: {e}", schedule.name_any())))?;
    metadata.generate_name = Some(format!("{}-{op}-", schedule.name_any()));
    // Blocking the owner's deletion needs the right to update the Schedule's finalizers,
    // which a user who may start backups need not have; garbage collection works without.
    for owner in metadata.owner_references.iter_mut().flatten() {
        owner.block_owner_deletion = None;
    }
    let spec = &schedule.spec;
    Ok(match op {
        Operation::Backup => OneOff::Backup(Backup {
            metadata,
            spec: spec.backup_spec(),
            status: None,
        }),
        Operation::Check => OneOff::Check(Check {
            metadata,
            spec: spec.check_spec(),
            status: None,
        }),
        Operation::Prune => OneOff::Prune(Prune {
            metadata,
            spec: spec.prune_spec(),
            status: None,
        }),
        Operation::Verify => OneOff::Verify(Verify {
            metadata,
            spec: spec.verify_spec(),
            status: None,
        }),
        Operation::Restore => {
            return Err(PluginError::Usage(
                "a Schedule does not run restores: use `kubectl baas restore`".into(),
            ));
        }
    })
}

/// Creates `run` and, unless `--no-wait`, follows it to its end; `target` is where a
/// restore goes, in the user's words.
pub async fn start_and_follow<K: RunKind>(
    conn: &Connection,
    global: &GlobalArgs,
    wait: &super::args::WaitArgs,
    run: K,
    target: Option<&str>,
) -> PluginResult<Report> {
    let api: Api<K> = Api::namespaced(conn.client.clone(), &conn.namespace);
    let created = api.create(&PostParams::default(), &run).await?;
    let name = created.name_any();
    let kind = K::OP.kind().as_str();
    let created_line = format!("{}.{}/{name} created", K::plural(&()), K::group(&()),);
    if wait.no_wait {
        let stdout = structured(&created, global.output)?.unwrap_or(format!("{created_line}\n"));
        return Ok(Report { stdout, ok: true });
    }
    eprintln!("{created_line}");
    let done = until_finished(&api, &name, wait.timeout).await?;
    let ok = succeeded(done.run_status());
    let stdout = match structured(&done, global.output)? {
        Some(document) => document,
        None => outcome(
            kind,
            &name,
            done.run_status().unwrap_or(&Default::default()),
            target,
        ),
    };
    Ok(Report { stdout, ok })
}

/// Runs the verb for `op`.
pub async fn run(
    conn: &Connection,
    global: &GlobalArgs,
    args: &RunArgs,
    op: Operation,
) -> PluginResult<Report> {
    let schedules: Api<Schedule> = Api::namespaced(conn.client.clone(), &conn.namespace);
    let schedule = schedules.get(&args.schedule).await?;
    match build_run(&schedule, op)? {
        OneOff::Backup(run) => start_and_follow(conn, global, &args.wait, run, None).await,
        OneOff::Check(run) => start_and_follow(conn, global, &args.wait, run, None).await,
        OneOff::Prune(run) => start_and_follow(conn, global, &args.wait, run, None).await,
        OneOff::Verify(run) => start_and_follow(conn, global, &args.wait, run, None).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::schedule::{BackupSchedule, PruneSchedule};
    use crate::crd::{Backend, Retention, S3Spec, ScheduleSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn schedule() -> Schedule {
        Schedule {
            metadata: ObjectMeta {
                name: Some("nightly".into()),
                namespace: Some("shop".into()),
                uid: Some("uid-1".into()),
                ..ObjectMeta::default()
            },
            spec: ScheduleSpec {
                backend: Backend {
                    s3: S3Spec {
                        endpoint: "https://objects.example.com".into(),
                        bucket: "shop".into(),
                        ..S3Spec::default()
                    },
                    ..Backend::default()
                },
                backup: Some(BackupSchedule {
                    schedule: "0 1 * * *".into(),
                    keep_jobs: None,
                    prom_url: Some("http://push:9091".into()),
                }),
                prune: Some(PruneSchedule {
                    schedule: "0 4 * * *".into(),
                    retention: Some(Retention {
                        keep_last: Some(3),
                        ..Retention::default()
                    }),
                    ..PruneSchedule::default()
                }),
                ..ScheduleSpec::default()
            },
            status: None,
        }
    }

    #[test]
    fn backup_from_a_schedule_has_its_spec_owner_and_labels() {
        let schedule = schedule();
        let OneOff::Backup(backup) = build_run(&schedule, Operation::Backup).expect("builds")
        else {
            panic!("not a Backup")
        };
        assert_eq!(backup.spec, schedule.spec.backup_spec());
        assert_eq!(backup.metadata.namespace.as_deref(), Some("shop"));
        assert_eq!(
            backup.metadata.generate_name.as_deref(),
            Some("nightly-backup-")
        );
        assert_eq!(backup.metadata.name, None);
        let owner = &backup.metadata.owner_references.as_ref().expect("owned")[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("Schedule", "uid-1")
        );
        assert_eq!(owner.controller, Some(true));
        assert_eq!(owner.block_owner_deletion, None);
        let labels = backup.metadata.labels.expect("labelled");
        assert_eq!(labels[crate::job::LABEL_SCHEDULE], "nightly");
        assert_eq!(labels[crate::job::LABEL_OPERATION], "backup");
        assert_eq!(
            labels[crate::job::LABEL_REPOSITORY],
            crate::job::repository_label("s3:https://objects.example.com/shop")
        );
        // no tick: the Schedule must not take it for the run of a cron tick
        assert!(backup.metadata.annotations.is_none());
    }

    #[test]
    fn prune_from_a_schedule_takes_its_retention() {
        let OneOff::Prune(prune) = build_run(&schedule(), Operation::Prune).expect("builds") else {
            panic!("not a Prune")
        };
        assert_eq!(prune.spec.retention.and_then(|r| r.keep_last), Some(3));
        assert_eq!(
            prune.metadata.generate_name.as_deref(),
            Some("nightly-prune-")
        );
    }

    #[test]
    fn check_of_a_schedule_without_a_check_section_still_works_on_its_repository() {
        let OneOff::Check(check) = build_run(&schedule(), Operation::Check).expect("builds") else {
            panic!("not a Check")
        };
        assert_eq!(check.spec.backend.s3.bucket, "shop");
        assert_eq!(check.spec.prom_url, None);
    }

    #[test]
    fn schedule_not_yet_stored_has_no_uid_and_gives_no_run() {
        let mut schedule = schedule();
        schedule.metadata.uid = None;
        assert!(build_run(&schedule, Operation::Backup).is_err());
    }
}
