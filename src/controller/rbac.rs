//! The agent's identity in each namespace that has runs: the ServiceAccount `baas-agent` and a
//! RoleBinding that grants it the ClusterRole `baas-agent`, which `manifests/rbac.yaml` ships
//! with the rules of [`agent_rules`]. The operator writes no Role: it may bind that one
//! ClusterRole and nothing else, so its account cannot hand out rights it was not given.

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{PolicyRule, RoleBinding, RoleRef, Subject};
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, Preconditions};
use kube::{Api, Client};
use std::collections::BTreeMap;
use tracing::info;

use super::context::FIELD_MANAGER;
use crate::Result;
use crate::job::{AGENT_SERVICE_ACCOUNT, LABEL_MANAGED_BY, MANAGER};

/// Name of the ClusterRole in `manifests/rbac.yaml` that holds the agent's rules.
pub const AGENT_CLUSTER_ROLE: &str = "baas-agent";

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

/// What the agent calls, always in its own namespace (the RoleBinding limits the ClusterRole
/// to it): it finds PVCs and pods, execs backup commands, and reads the namespace's Jobs to
/// tell a restic lock of a finished run from one of a live run. `manifests/rbac.yaml` ships
/// exactly these rules as the ClusterRole [`AGENT_CLUSTER_ROLE`]; a test keeps the two equal.
pub fn agent_rules() -> Vec<PolicyRule> {
    let rule_in = |group: &str, resources: &[&str], verbs: &[&str]| PolicyRule {
        api_groups: Some(vec![group.to_string()]),
        resources: Some(resources.iter().map(|r| r.to_string()).collect()),
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
        ..PolicyRule::default()
    };
    let rule = |resources: &[&str], verbs: &[&str]| rule_in("", resources, verbs);
    vec![
        rule(&["pods", "persistentvolumeclaims"], &["get", "list"]),
        rule(&["pods/exec"], &["create", "get"]),
        rule_in("batch", &["jobs"], &["get", "list"]),
    ]
}

/// The roleRef of the agent's RoleBinding: the shipped ClusterRole.
fn agent_role_ref() -> RoleRef {
    RoleRef {
        api_group: Some("rbac.authorization.k8s.io".into()),
        kind: "ClusterRole".into(),
        name: AGENT_CLUSTER_ROLE.into(),
    }
}

/// The two objects of the agent's RBAC in `namespace`.
pub fn agent_rbac(namespace: &str) -> (ServiceAccount, RoleBinding) {
    let account = ServiceAccount {
        metadata: meta(namespace),
        ..ServiceAccount::default()
    };
    let binding = RoleBinding {
        metadata: meta(namespace),
        role_ref: agent_role_ref(),
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: AGENT_SERVICE_ACCOUNT.into(),
            namespace: Some(namespace.into()),
            ..Subject::default()
        }]),
    };
    (account, binding)
}

/// Applies the agent's RBAC in `namespace` (server-side apply: a no-op when it is in place).
/// A RoleBinding left by an older version points at a Role `baas-agent`; `roleRef` cannot
/// change, so that binding is deleted by name and applied again.
pub async fn apply_agent_rbac(client: &Client, namespace: &str) -> Result<()> {
    let (account, binding) = agent_rbac(namespace);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .patch(
            AGENT_SERVICE_ACCOUNT,
            &params,
            &Patch::Apply(&with_type(account, "v1", "ServiceAccount")?),
        )
        .await?;
    let bindings = Api::<RoleBinding>::namespaced(client.clone(), namespace);
    let body = with_type(binding, "rbac.authorization.k8s.io/v1", "RoleBinding")?;
    match bindings
        .patch(AGENT_SERVICE_ACCOUNT, &params, &Patch::Apply(&body))
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 422 => {
            let Some(stale) = bindings.get_opt(AGENT_SERVICE_ACCOUNT).await? else {
                return Err(kube::Error::Api(status).into());
            };
            if stale.role_ref == agent_role_ref() {
                // Invalid for another reason: replacing the binding would not help.
                return Err(kube::Error::Api(status).into());
            }
            // Only this very binding: a concurrent replacement by another replica has a new uid.
            let delete = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: stale.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match bindings.delete(AGENT_SERVICE_ACCOUNT, &delete).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {}
                Err(error) => return Err(error.into()),
            }
            bindings
                .patch(AGENT_SERVICE_ACCOUNT, &params, &Patch::Apply(&body))
                .await?;
            info!(
                namespace,
                old_kind = %stale.role_ref.kind,
                old_name = %stale.role_ref.name,
                "agent RoleBinding of an older version replaced: it now binds the ClusterRole baas-agent"
            );
        }
        Err(error) => return Err(error.into()),
    }
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
mod tests;
