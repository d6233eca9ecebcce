//! Suspicious use of a pod-bound token whose node binding no longer holds: its node was
//! replaced (same name, new uid) since it was issued. The use is annotated in the audit log,
//! the IssuedToken flagged at the next flush and, with automatic revocation, the token
//! refused.

use std::sync::Arc;

use badge_apiserver::audit::Policy;
use badge_apiserver::audit::log::MemoryBackend;
use badge_apiserver::usage::{DEFAULT_SUSPICIOUS_WINDOW, SuspicionPolicy, UsageRecorder};
use serde_json::{Value, json};

use crate::support::{Caller, Ring, jti_of};

async fn whoami_code(ring: &Ring, token: &str) -> u16 {
    ring.use_token(token, &[]).await.code
}

async fn node(ring: &Ring, name: &str) -> Value {
    ring.create(
        "/api/v1/nodes",
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}),
    )
    .await
}

async fn audited(revoke: bool) -> (Ring, Arc<MemoryBackend>) {
    let backend = Arc::new(MemoryBackend::default());
    let sink = backend.clone();
    let ring = Ring::build(move |api| {
        api.with_usage(UsageRecorder::new(true).with_suspicion(SuspicionPolicy {
            window: DEFAULT_SUSPICIOUS_WINDOW,
            revoke,
        }))
        .with_audit_log(Policy::metadata_for_everything(), sink)
    })
    .await;
    (ring, backend)
}

/// A token bound to pod `web` on node `n1`, and its jti.
async fn pod_bound_token(ring: &Ring) -> (String, String) {
    ring.namespace("demo").await;
    ring.service_account("demo", "app").await;
    node(ring, "n1").await;
    let pod = ring
        .create(
            "/api/v1/namespaces/demo/pods",
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
                   "spec": {"nodeName": "n1", "serviceAccountName": "app",
                            "containers": [{"name": "c", "image": "i"}]}}),
        )
        .await;
    let token = ring
        .token(
            "demo",
            "app",
            json!({"boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "web",
                   "uid": pod["metadata"]["uid"]}}),
        )
        .await;
    let jti = jti_of(&token);
    (token, jti)
}

async fn replace_node(ring: &Ring, name: &str) {
    let reply = ring
        .call(&Caller::admin(), "DELETE", &format!("/api/v1/nodes/{name}"), None)
        .await;
    assert_eq!(reply.code, 200, "{}", reply.body);
    node(ring, name).await;
    ring.api.registry.sync().await.unwrap();
}

async fn record(ring: &Ring, jti: &str) -> Value {
    let reply = ring
        .get(
            &Caller::admin(),
            &format!("/apis/identity.badge.dev/v1/namespaces/demo/issuedtokens/{jti}"),
        )
        .await;
    assert_eq!(reply.code, 200, "{}", reply.body);
    reply.body
}

fn annotations_of_uses(backend: &MemoryBackend) -> Vec<String> {
    backend
        .events
        .lock()
        .iter()
        .map(|e| serde_json::to_value(e).unwrap())
        .filter(|e| e["objectRef"]["resource"] == "selfsubjectreviews" && e["stage"] == "ResponseComplete")
        .map(|e| {
            e["annotations"]["identity.badge.dev/suspicious-token-use"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

#[tokio::test]
async fn a_token_used_after_its_node_was_replaced_is_flagged_audited_and_revoked() {
    let (ring, backend) = audited(true).await;
    let (token, jti) = pod_bound_token(&ring).await;
    assert_eq!(whoami_code(&ring, &token).await, 201);
    ring.api.flush_usage().await;
    assert!(record(&ring, &jti).await["status"]["suspicious"].is_null());
    assert_eq!(annotations_of_uses(&backend), [""]);

    replace_node(&ring, "n1").await;
    assert_eq!(whoami_code(&ring, &token).await, 201);
    let annotations = annotations_of_uses(&backend);
    assert!(
        annotations[1].starts_with("BoundNodeChanged: issued on node n1"),
        "{annotations:?}"
    );
    ring.api.flush_usage().await;
    let flagged = record(&ring, &jti).await;
    assert_eq!(
        flagged["status"]["suspicious"]["reason"], "BoundNodeChanged",
        "{flagged}"
    );
    assert_eq!(flagged["spec"]["revoked"], true, "{flagged}");
    let mut code = 0;
    for _ in 0..500 {
        code = whoami_code(&ring, &token).await;
        if code == 401 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(code, 401);
}

#[tokio::test]
async fn without_automatic_revocation_the_token_is_only_flagged() {
    let (ring, _backend) = audited(false).await;
    let (token, jti) = pod_bound_token(&ring).await;
    replace_node(&ring, "n1").await;
    assert_eq!(whoami_code(&ring, &token).await, 201);
    ring.api.flush_usage().await;
    let flagged = record(&ring, &jti).await;
    assert_eq!(
        flagged["status"]["suspicious"]["reason"], "BoundNodeChanged",
        "{flagged}"
    );
    assert_ne!(flagged["spec"]["revoked"], true, "{flagged}");
    assert_eq!(whoami_code(&ring, &token).await, 201);
}

#[tokio::test]
async fn a_token_reviewed_after_its_node_was_replaced_is_flagged() {
    let (ring, _backend) = audited(false).await;
    let (token, jti) = pod_bound_token(&ring).await;
    replace_node(&ring, "n1").await;
    let review = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                        "spec": {"token": token}});
    let reply = ring
        .call(
            &Caller::admin(),
            "POST",
            "/apis/authentication.k8s.io/v1/tokenreviews",
            Some(&review),
        )
        .await;
    assert_eq!(reply.code, 201, "{}", reply.body);
    assert_eq!(reply.body["status"]["authenticated"], true, "{}", reply.body);
    ring.api.flush_usage().await;
    let flagged = record(&ring, &jti).await;
    assert_eq!(
        flagged["status"]["suspicious"]["reason"], "BoundNodeChanged",
        "{flagged}"
    );
}
