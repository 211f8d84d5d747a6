//! `Schedule`: recurring backup, check and prune of one repository.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::backup::BackupSpec;
use super::check::CheckSpec;
use super::common::{Backend, MAX_CRON_LENGTH, MAX_URL_LENGTH, Retention};
use super::prune::PruneSpec;
use super::verify::{AppCheck, VerifySpec};

/// Recurring backup, check, prune and verification of one restic repository. At each cron tick
/// the operator creates a Backup, Check, Prune or Verify object owned by this Schedule.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "backup.appuio.ch",
    version = "v1alpha1",
    kind = "Schedule",
    namespaced,
    status = "ScheduleStatus",
    shortname = "sched",
    category = "baas",
    derive = "PartialEq",
    derive = "Default",
    doc = "Recurring backup, check and prune of one restic repository in S3",
    printcolumn(
        name = "Backup",
        type_ = "string",
        json_path = ".spec.backup.schedule",
        description = "Cron schedule of backups (UTC)"
    ),
    printcolumn(
        name = "Last Backup",
        type_ = "date",
        json_path = ".status.backup.lastRun",
        description = "When the last backup was started"
    ),
    printcolumn(
        name = "Next Backup",
        type_ = "string",
        json_path = ".status.backup.nextRun",
        description = "When the next backup starts"
    ),
    printcolumn(
        name = "Last State",
        type_ = "string",
        json_path = ".status.backup.lastState",
        description = "How the last finished backup ended"
    ),
    printcolumn(
        name = "Verified",
        type_ = "date",
        json_path = ".status.verify.lastVerifiedSnapshot",
        description = "When the newest snapshot proven to restore was taken"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleSpec {
    /// The repository that backups go to and that check and prune work on.
    pub backend: Backend,
    /// When to back up every PVC and backup command of the namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupSchedule>,
    /// When to verify the repository with `restic check`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<CheckSchedule>,
    /// When to remove old snapshots with `restic forget --prune`. Without it snapshots pile up
    /// forever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune: Option<PruneSchedule>,
    /// When to prove that the namespace's newest snapshots restore: each is restored into
    /// scratch space and checked (see `docs/verify.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<VerifySchedule>,
    /// Stop creating runs while true; runs already started go on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
}

impl ScheduleSpec {
    /// The spec of a Backup run of this Schedule: its backend and the backup's `promURL`.
    /// Scheduled ticks and `kubectl baas backup` both start runs from here, so a run started by
    /// hand works on exactly what the next tick would.
    pub fn backup_spec(&self) -> BackupSpec {
        BackupSpec {
            backend: self.backend.clone(),
            prom_url: self.backup.as_ref().and_then(|b| b.prom_url.clone()),
        }
    }

    /// The spec of a Check run of this Schedule.
    pub fn check_spec(&self) -> CheckSpec {
        CheckSpec {
            backend: self.backend.clone(),
            prom_url: self.check.as_ref().and_then(|c| c.prom_url.clone()),
        }
    }

    /// The spec of a Prune run of this Schedule; a retention that is absent or `{}` becomes
    /// the default one, since a Prune must never run without one.
    pub fn prune_spec(&self) -> PruneSpec {
        let prune = self.prune.as_ref();
        PruneSpec {
            backend: self.backend.clone(),
            prom_url: prune.and_then(|p| p.prom_url.clone()),
            retention: Some(Retention::effective(
                prune.and_then(|p| p.retention.as_ref()),
            )),
        }
    }

    /// The spec of a Verify run of this Schedule.
    pub fn verify_spec(&self) -> VerifySpec {
        let verify = self.verify.as_ref();
        VerifySpec {
            backend: self.backend.clone(),
            app_check: verify.and_then(|v| v.app_check.clone()),
            prom_url: verify.and_then(|v| v.prom_url.clone()),
        }
    }
}

/// The backup part of a Schedule.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupSchedule {
    /// Standard 5-field cron expression in UTC (`0 1 * * *`) or a macro such as `@daily`.
    #[schemars(length(max = MAX_CRON_LENGTH))]
    pub schedule: String,
    /// How many finished Backup objects (and their Jobs) to keep; older ones are deleted.
    /// Default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_jobs: Option<i32>,
    /// URL of a Prometheus Pushgateway that receives the metrics of every backup.
    #[serde(default, rename = "promURL", skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_URL_LENGTH))]
    pub prom_url: Option<String>,
}

/// The check part of a Schedule.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckSchedule {
    /// Standard 5-field cron expression in UTC or a macro such as `@weekly`.
    #[schemars(length(max = MAX_CRON_LENGTH))]
    pub schedule: String,
    /// How many finished Check objects (and their Jobs) to keep. Default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_jobs: Option<i32>,
    /// URL of a Prometheus Pushgateway that receives the metrics of every check.
    #[serde(default, rename = "promURL", skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_URL_LENGTH))]
    pub prom_url: Option<String>,
}

/// The prune part of a Schedule.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PruneSchedule {
    /// Standard 5-field cron expression in UTC or a macro such as `@daily`.
    #[schemars(length(max = MAX_CRON_LENGTH))]
    pub schedule: String,
    /// How many finished Prune objects (and their Jobs) to keep. Default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_jobs: Option<i32>,
    /// Which snapshots to keep. Default `{keepLast: 5, keepDaily: 14}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
    /// URL of a Prometheus Pushgateway that receives the metrics of every prune.
    #[serde(default, rename = "promURL", skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_URL_LENGTH))]
    pub prom_url: Option<String>,
}

/// `verify.maxAge` when the Schedule does not set it: a daily verification of daily backups
/// leaves a day to notice a failure before the alert fires.
pub const DEFAULT_VERIFY_MAX_AGE: &str = "48h";

/// The verification part of a Schedule.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerifySchedule {
    /// Standard 5-field cron expression in UTC or a macro such as `@daily`.
    #[schemars(length(max = MAX_CRON_LENGTH))]
    pub schedule: String,
    /// How many finished Verify objects (and their Jobs) to keep. Default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_jobs: Option<i32>,
    /// How old the newest snapshot proven to restore may be before the `BaasVerifiedBackupTooOld`
    /// alert fires: a number with a unit, `s`, `m`, `h` or `d` (`36h`, `7d`). Default `48h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub max_age: Option<String>,
    /// A check of the restored data by the application itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_check: Option<AppCheck>,
    /// URL of a Prometheus Pushgateway that receives the metrics of every verification.
    #[serde(default, rename = "promURL", skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_URL_LENGTH))]
    pub prom_url: Option<String>,
}

/// What the operator knows about a Schedule.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Standard conditions; `Ready` is true while the Schedule's crons are valid and runs are
    /// being created.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Backups of this Schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<OperationStatus>,
    /// Checks of this Schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<OperationStatus>,
    /// Prunes of this Schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune: Option<OperationStatus>,
    /// Verifications of this Schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<OperationStatus>,
}

/// Last and next run of one operation of a Schedule.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OperationStatus {
    /// The cron tick of the last run that was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<Time>,
    /// Name of the run object created for the last tick.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_name: Option<String>,
    /// How the last finished run ended (Succeeded, PartiallySucceeded or Failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_state: Option<String>,
    /// When the last successful run finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<Time>,
    /// The next cron tick.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run: Option<Time>,
    /// Verifications only: when the newest snapshot that a successful verification proved to
    /// restore was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verified_snapshot: Option<Time>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule_spec(prune: Option<PruneSchedule>) -> ScheduleSpec {
        ScheduleSpec {
            backend: Backend {
                s3: crate::crd::S3Spec {
                    endpoint: "https://objects.example.com".into(),
                    bucket: "team-a".into(),
                    ..Default::default()
                },
                ..Default::default()
            },
            backup: Some(BackupSchedule {
                schedule: "0 1 * * *".into(),
                keep_jobs: None,
                prom_url: Some("http://push:9091".into()),
            }),
            check: None,
            prune,
            verify: None,
            suspend: None,
        }
    }

    #[test]
    fn backup_spec_of_a_schedule_has_its_backend_and_backup_prom_url() {
        let spec = schedule_spec(None);
        let backup = spec.backup_spec();
        assert_eq!(backup.backend, spec.backend);
        assert_eq!(backup.prom_url.as_deref(), Some("http://push:9091"));
        assert_eq!(spec.check_spec().prom_url, None);
    }

    #[test]
    fn prune_spec_without_or_with_empty_retention_gets_the_default() {
        let default = Some(Retention::fallback());
        assert_eq!(schedule_spec(None).prune_spec().retention, default);
        let empty = PruneSchedule {
            schedule: "@daily".into(),
            retention: Some(Retention::default()),
            ..Default::default()
        };
        assert_eq!(schedule_spec(Some(empty)).prune_spec().retention, default);
        let own = Retention {
            keep_last: Some(2),
            ..Default::default()
        };
        let set = PruneSchedule {
            schedule: "@daily".into(),
            retention: Some(own.clone()),
            ..Default::default()
        };
        assert_eq!(schedule_spec(Some(set)).prune_spec().retention, Some(own));
    }
}
