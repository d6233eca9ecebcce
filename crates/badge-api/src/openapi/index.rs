//! The cached documents and the `/openapi/v3` index listing them with their hashes.

use std::sync::OnceLock;

use serde_json::{Map, Value, json};

use crate::resources::{GROUPS, versions_of};

use super::*;

pub(super) struct Document {
    path: String,
    bytes: Vec<u8>,
    hash: String,
}

pub(super) struct Cache {
    pub(super) documents: Vec<Document>,
    index: Vec<u8>,
}

static CACHE: OnceLock<Cache> = OnceLock::new();

pub(super) fn cache() -> &'static Cache {
    CACHE.get_or_init(|| {
        let mut documents = Vec::new();
        for group in GROUPS {
            for version in versions_of(group) {
                let Some(document) = group_version_document(group, version) else {
                    continue;
                };
                let bytes = serde_json::to_vec(&document).unwrap_or_default();
                let hash = hash_hex(&bytes);
                documents.push(Document {
                    path: gv_path(group, version),
                    bytes,
                    hash,
                });
            }
        }
        let index = serde_json::to_vec(&index_of(&documents)).unwrap_or_default();
        Cache { documents, index }
    })
}

fn index_of(documents: &[Document]) -> Value {
    let paths: Map<String, Value> = documents
        .iter()
        .map(|d| {
            let url = format!("/openapi/v3/{}?hash={}", d.path, d.hash);
            (d.path.clone(), json!({"serverRelativeURL": url}))
        })
        .collect();
    json!({"paths": paths})
}

/// FNV-1a (64-bit) in uppercase hex, like upstream's hash format. Any stable hash will do:
/// it only lets clients cache a document by URL.
pub(super) fn hash_hex(bytes: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016X}")
}

/// The `/openapi/v3` index: every served group-version with the URL of its document.
pub fn index() -> Value {
    index_of(&cache().documents)
}

/// The serialized `/openapi/v3` index.
pub fn index_bytes() -> &'static [u8] {
    &cache().index
}

/// The serialized document of a group-version path (`api/v1`,
/// `apis/rbac.authorization.k8s.io/v1`; a leading `/` is ignored).
pub fn document_bytes(gv_path: &str) -> Option<&'static [u8]> {
    find(gv_path).map(|d| d.bytes.as_slice())
}

/// The hash of a group-version's document (its `?hash=` in the index), for `ETag`.
pub fn document_hash(gv_path: &str) -> Option<&'static str> {
    find(gv_path).map(|d| d.hash.as_str())
}

fn find(gv_path: &str) -> Option<&'static Document> {
    let gv_path = gv_path.trim_start_matches('/');
    cache().documents.iter().find(|d| d.path == gv_path)
}
