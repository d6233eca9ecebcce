//! The issuer's signed revocation list (badge publishes one at `/openid/v1/revocations` and
//! names it in discovery as `revocation_list_uri`): a JWT of `typ` `revocation-list+jwt`,
//! signed with a key of the issuer's JWKS, whose `revoked` claim lists each revoked token by
//! namespace and `jti` (or, for a legacy Secret-based token, by its Secret's name).
//!
//! It is cached as the JWKS is (its `Cache-Control` max-age, one refresh at a time, rate
//! limited), but an outage is bounded: a list is trusted for [`RevocationPolicy::max_stale`]
//! past the moment it should have been replaced, then every token is refused as
//! unverifiable. A list that fails any check (signature, `typ`, issuer, expiry, shape, older
//! than the one held) counts as a failed refresh: it never replaces a good list.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use badge_token::claims::{TokenKind, ValidatedClaims};
use serde_json::{Map, Value};
use tokio::time::Instant;

use crate::cache::{CachePolicy, KeyCache, KeySource, Need};
use crate::jws::{self, Typ};

/// The list's JWT `typ` and media type suffix, as badge serves it.
pub const LIST_TYPE: &str = "revocation-list+jwt";

/// A revocation list as fetched: the compact JWS, with how long its publisher lets it be cached.
#[derive(Debug)]
pub struct FetchedList {
    /// The signed list.
    pub jwt: Vec<u8>,
    /// The response's `Cache-Control` max-age, if it had one.
    pub max_age: Option<Duration>,
}

/// What a revocation-list fetch returns: `None` when the issuer publishes no list.
pub type ListFuture<'a> = Pin<Box<dyn Future<Output = Result<Option<FetchedList>, String>> + Send + 'a>>;

/// How long a revocation list is trusted once it cannot be refreshed.
#[derive(Clone, Copy, Debug)]
pub struct RevocationPolicy {
    /// How long the last good list keeps being used after its max-age (or its own `exp`,
    /// whichever is first) has passed while no newer list can be fetched. Past it, tokens are
    /// refused with [`crate::VerifyError::RevocationsUnavailable`] (fail closed): a token
    /// revoked during the outage would otherwise be accepted indefinitely.
    pub max_stale: Duration,
}

impl Default for RevocationPolicy {
    fn default() -> Self {
        Self {
            max_stale: Duration::from_secs(300),
        }
    }
}

/// A verified revocation list.
#[derive(Debug, Default)]
pub(crate) struct RevocationList {
    issued_at: i64,
    expires_at: i64,
    /// (namespace, jti) of revoked bound tokens.
    jtis: HashSet<(String, String)>,
    /// (namespace, Secret name) of revoked legacy tokens.
    secrets: HashSet<(String, String)>,
}

impl RevocationList {
    /// Reads the verified claims of a list: `iss` exactly `issuer`, `exp` not passed and
    /// `iat` not ahead (both with `leeway` seconds), and every entry well-formed.
    pub(crate) fn from_claims(
        claims: &Map<String, Value>,
        issuer: &str,
        leeway: i64,
        now: i64,
    ) -> Result<Self, String> {
        if claims.get("iss").and_then(Value::as_str) != Some(issuer) {
            return Err("the revocation list is not the configured issuer's".into());
        }
        let int = |name: &str| {
            claims
                .get(name)
                .and_then(Value::as_i64)
                .ok_or_else(|| format!("the revocation list has no integer {name}"))
        };
        let (issued_at, expires_at) = (int("iat")?, int("exp")?);
        if now.saturating_sub(leeway) > expires_at {
            return Err("the revocation list has expired".into());
        }
        if now.saturating_add(leeway) < issued_at {
            return Err("the revocation list is issued in the future".into());
        }
        let entries = claims
            .get("revoked")
            .and_then(Value::as_array)
            .ok_or("the revocation list has no revoked array")?;
        let mut list = Self {
            issued_at,
            expires_at,
            ..Self::default()
        };
        for entry in entries {
            // One bad entry refuses the whole list: applying the rest would silently drop
            // a revocation.
            let text = |name: &str| entry.get(name).and_then(Value::as_str);
            let namespace = text("namespace")
                .filter(|n| !n.is_empty())
                .ok_or("a revocation list entry has no namespace")?
                .to_string();
            match (text("jti"), text("secret")) {
                (Some(jti), None) if !jti.is_empty() => {
                    list.jtis.insert((namespace, jti.to_string()));
                }
                (None, Some(secret)) if !secret.is_empty() => {
                    list.secrets.insert((namespace, secret.to_string()));
                }
                _ => return Err("a revocation list entry names neither one jti nor one secret".into()),
            }
        }
        Ok(list)
    }

    /// Whether the list names the token: a bound token by its namespace and `jti`, a legacy
    /// token by its namespace and Secret name.
    pub(crate) fn revokes(&self, claims: &ValidatedClaims) -> bool {
        let key = match claims.kind {
            TokenKind::Bound => claims.jti.as_ref().map(|jti| (&self.jtis, jti)),
            TokenKind::Legacy => claims
                .legacy_secret_name
                .as_ref()
                .map(|secret| (&self.secrets, secret)),
        };
        key.is_some_and(|(set, name)| set.contains(&(claims.namespace.clone(), name.clone())))
    }

    /// How many tokens the list names.
    pub(crate) fn len(&self) -> usize {
        self.jtis.len() + self.secrets.len()
    }
}

/// What the issuer publishes, as last learned.
#[derive(Debug)]
pub(crate) enum Published {
    /// No revocation list: tokens are not checked against one.
    Nothing,
    /// This list.
    List(RevocationList),
}

#[derive(Clone, Default)]
struct State {
    known: Option<Arc<Published>>,
    fresh_until: Option<Instant>,
    /// Past this the known list is not used (None: no limit, as for `Nothing`).
    trusted_until: Option<Instant>,
    last_attempt: Option<Instant>,
    generation: u64,
}

impl State {
    fn usable(&self, now: Instant) -> Option<Arc<Published>> {
        self.known
            .clone()
            .filter(|_| self.trusted_until.is_none_or(|t| now < t))
    }
}

/// Where the list is checked against: the issuer, the key cache for its signature, the leeway.
pub(crate) struct Checks<'a> {
    pub source: &'a dyn KeySource,
    pub keys: &'a KeyCache,
    pub issuer: &'a str,
    pub leeway: i64,
    /// Unix seconds.
    pub now: i64,
}

/// The cached list. Readers take a short lock for a snapshot; one refresh runs at a time.
pub(crate) struct RevocationCache {
    policy: CachePolicy,
    revocation: RevocationPolicy,
    state: parking_lot::Mutex<State>,
    refresh: tokio::sync::Mutex<()>,
}

impl RevocationCache {
    pub(crate) fn new(policy: CachePolicy, revocation: RevocationPolicy) -> Self {
        Self {
            policy,
            revocation,
            state: parking_lot::Mutex::new(State::default()),
            refresh: tokio::sync::Mutex::new(()),
        }
    }

    /// What the issuer publishes: the cached answer while fresh, else the result of one
    /// refresh; the last good list while the refresh fails, within the trust window.
    pub(crate) async fn current(&self, checks: &Checks<'_>) -> Result<Arc<Published>, String> {
        let snapshot = self.state.lock().clone();
        let now = Instant::now();
        if let Some(known) = &snapshot.known
            && snapshot.fresh_until.is_some_and(|t| now < t)
        {
            return Ok(known.clone());
        }
        let _gate = match snapshot.usable(now) {
            // A usable list keeps serving while one caller refreshes.
            Some(usable) => match self.refresh.try_lock() {
                Ok(gate) => gate,
                Err(_) => return Ok(usable),
            },
            None => self.refresh.lock().await,
        };
        let current = self.state.lock().clone();
        let now = Instant::now();
        if current.generation != snapshot.generation
            && let Some(usable) = current.usable(now)
        {
            return Ok(usable);
        }
        let rate_limited = current
            .last_attempt
            .is_some_and(|t| now.saturating_duration_since(t) < self.policy.min_refresh_interval);
        if rate_limited {
            return current
                .usable(now)
                .ok_or_else(|| "the revocation list could not be fetched; retrying later".to_string());
        }
        self.state.lock().last_attempt = Some(now);
        match self.fetch(checks, current.known.as_deref()).await {
            Ok((published, fresh_for)) => {
                let published = Arc::new(published);
                let fresh_until = Instant::now() + fresh_for;
                let mut state = self.state.lock();
                state.trusted_until = match *published {
                    Published::Nothing => None,
                    Published::List(_) => Some(fresh_until + self.revocation.max_stale),
                };
                state.known = Some(published.clone());
                state.fresh_until = Some(fresh_until);
                state.generation += 1;
                Ok(published)
            }
            Err(error) => match current.usable(Instant::now()) {
                Some(usable) => {
                    tracing::warn!(%error, "refreshing the revocation list failed; using the last good one");
                    Ok(usable)
                }
                None => Err(error),
            },
        }
    }

    /// Fetches and checks a list; how long the answer is fresh.
    async fn fetch(
        &self,
        checks: &Checks<'_>,
        held: Option<&Published>,
    ) -> Result<(Published, Duration), String> {
        let Some(fetched) = checks.source.fetch_revocations().await? else {
            return Ok((Published::Nothing, self.policy.default_max_age));
        };
        let list = verify(&fetched.jwt, checks).await?;
        if let Some(Published::List(held)) = held
            && list.issued_at < held.issued_at
        {
            // A replayed older list (a stale mirror, an attacker) would unrevoke tokens.
            return Err("the revocation list is older than the one held".into());
        }
        let max_age = self.policy.age(fetched.max_age);
        let until_exp = u64::try_from(list.expires_at.saturating_sub(checks.now)).unwrap_or(0);
        let fresh_for = max_age.min(Duration::from_secs(until_exp));
        tracing::debug!(
            revoked = list.len(),
            fresh_seconds = fresh_for.as_secs(),
            "fetched the revocation list"
        );
        Ok((Published::List(list), fresh_for))
    }
}

/// Checks a fetched list: its `typ`, its signature against the issuer's JWKS (one key
/// refresh for an unknown kid), then its claims.
async fn verify(jwt: &[u8], checks: &Checks<'_>) -> Result<RevocationList, String> {
    let text = std::str::from_utf8(jwt)
        .map_err(|_| "the revocation list is not text".to_string())?
        .trim();
    let parsed = jws::parse_typed(text, Typ::Required(LIST_TYPE))
        .map_err(|e| format!("the revocation list is refused: {e}"))?;
    let mut keys = checks.keys.keys(Need::Current).await?;
    if !parsed.has_key_in(&keys) {
        keys = checks.keys.keys(Need::UnknownKid).await?;
    }
    let claims = parsed
        .verify(&keys)
        .map_err(|e| format!("the revocation list is refused: {e}"))?;
    RevocationList::from_claims(&claims, checks.issuer, checks.leeway, checks.now)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn entries_name_bound_and_legacy_tokens() {
        let list = RevocationList::from_claims(
            &claims(json!({"iss": "https://i", "iat": 100, "exp": 400, "revoked": [
                {"namespace": "shop", "jti": "j-1", "exp": 500},
                {"namespace": "shop", "secret": "old-token"},
            ]})),
            "https://i",
            0,
            200,
        )
        .unwrap();
        assert_eq!(list.len(), 2);
        assert!(list.jtis.contains(&("shop".into(), "j-1".into())));
        assert!(list.secrets.contains(&("shop".into(), "old-token".into())));
    }

    #[test]
    fn a_list_is_refused_whole_for_one_bad_entry_or_claim() {
        let check = |value: Value| RevocationList::from_claims(&claims(value), "https://i", 60, 1000);
        let ok = json!({"iss": "https://i", "iat": 990, "exp": 1200, "revoked": []});
        assert!(check(ok.clone()).is_ok());
        for (field, value) in [
            ("iss", json!("https://i/")),
            ("iat", json!(2000)),
            ("exp", json!(900)),
            ("exp", json!("1200")),
            ("revoked", json!({})),
            ("revoked", json!([{"jti": "j"}])),
            ("revoked", json!([{"namespace": "a", "jti": "j", "secret": "s"}])),
            ("revoked", json!([{"namespace": "a"}])),
            ("revoked", json!([{"namespace": "a", "jti": ""}])),
        ] {
            let mut bad = ok.clone();
            bad[field] = value.clone();
            assert!(check(bad).is_err(), "{field}: {value}");
        }
        let mut without_exp = ok;
        without_exp.as_object_mut().unwrap().remove("exp");
        assert!(check(without_exp).is_err());
    }
}
