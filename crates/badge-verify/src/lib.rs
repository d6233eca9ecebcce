//! Accept Kubernetes ServiceAccount tokens (badge's or any kube-apiserver's) in a Rust
//! service, without calling the API for each request.
//!
//! Two modes:
//! - [`Verifier`]: the issuer's OIDC discovery document and JWKS, fetched over HTTPS and
//!   cached (see [`CachePolicy`]); each token is checked locally: RS256 or ES256 only, the
//!   algorithm pinned by the key's type, the audience required, `exp`/`nbf`/`iat` with a
//!   leeway, the issuer compared exactly, then the `kubernetes.io` claims read into a
//!   [`ServiceAccountIdentity`]. Claim validation is badge-token's, the same code the server
//!   authenticates with.
//! - [`TokenReviewer`]: a TokenReview against the API server, for services that must also
//!   see deletions (a token whose Pod or ServiceAccount is gone stops working at once).
//!
//! When the issuer publishes a signed revocation list (badge names one in discovery as
//! `revocation_list_uri`), or one is configured, the verifier also refuses the tokens it
//! lists, with [`VerifyError::Revoked`]. The list is cached like the JWKS and verified
//! against it; while it cannot be refreshed the last good list is used for
//! [`RevocationPolicy::max_stale`], then tokens are refused as unverifiable (fail closed).
//!
//! A JWKS-verified token stays valid until it expires even if its ServiceAccount or Pod is
//! deleted: keep token lifetimes short, or use the TokenReview mode where that matters.
//!
//! Issuers are compared byte for byte, as kube-apiserver does (`pkg/serviceaccount/claims.go`
//! looks the `iss` up in a set of the configured strings): `https://issuer` and
//! `https://issuer/` are different issuers. Only the discovery URL is built with the
//! trailing slash removed (`<issuer without trailing slash>/.well-known/openid-configuration`,
//! as OIDC Discovery §4 and go-oidc build it), and the document's `issuer` must then equal
//! the configured issuer exactly.

#![warn(missing_docs)]

mod cache;
mod http;
mod jwk;
mod jws;
mod review;
mod revocation;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use badge_token::ObjectRef;
pub use badge_token::claims::NodeRef;
pub use cache::{CachePolicy, FetchFuture, Fetched, KeySource};
pub use review::TokenReviewer;
pub use revocation::{FetchedList, LIST_TYPE, ListFuture, RevocationPolicy};

use badge_token::claims::{Expectations, LEEWAY_SECONDS, TokenKind, ValidatedClaims};
use cache::{KeyCache, Need};
use revocation::{Checks, Published, RevocationCache};
use serde_json::{Map, Value};

/// How long one fetch of the issuer's documents may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a token was refused, or could not be checked. The token itself is never included.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// Not a well-formed compact JWS.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// `alg` is not RS256 or ES256 (`none`, HS256, … never verify).
    #[error("token algorithm is not accepted")]
    UnsupportedAlgorithm,
    /// No key of the issuer has the token's kid, even after a refresh.
    #[error("no key of the issuer matches the token")]
    UnknownKey,
    /// The kid's key is of another type than the token's algorithm.
    #[error("token algorithm does not match the key")]
    AlgorithmMismatch,
    /// The signature does not verify.
    #[error("invalid signature")]
    InvalidSignature,
    /// Signed, but the claims are refused (issuer, time, audience, ServiceAccount claims).
    #[error("{0}")]
    Claims(#[from] badge_token::TokenError),
    /// The issuer's keys could not be fetched and none are cached.
    #[error("the issuer's keys are unavailable: {0}")]
    KeysUnavailable(String),
    /// The TokenReview could not be made (network, permission).
    #[error("token review failed: {0}")]
    Review(String),
    /// The server does not accept the token (TokenReview mode).
    #[error("the server did not authenticate the token{}", .0.as_ref().map(|e| format!(": {e}")).unwrap_or_default())]
    NotAuthenticated(Option<String>),
    /// The token authenticates someone who is not a ServiceAccount.
    #[error("the token is not a ServiceAccount's")]
    NotServiceAccount,
    /// The verifier is not configured correctly.
    #[error("verifier configuration: {0}")]
    Config(String),
    /// The issuer's revocation list names the token.
    #[error("the token has been revoked")]
    Revoked,
    /// The issuer publishes a revocation list, and no list trusted now could be fetched.
    #[error("the issuer's revocation list is unavailable: {0}")]
    RevocationsUnavailable(String),
}

impl VerifyError {
    /// Whether the token itself was refused (answer 401), as opposed to the verifier being
    /// unable to decide (answer 503).
    pub fn is_refusal(&self) -> bool {
        !matches!(
            self,
            Self::KeysUnavailable(_) | Self::Review(_) | Self::Config(_) | Self::RevocationsUnavailable(_)
        )
    }
}

/// Who a token authenticates: a ServiceAccount, and what the token is bound to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceAccountIdentity {
    /// The token's `iss` (JWKS mode only).
    pub issuer: Option<String>,
    /// The ServiceAccount's namespace.
    pub namespace: String,
    /// The ServiceAccount's name.
    pub name: String,
    /// The ServiceAccount's UID.
    pub uid: String,
    /// The Pod the token is bound to.
    pub pod: Option<ObjectRef>,
    /// The Secret the token is bound to, or a legacy token's own Secret (its UID empty: legacy
    /// tokens carry none). JWKS mode only; TokenReview does not report it.
    pub secret: Option<ObjectRef>,
    /// The Node the token is bound to, or the bound Pod's Node.
    pub node: Option<NodeRef>,
    /// The audiences of this verifier the token carries.
    pub audiences: Vec<String>,
    /// `exp`, unix seconds (JWKS mode only).
    pub expires_at: Option<i64>,
    /// The token's `jti` (JWKS mode), as `authentication.kubernetes.io/credential-id`
    /// reports it: `JTI=<jti>`.
    pub credential_id: Option<String>,
}

impl ServiceAccountIdentity {
    /// `system:serviceaccount:<namespace>:<name>`.
    pub fn username(&self) -> String {
        badge_token::claims::username(&self.namespace, &self.name)
    }

    /// `system:serviceaccounts`, `system:serviceaccounts:<namespace>`, `system:authenticated`.
    pub fn groups(&self) -> Vec<String> {
        vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{}", self.namespace),
            "system:authenticated".into(),
        ]
    }

    fn from_claims(claims: ValidatedClaims) -> Self {
        let credential_id = claims.credential_id();
        let secret = match claims.kind {
            TokenKind::Legacy => claims
                .legacy_secret_name
                .map(|name| ObjectRef::new(name, String::new())),
            TokenKind::Bound => claims.secret,
        };
        Self {
            issuer: Some(claims.issuer),
            namespace: claims.namespace,
            name: claims.service_account.name,
            uid: claims.service_account.uid,
            pod: claims.pod,
            secret,
            node: claims.node,
            audiences: claims.audiences,
            expires_at: claims.expires_at,
            credential_id,
        }
    }
}

// === OIDC source ===

/// The issuer's keys over HTTPS: the discovery document (whose `issuer` must be the
/// configured issuer exactly) names the JWKS, or a JWKS URL is given directly.
pub struct OidcSource {
    issuer: String,
    discovery_url: Option<String>,
    jwks_url: Option<String>,
    revocation_list_url: Option<String>,
    client: http::HttpsClient,
}

impl OidcSource {
    async fn jwks_url(&self) -> Result<String, String> {
        if let Some(url) = &self.jwks_url {
            return Ok(url.clone());
        }
        let (url, doc) = self.discovery().await?;
        doc.get("jwks_uri")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| format!("{url} has no jwks_uri"))
    }

    /// The configured list, or the one discovery names; None when there is none (a JWKS URL
    /// given without a list URL skips discovery, so names none).
    async fn revocation_list_url(&self) -> Result<Option<String>, String> {
        if let Some(url) = &self.revocation_list_url {
            return Ok(Some(url.clone()));
        }
        if self.jwks_url.is_some() {
            return Ok(None);
        }
        let (_, doc) = self.discovery().await?;
        Ok(doc
            .get("revocation_list_uri")
            .and_then(Value::as_str)
            .map(str::to_string))
    }

    /// The discovery document, with the URL it came from; its issuer must be the configured one.
    async fn discovery(&self) -> Result<(String, Value), String> {
        let url = self
            .discovery_url
            .clone()
            .unwrap_or_else(|| discovery_url_for(&self.issuer));
        let response = self.client.get(&url).await?;
        if response.status != 200 {
            return Err(format!("GET {url}: HTTP {}", response.status));
        }
        let doc: Value =
            serde_json::from_slice(&response.body).map_err(|e| format!("{url} is not JSON: {e}"))?;
        let issuer = doc.get("issuer").and_then(Value::as_str).unwrap_or_default();
        if issuer != self.issuer {
            return Err(format!(
                "the discovery document's issuer {issuer:?} is not the configured issuer {:?}",
                self.issuer
            ));
        }
        Ok((url, doc))
    }
}

impl KeySource for OidcSource {
    fn fetch(&self) -> FetchFuture<'_> {
        Box::pin(async move {
            let url = self.jwks_url().await?;
            let response = self.client.get(&url).await?;
            if response.status != 200 {
                return Err(format!("GET {url}: HTTP {}", response.status));
            }
            Ok(Fetched {
                max_age: response.cache_control.as_deref().and_then(http::max_age),
                jwks: response.body,
            })
        })
    }

    fn fetch_revocations(&self) -> ListFuture<'_> {
        Box::pin(async move {
            let Some(url) = self.revocation_list_url().await? else {
                return Ok(None);
            };
            let response = self.client.get(&url).await?;
            if response.status != 200 {
                return Err(format!("GET {url}: HTTP {}", response.status));
            }
            Ok(Some(FetchedList {
                max_age: response.cache_control.as_deref().and_then(http::max_age),
                jwt: response.body,
            }))
        })
    }
}

/// `<issuer without trailing slash>/.well-known/openid-configuration`.
pub fn discovery_url_for(issuer: &str) -> String {
    format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    )
}

// === Verifier ===

/// Builds a [`Verifier`].
#[must_use]
pub struct VerifierBuilder {
    issuer: String,
    audiences: Vec<String>,
    discovery_url: Option<String>,
    jwks_url: Option<String>,
    ca_pem: Option<Vec<u8>>,
    bearer: Option<String>,
    revocation_list_url: Option<String>,
    leeway: Duration,
    policy: CachePolicy,
    revocation: RevocationPolicy,
    accept_legacy: bool,
    source: Option<Arc<dyn KeySource>>,
}

impl VerifierBuilder {
    /// An audience a token must carry (at least one of those given). Required.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audiences.push(audience.into());
        self
    }

    /// Fetch discovery here instead of `<issuer>/.well-known/openid-configuration` (the
    /// document's `issuer` must still be the configured issuer).
    pub fn discovery_url(mut self, url: impl Into<String>) -> Self {
        self.discovery_url = Some(url.into());
        self
    }

    /// Fetch the JWKS from this URL, skipping discovery.
    pub fn jwks_url(mut self, url: impl Into<String>) -> Self {
        self.jwks_url = Some(url.into());
        self
    }

    /// Trust these PEM certificates for the fetches instead of the system bundle.
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// Send this bearer token with the fetches (kube-apiserver serves discovery to
    /// ServiceAccounts, not to anonymous clients, unless an operator allows it).
    pub fn fetch_bearer_token(mut self, token: impl Into<String>) -> Self {
        self.bearer = Some(token.into());
        self
    }

    /// Clock skew tolerated on `exp`, `nbf` and `iat`; default and most 60 s (kube-apiserver's).
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway.min(Duration::from_secs(LEEWAY_SECONDS.unsigned_abs()));
        self
    }

    /// Check tokens against the signed revocation list at this URL, whether or not
    /// discovery names one (HTTPS source only; a [`KeySource`] fetches its own list).
    pub fn revocation_list_url(mut self, url: impl Into<String>) -> Self {
        self.revocation_list_url = Some(url.into());
        self
    }

    /// Refresh timing, for the JWKS and the revocation list alike.
    pub fn cache_policy(mut self, policy: CachePolicy) -> Self {
        self.policy = policy;
        self
    }

    /// How long a revocation list that cannot be refreshed is still trusted.
    pub fn revocation_policy(mut self, policy: RevocationPolicy) -> Self {
        self.revocation = policy;
        self
    }

    /// Accept legacy Secret-based tokens (`iss` `kubernetes/serviceaccount`): refused by
    /// default, since they never expire and carry no audience, so any service they reach
    /// can replay them to another. Enable only to migrate a service off them.
    pub fn accept_legacy_tokens(mut self, accept: bool) -> Self {
        self.accept_legacy = accept;
        self
    }

    /// Take keys from `source` instead of HTTPS (static files, a test double).
    pub fn key_source(mut self, source: impl KeySource + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    /// The verifier, or why the options do not make one (no issuer, no audience).
    pub fn build(self) -> Result<Verifier, VerifyError> {
        if self.issuer.is_empty() {
            return Err(VerifyError::Config("an issuer is required".into()));
        }
        if self.audiences.iter().all(String::is_empty) {
            // A token for any audience is a token meant for another service.
            return Err(VerifyError::Config("at least one audience is required".into()));
        }
        let source: Arc<dyn KeySource> = match self.source {
            Some(source) => source,
            None => Arc::new(OidcSource {
                issuer: self.issuer.clone(),
                discovery_url: self.discovery_url,
                jwks_url: self.jwks_url,
                revocation_list_url: self.revocation_list_url,
                client: http::HttpsClient::new(self.ca_pem.as_deref(), self.bearer, FETCH_TIMEOUT)
                    .map_err(VerifyError::Config)?,
            }),
        };
        Ok(Verifier {
            inner: Arc::new(Inner {
                issuers: vec![self.issuer],
                audiences: self.audiences.into_iter().filter(|a| !a.is_empty()).collect(),
                leeway: self.leeway,
                accept_legacy: self.accept_legacy,
                cache: KeyCache::new(source.clone(), self.policy),
                revocations: RevocationCache::new(self.policy, self.revocation),
                source,
            }),
        })
    }
}

/// Verifies ServiceAccount tokens of one issuer for a set of audiences. Cheap to clone.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

struct Inner {
    issuers: Vec<String>,
    audiences: Vec<String>,
    leeway: Duration,
    accept_legacy: bool,
    cache: KeyCache,
    revocations: RevocationCache,
    source: Arc<dyn KeySource>,
}

impl Verifier {
    /// A verifier for tokens issued by `issuer` (the exact `iss` string).
    pub fn builder(issuer: impl Into<String>) -> VerifierBuilder {
        VerifierBuilder {
            issuer: issuer.into(),
            audiences: Vec::new(),
            discovery_url: None,
            jwks_url: None,
            revocation_list_url: None,
            ca_pem: None,
            bearer: None,
            leeway: Duration::from_secs(LEEWAY_SECONDS.unsigned_abs()),
            policy: CachePolicy::default(),
            revocation: RevocationPolicy::default(),
            accept_legacy: false,
            source: None,
        }
    }

    /// Checks `token` and returns the ServiceAccount it authenticates.
    pub async fn verify(&self, token: &str) -> Result<ServiceAccountIdentity, VerifyError> {
        self.verify_at(token, unix_now()).await
    }

    async fn verify_at(&self, token: &str, now: i64) -> Result<ServiceAccountIdentity, VerifyError> {
        let parsed = jws::parse(token)?;
        let mut keys = self
            .inner
            .cache
            .keys(Need::Current)
            .await
            .map_err(VerifyError::KeysUnavailable)?;
        if !parsed.has_key_in(&keys) {
            // A new key is published before it signs, so an unknown kid usually means keys
            // rotated since the last fetch: one refresh (rate-limited) before refusing.
            keys = self
                .inner
                .cache
                .keys(Need::UnknownKid)
                .await
                .map_err(VerifyError::KeysUnavailable)?;
        }
        let claims = parsed.verify(&keys)?;
        self.check_time(&claims, now)?;
        let expect = Expectations {
            issuers: &self.inner.issuers,
            api_audiences: &self.inner.audiences,
            requested_audiences: &[],
            accept_legacy: self.inner.accept_legacy,
            now,
        };
        let validated = badge_token::claims::validate(&Value::Object(claims), &expect)?;
        let checks = Checks {
            source: &*self.inner.source,
            keys: &self.inner.cache,
            issuer: self.inner.issuers.first().map_or("", String::as_str),
            leeway: self.leeway_seconds(),
            now,
        };
        let published = self
            .inner
            .revocations
            .current(&checks)
            .await
            .map_err(VerifyError::RevocationsUnavailable)?;
        if let Published::List(list) = &*published
            && list.revokes(&validated)
        {
            return Err(VerifyError::Revoked);
        }
        Ok(ServiceAccountIdentity::from_claims(validated))
    }

    fn leeway_seconds(&self) -> i64 {
        i64::try_from(self.inner.leeway.as_secs()).unwrap_or(LEEWAY_SECONDS)
    }

    /// The configured leeway, when narrower than badge-token's fixed 60 s.
    fn check_time(&self, claims: &Map<String, Value>, now: i64) -> Result<(), VerifyError> {
        let leeway = self.leeway_seconds();
        let int = |name| claims.get(name).and_then(Value::as_i64);
        if int("exp").is_some_and(|exp| now.saturating_sub(leeway) > exp) {
            return Err(badge_token::TokenError::Expired.into());
        }
        if int("nbf").is_some_and(|nbf| now.saturating_add(leeway) < nbf) {
            return Err(badge_token::TokenError::NotYetValid.into());
        }
        if int("iat").is_some_and(|iat| now.saturating_add(leeway) < iat) {
            return Err(badge_token::TokenError::IssuedInFuture.into());
        }
        Ok(())
    }
}

/// The verifier's one clock read: `verify` is the entry point, `verify_at` takes the time.
#[allow(clippy::disallowed_methods, reason = "the verifier's one clock read")]
fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The token of an `Authorization: Bearer <token>` header value.
pub fn bearer_token(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests;
