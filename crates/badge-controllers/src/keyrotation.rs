//! The ServiceAccount signing keys' scheduled writes: automatic rotation
//! (`--service-account-key-rotation-period`), dropping keys whose tokens have all expired from
//! the stored ring, and sealing a ring an older version stored in the clear. Upstream has no
//! counterpart (rotation is an operator procedure there); this follows the key ring's
//! schedule (`badge_token::keyset`): when the signer is older than the period the next key is
//! published, signs after the publish lead, and the old key leaves the JWKS once its tokens
//! have expired.
//!
//! Only the lease holder writes, so a deployment rotates once; the ring is shared through
//! the store, where every server follows it with a watch (`badge-keys`). Nothing polls: the
//! controller sleeps until the ring's next transition and wakes early when the ring changes
//! or leadership moves.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use badge_api::Status;
use tokio::sync::watch;

use crate::leader::Leading;

/// The key holder the controller drives; the server's ServiceAccount keys implement it.
pub trait RotatingKeys: Send + Sync + 'static {
    /// When (unix seconds) anything next happens to the ring: a key activates, a rotation
    /// falls due, a retired key leaves the JWKS. None: nothing is scheduled.
    fn next_transition(&self) -> Option<i64>;
    /// Applies what is due now: drops keys whose tokens have all expired and, when the
    /// signer is older than the period, publishes the next key.
    fn apply_due(&self) -> impl Future<Output = Result<(), Status>> + Send;
    /// Notified whenever the ring changes (written here or by another server).
    fn ring_changes(&self) -> watch::Receiver<i64>;
}

impl RotatingKeys for badge_keys::ServiceAccountKeys {
    fn next_transition(&self) -> Option<i64> {
        badge_keys::ServiceAccountKeys::next_transition(self)
    }

    async fn apply_due(&self) -> Result<(), Status> {
        badge_keys::ServiceAccountKeys::apply_due(self).await
    }

    fn ring_changes(&self) -> watch::Receiver<i64> {
        badge_keys::ServiceAccountKeys::ring_changes(self)
    }
}

impl crate::LegacyTokenSigner for badge_keys::ServiceAccountKeys {
    fn sign_legacy(&self, claims: &badge_token::LegacyClaims) -> Result<badge_token::jwt::Token, String> {
        self.sign(&claims.to_value()).map_err(|s| s.message)
    }

    /// A key verifies while it is in the verification set; with none loaded nothing is
    /// judged stale.
    fn verifies_kid(&self, kid: &str) -> bool {
        let keys = self.public_keys();
        keys.is_empty() || keys.iter().any(|k| k.kid() == kid)
    }

    fn key_changes(&self) -> Option<tokio::sync::watch::Receiver<Vec<String>>> {
        Some(self.verifying_kids())
    }
}

const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Starts the controller; it runs until the process ends.
pub fn spawn<K: RotatingKeys>(keys: Arc<K>, mut leading: Option<Leading>) {
    tokio::spawn(async move {
        let mut changes = keys.ring_changes();
        let mut backoff = Duration::from_millis(250);
        loop {
            if let Some(leads) = leading.as_mut()
                && leads.wait_for(|leads| *leads).await.is_err()
            {
                return;
            }
            changes.borrow_and_update();
            let wait = match keys.apply_due().await {
                Ok(()) => {
                    backoff = Duration::from_millis(250);
                    keys.next_transition().map(badge_keys::until)
                }
                Err(status) => {
                    tracing::warn!(error = %status, "service account key rotation failed; retrying");
                    let wait = backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    Some(wait)
                }
            };
            let asleep = async {
                match wait {
                    Some(wait) => tokio::time::sleep(wait).await,
                    None => std::future::pending().await,
                }
            };
            let deposed = async {
                match leading.as_mut() {
                    Some(leads) => {
                        let _ = leads.wait_for(|leads| !*leads).await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = asleep => {}
                changed = changes.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                () = deposed => {}
            }
        }
    });
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use parking_lot::Mutex;

    /// A ring stand-in: one rotation due `due` seconds from the start, recorded when applied.
    struct Scripted {
        due: Mutex<Option<i64>>,
        applied: Mutex<Vec<i64>>,
        changes: watch::Sender<i64>,
    }

    impl RotatingKeys for Scripted {
        fn next_transition(&self) -> Option<i64> {
            *self.due.lock()
        }

        async fn apply_due(&self) -> Result<(), Status> {
            let now = badge_api::clock::now().as_second();
            let mut due = self.due.lock();
            if due.is_some_and(|d| d <= now) {
                *due = None;
                self.applied.lock().push(now);
            }
            Ok(())
        }

        fn ring_changes(&self) -> watch::Receiver<i64> {
            self.changes.subscribe()
        }
    }

    #[tokio::test]
    async fn applies_when_due_only_while_leading_and_wakes_on_ring_changes() {
        let now = badge_api::clock::now().as_second();
        let keys = Arc::new(Scripted {
            due: Mutex::new(Some(now - 1)),
            applied: Mutex::new(Vec::new()),
            changes: watch::channel(0).0,
        });
        let (leads, leading) = watch::channel(false);
        spawn(keys.clone(), Some(leading));
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(keys.applied.lock().is_empty(), "applied without the lease");

        leads.send_replace(true);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while keys.applied.lock().is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "never applied");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        // A change another server made (here: a rotation due at once) wakes the controller
        // although nothing was scheduled.
        *keys.due.lock() = Some(now - 1);
        keys.changes.send_replace(1);
        while keys.applied.lock().len() < 2 {
            assert!(tokio::time::Instant::now() < deadline, "not woken by the change");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
