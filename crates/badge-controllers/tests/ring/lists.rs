//! Paged lists: `remainingItemCount` on every non-final page without selectors, whether the
//! next page comes from the cache or, after writes, from the store's history.

use serde_json::json;

use crate::support::{Caller, Ring};

#[tokio::test]
async fn every_unfiltered_page_but_the_last_counts_what_remains() {
    let ring = Ring::new().await;
    ring.namespace("p").await;
    for i in 0..7 {
        ring.create(
            "/api/v1/namespaces/p/configmaps",
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("c{i}"), "labels": {"n": i.to_string()}}}),
        )
        .await;
    }
    let admin = Caller::admin();
    let page = |continue_token: Option<String>, query: &'static str| {
        let ring = &ring;
        let admin = admin.clone();
        async move {
            let token = continue_token
                .map(|t| format!("&continue={t}"))
                .unwrap_or_default();
            ring.get(
                &admin,
                &format!("/api/v1/namespaces/p/configmaps?limit=2{query}{token}"),
            )
            .await
            .body
        }
    };
    // Quiet: pages from the cache.
    let first = page(None, "").await;
    assert_eq!(first["metadata"]["remainingItemCount"], 5);
    let token = first["metadata"]["continue"].as_str().unwrap().to_string();
    let second = page(Some(token.clone()), "").await;
    assert_eq!(second["metadata"]["remainingItemCount"], 3);
    // After a write under the prefix the next page is read from the store at the snapshot's
    // revision, and still counts what remains of that snapshot.
    ring.create(
        "/api/v1/namespaces/p/configmaps",
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "later"}}),
    )
    .await;
    let second_again = page(Some(token), "").await;
    assert_eq!(
        second_again["metadata"]["remainingItemCount"], 3,
        "{second_again}"
    );
    assert_eq!(
        second_again["items"].as_array().unwrap().len(),
        2,
        "the snapshot's items, not the later one"
    );
    let mut token = second_again["metadata"]["continue"].as_str().unwrap().to_string();
    let third = page(Some(token.clone()), "").await;
    assert_eq!(third["metadata"]["remainingItemCount"], 1);
    token = third["metadata"]["continue"].as_str().unwrap().to_string();
    let last = page(Some(token), "").await;
    assert!(last["metadata"].get("remainingItemCount").is_none(), "{last}");
    assert!(last["metadata"].get("continue").is_none(), "{last}");
    // With a selector the count is unknown, as upstream.
    let filtered = page(None, "&labelSelector=n").await;
    assert!(filtered["metadata"]["continue"].is_string());
    assert!(
        filtered["metadata"].get("remainingItemCount").is_none(),
        "{filtered}"
    );
}
