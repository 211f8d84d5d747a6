//! `manifests/rbac.yaml` as shipped: the operator's roles write no Role and cannot escalate,
//! read Secrets only by name, and the agent's ClusterRole holds exactly the rules the agent
//! uses.

use baas::controller::rbac::{AGENT_CLUSTER_ROLE, agent_rules};
use k8s_openapi::api::rbac::v1::PolicyRule;
use serde_json::Value;

fn rbac_documents() -> Vec<Value> {
    let text = std::fs::read_to_string("manifests/rbac.yaml").expect("rbac.yaml is readable");
    serde_norway::Deserializer::from_str(&text)
        .map(|document| serde::Deserialize::deserialize(document).expect("valid YAML"))
        .filter(|value: &Value| !value.is_null())
        .collect()
}

fn rules(role: &Value) -> Vec<PolicyRule> {
    serde_json::from_value(role["rules"].clone()).expect("rules are PolicyRules")
}

/// Every rule of every Role and ClusterRole bound to the ServiceAccount `baas-operator`.
fn operator_rules() -> Vec<PolicyRule> {
    let documents = rbac_documents();
    let bound: Vec<(String, String)> = documents
        .iter()
        .filter(|d| d["kind"] == "RoleBinding" || d["kind"] == "ClusterRoleBinding")
        .filter(|d| {
            d["subjects"].as_array().is_some_and(|subjects| {
                subjects
                    .iter()
                    .any(|s| s["kind"] == "ServiceAccount" && s["name"] == "baas-operator")
            })
        })
        .map(|d| {
            (
                d["roleRef"]["kind"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                d["roleRef"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    assert!(
        bound.len() >= 2,
        "the ClusterRole and the leader-election Role"
    );
    bound
        .iter()
        .flat_map(|(kind, name)| {
            let role = documents
                .iter()
                .find(|d| d["kind"] == kind.as_str() && d["metadata"]["name"] == name.as_str())
                .unwrap_or_else(|| panic!("{kind} {name} is bound but not shipped"));
            rules(role)
        })
        .collect()
}

fn has(list: &Option<Vec<String>>, item: &str) -> bool {
    list.iter().flatten().any(|x| x == item || x == "*")
}

#[test]
fn operator_writes_no_role_and_cannot_escalate() {
    for rule in operator_rules() {
        assert!(
            !(has(&rule.api_groups, "rbac.authorization.k8s.io") && has(&rule.resources, "roles")),
            "the operator holds no verb on roles: {rule:?}"
        );
        assert!(
            !rule.verbs.iter().any(|v| v == "escalate" || v == "*"),
            "{rule:?}"
        );
        if rule.verbs.iter().any(|v| v == "bind") {
            assert_eq!(rule.verbs, ["bind"], "{rule:?}");
            assert_eq!(
                rule.resources.as_deref(),
                Some(&["clusterroles".to_string()][..])
            );
            assert_eq!(
                rule.resource_names.as_deref(),
                Some(&[AGENT_CLUSTER_ROLE.to_string()][..]),
                "the operator may bind the agent's ClusterRole and nothing else"
            );
        }
        if has(&rule.resources, "rolebindings") && rule.verbs.iter().any(|v| v == "delete") {
            assert_eq!(
                rule.resource_names.as_deref(),
                Some(&["baas-agent".to_string()][..]),
                "only the agent's own binding may be deleted: {rule:?}"
            );
        }
    }
}

#[test]
fn operator_reads_secrets_by_name_only() {
    let secrets: Vec<PolicyRule> = operator_rules()
        .into_iter()
        .filter(|r| has(&r.api_groups, "") && has(&r.resources, "secrets"))
        .collect();
    assert_eq!(secrets.len(), 1, "{secrets:?}");
    assert_eq!(secrets[0].verbs, ["get"], "no list or watch of Secrets");
}

#[test]
fn operator_holds_none_of_the_agents_exec_rights() {
    for rule in operator_rules() {
        assert!(!has(&rule.resources, "pods/exec"), "{rule:?}");
    }
}

#[test]
fn shipped_agent_cluster_role_has_exactly_the_agents_rules() {
    let documents = rbac_documents();
    let role = documents
        .iter()
        .find(|d| d["kind"] == "ClusterRole" && d["metadata"]["name"] == AGENT_CLUSTER_ROLE)
        .expect("manifests/rbac.yaml ships the ClusterRole baas-agent");
    assert_eq!(rules(role), agent_rules());
}
