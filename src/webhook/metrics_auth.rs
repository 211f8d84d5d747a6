//! Who may read `/metrics` on the webhook's port: what controller-runtime's
//! `WithAuthenticationAndAuthorization` does. A scrape carries `Authorization: Bearer <token>`;
//! a `TokenReview` tells who the token belongs to, a `SubjectAccessReview` whether that user
//! may `get` the non-resource URL `/metrics` (the ClusterRole `baas-metrics-reader` grants it).
//!
//! Verdicts are cached for [`CACHE_TTL`] under the token's SHA-256, never the token itself, so
//! a scrape every 15 s costs the API server two requests a minute. Tokens never reach logs or
//! answers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::Api;
use kube::api::PostParams;
use sha2::{Digest, Sha256};

/// How long a verdict on a token is kept, allowed or not.
pub const CACHE_TTL: Duration = Duration::from_secs(60);

/// Tokens whose verdicts are kept at once: a handful of Prometheus replicas need a few; a
/// flood of made-up tokens must not grow the cache.
pub const CACHE_ENTRIES: usize = 1024;

/// Who may read `/metrics` on the webhook's port.
#[derive(Clone)]
pub enum MetricsAccess {
    /// Not served: `baas webhook --offline` has no API server to check tokens with.
    Off,
    /// Served to anyone (`baas webhook --offline --unauthenticated-metrics`).
    Open,
    /// A bearer token whose user may `get /metrics`.
    Kubernetes(Arc<TokenAuthorizer>),
}

impl MetricsAccess {
    /// Tokens checked with the API server `client` talks to.
    pub fn kubernetes(client: kube::Client) -> Self {
        Self::Kubernetes(Arc::new(TokenAuthorizer::new(client)))
    }

    /// `Ok` when the request may read the metrics, else the answer to send instead.
    pub async fn authorize(&self, headers: &HeaderMap) -> Result<(), Response> {
        let authorizer = match self {
            MetricsAccess::Open => return Ok(()),
            MetricsAccess::Off => {
                return Err((
                    StatusCode::NOT_FOUND,
                    "metrics are not served without an API server to check tokens with; \
                     start with --unauthenticated-metrics to serve them to anyone",
                )
                    .into_response());
            }
            MetricsAccess::Kubernetes(authorizer) => authorizer,
        };
        let Some(token) = bearer_token(headers) else {
            return Err(unauthorized("a bearer token is required"));
        };
        match authorizer.decide(token).await {
            Ok(Decision::Allowed) => Ok(()),
            Ok(Decision::Unauthenticated) => Err(unauthorized("the bearer token is not valid")),
            Ok(Decision::Forbidden) => Err((
                StatusCode::FORBIDDEN,
                "the token's user may not get /metrics (bind the ClusterRole baas-metrics-reader)",
            )
                .into_response()),
            Err(error) => {
                tracing::warn!(%error, "checking a /metrics bearer token failed");
                Err((
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "checking the bearer token with the API server failed",
                )
                    .into_response())
            }
        }
    }
}

fn unauthorized(reason: &'static str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        reason,
    )
        .into_response()
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The verdict on one token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Its user may get `/metrics`.
    Allowed,
    /// The API server does not know the token.
    Unauthenticated,
    /// A known user without the permission.
    Forbidden,
}

type TokenHash = [u8; 32];

/// Verdicts by token hash, each with its time, at most [`CACHE_ENTRIES`].
#[derive(Debug, Default)]
struct VerdictCache {
    verdicts: HashMap<TokenHash, (Decision, Instant)>,
}

impl VerdictCache {
    fn get(&self, key: &TokenHash, now: Instant) -> Option<Decision> {
        let (decision, at) = self.verdicts.get(key)?;
        (now.duration_since(*at) < CACHE_TTL).then_some(*decision)
    }

    fn put(&mut self, key: TokenHash, decision: Decision, now: Instant) {
        if self.verdicts.len() >= CACHE_ENTRIES {
            self.verdicts
                .retain(|_, (_, at)| now.duration_since(*at) < CACHE_TTL);
        }
        if self.verdicts.len() >= CACHE_ENTRIES {
            self.verdicts.clear();
        }
        self.verdicts.insert(key, (decision, now));
    }
}

/// Checks bearer tokens with `TokenReview` and `SubjectAccessReview`, caching the verdicts.
pub struct TokenAuthorizer {
    client: kube::Client,
    cache: Mutex<VerdictCache>,
}

impl TokenAuthorizer {
    /// An authorizer asking the API server behind `client`.
    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            cache: Mutex::default(),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, VerdictCache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The verdict on `token`, from the cache when it was checked within [`CACHE_TTL`].
    /// Errors (the API server unreachable) are not cached.
    pub async fn decide(&self, token: &str) -> kube::Result<Decision> {
        let key: TokenHash = Sha256::digest(token.as_bytes()).into();
        if let Some(decision) = self.cache().get(&key, Instant::now()) {
            return Ok(decision);
        }
        let decision = self.ask(token).await?;
        self.cache().put(key, decision, Instant::now());
        Ok(decision)
    }

    async fn ask(&self, token: &str) -> kube::Result<Decision> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_string(),
                audiences: None,
            },
            ..TokenReview::default()
        };
        let reviewed = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await?;
        let status = reviewed.status.unwrap_or_default();
        let Some(user) = status.user.filter(|_| status.authenticated == Some(true)) else {
            return Ok(Decision::Unauthenticated);
        };
        let access = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: user.username,
                groups: user.groups,
                uid: user.uid,
                extra: user.extra,
                non_resource_attributes: Some(NonResourceAttributes {
                    path: Some("/metrics".into()),
                    verb: Some("get".into()),
                }),
                resource_attributes: None,
            },
            ..SubjectAccessReview::default()
        };
        let answered = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &access)
            .await?;
        Ok(if answered.status.is_some_and(|s| s.allowed) {
            Decision::Allowed
        } else {
            Decision::Forbidden
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            value.parse().expect("a header value"),
        );
        headers
    }

    #[test]
    fn bearer_token_is_read_from_the_authorization_header() {
        assert_eq!(bearer_token(&header("Bearer abc")), Some("abc"));
        assert_eq!(bearer_token(&header("bearer abc")), Some("abc"));
        assert_eq!(bearer_token(&header("Basic abc")), None);
        assert_eq!(bearer_token(&header("Bearer ")), None);
        assert_eq!(bearer_token(&HeaderMap::new()), None);
    }

    #[test]
    fn verdict_cache_forgets_after_its_ttl_and_stays_bounded() {
        let mut cache = VerdictCache::default();
        let start = Instant::now();
        cache.put([0; 32], Decision::Allowed, start);
        assert_eq!(cache.get(&[0; 32], start), Some(Decision::Allowed));
        assert_eq!(cache.get(&[0; 32], start + CACHE_TTL), None);
        for i in 0..3 * CACHE_ENTRIES {
            let mut key = [0; 32];
            key[..8].copy_from_slice(&(i as u64).to_le_bytes());
            cache.put(key, Decision::Unauthenticated, start);
            assert!(cache.verdicts.len() <= CACHE_ENTRIES);
        }
    }
}
