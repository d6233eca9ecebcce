//! The registry over a real (SQLite) store, in process: optimistic concurrency, paging with
//! continue tokens, and watches resumed from a resourceVersion.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use badge_api::resources::{self, Resource};
use badge_registry::{DeleteOptions, DeleteOutcome, EventType, Filter, ReadFrom, Registry, WriteOptions};
use badge_store::Store;
use badge_store::sqlite::SqliteStore;
use serde_json::{Value, json};

fn core(plural: &str) -> &'static Resource {
    resources::lookup("", "v1", plural).unwrap()
}

fn resource_version(object: &Value) -> i64 {
    object["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// A registry over a fresh store, with namespace `ns`.
async fn registry() -> (tempfile::TempDir, Arc<dyn Store>, Arc<Registry>) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("store.db")).unwrap());
    let registry = Registry::start(store.clone(), 1000).await;
    registry
        .create(
            core("namespaces"),
            "",
            json!({"metadata": {"name": "ns"}}),
            &WriteOptions::default(),
        )
        .await
        .unwrap();
    (dir, store, registry)
}

async fn create_config_map(registry: &Registry, name: &str) -> Value {
    registry
        .create(
            core("configmaps"),
            "ns",
            json!({"metadata": {"name": name}, "data": {"k": "v"}}),
            &WriteOptions::default(),
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn writes_conflict_with_409_and_carry_the_stores_resource_version() {
    let (_dir, _store, registry) = registry().await;
    let created = create_config_map(&registry, "one").await;
    let first = resource_version(&created);

    let again = registry
        .create(
            core("configmaps"),
            "ns",
            json!({"metadata": {"name": "one"}}),
            &WriteOptions::default(),
        )
        .await
        .unwrap_err();
    assert_eq!((again.code, again.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(again.message, "configmaps \"one\" already exists");

    let mut seen = 0;
    let updated = registry
        .update(
            core("configmaps"),
            "ns",
            "one",
            "",
            &WriteOptions::default(),
            |current| {
                seen = resource_version(current);
                let mut next = current.clone();
                next["data"]["k"] = json!("w");
                Ok(next)
            },
        )
        .await
        .unwrap();
    assert_eq!(seen, first, "the change is handed the stored object");
    assert!(resource_version(&updated) > first);

    let stale = DeleteOptions {
        precondition_resource_version: Some(first.to_string()),
        ..Default::default()
    };
    let conflict = registry
        .delete(core("configmaps"), "ns", "one", &stale)
        .await
        .unwrap_err();
    assert_eq!((conflict.code, conflict.reason.as_str()), (409, "Conflict"));
    assert!(
        conflict.message.contains(&format!(
            "Precondition failed: ResourceVersion in precondition: {first}, ResourceVersion in object meta: {}",
            resource_version(&updated)
        )),
        "{}",
        conflict.message
    );

    let current = DeleteOptions {
        precondition_resource_version: Some(resource_version(&updated).to_string()),
        ..Default::default()
    };
    let deleted = registry
        .delete(core("configmaps"), "ns", "one", &current)
        .await
        .unwrap();
    assert!(matches!(deleted, DeleteOutcome::Deleted(_)));
    let gone = registry
        .get(core("configmaps"), "ns", "one", ReadFrom::Latest)
        .await
        .unwrap_err();
    assert_eq!((gone.code, gone.reason.as_str()), (404, "NotFound"));
}

#[tokio::test]
async fn lists_page_with_continue_tokens_that_expire_with_compaction() {
    let (_dir, store, registry) = registry().await;
    for name in ["a", "b", "c", "d", "e"] {
        create_config_map(&registry, name).await;
    }
    let filter = Filter::default();
    let mut names = Vec::new();
    let mut token: Option<String> = None;
    let mut first_token = None;
    loop {
        let page = registry
            .list(
                core("configmaps"),
                "ns",
                &filter,
                ReadFrom::Latest,
                2,
                token.as_deref(),
            )
            .await
            .unwrap();
        names.extend(
            page.items
                .iter()
                .map(|o| o["metadata"]["name"].as_str().unwrap().to_string()),
        );
        match page.continue_token {
            Some(next) => {
                first_token.get_or_insert_with(|| (next.clone(), page.remaining));
                token = Some(next);
            }
            None => break,
        }
    }
    assert_eq!(names, ["a", "b", "c", "d", "e"]);
    let (expiring, remaining) = first_token.unwrap();
    assert_eq!(remaining, Some(3));

    // Once the list's revision is compacted away (and newer writes keep the cache from
    // serving it), the token cannot continue that snapshot.
    create_config_map(&registry, "f").await;
    let now = store.current_revision().await.unwrap();
    store.compact(now).await.unwrap();
    let expired = registry
        .list(
            core("configmaps"),
            "ns",
            &filter,
            ReadFrom::Latest,
            2,
            Some(&expiring),
        )
        .await
        .unwrap_err();
    assert_eq!((expired.code, expired.reason.as_str()), (410, "Expired"));
    assert!(
        expired
            .message
            .starts_with("The provided continue parameter is too old")
    );
}

#[tokio::test]
async fn a_watch_resumes_after_a_resource_version() {
    let (_dir, _store, registry) = registry().await;
    let before = resource_version(&create_config_map(&registry, "before").await);
    let after = create_config_map(&registry, "after").await;
    registry
        .delete(core("configmaps"), "ns", "before", &DeleteOptions::default())
        .await
        .unwrap();
    registry.sync().await.unwrap();

    let prefix = core("configmaps").namespace_prefix("ns");
    let watch = registry.cache().watch(&prefix, Some(before)).unwrap();
    let seen: Vec<(EventType, String, i64)> = watch
        .initial
        .iter()
        .map(|e| (e.kind, e.key.clone(), e.revision))
        .collect();
    assert_eq!(
        seen,
        [
            (
                EventType::Added,
                format!("{prefix}after"),
                resource_version(&after)
            ),
            (EventType::Deleted, format!("{prefix}before"), seen[1].2),
        ]
    );
    assert!(seen[1].2 > resource_version(&after));

    // And goes on with live events.
    let mut watch = watch;
    create_config_map(&registry, "live").await;
    let live = watch.next().await.unwrap();
    assert_eq!(
        (live.kind, live.key.as_str()),
        (EventType::Added, format!("{prefix}live").as_str())
    );
}
