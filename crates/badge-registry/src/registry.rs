//! Typed objects over the store: the generic create/get/list/update/delete of upstream's
//! `registry/generic/registry.Store`, driven by the resource table and the strategies.
//! Reads and paging are in `read`, create/update/delete in `write`, object metadata checks
//! in `metadata`, and the Status a store failure becomes in `errors`.

mod batch;
mod errors;
mod metadata;
mod read;
mod write;

use errors::too_large_resource_version;
use metadata::{generate_name, validate_meta};

pub use batch::{BatchWrite, SELF_WRITTEN_KINDS, SelfWritten, SelfWrittenStatus, ServerMetadata};
pub use errors::store_error;
pub use metadata::random_suffix;
pub use read::{Filter, ListPage, ReadFrom};
pub use write::{DeleteOptions, DeleteOutcome, WriteOptions};

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use badge_api::status::Status;
use badge_store::{Revision, Store};

use crate::cache::WatchCache;

/// How long a consistent read waits for the cache to catch up with the store.
const FRESHNESS_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a consistent read waits for the cache before asking the store for a barrier.
const BARRIER_AFTER: Duration = Duration::from_millis(5);

/// The registry.
pub struct Registry {
    store: Arc<dyn Store>,
    cache: Arc<WatchCache>,
    /// When the cache was last confirmed to hold every committed write (see [`Registry::sync`]).
    confirmed: parking_lot::Mutex<std::time::Instant>,
    /// How long the cache may go unconfirmed before it is no longer served as current.
    stale_read_bound: Duration,
    /// The latest revision this registry wrote, so a read can wait for its own writes
    /// without asking the store.
    written: AtomicI64,
}

/// How long after the cache was last confirmed current a consistent read may still be
/// served from it while the store cannot say what its revision is (etcd without quorum).
/// Without quorum nothing new commits, so such reads miss at most the writes committed
/// between the last confirmation and the outage; a server cut off from a majority that
/// goes on writing serves reads this much behind at worst, then answers 503.
pub const STALE_READ_BOUND: Duration = Duration::from_secs(30);
/// How often an idle server confirms its cache is current, so the bound above holds from
/// the moment an outage begins.
const CONFIRM_INTERVAL: Duration = Duration::from_secs(1);
/// How long a readiness probe waits for the store's alarms.
const ALARM_TIMEOUT: Duration = Duration::from_millis(500);

impl Registry {
    /// Starts the watch cache over `store` and returns once it holds the store's state.
    pub async fn start(store: Arc<dyn Store>, watch_history: usize) -> Arc<Registry> {
        Registry::start_with_bound(store, watch_history, STALE_READ_BOUND).await
    }

    /// [`Registry::start`] with another bound than [`STALE_READ_BOUND`].
    pub async fn start_with_bound(
        store: Arc<dyn Store>,
        watch_history: usize,
        stale_read_bound: Duration,
    ) -> Arc<Registry> {
        let cache = Arc::new(WatchCache::new(watch_history));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(cache.clone().run(store.clone(), ready_tx));
        // The sender is only dropped after sending, or if the task ends, which it never does
        // before the first list succeeds.
        let _ = ready_rx.await;
        let registry = Arc::new(Registry {
            store,
            cache,
            confirmed: parking_lot::Mutex::new(std::time::Instant::now()),
            stale_read_bound,
            written: AtomicI64::new(0),
        });
        let weak = Arc::downgrade(&registry);
        tokio::spawn(async move {
            let mut was_current = true;
            loop {
                tokio::time::sleep(CONFIRM_INTERVAL).await;
                let Some(registry) = weak.upgrade() else { return };
                let _ = registry.confirm_current().await;
                let current = registry.confirmed.lock().elapsed() <= registry.stale_read_bound;
                if was_current && !current {
                    tracing::warn!(
                        bound_seconds = registry.stale_read_bound.as_secs(),
                        "the watch cache could not be confirmed current within the stale-read bound; consistent reads fail and /readyz reports etcd failed"
                    );
                } else if !was_current && current {
                    tracing::info!("the watch cache is confirmed current again");
                }
                was_current = current;
            }
        });
        registry
    }

    /// The watch cache every read and watch is served from.
    pub fn cache(&self) -> &Arc<WatchCache> {
        &self.cache
    }

    /// The store underneath, for keys outside the API.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// How long ago the cache was last confirmed to hold every committed write.
    pub fn unconfirmed_for(&self) -> Duration {
        self.confirmed.lock().elapsed()
    }

    /// How long the cache may go unconfirmed before it is no longer served as current.
    pub fn stale_read_bound(&self) -> Duration {
        self.stale_read_bound
    }

    /// Whether the storage is fit to serve: the cache was confirmed current within the
    /// stale-read bound (by the confirmations reads and the idle loop already make), and the
    /// store raises no alarm that refuses writes (etcd's NOSPACE). The reason when not.
    pub async fn storage_health(&self) -> Result<(), String> {
        let unconfirmed = self.confirmed.lock().elapsed();
        if unconfirmed > self.stale_read_bound {
            return Err(format!(
                "the storage could not be confirmed current for {}s",
                unconfirmed.as_secs()
            ));
        }
        // Unreachable or slow is the confirmation's business, not this probe's.
        match tokio::time::timeout(ALARM_TIMEOUT, self.store.alarms()).await {
            Ok(Ok(alarms)) if !alarms.is_empty() => {
                Err(format!("the storage raised alarms: {}", alarms.join(", ")))
            }
            _ => Ok(()),
        }
    }

    /// Waits until the cache reflects every write committed before this call. When the
    /// store cannot tell its revision (unavailable, or timing out), the cache as it is
    /// stands in for up to [`STALE_READ_BOUND`] after it was last confirmed current.
    pub async fn sync(&self) -> Result<Revision, Status> {
        match self.confirm_current().await {
            Err(badge_store::Error::Unavailable(_) | badge_store::Error::Timeout(_))
                if self.confirmed.lock().elapsed() <= self.stale_read_bound =>
            {
                Ok(self.cache.revision())
            }
            Err(e) => Err(store_error(e)),
            Ok((current, false)) => Err(Status::timeout(format!(
                "Too large resource version: {current}, current: {}",
                self.cache.revision()
            ))),
            Ok((current, true)) => Ok(current),
        }
    }

    /// Asks the store for its revision and waits for the cache to reach it; the revision,
    /// and whether the cache reached it in time.
    async fn confirm_current(&self) -> badge_store::Result<(Revision, bool)> {
        let asked = std::time::Instant::now();
        let mut current = self.store.current_revision().await?;
        if !self.cache.wait_for(current, BARRIER_AFTER).await {
            // Still behind: the watch is lagging, or the revisions between went to keys
            // outside this store (etcd shared under another prefix), which the watch never
            // delivers. A marker written now is delivered after everything before it.
            if let Some(marker) = self.store.barrier().await? {
                current = marker;
            }
            if !self.cache.wait_for(current, FRESHNESS_TIMEOUT).await {
                return Ok((current, false));
            }
        }
        let mut confirmed = self.confirmed.lock();
        *confirmed = (*confirmed).max(asked);
        Ok((current, true))
    }

    fn wrote(&self, revision: Revision) -> Revision {
        self.written.fetch_max(revision, Ordering::Relaxed);
        revision
    }

    /// Waits until the cache holds every write this registry acknowledged before the call
    /// (read your writes, without a store round trip); on timeout, for every committed one.
    pub async fn sync_own_writes(&self) -> Result<(), Status> {
        let written = self.written.load(Ordering::Relaxed);
        if self.cache.revision() >= written || self.cache.wait_for(written, FRESHNESS_TIMEOUT).await {
            return Ok(());
        }
        self.sync().await.map(|_| ())
    }

    async fn wait_read(&self, read: ReadFrom) -> Result<(), Status> {
        match read {
            ReadFrom::Latest => self.sync().await.map(|_| ()),
            ReadFrom::Any | ReadFrom::Recent | ReadFrom::Exact(_) => Ok(()),
            ReadFrom::NotOlderThan(rv) => {
                if self.cache.wait_for(rv, FRESHNESS_TIMEOUT).await {
                    Ok(())
                } else {
                    Err(too_large_resource_version(rv, self.cache.revision()))
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use badge_store::intercept::{Call, Hook, Intercepted};
    use badge_store::sqlite::SqliteStore;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Faults of the embedded store, set at will, as an etcd cluster can have them:
    /// unreachable, or alarmed.
    #[derive(Default)]
    struct Faults {
        down: AtomicBool,
        alarms: parking_lot::Mutex<Vec<String>>,
    }

    impl Hook for Faults {
        fn before(&self, _call: &Call<'_>) -> badge_store::Result<()> {
            if self.down.load(Ordering::SeqCst) {
                return Err(badge_store::Error::Unavailable("no leader".into()));
            }
            Ok(())
        }

        fn alarms(&self) -> Option<Vec<String>> {
            Some(self.alarms.lock().clone())
        }
    }

    fn faulty(dir: &std::path::Path) -> (Arc<Intercepted<Arc<Faults>>>, Arc<Faults>) {
        let faults = Arc::new(Faults::default());
        let inner = Arc::new(SqliteStore::open(&dir.join("s.db")).unwrap());
        (Arc::new(Intercepted::new(inner, faults.clone())), faults)
    }

    async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
        for _ in 0..200 {
            if check().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("timed out waiting for {what}");
    }

    #[tokio::test]
    async fn storage_health_follows_the_confirmations_and_the_alarms() {
        let dir = tempfile::tempdir().unwrap();
        let (store, faults) = faulty(dir.path());
        let registry = Registry::start_with_bound(store.clone(), 100, Duration::from_millis(300)).await;
        registry.storage_health().await.unwrap();

        // Unreachable: the cache still answers consistent reads within the bound, and past
        // it neither they nor readiness pass.
        faults.down.store(true, Ordering::SeqCst);
        eventually("the bound to be crossed", async || {
            registry.storage_health().await.is_err()
        })
        .await;
        let reason = registry.storage_health().await.unwrap_err();
        assert!(
            reason.starts_with("the storage could not be confirmed current for "),
            "{reason}"
        );
        assert_eq!(registry.sync().await.unwrap_err().code, 503);

        faults.down.store(false, Ordering::SeqCst);
        eventually("a confirmation", async || registry.storage_health().await.is_ok()).await;
        registry.sync().await.unwrap();

        // Reachable and current, but refusing writes.
        faults.alarms.lock().push("NOSPACE".into());
        assert_eq!(
            registry.storage_health().await.unwrap_err(),
            "the storage raised alarms: NOSPACE"
        );
        faults.alarms.lock().clear();
        registry.storage_health().await.unwrap();
    }

    #[tokio::test]
    async fn own_writes_are_read_back_from_the_cache_without_asking_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let (store, faults) = faulty(dir.path());
        let registry = Registry::start(store.clone(), 100).await;
        let namespaces = badge_api::resources::lookup("", "v1", "namespaces").unwrap();
        registry
            .create(
                namespaces,
                "",
                serde_json::json!({"metadata": {"name": "demo"}}),
                &WriteOptions::default(),
            )
            .await
            .unwrap();
        // The store can no longer say its revision: only the registry's own record of its
        // writes tells the read what to wait for.
        faults.down.store(true, Ordering::SeqCst);
        registry.sync_own_writes().await.unwrap();
        assert!(registry.get_cached(namespaces, "", "demo").is_some());
    }

    #[test]
    fn a_full_store_answers_with_etcds_text() {
        let status = store_error(badge_store::Error::NoSpace);
        assert_eq!(status.code, 500);
        assert_eq!(status.reason, "");
        assert_eq!(status.message, "etcdserver: mvcc: database space exceeded");
    }
}
