//! The agent's identity in each namespace that has runs: ServiceAccount `baas-agent`, a Role
//! that lets it find PVCs and pods, exec backup commands and read the namespace's Jobs (to
//! tell a restic lock of a finished run from one of a live run), and the RoleBinding between
//! them.

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::api::{ObjectMeta, Patch, PatchParams};
use kube::{Api, Client};
use std::collections::BTreeMap;
use tracing::info;

use super::FIELD_MANAGER;
use crate::Result;
use crate::job::{AGENT_SERVICE_ACCOUNT, LABEL_MANAGED_BY, MANAGER};

fn meta(namespace: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(AGENT_SERVICE_ACCOUNT.into()),
        namespace: Some(namespace.into()),
        labels: Some(BTreeMap::from([(
            LABEL_MANAGED_BY.to_string(),
            MANAGER.to_string(),
        )])),
        ..ObjectMeta::default()
    }
}

/// The three objects of the agent's RBAC in `namespace`.
pub fn agent_rbac(namespace: &str) -> (ServiceAccount, Role, RoleBinding) {
    let rule_in = |group: &str, resources: &[&str], verbs: &[&str]| PolicyRule {
        api_groups: Some(vec![group.to_string()]),
        resources: Some(resources.iter().map(|r| r.to_string()).collect()),
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
        ..PolicyRule::default()
    };
    let rule = |resources: &[&str], verbs: &[&str]| rule_in("", resources, verbs);
    let account = ServiceAccount {
        metadata: meta(namespace),
        ..ServiceAccount::default()
    };
    let role = Role {
        metadata: meta(namespace),
        rules: Some(vec![
            rule(&["pods", "persistentvolumeclaims"], &["get", "list"]),
            rule(&["pods/exec"], &["create", "get"]),
            rule_in("batch", &["jobs"], &["get", "list"]),
        ]),
    };
    let binding = RoleBinding {
        metadata: meta(namespace),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: AGENT_SERVICE_ACCOUNT.into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: AGENT_SERVICE_ACCOUNT.into(),
            namespace: Some(namespace.into()),
            ..Subject::default()
        }]),
    };
    (account, role, binding)
}

/// Applies the agent's RBAC in `namespace` (server-side apply: a no-op when it is in place).
pub async fn apply_agent_rbac(client: &Client, namespace: &str) -> Result<()> {
    let (account, role, binding) = agent_rbac(namespace);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .patch(
            AGENT_SERVICE_ACCOUNT,
            &params,
            &Patch::Apply(&with_type(account, "v1", "ServiceAccount")?),
        )
        .await?;
    Api::<Role>::namespaced(client.clone(), namespace)
        .patch(
            AGENT_SERVICE_ACCOUNT,
            &params,
            &Patch::Apply(&with_type(role, "rbac.authorization.k8s.io/v1", "Role")?),
        )
        .await?;
    Api::<RoleBinding>::namespaced(client.clone(), namespace)
        .patch(
            AGENT_SERVICE_ACCOUNT,
            &params,
            &Patch::Apply(&with_type(
                binding,
                "rbac.authorization.k8s.io/v1",
                "RoleBinding",
            )?),
        )
        .await?;
    info!(namespace, "agent RBAC applied");
    Ok(())
}

/// Server-side apply needs `apiVersion` and `kind` in the body, which k8s-openapi's typed
/// objects leave out when serialized on their own.
pub fn with_type(
    object: impl serde::Serialize,
    api_version: &str,
    kind: &str,
) -> Result<serde_json::Value> {
    let mut value =
        serde_json::to_value(object).map_err(|e| crate::Error::Serialization(e.to_string()))?;
    if let Some(map) = value.as_object_mut() {
        map.insert("apiVersion".into(), api_version.into());
        map.insert("kind".into(), kind.into());
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_role_allows_exec_and_reading_pods_claims_and_jobs_only() {
        let (account, role, binding) = agent_rbac("team");
        assert_eq!(account.metadata.name.as_deref(), Some("baas-agent"));
        let rules = role.rules.expect("rules");
        let verbs: Vec<(Vec<String>, Vec<String>)> = rules
            .iter()
            .map(|r| (r.resources.clone().unwrap_or_default(), r.verbs.clone()))
            .collect();
        assert!(
            verbs
                .iter()
                .any(|(res, v)| res.contains(&"pods/exec".to_string())
                    && v.contains(&"create".to_string()))
        );
        let jobs = rules
            .iter()
            .find(|r| r.resources.as_deref() == Some(&["jobs".to_string()][..]))
            .expect("a rule for Jobs");
        assert_eq!(jobs.api_groups.as_deref(), Some(&["batch".to_string()][..]));
        assert_eq!(jobs.verbs, ["get", "list"]);
        assert!(verbs.iter().all(|(_, v)| {
            !v.iter()
                .any(|v| v == "delete" || v == "update" || v == "patch")
        }));
        let subject = &binding.subjects.expect("subjects")[0];
        assert_eq!(
            (subject.name.as_str(), subject.namespace.as_deref()),
            ("baas-agent", Some("team"))
        );
        assert_eq!(binding.role_ref.name, "baas-agent");
    }
}
