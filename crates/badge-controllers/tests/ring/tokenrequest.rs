//! TokenRequest validation and reads of what was just written.

use serde_json::{Value, json};

use crate::support::{Caller, Ring};

fn request(spec: Value) -> Value {
    json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec})
}

#[tokio::test]
async fn validation_as_upstream() {
    let ring = Ring::new().await;
    let sa = ring.service_account("default", "app").await;
    let path = "/api/v1/namespaces/default/serviceaccounts/app/token";
    let admin = Caller::admin();
    let reply = ring
        .call(
            &admin,
            "POST",
            path,
            Some(&request(json!({"expirationSeconds": 599}))),
        )
        .await;
    assert_eq!(reply.code, 422, "{}", reply.body);
    assert!(reply.body["message"].as_str().unwrap().contains(
        "spec.expirationSeconds: Invalid value: 599: may not specify a duration less than 10 minutes"
    ));
    let reply = ring
        .call(
            &admin,
            "POST",
            path,
            Some(&request(json!({"expirationSeconds": 600}))),
        )
        .await;
    assert_eq!(reply.code, 201, "{}", reply.body);
    // A wrong type names the field.
    let reply = ring
        .call(
            &admin,
            "POST",
            path,
            Some(&request(json!({"expirationSeconds": "long"}))),
        )
        .await;
    assert_eq!(reply.code, 400, "{}", reply.body);
    assert!(
        reply.body["message"]
            .as_str()
            .unwrap()
            .contains("spec.expirationSeconds"),
        "{}",
        reply.body
    );
    // The uid of another ServiceAccount.
    let mut body = request(json!({}));
    body["metadata"] = json!({"uid": "not-the-uid"});
    let reply = ring.call(&admin, "POST", path, Some(&body)).await;
    assert_eq!(reply.code, 409, "{}", reply.body);
    body["metadata"] = json!({"uid": sa["metadata"]["uid"]});
    assert_eq!(ring.call(&admin, "POST", path, Some(&body)).await.code, 201);
    // Bound kinds upstream does not support.
    let reply = ring
        .call(
            &admin,
            "POST",
            path,
            Some(&request(
                json!({"boundObjectRef": {"apiVersion": "v1", "kind": "ConfigMap", "name": "c"}}),
            )),
        )
        .await;
    assert_eq!(reply.code, 400, "{}", reply.body);
    assert_eq!(
        reply.body["message"],
        "cannot bind token to object of type /v1, Kind=ConfigMap"
    );
    // Missing objects.
    let reply = ring
        .call(
            &admin,
            "POST",
            "/api/v1/namespaces/default/serviceaccounts/nobody/token",
            Some(&request(json!({}))),
        )
        .await;
    assert_eq!(reply.code, 404);
    let reply = ring
        .call(
            &admin,
            "POST",
            path,
            Some(&request(
                json!({"boundObjectRef": {"apiVersion": "v1", "kind": "Secret", "name": "nope"}}),
            )),
        )
        .await;
    assert_eq!(reply.code, 404);
    // Who may ask.
    let reply = ring
        .call(&Caller::user("someone"), "POST", path, Some(&request(json!({}))))
        .await;
    assert_eq!(reply.code, 403);
    assert_eq!(
        reply.body["message"],
        "serviceaccounts \"app\" is forbidden: User \"someone\" cannot create resource \"serviceaccounts/token\" in API group \"\" in the namespace \"default\""
    );
}

#[tokio::test]
async fn a_token_request_right_after_create_finds_the_serviceaccount() {
    // The create is acknowledged once stored; the TokenRequest that follows must see it even
    // when the watch cache has not caught up yet.
    let ring = Ring::new().await;
    let admin = Caller::admin();
    for i in 0..50 {
        let name = format!("fresh-{i}");
        ring.service_account("default", &name).await;
        let reply = ring
            .call(
                &admin,
                "POST",
                &format!("/api/v1/namespaces/default/serviceaccounts/{name}/token"),
                Some(&request(json!({}))),
            )
            .await;
        assert_eq!(reply.code, 201, "{name}: {}", reply.body);
        let secret = ring.secret("default", &format!("bound-{i}")).await;
        let reply = ring
            .call(
                &admin,
                "POST",
                &format!("/api/v1/namespaces/default/serviceaccounts/{name}/token"),
                Some(&request(
                    json!({"boundObjectRef": {"apiVersion": "v1", "kind": "Secret",
                    "name": secret["metadata"]["name"], "uid": secret["metadata"]["uid"]}}),
                )),
            )
            .await;
        assert_eq!(reply.code, 201, "{name}: {}", reply.body);
    }
}

/// Audiences too long for the token's IssuedToken record to be stored are refused at
/// issuance, not left to make a token the inventory never shows; up to the bound, served.
#[tokio::test]
async fn audiences_past_what_a_record_can_hold_are_refused() {
    let ring = Ring::new().await;
    ring.service_account("default", "app").await;
    let path = "/api/v1/namespaces/default/serviceaccounts/app/token";
    let admin = Caller::admin();
    let max = badge_apiserver::serviceaccount::MAX_AUDIENCE_BYTES;
    let audiences = |bytes: usize| -> Vec<String> {
        let mut left = bytes;
        let mut all = Vec::new();
        while left > 0 {
            let take = left.min(1000);
            all.push("a".repeat(take));
            left -= take;
        }
        all
    };
    let refused = ring
        .call(
            &admin,
            "POST",
            path,
            Some(&request(json!({"audiences": audiences(max + 1)}))),
        )
        .await;
    assert_eq!(refused.code, 422, "{}", refused.body);
    assert_eq!(refused.body["reason"], "Invalid");
    assert_eq!(refused.body["details"]["causes"][0]["field"], "spec.audiences");
    assert!(
        refused.body["message"].as_str().unwrap().contains(&format!(
            "spec.audiences: Too long: must have at most {max} bytes"
        )),
        "{}",
        refused.body
    );
    let served = ring
        .call(
            &admin,
            "POST",
            path,
            Some(&request(json!({"audiences": audiences(max)}))),
        )
        .await;
    assert_eq!(served.code, 201);
    assert_eq!(ring.api.flush_usage().await.created, 1, "its record is stored");
}
