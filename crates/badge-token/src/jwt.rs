//! Compact JWS signing and verification, after kube-apiserver's `pkg/serviceaccount/jwt.go`
//! (`jwtTokenGenerator.GenerateToken`, `jwtTokenAuthenticator.AuthenticateToken`) but with the
//! verification order and refusals of steps 1–7 (the crate docs list the steps).
//!
//! Signing writes the header exactly as upstream does, `{"alg":"…","kid":"…"}` (no `typ`), and
//! the payload with object members sorted at every level, as go-jose's map serialisation does.
//! Deliberate differences from upstream's verifier: an algorithm allow-list pinned per key,
//! duplicate JSON members and unknown header parameters refused, registered claims typed strictly.

use std::borrow::Cow;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use crate::error::TokenError;
use crate::json::{self, JsonError};
use crate::keys::{Algorithm, KeyError, SigningKey, VerifyingKey};
use crate::keyset::KeySet;

/// Largest token accepted, in bytes, checked before anything else is done with the input.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Nesting allowed in the header: deep enough to name a forbidden `jwk` or `crit` precisely.
const HEADER_MAX_DEPTH: usize = 3;
/// Nesting allowed in the payload: `kubernetes.io.pod.name` is depth 3.
const PAYLOAD_MAX_DEPTH: usize = 16;

/// Header parameters that are refused by name (RFC 7515/7516/7797/8555 and friends). Anything
/// else but `alg`, `kid` and `typ` is refused as "unrecognized".
const FORBIDDEN_HEADERS: &[&str] = &[
    "jku", "jwk", "x5u", "x5c", "x5t", "x5t#S256", "crit", "cty", "zip", "enc", "b64", "epk", "apu", "apv",
    "iv", "tag", "p2s", "p2c", "url", "nonce", "ppt",
];

// === impl Token ===

/// A signed token. It is a bearer credential: `Debug` is redacted, there is no `Display`, and
/// the text is reached only through [`Token::expose`].
#[derive(Clone)]
pub struct Token(String);

impl Token {
    /// Wraps a token string.
    pub fn new(token: String) -> Self {
        Self(token)
    }

    /// The compact serialisation, for the one place that must send or compare it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The compact serialisation, consuming the wrapper.
    pub fn into_exposed(self) -> String {
        self.0
    }
}

/// On the wire (a TokenRequest reply) a token is its compact serialisation.
impl serde::Serialize for Token {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Why signing failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// Claims must be a JSON object.
    #[error("token claims must be a JSON object")]
    ClaimsNotObject,
    /// The key could not sign.
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// Signs `claims` (a JSON object) with `key`: header `{"alg":…,"kid":…}`, payload with
/// members sorted at every level, signature in JOSE form.
pub fn sign(key: &SigningKey, claims: &Value) -> Result<Token, SignError> {
    if !claims.is_object() {
        return Err(SignError::ClaimsNotObject);
    }
    let mut payload = Vec::with_capacity(512);
    write_sorted(claims, &mut payload);
    sign_payload(key, &payload)
}

/// Signs a payload already written as [`sign`] would write its claims (a JSON object,
/// members sorted at every level), such as [`crate::BoundClaims::to_payload`]'s.
pub fn sign_payload(key: &SigningKey, payload: &[u8]) -> Result<Token, SignError> {
    // alg and kid are base64url/ASCII names, so no escaping is needed; this is the exact byte
    // layout go-jose produces.
    let header = format!(
        r#"{{"alg":"{}","kid":"{}"}}"#,
        key.algorithm().as_str(),
        key.kid()
    );
    assemble(key, &header, payload)
}

/// Signs a JWT that is not a ServiceAccount token, with a `typ` header (RFC 8725 §3.11
/// explicit typing), so no verifier of tokens can take it for one: the token verifier
/// refuses every `typ` but `JWT`.
pub fn sign_typed(key: &SigningKey, typ: &'static str, claims: &Value) -> Result<Token, SignError> {
    let header = serde_json::json!({"alg": key.algorithm().as_str(), "kid": key.kid(), "typ": typ});
    sign_with_header(key, &header.to_string(), claims)
}

fn sign_with_header(key: &SigningKey, header: &str, claims: &Value) -> Result<Token, SignError> {
    if !claims.is_object() {
        return Err(SignError::ClaimsNotObject);
    }
    let mut payload = Vec::with_capacity(512);
    write_sorted(claims, &mut payload);
    assemble(key, header, &payload)
}

fn assemble(key: &SigningKey, header: &str, payload: &[u8]) -> Result<Token, SignError> {
    // base64 grows by 4/3; 1400 covers an RSA-8192 signature.
    let mut token = String::with_capacity((header.len() + payload.len()) * 4 / 3 + 1400);
    URL_SAFE_NO_PAD.encode_string(header.as_bytes(), &mut token);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(payload, &mut token);
    let signature = key.sign(token.as_bytes())?;
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(&signature, &mut token);
    Ok(Token(token))
}

/// A token whose signature verified and whose registered claims are well-typed. Its claims are
/// not yet validated against issuers, time or audiences: see [`crate::claims::validate`].
#[derive(Clone, Debug, PartialEq)]
pub struct VerifiedToken {
    claims: Value,
    kid: String,
    alg: Algorithm,
}

impl VerifiedToken {
    /// The payload, a JSON object.
    pub fn claims(&self) -> &Value {
        &self.claims
    }

    /// The payload, consuming the token.
    pub fn into_claims(self) -> Value {
        self.claims
    }

    /// The kid of the key that verified the signature.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The verified algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

/// Checks a compact JWS against `keys` in the order of verification steps 1–7. Nothing is
/// fetched and nothing is taken from the token but the bytes it signs: the algorithm must be
/// the one pinned to the key, and the key comes from `keys` only.
pub fn parse_and_verify(token: &str, keys: &KeySet) -> Result<VerifiedToken, TokenError> {
    // 1. Size and shape, before any splitting or allocation.
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::TooLarge);
    }
    if token.bytes().filter(|&b| b == b'.').count() != 2 {
        return Err(TokenError::SegmentCount);
    }
    let mut parts = token.splitn(3, '.');
    let (Some(h64), Some(p64), Some(s64)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(TokenError::SegmentCount);
    };
    for (segment, name) in [(h64, "header"), (p64, "payload"), (s64, "signature")] {
        if segment.is_empty() {
            return Err(TokenError::EmptySegment(name));
        }
    }

    // 2. Strict base64url: URL alphabet, no padding, zero trailing bits (the engine's default).
    let header = URL_SAFE_NO_PAD
        .decode(h64)
        .map_err(|_| TokenError::Base64("header"))?;
    let payload = URL_SAFE_NO_PAD
        .decode(p64)
        .map_err(|_| TokenError::Base64("payload"))?;
    let signature = URL_SAFE_NO_PAD
        .decode(s64)
        .map_err(|_| TokenError::Base64("signature"))?;

    // 3. Header: an object of alg, kid and typ only.
    let (alg, kid) = match signed_header(&header) {
        Some((alg, kid)) => (Some(Cow::Borrowed(alg)), Some(Cow::Borrowed(kid))),
        None => {
            let (alg, kid) = read_header(&header)?;
            (alg.map(Cow::Owned), kid.map(Cow::Owned))
        }
    };

    // 4. Algorithm allow-list, exact names only.
    let alg = alg
        .as_deref()
        .and_then(Algorithm::from_name)
        .ok_or(TokenError::UnsupportedAlgorithm)?;

    // 5. Key selection: by exact kid, or every key pinned to this algorithm when there is none
    // (old legacy tokens carry no kid).
    let signing_input = &token.as_bytes()[..h64.len() + 1 + p64.len()];
    let verified = match kid.as_deref().filter(|k| !k.is_empty()) {
        Some(kid) => {
            let key = keys.get(kid).ok_or(TokenError::UnknownKeyId)?;
            if key.algorithm() != alg {
                return Err(TokenError::AlgorithmMismatch);
            }
            // 6. Signature over the bytes received.
            verify_with(key, signing_input, &signature)?
        }
        None => {
            let mut candidates = keys.keys().iter().filter(|k| k.algorithm() == alg).peekable();
            if candidates.peek().is_none() {
                return Err(TokenError::NoKeyForAlgorithm);
            }
            candidates
                .find(|k| k.verify(signing_input, &signature))
                .ok_or(TokenError::InvalidSignature)?
        }
    };

    // 7. Payload: an object, no duplicates, registered claims strictly typed.
    let claims = json::parse_object(&payload, PAYLOAD_MAX_DEPTH).map_err(|e| match e {
        JsonError::Duplicate => TokenError::DuplicateMember("payload"),
        _ => TokenError::PayloadJson,
    })?;
    check_registered_claims(&claims)?;

    Ok(VerifiedToken {
        claims: Value::Object(claims),
        kid: verified.kid().to_owned(),
        alg,
    })
}

fn verify_with<'k>(
    key: &'k VerifyingKey,
    msg: &[u8],
    signature: &[u8],
) -> Result<&'k VerifyingKey, TokenError> {
    if key.verify(msg, signature) {
        Ok(key)
    } else {
        Err(TokenError::InvalidSignature)
    }
}

/// RFC 7519 registered claims, typed as RFC 7519 says and as badge relies on: NumericDates are
/// non-negative integers in i64 range (no floats, strings or booleans), `iss`/`sub`/`jti`
/// strings, `aud` a string or an array of strings. A wrong type is an error, never "absent".
fn check_registered_claims(claims: &Map<String, Value>) -> Result<(), TokenError> {
    for name in ["exp", "nbf", "iat"] {
        if claims.get(name).is_some_and(|v| v.as_i64().is_none_or(|n| n < 0)) {
            return Err(TokenError::ClaimType(name));
        }
    }
    for name in ["iss", "sub", "jti"] {
        if claims.get(name).is_some_and(|v| !v.is_string()) {
            return Err(TokenError::ClaimType(name));
        }
    }
    match claims.get("aud") {
        None | Some(Value::String(_)) => {}
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => {}
        Some(_) => return Err(TokenError::ClaimType("aud")),
    }
    Ok(())
}

/// Compact JSON with object members sorted by name (byte order, as Go sorts map keys).
/// Explicit, so the layout does not depend on serde_json's `preserve_order` feature.
/// The header as [`sign`] writes it, `{"alg":"…","kid":"…"}` byte for byte with nothing
/// escaped in either value: its alg and kid, read without building a JSON tree. Any other
/// header returns None and is read by [`read_header`], which gives the same answer for
/// this one.
fn signed_header(header: &[u8]) -> Option<(&str, &str)> {
    let rest = header.strip_prefix(br#"{"alg":""#)?;
    let end = rest.iter().position(|&b| b == b'"')?;
    let (alg, rest) = rest.split_at(end);
    let kid = rest.strip_prefix(br#"","kid":""#)?.strip_suffix(br#""}"#)?;
    let plain = |s: &[u8]| !s.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\');
    if !plain(alg) || !plain(kid) {
        return None;
    }
    Some((std::str::from_utf8(alg).ok()?, std::str::from_utf8(kid).ok()?))
}

/// The header's alg and kid, refusing duplicates, members other than alg, kid and
/// `"typ":"JWT"`, and values that are not strings.
fn read_header(header: &[u8]) -> Result<(Option<String>, Option<String>), TokenError> {
    let header = json::parse_object(header, HEADER_MAX_DEPTH).map_err(|e| match e {
        JsonError::Duplicate => TokenError::DuplicateMember("header"),
        _ => TokenError::HeaderJson,
    })?;
    let mut alg = None;
    let mut kid = None;
    for (name, value) in header {
        match (name.as_str(), value) {
            ("alg", Value::String(v)) => alg = Some(v),
            ("kid", Value::String(v)) => kid = Some(v),
            ("typ", Value::String(v)) if v == "JWT" => {}
            ("alg", _) => return Err(TokenError::InvalidHeader("alg")),
            ("kid", _) => return Err(TokenError::InvalidHeader("kid")),
            ("typ", _) => return Err(TokenError::InvalidHeader("typ")),
            (other, _) => {
                let known = FORBIDDEN_HEADERS.iter().find(|&&f| f == other);
                return Err(TokenError::ForbiddenHeader(
                    known.copied().unwrap_or("unrecognized"),
                ));
            }
        }
    }
    Ok((alg, kid))
}

pub(crate) fn write_sorted(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            out.push(b'{');
            // Maps usually iterate in key order already; only otherwise are members sorted,
            // which costs an allocation.
            if map.keys().is_sorted() {
                write_members(map.iter(), out);
            } else {
                let mut members: Vec<_> = map.iter().collect();
                members.sort_unstable_by(|a, b| a.0.cmp(b.0));
                write_members(members.into_iter(), out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_sorted(item, out);
            }
            out.push(b']');
        }
        // Writing a string or scalar into a Vec cannot fail.
        scalar => {
            let _ = serde_json::to_writer(&mut *out, scalar);
        }
    }
}

fn write_members<'a>(members: impl Iterator<Item = (&'a String, &'a Value)>, out: &mut Vec<u8>) {
    for (i, (name, member)) in members.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let _ = serde_json::to_writer(&mut *out, name);
        out.push(b':');
        write_sorted(member, out);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::keys::tests::{EC_P256_KID, EC_P256_SEC1, RSA2048_KID, RSA2048_PKCS1};

    fn decode_segment(token: &Token, i: usize) -> String {
        let seg = token.expose().split('.').nth(i).unwrap();
        String::from_utf8(URL_SAFE_NO_PAD.decode(seg).unwrap()).unwrap()
    }

    #[test]
    fn the_signed_header_reads_as_the_parser_reads_it() {
        let headers: &[&[u8]] = &[
            br#"{"alg":"ES256","kid":"abc-_123"}"#,
            br#"{"alg":"RS256","kid":""}"#,
            br#"{"alg":"","kid":"k"}"#,
            br#"{"alg":"none","kid":"k"}"#,
            "{\"alg\":\"ES256\",\"kid\":\"naïve\"}".as_bytes(),
            br#"{"alg":"ES256","kid":"a","kid":"b"}"#,
            br#"{"alg":"ES256","kid":"a\"b"}"#,
            br#"{"alg":"ES\u0032","kid":"k"}"#,
            br#"{"alg":"ES256","kid":"k","typ":"JWT"}"#,
            br#"{"alg":"ES256","kid":"k"} "#,
            br#"{"alg":"ES256", "kid":"k"}"#,
            br#"{"kid":"k","alg":"ES256"}"#,
            b"{\"alg\":\"ES256\",\"kid\":\"\x01\"}",
            b"{\"alg\":\"ES256\",\"kid\":\"\xff\"}",
        ];
        let mut read_by_shape = 0;
        for header in headers {
            let generic = read_header(header);
            if let Some((alg, kid)) = signed_header(header) {
                read_by_shape += 1;
                let (generic_alg, generic_kid) = generic.unwrap();
                assert_eq!(Some(alg), generic_alg.as_deref());
                assert_eq!(Some(kid), generic_kid.as_deref());
            }
        }
        assert_eq!(read_by_shape, 5);
        // What sign writes is what the shape reads.
        let key = SigningKey::from_pem(EC_P256_SEC1).unwrap();
        let token = sign(&key, &json!({"sub": "x"})).unwrap();
        let header = decode_segment(&token, 0);
        assert_eq!(signed_header(header.as_bytes()), Some(("ES256", key.kid())));
    }

    #[test]
    fn header_is_exactly_alg_then_kid() {
        let key = SigningKey::from_pem(RSA2048_PKCS1).unwrap();
        let token = sign(&key, &json!({"sub": "x"})).unwrap();
        assert_eq!(
            decode_segment(&token, 0),
            format!(r#"{{"alg":"RS256","kid":"{RSA2048_KID}"}}"#)
        );
        let key = SigningKey::from_pem(EC_P256_SEC1).unwrap();
        let token = sign(&key, &json!({"sub": "x"})).unwrap();
        assert_eq!(
            decode_segment(&token, 0),
            format!(r#"{{"alg":"ES256","kid":"{EC_P256_KID}"}}"#)
        );
    }

    #[test]
    fn payload_members_sorted_at_every_level() {
        let mut inner = Map::new();
        inner.insert("z".into(), json!(1));
        inner.insert("a".into(), json!({"y": [{"d": 1, "c": 2}], "b": "\"q\""}));
        let mut top = Map::new();
        top.insert("sub".into(), json!("s"));
        top.insert("kubernetes.io".into(), Value::Object(inner));
        top.insert("aud".into(), json!(["x"]));
        let key = SigningKey::from_pem(EC_P256_SEC1).unwrap();
        let token = sign(&key, &Value::Object(top)).unwrap();
        assert_eq!(
            decode_segment(&token, 1),
            r#"{"aud":["x"],"kubernetes.io":{"a":{"b":"\"q\"","y":[{"c":2,"d":1}]},"z":1},"sub":"s"}"#
        );
    }

    #[test]
    fn refuses_non_object_claims() {
        let key = SigningKey::from_pem(EC_P256_SEC1).unwrap();
        assert!(matches!(sign(&key, &json!([1])), Err(SignError::ClaimsNotObject)));
    }

    #[test]
    fn token_debug_is_redacted() {
        let key = SigningKey::from_pem(EC_P256_SEC1).unwrap();
        let token = sign(&key, &json!({"sub": "x"})).unwrap();
        assert_eq!(format!("{token:?}"), "Token(<redacted>)");
        assert_eq!(format!("{:?}", Some(&token)), "Some(Token(<redacted>))");
    }

    #[test]
    fn registered_claim_types() {
        let ok =
            json!({"exp": 1, "nbf": 0, "iat": i64::MAX, "iss": "a", "sub": "b", "jti": "c", "aud": ["x"]});
        assert!(check_registered_claims(ok.as_object().unwrap()).is_ok());
        assert!(check_registered_claims(json!({"aud": "x"}).as_object().unwrap()).is_ok());
        for (bad, name) in [
            (json!({"exp": "never"}), "exp"),
            (json!({"exp": 1.0}), "exp"),
            (json!({"exp": -1}), "exp"),
            (json!({"exp": true}), "exp"),
            (json!({"exp": null}), "exp"),
            (json!({"exp": u64::MAX}), "exp"),
            (json!({"nbf": "2099-01-01"}), "nbf"),
            (json!({"iat": [1]}), "iat"),
            (json!({"iss": 1}), "iss"),
            (json!({"sub": null}), "sub"),
            (json!({"jti": {}}), "jti"),
            (json!({"aud": {"a": 1}}), "aud"),
            (json!({"aud": ["a", 1]}), "aud"),
            (json!({"aud": null}), "aud"),
        ] {
            assert_eq!(
                check_registered_claims(bad.as_object().unwrap()),
                Err(TokenError::ClaimType(name))
            );
        }
    }
}
