//! A KMS v2 plugin for tests and single-machine use (`badge kms-plugin`): DEK sources are
//! sealed with AES-256-GCM under a key read from a local file, served over a unix socket
//! (mode 0600) with upstream's `v2.KeyManagementService` API.
//!
//! The key file holds one base64 32-byte key per line, newest first: the first key
//! encrypts, every key decrypts. A key's id is derived from it, so putting a new key on
//! top rotates: the next `Status` reports the new id and the server makes a new DEK seed.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use base64::Engine;
use parking_lot::RwLock;
use rand::RngCore;
use tokio::net::UnixListener;
use tonic::Status;

use super::proto;

const KEY_SIZE: usize = 32;
const NONCE_SIZE: usize = 12;

/// One key of the file, with the id it is reported under.
#[derive(Clone)]
struct PluginKey {
    id: String,
    key: [u8; KEY_SIZE],
}

/// The keys of a key file, re-read on every status call.
pub struct PluginKeys {
    path: PathBuf,
    keys: RwLock<Vec<PluginKey>>,
}

/// The id a key is reported under: a truncated SHA-256 of it, naming it without revealing it.
pub fn key_id(key: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key);
    digest.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// A fresh key as a key file line.
pub fn new_key_line() -> String {
    let mut key = [0u8; KEY_SIZE];
    rand::rng().fill_bytes(&mut key);
    base64::engine::general_purpose::STANDARD.encode(key)
}

fn parse_keys(path: &Path) -> Result<Vec<PluginKey>, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("reading the key file {}: {e}", path.display()))?;
    let mut keys = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let key: [u8; KEY_SIZE] = base64::engine::general_purpose::STANDARD
            .decode(line)
            .ok()
            .and_then(|k| k.try_into().ok())
            .ok_or_else(|| format!("{} line {}: not a base64 32-byte key", path.display(), n + 1))?;
        keys.push(PluginKey {
            id: key_id(&key),
            key,
        });
    }
    if keys.is_empty() {
        return Err(format!("{}: no key", path.display()));
    }
    Ok(keys)
}

impl PluginKeys {
    /// Reads `path`, first writing it (mode 0600) with a fresh key when it does not exist.
    pub fn load_or_create(path: &Path) -> Result<PluginKeys, String> {
        if !path.exists() {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| format!("creating the key file {}: {e}", path.display()))?;
            writeln!(file, "{}", new_key_line()).map_err(|e| format!("writing {}: {e}", path.display()))?;
        }
        let keys = parse_keys(path)?;
        Ok(PluginKeys {
            path: path.to_path_buf(),
            keys: RwLock::new(keys),
        })
    }

    fn current(&self) -> Result<PluginKey, Status> {
        self.keys
            .read()
            .first()
            .cloned()
            .ok_or_else(|| Status::failed_precondition("no key"))
    }

    fn status(&self) -> Result<proto::StatusResponse, Status> {
        match parse_keys(&self.path) {
            Ok(keys) => *self.keys.write() = keys,
            // Keep serving the keys last read; the file may be mid-edit.
            Err(e) => tracing::warn!(error = %e, "key file not reloaded"),
        }
        Ok(proto::StatusResponse {
            version: "v2".into(),
            healthz: "ok".into(),
            key_id: self.current()?.id,
        })
    }

    fn encrypt(&self, request: proto::EncryptRequest) -> Result<proto::EncryptResponse, Status> {
        let key = self.current()?;
        let mut nonce = [0u8; NONCE_SIZE];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = aes_gcm::Aes256Gcm::new((&key.key).into())
            .encrypt(
                (&nonce).into(),
                Payload {
                    msg: &request.plaintext,
                    aad: key.id.as_bytes(),
                },
            )
            .map_err(|_| Status::internal("encryption failed"))?;
        let mut ciphertext = nonce.to_vec();
        ciphertext.extend(sealed);
        Ok(proto::EncryptResponse {
            ciphertext,
            key_id: key.id,
            annotations: Default::default(),
        })
    }

    fn decrypt(&self, request: proto::DecryptRequest) -> Result<proto::DecryptResponse, Status> {
        let key = self
            .keys
            .read()
            .iter()
            .find(|k| k.id == request.key_id)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("no key with id {:?}", request.key_id)))?;
        if request.ciphertext.len() < NONCE_SIZE {
            return Err(Status::invalid_argument("ciphertext too short"));
        }
        let (nonce, sealed) = request.ciphertext.split_at(NONCE_SIZE);
        let plaintext = aes_gcm::Aes256Gcm::new((&key.key).into())
            .decrypt(
                nonce.into(),
                Payload {
                    msg: sealed,
                    aad: key.id.as_bytes(),
                },
            )
            .map_err(|_| Status::invalid_argument("message authentication failed"))?;
        Ok(proto::DecryptResponse { plaintext })
    }
}

/// Binds the socket at `path` (a stale one is replaced), usable by its owner only.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    badge_grpc::bind(path, "kms-plugin")
}

async fn handle(keys: Arc<PluginKeys>, request: badge_grpc::HttpRequest) -> badge_grpc::HttpResponse {
    match request.uri().path() {
        proto::STATUS_PATH => {
            badge_grpc::unary(
                request,
                move |_: proto::StatusRequest| async move { keys.status() },
            )
            .await
        }
        proto::ENCRYPT_PATH => {
            badge_grpc::unary(
                request,
                move |r: proto::EncryptRequest| async move { keys.encrypt(r) },
            )
            .await
        }
        proto::DECRYPT_PATH => {
            badge_grpc::unary(
                request,
                move |r: proto::DecryptRequest| async move { keys.decrypt(r) },
            )
            .await
        }
        other => badge_grpc::unimplemented(other),
    }
}

/// Serves the plugin API on `listener` until `shutdown` completes.
pub async fn serve(
    listener: UnixListener,
    keys: Arc<PluginKeys>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    badge_grpc::serve(
        listener,
        move |request| handle(keys.clone(), request),
        shutdown,
        "kms plugin",
    )
    .await
}

/// The socket path of a `unix://` endpoint, as upstream's `util.ParseEndpoint`.
pub fn socket_path(endpoint: &str) -> Result<PathBuf, String> {
    match endpoint.strip_prefix("unix://") {
        Some(path) if !path.is_empty() => Ok(PathBuf::from(path)),
        _ => Err(format!(
            "invalid endpoint {endpoint:?} for kms provider: only unix:///path is supported"
        )),
    }
}
