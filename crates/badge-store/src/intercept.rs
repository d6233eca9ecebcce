//! A store that hands every call to the store beneath after asking a [`Hook`]: how tests
//! fail a backend on demand (unreachable, alarmed), count its transactions, or take its
//! batches away, without each repeating the whole [`Store`] contract.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::{BatchOp, KeyValue, ListOptions, ListResult, Result, Revision, Store, WatchStream};

/// A call about to reach the store beneath, named by what it touches.
#[derive(Debug)]
pub enum Call<'a> {
    /// [`Store::get`] of a key.
    Get(&'a str),
    /// [`Store::list`] of a prefix.
    List(&'a str),
    /// [`Store::create`] of a key.
    Create(&'a str),
    /// [`Store::update`] of a key.
    Update(&'a str),
    /// [`Store::delete`] of a key.
    Delete(&'a str),
    /// [`Store::write_batch`] of these ops.
    Batch(&'a [BatchOp]),
    /// [`Store::current_revision`].
    CurrentRevision,
    /// [`Store::alarms`].
    Alarms,
}

impl Call<'_> {
    /// The keys a write call writes; none for a read.
    pub fn written_keys(&self) -> Vec<&str> {
        match self {
            Call::Create(key) | Call::Update(key) | Call::Delete(key) => vec![key],
            Call::Batch(ops) => ops.iter().map(BatchOp::key).collect(),
            _ => Vec::new(),
        }
    }
}

/// What an [`Intercepted`] store asks before each call.
pub trait Hook: Send + Sync + 'static {
    /// Called before `call` reaches the store beneath; an error is the call's outcome and
    /// the store beneath never sees it. Watches and compaction are not asked: they go on
    /// as a backend's own machinery does when its clients cannot reach it.
    fn before(&self, call: &Call<'_>) -> Result<()>;

    /// The alarms to report instead of the store beneath's; `None` asks it.
    fn alarms(&self) -> Option<Vec<String>> {
        None
    }

    /// Whether a batch reaches the store beneath as one call; when false it is applied op
    /// by op (each asked as its own create or update), as a store without batches would.
    fn batches(&self) -> bool {
        true
    }
}

/// A hook shared with the test that reads what it recorded or flips its faults.
impl<H: Hook> Hook for Arc<H> {
    fn before(&self, call: &Call<'_>) -> Result<()> {
        H::before(self, call)
    }

    fn alarms(&self) -> Option<Vec<String>> {
        H::alarms(self)
    }

    fn batches(&self) -> bool {
        H::batches(self)
    }
}

/// The store beneath behind a [`Hook`].
pub struct Intercepted<H> {
    /// The store every call that passes goes to.
    pub inner: Arc<dyn Store>,
    /// What is asked before each call.
    pub hook: H,
}

impl<H: Hook> Intercepted<H> {
    /// `inner` behind `hook`.
    pub fn new(inner: Arc<dyn Store>, hook: H) -> Self {
        Intercepted { inner, hook }
    }
}

#[async_trait]
impl<H: Hook> Store for Intercepted<H> {
    async fn get(&self, key: &str) -> Result<(Option<KeyValue>, Revision)> {
        self.hook.before(&Call::Get(key))?;
        self.inner.get(key).await
    }

    async fn list(&self, prefix: &str, options: ListOptions) -> Result<ListResult> {
        self.hook.before(&Call::List(prefix))?;
        self.inner.list(prefix, options).await
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<Revision> {
        self.hook.before(&Call::Create(key))?;
        self.inner.create(key, value).await
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<Revision> {
        self.hook.before(&Call::Update(key))?;
        self.inner.update(key, value, expected).await
    }

    async fn delete(&self, key: &str, expected: Revision) -> Result<Revision> {
        self.hook.before(&Call::Delete(key))?;
        self.inner.delete(key, expected).await
    }

    async fn write_batch(&self, ops: Vec<BatchOp>) -> Vec<Result<Revision>> {
        if !self.hook.batches() {
            let mut outcomes = Vec::with_capacity(ops.len());
            for op in ops {
                outcomes.push(match op {
                    BatchOp::Create { key, value } => self.create(&key, value).await,
                    BatchOp::Update { key, value, expected } => self.update(&key, value, expected).await,
                });
            }
            return outcomes;
        }
        if let Err(error) = self.hook.before(&Call::Batch(&ops)) {
            return ops.iter().map(|_| Err(error.clone())).collect();
        }
        self.inner.write_batch(ops).await
    }

    async fn current_revision(&self) -> Result<Revision> {
        self.hook.before(&Call::CurrentRevision)?;
        self.inner.current_revision().await
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        self.inner.watch(prefix, after).await
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
        self.hook.before(&Call::Alarms)?;
        match self.hook.alarms() {
            Some(alarms) => Ok(alarms),
            None => self.inner.alarms().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use super::*;
    use crate::Error;
    use crate::sqlite::SqliteStore;

    #[derive(Default)]
    struct Recording {
        down: AtomicBool,
        writes: AtomicUsize,
        unbatched: bool,
    }

    impl Hook for Recording {
        fn before(&self, call: &Call<'_>) -> Result<()> {
            if self.down.load(Ordering::SeqCst) {
                return Err(Error::Unavailable("down".into()));
            }
            if !call.written_keys().is_empty() {
                self.writes.fetch_add(1, Ordering::SeqCst);
            }
            Ok(())
        }

        fn batches(&self) -> bool {
            !self.unbatched
        }
    }

    fn batch() -> Vec<BatchOp> {
        ["/a", "/b", "/c"]
            .into_iter()
            .map(|key| BatchOp::Create {
                key: key.into(),
                value: Bytes::from_static(b"v"),
            })
            .collect()
    }

    #[tokio::test]
    async fn a_batch_is_one_call_or_one_per_op_and_a_refusal_reaches_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let inner: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("s.db")).unwrap());
        let hook = Arc::new(Recording::default());
        let store = Intercepted::new(inner.clone(), hook.clone());
        assert!(store.write_batch(batch()).await.iter().all(Result::is_ok));
        assert_eq!(hook.writes.load(Ordering::SeqCst), 1);

        let unbatched = Arc::new(Recording {
            unbatched: true,
            ..Default::default()
        });
        let store = Intercepted::new(inner.clone(), unbatched.clone());
        let outcomes = store.write_batch(batch()).await;
        assert!(
            outcomes
                .iter()
                .all(|o| matches!(o, Err(Error::AlreadyExists { .. })))
        );
        assert_eq!(unbatched.writes.load(Ordering::SeqCst), 3);

        hook.down.store(true, Ordering::SeqCst);
        let store = Intercepted::new(inner.clone(), hook);
        let revision = inner.current_revision().await.unwrap();
        let outcomes = store.write_batch(vec![BatchOp::Create {
            key: "/d".into(),
            value: Bytes::from_static(b"v"),
        }]);
        assert!(matches!(&outcomes.await[..], [Err(Error::Unavailable(_))]));
        assert!(matches!(store.get("/a").await, Err(Error::Unavailable(_))));
        assert_eq!(
            inner.current_revision().await.unwrap(),
            revision,
            "nothing written"
        );
    }
}
