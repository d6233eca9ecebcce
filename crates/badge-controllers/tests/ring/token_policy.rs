//! TokenPolicy at TokenRequest: refusals name the policy, lifetimes over the maximum are
//! shortened with a Warning, and every selecting policy applies.

use serde_json::{Value, json};

use crate::support::{Caller, Ring};

const POLICIES: &str = "/apis/identity.badge.dev/v1/namespaces/shop/tokenpolicies";
const TOKEN: &str = "/api/v1/namespaces/shop/serviceaccounts/web/token";

fn request(spec: Value) -> Value {
    json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec})
}

fn policy(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "identity.badge.dev/v1", "kind": "TokenPolicy",
        "metadata": {"name": name, "namespace": "shop"}, "spec": spec})
}

#[tokio::test]
async fn policies_refuse_and_shorten_token_requests() {
    let ring = Ring::new().await;
    ring.namespace("shop").await;
    ring.service_account("shop", "web").await;
    ring.service_account("shop", "db").await;
    let admin = Caller::admin();
    ring.create(
        POLICIES,
        policy(
            "web-vault",
            json!({"serviceAccountSelector": {"names": ["web"]}, "allowedAudiences": ["vault"],
                "maxExpirationSeconds": 1800}),
        ),
    )
    .await;

    let refused = ring
        .call(
            &admin,
            "POST",
            TOKEN,
            Some(&request(json!({"audiences": ["other"]}))),
        )
        .await;
    assert_eq!(refused.code, 403, "{}", refused.body);
    assert_eq!(refused.body["reason"], "Forbidden");
    assert_eq!(
        refused.body["message"],
        "serviceaccounts \"web\" is forbidden: denied by TokenPolicy \"web-vault\": audience \"other\" is not allowed (allowed: vault)"
    );
    // The API audiences a request without audiences gets are outside the policy too.
    let defaulted = ring.call(&admin, "POST", TOKEN, Some(&request(json!({})))).await;
    assert_eq!(defaulted.code, 403, "{}", defaulted.body);

    let shortened = ring
        .call(
            &admin,
            "POST",
            TOKEN,
            Some(&request(
                json!({"audiences": ["vault"], "expirationSeconds": 7200}),
            )),
        )
        .await;
    assert_eq!(shortened.code, 201, "{}", shortened.body);
    assert_eq!(shortened.body["spec"]["expirationSeconds"], 1800);
    assert_eq!(
        shortened.headers["warning"],
        r#"299 - "requested expiration of 7200 seconds shortened to 1800 seconds by TokenPolicy \"web-vault\"""#
    );
    let time = |pointer: &str| {
        shortened
            .body
            .pointer(pointer)
            .unwrap()
            .as_str()
            .unwrap()
            .parse::<jiff::Timestamp>()
            .unwrap()
    };
    let (created, expires) = (
        time("/metadata/creationTimestamp"),
        time("/status/expirationTimestamp"),
    );
    assert_eq!(expires.as_second() - created.as_second(), 1800);

    // Another ServiceAccount of the namespace is not selected.
    let other = ring
        .call(
            &admin,
            "POST",
            "/api/v1/namespaces/shop/serviceaccounts/db/token",
            Some(&request(
                json!({"audiences": ["other"], "expirationSeconds": 7200}),
            )),
        )
        .await;
    assert_eq!(other.code, 201, "{}", other.body);
    assert_eq!(other.body["spec"]["expirationSeconds"], 7200);

    // A second, label-less policy for the whole namespace: both apply.
    ring.create(
        POLICIES,
        policy(
            "pods-only",
            json!({"requiredBoundObjectKinds": ["Pod"], "maxExpirationSeconds": 900}),
        ),
    )
    .await;
    let unbound = ring
        .call(
            &admin,
            "POST",
            TOKEN,
            Some(&request(json!({"audiences": ["vault"]}))),
        )
        .await;
    assert_eq!(unbound.code, 403, "{}", unbound.body);
    assert!(
        unbound.body["message"]
            .as_str()
            .unwrap()
            .contains("denied by TokenPolicy \"pods-only\": a token must be bound to an object of kind Pod"),
        "{}",
        unbound.body
    );
    ring.create(
        "/api/v1/namespaces/shop/pods",
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "w", "namespace": "shop"},
            "spec": {"serviceAccountName": "web", "containers": [{"name": "c", "image": "i"}]}}),
    )
    .await;
    let bound = ring
        .call(
            &admin,
            "POST",
            TOKEN,
            Some(&request(
                json!({"audiences": ["vault"], "expirationSeconds": 3607,
                "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "w"}}),
            )),
        )
        .await;
    assert_eq!(bound.code, 201, "{}", bound.body);
    assert_eq!(bound.body["spec"]["expirationSeconds"], 900);
    assert_eq!(
        bound.headers["warning"],
        r#"299 - "requested expiration of 3607 seconds shortened to 900 seconds by TokenPolicy \"pods-only\"""#
    );
}

#[tokio::test]
async fn admins_write_policies_and_viewers_read_them() {
    let ring = Ring::new().await;
    ring.namespace("shop").await;
    for (user, role) in [("alice", "admin"), ("victor", "view"), ("eddie", "edit")] {
        ring.create(
            "/apis/rbac.authorization.k8s.io/v1/namespaces/shop/rolebindings",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": user, "namespace": "shop"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]}),
        )
        .await;
    }
    let body = policy("p", json!({"maxExpirationSeconds": 3600}));
    let by_editor = ring
        .call(&Caller::user("eddie"), "POST", POLICIES, Some(&body))
        .await;
    assert_eq!(by_editor.code, 403, "{}", by_editor.body);
    let by_viewer = ring
        .call(&Caller::user("victor"), "POST", POLICIES, Some(&body))
        .await;
    assert_eq!(by_viewer.code, 403, "{}", by_viewer.body);
    let by_admin = ring
        .call(&Caller::user("alice"), "POST", POLICIES, Some(&body))
        .await;
    assert_eq!(by_admin.code, 201, "{}", by_admin.body);
    let too_short = policy("short", json!({"maxExpirationSeconds": 60}));
    let refused = ring
        .call(&Caller::admin(), "POST", POLICIES, Some(&too_short))
        .await;
    assert_eq!(refused.code, 422, "{}", refused.body);
    assert_eq!(
        refused.body["details"]["causes"][0]["field"],
        "spec.maxExpirationSeconds"
    );
    let read = ring.get(&Caller::user("victor"), &format!("{POLICIES}/p")).await;
    assert_eq!(read.code, 200, "{}", read.body);
    assert_eq!(read.body["spec"]["maxExpirationSeconds"], 3600);
}

#[tokio::test]
async fn a_disabled_service_account_gets_no_token_until_enabled() {
    let ring = Ring::new().await;
    ring.namespace("shop").await;
    let mut sa = ring.service_account("shop", "web").await;
    let admin = Caller::admin();
    let path = "/api/v1/namespaces/shop/serviceaccounts/web";
    sa["metadata"]["labels"] = json!({"identity.badge.dev/disabled": "true"});
    let updated = ring.call(&admin, "PUT", path, Some(&sa)).await;
    assert_eq!(updated.code, 200, "{}", updated.body);
    let refused = ring.call(&admin, "POST", TOKEN, Some(&request(json!({})))).await;
    assert_eq!(refused.code, 403, "{}", refused.body);
    assert_eq!(
        refused.body["message"],
        "serviceaccounts \"web\" is forbidden: the ServiceAccount is disabled (identity.badge.dev/disabled=true); enable it with `badge serviceaccount enable shop/web`"
    );
    let mut enabled = updated.body.clone();
    enabled["metadata"]["labels"] = json!({"identity.badge.dev/disabled": "false"});
    assert_eq!(ring.call(&admin, "PUT", path, Some(&enabled)).await.code, 200);
    let issued = ring.call(&admin, "POST", TOKEN, Some(&request(json!({})))).await;
    assert_eq!(issued.code, 201, "{}", issued.body);
}
