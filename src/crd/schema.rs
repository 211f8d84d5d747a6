//! The CRD schemas as the API server applies them, made strict, and the problems an object
//! has against them, worded as the webhook words its own denials.

use super::{GROUP, KINDS, VERSION, all_crds};

/// The OpenAPI v3 schema of a kind, made strict: every object that lists its properties
/// refuses unknown ones, as `kubectl apply --validate=strict` does. A misspelled field is then
/// an error instead of being silently pruned by the API server.
pub fn strict_schema(kind: &str) -> Option<serde_json::Value> {
    let crd = all_crds().into_iter().find(|c| c.spec.names.kind == kind)?;
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
    for (_, child) in object.iter_mut() {
        match child {
            serde_json::Value::Array(items) => items.iter_mut().for_each(forbid_unknown_fields),
            other => forbid_unknown_fields(other),
        }
    }
}

/// Checks one object against its kind's strict schema. Each problem is one line that starts
/// with the field path (`spec.backup.keepJobs: ...`); an unknown kind is a problem too.
pub fn schema_problems(object: &serde_json::Value) -> Vec<String> {
    let kind = object
        .get("kind")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default();
    let Some(schema) = strict_schema(kind) else {
        return vec![format!(
            "kind: {kind:?} is not a kind of {GROUP}/{VERSION} (expected one of {})",
            KINDS.join(", ")
        )];
    };
    let validator = match jsonschema::validator_for(&schema) {
        Ok(validator) => validator,
        Err(error) => return vec![format!("schema of {kind}: {error}")],
    };
    validator
        .iter_errors(object)
        .map(|error| {
            let pointer = error.instance_path().to_string();
            let path = pointer.trim_start_matches('/').replace('/', ".");
            let path = if path.is_empty() {
                "(root)".into()
            } else {
                path
            };
            format!("{path}: {error}")
        })
        .collect()
}
