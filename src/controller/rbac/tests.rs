use super::*;
use crate::controller::fixtures::{Handle, mock_client, next, respond};
use http::Method;
use serde_json::{Value, json};

#[test]
fn agent_rules_allow_exec_and_reading_pods_claims_and_jobs_only() {
    let rules = agent_rules();
    let verbs: Vec<(Vec<String>, Vec<String>)> = rules
        .iter()
        .map(|r| (r.resources.clone().unwrap_or_default(), r.verbs.clone()))
        .collect();
    assert!(verbs.iter().any(
        |(res, v)| res.contains(&"pods/exec".to_string()) && v.contains(&"create".to_string())
    ));
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
    assert!(
        verbs
            .iter()
            .all(|(res, _)| !res.iter().any(|r| r == "secrets")),
        "the agent reads credentials from its environment, never from the API"
    );
}

#[test]
fn agent_binding_grants_the_shipped_cluster_role_to_the_agent_account() {
    let (account, binding) = agent_rbac("team");
    assert_eq!(account.metadata.name.as_deref(), Some("baas-agent"));
    assert_eq!(binding.metadata.name.as_deref(), Some("baas-agent"));
    assert_eq!(
        (
            binding.role_ref.api_group.as_deref(),
            binding.role_ref.kind.as_str(),
            binding.role_ref.name.as_str()
        ),
        (
            Some("rbac.authorization.k8s.io"),
            "ClusterRole",
            "baas-agent"
        )
    );
    let subjects = binding.subjects.expect("subjects");
    assert_eq!(subjects.len(), 1);
    assert_eq!(
        (
            subjects[0].kind.as_str(),
            subjects[0].name.as_str(),
            subjects[0].namespace.as_deref()
        ),
        ("ServiceAccount", "baas-agent", Some("team"))
    );
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
        "reason": reason, "code": code, "message": message})
}

fn cannot_change_role_ref() -> Value {
    status(
        422,
        "Invalid",
        "RoleBinding.rbac.authorization.k8s.io \"baas-agent\" is invalid: roleRef: Invalid value: {\"apiGroup\":\"rbac.authorization.k8s.io\",\"kind\":\"ClusterRole\",\"name\":\"baas-agent\"}: cannot change roleRef",
    )
}

fn binding_of(kind: &str) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "baas-agent", "namespace": "team", "uid": "old-uid"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": "baas-agent"},
        "subjects": [{"kind": "ServiceAccount", "name": "baas-agent", "namespace": "team"}]})
}

/// Runs `apply_agent_rbac` against `server`, which answers every request and returns them.
async fn apply_with<F, Fut>(server: F) -> (Result<()>, Vec<(Method, String, Value)>)
where
    F: FnOnce(Handle) -> Fut,
    Fut: std::future::Future<Output = Vec<(Method, String, Value)>> + std::marker::Send + 'static,
{
    let (client, handle) = mock_client();
    let server = tokio::spawn(server(handle));
    let result = apply_agent_rbac(&client, "team").await;
    drop(client);
    (result, server.await.expect("mock server"))
}

#[tokio::test]
async fn agent_rbac_applies_an_account_and_a_binding_and_no_role() {
    let (result, requests) = apply_with(|mut handle| async move {
        let mut seen = Vec::new();
        // Every request until the client is dropped.
        while let Some((request, send)) = handle.next_request().await {
            let (method, uri) = (request.method().clone(), request.uri().to_string());
            let bytes = request.into_body().collect_bytes().await.expect("body");
            let body: Value = serde_json::from_slice(&bytes).expect("json body");
            respond(send, 200, &body);
            seen.push((method, uri, body));
        }
        seen
    })
    .await;
    result.expect("applied");
    let paths: Vec<(&Method, &str)> = requests
        .iter()
        .map(|(m, u, _)| (m, u.split('?').next().unwrap_or_default()))
        .collect();
    assert_eq!(
        paths,
        [
            (
                &Method::PATCH,
                "/api/v1/namespaces/team/serviceaccounts/baas-agent"
            ),
            (
                &Method::PATCH,
                "/apis/rbac.authorization.k8s.io/v1/namespaces/team/rolebindings/baas-agent"
            ),
        ]
    );
    assert!(
        requests.iter().all(|(_, _, body)| body["kind"] != "Role"),
        "{requests:?}"
    );
    assert_eq!(
        requests[1].2["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "baas-agent"})
    );
}

#[tokio::test]
async fn binding_of_an_older_version_to_its_role_is_replaced() {
    let (result, requests) = apply_with(|mut handle| async move {
        let mut seen = Vec::new();
        let (m, u, body, send) = next(&mut handle).await;
        respond(send, 200, &body);
        seen.push((m, u, body));
        let (m, u, body, send) = next(&mut handle).await;
        respond(send, 422, &cannot_change_role_ref());
        seen.push((m, u, body));
        let (m, u, body, send) = next(&mut handle).await;
        respond(send, 200, &binding_of("Role"));
        seen.push((m, u, body));
        let (m, u, body, send) = next(&mut handle).await;
        respond(send, 200, &status(200, "", "deleted"));
        seen.push((m, u, body));
        let (m, u, body, send) = next(&mut handle).await;
        respond(send, 200, &body);
        seen.push((m, u, body));
        seen
    })
    .await;
    result.expect("replaced");
    let methods: Vec<&Method> = requests.iter().map(|(m, _, _)| m).collect();
    assert_eq!(
        methods,
        [
            &Method::PATCH,
            &Method::PATCH,
            &Method::GET,
            &Method::DELETE,
            &Method::PATCH
        ]
    );
    for (_, uri, _) in &requests[1..] {
        assert!(
            uri.starts_with(
                "/apis/rbac.authorization.k8s.io/v1/namespaces/team/rolebindings/baas-agent"
            ),
            "{uri}"
        );
    }
    assert_eq!(
        requests[3].2["preconditions"]["uid"], "old-uid",
        "only the stale binding is deleted"
    );
    assert_eq!(requests[4].2["roleRef"]["kind"], "ClusterRole");
}

#[tokio::test]
async fn binding_refused_for_another_reason_is_not_deleted() {
    let (result, requests) = apply_with(|mut handle| async move {
        let mut seen = Vec::new();
        let (m, u, body, send) = next(&mut handle).await;
        respond(send, 200, &body);
        seen.push((m, u, body));
        let (m, u, body, send) = next(&mut handle).await;
        respond(send, 422, &status(422, "Invalid", "something else"));
        seen.push((m, u, body));
        let (m, u, body, send) = next(&mut handle).await;
        respond(send, 200, &binding_of("ClusterRole"));
        seen.push((m, u, body));
        seen
    })
    .await;
    assert!(result.is_err());
    assert!(
        requests.iter().all(|(m, _, _)| m != Method::DELETE),
        "{requests:?}"
    );
}
