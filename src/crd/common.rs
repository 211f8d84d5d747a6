//! Types shared by several kinds: the repository backend, retention, restore targets and the
//! status every run kind reports.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

// Upper bounds, in characters, of the strings users write into a spec: well above any value
// that works, so they only stop pasted garbage before it is stored, parsed on every review and
// copied into every Job. The CRD schema (`maxLength`) and the webhook enforce the same numbers.

/// A cron expression; a list of all 60 minutes is about 170 characters.
pub const MAX_CRON_LENGTH: usize = 256;
/// An S3 endpoint or Pushgateway URL.
pub const MAX_URL_LENGTH: usize = 2048;
/// An S3 bucket name, as S3 itself limits it.
pub const MAX_BUCKET_LENGTH: usize = 63;
/// A Kubernetes object name (DNS subdomain) or Secret key.
pub const MAX_NAME_LENGTH: usize = 253;
/// A restic snapshot ID (64 hexadecimal digits) or a prefix of it.
pub const MAX_SNAPSHOT_LENGTH: usize = 64;
/// A path inside a snapshot (Linux's `PATH_MAX`).
pub const MAX_PATH_LENGTH: usize = 4096;
/// A restic tag.
pub const MAX_TAG_LENGTH: usize = 256;

/// A reference to one key of a Secret in the object's own namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct SecretKeyRef {
    /// Name of the Secret, in the same namespace as this object.
    #[schemars(length(max = MAX_NAME_LENGTH))]
    pub name: String,
    /// Key inside the Secret's data whose value is used.
    #[schemars(length(max = MAX_NAME_LENGTH))]
    pub key: String,
}

/// Where the restic repository lives and how to open it. The repository is
/// `s3:<endpoint>/<bucket>` and stays a plain restic repository, so `restic snapshots` and
/// `restic mount` work on it directly.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Backend {
    /// Secret key holding the restic repository password (the encryption key of every
    /// snapshot: keep a copy outside the cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo_password_secret_ref: Option<SecretKeyRef>,
    /// The S3 bucket that holds the repository.
    pub s3: S3Spec,
}

impl Backend {
    /// The Secret key of the repository password: `repoPasswordSecretRef`, or its deprecated
    /// place under `s3` in an object the webhook has not defaulted (one stored before it ran).
    pub fn repo_password(&self) -> Option<&SecretKeyRef> {
        self.repo_password_secret_ref
            .as_ref()
            .or(self.s3.repo_password_secret_ref.as_ref())
    }
}

/// An S3 bucket holding a restic repository.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Spec {
    /// Absolute http(s) URL of the S3 server, for example `https://objects.example.com`.
    /// Without user info: the credentials come from the two Secret refs.
    #[schemars(length(max = MAX_URL_LENGTH))]
    pub endpoint: String,
    /// Name of the bucket; restic creates it when the repository is initialised.
    #[schemars(length(max = MAX_BUCKET_LENGTH))]
    pub bucket: String,
    /// Secret key holding the S3 access key ID.
    #[serde(rename = "accessKeyIDSecretRef")]
    pub access_key_id_secret_ref: SecretKeyRef,
    /// Secret key holding the S3 secret access key.
    pub secret_access_key_secret_ref: SecretKeyRef,
    /// Deprecated place of the repository password, accepted for older manifests: the
    /// admission webhook moves it to `spec.backend.repoPasswordSecretRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo_password_secret_ref: Option<SecretKeyRef>,
}

/// Which snapshots `restic forget --prune` keeps. A snapshot is kept when any rule keeps it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Retention {
    /// Keep the newest N snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<i64>,
    /// Keep the newest snapshot of each of the last N hours that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_hourly: Option<i64>,
    /// Keep the newest snapshot of each of the last N days that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_daily: Option<i64>,
    /// Keep the newest snapshot of each of the last N weeks that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_weekly: Option<i64>,
    /// Keep the newest snapshot of each of the last N months that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_monthly: Option<i64>,
    /// Keep the newest snapshot of each of the last N years that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_yearly: Option<i64>,
    /// Keep every snapshot that carries one of these restic tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(inner(length(max = MAX_TAG_LENGTH)))]
    pub keep_tags: Option<Vec<String>>,
}

/// One numeric keep rule of a [`Retention`]: its field name in the CRD, its restic flag and
/// its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeepRule {
    /// Field name as users write it (`keepLast`).
    pub field: &'static str,
    /// The `restic forget` flag (`--keep-last`).
    pub flag: &'static str,
    /// The value, if set.
    pub value: Option<i64>,
}

impl Retention {
    /// The six numeric keep rules, in restic's order. The webhook checks them and the agent
    /// turns them into flags from this one list, so the two cannot disagree on a rule.
    pub fn rules(&self) -> [KeepRule; 6] {
        let rule = |field, flag, value| KeepRule { field, flag, value };
        [
            rule("keepLast", "--keep-last", self.keep_last),
            rule("keepHourly", "--keep-hourly", self.keep_hourly),
            rule("keepDaily", "--keep-daily", self.keep_daily),
            rule("keepWeekly", "--keep-weekly", self.keep_weekly),
            rule("keepMonthly", "--keep-monthly", self.keep_monthly),
            rule("keepYearly", "--keep-yearly", self.keep_yearly),
        ]
    }

    /// Whether the retention keeps any snapshot: a rule greater than 0 or a non-empty
    /// `keepTags`. restic refuses a policy that keeps nothing, and it must never mean
    /// "delete everything".
    pub fn keeps_something(&self) -> bool {
        self.rules().iter().any(|r| r.value.is_some_and(|n| n > 0))
            || self.keep_tags.as_ref().is_some_and(|t| !t.is_empty())
    }

    /// The retention used where a Schedule's prune or a Prune leaves it out or empty.
    pub fn fallback() -> Retention {
        Retention {
            keep_last: Some(5),
            keep_daily: Some(14),
            ..Retention::default()
        }
    }

    /// Whether no field is set, which means [`Retention::fallback`] as much as an absent
    /// retention does.
    pub fn is_unset(&self) -> bool {
        *self == Retention::default()
    }

    /// The retention a prune applies: the configured one, or [`Retention::fallback`] when it
    /// is absent or unset.
    pub fn effective(configured: Option<&Retention>) -> Retention {
        configured
            .filter(|retention| !retention.is_unset())
            .cloned()
            .unwrap_or_else(Retention::fallback)
    }
}

/// Where a Restore writes the snapshot: exactly one of `s3` or `pvc`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreMethod {
    /// Upload the restored files as one `.tar.gz` object into this bucket (self-service
    /// download of one backup state).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Target>,
    /// Write the restored files into this PersistentVolumeClaim (disaster recovery).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvc: Option<PvcTarget>,
}

/// An S3 bucket that receives a restore archive.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Target {
    /// Absolute http(s) URL of the S3 server, without user info: the credentials come from
    /// the two Secret refs.
    #[schemars(length(max = MAX_URL_LENGTH))]
    pub endpoint: String,
    /// Name of the bucket that receives the archive; it must exist.
    #[schemars(length(max = MAX_BUCKET_LENGTH))]
    pub bucket: String,
    /// Secret key holding the S3 access key ID.
    #[serde(rename = "accessKeyIDSecretRef")]
    pub access_key_id_secret_ref: SecretKeyRef,
    /// Secret key holding the S3 secret access key.
    pub secret_access_key_secret_ref: SecretKeyRef,
}

/// A PersistentVolumeClaim that receives restored files.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PvcTarget {
    /// Name of an existing, writable PersistentVolumeClaim in this namespace.
    #[schemars(length(max = MAX_NAME_LENGTH))]
    pub claim_name: String,
}

/// Where a run stands. Every run ends in `Succeeded`, `PartiallySucceeded` or `Failed`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RunState {
    /// Waiting for its Job to start (or for an exclusive operation on the repository).
    Pending,
    /// Its Job is running.
    Running,
    /// Finished and everything was saved, checked, pruned or restored.
    Succeeded,
    /// A snapshot was written, but some files or backup commands could not be read.
    PartiallySucceeded,
    /// Finished without doing its work; `message` says why.
    Failed,
}

impl RunState {
    /// Whether the run has ended and will not change any more.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunState::Succeeded | RunState::PartiallySucceeded | RunState::Failed
        )
    }
}

/// restic's summary of a run. Counts are unsigned in Rust but `int64` in the schema: the API
/// server knows no `uint64` format.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Files new since the parent snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "int64"))]
    pub files_new: Option<u64>,
    /// Files changed since the parent snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "int64"))]
    pub files_changed: Option<u64>,
    /// Files unchanged since the parent snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "int64"))]
    pub files_unmodified: Option<u64>,
    /// All files read (backup) or written (restore).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "int64"))]
    pub total_files: Option<u64>,
    /// All bytes read (backup) or written (restore).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "int64"))]
    pub total_bytes: Option<u64>,
    /// Bytes added to the repository after deduplication and compression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "int64"))]
    pub bytes_added: Option<u64>,
    /// Snapshots removed by a prune.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "int64"))]
    pub snapshots_removed: Option<u64>,
    /// Snapshots kept by a prune.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "int64"))]
    pub snapshots_kept: Option<u64>,
}

/// The status every run kind (Backup, Check, Prune, Restore, Verify) reports.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Standard conditions, all four always present: `Finished` (the run ended, whatever the
    /// outcome), `Complete` (it ended and did everything: state Succeeded), `Failed` (it ended
    /// without doing everything: state Failed or PartiallySucceeded) and `Running` (its Jobs
    /// run; False with reason WaitingForRepository while it waits for another run).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Where the run stands: Pending, Running, Succeeded, PartiallySucceeded or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<RunState>,
    /// Names of the Jobs that execute this run (a backup needs one Job per node that holds
    /// a ReadWriteOnce volume in use).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jobs: Vec<String>,
    /// When the Job started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the run ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// Full ID of the snapshot written by a backup (the first, when it wrote several) or read
    /// by a restore.
    #[serde(
        default,
        rename = "snapshotID",
        skip_serializing_if = "Option::is_none"
    )]
    pub snapshot_id: Option<String>,
    /// Every snapshot the run wrote: one per Job for volumes and one per backup command.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<SnapshotRef>,
    /// Snapshots a Verify run restored and checked, each with what was checked and any failure.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verified: Vec<VerifiedSnapshot>,
    /// restic's summary: files and bytes, summed over all snapshots of the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,
    /// Wall-clock duration of the work in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<f64>,
    /// Verify runs that succeeded: when the newest snapshot they proved to restore was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest_verified_snapshot: Option<Time>,
    /// Where a restore put the data (`s3://bucket/object` or `pvc/<claimName>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_to: Option<String>,
    /// Problems met during the run, one line each (unreadable files, failed backup commands).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// Human-readable outcome of the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl RunStatus {
    /// Whether the run has ended.
    pub fn is_finished(&self) -> bool {
        self.state.is_some_and(RunState::is_terminal)
    }

    /// The part of a finished run's status that the reconciler reads again: its state and
    /// times (history, last outcome), not the report a user reads with kubectl.
    pub fn outline(&self) -> RunStatus {
        RunStatus {
            observed_generation: self.observed_generation,
            state: self.state,
            started_at: self.started_at.clone(),
            finished_at: self.finished_at.clone(),
            newest_verified_snapshot: self.newest_verified_snapshot.clone(),
            ..RunStatus::default()
        }
    }

    /// The status as the operator's run caches hold it: the outline once the run has
    /// finished, all of it before.
    pub fn as_cached(&self) -> RunStatus {
        if self.is_finished() {
            self.outline()
        } else {
            self.clone()
        }
    }
}

/// One snapshot written by a run.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotRef {
    /// Full restic snapshot ID.
    pub id: String,
    /// Paths inside the snapshot: `/data/<pvcname>` for volumes,
    /// `/<namespace>-<pod>-<container>` for backup commands.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
}

/// One snapshot a Verify run restored and checked.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerifiedSnapshot {
    /// Full restic snapshot ID.
    pub id: String,
    /// Paths inside the snapshot: `/data/<pvcname>` for volumes,
    /// `/<namespace>-<pod>-<container>` for backup commands.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// When the snapshot was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
    /// Files restored and checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "int64"))]
    pub files: Option<u64>,
    /// Bytes restored and checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "int64"))]
    pub bytes: Option<u64>,
    /// What was checked: `content` (every restored file against the snapshot, `restic restore
    /// --verify`), `summary` (file count and bytes equal the backup's recorded summary),
    /// `stream` (a backup command's output restored whole and as long as recorded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<String>,
    /// Why this snapshot failed verification; absent when it passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
