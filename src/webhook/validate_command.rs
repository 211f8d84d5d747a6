//! `baas validate`: the webhook's rules over manifest files, for CI pipelines and GitOps
//! repositories. As the API server does, each object is checked against its schema, defaulted
//! by the mutating rules, then validated (offline: no Secret or PVC lookups).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use super::mutate::mutate_object;
use super::validate::{ReviewContext, Verdict, validate_object};
use crate::crd::{GROUP, Kind, VERSION};
use crate::{Error, Result};

/// One object of ours found in a file, with its verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// File it came from (`-` for stdin).
    pub file: String,
    /// `Kind/name`.
    pub object: String,
    /// Denials and warnings (mutation warnings first).
    pub verdict: Verdict,
}

/// Checks one object as the API server would: schema, then defaults, then the rules. `None`
/// for objects of other API groups.
pub fn check_object(object: &Value) -> Option<Verdict> {
    let api_version = object.get("apiVersion").and_then(Value::as_str)?;
    let (group, version) = api_version.split_once('/')?;
    if group != GROUP {
        return None;
    }
    if version != VERSION {
        return Some(Verdict {
            denials: vec![format!(
                "apiVersion: {api_version:?} is not served; use {GROUP}/{VERSION}"
            )],
            warnings: Vec::new(),
        });
    }
    let schema = crate::crd::schema_problems(object);
    if !schema.is_empty() {
        return Some(Verdict {
            denials: schema,
            warnings: Vec::new(),
        });
    }
    // The schema check above denies every kind that is not ours.
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .and_then(Kind::from_name)?;
    let mutation = mutate_object(kind, object);
    let mutated = match mutation.apply(object) {
        Ok(mutated) => mutated,
        Err(error) => {
            return Some(Verdict {
                denials: vec![format!("(root): defaults cannot be applied: {error}")],
                warnings: mutation.warnings,
            });
        }
    };
    let namespace = object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default");
    let mut verdict = validate_object(kind, &mutated, ReviewContext::offline(namespace));
    let mut warnings = mutation.warnings;
    warnings.append(&mut verdict.warnings);
    verdict.warnings = warnings;
    Some(verdict)
}

/// Parses a YAML or JSON stream with any number of documents; `kind: List` is expanded.
pub fn parse_documents(text: &str) -> std::result::Result<Vec<Value>, String> {
    let mut objects = Vec::new();
    for document in serde_norway::Deserializer::from_str(text) {
        let value = Value::deserialize(document).map_err(|e| e.to_string())?;
        match value {
            Value::Null => {}
            Value::Object(ref map)
                if map.get("kind").and_then(Value::as_str) == Some("List")
                    && map.get("items").is_some_and(Value::is_array) =>
            {
                objects.extend(map["items"].as_array().into_iter().flatten().cloned());
            }
            other => objects.push(other),
        }
    }
    Ok(objects)
}

/// Checks every object of ours in one text.
pub fn check_text(file: &str, text: &str) -> Result<Vec<Finding>> {
    let objects =
        parse_documents(text).map_err(|e| Error::Serialization(format!("{file}: {e}")))?;
    Ok(objects
        .iter()
        .filter_map(|object| {
            let verdict = check_object(object)?;
            let kind = object.get("kind").and_then(Value::as_str).unwrap_or("?");
            let name = object
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("?");
            Some(Finding {
                file: file.to_string(),
                object: format!("{kind}/{name}"),
                verdict,
            })
        })
        .collect())
}

fn manifest_files(path: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let io = |source| Error::Io {
        path: path.display().to_string(),
        source,
    };
    if !path.is_dir() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(io)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<std::io::Result<_>>()
        .map_err(io)?;
    entries.sort();
    for entry in entries {
        let is_manifest = entry
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"));
        if entry.is_dir() {
            manifest_files(&entry, out)?;
        } else if is_manifest {
            out.push(entry);
        }
    }
    Ok(())
}

/// Checks files, directories (searched for `*.yaml`, `*.yml`, `*.json`) and `-` (stdin);
/// prints every denial as `FILE: Kind/name: field.path: message` and every warning as
/// `Warning: FILE: Kind/name: ...`. Returns whether everything would be admitted.
pub fn validate_paths(paths: &[PathBuf], out: &mut impl Write) -> Result<bool> {
    let mut files = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            files.push(path.clone());
        } else {
            manifest_files(path, &mut files)?;
        }
    }
    let mut admitted = true;
    let mut checked = 0usize;
    for file in &files {
        let name = file.display().to_string();
        let text = if name == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|source| Error::Io {
                    path: "-".into(),
                    source,
                })?;
            text
        } else {
            std::fs::read_to_string(file).map_err(|source| Error::Io {
                path: name.clone(),
                source,
            })?
        };
        for finding in check_text(&name, &text)? {
            checked += 1;
            admitted &= finding.verdict.allowed();
            write_finding(&finding, out).map_err(|source| Error::Io {
                path: "stdout".into(),
                source,
            })?;
        }
    }
    tracing::debug!(
        files = files.len(),
        objects = checked,
        admitted,
        "validated"
    );
    Ok(admitted)
}

fn write_finding(finding: &Finding, out: &mut impl Write) -> std::io::Result<()> {
    let Finding {
        file,
        object,
        verdict,
    } = finding;
    for warning in &verdict.warnings {
        writeln!(out, "Warning: {file}: {object}: {warning}")?;
    }
    for denial in &verdict.denials {
        writeln!(out, "{file}: {object}: {denial}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED_RESTORE: &str = r#"
apiVersion: backup.appuio.ch/v1alpha1
kind: Restore
metadata:
  name: restore-test
spec:
  restoreMethod:
    s3:
      endpoint: http://10.144.1.224:9000
      bucket: restoremini
      accessKeyIDSecretRef:
        name: backup-credentials
        key: username
      secretAccessKeySecretRef:
        name: backup-credentials
        key: password
  backend:
    s3:
      endpoint: http://10.144.1.224:9000
      bucket: baas
      accessKeyIDSecretRef:
        name: backup-credentials
        key: username
      secretAccessKeySecretRef:
        name: backup-credentials
        key: password
      repoPasswordSecretRef:
        name: backup-repo
        key: password
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: unrelated
"#;

    #[test]
    fn seed_restore_is_admitted_with_a_move_warning() {
        let findings = check_text("seed.yaml", SEED_RESTORE).expect("parses");
        assert_eq!(findings.len(), 1, "the ConfigMap is skipped");
        assert!(findings[0].verdict.allowed(), "{findings:?}");
        assert_eq!(findings[0].verdict.warnings.len(), 1);
    }

    #[test]
    fn typo_in_field_is_denied_by_schema() {
        let text = SEED_RESTORE.replace("bucket: baas", "buckett: baas");
        let findings = check_text("typo.yaml", &text).expect("parses");
        assert!(!findings[0].verdict.allowed());
        assert!(
            findings[0].verdict.message().contains("spec.backend.s3"),
            "{findings:?}"
        );
    }

    #[test]
    fn denial_is_printed_with_file_object_and_path() {
        let text = SEED_RESTORE.replace("bucket: baas", "bucket: BAAS");
        let mut out = Vec::new();
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("restore.yaml");
        std::fs::write(&file, text).expect("write");
        let admitted = validate_paths(&[dir.path().to_path_buf()], &mut out).expect("runs");
        assert!(!admitted);
        let printed = String::from_utf8(out).expect("utf-8");
        let expected = format!(
            "{}: Restore/restore-test: spec.backend.s3.bucket: bucket name \"BAAS\" may hold only lowercase letters, digits, '.' and '-', found 'B'",
            file.display()
        );
        assert!(printed.lines().any(|l| l == expected), "{printed}");
        assert!(
            printed.lines().any(|l| l.starts_with("Warning: ")),
            "{printed}"
        );
    }

    #[test]
    fn invalid_yaml_is_an_error() {
        assert!(check_text("bad.yaml", "kind: [unclosed").is_err());
    }
}
