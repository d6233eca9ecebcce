//! The controllers over a registry on a real (SQLite) store, in process: deleting a
//! namespace deletes what it holds, then the namespace itself.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use badge_api::resources::{self, Resource};
use badge_registry::{DeleteOptions, DeleteOutcome, EventType, ReadFrom, Registry, WriteOptions};
use badge_store::Store;
use badge_store::sqlite::SqliteStore;
use serde_json::json;

fn core(plural: &str) -> &'static Resource {
    resources::lookup("", "v1", plural).unwrap()
}

#[tokio::test]
async fn deleting_a_namespace_deletes_its_contents_then_the_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("store.db")).unwrap());
    let registry = Registry::start(store, 1000).await;
    badge_controllers::ensure_system_namespaces(&registry)
        .await
        .unwrap();
    badge_controllers::spawn_all(registry.clone(), String::new(), None);

    let create = |plural: &'static str, namespace: &'static str, name: &'static str| {
        let registry = registry.clone();
        async move {
            registry
                .create(
                    core(plural),
                    namespace,
                    json!({"metadata": {"name": name}}),
                    &WriteOptions::default(),
                )
                .await
                .unwrap()
        }
    };
    create("namespaces", "", "doomed").await;
    create("configmaps", "doomed", "settings").await;
    create("serviceaccounts", "doomed", "app").await;
    create("secrets", "doomed", "credentials").await;
    create("configmaps", "default", "kept").await;

    let namespace_key = core("namespaces").key("", "doomed");
    let mut watch = registry.cache().watch(&namespace_key, None).unwrap();
    let outcome = registry
        .delete(core("namespaces"), "", "doomed", &DeleteOptions::default())
        .await
        .unwrap();
    let DeleteOutcome::Pending(terminating) = outcome else {
        panic!("a namespace is finalized before it goes: {outcome:?}");
    };
    assert_eq!(terminating["spec"]["finalizers"], json!(["kubernetes"]));

    let gone = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let event = watch.next().await.unwrap();
            if event.key == namespace_key && event.kind == EventType::Deleted {
                return;
            }
        }
    })
    .await;
    assert!(gone.is_ok(), "the namespace was never finalized and removed");

    for (plural, name) in [
        ("configmaps", "settings"),
        ("serviceaccounts", "app"),
        ("secrets", "credentials"),
    ] {
        let status = registry
            .get(core(plural), "doomed", name, ReadFrom::Latest)
            .await
            .unwrap_err();
        assert_eq!(status.code, 404, "{plural}/{name} outlived its namespace");
    }
    registry
        .get(core("configmaps"), "default", "kept", ReadFrom::Latest)
        .await
        .unwrap();
}
