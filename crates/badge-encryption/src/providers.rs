//! The providers, as upstream's `storage/value/encrypt/{aes,secretbox,identity}`: each key
//! of a provider is one prefix transformer (`k8s:enc:<provider>:v1:<key name>:`), and a value
//! is read by the first transformer whose prefix it carries and that can read it.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use cbc::cipher::block_padding::{NoPadding, Pkcs7};
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use rand::RngCore;

/// What every encrypted value starts with; the identity provider refuses such values.
pub const ENCRYPTED_PREFIX: &[u8] = b"k8s:enc:";

const AES_BLOCK: usize = 16;
const GCM_NONCE: usize = 12;
const SECRETBOX_NONCE: usize = 24;

/// One way of storing values.
pub enum Cipher {
    /// AES-CBC with PKCS#7 padding and a random IV (no authentication, as upstream).
    AesCbc(Vec<u8>),
    /// AES-GCM with a random 12-byte nonce, the store key as additional data.
    AesGcm(Vec<u8>),
    /// XSalsa20-Poly1305 with a random 24-byte nonce.
    Secretbox([u8; 32]),
    /// Values as they are.
    Identity,
    /// Envelope encryption through a KMS v2 plugin.
    KmsV2(Box<crate::kms::KmsV2>),
}

/// A cipher with the prefix it writes and reads.
pub struct PrefixTransformer {
    /// The provider's name in the prefix (`aesgcm`, `aescbc`, `secretbox`, `identity`, `kms`).
    pub provider: &'static str,
    /// The key's name (or, for KMS, the plugin's) in the prefix.
    pub key_name: String,
    /// `k8s:enc:<provider>:<version>:<name>:`, empty for identity.
    pub prefix: Vec<u8>,
    /// How values under the prefix are encrypted.
    pub cipher: Cipher,
}

impl PrefixTransformer {
    /// The transformer of `cipher`, writing under the prefix of `provider` and `key_name`.
    pub fn new(provider: &'static str, key_name: &str, cipher: Cipher) -> PrefixTransformer {
        let prefix = match cipher {
            Cipher::Identity => Vec::new(),
            Cipher::KmsV2(_) => format!("k8s:enc:kms:v2:{key_name}:").into_bytes(),
            _ => format!("k8s:enc:{provider}:v1:{key_name}:").into_bytes(),
        };
        PrefixTransformer {
            provider,
            key_name: key_name.to_string(),
            prefix,
            cipher,
        }
    }

    /// The stored form of `value`: prefix, then the cipher's output.
    pub fn seal(&self, value: &[u8], additional_data: &[u8]) -> Result<Vec<u8>, String> {
        let mut out = self.prefix.clone();
        match &self.cipher {
            Cipher::Identity => out.extend_from_slice(value),
            Cipher::KmsV2(kms) => out.extend(kms.seal(value, additional_data)?),
            Cipher::AesCbc(key) => {
                let mut iv = [0u8; AES_BLOCK];
                rand::rng().fill_bytes(&mut iv);
                out.extend_from_slice(&iv);
                out.extend(cbc_encrypt(key, &iv, value)?);
            }
            Cipher::AesGcm(key) => {
                let mut nonce = [0u8; GCM_NONCE];
                rand::rng().fill_bytes(&mut nonce);
                out.extend_from_slice(&nonce);
                out.extend(gcm_seal(key, &nonce, value, additional_data)?);
            }
            Cipher::Secretbox(key) => {
                let mut nonce = [0u8; SECRETBOX_NONCE];
                rand::rng().fill_bytes(&mut nonce);
                let boxed = crypto_secretbox::XSalsa20Poly1305::new(key.into())
                    .encrypt((&nonce).into(), value)
                    .map_err(|_| "secretbox encryption failed".to_string())?;
                out.extend_from_slice(&nonce);
                out.extend(boxed);
            }
        }
        Ok(out)
    }

    /// The value in `data` (its prefix already removed).
    pub fn open(&self, data: &[u8], additional_data: &[u8]) -> Result<Vec<u8>, String> {
        match &self.cipher {
            Cipher::KmsV2(kms) => kms.open(data, additional_data),
            Cipher::Identity => {
                if data.starts_with(ENCRYPTED_PREFIX) {
                    return Err("identity transformer tried to read encrypted data".into());
                }
                Ok(data.to_vec())
            }
            Cipher::AesCbc(key) => {
                if data.len() < AES_BLOCK {
                    return Err(SHORT.into());
                }
                let (iv, body) = data.split_at(AES_BLOCK);
                if body.len() % AES_BLOCK != 0 {
                    return Err("the stored data is not a multiple of the block size".into());
                }
                let padded = cbc_decrypt(key, iv, body)?;
                unpad_pkcs7(padded)
            }
            Cipher::AesGcm(key) => {
                if data.len() < GCM_NONCE {
                    return Err(SHORT.into());
                }
                let (nonce, body) = data.split_at(GCM_NONCE);
                gcm_open(key, nonce, body, additional_data)
            }
            Cipher::Secretbox(key) => {
                if data.len() < SECRETBOX_NONCE {
                    return Err(SHORT.into());
                }
                let (nonce, body) = data.split_at(SECRETBOX_NONCE);
                crypto_secretbox::XSalsa20Poly1305::new(key.into())
                    .decrypt(nonce.into(), body)
                    .map_err(|_| "message authentication failed".to_string())
            }
        }
    }
}

const SHORT: &str = "the stored data was shorter than the required size";

fn cbc_encrypt(key: &[u8], iv: &[u8], value: &[u8]) -> Result<Vec<u8>, String> {
    let invalid = |_| "invalid AES key length".to_string();
    Ok(match key.len() {
        16 => cbc::Encryptor::<aes::Aes128>::new_from_slices(key, iv)
            .map_err(invalid)?
            .encrypt_padded_vec_mut::<Pkcs7>(value),
        24 => cbc::Encryptor::<aes::Aes192>::new_from_slices(key, iv)
            .map_err(invalid)?
            .encrypt_padded_vec_mut::<Pkcs7>(value),
        _ => cbc::Encryptor::<aes::Aes256>::new_from_slices(key, iv)
            .map_err(invalid)?
            .encrypt_padded_vec_mut::<Pkcs7>(value),
    })
}

/// Decrypts whole blocks; the padding is checked by [`unpad_pkcs7`] with upstream's errors.
fn cbc_decrypt(key: &[u8], iv: &[u8], body: &[u8]) -> Result<Vec<u8>, String> {
    let invalid = |_| "invalid AES key length".to_string();
    let unpadded = |_| "the stored data is not a multiple of the block size".to_string();
    match key.len() {
        16 => cbc::Decryptor::<aes::Aes128>::new_from_slices(key, iv)
            .map_err(invalid)?
            .decrypt_padded_vec_mut::<NoPadding>(body)
            .map_err(unpadded),
        24 => cbc::Decryptor::<aes::Aes192>::new_from_slices(key, iv)
            .map_err(invalid)?
            .decrypt_padded_vec_mut::<NoPadding>(body)
            .map_err(unpadded),
        _ => cbc::Decryptor::<aes::Aes256>::new_from_slices(key, iv)
            .map_err(invalid)?
            .decrypt_padded_vec_mut::<NoPadding>(body)
            .map_err(unpadded),
    }
}

fn unpad_pkcs7(mut padded: Vec<u8>) -> Result<Vec<u8>, String> {
    let Some(&last) = padded.last() else {
        return Err("invalid PKCS7 data (empty or not padded)".into());
    };
    let count = usize::from(last);
    if count == 0 || count > AES_BLOCK || count > padded.len() {
        return Err("invalid padding on input".into());
    }
    if padded[padded.len() - count..].iter().any(|&b| b != last) {
        return Err("invalid padding on input".into());
    }
    padded.truncate(padded.len() - count);
    Ok(padded)
}

type Aes192Gcm = aes_gcm::AesGcm<aes::Aes192, aes_gcm::aead::consts::U12>;

fn gcm_seal(key: &[u8], nonce: &[u8], value: &[u8], aad: &[u8]) -> Result<Vec<u8>, String> {
    let payload = Payload { msg: value, aad };
    let invalid = |_| "invalid AES key length".to_string();
    let failed = |_| "AES-GCM encryption failed".to_string();
    match key.len() {
        16 => aes_gcm::Aes128Gcm::new_from_slice(key)
            .map_err(invalid)?
            .encrypt(nonce.into(), payload)
            .map_err(failed),
        24 => Aes192Gcm::new_from_slice(key)
            .map_err(invalid)?
            .encrypt(nonce.into(), payload)
            .map_err(failed),
        _ => aes_gcm::Aes256Gcm::new_from_slice(key)
            .map_err(invalid)?
            .encrypt(nonce.into(), payload)
            .map_err(failed),
    }
}

fn gcm_open(key: &[u8], nonce: &[u8], body: &[u8], aad: &[u8]) -> Result<Vec<u8>, String> {
    let payload = Payload { msg: body, aad };
    let invalid = |_| "invalid AES key length".to_string();
    // Go's crypto/cipher words it so.
    let failed = |_| "cipher: message authentication failed".to_string();
    match key.len() {
        16 => aes_gcm::Aes128Gcm::new_from_slice(key)
            .map_err(invalid)?
            .decrypt(nonce.into(), payload)
            .map_err(failed),
        24 => Aes192Gcm::new_from_slice(key)
            .map_err(invalid)?
            .decrypt(nonce.into(), payload)
            .map_err(failed),
        _ => aes_gcm::Aes256Gcm::new_from_slice(key)
            .map_err(invalid)?
            .decrypt(nonce.into(), payload)
            .map_err(failed),
    }
}
