//! The keys in force, and how they rotate: the one place a key's lifecycle lives.
//!
//! [`KeySet`] is the snapshot every reader takes: upstream's `staticPublicKeysGetter`
//! (pkg/serviceaccount/jwt.go) plus the signer, the verification keys in configuration order,
//! a kid index, the JWKS rendered once (`pkg/serviceaccount/openidmetadata.go`), per-key usage
//! and, for badge's own keys, the ring it was computed from (each key's state and dates).
//! [`PublishedKeys`] publishes it lock-free: signing, verification, the JWKS and discovery
//! endpoints, the keys API and the rotation controller all read the same snapshot, and a
//! change swaps it whole. Where the ring is stored and how servers follow it is the
//! `badge-keys` crate's business.
//!
//! [`KeyRing`] has no upstream counterpart; upstream rotation is an operator procedure (a new
//! `--service-account-key-file`, then a new `--service-account-signing-key-file`). It is a
//! pure state machine, after SPIRE's
//! prepare/activate and Vault's `verification_ttl`: a new key is published before it signs,
//! a retired key keeps verifying for at least the longest token lifetime plus leeway, and a
//! revoked key stops verifying at once. Time is always passed in.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};

use crate::claims::LEEWAY_SECONDS;
use crate::keys::{Algorithm, SigningKey, VerifyingKey};

// === impl KeyUsage ===

/// How often a verification key verified a token, and when it last did: what an operator
/// looks at before retiring it. Atomics, so the authentication path never takes a lock.
#[derive(Debug, Default)]
pub struct KeyUsage {
    count: AtomicU64,
    last_used_unix: AtomicI64,
}

impl KeyUsage {
    /// One more token verified with this key at `now` (unix seconds).
    pub fn record(&self, now: i64) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.last_used_unix.fetch_max(now, Ordering::Relaxed);
    }

    /// Tokens verified with this key so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// When the key last verified a token (unix seconds), if ever.
    pub fn last_used(&self) -> Option<i64> {
        Some(self.last_used_unix.load(Ordering::Relaxed)).filter(|&t| t > 0)
    }
}

// === impl KeySet ===

/// The signing key (if this server signs) and every verification key, indexed by kid, with
/// the JWKS document rendered once and the ring (if any) they were computed from.
#[derive(Clone)]
pub struct KeySet {
    signer: Option<SigningKey>,
    keys: Vec<VerifyingKey>,
    by_kid: HashMap<String, VerifyingKey>,
    usage: HashMap<String, Arc<KeyUsage>>,
    jwks: Arc<[u8]>,
    ring: Option<(Arc<KeyRing>, i64)>,
}

impl Default for KeySet {
    fn default() -> Self {
        Self::new(None, [])
    }
}

impl KeySet {
    /// A key set from a signer and verification keys in configuration order. Duplicates stay
    /// in [`KeySet::keys`] (upstream lists them in the JWKS too). The signer's public key is
    /// appended if it is missing, so a server always accepts what it issues.
    pub fn new(signer: Option<SigningKey>, verifying: impl IntoIterator<Item = VerifyingKey>) -> Self {
        let mut keys: Vec<VerifyingKey> = verifying.into_iter().collect();
        if let Some(s) = &signer
            && !keys.iter().any(|k| k.kid() == s.kid())
        {
            keys.push(s.public().clone());
        }
        let by_kid = keys.iter().map(|k| (k.kid().to_owned(), k.clone())).collect();
        let usage = keys
            .iter()
            .map(|k| (k.kid().to_owned(), Arc::default()))
            .collect();
        let jwks = crate::oidc::jwks(&keys).into();
        Self {
            signer,
            keys,
            by_kid,
            usage,
            jwks,
            ring: None,
        }
    }

    /// The JWKS document of [`KeySet::keys`], rendered when the set was made.
    pub fn jwks(&self) -> &[u8] {
        &self.jwks
    }

    /// The ring this set was computed from and the time (unix seconds) it was computed at;
    /// None for keys from files.
    pub fn ring(&self) -> Option<(&KeyRing, i64)> {
        self.ring.as_ref().map(|(ring, at)| (ring.as_ref(), *at))
    }

    /// Takes over `previous`'s counters for the kids both sets hold, so usage survives the
    /// key set being rebuilt.
    pub fn carry_usage_from(&mut self, previous: &KeySet) {
        for (kid, usage) in &mut self.usage {
            if let Some(seen) = previous.usage.get(kid) {
                *usage = seen.clone();
            }
        }
    }

    /// The usage counters of the verification key with this kid.
    pub fn usage(&self, kid: &str) -> Option<&KeyUsage> {
        self.usage.get(kid).map(Arc::as_ref)
    }

    /// The key new tokens are signed with.
    pub fn signer(&self) -> Option<&SigningKey> {
        self.signer.as_ref()
    }

    /// The verification key with exactly this kid.
    pub fn get(&self, kid: &str) -> Option<&VerifyingKey> {
        self.by_kid.get(kid)
    }

    /// Every verification key, in order.
    pub fn keys(&self) -> &[VerifyingKey] {
        &self.keys
    }

    /// Whether there is no verification key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The algorithms of the verification keys, sorted by name and de-duplicated (as the
    /// discovery document lists them).
    pub fn algorithms(&self) -> Vec<Algorithm> {
        let mut algs: Vec<Algorithm> = self.keys.iter().map(VerifyingKey::algorithm).collect();
        algs.sort_unstable_by_key(|a| a.as_str());
        algs.dedup();
        algs
    }
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySet")
            .field("signer", &self.signer.as_ref().map(SigningKey::kid))
            .field(
                "keys",
                &self.keys.iter().map(VerifyingKey::kid).collect::<Vec<_>>(),
            )
            .finish()
    }
}

// === impl PublishedKeys ===

/// The [`KeySet`] in force, swapped whole on every change so that readers never wait: a
/// read is an atomic load, a change a pointer swap.
pub struct PublishedKeys {
    current: ArcSwap<KeySet>,
}

impl Default for PublishedKeys {
    fn default() -> Self {
        Self::new(KeySet::default())
    }
}

impl PublishedKeys {
    /// Publishes `keys` as the first snapshot.
    pub fn new(keys: KeySet) -> Self {
        Self {
            current: ArcSwap::from_pointee(keys),
        }
    }

    /// The snapshot now.
    pub fn current(&self) -> Arc<KeySet> {
        self.current.load_full()
    }

    /// Swaps in `keys`, keeping the usage counters of the keys it shares with the snapshot
    /// it replaces. Callers that publish from several tasks serialise their publications, so
    /// that an older computation never replaces a newer one.
    pub fn publish(&self, mut keys: KeySet) {
        keys.carry_usage_from(&self.current.load());
        self.current.store(Arc::new(keys));
    }
}

// === impl KeyRing ===

/// Where a key is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyState {
    /// Published for verification, not yet signing.
    Pending,
    /// Signing (the newest active key signs) and verifying.
    Active,
    /// No longer signing; verifying until `retires_at` + keep-after-retire.
    Retired,
    /// Compromised: neither signs nor verifies.
    Revoked,
}

/// One key of a [`KeyRing`]. Times are unix seconds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeyEntry {
    /// The key; persisted as PKCS#8 PEM, so the serialised ring is secret.
    #[serde(with = "pkcs8_pem")]
    pub key: SigningKey,
    /// The state as of the last operation on the ring; [`KeyEntry::state_at`] is authoritative.
    pub state: KeyState,
    /// When the key entered the ring.
    pub created: i64,
    /// When the key starts signing.
    pub activates_at: i64,
    /// When the key stops signing.
    pub retires_at: Option<i64>,
    /// When the key was revoked.
    pub revoked_at: Option<i64>,
    /// When the key was retired early: it stopped verifying then instead of after
    /// keep-after-retire, though it was not compromised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired_early_at: Option<i64>,
}

impl KeyEntry {
    /// The key's kid.
    pub fn kid(&self) -> &str {
        self.key.kid()
    }

    /// The key's state at `now`, from its times.
    pub fn state_at(&self, now: i64) -> KeyState {
        if self.revoked_at.is_some() {
            KeyState::Revoked
        } else if self.retires_at.is_some_and(|r| r <= now) {
            KeyState::Retired
        } else if self.activates_at <= now {
            KeyState::Active
        } else {
            KeyState::Pending
        }
    }

    fn verifies_at(&self, now: i64, keep: i64) -> bool {
        match self.state_at(now) {
            KeyState::Pending | KeyState::Active => true,
            KeyState::Retired => {
                self.retired_early_at.is_none()
                    && self.retires_at.is_some_and(|r| now < r.saturating_add(keep))
            }
            KeyState::Revoked => false,
        }
    }
}

/// Why a ring operation was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RingError {
    /// Durations are never negative.
    #[error("durations must not be negative")]
    NegativeDuration,
    /// Keep-after-retire must cover the longest token lifetime plus the leeway.
    #[error("keys are kept {keep} s after retirement but tokens may live {required} s including leeway")]
    KeepTooShort {
        /// The configured keep.
        keep: i64,
        /// The lifetime it must cover.
        required: i64,
    },
    /// The kid is already in the ring (or was revoked and is still remembered).
    #[error("key is already in the ring")]
    DuplicateKey,
    /// No entry has this kid.
    #[error("no key with this kid in the ring")]
    UnknownKey,
    /// One rotation at a time: a published key is still waiting to sign.
    #[error("a rotation is already pending")]
    RotationPending,
    /// Retiring the only signer would stop token issuance; rotate first.
    #[error("retiring the only active key would leave nothing to sign with")]
    LastSigner,
    /// Revoked keys stay revoked.
    #[error("key is revoked")]
    Revoked,
}

/// Automatic rotation: a key signs for `period` seconds, then its successor, published
/// `publish_lead` seconds earlier, takes over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AutoRotation {
    /// How long a key signs before the next rotation starts.
    pub period: i64,
    /// How long a new key is published before it signs: at least the JWKS cache max-age,
    /// so every verifier holds it before any token it signs exists.
    pub publish_lead: i64,
}

/// Keys with a schedule, serialisable so the server can persist it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeyRing {
    keep_after_retire: i64,
    entries: Vec<KeyEntry>,
}

impl KeyRing {
    /// An empty ring keeping retired keys verifiable for `keep_after_retire` seconds.
    pub fn new(keep_after_retire: i64) -> Result<Self, RingError> {
        if keep_after_retire < 0 {
            return Err(RingError::NegativeDuration);
        }
        Ok(Self {
            keep_after_retire,
            entries: Vec::new(),
        })
    }

    /// Refuses a configuration whose retired keys vanish while tokens they signed are still
    /// valid: keep-after-retire must be ≥ `max_token_lifetime` + leeway (with the 1-year extended
    /// tokens when expiry extension is on).
    pub fn check_keep_covers(&self, max_token_lifetime: i64) -> Result<(), RingError> {
        let required = max_token_lifetime.saturating_add(LEEWAY_SECONDS);
        if self.keep_after_retire < required {
            return Err(RingError::KeepTooShort {
                keep: self.keep_after_retire,
                required,
            });
        }
        Ok(())
    }

    /// How long retired keys keep verifying.
    pub fn keep_after_retire(&self) -> i64 {
        self.keep_after_retire
    }

    /// Lengthens keep-after-retire to `keep` when it is shorter (the longest token lifetime
    /// grew since the ring was made); never shortens it, since tokens already signed may
    /// rely on it. Returns whether it changed.
    pub fn raise_keep_after_retire(&mut self, keep: i64) -> bool {
        let raised = keep > self.keep_after_retire;
        if raised {
            self.keep_after_retire = keep;
        }
        raised
    }

    /// The entries, oldest first.
    pub fn entries(&self) -> &[KeyEntry] {
        &self.entries
    }

    /// Adds `key`, published from `now` and signing from `now + publish_lead`. The keys active
    /// now retire when it activates. With an empty ring and a lead of 0 this is the first key.
    /// `publish_lead` should be at least the JWKS cache max-age (3600 s) so every verifier
    /// holds the key before it signs anything.
    pub fn rotate(&mut self, key: SigningKey, now: i64, publish_lead: i64) -> Result<(), RingError> {
        if publish_lead < 0 {
            return Err(RingError::NegativeDuration);
        }
        if self.position(key.kid()).is_some() {
            return Err(RingError::DuplicateKey);
        }
        if self.entries.iter().any(|e| e.state_at(now) == KeyState::Pending) {
            return Err(RingError::RotationPending);
        }
        let activates_at = now.saturating_add(publish_lead);
        for e in &mut self.entries {
            if e.state_at(now) == KeyState::Active && e.retires_at.is_none_or(|r| r > activates_at) {
                e.retires_at = Some(activates_at);
            }
        }
        self.entries.push(KeyEntry {
            key,
            state: KeyState::Pending,
            created: now,
            activates_at,
            retires_at: None,
            revoked_at: None,
            retired_early_at: None,
        });
        self.refresh_states(now);
        Ok(())
    }

    /// Stops `kid` signing now; it keeps verifying for keep-after-retire (tokens it signed stay
    /// valid). Retiring a pending key cancels that rotation. Retiring the only active key is
    /// refused: rotate first.
    pub fn retire(&mut self, kid: &str, now: i64) -> Result<(), RingError> {
        let i = self.position(kid).ok_or(RingError::UnknownKey)?;
        match self.entries[i].state_at(now) {
            KeyState::Revoked => return Err(RingError::Revoked),
            KeyState::Retired => return Ok(()),
            KeyState::Pending => self.cancel_succession(i, now),
            KeyState::Active => {
                let others = self
                    .entries
                    .iter()
                    .enumerate()
                    .any(|(j, e)| j != i && e.state_at(now) == KeyState::Active);
                if !others {
                    return Err(RingError::LastSigner);
                }
            }
        }
        self.entries[i].retires_at = Some(now);
        self.refresh_states(now);
        Ok(())
    }

    /// Retires `kid` and ends its verification now, without waiting out keep-after-retire:
    /// tokens it signed stop verifying, as on revocation, but the key is recorded as retired
    /// (early) rather than compromised. Refused for the only active key, like [`Self::retire`].
    pub fn retire_early(&mut self, kid: &str, now: i64) -> Result<(), RingError> {
        self.retire(kid, now)?;
        let i = self.position(kid).ok_or(RingError::UnknownKey)?;
        let entry = &mut self.entries[i];
        entry.retired_early_at.get_or_insert(now);
        Ok(())
    }

    /// Withdraws `kid` at once: it neither signs nor verifies, and tokens it signed die now
    /// (callers must also flush any verified-token cache). Revoking the signer leaves no signer
    /// until a rotation; revoking a pending key cancels that rotation.
    pub fn revoke(&mut self, kid: &str, now: i64) -> Result<(), RingError> {
        let i = self.position(kid).ok_or(RingError::UnknownKey)?;
        match self.entries[i].state_at(now) {
            KeyState::Revoked => return Ok(()),
            KeyState::Pending => self.cancel_succession(i, now),
            KeyState::Active | KeyState::Retired => {}
        }
        self.entries[i].revoked_at = Some(now);
        self.refresh_states(now);
        Ok(())
    }

    /// The key that signs at `now`: the most recently activated active key.
    pub fn current_signer(&self, now: i64) -> Option<&SigningKey> {
        self.entries
            .iter()
            .filter(|e| e.state_at(now) == KeyState::Active)
            .max_by_key(|e| e.activates_at)
            .map(|e| &e.key)
    }

    /// Every key that verifies at `now`: pending, active, and retired within keep. Never a
    /// revoked key.
    pub fn verification_keys(&self, now: i64) -> Vec<VerifyingKey> {
        self.entries
            .iter()
            .filter(|e| e.verifies_at(now, self.keep_after_retire))
            .map(|e| e.key.public().clone())
            .collect()
    }

    /// The [`KeySet`] in force at `now`, with `extra` verification keys (e.g. from key files)
    /// listed first.
    pub fn key_set(&self, now: i64, extra: &[VerifyingKey]) -> KeySet {
        let verifying = extra.iter().cloned().chain(self.verification_keys(now));
        let mut set = KeySet::new(self.current_signer(now).cloned(), verifying);
        set.ring = Some((Arc::new(self.clone()), now));
        set
    }

    /// The next time after `now` at which [`KeyRing::key_set`] changes, so the server knows
    /// when to rebuild it.
    pub fn next_change(&self, now: i64) -> Option<i64> {
        let keep = self.keep_after_retire;
        self.entries
            .iter()
            .flat_map(|e| {
                [
                    Some(e.activates_at),
                    e.retires_at,
                    e.retires_at.map(|r| r.saturating_add(keep)),
                    e.revoked_at.map(|r| r.saturating_add(keep)),
                ]
            })
            .flatten()
            .filter(|&t| t > now)
            .min()
    }

    /// When automatic rotation under `period` starts the next rotation: `period` after the
    /// signer activated. None while a rotation is pending (its activation comes first).
    /// With no signer at all (revoked) the rotation is due at once.
    pub fn rotation_due(&self, now: i64, period: i64) -> Option<i64> {
        if self.entries.iter().any(|e| e.state_at(now) == KeyState::Pending) {
            return None;
        }
        let signer_since = self
            .entries
            .iter()
            .filter(|e| e.state_at(now) == KeyState::Active)
            .map(|e| e.activates_at)
            .max();
        Some(signer_since.map_or(now, |since| since.saturating_add(period)))
    }

    /// The next time after `now` at which anything happens to the ring: a key set change, a
    /// key to drop, or (with `auto`) a rotation to start. What the rotation controller
    /// sleeps until.
    pub fn next_transition(&self, now: i64, auto: Option<AutoRotation>) -> Option<i64> {
        let due = auto
            .and_then(|a| self.rotation_due(now, a.period))
            .filter(|&t| t > now);
        match (self.next_change(now), due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// What is due at `now` under `auto`: expired keys dropped and, when the signer is older
    /// than the period, the next key (made by `make_key`) published to sign after the lead.
    /// Returns whether the ring changed.
    pub fn apply_due<E>(
        &mut self,
        now: i64,
        auto: AutoRotation,
        make_key: impl FnOnce() -> Result<SigningKey, E>,
    ) -> Result<bool, AutoRotateError<E>> {
        let dropped = self.advance(now);
        if self.rotation_due(now, auto.period).is_some_and(|t| t <= now) {
            let key = make_key().map_err(AutoRotateError::Key)?;
            self.rotate(key, now, auto.publish_lead)
                .map_err(AutoRotateError::Ring)?;
            return Ok(true);
        }
        Ok(!dropped.is_empty())
    }

    /// The next time after `now` that entry `kid` changes state: a pending key activates, an
    /// active key retires (under `auto`, when its successor will activate), a retired key
    /// leaves the JWKS, a revoked key is forgotten.
    pub fn next_transition_of(&self, kid: &str, now: i64, auto: Option<AutoRotation>) -> Option<i64> {
        let e = &self.entries[self.position(kid)?];
        let keep = self.keep_after_retire;
        match e.state_at(now) {
            KeyState::Pending => Some(e.activates_at),
            KeyState::Active => e.retires_at.or_else(|| {
                let a = auto?;
                let is_signer = self.current_signer(now).is_some_and(|s| s.kid() == kid);
                is_signer.then(|| {
                    let due = e.activates_at.saturating_add(a.period).max(now);
                    due.saturating_add(a.publish_lead)
                })
            }),
            KeyState::Retired => e.retires_at.map(|r| r.saturating_add(keep)),
            KeyState::Revoked => e.revoked_at.map(|r| r.saturating_add(keep)),
        }
    }

    /// Records every entry's state at `now` and drops keys past their keep window (revoked keys
    /// too, remembered until then so they cannot be re-added). Returns the dropped kids.
    pub fn advance(&mut self, now: i64) -> Vec<String> {
        let keep = self.keep_after_retire;
        let mut dropped = Vec::new();
        self.entries.retain(|e| {
            let gone = match e.state_at(now) {
                KeyState::Retired => e.retires_at.is_some_and(|r| now >= r.saturating_add(keep)),
                KeyState::Revoked => e.revoked_at.is_some_and(|r| now >= r.saturating_add(keep)),
                KeyState::Pending | KeyState::Active => false,
            };
            if gone {
                dropped.push(e.kid().to_owned());
            }
            !gone
        });
        self.refresh_states(now);
        dropped
    }

    fn position(&self, kid: &str) -> Option<usize> {
        self.entries.iter().position(|e| e.kid() == kid)
    }

    /// A pending key is withdrawn: the keys scheduled to retire when it activated stay active.
    fn cancel_succession(&mut self, pending: usize, now: i64) {
        let at = self.entries[pending].activates_at;
        for (j, e) in self.entries.iter_mut().enumerate() {
            if j != pending && e.retires_at == Some(at) && at > now && e.revoked_at.is_none() {
                e.retires_at = None;
            }
        }
    }

    fn refresh_states(&mut self, now: i64) {
        for e in &mut self.entries {
            e.state = e.state_at(now);
        }
    }
}

/// Why an automatic rotation failed.
#[derive(Debug, thiserror::Error)]
pub enum AutoRotateError<E> {
    /// The new key could not be made.
    #[error("generating the next key: {0}")]
    Key(E),
    /// The ring refused it.
    #[error(transparent)]
    Ring(RingError),
}

/// Persists a [`SigningKey`] as PKCS#8 PEM and parses it back once.
mod pkcs8_pem {
    use serde::{Deserialize, Deserializer, Serializer, de, ser};

    use crate::keys::SigningKey;

    pub(super) fn serialize<S: Serializer>(key: &SigningKey, s: S) -> Result<S::Ok, S::Error> {
        let pem = key.to_pkcs8_pem().map_err(ser::Error::custom)?;
        s.serialize_str(&pem)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SigningKey, D::Error> {
        let pem = String::deserialize(d)?;
        SigningKey::from_pem(&pem).map_err(de::Error::custom)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::keys::Curve;

    const HOUR: i64 = 3600;
    const DAY: i64 = 24 * HOUR;

    fn key() -> SigningKey {
        SigningKey::generate_ec(Curve::P256).unwrap()
    }

    fn kids(keys: &[VerifyingKey]) -> Vec<&str> {
        keys.iter().map(VerifyingKey::kid).collect()
    }

    #[test]
    fn usage_counts_add_up_across_threads_and_survive_rebuilds() {
        let a = key();
        let set = Arc::new(KeySet::new(Some(a.clone()), []));
        std::thread::scope(|scope| {
            for t in 0..8 {
                let set = set.clone();
                let kid = a.kid().to_owned();
                scope.spawn(move || {
                    for i in 0..1000 {
                        set.usage(&kid).unwrap().record(100 + t * 1000 + i);
                    }
                });
            }
        });
        let usage = set.usage(a.kid()).unwrap();
        assert_eq!(usage.count(), 8000);
        assert_eq!(usage.last_used(), Some(100 + 7 * 1000 + 999));
        assert!(set.usage("nope").is_none());

        let b = key();
        let mut rebuilt = KeySet::new(Some(a.clone()), [b.public().clone()]);
        rebuilt.carry_usage_from(&set);
        assert_eq!(rebuilt.usage(a.kid()).unwrap().count(), 8000);
        assert_eq!(rebuilt.usage(b.kid()).unwrap().count(), 0);
        assert_eq!(rebuilt.usage(b.kid()).unwrap().last_used(), None);
    }

    #[test]
    fn published_snapshots_carry_usage_the_jwks_and_the_ring() {
        let mut ring = KeyRing::new(DAY).unwrap();
        let (k1, k2) = (key(), key());
        ring.rotate(k1.clone(), 0, 0).unwrap();
        let published = PublishedKeys::new(ring.key_set(10, &[]));
        published.current().usage(k1.kid()).unwrap().record(10);

        ring.rotate(k2.clone(), 20, HOUR).unwrap();
        let before = published.current();
        published.publish(ring.key_set(30, &[]));
        // A reader holding the old snapshot keeps it whole.
        assert_eq!(kids(before.keys()), vec![k1.kid()]);
        let now = published.current();
        assert_eq!(kids(now.keys()), vec![k1.kid(), k2.kid()]);
        assert_eq!(now.jwks(), crate::oidc::jwks(now.keys()).as_slice());
        assert_eq!(now.usage(k1.kid()).unwrap().count(), 1);
        let (snapshot_ring, at) = now.ring().unwrap();
        assert_eq!(at, 30);
        assert_eq!(snapshot_ring.entries()[1].state_at(at), KeyState::Pending);
        assert!(KeySet::new(Some(k1), []).ring().is_none());
        assert_eq!(KeySet::default().jwks(), br#"{"keys":[]}"#);
    }

    #[test]
    fn retiring_early_ends_verification_at_once() {
        let mut ring = KeyRing::new(2 * DAY).unwrap();
        let (k1, k2) = (key(), key());
        let t0 = 1_000_000;
        ring.rotate(k1.clone(), t0, 0).unwrap();
        assert_eq!(ring.retire_early(k1.kid(), t0), Err(RingError::LastSigner));
        ring.rotate(k2.clone(), t0 + HOUR, 0).unwrap();
        let t1 = t0 + 2 * HOUR;
        // An ordinary retirement keeps verifying; an early one does not.
        assert_eq!(kids(&ring.verification_keys(t1)), vec![k1.kid(), k2.kid()]);
        ring.retire_early(k1.kid(), t1).unwrap();
        assert_eq!(kids(&ring.verification_keys(t1)), vec![k2.kid()]);
        let e = &ring.entries()[0];
        assert_eq!(e.state_at(t1), KeyState::Retired);
        assert_eq!(e.retired_early_at, Some(t1));
        assert_eq!(e.revoked_at, None);
        // The record survives a round trip through the store.
        let back: KeyRing = serde_json::from_str(&serde_json::to_string(&ring).unwrap()).unwrap();
        assert_eq!(kids(&back.verification_keys(t1)), vec![k2.kid()]);
    }

    #[test]
    fn key_set_indexes_and_adds_the_signer() {
        let (a, b) = (key(), key());
        let set = KeySet::new(Some(a.clone()), [b.public().clone(), b.public().clone()]);
        assert_eq!(kids(set.keys()), vec![b.kid(), b.kid(), a.kid()]);
        assert_eq!(set.get(a.kid()).unwrap().kid(), a.kid());
        assert!(set.get("nope").is_none());
        assert_eq!(set.signer().unwrap().kid(), a.kid());
        assert_eq!(set.algorithms(), vec![Algorithm::Es256]);
        let shown = format!("{set:?}");
        assert!(shown.contains(a.kid()));
    }

    #[test]
    fn publish_before_use_then_retire_then_drop() {
        let mut ring = KeyRing::new(2 * DAY).unwrap();
        let (k1, k2) = (key(), key());
        let t0 = 1_000_000;
        ring.rotate(k1.clone(), t0, 0).unwrap();
        assert_eq!(ring.current_signer(t0).unwrap().kid(), k1.kid());
        assert_eq!(ring.entries()[0].state, KeyState::Active);

        // Rotation: k2 is published at once but signs only after the lead.
        let t1 = t0 + 10 * DAY;
        ring.rotate(k2.clone(), t1, HOUR).unwrap();
        assert_eq!(ring.entries()[1].state, KeyState::Pending);
        assert_eq!(kids(&ring.verification_keys(t1)), vec![k1.kid(), k2.kid()]);
        assert_eq!(ring.current_signer(t1).unwrap().kid(), k1.kid());
        assert_eq!(ring.current_signer(t1 + HOUR - 1).unwrap().kid(), k1.kid());
        assert_eq!(ring.next_change(t1), Some(t1 + HOUR));

        // At activation k2 signs and k1 retires but still verifies.
        let t2 = t1 + HOUR;
        assert_eq!(ring.current_signer(t2).unwrap().kid(), k2.kid());
        assert_eq!(ring.entries()[0].state_at(t2), KeyState::Retired);
        assert_eq!(kids(&ring.verification_keys(t2)), vec![k1.kid(), k2.kid()]);
        assert_eq!(ring.next_change(t2), Some(t2 + 2 * DAY));

        // k1 verifies until keep runs out, then advance drops it.
        assert_eq!(kids(&ring.verification_keys(t2 + 2 * DAY - 1)).len(), 2);
        assert_eq!(kids(&ring.verification_keys(t2 + 2 * DAY)), vec![k2.kid()]);
        assert!(ring.advance(t2 + 2 * DAY - 1).is_empty());
        assert_eq!(ring.advance(t2 + 2 * DAY), vec![k1.kid().to_owned()]);
        assert_eq!(ring.entries().len(), 1);
        assert_eq!(ring.entries()[0].state, KeyState::Active);
    }

    /// The rotation controller's loop, with the clock passed in: sleep until the ring's next
    /// transition, then apply what is due.
    #[test]
    fn automatic_rotation_over_several_periods() {
        let keep = 2 * DAY;
        let auto = AutoRotation {
            period: 30 * DAY,
            publish_lead: HOUR,
        };
        let mut ring = KeyRing::new(keep).unwrap();
        let t0 = 1_000_000;
        ring.rotate(key(), t0, 0).unwrap();
        let first = ring.entries()[0].kid().to_owned();
        assert_eq!(ring.rotation_due(t0, auto.period), Some(t0 + auto.period));
        assert_eq!(ring.next_transition(t0, Some(auto)), Some(t0 + auto.period));
        assert_eq!(ring.next_transition(t0, None), None);
        assert_eq!(
            ring.next_transition_of(&first, t0, Some(auto)),
            Some(t0 + auto.period + auto.publish_lead)
        );
        assert_eq!(ring.next_transition_of(&first, t0, None), None);

        let mut published: HashMap<String, i64> = HashMap::from([(first.clone(), t0)]);
        let mut signers: Vec<(String, i64)> = vec![(first, t0)];
        let mut dropped: Vec<String> = Vec::new();
        let mut now = t0;
        for _ in 0..100 {
            if signers.len() == 5 && dropped.len() == 3 {
                break;
            }
            now = ring.next_transition(now, Some(auto)).unwrap();
            ring.apply_due(now, auto, || Ok::<_, ()>(key())).unwrap();
            let jwks = ring.verification_keys(now);
            for kid in kids(&jwks) {
                published.entry(kid.to_owned()).or_insert(now);
            }
            // A pending key is in the JWKS from the moment it exists.
            for e in ring.entries() {
                assert!(kids(&jwks).contains(&e.kid()), "{} not published", e.kid());
            }
            let signer = ring.current_signer(now).unwrap().kid().to_owned();
            if signers.last().map(|(k, _)| k) != Some(&signer) {
                // Published at least the lead before it signs, and only once the previous
                // signer had signed for a whole period.
                assert!(now - published[&signer] >= auto.publish_lead);
                let (_, since) = signers.last().unwrap();
                assert_eq!(now, since + auto.period + auto.publish_lead);
                signers.push((signer, now));
            }
            // Every former signer verifies until keep after its successor took over, and is
            // gone from the JWKS (and the ring) from then on.
            for pair in signers.windows(2) {
                let (old, retired) = (&pair[0].0, pair[1].1);
                let listed = kids(&jwks).contains(&old.as_str());
                if now < retired + keep {
                    assert!(listed, "{old} dropped before its tokens expired");
                    assert_eq!(
                        ring.next_transition_of(old, now, Some(auto)),
                        Some(retired + keep)
                    );
                } else {
                    assert!(!listed, "{old} still published after its tokens expired");
                    assert!(ring.entries().iter().all(|e| e.kid() != old));
                    if !dropped.contains(old) {
                        assert_eq!(now, retired + keep);
                        dropped.push(old.clone());
                    }
                }
            }
        }
        assert_eq!(signers.len(), 5);
        assert_eq!(dropped.len(), 3);
        // Nothing accumulates: the current signer and its predecessor within keep at most.
        assert!(ring.entries().len() <= 2);
    }

    #[test]
    fn automatic_rotation_replaces_a_revoked_signer_through_the_lead() {
        let auto = AutoRotation {
            period: 30 * DAY,
            publish_lead: HOUR,
        };
        let mut ring = KeyRing::new(DAY).unwrap();
        let k1 = key();
        ring.rotate(k1.clone(), 0, 0).unwrap();
        ring.revoke(k1.kid(), 10).unwrap();
        assert_eq!(ring.rotation_due(10, auto.period), Some(10));
        assert!(ring.apply_due(10, auto, || Ok::<_, ()>(key())).unwrap());
        // Published now, but nothing signs until the lead has passed.
        assert!(ring.current_signer(10).is_none());
        assert_eq!(ring.rotation_due(10, auto.period), None);
        assert_eq!(ring.next_transition(10, Some(auto)), Some(10 + HOUR));
        assert!(ring.current_signer(10 + HOUR).is_some());
        // Nothing further due until the new key's period runs out.
        assert!(!ring.apply_due(10 + HOUR, auto, || Err("unused")).unwrap());
    }

    #[test]
    fn one_rotation_at_a_time_and_no_duplicates() {
        let mut ring = KeyRing::new(DAY).unwrap();
        let (k1, k2, k3) = (key(), key(), key());
        ring.rotate(k1.clone(), 0, 0).unwrap();
        assert_eq!(ring.rotate(k1.clone(), 1, 0), Err(RingError::DuplicateKey));
        ring.rotate(k2, 1, HOUR).unwrap();
        assert_eq!(ring.rotate(k3.clone(), 2, HOUR), Err(RingError::RotationPending));
        assert_eq!(ring.rotate(k3.clone(), 2, -1), Err(RingError::NegativeDuration));
        ring.rotate(k3, 1 + HOUR, HOUR).unwrap();
    }

    #[test]
    fn retire_keeps_verifying_and_refuses_the_last_signer() {
        let mut ring = KeyRing::new(DAY).unwrap();
        let (k1, k2) = (key(), key());
        ring.rotate(k1.clone(), 0, 0).unwrap();
        assert_eq!(ring.retire(k1.kid(), 10), Err(RingError::LastSigner));
        assert_eq!(ring.retire("nope", 10), Err(RingError::UnknownKey));
        ring.rotate(k2.clone(), 10, 0).unwrap();
        // k1 already retired by the immediate rotation; retiring again is a no-op.
        ring.retire(k1.kid(), 20).unwrap();
        assert_eq!(ring.current_signer(20).unwrap().kid(), k2.kid());
        assert_eq!(kids(&ring.verification_keys(20)), vec![k1.kid(), k2.kid()]);
        assert_eq!(ring.entries()[0].retires_at, Some(10));
    }

    #[test]
    fn cancelling_a_pending_key_keeps_the_old_signer() {
        let mut ring = KeyRing::new(DAY).unwrap();
        let (k1, k2, k3) = (key(), key(), key());
        ring.rotate(k1.clone(), 0, 0).unwrap();
        ring.rotate(k2.clone(), 100, HOUR).unwrap();
        ring.retire(k2.kid(), 200).unwrap();
        assert_eq!(ring.current_signer(100 + 2 * HOUR).unwrap().kid(), k1.kid());
        ring.rotate(k3.clone(), 300, HOUR).unwrap();
        ring.revoke(k3.kid(), 400).unwrap();
        assert_eq!(ring.current_signer(300 + 2 * HOUR).unwrap().kid(), k1.kid());
        assert!(!kids(&ring.verification_keys(500)).contains(&k3.kid()));
    }

    #[test]
    fn revoke_stops_verification_at_once() {
        let mut ring = KeyRing::new(DAY).unwrap();
        let (k1, k2) = (key(), key());
        ring.rotate(k1.clone(), 0, 0).unwrap();
        ring.rotate(k2.clone(), 10, 0).unwrap();
        // k1 retired at 10 and would verify until 10 + DAY; revoking ends that now.
        ring.revoke(k1.kid(), 20).unwrap();
        assert_eq!(ring.entries()[0].state, KeyState::Revoked);
        assert_eq!(kids(&ring.verification_keys(20)), vec![k2.kid()]);
        assert_eq!(ring.retire(k1.kid(), 30), Err(RingError::Revoked));
        // The tombstone blocks re-adding it until keep passes.
        assert_eq!(ring.rotate(k1.clone(), 30, 0), Err(RingError::DuplicateKey));
        // Revoking the signer leaves none.
        ring.revoke(k2.kid(), 40).unwrap();
        assert!(ring.current_signer(40).is_none());
        assert!(ring.verification_keys(40).is_empty());
        assert_eq!(ring.advance(20 + DAY), vec![k1.kid().to_owned()]);
    }

    #[test]
    fn keep_after_retire_only_grows() {
        let mut ring = KeyRing::new(DAY).unwrap();
        let (k1, k2) = (key(), key());
        ring.rotate(k1.clone(), 0, 0).unwrap();
        ring.rotate(k2, 10, 0).unwrap();
        assert!(!ring.raise_keep_after_retire(HOUR));
        assert_eq!(ring.keep_after_retire(), DAY);
        assert!(ring.raise_keep_after_retire(2 * DAY));
        // k1, retired at 10, now verifies for the longer keep.
        assert!(kids(&ring.verification_keys(10 + DAY)).contains(&k1.kid()));
        assert!(ring.advance(10 + DAY).is_empty());
        assert_eq!(ring.advance(10 + 2 * DAY), vec![k1.kid().to_owned()]);
    }

    #[test]
    fn keep_must_cover_token_lifetime() {
        let ring = KeyRing::new(DAY).unwrap();
        assert!(ring.check_keep_covers(DAY - 60).is_ok());
        assert_eq!(
            ring.check_keep_covers(DAY),
            Err(RingError::KeepTooShort {
                keep: DAY,
                required: DAY + 60
            })
        );
        assert!(KeyRing::new(-1).is_err());
    }

    #[test]
    fn key_set_from_ring() {
        let mut ring = KeyRing::new(DAY).unwrap();
        let (k1, k2, file_key) = (key(), key(), key());
        ring.rotate(k1.clone(), 0, 0).unwrap();
        ring.rotate(k2.clone(), 10, HOUR).unwrap();
        let set = ring.key_set(20, &[file_key.public().clone()]);
        assert_eq!(set.signer().unwrap().kid(), k1.kid());
        assert_eq!(kids(set.keys()), vec![file_key.kid(), k1.kid(), k2.kid()]);
    }

    #[test]
    fn serde_round_trip_keeps_keys_and_schedule() {
        let mut ring = KeyRing::new(DAY).unwrap();
        let (k1, k2) = (key(), SigningKey::generate_ec(Curve::P384).unwrap());
        ring.rotate(k1.clone(), 0, 0).unwrap();
        ring.rotate(k2.clone(), 10, HOUR).unwrap();
        let text = serde_json::to_string(&ring).unwrap();
        let back: KeyRing = serde_json::from_str(&text).unwrap();
        assert_eq!(back.keep_after_retire(), DAY);
        assert_eq!(back.entries().len(), 2);
        assert_eq!(back.entries()[1].kid(), k2.kid());
        assert_eq!(back.entries()[1].state, KeyState::Pending);
        assert_eq!(back.entries()[0].retires_at, Some(10 + HOUR));
        let sig = back.current_signer(20).unwrap().sign(b"m").unwrap();
        assert!(k1.public().verify(b"m", &sig));
        // Debug of the ring shows kids, not keys.
        let shown = format!("{back:?}");
        assert!(!shown.contains("PRIVATE KEY"));
    }
}
