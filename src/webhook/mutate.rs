//! Defaults injected by `/mutate`, as JSON patches on the object exactly as it was sent. A patch
//! only adds what is absent (parents before children) or rewrites a value it has just read,
//! so applying the result and mutating again yields no patch.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation, RemoveOperation, ReplaceOperation};
use serde_json::{Map, Value, json};

use crate::crd::schedule::DEFAULT_VERIFY_MAX_AGE;
use crate::crd::{DEFAULT_KEEP_JOBS, Kind, Retention};

/// The defaults for one object: patch operations and warnings about what was changed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Mutation {
    /// JSON patch operations, in the order they must be applied.
    pub patch: Vec<PatchOperation>,
    /// Things the user should know about the changes.
    pub warnings: Vec<String>,
}

impl Mutation {
    fn add(&mut self, path: &[&str], value: Value) {
        self.patch.push(PatchOperation::Add(AddOperation {
            path: PointerBuf::from_tokens(path.iter().copied()),
            value,
        }));
    }

    fn replace(&mut self, path: &[&str], value: Value) {
        self.patch.push(PatchOperation::Replace(ReplaceOperation {
            path: PointerBuf::from_tokens(path.iter().copied()),
            value,
        }));
    }

    fn remove(&mut self, path: &[&str]) {
        self.patch.push(PatchOperation::Remove(RemoveOperation {
            path: PointerBuf::from_tokens(path.iter().copied()),
        }));
    }

    /// Applies the patch to a copy of `object`.
    pub fn apply(&self, object: &Value) -> Result<Value, json_patch::PatchError> {
        let mut patched = object.clone();
        json_patch::patch(&mut patched, &self.patch)?;
        Ok(patched)
    }
}

fn object_at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Map<String, Value>> {
    path.iter()
        .try_fold(value, |v, key| v.get(key))
        .and_then(Value::as_object)
}

fn absent(map: &Map<String, Value>, key: &str) -> bool {
    map.get(key).is_none_or(Value::is_null)
}

fn trim_schedule(object: &Value, section: &str, m: &mut Mutation) {
    let Some(schedule) = object_at(object, &["spec", section])
        .and_then(|s| s.get("schedule"))
        .and_then(Value::as_str)
    else {
        return;
    };
    let trimmed = schedule.trim();
    if trimmed != schedule {
        m.replace(&["spec", section, "schedule"], json!(trimmed));
    }
}

fn default_keep_jobs(object: &Value, section: &str, m: &mut Mutation) {
    if let Some(map) = object_at(object, &["spec", section])
        && absent(map, "keepJobs")
    {
        m.add(&["spec", section, "keepJobs"], json!(DEFAULT_KEEP_JOBS));
    }
}

fn default_retention(object: &Value, parent: &[&str], m: &mut Mutation) {
    let Some(map) = object_at(object, parent) else {
        return;
    };
    let default = serde_json::to_value(Retention::fallback())
        .expect("a Retention of plain integers serializes");
    let mut path = parent.to_vec();
    path.push("retention");
    if absent(map, "retention") {
        m.add(&path, default);
    } else if let Some(retention) = map.get("retention").and_then(Value::as_object)
        && retention.is_empty()
        && let Some(fields) = default.as_object()
    {
        for (key, value) in fields {
            let mut field = path.clone();
            field.push(key);
            m.add(&field, value.clone());
        }
    }
}

fn trim_endpoint(object: &Value, s3: &[&str], m: &mut Mutation) {
    let Some(endpoint) = object_at(object, s3)
        .and_then(|s| s.get("endpoint"))
        .and_then(Value::as_str)
    else {
        return;
    };
    let trimmed = endpoint.trim_end_matches('/');
    // `http://` alone would become `http:`, which hides the real mistake from the user.
    let has_host = trimmed
        .split_once("://")
        .is_some_and(|(_, rest)| !rest.is_empty());
    if trimmed != endpoint && has_host {
        let mut path = s3.to_vec();
        path.push("endpoint");
        m.replace(&path, json!(trimmed));
    }
}

/// The seed's Restore example puts the repository password under `backend.s3`; its home is
/// `backend.repoPasswordSecretRef`. A conflicting pair is left for validation to deny.
fn move_legacy_password(object: &Value, m: &mut Mutation) {
    let Some(backend) = object_at(object, &["spec", "backend"]) else {
        return;
    };
    let Some(legacy) = object_at(object, &["spec", "backend", "s3"])
        .and_then(|s3| s3.get("repoPasswordSecretRef"))
        .filter(|v| !v.is_null())
    else {
        return;
    };
    const LEGACY: [&str; 4] = ["spec", "backend", "s3", "repoPasswordSecretRef"];
    match backend
        .get("repoPasswordSecretRef")
        .filter(|v| !v.is_null())
    {
        None => {
            m.remove(&LEGACY);
            m.add(
                &["spec", "backend", "repoPasswordSecretRef"],
                legacy.clone(),
            );
            m.warnings.push(
                "spec.backend.s3.repoPasswordSecretRef: deprecated place, moved to spec.backend.repoPasswordSecretRef"
                    .into(),
            );
        }
        Some(current) if current == legacy => {
            m.remove(&LEGACY);
            m.warnings.push(
                "spec.backend.s3.repoPasswordSecretRef: deprecated place, dropped because spec.backend.repoPasswordSecretRef holds the same ref"
                    .into(),
            );
        }
        Some(_) => {}
    }
}

fn backend(object: &Value, m: &mut Mutation) {
    trim_endpoint(object, &["spec", "backend", "s3"], m);
    move_legacy_password(object, m);
}

/// Defaults of a Schedule: trimmed crons, `keepJobs`, the prune retention, the verification's
/// `maxAge`, the backend.
pub fn mutate_schedule(object: &Value) -> Mutation {
    let mut m = Mutation::default();
    for section in ["backup", "check", "prune", "verify"] {
        trim_schedule(object, section, &mut m);
        default_keep_jobs(object, section, &mut m);
    }
    default_retention(object, &["spec", "prune"], &mut m);
    if let Some(verify) = object_at(object, &["spec", "verify"])
        && absent(verify, "maxAge")
    {
        m.add(&["spec", "verify", "maxAge"], json!(DEFAULT_VERIFY_MAX_AGE));
    }
    backend(object, &mut m);
    m
}

/// Defaults of the kinds whose only defaults are the backend's: Backup, Check and Verify.
pub fn mutate_backend_only(object: &Value) -> Mutation {
    let mut m = Mutation::default();
    backend(object, &mut m);
    m
}

/// Defaults of a Prune: the retention and the backend.
pub fn mutate_prune(object: &Value) -> Mutation {
    let mut m = Mutation::default();
    default_retention(object, &["spec"], &mut m);
    backend(object, &mut m);
    m
}

/// Defaults of a Restore: the backend and the S3 target's endpoint.
pub fn mutate_restore(object: &Value) -> Mutation {
    let mut m = Mutation::default();
    backend(object, &mut m);
    trim_endpoint(object, &["spec", "restoreMethod", "s3"], &mut m);
    m
}

/// Defaults of an object of one of the six kinds.
pub fn mutate_object(kind: Kind, object: &Value) -> Mutation {
    match kind {
        Kind::Schedule => mutate_schedule(object),
        Kind::Backup | Kind::Check | Kind::Verify => mutate_backend_only(object),
        Kind::Prune => mutate_prune(object),
        Kind::Restore => mutate_restore(object),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed_schedule() -> Value {
        json!({
            "kind": "Schedule",
            "spec": {
                "backend": {
                    "repoPasswordSecretRef": {"name": "backup-repo", "key": "password"},
                    "s3": {"endpoint": "http://10.144.1.224:9000/", "bucket": "baas",
                        "accessKeyIDSecretRef": {"name": "c", "key": "username"},
                        "secretAccessKeySecretRef": {"name": "c", "key": "password"}}
                },
                "backup": {"schedule": " 0 1 * * *", "keepJobs": 3},
                "check": {"schedule": " 0 0 * * 0"},
                "prune": {"schedule": " 0 4 * * *"}
            }
        })
    }

    #[test]
    fn seed_schedule_gets_every_default_once() {
        let object = seed_schedule();
        let m = mutate_schedule(&object);
        let patched = m.apply(&object).expect("patch applies");
        let spec = &patched["spec"];
        assert_eq!(spec["backup"]["schedule"], "0 1 * * *");
        assert_eq!(
            spec["backup"]["keepJobs"], 3,
            "a value the user set is kept"
        );
        assert_eq!(spec["check"]["keepJobs"], 10);
        assert_eq!(spec["prune"]["keepJobs"], 10);
        assert_eq!(
            spec["prune"]["retention"],
            json!({"keepLast": 5, "keepDaily": 14})
        );
        assert_eq!(
            spec["backend"]["s3"]["endpoint"],
            "http://10.144.1.224:9000"
        );
        assert_eq!(mutate_schedule(&patched), Mutation::default());
    }

    #[test]
    fn verify_section_gets_keep_jobs_and_max_age_and_keeps_what_is_set() {
        let mut object = seed_schedule();
        object["spec"]["verify"] = json!({"schedule": " @daily"});
        let patched = mutate_schedule(&object)
            .apply(&object)
            .expect("patch applies");
        let verify = &patched["spec"]["verify"];
        assert_eq!(verify["schedule"], "@daily");
        assert_eq!(verify["keepJobs"], 10);
        assert_eq!(verify["maxAge"], "48h");
        assert_eq!(mutate_schedule(&patched), Mutation::default());
        object["spec"]["verify"] = json!({"schedule": "@daily", "keepJobs": 2, "maxAge": "7d"});
        let patched = mutate_schedule(&object)
            .apply(&object)
            .expect("patch applies");
        assert_eq!(patched["spec"]["verify"]["keepJobs"], 2);
        assert_eq!(patched["spec"]["verify"]["maxAge"], "7d");
    }

    #[test]
    fn empty_retention_gets_default_rules_without_replacing_it() {
        let object = json!({"spec": {"retention": {}, "backend": {}}});
        let m = mutate_prune(&object);
        assert!(
            m.patch
                .iter()
                .all(|op| matches!(op, PatchOperation::Add(_)))
        );
        let patched = m.apply(&object).expect("patch applies");
        assert_eq!(
            patched["spec"]["retention"],
            json!({"keepLast": 5, "keepDaily": 14})
        );
    }

    #[test]
    fn set_retention_is_kept() {
        let object = json!({"spec": {"retention": {"keepWeekly": 4}}});
        assert_eq!(mutate_prune(&object), Mutation::default());
    }

    #[test]
    fn legacy_password_ref_is_moved_with_warning() {
        let object = json!({"spec": {"backend": {"s3": {"repoPasswordSecretRef": {"name": "r", "key": "k"}}}}});
        let m = mutate_restore(&object);
        assert_eq!(m.warnings.len(), 1);
        let patched = m.apply(&object).expect("patch applies");
        assert_eq!(
            patched["spec"]["backend"],
            json!({"s3": {}, "repoPasswordSecretRef": {"name": "r", "key": "k"}})
        );
        assert!(mutate_restore(&patched).patch.is_empty());
    }

    #[test]
    fn legacy_password_ref_equal_to_current_is_dropped() {
        let r = json!({"name": "r", "key": "k"});
        let object = json!({"spec": {"backend": {"repoPasswordSecretRef": r, "s3": {"repoPasswordSecretRef": r}}}});
        let patched = mutate_backend_only(&object)
            .apply(&object)
            .expect("patch applies");
        assert_eq!(
            patched["spec"]["backend"],
            json!({"repoPasswordSecretRef": r, "s3": {}})
        );
    }

    #[test]
    fn legacy_password_ref_conflicting_is_left_for_validation() {
        let object = json!({"spec": {"backend": {"repoPasswordSecretRef": {"name": "a", "key": "k"},
            "s3": {"repoPasswordSecretRef": {"name": "b", "key": "k"}}}}});
        assert_eq!(mutate_check_like(&object), Mutation::default());
    }

    fn mutate_check_like(object: &Value) -> Mutation {
        mutate_object(Kind::Check, object)
    }

    #[test]
    fn malformed_sections_are_left_alone() {
        let object = json!({"spec": {"backup": "daily", "prune": 3, "backend": []}});
        assert_eq!(mutate_schedule(&object), Mutation::default());
    }

    #[test]
    fn endpoint_of_only_a_scheme_is_not_trimmed() {
        let object = json!({"spec": {"backend": {"s3": {"endpoint": "http://"}}}});
        assert!(mutate_backend_only(&object).patch.is_empty());
    }
}
