//! The store model badge stands on: etcd's revisioned key-value contract, as kube-apiserver
//! uses it (`client/v3/kubernetes.Interface` plus watch).
//!
//! Every mutation gets the next store-wide revision. Each key carries the revision that
//! created it and the one that last modified it. Writes are compare-and-swap on the key's
//! mod revision; that is the whole concurrency model. Watches deliver every change after a
//! revision, in order, without gaps, until history below a revision is compacted away.
//!
//! Backends: [`sqlite::SqliteStore`] (embedded, the default); the etcd backend lives in its
//! own crate. Both must pass [`conformance`].

#![warn(missing_docs)]

pub mod conformance;
pub mod intercept;
pub mod sqlite;
pub mod transform;

use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;

/// A store-wide, monotonically increasing revision. 0 means "before anything was written".
pub type Revision = i64;

/// One key as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// The store key (`/registry/<resource>/<namespace>/<name>`).
    pub key: String,
    /// The stored bytes, as the transformer left them for the caller.
    pub value: Bytes,
    /// The revision of the write that created this key (since its last deletion).
    pub create_revision: Revision,
    /// The revision of the last write to this key.
    pub mod_revision: Revision,
}

/// What a list returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListResult {
    /// Keys in ascending byte order.
    pub items: Vec<KeyValue>,
    /// The revision the list was read at.
    pub revision: Revision,
    /// How many more keys match after the last one returned (0 when the list is complete).
    pub remaining: u64,
}

/// Options for [`Store::list`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListOptions {
    /// Read at this revision instead of the latest. Fails with [`Error::Compacted`] when it
    /// is below the compacted revision and [`Error::FutureRevision`] when above the current.
    pub revision: Option<Revision>,
    /// At most this many items; 0 means no limit.
    pub limit: usize,
    /// Start strictly after this key (the continue token of a paged list).
    pub start_after: Option<String>,
}

/// The kind of change an [`Event`] records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// The key was created or overwritten.
    Put,
    /// The key was removed.
    Delete,
}

/// One change, as a watch delivers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Whether the key was written or removed.
    pub kind: EventKind,
    /// The key that changed.
    pub key: String,
    /// The revision of this change.
    pub revision: Revision,
    /// For a put, the new value; for a delete, the value the key held before it.
    pub value: Bytes,
    /// The revision that created the key; for a put equal to `revision` when the put
    /// created the key.
    pub create_revision: Revision,
}

impl Event {
    /// Whether this put created the key (rather than modified it).
    pub fn is_create(&self) -> bool {
        self.kind == EventKind::Put && self.create_revision == self.revision
    }
}

/// A stream of batches of events, each batch in revision order. An `Err` ends the stream.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<Vec<Event>>> + Send>>;

/// Errors every backend reports the same way.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum Error {
    /// A create found the key present.
    #[error("key {key:?} already exists")]
    AlreadyExists {
        /// The key that exists.
        key: String,
    },
    /// A compare-and-swap found the key at another revision (or absent: `current` is None).
    #[error("key {key:?} was modified concurrently")]
    Conflict {
        /// The key that was compared.
        key: String,
        /// What the key holds now, `None` when it is gone.
        current: Option<Box<KeyValue>>,
    },
    /// The revision asked for has been compacted away.
    #[error("required revision {requested} has been compacted (compacted revision {compacted})")]
    Compacted {
        /// The revision asked for.
        requested: Revision,
        /// The oldest revision still kept.
        compacted: Revision,
    },
    /// The revision asked for is newer than the store's current revision.
    #[error("required revision {requested} is a future revision (current revision {current})")]
    FutureRevision {
        /// The revision asked for.
        requested: Revision,
        /// The store's latest revision.
        current: Revision,
    },
    /// A value over the backend's size limit.
    #[error("request is too large")]
    TooLarge,
    /// The backend cannot be reached or has no quorum; nothing was written.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The backend refuses writes until space is freed (etcd's NOSPACE alarm); nothing was
    /// written.
    #[error("{}", NO_SPACE_MESSAGE)]
    NoSpace,
    /// The backend did not answer in time; a write may or may not have been committed.
    #[error("store timeout: {0}")]
    Timeout(String),
    /// A stored value that could not be transformed back (decrypted), or a value that could
    /// not be transformed for storage; the message names the provider and key name.
    #[error("{0}")]
    Transform(String),
    /// Anything else the backend reports (I/O, corruption).
    #[error("store error: {0}")]
    Internal(String),
}

/// A result whose error defaults to the store's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// etcd's text for a write refused under its space quota (`rpctypes.ErrNoSpace`).
pub const NO_SPACE_MESSAGE: &str = "etcdserver: mvcc: database space exceeded";

/// One write of [`Store::write_batch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchOp {
    /// [`Store::create`]: fails with [`Error::AlreadyExists`] when the key is present.
    Create {
        /// The key to create.
        key: String,
        /// Its value.
        value: Bytes,
    },
    /// [`Store::update`]: fails with [`Error::Conflict`] unless the key's mod revision is
    /// `expected`.
    Update {
        /// The key to replace.
        key: String,
        /// Its new value.
        value: Bytes,
        /// The mod revision the key must have.
        expected: Revision,
    },
}

impl BatchOp {
    /// The key the op writes.
    pub fn key(&self) -> &str {
        match self {
            BatchOp::Create { key, .. } | BatchOp::Update { key, .. } => key,
        }
    }

    /// The value the op writes.
    pub fn value(&self) -> &Bytes {
        match self {
            BatchOp::Create { value, .. } | BatchOp::Update { value, .. } => value,
        }
    }
}

/// The store contract. Keys are UTF-8 paths such as `/registry/secrets/default/name`.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The key's current value, and the store's current revision.
    async fn get(&self, key: &str) -> Result<(Option<KeyValue>, Revision)>;

    /// Keys starting with `prefix`, in ascending order.
    async fn list(&self, prefix: &str, options: ListOptions) -> Result<ListResult>;

    /// Creates `key`; fails with [`Error::AlreadyExists`] when present. Returns the revision.
    async fn create(&self, key: &str, value: Bytes) -> Result<Revision>;

    /// Replaces `key` if its mod revision is `expected`; otherwise [`Error::Conflict`]
    /// carrying the current value (None when the key is absent). Returns the new revision.
    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<Revision>;

    /// Deletes `key` if its mod revision is `expected`; otherwise [`Error::Conflict`].
    /// Returns the revision of the delete.
    async fn delete(&self, key: &str, expected: Revision) -> Result<Revision>;

    /// Applies `ops` in order, each as [`Store::create`] or [`Store::update`] applies it
    /// alone (the same checks, values, events and key revisions), and returns each op's
    /// outcome at its index: an op whose key exists or moved fails alone, the others land.
    /// Backends commit many ops per transaction, so a batch costs one durable write where
    /// single writes cost one each. Landed ops' revisions ascend in op order; ops committed
    /// in one transaction get one revision each (SQLite) or share the transaction's (etcd,
    /// whose transactions have a single revision). A failure of the backend itself is the
    /// outcome of every op it kept from being written.
    async fn write_batch(&self, ops: Vec<BatchOp>) -> Vec<Result<Revision>> {
        let mut outcomes = Vec::with_capacity(ops.len());
        for op in ops {
            outcomes.push(match op {
                BatchOp::Create { key, value } => self.create(&key, value).await,
                BatchOp::Update { key, value, expected } => self.update(&key, value, expected).await,
            });
        }
        outcomes
    }

    /// The store's current revision (the last write's).
    async fn current_revision(&self) -> Result<Revision>;

    /// Every change to keys starting with `prefix` with a revision greater than `after`,
    /// first the ones already recorded, then new ones as they happen. Fails with
    /// [`Error::Compacted`] when history after `after` is no longer complete.
    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream>;

    /// Discards history below `revision`: later reads and watches below it fail with
    /// [`Error::Compacted`]. The latest value of every key is kept.
    async fn compact(&self, revision: Revision) -> Result<()>;

    /// The revision history has been compacted to (0 when never).
    async fn compacted_revision(&self) -> Result<Revision>;

    /// For backends whose revisions other writers share (one etcd cluster, several
    /// prefixes): writes a marker under this store's keys and returns its revision, so a
    /// watcher of this store's keys can tell it has seen everything up to a revision taken
    /// from [`Store::current_revision`] even when the revisions between went to keys it does
    /// not watch. `None` when every revision is this store's own (nothing to mark).
    async fn barrier(&self) -> Result<Option<Revision>> {
        Ok(None)
    }

    /// For a store whose values pass through a transformer ([`transform::TransformedStore`]):
    /// the store beneath and the transformer, so a reader that must go on past a value it
    /// cannot read (the watch cache) can transform values one by one. None for a plain store.
    fn transformed(
        &self,
    ) -> Option<(
        std::sync::Arc<dyn Store>,
        std::sync::Arc<dyn transform::Transformer>,
    )> {
        None
    }

    /// Alarms the backend raises that keep it from serving (etcd's `NOSPACE`, `CORRUPT`),
    /// by name; empty when none, and always for backends without alarms.
    async fn alarms(&self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
}
