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
//! A JWKS-verified token stays valid until it expires even if its ServiceAccount or Pod is
//! deleted: keep token lifetimes short, or use the TokenReview mode where that matters.
//!
//! Issuers are compared byte for byte, as kube-apiserver does (`pkg/serviceaccount/claims.go`
//! looks the `iss` up in a set of the configured strings): `https://issuer` and
//! `https://issuer/` are different issuers. Only the discovery URL is built with the
//! trailing slash removed (`<issuer without trailing slash>/.well-known/openid-configuration`,
//! as OIDC Discovery §4 and go-oidc build it), and the document's `issuer` must then equal
//! the configured issuer exactly.

mod cache;
mod http;
mod jwk;
mod jws;
mod review;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use badge_token::ObjectRef;
pub use badge_token::claims::NodeRef;
pub use cache::{CachePolicy, FetchFuture, Fetched, KeySource};
pub use review::TokenReviewer;

use badge_token::claims::{Expectations, LEEWAY_SECONDS, ValidatedClaims};
use cache::{KeyCache, Need};
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
}

impl VerifyError {
    /// Whether the token itself was refused (answer 401), as opposed to the verifier being
    /// unable to decide (answer 503).
    pub fn is_refusal(&self) -> bool {
        !matches!(self, Self::KeysUnavailable(_) | Self::Review(_) | Self::Config(_))
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
    /// The Secret the token is bound to (JWKS mode only; TokenReview does not report it).
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
        Self {
            issuer: Some(claims.issuer),
            namespace: claims.namespace,
            name: claims.service_account.name,
            uid: claims.service_account.uid,
            pod: claims.pod,
            secret: claims.secret,
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
    client: http::HttpsClient,
}

impl OidcSource {
    async fn jwks_url(&self) -> Result<String, String> {
        if let Some(url) = &self.jwks_url {
            return Ok(url.clone());
        }
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
        doc.get("jwks_uri")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| format!("{url} has no jwks_uri"))
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
    leeway: Duration,
    policy: CachePolicy,
    source: Option<Box<dyn KeySource>>,
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

    /// Refresh timing.
    pub fn cache_policy(mut self, policy: CachePolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Take keys from `source` instead of HTTPS (static files, a test double).
    pub fn key_source(mut self, source: impl KeySource + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    pub fn build(self) -> Result<Verifier, VerifyError> {
        if self.issuer.is_empty() {
            return Err(VerifyError::Config("an issuer is required".into()));
        }
        if self.audiences.iter().all(String::is_empty) {
            // A token for any audience is a token meant for another service.
            return Err(VerifyError::Config("at least one audience is required".into()));
        }
        let source = match self.source {
            Some(source) => source,
            None => Box::new(OidcSource {
                issuer: self.issuer.clone(),
                discovery_url: self.discovery_url,
                jwks_url: self.jwks_url,
                client: http::HttpsClient::new(self.ca_pem.as_deref(), self.bearer, FETCH_TIMEOUT)
                    .map_err(VerifyError::Config)?,
            }),
        };
        Ok(Verifier {
            inner: Arc::new(Inner {
                issuers: vec![self.issuer],
                audiences: self.audiences.into_iter().filter(|a| !a.is_empty()).collect(),
                leeway: self.leeway,
                cache: KeyCache::new(source, self.policy),
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
    cache: KeyCache,
}

impl Verifier {
    /// A verifier for tokens issued by `issuer` (the exact `iss` string).
    pub fn builder(issuer: impl Into<String>) -> VerifierBuilder {
        VerifierBuilder {
            issuer: issuer.into(),
            audiences: Vec::new(),
            discovery_url: None,
            jwks_url: None,
            ca_pem: None,
            bearer: None,
            leeway: Duration::from_secs(LEEWAY_SECONDS.unsigned_abs()),
            policy: CachePolicy::default(),
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
            accept_legacy: false,
            now,
        };
        let validated = badge_token::claims::validate(&Value::Object(claims), &expect)?;
        Ok(ServiceAccountIdentity::from_claims(validated))
    }

    /// The configured leeway, when narrower than badge-token's fixed 60 s.
    fn check_time(&self, claims: &Map<String, Value>, now: i64) -> Result<(), VerifyError> {
        let leeway = i64::try_from(self.inner.leeway.as_secs()).unwrap_or(LEEWAY_SECONDS);
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
