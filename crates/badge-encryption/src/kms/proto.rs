//! The messages of upstream's KMS v2 plugin API (`k8s.io/kms/apis/v2`, package `v2`) and the
//! `EncryptedObject` stored after the `k8s:enc:kms:v2:<name>:` prefix
//! (`envelope/kmsv2/v2/api.proto`), declared by hand with their wire tags so no protobuf
//! compiler is needed to build.

use std::collections::BTreeMap;

/// gRPC method path of `KeyManagementService.Status` (package `v2`).
pub const STATUS_PATH: &str = "/v2.KeyManagementService/Status";
/// gRPC method path of `KeyManagementService.Encrypt`.
pub const ENCRYPT_PATH: &str = "/v2.KeyManagementService/Encrypt";
/// gRPC method path of `KeyManagementService.Decrypt`.
pub const DECRYPT_PATH: &str = "/v2.KeyManagementService/Decrypt";

#[derive(Clone, PartialEq, prost::Message)]
/// `StatusRequest`: no fields.
pub struct StatusRequest {}

#[derive(Clone, PartialEq, prost::Message)]
/// `StatusResponse`: the plugin's health and current key.
pub struct StatusResponse {
    #[prost(string, tag = "1")]
    /// The KMS API version the plugin speaks: `v2` (or `v2beta1`).
    pub version: String,
    #[prost(string, tag = "2")]
    /// `ok` when healthy; anything else is the reason it is not.
    pub healthz: String,
    #[prost(string, tag = "3")]
    /// The key the plugin encrypts with now.
    pub key_id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
/// `DecryptRequest`: a DEK source to decrypt.
pub struct DecryptRequest {
    #[prost(bytes = "vec", tag = "1")]
    /// The encrypted DEK source.
    pub ciphertext: Vec<u8>,
    #[prost(string, tag = "2")]
    /// A unique id of this request, for the plugin's logs.
    pub uid: String,
    #[prost(string, tag = "3")]
    /// The key it was encrypted with.
    pub key_id: String,
    #[prost(btree_map = "string, bytes", tag = "4")]
    /// The annotations the plugin returned when it encrypted.
    pub annotations: BTreeMap<String, Vec<u8>>,
}

#[derive(Clone, PartialEq, prost::Message)]
/// `DecryptResponse`: the decrypted DEK source.
pub struct DecryptResponse {
    #[prost(bytes = "vec", tag = "1")]
    /// The DEK source in the clear.
    pub plaintext: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
/// `EncryptRequest`: a DEK source to encrypt.
pub struct EncryptRequest {
    #[prost(bytes = "vec", tag = "1")]
    /// The DEK source in the clear.
    pub plaintext: Vec<u8>,
    #[prost(string, tag = "2")]
    /// A unique id of this request, for the plugin's logs.
    pub uid: String,
}

#[derive(Clone, PartialEq, prost::Message)]
/// `EncryptResponse`: the encrypted DEK source.
pub struct EncryptResponse {
    #[prost(bytes = "vec", tag = "1")]
    /// The encrypted DEK source.
    pub ciphertext: Vec<u8>,
    #[prost(string, tag = "2")]
    /// The key it was encrypted with.
    pub key_id: String,
    #[prost(btree_map = "string, bytes", tag = "3")]
    /// Plugin data to store beside it, handed back on decrypt.
    pub annotations: BTreeMap<String, Vec<u8>>,
}

/// `EncryptedDEKSourceType`: the DEK source is the AES-GCM key itself.
pub const AES_GCM_KEY: i32 = 0;
/// `EncryptedDEKSourceType`: the DEK source is a seed that HKDF-SHA256 expands, with the
/// first 32 bytes of the encrypted data as info, into a per-write AES-GCM key.
pub const HKDF_SHA256_XNONCE_AES_GCM_SEED: i32 = 1;

/// What follows the prefix of a value the KMS v2 provider wrote.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EncryptedObject {
    #[prost(bytes = "vec", tag = "1")]
    /// The value, encrypted with the DEK.
    pub encrypted_data: Vec<u8>,
    #[prost(string, tag = "2")]
    /// The plugin's key the DEK source was encrypted with.
    pub key_id: String,
    #[prost(bytes = "vec", tag = "3")]
    /// The DEK source, encrypted by the plugin.
    pub encrypted_dek_source: Vec<u8>,
    #[prost(btree_map = "string, bytes", tag = "4")]
    /// The plugin's annotations from `Encrypt`.
    pub annotations: BTreeMap<String, Vec<u8>>,
    #[prost(int32, tag = "5")]
    /// How the DEK is made from its source: [`AES_GCM_KEY`] or [`HKDF_SHA256_XNONCE_AES_GCM_SEED`].
    pub encrypted_dek_source_type: i32,
}

const KEY_ID_MAX_SIZE: usize = 1024;
const ENCRYPTED_DEK_SOURCE_MAX_SIZE: usize = 1024;
const ANNOTATIONS_MAX_SIZE: usize = 32 * 1024;

/// Upstream's `ValidateKeyID`.
pub fn validate_key_id(key_id: &str) -> Result<(), String> {
    if key_id.is_empty() {
        return Err("keyID is empty".into());
    }
    if key_id.len() > KEY_ID_MAX_SIZE {
        return Err(format!(
            "keyID is {} bytes, which exceeds the max size of {KEY_ID_MAX_SIZE}",
            key_id.len()
        ));
    }
    Ok(())
}

impl EncryptedObject {
    /// Upstream's `ValidateEncryptedObject`, in its words.
    pub fn validate(&self) -> Result<(), String> {
        if ![AES_GCM_KEY, HKDF_SHA256_XNONCE_AES_GCM_SEED].contains(&self.encrypted_dek_source_type) {
            return Err(format!(
                "unknown encryptedDEKSourceType: {}",
                self.encrypted_dek_source_type
            ));
        }
        if self.encrypted_data.is_empty() {
            return Err("encrypted data is empty".into());
        }
        if self.encrypted_dek_source.is_empty() {
            return Err("failed to validate encrypted DEK source: encrypted DEK source is empty".into());
        }
        if self.encrypted_dek_source.len() > ENCRYPTED_DEK_SOURCE_MAX_SIZE {
            return Err(format!(
                "failed to validate encrypted DEK source: encrypted DEK source is {} bytes, which exceeds the max size of {ENCRYPTED_DEK_SOURCE_MAX_SIZE}",
                self.encrypted_dek_source.len()
            ));
        }
        validate_key_id(&self.key_id).map_err(|e| format!("failed to validate key id: {e}"))?;
        let size: usize = self.annotations.iter().map(|(k, v)| k.len() + v.len()).sum();
        if size > ANNOTATIONS_MAX_SIZE {
            return Err(format!(
                "failed to validate annotations: total size of annotations is {size}, which exceeds the max size of {ANNOTATIONS_MAX_SIZE}"
            ));
        }
        Ok(())
    }

    /// The key of the DEK cache, as upstream's `generateCacheKey`: every field that names
    /// the DEK, length-prefixed so distinct fields never run together.
    pub fn cache_key(&self) -> Vec<u8> {
        let mut key = Vec::new();
        key.extend_from_slice(&(self.encrypted_dek_source_type as u32).to_be_bytes());
        push_prefixed(&mut key, &self.encrypted_dek_source);
        push_prefixed(&mut key, self.key_id.as_bytes());
        if !self.annotations.is_empty() {
            key.extend_from_slice(&(self.annotations.len() as u32).to_be_bytes());
            for (k, v) in &self.annotations {
                push_prefixed(&mut key, k.as_bytes());
                push_prefixed(&mut key, v);
            }
        }
        key
    }
}

fn push_prefixed(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn encrypted_object_wire_format_matches_upstream_tags() {
        let object = EncryptedObject {
            encrypted_data: vec![0xaa],
            key_id: "k".into(),
            encrypted_dek_source: vec![0xbb, 0xcc],
            annotations: BTreeMap::from([("a.io".to_string(), vec![1])]),
            encrypted_dek_source_type: HKDF_SHA256_XNONCE_AES_GCM_SEED,
        };
        let bytes = object.encode_to_vec();
        // Field 1 bytes, 2 string, 3 bytes, 4 map entry (key 1, value 2), 5 varint.
        assert_eq!(
            bytes,
            [
                0x0a, 1, 0xaa, 0x12, 1, b'k', 0x1a, 2, 0xbb, 0xcc, 0x22, 9, 0x0a, 4, b'a', b'.', b'i', b'o',
                0x12, 1, 1, 0x28, 1
            ]
        );
        assert_eq!(EncryptedObject::decode(bytes.as_slice()).unwrap(), object);
    }

    #[test]
    fn plugin_messages_use_upstream_tags() {
        let status = StatusResponse {
            version: "v2".into(),
            healthz: "ok".into(),
            key_id: "1".into(),
        };
        assert_eq!(
            status.encode_to_vec(),
            [0x0a, 2, b'v', b'2', 0x12, 2, b'o', b'k', 0x1a, 1, b'1']
        );
        let decrypt = DecryptRequest {
            ciphertext: vec![7],
            uid: "u".into(),
            key_id: "k".into(),
            annotations: BTreeMap::new(),
        };
        assert_eq!(
            decrypt.encode_to_vec(),
            [0x0a, 1, 7, 0x12, 1, b'u', 0x1a, 1, b'k']
        );
        let encrypt = EncryptResponse {
            ciphertext: vec![9],
            key_id: "k".into(),
            annotations: BTreeMap::new(),
        };
        assert_eq!(encrypt.encode_to_vec(), [0x0a, 1, 9, 0x12, 1, b'k']);
    }

    #[test]
    fn validation_and_cache_keys() {
        let mut object = EncryptedObject {
            encrypted_data: vec![1],
            key_id: "k".into(),
            encrypted_dek_source: vec![2],
            annotations: BTreeMap::new(),
            encrypted_dek_source_type: HKDF_SHA256_XNONCE_AES_GCM_SEED,
        };
        object.validate().unwrap();
        let key = object.cache_key();
        object.key_id = String::new();
        assert_eq!(
            object.validate().unwrap_err(),
            "failed to validate key id: keyID is empty"
        );
        object.key_id = "k".into();
        object.encrypted_dek_source_type = 7;
        assert_eq!(
            object.validate().unwrap_err(),
            "unknown encryptedDEKSourceType: 7"
        );
        object.encrypted_dek_source_type = HKDF_SHA256_XNONCE_AES_GCM_SEED;
        // Moving a byte between fields changes the key.
        let shifted = EncryptedObject {
            encrypted_dek_source: vec![2, b'k'],
            key_id: String::new(),
            ..object.clone()
        };
        assert_ne!(shifted.cache_key(), key);
        assert_eq!(object.cache_key(), key);
    }
}
