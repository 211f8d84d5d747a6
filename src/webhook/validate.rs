//! The admission rules: pure functions from an object (already defaulted by `/mutate`) and what
//! is known about the cluster to a verdict. Every problem is one sentence that starts with the
//! most precise field path, so users see all of them in one `kubectl apply`.
//!
//! Where each rule lives:
//! - an object of the wrong shape, with field paths: [`shape_problems`] (the strict schema)
//! - a changed spec of a one-shot run: [`validate_run_update`]
//! - per kind: [`validate_schedule`], [`validate_backup`], [`validate_check`],
//!   [`validate_prune`], [`validate_restore`] (its target claim: `restore_target`),
//!   [`validate_verify`]
//! - verification, application checks, restores from another namespace: [`verify`]
//! - the backend, password place and credentials: `Checker::backend`, `Checker::secret_ref`
//!   (a Secret's keys and absence, from the lookups)
//! - a retention that keeps nothing: `Checker::retention`
//! - claims a backup cannot read: `Checker::namespace_pvcs`
//! - the format of one value (names, keys, endpoints, buckets, snapshot IDs, paths, lengths,
//!   cron expressions): [`format`]

mod format;
pub mod memo;
pub mod verify;

use std::collections::BTreeSet;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::crd::common::{
    MAX_CRON_LENGTH, MAX_PATH_LENGTH, MAX_SNAPSHOT_LENGTH, MAX_TAG_LENGTH, MAX_URL_LENGTH,
};
use crate::crd::{
    Backend, BackupSpec, CheckSpec, Kind, PruneSpec, RestoreSpec, Retention, ScheduleSpec,
    SecretKeyRef,
};
use crate::lookup::{Lookups, PvcLookup, SecretInfo};
pub use format::{
    bucket_problem, cron_memo_bytes, cron_problem, dns_subdomain_problem, endpoint_problem,
    length_problem, secret_key_problem, snapshot_id_problem, snapshot_path_problem,
};
pub use verify::{image_reference_problem, namespace_problem, validate_verify};

/// The outcome of validating one object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Reasons to refuse the object, each `field.path: sentence`.
    pub denials: Vec<String>,
    /// Things the user should know; the object is admitted anyway.
    pub warnings: Vec<String>,
}

impl Verdict {
    /// Whether the object would be admitted.
    pub fn allowed(&self) -> bool {
        self.denials.is_empty()
    }

    /// The denials as the one `status.message` of an AdmissionReview.
    pub fn message(&self) -> String {
        self.denials.join("; ")
    }
}

/// Where an object lives and what is known about its namespace; `lookups` is `None` offline.
#[derive(Clone, Copy)]
pub struct ReviewContext<'a> {
    /// Namespace of the object under review.
    pub namespace: &'a str,
    /// Cluster facts, or `None` to skip every rule that needs them.
    pub lookups: Option<&'a dyn Lookups>,
}

impl<'a> ReviewContext<'a> {
    /// A context without cluster facts, as in `baas validate` and `baas webhook --offline`.
    pub fn offline(namespace: &'a str) -> Self {
        Self {
            namespace,
            lookups: None,
        }
    }
}

struct Checker<'a> {
    ctx: ReviewContext<'a>,
    verdict: Verdict,
    warned_secrets: BTreeSet<String>,
}

impl<'a> Checker<'a> {
    fn new(ctx: ReviewContext<'a>) -> Self {
        Self {
            ctx,
            verdict: Verdict::default(),
            warned_secrets: BTreeSet::new(),
        }
    }

    fn deny(&mut self, path: &str, sentence: impl std::fmt::Display) {
        self.verdict.denials.push(format!("{path}: {sentence}"));
    }

    fn warn(&mut self, path: &str, sentence: impl std::fmt::Display) {
        self.verdict.warnings.push(format!("{path}: {sentence}"));
    }

    /// Denies a string over its limit; false when it was denied, so no further rule quotes
    /// or parses it.
    fn within_limit(&mut self, path: &str, value: &str, limit: usize) -> bool {
        match length_problem(value, limit) {
            Some(problem) => {
                self.deny(path, problem);
                false
            }
            None => true,
        }
    }

    fn prom_url(&mut self, path: &str, url: Option<&String>) {
        if let Some(url) = url {
            self.within_limit(path, url, MAX_URL_LENGTH);
        }
    }

    fn schedule(&mut self, path: &str, expression: &str) {
        // Checked first so an endless string never reaches the parser or its memo.
        if !self.within_limit(path, expression, MAX_CRON_LENGTH) {
            return;
        }
        if let Some(problem) = cron_problem(expression) {
            self.deny(path, problem);
        }
    }

    fn non_negative(&mut self, path: &str, value: Option<i64>) {
        if let Some(n) = value.filter(|n| *n < 0) {
            self.deny(path, format!("must not be negative, found {n}"));
        }
    }

    fn secret_ref(&mut self, path: &str, secret: &SecretKeyRef) {
        let name_problem = dns_subdomain_problem(&secret.name);
        if let Some(problem) = &name_problem {
            self.deny(&format!("{path}.name"), problem);
        }
        let key_problem = secret_key_problem(&secret.key);
        if let Some(problem) = &key_problem {
            self.deny(&format!("{path}.key"), problem);
        }
        let Some(lookups) = self.ctx.lookups else {
            return;
        };
        if name_problem.is_some() || key_problem.is_some() {
            return;
        }
        match lookups.secret(self.ctx.namespace, &secret.name) {
            SecretInfo::Keys(keys) if !keys.contains(&secret.key) => {
                let known: Vec<&str> = keys.iter().map(String::as_str).collect();
                self.deny(
                    &format!("{path}.key"),
                    format!(
                        "Secret {:?} has no key {:?} (it has: {})",
                        secret.name,
                        secret.key,
                        if known.is_empty() {
                            "no keys".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                );
            }
            // Manifests are often applied out of order, and a Secret created a moment ago
            // may not have reached the cache yet: never deny for absence.
            SecretInfo::Absent if self.warned_secrets.insert(secret.name.clone()) => {
                let namespace = self.ctx.namespace.to_string();
                self.warn(
                    &format!("{path}.name"),
                    format!(
                        "Secret {:?} does not exist in namespace {namespace:?} yet; runs fail until it is created",
                        secret.name
                    ),
                );
            }
            _ => {}
        }
    }

    fn endpoint(&mut self, path: &str, endpoint: &str) {
        if !self.within_limit(path, endpoint, MAX_URL_LENGTH) {
            return;
        }
        if let Some(problem) = endpoint_problem(endpoint) {
            self.deny(path, problem);
        }
    }

    fn bucket(&mut self, path: &str, bucket: &str) {
        if let Some(problem) = bucket_problem(bucket) {
            self.deny(path, problem);
        }
    }

    fn backend(&mut self, backend: &Backend) {
        let s3 = &backend.s3;
        match (&backend.repo_password_secret_ref, &s3.repo_password_secret_ref) {
            (Some(current), Some(legacy)) if current != legacy => self.deny(
                "spec.backend.s3.repoPasswordSecretRef",
                format!(
                    "conflicts with spec.backend.repoPasswordSecretRef ({}/{} against {}/{}); keep only spec.backend.repoPasswordSecretRef",
                    legacy.name, legacy.key, current.name, current.key
                ),
            ),
            (Some(current), _) => self.secret_ref("spec.backend.repoPasswordSecretRef", current),
            (None, Some(legacy)) => {
                self.secret_ref("spec.backend.s3.repoPasswordSecretRef", legacy)
            }
            (None, None) => self.deny(
                "spec.backend.repoPasswordSecretRef",
                "Required value: restic cannot open the repository without its password",
            ),
        }
        self.endpoint("spec.backend.s3.endpoint", &s3.endpoint);
        self.bucket("spec.backend.s3.bucket", &s3.bucket);
        self.secret_ref(
            "spec.backend.s3.accessKeyIDSecretRef",
            &s3.access_key_id_secret_ref,
        );
        self.secret_ref(
            "spec.backend.s3.secretAccessKeySecretRef",
            &s3.secret_access_key_secret_ref,
        );
    }

    fn retention(&mut self, path: &str, retention: Option<&Retention>) {
        // Absent or unset means the fallback, which `/mutate` fills in.
        let Some(retention) = retention.filter(|r| !r.is_unset()) else {
            return;
        };
        for rule in retention.rules() {
            self.non_negative(&format!("{path}.{}", rule.field), rule.value);
        }
        let keeps_something = retention.keeps_something();
        if !keeps_something {
            self.deny(
                path,
                "keeps no snapshot: set at least one keep rule greater than 0 or list keepTags, or leave retention out for the default {keepLast: 5, keepDaily: 14}",
            );
        }
        for (i, tag) in retention.keep_tags.iter().flatten().enumerate() {
            let tag_path = format!("{path}.keepTags[{i}]");
            if tag.trim().is_empty() {
                self.deny(&tag_path, "must not be empty");
            } else {
                self.within_limit(&tag_path, tag, MAX_TAG_LENGTH);
            }
        }
    }

    fn namespace_pvcs(&mut self) {
        let Some(pvcs) = self.ctx.lookups.and_then(|l| l.pvcs(self.ctx.namespace)) else {
            return;
        };
        for pvc in pvcs.iter().filter(|p| !p.excluded) {
            let path = format!("persistentvolumeclaim/{}", pvc.name);
            if !pvc.bound {
                self.warn(&path, "is not bound, so backups skip it; annotate it appuio.ch/backup=false to silence this");
            } else if pvc.has_mode("ReadWriteOncePod") {
                self.warn(&path, "is ReadWriteOncePod, so a backup cannot mount it while a pod uses it; annotate it appuio.ch/backup=false to silence this");
            }
        }
    }

    fn finish(self) -> Verdict {
        self.verdict
    }
}

/// Rules of a Schedule: its crons, backend, retention and `keepJobs`; warns without `prune`.
pub fn validate_schedule(spec: &ScheduleSpec, ctx: ReviewContext<'_>) -> Verdict {
    let mut check = Checker::new(ctx);
    check.backend(&spec.backend);
    if let Some(backup) = &spec.backup {
        check.schedule("spec.backup.schedule", &backup.schedule);
        check.non_negative("spec.backup.keepJobs", backup.keep_jobs.map(i64::from));
        check.prom_url("spec.backup.promURL", backup.prom_url.as_ref());
    }
    if let Some(section) = &spec.check {
        check.schedule("spec.check.schedule", &section.schedule);
        check.non_negative("spec.check.keepJobs", section.keep_jobs.map(i64::from));
        check.prom_url("spec.check.promURL", section.prom_url.as_ref());
    }
    match &spec.prune {
        Some(prune) => {
            check.schedule("spec.prune.schedule", &prune.schedule);
            check.non_negative("spec.prune.keepJobs", prune.keep_jobs.map(i64::from));
            check.prom_url("spec.prune.promURL", prune.prom_url.as_ref());
            check.retention("spec.prune.retention", prune.retention.as_ref());
        }
        None => check.warn(
            "spec.prune",
            "absent, so old snapshots are never removed and the repository grows forever",
        ),
    }
    if let Some(verify) = &spec.verify {
        check.verify_section(verify);
    }
    if spec.backup.is_some() {
        check.namespace_pvcs();
    }
    check.finish()
}

/// Rules of a Backup: its backend; warns about PVCs it cannot read.
pub fn validate_backup(spec: &BackupSpec, ctx: ReviewContext<'_>) -> Verdict {
    let mut check = Checker::new(ctx);
    check.backend(&spec.backend);
    check.prom_url("spec.promURL", spec.prom_url.as_ref());
    check.namespace_pvcs();
    check.finish()
}

/// Rules of a Check: its backend.
pub fn validate_check(spec: &CheckSpec, ctx: ReviewContext<'_>) -> Verdict {
    let mut check = Checker::new(ctx);
    check.backend(&spec.backend);
    check.prom_url("spec.promURL", spec.prom_url.as_ref());
    check.finish()
}

/// Rules of a Prune: its backend and retention.
pub fn validate_prune(spec: &PruneSpec, ctx: ReviewContext<'_>) -> Verdict {
    let mut check = Checker::new(ctx);
    check.backend(&spec.backend);
    check.prom_url("spec.promURL", spec.prom_url.as_ref());
    check.retention("spec.retention", spec.retention.as_ref());
    check.finish()
}

/// Rules of a Restore: its backend and exactly one writable target.
pub fn validate_restore(spec: &RestoreSpec, ctx: ReviewContext<'_>) -> Verdict {
    let mut check = Checker::new(ctx);
    check.backend(&spec.backend);
    let method = &spec.restore_method;
    match (&method.s3, &method.pvc) {
        (None, None) => check.deny(
            "spec.restoreMethod",
            "needs exactly one of s3 or pvc, found none",
        ),
        (Some(_), Some(_)) => check.deny(
            "spec.restoreMethod",
            "needs exactly one of s3 or pvc, found both",
        ),
        _ => {}
    }
    if let Some(s3) = &method.s3 {
        check.endpoint("spec.restoreMethod.s3.endpoint", &s3.endpoint);
        check.bucket("spec.restoreMethod.s3.bucket", &s3.bucket);
        check.secret_ref(
            "spec.restoreMethod.s3.accessKeyIDSecretRef",
            &s3.access_key_id_secret_ref,
        );
        check.secret_ref(
            "spec.restoreMethod.s3.secretAccessKeySecretRef",
            &s3.secret_access_key_secret_ref,
        );
    }
    if let Some(pvc) = &method.pvc {
        restore_target(&mut check, &pvc.claim_name);
    }
    if let Some(snapshot) = &spec.snapshot
        && check.within_limit("spec.snapshot", snapshot, MAX_SNAPSHOT_LENGTH)
        && let Some(problem) = snapshot_id_problem(snapshot)
    {
        check.deny("spec.snapshot", problem);
    }
    if let Some(path) = &spec.path
        && check.within_limit("spec.path", path, MAX_PATH_LENGTH)
        && let Some(problem) = snapshot_path_problem(path)
    {
        check.deny("spec.path", problem);
    }
    if let Some(source) = &spec.source_namespace {
        check.source_namespace(source, &spec.backend);
    }
    check.prom_url("spec.promURL", spec.prom_url.as_ref());
    check.finish()
}

fn restore_target(check: &mut Checker<'_>, claim: &str) {
    const PATH: &str = "spec.restoreMethod.pvc.claimName";
    if let Some(problem) = dns_subdomain_problem(claim) {
        check.deny(PATH, problem);
        return;
    }
    let Some(lookups) = check.ctx.lookups else {
        return;
    };
    let namespace = check.ctx.namespace.to_string();
    match lookups.pvc(&namespace, claim) {
        PvcLookup::Absent => check.deny(
            PATH,
            format!("PersistentVolumeClaim {claim:?} does not exist in namespace {namespace:?}; create it first"),
        ),
        PvcLookup::Found(pvc) if pvc.access_modes.len() == 1 && pvc.has_mode("ReadOnlyMany") => {
            check.deny(
                PATH,
                format!("PersistentVolumeClaim {claim:?} is ReadOnlyMany and cannot be written"),
            )
        }
        PvcLookup::Found(pvc) if pvc.has_mode("ReadWriteOncePod") && !pvc.used_by.is_empty() => {
            check.deny(
                PATH,
                format!(
                    "PersistentVolumeClaim {claim:?} is ReadWriteOncePod and in use by pod {}; stop it first",
                    pvc.used_by.join(", ")
                ),
            )
        }
        _ => {}
    }
}

/// Denies a changed spec of a one-shot run (Backup, Check, Prune, Restore, Verify); metadata and
/// status updates pass.
pub fn validate_run_update(kind: Kind, old: &Value, new: &Value) -> Option<String> {
    (old.get("spec") != new.get("spec")).then(|| {
        format!(
            "spec: a {kind} is a one-shot run and its spec cannot be changed; create a new {kind} instead"
        )
    })
}

/// Validates an object of one of the six kinds, given as JSON. An object that does not fit
/// the kind's type is denied with the field paths that are wrong.
pub fn validate_object(kind: Kind, object: &Value, ctx: ReviewContext<'_>) -> Verdict {
    match kind {
        Kind::Schedule => typed(object, |s| validate_schedule(s, ctx)),
        Kind::Backup => typed(object, |s| validate_backup(s, ctx)),
        Kind::Check => typed(object, |s| validate_check(s, ctx)),
        Kind::Prune => typed(object, |s| validate_prune(s, ctx)),
        Kind::Restore => typed(object, |s| validate_restore(s, ctx)),
        Kind::Verify => typed(object, |s| validate_verify(s, ctx)),
    }
}

fn typed<S: DeserializeOwned>(object: &Value, rules: impl FnOnce(&S) -> Verdict) -> Verdict {
    let spec = match object.get("spec") {
        None | Some(Value::Null) if object.is_object() => {
            return Verdict {
                denials: vec!["spec: Required value".into()],
                warnings: Vec::new(),
            };
        }
        spec => spec.cloned().unwrap_or(Value::Null),
    };
    match serde_json::from_value::<S>(spec) {
        Ok(spec) => rules(&spec),
        Err(error) => Verdict {
            denials: shape_problems(object, &error),
            warnings: Vec::new(),
        },
    }
}

/// Why an object does not fit its type, with field paths: the strict schema names the fields;
/// serde's message is the fallback.
pub fn shape_problems(object: &Value, error: &serde_json::Error) -> Vec<String> {
    let problems: Vec<String> = crate::crd::schema_problems(object)
        .into_iter()
        .filter(|p| p.starts_with("spec"))
        .collect();
    if problems.is_empty() {
        vec![format!("spec: {error}")]
    } else {
        problems
    }
}

#[cfg(test)]
mod shape_tests;
#[cfg(test)]
mod tests;
