//! A small controller runtime: cache events are mapped to keys, keys are queued without
//! duplicates, one worker reconciles them, failures are retried with backoff.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use badge_api::Status;
use badge_registry::{CacheEvent, Registry};
use parking_lot::Mutex;
use tokio::sync::Notify;

/// What a reconcile asks for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing more to do for the key.
    Done,
    /// Reconcile the key again after this long.
    RequeueAfter(Duration),
}

type KeysOf = Box<dyn Fn(&CacheEvent) -> Vec<String> + Send + Sync>;

/// A queue of keys fed by the watch cache.
pub struct Controller {
    name: &'static str,
    registry: Arc<Registry>,
    keys_of: KeysOf,
    /// A deque: a watch's initial list can queue one key per object (an IssuedToken each).
    queue: Mutex<(VecDeque<String>, HashSet<String>)>,
    wake: Notify,
    /// Reconcile only while this server leads (None: always).
    leading: Option<crate::leader::Leading>,
}

impl Controller {
    /// A controller named `name`, queueing the keys `keys_of` picks from each cache event.
    pub fn new(
        name: &'static str,
        registry: Arc<Registry>,
        keys_of: impl Fn(&CacheEvent) -> Vec<String> + Send + Sync + 'static,
    ) -> Arc<Controller> {
        Arc::new(Controller {
            name,
            registry,
            keys_of: Box::new(keys_of),
            queue: Mutex::new((VecDeque::new(), HashSet::new())),
            wake: Notify::new(),
            leading: None,
        })
    }

    /// Makes the controller wait for leadership before each reconcile.
    pub fn with_leader_election(self: Arc<Self>, leading: Option<crate::leader::Leading>) -> Arc<Self> {
        match Arc::try_unwrap(self) {
            Ok(mut controller) => {
                controller.leading = leading;
                Arc::new(controller)
            }
            Err(shared) => shared,
        }
    }

    /// Queues `key`, unless it is already queued.
    pub fn enqueue(&self, key: String) {
        let mut queue = self.queue.lock();
        if queue.1.insert(key.clone()) {
            queue.0.push_back(key);
            drop(queue);
            self.wake.notify_one();
        }
    }

    fn pop(&self) -> Option<String> {
        let mut queue = self.queue.lock();
        let key = queue.0.pop_front()?;
        queue.1.remove(&key);
        Some(key)
    }

    /// Runs the feeder and the worker.
    pub fn spawn<F, Fut>(self: Arc<Self>, reconcile: F)
    where
        F: Fn(String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Action, Status>> + Send + 'static,
    {
        // Fed from the cache's shared task: every object as ADDED first, which is also the
        // resync after a relist or a lag.
        self.registry.cache().feed(self.clone());
        let worker = self;
        let reconcile = Arc::new(reconcile);
        tokio::spawn(async move {
            let mut failures: std::collections::HashMap<String, u32> = Default::default();
            let mut leading = worker.leading.clone();
            loop {
                if let Some(leading) = leading.as_mut()
                    && leading.wait_for(|l| *l).await.is_err()
                {
                    return;
                }
                let Some(key) = worker.pop() else {
                    worker.wake.notified().await;
                    continue;
                };
                match reconcile(key.clone()).await {
                    Ok(Action::Done) => {
                        failures.remove(&key);
                    }
                    Ok(Action::RequeueAfter(delay)) => worker.clone().requeue_after(key, delay),
                    Err(status) => {
                        let n = failures.entry(key.clone()).or_insert(0);
                        *n += 1;
                        let delay = Duration::from_millis(5u64 << (*n).min(12)).min(Duration::from_secs(30));
                        tracing::warn!(controller = worker.name, %key, error = %status, "reconcile failed; retrying");
                        worker.clone().requeue_after(key, delay);
                    }
                }
            }
        });
    }

    fn requeue_after(self: Arc<Self>, key: String, delay: Duration) {
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            self.enqueue(key);
        });
    }
}

impl badge_registry::cache::Sink for Controller {
    fn event(&self, event: &CacheEvent) {
        for key in (self.keys_of)(event) {
            self.enqueue(key);
        }
    }
}
