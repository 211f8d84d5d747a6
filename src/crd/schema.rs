//! The CRD schemas as the API server applies them, made strict, and the problems an object
//! has against them, worded as the webhook words its own denials.

use jsonschema::JsonType;
use jsonschema::error::{TypeKind, ValidationErrorKind};
use serde_json::Value;

use super::{GROUP, Kind, VERSION, crd_of};

/// The OpenAPI v3 schema of a kind, made strict: every object that lists its properties
/// refuses unknown ones, as `kubectl apply --validate=strict` does, so a misspelled field is an
/// error instead of being silently pruned by the API server; and `int32` numbers stay in their
/// range.
pub fn strict_schema(kind: Kind) -> Option<serde_json::Value> {
    let crd = crd_of(kind);
    let version = crd.spec.versions.into_iter().next()?;
    let schema = version.schema?.open_api_v3_schema?;
    let mut value = serde_json::to_value(schema).ok()?;
    // The API server adds these to every kind, so the CRD's schema leaves them out.
    if let Some(properties) = value.get_mut("properties").and_then(|p| p.as_object_mut()) {
        properties.insert("apiVersion".into(), serde_json::json!({"type": "string"}));
        properties.insert("kind".into(), serde_json::json!({"type": "string"}));
        properties.insert("metadata".into(), serde_json::json!({"type": "object"}));
    }
    forbid_unknown_fields(&mut value);
    Some(value)
}

fn forbid_unknown_fields(schema: &mut serde_json::Value) {
    let Some(object) = schema.as_object_mut() else {
        return;
    };
    let preserves_unknown = object
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false);
    if object.contains_key("properties")
        && !object.contains_key("additionalProperties")
        && !preserves_unknown
    {
        object.insert("additionalProperties".into(), false.into());
    }
    // JSON Schema knows no `int32` format, so its range is spelled out; otherwise serde refuses
    // the number later, with no field path.
    if object.get("format").and_then(serde_json::Value::as_str) == Some("int32") {
        object.entry("minimum").or_insert_with(|| i32::MIN.into());
        object.entry("maximum").or_insert_with(|| i32::MAX.into());
    }
    for (_, child) in object.iter_mut() {
        match child {
            serde_json::Value::Array(items) => items.iter_mut().for_each(forbid_unknown_fields),
            other => forbid_unknown_fields(other),
        }
    }
}

/// Checks one object against its kind's strict schema. Each problem is one sentence that starts
/// with the most precise field path (`spec.backup.keepJobs: must be an integer`), worded as the
/// webhook words its own denials so one grep finds both; an unknown kind is a problem too.
pub fn schema_problems(object: &Value) -> Vec<String> {
    let name = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let Some(kind) = Kind::from_name(name) else {
        let known: Vec<&str> = Kind::ALL.into_iter().map(Kind::as_str).collect();
        return vec![format!(
            "kind: {name:?} is not a kind of {GROUP}/{VERSION} (expected one of {})",
            known.join(", ")
        )];
    };
    let Some(schema) = strict_schema(kind) else {
        return vec![format!(
            "schema of {kind}: the CRD has no OpenAPI v3 schema"
        )];
    };
    let validator = match jsonschema::validator_for(&schema) {
        Ok(validator) => validator,
        Err(error) => return vec![format!("schema of {kind}: {error}")],
    };
    validator
        .iter_errors(object)
        .flat_map(|error| {
            let path = field_path(object, error.instance_path().as_str());
            problem_sentences(kind, &path, error.kind(), error.instance())
        })
        .collect()
}

/// A JSON pointer in the API server's notation: `spec.retention.keepTags[1]`. Whether a
/// segment is a list index depends on the value it indexes, so the object is walked.
fn field_path(object: &Value, pointer: &str) -> String {
    let mut path = String::new();
    let mut value = Some(object);
    for segment in pointer.split('/').skip(1) {
        let segment = segment.replace("~1", "/").replace("~0", "~");
        match value {
            Some(Value::Array(items)) => {
                path.push_str(&format!("[{segment}]"));
                value = segment.parse::<usize>().ok().and_then(|i| items.get(i));
            }
            other => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&segment);
                value = other.and_then(|v| v.get(&segment));
            }
        }
    }
    path
}

fn child(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

/// The sentences for one schema error. They never quote the value: a value in the wrong place
/// may be a credential pasted by mistake, and the path already says where to look.
fn problem_sentences(
    kind: Kind,
    path: &str,
    error: &ValidationErrorKind,
    value: &Value,
) -> Vec<String> {
    let at = |sentence: String| {
        let path = if path.is_empty() { "(root)" } else { path };
        vec![format!("{path}: {sentence}")]
    };
    match error {
        ValidationErrorKind::Required { property } => {
            let field = property
                .as_str()
                .map_or_else(|| property.to_string(), str::to_string);
            vec![format!("{}: Required value", child(path, &field))]
        }
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            let explain = child(&kind.as_str().to_ascii_lowercase(), &strip_indices(path));
            unexpected
                .iter()
                .map(|field| {
                    format!(
                        "{}: unknown field (kubectl explain {explain} lists the fields)",
                        child(path, field)
                    )
                })
                .collect()
        }
        ValidationErrorKind::Type { kind } => {
            let types: Vec<JsonType> = match kind {
                TypeKind::Single(single) => vec![*single],
                TypeKind::Multiple(set) => set.iter().collect(),
            };
            let names: Vec<&str> = types.into_iter().map(type_name).collect();
            at(format!("must be {}", names.join(" or ")))
        }
        ValidationErrorKind::MaxLength { limit } => at(too_long(*limit, length_of(value))),
        ValidationErrorKind::MinLength { limit } => at(format!(
            "must be at least {limit} characters long, found {}",
            length_of(value)
        )),
        ValidationErrorKind::MaxItems { limit } => at(format!("must have at most {limit} items")),
        ValidationErrorKind::MinItems { limit } => at(format!("must have at least {limit} items")),
        ValidationErrorKind::Minimum { limit } => at(format!("must be at least {limit}")),
        ValidationErrorKind::Maximum { limit } => at(format!("must be at most {limit}")),
        ValidationErrorKind::Enum { options } => {
            let options: Vec<String> = options
                .as_array()
                .into_iter()
                .flatten()
                .map(|o| o.as_str().map_or_else(|| o.to_string(), str::to_string))
                .collect();
            at(format!("must be one of {}", options.join(", ")))
        }
        ValidationErrorKind::Pattern { pattern } => at(format!("must match {pattern}")),
        ValidationErrorKind::Format { format } => at(format!("must be in the {format} format")),
        other => at(format!("breaks the schema's {:?} rule", other.keyword())),
    }
}

/// The sentence for a string over its limit, the same in the schema and in the webhook.
pub fn too_long(limit: u64, found: usize) -> String {
    format!("must be at most {limit} characters long, found {found}")
}

/// Length as the API server counts it for `maxLength`: in characters, not bytes.
fn length_of(value: &Value) -> usize {
    value.as_str().map_or(0, |s| s.chars().count())
}

fn strip_indices(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut in_index = false;
    for c in path.chars() {
        match c {
            '[' => in_index = true,
            ']' => in_index = false,
            c if !in_index => out.push(c),
            _ => {}
        }
    }
    out
}

fn type_name(kind: JsonType) -> &'static str {
    match kind {
        JsonType::Null => "null",
        JsonType::Boolean => "true or false",
        JsonType::Integer => "an integer",
        JsonType::Number => "a number",
        JsonType::String => "a string",
        JsonType::Array => "a list",
        JsonType::Object => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn schedule() -> Value {
        json!({
            "apiVersion": "backup.appuio.ch/v1alpha1",
            "kind": "Schedule",
            "metadata": {"name": "nightly", "namespace": "team-a"},
            "spec": {
                "backend": {
                    "repoPasswordSecretRef": {"name": "backup-repo", "key": "password"},
                    "s3": {
                        "endpoint": "https://objects.example.com",
                        "bucket": "baas",
                        "accessKeyIDSecretRef": {"name": "backup-credentials", "key": "username"},
                        "secretAccessKeySecretRef": {"name": "backup-credentials", "key": "password"}
                    }
                },
                "backup": {"schedule": "0 1 * * *"},
                "prune": {"schedule": "0 4 * * *", "retention": {"keepLast": 5}}
            }
        })
    }

    fn problems_with(pointer: &str, value: Value) -> Vec<String> {
        let mut object = schedule();
        let (parent, field) = pointer.rsplit_once('/').expect("a pointer below the root");
        object
            .pointer_mut(parent)
            .and_then(Value::as_object_mut)
            .expect("the parent exists")
            .insert(field.to_string(), value);
        schema_problems(&object)
    }

    #[test]
    fn valid_schedule_has_no_problems() {
        assert_eq!(schema_problems(&schedule()), Vec::<String>::new());
    }

    #[test]
    fn wrong_types_are_named_in_the_projects_words() {
        let cases = [
            (
                "/spec/backup/keepJobs",
                json!("ten"),
                "spec.backup.keepJobs: must be an integer",
            ),
            (
                "/spec/suspend",
                json!("yes"),
                "spec.suspend: must be true or false",
            ),
            (
                "/spec/backup/schedule",
                json!(5),
                "spec.backup.schedule: must be a string",
            ),
            (
                "/spec/backend",
                json!("s3"),
                "spec.backend: must be an object",
            ),
            (
                "/spec/prune/retention/keepTags",
                json!("monthly"),
                "spec.prune.retention.keepTags: must be a list",
            ),
            (
                "/spec/prune/retention/keepTags",
                json!(["monthly", 7]),
                "spec.prune.retention.keepTags[1]: must be a string",
            ),
        ];
        for (pointer, value, expected) in cases {
            assert_eq!(problems_with(pointer, value), [expected], "{pointer}");
        }
    }

    #[test]
    fn integer_beyond_int32_is_named_at_its_field() {
        // serde would refuse it later with "spec: invalid value: integer ..., expected i32".
        assert_eq!(
            problems_with("/spec/backup/keepJobs", json!(99_999_999_999_i64)),
            ["spec.backup.keepJobs: must be at most 2147483647"]
        );
    }

    #[test]
    fn unknown_field_is_named_by_its_own_path() {
        let mut object = schedule();
        object["spec"]["backup"]["keepJob"] = json!(3);
        object["spec"]["backup"]["promUrl"] = json!("http://pushgateway:9091");
        assert_eq!(
            schema_problems(&object),
            [
                "spec.backup.keepJob: unknown field (kubectl explain schedule.spec.backup lists the fields)",
                "spec.backup.promUrl: unknown field (kubectl explain schedule.spec.backup lists the fields)",
            ]
        );
    }

    #[test]
    fn schema_problems_never_echo_the_value() {
        let problems = problems_with("/spec/backup/keepJobs", json!("hunter2"));
        assert!(
            problems.iter().all(|p| !p.contains("hunter2")),
            "{problems:?}"
        );
    }
}
