//! ServiceAccount tokens in the server: the signing keys (a rotating key ring kept in the
//! store, or keys from files as kube-apiserver's flags give them), TokenRequest
//! (`pkg/registry/core/serviceaccount/storage/token.go`), the object lookups the
//! authenticator needs (backed by the watch cache), and OIDC discovery
//! (`pkg/routes/openidmetadata.go`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use badge_api::{FieldError, Resource, Status, meta, resources};
use badge_auth::serviceaccount::{ObjectInfo, SecretInfo, ServiceAccountTokenGetter, TokenKeys};
use badge_registry::Registry;
use badge_store::Store;
use badge_token::keys::Curve;
use badge_token::keyset::RingError;
use badge_token::{
    AutoRotation, BoundClaims, KeyRing, KeySet, KeyUsage, LegacyClaims, ObjectRef, SigningKey, VerifyingKey,
    jwt,
};
use base64::Engine;
use bytes::Bytes;
use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::tokenrequest::{
    self, ReplyMetadata, ReplySpec, ReplyStatus, TokenRequestInput, TokenRequestReply,
};

/// Where the key ring is kept: outside `/registry/`, so the API never serves it.
pub const KEYRING_KEY: &str = "/badge/serviceaccount-keys";
/// The smallest `expirationSeconds` (`MinTokenAgeSec`).
pub const MIN_TOKEN_SECONDS: i64 = 600;
/// `WarnOnlyBoundTokenExpirationSeconds`: what ServiceAccount admission asks for.
pub const KUBELET_TOKEN_SECONDS: i64 = 3607;
/// `ExpirationExtensionSeconds`: how long the kubelet's tokens really live.
pub const EXTENDED_EXPIRATION_SECONDS: i64 = 365 * 24 * 3600;

/// The kind of key to generate when badge makes its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyType {
    Rs256,
    Es256,
}

impl KeyType {
    pub fn generate(self) -> Result<SigningKey, Status> {
        match self {
            KeyType::Rs256 => SigningKey::generate_rsa(2048),
            KeyType::Es256 => SigningKey::generate_ec(Curve::P256),
        }
        .map_err(|e| Status::internal(format!("generating a signing key: {e}")))
    }
}

/// Token settings, named after kube-apiserver's flags.
#[derive(Clone, Debug)]
pub struct TokenConfig {
    /// `--service-account-issuer` (the first signs; all verify).
    pub issuers: Vec<String>,
    /// `--api-audiences` (default: the issuers).
    pub api_audiences: Vec<String>,
    /// `--service-account-max-token-expiration` in seconds (0: none).
    pub max_expiration: i64,
    /// `--service-account-extend-token-expiration`.
    pub extend_expiration: bool,
    /// `--service-account-jwks-uri`.
    pub jwks_uri: String,
}

enum Mode {
    /// Keys badge generated and rotates, persisted in the store.
    Ring(Mutex<KeyRing>),
    /// `--service-account-signing-key-file`: one signer, no rotation.
    Files(SigningKey),
}

/// How the key ring is kept in the store: sealed (AES-256-GCM) with the deployment's
/// sealing key, so private keys are never at rest in the clear in the data dir or etcd.
/// A ring stored in the clear by an older version is still read, and sealed when next
/// written.
pub struct StoredRing {
    sealer: badge_token::seal::Sealer,
}

impl StoredRing {
    pub fn new(seal_key: &[u8; 32]) -> StoredRing {
        StoredRing {
            sealer: badge_token::seal::Sealer::new(seal_key),
        }
    }

    fn decode(&self, value: &[u8]) -> Result<KeyRing, Status> {
        let opened;
        let json = if badge_token::seal::Sealer::is_sealed(value) {
            opened = self
                .sealer
                .open(value, KEYRING_KEY.as_bytes())
                .map_err(|e| Status::internal(format!("the stored key ring: {e}")))?;
            opened.as_slice()
        } else {
            value
        };
        serde_json::from_slice(json)
            .map_err(|e| Status::internal(format!("the stored key ring cannot be read: {e}")))
    }

    fn encode(&self, ring: &KeyRing) -> Result<Bytes, Status> {
        let json = serde_json::to_vec(ring).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Bytes::from(self.sealer.seal(&json, KEYRING_KEY.as_bytes())))
    }
}

/// The signing and verification keys of the server.
pub struct ServiceAccountKeys {
    mode: Mode,
    stored: StoredRing,
    key_type: KeyType,
    /// `--service-account-key-file` keys, always accepted.
    extra: Vec<VerifyingKey>,
    /// What the authenticator verifies with, swapped on every change.
    pub verification: Arc<TokenKeys>,
    signer: parking_lot::RwLock<Option<SigningKey>>,
    store: Arc<dyn Store>,
    /// When the ring was last read from (or written to) the store.
    ring_confirmed: Mutex<Instant>,
    /// How long signing goes on with an unconfirmed ring: set by the refresher, which is
    /// what confirms it; None signs regardless.
    ring_bound: Mutex<Option<Duration>>,
    /// How long retired keys must verify under this server's token settings.
    keep_after_retire: i64,
    /// `--service-account-key-rotation-period` and the publish lead; None: manual rotation.
    auto_rotation: Mutex<Option<AutoRotation>>,
    /// The store revision of the ring last seen, so the rotation controller wakes on changes.
    ring_revision: tokio::sync::watch::Sender<badge_store::Revision>,
    /// The kids that verify, sorted, notified when the set changes (a key retired or revoked,
    /// by a write or by the clock), so legacy tokens under a dropped key are re-issued.
    verifying_kids: tokio::sync::watch::Sender<Vec<String>>,
}

fn now() -> i64 {
    badge_api::clock::now().as_second()
}

impl ServiceAccountKeys {
    /// Loads the key ring from the store, creating it on first start with one active key
    /// (`first_key` when the caller made one ahead of time); or uses the signing key file.
    pub async fn load(
        store: Arc<dyn Store>,
        stored_ring: StoredRing,
        key_type: KeyType,
        first_key: Option<SigningKey>,
        signing_key_pem: Option<String>,
        extra: Vec<VerifyingKey>,
        keep_after_retire: i64,
    ) -> Result<Arc<ServiceAccountKeys>, Status> {
        let mode = match signing_key_pem {
            Some(pem) => Mode::Files(
                SigningKey::from_pem(&pem)
                    .map_err(|e| Status::bad_request(format!("the signing key file: {e}")))?,
            ),
            None => {
                let (stored, _) = store
                    .get(KEYRING_KEY)
                    .await
                    .map_err(badge_registry::registry::store_error)?;
                let ring = match stored {
                    Some(kv) if !badge_token::seal::Sealer::is_sealed(&kv.value) => {
                        // Written in the clear by an older version: seal it now. Another
                        // server doing the same at once is fine; either write will do.
                        let ring = stored_ring.decode(&kv.value)?;
                        match store
                            .update(KEYRING_KEY, stored_ring.encode(&ring)?, kv.mod_revision)
                            .await
                        {
                            Ok(_) | Err(badge_store::Error::Conflict { .. }) => {}
                            Err(e) => return Err(badge_registry::registry::store_error(e)),
                        }
                        ring
                    }
                    Some(kv) => stored_ring.decode(&kv.value)?,
                    None => {
                        let mut ring =
                            KeyRing::new(keep_after_retire).map_err(|e| Status::internal(e.to_string()))?;
                        let first_key = match first_key {
                            Some(key) => key,
                            None => key_type.generate()?,
                        };
                        ring.rotate(first_key, now(), 0)
                            .map_err(|e| Status::internal(e.to_string()))?;
                        match store.create(KEYRING_KEY, stored_ring.encode(&ring)?).await {
                            Ok(_) => ring,
                            // Another server made it first: use theirs.
                            Err(badge_store::Error::AlreadyExists { .. }) => {
                                let (kv, _) = store
                                    .get(KEYRING_KEY)
                                    .await
                                    .map_err(badge_registry::registry::store_error)?;
                                let kv = kv.ok_or_else(|| Status::internal("the key ring vanished"))?;
                                stored_ring.decode(&kv.value)?
                            }
                            Err(e) => return Err(badge_registry::registry::store_error(e)),
                        }
                    }
                };
                Mode::Ring(Mutex::new(ring))
            }
        };
        let keys = Arc::new(ServiceAccountKeys {
            mode,
            stored: stored_ring,
            key_type,
            extra,
            verification: Arc::new(TokenKeys::default()),
            signer: parking_lot::RwLock::new(None),
            store,
            ring_confirmed: Mutex::new(Instant::now()),
            ring_bound: Mutex::new(None),
            keep_after_retire,
            auto_rotation: Mutex::new(None),
            ring_revision: tokio::sync::watch::channel(0).0,
            verifying_kids: tokio::sync::watch::channel(Vec::new()).0,
        });
        keys.refresh();
        Ok(keys)
    }

    /// Recomputes the signer and the verification keys for now.
    pub fn refresh(&self) {
        let now = now();
        match &self.mode {
            Mode::Files(key) => {
                *self.signer.write() = Some(key.clone());
                self.verification
                    .replace(KeySet::new(Some(key.clone()), self.extra.iter().cloned()));
            }
            Mode::Ring(ring) => {
                let mut ring = ring.lock();
                ring.advance(now);
                *self.signer.write() = ring.current_signer(now).cloned();
                self.verification.replace(ring.key_set(now, &self.extra));
            }
        }
        let mut kids: Vec<String> = self
            .verification
            .current()
            .keys()
            .iter()
            .map(|k| k.kid().to_string())
            .collect();
        kids.sort();
        self.verifying_kids.send_if_modified(|seen| {
            let changed = *seen != kids;
            if changed {
                *seen = std::mem::take(&mut kids);
            }
            changed
        });
    }

    /// Keeps the keys current: applies scheduled activations and retirements, and picks up
    /// changes another server wrote to the store. Past `bound` without reading the ring
    /// from the store, no token is signed: another server may have rotated or revoked the
    /// key this one would sign with.
    pub fn spawn_refresher(self: &Arc<Self>, bound: Duration) {
        *self.ring_bound.lock() = Some(bound);
        let keys = self.clone();
        tokio::spawn(async move {
            let mut was_current = true;
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if let Mode::Ring(ring) = &keys.mode {
                    let asked = Instant::now();
                    if let Ok((Some(kv), _)) = keys.store.get(KEYRING_KEY).await
                        && let Ok(stored) = keys.stored.decode(&kv.value)
                    {
                        *ring.lock() = stored;
                        keys.confirm_ring(asked);
                        keys.saw_revision(kv.mod_revision);
                    }
                    let current = keys.ring_unconfirmed().is_none();
                    if was_current && !current {
                        tracing::warn!(
                            bound_seconds = bound.as_secs(),
                            "the service account signing keys could not be confirmed current; refusing to issue tokens"
                        );
                    } else if !was_current && current {
                        tracing::info!(
                            "the service account signing keys are confirmed current again; issuing tokens"
                        );
                    }
                    was_current = current;
                }
                keys.refresh();
            }
        });
    }

    /// Rotates the ring automatically on `auto`'s schedule (run by the rotation controller on
    /// the lease holder). Keys from files do not rotate.
    pub fn enable_auto_rotation(&self, auto: AutoRotation) -> Result<(), Status> {
        if matches!(self.mode, Mode::Files(_)) {
            return Err(Status::bad_request(
                "automatic key rotation needs badge's own keys, not --service-account-signing-key-file",
            ));
        }
        if auto.period <= 0 || auto.publish_lead < 0 {
            return Err(Status::bad_request(
                "the rotation period must be positive and the publish lead not negative",
            ));
        }
        *self.auto_rotation.lock() = Some(auto);
        Ok(())
    }

    fn saw_revision(&self, revision: badge_store::Revision) {
        self.ring_revision.send_if_modified(|seen| {
            let changed = *seen != revision;
            *seen = revision;
            changed
        });
    }

    fn confirm_ring(&self, asked: Instant) {
        let mut confirmed = self.ring_confirmed.lock();
        *confirmed = (*confirmed).max(asked);
    }

    /// How long ago the key ring was last confirmed current in the store (zero for keys from
    /// files, which the store does not hold).
    pub fn ring_unconfirmed_for(&self) -> Duration {
        match self.mode {
            Mode::Ring(_) => self.ring_confirmed.lock().elapsed(),
            _ => Duration::ZERO,
        }
    }

    /// The bound crossed, when the ring has gone unconfirmed past it.
    fn ring_unconfirmed(&self) -> Option<Duration> {
        let bound = (*self.ring_bound.lock())?;
        (matches!(self.mode, Mode::Ring(_)) && self.ring_confirmed.lock().elapsed() > bound).then_some(bound)
    }

    pub fn signer(&self) -> Option<SigningKey> {
        self.signer.read().clone()
    }

    /// Signs claims with the current key.
    pub fn sign(&self, claims: &Value) -> Result<jwt::Token, Status> {
        if let Some(bound) = self.ring_unconfirmed() {
            return Err(Status::service_unavailable(format!(
                "the service account signing keys could not be confirmed current for {}s; refusing to issue tokens",
                bound.as_secs()
            )));
        }
        let signer = self
            .signer()
            .ok_or_else(|| Status::internal("failed to generate token: no active signing key"))?;
        jwt::sign(&signer, claims).map_err(|e| Status::internal(format!("failed to generate token: {e}")))
    }

    /// The keys published in the JWKS.
    pub fn public_keys(&self) -> Vec<VerifyingKey> {
        self.verification.current().keys().to_vec()
    }

    /// Changes the ring with `change` and persists it with a compare-and-swap.
    async fn change_ring(&self, change: impl Fn(&mut KeyRing) -> Result<(), Status>) -> Result<(), Status> {
        let Mode::Ring(ring) = &self.mode else {
            return Err(Status::bad_request(
                "the signing key comes from --service-account-signing-key-file; rotate it by replacing the file",
            ));
        };
        for _ in 0..16 {
            let (kv, _) = self
                .store
                .get(KEYRING_KEY)
                .await
                .map_err(badge_registry::registry::store_error)?;
            let kv = kv.ok_or_else(|| Status::internal("the key ring is missing from the store"))?;
            let mut stored = self.stored.decode(&kv.value)?;
            change(&mut stored)?;
            match self
                .store
                .update(KEYRING_KEY, self.stored.encode(&stored)?, kv.mod_revision)
                .await
            {
                Ok(revision) => {
                    *ring.lock() = stored;
                    self.confirm_ring(Instant::now());
                    self.saw_revision(revision);
                    self.refresh();
                    return Ok(());
                }
                Err(badge_store::Error::Conflict { .. }) => continue,
                Err(e) => return Err(badge_registry::registry::store_error(e)),
            }
        }
        Err(Status::conflict(
            badge_api::GroupResource {
                group: "",
                resource: "keys",
            },
            KEYRING_KEY,
            "too many concurrent changes",
        ))
    }

    /// Adds a new key: published at once, signing after `publish_lead` seconds.
    pub async fn rotate(&self, publish_lead: i64) -> Result<String, Status> {
        let key = self.key_type.generate()?;
        let kid = key.kid().to_string();
        self.change_ring(|ring| {
            ring.rotate(key.clone(), now(), publish_lead)
                .map_err(|e| Status::bad_request(e.to_string()))
        })
        .await?;
        tracing::info!(%kid, publish_lead, "service account signing key rotation started");
        Ok(kid)
    }

    /// Revokes a key now: its tokens stop verifying at once.
    pub async fn revoke(&self, kid: &str) -> Result<(), Status> {
        self.change_ring(|ring| {
            ring.revoke(kid, now())
                .map_err(|e| Status::bad_request(e.to_string()))
        })
        .await?;
        tracing::warn!(%kid, "service account signing key revoked");
        Ok(())
    }

    /// Retires `kid` and ends its verification now (its tokens fail, as on revocation, but
    /// the key is recorded as retired early, not compromised). Refused with a Conflict for the
    /// current signing key, and, unless `force`, while the key verified a token on this server
    /// within the last `window_seconds`.
    pub async fn retire(&self, kid: &str, force: bool, window_seconds: i64) -> Result<(), Status> {
        let conflict = |why: &str| {
            Status::conflict(
                badge_api::GroupResource {
                    group: "",
                    resource: "keys",
                },
                kid,
                why,
            )
        };
        let signing_key = || conflict("the key is the current signing key; rotate first");
        if self.signer().is_some_and(|s| s.kid() == kid) {
            return Err(signing_key());
        }
        let last_used = self
            .verification
            .current()
            .usage(kid)
            .and_then(KeyUsage::last_used);
        if !force
            && let Some(last) = last_used
            && last > now().saturating_sub(window_seconds)
        {
            let at = jiff::Timestamp::from_second(last)
                .map(meta::format_time)
                .unwrap_or_else(|_| last.to_string());
            return Err(conflict(&format!(
                "the key last verified a token at {at}, within the last {window_seconds}s; retire it with force=true to end its tokens anyway"
            )));
        }
        self.change_ring(|ring| {
            let now = now();
            if ring.current_signer(now).is_some_and(|s| s.kid() == kid) {
                return Err(signing_key());
            }
            ring.retire_early(kid, now).map_err(|e| match e {
                RingError::UnknownKey => Status::not_found(
                    badge_api::GroupResource {
                        group: "",
                        resource: "keys",
                    },
                    kid,
                ),
                e => Status::bad_request(e.to_string()),
            })
        })
        .await?;
        tracing::warn!(%kid, force, "service account signing key retired early");
        Ok(())
    }

    /// Each key with its state and dates, for `badge keys list`.
    pub fn describe(&self) -> Value {
        let now = now();
        let auto = *self.auto_rotation.lock();
        match &self.mode {
            Mode::Files(key) => {
                let verification = self.verification.current();
                let usage = verification.usage(key.kid());
                let last_used = usage
                    .and_then(KeyUsage::last_used)
                    .and_then(|s| jiff::Timestamp::from_second(s).ok())
                    .map(meta::format_time);
                json!({"keys": [{
                    "kid": key.kid(),
                    "algorithm": key.algorithm().as_str(),
                    "state": "Active",
                    "source": "file",
                    "verifiedTokens": usage.map_or(0, KeyUsage::count),
                    "lastUsed": last_used,
                }]})
            }
            Mode::Ring(ring) => {
                let verification = self.verification.current();
                let ring = ring.lock();
                let keys: Vec<Value> = ring
                    .entries()
                    .iter()
                    .map(|e| {
                        let t = |s: Option<i64>| {
                            s.and_then(|s| jiff::Timestamp::from_second(s).ok())
                                .map(meta::format_time)
                        };
                        let usage = verification.usage(e.kid());
                        json!({
                            "kid": e.kid(),
                            "algorithm": e.key.algorithm().as_str(),
                            "state": format!("{:?}", e.state_at(now)),
                            "created": t(Some(e.created)),
                            "activatesAt": t(Some(e.activates_at)),
                            "retiresAt": t(e.retires_at),
                            "revokedAt": t(e.revoked_at),
                            "retiredEarlyAt": t(e.retired_early_at),
                            "verifiedTokens": usage.map_or(0, KeyUsage::count),
                            "lastUsed": t(usage.and_then(KeyUsage::last_used)),
                            "nextTransition": t(ring.next_transition_of(e.kid(), now, auto)),
                        })
                    })
                    .collect();
                let mut described = json!({"keys": keys});
                if let Some(a) = auto {
                    described["rotation"] =
                        json!({"periodSeconds": a.period, "publishLeadSeconds": a.publish_lead});
                }
                described
            }
        }
    }
}

impl badge_controllers::keyrotation::RotatingKeys for ServiceAccountKeys {
    fn next_transition(&self) -> Option<i64> {
        let auto = *self.auto_rotation.lock();
        match &self.mode {
            Mode::Ring(ring) => ring.lock().next_transition(now(), auto),
            Mode::Files(_) => None,
        }
    }

    async fn apply_due(&self) -> Result<(), Status> {
        let (Some(auto), Mode::Ring(ring)) = (*self.auto_rotation.lock(), &self.mode) else {
            return Ok(());
        };
        // Decided on this server's copy (kept current by the refresher), so nothing is
        // written, and no key generated, unless something is due. A ring made under shorter
        // token lifetimes would drop keys whose tokens still live: its keep is raised first.
        let keep = self.keep_after_retire;
        let mut probe = ring.lock().clone();
        let keep_raised = probe.raise_keep_after_retire(keep);
        let rotation_due = match probe.apply_due(now(), auto, || Err(())) {
            Ok(false) if !keep_raised => return Ok(()),
            Ok(_) => false,
            Err(_) => true,
        };
        let key = if rotation_due {
            let key_type = self.key_type;
            Some(
                tokio::task::spawn_blocking(move || key_type.generate())
                    .await
                    .map_err(|e| Status::internal(format!("generating a signing key: {e}")))??,
            )
        } else {
            None
        };
        self.change_ring(|ring| {
            let key = key.clone();
            ring.raise_keep_after_retire(keep);
            ring.apply_due(now(), auto, || key.ok_or("no key was generated"))
                .map(drop)
                .map_err(|e| Status::internal(format!("rotating the service account keys: {e}")))
        })
        .await?;
        if let (Mode::Ring(ring), Some(key)) = (&self.mode, &key) {
            let ring = ring.lock();
            if let Some(e) = ring.entries().iter().find(|e| e.kid() == key.kid()) {
                tracing::info!(
                    kid = %key.kid(),
                    signs_from = e.activates_at,
                    "service account signing key rotation started (automatic)"
                );
            }
        }
        Ok(())
    }

    fn ring_changes(&self) -> tokio::sync::watch::Receiver<badge_store::Revision> {
        self.ring_revision.subscribe()
    }
}

impl badge_controllers::LegacyTokenSigner for ServiceAccountKeys {
    fn sign_legacy(&self, claims: &LegacyClaims) -> Result<jwt::Token, String> {
        self.sign(&claims.to_value()).map_err(|s| s.message)
    }

    /// A key verifies while it is in the verification set; with none loaded nothing is
    /// judged stale.
    fn verifies_kid(&self, kid: &str) -> bool {
        let keys = self.public_keys();
        keys.is_empty() || keys.iter().any(|k| k.kid() == kid)
    }

    fn key_changes(&self) -> Option<tokio::sync::watch::Receiver<Vec<String>>> {
        Some(self.verifying_kids.subscribe())
    }
}

fn core(plural: &str) -> &'static Resource {
    match resources::lookup("", "v1", plural) {
        Some(r) => r,
        None => unreachable!("core/v1 {plural} is in the resource table"),
    }
}

/// What the authenticator checks of an object, read without decoding it.
fn cached_object_info(object: &badge_registry::CachedObject) -> ObjectInfo {
    ObjectInfo {
        uid: object.uid().to_string(),
        deletion_timestamp: object
            .deletion_timestamp()
            .and_then(meta::parse_time)
            .map(|t| t.as_second()),
    }
}

fn object_info(object: &Value) -> ObjectInfo {
    ObjectInfo {
        uid: meta::uid(object).to_string(),
        deletion_timestamp: meta::deletion_timestamp(object)
            .and_then(meta::parse_time)
            .map(|t| t.as_second()),
    }
}

/// The authenticator's lookups, answered from the watch cache.
pub struct CacheTokenGetter(pub Arc<Registry>);

impl ServiceAccountTokenGetter for CacheTokenGetter {
    fn service_account(&self, namespace: &str, name: &str) -> Option<ObjectInfo> {
        self.0
            .get_cached_object(core("serviceaccounts"), namespace, name)
            .map(|o| cached_object_info(&o))
    }

    fn pod(&self, namespace: &str, name: &str) -> Option<ObjectInfo> {
        self.0
            .get_cached_object(core("pods"), namespace, name)
            .map(|o| cached_object_info(&o))
    }

    fn secret(&self, namespace: &str, name: &str) -> Option<SecretInfo> {
        self.0
            .get_cached(core("secrets"), namespace, name)
            .map(|o| SecretInfo {
                object: object_info(&o),
                token: o
                    .pointer("/data/token")
                    .and_then(Value::as_str)
                    .and_then(|t| base64::engine::general_purpose::STANDARD.decode(t).ok())
                    .map(badge_token::Secret::new),
                invalidated: o
                    .pointer("/metadata/labels/kubernetes.io~1legacy-token-invalid-since")
                    .is_some(),
            })
    }

    fn node(&self, name: &str) -> Option<ObjectInfo> {
        self.0
            .get_cached_object(core("nodes"), "", name)
            .map(|o| cached_object_info(&o))
    }
}

impl badge_auth::bootstrap::BootstrapTokenGetter for CacheTokenGetter {
    fn bootstrap_secret(&self, name: &str) -> Option<badge_auth::bootstrap::BootstrapSecretInfo> {
        let secret = self
            .0
            .get_cached(core("secrets"), badge_token::bootstrap::SECRET_NAMESPACE, name)?;
        let engine = &base64::engine::general_purpose::STANDARD;
        Some(badge_auth::bootstrap::BootstrapSecretInfo {
            deleting: meta::deletion_timestamp(&secret).is_some(),
            secret_type: secret
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("Opaque")
                .to_string(),
            data: secret.get("data").and_then(Value::as_object).map(|data| {
                data.iter()
                    .filter_map(|(k, v)| Some((k.clone(), engine.decode(v.as_str()?).ok()?)))
                    .collect()
            }),
        })
    }
}

/// What the TokenRequest handler needs.
pub struct TokenIssuer {
    pub keys: Arc<ServiceAccountKeys>,
    pub config: TokenConfig,
}

fn token_request_invalid(errors: &[FieldError]) -> Status {
    Status::invalid("authentication.k8s.io", "TokenRequest", "", errors)
}

impl TokenIssuer {
    /// `POST .../serviceaccounts/NAME/token`, in upstream's order of checks.
    pub async fn create(
        &self,
        registry: &Registry,
        namespace: &str,
        sa_name: &str,
        request: TokenRequestInput,
    ) -> Result<(TokenRequestReply, Vec<String>), Status> {
        if namespace.is_empty() {
            return Err(Status::bad_request("namespace is required"));
        }
        let mut errors = Vec::new();
        let given_name = request.name;
        if !given_name.is_empty() && given_name != sa_name {
            errors.push(FieldError::invalid(
                "metadata.name",
                given_name,
                "must match the service account name if specified",
            ));
        }
        let given_ns = request.namespace;
        if !given_ns.is_empty() && given_ns != namespace {
            errors.push(FieldError::invalid(
                "metadata.namespace",
                given_ns,
                "must match the service account namespace if specified",
            ));
        }
        if !errors.is_empty() {
            return Err(token_request_invalid(&errors));
        }
        let sa = registry
            .get_object(
                core("serviceaccounts"),
                namespace,
                sa_name,
                badge_registry::ReadFrom::Recent,
            )
            .await?;
        let sa_uid = sa.uid().to_string();
        let given_uid = request.uid;
        if !given_uid.is_empty() && given_uid != sa_uid {
            return Err(Status::conflict(
                badge_api::GroupResource {
                    group: "authentication.k8s.io",
                    resource: "TokenRequest",
                },
                sa_name,
                &format!(
                    "the UID in the token request ({given_uid}) does not match the UID of the service account ({sa_uid})"
                ),
            ));
        }
        let mut audiences = request.audiences;
        if audiences.is_empty() {
            audiences = self.config.api_audiences.clone();
        }
        let now_ts = badge_api::clock::now();
        let now = now_ts.as_second();
        let mut expiration = request.expiration_seconds.unwrap_or(3600);
        if expiration < MIN_TOKEN_SECONDS {
            return Err(token_request_invalid(&[FieldError::invalid(
                "spec.expirationSeconds",
                expiration,
                "may not specify a duration less than 10 minutes",
            )]));
        }
        if expiration > 1 << 32 {
            return Err(token_request_invalid(&[FieldError::invalid(
                "spec.expirationSeconds",
                expiration,
                "may not specify a duration larger than 2^32 seconds",
            )]));
        }
        let mut claims = BoundClaims::new(
            self.config.issuers.first().cloned().unwrap_or_default(),
            audiences.clone(),
            namespace,
            ObjectRef::new(sa_name, sa_uid.clone()),
            now,
            expiration,
        );
        let bound_ref = request.bound_object_ref;
        let mut bound_to_pod = false;
        if let Some(r) = &bound_ref {
            let (kind, api_version, name, uid) = (r.kind(), r.api_version(), r.name(), r.uid());
            let group = api_version
                .rsplit_once('/')
                .map(|(g, _)| g.to_string())
                .unwrap_or_default();
            let live_of = |object: &Value, kind: &str| -> Result<String, Status> {
                let live_uid = meta::uid(object).to_string();
                if !uid.is_empty() && uid != live_uid {
                    return Err(Status::conflict(
                        badge_api::GroupResource {
                            group: "",
                            resource: kind,
                        },
                        name,
                        &format!(
                            "the UID in the bound object reference ({uid}) does not match the UID in record. The object might have been deleted and then recreated"
                        ),
                    ));
                }
                Ok(live_uid)
            };
            match (group.as_str(), kind) {
                ("", "Pod") => {
                    let pod = registry
                        .get(core("pods"), namespace, name, badge_registry::ReadFrom::Recent)
                        .await?;
                    let pod_sa = pod
                        .pointer("/spec/serviceAccountName")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    if pod_sa != sa_name {
                        return Err(Status::bad_request(format!(
                            "cannot bind token for serviceaccount \"{sa_name}\" to pod running with different serviceaccount name."
                        )));
                    }
                    let pod_uid = live_of(&pod, "Pod")?;
                    claims.pod = Some(ObjectRef::new(name.to_string(), pod_uid));
                    let node_name = pod
                        .pointer("/spec/nodeName")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    if !node_name.is_empty() {
                        let node_uid = registry
                            .get_cached(core("nodes"), "", node_name)
                            .map(|n| meta::uid(&n).to_string());
                        claims.node = Some(badge_token::claims::NodeRef {
                            name: node_name.to_string(),
                            uid: node_uid,
                        });
                    }
                    bound_to_pod = true;
                }
                ("", "Secret") => {
                    let secret = registry
                        .get(core("secrets"), namespace, name, badge_registry::ReadFrom::Recent)
                        .await?;
                    claims.secret = Some(ObjectRef::new(name.to_string(), live_of(&secret, "Secret")?));
                }
                ("", "Node") => {
                    let node = registry
                        .get(core("nodes"), "", name, badge_registry::ReadFrom::Recent)
                        .await?;
                    let node_uid = live_of(&node, "Node")?;
                    claims.node = Some(badge_token::claims::NodeRef {
                        name: name.to_string(),
                        uid: Some(node_uid),
                    });
                }
                _ => {
                    let version = api_version.rsplit('/').next().unwrap_or("");
                    return Err(Status::bad_request(format!(
                        "cannot bind token to object of type {group}/{version}, Kind={kind}"
                    )));
                }
            }
        }
        let mut warnings = Vec::new();
        if self.config.max_expiration > 0 && expiration > self.config.max_expiration {
            warnings.push(format!(
                "requested expiration of {expiration} seconds shortened to {} seconds",
                self.config.max_expiration
            ));
            expiration = self.config.max_expiration;
        }
        claims.expires_at = now + expiration;
        let all_api_audiences = audiences.iter().all(|a| self.config.api_audiences.contains(a));
        if self.config.extend_expiration
            && bound_to_pod
            && expiration == KUBELET_TOKEN_SECONDS
            && all_api_audiences
        {
            claims.expires_at = now + EXTENDED_EXPIRATION_SECONDS;
            claims.warn_after = Some(now + KUBELET_TOKEN_SECONDS);
        }
        let payload = claims.to_value().map_err(|e| Status::internal(e.to_string()))?;
        let token = self.keys.sign(&payload)?;
        let jti = claims.jti.clone().unwrap_or_default();
        tracing::info!(
            namespace,
            serviceaccount = sa_name,
            jti = %jti,
            "issued credential JTI={jti}"
        );
        let expiration_timestamp = jiff::Timestamp::from_second(now + expiration)
            .map(meta::format_time)
            .unwrap_or_default();
        let reply = TokenRequestReply {
            api_version: tokenrequest::API_VERSION,
            kind: tokenrequest::KIND,
            metadata: ReplyMetadata {
                creation_timestamp: meta::format_time(now_ts),
                name: sa_name.to_string(),
                namespace: namespace.to_string(),
                uid: sa_uid,
            },
            spec: ReplySpec {
                audiences,
                bound_object_ref: bound_ref,
                expiration_seconds: expiration,
            },
            status: ReplyStatus {
                expiration_timestamp,
                token,
            },
        };
        Ok((reply, warnings))
    }
}

/// Whether OIDC discovery is served for this issuer (only https issuers, as upstream).
pub fn serves_discovery(issuer: &str) -> bool {
    badge_token::oidc::serves_discovery(issuer)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    async fn ring_keys(dir: &std::path::Path) -> Arc<ServiceAccountKeys> {
        let store: Arc<dyn Store> =
            Arc::new(badge_store::sqlite::SqliteStore::open(&dir.join("s.db")).unwrap());
        ServiceAccountKeys::load(
            store,
            StoredRing::new(&[7; 32]),
            KeyType::Es256,
            None,
            None,
            Vec::new(),
            3660,
        )
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn no_token_is_signed_with_a_ring_unconfirmed_past_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let keys = ring_keys(dir.path()).await;
        let claims = json!({"sub": "system:serviceaccount:default:robot"});
        keys.sign(&claims).unwrap();

        *keys.ring_bound.lock() = Some(Duration::from_secs(30));
        keys.sign(&claims).unwrap();
        *keys.ring_confirmed.lock() = Instant::now().checked_sub(Duration::from_secs(31)).unwrap();
        let refused = keys.sign(&claims).unwrap_err();
        assert_eq!(refused.code, 503);
        assert_eq!(refused.reason, "ServiceUnavailable");
        assert_eq!(
            refused.message,
            "the service account signing keys could not be confirmed current for 30s; refusing to issue tokens"
        );

        // Confirmed again (here by a write of the ring): signing resumes.
        keys.rotate(3600).await.unwrap();
        keys.sign(&claims).unwrap();
    }

    #[tokio::test]
    async fn automatic_rotation_writes_only_when_due_and_is_described() {
        use badge_controllers::keyrotation::RotatingKeys;
        let dir = tempfile::tempdir().unwrap();
        let keys = ring_keys(dir.path()).await;
        let auto = AutoRotation {
            period: 30 * 24 * 3600,
            publish_lead: 3600,
        };
        keys.enable_auto_rotation(auto).unwrap();
        let first = keys.signer().unwrap().kid().to_string();
        let mut changes = keys.ring_changes();
        changes.borrow_and_update();
        let (before, _) = keys.store.get(KEYRING_KEY).await.unwrap();

        // Nothing is due for a month: nothing is written.
        keys.apply_due().await.unwrap();
        let (after, _) = keys.store.get(KEYRING_KEY).await.unwrap();
        assert_eq!(before.unwrap().mod_revision, after.unwrap().mod_revision);
        assert!(!changes.has_changed().unwrap());
        let next = keys.next_transition().unwrap();
        assert!(next > now() + auto.period - 60);
        let described = keys.describe();
        assert_eq!(described["rotation"]["periodSeconds"], auto.period);
        assert_eq!(
            described["keys"][0]["nextTransition"],
            meta::format_time(jiff::Timestamp::from_second(next + auto.publish_lead).unwrap())
        );

        // With the signer revoked a rotation is due at once: the next key is published and
        // stored, signing only after the lead.
        keys.revoke(&first).await.unwrap();
        changes.borrow_and_update();
        keys.apply_due().await.unwrap();
        assert!(changes.has_changed().unwrap());
        let described = keys.describe();
        let listed = described["keys"].as_array().unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[1]["state"], "Pending");
        assert_eq!(listed[1]["nextTransition"], listed[1]["activatesAt"]);
        let pending = listed[1]["kid"].as_str().unwrap();
        assert!(keys.public_keys().iter().any(|k| k.kid() == pending));
        assert!(keys.signer().is_none());
        let (stored, _) = keys.store.get(KEYRING_KEY).await.unwrap();
        let stored = keys.stored.decode(&stored.unwrap().value).unwrap();
        assert!(stored.entries().iter().any(|e| e.kid() == pending));
    }

    #[tokio::test]
    async fn automatic_rotation_lengthens_a_ring_kept_too_briefly() {
        use badge_controllers::keyrotation::RotatingKeys;
        let dir = tempfile::tempdir().unwrap();
        let made_with_short_tokens = ring_keys(dir.path()).await;
        let store = made_with_short_tokens.store.clone();
        let keys = ServiceAccountKeys::load(
            store.clone(),
            StoredRing::new(&[7; 32]),
            KeyType::Es256,
            None,
            None,
            Vec::new(),
            EXTENDED_EXPIRATION_SECONDS + 60,
        )
        .await
        .unwrap();
        keys.enable_auto_rotation(AutoRotation {
            period: 30 * 24 * 3600,
            publish_lead: 3600,
        })
        .unwrap();
        keys.apply_due().await.unwrap();
        let (stored, _) = store.get(KEYRING_KEY).await.unwrap();
        let stored = keys.stored.decode(&stored.unwrap().value).unwrap();
        assert_eq!(stored.keep_after_retire(), EXTENDED_EXPIRATION_SECONDS + 60);
        assert_eq!(stored.entries().len(), 1);
    }
}
