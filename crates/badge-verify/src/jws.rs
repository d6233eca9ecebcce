//! Compact JWS verification against a JWKS's keys: the header and payload are read only after
//! their shape is checked, the algorithm is taken from the key (the token's `alg` must name
//! it), and every JSON object is refused when a member repeats.
//!
//! badge-token's `jwt::parse_and_verify` is not used: its key set indexes keys by the kid
//! badge derives from the key (SHA-256 of the SubjectPublicKeyInfo), while a JWKS names each
//! key with the kid its publisher chose (an external signer's key ids need not be such
//! hashes). Keys and claim validation are badge-token's.

use badge_token::{Algorithm, VerifyingKey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use crate::VerifyError;
use crate::jwk::Keys;

/// Larger tokens are refused before any decoding (badge-token's limit).
pub(crate) const MAX_TOKEN_BYTES: usize = badge_token::jwt::MAX_TOKEN_BYTES;
/// A revocation list grows with the revoked tokens; the fetch's body cap bounds it.
pub(crate) const MAX_LIST_BYTES: usize = 1024 * 1024;
/// Nesting allowed in a header: its parameters are strings.
const HEADER_MAX_DEPTH: usize = 3;
/// Nesting allowed in a payload: `kubernetes.io.pod.name` is depth 3, a list entry depth 3.
const PAYLOAD_MAX_DEPTH: usize = 16;

/// What a compact JWS must declare itself to be (RFC 8725 §3.11 explicit typing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Typ {
    /// A ServiceAccount token: `typ` absent or `JWT`.
    Token,
    /// A document signed by the issuer for verifiers: exactly this `typ`, required.
    Required(&'static str),
}

/// The header of a compact JWS whose shape is right; nothing is verified yet.
#[derive(Debug)]
pub(crate) struct Parsed<'t> {
    pub alg: Algorithm,
    pub kid: Option<String>,
    signing_input: &'t [u8],
    payload: Vec<u8>,
    signature: Vec<u8>,
}

/// Steps before any key is looked at: size, three segments, strict base64url, a header of
/// `alg`, `kid` and `typ` only, and `alg` RS256 or ES256.
pub(crate) fn parse(token: &str) -> Result<Parsed<'_>, VerifyError> {
    parse_typed(token, Typ::Token)
}

/// [`parse`] for a JWS of the given type: a token is never taken for a revocation list, nor a
/// list for a token.
pub(crate) fn parse_typed(token: &str, typ: Typ) -> Result<Parsed<'_>, VerifyError> {
    let max_bytes = match typ {
        Typ::Token => MAX_TOKEN_BYTES,
        Typ::Required(_) => MAX_LIST_BYTES,
    };
    if token.len() > max_bytes {
        return Err(VerifyError::Malformed("token larger than the size limit"));
    }
    let mut parts = token.split('.');
    let (Some(h64), Some(p64), Some(s64), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(VerifyError::Malformed("not a compact JWS of three segments"));
    };
    if h64.is_empty() || p64.is_empty() || s64.is_empty() {
        // An unsigned `alg: none` token ends with an empty segment.
        return Err(VerifyError::Malformed("a JWS segment is empty"));
    }
    let decode = |segment: &str, what: &'static str| {
        URL_SAFE_NO_PAD
            .decode(segment)
            .map_err(|_| VerifyError::Malformed(what))
    };
    let header = decode(h64, "the header is not base64url")?;
    let payload = decode(p64, "the payload is not base64url")?;
    let signature = decode(s64, "the signature is not base64url")?;
    let header = unique_object(&header, HEADER_MAX_DEPTH)
        .ok_or(VerifyError::Malformed("the header is not a JSON object"))?;
    let mut alg = None;
    let mut kid = None;
    let mut declared = None;
    for (name, value) in &header {
        match (name.as_str(), value) {
            ("alg", Value::String(v)) => alg = Some(v.as_str()),
            ("kid", Value::String(v)) => kid = Some(v.clone()),
            ("typ", Value::String(v)) => declared = Some(v.as_str()),
            // `jku`, `jwk`, `x5u`, `x5c`, `crit` and the rest would let the token choose
            // its own key or processing rules.
            _ => return Err(VerifyError::Malformed("the header has a parameter not accepted")),
        }
    }
    let typ_accepted = match typ {
        Typ::Token => declared.is_none_or(|t| t == "JWT"),
        Typ::Required(wanted) => declared == Some(wanted),
    };
    if !typ_accepted {
        return Err(VerifyError::Malformed("the header's typ is not accepted"));
    }
    let alg = match alg {
        Some("RS256") => Algorithm::Rs256,
        Some("ES256") => Algorithm::Es256,
        _ => return Err(VerifyError::UnsupportedAlgorithm),
    };
    Ok(Parsed {
        alg,
        kid: kid.filter(|k| !k.is_empty()),
        signing_input: &token.as_bytes()[..h64.len() + 1 + p64.len()],
        payload,
        signature,
    })
}

impl Parsed<'_> {
    /// Whether `keys` has the key this token names (or, without a kid, any key for its alg).
    pub(crate) fn has_key_in(&self, keys: &Keys) -> bool {
        match &self.kid {
            Some(kid) => keys.get(kid).is_some(),
            None => keys.all().iter().any(|k| k.algorithm() == self.alg),
        }
    }

    /// Checks the signature with the key `keys` lists for the token, then returns the payload
    /// object.
    pub(crate) fn verify(self, keys: &Keys) -> Result<Map<String, Value>, VerifyError> {
        let verified = match &self.kid {
            Some(kid) => {
                let key = keys.get(kid).ok_or(VerifyError::UnknownKey)?;
                if key.algorithm() != self.alg {
                    return Err(VerifyError::AlgorithmMismatch);
                }
                key.verify(self.signing_input, &self.signature)
            }
            // Tokens without a kid (old secret-based ones) are tried against each key of their
            // algorithm, as upstream does.
            None => {
                let mut candidates = keys.all().iter().filter(|k| k.algorithm() == self.alg).peekable();
                if candidates.peek().is_none() {
                    return Err(VerifyError::UnknownKey);
                }
                candidates.any(|k: &VerifyingKey| k.verify(self.signing_input, &self.signature))
            }
        };
        if !verified {
            return Err(VerifyError::InvalidSignature);
        }
        unique_object(&self.payload, PAYLOAD_MAX_DEPTH)
            .ok_or(VerifyError::Malformed("the payload is not a JSON object"))
    }
}

/// A JSON object, refused (None) when any object in it repeats a member name: two parsers
/// that keep different duplicates would disagree on who the token names.
fn unique_object(bytes: &[u8], max_depth: usize) -> Option<Map<String, Value>> {
    badge_token::json::parse_object(bytes, max_depth).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_members_are_refused_at_any_depth() {
        let depth = PAYLOAD_MAX_DEPTH;
        assert!(unique_object(br#"{"a":1,"b":{"c":[1,{"d":2}]}}"#, depth).is_some());
        assert!(unique_object(br#"{"sub":"a","sub":"b"}"#, depth).is_none());
        assert!(unique_object(br#"{"kubernetes.io":{"namespace":"a","namespace":"b"}}"#, depth).is_none());
        assert!(unique_object(b"[1]", depth).is_none());
    }

    #[test]
    fn shape_is_checked_before_keys() {
        let b = |s: &str| URL_SAFE_NO_PAD.encode(s);
        let payload = b(r#"{"sub":"x"}"#);
        for (header, want_unsupported) in [
            (r#"{"alg":"none"}"#, true),
            (r#"{"alg":"HS256"}"#, true),
            (r#"{"alg":"ES384"}"#, true),
            (r#"{"alg":"PS256"}"#, true),
            (r#"{"alg":"RS256","jku":"https://evil"}"#, false),
            (r#"{"alg":"RS256","typ":"at+jwt"}"#, false),
        ] {
            let token = format!("{}.{payload}.{}", b(header), b("sig"));
            let err = parse(&token).unwrap_err();
            assert_eq!(
                matches!(err, VerifyError::UnsupportedAlgorithm),
                want_unsupported,
                "{header}: {err}"
            );
        }
        assert!(parse(&format!("{}.{payload}.", b(r#"{"alg":"none"}"#))).is_err());
        assert!(parse("a.b").is_err());
        assert!(parse(&format!("{}.{payload}.{}=", b(r#"{"alg":"RS256"}"#), b("s"))).is_err());
    }
}
