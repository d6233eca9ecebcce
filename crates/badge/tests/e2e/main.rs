//! End-to-end tests: the real badge binary, the real kubectl, real TLS, on 127.0.0.1.
//! One test binary; each test starts its own server on port 0.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod agent;
mod api_core;
mod audit;
mod authz_paths;
mod bootstrap;
mod cli;
mod clusterinfo;
mod console;
mod csr;
mod encryption;
mod encryption_ops;
mod external_signer;
mod ha;
mod ha_faults;
mod ha_history;
mod idle_usage;
mod inventory;
mod join;
mod key_retire;
mod key_rotation;
mod kms;
mod kube_rs;
mod kubectl;
mod legacy_token_cleanup;
mod limits;
mod metadata;
mod nodes;
mod openapi;
mod podlifecycle;
mod rbac;
mod rbac_suggest;
mod reviews;
mod revocation;
mod service_identity;
mod startup;
mod token_policy;
mod tokens;
mod webhooks;
mod workflow;

use badge_testkit::TestServer;

/// A TokenReview of `token` for `audiences` (none: the API audiences), as the admin: its
/// status.
pub fn token_review(s: &TestServer, token: &str, audiences: &[&str]) -> serde_json::Value {
    let mut body = serde_json::json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}});
    if !audiences.is_empty() {
        body["spec"]["audiences"] = serde_json::json!(audiences);
    }
    let r = s
        .request(
            "POST",
            "/apis/authentication.k8s.io/v1/tokenreviews",
            Some(body.to_string().into_bytes()),
            &[("content-type", "application/json")],
            badge_testkit::Credential::Admin,
        )
        .unwrap();
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    r.json()["status"].clone()
}

/// Whether a TokenReview (for the API audiences) accepts `token`.
pub fn authenticated(s: &TestServer, token: &str) -> bool {
    token_review(s, token, &[])["authenticated"] == true
}

/// The ConfigMap a joining node discovers the cluster from.
pub const CLUSTER_INFO: &str = "/api/v1/namespaces/kube-public/configmaps/cluster-info";

/// Runs `badge token ARGS --data-dir DIR` against `s`; returns its stdout, trimmed,
/// panicking with its stderr on failure.
pub fn badge_token(s: &TestServer, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_badge"))
        .arg("token")
        .args(args)
        .arg("--data-dir")
        .arg(s.data_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "badge token {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

pub fn server() -> TestServer {
    TestServer::start(env!("CARGO_BIN_EXE_badge"))
}

/// Polls `check` until it returns true or thirty seconds pass (generous: CI machines are
/// slow and shared; a passing check returns as soon as it holds).
pub fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

/// The `jti` claim of a token (read, not verified).
pub(crate) fn jti_of(token: &str) -> String {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    claims["jti"].as_str().unwrap().to_string()
}
