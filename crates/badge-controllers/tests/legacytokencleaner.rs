//! The legacy token cleaner over a registry on a real (SQLite) store, in process, its clock
//! moved forward by the test: an unused auto-generated token Secret is labelled invalid, then
//! deleted; one a pod mounts, and one made by hand, are left alone; each write is audited.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use badge_api::resources::{self, Resource};
use badge_api::{Status, meta};
use badge_controllers::audit::{Write, WriteAudit};
use badge_controllers::legacytokencleaner::{
    INVALID_SINCE_LABEL, TRACKING_CONFIGMAP, day, spawn_tracking, sweep,
};
use badge_registry::{Registry, WriteOptions};
use badge_store::Store;
use badge_store::sqlite::SqliteStore;
use parking_lot::Mutex;
use serde_json::{Value, json};

const DAY: Duration = Duration::from_secs(24 * 3600);

fn core(plural: &str) -> &'static Resource {
    resources::lookup("", "v1", plural).unwrap()
}

/// User, verb, object and failure code of each write recorded.
type Entry = (String, String, String, Option<u16>);

#[derive(Default)]
struct Recorded(Mutex<Vec<Entry>>);

impl WriteAudit for Recorded {
    fn record(&self, write: &Write<'_>) {
        self.0.lock().push((
            write.username(),
            write.verb.to_string(),
            format!("{}/{}", write.namespace, write.name),
            write.failure.map(|s: &Status| s.code),
        ));
    }
}

async fn create(registry: &Registry, plural: &str, namespace: &str, object: Value) -> Value {
    registry
        .create(core(plural), namespace, object, &WriteOptions::default())
        .await
        .unwrap()
}

fn token_secret(name: &str, account_uid: &str) -> Value {
    json!({
        "metadata": {"name": name, "annotations": {
            "kubernetes.io/service-account.name": "app",
            "kubernetes.io/service-account.uid": account_uid}},
        "type": "kubernetes.io/service-account-token",
    })
}

async fn start() -> (tempfile::TempDir, Arc<Registry>) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("store.db")).unwrap());
    let registry = Registry::start(store, 1000).await;
    badge_controllers::ensure_system_namespaces(&registry)
        .await
        .unwrap();
    (dir, registry)
}

fn invalid_since(registry: &Registry, name: &str) -> Option<String> {
    let secret = registry.get_cached(core("secrets"), "default", name)?;
    Some(
        meta::labels(&secret)
            .get(INVALID_SINCE_LABEL)
            .cloned()
            .unwrap_or_default(),
    )
}

#[tokio::test]
async fn unused_auto_generated_tokens_are_marked_then_deleted_and_the_writes_audited() {
    let (_dir, registry) = start().await;
    let now = badge_api::clock::now();
    create(
        &registry,
        "configmaps",
        "kube-system",
        json!({"metadata": {"name": TRACKING_CONFIGMAP}, "data": {"since": day(now)}}),
    )
    .await;
    let account = create(
        &registry,
        "serviceaccounts",
        "default",
        json!({"metadata": {"name": "app"},
            "secrets": [{"name": "unused"}, {"name": "mounted"}]}),
    )
    .await;
    let uid = meta::uid(&account).to_string();
    create(&registry, "secrets", "default", token_secret("unused", &uid)).await;
    create(&registry, "secrets", "default", token_secret("mounted", &uid)).await;
    // Made by hand: not in the ServiceAccount's secrets.
    create(&registry, "secrets", "default", token_secret("by-hand", &uid)).await;
    create(
        &registry,
        "pods",
        "default",
        json!({"metadata": {"name": "web"}, "spec": {
            "serviceAccountName": "app",
            "containers": [{"name": "web", "image": "nginx"}],
            "volumes": [{"name": "token", "secret": {"secretName": "mounted"}}]}}),
    )
    .await;
    registry.sync().await.unwrap();
    let recorded = Arc::new(Recorded::default());
    let audit: badge_controllers::audit::Audit = Some(recorded.clone());

    let step = |days: u32| now.checked_add(DAY * days).unwrap();
    // Within the first period nothing is old enough.
    let swept = sweep(&registry, DAY, now, &audit).await.unwrap();
    assert!(swept.marked.is_empty() && swept.deleted.is_empty(), "{swept:?}");

    let swept = sweep(&registry, DAY, step(2), &audit).await.unwrap();
    assert_eq!(swept.marked, vec!["default/unused".to_string()]);
    registry.sync().await.unwrap();
    assert_eq!(invalid_since(&registry, "unused"), Some(day(step(2))));
    assert_eq!(invalid_since(&registry, "mounted"), Some(String::new()));
    assert_eq!(invalid_since(&registry, "by-hand"), Some(String::new()));

    // Marked on day 2: still there on day 3, deleted on day 4.
    let swept = sweep(&registry, DAY, step(3), &audit).await.unwrap();
    assert!(swept.deleted.is_empty(), "{swept:?}");
    let swept = sweep(&registry, DAY, step(4), &audit).await.unwrap();
    assert_eq!(swept.deleted, vec!["default/unused".to_string()]);
    registry.sync().await.unwrap();
    assert_eq!(invalid_since(&registry, "unused"), None);
    assert!(invalid_since(&registry, "mounted").is_some());
    assert!(invalid_since(&registry, "by-hand").is_some());

    let user = "system:serviceaccount:kube-system:legacy-service-account-token-cleaner".to_string();
    assert_eq!(
        *recorded.0.lock(),
        vec![
            (user.clone(), "patch".into(), "default/unused".into(), None),
            (user, "delete".into(), "default/unused".into(), None),
        ]
    );
}

#[tokio::test]
async fn nothing_is_cleaned_before_use_was_tracked_for_a_period() {
    let (_dir, registry) = start().await;
    let now = badge_api::clock::now();
    let account = create(
        &registry,
        "serviceaccounts",
        "default",
        json!({"metadata": {"name": "app"}, "secrets": [{"name": "unused"}]}),
    )
    .await;
    create(
        &registry,
        "secrets",
        "default",
        token_secret("unused", meta::uid(&account)),
    )
    .await;
    registry.sync().await.unwrap();
    // No tracking ConfigMap: use may have gone unrecorded.
    let swept = sweep(&registry, DAY, now.checked_add(DAY * 5).unwrap(), &None)
        .await
        .unwrap();
    assert!(swept.marked.is_empty(), "{swept:?}");

    // The tracker writes today's date; a period after the next midnight the cleaner acts.
    spawn_tracking(registry.clone(), badge_api::clock::now);
    let tracked = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Some(c) = registry.get_cached(core("configmaps"), "kube-system", TRACKING_CONFIGMAP) {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(tracked["data"]["since"], day(now));
    let swept = sweep(&registry, DAY, now.checked_add(DAY).unwrap(), &None)
        .await
        .unwrap();
    assert!(swept.marked.is_empty(), "{swept:?}");
    let swept = sweep(&registry, DAY, now.checked_add(DAY * 2).unwrap(), &None)
        .await
        .unwrap();
    assert_eq!(swept.marked, vec!["default/unused".to_string()]);
}
