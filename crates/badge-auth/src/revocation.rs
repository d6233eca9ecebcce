//! Revoked tokens: the IssuedTokens whose `spec.revoked` is set, by namespace and record
//! name (a jti, or a legacy token's Secret). Kubernetes cannot revoke one bound token; badge
//! keeps the set in memory on every server, fed by the watch of the inventory, and the
//! authenticator consults it on every request, cache hits included.
//!
//! Reads take an atomic snapshot and never lock: revocations are rare, lookups are on every
//! request, so a change copies the set and publishes the copy.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arc_swap::ArcSwap;
use parking_lot::Mutex;

/// One revoked token, as the revocation list names it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RevokedToken {
    /// The token's namespace.
    pub namespace: String,
    /// The jti, or the legacy token's Secret name.
    pub record: String,
    /// The token's expiry, unix seconds; None for legacy tokens, which never expire.
    pub expires_at: Option<i64>,
    /// A legacy token read from a Secret.
    pub legacy: bool,
}

/// One change to the set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// The token is revoked.
    Revoked(RevokedToken),
    /// The token is no longer revoked, or its record is gone.
    Cleared {
        /// The token's namespace.
        namespace: String,
        /// Its record's name.
        record: String,
    },
}

/// Namespace → record → the revoked token.
type Snapshot = HashMap<String, HashMap<String, Arc<RevokedToken>>>;

/// The revoked tokens a server knows of.
#[derive(Default)]
pub struct RevokedTokens {
    snapshot: ArcSwap<Snapshot>,
    /// Serializes writers so no change is lost between a copy and its publication.
    writer: Mutex<()>,
}

impl RevokedTokens {
    /// An empty list.
    pub fn new() -> RevokedTokens {
        RevokedTokens::default()
    }

    /// Whether the token recorded as `namespace/record` is revoked. Lock-free.
    pub fn is_revoked(&self, namespace: &str, record: &str) -> bool {
        let snapshot = self.snapshot.load();
        !snapshot.is_empty()
            && snapshot
                .get(namespace)
                .is_some_and(|records| records.contains_key(record))
    }

    /// Marks a token revoked; true if it was not already.
    pub fn insert(&self, token: RevokedToken) -> bool {
        self.apply(vec![Change::Revoked(token)]) == [true]
    }

    /// Forgets a token (its record was deleted at expiry, or un-revoked).
    pub fn remove(&self, namespace: &str, record: &str) {
        self.apply(vec![Change::Cleared {
            namespace: namespace.to_string(),
            record: record.to_string(),
        }]);
    }

    /// Applies `changes` in order with one copy of the set, not one per change: a burst of
    /// revocations seen together costs one publication. Returns, for each change, whether
    /// it revoked a token the set did not hold.
    pub fn apply(&self, changes: Vec<Change>) -> Vec<bool> {
        let _writer = self.writer.lock();
        let current = self.snapshot.load();
        let changes_anything = changes.iter().any(|change| match change {
            Change::Revoked(token) => current
                .get(&token.namespace)
                .and_then(|records| records.get(&token.record))
                .is_none_or(|known| **known != *token),
            Change::Cleared { namespace, record } => current
                .get(namespace)
                .is_some_and(|records| records.contains_key(record)),
        });
        if !changes_anything {
            return vec![false; changes.len()];
        }
        let mut next = Snapshot::clone(&current);
        let added = changes
            .into_iter()
            .map(|change| match change {
                Change::Revoked(token) => next
                    .entry(token.namespace.clone())
                    .or_default()
                    .insert(token.record.clone(), Arc::new(token))
                    .is_none(),
                Change::Cleared { namespace, record } => {
                    if let Some(records) = next.get_mut(&namespace) {
                        records.remove(&record);
                        if records.is_empty() {
                            next.remove(&namespace);
                        }
                    }
                    false
                }
            })
            .collect();
        self.snapshot.store(Arc::new(next));
        added
    }

    /// Replaces the whole set (a fresh list after the watch restarted).
    pub fn replace(&self, tokens: impl IntoIterator<Item = RevokedToken>) {
        let _writer = self.writer.lock();
        let mut next = Snapshot::new();
        for token in tokens {
            next.entry(token.namespace.clone())
                .or_default()
                .insert(token.record.clone(), Arc::new(token));
        }
        self.snapshot.store(Arc::new(next));
    }

    /// The revoked tokens not yet expired at `now`, ordered by namespace and record.
    pub fn live(&self, now: i64) -> Vec<RevokedToken> {
        let snapshot = self.snapshot.load();
        let ordered: BTreeMap<(&str, &str), &RevokedToken> = snapshot
            .iter()
            .flat_map(|(ns, records)| {
                records
                    .iter()
                    .map(move |(record, token)| ((ns.as_str(), record.as_str()), &**token))
            })
            .filter(|(_, token)| token.expires_at.is_none_or(|exp| exp >= now))
            .collect();
        ordered.into_values().cloned().collect()
    }

    /// How many tokens are revoked.
    pub fn len(&self) -> usize {
        self.snapshot.load().values().map(HashMap::len).sum()
    }

    /// Whether no token is revoked.
    pub fn is_empty(&self) -> bool {
        self.snapshot.load().is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn token(ns: &str, record: &str, exp: Option<i64>) -> RevokedToken {
        RevokedToken {
            namespace: ns.into(),
            record: record.into(),
            expires_at: exp,
            legacy: exp.is_none(),
        }
    }

    #[test]
    fn revoked_by_namespace_and_record() {
        let set = RevokedTokens::new();
        assert!(!set.is_revoked("demo", "jti-1"));
        assert!(set.insert(token("demo", "jti-1", Some(100))));
        assert!(!set.insert(token("demo", "jti-1", Some(100))));
        assert!(set.is_revoked("demo", "jti-1"));
        assert!(!set.is_revoked("demo", "jti-2"));
        assert!(!set.is_revoked("other", "jti-1"));
        set.remove("demo", "jti-1");
        assert!(!set.is_revoked("demo", "jti-1"));
        assert!(set.is_empty());
    }

    #[test]
    fn live_drops_expired_and_keeps_legacy() {
        let set = RevokedTokens::new();
        set.insert(token("b", "late", Some(200)));
        set.insert(token("a", "early", Some(50)));
        set.insert(token("a", "secret-token", None));
        let live: Vec<String> = set.live(100).into_iter().map(|t| t.record).collect();
        assert_eq!(live, ["secret-token", "late"]);
        assert_eq!(set.len(), 3);
    }

    #[test]
    fn changes_apply_in_order_with_one_publication() {
        let set = RevokedTokens::new();
        set.insert(token("a", "old", Some(1)));
        let before = set.snapshot.load_full();
        let cleared = |ns: &str, record: &str| Change::Cleared {
            namespace: ns.into(),
            record: record.into(),
        };
        let added = set.apply(vec![
            Change::Revoked(token("a", "new", Some(2))),
            Change::Revoked(token("a", "old", Some(1))),
            cleared("a", "gone"),
            Change::Revoked(token("b", "brief", Some(3))),
            cleared("b", "brief"),
        ]);
        assert_eq!(added, [true, false, false, true, false]);
        assert!(set.is_revoked("a", "new") && set.is_revoked("a", "old"));
        assert!(!set.is_revoked("b", "brief"));
        assert_eq!(set.len(), 2);
        // A batch that changes nothing publishes nothing.
        let unchanged = set.snapshot.load_full();
        assert!(!Arc::ptr_eq(&before, &unchanged));
        assert_eq!(
            set.apply(vec![
                cleared("a", "never"),
                Change::Revoked(token("a", "new", Some(2)))
            ]),
            [false, false]
        );
        assert!(Arc::ptr_eq(&unchanged, &set.snapshot.load_full()));
    }

    #[test]
    fn replace_swaps_the_whole_set() {
        let set = RevokedTokens::new();
        set.insert(token("a", "old", Some(1)));
        set.replace([token("a", "new", Some(2))]);
        assert!(!set.is_revoked("a", "old"));
        assert!(set.is_revoked("a", "new"));
    }

    #[test]
    fn a_reader_holds_its_snapshot_while_a_writer_publishes() {
        let set = Arc::new(RevokedTokens::new());
        let writer = {
            let set = set.clone();
            std::thread::spawn(move || {
                for i in 0..200 {
                    set.insert(token("ns", &format!("jti-{i}"), Some(i)));
                }
            })
        };
        writer.join().unwrap();
        assert_eq!(set.len(), 200);
        assert!((0..200).all(|i| set.is_revoked("ns", &format!("jti-{i}"))));
    }
}
