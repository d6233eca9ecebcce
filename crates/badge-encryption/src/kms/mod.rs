//! The KMS v2 provider, as upstream's `envelope/kmsv2` with the probe of
//! `encryptionconfig`: a seed (DEK source) is generated here, encrypted once by the plugin and
//! kept; each write derives its own AES-GCM key from the seed (HKDF-SHA256 with 32 random
//! bytes of info) so the plugin is not called per write. The plugin's `Status` is polled;
//! when it reports another key id a new seed is made and encrypted, and writes use it. A
//! value is read with the seed its `EncryptedObject` names, decrypted by the plugin on first
//! use and cached, so reads of values under a cached seed go on while the plugin is down.
//! Writes go on with the current seed until it has not been confirmed for the write TTL
//! (upstream's three minutes), then fail.

pub mod plugin;
pub mod proto;
mod service;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use parking_lot::{Mutex, RwLock};
use prost::Message;
use rand::RngCore;

use proto::{EncryptedObject, HKDF_SHA256_XNONCE_AES_GCM_SEED};
use service::KmsService;

const SEED_SIZE: usize = 32;
const INFO_SIZE: usize = 32;
const NONCE_SIZE: usize = 12;
/// Bound of the DEK cache; upstream's grows for a day, badge's drops an entry when full.
const DEK_CACHE_MAX: usize = 4096;

/// How often the plugin is asked for its status, and how long writes go on without an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KmsTimings {
    /// Between successful status calls (upstream: one minute).
    pub status_interval: Duration,
    /// Between status calls after a failure (upstream: ten seconds).
    pub retry_interval: Duration,
    /// How long writes use a seed after its key id was last confirmed (upstream: three minutes).
    pub write_ttl: Duration,
}

impl Default for KmsTimings {
    fn default() -> KmsTimings {
        KmsTimings {
            status_interval: Duration::from_secs(60),
            retry_interval: Duration::from_secs(10),
            write_ttl: Duration::from_secs(180),
        }
    }
}

/// A decrypted DEK source: the seed of per-write keys, or (written by other servers in the
/// older mode) the AES-GCM key itself.
struct Dek {
    source_type: i32,
    key: Vec<u8>,
}

/// Decrypted DEK sources by [`EncryptedObject::cache_key`].
#[derive(Default)]
pub struct DekCache {
    entries: Mutex<HashMap<Vec<u8>, Arc<Dek>>>,
}

impl DekCache {
    fn get(&self, key: &[u8]) -> Option<Arc<Dek>> {
        self.entries.lock().get(key).cloned()
    }

    fn insert(&self, key: Vec<u8>, dek: Arc<Dek>) {
        let mut entries = self.entries.lock();
        if entries.len() >= DEK_CACHE_MAX
            && !entries.contains_key(&key)
            && let Some(victim) = entries.keys().next().cloned()
        {
            entries.remove(&victim);
        }
        entries.insert(key, dek);
    }

    /// How many DEK sources are cached.
    pub fn len(&self) -> usize {
        self.entries.lock().len()
    }

    /// Whether no DEK source is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What writes use: the seed, how the plugin encrypted it, and until when.
struct WriteState {
    dek: Arc<Dek>,
    key_id: String,
    encrypted_dek_source: Vec<u8>,
    annotations: std::collections::BTreeMap<String, Vec<u8>>,
    expires: SystemTime,
}

/// State shared by the transformer and the probe running beside the plugin connection.
struct Shared {
    name: String,
    write: RwLock<Option<WriteState>>,
    cache: DekCache,
}

/// One `kms` provider of `apiVersion: v2`.
pub struct KmsV2 {
    shared: Arc<Shared>,
    service: KmsService,
}

impl KmsV2 {
    /// Connects to the plugin at `socket` and primes the write state with one status call,
    /// as upstream does; a plugin that is not up yet is probed again in the background.
    pub fn new(name: &str, socket: PathBuf, timeout: Duration, timings: KmsTimings) -> KmsV2 {
        let shared = Arc::new(Shared {
            name: name.to_string(),
            write: RwLock::new(None),
            cache: DekCache::default(),
        });
        let probe_shared = shared.clone();
        let service = KmsService::start(name, socket, timeout, move |client| {
            let shared = probe_shared.clone();
            async move { probe_loop(client, shared, timings).await }
        });
        KmsV2 { shared, service }
    }

    /// The decrypted DEK sources held, for tests and status.
    pub fn cache(&self) -> &DekCache {
        &self.shared.cache
    }

    /// The plugin's key id writes currently use.
    pub fn write_key_id(&self) -> Option<String> {
        self.shared.write.read().as_ref().map(|s| s.key_id.clone())
    }

    /// `value` as an encoded `EncryptedObject` (the prefix is added by the caller).
    pub fn seal(&self, value: &[u8], additional_data: &[u8]) -> Result<Vec<u8>, String> {
        let state = self.shared.write.read();
        let Some(state) = state.as_ref() else {
            return Err("got unexpected nil transformer".into());
        };
        let now = crate::clock::now();
        if now > state.expires {
            return Err(format!(
                "encryptedDEKSource with keyID hash {:?} expired at {} (current time is {})",
                key_id_hash(&state.key_id),
                rfc3339(state.expires),
                rfc3339(now)
            ));
        }
        let mut info = [0u8; INFO_SIZE];
        rand::rng().fill_bytes(&mut info);
        let key = hkdf_expand(&state.dek.key, &info)?;
        let mut encrypted_data = info.to_vec();
        encrypted_data.extend(gcm_seal(&key, value, additional_data)?);
        let object = EncryptedObject {
            encrypted_data,
            key_id: state.key_id.clone(),
            encrypted_dek_source: state.encrypted_dek_source.clone(),
            annotations: state.annotations.clone(),
            encrypted_dek_source_type: state.dek.source_type,
        };
        object.validate()?;
        Ok(object.encode_to_vec())
    }

    /// The value in an encoded `EncryptedObject`.
    pub fn open(&self, data: &[u8], additional_data: &[u8]) -> Result<Vec<u8>, String> {
        let object = EncryptedObject::decode(data)
            .map_err(|e| format!("failed to decode the encrypted object: {e}"))?;
        object.validate()?;
        let cache_key = object.cache_key();
        let dek = match self.shared.cache.get(&cache_key) {
            Some(dek) => dek,
            None => {
                let key = self
                    .service
                    .decrypt_blocking(proto::DecryptRequest {
                        ciphertext: object.encrypted_dek_source.clone(),
                        uid: uuid::Uuid::new_v4().to_string(),
                        key_id: object.key_id.clone(),
                        annotations: object.annotations.clone(),
                    })
                    .map_err(|e| format!("failed to decrypt DEK, error: {e}"))?;
                let dek = Arc::new(Dek {
                    source_type: object.encrypted_dek_source_type,
                    key,
                });
                self.shared.cache.insert(cache_key, dek.clone());
                dek
            }
        };
        if dek.source_type == HKDF_SHA256_XNONCE_AES_GCM_SEED {
            if object.encrypted_data.len() < INFO_SIZE {
                return Err("the stored data was shorter than the required size".into());
            }
            let (info, sealed) = object.encrypted_data.split_at(INFO_SIZE);
            let key = hkdf_expand(&dek.key, info)
                .map_err(|e| format!("failed to derive read key from KDF: {e}"))?;
            gcm_open(&key, sealed, additional_data)
        } else {
            gcm_open(&dek.key, &object.encrypted_data, additional_data)
        }
    }
}

/// Upstream's `GetHashIfNotEmpty`: key ids are logged and reported by their hash.
pub fn key_id_hash(key_id: &str) -> String {
    if key_id.is_empty() {
        return String::new();
    }
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key_id.as_bytes());
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

fn rfc3339(time: SystemTime) -> String {
    jiff::Timestamp::try_from(time)
        .map(|t| t.round(jiff::Unit::Second).unwrap_or(t).to_string())
        .unwrap_or_default()
}

/// HKDF-SHA256 expand only (the seed is already a pseudo-random key): 32 bytes of key.
fn hkdf_expand(seed: &[u8], info: &[u8]) -> Result<[u8; 32], String> {
    struct Len32;
    impl aws_lc_rs::hkdf::KeyType for Len32 {
        fn len(&self) -> usize {
            32
        }
    }
    let prk = aws_lc_rs::hkdf::Prk::new_less_safe(aws_lc_rs::hkdf::HKDF_SHA256, seed);
    let info = [info];
    let okm = prk
        .expand(&info, Len32)
        .map_err(|_| "failed to KDF expand seed with info".to_string())?;
    let mut key = [0u8; 32];
    okm.fill(&mut key)
        .map_err(|_| "failed to read a derived key from KDF".to_string())?;
    Ok(key)
}

/// AES-GCM with a random nonce written before the ciphertext, as upstream's GCM transformer.
fn gcm_seal(key: &[u8], value: &[u8], aad: &[u8]) -> Result<Vec<u8>, String> {
    let cipher = aes_gcm::Aes256Gcm::new_from_slice(key).map_err(|_| "invalid AES key length".to_string())?;
    let mut nonce = [0u8; NONCE_SIZE];
    rand::rng().fill_bytes(&mut nonce);
    let sealed = cipher
        .encrypt((&nonce).into(), Payload { msg: value, aad })
        .map_err(|_| "AES-GCM encryption failed".to_string())?;
    let mut out = nonce.to_vec();
    out.extend(sealed);
    Ok(out)
}

fn gcm_open(key: &[u8], data: &[u8], aad: &[u8]) -> Result<Vec<u8>, String> {
    if data.len() < NONCE_SIZE {
        return Err("the stored data was shorter than the required size".into());
    }
    let (nonce, sealed) = data.split_at(NONCE_SIZE);
    let payload = Payload { msg: sealed, aad };
    match key.len() {
        16 => aes_gcm::Aes128Gcm::new_from_slice(key)
            .map_err(|_| "invalid AES key length".to_string())?
            .decrypt(nonce.into(), payload),
        32 => aes_gcm::Aes256Gcm::new_from_slice(key)
            .map_err(|_| "invalid AES key length".to_string())?
            .decrypt(nonce.into(), payload),
        n => return Err(format!("crypto/aes: invalid key size {n}")),
    }
    .map_err(|_| "cipher: message authentication failed".to_string())
}

/// Polls the plugin's status for as long as the provider lives: after a success every
/// status interval, after a failure every retry interval.
async fn probe_loop(client: service::Client, shared: Arc<Shared>, timings: KmsTimings) {
    let mut healthy = None;
    loop {
        let result = probe(&client, &shared, timings).await;
        let ok = result.is_ok();
        match (&result, healthy) {
            (Err(e), Some(true) | None) => {
                tracing::error!(name = %shared.name, error = %e, "kms plugin failed health check probe");
            }
            (Ok(()), Some(false)) => tracing::info!(name = %shared.name, "kms plugin is healthy again"),
            _ => {}
        }
        healthy = Some(ok);
        client.primed();
        tokio::time::sleep(if ok {
            timings.status_interval
        } else {
            timings.retry_interval
        })
        .await;
    }
}

/// One status call; a new seed when the key id changed, else the current one's write
/// expiry moved forward (upstream's `rotateDEKOnKeyIDChange`).
async fn probe(client: &service::Client, shared: &Shared, timings: KmsTimings) -> Result<(), String> {
    let status = client.status().await?;
    let mut errors = Vec::new();
    if status.healthz != "ok" {
        errors.push(format!("got unexpected healthz status: {}", status.healthz));
    }
    if status.version != "v2" && status.version != "v2beta1" {
        errors.push(format!("expected KMSv2 API version v2, got {}", status.version));
    }
    if let Err(e) = proto::validate_key_id(&status.key_id) {
        errors.push(format!(
            "got invalid KMSv2 KeyID hash {:?}: {e}",
            key_id_hash(&status.key_id)
        ));
    } else if let Err(e) = rotate_on_key_id_change(client, shared, &status.key_id, timings).await {
        errors.push(e);
    }
    if errors.is_empty() {
        return Ok(());
    }
    Err(format!(
        "kmsv2 Provider {} is not healthy, error: {}",
        shared.name,
        if errors.len() == 1 {
            errors.remove(0)
        } else {
            format!("[{}]", errors.join(", "))
        }
    ))
}

async fn rotate_on_key_id_change(
    client: &service::Client,
    shared: &Shared,
    status_key_id: &str,
    timings: KmsTimings,
) -> Result<(), String> {
    // The clock starts before the call: the TTL bounds how long writes go unconfirmed.
    let expires = crate::clock::now() + timings.write_ttl;
    {
        let mut write = shared.write.write();
        if let Some(state) = write.as_mut()
            && state.key_id == status_key_id
        {
            state.expires = expires;
            return Ok(());
        }
    }
    let mut seed = vec![0u8; SEED_SIZE];
    rand::rng().fill_bytes(&mut seed);
    let uid = uuid::Uuid::new_v4().to_string();
    let response = client
        .encrypt(proto::EncryptRequest {
            plaintext: seed.clone(),
            uid: uid.clone(),
        })
        .await
        .map_err(|e| format!("failed to rotate DEK uid={uid:?}: failed to encrypt DEK, error: {e}"))?;
    if response.key_id != status_key_id {
        return Err(format!(
            "failed to rotate DEK uid={uid:?}: statusKeyIDHash={:?}, encryptKeyIDHash={:?}",
            key_id_hash(status_key_id),
            key_id_hash(&response.key_id)
        ));
    }
    let dek = Arc::new(Dek {
        source_type: HKDF_SHA256_XNONCE_AES_GCM_SEED,
        key: seed,
    });
    let check = EncryptedObject {
        encrypted_data: vec![0],
        key_id: response.key_id.clone(),
        encrypted_dek_source: response.ciphertext.clone(),
        annotations: response.annotations.clone(),
        encrypted_dek_source_type: HKDF_SHA256_XNONCE_AES_GCM_SEED,
    };
    check
        .validate()
        .map_err(|e| format!("failed to rotate DEK uid={uid:?}: got invalid EncryptedObject: {e}"))?;
    shared.cache.insert(check.cache_key(), dek.clone());
    let previous = shared.write.write().replace(WriteState {
        dek,
        key_id: response.key_id,
        encrypted_dek_source: response.ciphertext,
        annotations: response.annotations,
        expires,
    });
    tracing::info!(
        name = %shared.name,
        new_key_id_hash = %key_id_hash(status_key_id),
        old_key_id_hash = %previous.map(|p| key_id_hash(&p.key_id)).unwrap_or_default(),
        "kms v2 provider rotated its DEK seed"
    );
    Ok(())
}

#[cfg(test)]
mod tests;
