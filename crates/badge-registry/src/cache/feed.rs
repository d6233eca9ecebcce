//! One watch of the whole cache shared by every consumer that wants each event (the
//! controllers): an event wakes one task, which hands it to each sink in turn, rather than
//! waking a task per consumer. A burst of writes (a usage flush writes a thousand records)
//! costs each sink a function call per event, not a task wake-up.

use std::sync::Arc;

use parking_lot::Mutex;

use super::{CacheEvent, CacheWatch, WatchCache, WatchEnd};

/// Takes the cache's events, in revision order, on the shared feeding task. Called often
/// and in line with every other sink: it must not wait.
pub trait Sink: Send + Sync {
    /// One event. After a relist or a lag, every object is handed again as ADDED.
    fn event(&self, event: &CacheEvent);
}

/// The sinks of a cache, and whether their task runs.
#[derive(Default)]
pub(super) struct Feed {
    sinks: Mutex<Sinks>,
}

#[derive(Default)]
struct Sinks {
    all: Vec<Arc<dyn Sink>>,
    running: bool,
}

const EVERYTHING: &str = "/registry/";

impl WatchCache {
    /// Hands `sink` an ADDED event for every object the cache holds, then every later
    /// event, from the task all sinks share (started with the first).
    pub fn feed(self: &Arc<Self>, sink: Arc<dyn Sink>) {
        // Held while the snapshot is handed over: the task hands out no event meanwhile.
        // Every event it handed out before is part of the snapshot; every later one reaches
        // this sink too (an event the snapshot already holds may come twice, which a sink
        // that queues keys absorbs).
        let mut sinks = self.feed.sinks.lock();
        let mut watch = self.watch_current(EVERYTHING);
        for event in watch.initial.drain(..) {
            sink.event(&event);
        }
        sinks.all.push(sink);
        if !sinks.running {
            sinks.running = true;
            tokio::spawn(self.clone().run_feed(watch));
        }
    }

    async fn run_feed(self: Arc<Self>, mut watch: CacheWatch) {
        loop {
            match watch.next().await {
                Ok(event) => {
                    for sink in self.feed.sinks.lock().all.iter() {
                        sink.event(&event);
                    }
                }
                // Events were missed: every sink sees the whole state again.
                Err(WatchEnd::Lagged | WatchEnd::Reset) => {
                    let sinks = self.feed.sinks.lock();
                    watch = self.watch_current(EVERYTHING);
                    for event in watch.initial.drain(..) {
                        for sink in sinks.all.iter() {
                            sink.event(&event);
                        }
                    }
                }
                Err(WatchEnd::Closed) => return,
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::cache::tests::put;
    use crate::cache::{CachedObject, EventType};

    /// Keeps the keys it was handed, and counts them for a test to wait on.
    struct Recording {
        seen: Mutex<Vec<(EventType, String)>>,
        count: tokio::sync::watch::Sender<usize>,
    }

    impl Recording {
        fn new() -> Arc<Recording> {
            Arc::new(Recording {
                seen: Mutex::default(),
                count: tokio::sync::watch::channel(0).0,
            })
        }

        /// The events handed over so far, once there are `n`.
        async fn after(&self, n: usize) -> Vec<(EventType, String)> {
            self.count.subscribe().wait_for(|seen| *seen >= n).await.unwrap();
            self.seen.lock().clone()
        }
    }

    impl Sink for Recording {
        fn event(&self, event: &CacheEvent) {
            self.seen.lock().push((event.kind, event.key.clone()));
            self.count.send_modify(|n| *n += 1);
        }
    }

    fn added(keys: &[&str]) -> Vec<(EventType, String)> {
        keys.iter()
            .map(|k| (EventType::Added, format!("/registry/configmaps/d/{k}")))
            .collect()
    }

    #[tokio::test]
    async fn every_sink_gets_the_state_then_each_event_and_the_whole_state_again_after_a_relist() {
        let cache = Arc::new(WatchCache::new(100));
        let listed = CachedObject::new("/registry/configmaps/d/a", b"{}", 1).unwrap();
        cache.reset(vec![Arc::new(listed)], BTreeMap::new(), 1);

        let first = Recording::new();
        cache.feed(first.clone());
        assert_eq!(first.after(1).await, added(&["a"]), "the state, at once");
        cache.apply(vec![put("/registry/configmaps/d/b", 2)], None);
        assert_eq!(first.after(2).await, added(&["a", "b"]));

        // A sink fed later starts from the state as it is then, and shares the task.
        let second = Recording::new();
        cache.feed(second.clone());
        assert_eq!(second.after(2).await, added(&["a", "b"]));
        cache.apply(vec![put("/registry/configmaps/d/b", 3)], None);
        let modified = (EventType::Modified, "/registry/configmaps/d/b".to_string());
        assert_eq!(first.after(3).await[2], modified);
        assert_eq!(second.after(3).await[2], modified);

        // A relist: what changed while the cache was cut off was never an event, so every
        // sink is handed the whole new state.
        let relisted = CachedObject::new("/registry/configmaps/d/z", b"{}", 10).unwrap();
        cache.reset(vec![Arc::new(relisted)], BTreeMap::new(), 10);
        cache.apply(vec![put("/registry/configmaps/d/y", 11)], None);
        for sink in [&first, &second] {
            let seen = sink.after(5).await;
            // As one list of the state, or the relist's state then the write after it.
            let mut resynced = seen[3..].to_vec();
            resynced.sort_by(|a, b| a.1.cmp(&b.1));
            assert_eq!(resynced, added(&["y", "z"]), "{seen:?}");
        }
    }
}
