//! The Node authorizer and NodeRestriction for token requests: a node reads only what its
//! pods use, and asks tokens only for its own pods.

use serde_json::{Value, json};

use crate::support::{Caller, Ring, event_names};

async fn pod(ring: &Ring, name: &str, node: &str, sa: &str, secret: &str) -> Value {
    ring.create(
        "/api/v1/namespaces/default/pods",
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
               "spec": {"nodeName": node, "serviceAccountName": sa,
                        "containers": [{"name": "c", "image": "i"}],
                        "volumes": [{"name": "s", "secret": {"secretName": secret}}]}}),
    )
    .await
}

fn token_request(pod: &str, uid: &str) -> Value {
    json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
           "spec": {"boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pod, "uid": uid}}})
}

#[tokio::test]
async fn a_node_reads_what_its_pods_use_and_nothing_else() {
    let ring = Ring::new().await;
    for sa in ["app", "other"] {
        ring.service_account("default", sa).await;
    }
    for secret in ["s1", "s2", "s10"] {
        ring.secret("default", secret).await;
    }
    pod(&ring, "p", "n1", "app", "s1").await;
    pod(&ring, "q", "n2", "other", "s2").await;
    let n1 = Caller::node("n1");
    for (path, code) in [
        ("/api/v1/namespaces/default/secrets/s1", 200),
        (
            "/api/v1/namespaces/default/secrets?fieldSelector=metadata.name%3Ds1",
            200,
        ),
        ("/api/v1/namespaces/default/serviceaccounts/app", 200),
        ("/api/v1/namespaces/default/secrets/s2", 403),
        ("/api/v1/namespaces/default/secrets/s10", 403),
        ("/api/v1/namespaces/default/secrets", 403),
        ("/api/v1/secrets?fieldSelector=metadata.name%3Ds2", 403),
        ("/api/v1/namespaces/default/serviceaccounts/other", 403),
        ("/api/v1/namespaces/default/configmaps/s1", 403),
    ] {
        let reply = ring.get(&n1, path).await;
        assert_eq!(reply.code, code, "{path}: {}", reply.body);
    }
    let listed = ring
        .get(
            &n1,
            "/api/v1/namespaces/default/secrets?fieldSelector=metadata.name%3Ds1",
        )
        .await;
    assert_eq!(listed.names(), vec!["s1".to_string()]);
    // The kubelet's per-Secret watch.
    let mut watch = ring
        .watch(
            &n1,
            "/api/v1/namespaces/default/secrets?watch=true&fieldSelector=metadata.name%3Ds1",
        )
        .await
        .unwrap();
    for name in ["s10", "s2", "s1"] {
        ring.call(
            &Caller::admin(),
            "PATCH",
            &format!("/api/v1/namespaces/default/secrets/{name}"),
            Some(&json!({"metadata": {"labels": {"t": "1"}}})),
        )
        .await;
    }
    let events = watch
        .until(|e| e["type"] == "MODIFIED" && e["object"]["metadata"]["name"] == "s1")
        .await;
    assert!(
        event_names(&events).iter().all(|n| n == "s1"),
        "{:?}",
        event_names(&events)
    );
    // Writes stay refused.
    let reply = ring
        .call(&n1, "DELETE", "/api/v1/namespaces/default/secrets/s1", None)
        .await;
    assert_eq!(reply.code, 403);
}

#[tokio::test]
async fn a_node_asks_tokens_for_its_own_pods_only() {
    let ring = Ring::new().await;
    for sa in ["app", "other"] {
        ring.service_account("default", sa).await;
    }
    let p = pod(&ring, "p", "n1", "app", "s1").await;
    let q = pod(&ring, "q", "n2", "app", "s1").await;
    let uid = |o: &Value| o["metadata"]["uid"].as_str().unwrap().to_string();
    let n1 = Caller::node("n1");
    let path = "/api/v1/namespaces/default/serviceaccounts/app/token";
    let reply = ring
        .call(&n1, "POST", path, Some(&token_request("p", &uid(&p))))
        .await;
    assert_eq!(reply.code, 201, "{}", reply.body);
    let cases = [
        (
            json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}}),
            403,
            "node requested token not bound to a pod",
        ),
        (
            token_request("p", ""),
            403,
            "node requested token with a pod binding without a uid",
        ),
        (
            token_request("q", &uid(&q)),
            403,
            "node requested token bound to a pod scheduled on a different node",
        ),
        (
            token_request("p", "not-the-uid"),
            403,
            "the UID in the bound object reference (not-the-uid) does not match the UID in record. The object might have been deleted and then recreated",
        ),
        (token_request("missing", "x"), 404, "pods \"missing\" not found"),
    ];
    for (body, code, message) in cases {
        let reply = ring.call(&n1, "POST", path, Some(&body)).await;
        assert_eq!(reply.code, code, "{}", reply.body);
        assert!(
            reply.body["message"]
                .as_str()
                .unwrap_or_default()
                .ends_with(message),
            "{message}: {}",
            reply.body
        );
    }
    // A ServiceAccount none of its pods run as.
    let reply = ring
        .call(
            &n1,
            "POST",
            "/api/v1/namespaces/default/serviceaccounts/other/token",
            Some(&token_request("p", &uid(&p))),
        )
        .await;
    assert_eq!(reply.code, 403, "{}", reply.body);
}
