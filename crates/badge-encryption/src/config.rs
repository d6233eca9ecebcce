//! `EncryptionConfiguration` (`apiserver.config.k8s.io/v1`): parsing, upstream's validation
//! (`pkg/apis/apiserver/validation/validation_encryption.go`) and the rules it yields.

use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::ResourceTransformers;
use crate::providers::{Cipher, PrefixTransformer};

/// The `apiVersion` of an EncryptionConfiguration file.
pub const API_VERSION: &str = "apiserver.config.k8s.io/v1";
/// The `kind` of an EncryptionConfiguration file.
pub const KIND: &str = "EncryptionConfiguration";

const AES_KEY_SIZES: &[usize] = &[16, 24, 32];
const SECRETBOX_KEY_SIZES: &[usize] = &[32];

/// A configuration that cannot be used; the message names the file or field at fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
/// The file `--encryption-provider-config` names (`apiserver.config.k8s.io/v1`).
pub struct EncryptionConfiguration {
    #[serde(default)]
    /// Must be `apiserver.config.k8s.io/v1`.
    pub api_version: String,
    #[serde(default)]
    /// Must be `EncryptionConfiguration`.
    pub kind: String,
    #[serde(default)]
    /// Rules, each a set of resources and the providers they are stored with.
    pub resources: Vec<ResourceConfiguration>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
/// One rule: which resources, and the providers that write and read them.
pub struct ResourceConfiguration {
    #[serde(default)]
    /// `resource.group` names (`secrets`, `*.apps`, `*.*`).
    pub resources: Vec<String>,
    #[serde(default)]
    /// The first provider writes; every provider is tried in order to read.
    pub providers: Vec<ProviderConfiguration>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
/// One provider; exactly one of its fields is set.
pub struct ProviderConfiguration {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// AES-GCM with a random nonce.
    pub aesgcm: Option<KeysConfiguration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// AES-CBC with PKCS#7 padding.
    pub aescbc: Option<KeysConfiguration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// XSalsa20 and Poly1305.
    pub secretbox: Option<KeysConfiguration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// No encryption: values are stored as they are.
    pub identity: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Envelope encryption through a KMS plugin.
    pub kms: Option<KmsConfiguration>,
}

/// A KMS plugin (`kms`); badge speaks only `apiVersion: v2`, KMS v1 being deprecated
/// and off by default upstream.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KmsConfiguration {
    /// Defaults to `v1`, as upstream, which badge refuses.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    #[serde(default)]
    /// The plugin's name, part of the stored prefix; unique in the file.
    pub name: String,
    #[serde(default, rename = "cachesize", skip_serializing_if = "Option::is_none")]
    /// How many decrypted keys to cache; KMS v1 only.
    pub cache_size: Option<i32>,
    #[serde(default)]
    /// The plugin's gRPC socket, `unix:///path`.
    pub endpoint: String,
    /// A Go duration; 3s when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// Upstream's default KMS call timeout.
const KMS_DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

impl KmsConfiguration {
    fn api_version(&self) -> &str {
        if self.api_version.is_empty() {
            "v1"
        } else {
            &self.api_version
        }
    }

    fn timeout(&self) -> Result<std::time::Duration, String> {
        match &self.timeout {
            None => Ok(KMS_DEFAULT_TIMEOUT),
            Some(text) => parse_go_duration(text),
        }
    }
}

/// A Go duration (`3s`, `1m30s`, `500ms`).
fn parse_go_duration(text: &str) -> Result<std::time::Duration, String> {
    let invalid = || format!("time: invalid duration {text:?}");
    let (negative, mut rest) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if rest == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(invalid)?;
        let number: f64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(invalid()),
        };
        rest = &rest[unit_len..];
        total += number * scale;
    }
    if negative {
        return Err("negative".into());
    }
    std::time::Duration::try_from_secs_f64(total).map_err(|_| invalid())
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
/// The keys of an `aesgcm`, `aescbc` or `secretbox` provider.
pub struct KeysConfiguration {
    #[serde(default)]
    /// The keys: the first encrypts, any of them decrypts.
    pub keys: Vec<Key>,
}

#[derive(Clone, Default, Deserialize, Serialize)]
/// A named key.
pub struct Key {
    #[serde(default)]
    /// The key's name, part of the stored prefix.
    pub name: String,
    #[serde(default)]
    /// The key, base64.
    pub secret: String,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("name", &self.name)
            .field("secret", &"REDACTED")
            .finish()
    }
}

/// A `group`, `resource` pair as `schema.ParseGroupResource` splits `resource.group`.
type GroupResource = (String, String);

fn parse_group_resource(text: &str) -> GroupResource {
    match text.split_once('.') {
        Some((resource, group)) => (group.to_string(), resource.to_string()),
        None => (String::new(), text.to_string()),
    }
}

/// How upstream names a rule in errors (`*.` for every core resource).
fn group_resource_string((group, resource): &GroupResource) -> String {
    match (group.as_str(), resource.as_str()) {
        ("", "*") => "*.".into(),
        ("", r) => r.into(),
        (g, r) => format!("{r}.{g}"),
    }
}

impl EncryptionConfiguration {
    /// Reads a file (YAML or JSON), as upstream's `LoadEncryptionConfig`.
    pub fn load(path: &Path) -> Result<EncryptionConfiguration, ConfigError> {
        let data = std::fs::read(path).map_err(|e| {
            ConfigError(format!(
                "error reading encryption provider configuration file {:?}: {e}",
                path.display().to_string()
            ))
        })?;
        if data.iter().all(u8::is_ascii_whitespace) {
            return Err(ConfigError(format!(
                "encryption provider configuration file {:?} is empty",
                path.display().to_string()
            )));
        }
        EncryptionConfiguration::parse(&data).map_err(|ConfigError(e)| {
            ConfigError(format!(
                "error while parsing encryption provider configuration file {:?}: {e}",
                path.display().to_string()
            ))
        })
    }

    /// Decodes and validates a configuration.
    pub fn parse(data: &[u8]) -> Result<EncryptionConfiguration, ConfigError> {
        let config: EncryptionConfiguration =
            serde_yaml_ng::from_slice(data).map_err(|e| ConfigError(format!("error decoding: {e}")))?;
        if config.api_version != API_VERSION || config.kind != KIND {
            return Err(ConfigError(format!(
                "got unexpected config type: {}, Kind={}",
                config.api_version, config.kind
            )));
        }
        let errors = config.validate();
        match errors.len() {
            0 => Ok(config),
            1 => Err(ConfigError(errors.concat())),
            _ => Err(ConfigError(format!("[{}]", errors.join(", ")))),
        }
    }

    /// Upstream's field errors, in its words.
    pub fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if self.resources.is_empty() {
            errors.push("resources: Required value: at least one resources is required".into());
            return errors;
        }
        let mut kms_names = std::collections::HashSet::new();
        for (i, rule) in self.resources.iter().enumerate() {
            let r = format!("resources[{i}].resources");
            let p = format!("resources[{i}].providers");
            if rule.resources.is_empty() {
                errors.push(format!("{r}: Required value: at least one {r} is required"));
            }
            validate_overlap(&rule.resources, &r, &mut errors);
            validate_names(&rule.resources, &r, &mut errors);
            if rule.providers.is_empty() {
                errors.push(format!("{p}: Required value: at least one {p} is required"));
            }
            for (j, provider) in rule.providers.iter().enumerate() {
                validate_provider(provider, &format!("{p}[{j}]"), &mut errors);
                if let Some(kms) = &provider.kms
                    && !kms.name.is_empty()
                    && !kms_names.insert(kms.name.clone())
                {
                    errors.push(format!(
                        "{p}[{j}].kms.name: Invalid value: {:?}: duplicate KMS provider name {}, names must be unique",
                        kms.name, kms.name
                    ));
                }
            }
        }
        errors
    }

    /// Each resource's transformers, in rule order, as upstream's
    /// `getTransformerOverridesAndKMSPluginHealthzCheckers`; a rule masked by an earlier
    /// wildcard fails.
    pub(crate) fn rules(
        &self,
        timings: crate::kms::KmsTimings,
    ) -> Result<Vec<(GroupResource, Arc<ResourceTransformers>)>, ConfigError> {
        let mut rules: Vec<(GroupResource, Vec<Arc<PrefixTransformer>>)> = Vec::new();
        for rule in &self.resources {
            let transformers = rule
                .providers
                .iter()
                .map(|p| transformers_of(p, timings))
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .flatten()
                .map(Arc::new)
                .collect::<Vec<_>>();
            for resource in &rule.resources {
                let gr = parse_group_resource(resource);
                for wildcard in [(gr.0.clone(), "*".to_string()), ("*".into(), "*".into())] {
                    if rules.iter().any(|(existing, _)| *existing == wildcard) {
                        return Err(ConfigError(format!(
                            "resource {:?} is masked by earlier rule {:?}",
                            group_resource_string(&gr),
                            group_resource_string(&wildcard)
                        )));
                    }
                }
                match rules.iter_mut().find(|(existing, _)| *existing == gr) {
                    Some((_, list)) => list.extend(transformers.iter().cloned()),
                    None => rules.push((gr, transformers.clone())),
                }
            }
        }
        Ok(rules
            .into_iter()
            .map(|(gr, transformers)| (gr, Arc::new(ResourceTransformers { transformers })))
            .collect())
    }
}

fn validate_overlap(resources: &[String], path: &str, errors: &mut Vec<String>) {
    if resources.len() < 2 {
        return;
    }
    let parsed: Vec<GroupResource> = resources.iter().map(|r| parse_group_resource(r)).collect();
    let (mut duplicate, mut overlap) = (false, false);
    for (i, a) in parsed.iter().enumerate() {
        for (j, b) in parsed.iter().enumerate() {
            if i == j {
                continue;
            }
            if a == b && !duplicate {
                duplicate = true;
                continue;
            }
            if overlap {
                continue;
            }
            if a.0 == "*" && a.1 == "*" {
                overlap = true;
                continue;
            }
            if a.0 != b.0 {
                continue;
            }
            if a.1 == "*" || b.1 == "*" {
                overlap = true;
            }
        }
    }
    let value = go_string_list(resources);
    if duplicate {
        errors.push(format!(
            "{path}: Invalid value: {value}: the same resource cannot be specified multiple times"
        ));
    }
    if overlap {
        errors.push(format!(
            "{path}: Invalid value: {value}: using overlapping resources such as 'secrets' and '*.' \
             in the same resource list is not allowed as they will be masked"
        ));
    }
}

fn go_string_list(values: &[String]) -> String {
    let quoted: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
    format!("[]string{{{}}}", quoted.join(", "))
}

fn validate_names(resources: &[String], path: &str, errors: &mut Vec<String>) {
    for (j, resource) in resources.iter().enumerate() {
        let invalid = |detail: &str| format!("{path}[{j}]: Invalid value: {resource:?}: {detail}");
        let (group, name) = parse_group_resource(resource);
        let problem = if resource.chars().any(|c| c.is_ascii_uppercase()) {
            "resource name should not contain capital letters"
        } else if resource == "*" {
            "use '*.' to encrypt all the resources from core API group or *.* to encrypt all resources"
        } else if matches!(
            resource.as_str(),
            "apiserveripinfo" | "serviceipallocations" | "servicenodeportallocations"
        ) {
            "resources which do not have REST API/s cannot be encrypted"
        } else if group == "events.k8s.io" {
            "'*.events.k8s.io' objects are stored using the 'events' API group in etcd. Use 'events' \
             instead in the config file"
        } else if group == "extensions" {
            "'extensions' group has been removed and cannot be used for encryption"
        } else if group == "*" && name != "*" {
            "encrypting the same resource across groups is not supported"
        } else {
            continue;
        };
        errors.push(invalid(problem));
    }
}

fn validate_provider(provider: &ProviderConfiguration, path: &str, errors: &mut Vec<String>) {
    let found = [
        provider.kms.is_some(),
        provider.aesgcm.is_some(),
        provider.aescbc.is_some(),
        provider.secretbox.is_some(),
        provider.identity.is_some(),
    ]
    .iter()
    .filter(|f| **f)
    .count();
    let shown = serde_json::to_string(provider).unwrap_or_default();
    if found == 0 {
        errors.push(format!(
            "{path}: Invalid value: {shown:?}: provider does not contain any of the expected providers: \
             KMS, AESGCM, AESCBC, Secretbox, Identity"
        ));
        return;
    }
    if found > 1 {
        errors.push(format!(
            "{path}: Invalid value: {shown:?}: more than one provider specified in a single element, \
             should split into different list elements"
        ));
        return;
    }
    if let Some(kms) = &provider.kms {
        validate_kms(kms, &format!("{path}.kms"), errors);
    }
    let keyed = [
        ("aesgcm", &provider.aesgcm, AES_KEY_SIZES),
        ("aescbc", &provider.aescbc, AES_KEY_SIZES),
        ("secretbox", &provider.secretbox, SECRETBOX_KEY_SIZES),
    ];
    for (name, config, sizes) in keyed {
        if let Some(config) = config {
            validate_keys(&config.keys, &format!("{path}.{name}.keys"), sizes, errors);
        }
    }
}

/// Upstream's `validateKMSConfiguration`; the uniqueness of names is checked over the
/// whole file by [`EncryptionConfiguration::validate`].
fn validate_kms(kms: &KmsConfiguration, path: &str, errors: &mut Vec<String>) {
    if kms.name.is_empty() {
        errors.push(format!(
            "{path}.name: Required value: name is a mandatory field for a provider"
        ));
    }
    if kms.api_version() != "v1" && kms.name.contains(':') {
        errors.push(format!(
            "{path}.name: Invalid value: {:?}: invalid KMS provider name {}, must not contain ':'",
            kms.name, kms.name
        ));
    }
    match kms.timeout() {
        Ok(timeout) if !timeout.is_zero() => {}
        _ => errors.push(format!(
            "{path}.timeout: Invalid value: {:?}: timeout should be a positive value",
            kms.timeout.clone().unwrap_or_default()
        )),
    }
    if kms.endpoint.is_empty() {
        errors.push(format!(
            "{path}.endpoint: Invalid value: \"\": endpoint is a mandatory field for a kms"
        ));
    } else if let Some((scheme, _)) = kms.endpoint.split_once("://")
        && scheme != "unix"
    {
        errors.push(format!(
            "{path}.endpoint: Invalid value: {:?}: unsupported scheme {scheme:?} for KMS provider, only unix is supported",
            kms.endpoint
        ));
    } else if crate::kms::plugin::socket_path(&kms.endpoint).is_err() {
        errors.push(format!(
            "{path}.endpoint: Invalid value: {:?}: unsupported scheme \"\" for KMS provider, only unix is supported",
            kms.endpoint
        ));
    }
    if kms.api_version() != "v1"
        && let Some(size) = kms.cache_size
    {
        errors.push(format!(
            "{path}.cachesize: Invalid value: {size}: cachesize is not supported in v2"
        ));
    }
    match kms.api_version() {
        "v2" => {}
        "v1" => errors.push(format!(
            "{path}.apiVersion: Invalid value: \"v1\": KMSv1 is deprecated and not supported; use apiVersion: v2"
        )),
        other => errors.push(format!(
            "{path}.apiVersion: Invalid value: {other:?}: unsupported apiVersion apiVersion for KMS provider, only v1 and v2 are supported"
        )),
    }
}

fn validate_keys(keys: &[Key], path: &str, sizes: &[usize], errors: &mut Vec<String>) {
    if keys.is_empty() {
        errors.push(format!("{path}: Required value: at least one keys is required"));
    }
    for (i, key) in keys.iter().enumerate() {
        let path = format!("{path}[{i}]");
        if key.name.is_empty() {
            errors.push(format!(
                "{path}.name: Required value: name is a mandatory field for a key"
            ));
        }
        if key.secret.is_empty() {
            errors.push(format!(
                "{path}.secret: Required value: secret is a mandatory field for a key"
            ));
            continue;
        }
        match base64::engine::general_purpose::STANDARD.decode(&key.secret) {
            Err(_) => errors.push(format!(
                "{path}.secret: Invalid value: \"REDACTED\": secrets must be base64 encoded"
            )),
            Ok(secret) if !sizes.contains(&secret.len()) => {
                let expected: Vec<String> = sizes.iter().map(ToString::to_string).collect();
                errors.push(format!(
                    "{path}.secret: Invalid value: \"REDACTED\": secret is not of the expected length, \
                     got {}, expected one of [{}]",
                    secret.len(),
                    expected.join(" ")
                ));
            }
            Ok(_) => {}
        }
    }
}

/// One prefix transformer per key of a (validated) provider.
fn transformers_of(
    provider: &ProviderConfiguration,
    timings: crate::kms::KmsTimings,
) -> Result<Vec<PrefixTransformer>, ConfigError> {
    let decode = |key: &Key| {
        base64::engine::general_purpose::STANDARD
            .decode(&key.secret)
            .map_err(|_| ConfigError(format!("key {} has no valid secret", key.name)))
    };
    if let Some(config) = &provider.aescbc {
        return config
            .keys
            .iter()
            .map(|k| {
                Ok(PrefixTransformer::new(
                    "aescbc",
                    &k.name,
                    Cipher::AesCbc(decode(k)?),
                ))
            })
            .collect();
    }
    if let Some(config) = &provider.aesgcm {
        return config
            .keys
            .iter()
            .map(|k| {
                Ok(PrefixTransformer::new(
                    "aesgcm",
                    &k.name,
                    Cipher::AesGcm(decode(k)?),
                ))
            })
            .collect();
    }
    if let Some(config) = &provider.secretbox {
        return config
            .keys
            .iter()
            .map(|k| {
                let secret: [u8; 32] = decode(k)?
                    .try_into()
                    .map_err(|_| ConfigError(format!("key {} is not 32 bytes", k.name)))?;
                Ok(PrefixTransformer::new(
                    "secretbox",
                    &k.name,
                    Cipher::Secretbox(secret),
                ))
            })
            .collect();
    }
    if let Some(kms) = &provider.kms {
        let socket = crate::kms::plugin::socket_path(&kms.endpoint).map_err(ConfigError)?;
        let timeout = kms.timeout().map_err(ConfigError)?;
        let provider = crate::kms::KmsV2::new(&kms.name, socket, timeout, timings);
        return Ok(vec![PrefixTransformer::new(
            "kms",
            &kms.name,
            Cipher::KmsV2(Box::new(provider)),
        )]);
    }
    if provider.identity.is_some() {
        return Ok(vec![PrefixTransformer::new("identity", "", Cipher::Identity)]);
    }
    Err(ConfigError(
        "provider does not contain any of the expected providers: KMS, AESGCM, AESCBC, Secretbox, Identity"
            .into(),
    ))
}

/// The configuration of a first start: Secrets sealed by secretbox with a fresh key, and
/// still readable when stored before encryption (identity).
pub fn default_yaml() -> String {
    use rand::RngCore;
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let secret = base64::engine::general_purpose::STANDARD.encode(secret);
    format!(
        "# Written by badge on its first start: Secrets are encrypted at rest with this key.\n\
         # Keep it private and with the data; servers sharing a store must share this file.\n\
         apiVersion: {API_VERSION}\n\
         kind: {KIND}\n\
         resources:\n\
         \x20 - resources:\n\
         \x20     - secrets\n\
         \x20   providers:\n\
         \x20     - secretbox:\n\
         \x20         keys:\n\
         \x20           - name: key1\n\
         \x20             secret: {secret}\n\
         \x20     - identity: {{}}\n"
    )
}

/// Writes the default configuration at `path` (mode 0600) unless a file is there already:
/// servers starting at once on a shared directory all end up with the same one.
pub fn write_default(path: &Path) -> Result<(), ConfigError> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let fail = |e: std::io::Error| ConfigError(format!("writing {}: {e}", path.display()));
    let dir = path.parent().unwrap_or(Path::new("."));
    // Private like the rest of the pki dir, whichever of them creates it first.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(fail)?;
    let temp = dir.join(format!(".{}.{}", crate::DEFAULT_CONFIG_FILE, uuid_like()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .map_err(fail)?;
    let written = file
        .write_all(default_yaml().as_bytes())
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::hard_link(&temp, path));
    let _ = std::fs::remove_file(&temp);
    match written {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(fail(e)),
    }
}

fn uuid_like() -> String {
    use rand::RngCore;
    format!("{:016x}", rand::rng().next_u64())
}
