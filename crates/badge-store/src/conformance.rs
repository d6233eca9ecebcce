//! The conformance suite: what every [`Store`] backend must do, as executable checks
//! (badge's counterpart of kube-apiserver's `storage/testing/store_tests.go`).
//!
//! Each case is a public async function that takes an EMPTY store (no keys; its revision
//! need not be 0) and panics with a message saying what went wrong. Run them all for a
//! backend with [`conformance_tests!`](crate::conformance_tests), one `#[tokio::test]` per
//! case, or with [`run_all`]:
//!
//! ```ignore
//! mod conformance {
//!     // `make` returns a fixture that owns the store and whatever it needs (a temporary
//!     // directory, a server) and implements `AsRef<dyn Store>`; `Arc<dyn Store>` does.
//!     badge_store::conformance_tests!(|| async { make_fixture().await });
//! }
//! ```
//!
//! Revisions are compared with each other, never with absolute numbers, so a backend whose
//! revisions do not start at 0 or do not step by 1 (etcd) passes too. Nothing else may
//! write to the store while a case runs: cases check the current revision exactly.
//!
//! Semantics pinned down here beyond the trait's docs:
//! - a failed write (AlreadyExists, Conflict, TooLarge) does not change the revision;
//! - compaction at C keeps revision C: lists at C and watches after C - 1 still work;
//!   compacting at or below the compacted revision is a no-op; above the current revision
//!   it fails with FutureRevision;
//! - a watch below the compacted revision fails with Compacted either from `watch` itself
//!   or as the stream's first item;
//! - values up to 1 MiB are accepted; 8 MiB is refused with TooLarge;
//! - a batch's landed ops have revisions above the batch's start, ascending in op order
//!   (equal within one transaction of a backend whose transactions share one), and the
//!   store's revision afterwards is the last one; a refused op leaves its key as it was.

#![allow(clippy::unwrap_used, reason = "test support: a failed check panics by design")]

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;

use crate::{
    BatchOp, Error, Event, EventKind, KeyValue, ListOptions, ListResult, Revision, Store, WatchStream,
};

/// How long a watch may take to deliver an expected event.
const WAIT: Duration = Duration::from_secs(10);
/// How long a watch is observed to deliver nothing more.
const QUIET: Duration = Duration::from_millis(200);

/// One conformance case.
pub type Case = for<'a> fn(&'a dyn Store) -> BoxFuture<'a, ()>;

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        /// Every case, by name, in the order [`run_all`] runs them.
        pub const CASES: &[(&str, Case)] = &[$((stringify!($name), |store| Box::pin($name(store)))),*];
    };
}

cases!(
    create_and_get,
    create_existing_fails,
    update_compare_and_swap,
    delete_compare_and_swap,
    revisions_strictly_increase,
    create_and_mod_revisions,
    recreate_after_delete,
    list_prefix,
    list_order,
    list_paging,
    list_at_old_revision,
    list_compacted,
    list_future_revision,
    compaction_keeps_latest_values,
    compact_bounds,
    watch_backlog_then_live,
    watch_from_start,
    watch_only_new,
    watch_prefix_filter,
    watch_compacted,
    watch_delete_carries_previous_value,
    watch_started_during_writes,
    watch_many_events,
    multiple_watchers,
    concurrent_compare_and_swap,
    binary_values,
    rejects_oversized_values,
    batch_outcomes_apart,
    batch_watch_events_in_order,
    batch_many_ops,
);

/// Instantiates every conformance case as a `#[tokio::test]` (multi-threaded runtime) in
/// the module it is invoked in. `$make` is called once per test, as `($make)().await`, and
/// must yield a fixture implementing `AsRef<dyn Store>` over an empty store. The invoking
/// crate needs `tokio` with the `macros` and `rt-multi-thread` features.
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::__conformance_tests!(
            $make;
            create_and_get,
            create_existing_fails,
            update_compare_and_swap,
            delete_compare_and_swap,
            revisions_strictly_increase,
            create_and_mod_revisions,
            recreate_after_delete,
            list_prefix,
            list_order,
            list_paging,
            list_at_old_revision,
            list_compacted,
            list_future_revision,
            compaction_keeps_latest_values,
            compact_bounds,
            watch_backlog_then_live,
            watch_from_start,
            watch_only_new,
            watch_prefix_filter,
            watch_compacted,
            watch_delete_carries_previous_value,
            watch_started_during_writes,
            watch_many_events,
            multiple_watchers,
            concurrent_compare_and_swap,
            binary_values,
            rejects_oversized_values,
            batch_outcomes_apart,
            batch_watch_events_in_order,
            batch_many_ops,
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests {
    ($make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let fixture = ($make)().await;
                let store = ::core::convert::AsRef::<dyn $crate::Store>::as_ref(&fixture);
                if ::tokio::time::timeout(
                    ::std::time::Duration::from_secs(120),
                    $crate::conformance::$name(store),
                )
                .await
                .is_err()
                {
                    panic!("conformance case {} timed out", stringify!($name));
                }
            }
        )*

        /// Keeps this list and `CASES` in step.
        #[test]
        fn conformance_covers_every_case() {
            let listed: &[&str] = &[$(stringify!($name)),*];
            let all: ::std::vec::Vec<&str> =
                $crate::conformance::CASES.iter().map(|(name, _)| *name).collect();
            assert_eq!(listed, all.as_slice(), "conformance_tests! and CASES list different cases");
        }
    };
}

/// Runs every case in turn, each on a fresh fixture from `make`; the first failure
/// panics (the case's name is printed to stderr before it runs).
pub async fn run_all<F, Fut, S>(mut make: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = S>,
    S: AsRef<dyn Store>,
{
    for (name, case) in CASES {
        eprintln!("conformance: {name}");
        let fixture = make().await;
        case(fixture.as_ref()).await;
    }
}

// ---- helpers -------------------------------------------------------------------------

fn val(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn kv(key: &str, value: &str, create_revision: Revision, mod_revision: Revision) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: val(value),
        create_revision,
        mod_revision,
    }
}

fn put(key: &str, value: &str, revision: Revision, create_revision: Revision) -> Event {
    Event {
        kind: EventKind::Put,
        key: key.to_owned(),
        revision,
        value: val(value),
        create_revision,
    }
}

fn deleted(key: &str, previous: &str, revision: Revision, create_revision: Revision) -> Event {
    Event {
        kind: EventKind::Delete,
        key: key.to_owned(),
        revision,
        value: val(previous),
        create_revision,
    }
}

async fn current(store: &dyn Store) -> Revision {
    store
        .current_revision()
        .await
        .unwrap_or_else(|e| panic!("current_revision: {e:?}"))
}

async fn create(store: &dyn Store, key: &str, value: &str) -> Revision {
    store
        .create(key, val(value))
        .await
        .unwrap_or_else(|e| panic!("create {key:?}: {e:?}"))
}

async fn update(store: &dyn Store, key: &str, value: &str, expected: Revision) -> Revision {
    store
        .update(key, val(value), expected)
        .await
        .unwrap_or_else(|e| panic!("update {key:?} at {expected}: {e:?}"))
}

async fn delete(store: &dyn Store, key: &str, expected: Revision) -> Revision {
    store
        .delete(key, expected)
        .await
        .unwrap_or_else(|e| panic!("delete {key:?} at {expected}: {e:?}"))
}

async fn get(store: &dyn Store, key: &str) -> (Option<KeyValue>, Revision) {
    store
        .get(key)
        .await
        .unwrap_or_else(|e| panic!("get {key:?}: {e:?}"))
}

async fn list(store: &dyn Store, prefix: &str, options: ListOptions) -> ListResult {
    store
        .list(prefix, options.clone())
        .await
        .unwrap_or_else(|e| panic!("list {prefix:?} {options:?}: {e:?}"))
}

fn at(revision: Revision) -> ListOptions {
    ListOptions {
        revision: Some(revision),
        ..ListOptions::default()
    }
}

fn keys(items: &[KeyValue]) -> Vec<&str> {
    items.iter().map(|kv| kv.key.as_str()).collect()
}

fn revisions(events: &[Event]) -> Vec<Revision> {
    events.iter().map(|e| e.revision).collect()
}

/// Asserts the store's current revision.
async fn assert_current(store: &dyn Store, expected: Revision, context: &str) {
    let now = current(store).await;
    assert_eq!(now, expected, "{context}: current revision");
}

/// Lists everything under `prefix` at `revision`, paging by `page` (0: one page), and
/// checks it against `expected`.
async fn assert_list_at(
    store: &dyn Store,
    prefix: &str,
    revision: Revision,
    page: usize,
    expected: &BTreeMap<String, KeyValue>,
) {
    let want: Vec<KeyValue> = expected
        .values()
        .filter(|kv| kv.key.starts_with(prefix))
        .cloned()
        .collect();
    let mut got = Vec::new();
    let mut start_after = None;
    loop {
        let result = list(
            store,
            prefix,
            ListOptions {
                revision: Some(revision),
                limit: page,
                start_after: start_after.clone(),
            },
        )
        .await;
        assert_eq!(result.revision, revision, "list at {revision}: revision");
        got.extend(result.items.iter().cloned());
        let expected_remaining = want.len().saturating_sub(got.len());
        assert_eq!(
            result.remaining,
            expected_remaining as u64,
            "list {prefix:?} at {revision} page {page}: remaining after {:?}",
            keys(&got)
        );
        if result.remaining == 0 {
            break;
        }
        assert!(
            !result.items.is_empty(),
            "list at {revision}: empty page with {} remaining",
            result.remaining
        );
        start_after = result.items.last().map(|kv| kv.key.clone());
    }
    assert_eq!(got, want, "list {prefix:?} at revision {revision} (page {page})");
}

async fn watch(store: &dyn Store, prefix: &str, after: Revision) -> WatchStream {
    store
        .watch(prefix, after)
        .await
        .unwrap_or_else(|e| panic!("watch {prefix:?} after {after}: {e:?}"))
}

/// Reads events until one at `until` or later arrives, checking that revisions strictly
/// increase (no duplicates, no reordering) and that the stream neither ends nor fails.
async fn collect_until(stream: &mut WatchStream, until: Revision, context: &str) -> Vec<Event> {
    let mut events: Vec<Event> = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while events.last().is_none_or(|e| e.revision < until) {
        let batch = match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) => panic!(
                "{context}: timed out waiting for revision {until}; got {:?}",
                revisions(&events)
            ),
            Ok(None) => panic!(
                "{context}: stream ended before revision {until}; got {:?}",
                revisions(&events)
            ),
            Ok(Some(Err(e))) => panic!(
                "{context}: stream failed before revision {until}: {e:?}; got {:?}",
                revisions(&events)
            ),
            Ok(Some(Ok(batch))) => batch,
        };
        for event in batch {
            if let Some(last) = events.last() {
                assert!(
                    event.revision > last.revision,
                    "{context}: revision {} after {} (duplicate or out of order)",
                    event.revision,
                    last.revision
                );
            }
            events.push(event);
        }
    }
    events
}

/// Asserts the stream delivers nothing more for a moment.
async fn assert_quiet(stream: &mut WatchStream, context: &str) {
    match tokio::time::timeout(QUIET, stream.next()).await {
        Err(_) => {}
        Ok(Some(Ok(batch))) if batch.is_empty() => {}
        Ok(other) => panic!("{context}: expected nothing more, got {other:?}"),
    }
}

/// Asserts a watch after `after` fails with Compacted at `compacted`, from `watch` itself
/// or as the stream's first item.
async fn assert_watch_compacted(store: &dyn Store, prefix: &str, after: Revision, compacted: Revision) {
    let check = |e: Error| match e {
        Error::Compacted {
            compacted: reported, ..
        } => assert_eq!(
            reported, compacted,
            "watch after {after}: compacted revision reported"
        ),
        other => panic!("watch after {after}: expected Compacted, got {other:?}"),
    };
    match store.watch(prefix, after).await {
        Err(e) => check(e),
        Ok(mut stream) => match tokio::time::timeout(WAIT, stream.next()).await {
            Ok(Some(Err(e))) => check(e),
            other => {
                panic!("watch after {after} (compacted at {compacted}): expected Compacted, got {other:?}")
            }
        },
    }
}

/// Records the expected state after each write, for reads at old revisions.
#[derive(Default)]
struct Model {
    state: BTreeMap<String, KeyValue>,
    history: Vec<(Revision, BTreeMap<String, KeyValue>)>,
}

impl Model {
    async fn create(&mut self, store: &dyn Store, key: &str, value: &str) -> Revision {
        let rev = create(store, key, value).await;
        self.state.insert(key.to_owned(), kv(key, value, rev, rev));
        self.history.push((rev, self.state.clone()));
        rev
    }

    async fn update(&mut self, store: &dyn Store, key: &str, value: &str) -> Revision {
        let old = self.state.get(key).cloned().unwrap();
        let rev = update(store, key, value, old.mod_revision).await;
        self.state
            .insert(key.to_owned(), kv(key, value, old.create_revision, rev));
        self.history.push((rev, self.state.clone()));
        rev
    }

    async fn delete(&mut self, store: &dyn Store, key: &str) -> Revision {
        let old = self.state.remove(key).unwrap();
        let rev = delete(store, key, old.mod_revision).await;
        self.history.push((rev, self.state.clone()));
        rev
    }

    fn at(&self, revision: Revision) -> &BTreeMap<String, KeyValue> {
        &self.history.iter().find(|(rev, _)| *rev == revision).unwrap().1
    }
}

// ---- cases ---------------------------------------------------------------------------

/// A created key reads back with create = mod = the create's revision.
pub async fn create_and_get(store: &dyn Store) {
    let key = "/registry/pods/default/a";
    let r0 = current(store).await;
    let (missing, rev) = get(store, key).await;
    assert_eq!(missing, None, "get before create");
    assert_eq!(rev, r0, "get of a missing key returns the current revision");

    let r1 = create(store, key, "v1").await;
    assert!(
        r1 > r0,
        "create revision {r1} must exceed the start revision {r0}"
    );
    let (found, rev) = get(store, key).await;
    assert_eq!(found, Some(kv(key, "v1", r1, r1)), "get after create");
    assert_eq!(rev, r1, "get returns the current revision");
    assert_current(store, r1, "after create").await;
}

/// Creating a present key fails with AlreadyExists and changes nothing.
pub async fn create_existing_fails(store: &dyn Store) {
    let key = "/k/dup";
    let r1 = create(store, key, "v1").await;
    match store.create(key, val("v2")).await {
        Err(Error::AlreadyExists { key: k }) => assert_eq!(k, key, "AlreadyExists key"),
        other => panic!("second create: expected AlreadyExists, got {other:?}"),
    }
    assert_eq!(get(store, key).await, (Some(kv(key, "v1", r1, r1)), r1));
    assert_current(store, r1, "failed create").await;
}

/// Update succeeds only at the key's mod revision; a stale one gets Conflict with the
/// current value, a missing key Conflict with None.
pub async fn update_compare_and_swap(store: &dyn Store) {
    let key = "/k/cas";
    let r1 = create(store, key, "v1").await;
    let r2 = update(store, key, "v2", r1).await;
    assert!(r2 > r1, "update revision {r2} must exceed {r1}");
    assert_eq!(get(store, key).await, (Some(kv(key, "v2", r1, r2)), r2));

    match store.update(key, val("v3"), r1).await {
        Err(Error::Conflict { key: k, current }) => {
            assert_eq!(k, key, "Conflict key");
            assert_eq!(
                current.map(|c| *c),
                Some(kv(key, "v2", r1, r2)),
                "Conflict carries the current value"
            );
        }
        other => panic!("stale update: expected Conflict, got {other:?}"),
    }
    for expected in [0, r1, r2] {
        match store.update("/k/missing", val("x"), expected).await {
            Err(Error::Conflict { key: k, current }) => {
                assert_eq!(k, "/k/missing");
                assert_eq!(current, None, "Conflict on a missing key carries None");
            }
            other => panic!("update of a missing key: expected Conflict, got {other:?}"),
        }
    }
    assert_eq!(get(store, key).await.0, Some(kv(key, "v2", r1, r2)));
    assert_current(store, r2, "failed updates").await;
}

/// Delete succeeds only at the key's mod revision.
pub async fn delete_compare_and_swap(store: &dyn Store) {
    let key = "/k/del";
    let r1 = create(store, key, "v1").await;
    let r2 = update(store, key, "v2", r1).await;
    match store.delete(key, r1).await {
        Err(Error::Conflict { current, .. }) => assert_eq!(
            current.map(|c| *c),
            Some(kv(key, "v2", r1, r2)),
            "stale delete: Conflict carries the current value"
        ),
        other => panic!("stale delete: expected Conflict, got {other:?}"),
    }
    assert_current(store, r2, "failed delete").await;
    let r3 = delete(store, key, r2).await;
    assert!(r3 > r2, "delete revision {r3} must exceed {r2}");
    assert_eq!(get(store, key).await, (None, r3), "get after delete");
    for (k, expected) in [(key, r2), ("/k/never", r1)] {
        match store.delete(k, expected).await {
            Err(Error::Conflict { current, .. }) => {
                assert_eq!(current, None, "delete of missing {k}: Conflict carries None");
            }
            other => panic!("delete of missing {k}: expected Conflict, got {other:?}"),
        }
    }
    assert_current(store, r3, "after delete").await;
}

/// Every write, to any key and including deletes, gets a greater revision.
pub async fn revisions_strictly_increase(store: &dyn Store) {
    let mut revs = vec![current(store).await];
    revs.push(create(store, "/r/a", "1").await);
    revs.push(create(store, "/r/b", "1").await);
    revs.push(update(store, "/r/a", "2", revs[1]).await);
    revs.push(delete(store, "/r/b", revs[2]).await);
    revs.push(create(store, "/r/c", "1").await);
    revs.push(create(store, "/r/b", "again").await);
    revs.push(delete(store, "/r/a", revs[3]).await);
    assert!(
        revs.windows(2).all(|w| w[0] < w[1]),
        "revisions must strictly increase: {revs:?}"
    );
    let last = *revs.last().unwrap();
    assert_current(store, last, "after writes").await;
    assert_eq!(list(store, "/r/", ListOptions::default()).await.revision, last);
}

/// create_revision stays with the key; mod_revision follows each write.
pub async fn create_and_mod_revisions(store: &dyn Store) {
    let ra = create(store, "/m/a", "a1").await;
    let rb = create(store, "/m/b", "b1").await;
    let ra2 = update(store, "/m/a", "a2", ra).await;
    let ra3 = update(store, "/m/a", "a3", ra2).await;
    let want = vec![kv("/m/a", "a3", ra, ra3), kv("/m/b", "b1", rb, rb)];
    assert_eq!(get(store, "/m/a").await.0, Some(want[0].clone()));
    assert_eq!(get(store, "/m/b").await.0, Some(want[1].clone()));
    let listed = list(store, "/m/", ListOptions::default()).await;
    assert_eq!(listed.items, want, "list shows the same revisions");
    assert_eq!(listed.revision, ra3);
}

/// A key created again after a delete gets a new create_revision.
pub async fn recreate_after_delete(store: &dyn Store) {
    let key = "/k/again";
    let r0 = current(store).await;
    let r1 = create(store, key, "first").await;
    let r2 = delete(store, key, r1).await;
    let r3 = create(store, key, "second").await;
    assert!(r3 > r2);
    assert_eq!(get(store, key).await.0, Some(kv(key, "second", r3, r3)));
    let mut stream = watch(store, "/k/", r0).await;
    let events = collect_until(&mut stream, r3, "watch over recreate").await;
    assert_eq!(
        events,
        vec![
            put(key, "first", r1, r1),
            deleted(key, "first", r2, r1),
            put(key, "second", r3, r3)
        ]
    );
    assert!(events[0].is_create() && events[2].is_create() && !events[1].is_create());
}

/// A prefix matches by string prefix: `/a/` does not match `/ab` or `/a`.
pub async fn list_prefix(store: &dyn Store) {
    let all = ["/a", "/a/1", "/a/2", "/a/2/x", "/a0", "/ab", "/ab/1", "/b/1"];
    let mut last = 0;
    for key in all {
        last = create(store, key, key).await;
    }
    for (prefix, want) in [
        ("/a/", vec!["/a/1", "/a/2", "/a/2/x"]),
        ("/a", vec!["/a", "/a/1", "/a/2", "/a/2/x", "/a0", "/ab", "/ab/1"]),
        ("/ab/", vec!["/ab/1"]),
        ("/a/2", vec!["/a/2", "/a/2/x"]),
        ("/c/", vec![]),
        ("", all.to_vec()),
    ] {
        let result = list(store, prefix, ListOptions::default()).await;
        assert_eq!(keys(&result.items), want, "list {prefix:?}");
        assert_eq!(result.remaining, 0, "list {prefix:?}: remaining");
        assert_eq!(result.revision, last, "list {prefix:?}: revision");
        for item in &result.items {
            assert_eq!(
                item.value,
                val(&item.key),
                "list {prefix:?}: value of {}",
                item.key
            );
        }
    }
}

/// Lists come back in ascending byte order whatever the insertion order.
pub async fn list_order(store: &dyn Store) {
    let inserted = [
        "/o/z", "/o/a0", "/o/B", "/o/é", "/o/a", "/o/a/b", "/o/😀", "/o/~", "/o/-", "/o/Z", "/o/aa",
    ];
    for key in inserted {
        create(store, key, "x").await;
    }
    let mut want = inserted.to_vec();
    // str's Ord is byte order.
    want.sort_unstable();
    let result = list(store, "/o/", ListOptions::default()).await;
    assert_eq!(keys(&result.items), want, "list order");
}

/// limit + start_after page through a list; `remaining` counts what follows; paging at a
/// fixed revision is not disturbed by writes in between.
pub async fn list_paging(store: &dyn Store) {
    let mut model = Model::default();
    for i in 0..10 {
        model.create(store, &format!("/p/{i:02}"), &format!("v{i}")).await;
    }
    model.create(store, "/q/outside", "x").await;
    let page = |limit, start_after: Option<&str>, revision| ListOptions {
        revision,
        limit,
        start_after: start_after.map(str::to_owned),
    };

    let first = list(store, "/p/", page(3, None, None)).await;
    let r = first.revision;
    assert_eq!(keys(&first.items), ["/p/00", "/p/01", "/p/02"]);
    assert_eq!(first.remaining, 7, "remaining after the first page");

    // Writes between pages must not show in later pages read at the first page's revision.
    model.update(store, "/p/05", "changed").await;
    model.delete(store, "/p/07").await;
    model.create(store, "/p/10", "new").await;
    model.create(store, "/p/035", "new").await;

    let second = list(store, "/p/", page(3, Some("/p/02"), Some(r))).await;
    assert_eq!(second.revision, r);
    assert_eq!(keys(&second.items), ["/p/03", "/p/04", "/p/05"]);
    assert_eq!(
        second.items[2].value,
        val("v5"),
        "page at the old revision: old value"
    );
    assert_eq!(second.remaining, 4);
    let third = list(store, "/p/", page(3, Some("/p/05"), Some(r))).await;
    assert_eq!(keys(&third.items), ["/p/06", "/p/07", "/p/08"]);
    assert_eq!(third.remaining, 1);
    let fourth = list(store, "/p/", page(3, Some("/p/08"), Some(r))).await;
    assert_eq!(keys(&fourth.items), ["/p/09"]);
    assert_eq!(fourth.remaining, 0);

    // The same at the latest revision.
    let latest = list(store, "/p/", page(3, Some("/p/02"), None)).await;
    assert_eq!(keys(&latest.items), ["/p/03", "/p/035", "/p/04"]);
    assert_eq!(latest.remaining, 5, "/p/05, 06, 08, 09 and 10 remain");
    let exact = list(store, "/p/", page(10, None, Some(r))).await;
    assert_eq!(exact.items.len(), 10);
    assert_eq!(exact.remaining, 0, "limit equal to the count: nothing remains");
    let unlimited = list(store, "/p/", page(0, None, None)).await;
    assert_eq!(unlimited.items.len(), 11);
    assert_eq!(unlimited.remaining, 0);
    let past_end = list(store, "/p/", page(3, Some("/p/99"), None)).await;
    assert!(
        past_end.items.is_empty() && past_end.remaining == 0,
        "past the end: {past_end:?}"
    );
    // start_after need not be a key.
    let between = list(store, "/p/", page(2, Some("/p/015"), Some(r))).await;
    assert_eq!(keys(&between.items), ["/p/02", "/p/03"]);
    assert_eq!(between.remaining, 6);

    for paging in [0, 1, 4] {
        for (rev, _) in &model.history {
            assert_list_at(store, "/p/", *rev, paging, model.at(*rev)).await;
        }
    }
}

/// A list at an old revision shows the state as of then: values, revisions, deleted and
/// recreated keys.
pub async fn list_at_old_revision(store: &dyn Store) {
    let mut model = Model::default();
    model.create(store, "/h/a", "a1").await;
    model.create(store, "/h/b", "b1").await;
    model.update(store, "/h/a", "a2").await;
    model.delete(store, "/h/b").await;
    model.create(store, "/h/c", "c1").await;
    model.create(store, "/h/b", "b2").await;
    model.delete(store, "/h/a").await;
    model.create(store, "/hx", "outside").await;
    model.update(store, "/h/c", "c2").await;
    for (rev, state) in &model.history {
        assert_list_at(store, "/h/", *rev, 0, state).await;
        assert_list_at(store, "/h/", *rev, 1, state).await;
        assert_list_at(store, "", *rev, 2, state).await;
    }
}

/// Lists below the compacted revision fail with Compacted; at or above it they work.
pub async fn list_compacted(store: &dyn Store) {
    let mut model = Model::default();
    let r1 = model.create(store, "/lc/a", "a1").await;
    let r2 = model.update(store, "/lc/a", "a2").await;
    let r3 = model.create(store, "/lc/b", "b1").await;
    let r4 = model.update(store, "/lc/a", "a3").await;
    store
        .compact(r3)
        .await
        .unwrap_or_else(|e| panic!("compact {r3}: {e:?}"));
    assert_eq!(store.compacted_revision().await.unwrap(), r3);
    for old in [r1, r2] {
        match store.list("/lc/", at(old)).await {
            Err(Error::Compacted { requested, compacted }) => {
                assert_eq!((requested, compacted), (old, r3), "Compacted fields");
            }
            other => {
                panic!("list at {old} below compaction {r3}: expected Compacted, got {other:?}")
            }
        }
    }
    assert_list_at(store, "/lc/", r3, 0, model.at(r3)).await;
    assert_list_at(store, "/lc/", r4, 1, model.at(r4)).await;
    let latest = list(store, "/lc/", ListOptions::default()).await;
    assert_eq!(latest.items, model.state.values().cloned().collect::<Vec<_>>());
}

/// A list above the current revision fails with FutureRevision.
pub async fn list_future_revision(store: &dyn Store) {
    let r1 = create(store, "/f/a", "x").await;
    let r2 = delete(store, "/f/a", r1).await;
    match store.list("/f/", at(r2 + 1)).await {
        Err(Error::FutureRevision { requested, current }) => {
            assert_eq!((requested, current), (r2 + 1, r2), "FutureRevision fields");
        }
        other => panic!("list at {}: expected FutureRevision, got {other:?}", r2 + 1),
    }
    let at_current = list(store, "/f/", at(r2)).await;
    assert!(at_current.items.is_empty() && at_current.revision == r2);
}

/// Compaction keeps the latest value of every key, and reads at or after the compacted
/// revision stay exact even for keys written before it and changed after it.
pub async fn compaction_keeps_latest_values(store: &dyn Store) {
    let mut model = Model::default();
    model.create(store, "/c/old", "o1").await;
    model.create(store, "/c/x", "x1").await;
    model.update(store, "/c/x", "x2").await;
    model.create(store, "/c/y", "y1").await;
    model.create(store, "/c/w", "w1").await;
    let c = model.delete(store, "/c/y").await;
    // Changed after the compaction point but before compacting.
    model.update(store, "/c/w", "w2").await;
    model.create(store, "/c/z", "z1").await;
    store
        .compact(c)
        .await
        .unwrap_or_else(|e| panic!("compact {c}: {e:?}"));

    assert_eq!(get(store, "/c/old").await.0, model.state.get("/c/old").cloned());
    let latest = list(store, "/c/", ListOptions::default()).await;
    assert_eq!(latest.items, model.state.values().cloned().collect::<Vec<_>>());

    // Writes after compaction to keys last written before it.
    model.update(store, "/c/old", "o2").await;
    model.update(store, "/c/x", "x3").await;
    model.delete(store, "/c/z").await;
    model.update(store, "/c/w", "w3").await;
    let revs: Vec<Revision> = model.history.iter().map(|(r, _)| *r).collect();
    for rev in revs.iter().copied().filter(|r| *r >= c) {
        assert_list_at(store, "/c/", rev, 0, model.at(rev)).await;
        assert_list_at(store, "/c/", rev, 2, model.at(rev)).await;
    }

    // A second compaction, past those writes.
    let c2 = revs[revs.len() - 3];
    store
        .compact(c2)
        .await
        .unwrap_or_else(|e| panic!("compact {c2}: {e:?}"));
    for rev in revs.iter().copied().filter(|r| *r >= c2) {
        assert_list_at(store, "/c/", rev, 0, model.at(rev)).await;
    }
    assert!(
        matches!(store.list("/c/", at(c2 - 1)).await, Err(Error::Compacted { .. })),
        "list below the second compaction"
    );
    let mut stream = watch(store, "/c/", c2 - 1).await;
    let events = collect_until(&mut stream, *revs.last().unwrap(), "watch after compaction").await;
    assert_eq!(revisions(&events), revs[revs.len() - 3..].to_vec());
    for (key, value) in &model.state {
        assert_eq!(
            get(store, key).await.0.as_ref(),
            Some(value),
            "get {key} after compactions"
        );
    }
}

/// Compacting at or below the compacted revision is a no-op; above the current revision
/// fails with FutureRevision.
pub async fn compact_bounds(store: &dyn Store) {
    let r1 = create(store, "/cb/a", "1").await;
    let r2 = update(store, "/cb/a", "2", r1).await;
    let r3 = update(store, "/cb/a", "3", r2).await;
    match store.compact(r3 + 1).await {
        Err(Error::FutureRevision { requested, current }) => {
            assert_eq!((requested, current), (r3 + 1, r3));
        }
        other => panic!("compact above current: expected FutureRevision, got {other:?}"),
    }
    store
        .compact(r2)
        .await
        .unwrap_or_else(|e| panic!("compact {r2}: {e:?}"));
    store
        .compact(r1)
        .await
        .unwrap_or_else(|e| panic!("compact below compacted: {e:?}"));
    store
        .compact(r2)
        .await
        .unwrap_or_else(|e| panic!("compact again: {e:?}"));
    assert_eq!(
        store.compacted_revision().await.unwrap(),
        r2,
        "compacted revision never goes back"
    );
    store
        .compact(r3)
        .await
        .unwrap_or_else(|e| panic!("compact at current: {e:?}"));
    assert_eq!(store.compacted_revision().await.unwrap(), r3);
    assert_eq!(
        list(store, "/cb/", at(r3)).await.items,
        vec![kv("/cb/a", "3", r1, r3)]
    );
    assert_eq!(get(store, "/cb/a").await.0, Some(kv("/cb/a", "3", r1, r3)));
    let r4 = update(store, "/cb/a", "4", r3).await;
    assert!(
        r4 > r3,
        "writes continue after compacting at the current revision"
    );
}

/// A watch from a past revision delivers the recorded events, then live ones, in order,
/// without duplicates.
pub async fn watch_backlog_then_live(store: &dyn Store) {
    let r1 = create(store, "/w/a", "a1").await;
    let r2 = create(store, "/w/b", "b1").await;
    let r3 = update(store, "/w/a", "a2", r1).await;
    let mut stream = watch(store, "/w/", r1).await;
    let backlog = collect_until(&mut stream, r3, "backlog").await;
    assert_eq!(
        backlog,
        vec![put("/w/b", "b1", r2, r2), put("/w/a", "a2", r3, r1)]
    );
    assert_quiet(&mut stream, "after backlog").await;

    let r4 = delete(store, "/w/b", r2).await;
    let r5 = create(store, "/w/c", "c1").await;
    let live = collect_until(&mut stream, r5, "live").await;
    assert_eq!(
        live,
        vec![deleted("/w/b", "b1", r4, r2), put("/w/c", "c1", r5, r5)]
    );
    assert_quiet(&mut stream, "after live").await;
}

/// A watch from the start revision of an empty store (0 for a fresh one) replays all
/// history.
pub async fn watch_from_start(store: &dyn Store) {
    let r0 = current(store).await;
    let r1 = create(store, "/ws/a", "1").await;
    let r2 = update(store, "/ws/a", "2", r1).await;
    let r3 = delete(store, "/ws/a", r2).await;
    let mut stream = watch(store, "", r0).await;
    let events = collect_until(&mut stream, r3, "watch from start").await;
    assert_eq!(
        events,
        vec![
            put("/ws/a", "1", r1, r1),
            put("/ws/a", "2", r2, r1),
            deleted("/ws/a", "2", r3, r1)
        ]
    );
    let r4 = create(store, "/ws/b", "x").await;
    assert_eq!(
        collect_until(&mut stream, r4, "then live").await,
        vec![put("/ws/b", "x", r4, r4)]
    );
    assert_quiet(&mut stream, "watch from start").await;
}

/// A watch from the current revision delivers only later changes.
pub async fn watch_only_new(store: &dyn Store) {
    let r1 = create(store, "/wn/a", "1").await;
    let mut stream = watch(store, "/wn/", r1).await;
    assert_quiet(&mut stream, "nothing new yet").await;
    let r2 = update(store, "/wn/a", "2", r1).await;
    assert_eq!(
        collect_until(&mut stream, r2, "new").await,
        vec![put("/wn/a", "2", r2, r1)]
    );
    // A watch from a revision not reached yet waits for it.
    let mut future = watch(store, "/wn/", r2 + 1).await;
    let r3 = update(store, "/wn/a", "3", r2).await;
    let r4 = update(store, "/wn/a", "4", r3).await;
    let events = collect_until(&mut future, r4, "watch from a future revision").await;
    let want: Vec<Event> = [put("/wn/a", "3", r3, r1), put("/wn/a", "4", r4, r1)]
        .into_iter()
        .filter(|e| e.revision > r2 + 1)
        .collect();
    assert_eq!(events, want, "watch from a future revision");
}

/// A watch delivers only keys under its prefix: `/w/` does not see `/wx` or `/w`.
pub async fn watch_prefix_filter(store: &dyn Store) {
    let r0 = current(store).await;
    let mut filtered = watch(store, "/w/", r0).await;
    let mut everything = watch(store, "", r0).await;
    let mut revs = Vec::new();
    for key in ["/w", "/wx", "/w/a", "/v/a", "/w/b/c", "/w0"] {
        revs.push((key, create(store, key, key).await));
    }
    let last = revs.last().unwrap().1;
    let live = collect_until(&mut everything, last, "unfiltered").await;
    assert_eq!(live.len(), revs.len(), "the unfiltered watch sees every key");
    let want: Vec<Event> = revs
        .iter()
        .filter(|(key, _)| key.starts_with("/w/"))
        .map(|(key, rev)| put(key, key, *rev, *rev))
        .collect();
    let got = collect_until(&mut filtered, want.last().unwrap().revision, "filtered").await;
    assert_eq!(got, want, "live, filtered");
    assert_quiet(&mut filtered, "filtered").await;
    // The same from history.
    let mut replay = watch(store, "/w/", r0).await;
    assert_eq!(
        collect_until(&mut replay, want.last().unwrap().revision, "replay").await,
        want
    );
    assert_quiet(&mut replay, "replay").await;
}

/// A watch from below the compacted revision fails with Compacted; from compacted - 1
/// it works; a watch opened before a compaction keeps going.
pub async fn watch_compacted(store: &dyn Store) {
    let r1 = create(store, "/wc/a", "1").await;
    let r2 = update(store, "/wc/a", "2", r1).await;
    let r3 = update(store, "/wc/a", "3", r2).await;
    let r4 = create(store, "/wc/b", "1").await;
    let mut open = watch(store, "/wc/", r4).await;
    store
        .compact(r3)
        .await
        .unwrap_or_else(|e| panic!("compact {r3}: {e:?}"));
    assert_watch_compacted(store, "/wc/", r1, r3).await;
    assert_watch_compacted(store, "", r1, r3).await;
    assert_watch_compacted(store, "/elsewhere/", r1, r3).await;
    let mut from_compacted = watch(store, "/wc/", r3 - 1).await;
    let events = collect_until(&mut from_compacted, r4, "watch after compacted - 1").await;
    assert_eq!(events, vec![put("/wc/a", "3", r3, r1), put("/wc/b", "1", r4, r4)]);
    let r5 = delete(store, "/wc/b", r4).await;
    assert_eq!(
        collect_until(&mut open, r5, "watch opened before compaction").await,
        vec![deleted("/wc/b", "1", r5, r4)]
    );
}

/// A delete event carries the value before the delete and the key's create revision.
pub async fn watch_delete_carries_previous_value(store: &dyn Store) {
    let r1 = create(store, "/wd/a", "first").await;
    let r2 = update(store, "/wd/a", "last", r1).await;
    let mut live = watch(store, "/wd/", r2).await;
    let r3 = delete(store, "/wd/a", r2).await;
    let want = vec![deleted("/wd/a", "last", r3, r1)];
    assert_eq!(collect_until(&mut live, r3, "live delete").await, want);
    let mut replay = watch(store, "/wd/", r2).await;
    assert_eq!(collect_until(&mut replay, r3, "recorded delete").await, want);
    assert!(!want[0].is_create());
}

/// Watches started while writes are under way see every later write exactly once: no gap
/// and no duplicate where recorded history meets live events.
pub async fn watch_started_during_writes(store: &dyn Store) {
    const WRITES: usize = 200;
    let written: Mutex<Vec<Revision>> = Mutex::new(Vec::new());
    let writer = async {
        for i in 0..WRITES {
            let rev = create(store, &format!("/wr/{i:04}"), "x").await;
            written.lock().unwrap().push(rev);
        }
    };
    let watchers = futures::future::join_all([20, 60, 100, 140, 180].map(|start_at| {
        let written = &written;
        async move {
            loop {
                let after = written.lock().unwrap().get(start_at).copied();
                if let Some(after) = after {
                    return (after, watch(store, "/wr/", after).await);
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }));
    let ((), streams) = futures::join!(writer, watchers);
    let written = written.into_inner().unwrap();
    let last = *written.last().unwrap();
    for (after, mut stream) in streams {
        let events = collect_until(&mut stream, last, &format!("watch after {after}")).await;
        let want: Vec<Revision> = written.iter().copied().filter(|r| *r > after).collect();
        assert_eq!(revisions(&events), want, "watch after {after}");
        assert_quiet(&mut stream, &format!("watch after {after}")).await;
    }
}

/// A watcher that reads nothing while many writes happen still gets all of them.
pub async fn watch_many_events(store: &dyn Store) {
    let r0 = current(store).await;
    let mut stream = watch(store, "/wm/", r0).await;
    let mut revs = Vec::new();
    let mut expected = r0;
    for i in 0..300 {
        let key = format!("/wm/{}", i % 7);
        let rev = match i {
            0..7 => create(store, &key, "0").await,
            _ => {
                let (old, _) = get(store, &key).await;
                update(store, &key, &i.to_string(), old.unwrap().mod_revision).await
            }
        };
        assert!(rev > expected);
        expected = rev;
        revs.push(rev);
    }
    let events = collect_until(&mut stream, expected, "slow watcher").await;
    assert_eq!(revisions(&events), revs);
    assert_quiet(&mut stream, "slow watcher").await;
}

/// Several watchers on the same prefix each get every event.
pub async fn multiple_watchers(store: &dyn Store) {
    let r0 = current(store).await;
    let mut streams = Vec::new();
    for _ in 0..4 {
        streams.push(watch(store, "/mw/", r0).await);
    }
    let r1 = create(store, "/mw/a", "1").await;
    let r2 = update(store, "/mw/a", "2", r1).await;
    drop(streams.pop()); // a dropped watcher does not disturb the others
    let r3 = delete(store, "/mw/a", r2).await;
    let want = vec![
        put("/mw/a", "1", r1, r1),
        put("/mw/a", "2", r2, r1),
        deleted("/mw/a", "2", r3, r1),
    ];
    for (i, stream) in streams.iter_mut().enumerate() {
        assert_eq!(collect_until(stream, r3, &format!("watcher {i}")).await, want);
    }
}

/// 8 writers × 50 increments of one counter through get + compare-and-swap retry loops:
/// no update is lost and every success has its own revision.
pub async fn concurrent_compare_and_swap(store: &dyn Store) {
    const WRITERS: usize = 8;
    const INCREMENTS: usize = 50;
    let key = "/cc/counter";
    create(store, key, "0").await;
    let writers = (0..WRITERS).map(|w| async move {
        let mut revs = Vec::new();
        let mut known: Option<KeyValue> = None;
        for _ in 0..INCREMENTS {
            loop {
                let current = match known.take() {
                    Some(kv) => kv,
                    None => get(store, key).await.0.unwrap(),
                };
                let n: u64 = std::str::from_utf8(&current.value).unwrap().parse().unwrap();
                match store
                    .update(key, val(&(n + 1).to_string()), current.mod_revision)
                    .await
                {
                    Ok(rev) => {
                        revs.push(rev);
                        break;
                    }
                    Err(Error::Conflict {
                        current: Some(latest),
                        ..
                    }) => {
                        // Half the writers retry from the value the Conflict carries, the
                        // way kube-apiserver's GuaranteedUpdate does.
                        if w % 2 == 0 {
                            known = Some(*latest);
                        }
                    }
                    Err(e) => panic!("writer {w}: unexpected error {e:?}"),
                }
            }
        }
        revs
    });
    let mut revs: Vec<Revision> = futures::future::join_all(writers).await.concat();
    let total = WRITERS * INCREMENTS;
    assert_eq!(revs.len(), total);
    revs.sort_unstable();
    revs.dedup();
    assert_eq!(revs.len(), total, "every successful update has its own revision");
    let (counter, _) = get(store, key).await;
    let counter = counter.unwrap();
    assert_eq!(
        counter.value,
        val(&total.to_string()),
        "final counter: lost updates"
    );
    assert_eq!(
        Some(&counter.mod_revision),
        revs.last(),
        "the last update's revision"
    );
}

/// Values are bytes, stored and returned exactly: empty, NUL, every byte, 1 MiB.
pub async fn binary_values(store: &dyn Store) {
    let r0 = current(store).await;
    let every_byte: Vec<u8> = (0..=255u8).cycle().take(1024).collect();
    let big: Vec<u8> = (0..1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let values: Vec<(&str, Bytes)> = vec![
        ("/bin/empty", Bytes::new()),
        ("/bin/nul", Bytes::from_static(b"\0\0\0")),
        ("/bin/every", Bytes::from(every_byte)),
        (
            "/bin/invalid-utf8",
            Bytes::from_static(&[0xff, 0xfe, 0xc3, 0x28, 0x80]),
        ),
        ("/bin/big", Bytes::from(big)),
    ];
    let mut want = Vec::new();
    for (key, value) in &values {
        let rev = store
            .create(key, value.clone())
            .await
            .unwrap_or_else(|e| panic!("create {key}: {e:?}"));
        want.push(KeyValue {
            key: (*key).to_owned(),
            value: value.clone(),
            create_revision: rev,
            mod_revision: rev,
        });
        assert_eq!(get(store, key).await.0.as_ref(), want.last(), "get {key}");
    }
    let mut sorted = want.clone();
    sorted.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(list(store, "/bin/", ListOptions::default()).await.items, sorted);
    let last = want.last().unwrap().mod_revision;
    let del = store
        .delete("/bin/every", want[2].mod_revision)
        .await
        .unwrap_or_else(|e| panic!("delete: {e:?}"));
    let mut stream = watch(store, "/bin/", r0).await;
    let events = collect_until(&mut stream, del, "binary watch").await;
    assert_eq!(events.len(), want.len() + 1);
    for (event, kv) in events.iter().zip(&want) {
        assert_eq!((&event.key, &event.value), (&kv.key, &kv.value), "watch value");
    }
    assert_eq!(events[want.len()].value, want[2].value, "delete event value");
    assert_list_at(
        store,
        "/bin/",
        last,
        2,
        &sorted.iter().map(|kv| (kv.key.clone(), kv.clone())).collect(),
    )
    .await;
}

/// Oversized values are refused with TooLarge and nothing is written.
pub async fn rejects_oversized_values(store: &dyn Store) {
    let huge = Bytes::from(vec![7u8; 8 * 1024 * 1024]);
    let r1 = create(store, "/big/a", "small").await;
    match store.create("/big/b", huge.clone()).await {
        Err(Error::TooLarge) => {}
        other => panic!("create of 8 MiB: expected TooLarge, got {other:?}"),
    }
    match store.update("/big/a", huge, r1).await {
        Err(Error::TooLarge) => {}
        other => panic!("update to 8 MiB: expected TooLarge, got {other:?}"),
    }
    assert_current(store, r1, "after refused writes").await;
    assert_eq!(get(store, "/big/a").await.0, Some(kv("/big/a", "small", r1, r1)));
    assert_eq!(get(store, "/big/b").await.0, None);
}

fn batch_create(key: &str, value: &str) -> BatchOp {
    BatchOp::Create {
        key: key.to_owned(),
        value: val(value),
    }
}

fn batch_update(key: &str, value: &str, expected: Revision) -> BatchOp {
    BatchOp::Update {
        key: key.to_owned(),
        value: val(value),
        expected,
    }
}

/// The revisions of a batch's outcomes, checking that the landed ones ascend from above
/// `before` and that the store's revision is the last of them.
async fn assert_batch_revisions(store: &dyn Store, before: Revision, landed: &[Revision]) {
    let mut last = before;
    for revision in landed {
        assert!(
            *revision >= last && *revision > before,
            "batch revisions {landed:?} after {before}: not ascending"
        );
        last = *revision;
    }
    assert_current(store, last, "after the batch").await;
}

/// Each op of a batch succeeds or fails alone, as it would alone: a create of a present
/// key, an update at a stale revision or of an absent key, an oversized value and a
/// second create of a key the batch created are refused; the rest land.
pub async fn batch_outcomes_apart(store: &dyn Store) {
    assert!(store.write_batch(Vec::new()).await.is_empty(), "an empty batch");
    let present = create(store, "/b/present", "p0").await;
    let moved = create(store, "/b/moved", "m0").await;
    let moved = update(store, "/b/moved", "m1", moved).await;
    let before = current(store).await;
    let huge = Bytes::from(vec![7u8; 8 * 1024 * 1024]);
    let outcomes = store
        .write_batch(vec![
            batch_create("/b/new1", "n1"),
            batch_create("/b/present", "lost"),
            batch_update("/b/present", "p1", present),
            batch_update("/b/moved", "lost", moved - 1),
            batch_update("/b/absent", "lost", present),
            BatchOp::Create {
                key: "/b/huge".into(),
                value: huge,
            },
            batch_create("/b/new2", "n2"),
            batch_create("/b/new2", "lost"),
        ])
        .await;
    assert_eq!(outcomes.len(), 8, "one outcome per op: {outcomes:?}");
    let landed: Vec<Revision> = [0, 2, 6]
        .iter()
        .map(|&i| match &outcomes[i] {
            Ok(revision) => *revision,
            other => panic!("op {i}: expected it to land, got {other:?}"),
        })
        .collect();
    assert!(
        matches!(&outcomes[1], Err(Error::AlreadyExists { key }) if key == "/b/present"),
        "create of a present key: {:?}",
        outcomes[1]
    );
    match &outcomes[3] {
        Err(Error::Conflict {
            key,
            current: Some(current),
        }) => {
            assert_eq!(key, "/b/moved");
            assert_eq!(**current, kv("/b/moved", "m1", current.create_revision, moved));
        }
        other => panic!("update at a stale revision: expected Conflict, got {other:?}"),
    }
    assert!(
        matches!(&outcomes[4], Err(Error::Conflict { current: None, .. })),
        "update of an absent key: {:?}",
        outcomes[4]
    );
    assert!(
        matches!(&outcomes[5], Err(Error::TooLarge)),
        "oversized value: {:?}",
        outcomes[5]
    );
    assert!(
        matches!(&outcomes[7], Err(Error::AlreadyExists { .. })),
        "second create of a key the batch created: {:?}",
        outcomes[7]
    );
    assert_batch_revisions(store, before, &landed).await;
    assert_eq!(
        get(store, "/b/new1").await.0,
        Some(kv("/b/new1", "n1", landed[0], landed[0]))
    );
    assert_eq!(
        get(store, "/b/present").await.0,
        Some(kv("/b/present", "p1", present, landed[1]))
    );
    assert_eq!(
        get(store, "/b/new2").await.0,
        Some(kv("/b/new2", "n2", landed[2], landed[2]))
    );
    assert_eq!(get(store, "/b/moved").await.0.map(|kv| kv.value), Some(val("m1")));
    assert_eq!(get(store, "/b/absent").await.0, None);
    assert_eq!(get(store, "/b/huge").await.0, None);
}

/// A batch's writes reach watchers as the single writes would: one event per landed op,
/// in op order, with its revision and create revision; refused ops send nothing.
pub async fn batch_watch_events_in_order(store: &dyn Store) {
    let old = create(store, "/w/old", "o0").await;
    let mut stream = watch(store, "/w/", old).await;
    let outcomes = store
        .write_batch(vec![
            batch_create("/w/c", "c"),
            batch_update("/w/old", "o1", old),
            batch_create("/w/old", "lost"),
            batch_create("/w/a", "a"),
        ])
        .await;
    let revision = |i: usize| match &outcomes[i] {
        Ok(revision) => *revision,
        other => panic!("op {i}: expected it to land, got {other:?}"),
    };
    let (c, o, a) = (revision(0), revision(1), revision(3));
    assert!(outcomes[2].is_err(), "create of a present key: {:?}", outcomes[2]);
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while events.len() < 3 {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(batch))) => events.extend(batch),
            other => panic!("batch events: expected three, got {events:?} then {other:?}"),
        }
    }
    assert_eq!(
        events,
        [
            put("/w/c", "c", c, c),
            put("/w/old", "o1", o, old),
            put("/w/a", "a", a, a)
        ],
        "events of the batch"
    );
    assert!(events[0].is_create() && !events[1].is_create() && events[2].is_create());
    assert_quiet(&mut stream, "after the batch").await;
}

/// A batch larger than a backend's transaction takes (etcd's 128 ops by default) lands
/// whole, and a refused op anywhere in it keeps no other op from landing.
pub async fn batch_many_ops(store: &dyn Store) {
    let taken = create(store, "/m/k150", "taken").await;
    let before = current(store).await;
    let ops: Vec<BatchOp> = (0..300)
        .map(|i| batch_create(&format!("/m/k{i:03}"), &format!("v{i}")))
        .collect();
    let outcomes = store.write_batch(ops).await;
    assert_eq!(outcomes.len(), 300);
    let mut landed = Vec::new();
    for (i, outcome) in outcomes.iter().enumerate() {
        match (i, outcome) {
            (150, Err(Error::AlreadyExists { .. })) => {}
            (150, other) => panic!("op 150: expected AlreadyExists, got {other:?}"),
            (_, Ok(revision)) => landed.push(*revision),
            (_, other) => panic!("op {i}: expected it to land, got {other:?}"),
        }
    }
    assert_batch_revisions(store, before, &landed).await;
    let all = list(store, "/m/", ListOptions::default()).await;
    assert_eq!(all.items.len(), 300);
    for (i, item) in all.items.iter().enumerate() {
        let expected = if i == 150 {
            kv("/m/k150", "taken", taken, taken)
        } else {
            let revision = landed[if i < 150 { i } else { i - 1 }];
            kv(&format!("/m/k{i:03}"), &format!("v{i}"), revision, revision)
        };
        assert_eq!(*item, expected, "key {i}");
    }
}
