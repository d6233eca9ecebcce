//! Authentication in kube-apiserver's order: the client certificate, then bearer tokens;
//! a failing credential is 401 unless another authenticates; no credential is anonymous.

use serde_json::json;

use crate::support::{Caller, Ring};

const WHOAMI: &str = "/apis/authentication.k8s.io/v1/selfsubjectreviews";

/// Who the server takes the caller for: a SelfSubjectReview, or for anonymous callers (who
/// may not create one) the user a refusal names.
async fn whoami(ring: &Ring, caller: &Caller) -> (u16, String) {
    let body = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"});
    let reply = ring.call(caller, "POST", WHOAMI, Some(&body)).await;
    let name = match reply.code {
        201 => reply.body["status"]["userInfo"]["username"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        403 => {
            let message = reply.body["message"].as_str().unwrap_or_default();
            let after = message.split("User \"").nth(1).unwrap_or_default();
            after.split('"').next().unwrap_or_default().to_string()
        }
        _ => String::new(),
    };
    (reply.code, name)
}

#[tokio::test]
async fn the_certificate_wins_over_a_bearer_token() {
    let ring = Ring::new().await;
    ring.service_account("default", "app").await;
    let token = ring.token("default", "app", json!({})).await;
    let admin = ("kubernetes-admin".to_string(), vec!["system:masters".to_string()]);
    // kubectl with the admin kubeconfig and `--token=garbage` is the admin.
    let both = Caller::CertAndHeader(admin.0.clone(), admin.1.clone(), "Bearer garbage".into());
    assert_eq!(whoami(&ring, &both).await, (201, "kubernetes-admin".into()));
    let both = Caller::CertAndHeader(admin.0, admin.1, format!("Bearer {token}"));
    assert_eq!(whoami(&ring, &both).await, (201, "kubernetes-admin".into()));
    // Without a certificate the token decides.
    assert_eq!(
        whoami(&ring, &Caller::bearer(&token)).await,
        (201, "system:serviceaccount:default:app".into())
    );
}

#[tokio::test]
async fn failing_credentials_are_401_and_absent_ones_anonymous() {
    let ring = Ring::new().await;
    for header in [
        "Bearer garbage",
        "bearer garbage",
        "BEARER a.b.c",
        "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",
    ] {
        let reply = ring
            .get(&Caller::Header(header.into()), "/api/v1/namespaces")
            .await;
        assert_eq!(reply.code, 401, "{header}");
        assert_eq!(reply.body["reason"], "Unauthorized");
        assert_eq!(
            reply.body["message"], "Unauthorized",
            "no detail leaks for {header}"
        );
        assert_eq!(reply.headers["content-type"], "application/json");
    }
    // Not a bearer credential at all: anonymous, as upstream's bearer authenticator.
    for header in ["Basic dXNlcjpwYXNz", "Bearer", "Bearer  two-spaces", ""] {
        assert_eq!(
            whoami(&ring, &Caller::Header(header.into())).await,
            (403, "system:anonymous".into()),
            "{header:?}"
        );
    }
    assert_eq!(
        whoami(&ring, &Caller::Anonymous).await,
        (403, "system:anonymous".into())
    );
    let reply = ring
        .get(&Caller::Anonymous, "/api/v1/namespaces/default/secrets")
        .await;
    assert_eq!(reply.code, 403);
}

#[tokio::test]
async fn without_anonymous_auth_no_credential_is_401() {
    let ring = Ring::build(|mut api| {
        api.authentication.anonymous = false;
        api
    })
    .await;
    assert_eq!(ring.get(&Caller::Anonymous, "/version").await.code, 401);
    assert_eq!(
        ring.get(&Caller::Header("Basic eA==".into()), "/version")
            .await
            .code,
        401
    );
    assert_eq!(ring.get(&Caller::admin(), "/version").await.code, 200);
}

#[tokio::test]
async fn a_token_of_a_deleted_serviceaccount_is_401_and_a_review_says_why() {
    let ring = Ring::new().await;
    ring.service_account("default", "gone").await;
    ring.create(
        "/api/v1/namespaces/default/pods",
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
               "spec": {"serviceAccountName": "gone", "containers": [{"name": "c", "image": "i"}]}}),
    )
    .await;
    let uid = ring
        .get(&Caller::admin(), "/api/v1/namespaces/default/pods/p")
        .await
        .body["metadata"]["uid"]
        .clone();
    let token = ring
        .token("default", "gone", json!({"audiences": ["a"], "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "p", "uid": uid}}))
        .await;
    let review = |audiences: serde_json::Value| {
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
               "spec": {"token": token, "audiences": audiences}})
    };
    let path = "/apis/authentication.k8s.io/v1/tokenreviews";
    let reply = ring
        .call(&Caller::admin(), "POST", path, Some(&review(json!(["b"]))))
        .await;
    assert_eq!(
        reply.body["status"]["error"],
        "token audiences [\"a\"] is invalid for the target audiences [\"b\"]"
    );
    let reply = ring
        .call(&Caller::admin(), "POST", path, Some(&review(json!(["a"]))))
        .await;
    assert_eq!(reply.body["status"]["authenticated"], true, "{}", reply.body);
    let reply = ring
        .call(
            &Caller::admin(),
            "DELETE",
            "/api/v1/namespaces/default/pods/p?gracePeriodSeconds=0",
            None,
        )
        .await;
    assert_eq!(reply.code, 200, "{}", reply.body);
    // A consistent read returns once the server's cache holds the deletion.
    assert_eq!(
        ring.get(&Caller::admin(), "/api/v1/namespaces/default/pods/p")
            .await
            .code,
        404
    );
    let reply = ring
        .call(&Caller::admin(), "POST", path, Some(&review(json!(["a"]))))
        .await;
    assert_eq!(
        reply.body["status"]["error"],
        "service account token has been invalidated"
    );
    let reply = ring.get(&Caller::bearer(&token), "/api/v1/namespaces").await;
    assert_eq!(reply.code, 401);
    // An empty token is refused as upstream words it.
    let empty =
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": ""}});
    let reply = ring.call(&Caller::admin(), "POST", path, Some(&empty)).await;
    assert_eq!(reply.code, 400);
    assert_eq!(
        reply.body["message"],
        "token is required for TokenReview in authentication"
    );
}

#[tokio::test]
async fn metrics_are_served_to_whom_rbac_allows() {
    let ring = Ring::new().await;
    let reply = ring.get(&Caller::admin(), "/metrics").await;
    assert_eq!(reply.code, 200);
    let text = reply.body.as_str().unwrap().to_string();
    for name in [
        "badge_storage_unconfirmed_seconds",
        "badge_storage_stale_read_bound_seconds",
        "badge_signing_keys_unconfirmed_seconds",
    ] {
        assert!(text.contains(&format!("# TYPE {name} gauge\n{name} ")), "{text}");
    }
    assert_eq!(
        reply.headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    assert_eq!(ring.get(&Caller::Anonymous, "/metrics").await.code, 403);
    assert_eq!(ring.get(&Caller::user("someone"), "/metrics").await.code, 403);
    ring.grant_cluster(
        "scraper",
        json!([{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]),
    )
    .await;
    assert_eq!(ring.get(&Caller::user("scraper"), "/metrics").await.code, 200);
}
