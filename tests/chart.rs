//! The Helm chart `charts/baas` rendered by the pinned Helm (`scripts/lib/build-go-tool.sh
//! helm`, or the binary `BAAS_TEST_HELM` names): the values a platform team sets reach the
//! objects, the schema refuses bad values naming their path, and the generated serving
//! certificate is one that the webhook configurations trust.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::Value;

fn helm() -> &'static Path {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    HELM.get_or_init(|| {
        if let Some(path) = std::env::var_os("BAAS_TEST_HELM") {
            return PathBuf::from(path);
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/lib/build-go-tool.sh");
        let out = Command::new(&script)
            .arg("helm")
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .expect("build-go-tool.sh runs");
        assert!(
            out.status.success(),
            "building helm failed: install Go, or set BAAS_TEST_HELM"
        );
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
}

/// `helm template baas charts/baas -n NAMESPACE ARGS`: its documents, or Helm's error.
fn template(namespace: &str, args: &[&str]) -> Result<Vec<Value>, String> {
    let out = Command::new(helm())
        .args(["template", "baas", "charts/baas", "--namespace", namespace])
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("helm runs");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    Ok(serde_norway::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).expect("Helm prints YAML"))
        .filter(|v| !v.is_null())
        .collect())
}

fn rendered(args: &[&str]) -> Vec<Value> {
    template("baas-system", args).unwrap_or_else(|e| panic!("helm template {args:?}: {e}"))
}

fn kinds(docs: &[Value]) -> Vec<String> {
    let mut kinds: Vec<String> = docs
        .iter()
        .map(|d| d["kind"].as_str().unwrap_or_default().to_string())
        .collect();
    kinds.sort();
    kinds
}

fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind} expected in {:?}", kinds(docs));
    found[0]
}

fn operator_env(docs: &[Value], name: &str) -> Option<String> {
    one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str().map(str::to_string))
}

fn webhooks(docs: &[Value]) -> Vec<&Value> {
    [
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ]
    .iter()
    .map(|k| &one(docs, k)["webhooks"][0])
    .collect()
}

fn openssl(args: &[&str], files: &[(&str, &[u8])]) -> String {
    // One directory per call: tests run in parallel threads of one process, and a shared
    // directory let one test read another's certificate.
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, bytes) in files {
        std::fs::write(dir.path().join(name), bytes).expect("write");
    }
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir.path())
        .output()
        .expect("openssl runs");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn b64(value: &Value) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(value.as_str().expect("a base64 string"))
        .expect("valid base64")
}

#[test]
fn wrong_type_and_unknown_key_are_refused_with_their_path() {
    let error = template("baas-system", &["--set", "replicas=two"]).expect_err("refused");
    assert!(
        error.contains("/replicas") && error.contains("want integer"),
        "{error}"
    );
    let error =
        template("baas-system", &["--set", "webhook.timeoutSecond=3"]).expect_err("refused");
    assert!(
        error.contains("/webhook") && error.contains("timeoutSecond"),
        "{error}"
    );
    let error =
        template("baas-system", &["--set", "webhook.timeoutSeconds=31"]).expect_err("refused");
    assert!(error.contains("/webhook/timeoutSeconds"), "{error}");
}

#[test]
fn default_values_install_everything_with_a_generated_certificate_the_webhooks_trust() {
    let docs = rendered(&[]);
    for kind in [
        "Deployment",
        "PodDisruptionBudget",
        "Service",
        "NetworkPolicy",
        "ServiceAccount",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Secret",
        "ConfigMap",
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ] {
        assert!(kinds(&docs).contains(&kind.to_string()), "{kind} missing");
    }
    // the CRDs are in crds/, which Helm installs but never deletes or renders as templates
    assert!(!kinds(&docs).contains(&"CustomResourceDefinition".to_string()));
    // no Namespace and no cert-manager or Prometheus Operator kinds without their APIs
    for kind in [
        "Namespace",
        "Certificate",
        "Issuer",
        "PrometheusRule",
        "ServiceMonitor",
    ] {
        assert!(!kinds(&docs).contains(&kind.to_string()), "{kind} rendered");
    }

    let secret = one(&docs, "Secret");
    let ca = b64(&secret["data"]["ca.crt"]);
    // the operator's own creates (the runs of Schedules) pass by, so that a stalled replica
    // answering the admission call cannot cost a tick
    let account = one(&docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"]
        .as_str()
        .expect("the Deployment names its ServiceAccount")
        .to_string();
    let not_the_operator =
        format!(r#"request.userInfo.username != "system:serviceaccount:baas-system:{account}""#);
    for webhook in webhooks(&docs) {
        assert_eq!(
            webhook["matchConditions"][0]["expression"],
            not_the_operator
        );
        assert_eq!(b64(&webhook["clientConfig"]["caBundle"]), ca);
        assert_eq!(
            webhook["clientConfig"]["service"]["namespace"],
            "baas-system"
        );
        assert_eq!(webhook["failurePolicy"], "Fail");
        assert_eq!(webhook["timeoutSeconds"], 5);
    }
    let crt = b64(&secret["data"]["tls.crt"]);
    let files = [("ca.crt", ca.as_slice()), ("tls.crt", crt.as_slice())];
    let verified = openssl(&["verify", "-CAfile", "ca.crt", "tls.crt"], &files);
    assert!(verified.contains("tls.crt: OK"), "{verified}");
    let names = openssl(
        &["x509", "-in", "tls.crt", "-noout", "-ext", "subjectAltName"],
        &files,
    );
    assert!(
        names.contains("DNS:baas-webhook.baas-system.svc"),
        "{names}"
    );

    let deployment = one(&docs, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let volumes = &deployment["spec"]["template"]["spec"]["volumes"];
    assert_eq!(
        volumes[0]["secret"]["secretName"],
        secret["metadata"]["name"]
    );
}

#[test]
fn certificate_names_the_release_namespace() {
    let docs = template("backup-ops", &[]).expect("renders");
    let secret = one(&docs, "Secret");
    let crt = b64(&secret["data"]["tls.crt"]);
    let names = openssl(
        &["x509", "-in", "tls.crt", "-noout", "-ext", "subjectAltName"],
        &[("tls.crt", &crt)],
    );
    assert!(names.contains("DNS:baas-webhook.backup-ops.svc"), "{names}");
    for webhook in webhooks(&docs) {
        assert_eq!(
            webhook["clientConfig"]["service"]["namespace"],
            "backup-ops"
        );
    }
}

#[test]
fn operator_and_agent_values_reach_the_deployment() {
    let docs = rendered(&[
        "--set",
        "image.repository=registry.example.com/baas,image.tag=1.2.3,replicas=3",
        "--set",
        "log.format=text,log.filter=baas=debug",
        "--set-json",
        r#"agent.nodeSelector={"pool":"backup"}"#,
        "--set-json",
        r#"agent.tolerations=[{"key":"backup","operator":"Exists"}]"#,
        "--set-json",
        r#"agent.resources={"limits":{"memory":"1Gi"}}"#,
        "--set-json",
        r#"nodeSelector={"role":"infra"}"#,
        "--set-json",
        r#"tolerations=[{"key":"infra","operator":"Exists"}]"#,
    ]);
    let deployment = one(&docs, "Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(deployment["spec"]["replicas"], 3);
    assert_eq!(
        pod["containers"][0]["image"],
        "registry.example.com/baas:1.2.3"
    );
    assert_eq!(pod["nodeSelector"]["role"], "infra");
    assert_eq!(pod["tolerations"][0]["key"], "infra");
    assert_eq!(
        operator_env(&docs, "BAAS_AGENT_IMAGE").as_deref(),
        Some("registry.example.com/baas:1.2.3")
    );
    assert_eq!(
        operator_env(&docs, "BAAS_LOG_FORMAT").as_deref(),
        Some("text")
    );
    assert_eq!(
        operator_env(&docs, "BAAS_LOG").as_deref(),
        Some("baas=debug")
    );
    let json = |name: &str| -> Value {
        serde_json::from_str(&operator_env(&docs, name).unwrap_or_else(|| panic!("{name} unset")))
            .expect("JSON")
    };
    assert_eq!(
        json("BAAS_AGENT_NODE_SELECTOR"),
        serde_json::json!({"pool": "backup"})
    );
    assert_eq!(json("BAAS_AGENT_TOLERATIONS")[0]["operator"], "Exists");
    assert_eq!(json("BAAS_AGENT_RESOURCES")["limits"]["memory"], "1Gi");
    assert_eq!(operator_env(&docs, "BAAS_AGENT_AFFINITY"), None);

    let docs = rendered(&["--set", "agent.image.repository=mirror.example.com/baas"]);
    assert_eq!(
        operator_env(&docs, "BAAS_AGENT_IMAGE").as_deref(),
        Some("mirror.example.com/baas:latest")
    );
}

#[test]
fn webhook_values_reach_both_configurations() {
    let docs = rendered(&[
        "--set",
        "webhook.failurePolicy=Ignore,webhook.timeoutSeconds=12",
    ]);
    for webhook in webhooks(&docs) {
        assert_eq!(webhook["failurePolicy"], "Ignore");
        assert_eq!(webhook["timeoutSeconds"], 12);
    }
}

#[test]
fn cert_manager_mode_makes_a_certificate_and_lets_its_injector_fill_the_ca() {
    let docs = rendered(&["--set", "certificate.mode=certManager"]);
    let certificate = one(&docs, "Certificate");
    assert_eq!(certificate["spec"]["secretName"], "baas-webhook-tls");
    one(&docs, "Issuer");
    assert!(!kinds(&docs).contains(&"Secret".to_string()));
    for kind in [
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ] {
        let config = one(&docs, kind);
        assert_eq!(
            config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
            "baas-system/baas-webhook"
        );
        assert!(
            config["webhooks"][0]["clientConfig"]
                .get("caBundle")
                .is_none()
        );
    }
    let docs = rendered(&[
        "--set",
        "certificate.mode=certManager,certificate.certManager.issuerRef.name=corp-ca,certificate.certManager.issuerRef.kind=ClusterIssuer",
    ]);
    assert_eq!(
        one(&docs, "Certificate")["spec"]["issuerRef"]["kind"],
        "ClusterIssuer"
    );
    assert!(!kinds(&docs).contains(&"Issuer".to_string()));
}

#[test]
fn existing_secret_mode_uses_the_given_ca_and_creates_no_secret() {
    let error = template("baas-system", &["--set", "certificate.mode=existingSecret"])
        .expect_err("no CA to trust");
    assert!(
        error.contains("certificate.existingSecret.caBundle"),
        "{error}"
    );
    let docs = rendered(&[
        "--set",
        "certificate.mode=existingSecret,certificate.secretName=my-tls,certificate.existingSecret.caBundle=Q0EK",
    ]);
    assert!(!kinds(&docs).contains(&"Secret".to_string()));
    for webhook in webhooks(&docs) {
        assert_eq!(webhook["clientConfig"]["caBundle"], "Q0EK");
    }
    let volumes = &one(&docs, "Deployment")["spec"]["template"]["spec"]["volumes"];
    assert_eq!(volumes[0]["secret"]["secretName"], "my-tls");
}

#[test]
fn prometheus_objects_follow_the_apis_the_cluster_serves() {
    let docs = rendered(&[
        "--api-versions",
        "monitoring.coreos.com/v1/PrometheusRule",
        "--api-versions",
        "monitoring.coreos.com/v1/ServiceMonitor",
    ]);
    let rule = one(&docs, "PrometheusRule");
    let text = rule.to_string();
    // Prometheus' own templates pass through Helm untouched
    assert!(text.contains("{{ $labels.namespace }}"), "{text}");
    let monitor = one(&docs, "ServiceMonitor");
    assert_eq!(monitor["spec"]["endpoints"][0]["scheme"], "https");
    let docs = rendered(&[
        "--api-versions",
        "monitoring.coreos.com/v1/PrometheusRule",
        "--set",
        "metrics.prometheusRule.enabled=false",
    ]);
    assert!(!kinds(&docs).contains(&"PrometheusRule".to_string()));
}
