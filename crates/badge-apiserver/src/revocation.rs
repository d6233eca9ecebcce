//! One token revoked everywhere: every server follows the IssuedTokens through its watch
//! cache into the authenticator's revoked set, and publishes the set as a signed revocation
//! list beside the JWKS (`/openid/v1/revocations`) for verifiers that never call badge.

use std::sync::Arc;

use badge_api::identity::TOKEN_KIND_LABEL;
use badge_api::{Status, meta};
use badge_auth::revocation::{Change, RevokedToken, RevokedTokens};
use badge_registry::{CacheEvent, EventType, Registry, WatchEnd};
use http::{Response, StatusCode, header};
use serde_json::{Value, json};

use crate::ApiServer;
use crate::metrics::Metrics;
use crate::response::{self, Body};

const RECORDS: &str = "/registry/issuedtokens/";
/// The revocation list's media type and JWT `typ` (RFC 8725 §3.11: its own type, so it is
/// never mistaken for a token).
pub const LIST_TYPE: &str = "revocation-list+jwt";
const LIST_CONTENT_TYPE: &str = "application/revocation-list+jwt";
/// How long a verifier may cache the list. Shorter than the JWKS's hour: a revocation
/// must reach verifiers within minutes, a new key is published ahead of its use.
pub const LIST_MAX_AGE_SECONDS: i64 = 60;
/// The list's lifetime: a few cache periods, so a verifier that cached it keeps a valid
/// copy, and one cut off from the server stops trusting a stale list soon.
pub const LIST_LIFETIME_SECONDS: i64 = 5 * LIST_MAX_AGE_SECONDS;

/// The revoked token a record describes, if it is revoked.
pub fn revoked_of(namespace: &str, name: &str, record: &Value) -> Option<RevokedToken> {
    if record.pointer("/spec/revoked").and_then(Value::as_bool) != Some(true) {
        return None;
    }
    let legacy = record
        .pointer(&format!(
            "/metadata/labels/{}",
            TOKEN_KIND_LABEL.replace('/', "~1")
        ))
        .and_then(Value::as_str)
        == Some("legacy");
    Some(RevokedToken {
        namespace: namespace.to_string(),
        record: name.to_string(),
        expires_at: record
            .pointer("/spec/expiresAt")
            .and_then(Value::as_str)
            .and_then(meta::parse_time)
            .map(|t| t.as_second()),
        legacy,
    })
}

/// Whether a cached record has `spec.revoked` set, read without decoding the record: the
/// watch sees every record written, and nearly none is revoked.
fn marked_revoked(record: &badge_registry::CachedObject) -> bool {
    #[derive(serde::Deserialize)]
    struct Record {
        #[serde(default)]
        spec: Option<Spec>,
    }
    #[derive(serde::Deserialize)]
    struct Spec {
        #[serde(default)]
        revoked: Option<Value>,
    }
    record
        .with_json(|json| serde_json::from_slice::<Record>(json).ok())
        .and_then(|r| r.spec?.revoked)
        .is_some_and(|revoked| revoked == Value::Bool(true))
}

fn key_parts(key: &str) -> Option<(&str, &str)> {
    key.strip_prefix(RECORDS)?.split_once('/')
}

/// What one watch event changes in the set, and whether the record was revoked before it.
fn change_of(event: &CacheEvent) -> Option<(Change, bool)> {
    let (namespace, name) = key_parts(&event.key)?;
    let now_revoked = match event.kind {
        EventType::Deleted => None,
        // Read by the cache on the way in when it could; otherwise read here.
        _ if !event
            .token_revoked
            .unwrap_or_else(|| marked_revoked(&event.object)) =>
        {
            None
        }
        _ => revoked_of(namespace, name, &event.object.value()),
    };
    Some(match now_revoked {
        Some(token) => {
            let was_revoked = event.prev.as_ref().is_some_and(|prev| marked_revoked(prev));
            (Change::Revoked(token), was_revoked)
        }
        None => (
            Change::Cleared {
                namespace: namespace.to_string(),
                record: name.to_string(),
            },
            false,
        ),
    })
}

/// Applies watch events to the set in one change; how many tokens became revoked.
fn apply(revoked: &RevokedTokens, events: &[Arc<CacheEvent>]) -> usize {
    let (changes, were_revoked): (Vec<Change>, Vec<bool>) =
        events.iter().filter_map(|event| change_of(event)).unzip();
    revoked
        .apply(changes)
        .into_iter()
        .zip(were_revoked)
        .filter(|(added, was)| *added && !was)
        .count()
}

/// Events taken from a watch at once, at most.
const EVENTS_AT_ONCE: usize = 4096;

/// Follows the inventory into `revoked` on this server. A revocation is counted once, by
/// the server whose watch sees the record change.
pub fn spawn_watch(registry: Arc<Registry>, revoked: Arc<RevokedTokens>, metrics: Arc<Metrics>) {
    tokio::spawn(async move {
        loop {
            let Ok(mut watch) = registry.cache().watch(RECORDS, None) else {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            };
            // A fresh list replaces the set: what changed while the watch was down was
            // never seen as events.
            revoked.replace(watch.initial.drain(..).filter_map(|event| {
                let (namespace, name) = key_parts(&event.key)?;
                marked_revoked(&event.object)
                    .then(|| revoked_of(namespace, name, &event.object.value()))
                    .flatten()
            }));
            loop {
                let mut events = match watch.next().await {
                    Ok(event) => vec![event],
                    Err(WatchEnd::Lagged | WatchEnd::Reset) => break,
                    Err(WatchEnd::Closed) => return,
                };
                // What else has arrived goes in the same change: a burst of revocations
                // copies the set once, not once each.
                let mut end = None;
                while events.len() < EVENTS_AT_ONCE {
                    match futures::FutureExt::now_or_never(watch.next()) {
                        Some(Ok(event)) => events.push(event),
                        Some(Err(e)) => {
                            end = Some(e);
                            break;
                        }
                        None => break,
                    }
                }
                for _ in 0..apply(&revoked, &events) {
                    metrics.token_revoked();
                }
                match end {
                    Some(WatchEnd::Lagged | WatchEnd::Reset) => break,
                    Some(WatchEnd::Closed) => return,
                    None => {}
                }
            }
        }
    });
}

/// The list's claims: who issued it, when, until when, and each revoked token.
pub fn list_claims(issuer: &str, tokens: &[RevokedToken], now: i64) -> Value {
    let revoked: Vec<Value> = tokens
        .iter()
        .map(|t| {
            let mut entry = json!({"namespace": t.namespace});
            if t.legacy {
                entry["secret"] = json!(t.record);
            } else {
                entry["jti"] = json!(t.record);
            }
            if let Some(exp) = t.expires_at {
                entry["exp"] = json!(exp);
            }
            entry
        })
        .collect();
    json!({
        "iss": issuer,
        "iat": now,
        "exp": now + LIST_LIFETIME_SECONDS,
        "revoked": revoked,
    })
}

impl ApiServer {
    /// `GET /openid/v1/revocations`: the revoked tokens not yet expired, signed with the
    /// current service-account key, authorized as the JWKS is.
    pub(crate) fn revocation_list(&self) -> Result<Response<Body>, Status> {
        let issuer = self.token_issuer.as_ref().ok_or_else(Status::path_not_found)?;
        let revoked = self.revoked.as_ref().ok_or_else(Status::path_not_found)?;
        let first = issuer.config.issuers.first().cloned().unwrap_or_default();
        if !crate::serviceaccount::serves_discovery(&first) {
            return Err(Status::path_not_found());
        }
        let now = badge_auth::serviceaccount::now();
        let claims = list_claims(&first, &revoked.live(now), now);
        let signer = issuer
            .keys
            .signer()
            .ok_or_else(|| Status::service_unavailable("no active service account signing key"))?;
        let token = badge_token::jwt::sign_typed(&signer, LIST_TYPE, &claims)
            .map_err(|e| Status::internal(format!("failed to sign the revocation list: {e}")))?;
        let mut response = response::json_bytes(
            StatusCode::OK,
            LIST_CONTENT_TYPE,
            token.into_exposed().into_bytes(),
        );
        response.headers_mut().insert(
            header::CACHE_CONTROL,
            http::HeaderValue::from_str(&format!("public, max-age={LIST_MAX_AGE_SECONDS}"))
                .map_err(|_| Status::internal("cache control"))?,
        );
        Ok(response)
    }
}

/// Where discovery points verifiers for the list: beside the JWKS when this server serves
/// the JWKS; an outside JWKS location has no list beside it.
pub fn list_uri(jwks_uri: &str) -> Option<String> {
    jwks_uri
        .strip_suffix("/openid/v1/jwks")
        .map(|base| format!("{base}/openid/v1/revocations"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn records_are_revoked_only_when_spec_says_so() {
        let record = json!({
            "metadata": {"labels": {TOKEN_KIND_LABEL: "bound"}},
            "spec": {"revoked": true, "expiresAt": "2030-01-01T00:00:00Z"}
        });
        let token = revoked_of("demo", "jti-1", &record).unwrap();
        assert_eq!(token.expires_at, Some(1_893_456_000));
        assert!(!token.legacy);
        assert!(revoked_of("demo", "jti-1", &json!({"spec": {"revoked": false}})).is_none());
        assert!(revoked_of("demo", "jti-1", &json!({"spec": {}})).is_none());
        let legacy = json!({
            "metadata": {"labels": {TOKEN_KIND_LABEL: "legacy"}},
            "spec": {"revoked": true}
        });
        let token = revoked_of("demo", "app-token", &legacy).unwrap();
        assert!(token.legacy && token.expires_at.is_none());
    }

    #[test]
    fn the_list_names_each_token_and_expires_soon() {
        let tokens = [
            RevokedToken {
                namespace: "demo".into(),
                record: "jti-1".into(),
                expires_at: Some(2000),
                legacy: false,
            },
            RevokedToken {
                namespace: "demo".into(),
                record: "app-token".into(),
                expires_at: None,
                legacy: true,
            },
        ];
        let claims = list_claims("https://issuer", &tokens, 1000);
        assert_eq!(claims["iss"], "https://issuer");
        assert_eq!(claims["iat"], 1000);
        assert_eq!(claims["exp"], 1000 + LIST_LIFETIME_SECONDS);
        assert_eq!(
            claims["revoked"],
            json!([
                {"namespace": "demo", "jti": "jti-1", "exp": 2000},
                {"namespace": "demo", "secret": "app-token"}
            ])
        );
    }

    #[test]
    fn the_signed_list_verifies_with_the_published_key_and_is_no_token() {
        let key = badge_token::SigningKey::generate_ec(badge_token::Curve::P256).unwrap();
        let claims = list_claims("https://issuer", &[], 1000);
        let token = badge_token::jwt::sign_typed(&key, LIST_TYPE, &claims).unwrap();
        let text = token.into_exposed();
        let header: Value = serde_json::from_slice(
            &base64::Engine::decode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                text.split('.').next().unwrap(),
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(header["typ"], LIST_TYPE);
        assert_eq!(header["kid"], key.kid());
        // The token verifier refuses it: a list cannot pass for a ServiceAccount token.
        let keys = badge_token::KeySet::new(Some(key), []);
        assert!(badge_token::jwt::parse_and_verify(&text, &keys).is_err());
    }

    #[test]
    fn the_list_sits_beside_a_served_jwks_only() {
        assert_eq!(
            list_uri("https://10.0.0.1:6443/openid/v1/jwks").as_deref(),
            Some("https://10.0.0.1:6443/openid/v1/revocations")
        );
        assert_eq!(list_uri("https://keys.example/jwks.json"), None);
    }
}
