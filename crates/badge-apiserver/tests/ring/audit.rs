//! The audit stage sees every authenticated request, refused ones too, and never a
//! credential.

use std::sync::Arc;

use badge_apiserver::audit::{AuditSink, RequestEvent};
use parking_lot::Mutex;
use serde_json::json;

use crate::support::{Caller, Ring};

struct Recorder(Arc<Mutex<Vec<String>>>);

impl AuditSink for Recorder {
    fn request(&self, event: &RequestEvent<'_>) {
        self.0.lock().push(format!(
            "{} {} {}/{} {:?}",
            event.user.name, event.info.verb, event.info.resource, event.info.name, event.user
        ));
    }
}

#[tokio::test]
async fn every_authenticated_request_is_seen_without_its_token() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let ring = Ring::build(move |mut api| {
        api.audit = Box::new(Recorder(sink));
        api
    })
    .await;
    ring.service_account("default", "app").await;
    let token = ring.token("default", "app", json!({})).await;
    seen.lock().clear();
    assert_eq!(
        ring.get(&Caller::bearer(&token), "/api/v1/namespaces/default/secrets/x")
            .await
            .code,
        403
    );
    assert_eq!(
        ring.get(&Caller::Header("Bearer bad".into()), "/api/v1/namespaces")
            .await
            .code,
        401
    );
    let seen = seen.lock().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(
        seen[0].starts_with("system:serviceaccount:default:app get secrets/x"),
        "{seen:?}"
    );
    assert!(!seen[0].contains(&token));
}
