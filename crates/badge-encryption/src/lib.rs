//! Encryption at rest, as kube-apiserver's `--encryption-provider-config`: an
//! `apiserver.config.k8s.io/v1` `EncryptionConfiguration` names, per resource, providers
//! whose first one writes and all of which read (`pkg/server/options/encryptionconfig`).
//! [`Encryption`] is the store's [`Transformer`]: values of the resources it covers are
//! encrypted on their way into the store and decrypted on their way out.

#![warn(missing_docs)]

mod clock;
pub mod config;
pub mod kms;
pub mod operate;
#[cfg(test)]
mod proptests;
pub mod providers;
pub mod reload;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use badge_store::transform::{TransformError, Transformer};
use bytes::Bytes;

pub use config::{ConfigError, EncryptionConfiguration};
use providers::{ENCRYPTED_PREFIX, PrefixTransformer};

/// The file a first start writes when no configuration is given, in the pki dir.
pub const DEFAULT_CONFIG_FILE: &str = "encryption-config.yaml";

/// The providers of one group of resources, in configuration order.
pub struct ResourceTransformers {
    transformers: Vec<Arc<PrefixTransformer>>,
}

impl ResourceTransformers {
    fn seal(&self, key: &str, value: &[u8]) -> Result<Bytes, TransformError> {
        // Validation guarantees at least one provider per rule.
        let Some(writer) = self.transformers.first() else {
            return Ok(Bytes::copy_from_slice(value));
        };
        writer
            .seal(value, key.as_bytes())
            .map(Bytes::from)
            .map_err(|e| TransformError(format!("{} key {:?}: {e}", writer.provider, writer.key_name)))
    }

    /// As upstream's prefix transformers: every transformer whose prefix the value carries
    /// is tried in order; the identity one (empty prefix) is skipped when it refuses.
    fn open(&self, key: &str, stored: &[u8]) -> Result<Bytes, TransformError> {
        let mut errors = Vec::new();
        for t in &self.transformers {
            let Some(body) = stored.strip_prefix(t.prefix.as_slice()) else {
                continue;
            };
            match t.open(body, key.as_bytes()) {
                Ok(value) => return Ok(value.into()),
                Err(_) if t.prefix.is_empty() => continue,
                Err(e) => errors.push(format!("{} key {:?}: {e}", t.provider, t.key_name)),
            }
        }
        Err(TransformError(match errors.len() {
            0 => no_matching_prefix(stored),
            1 => errors.remove(0),
            _ => format!("[{}]", errors.join(", ")),
        }))
    }
}

/// Upstream's "no matching prefix found", naming the provider and key name the value
/// was written with when it carries them.
fn no_matching_prefix(stored: &[u8]) -> String {
    let Some(rest) = stored.strip_prefix(ENCRYPTED_PREFIX) else {
        return "no matching prefix found".into();
    };
    let mut parts = rest.splitn(4, |&b| b == b':');
    let (Some(provider), Some(_version), Some(name), Some(_)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return "no matching prefix found".into();
    };
    format!(
        "no matching prefix found: the value was written by the {} provider with key {:?}, \
         which the encryption configuration does not list",
        String::from_utf8_lossy(provider),
        String::from_utf8_lossy(name)
    )
}

/// The transformer of a whole configuration: store keys map to resources through the
/// resource table's key layout, resources to their rule.
pub struct Encryption {
    /// Key prefix of each stored resource, with the rule covering it (None: stored as is).
    by_prefix: Vec<(String, Option<Arc<ResourceTransformers>>)>,
}

impl Encryption {
    /// Builds the transformer of a validated configuration.
    pub fn new(config: &EncryptionConfiguration) -> Result<Encryption, ConfigError> {
        Encryption::with_timings(config, kms::KmsTimings::default())
    }

    /// As [`Encryption::new`], KMS plugins probed on `timings`.
    pub fn with_timings(
        config: &EncryptionConfiguration,
        timings: kms::KmsTimings,
    ) -> Result<Encryption, ConfigError> {
        let rules = config.rules(timings)?;
        let by_prefix = badge_api::resources::RESOURCES
            .iter()
            .filter(|r| r.storage == badge_api::resources::Storage::Stored)
            .map(|r| {
                let rule = rules
                    .iter()
                    .find(|(gr, _)| gr.0 == r.group && gr.1 == r.plural)
                    .or_else(|| rules.iter().find(|(gr, _)| gr.0 == r.group && gr.1 == "*"))
                    .or_else(|| rules.iter().find(|(gr, _)| gr.0 == "*" && gr.1 == "*"))
                    .map(|(_, t)| t.clone());
                (r.key_prefix(), rule)
            })
            .collect();
        Ok(Encryption { by_prefix })
    }

    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Encryption, ConfigError> {
        Encryption::new(&EncryptionConfiguration::load(path)?)
    }

    /// The configuration in `<pki_dir>/encryption-config.yaml`, written first (mode 0600)
    /// with a fresh secretbox key for Secrets, then identity, when absent.
    pub fn load_or_create_default(pki_dir: &Path) -> Result<(PathBuf, Encryption), ConfigError> {
        let path = pki_dir.join(DEFAULT_CONFIG_FILE);
        if !path.exists() {
            config::write_default(&path)?;
        }
        Ok((path.clone(), Encryption::load(&path)?))
    }

    fn rule(&self, key: &str) -> Option<&ResourceTransformers> {
        self.by_prefix
            .iter()
            .find(|(prefix, _)| key.starts_with(prefix.as_str()))
            .and_then(|(_, rule)| rule.as_deref())
    }

    /// Names of the KMS providers that have no key to write with yet (their plugin has not
    /// answered), as upstream checks a reloaded configuration's health before using it.
    pub fn unhealthy_kms_providers(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .by_prefix
            .iter()
            .filter_map(|(_, rule)| rule.as_deref())
            .flat_map(|rule| rule.transformers.iter())
            .filter_map(|t| match &t.cipher {
                providers::Cipher::KmsV2(kms) if kms.write_key_id().is_none() => Some(t.key_name.clone()),
                _ => None,
            })
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Whether values under `key` are encrypted when written.
    pub fn encrypts(&self, key: &str) -> bool {
        self.rule(key)
            .and_then(|r| r.transformers.first())
            .is_some_and(|t| !t.prefix.is_empty())
    }
}

impl Transformer for Encryption {
    fn transform_to_storage(&self, key: &str, value: &[u8]) -> Result<Bytes, TransformError> {
        match self.rule(key) {
            Some(rule) => rule.seal(key, value),
            None => Ok(Bytes::copy_from_slice(value)),
        }
    }

    fn transforms(&self, key: &str) -> bool {
        self.rule(key).is_some()
    }

    fn transform_from_storage(&self, key: &str, stored: &[u8]) -> Result<Bytes, TransformError> {
        match self.rule(key) {
            Some(rule) => rule.open(key, stored),
            None => Ok(Bytes::copy_from_slice(stored)),
        }
    }
}

#[cfg(test)]
mod tests;
