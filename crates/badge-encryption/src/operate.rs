//! Operating encryption at rest: which provider and key each stored object sits under,
//! read from the prefix of the raw value (nothing is decrypted), and the rewrite that moves
//! every object of the configured resources under the current write key, through the
//! store's compare-and-swap so a concurrent write is never lost.

use std::collections::BTreeMap;
use std::fmt;

use badge_store::{Error, ListOptions, Store};

use crate::Encryption;
use crate::providers::{Cipher, ENCRYPTED_PREFIX};

/// What a stored value's prefix says about how it was written.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum StoredUnder {
    /// No `k8s:enc:` prefix: written by the identity provider (or before encryption).
    Plaintext,
    /// `k8s:enc:<provider>:<version>:<key name>:`.
    Key {
        /// The provider the prefix names (`aesgcm`, `aescbc`, `secretbox`).
        provider: String,
        /// The key name the prefix names.
        key_name: String,
    },
    /// `k8s:enc:kms:v2:<name>:`, under the plugin's key `key_id` (read from the stored
    /// `EncryptedObject`): a plugin key rotation keeps the prefix but changes the key id.
    Kms {
        /// The plugin's name in the configuration.
        name: String,
        /// The plugin's key id.
        key_id: String,
    },
    /// A `k8s:enc:` prefix that does not have that shape.
    Unrecognized,
}

impl StoredUnder {
    /// Reads the prefix of a raw stored value.
    pub fn of(stored: &[u8]) -> StoredUnder {
        let Some(rest) = stored.strip_prefix(ENCRYPTED_PREFIX) else {
            return StoredUnder::Plaintext;
        };
        let mut parts = rest.splitn(4, |&b| b == b':');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(b"kms"), Some(b"v2"), Some(name), Some(body)) if !name.is_empty() => {
                use prost::Message;
                match crate::kms::proto::EncryptedObject::decode(body) {
                    Ok(object) => StoredUnder::Kms {
                        name: String::from_utf8_lossy(name).into_owned(),
                        key_id: object.key_id,
                    },
                    Err(_) => StoredUnder::Unrecognized,
                }
            }
            (Some(provider), Some(_version), Some(name), Some(_))
                if !provider.is_empty() && !name.is_empty() =>
            {
                StoredUnder::Key {
                    provider: String::from_utf8_lossy(provider).into_owned(),
                    key_name: String::from_utf8_lossy(name).into_owned(),
                }
            }
            _ => StoredUnder::Unrecognized,
        }
    }
}

impl fmt::Display for StoredUnder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoredUnder::Plaintext => f.write_str("identity(plaintext)"),
            StoredUnder::Key { provider, key_name } => write!(f, "{provider}/{key_name}"),
            StoredUnder::Kms { name, key_id } => write!(f, "kms/{name} (key id {key_id})"),
            StoredUnder::Unrecognized => f.write_str("unrecognized"),
        }
    }
}

/// One stored resource under a configuration.
struct Covered<'a> {
    /// `secrets`, or `<resource>.<group>` outside the core group.
    name: String,
    prefix: &'a str,
    rule: Option<&'a crate::ResourceTransformers>,
}

impl Covered<'_> {
    /// Whether a value stored this way can be read under the configuration.
    fn readable(&self, under: &StoredUnder) -> bool {
        match (self.rule, under) {
            // Not covered: values are served as stored.
            (None, StoredUnder::Plaintext) => true,
            (None, _) => false,
            // Whether the plugin still has the key id is for the plugin to say.
            (Some(rule), StoredUnder::Kms { name, .. }) => rule
                .transformers
                .iter()
                .any(|t| matches!(&t.cipher, Cipher::KmsV2(_)) && &t.key_name == name),
            (Some(rule), under) => rule.transformers.iter().any(|t| &t.stored_under() == under),
        }
    }

    /// Whether a value stored this way is what the write provider would store now.
    fn current(&self, under: &StoredUnder) -> bool {
        self.rule
            .and_then(|r| r.transformers.first())
            .is_some_and(|writer| &writer.writes_now() == under)
    }
}

impl crate::providers::PrefixTransformer {
    /// How this transformer writes now (a KMS provider: under its plugin's current key id,
    /// once known).
    fn writes_now(&self) -> StoredUnder {
        match &self.cipher {
            Cipher::KmsV2(kms) => match kms.write_key_id() {
                Some(key_id) => StoredUnder::Kms {
                    name: self.key_name.clone(),
                    key_id,
                },
                None => self.stored_under(),
            },
            _ => self.stored_under(),
        }
    }

    fn stored_under(&self) -> StoredUnder {
        if self.prefix.is_empty() {
            StoredUnder::Plaintext
        } else {
            StoredUnder::Key {
                provider: self.provider.to_string(),
                key_name: self.key_name.clone(),
            }
        }
    }
}

impl Encryption {
    fn covered(&self) -> Vec<Covered<'_>> {
        self.by_prefix
            .iter()
            .map(|(prefix, rule)| {
                let name = badge_api::resources::RESOURCES
                    .iter()
                    .find(|r| r.key_prefix() == *prefix)
                    .map(|r| match r.group {
                        "" => r.plural.to_string(),
                        group => format!("{}.{group}", r.plural),
                    })
                    .unwrap_or_else(|| prefix.clone());
                Covered {
                    name,
                    prefix,
                    rule: rule.as_deref(),
                }
            })
            .collect()
    }
}

/// How the objects of one resource are stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceStatus {
    /// The resource, as `resource.group`.
    pub resource: String,
    /// Whether the configuration has a rule for the resource.
    pub configured: bool,
    /// How the rule writes now (None when not configured).
    pub writes: Option<StoredUnder>,
    /// Objects per way of storage.
    pub counts: BTreeMap<StoredUnder, u64>,
    /// The ways of storage the configuration can no longer read.
    pub unreadable: Vec<StoredUnder>,
}

impl fmt::Display for ResourceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.resource)?;
        if self.counts.is_empty() {
            f.write_str("  (no objects)")?;
        }
        for (under, count) in &self.counts {
            write!(f, "  {under}: {count}")?;
            if self.unreadable.contains(under) {
                f.write_str(" (not in the configuration)")?;
            } else if self.writes.as_ref() == Some(under) {
                f.write_str(" (current)")?;
            }
        }
        Ok(())
    }
}

/// The keys under a prefix, a page at a time, as the raw store holds them.
struct Pages<'a> {
    raw: &'a dyn Store,
    prefix: &'a str,
    page: usize,
    after: Option<String>,
    done: bool,
}

impl<'a> Pages<'a> {
    fn new(raw: &'a dyn Store, prefix: &'a str, page: usize) -> Pages<'a> {
        Pages {
            raw,
            prefix,
            page: page.max(1),
            after: None,
            done: false,
        }
    }

    /// The next page, or None after the last.
    async fn next(&mut self) -> Result<Option<Vec<badge_store::KeyValue>>, Error> {
        if self.done {
            return Ok(None);
        }
        let list = self
            .raw
            .list(
                self.prefix,
                ListOptions {
                    limit: self.page,
                    start_after: self.after.take(),
                    ..Default::default()
                },
            )
            .await?;
        match list.items.last() {
            Some(last) if list.remaining > 0 => self.after = Some(last.key.clone()),
            _ => self.done = true,
        }
        Ok(Some(list.items))
    }
}

/// The first page size of [`status`] and [`rotate`] when none is given.
pub const DEFAULT_PAGE: usize = 500;

/// Counts, per stored resource, the objects under each provider and key, from the raw
/// values of `raw` (a store beneath any transformer). Lists the resources the configuration
/// covers, and any other that holds encrypted objects.
pub async fn status(
    raw: &dyn Store,
    encryption: &Encryption,
    page: usize,
) -> Result<Vec<ResourceStatus>, Error> {
    let mut statuses = Vec::new();
    for covered in encryption.covered() {
        let mut counts = BTreeMap::new();
        let mut pages = Pages::new(raw, covered.prefix, page);
        while let Some(items) = pages.next().await? {
            for kv in &items {
                *counts.entry(StoredUnder::of(&kv.value)).or_insert(0) += 1;
            }
        }
        let unreadable: Vec<StoredUnder> = counts.keys().filter(|u| !covered.readable(u)).cloned().collect();
        let configured = covered.rule.is_some();
        if !configured && counts.keys().all(|u| *u == StoredUnder::Plaintext) {
            continue;
        }
        statuses.push(ResourceStatus {
            resource: covered.name,
            configured,
            writes: covered
                .rule
                .and_then(|r| r.transformers.first())
                .map(|t| t.writes_now()),
            counts,
            unreadable,
        });
    }
    Ok(statuses)
}

/// What one [`rotate`] run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RotateReport {
    /// Objects rewritten under the current write key.
    pub rewritten: u64,
    /// Objects found already under it.
    pub current: u64,
    /// Objects written or deleted by someone else between the read and the rewrite: the
    /// writer stored them under its own configuration, so they are left as they are.
    pub conflicts: u64,
    /// Objects that could not be read (their key is gone) or sealed, with the error.
    pub failed: Vec<(String, String)>,
    /// Whether the run stopped at its limit before seeing every object.
    pub stopped_at_limit: bool,
}

/// One page of progress: the resource, and the totals so far.
pub struct Progress<'a> {
    /// The resource being rewritten.
    pub resource: &'a str,
    /// Objects of it seen so far.
    pub scanned: u64,
    /// The totals over every resource so far.
    pub report: &'a RotateReport,
}

/// Rewrites every object of the configured resources that is not under the current write
/// provider and key: each is read through the configuration and written back with
/// [`Store::update`] at the revision it was read at, so a write that happened meanwhile
/// wins (a conflict is counted and skipped). Pages of `page` keys; at most `limit`
/// rewrites (0: no limit). Running it again continues where a run stopped: objects already
/// under the current key are only counted.
pub async fn rotate(
    raw: &dyn Store,
    encryption: &Encryption,
    page: usize,
    limit: u64,
    mut progress: impl FnMut(Progress<'_>),
) -> Result<RotateReport, Error> {
    let mut report = RotateReport::default();
    for covered in encryption.covered() {
        if covered.rule.is_none() {
            continue;
        }
        let mut scanned = 0;
        let mut pages = Pages::new(raw, covered.prefix, page);
        while let Some(items) = pages.next().await? {
            for kv in &items {
                if covered.current(&StoredUnder::of(&kv.value)) {
                    report.current += 1;
                    scanned += 1;
                    continue;
                }
                if limit > 0 && report.rewritten >= limit {
                    report.stopped_at_limit = true;
                    progress(Progress {
                        resource: &covered.name,
                        scanned,
                        report: &report,
                    });
                    return Ok(report);
                }
                scanned += 1;
                let resealed = crate::Transformer::transform_from_storage(encryption, &kv.key, &kv.value)
                    .and_then(|value| crate::Transformer::transform_to_storage(encryption, &kv.key, &value));
                let resealed = match resealed {
                    Ok(resealed) => resealed,
                    Err(e) => {
                        report.failed.push((kv.key.clone(), e.0));
                        continue;
                    }
                };
                match raw.update(&kv.key, resealed, kv.mod_revision).await {
                    Ok(_) => report.rewritten += 1,
                    Err(Error::Conflict { .. }) => report.conflicts += 1,
                    Err(e) => return Err(e),
                }
            }
            progress(Progress {
                resource: &covered.name,
                scanned,
                report: &report,
            });
        }
    }
    Ok(report)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::{EncryptionConfiguration, Transformer};
    use badge_store::sqlite::SqliteStore;
    use base64::Engine;
    use bytes::Bytes;

    fn config(providers: &[(&str, u8)], identity: bool) -> Encryption {
        let mut yaml = String::from(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n",
        );
        for (name, byte) in providers {
            yaml.push_str(&format!(
                "  - secretbox:\n      keys:\n      - name: {name}\n        secret: {}\n",
                base64::engine::general_purpose::STANDARD.encode([*byte; 32])
            ));
        }
        if identity {
            yaml.push_str("  - identity: {}\n");
        }
        Encryption::new(&EncryptionConfiguration::parse(yaml.as_bytes()).unwrap()).unwrap()
    }

    fn key(name: &str) -> StoredUnder {
        StoredUnder::Key {
            provider: "secretbox".into(),
            key_name: name.into(),
        }
    }

    fn secret(i: usize) -> String {
        format!("/registry/secrets/default/s{i:02}")
    }

    /// A store with `old` sealed secrets, `plain` plaintext ones and one ConfigMap.
    async fn store_with(dir: &std::path::Path, old: usize, plain: usize) -> SqliteStore {
        let store = SqliteStore::open(&dir.join("store.db")).unwrap();
        let sealing = config(&[("old", 1)], false);
        for i in 0..old {
            let k = secret(i);
            let sealed = sealing
                .transform_to_storage(&k, format!("value-{i}").as_bytes())
                .unwrap();
            store.create(&k, sealed).await.unwrap();
        }
        for i in old..old + plain {
            store
                .create(&secret(i), Bytes::from(format!("value-{i}")))
                .await
                .unwrap();
        }
        store
            .create("/registry/configmaps/default/c", Bytes::from_static(b"plain"))
            .await
            .unwrap();
        store
    }

    #[test]
    fn the_prefix_tells_how_a_value_is_stored() {
        assert_eq!(StoredUnder::of(b"{\"kind\":\"Secret\"}"), StoredUnder::Plaintext);
        assert_eq!(
            StoredUnder::of(b"k8s:enc:secretbox:v1:key1:\x00\x01"),
            key("key1")
        );
        assert_eq!(
            StoredUnder::of(b"k8s:enc:aescbc:v1:k:x"),
            StoredUnder::Key {
                provider: "aescbc".into(),
                key_name: "k".into()
            }
        );
        assert_eq!(StoredUnder::of(b"k8s:enc:garbage"), StoredUnder::Unrecognized);
        assert_eq!(key("key1").to_string(), "secretbox/key1");
        assert_eq!(StoredUnder::Plaintext.to_string(), "identity(plaintext)");
    }

    #[tokio::test]
    async fn status_counts_objects_per_provider_and_key_and_names_unlisted_keys() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with(dir.path(), 3, 2).await;

        let both = config(&[("new", 2), ("old", 1)], true);
        let statuses = status(&store, &both, 2).await.unwrap();
        assert_eq!(statuses.len(), 1, "only secrets are configured: {statuses:?}");
        let secrets = &statuses[0];
        assert_eq!(secrets.resource, "secrets");
        assert_eq!(secrets.writes, Some(key("new")));
        assert_eq!(
            secrets.counts,
            BTreeMap::from([(StoredUnder::Plaintext, 2), (key("old"), 3)])
        );
        assert!(secrets.unreadable.is_empty());
        assert_eq!(
            secrets.to_string(),
            "secrets  identity(plaintext): 2  secretbox/old: 3"
        );

        let without_old = config(&[("new", 2)], false);
        let statuses = status(&store, &without_old, DEFAULT_PAGE).await.unwrap();
        assert_eq!(statuses[0].unreadable, vec![StoredUnder::Plaintext, key("old")]);
        assert_eq!(
            statuses[0].to_string(),
            "secrets  identity(plaintext): 2 (not in the configuration)  secretbox/old: 3 (not in the configuration)"
        );
    }

    #[tokio::test]
    async fn rotate_moves_every_object_under_the_write_key_in_runs_of_a_limit() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with(dir.path(), 3, 2).await;
        let configmap_before = store
            .get("/registry/configmaps/default/c")
            .await
            .unwrap()
            .0
            .unwrap();
        let both = config(&[("new", 2), ("old", 1)], true);

        let mut pages = 0;
        let first = rotate(&store, &both, 2, 3, |_| pages += 1).await.unwrap();
        assert_eq!(first.rewritten, 3);
        assert!(first.stopped_at_limit);
        assert!(pages >= 2, "progress after each page");
        let second = rotate(&store, &both, 2, 3, |_| {}).await.unwrap();
        assert_eq!(second.rewritten, 2);
        assert_eq!(second.current, 3);
        assert!(!second.stopped_at_limit);
        let third = rotate(&store, &both, 2, 0, |_| {}).await.unwrap();
        assert_eq!(
            third,
            RotateReport {
                current: 5,
                ..Default::default()
            },
            "idempotent"
        );

        // Everything reads with the new key alone; other resources are untouched.
        let only_new = config(&[("new", 2)], false);
        let statuses = status(&store, &only_new, 2).await.unwrap();
        assert_eq!(statuses[0].counts, BTreeMap::from([(key("new"), 5)]));
        for i in 0..5 {
            let stored = store.get(&secret(i)).await.unwrap().0.unwrap().value;
            assert_eq!(
                only_new.transform_from_storage(&secret(i), &stored).unwrap(),
                format!("value-{i}")
            );
        }
        assert_eq!(
            store
                .get("/registry/configmaps/default/c")
                .await
                .unwrap()
                .0
                .unwrap(),
            configmap_before
        );
    }

    /// A store whose every update loses the race: the rewrite must not overwrite.
    struct RacingStore(SqliteStore);

    #[async_trait::async_trait]
    impl Store for RacingStore {
        async fn get(&self, key: &str) -> badge_store::Result<(Option<badge_store::KeyValue>, i64)> {
            self.0.get(key).await
        }
        async fn list(
            &self,
            prefix: &str,
            options: ListOptions,
        ) -> badge_store::Result<badge_store::ListResult> {
            self.0.list(prefix, options).await
        }
        async fn create(&self, key: &str, value: Bytes) -> badge_store::Result<i64> {
            self.0.create(key, value).await
        }
        async fn update(&self, key: &str, _value: Bytes, expected: i64) -> badge_store::Result<i64> {
            // Someone else writes first.
            self.0
                .update(key, Bytes::from_static(b"theirs"), expected)
                .await?;
            self.0.update(key, Bytes::from_static(b"ours"), expected).await
        }
        async fn delete(&self, key: &str, expected: i64) -> badge_store::Result<i64> {
            self.0.delete(key, expected).await
        }
        async fn current_revision(&self) -> badge_store::Result<i64> {
            self.0.current_revision().await
        }
        async fn watch(&self, prefix: &str, after: i64) -> badge_store::Result<badge_store::WatchStream> {
            self.0.watch(prefix, after).await
        }
        async fn compact(&self, revision: i64) -> badge_store::Result<()> {
            self.0.compact(revision).await
        }
        async fn compacted_revision(&self) -> badge_store::Result<i64> {
            self.0.compacted_revision().await
        }
    }

    #[tokio::test]
    async fn a_write_between_the_read_and_the_rewrite_wins() {
        let dir = tempfile::tempdir().unwrap();
        let store = RacingStore(store_with(dir.path(), 2, 0).await);
        let both = config(&[("new", 2), ("old", 1)], true);
        let report = rotate(&store, &both, DEFAULT_PAGE, 0, |_| {}).await.unwrap();
        assert_eq!(report.conflicts, 2);
        assert_eq!(report.rewritten, 0);
        for i in 0..2 {
            assert_eq!(store.get(&secret(i)).await.unwrap().0.unwrap().value, "theirs");
        }
    }

    #[tokio::test]
    async fn objects_under_a_key_the_configuration_lacks_are_reported_not_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with(dir.path(), 1, 1).await;
        let only_new = config(&[("new", 2)], true);
        let report = rotate(&store, &only_new, DEFAULT_PAGE, 0, |_| {}).await.unwrap();
        assert_eq!(report.rewritten, 1, "the plaintext one");
        assert_eq!(report.failed.len(), 1);
        assert_eq!(report.failed[0].0, secret(0));
        assert!(report.failed[0].1.contains("\"old\""), "{}", report.failed[0].1);
    }
}
