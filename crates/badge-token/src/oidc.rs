//! OIDC discovery documents, after kube-apiserver's `pkg/serviceaccount/openidmetadata.go`
//! (`openIDConfigJSON`, `openIDKeysetJSON`) and `pkg/routes/openidmetadata.go` (paths and headers).
//! The documents are rendered once per key-set change and served as bytes.

use serde::Serialize;

use crate::keys::{Jwk, VerifyingKey};

/// Path of the discovery document.
pub const CONFIG_PATH: &str = "/.well-known/openid-configuration";
/// Path of the key set.
pub const JWKS_PATH: &str = "/openid/v1/jwks";
/// `Content-Type` of the discovery document.
pub const CONFIG_CONTENT_TYPE: &str = "application/json";
/// `Content-Type` of the key set.
pub const JWKS_CONTENT_TYPE: &str = "application/jwk-set+json";
/// `Cache-Control` for static keys; also the least publish lead of a new key.
pub const CACHE_CONTROL: &str = "public, max-age=3600";
/// The max-age above, in seconds.
pub const CACHE_MAX_AGE_SECONDS: i64 = 3600;

/// Upstream's `openIDMetadata`: the field order is the struct order.
#[derive(Serialize)]
struct Metadata<'a> {
    issuer: &'a str,
    jwks_uri: &'a str,
    response_types_supported: [&'static str; 1],
    subject_types_supported: [&'static str; 1],
    id_token_signing_alg_values_supported: Vec<&'static str>,
    /// badge's own: the signed list of revoked tokens, for verifiers that never call the
    /// server.
    #[serde(skip_serializing_if = "Option::is_none")]
    revocation_list_uri: Option<&'a str>,
}

#[derive(Serialize)]
struct KeySetDoc {
    keys: Vec<Jwk>,
}

/// Whether discovery is served for this issuer: upstream installs the endpoints only for an
/// https URL without query or fragment.
pub fn serves_discovery(issuer: &str) -> bool {
    issuer
        .strip_prefix("https://")
        .is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/') && !rest.contains(['?', '#']))
}

/// The discovery document: `issuer`, `jwks_uri`, `response_types_supported: ["id_token"]`,
/// `subject_types_supported: ["public"]` and the sorted, de-duplicated algorithms of `keys`.
pub fn openid_configuration(
    issuer: &str,
    jwks_uri: &str,
    revocation_list_uri: Option<&str>,
    keys: &[VerifyingKey],
) -> Vec<u8> {
    let mut algs: Vec<_> = keys.iter().map(VerifyingKey::algorithm).collect();
    algs.sort_unstable_by_key(|a| a.as_str());
    algs.dedup();
    let doc = Metadata {
        issuer,
        jwks_uri,
        response_types_supported: ["id_token"],
        subject_types_supported: ["public"],
        id_token_signing_alg_values_supported: algs.into_iter().map(|a| a.as_str()).collect(),
        revocation_list_uri,
    };
    // Serialising strings and arrays of strings cannot fail.
    serde_json::to_vec(&doc).unwrap_or_default()
}

/// The key set `{"keys":[…]}`: one JWK per key, in order, duplicates included.
pub fn jwks(keys: &[VerifyingKey]) -> Vec<u8> {
    let doc = KeySetDoc {
        keys: keys.iter().map(VerifyingKey::to_jwk).collect(),
    };
    serde_json::to_vec(&doc).unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::keys::tests::{EC_P256_KID, EC_P256_SEC1, RSA2048_KID, RSA2048_PKCS1};

    fn keys() -> Vec<VerifyingKey> {
        vec![
            VerifyingKey::from_pem(RSA2048_PKCS1).unwrap(),
            VerifyingKey::from_pem(EC_P256_SEC1).unwrap(),
            VerifyingKey::from_pem(RSA2048_PKCS1).unwrap(),
        ]
    }

    #[test]
    fn configuration_has_upstream_field_order() {
        let doc = openid_configuration(
            "https://issuer.example",
            "https://10.0.0.1:6443/openid/v1/jwks",
            None,
            &keys(),
        );
        assert_eq!(
            String::from_utf8(doc).unwrap(),
            r#"{"issuer":"https://issuer.example","jwks_uri":"https://10.0.0.1:6443/openid/v1/jwks","response_types_supported":["id_token"],"subject_types_supported":["public"],"id_token_signing_alg_values_supported":["ES256","RS256"]}"#
        );
    }

    #[test]
    fn configuration_lists_the_revocation_list_last() {
        let doc = openid_configuration(
            "https://issuer.example",
            "https://10.0.0.1:6443/openid/v1/jwks",
            Some("https://10.0.0.1:6443/openid/v1/revocations"),
            &keys(),
        );
        let text = String::from_utf8(doc).unwrap();
        assert!(
            text.ends_with(r#""revocation_list_uri":"https://10.0.0.1:6443/openid/v1/revocations"}"#),
            "{text}"
        );
    }

    #[test]
    fn jwks_lists_every_key_in_order() {
        let doc: serde_json::Value = serde_json::from_slice(&jwks(&keys())).unwrap();
        let kids: Vec<&str> = doc["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap())
            .collect();
        assert_eq!(kids, vec![RSA2048_KID, EC_P256_KID, RSA2048_KID]);
        let text = String::from_utf8(jwks(&keys()[1..2])).unwrap();
        assert!(
            text.starts_with(r#"{"keys":[{"use":"sig","kty":"EC","kid":""#),
            "{text}"
        );
        assert_eq!(String::from_utf8(jwks(&[])).unwrap(), r#"{"keys":[]}"#);
    }

    #[test]
    fn discovery_only_for_https_issuers() {
        assert!(serves_discovery("https://kubernetes.default.svc"));
        assert!(serves_discovery("https://issuer.example/path"));
        for bad in [
            "http://x",
            "https://",
            "https://x?a=b",
            "https://x#f",
            "kubernetes/serviceaccount",
            "https:///x",
        ] {
            assert!(!serves_discovery(bad), "{bad}");
        }
    }
}
