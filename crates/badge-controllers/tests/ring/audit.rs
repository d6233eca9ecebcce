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

mod log {
    //! The audit log's events per request, through an in-memory backend.

    use std::sync::Arc;

    use badge_apiserver::audit::log::MemoryBackend;
    use badge_apiserver::audit::{Policy, REDACTED};
    use serde_json::{Value, json};

    use crate::support::{Caller, Ring, jti_of};

    async fn audited(policy: &str) -> (Ring, Arc<MemoryBackend>) {
        let backend = Arc::new(MemoryBackend::default());
        let sink = backend.clone();
        let policy = Policy::parse(policy).unwrap();
        let ring = Ring::build(move |api| api.with_audit_log(policy, sink)).await;
        (ring, backend)
    }

    const METADATA: &str = "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n";
    const EVERYTHING: &str = "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: RequestResponse\n";

    /// Every event so far, as the JSON the log would hold, emptying the backend.
    fn take(backend: &MemoryBackend) -> Vec<Value> {
        backend
            .events
            .lock()
            .drain(..)
            .map(|e| serde_json::to_value(&e).unwrap())
            .collect()
    }

    fn stages(events: &[Value]) -> Vec<&str> {
        events.iter().map(|e| e["stage"].as_str().unwrap()).collect()
    }

    #[tokio::test]
    async fn token_requests_name_the_issued_credential_and_token_requests_carry_theirs() {
        let (ring, backend) = audited(METADATA).await;
        ring.service_account("default", "app").await;
        take(&backend);
        let token = ring.token("default", "app", json!({})).await;
        let jti = jti_of(&token);
        let issued = take(&backend);
        assert_eq!(stages(&issued), ["RequestReceived", "ResponseComplete"]);
        let complete = &issued[1];
        assert_eq!(complete["kind"], "Event");
        assert_eq!(complete["apiVersion"], "audit.k8s.io/v1");
        assert_eq!(complete["level"], "Metadata");
        assert_eq!(complete["verb"], "create");
        assert_eq!(
            complete["requestURI"],
            "/api/v1/namespaces/default/serviceaccounts/app/token"
        );
        assert_eq!(
            complete["objectRef"],
            json!({"resource": "serviceaccounts", "namespace": "default", "name": "app",
                   "apiVersion": "v1", "subresource": "token"})
        );
        assert_eq!(complete["responseStatus"], json!({"metadata": {}, "code": 201}));
        assert_eq!(
            complete["annotations"]["authentication.kubernetes.io/issued-credential-id"],
            format!("JTI={jti}")
        );
        assert_eq!(complete["annotations"]["authorization.k8s.io/decision"], "allow");
        assert_eq!(complete["user"]["username"], "kubernetes-admin");
        assert!(
            issued[0]["annotations"]
                .get("authentication.kubernetes.io/issued-credential-id")
                .is_none(),
            "the credential is issued after RequestReceived"
        );
        assert!(complete.get("requestObject").is_none() && complete.get("responseObject").is_none());
        assert_eq!(issued[0]["auditID"], complete["auditID"]);

        let reply = ring
            .get(
                &Caller::bearer(&token),
                "/api/v1/namespaces/default/serviceaccounts/app",
            )
            .await;
        let used = take(&backend);
        assert_eq!(stages(&used), ["RequestReceived", "ResponseComplete"]);
        let complete = &used[1];
        assert_eq!(reply.headers["audit-id"].to_str().unwrap(), complete["auditID"]);
        assert_eq!(complete["user"]["username"], "system:serviceaccount:default:app");
        assert_eq!(
            complete["user"]["extra"]["authentication.kubernetes.io/credential-id"],
            json!([format!("JTI={jti}")])
        );
        assert!(!format!("{issued:?}{used:?}").contains(&token));
    }

    #[tokio::test]
    async fn a_refusal_records_the_decision_and_the_status() {
        let (ring, backend) = audited(METADATA).await;
        ring.service_account("default", "app").await;
        let token = ring.token("default", "app", json!({})).await;
        take(&backend);
        let reply = ring
            .get(&Caller::bearer(&token), "/api/v1/namespaces/default/secrets/x")
            .await;
        assert_eq!(reply.code, 403);
        let events = take(&backend);
        assert_eq!(stages(&events), ["RequestReceived", "ResponseComplete"]);
        let complete = &events[1];
        assert_eq!(complete["annotations"]["authorization.k8s.io/decision"], "forbid");
        assert!(
            complete["annotations"]
                .get("authorization.k8s.io/reason")
                .is_some()
        );
        assert_eq!(complete["responseStatus"]["code"], 403);
        assert_eq!(complete["responseStatus"]["reason"], "Forbidden");
        assert_eq!(complete["responseStatus"]["status"], "Failure");
        assert_eq!(complete["responseStatus"]["message"], reply.body["message"]);
        assert!(!format!("{events:?}").contains(&token));
    }

    #[tokio::test]
    async fn a_failed_authentication_is_one_response_started_event_without_a_user() {
        let (ring, backend) = audited(METADATA).await;
        let reply = ring
            .get(&Caller::Header("Bearer not-a-token".into()), "/api/v1/namespaces")
            .await;
        assert_eq!(reply.code, 401);
        let events = take(&backend);
        assert_eq!(stages(&events), ["ResponseStarted"]);
        assert!(events[0].get("user").unwrap().as_object().unwrap().is_empty());
        assert_eq!(events[0]["responseStatus"]["code"], 401);
        assert_eq!(
            events[0]["responseStatus"]["message"],
            "Authentication failed, attempted: bearer"
        );
        assert!(!format!("{events:?}").contains("not-a-token"));
    }

    #[tokio::test]
    async fn impersonation_records_both_users() {
        let (ring, backend) = audited(METADATA).await;
        take(&backend);
        let reply = ring
            .call_with(
                &Caller::admin(),
                "GET",
                "/api/v1/namespaces",
                None,
                &[("Impersonate-User", "bob"), ("Impersonate-Group", "devs")],
            )
            .await;
        assert_eq!(reply.code, 403, "{}", reply.body);
        let events = take(&backend);
        let complete = events.last().unwrap();
        assert_eq!(complete["user"]["username"], "kubernetes-admin");
        assert_eq!(complete["impersonatedUser"]["username"], "bob");
        assert_eq!(
            complete["impersonatedUser"]["groups"],
            json!(["devs", "system:authenticated"])
        );
        assert_eq!(complete["annotations"]["authorization.k8s.io/decision"], "forbid");

        // Impersonation refused: the event names the real user only.
        ring.get(&Caller::user("mallory"), "/api/v1/namespaces").await;
        take(&backend);
        let reply = ring
            .call_with(
                &Caller::user("mallory"),
                "GET",
                "/api/v1/namespaces",
                None,
                &[("Impersonate-User", "kubernetes-admin")],
            )
            .await;
        assert_eq!(reply.code, 403);
        let events = take(&backend);
        let complete = events.last().unwrap();
        assert_eq!(complete["user"]["username"], "mallory");
        assert!(complete.get("impersonatedUser").is_none());
        assert_eq!(complete["responseStatus"]["code"], 403);
    }

    #[tokio::test]
    async fn bodies_are_recorded_with_secrets_and_tokens_redacted() {
        let (ring, backend) = audited(EVERYTHING).await;
        ring.service_account("default", "app").await;
        let created = ring
            .create(
                "/api/v1/namespaces/default/secrets",
                json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
                       "data": {"password": "c2VjcmV0LXZhbHVl"}, "stringData": {"plain": "plain-secret"}}),
            )
            .await;
        assert_eq!(created["kind"], "Secret");
        let token = ring.token("default", "app", json!({})).await;
        let read = ring
            .get(&Caller::admin(), "/api/v1/namespaces/default/secrets/s")
            .await;
        assert_eq!(read.code, 200);
        let review = ring
            .call(
                &Caller::admin(),
                "POST",
                "/apis/authentication.k8s.io/v1/tokenreviews",
                Some(
                    &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                             "spec": {"token": token}}),
                ),
            )
            .await;
        assert_eq!(review.body["status"]["authenticated"], true);
        let events = take(&backend);
        let text = format!("{events:?}");
        for secret in [token.as_str(), "c2VjcmV0LXZhbHVl", "plain-secret", "secret-value"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        let complete = |resource: &str, verb: &str| {
            events
                .iter()
                .find(|e| {
                    e["stage"] == "ResponseComplete"
                        && e["objectRef"]["resource"] == resource
                        && e["verb"] == verb
                })
                .unwrap()
                .clone()
        };
        let create = complete("secrets", "create");
        assert_eq!(create["requestObject"]["data"]["password"], REDACTED);
        assert_eq!(create["requestObject"]["stringData"]["plain"], REDACTED);
        assert_eq!(create["responseObject"]["data"]["password"], REDACTED);
        assert_eq!(create["responseObject"]["metadata"]["name"], "s");
        let get = complete("secrets", "get");
        assert!(get.get("requestObject").is_none());
        assert_eq!(get["responseObject"]["data"]["password"], REDACTED);
        let issue = complete("serviceaccounts", "create");
        let issue = if issue["objectRef"]["subresource"] == "token" {
            issue
        } else {
            events
                .iter()
                .rfind(|e| e["stage"] == "ResponseComplete" && e["objectRef"]["subresource"] == "token")
                .unwrap()
                .clone()
        };
        assert_eq!(issue["responseObject"]["status"]["token"], REDACTED);
        assert_eq!(issue["requestObject"]["kind"], "TokenRequest");
        let review = complete("tokenreviews", "create");
        assert_eq!(review["requestObject"]["spec"]["token"], REDACTED);
        assert_eq!(review["responseObject"]["spec"]["token"], REDACTED);
        assert_eq!(review["responseObject"]["status"]["authenticated"], true);
    }

    #[tokio::test]
    async fn the_policy_decides_levels_and_stages() {
        let (ring, backend) = audited(
            r#"apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: None
  resources: [{group: "", resources: [configmaps]}]
- level: None
  nonResourceURLs: ["/healthz*"]
- level: Request
  users: [kubernetes-admin]
  verbs: [create]
- level: Metadata
"#,
        )
        .await;
        ring.create(
            "/api/v1/namespaces/default/configmaps",
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}),
        )
        .await;
        ring.get(&Caller::admin(), "/healthz").await;
        assert!(take(&backend).is_empty());
        ring.service_account("default", "app").await;
        let events = take(&backend);
        assert_eq!(stages(&events), ["ResponseComplete"]);
        assert_eq!(events[0]["level"], "Request");
        assert_eq!(events[0]["requestObject"]["metadata"]["name"], "app");
        assert_eq!(
            events[0]["objectRef"],
            json!({"resource": "serviceaccounts", "namespace": "default", "name": "app", "apiVersion": "v1"}),
            "a create's reference names the object its body names"
        );
        assert!(events[0].get("responseObject").is_none());
        ring.get(&Caller::admin(), "/api/v1/namespaces/default/serviceaccounts/app")
            .await;
        let events = take(&backend);
        assert_eq!(events[0]["level"], "Metadata");
        assert!(events[0].get("requestObject").is_none());
    }

    #[tokio::test]
    async fn a_watch_records_response_started_then_complete_when_it_ends() {
        let (ring, backend) = audited(METADATA).await;
        take(&backend);
        let mut watch = ring
            .watch(&Caller::admin(), "/api/v1/namespaces?watch=true")
            .await
            .unwrap();
        watch.next().await;
        assert_eq!(stages(&take(&backend)), ["RequestReceived", "ResponseStarted"]);
        drop(watch);
        let events = take(&backend);
        assert_eq!(stages(&events), ["ResponseComplete"]);
        assert_eq!(events[0]["verb"], "watch");
        assert_eq!(events[0]["responseStatus"]["code"], 200);
    }

    #[tokio::test]
    async fn metrics_are_served_to_whom_rbac_allows_and_count_requests() {
        let (ring, _backend) = audited(METADATA).await;
        ring.service_account("default", "app").await;
        let token = ring.token("default", "app", json!({})).await;
        ring.get(&Caller::bearer(&token), "/api/v1/namespaces/default/secrets")
            .await;
        let refused = ring.get(&Caller::bearer(&token), "/metrics").await;
        assert_eq!(refused.code, 403);
        assert_eq!(
            refused.body["message"],
            "forbidden: User \"system:serviceaccount:default:app\" cannot get path \"/metrics\""
        );
        let reply = ring.get(&Caller::admin(), "/metrics").await;
        assert_eq!(reply.code, 200);
        let text = reply.body.as_str().unwrap();
        for line in [
            "apiserver_request_total{code=\"201\",component=\"apiserver\",group=\"\",resource=\"serviceaccounts\",scope=\"resource\",subresource=\"token\",verb=\"POST\",version=\"v1\"} 1\n",
            "apiserver_request_total{code=\"403\",component=\"apiserver\",group=\"\",resource=\"secrets\",scope=\"namespace\",subresource=\"\",verb=\"LIST\",version=\"v1\"} 1\n",
            "apiserver_request_total{code=\"403\",component=\"\",group=\"\",resource=\"\",scope=\"\",subresource=\"/metrics\",verb=\"GET\",version=\"\"} 1\n",
            "badge_tokens_issued_total{namespace=\"default\"} 1\n",
            "# TYPE apiserver_request_duration_seconds histogram\n",
            "# TYPE serviceaccount_valid_tokens_total counter\n",
            "# TYPE badge_token_cache_hits_total counter\n",
            "badge_audit_events_dropped_total 0\n",
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
        assert!(text.contains("badge_token_verifications_total{kid=\""), "{text}");
        assert!(text.contains("apiserver_audit_event_total "), "{text}");
        assert!(
            text.contains("authentication_attempts{result=\"success\"} "),
            "{text}"
        );
    }
}
