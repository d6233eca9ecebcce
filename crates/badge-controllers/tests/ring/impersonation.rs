//! Impersonation: each header allowed by the `impersonate` verb on what it names.

use serde_json::json;

use crate::support::{Caller, Ring};

const WHOAMI: &str = "/apis/authentication.k8s.io/v1/selfsubjectreviews";

#[tokio::test]
async fn impersonation_needs_the_verb_on_each_thing_named() {
    let ring = Ring::new().await;
    ring.namespace("a").await;
    ring.grant_cluster("actor", json!([{"apiGroups": [""], "resources": ["users"], "verbs": ["impersonate"], "resourceNames": ["alice"]}]))
        .await;
    ring.grant("a", "actor", json!([{"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["impersonate"], "resourceNames": ["bot"]}]))
        .await;
    let body = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"});
    let actor = Caller::user("actor");
    let who = |headers: Vec<(&'static str, &'static str)>| {
        let ring = &ring;
        let actor = actor.clone();
        let body = body.clone();
        async move {
            ring.call_with(&actor, "POST", WHOAMI, Some(&body), &headers)
                .await
        }
    };
    let reply = who(vec![("impersonate-user", "alice")]).await;
    assert_eq!(reply.code, 201, "{}", reply.body);
    assert_eq!(reply.body["status"]["userInfo"]["username"], "alice");
    assert_eq!(
        reply.body["status"]["userInfo"]["groups"],
        json!(["system:authenticated"])
    );
    let reply = who(vec![("impersonate-user", "system:serviceaccount:a:bot")]).await;
    assert_eq!(reply.code, 201, "{}", reply.body);
    assert_eq!(
        reply.body["status"]["userInfo"]["groups"],
        json!([
            "system:serviceaccounts",
            "system:serviceaccounts:a",
            "system:authenticated"
        ])
    );
    for headers in [
        vec![("impersonate-user", "bob")],
        vec![("impersonate-user", "system:serviceaccount:a:other")],
        vec![("impersonate-user", "system:serviceaccount:b:bot")],
        vec![
            ("impersonate-user", "alice"),
            ("impersonate-group", "system:masters"),
        ],
        vec![("impersonate-user", "alice"), ("impersonate-uid", "1")],
        vec![("impersonate-user", "alice"), ("impersonate-extra-scopes", "x")],
    ] {
        let reply = who(headers.clone()).await;
        assert_eq!(reply.code, 403, "{headers:?}: {}", reply.body);
    }
    // Groups without a user are a bad request; an impersonated user's own rights apply.
    let reply = who(vec![("impersonate-group", "system:masters")]).await;
    assert_eq!(reply.code, 400);
    let reply = ring
        .call_with(
            &actor,
            "GET",
            "/api/v1/namespaces/a/secrets",
            None,
            &[("impersonate-user", "alice")],
        )
        .await;
    assert_eq!(reply.code, 403);
    assert!(
        reply.body["message"].as_str().unwrap().contains("User \"alice\""),
        "{}",
        reply.body
    );
    // The admin may impersonate anyone, a master included.
    let reply = ring
        .call_with(
            &Caller::admin(),
            "POST",
            WHOAMI,
            Some(&body),
            &[("impersonate-user", "x"), ("impersonate-group", "g")],
        )
        .await;
    assert_eq!(
        reply.body["status"]["userInfo"]["groups"],
        json!(["g", "system:authenticated"])
    );
}

#[tokio::test]
async fn rbac_refuses_escalation() {
    let ring = Ring::new().await;
    ring.namespace("a").await;
    ring.grant("a", "manager", json!([
        {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles", "rolebindings"], "verbs": ["create", "get", "update"]},
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]))
        .await;
    let manager = Caller::user("manager");
    let role = |name: &str, rules: serde_json::Value| json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": name}, "rules": rules});
    let path = "/apis/rbac.authorization.k8s.io/v1/namespaces/a/roles";
    // Within what it holds: allowed.
    let reply = ring
        .call(
            &manager,
            "POST",
            path,
            Some(&role(
                "small",
                json!([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]),
            )),
        )
        .await;
    assert_eq!(reply.code, 201, "{}", reply.body);
    // More than it holds: refused, and nothing stored.
    let reply = ring
        .call(
            &manager,
            "POST",
            path,
            Some(&role(
                "big",
                json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]),
            )),
        )
        .await;
    assert_eq!(reply.code, 403, "{}", reply.body);
    assert!(
        reply.body["message"]
            .as_str()
            .unwrap()
            .contains("attempting to grant RBAC permissions not currently held"),
        "{}",
        reply.body
    );
    assert_eq!(ring.get(&Caller::admin(), &format!("{path}/big")).await.code, 404);
    // Binding itself to a role it does not hold: refused.
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "b"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "manager"}]});
    let reply = ring
        .call(
            &manager,
            "POST",
            "/apis/rbac.authorization.k8s.io/v1/namespaces/a/rolebindings",
            Some(&binding),
        )
        .await;
    assert_eq!(reply.code, 403, "{}", reply.body);
}
