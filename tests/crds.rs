//! The generated CRDs: `manifests/crds.yaml` must be exactly what `baas crds` prints, and every
//! example manifest must pass its kind's schema.

use std::path::Path;

use baas::crd::{crds_yaml, schema_problems};

fn load_yaml_documents(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).expect("example is readable");
    let mut documents = Vec::new();
    for document in serde_norway::Deserializer::from_str(&text) {
        let value: serde_json::Value =
            serde::Deserialize::deserialize(document).expect("example is valid YAML");
        if !value.is_null() {
            documents.push(value);
        }
    }
    documents
}

#[test]
fn crds_yaml_has_not_drifted_from_the_types() {
    let generated = crds_yaml().expect("CRDs render");
    // the plain manifests and the chart's crds/ (which `helm install` applies) alike
    for file in ["manifests/crds.yaml", "charts/baas/crds/crds.yaml"] {
        let committed = std::fs::read_to_string(file).unwrap_or_default();
        assert!(
            generated == committed,
            "{file} differs from the Rust types; regenerate it with\n    scripts/render-manifests"
        );
    }
}

#[test]
fn every_example_passes_its_schema() {
    let mut seen = 0;
    for entry in std::fs::read_dir("manifests/examples").expect("examples folder") {
        let path = entry.expect("dir entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        for object in load_yaml_documents(&path) {
            if object["apiVersion"] != "backup.appuio.ch/v1alpha1" {
                continue;
            }
            let problems = schema_problems(&object);
            assert!(problems.is_empty(), "{}: {problems:?}", path.display());
            seen += 1;
        }
    }
    assert!(
        seen >= 7,
        "expected the seed's two examples and one per kind, saw {seen}"
    );
}

#[test]
fn seed_examples_are_present_verbatim() {
    let schedule = load_yaml_documents(Path::new("manifests/examples/schedule-seed.yaml"));
    assert_eq!(schedule[0]["spec"]["backup"]["schedule"], " 0 1 * * *");
    let restore = load_yaml_documents(Path::new("manifests/examples/restore-seed.yaml"));
    assert_eq!(
        restore[0]["spec"]["backend"]["s3"]["repoPasswordSecretRef"]["name"],
        "backup-repo"
    );
}

fn seed_schedule() -> serde_json::Value {
    load_yaml_documents(Path::new("manifests/examples/schedule-seed.yaml")).remove(0)
}

#[test]
fn misspelled_field_fails_the_schema_naming_the_field() {
    let mut schedule = seed_schedule();
    schedule["spec"]["backup"]["keepJob"] = 3.into();
    let problems = schema_problems(&schedule);
    assert_eq!(
        problems,
        [
            "spec.backup.keepJob: unknown field (kubectl explain schedule.spec.backup lists the fields)"
        ]
    );
}

#[test]
fn string_where_a_number_belongs_fails_the_schema_naming_the_field() {
    let mut schedule = seed_schedule();
    schedule["spec"]["prune"]["retention"]["keepLast"] = "five".into();
    let problems = schema_problems(&schedule);
    assert_eq!(
        problems,
        ["spec.prune.retention.keepLast: must be an integer"]
    );
}

#[test]
fn missing_required_field_fails_the_schema() {
    let mut schedule = seed_schedule();
    schedule["spec"]["backend"]["s3"]
        .as_object_mut()
        .expect("s3 is an object")
        .remove("bucket");
    let problems = schema_problems(&schedule);
    assert_eq!(problems, ["spec.backend.s3.bucket: Required value"]);
}

#[test]
fn unknown_kind_is_reported() {
    let mut schedule = seed_schedule();
    schedule["kind"] = "Snapshot".into();
    let problems = schema_problems(&schedule);
    assert!(problems[0].starts_with("kind: "), "{problems:?}");
}

/// Collects the path of every property that has no description.
fn undocumented(schema: &serde_json::Value, path: &str, missing: &mut Vec<String>) {
    if let Some(properties) = schema.get("properties").and_then(|p| p.as_object()) {
        for (name, child) in properties {
            let child_path = format!("{path}.{name}");
            let described = child
                .get("description")
                .and_then(|d| d.as_str())
                .is_some_and(|d| !d.trim().is_empty());
            // apiVersion, kind and metadata are the API server's own.
            if !described && !matches!(name.as_str(), "apiVersion" | "kind" | "metadata") {
                missing.push(child_path.clone());
            }
            undocumented(child, &child_path, missing);
        }
    }
    if let Some(items) = schema.get("items") {
        undocumented(items, &format!("{path}[]"), missing);
    }
}

#[test]
fn every_field_of_every_kind_has_documentation_for_kubectl_explain() {
    for kind in baas::crd::Kind::ALL {
        let schema = baas::crd::strict_schema(kind).expect("schema of a known kind");
        let mut missing = Vec::new();
        undocumented(&schema, kind.as_str(), &mut missing);
        assert!(
            missing.is_empty(),
            "fields without a doc comment: {missing:?}"
        );
    }
}

/// Collects the path of every string in a schema that has no `maxLength`.
fn unbounded_strings(schema: &serde_json::Value, path: &str, missing: &mut Vec<String>) {
    if schema.get("type").and_then(|t| t.as_str()) == Some("string")
        && schema.get("maxLength").is_none()
        && schema.get("enum").is_none()
    {
        missing.push(path.to_string());
    }
    if let Some(properties) = schema.get("properties").and_then(|p| p.as_object()) {
        for (name, child) in properties {
            unbounded_strings(child, &format!("{path}.{name}"), missing);
        }
    }
    if let Some(items) = schema.get("items") {
        unbounded_strings(items, &format!("{path}[]"), missing);
    }
}

#[test]
fn every_string_a_user_writes_has_a_max_length() {
    for kind in baas::crd::Kind::ALL {
        let schema = baas::crd::strict_schema(kind).expect("schema of a known kind");
        let mut missing = Vec::new();
        unbounded_strings(
            &schema["properties"]["spec"],
            &format!("{kind}.spec"),
            &mut missing,
        );
        assert!(missing.is_empty(), "strings without maxLength: {missing:?}");
    }
}
