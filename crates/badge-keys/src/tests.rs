use std::sync::atomic::AtomicI64;

use super::*;

const HOUR: i64 = 3600;

fn sqlite(dir: &std::path::Path) -> Arc<dyn Store> {
    Arc::new(badge_store::sqlite::SqliteStore::open(&dir.join("s.db")).unwrap())
}

async fn ring_keys_over(store: Arc<dyn Store>, keep: i64, clock: fn() -> i64) -> Arc<ServiceAccountKeys> {
    ServiceAccountKeys::load_with_clock(
        store,
        StoredRing::new(&[7; 32]),
        KeyType::Es256,
        None,
        None,
        Vec::new(),
        keep,
        clock,
    )
    .await
    .unwrap()
}

async fn ring_keys(dir: &std::path::Path) -> Arc<ServiceAccountKeys> {
    ring_keys_over(sqlite(dir), 3660, now).await
}

fn kids(keys: &[VerifyingKey]) -> Vec<String> {
    keys.iter().map(|k| k.kid().to_string()).collect()
}

fn jwks_kids(set: &KeySet) -> Vec<String> {
    let doc: Value = serde_json::from_slice(set.jwks()).unwrap();
    doc["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect()
}

struct Stale(Duration);

impl Freshness for Stale {
    fn unconfirmed_for(&self) -> Duration {
        self.0
    }
}

#[tokio::test]
async fn no_token_is_signed_with_a_ring_unconfirmed_past_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let keys = ring_keys(dir.path()).await;
    let claims = json!({"sub": "system:serviceaccount:default:robot"});
    keys.sign(&claims).unwrap();

    *keys.bound.lock() = Some(Bound {
        freshness: Arc::new(Stale(Duration::from_secs(31))),
        bound: Duration::from_secs(30),
    });
    keys.sign(&claims).unwrap();
    *keys.ring_confirmed.lock() = Instant::now().checked_sub(Duration::from_secs(31)).unwrap();
    let refused = keys.sign(&claims).unwrap_err();
    assert_eq!(refused.code, 503);
    assert_eq!(refused.reason, "ServiceUnavailable");
    assert_eq!(
        refused.message,
        "the service account signing keys could not be confirmed current for 30s; refusing to issue tokens"
    );

    // Confirmed again (here by a write of the ring): signing resumes.
    keys.rotate(3600).await.unwrap();
    keys.sign(&claims).unwrap();

    // While the watch runs, the ring is as current as the store is confirmed to be.
    *keys.ring_confirmed.lock() = Instant::now().checked_sub(Duration::from_secs(31)).unwrap();
    keys.watching.store(true, Ordering::SeqCst);
    assert!(keys.sign(&claims).is_err());
    *keys.bound.lock() = Some(Bound {
        freshness: Arc::new(Stale(Duration::from_secs(1))),
        bound: Duration::from_secs(30),
    });
    keys.sign(&claims).unwrap();
}

#[tokio::test]
async fn automatic_rotation_writes_only_when_due_and_is_described() {
    let dir = tempfile::tempdir().unwrap();
    let keys = ring_keys(dir.path()).await;
    let auto = AutoRotation {
        period: 30 * 24 * 3600,
        publish_lead: 3600,
    };
    keys.enable_auto_rotation(auto).unwrap();
    let first = keys.signer().unwrap().kid().to_string();
    let mut changes = keys.ring_changes();
    changes.borrow_and_update();
    let (before, _) = keys.store.get(KEYRING_KEY).await.unwrap();

    // Nothing is due for a month: nothing is written.
    keys.apply_due().await.unwrap();
    let (after, _) = keys.store.get(KEYRING_KEY).await.unwrap();
    assert_eq!(before.unwrap().mod_revision, after.unwrap().mod_revision);
    assert!(!changes.has_changed().unwrap());
    let next = keys.next_transition().unwrap();
    assert!(next > now() + auto.period - 60);
    let described = keys.describe();
    assert_eq!(described["rotation"]["periodSeconds"], auto.period);
    assert_eq!(
        described["keys"][0]["nextTransition"],
        meta::format_time(jiff::Timestamp::from_second(next + auto.publish_lead).unwrap())
    );

    // With the signer revoked a rotation is due at once: the next key is published and
    // stored, signing only after the lead.
    keys.revoke(&first).await.unwrap();
    changes.borrow_and_update();
    keys.apply_due().await.unwrap();
    assert!(changes.has_changed().unwrap());
    let described = keys.describe();
    let listed = described["keys"].as_array().unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[1]["state"], "Pending");
    assert_eq!(listed[1]["nextTransition"], listed[1]["activatesAt"]);
    let pending = listed[1]["kid"].as_str().unwrap();
    assert!(keys.public_keys().iter().any(|k| k.kid() == pending));
    assert!(keys.signer().is_none());
    let (stored, _) = keys.store.get(KEYRING_KEY).await.unwrap();
    let stored = keys.stored.decode(&stored.unwrap().value).unwrap();
    assert!(stored.entries().iter().any(|e| e.kid() == pending));
}

#[tokio::test]
async fn automatic_rotation_lengthens_a_ring_kept_too_briefly() {
    let dir = tempfile::tempdir().unwrap();
    let made_with_short_tokens = ring_keys(dir.path()).await;
    let store = made_with_short_tokens.store.clone();
    let keys = ring_keys_over(store.clone(), badge_token_extended(), now).await;
    keys.enable_auto_rotation(AutoRotation {
        period: 30 * 24 * 3600,
        publish_lead: 3600,
    })
    .unwrap();
    keys.apply_due().await.unwrap();
    let (stored, _) = store.get(KEYRING_KEY).await.unwrap();
    let stored = keys.stored.decode(&stored.unwrap().value).unwrap();
    assert_eq!(stored.keep_after_retire(), badge_token_extended());
    assert_eq!(stored.entries().len(), 1);
}

/// The longest keep a server asks for: the kubelet's extended tokens plus the leeway.
fn badge_token_extended() -> i64 {
    365 * 24 * 3600 + 60
}

static LEAD_CLOCK: AtomicI64 = AtomicI64::new(1_000_000);

fn lead_clock() -> i64 {
    LEAD_CLOCK.load(Ordering::SeqCst)
}

/// What the JWKS serves and what signs, as every reader sees it through the published
/// snapshot, with the clock passed in: a new key is published the whole lead before it
/// signs, and the key it replaces verifies until the longest token lifetime has passed.
#[tokio::test]
async fn the_published_snapshot_follows_the_lead_and_the_keep() {
    let dir = tempfile::tempdir().unwrap();
    let keep = HOUR + 60;
    let t0 = lead_clock();
    let keys = ring_keys_over(sqlite(dir.path()), keep, lead_clock).await;
    let old = keys.signer().unwrap().kid().to_string();

    let new = keys.rotate(HOUR).await.unwrap();
    let snapshot = keys.current();
    assert_eq!(kids(snapshot.keys()), vec![old.clone(), new.clone()]);
    assert_eq!(jwks_kids(&snapshot), vec![old.clone(), new.clone()]);
    assert_eq!(snapshot.signer().unwrap().kid(), old);
    assert_eq!(keys.next_change(), Some(t0 + HOUR));

    // A second before the lead runs out the old key still signs.
    LEAD_CLOCK.store(t0 + HOUR - 1, Ordering::SeqCst);
    keys.refresh();
    assert_eq!(keys.signer().unwrap().kid(), old);

    // At the lead the new key signs; the old one keeps verifying.
    LEAD_CLOCK.store(t0 + HOUR, Ordering::SeqCst);
    keys.refresh();
    let snapshot = keys.current();
    assert_eq!(snapshot.signer().unwrap().kid(), new);
    assert_eq!(jwks_kids(&snapshot), vec![old.clone(), new.clone()]);
    assert_eq!(keys.next_change(), Some(t0 + HOUR + keep));
    assert_eq!(keys.describe()["keys"][0]["state"], "Retired");

    // It verifies for the whole keep, and leaves the JWKS when the keep is over.
    LEAD_CLOCK.store(t0 + HOUR + keep - 1, Ordering::SeqCst);
    keys.refresh();
    assert!(keys.current().get(&old).is_some());
    LEAD_CLOCK.store(t0 + HOUR + keep, Ordering::SeqCst);
    keys.refresh();
    let snapshot = keys.current();
    assert!(snapshot.get(&old).is_none());
    assert_eq!(jwks_kids(&snapshot), vec![new.clone()]);

    // The stored ring drops it only when the controller writes what is due.
    let stored = |keys: &Arc<ServiceAccountKeys>| {
        let store = keys.store.clone();
        async move {
            let (kv, _) = store.get(KEYRING_KEY).await.unwrap();
            StoredRing::new(&[7; 32]).decode(&kv.unwrap().value).unwrap()
        }
    };
    assert_eq!(stored(&keys).await.entries().len(), 2);
    keys.apply_due().await.unwrap();
    let ring = stored(&keys).await;
    assert_eq!(ring.entries().len(), 1);
    assert_eq!(ring.entries()[0].kid(), new);
}

#[tokio::test]
async fn every_server_follows_a_change_another_server_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite(dir.path());
    let writer = ring_keys_over(store.clone(), 3660, now).await;
    let follower = ring_keys_over(store, 3660, now).await;
    follower.spawn_watch(Arc::new(Stale(Duration::ZERO)), Duration::from_secs(30));
    let first = follower.signer().unwrap().kid().to_string();
    let mut changes = follower.ring_changes();
    changes.borrow_and_update();

    let next = writer.rotate(0).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), changes.changed())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(follower.signer().unwrap().kid(), next);

    changes.borrow_and_update();
    writer.revoke(&first).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), changes.changed())
        .await
        .unwrap()
        .unwrap();
    assert!(follower.current().get(&first).is_none());
    assert!(!jwks_kids(&follower.current()).contains(&first));
    assert!(follower.ring_unconfirmed_for() < Duration::from_secs(30));
}

#[tokio::test]
async fn a_ring_stored_in_the_clear_is_read_and_sealed_by_the_controller() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite(dir.path());
    let mut ring = KeyRing::new(3660).unwrap();
    let key = KeyType::Es256.generate().unwrap();
    ring.rotate(key.clone(), now(), 0).unwrap();
    store
        .create(KEYRING_KEY, Bytes::from(serde_json::to_vec(&ring).unwrap()))
        .await
        .unwrap();
    let keys = ring_keys_over(store.clone(), 3660, now).await;
    assert_eq!(keys.signer().unwrap().kid(), key.kid());
    let (kv, _) = store.get(KEYRING_KEY).await.unwrap();
    assert!(!badge_token::seal::Sealer::is_sealed(&kv.unwrap().value));

    keys.apply_due().await.unwrap();
    let (kv, _) = store.get(KEYRING_KEY).await.unwrap();
    let kv = kv.unwrap();
    assert!(badge_token::seal::Sealer::is_sealed(&kv.value));
    assert_eq!(
        keys.stored.decode(&kv.value).unwrap().entries()[0].kid(),
        key.kid()
    );
}

#[tokio::test]
async fn a_ring_the_watch_delivers_late_never_replaces_a_newer_one() {
    let dir = tempfile::tempdir().unwrap();
    let keys = ring_keys(dir.path()).await;
    let (kv, _) = keys.store.get(KEYRING_KEY).await.unwrap();
    let kv = kv.unwrap();
    let older = keys.stored.decode(&kv.value).unwrap();
    let next = keys.rotate(0).await.unwrap();
    keys.install(older.clone(), kv.mod_revision, Instant::now());
    assert_eq!(keys.signer().unwrap().kid(), next);
    // The same ring at a later revision is installed.
    let later = *keys.ring_revision.borrow() + 1;
    keys.install(older, later, Instant::now());
    assert_ne!(keys.signer().unwrap().kid(), next);
}

#[test]
fn the_first_of_several_rsa_generations_is_a_key_that_signs() {
    let key = KeyType::Rs256.generate_first_of(2).unwrap();
    assert_eq!(key.algorithm(), badge_token::Algorithm::Rs256);
    let keys = badge_token::KeySet::new(Some(key.clone()), []);
    let token = badge_token::jwt::sign(&key, &serde_json::json!({"sub": "s"})).unwrap();
    assert!(badge_token::jwt::parse_and_verify(&token.into_exposed(), &keys).is_ok());
    // Two in a row are not the same key: each search starts from its own randomness.
    assert_ne!(KeyType::Rs256.generate_first_of(2).unwrap().kid(), key.kid());
}

#[test]
fn an_ec_key_is_made_by_one_generation() {
    assert_eq!(
        KeyType::Es256.generate_first_of(4).unwrap().algorithm(),
        badge_token::Algorithm::Es256
    );
}
