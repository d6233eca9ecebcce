//! The audit log and /metrics end to end: a policy file, requests through kubectl, the log
//! read back as JSON lines; no credential in it at any level.

use badge_testkit::Credential::{Admin, Bearer};
use badge_testkit::TestServer;
use serde_json::{Value, json};

use crate::eventually;

const POLICY: &str = r#"apiVersion: audit.k8s.io/v1
kind: Policy
rules:
- level: None
  nonResourceURLs: ["/healthz*", "/livez*", "/readyz*"]
- level: RequestResponse
  resources:
  - group: ""
    resources: ["secrets", "serviceaccounts/token"]
  - group: "authentication.k8s.io"
    resources: ["tokenreviews", "selfsubjectreviews"]
- level: Request
  verbs: ["create", "update", "patch"]
- level: Metadata
"#;

fn claims_of(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

/// The audit log's events; every line must be one JSON object.
fn events(s: &TestServer) -> (String, Vec<Value>) {
    let text = std::fs::read_to_string(s.data_dir().join("audit.log")).unwrap_or_default();
    let events = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    (text, events)
}

fn whoami(s: &TestServer, token: &str) -> Value {
    serde_json::from_str(&s.kubectl_ok(&["--token", token, "auth", "whoami", "-o", "json"])).unwrap()
}

#[test]
fn the_audit_log_records_requests_by_policy_and_never_a_credential() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    let s = TestServer::start_with(
        env!("CARGO_BIN_EXE_badge"),
        &["--audit-policy-file", policy.to_str().unwrap()],
    );

    // A bound token, through kubectl, then used.
    s.kubectl_ok(&["create", "sa", "app", "-n", "default"]);
    let bound = s.kubectl_ok(&["create", "token", "app", "-n", "default"]);
    let jti = claims_of(&bound)["jti"].as_str().unwrap().to_string();
    assert_eq!(
        whoami(&s, &bound)["status"]["userInfo"]["username"],
        "system:serviceaccount:default:app"
    );
    let review = crate::token_review(&s, &bound, &[]);
    assert_eq!(review["authenticated"], true);

    // A legacy Secret token, filled by the controller, read back and used.
    let secret = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: app-token\n  namespace: default\n  annotations:\n    kubernetes.io/service-account.name: app\ntype: kubernetes.io/service-account-token\n";
    assert!(
        s.kubectl_with_stdin(&["apply", "-f", "-"], Some(secret))
            .status
            .success()
    );
    let mut legacy_b64 = String::new();
    eventually("the token controller to fill the secret", || {
        legacy_b64 = s.kubectl_ok(&[
            "get",
            "secret",
            "app-token",
            "-n",
            "default",
            "-o",
            "jsonpath={.data.token}",
        ]);
        !legacy_b64.is_empty()
    });
    let legacy = {
        use base64::Engine;
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(&legacy_b64)
                .unwrap(),
        )
        .unwrap()
    };
    s.kubectl_ok(&["get", "secret", "app-token", "-n", "default", "-o", "yaml"]);
    whoami(&s, &legacy);

    // Secret data applied with kubectl apply, which also copies it into an annotation.
    let applied = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: applied\n  namespace: default\nstringData:\n  password: applied-password-4711\n";
    assert!(
        s.kubectl_with_stdin(&["apply", "-f", "-"], Some(applied))
            .status
            .success()
    );
    let changed = applied.replace("4711", "4712");
    assert!(
        s.kubectl_with_stdin(&["apply", "-f", "-"], Some(&changed))
            .status
            .success()
    );
    s.kubectl_ok(&["get", "secret", "applied", "-n", "default", "-o", "json"]);

    // A bootstrap token, written through the API and used.
    let bootstrap = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "bootstrap-token-7abcde", "namespace": "kube-system"},
        "type": "bootstrap.kubernetes.io/token",
        "stringData": {"token-id": "7abcde", "token-secret": "7f7e7d7c7b7a7978",
                       "usage-bootstrap-authentication": "true"},
    });
    let created = s.kubectl_with_stdin(&["create", "-f", "-"], Some(&bootstrap.to_string()));
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let bootstrap_token = "7abcde.7f7e7d7c7b7a7978";
    eventually("the bootstrap token to authenticate", || {
        s.request("GET", "/api", None, &[], Bearer(bootstrap_token.into()))
            .unwrap()
            .status
            == 200
    });
    s.kubectl_ok(&["get", "secrets", "-n", "kube-system", "-o", "json"]);

    // Denied, and /metrics: allowed for the admin, refused for the ServiceAccount.
    let denied = s.kubectl_err(&["--token", &bound, "get", "secrets", "-n", "default"]);
    assert!(denied.contains("forbidden"), "{denied}");
    let metrics = s.kubectl_ok(&["get", "--raw", "/metrics"]);
    let refused = s.kubectl_err(&["--token", &bound, "get", "--raw", "/metrics"]);
    assert!(
        refused.contains("Forbidden") || refused.contains("forbidden"),
        "{refused}"
    );
    for family in [
        "# TYPE apiserver_request_total counter",
        "# TYPE apiserver_request_duration_seconds histogram",
        "# TYPE serviceaccount_legacy_tokens_total counter",
        "# TYPE serviceaccount_stale_tokens_total counter",
        "# TYPE serviceaccount_valid_tokens_total counter",
        "# TYPE authentication_attempts counter",
        "badge_tokens_issued_total{namespace=\"default\"} 1",
        "# TYPE badge_token_revocations_total counter",
        "# TYPE badge_token_cache_hits_total counter",
        "# TYPE badge_token_cache_misses_total counter",
        "badge_token_verifications_total{kid=",
        "# TYPE apiserver_audit_event_total counter",
        "badge_audit_events_dropped_total 0",
    ] {
        assert!(metrics.contains(family), "{family} not in\n{metrics}");
    }
    let valid: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("serviceaccount_valid_tokens_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(valid >= 1, "{metrics}");
    let legacy_used: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("serviceaccount_legacy_tokens_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(legacy_used >= 1, "{metrics}");

    // The log: the events above, written asynchronously.
    let refused_metrics = |e: &Value| {
        e["requestURI"] == "/metrics"
            && e["stage"] == "ResponseComplete"
            && e["responseStatus"]["code"] == 403
    };
    eventually("the refused /metrics request in the audit log", || {
        events(&s).1.iter().any(refused_metrics)
    });
    let (text, events) = events(&s);
    let credential = format!("JTI={jti}");
    let issued = events
        .iter()
        .find(|e| {
            e["stage"] == "ResponseComplete"
                && e["objectRef"]["subresource"] == "token"
                && e["annotations"]["authentication.kubernetes.io/issued-credential-id"] == credential
        })
        .expect("the TokenRequest's event names the issued credential");
    assert_eq!(issued["level"], "RequestResponse");
    assert_eq!(issued["verb"], "create");
    assert_eq!(issued["responseObject"]["status"]["token"], "<redacted>");
    assert_eq!(issued["user"]["username"], "kubernetes-admin");
    assert!(issued["userAgent"].as_str().unwrap().starts_with("kubectl"));
    assert_eq!(issued["sourceIPs"], json!(["127.0.0.1"]));
    let used: Vec<&Value> = events
        .iter()
        .filter(|e| e["user"]["extra"]["authentication.kubernetes.io/credential-id"] == json!([credential]))
        .collect();
    assert!(
        used.len() >= 4,
        "whoami, the refused list and /metrics: {used:#?}"
    );
    assert!(
        used.iter()
            .all(|e| e["user"]["username"] == "system:serviceaccount:default:app")
    );
    let denial = used
        .iter()
        .find(|e| e["objectRef"]["resource"] == "secrets" && e["stage"] == "ResponseComplete")
        .unwrap();
    assert_eq!(denial["annotations"]["authorization.k8s.io/decision"], "forbid");
    assert_eq!(denial["responseStatus"]["code"], 403);
    let metrics_refusal = events.iter().find(|e| refused_metrics(e)).unwrap();
    assert_eq!(metrics_refusal["verb"], "get");
    assert_eq!(metrics_refusal["level"], "Metadata");
    assert!(
        events.iter().any(|e| e["requestURI"] == "/metrics"
            && e["responseStatus"]["code"] == 200
            && e["user"]["username"] == "kubernetes-admin"),
        "the admin's /metrics"
    );
    // The last read: the earlier ones may precede the controller's fill.
    let legacy_read = events
        .iter()
        .rfind(|e| {
            e["stage"] == "ResponseComplete"
                && e["objectRef"]["name"] == "app-token"
                && e["verb"] == "get"
                && e["responseObject"].is_object()
        })
        .unwrap();
    assert_eq!(legacy_read["responseObject"]["data"]["token"], "<redacted>");
    let review_event = events
        .iter()
        .find(|e| e["objectRef"]["resource"] == "tokenreviews" && e["stage"] == "ResponseComplete")
        .unwrap();
    assert_eq!(review_event["requestObject"]["spec"]["token"], "<redacted>");
    for event in &events {
        assert_eq!(event["apiVersion"], "audit.k8s.io/v1");
        assert_eq!(event["kind"], "Event");
        assert!(event["auditID"].as_str().is_some_and(|id| !id.is_empty()));
        assert!(event["requestReceivedTimestamp"].as_str().unwrap().ends_with('Z'));
        assert!(
            !event["requestURI"].as_str().unwrap().starts_with("/readyz"),
            "policy None"
        );
    }
    let (_, bootstrap_secret) = bootstrap_token.split_once('.').unwrap();
    for (what, credential) in [
        ("the bound token", bound.as_str()),
        ("the legacy token", legacy.as_str()),
        ("the legacy token's base64", legacy_b64.as_str()),
        ("the bootstrap token", bootstrap_token),
        ("the bootstrap token's secret", bootstrap_secret),
        ("applied Secret data", "applied-password-471"),
        ("applied Secret data in base64", "YXBwbGllZC1wYXNzd29yZC00Nz"),
    ] {
        assert!(!text.contains(credential), "{what} is in the audit log");
    }
    // Nor is any JWT: three base64url segments starting with a JOSE header.
    assert!(!text.contains("eyJhbGciOi"), "a JWT is in the audit log");
}

#[test]
fn the_audit_log_defaults_to_metadata_and_an_empty_path_turns_it_off() {
    let s = crate::server();
    s.kubectl_ok(&["create", "configmap", "c", "-n", "default", "--from-literal=k=v"]);
    eventually("the create in the audit log", || {
        events(&s).1.iter().any(|e| {
            e["verb"] == "create"
                && e["objectRef"]["resource"] == "configmaps"
                && e["stage"] == "ResponseComplete"
        })
    });
    let (text, events) = events(&s);
    assert!(events.iter().all(|e| e["level"] == "Metadata"), "{text}");
    assert!(!text.contains("requestObject"), "{text}");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(s.data_dir().join("audit.log"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let r = s
        .request("GET", "/api/v1/namespaces/default/configmaps/c", None, &[], Admin)
        .unwrap();
    assert!(!r.header("audit-id").is_empty());

    let off = TestServer::start_with(env!("CARGO_BIN_EXE_badge"), &["--audit-log-path="]);
    off.kubectl_ok(&["get", "ns"]);
    assert!(!off.data_dir().join("audit.log").exists());
}

#[test]
fn a_log_that_cannot_be_written_loses_events_but_never_a_request() {
    // /dev/full fails every write with ENOSPC, as a full disk does.
    let s = TestServer::start_with(env!("CARGO_BIN_EXE_badge"), &["--audit-log-path=/dev/full"]);
    s.kubectl_ok(&["create", "sa", "app", "-n", "default"]);
    s.kubectl_ok(&["create", "token", "app", "-n", "default"]);
    let dropped = || -> u64 {
        s.kubectl_ok(&["get", "--raw", "/metrics"])
            .lines()
            .find_map(|l| l.strip_prefix("badge_audit_events_dropped_total "))
            .unwrap()
            .parse()
            .unwrap()
    };
    eventually("dropped audit events to be counted", || dropped() >= 3);
    eventually("the loss to be logged", || {
        s.log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("audit events dropped"))
    });
    s.kubectl_ok(&["get", "sa", "app", "-n", "default"]);
}
