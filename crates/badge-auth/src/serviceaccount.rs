//! The ServiceAccount token authenticator (`pkg/serviceaccount/jwt.go` `JWTTokenAuthenticator`
//! with the validators of `claims.go` and `legacy.go`): signature and claims by
//! `badge-token`, then the objects the token names must still exist with the same uid —
//! which is how deleting them revokes the token.
//!
//! The objects are looked up through [`ServiceAccountTokenGetter`], which the server backs
//! with its watch cache, so authentication never touches the store.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use badge_token::claims::{self, Expectations, TokenKind, ValidatedClaims};
use badge_token::{PublishedKeys, jwt};
use parking_lot::RwLock;

use crate::authenticator::{TokenAuthenticator, TokenCredential, TokenOutcome};
use crate::user::UserInfo;

/// How long a deleted object's tokens keep working (upstream's 60 s grace after
/// `deletionTimestamp`).
pub const DELETION_GRACE_SECONDS: i64 = 60;

/// What the authenticator needs to know of an object a token names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectInfo {
    /// `metadata.uid`, which a bound token must name.
    pub uid: String,
    /// `metadata.deletionTimestamp`, unix seconds.
    pub deletion_timestamp: Option<i64>,
    /// A ServiceAccount labelled `identity.badge.dev/disabled=true`: its tokens fail until
    /// the label is removed.
    pub disabled: bool,
}

/// A Secret, as the legacy validator needs it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecretInfo {
    /// The Secret's metadata.
    pub object: ObjectInfo,
    /// The decoded `data.token`.
    pub token: Option<badge_token::Secret<Vec<u8>>>,
    /// The `kubernetes.io/legacy-token-invalid-since` label is set.
    pub invalidated: bool,
}

/// Looks up the objects tokens are bound to (`ServiceAccountTokenGetter` upstream).
pub trait ServiceAccountTokenGetter: Send + Sync {
    /// The ServiceAccount `namespace/name`.
    fn service_account(&self, namespace: &str, name: &str) -> Option<ObjectInfo>;
    /// The pod `namespace/name`.
    fn pod(&self, namespace: &str, name: &str) -> Option<ObjectInfo>;
    /// The Secret `namespace/name`.
    fn secret(&self, namespace: &str, name: &str) -> Option<SecretInfo>;
    /// The Node `name`.
    fn node(&self, name: &str) -> Option<ObjectInfo>;
}

/// Verified tokens, so a token seen before skips signature verification. Keyed by an
/// HMAC of the token and audiences under a per-process random key (upstream's
/// `cached_token_authenticator`), so no token sits in memory as a key. Entries only stand
/// in for the signature and claim checks: expiry, the signing key still being trusted, and
/// the object checks (revocation by deletion) run on every hit.
pub struct VerifiedCache {
    key: aws_lc_rs::hmac::Key,
    /// Split by the fingerprint's first byte, so a miss being inserted locks out only the
    /// reviews that land in its shard, never every review.
    shards: Box<[CacheShard]>,
}

type CacheShard = RwLock<std::collections::HashMap<[u8; 32], Arc<CachedToken>>>;

/// What a cache entry remembers.
pub struct CachedToken {
    kid: String,
    claims: ValidatedClaims,
    /// Built once per verified token, so a hit hands it out with a reference count.
    credential: Option<Arc<TokenCredential>>,
}

/// The inventory name of a verified token: its jti, or its legacy Secret.
fn credential_of(claims: &ValidatedClaims) -> Option<Arc<TokenCredential>> {
    let (record, legacy) = match claims.kind {
        TokenKind::Legacy => (claims.legacy_secret_name.clone()?, true),
        TokenKind::Bound => (claims.jti.clone()?, false),
    };
    Some(Arc::new(TokenCredential {
        namespace: claims.namespace.clone(),
        service_account: claims.service_account.name.clone(),
        record,
        legacy,
        expires_at: claims.expires_at,
    }))
}

/// The most entries kept; a shard is emptied when full (tokens are cheap to re-verify).
const CACHE_CAPACITY: usize = 65_536;
/// A power of two, well above the number of cores that could contend.
const CACHE_SHARDS: usize = 16;

/// The system's random number generator failed: the cache cannot be keyed, and a key from
/// anything predictable would let a token's fingerprint be forged.
#[derive(Debug, thiserror::Error)]
#[error("the system random number generator failed")]
pub struct RandomUnavailable;

impl VerifiedCache {
    /// An empty cache under a fresh random key.
    pub fn new() -> Result<VerifiedCache, RandomUnavailable> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let key = aws_lc_rs::hmac::Key::generate(aws_lc_rs::hmac::HMAC_SHA256, &rng)
            .map_err(|_| RandomUnavailable)?;
        Ok(VerifiedCache {
            key,
            shards: (0..CACHE_SHARDS).map(|_| RwLock::default()).collect(),
        })
    }
}

impl VerifiedCache {
    fn fingerprint(&self, token: &str, audiences: &[String]) -> [u8; 32] {
        let mut ctx = aws_lc_rs::hmac::Context::with_key(&self.key);
        // Length-prefixed so no two (token, audiences) lists hash the same input.
        ctx.update(&(token.len() as u64).to_be_bytes());
        ctx.update(token.as_bytes());
        for a in audiences {
            ctx.update(&(a.len() as u64).to_be_bytes());
            ctx.update(a.as_bytes());
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }

    fn shard(
        &self,
        fingerprint: &[u8; 32],
    ) -> &RwLock<std::collections::HashMap<[u8; 32], Arc<CachedToken>>> {
        // The fingerprint is an HMAC output: its bytes are uniform.
        &self.shards[usize::from(fingerprint[0]) % CACHE_SHARDS]
    }

    fn get(&self, fingerprint: &[u8; 32]) -> Option<Arc<CachedToken>> {
        self.shard(fingerprint).read().get(fingerprint).cloned()
    }

    fn insert(&self, fingerprint: [u8; 32], entry: CachedToken) {
        let mut entries = self.shard(&fingerprint).write();
        if entries.len() >= CACHE_CAPACITY / CACHE_SHARDS {
            entries.clear();
        }
        entries.insert(fingerprint, Arc::new(entry));
    }

    /// How many verified tokens are cached.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|shard| shard.read().len()).sum()
    }

    /// Whether no verified token is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What the token authenticators of this process accepted, and how their caches answered
/// (upstream's `serviceaccount_*_tokens_total`, and badge's cache counts). Process-wide, as
/// Prometheus metrics are.
pub struct TokenCounters {
    /// Legacy tokens authenticated.
    pub legacy: AtomicU64,
    /// Bound tokens used past their `warnafter`.
    pub stale: AtomicU64,
    /// Bound tokens authenticated.
    pub valid: AtomicU64,
    /// Tokens answered from the verified cache.
    pub cache_hits: AtomicU64,
    /// Tokens verified because the cache did not hold them.
    pub cache_misses: AtomicU64,
}

/// This process's counts.
pub static TOKEN_COUNTERS: TokenCounters = TokenCounters {
    legacy: AtomicU64::new(0),
    stale: AtomicU64::new(0),
    valid: AtomicU64::new(0),
    cache_hits: AtomicU64::new(0),
    cache_misses: AtomicU64::new(0),
};

/// The authenticator.
pub struct ServiceAccountAuthenticator {
    /// The published key snapshot (`badge_token::keyset`), read without a lock.
    pub keys: Arc<PublishedKeys>,
    /// Every `--service-account-issuer`.
    pub issuers: Vec<String>,
    /// `--api-audiences`.
    pub api_audiences: Vec<String>,
    /// Where the objects a token names are looked up.
    pub getter: Arc<dyn ServiceAccountTokenGetter>,
    /// Unix seconds now; replaceable for tests.
    pub clock: fn() -> i64,
    /// Tokens already verified, so a repeat skips the signature check.
    pub cache: VerifiedCache,
    /// Tokens revoked one by one (`IssuedToken.spec.revoked`), checked on every hit.
    pub revoked: Arc<crate::revocation::RevokedTokens>,
}

/// The wall clock in unix seconds: the authenticators' clock.
#[allow(clippy::disallowed_methods, reason = "the authenticators' one clock read")]
pub fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// Whether a deletion happened longer ago than the grace upstream allows bound tokens
/// (`invalidIfDeletedBefore`).
fn deleted_before_grace(object: &ObjectInfo, now: i64) -> bool {
    object
        .deletion_timestamp
        .is_some_and(|t| t + DELETION_GRACE_SECONDS < now)
}

/// Compares two secrets without an early exit, so the time taken says nothing about where
/// they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The message of a bound object that is gone, deleted or replaced (`claims.go`).
const INVALIDATED: &str = "service account token has been invalidated";

impl ServiceAccountAuthenticator {
    /// The object checks of `claims.go` (bound) and `legacy.go` (legacy), in upstream's order
    /// and words.
    fn check_objects(&self, token: &str, c: &ValidatedClaims, now: i64) -> Result<(), String> {
        let ns = &c.namespace;
        let sa_name = &c.service_account.name;
        let not_found = |resource: &str, name: &str| format!("{resource} \"{name}\" not found");
        match c.kind {
            TokenKind::Legacy => {
                let name = c.legacy_secret_name.as_deref().unwrap_or_default();
                let secret = self
                    .getter
                    .secret(ns, name)
                    .filter(|s| s.object.deletion_timestamp.is_none())
                    .ok_or("Token has been invalidated")?;
                if !secret
                    .token
                    .as_ref()
                    .is_some_and(|stored| constant_time_eq(stored.expose(), token.as_bytes()))
                {
                    return Err("Token does not match server's copy".into());
                }
                let sa = self
                    .getter
                    .service_account(ns, sa_name)
                    .ok_or_else(|| not_found("serviceaccounts", sa_name))?;
                if sa.deletion_timestamp.is_some() {
                    return Err(format!("ServiceAccount {ns}/{sa_name} has been deleted"));
                }
                if sa.uid != c.service_account.uid {
                    return Err(format!(
                        "ServiceAccount UID ({}) does not match claim ({})",
                        sa.uid, c.service_account.uid
                    ));
                }
                if sa.disabled {
                    return Err(format!("service account {ns}/{sa_name} is disabled"));
                }
                if secret.invalidated {
                    return Err(format!(
                        "the token in secret {ns}/{name} for service account {ns}/{sa_name} has been marked invalid. Use tokens from the TokenRequest API or manually created secret-based tokens, or remove the 'kubernetes.io/legacy-token-invalid-since' label from the secret to temporarily allow use of this token"
                    ));
                }
            }
            TokenKind::Bound => {
                let sa = self
                    .getter
                    .service_account(ns, sa_name)
                    .ok_or_else(|| not_found("serviceaccounts", sa_name))?;
                if sa.uid != c.service_account.uid {
                    return Err(format!(
                        "service account UID ({}) does not match claim ({})",
                        sa.uid, c.service_account.uid
                    ));
                }
                if sa.disabled {
                    return Err(format!("service account {ns}/{sa_name} is disabled"));
                }
                if deleted_before_grace(&sa, now) {
                    return Err(format!("service account {ns}/{sa_name} has been deleted"));
                }
                if let Some(secret) = &c.secret {
                    let live = self.getter.secret(ns, &secret.name).ok_or(INVALIDATED)?;
                    if live.object.uid != secret.uid {
                        return Err(format!(
                            "secret UID ({}) does not match service account secret ref claim ({})",
                            live.object.uid, secret.uid
                        ));
                    }
                    if deleted_before_grace(&live.object, now) {
                        return Err(INVALIDATED.into());
                    }
                }
                if let Some(pod) = &c.pod {
                    let live = self.getter.pod(ns, &pod.name).ok_or(INVALIDATED)?;
                    if live.uid != pod.uid {
                        return Err(format!(
                            "pod UID ({}) does not match service account pod ref claim ({})",
                            live.uid, pod.uid
                        ));
                    }
                    if deleted_before_grace(&live, now) {
                        return Err(INVALIDATED.into());
                    }
                }
                // A pod-bound token's node claim is informational; only node-bound tokens
                // are checked against their Node.
                if c.pod.is_none()
                    && let Some(node) = &c.node
                {
                    let uid = node.uid.as_deref().unwrap_or_default();
                    let live = self.getter.node(&node.name).ok_or(INVALIDATED)?;
                    if live.uid != uid {
                        return Err(format!(
                            "node UID ({}) does not match service account node ref claim ({uid})",
                            live.uid
                        ));
                    }
                    if deleted_before_grace(&live, now) {
                        return Err(INVALIDATED.into());
                    }
                }
            }
        }
        Ok(())
    }

    /// Verifies a token for `audiences`, returning the claims and the user.
    pub fn authenticate(&self, token: &str, audiences: &[String]) -> TokenOutcome {
        let now = (self.clock)();
        let keys = self.keys.current();
        let fingerprint = self.cache.fingerprint(token, audiences);
        if let Some(hit) = self.cache.get(&fingerprint) {
            let expired = hit
                .claims
                .expires_at
                .is_some_and(|exp| now > exp + claims::LEEWAY_SECONDS);
            if !expired && let Some(usage) = keys.usage(&hit.kid) {
                TOKEN_COUNTERS.cache_hits.fetch_add(1, Ordering::Relaxed);
                let outcome = self.finish(token, &hit.claims, hit.credential.clone(), now);
                if matches!(outcome, TokenOutcome::Authenticated { .. }) {
                    usage.record(now);
                }
                return outcome;
            }
        }
        TOKEN_COUNTERS.cache_misses.fetch_add(1, Ordering::Relaxed);
        let verified = match jwt::parse_and_verify(token, &keys) {
            Ok(v) => v,
            Err(e) if e.is_not_a_jws() => return TokenOutcome::NotMine,
            Err(e) => return TokenOutcome::Invalid(e.to_string()),
        };
        let expect = Expectations {
            issuers: &self.issuers,
            api_audiences: &self.api_audiences,
            requested_audiences: audiences,
            accept_legacy: true,
            now,
        };
        let validated = match claims::validate(verified.claims(), &expect) {
            Ok(v) => v,
            Err(e) => return TokenOutcome::Invalid(e.to_string()),
        };
        let credential = credential_of(&validated);
        let outcome = self.finish(token, &validated, credential.clone(), now);
        if matches!(outcome, TokenOutcome::Authenticated { .. }) {
            if let Some(usage) = keys.usage(verified.kid()) {
                usage.record(now);
            }
            self.cache.insert(
                fingerprint,
                CachedToken {
                    kid: verified.kid().to_string(),
                    claims: validated,
                    credential,
                },
            );
        }
        outcome
    }

    /// The object checks and the user, for a token whose signature and claims are good.
    fn finish(
        &self,
        token: &str,
        validated: &ValidatedClaims,
        credential: Option<Arc<TokenCredential>>,
        now: i64,
    ) -> TokenOutcome {
        // Revocation is told apart from deletion by nobody but the inventory: the caller
        // learns only that the token is no longer valid.
        if credential
            .as_ref()
            .is_some_and(|c| self.revoked.is_revoked(&c.namespace, &c.record))
        {
            return TokenOutcome::Invalid(INVALIDATED.into());
        }
        if let Err(reason) = self.check_objects(token, validated, now) {
            return TokenOutcome::Invalid(reason);
        }
        let used = match validated.kind {
            TokenKind::Legacy => &TOKEN_COUNTERS.legacy,
            TokenKind::Bound if validated.stale_by(now).is_some() => &TOKEN_COUNTERS.stale,
            TokenKind::Bound => &TOKEN_COUNTERS.valid,
        };
        used.fetch_add(1, Ordering::Relaxed);
        let mut user = UserInfo {
            name: validated.username(),
            uid: validated.uid().to_string(),
            groups: validated.groups(),
            extra: validated.extra(),
        };
        user.add_authenticated_group();
        TokenOutcome::Authenticated {
            user,
            audiences: validated.audiences.clone(),
            credential,
        }
    }
}

impl TokenAuthenticator for ServiceAccountAuthenticator {
    fn authenticate_token(&self, token: &str, audiences: &[String]) -> TokenOutcome {
        self.authenticate(token, audiences)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::HashMap;

    use badge_token::{BoundClaims, LegacyClaims, ObjectRef, SigningKey};
    use parking_lot::Mutex;

    use super::*;

    const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
    const NOW: i64 = 1_700_000_000;

    #[derive(Default)]
    struct Objects(Mutex<HashMap<String, SecretInfo>>);

    impl Objects {
        fn put(&self, key: &str, uid: &str) {
            self.0.lock().insert(
                key.into(),
                SecretInfo {
                    object: ObjectInfo {
                        uid: uid.into(),
                        deletion_timestamp: None,
                        disabled: false,
                    },
                    ..Default::default()
                },
            );
        }
        fn get(&self, key: String) -> Option<SecretInfo> {
            self.0.lock().get(&key).cloned()
        }
    }

    impl ServiceAccountTokenGetter for Objects {
        fn service_account(&self, ns: &str, name: &str) -> Option<ObjectInfo> {
            self.get(format!("sa/{ns}/{name}")).map(|s| s.object)
        }
        fn pod(&self, ns: &str, name: &str) -> Option<ObjectInfo> {
            self.get(format!("pod/{ns}/{name}")).map(|s| s.object)
        }
        fn secret(&self, ns: &str, name: &str) -> Option<SecretInfo> {
            self.get(format!("secret/{ns}/{name}"))
        }
        fn node(&self, name: &str) -> Option<ObjectInfo> {
            self.get(format!("node/{name}")).map(|s| s.object)
        }
    }

    fn setup() -> (SigningKey, Arc<Objects>, ServiceAccountAuthenticator) {
        let key = SigningKey::generate_ec(badge_token::Curve::P256).unwrap();
        let objects = Arc::new(Objects::default());
        objects.put("sa/demo/app", "sa-uid");
        let auth = ServiceAccountAuthenticator {
            keys: Arc::new(PublishedKeys::new(badge_token::KeySet::new(
                Some(key.clone()),
                [],
            ))),
            issuers: vec![ISSUER.into()],
            api_audiences: vec![ISSUER.into()],
            getter: objects.clone(),
            clock: || NOW,
            cache: VerifiedCache::new().unwrap(),
            revoked: Arc::default(),
        };
        (key, objects, auth)
    }

    fn bound(key: &SigningKey, pod: Option<ObjectRef>) -> String {
        let mut c = BoundClaims::new(
            ISSUER,
            vec![ISSUER.into()],
            "demo",
            ObjectRef::new("app", "sa-uid"),
            NOW,
            3600,
        );
        c.pod = pod;
        jwt::sign(key, &c.to_value().unwrap()).unwrap().into_exposed()
    }

    #[test]
    fn bound_tokens_authenticate_with_upstream_user_info() {
        let (key, objects, auth) = setup();
        objects.put("pod/demo/p", "pod-uid");
        let token = bound(&key, Some(ObjectRef::new("p", "pod-uid")));
        let TokenOutcome::Authenticated {
            user,
            audiences,
            credential,
        } = auth.authenticate(&token, &[])
        else {
            panic!("refused")
        };
        assert_eq!(user.name, "system:serviceaccount:demo:app");
        assert_eq!(user.uid, "sa-uid");
        assert_eq!(
            user.groups,
            vec![
                "system:serviceaccounts",
                "system:serviceaccounts:demo",
                "system:authenticated"
            ]
        );
        assert_eq!(
            user.extra["authentication.kubernetes.io/pod-name"],
            vec!["p".to_string()]
        );
        assert!(user.extra["authentication.kubernetes.io/credential-id"][0].starts_with("JTI="));
        assert_eq!(audiences, vec![ISSUER.to_string()]);
        // The usage record is named by the same jti the credential id carries.
        let credential = credential.unwrap();
        assert_eq!(
            credential.credential_id(),
            user.extra["authentication.kubernetes.io/credential-id"][0]
        );
        assert_eq!(
            (credential.namespace.as_str(), credential.service_account.as_str()),
            ("demo", "app")
        );
        assert!(!credential.legacy);
        // A cache hit names the same credential.
        let TokenOutcome::Authenticated {
            credential: again, ..
        } = auth.authenticate(&token, &[])
        else {
            panic!("refused")
        };
        assert_eq!(again.as_deref(), Some(&*credential));
    }

    #[test]
    fn a_revoked_token_fails_on_cache_hits_while_its_siblings_work() {
        let (key, _objects, auth) = setup();
        let token = bound(&key, None);
        let sibling = bound(&key, None);
        let TokenOutcome::Authenticated {
            credential: Some(credential),
            ..
        } = auth.authenticate(&token, &[])
        else {
            panic!("refused")
        };
        assert!(matches!(
            auth.authenticate(&sibling, &[]),
            TokenOutcome::Authenticated { .. }
        ));
        // The token is now in the verified cache: revocation must still be seen.
        auth.revoked.insert(crate::revocation::RevokedToken {
            namespace: credential.namespace.clone(),
            record: credential.record.clone(),
            expires_at: credential.expires_at,
            legacy: false,
        });
        assert!(matches!(auth.authenticate(&token, &[]), TokenOutcome::Invalid(_)));
        assert!(matches!(
            auth.authenticate(&sibling, &[]),
            TokenOutcome::Authenticated { .. }
        ));
        auth.revoked.remove(&credential.namespace, &credential.record);
        assert!(matches!(
            auth.authenticate(&token, &[]),
            TokenOutcome::Authenticated { .. }
        ));
    }

    #[test]
    fn deleting_or_recreating_bound_objects_revokes() {
        let (key, objects, auth) = setup();
        objects.put("pod/demo/p", "pod-uid");
        let token = bound(&key, Some(ObjectRef::new("p", "pod-uid")));
        objects.put("pod/demo/p", "new-uid");
        assert!(matches!(auth.authenticate(&token, &[]), TokenOutcome::Invalid(_)));
        objects.0.lock().remove("pod/demo/p");
        assert!(matches!(auth.authenticate(&token, &[]), TokenOutcome::Invalid(_)));
        let plain = bound(&key, None);
        assert!(matches!(
            auth.authenticate(&plain, &[]),
            TokenOutcome::Authenticated { .. }
        ));
        objects.put("sa/demo/app", "recreated");
        assert!(matches!(auth.authenticate(&plain, &[]), TokenOutcome::Invalid(_)));
    }

    #[test]
    fn cache_hits_still_see_revocation_and_key_changes() {
        let (key, objects, auth) = setup();
        let token = bound(&key, None);
        assert!(matches!(
            auth.authenticate(&token, &[]),
            TokenOutcome::Authenticated { .. }
        ));
        assert_eq!(auth.cache.len(), 1);
        assert!(matches!(
            auth.authenticate(&token, &[]),
            TokenOutcome::Authenticated { .. }
        ));
        // A different audience list is a different entry, and is checked afresh.
        assert!(matches!(
            auth.authenticate(&token, &["vault".to_string()]),
            TokenOutcome::Invalid(_)
        ));
        // Deleting the ServiceAccount kills the cached token at once.
        objects.0.lock().remove("sa/demo/app");
        assert!(matches!(auth.authenticate(&token, &[]), TokenOutcome::Invalid(_)));
        objects.put("sa/demo/app", "sa-uid");
        assert!(matches!(
            auth.authenticate(&token, &[]),
            TokenOutcome::Authenticated { .. }
        ));
        // Dropping the key (revocation) kills it too.
        let other = SigningKey::generate_ec(badge_token::Curve::P256).unwrap();
        auth.keys.publish(badge_token::KeySet::new(Some(other), []));
        assert!(!matches!(
            auth.authenticate(&token, &[]),
            TokenOutcome::Authenticated { .. }
        ));
    }

    #[test]
    fn verifications_and_cache_hits_count_against_the_key() {
        let (key, objects, auth) = setup();
        let usage = |auth: &ServiceAccountAuthenticator| {
            let keys = auth.keys.current();
            let usage = keys.usage(key.kid()).unwrap();
            (usage.count(), usage.last_used())
        };
        assert_eq!(usage(&auth), (0, None));
        let token = bound(&key, None);
        assert!(matches!(
            auth.authenticate(&token, &[]),
            TokenOutcome::Authenticated { .. }
        ));
        assert_eq!(auth.cache.len(), 1);
        assert_eq!(usage(&auth), (1, Some((auth.clock)())));
        // A cache hit counts too.
        assert!(matches!(
            auth.authenticate(&token, &[]),
            TokenOutcome::Authenticated { .. }
        ));
        assert_eq!(usage(&auth).0, 2);
        // A refused token does not.
        objects.0.lock().remove("sa/demo/app");
        assert!(matches!(auth.authenticate(&token, &[]), TokenOutcome::Invalid(_)));
        assert_eq!(usage(&auth).0, 2);
        // Rebuilding the key set keeps the counts.
        auth.keys.publish(badge_token::KeySet::new(Some(key.clone()), []));
        assert_eq!(usage(&auth).0, 2);
    }

    #[test]
    fn cache_stays_bounded_and_keeps_the_latest_entries() {
        let (key, _, auth) = setup();
        let token = bound(&key, None);
        assert!(matches!(
            auth.authenticate(&token, &[]),
            TokenOutcome::Authenticated { .. }
        ));
        let seen = auth.cache.get(&auth.cache.fingerprint(&token, &[])).unwrap();
        let fingerprint_of = |i: usize| {
            let mut f = [0u8; 32];
            f[..8].copy_from_slice(&(i as u64).to_le_bytes());
            f
        };
        for i in 0..2 * CACHE_CAPACITY {
            let entry = CachedToken {
                kid: seen.kid.clone(),
                claims: seen.claims.clone(),
                credential: None,
            };
            auth.cache.insert(fingerprint_of(i), entry);
            assert!(auth.cache.get(&fingerprint_of(i)).is_some());
        }
        assert!(auth.cache.len() <= CACHE_CAPACITY);
        assert!(auth.cache.len() > CACHE_CAPACITY / 2);
        // Every shard took its share: the fingerprints spread over all of them.
        assert!(auth.cache.shards.iter().all(|shard| !shard.read().is_empty()));
    }

    #[test]
    fn deletion_grace_is_sixty_seconds() {
        let (key, objects, auth) = setup();
        let token = bound(&key, None);
        objects
            .0
            .lock()
            .get_mut("sa/demo/app")
            .unwrap()
            .object
            .deletion_timestamp = Some(NOW - 30);
        assert!(matches!(
            auth.authenticate(&token, &[]),
            TokenOutcome::Authenticated { .. }
        ));
        objects
            .0
            .lock()
            .get_mut("sa/demo/app")
            .unwrap()
            .object
            .deletion_timestamp = Some(NOW - 61);
        assert!(matches!(auth.authenticate(&token, &[]), TokenOutcome::Invalid(_)));
    }

    #[test]
    fn wrong_audience_and_garbage() {
        let (key, _, auth) = setup();
        let token = bound(&key, None);
        assert!(matches!(
            auth.authenticate(&token, &["vault".to_string()]),
            TokenOutcome::Invalid(_)
        ));
        assert_eq!(auth.authenticate("not-a-jwt", &[]), TokenOutcome::NotMine);
    }

    #[test]
    fn legacy_tokens_must_match_their_secret() {
        let (key, objects, auth) = setup();
        let claims = LegacyClaims {
            namespace: "demo".into(),
            secret_name: "app-token".into(),
            service_account: ObjectRef::new("app", "sa-uid"),
        };
        let token = jwt::sign(&key, &claims.to_value()).unwrap().into_exposed();
        assert!(
            matches!(auth.authenticate(&token, &[]), TokenOutcome::Invalid(_)),
            "no secret yet"
        );
        objects.0.lock().insert(
            "secret/demo/app-token".into(),
            SecretInfo {
                object: ObjectInfo {
                    uid: "s".into(),
                    deletion_timestamp: None,
                    disabled: false,
                },
                token: Some(badge_token::Secret::new(token.clone().into_bytes())),
                invalidated: false,
            },
        );
        let TokenOutcome::Authenticated { credential, .. } = auth.authenticate(&token, &[]) else {
            panic!("refused")
        };
        let credential = credential.unwrap();
        assert_eq!(
            credential.credential_id(),
            "Secret=app-token",
            "named after its Secret"
        );
        assert!(credential.legacy && credential.expires_at.is_none());
        objects
            .0
            .lock()
            .get_mut("secret/demo/app-token")
            .unwrap()
            .invalidated = true;
        assert!(matches!(auth.authenticate(&token, &[]), TokenOutcome::Invalid(_)));
    }
}
