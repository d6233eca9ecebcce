//! Values transformed on their way into and out of the store (encryption at rest), as
//! kube-apiserver's `storage/value` transformers: [`TransformedStore`] wraps a store so every
//! path that writes or reads values — creates, updates, gets, lists, the values carried by
//! conflicts and watch events — goes through one [`Transformer`].

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;

use crate::{BatchOp, Error, Event, KeyValue, ListOptions, ListResult, Result, Revision, Store, WatchStream};

/// Turns values into what is stored and back. `key` is the store key, which
/// authenticated encryption binds the value to.
pub trait Transformer: Send + Sync + 'static {
    /// The bytes to store for `value` under `key`.
    fn transform_to_storage(&self, key: &str, value: &[u8]) -> Result<Bytes, TransformError>;
    /// The value that `stored`, read under `key`, was made from.
    fn transform_from_storage(&self, key: &str, stored: &[u8]) -> Result<Bytes, TransformError>;

    /// Whether values under `key` are transformed at all; the others pass as they are,
    /// without a copy.
    fn transforms(&self, key: &str) -> bool {
        let _ = key;
        true
    }
}

/// `stored` as read through `transformer`.
pub fn read_through(
    transformer: &dyn Transformer,
    key: &str,
    stored: &Bytes,
) -> Result<Bytes, TransformError> {
    if transformer.transforms(key) {
        transformer.transform_from_storage(key, stored)
    } else {
        Ok(stored.clone())
    }
}

fn write_through(transformer: &dyn Transformer, key: &str, value: Bytes) -> Result<Bytes, TransformError> {
    if transformer.transforms(key) {
        transformer.transform_to_storage(key, &value)
    } else {
        Ok(value)
    }
}

/// A value that could not be transformed; the message names the provider and key name,
/// never key material or the value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TransformError(pub String);

impl From<TransformError> for Error {
    fn from(error: TransformError) -> Error {
        Error::Transform(error.0)
    }
}

/// A store whose values pass through a transformer.
pub struct TransformedStore {
    inner: Arc<dyn Store>,
    transformer: Arc<dyn Transformer>,
}

impl TransformedStore {
    /// `inner`, with every value written through `transformer` and read back through it.
    pub fn new(inner: Arc<dyn Store>, transformer: Arc<dyn Transformer>) -> TransformedStore {
        TransformedStore { inner, transformer }
    }

    fn read(&self, mut kv: KeyValue) -> Result<KeyValue> {
        kv.value = self.read_value(&kv.key, &kv.value)?;
        Ok(kv)
    }

    fn read_value(&self, key: &str, stored: &Bytes) -> Result<Bytes> {
        read_through(&*self.transformer, key, stored).map_err(|e| {
            tracing::error!(key, error = %e, "failed to transform a stored value");
            e.into()
        })
    }

    fn conflict(&self, error: Error) -> Error {
        match error {
            Error::Conflict {
                key,
                current: Some(current),
            } => match self.read(*current) {
                Ok(current) => Error::Conflict {
                    key,
                    current: Some(Box::new(current)),
                },
                Err(e) => e,
            },
            other => other,
        }
    }
}

#[async_trait]
impl Store for TransformedStore {
    async fn get(&self, key: &str) -> Result<(Option<KeyValue>, Revision)> {
        let (kv, revision) = self.inner.get(key).await?;
        Ok((kv.map(|kv| self.read(kv)).transpose()?, revision))
    }

    /// Fails as a whole when one value cannot be transformed, as upstream's list does.
    async fn list(&self, prefix: &str, options: ListOptions) -> Result<ListResult> {
        let mut result = self.inner.list(prefix, options).await?;
        result.items = result
            .items
            .into_iter()
            .map(|kv| {
                let key = kv.key.clone();
                self.read(kv).map_err(|e| match e {
                    Error::Transform(m) => Error::Transform(format!("unable to transform key {key:?}: {m}")),
                    other => other,
                })
            })
            .collect::<Result<_>>()?;
        Ok(result)
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<Revision> {
        let stored = write_through(&*self.transformer, key, value)?;
        self.inner.create(key, stored).await
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<Revision> {
        let stored = write_through(&*self.transformer, key, value)?;
        self.inner
            .update(key, stored, expected)
            .await
            .map_err(|e| self.conflict(e))
    }

    async fn delete(&self, key: &str, expected: Revision) -> Result<Revision> {
        self.inner
            .delete(key, expected)
            .await
            .map_err(|e| self.conflict(e))
    }

    /// Each value is transformed as its single write would transform it; one that cannot
    /// be fails alone.
    async fn write_batch(&self, ops: Vec<BatchOp>) -> Vec<Result<Revision>> {
        let mut outcomes: Vec<Option<Result<Revision>>> = Vec::with_capacity(ops.len());
        let mut stored = Vec::with_capacity(ops.len());
        for op in ops {
            let transformed = match op {
                BatchOp::Create { key, value } => {
                    write_through(&*self.transformer, &key, value).map(|value| BatchOp::Create { key, value })
                }
                BatchOp::Update { key, value, expected } => write_through(&*self.transformer, &key, value)
                    .map(|value| BatchOp::Update { key, value, expected }),
            };
            match transformed {
                Ok(op) => {
                    outcomes.push(None);
                    stored.push(op);
                }
                Err(e) => outcomes.push(Some(Err(e.into()))),
            }
        }
        let mut written = self.inner.write_batch(stored).await.into_iter();
        outcomes
            .into_iter()
            .map(|outcome| match outcome {
                Some(refused) => refused,
                None => written
                    .next()
                    .unwrap_or_else(|| Err(Error::Internal("a batch outcome is missing".into())))
                    .map_err(|e| self.conflict(e)),
            })
            .collect()
    }

    async fn current_revision(&self) -> Result<Revision> {
        self.inner.current_revision().await
    }

    /// Ends with an error at the first value that cannot be transformed, as upstream's
    /// watch does; the watch cache reads through [`Store::transformed`] instead, to go on.
    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        let transformer = self.transformer.clone();
        let stream = self.inner.watch(prefix, after).await?;
        Ok(Box::pin(stream.map(move |batch| {
            batch?
                .into_iter()
                .map(|mut event: Event| {
                    event.value = read_through(&*transformer, &event.key, &event.value)?;
                    Ok(event)
                })
                .collect()
        })))
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        self.inner.compact(revision).await
    }

    async fn compacted_revision(&self) -> Result<Revision> {
        self.inner.compacted_revision().await
    }

    async fn barrier(&self) -> Result<Option<Revision>> {
        self.inner.barrier().await
    }

    async fn alarms(&self) -> Result<Vec<String>> {
        self.inner.alarms().await
    }

    fn transformed(&self) -> Option<(Arc<dyn Store>, Arc<dyn Transformer>)> {
        Some((self.inner.clone(), self.transformer.clone()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::sqlite::SqliteStore;

    /// Reverses values and marks them, refusing values without the mark.
    struct Reverse;

    impl Transformer for Reverse {
        fn transform_to_storage(&self, _key: &str, value: &[u8]) -> Result<Bytes, TransformError> {
            let mut stored = b"rev:".to_vec();
            stored.extend(value.iter().rev());
            Ok(stored.into())
        }
        fn transform_from_storage(&self, _key: &str, stored: &[u8]) -> Result<Bytes, TransformError> {
            let body = stored
                .strip_prefix(b"rev:")
                .ok_or_else(|| TransformError("no matching prefix found".into()))?;
            Ok(body.iter().rev().copied().collect::<Vec<_>>().into())
        }
    }

    #[tokio::test]
    async fn every_path_transforms_values() {
        let dir = tempfile::tempdir().unwrap();
        let raw: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("s.db")).unwrap());
        let store = TransformedStore::new(raw.clone(), Arc::new(Reverse));
        let mut watch = store.watch("/a", 0).await.unwrap();
        let rev = store.create("/a/1", Bytes::from_static(b"abc")).await.unwrap();
        assert_eq!(raw.get("/a/1").await.unwrap().0.unwrap().value, "rev:cba");
        assert_eq!(store.get("/a/1").await.unwrap().0.unwrap().value, "abc");
        assert_eq!(
            store.list("/a", Default::default()).await.unwrap().items[0].value,
            "abc"
        );
        let event = &watch.next().await.unwrap().unwrap()[0];
        assert_eq!(event.value, "abc");
        let conflict = store.update("/a/1", Bytes::from_static(b"x"), rev + 5).await;
        match conflict {
            Err(Error::Conflict {
                current: Some(kv), ..
            }) => assert_eq!(kv.value, "abc"),
            other => panic!("{other:?}"),
        }

        // A value the transformer cannot read fails its get and the list, not the store.
        raw.create("/a/2", Bytes::from_static(b"plain")).await.unwrap();
        let err = store.get("/a/2").await.unwrap_err();
        assert_eq!(err, Error::Transform("no matching prefix found".into()));
        assert_eq!(
            store.list("/a", Default::default()).await.unwrap_err(),
            Error::Transform("unable to transform key \"/a/2\": no matching prefix found".into())
        );
        assert_eq!(store.get("/a/1").await.unwrap().0.unwrap().value, "abc");
    }

    #[tokio::test]
    async fn batches_transform_each_value() {
        let dir = tempfile::tempdir().unwrap();
        let raw: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("s.db")).unwrap());
        let store = TransformedStore::new(raw.clone(), Arc::new(Reverse));
        let rev = store.create("/a/1", Bytes::from_static(b"abc")).await.unwrap();
        let mut watch = store.watch("/a", rev).await.unwrap();
        let outcomes = store
            .write_batch(vec![
                BatchOp::Create {
                    key: "/a/2".into(),
                    value: Bytes::from_static(b"xyz"),
                },
                BatchOp::Update {
                    key: "/a/1".into(),
                    value: Bytes::from_static(b"lost"),
                    expected: rev + 5,
                },
                BatchOp::Update {
                    key: "/a/1".into(),
                    value: Bytes::from_static(b"def"),
                    expected: rev,
                },
            ])
            .await;
        assert!(outcomes[0].is_ok() && outcomes[2].is_ok(), "{outcomes:?}");
        match &outcomes[1] {
            Err(Error::Conflict {
                current: Some(kv), ..
            }) => assert_eq!(kv.value, "abc", "the conflict's value is read back"),
            other => panic!("{other:?}"),
        }
        assert_eq!(raw.get("/a/2").await.unwrap().0.unwrap().value, "rev:zyx");
        assert_eq!(raw.get("/a/1").await.unwrap().0.unwrap().value, "rev:fed");
        let mut events = Vec::new();
        while events.len() < 2 {
            events.extend(watch.next().await.unwrap().unwrap());
        }
        let values: Vec<&[u8]> = events.iter().map(|e| e.value.as_ref()).collect();
        assert_eq!(values, [b"xyz".as_slice(), b"def"]);
    }
}
