//! The cached key set: refreshed when its max-age runs out, once more when a token names a
//! kid it does not have, never more often than the minimum interval, and kept (stale) while
//! the issuer cannot be reached.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::jwk::Keys;
use crate::revocation::ListFuture;

/// A key set as fetched, with how long its publisher lets it be cached.
#[derive(Debug)]
pub struct Fetched {
    /// The JWKS document.
    pub jwks: Vec<u8>,
    /// The response's `Cache-Control` max-age, if it had one.
    pub max_age: Option<Duration>,
}

/// What a key source's fetch returns.
pub type FetchFuture<'a> = Pin<Box<dyn Future<Output = Result<Fetched, String>> + Send + 'a>>;

/// Where the keys come from: the issuer's discovery and JWKS over HTTPS
/// ([`crate::OidcSource`]), or anything else that can produce a JWKS document.
pub trait KeySource: Send + Sync {
    /// Fetches the current key set.
    fn fetch(&self) -> FetchFuture<'_>;

    /// Fetches the issuer's signed revocation list, `Ok(None)` when it publishes none (the
    /// default). Fetched again after the list's max-age, as the key set is.
    fn fetch_revocations(&self) -> ListFuture<'_> {
        Box::pin(async { Ok(None) })
    }
}

/// Refresh timing.
#[derive(Clone, Copy, Debug)]
pub struct CachePolicy {
    /// The least time between two fetches, whatever asks for them (unknown kids included).
    pub min_refresh_interval: Duration,
    /// How long keys stay fresh when the response has no max-age.
    pub default_max_age: Duration,
    /// The longest a max-age is honoured.
    pub max_max_age: Duration,
}

impl CachePolicy {
    /// How long a fetched document stays fresh: its max-age (or the default), within the
    /// policy's bounds.
    pub(crate) fn age(&self, max_age: Option<Duration>) -> Duration {
        max_age
            .unwrap_or(self.default_max_age)
            .min(self.max_max_age)
            .max(self.min_refresh_interval)
    }
}

impl Default for CachePolicy {
    fn default() -> Self {
        Self {
            min_refresh_interval: Duration::from_secs(10),
            default_max_age: Duration::from_secs(300),
            max_max_age: Duration::from_secs(24 * 3600),
        }
    }
}

#[derive(Clone, Default)]
struct State {
    keys: Option<Arc<Keys>>,
    fresh_until: Option<Instant>,
    last_attempt: Option<Instant>,
    generation: u64,
}

/// The cache. Readers take a short lock for a snapshot; one refresh runs at a time and
/// concurrent callers wait for its result instead of fetching again.
pub(crate) struct KeyCache {
    source: Arc<dyn KeySource>,
    policy: CachePolicy,
    state: parking_lot::Mutex<State>,
    refresh: tokio::sync::Mutex<()>,
}

/// Why the keys are wanted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Need {
    /// Any usable keys.
    Current,
    /// The cached keys lack the token's kid.
    UnknownKid,
}

impl KeyCache {
    pub(crate) fn new(source: Arc<dyn KeySource>, policy: CachePolicy) -> Self {
        Self {
            source,
            policy,
            state: parking_lot::Mutex::new(State::default()),
            refresh: tokio::sync::Mutex::new(()),
        }
    }

    /// The keys to verify with: the cached ones while fresh, else (or for an unknown kid)
    /// the result of one refresh; stale keys when the refresh fails or is rate-limited.
    pub(crate) async fn keys(&self, need: Need) -> Result<Arc<Keys>, String> {
        let snapshot = self.state.lock().clone();
        let now = Instant::now();
        if let Some(keys) = &snapshot.keys
            && need == Need::Current
            && snapshot.fresh_until.is_some_and(|t| now < t)
        {
            return Ok(keys.clone());
        }
        let _gate = match (&snapshot.keys, need) {
            // Stale keys keep serving while one caller refreshes: an issuer that times out
            // holds up one request per interval, not every request.
            (Some(stale), Need::Current) => match self.refresh.try_lock() {
                Ok(gate) => gate,
                Err(_) => return Ok(stale.clone()),
            },
            // For an unknown kid (or no keys at all) the refresh in flight is worth waiting for.
            _ => self.refresh.lock().await,
        };
        let current = self.state.lock().clone();
        if current.generation != snapshot.generation
            && let Some(keys) = current.keys
        {
            // Another caller refreshed while this one waited.
            return Ok(keys);
        }
        let now = Instant::now();
        let rate_limited = current
            .last_attempt
            .is_some_and(|t| now.saturating_duration_since(t) < self.policy.min_refresh_interval);
        if rate_limited {
            return current
                .keys
                .ok_or_else(|| "the issuer's keys could not be fetched; retrying later".to_string());
        }
        self.state.lock().last_attempt = Some(now);
        let fetched = self
            .source
            .fetch()
            .await
            .and_then(|f| Keys::from_jwks(&f.jwks).map(|keys| (keys, f.max_age)));
        match fetched {
            Ok((keys, max_age)) => {
                let age = self.policy.age(max_age);
                let keys = Arc::new(keys);
                let mut state = self.state.lock();
                state.keys = Some(keys.clone());
                state.fresh_until = Some(Instant::now() + age);
                state.generation += 1;
                tracing::debug!(
                    keys = keys.len(),
                    max_age_seconds = age.as_secs(),
                    "fetched the issuer's keys"
                );
                Ok(keys)
            }
            Err(error) => match current.keys {
                Some(stale) => {
                    tracing::warn!(%error, "refreshing the issuer's keys failed; verifying with the cached keys");
                    Ok(stale)
                }
                None => Err(error),
            },
        }
    }
}

#[cfg(test)]
impl KeyCache {
    /// Holds the refresh gate, as a refresh in flight does.
    pub(crate) async fn hold_refresh_for_test(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.refresh.lock().await
    }
}
