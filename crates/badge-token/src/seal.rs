//! Sealing secrets at rest: AES-256-GCM with a random 96-bit nonce per seal, the storage
//! key as associated data (a sealed value moved to another key does not open). Used for
//! the ServiceAccount key ring, which every server of a deployment reads from the store.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

/// What every sealed value starts with; anything else is read as not sealed.
pub const SEALED_PREFIX: &[u8] = b"badge-sealed:v1:";

/// A sealing key.
pub struct Sealer {
    key: LessSafeKey,
}

/// A sealed value that does not open: another key, or altered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the sealed value cannot be opened with this key (another deployment's key, or altered)")]
pub struct OpenError;

impl Sealer {
    /// A sealer with the 256-bit AES-GCM key `key`.
    pub fn new(key: &[u8; 32]) -> Sealer {
        let key = match UnboundKey::new(&AES_256_GCM, key) {
            Ok(key) => key,
            // AES_256_GCM takes exactly 32 bytes, which the type guarantees.
            Err(_) => unreachable!("a 32-byte key is always valid for AES-256-GCM"),
        };
        Sealer {
            key: LessSafeKey::new(key),
        }
    }

    /// `SEALED_PREFIX || nonce || ciphertext || tag`.
    pub fn seal(&self, plaintext: &[u8], context: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::fill(&mut nonce);
        let mut sealed = Vec::with_capacity(SEALED_PREFIX.len() + NONCE_LEN + plaintext.len() + 16);
        sealed.extend_from_slice(SEALED_PREFIX);
        sealed.extend_from_slice(&nonce);
        let mut body = plaintext.to_vec();
        if self
            .key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(context), &mut body)
            .is_err()
        {
            unreachable!("AES-GCM sealing fails only past 64 GiB of input");
        }
        sealed.extend_from_slice(&body);
        sealed
    }

    /// The plaintext of a sealed value.
    pub fn open(&self, sealed: &[u8], context: &[u8]) -> Result<Vec<u8>, OpenError> {
        let rest = sealed.strip_prefix(SEALED_PREFIX).ok_or(OpenError)?;
        if rest.len() < NONCE_LEN {
            return Err(OpenError);
        }
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| OpenError)?;
        let mut body = body.to_vec();
        let plaintext = self
            .key
            .open_in_place(nonce, Aad::from(context), &mut body)
            .map_err(|_| OpenError)?;
        Ok(plaintext.to_vec())
    }

    /// Whether `value` is sealed (rather than stored in the clear by an older version).
    pub fn is_sealed(value: &[u8]) -> bool {
        value.starts_with(SEALED_PREFIX)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens() {
        let sealer = Sealer::new(&[7; 32]);
        let sealed = sealer.seal(b"private keys", b"/badge/k");
        assert!(Sealer::is_sealed(&sealed));
        assert!(
            !sealed.windows(12).any(|w| w == b"private keys"),
            "the plaintext is not visible"
        );
        assert_eq!(sealer.open(&sealed, b"/badge/k").unwrap(), b"private keys");
        assert_ne!(
            sealer.seal(b"private keys", b"/badge/k"),
            sealed,
            "a fresh nonce each time"
        );
    }

    #[test]
    fn refuses_other_keys_contexts_and_alterations() {
        let sealer = Sealer::new(&[7; 32]);
        let sealed = sealer.seal(b"secret", b"/badge/k");
        assert_eq!(Sealer::new(&[8; 32]).open(&sealed, b"/badge/k"), Err(OpenError));
        assert_eq!(sealer.open(&sealed, b"/badge/other"), Err(OpenError));
        let mut altered = sealed.clone();
        let last = altered.len() - 1;
        altered[last] ^= 1;
        assert_eq!(sealer.open(&altered, b"/badge/k"), Err(OpenError));
        assert_eq!(sealer.open(b"{\"plain\":1}", b"/badge/k"), Err(OpenError));
        assert_eq!(
            sealer.open(&sealed[..SEALED_PREFIX.len() + 3], b"/badge/k"),
            Err(OpenError)
        );
    }
}
