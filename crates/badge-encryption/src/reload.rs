//! `--encryption-provider-config-automatic-reload`, as upstream's
//! `DynamicEncryptionConfigContent`: the file is re-read on an interval; a configuration
//! whose content changed, that is valid and whose KMS plugins answer replaces the
//! transformers without a restart; any other is logged and the current one kept.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use badge_store::transform::{TransformError, Transformer};
use bytes::Bytes;
use parking_lot::{Mutex, RwLock};

use crate::kms::KmsTimings;
use crate::{ConfigError, Encryption, EncryptionConfiguration};

/// The transformer of whichever configuration was loaded last.
pub struct ReloadingEncryption {
    path: PathBuf,
    timings: KmsTimings,
    current: RwLock<Arc<Encryption>>,
    /// Digest of the content loaded, and of the last content that failed (logged once).
    loaded: Mutex<(Vec<u8>, Option<Vec<u8>>)>,
}

fn digest(content: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, content)
        .as_ref()
        .to_vec()
}

fn read(path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| {
        ConfigError(format!(
            "error reading encryption provider configuration file {:?}: {e}",
            path.display().to_string()
        ))
    })
}

impl ReloadingEncryption {
    /// Loads `path` a first time; errors here fail the start, as without reloading.
    pub fn load(path: &Path, timings: KmsTimings) -> Result<ReloadingEncryption, ConfigError> {
        let content = read(path)?;
        let encryption = Encryption::with_timings(&EncryptionConfiguration::load(path)?, timings)?;
        Ok(ReloadingEncryption {
            path: path.to_path_buf(),
            timings,
            current: RwLock::new(Arc::new(encryption)),
            loaded: Mutex::new((digest(&content), None)),
        })
    }

    /// The transformer in use.
    pub fn current(&self) -> Arc<Encryption> {
        self.current.read().clone()
    }

    /// Re-reads the file: `Ok(true)` when a new configuration took over, `Ok(false)` when
    /// the content is unchanged (or is the one that failed last time).
    pub fn reload(&self) -> Result<bool, ConfigError> {
        let content = read(&self.path)?;
        let hash = digest(&content);
        {
            let loaded = self.loaded.lock();
            if loaded.0 == hash || loaded.1.as_ref() == Some(&hash) {
                return Ok(false);
            }
        }
        let built = EncryptionConfiguration::load(&self.path)
            .and_then(|config| Encryption::with_timings(&config, self.timings))
            .and_then(
                |encryption| match encryption.unhealthy_kms_providers().as_slice() {
                    [] => Ok(encryption),
                    names => Err(ConfigError(format!(
                        "the KMS plugins of providers {names:?} are not healthy"
                    ))),
                },
            );
        match built {
            Ok(encryption) => {
                *self.current.write() = Arc::new(encryption);
                *self.loaded.lock() = (hash, None);
                Ok(true)
            }
            Err(e) => {
                self.loaded.lock().1 = Some(hash);
                Err(e)
            }
        }
    }

    /// Reloads every `interval` for as long as the returned task runs.
    pub async fn watch(self: Arc<Self>, interval: Duration) {
        loop {
            tokio::time::sleep(interval).await;
            let this = self.clone();
            // Building a configuration waits on its KMS plugins' first answers.
            match tokio::task::spawn_blocking(move || this.reload()).await {
                Ok(Ok(true)) => tracing::info!(
                    file = %self.path.display(),
                    "loaded a new encryption provider configuration (automatic reload succeeded)"
                ),
                Ok(Ok(false)) => {}
                Ok(Err(e)) => tracing::error!(
                    file = %self.path.display(),
                    error = %e,
                    "automatic reload of the encryption provider configuration failed; keeping the one in use"
                ),
                Err(e) => tracing::error!(error = %e, "encryption configuration reload panicked"),
            }
        }
    }
}

impl Transformer for ReloadingEncryption {
    fn transform_to_storage(&self, key: &str, value: &[u8]) -> Result<Bytes, TransformError> {
        self.current().transform_to_storage(key, value)
    }

    fn transform_from_storage(&self, key: &str, stored: &[u8]) -> Result<Bytes, TransformError> {
        self.current().transform_from_storage(key, stored)
    }

    fn transforms(&self, key: &str) -> bool {
        self.current().transforms(key)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use base64::Engine;

    fn config(key_name: &str) -> String {
        let secret = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - aescbc:\n          keys:\n            - name: {key_name}\n              secret: {secret}\n"
        )
    }

    const KEY: &str = "/registry/secrets/default/s";

    #[test]
    fn a_valid_change_takes_over_and_an_invalid_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, config("one")).unwrap();
        let reloading = ReloadingEncryption::load(&path, KmsTimings::default()).unwrap();
        let first = reloading.transform_to_storage(KEY, b"v").unwrap();
        assert!(first.starts_with(b"k8s:enc:aescbc:v1:one:"));
        assert!(!reloading.reload().unwrap(), "unchanged content");

        std::fs::write(&path, config("two")).unwrap();
        assert!(reloading.reload().unwrap());
        let second = reloading.transform_to_storage(KEY, b"v").unwrap();
        assert!(second.starts_with(b"k8s:enc:aescbc:v1:two:"));

        std::fs::write(&path, "kind: nonsense\n").unwrap();
        assert!(reloading.reload().is_err());
        assert!(!reloading.reload().unwrap(), "a failed content is reported once");
        let third = reloading.transform_to_storage(KEY, b"v").unwrap();
        assert!(
            third.starts_with(b"k8s:enc:aescbc:v1:two:"),
            "the last good one stays"
        );
    }
}
