//! A JWKS document to verification keys. Only the two algorithms Kubernetes signs
//! ServiceAccount tokens with are kept: RSA keys (RS256) and P-256 keys (ES256). Every other
//! key (`oct` secrets above all, which would let a token be MAC'd with a published value, and
//! other curves) is skipped, so no token algorithm outside RS256/ES256 can find a key.

use std::collections::HashMap;

use badge_token::{Algorithm, VerifyingKey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

/// The keys of one JWKS, by the `kid` each JWK declares.
#[derive(Clone, Debug, Default)]
pub(crate) struct Keys {
    by_kid: HashMap<String, VerifyingKey>,
    in_order: Vec<VerifyingKey>,
}

impl Keys {
    /// Parses a `{"keys":[…]}` document. A JWK that is not usable is skipped (and logged);
    /// a document that is not a key set at all is an error.
    pub(crate) fn from_jwks(doc: &[u8]) -> Result<Keys, String> {
        let doc: Value = serde_json::from_slice(doc).map_err(|e| format!("the JWKS is not JSON: {e}"))?;
        let list = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| "the JWKS has no \"keys\" array".to_string())?;
        let mut keys = Keys::default();
        for jwk in list {
            match key_from_jwk(jwk) {
                Ok((kid, key)) => {
                    if keys.by_kid.contains_key(&kid) {
                        // Two keys under one kid would make the choice the publisher's order.
                        tracing::warn!(kid, "JWKS lists the kid more than once; the first key is used");
                        continue;
                    }
                    keys.by_kid.insert(kid, key.clone());
                    keys.in_order.push(key);
                }
                Err(reason) => tracing::debug!(reason, "skipping a JWK"),
            }
        }
        Ok(keys)
    }

    /// The key the JWKS lists under `kid`.
    pub(crate) fn get(&self, kid: &str) -> Option<&VerifyingKey> {
        self.by_kid.get(kid)
    }

    /// Every key, in JWKS order.
    pub(crate) fn all(&self) -> &[VerifyingKey] {
        &self.in_order
    }

    /// How many keys are usable.
    pub(crate) fn len(&self) -> usize {
        self.in_order.len()
    }
}

fn member<'a>(jwk: &'a Value, name: &str) -> Option<&'a str> {
    jwk.get(name).and_then(Value::as_str)
}

fn b64(jwk: &Value, name: &'static str) -> Result<Vec<u8>, String> {
    let text = member(jwk, name).ok_or_else(|| format!("the JWK has no {name}"))?;
    URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .map_err(|_| format!("the JWK's {name} is not base64url"))
}

fn key_from_jwk(jwk: &Value) -> Result<(String, VerifyingKey), String> {
    if let Some(usage) = jwk.get("use")
        && usage.as_str() != Some("sig")
    {
        return Err("the JWK is not a signature key".into());
    }
    let kty = member(jwk, "kty").ok_or("the JWK has no kty")?;
    let (expected_alg, spki) = match kty {
        "RSA" => (Algorithm::Rs256, rsa_spki(&b64(jwk, "n")?, &b64(jwk, "e")?)),
        "EC" => {
            if member(jwk, "crv") != Some("P-256") {
                return Err("only the P-256 curve is accepted".into());
            }
            let (x, y) = (b64(jwk, "x")?, b64(jwk, "y")?);
            if x.len() != 32 || y.len() != 32 {
                return Err("a P-256 coordinate is not 32 bytes".into());
            }
            (Algorithm::Es256, p256_spki(&x, &y))
        }
        other => return Err(format!("key type {other:?} is not accepted")),
    };
    // A JWK's alg must be the one its key type signs with: an RSA key never checks an HS256
    // or ES256 token, whatever the publisher wrote.
    if let Some(alg) = jwk.get("alg")
        && alg.as_str() != Some(expected_alg.as_str())
    {
        return Err(format!("the JWK's alg does not match its key type {kty}"));
    }
    let key = VerifyingKey::from_spki_der(&spki).map_err(|e| format!("the JWK's key: {e}"))?;
    if key.algorithm() != expected_alg {
        return Err("the JWK's key is not of its declared type".into());
    }
    let kid = member(jwk, "kid").map_or_else(|| key.kid().to_string(), str::to_string);
    Ok((kid, key))
}

// --- DER, just enough for the two SubjectPublicKeyInfo shapes

const OID_RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len.to_be_bytes().into_iter().skip_while(|&b| b == 0).collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend_from_slice(&bytes);
    }
    out.extend_from_slice(content);
    out
}

fn unsigned_integer(bytes: &[u8]) -> Vec<u8> {
    let trimmed: Vec<u8> = bytes.iter().copied().skip_while(|&b| b == 0).collect();
    let mut content = Vec::with_capacity(trimmed.len() + 1);
    if trimmed.first().is_none_or(|&b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend_from_slice(&trimmed);
    tlv(0x02, &content)
}

fn bit_string(content: &[u8]) -> Vec<u8> {
    let mut inner = vec![0];
    inner.extend_from_slice(content);
    tlv(0x03, &inner)
}

fn sequence(parts: &[&[u8]]) -> Vec<u8> {
    tlv(0x30, &parts.concat())
}

fn rsa_spki(n: &[u8], e: &[u8]) -> Vec<u8> {
    let algorithm = sequence(&[&tlv(0x06, OID_RSA_ENCRYPTION), &[0x05, 0x00]]);
    let key = sequence(&[&unsigned_integer(n), &unsigned_integer(e)]);
    sequence(&[&algorithm, &bit_string(&key)])
}

fn p256_spki(x: &[u8], y: &[u8]) -> Vec<u8> {
    let algorithm = sequence(&[&tlv(0x06, OID_EC_PUBLIC_KEY), &tlv(0x06, OID_P256)]);
    let point = [&[0x04][..], x, y].concat();
    sequence(&[&algorithm, &bit_string(&point)])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use badge_token::{Curve, SigningKey};

    fn jwk_of(key: &SigningKey) -> Value {
        serde_json::to_value(key.public().to_jwk()).unwrap()
    }

    #[test]
    fn rsa_and_p256_jwks_give_the_same_keys_back() {
        let rsa = SigningKey::generate_rsa(2048).unwrap();
        let ec = SigningKey::generate_ec(Curve::P256).unwrap();
        let doc = serde_json::json!({"keys": [jwk_of(&rsa), jwk_of(&ec)]}).to_string();
        let keys = Keys::from_jwks(doc.as_bytes()).unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys.get(rsa.kid()).unwrap(), rsa.public());
        assert_eq!(keys.get(ec.kid()).unwrap(), ec.public());
    }

    #[test]
    fn secrets_other_curves_and_mismatched_algs_are_skipped() {
        let rsa = SigningKey::generate_rsa(2048).unwrap();
        let p384 = SigningKey::generate_ec(Curve::P384).unwrap();
        let mut rsa_as_es256 = jwk_of(&rsa);
        rsa_as_es256["alg"] = "ES256".into();
        rsa_as_es256["kid"] = "lying".into();
        let mut encryption = jwk_of(&rsa);
        encryption["use"] = "enc".into();
        encryption["kid"] = "enc".into();
        let doc = serde_json::json!({"keys": [
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            jwk_of(&p384),
            rsa_as_es256,
            encryption,
        ]})
        .to_string();
        let keys = Keys::from_jwks(doc.as_bytes()).unwrap();
        assert_eq!(keys.len(), 0, "{keys:?}");
        assert!(Keys::from_jwks(b"{}").is_err());
        assert!(Keys::from_jwks(b"not json").is_err());
    }

    #[test]
    fn a_jwk_keeps_its_declared_kid() {
        let ec = SigningKey::generate_ec(Curve::P256).unwrap();
        let mut jwk = jwk_of(&ec);
        jwk["kid"] = "signer-2026".into();
        let keys = Keys::from_jwks(serde_json::json!({"keys": [jwk]}).to_string().as_bytes()).unwrap();
        assert_eq!(keys.get("signer-2026").unwrap(), ec.public());
        assert!(keys.get(ec.kid()).is_none());
    }

    #[test]
    fn der_lengths_and_integers() {
        assert_eq!(tlv(0x04, &[0; 3]), vec![0x04, 3, 0, 0, 0]);
        assert_eq!(&tlv(0x04, &[0; 300])[..4], &[0x04, 0x82, 0x01, 0x2c]);
        assert_eq!(unsigned_integer(&[0, 0, 0x01]), vec![0x02, 1, 1]);
        assert_eq!(unsigned_integer(&[0x80]), vec![0x02, 2, 0, 0x80]);
    }
}
