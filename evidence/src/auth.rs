//! Who may write what: a caller presents a Kubernetes bearer token (a ServiceAccount's, or any the
//! apiserver authenticates); a TokenReview says who it is, and a SubjectAccessReview whether that
//! identity may `create` `modelrollouts/labels` (or `/predictions`) in the namespace it writes to.
//! So a token of one namespace cannot touch another's evidence unless RBAC says it may. Answers are
//! cached briefly (sidecars post several times a second), keyed by a digest of the token.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use kube::api::PostParams;
use modelrollout_contract::evidence::access;
use sha2::{Digest, Sha256};

use crate::Error;

/// The answer about one caller and one write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Access {
    Allowed {
        user: String,
    },
    /// No token, or one the apiserver does not accept: 401.
    Unauthenticated(String),
    /// Authenticated, but not allowed this write: 403.
    Forbidden(String),
}

/// Decides whether a bearer token may write a kind of evidence (`access::LABELS` or
/// `access::PREDICTIONS`) in a namespace.
pub trait Authorizer: Send + Sync + 'static {
    fn review(&self, token: String, namespace: String, what: &'static str)
    -> BoxFuture<'static, Result<Access, Error>>;
}

/// The apiserver's TokenReview and SubjectAccessReview.
pub struct Kubernetes {
    client: kube::Client,
    cache: Mutex<HashMap<[u8; 32], (Instant, Access)>>,
}

/// How long an answer is reused: an allow for a minute, a refusal for 10 s (a RoleBinding just
/// created is honoured soon).
const ALLOWED_FOR: Duration = Duration::from_secs(60);
const REFUSED_FOR: Duration = Duration::from_secs(10);
/// Cached answers kept at most; past it the cache is emptied (bounded memory under many tokens).
const CACHE_MAX: usize = 10_000;

impl Kubernetes {
    pub fn new(client: kube::Client) -> Self {
        Self { client, cache: Mutex::new(HashMap::new()) }
    }
}

fn cache_key(token: &str, namespace: &str, what: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in [token, namespace, what] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    h.finalize().into()
}

async fn review(client: kube::Client, token: String, namespace: String, what: &'static str) -> Result<Access, Error> {
    let api = |e: kube::Error| Error::Kubernetes(e.to_string());
    let tr = TokenReview { spec: TokenReviewSpec { token, audiences: None }, ..Default::default() };
    let tr = kube::Api::<TokenReview>::all(client.clone()).create(&PostParams::default(), &tr).await.map_err(api)?;
    let status = tr.status.unwrap_or_default();
    let Some(user) = status.user.filter(|_| status.authenticated == Some(true)) else {
        let why = status.error.unwrap_or_else(|| "the token is not authenticated".into());
        return Ok(Access::Unauthenticated(why));
    };
    let name = user.username.clone().unwrap_or_default();
    let sar = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: user.username,
            groups: user.groups,
            uid: user.uid,
            extra: user.extra,
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(namespace.clone()),
                verb: Some(access::VERB.into()),
                group: Some(access::GROUP.into()),
                resource: Some(access::RESOURCE.into()),
                subresource: Some(what.into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let sar = kube::Api::<SubjectAccessReview>::all(client).create(&PostParams::default(), &sar).await.map_err(api)?;
    let allowed = sar.status.as_ref().is_some_and(|s| s.allowed && s.denied != Some(true));
    Ok(if allowed {
        Access::Allowed { user: name }
    } else {
        Access::Forbidden(format!(
            "{name} may not create {}/{what} in namespace {namespace} (group {})",
            access::RESOURCE,
            access::GROUP
        ))
    })
}

impl Authorizer for std::sync::Arc<Kubernetes> {
    fn review(
        &self,
        token: String,
        namespace: String,
        what: &'static str,
    ) -> BoxFuture<'static, Result<Access, Error>> {
        let this = self.clone();
        Box::pin(async move {
            let key = cache_key(&token, &namespace, what);
            if let Some((at, access)) = this.cache.lock().expect("auth cache").get(&key)
                && at.elapsed() < if matches!(access, Access::Allowed { .. }) { ALLOWED_FOR } else { REFUSED_FOR }
            {
                return Ok(access.clone());
            }
            let access = review(this.client.clone(), token, namespace, what).await?;
            let mut cache = this.cache.lock().expect("auth cache");
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
            cache.insert(key, (Instant::now(), access.clone()));
            Ok(access)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_keys_separate_tokens_namespaces_and_kinds() {
        let k = cache_key("t", "a", "labels");
        assert_ne!(k, cache_key("t", "b", "labels"));
        assert_ne!(k, cache_key("t", "a", "predictions"));
        assert_ne!(k, cache_key("u", "a", "labels"));
        // Lengths are part of the key: "ab"+"c" is not "a"+"bc".
        assert_ne!(cache_key("ab", "c", "labels"), cache_key("a", "bc", "labels"));
    }
}
