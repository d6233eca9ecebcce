//! Service-account claims, after kube-apiserver's `pkg/serviceaccount/claims.go` (`Claims`,
//! `validator.Validate`), `legacy.go` (`LegacyClaims`, `legacyValidator.Validate`), the audience
//! handling of `jwt.go` and the user of k8s.io/apiserver `pkg/authentication/serviceaccount/util.go`.
//!
//! [`validate`] runs verification steps 8–10 (issuer, time, audience) and the claim checks
//! upstream's validators make before their object lookups. The lookups themselves (the SA, bound
//! pod/secret/node exist, are not deleted more than 60 s ago, and have the claimed UIDs; the
//! legacy Secret holds this exact token) are the server's: [`ValidatedClaims`] carries what they
//! need.
//!
//! Deliberate differences from upstream, all stricter: bound tokens must carry `exp`, `aud` and a
//! `sub` consistent with `kubernetes.io`; a token bound to a Secret and to a pod or node is
//! refused; a legacy token's `exp`/`nbf`, should one ever carry them, are honoured.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::error::TokenError;

/// The clock skew tolerated on `exp`, `nbf` and `iat` (go-jose `DefaultLeeway`).
pub const LEEWAY_SECONDS: i64 = 60;
/// The issuer of secret-based (legacy) tokens.
pub const LEGACY_ISSUER: &str = "kubernetes/serviceaccount";
/// The group every service account is in.
pub const ALL_SERVICE_ACCOUNTS_GROUP: &str = "system:serviceaccounts";
/// Extra key: the bound pod's name.
pub const POD_NAME_KEY: &str = "authentication.kubernetes.io/pod-name";
/// Extra key: the bound pod's UID.
pub const POD_UID_KEY: &str = "authentication.kubernetes.io/pod-uid";
/// Extra key: the node's name.
pub const NODE_NAME_KEY: &str = "authentication.kubernetes.io/node-name";
/// Extra key: the node's UID.
pub const NODE_UID_KEY: &str = "authentication.kubernetes.io/node-uid";
/// Extra key: `JTI=<jti>`.
pub const CREDENTIAL_ID_KEY: &str = "authentication.kubernetes.io/credential-id";

const USERNAME_PREFIX: &str = "system:serviceaccount:";
const PRIVATE_CLAIM: &str = "kubernetes.io";
const LEGACY_NAMESPACE: &str = "kubernetes.io/serviceaccount/namespace";
const LEGACY_SECRET_NAME: &str = "kubernetes.io/serviceaccount/secret.name";
const LEGACY_SA_NAME: &str = "kubernetes.io/serviceaccount/service-account.name";
const LEGACY_SA_UID: &str = "kubernetes.io/serviceaccount/service-account.uid";

/// A named object with its UID, as the claims carry it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectRef {
    /// Object name.
    pub name: String,
    /// Object UID.
    pub uid: String,
}

impl ObjectRef {
    /// A reference from name and UID.
    pub fn new(name: impl Into<String>, uid: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            uid: uid.into(),
        }
    }
}

/// A node reference. The UID is absent when a pod-bound token was issued while its Node object
/// did not exist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRef {
    /// Node name.
    pub name: String,
    /// Node UID, if known.
    pub uid: Option<String>,
}

/// Why claims could not be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClaimsError {
    /// Upstream's wording for a Secret binding combined with a pod or node.
    #[error("internal error, token can only be bound to one object type")]
    MultipleBindings,
}

// === bound tokens ===

/// The claims of a TokenRequest token. Build with [`BoundClaims::new`], set the bindings, then
/// [`BoundClaims::to_payload`] and [`crate::jwt::sign_payload`] (or [`BoundClaims::to_value`] and
/// [`crate::jwt::sign`], the same bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoundClaims {
    /// `iss`: the first configured issuer.
    pub issuer: String,
    /// `aud`, always serialised as an array.
    pub audiences: Vec<String>,
    /// The service account's namespace.
    pub namespace: String,
    /// The service account.
    pub service_account: ObjectRef,
    /// Bound pod.
    pub pod: Option<ObjectRef>,
    /// Bound secret (excludes pod and node).
    pub secret: Option<ObjectRef>,
    /// Node: the bound node, or the node of the bound pod.
    pub node: Option<NodeRef>,
    /// `iat` and `nbf`.
    pub issued_at: i64,
    /// `exp`.
    pub expires_at: i64,
    /// `kubernetes.io.warnafter`, for the kubelet's extended-expiry tokens.
    pub warn_after: Option<i64>,
    /// `jti`.
    pub jti: Option<String>,
}

impl BoundClaims {
    /// Claims for `service_account` in `namespace`, valid from `now` for `expiration_seconds`,
    /// with a fresh random UUIDv4 `jti`.
    pub fn new(
        issuer: impl Into<String>,
        audiences: Vec<String>,
        namespace: impl Into<String>,
        service_account: ObjectRef,
        now: i64,
        expiration_seconds: i64,
    ) -> Self {
        Self {
            issuer: issuer.into(),
            audiences,
            namespace: namespace.into(),
            service_account,
            pod: None,
            secret: None,
            node: None,
            issued_at: now,
            expires_at: now.saturating_add(expiration_seconds),
            warn_after: None,
            // A random (v4) UUID as upstream's, drawn from the thread's CSPRNG: `new_v4` asks
            // the kernel for every token, a system call on the issuing path.
            jti: Some(
                uuid::Builder::from_random_bytes(rand::random())
                    .into_uuid()
                    .to_string(),
            ),
        }
    }

    /// The JSON payload. Members are sorted when signed.
    pub fn to_value(&self) -> Result<Value, ClaimsError> {
        if self.secret.is_some() && (self.pod.is_some() || self.node.is_some()) {
            return Err(ClaimsError::MultipleBindings);
        }
        let mut k8s = Map::new();
        k8s.insert("namespace".into(), json!(self.namespace));
        k8s.insert("serviceaccount".into(), ref_value(&self.service_account));
        if let Some(pod) = &self.pod {
            k8s.insert("pod".into(), ref_value(pod));
        }
        if let Some(secret) = &self.secret {
            k8s.insert("secret".into(), ref_value(secret));
        }
        if let Some(node) = &self.node {
            let mut n = Map::new();
            n.insert("name".into(), json!(node.name));
            if let Some(uid) = node.uid.as_ref().filter(|u| !u.is_empty()) {
                n.insert("uid".into(), json!(uid));
            }
            k8s.insert("node".into(), Value::Object(n));
        }
        if let Some(w) = self.warn_after {
            k8s.insert("warnafter".into(), json!(w));
        }
        let mut claims = Map::new();
        claims.insert("aud".into(), json!(self.audiences));
        claims.insert("exp".into(), json!(self.expires_at));
        claims.insert("iat".into(), json!(self.issued_at));
        claims.insert("iss".into(), json!(self.issuer));
        if let Some(jti) = &self.jti {
            claims.insert("jti".into(), json!(jti));
        }
        claims.insert(PRIVATE_CLAIM.into(), Value::Object(k8s));
        claims.insert("nbf".into(), json!(self.issued_at));
        claims.insert(
            "sub".into(),
            json!(username(&self.namespace, &self.service_account.name)),
        );
        Ok(Value::Object(claims))
    }
}

impl BoundClaims {
    /// The signed payload: the bytes [`crate::jwt::sign`] writes for [`BoundClaims::to_value`]
    /// (members sorted at every level), written straight from the fields, so a TokenRequest
    /// builds no JSON tree only to walk it once.
    pub fn to_payload(&self) -> Result<Vec<u8>, ClaimsError> {
        if self.secret.is_some() && (self.pod.is_some() || self.node.is_some()) {
            return Err(ClaimsError::MultipleBindings);
        }
        let mut out = Vec::with_capacity(512);
        out.extend_from_slice(b"{\"aud\":[");
        for (i, audience) in self.audiences.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_string(&mut out, audience);
        }
        out.extend_from_slice(b"],\"exp\":");
        write_integer(&mut out, self.expires_at);
        out.extend_from_slice(b",\"iat\":");
        write_integer(&mut out, self.issued_at);
        out.extend_from_slice(b",\"iss\":");
        write_string(&mut out, &self.issuer);
        if let Some(jti) = &self.jti {
            out.extend_from_slice(b",\"jti\":");
            write_string(&mut out, jti);
        }
        out.extend_from_slice(b",\"kubernetes.io\":{\"namespace\":");
        write_string(&mut out, &self.namespace);
        if let Some(node) = &self.node {
            out.extend_from_slice(b",\"node\":{\"name\":");
            write_string(&mut out, &node.name);
            if let Some(uid) = node.uid.as_ref().filter(|u| !u.is_empty()) {
                out.extend_from_slice(b",\"uid\":");
                write_string(&mut out, uid);
            }
            out.push(b'}');
        }
        if let Some(pod) = &self.pod {
            out.extend_from_slice(b",\"pod\":");
            write_ref(&mut out, pod);
        }
        if let Some(secret) = &self.secret {
            out.extend_from_slice(b",\"secret\":");
            write_ref(&mut out, secret);
        }
        out.extend_from_slice(b",\"serviceaccount\":");
        write_ref(&mut out, &self.service_account);
        if let Some(warn_after) = self.warn_after {
            out.extend_from_slice(b",\"warnafter\":");
            write_integer(&mut out, warn_after);
        }
        out.extend_from_slice(b"},\"nbf\":");
        write_integer(&mut out, self.issued_at);
        out.extend_from_slice(b",\"sub\":");
        write_string(&mut out, &username(&self.namespace, &self.service_account.name));
        out.push(b'}');
        Ok(out)
    }
}

fn ref_value(r: &ObjectRef) -> Value {
    json!({"name": r.name, "uid": r.uid})
}

fn write_ref(out: &mut Vec<u8>, r: &ObjectRef) {
    out.extend_from_slice(b"{\"name\":");
    write_string(out, &r.name);
    out.extend_from_slice(b",\"uid\":");
    write_string(out, &r.uid);
    out.push(b'}');
}

/// A JSON string as serde_json writes it; copied whole when nothing in it needs escaping,
/// as names and UIDs never do.
fn write_string(out: &mut Vec<u8>, s: &str) {
    if s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        // Writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    } else {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    }
}

fn write_integer(out: &mut Vec<u8>, n: i64) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, &n);
}

// === legacy tokens ===

/// The claims of a secret-based token (the KCM tokens controller's `LegacyClaims`): no `aud`,
/// no times, no `jti`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LegacyClaims {
    /// The service account's namespace.
    pub namespace: String,
    /// The service account.
    pub service_account: ObjectRef,
    /// The token Secret's name.
    pub secret_name: String,
}

impl LegacyClaims {
    /// The JSON payload.
    pub fn to_value(&self) -> Value {
        json!({
            "iss": LEGACY_ISSUER,
            LEGACY_NAMESPACE: self.namespace,
            LEGACY_SECRET_NAME: self.secret_name,
            LEGACY_SA_NAME: self.service_account.name,
            LEGACY_SA_UID: self.service_account.uid,
            "sub": username(&self.namespace, &self.service_account.name),
        })
    }
}

// === validation ===

/// What a token is checked against. Borrowed, so the per-request cost is nothing.
#[derive(Clone, Copy, Debug)]
pub struct Expectations<'a> {
    /// Accepted issuers of bound tokens: every `--service-account-issuer`.
    pub issuers: &'a [String],
    /// The API audiences (`--api-audiences`, defaulting to all issuers).
    pub api_audiences: &'a [String],
    /// The audiences asked for (TokenReview `spec.audiences`); empty means the API audiences.
    pub requested_audiences: &'a [String],
    /// Whether legacy (secret-based) tokens are accepted.
    pub accept_legacy: bool,
    /// Unix seconds.
    pub now: i64,
}

/// Which validator accepted the token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    /// A TokenRequest token.
    Bound,
    /// A secret-based token.
    Legacy,
}

/// Claims that passed [`validate`], ready for the object checks and for building the user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidatedClaims {
    /// Bound or legacy.
    pub kind: TokenKind,
    /// The token's issuer.
    pub issuer: String,
    /// The service account's namespace.
    pub namespace: String,
    /// The service account, with the UID claimed (check it against the live object).
    pub service_account: ObjectRef,
    /// Bound pod.
    pub pod: Option<ObjectRef>,
    /// Bound secret.
    pub secret: Option<ObjectRef>,
    /// Node claim.
    pub node: Option<NodeRef>,
    /// The legacy token's Secret name.
    pub legacy_secret_name: Option<String>,
    /// `jti`.
    pub jti: Option<String>,
    /// `kubernetes.io.warnafter`.
    pub warn_after: Option<i64>,
    /// `exp`.
    pub expires_at: Option<i64>,
    /// The requested audiences the token carries, in request order (TokenReview
    /// `status.audiences`).
    pub audiences: Vec<String>,
}

impl ValidatedClaims {
    /// `system:serviceaccount:<ns>:<name>`.
    pub fn username(&self) -> String {
        username(&self.namespace, &self.service_account.name)
    }

    /// The user UID: the SA UID from the claims.
    pub fn uid(&self) -> &str {
        &self.service_account.uid
    }

    /// `system:serviceaccounts` and `system:serviceaccounts:<ns>`, in that order.
    /// (`system:authenticated` is added later by the group adder.)
    pub fn groups(&self) -> Vec<String> {
        // Room for the group the authenticator adds, so adding it does not reallocate.
        let mut groups = Vec::with_capacity(3);
        groups.push(ALL_SERVICE_ACCOUNTS_GROUP.to_owned());
        groups.push([ALL_SERVICE_ACCOUNTS_GROUP, ":", &self.namespace].concat());
        groups
    }

    /// `JTI=<jti>` for bound tokens with a jti; legacy tokens have none (upstream's legacy
    /// validator sets no credential ID).
    pub fn credential_id(&self) -> Option<String> {
        match (self.kind, &self.jti) {
            (TokenKind::Bound, Some(jti)) if !jti.is_empty() => Some(["JTI=", jti].concat()),
            _ => None,
        }
    }

    /// The user's extra, with only the keys that apply (upstream `ServiceAccountInfo.UserInfo`):
    /// pod name and uid only together, node name, node uid only with a name, credential id.
    pub fn extra(&self) -> BTreeMap<String, Vec<String>> {
        let mut extra = BTreeMap::new();
        if let Some(pod) = self
            .pod
            .as_ref()
            .filter(|p| !p.name.is_empty() && !p.uid.is_empty())
        {
            extra.insert(POD_NAME_KEY.to_owned(), vec![pod.name.clone()]);
            extra.insert(POD_UID_KEY.to_owned(), vec![pod.uid.clone()]);
        }
        if let Some(id) = self.credential_id() {
            extra.insert(CREDENTIAL_ID_KEY.to_owned(), vec![id]);
        }
        if let Some(node) = self.node.as_ref().filter(|n| !n.name.is_empty()) {
            extra.insert(NODE_NAME_KEY.to_owned(), vec![node.name.clone()]);
            if let Some(uid) = node.uid.as_ref().filter(|u| !u.is_empty()) {
                extra.insert(NODE_UID_KEY.to_owned(), vec![uid.clone()]);
            }
        }
        extra
    }

    /// Seconds past `warnafter` at `now`, if the token is stale (for the
    /// `authentication.k8s.io/stale-token` audit annotation; it still authenticates).
    pub fn stale_by(&self, now: i64) -> Option<i64> {
        self.warn_after.filter(|&w| w != 0 && now > w).map(|w| now - w)
    }
}

/// `system:serviceaccount:<namespace>:<name>`.
pub fn username(namespace: &str, name: &str) -> String {
    // Joined rather than formatted: every cached TokenReview builds it.
    [USERNAME_PREFIX, namespace, ":", name].concat()
}

/// Splits `system:serviceaccount:<ns>:<name>` (upstream `SplitUsername`): exactly two parts,
/// a valid namespace (DNS-1123 label) and a valid SA name (DNS-1123 subdomain).
pub fn split_username(username: &str) -> Option<(&str, &str)> {
    let rest = username.strip_prefix(USERNAME_PREFIX)?;
    let (ns, name) = rest.split_once(':')?;
    if name.contains(':') || !is_dns1123_label(ns) || !is_dns1123_subdomain(name) {
        return None;
    }
    Some((ns, name))
}

/// Checks verified claims (see [`crate::jwt::parse_and_verify`]) as a service-account token:
/// issuer (step 8), time with 60 s leeway (9), audience intersection (10), then the claim layout
/// of the bound or legacy kind.
pub fn validate(claims: &Value, expect: &Expectations<'_>) -> Result<ValidatedClaims, TokenError> {
    let claims = claims.as_object().ok_or(TokenError::PayloadJson)?;
    let issuer = str_claim(claims, "iss")?.ok_or(TokenError::MissingClaim("iss"))?;
    // 8. Issuer decides the kind. The legacy issuer is never a bound issuer.
    let kind = if issuer == LEGACY_ISSUER {
        if !expect.accept_legacy {
            return Err(TokenError::InvalidIssuer);
        }
        TokenKind::Legacy
    } else if expect.issuers.iter().any(|i| i == issuer) {
        TokenKind::Bound
    } else {
        return Err(TokenError::InvalidIssuer);
    };

    // 9. Time.
    let exp = int_claim(claims, "exp")?;
    let nbf = int_claim(claims, "nbf")?;
    let iat = int_claim(claims, "iat")?;
    if kind == TokenKind::Bound && exp.is_none() {
        return Err(TokenError::MissingClaim("exp"));
    }
    let now = expect.now;
    if nbf.is_some_and(|nbf| now.saturating_add(LEEWAY_SECONDS) < nbf) {
        return Err(TokenError::NotYetValid);
    }
    if exp.is_some_and(|exp| now.saturating_sub(LEEWAY_SECONDS) > exp) {
        return Err(TokenError::Expired);
    }
    if iat.is_some_and(|iat| now.saturating_add(LEEWAY_SECONDS) < iat) {
        return Err(TokenError::IssuedInFuture);
    }

    // 10. Audience: the requested audiences the token carries, in request order. Only a legacy
    // token may lack `aud`, and then carries the API audiences implicitly.
    let token_audiences: Vec<&str> = match claims.get("aud") {
        None if kind == TokenKind::Legacy => expect.api_audiences.iter().map(String::as_str).collect(),
        None => return Err(TokenError::MissingClaim("aud")),
        Some(Value::String(a)) => vec![a.as_str()],
        Some(Value::Array(items)) => items
            .iter()
            .map(Value::as_str)
            .collect::<Option<_>>()
            .ok_or(TokenError::ClaimType("aud"))?,
        Some(_) => return Err(TokenError::ClaimType("aud")),
    };
    let requested = if expect.requested_audiences.is_empty() {
        expect.api_audiences
    } else {
        expect.requested_audiences
    };
    let audiences: Vec<String> = requested
        .iter()
        .filter(|r| token_audiences.contains(&r.as_str()))
        .cloned()
        .collect();
    if audiences.is_empty() {
        return Err(TokenError::AudienceMismatch {
            token: token_audiences.iter().map(|a| a.to_string()).collect(),
            target: requested.to_vec(),
        });
    }

    let jti = str_claim(claims, "jti")?.map(str::to_owned);
    let mut out = match kind {
        TokenKind::Bound => bound_claims(claims)?,
        TokenKind::Legacy => legacy_claims(claims)?,
    };
    out.issuer = issuer.to_owned();
    out.audiences = audiences;
    out.expires_at = exp;
    if kind == TokenKind::Bound {
        out.jti = jti;
    }
    Ok(out)
}

fn bound_claims(claims: &Map<String, Value>) -> Result<ValidatedClaims, TokenError> {
    let sub = str_claim(claims, "sub")?
        .filter(|s| !s.is_empty())
        .ok_or(TokenError::MissingClaim("sub"))?;
    let k8s = match claims.get(PRIVATE_CLAIM) {
        Some(Value::Object(m)) => m,
        Some(_) => return Err(TokenError::InvalidClaim(PRIVATE_CLAIM)),
        None => return Err(TokenError::MissingClaim(PRIVATE_CLAIM)),
    };
    let namespace =
        nested_str(k8s, "namespace", "namespace")?.ok_or(TokenError::MissingClaim("namespace"))?;
    let sa = object_ref(k8s, "serviceaccount", true)?.ok_or(TokenError::MissingClaim("serviceaccount"))?;
    // Upstream ignores `sub` for bound tokens; a token whose sub names another account than its
    // private claims is not one badge or upstream issued, so refuse the differential.
    if split_username(sub) != Some((namespace, sa.name.as_str())) {
        return Err(TokenError::InvalidClaim("sub"));
    }
    let pod = object_ref(k8s, "pod", true)?;
    let secret = object_ref(k8s, "secret", true)?;
    let node = match k8s.get("node") {
        None => None,
        Some(v) => {
            let n = v.as_object().ok_or(TokenError::InvalidClaim("node"))?;
            let name = nested_str(n, "name", "node")?.ok_or(TokenError::InvalidClaim("node"))?;
            let uid = nested_str(n, "uid", "node")?.map(str::to_owned);
            Some(NodeRef {
                name: name.to_owned(),
                uid,
            })
        }
    };
    if secret.is_some() && (pod.is_some() || node.is_some()) {
        return Err(TokenError::InvalidClaim(PRIVATE_CLAIM));
    }
    let warn_after = match k8s.get("warnafter") {
        None => None,
        Some(v) => Some(
            v.as_i64()
                .filter(|&w| w >= 0)
                .ok_or(TokenError::InvalidClaim("warnafter"))?,
        ),
    };
    Ok(ValidatedClaims {
        kind: TokenKind::Bound,
        issuer: String::new(),
        namespace: namespace.to_owned(),
        service_account: sa,
        pod,
        secret,
        node,
        legacy_secret_name: None,
        jti: None,
        warn_after,
        expires_at: None,
        audiences: Vec::new(),
    })
}

/// Upstream's legacy validator, check for check and message for message.
fn legacy_claims(claims: &Map<String, Value>) -> Result<ValidatedClaims, TokenError> {
    let required = |key: &'static str, name: &'static str| -> Result<&str, TokenError> {
        match claims.get(key) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.as_str()),
            Some(Value::String(_)) | None => Err(TokenError::MissingClaim(name)),
            Some(_) => Err(TokenError::InvalidClaim(name)),
        }
    };
    let sub = required("sub", "sub")?;
    let namespace = required(LEGACY_NAMESPACE, "namespace")?;
    let secret_name = required(LEGACY_SECRET_NAME, "secretName")?;
    let sa_name = required(LEGACY_SA_NAME, "serviceAccountName")?;
    let sa_uid = required(LEGACY_SA_UID, "serviceAccountUID")?;
    if split_username(sub) != Some((namespace, sa_name)) {
        return Err(TokenError::InvalidClaim("sub"));
    }
    Ok(ValidatedClaims {
        kind: TokenKind::Legacy,
        issuer: String::new(),
        namespace: namespace.to_owned(),
        service_account: ObjectRef::new(sa_name, sa_uid),
        pod: None,
        secret: None,
        node: None,
        legacy_secret_name: Some(secret_name.to_owned()),
        jti: None,
        warn_after: None,
        expires_at: None,
        audiences: Vec::new(),
    })
}

fn str_claim<'a>(claims: &'a Map<String, Value>, name: &'static str) -> Result<Option<&'a str>, TokenError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(TokenError::ClaimType(name)),
    }
}

fn int_claim(claims: &Map<String, Value>, name: &'static str) -> Result<Option<i64>, TokenError> {
    match claims.get(name) {
        None => Ok(None),
        Some(v) => v
            .as_i64()
            .filter(|&n| n >= 0)
            .map(Some)
            .ok_or(TokenError::ClaimType(name)),
    }
}

/// A string member of a private-claim object: absent is `None`, wrong type is an error, empty
/// counts as absent (Go's omitempty strings).
fn nested_str<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    name: &'static str,
) -> Result<Option<&'a str>, TokenError> {
    match obj.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str()).filter(|s| !s.is_empty())),
        Some(_) => Err(TokenError::InvalidClaim(name)),
    }
}

/// `{name, uid}` under `key`; both must be non-empty strings when the object is present.
fn object_ref(
    k8s: &Map<String, Value>,
    key: &'static str,
    need_uid: bool,
) -> Result<Option<ObjectRef>, TokenError> {
    let Some(v) = k8s.get(key) else { return Ok(None) };
    let obj = v.as_object().ok_or(TokenError::InvalidClaim(key))?;
    let name = nested_str(obj, "name", key)?.ok_or(TokenError::InvalidClaim(key))?;
    let uid = nested_str(obj, "uid", key)?;
    if need_uid && uid.is_none() {
        return Err(TokenError::InvalidClaim(key));
    }
    Ok(Some(ObjectRef::new(name, uid.unwrap_or_default())))
}

fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|part| {
            let b = part.as_bytes();
            !b.is_empty()
                && b.iter()
                    .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    type Mutation = fn(&mut Value);

    const NOW: i64 = 1_729_601_640;
    const ISS: &str = "https://kubernetes.default.svc.cluster.local";

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    fn bound() -> BoundClaims {
        BoundClaims::new(
            ISS,
            strings(&[ISS]),
            "default",
            ObjectRef::new("my-sa", "sa-uid"),
            NOW,
            3600,
        )
    }

    #[test]
    fn the_written_payload_is_the_sorted_value() {
        let mut cases = vec![bound()];
        let mut pod = bound();
        pod.pod = Some(ObjectRef::new("web", "pod-uid"));
        pod.node = Some(NodeRef {
            name: "node-1".into(),
            uid: Some("node-uid".into()),
        });
        pod.warn_after = Some(NOW + 3607);
        cases.push(pod);
        let mut secret = bound();
        secret.secret = Some(ObjectRef::new("s", "s-uid"));
        secret.jti = None;
        secret.audiences = Vec::new();
        cases.push(secret);
        let mut node = bound();
        node.node = Some(NodeRef {
            name: "n".into(),
            uid: Some(String::new()),
        });
        node.audiences = strings(&["a", "b\"c", "é\u{1}\\"]);
        node.issuer = "https://x/\n".into();
        node.issued_at = -5;
        cases.push(node);
        let mut bare_node = bound();
        bare_node.node = Some(NodeRef {
            name: "n".into(),
            uid: None,
        });
        cases.push(bare_node);
        for claims in cases {
            let mut sorted = Vec::new();
            crate::jwt::write_sorted(&claims.to_value().unwrap(), &mut sorted);
            assert_eq!(
                String::from_utf8(claims.to_payload().unwrap()).unwrap(),
                String::from_utf8(sorted).unwrap()
            );
        }
        let mut both = bound();
        both.secret = Some(ObjectRef::new("s", "s-uid"));
        both.pod = Some(ObjectRef::new("web", "pod-uid"));
        assert_eq!(both.to_payload(), Err(ClaimsError::MultipleBindings));
    }

    fn check(claims: &Value, requested: &[&str], now: i64) -> Result<ValidatedClaims, TokenError> {
        let issuers = strings(&[ISS, "https://old.example"]);
        let api = strings(&[ISS, "https://old.example"]);
        let requested = strings(requested);
        validate(
            claims,
            &Expectations {
                issuers: &issuers,
                api_audiences: &api,
                requested_audiences: &requested,
                accept_legacy: true,
                now,
            },
        )
    }

    #[test]
    fn every_token_gets_its_own_random_uuid_jti() {
        let jtis: std::collections::HashSet<String> = (0..64).filter_map(|_| bound().jti).collect();
        assert_eq!(jtis.len(), 64);
        for jti in &jtis {
            let id = uuid::Uuid::parse_str(jti).unwrap();
            assert_eq!(id.get_version_num(), 4, "{jti}");
            assert_eq!(id.get_variant(), uuid::Variant::RFC4122, "{jti}");
            assert_eq!(jti.len(), 36, "hyphenated like upstream's");
        }
    }

    #[test]
    fn bound_claims_layout() {
        let mut c = bound();
        c.pod = Some(ObjectRef::new("my-pod", "pod-uid"));
        c.node = Some(NodeRef {
            name: "my-node".into(),
            uid: Some("node-uid".into()),
        });
        c.warn_after = Some(NOW + 3607);
        c.jti = Some("aed34954-b33a-4142-b1ec-389d6bbb4936".into());
        let v = c.to_value().unwrap();
        assert_eq!(
            v,
            json!({
                "aud": [ISS], "exp": NOW + 3600, "iat": NOW, "iss": ISS,
                "jti": "aed34954-b33a-4142-b1ec-389d6bbb4936",
                "kubernetes.io": {
                    "namespace": "default",
                    "node": {"name": "my-node", "uid": "node-uid"},
                    "pod": {"name": "my-pod", "uid": "pod-uid"},
                    "serviceaccount": {"name": "my-sa", "uid": "sa-uid"},
                    "warnafter": NOW + 3607
                },
                "nbf": NOW, "sub": "system:serviceaccount:default:my-sa"
            })
        );
        // A node missing at issue time is named without uid.
        c.node = Some(NodeRef {
            name: "gone".into(),
            uid: None,
        });
        assert_eq!(
            c.to_value().unwrap()["kubernetes.io"]["node"],
            json!({"name": "gone"})
        );
        // Secret binding excludes the others.
        c.secret = Some(ObjectRef::new("s", "u"));
        assert_eq!(c.to_value(), Err(ClaimsError::MultipleBindings));
    }

    #[test]
    fn jti_is_a_fresh_uuid_v4() {
        let (a, b) = (bound(), bound());
        let jti = a.jti.clone().unwrap();
        assert_ne!(a.jti, b.jti);
        let parsed = uuid::Uuid::parse_str(&jti).unwrap();
        assert_eq!(parsed.get_version_num(), 4);
        assert_eq!(jti, jti.to_lowercase());
    }

    #[test]
    fn legacy_claims_layout() {
        let c = LegacyClaims {
            namespace: "default".into(),
            service_account: ObjectRef::new("default", "d68a3316"),
            secret_name: "default-token-bxtj7".into(),
        };
        assert_eq!(
            c.to_value(),
            json!({
                "iss": "kubernetes/serviceaccount",
                "kubernetes.io/serviceaccount/namespace": "default",
                "kubernetes.io/serviceaccount/secret.name": "default-token-bxtj7",
                "kubernetes.io/serviceaccount/service-account.name": "default",
                "kubernetes.io/serviceaccount/service-account.uid": "d68a3316",
                "sub": "system:serviceaccount:default:default"
            })
        );
        let v = check(&c.to_value(), &[], NOW).unwrap();
        assert_eq!(v.kind, TokenKind::Legacy);
        assert_eq!(v.legacy_secret_name.as_deref(), Some("default-token-bxtj7"));
        assert_eq!(v.credential_id(), None, "legacy tokens carry no credential id");
        assert!(v.extra().is_empty());
        // Without aud it carries the API audiences, so it is valid for them only.
        assert_eq!(v.audiences, strings(&[ISS, "https://old.example"]));
        assert!(matches!(
            check(&c.to_value(), &["vault"], NOW),
            Err(TokenError::AudienceMismatch { .. })
        ));
        assert_eq!(v.expires_at, None);
    }

    #[test]
    fn legacy_only_when_enabled_and_with_upstream_messages() {
        let c = LegacyClaims {
            namespace: "ns".into(),
            service_account: ObjectRef::new("sa", "uid"),
            secret_name: "tok".into(),
        };
        let issuers = strings(&[ISS]);
        let e = Expectations {
            issuers: &issuers,
            api_audiences: &issuers,
            requested_audiences: &[],
            accept_legacy: false,
            now: NOW,
        };
        assert_eq!(validate(&c.to_value(), &e), Err(TokenError::InvalidIssuer));

        for (key, msg) in [
            ("sub", "sub claim is missing"),
            (LEGACY_NAMESPACE, "namespace claim is missing"),
            (LEGACY_SECRET_NAME, "secretName claim is missing"),
            (LEGACY_SA_NAME, "serviceAccountName claim is missing"),
            (LEGACY_SA_UID, "serviceAccountUID claim is missing"),
        ] {
            let mut v = c.to_value();
            v.as_object_mut().unwrap().remove(key);
            assert_eq!(check(&v, &[], NOW).unwrap_err().to_string(), msg);
            v.as_object_mut().unwrap().insert(key.into(), json!(""));
            assert_eq!(check(&v, &[], NOW).unwrap_err().to_string(), msg);
        }
        for sub in [
            "system:serviceaccount:ns:other",
            "system:serviceaccount:ns",
            "system:serviceaccount:ns:sa:x",
            "x",
        ] {
            let mut v = c.to_value();
            v["sub"] = json!(sub);
            assert_eq!(
                check(&v, &[], NOW).unwrap_err().to_string(),
                "sub claim is invalid"
            );
        }
    }

    #[test]
    fn bound_token_user_pieces() {
        let mut c = bound();
        c.pod = Some(ObjectRef::new("my-pod", "pod-uid"));
        c.node = Some(NodeRef {
            name: "my-node".into(),
            uid: None,
        });
        c.jti = Some("j-1".into());
        let v = check(&c.to_value().unwrap(), &[], NOW).unwrap();
        assert_eq!(v.kind, TokenKind::Bound);
        assert_eq!(v.username(), "system:serviceaccount:default:my-sa");
        assert_eq!(v.uid(), "sa-uid");
        assert_eq!(
            v.groups(),
            strings(&["system:serviceaccounts", "system:serviceaccounts:default"])
        );
        assert_eq!(v.credential_id().as_deref(), Some("JTI=j-1"));
        let extra = v.extra();
        assert_eq!(extra[POD_NAME_KEY], strings(&["my-pod"]));
        assert_eq!(extra[POD_UID_KEY], strings(&["pod-uid"]));
        assert_eq!(extra[NODE_NAME_KEY], strings(&["my-node"]));
        assert!(!extra.contains_key(NODE_UID_KEY));
        assert_eq!(extra[CREDENTIAL_ID_KEY], strings(&["JTI=j-1"]));
        assert_eq!(v.expires_at, Some(NOW + 3600));
        assert_eq!(v.issuer, ISS);
    }

    #[test]
    fn any_configured_issuer_verifies_exactly() {
        let mut c = bound();
        c.issuer = "https://old.example".into();
        assert!(check(&c.to_value().unwrap(), &[], NOW).is_ok());
        for iss in [
            "https://old.example/",
            "https://OLD.example",
            "https://kubernetes.default.svc.cluster.local/",
            "",
        ] {
            c.issuer = iss.into();
            assert_eq!(
                check(&c.to_value().unwrap(), &[], NOW),
                Err(TokenError::InvalidIssuer),
                "{iss}"
            );
        }
        let mut v = bound().to_value().unwrap();
        v.as_object_mut().unwrap().remove("iss");
        assert_eq!(check(&v, &[], NOW), Err(TokenError::MissingClaim("iss")));
    }

    #[test]
    fn time_leeway_is_sixty_seconds() {
        let c = bound(); // iat = nbf = NOW, exp = NOW + 3600
        let v = c.to_value().unwrap();
        assert!(check(&v, &[], NOW + 3600 + 59).is_ok());
        assert!(check(&v, &[], NOW + 3600 + 60).is_ok());
        assert_eq!(check(&v, &[], NOW + 3600 + 61), Err(TokenError::Expired));
        assert!(check(&v, &[], NOW - 59).is_ok());
        assert!(check(&v, &[], NOW - 60).is_ok());
        assert_eq!(check(&v, &[], NOW - 61), Err(TokenError::NotYetValid));

        let mut v2 = v.clone();
        v2["iat"] = json!(NOW + 120);
        assert_eq!(check(&v2, &[], NOW), Err(TokenError::IssuedInFuture));
        v2["iat"] = json!(NOW + 59);
        assert!(check(&v2, &[], NOW).is_ok());
        v2["iat"] = json!(NOW + 61);
        assert_eq!(check(&v2, &[], NOW), Err(TokenError::IssuedInFuture));

        let mut v3 = v.clone();
        v3["nbf"] = json!(NOW + 61);
        assert_eq!(check(&v3, &[], NOW), Err(TokenError::NotYetValid));
        v3.as_object_mut().unwrap().remove("nbf");
        v3.as_object_mut().unwrap().remove("iat");
        assert!(check(&v3, &[], NOW).is_ok(), "nbf and iat are optional");

        let mut v4 = v;
        v4.as_object_mut().unwrap().remove("exp");
        assert_eq!(check(&v4, &[], NOW), Err(TokenError::MissingClaim("exp")));
        v4["exp"] = json!("never");
        assert_eq!(check(&v4, &[], NOW), Err(TokenError::ClaimType("exp")));
    }

    #[test]
    fn audience_intersection_in_request_order() {
        let mut c = bound();
        c.audiences = strings(&["a", "b", "c"]);
        let v = c.to_value().unwrap();
        assert_eq!(
            check(&v, &["c", "x", "a"], NOW).unwrap().audiences,
            strings(&["c", "a"])
        );
        assert!(matches!(
            check(&v, &["x"], NOW),
            Err(TokenError::AudienceMismatch { .. })
        ));
        // Default: the API audiences.
        assert!(matches!(
            check(&v, &[], NOW),
            Err(TokenError::AudienceMismatch { .. })
        ));
        let mut api_tok = v.clone();
        api_tok["aud"] = json!("https://old.example");
        assert_eq!(
            check(&api_tok, &[], NOW).unwrap().audiences,
            strings(&["https://old.example"])
        );
        // validate re-checks types itself, for callers that skip jwt::parse_and_verify.
        let mut mixed = v.clone();
        mixed["aud"] = json!(["a", 1]);
        assert_eq!(check(&mixed, &["a"], NOW), Err(TokenError::ClaimType("aud")));
        mixed["exp"] = json!(1.5);
        assert_eq!(check(&mixed, &["a"], NOW), Err(TokenError::ClaimType("exp")));
        // A bound token must carry aud.
        let mut no_aud = v;
        no_aud.as_object_mut().unwrap().remove("aud");
        assert_eq!(check(&no_aud, &[], NOW), Err(TokenError::MissingClaim("aud")));
    }

    #[test]
    fn missing_or_malformed_private_claims() {
        let base = bound().to_value().unwrap();
        let cases: Vec<(Mutation, TokenError)> = vec![
            (
                |v| drop(v.as_object_mut().unwrap().remove("sub")),
                TokenError::MissingClaim("sub"),
            ),
            (
                |v| drop(v.as_object_mut().unwrap().remove("kubernetes.io")),
                TokenError::MissingClaim("kubernetes.io"),
            ),
            (
                |v| v["kubernetes.io"] = json!("x"),
                TokenError::InvalidClaim("kubernetes.io"),
            ),
            (
                |v| v["kubernetes.io"]["namespace"] = json!(""),
                TokenError::MissingClaim("namespace"),
            ),
            (
                |v| v["kubernetes.io"]["namespace"] = json!(1),
                TokenError::InvalidClaim("namespace"),
            ),
            (
                |v| {
                    drop(
                        v["kubernetes.io"]
                            .as_object_mut()
                            .unwrap()
                            .remove("serviceaccount"),
                    )
                },
                TokenError::MissingClaim("serviceaccount"),
            ),
            (
                |v| v["kubernetes.io"]["serviceaccount"]["uid"] = json!(""),
                TokenError::InvalidClaim("serviceaccount"),
            ),
            (
                |v| v["kubernetes.io"]["serviceaccount"]["name"] = json!(null),
                TokenError::InvalidClaim("serviceaccount"),
            ),
            (
                |v| v["sub"] = json!("system:serviceaccount:kube-system:admin"),
                TokenError::InvalidClaim("sub"),
            ),
            (
                |v| v["sub"] = json!("system:serviceaccount:default:other"),
                TokenError::InvalidClaim("sub"),
            ),
            (
                |v| v["kubernetes.io"]["pod"] = json!({"name": "p"}),
                TokenError::InvalidClaim("pod"),
            ),
            (
                |v| v["kubernetes.io"]["pod"] = json!([]),
                TokenError::InvalidClaim("pod"),
            ),
            (
                |v| v["kubernetes.io"]["node"] = json!({"uid": "u"}),
                TokenError::InvalidClaim("node"),
            ),
            (
                |v| v["kubernetes.io"]["warnafter"] = json!("soon"),
                TokenError::InvalidClaim("warnafter"),
            ),
            (
                |v| {
                    v["kubernetes.io"]["secret"] = json!({"name": "s", "uid": "u"});
                    v["kubernetes.io"]["pod"] = json!({"name": "p", "uid": "u"});
                },
                TokenError::InvalidClaim("kubernetes.io"),
            ),
            (|v| v["jti"] = json!(7), TokenError::ClaimType("jti")),
        ];
        for (mutate, want) in cases {
            let mut v = base.clone();
            mutate(&mut v);
            assert_eq!(check(&v, &[], NOW), Err(want.clone()), "{want:?}");
        }
    }

    #[test]
    fn stale_tokens_still_validate() {
        let mut c = bound();
        c.warn_after = Some(NOW + 10);
        let v = check(&c.to_value().unwrap(), &[], NOW + 15).unwrap();
        assert_eq!(v.stale_by(NOW + 15), Some(5));
        assert_eq!(v.stale_by(NOW + 10), None);
    }

    #[test]
    fn usernames() {
        assert_eq!(
            split_username("system:serviceaccount:ns:sa.name-1"),
            Some(("ns", "sa.name-1"))
        );
        for bad in [
            "system:serviceaccount:ns",
            "system:serviceaccount::sa",
            "system:serviceaccount:ns:",
            "system:serviceaccount:NS:sa",
            "system:serviceaccount:ns:sa:x",
            "system:serviceaccounts:ns:sa",
            "system:serviceaccount:-ns:sa",
            "system:serviceaccount:ns:sa..x",
        ] {
            assert_eq!(split_username(bad), None, "{bad}");
        }
    }
}
