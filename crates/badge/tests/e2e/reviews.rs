//! Access reviews, whoami and impersonation through the real kubectl and raw requests.

use badge_testkit::Credential::Admin;

use crate::server;

#[test]
fn whoami_and_can_i_for_the_admin() {
    let s = server();
    let who = s.kubectl_ok(&["auth", "whoami", "-o", "json"]);
    let who: serde_json::Value = serde_json::from_str(&who).unwrap();
    assert_eq!(who["status"]["userInfo"]["username"], "kubernetes-admin");
    assert_eq!(
        who["status"]["userInfo"]["groups"],
        serde_json::json!(["system:masters", "system:authenticated"])
    );
    assert_eq!(
        s.kubectl_ok(&["auth", "can-i", "delete", "secrets", "-n", "default"])
            .trim(),
        "yes"
    );
    let list = s.kubectl_ok(&["auth", "can-i", "--list", "-n", "default"]);
    assert!(list.contains("*.*"), "{list}");
}

#[test]
fn impersonation_needs_the_impersonate_verb() {
    let s = server();
    let who = s.kubectl_ok(&[
        "auth",
        "whoami",
        "--as=system:serviceaccount:default:default",
        "-o",
        "json",
    ]);
    let who: serde_json::Value = serde_json::from_str(&who).unwrap();
    assert_eq!(
        who["status"]["userInfo"]["username"],
        "system:serviceaccount:default:default"
    );
    let groups = who["status"]["userInfo"]["groups"].as_array().unwrap();
    for g in [
        "system:serviceaccounts",
        "system:serviceaccounts:default",
        "system:authenticated",
    ] {
        assert!(groups.iter().any(|x| x == g), "{groups:?}");
    }
    let r = s
        .request(
            "GET",
            "/api/v1/namespaces/default/secrets",
            None,
            &[("impersonate-group", "system:masters")],
            Admin,
        )
        .unwrap();
    assert_eq!(r.status, 400, "a group without a user is refused");
    let denied = s.kubectl_err(&["get", "secrets", "--as=bob"]);
    assert!(
        denied.contains("User \"bob\" cannot list resource \"secrets\""),
        "{denied}"
    );
}

#[test]
fn subject_access_reviews_validate_and_decide() {
    let s = server();
    let post = |path: &str, body: serde_json::Value| {
        s.request(
            "POST",
            path,
            Some(serde_json::to_vec(&body).unwrap()),
            &[("content-type", "application/json")],
            Admin,
        )
        .unwrap()
    };
    let sar = "/apis/authorization.k8s.io/v1/subjectaccessreviews";
    let allowed = post(
        sar,
        serde_json::json!({"spec":{"groups":["system:masters"],"resourceAttributes":{"verb":"get","resource":"pods"}}}),
    );
    assert_eq!(allowed.status, 201);
    assert_eq!(allowed.json()["status"]["allowed"], true);
    let denied = post(
        sar,
        serde_json::json!({"spec":{"user":"bob","resourceAttributes":{"verb":"get","resource":"pods"}}}),
    );
    assert_eq!(denied.json()["status"]["allowed"], false);
    let neither = post(sar, serde_json::json!({"spec":{"user":"bob"}}));
    assert_eq!(neither.status, 422);
    assert_eq!(
        neither.json()["details"]["causes"][0]["field"],
        "spec.resourceAttributes"
    );
    let nobody = post(
        sar,
        serde_json::json!({"spec":{"nonResourceAttributes":{"path":"/api","verb":"get"}}}),
    );
    assert_eq!(nobody.status, 422);
    let local = "/apis/authorization.k8s.io/v1/namespaces/default/localsubjectaccessreviews";
    let mismatch = post(
        local,
        serde_json::json!({"spec":{"user":"bob","resourceAttributes":{"namespace":"other","verb":"get","resource":"pods"}}}),
    );
    assert_eq!(mismatch.status, 422);
    let rules = post(
        "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
        serde_json::json!({"spec":{}}),
    );
    assert_eq!(rules.status, 400);
    assert_eq!(rules.json()["message"], "no namespace on request");
}
