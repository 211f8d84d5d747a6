//! Objects that do not fit their kind's type: every missing required field is named by its own
//! path, in the webhook and in `baas validate` alike.

use super::*;
use crate::webhook::validate_command::check_object;
use serde_json::json;

fn backend() -> Value {
    json!({
        "repoPasswordSecretRef": {"name": "backup-repo", "key": "password"},
        "s3": {
            "endpoint": "https://objects.example.com",
            "bucket": "baas",
            "accessKeyIDSecretRef": {"name": "backup-credentials", "key": "username"},
            "secretAccessKeySecretRef": {"name": "backup-credentials", "key": "password"}
        }
    })
}

fn object(kind: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "backup.appuio.ch/v1alpha1",
        "kind": kind,
        "metadata": {"name": "complete", "namespace": "team-a"},
        "spec": spec
    })
}

/// One object per kind (two for Restore, one per method) with every optional section present,
/// so that every required field of every schema occurs in one of them.
fn complete_objects() -> Vec<Value> {
    let section = |extra: Value| {
        let mut s =
            json!({"schedule": "0 1 * * *", "keepJobs": 3, "promURL": "http://pushgateway:9091"});
        if let (Some(s), Some(extra)) = (s.as_object_mut(), extra.as_object()) {
            s.extend(extra.clone());
        }
        s
    };
    vec![
        object(
            "Schedule",
            json!({
                "backend": backend(),
                "backup": section(json!({})),
                "check": section(json!({})),
                "prune": section(json!({"retention": {"keepLast": 5, "keepTags": ["monthly"]}})),
                "suspend": false
            }),
        ),
        object("Backup", json!({"backend": backend()})),
        object("Check", json!({"backend": backend()})),
        object(
            "Prune",
            json!({"backend": backend(), "retention": {"keepDaily": 7}}),
        ),
        object(
            "Restore",
            json!({
                "backend": backend(),
                "snapshot": "4f5a",
                "path": "/data/mypvc",
                "restoreMethod": {"s3": {
                    "endpoint": "https://objects.example.com",
                    "bucket": "restores",
                    "accessKeyIDSecretRef": {"name": "restore-credentials", "key": "username"},
                    "secretAccessKeySecretRef": {"name": "restore-credentials", "key": "password"}
                }}
            }),
        ),
        object(
            "Restore",
            json!({"backend": backend(), "restoreMethod": {"pvc": {"claimName": "data"}}}),
        ),
    ]
}

/// The paths of `instance` that `schema` requires, in the API server's notation.
fn required_paths(schema: &Value, instance: &Value, path: &str, out: &mut Vec<String>) {
    let join = |name: &str| {
        if path.is_empty() {
            name.to_string()
        } else {
            format!("{path}.{name}")
        }
    };
    for name in schema["required"].as_array().into_iter().flatten() {
        let name = name.as_str().expect("required names are strings");
        if instance.get(name).is_some() {
            out.push(join(name));
        }
    }
    for (name, child) in schema["properties"].as_object().into_iter().flatten() {
        if let Some(value) = instance.get(name).filter(|_| name != "status") {
            required_paths(child, value, &join(name), out);
        }
    }
}

fn without(object: &Value, path: &str) -> Value {
    let mut object = object.clone();
    let (parent, field) = path.rsplit_once('.').unwrap_or(("", path));
    let pointer = if parent.is_empty() {
        String::new()
    } else {
        format!("/{}", parent.replace('.', "/"))
    };
    object
        .pointer_mut(&pointer)
        .and_then(Value::as_object_mut)
        .map(|o| o.remove(field))
        .expect("the path exists in the complete object");
    object
}

const BACKEND_REQUIRED: [&str; 13] = [
    "spec",
    "spec.backend",
    "spec.backend.repoPasswordSecretRef.key",
    "spec.backend.repoPasswordSecretRef.name",
    "spec.backend.s3",
    "spec.backend.s3.accessKeyIDSecretRef",
    "spec.backend.s3.bucket",
    "spec.backend.s3.endpoint",
    "spec.backend.s3.secretAccessKeySecretRef",
    "spec.backend.s3.accessKeyIDSecretRef.key",
    "spec.backend.s3.accessKeyIDSecretRef.name",
    "spec.backend.s3.secretAccessKeySecretRef.key",
    "spec.backend.s3.secretAccessKeySecretRef.name",
];

/// Not required by the schema (the legacy place under `s3` is allowed too), but by the rules.
const PASSWORD_REF: &str = "spec.backend.repoPasswordSecretRef";

fn expected_required(object: &Value) -> BTreeSet<String> {
    let mut expected: BTreeSet<String> = BACKEND_REQUIRED.iter().map(|p| p.to_string()).collect();
    let extra: &[&str] = match (object["kind"].as_str(), &object["spec"]["restoreMethod"]) {
        (Some("Schedule"), _) => &[
            "spec.backup.schedule",
            "spec.check.schedule",
            "spec.prune.schedule",
        ],
        (Some("Restore"), method) if method.get("s3").is_some() => &[
            "spec.restoreMethod",
            "spec.restoreMethod.s3.endpoint",
            "spec.restoreMethod.s3.bucket",
            "spec.restoreMethod.s3.accessKeyIDSecretRef",
            "spec.restoreMethod.s3.accessKeyIDSecretRef.name",
            "spec.restoreMethod.s3.accessKeyIDSecretRef.key",
            "spec.restoreMethod.s3.secretAccessKeySecretRef",
            "spec.restoreMethod.s3.secretAccessKeySecretRef.name",
            "spec.restoreMethod.s3.secretAccessKeySecretRef.key",
        ],
        (Some("Restore"), _) => &["spec.restoreMethod", "spec.restoreMethod.pvc.claimName"],
        _ => &[],
    };
    expected.extend(extra.iter().map(|p| p.to_string()));
    expected
}

#[test]
fn complete_objects_are_admitted() {
    for object in complete_objects() {
        assert_eq!(offline(&object).denials, Vec::<String>::new(), "{object}");
        let verdict = check_object(&object).expect("one of ours");
        assert_eq!(verdict.denials, Vec::<String>::new(), "{object}");
    }
}

#[test]
fn every_required_field_of_every_kind_is_listed_here() {
    for object in complete_objects() {
        let kind = object_kind(&object);
        let schema = crate::crd::strict_schema(kind).expect("a kind of ours");
        let mut found = Vec::new();
        required_paths(&schema, &object, "", &mut found);
        let found: BTreeSet<String> = found.into_iter().collect();
        assert_eq!(found, expected_required(&object), "{kind}");
    }
}

#[test]
fn missing_required_field_is_named_by_its_own_path() {
    for object in complete_objects() {
        for path in expected_required(&object) {
            let broken = without(&object, &path);
            let expected = [format!("{path}: Required value")];
            assert_eq!(
                offline(&broken).denials,
                expected,
                "webhook, {}",
                object["kind"]
            );
            let verdict = check_object(&broken).expect("one of ours");
            assert_eq!(
                verdict.denials, expected,
                "baas validate, {}",
                object["kind"]
            );
        }
    }
}

#[test]
fn missing_repository_password_is_required_with_the_reason() {
    for object in complete_objects() {
        let broken = without(&object, PASSWORD_REF);
        let expected = [
            "spec.backend.repoPasswordSecretRef: Required value: restic cannot open the repository without its password",
        ];
        assert_eq!(offline(&broken).denials, expected, "{}", object["kind"]);
        let verdict = check_object(&broken).expect("one of ours");
        assert_eq!(verdict.denials, expected, "{}", object["kind"]);
    }
}

/// Every string of `instance` that `schema` describes: its path, JSON pointer and `maxLength`
/// (`None` when the schema sets none).
fn strings(
    schema: &Value,
    instance: &Value,
    path: &str,
    pointer: &str,
    out: &mut Vec<(String, String, Option<u64>)>,
) {
    match instance {
        Value::String(_) => out.push((
            path.to_string(),
            pointer.to_string(),
            schema["maxLength"].as_u64(),
        )),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let (path, pointer) = (format!("{path}[{i}]"), format!("{pointer}/{i}"));
                strings(&schema["items"], item, &path, &pointer, out);
            }
        }
        Value::Object(fields) => {
            for (name, value) in fields {
                if let Some(child) = schema["properties"].get(name) {
                    let path = if path.is_empty() {
                        name.clone()
                    } else {
                        format!("{path}.{name}")
                    };
                    strings(child, value, &path, &format!("{pointer}/{name}"), out);
                }
            }
        }
        _ => {}
    }
}

#[test]
fn string_over_its_limit_is_denied_alike_by_webhook_and_schema() {
    let mut checked = 0;
    for object in complete_objects() {
        let kind = object_kind(&object);
        let schema = crate::crd::strict_schema(kind).expect("a kind of ours");
        let mut found = Vec::new();
        strings(
            &schema["properties"]["spec"],
            &object["spec"],
            "spec",
            "/spec",
            &mut found,
        );
        for (path, pointer, limit) in found {
            let limit = limit.unwrap_or_else(|| panic!("{kind} {path} has no maxLength"));
            let mut long = object.clone();
            let length = usize::try_from(limit).expect("a small limit") + 1;
            *long.pointer_mut(&pointer).expect("found above") = json!("a".repeat(length));
            let expected = [format!(
                "{path}: {}",
                crate::crd::schema::too_long(limit, length)
            )];
            assert_eq!(offline(&long).denials, expected, "webhook, {kind}");
            let verdict = check_object(&long).expect("one of ours");
            assert_eq!(verdict.denials, expected, "baas validate, {kind}");
            checked += 1;
        }
    }
    assert!(checked > 40, "checked only {checked} strings");
}

fn offline(object: &Value) -> Verdict {
    let kind = object_kind(object);
    validate_object(kind, object, ReviewContext::offline("team-a"))
}

fn object_kind(object: &Value) -> Kind {
    object["kind"]
        .as_str()
        .and_then(Kind::from_name)
        .expect("a test object of one of our kinds")
}
