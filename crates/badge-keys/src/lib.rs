//! The ServiceAccount signing keys of a server: where a key's lifecycle meets the store.
//!
//! The keys themselves, the ring's schedule (publish before signing, retire, drop after the
//! longest token lifetime) and the snapshot every reader takes are `badge_token::keyset`'s;
//! this crate keeps the ring in the store (sealed, [`StoredRing`]), follows it there with a
//! watch so that every server publishes the same snapshot soon after any server changes it,
//! and makes the changes the keys API and the rotation controller ask for with a
//! compare-and-swap. Keys from files (kube-apiserver's `--service-account-signing-key-file`
//! and `--service-account-key-file`) are published once and never change.
//!
//! Which server writes what: the keys API writes on the server that received the request;
//! scheduled changes (rotation, dropping keys whose tokens have all expired) are written by
//! the rotation controller on the lease holder only (`badge-controllers`' `keyrotation`).
//! Every server republishes its snapshot from the watch, and at the ring's next transition.

#![warn(missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use badge_api::{GroupResource, Status, meta};
use badge_registry::registry::store_error;
use badge_store::{EventKind, Revision, Store};
use badge_token::keys::Curve;
use badge_token::keyset::RingError;
use badge_token::{AutoRotation, KeyRing, KeySet, KeyUsage, PublishedKeys, SigningKey, VerifyingKey, jwt};
use bytes::Bytes;
use futures::StreamExt;
use parking_lot::Mutex;
use serde_json::{Value, json};

/// Where the key ring is kept: outside `/registry/`, so the API never serves it.
pub const KEYRING_KEY: &str = "/badge/serviceaccount-keys";

/// How long a broken watch waits before it reads the ring again, at most.
const MAX_WATCH_BACKOFF: Duration = Duration::from_secs(5);

/// The kind of key to generate when badge makes its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyType {
    /// RSA, 2048 bits, signing RS256.
    Rs256,
    /// ECDSA on P-256, signing ES256.
    Es256,
}

impl KeyType {
    /// A new private key of this kind.
    pub fn generate(self) -> Result<SigningKey, Status> {
        match self {
            KeyType::Rs256 => SigningKey::generate_rsa(2048),
            KeyType::Es256 => SigningKey::generate_ec(Curve::P256),
        }
        .map_err(|e| Status::internal(format!("generating a signing key: {e}")))
    }

    /// A new key from whichever of `searches` generations, on threads of their own, ends
    /// first. RSA generation tests random candidates until two are prime, so its time varies
    /// several-fold from one run to the next; the first of two is found in much less time
    /// than one on average, on a machine with a core to spare. The others finish unused.
    /// An EC key is made in microseconds, by one.
    pub fn generate_first_of(self, searches: usize) -> Result<SigningKey, Status> {
        if self == KeyType::Es256 || searches < 2 {
            return self.generate();
        }
        let (found, first) = std::sync::mpsc::channel();
        for _ in 0..searches {
            let found = found.clone();
            std::thread::spawn(move || {
                // The receiver is gone once an earlier search ended: nothing to tell.
                let _ = found.send(self.generate());
            });
        }
        drop(found);
        let mut failure = Status::internal("generating a signing key: no generation ended");
        for key in first {
            match key {
                Ok(key) => return Ok(key),
                Err(e) => failure = e,
            }
        }
        Err(failure)
    }
}

/// How the key ring is kept in the store: sealed (AES-256-GCM) with the deployment's
/// sealing key, so private keys are never at rest in the clear in the data dir or etcd.
/// A ring stored in the clear by an older version is still read, and sealed when next
/// written.
pub struct StoredRing {
    sealer: badge_token::seal::Sealer,
}

impl StoredRing {
    /// Seals with the 32-byte `seal_key`.
    pub fn new(seal_key: &[u8; 32]) -> StoredRing {
        StoredRing {
            sealer: badge_token::seal::Sealer::new(seal_key),
        }
    }

    /// The ring a stored value holds, sealed or (written by an older version) in the clear.
    pub fn decode(&self, value: &[u8]) -> Result<KeyRing, Status> {
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

    /// The ring, sealed for storage.
    pub fn encode(&self, ring: &KeyRing) -> Result<Bytes, Status> {
        let json = serde_json::to_vec(ring).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Bytes::from(self.sealer.seal(&json, KEYRING_KEY.as_bytes())))
    }
}

/// How long ago the store was last confirmed to have delivered every committed write to this
/// server's watches; the registry confirms its watch cache so, and the ring's watch runs on
/// the same store.
pub trait Freshness: Send + Sync {
    /// How long since the store was last confirmed current; zero when it just was.
    fn unconfirmed_for(&self) -> Duration;
}

impl Freshness for badge_registry::Registry {
    fn unconfirmed_for(&self) -> Duration {
        badge_registry::Registry::unconfirmed_for(self)
    }
}

enum Source {
    /// Keys badge generated and rotates, persisted in the store: this server's copy.
    Ring(Mutex<KeyRing>),
    /// `--service-account-signing-key-file`: one signer, no rotation.
    Files(SigningKey),
}

/// What bounds signing with a ring that may be out of date.
struct Bound {
    freshness: Arc<dyn Freshness>,
    bound: Duration,
}

/// The signing and verification keys of the server.
pub struct ServiceAccountKeys {
    source: Source,
    stored: StoredRing,
    key_type: KeyType,
    /// `--service-account-key-file` keys, always accepted.
    extra: Vec<VerifyingKey>,
    /// The snapshot every reader takes.
    published: Arc<PublishedKeys>,
    store: Arc<dyn Store>,
    /// Unix seconds now; the one clock of the key lifecycle, replaceable for tests.
    clock: fn() -> i64,
    /// When the ring was last read from (or written to) the store.
    ring_confirmed: Mutex<Instant>,
    /// Whether the ring's watch is established and delivering.
    watching: AtomicBool,
    /// Whether signing went on at the last look, so the crossing is logged once each way.
    signing_current: AtomicBool,
    /// Past this without confirmation, nothing is signed; None signs regardless.
    bound: Mutex<Option<Bound>>,
    /// How long retired keys must verify under this server's token settings.
    keep_after_retire: i64,
    /// `--service-account-key-rotation-period` and the publish lead; None: manual rotation.
    auto_rotation: Mutex<Option<AutoRotation>>,
    /// The store revision of the ring last seen, so the rotation controller wakes on changes.
    ring_revision: tokio::sync::watch::Sender<Revision>,
    /// The kids that verify, sorted, notified when the set changes (a key retired or revoked,
    /// by a write or by the clock), so legacy tokens under a dropped key are re-issued.
    verifying_kids: tokio::sync::watch::Sender<Vec<String>>,
}

pub mod external_signer;

/// The wall clock in unix seconds.
pub fn now() -> i64 {
    badge_api::clock::now().as_second()
}

fn keys_resource() -> GroupResource<'static> {
    GroupResource {
        group: "",
        resource: "keys",
    }
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
        Self::load_with_clock(
            store,
            stored_ring,
            key_type,
            first_key,
            signing_key_pem,
            extra,
            keep_after_retire,
            now,
        )
        .await
    }

    /// [`ServiceAccountKeys::load`] with another clock than the wall clock.
    #[allow(clippy::too_many_arguments)]
    pub async fn load_with_clock(
        store: Arc<dyn Store>,
        stored_ring: StoredRing,
        key_type: KeyType,
        first_key: Option<SigningKey>,
        signing_key_pem: Option<String>,
        extra: Vec<VerifyingKey>,
        keep_after_retire: i64,
        clock: fn() -> i64,
    ) -> Result<Arc<ServiceAccountKeys>, Status> {
        let mut revision = 0;
        let source = match signing_key_pem {
            Some(pem) => Source::Files(
                SigningKey::from_pem(&pem)
                    .map_err(|e| Status::bad_request(format!("the signing key file: {e}")))?,
            ),
            None => {
                let (stored, _) = store.get(KEYRING_KEY).await.map_err(store_error)?;
                let ring = match stored {
                    Some(kv) => {
                        revision = kv.mod_revision;
                        stored_ring.decode(&kv.value)?
                    }
                    None => {
                        // The first server to start makes the ring; the one every server
                        // needs before it can sign, so it is not left to the controllers.
                        let mut ring =
                            KeyRing::new(keep_after_retire).map_err(|e| Status::internal(e.to_string()))?;
                        let first_key = match first_key {
                            Some(key) => key,
                            None => key_type.generate()?,
                        };
                        ring.rotate(first_key, clock(), 0)
                            .map_err(|e| Status::internal(e.to_string()))?;
                        match store.create(KEYRING_KEY, stored_ring.encode(&ring)?).await {
                            Ok(created) => {
                                revision = created;
                                ring
                            }
                            // Another server made it first: use theirs.
                            Err(badge_store::Error::AlreadyExists { .. }) => {
                                let (kv, _) = store.get(KEYRING_KEY).await.map_err(store_error)?;
                                let kv = kv.ok_or_else(|| Status::internal("the key ring vanished"))?;
                                revision = kv.mod_revision;
                                stored_ring.decode(&kv.value)?
                            }
                            Err(e) => return Err(store_error(e)),
                        }
                    }
                };
                Source::Ring(Mutex::new(ring))
            }
        };
        let keys = Arc::new(ServiceAccountKeys {
            source,
            stored: stored_ring,
            key_type,
            extra,
            published: Arc::new(PublishedKeys::default()),
            store,
            clock,
            ring_confirmed: Mutex::new(Instant::now()),
            watching: AtomicBool::new(false),
            signing_current: AtomicBool::new(true),
            bound: Mutex::new(None),
            keep_after_retire,
            auto_rotation: Mutex::new(None),
            ring_revision: tokio::sync::watch::channel(revision).0,
            verifying_kids: tokio::sync::watch::channel(Vec::new()).0,
        });
        keys.refresh();
        Ok(keys)
    }

    /// The snapshot readers take; the authenticator holds this.
    pub fn published(&self) -> &Arc<PublishedKeys> {
        &self.published
    }

    /// The snapshot now.
    pub fn current(&self) -> Arc<KeySet> {
        self.published.current()
    }

    /// Republishes the snapshot for now: scheduled activations and retirements take effect.
    pub fn refresh(&self) {
        let now = (self.clock)();
        match &self.source {
            Source::Files(key) => self
                .published
                .publish(KeySet::new(Some(key.clone()), self.extra.iter().cloned())),
            Source::Ring(ring) => {
                // Held while publishing, so an older ring is never published over a newer one.
                let mut ring = ring.lock();
                ring.advance(now);
                self.published.publish(ring.key_set(now, &self.extra));
            }
        }
        let mut kids: Vec<String> = self
            .published
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

    /// The kids that verify, notified whenever that set changes.
    pub fn verifying_kids(&self) -> tokio::sync::watch::Receiver<Vec<String>> {
        self.verifying_kids.subscribe()
    }

    /// When (unix seconds) this server's snapshot next changes on its own: a pending key
    /// activates, a key retires, a retired key leaves the JWKS.
    pub fn next_change(&self) -> Option<i64> {
        let snapshot = self.published.current();
        let (ring, _) = snapshot.ring()?;
        ring.next_change((self.clock)())
    }

    /// Installs a ring read from the store at `revision` and publishes it, unless a later
    /// one is already in place (this server's own write can overtake the watch).
    fn install(&self, ring: KeyRing, revision: Revision, asked: Instant) {
        if let Source::Ring(current) = &self.source {
            self.confirm_ring(asked);
            let mut current = current.lock();
            if revision < *self.ring_revision.borrow() {
                return;
            }
            *current = ring;
            drop(current);
            self.saw_revision(revision);
            self.refresh();
        }
    }

    /// Follows the ring in the store with a watch, and republishes at each scheduled
    /// transition. With `bound`, no token is signed once the ring has gone unconfirmed for
    /// longer: another server may have rotated or revoked the key this one would sign with.
    /// The ring is confirmed while its watch runs and `freshness` confirms the store.
    pub fn spawn_watch(self: &Arc<Self>, freshness: Arc<dyn Freshness>, bound: Duration) {
        *self.bound.lock() = Some(Bound { freshness, bound });
        if matches!(self.source, Source::Files(_)) {
            return;
        }
        let keys = self.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                if let Err(e) = keys.watch_once().await {
                    tracing::debug!(error = %e, "the key ring's watch ended; reading the ring again");
                }
                keys.watch_broke();
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_WATCH_BACKOFF);
            }
        });
    }

    /// Reads the ring, then follows it until the watch fails.
    async fn watch_once(&self) -> Result<(), badge_store::Error> {
        let asked = Instant::now();
        let (kv, revision) = self.store.get(KEYRING_KEY).await?;
        if let Some(kv) = kv
            && let Ok(ring) = self.stored.decode(&kv.value)
        {
            self.install(ring, kv.mod_revision, asked);
        }
        let mut events = self.store.watch(KEYRING_KEY, revision).await?;
        self.watching.store(true, Ordering::SeqCst);
        self.confirm_ring(asked);
        loop {
            let wait = self.next_change().map(until);
            let transition = async {
                match wait {
                    Some(wait) => tokio::time::sleep(wait).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                batch = events.next() => {
                    let batch = match batch {
                        Some(batch) => batch?,
                        None => return Ok(()),
                    };
                    let seen = Instant::now();
                    // Only the last write of a batch matters: each holds the whole ring.
                    let last = batch
                        .iter()
                        .rev()
                        .find(|e| e.key == KEYRING_KEY && e.kind == EventKind::Put);
                    if let Some(event) = last {
                        match self.stored.decode(&event.value) {
                            Ok(ring) => self.install(ring, event.revision, seen),
                            Err(e) => tracing::warn!(error = %e.message, "the stored key ring cannot be read"),
                        }
                    }
                }
                () = transition => self.refresh(),
            }
        }
    }

    /// The watch stopped: the ring was current as long as the store was confirmed current.
    fn watch_broke(&self) {
        self.watching.store(false, Ordering::SeqCst);
        if let Some(bound) = &*self.bound.lock()
            && let Some(at) = Instant::now().checked_sub(bound.freshness.unconfirmed_for())
        {
            self.confirm_ring(at);
        }
    }

    /// Rotates the ring automatically on `auto`'s schedule (run by the rotation controller on
    /// the lease holder). Keys from files do not rotate.
    pub fn enable_auto_rotation(&self, auto: AutoRotation) -> Result<(), Status> {
        if matches!(self.source, Source::Files(_)) {
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

    fn saw_revision(&self, revision: Revision) {
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
        if matches!(self.source, Source::Files(_)) {
            return Duration::ZERO;
        }
        let own = self.ring_confirmed.lock().elapsed();
        match &*self.bound.lock() {
            Some(bound) if self.watching.load(Ordering::SeqCst) => own.min(bound.freshness.unconfirmed_for()),
            _ => own,
        }
    }

    /// The bound crossed, when the ring has gone unconfirmed past it. The crossing, and the
    /// return, are logged once each way.
    fn ring_unconfirmed(&self) -> Option<Duration> {
        let bound = self.bound.lock().as_ref().map(|b| b.bound)?;
        let crossed = self.ring_unconfirmed_for() > bound;
        let was_current = self.signing_current.swap(!crossed, Ordering::SeqCst);
        if was_current && crossed {
            tracing::warn!(
                bound_seconds = bound.as_secs(),
                "the service account signing keys could not be confirmed current; refusing to issue tokens"
            );
        } else if !was_current && !crossed {
            tracing::info!("the service account signing keys are confirmed current again; issuing tokens");
        }
        crossed.then_some(bound)
    }

    /// The key new tokens are signed with, from the latest published ring.
    pub fn signer(&self) -> Option<SigningKey> {
        self.published.current().signer().cloned()
    }

    /// Signs claims with the current key.
    pub fn sign(&self, claims: &Value) -> Result<jwt::Token, Status> {
        self.sign_with_kid(claims).map(|(token, _)| token)
    }

    /// Signs claims with the current key, naming the key.
    pub fn sign_with_kid(&self, claims: &Value) -> Result<(jwt::Token, String), Status> {
        let signer = self.checked_signer()?;
        let token = jwt::sign(&signer, claims)
            .map_err(|e| Status::internal(format!("failed to generate token: {e}")))?;
        Ok((token, signer.kid().to_string()))
    }

    /// Signs a payload written as [`jwt::sign_payload`] takes it with the current key,
    /// naming the key; refused as [`ServiceAccountKeys::sign_with_kid`] refuses.
    pub fn sign_payload_with_kid(&self, payload: &[u8]) -> Result<(jwt::Token, String), Status> {
        let signer = self.checked_signer()?;
        let token = jwt::sign_payload(&signer, payload)
            .map_err(|e| Status::internal(format!("failed to generate token: {e}")))?;
        Ok((token, signer.kid().to_string()))
    }

    /// The key that signs now, refused as [`ServiceAccountKeys::sign_with_kid`] refuses while
    /// the ring could not be confirmed current; for signers that assemble tokens themselves.
    pub fn checked_signer(&self) -> Result<SigningKey, Status> {
        if let Some(bound) = self.ring_unconfirmed() {
            return Err(Status::service_unavailable(format!(
                "the service account signing keys could not be confirmed current for {}s; refusing to issue tokens",
                bound.as_secs()
            )));
        }
        self.signer()
            .ok_or_else(|| Status::internal("failed to generate token: no active signing key"))
    }

    /// The keys published in the JWKS.
    pub fn public_keys(&self) -> Vec<VerifyingKey> {
        self.published.current().keys().to_vec()
    }

    /// Changes the ring with `change` and persists it with a compare-and-swap; this server
    /// publishes the result before returning, so its next request sees it.
    async fn change_ring(&self, change: impl Fn(&mut KeyRing) -> Result<(), Status>) -> Result<(), Status> {
        if matches!(self.source, Source::Files(_)) {
            return Err(Status::bad_request(
                "the signing key comes from --service-account-signing-key-file; rotate it by replacing the file",
            ));
        }
        for _ in 0..16 {
            let (kv, _) = self.store.get(KEYRING_KEY).await.map_err(store_error)?;
            let kv = kv.ok_or_else(|| Status::internal("the key ring is missing from the store"))?;
            let mut stored = self.stored.decode(&kv.value)?;
            change(&mut stored)?;
            let asked = Instant::now();
            match self
                .store
                .update(KEYRING_KEY, self.stored.encode(&stored)?, kv.mod_revision)
                .await
            {
                Ok(revision) => {
                    self.install(stored, revision, asked);
                    return Ok(());
                }
                Err(badge_store::Error::Conflict { .. }) => continue,
                Err(e) => return Err(store_error(e)),
            }
        }
        Err(Status::conflict(
            keys_resource(),
            KEYRING_KEY,
            "too many concurrent changes",
        ))
    }

    /// Adds a new key: published at once, signing after `publish_lead` seconds.
    pub async fn rotate(&self, publish_lead: i64) -> Result<String, Status> {
        let key = self.key_type.generate()?;
        let kid = key.kid().to_string();
        self.change_ring(|ring| {
            ring.rotate(key.clone(), (self.clock)(), publish_lead)
                .map_err(|e| Status::bad_request(e.to_string()))
        })
        .await?;
        tracing::info!(%kid, publish_lead, "service account signing key rotation started");
        Ok(kid)
    }

    /// Revokes a key now: its tokens stop verifying at once.
    pub async fn revoke(&self, kid: &str) -> Result<(), Status> {
        self.change_ring(|ring| {
            ring.revoke(kid, (self.clock)())
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
        let conflict = |why: &str| Status::conflict(keys_resource(), kid, why);
        let signing_key = || conflict("the key is the current signing key; rotate first");
        let snapshot = self.published.current();
        if snapshot.signer().is_some_and(|s| s.kid() == kid) {
            return Err(signing_key());
        }
        let last_used = snapshot.usage(kid).and_then(KeyUsage::last_used);
        if !force
            && let Some(last) = last_used
            && last > (self.clock)().saturating_sub(window_seconds)
        {
            let at = jiff::Timestamp::from_second(last)
                .map(meta::format_time)
                .unwrap_or_else(|_| last.to_string());
            return Err(conflict(&format!(
                "the key last verified a token at {at}, within the last {window_seconds}s; retire it with force=true to end its tokens anyway"
            )));
        }
        self.change_ring(|ring| {
            let now = (self.clock)();
            if ring.current_signer(now).is_some_and(|s| s.kid() == kid) {
                return Err(signing_key());
            }
            ring.retire_early(kid, now).map_err(|e| match e {
                RingError::UnknownKey => Status::not_found(keys_resource(), kid),
                e => Status::bad_request(e.to_string()),
            })
        })
        .await?;
        tracing::warn!(%kid, force, "service account signing key retired early");
        Ok(())
    }

    /// Each key with its state and dates, for `badge keys list`, from the published snapshot.
    pub fn describe(&self) -> Value {
        let now = (self.clock)();
        let auto = *self.auto_rotation.lock();
        let snapshot = self.published.current();
        let t = |s: Option<i64>| {
            s.and_then(|s| jiff::Timestamp::from_second(s).ok())
                .map(meta::format_time)
        };
        match (&self.source, snapshot.ring()) {
            (Source::Ring(_), Some((ring, _))) => {
                let keys: Vec<Value> = ring
                    .entries()
                    .iter()
                    .map(|e| {
                        let usage = snapshot.usage(e.kid());
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
            _ => {
                let keys: Vec<Value> = snapshot
                    .signer()
                    .map(|key| {
                        let usage = snapshot.usage(key.kid());
                        json!({
                            "kid": key.kid(),
                            "algorithm": key.algorithm().as_str(),
                            "state": "Active",
                            "source": "file",
                            "verifiedTokens": usage.map_or(0, KeyUsage::count),
                            "lastUsed": t(usage.and_then(KeyUsage::last_used)),
                        })
                    })
                    .into_iter()
                    .collect();
                json!({ "keys": keys })
            }
        }
    }

    /// When (unix seconds) anything next happens to the ring under this server's rotation
    /// settings: a key activates, a rotation falls due, a retired key leaves the JWKS.
    pub fn next_transition(&self) -> Option<i64> {
        let auto = *self.auto_rotation.lock();
        let snapshot = self.published.current();
        let (ring, _) = snapshot.ring()?;
        ring.next_transition((self.clock)(), auto)
    }

    /// Writes what is due now to the stored ring: keys whose tokens have all expired are
    /// dropped, a ring made under shorter token lifetimes has its keep raised, a ring stored
    /// in the clear is sealed, and (with automatic rotation) the next key is published when
    /// the signer is older than the period. Run by the rotation controller on the lease
    /// holder, so a deployment writes each change once.
    pub async fn apply_due(&self) -> Result<(), Status> {
        if matches!(self.source, Source::Files(_)) {
            return Ok(());
        }
        let auto = *self.auto_rotation.lock();
        let now = (self.clock)();
        // Decided on the stored ring (this server's copy has already dropped, in memory, what
        // is past its keep), so nothing is written, and no key generated, unless something
        // is due.
        let (kv, _) = self.store.get(KEYRING_KEY).await.map_err(store_error)?;
        let kv = kv.ok_or_else(|| Status::internal("the key ring is missing from the store"))?;
        let in_clear = !badge_token::seal::Sealer::is_sealed(&kv.value);
        let mut probe = self.stored.decode(&kv.value)?;
        let keep = self.keep_after_retire;
        let keep_raised = probe.raise_keep_after_retire(keep);
        let (changed, rotation_due) = match auto {
            Some(auto) => match probe.apply_due(now, auto, || Err(())) {
                Ok(changed) => (changed, false),
                Err(_) => (true, true),
            },
            None => (!probe.advance(now).is_empty(), false),
        };
        if !changed && !keep_raised && !in_clear {
            return Ok(());
        }
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
            let now = (self.clock)();
            ring.raise_keep_after_retire(keep);
            match auto {
                Some(auto) => {
                    let key = key.clone();
                    ring.apply_due(now, auto, || key.ok_or("no key was generated"))
                        .map(drop)
                        .map_err(|e| Status::internal(format!("rotating the service account keys: {e}")))
                }
                None => {
                    ring.advance(now);
                    Ok(())
                }
            }
        })
        .await?;
        let snapshot = self.published.current();
        if let Some(key) = &key
            && let Some((ring, _)) = snapshot.ring()
            && let Some(e) = ring.entries().iter().find(|e| e.kid() == key.kid())
        {
            tracing::info!(
                kid = %key.kid(),
                signs_from = e.activates_at,
                "service account signing key rotation started (automatic)"
            );
        }
        Ok(())
    }

    /// Notified whenever the ring changes (written here or by another server).
    pub fn ring_changes(&self) -> tokio::sync::watch::Receiver<Revision> {
        self.ring_revision.subscribe()
    }
}

/// How long until unix second `at`, a little past it so the wake-up sees it as due.
pub fn until(at: i64) -> Duration {
    let now = badge_api::clock::now().as_nanosecond();
    let at = i128::from(at) * 1_000_000_000;
    let nanos = u64::try_from((at - now).max(0)).unwrap_or(u64::MAX);
    Duration::from_nanos(nanos) + Duration::from_millis(20)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
