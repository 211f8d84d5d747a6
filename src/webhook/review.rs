//! AdmissionReview in and out: parsing a body into a request whose object stays raw JSON (so an
//! object of the wrong shape is denied with its field paths rather than failing the request),
//! deciding, and writing the answer.

use base64::Engine;
use json_patch::{Patch, PatchOperation};
use kube::core::DynamicObject;
use kube::core::admission::{
    AdmissionRequest, AdmissionResponse, AdmissionReview, Operation as AdmissionOperation,
};
use serde_json::Value;

use super::mutate::mutate_object;
use super::validate::{ReviewContext, validate_object, validate_run_update};
use crate::crd::{GROUP, Kind};
use crate::lookup::{FetchedLookups, Lookups, RecordingLookups, SecretSource, fetch_secrets};

/// The two admission endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `POST /validate`.
    Validate,
    /// `POST /mutate`.
    Mutate,
}

impl Endpoint {
    /// The name used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Validate => "validate",
            Endpoint::Mutate => "mutate",
        }
    }
}

/// A parsed request. `object` and `old_object` are kept as sent; in `request` they are null.
#[derive(Clone, Debug)]
pub struct Review {
    /// The request without its objects.
    pub request: AdmissionRequest<DynamicObject>,
    /// `request.object` (null when absent).
    pub object: Value,
    /// `request.oldObject`, present on UPDATE.
    pub old_object: Option<Value>,
}

impl Review {
    /// The kind under review when it is one of ours.
    pub fn our_kind(&self) -> Option<Kind> {
        let kind = &self.request.kind;
        (kind.group == GROUP)
            .then(|| Kind::from_name(&kind.kind))
            .flatten()
    }

    /// The request's operation as Kubernetes writes it.
    pub fn operation(&self) -> &'static str {
        match self.request.operation {
            AdmissionOperation::Create => "CREATE",
            AdmissionOperation::Update => "UPDATE",
            AdmissionOperation::Delete => "DELETE",
            AdmissionOperation::Connect => "CONNECT",
        }
    }

    /// Namespace of the object under review.
    pub fn namespace(&self) -> &str {
        self.request
            .namespace
            .as_deref()
            .or_else(|| self.object.pointer("/metadata/namespace")?.as_str())
            .unwrap_or_default()
    }

    /// Name of the object under review (empty when the API server generates it).
    pub fn name(&self) -> &str {
        if self.request.name.is_empty() {
            self.object
                .pointer("/metadata/name")
                .or_else(|| self.object.pointer("/metadata/generateName"))
                .and_then(Value::as_str)
                .unwrap_or_default()
        } else {
            &self.request.name
        }
    }
}

/// Parses a body; `Err` says why it is not an `admission.k8s.io/v1` AdmissionReview with a
/// request (answered with HTTP 400).
pub fn parse_review(body: &[u8]) -> Result<Review, String> {
    let mut value: Value =
        serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    let api_version = value.get("apiVersion").and_then(Value::as_str);
    if api_version != Some("admission.k8s.io/v1") {
        let found = api_version.map_or("missing".to_string(), |v| format!("{v:?}"));
        return Err(format!(
            "not an admission.k8s.io/v1 AdmissionReview: apiVersion is {found}"
        ));
    }
    if value.get("kind").and_then(Value::as_str) != Some("AdmissionReview") {
        return Err(
            "not an admission.k8s.io/v1 AdmissionReview: kind is not \"AdmissionReview\"".into(),
        );
    }
    let Some(request) = value.get_mut("request").and_then(Value::as_object_mut) else {
        return Err("the review has no request".into());
    };
    let object = request
        .insert("object".into(), Value::Null)
        .unwrap_or(Value::Null);
    let old_object = request
        .insert("oldObject".into(), Value::Null)
        .filter(|v| !v.is_null());
    let review: AdmissionReview<DynamicObject> =
        serde_json::from_value(value).map_err(|e| format!("request is malformed: {e}"))?;
    let request: AdmissionRequest<DynamicObject> = review
        .try_into()
        .map_err(|_| "the review has no request".to_string())?;
    Ok(Review {
        request,
        object,
        old_object,
    })
}

/// What the webhook answers to one review.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Answer {
    /// Whether the object is admitted.
    pub allowed: bool,
    /// Problems joined with `"; "`, when denied.
    pub message: String,
    /// JSON patch operations (only from `/mutate`).
    pub patch: Vec<PatchOperation>,
    /// Warnings for the client.
    pub warnings: Vec<String>,
}

impl Answer {
    fn allow() -> Self {
        Self {
            allowed: true,
            ..Self::default()
        }
    }

    fn deny(message: String) -> Self {
        Self {
            allowed: false,
            message,
            ..Self::default()
        }
    }

    /// The AdmissionReview answering `review`, as JSON. The patch is base64 as the API server
    /// reads Go's `[]byte`.
    pub fn to_review_json(&self, review: &Review) -> Value {
        let mut response = AdmissionResponse::from(&review.request);
        if !self.allowed {
            response = response.deny(&self.message);
            response.result.code = 403;
            response.result.reason = "Forbidden".into();
        }
        if !self.warnings.is_empty() {
            response.warnings = Some(self.warnings.clone());
        }
        if !self.patch.is_empty() {
            match response.clone().with_patch(Patch(self.patch.clone())) {
                Ok(patched) => response = patched,
                Err(error) => tracing::error!(%error, "a JSON patch failed to serialize"),
            }
        }
        let mut json = serde_json::to_value(response.into_review())
            .unwrap_or_else(|e| serde_json::json!({"error": e.to_string()}));
        if let Some(response) = json.get_mut("response").and_then(Value::as_object_mut)
            && let Some(patch) = response.get("patch").and_then(Value::as_array)
        {
            let bytes: Vec<u8> = patch
                .iter()
                .filter_map(Value::as_u64)
                .filter_map(|b| u8::try_from(b).ok())
                .collect();
            let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
            response.insert("patch".into(), Value::String(encoded));
        }
        json
    }
}

fn deleting(object: &Value) -> bool {
    object
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null())
}

/// Decides one review. Dry-run requests are decided exactly like real ones.
pub fn decide(endpoint: Endpoint, review: &Review, lookups: Option<&dyn Lookups>) -> Answer {
    let Some(kind) = review.our_kind() else {
        return Answer::allow();
    };
    let operation = &review.request.operation;
    if !matches!(
        operation,
        AdmissionOperation::Create | AdmissionOperation::Update
    ) {
        return Answer::allow();
    }
    let is_run = kind.operation().is_some();
    match endpoint {
        Endpoint::Mutate => {
            // Defaults belong to the spec a user writes. A run's spec is frozen after CREATE,
            // and an object being deleted only awaits its finalizers: touching either would
            // block the operator's own updates.
            if deleting(&review.object) || (is_run && *operation == AdmissionOperation::Update) {
                return Answer::allow();
            }
            let mutation = mutate_object(kind, &review.object);
            Answer {
                allowed: true,
                message: String::new(),
                patch: mutation.patch,
                warnings: mutation.warnings,
            }
        }
        Endpoint::Validate => {
            if let (AdmissionOperation::Update, Some(old)) = (operation, &review.old_object) {
                if is_run && let Some(denial) = validate_run_update(kind, old, &review.object) {
                    return Answer::deny(denial);
                }
                // Metadata-only updates (labels, finalizers) must pass even when the cluster
                // changed since the spec was admitted.
                if old.get("spec") == review.object.get("spec") {
                    return Answer::allow();
                }
            }
            let ctx = ReviewContext {
                namespace: review.namespace(),
                lookups,
            };
            let verdict = validate_object(kind, &review.object, ctx);
            Answer {
                allowed: verdict.allowed(),
                message: verdict.message(),
                patch: Vec::new(),
                warnings: verdict.warnings,
            }
        }
    }
}

/// Decides one review with the Secrets it names fetched from `secrets` first (one get each, in
/// parallel), so the rules themselves stay pure and never wait. Which Secrets to fetch is
/// learnt from a first pass of the rules that answers no Secret: when that pass asks about
/// none (mutation, unchanged specs, objects without refs), its answer is final and nothing is
/// fetched. Without a source, `lookups` answers Secrets itself.
pub async fn decide_fetching(
    endpoint: Endpoint,
    review: &Review,
    lookups: Option<&dyn Lookups>,
    secrets: Option<&dyn SecretSource>,
) -> Answer {
    let (Some(cluster), Some(source)) = (lookups, secrets) else {
        return decide(endpoint, review, lookups);
    };
    let recorder = RecordingLookups::new(cluster);
    let first = decide(endpoint, review, Some(&recorder));
    let wanted = recorder.asked();
    if wanted.is_empty() {
        return first;
    }
    let fetched = FetchedLookups::new(cluster, fetch_secrets(source, wanted).await);
    decide(endpoint, review, Some(&fetched))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(operation: &str, object: Value, old: Option<Value>) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": {"group": "backup.appuio.ch", "version": "v1alpha1", "kind": "Backup"},
                "resource": {"group": "backup.appuio.ch", "version": "v1alpha1", "resource": "backups"},
                "name": "b", "namespace": "team-a", "operation": operation,
                "userInfo": {"username": "alice"},
                "object": object, "oldObject": old, "dryRun": false
            }
        }))
        .expect("JSON serializes")
    }

    #[test]
    fn review_of_other_api_version_is_rejected() {
        let mut value: Value =
            serde_json::from_slice(&body("CREATE", json!({}), None)).expect("json");
        value["apiVersion"] = json!("admission.k8s.io/v1beta1");
        let bytes = serde_json::to_vec(&value).expect("json");
        assert!(parse_review(&bytes).is_err());
        assert!(parse_review(b"{}").is_err());
        assert!(parse_review(b"not json").is_err());
    }

    #[test]
    fn object_of_any_shape_is_kept_raw() {
        let review = parse_review(&body("CREATE", json!(42), None)).expect("parses");
        assert_eq!(review.object, json!(42));
        let answer = decide(Endpoint::Validate, &review, None);
        assert!(!answer.allowed);
        assert!(answer.message.starts_with("spec: "), "{}", answer.message);
    }

    #[test]
    fn run_being_deleted_is_not_mutated() {
        let object = json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"backend": {"s3": {"endpoint": "http://s3/"}}}});
        let review = parse_review(&body("CREATE", object, None)).expect("parses");
        assert_eq!(decide(Endpoint::Mutate, &review, None), Answer::allow());
    }

    #[test]
    fn patch_is_sent_as_base64() {
        let object = json!({"spec": {"backend": {"s3": {"endpoint": "http://s3/"}}}});
        let review = parse_review(&body("CREATE", object, None)).expect("parses");
        let json = decide(Endpoint::Mutate, &review, None).to_review_json(&review);
        let patch = json["response"]["patch"].as_str().expect("a base64 string");
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(patch)
            .expect("base64");
        let ops: Value = serde_json::from_slice(&decoded).expect("JSON patch");
        assert_eq!(
            ops,
            json!([{"op": "replace", "path": "/spec/backend/s3/endpoint", "value": "http://s3"}])
        );
        assert_eq!(json["response"]["patchType"], "JSONPatch");
        assert_eq!(
            json["response"]["uid"],
            "705ab4f5-6393-11e8-b7cc-42010a800002"
        );
    }
}
