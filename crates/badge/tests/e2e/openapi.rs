//! OpenAPI v2 through the real kubectl: `create -f` of review kinds (whose validation
//! falls back to `/openapi/v2` in protobuf, having no PATCH operation in v3) and raw reads.

use badge_testkit::Credential::Admin;
use serde_json::Value;

use crate::server;

/// Creates `manifest` with `kubectl create -f` (validation on, the default) and returns
/// the object the server answered with.
fn create(s: &badge_testkit::TestServer, dir: &std::path::Path, name: &str, manifest: &str) -> Value {
    let file = dir.join(format!("{name}.yaml"));
    std::fs::write(&file, manifest).unwrap();
    let out = s.kubectl_ok(&["create", "-f", file.to_str().unwrap(), "-o", "json"]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{name}: {e}: {out}"))
}

#[test]
fn kubectl_creates_every_review_kind_with_validation() {
    let s = server();
    let dir = tempfile::tempdir().unwrap();

    let review = create(
        &s,
        dir.path(),
        "tokenreview",
        "apiVersion: authentication.k8s.io/v1\nkind: TokenReview\nspec:\n  token: not-a-real-token\n",
    );
    assert_eq!(review["kind"], "TokenReview");
    // `authenticated: false` is omitted, as upstream's omitempty drops it.
    assert!(
        !review["status"]["authenticated"].as_bool().unwrap_or(false),
        "{review}"
    );
    assert_eq!(review["status"]["user"], serde_json::json!({}), "{review}");

    let review = create(
        &s,
        dir.path(),
        "selfsubjectreview",
        "apiVersion: authentication.k8s.io/v1\nkind: SelfSubjectReview\n",
    );
    assert_eq!(
        review["status"]["userInfo"]["username"], "kubernetes-admin",
        "{review}"
    );

    let review = create(
        &s,
        dir.path(),
        "subjectaccessreview",
        "apiVersion: authorization.k8s.io/v1\nkind: SubjectAccessReview\nspec:\n  user: bob\n  resourceAttributes:\n    namespace: default\n    verb: get\n    resource: secrets\n",
    );
    assert_eq!(review["status"]["allowed"], false, "{review}");

    let review = create(
        &s,
        dir.path(),
        "localsubjectaccessreview",
        "apiVersion: authorization.k8s.io/v1\nkind: LocalSubjectAccessReview\nmetadata:\n  namespace: default\nspec:\n  user: bob\n  groups: [\"system:masters\"]\n  resourceAttributes:\n    namespace: default\n    verb: get\n    resource: secrets\n",
    );
    assert_eq!(review["status"]["allowed"], true, "{review}");

    let review = create(
        &s,
        dir.path(),
        "selfsubjectaccessreview",
        "apiVersion: authorization.k8s.io/v1\nkind: SelfSubjectAccessReview\nspec:\n  resourceAttributes:\n    namespace: default\n    verb: delete\n    resource: secrets\n",
    );
    assert_eq!(review["status"]["allowed"], true, "{review}");

    let review = create(
        &s,
        dir.path(),
        "selfsubjectrulesreview",
        "apiVersion: authorization.k8s.io/v1\nkind: SelfSubjectRulesReview\nspec:\n  namespace: default\n",
    );
    let rules = review["status"]["resourceRules"].as_array().unwrap();
    assert!(
        rules.iter().any(|r| r["verbs"] == serde_json::json!(["*"])),
        "{review}"
    );
}

#[test]
fn kubectl_validation_rejects_unknown_fields_of_review_kinds() {
    let s = server();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        "apiVersion: authentication.k8s.io/v1\nkind: TokenReview\nspec:\n  token: x\n  tokn: y\n",
    )
    .unwrap();
    let err = s.kubectl_err(&["create", "-f", file.to_str().unwrap()]);
    assert!(
        err.contains("ValidationError(TokenReview.spec): unknown field \"tokn\""),
        "{err}"
    );
}

#[test]
fn raw_openapi_v2_is_a_swagger_document() {
    let s = server();
    let raw = s.kubectl_ok(&["get", "--raw", "/openapi/v2"]);
    let doc: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(doc["swagger"], "2.0");
    let review = &doc["definitions"]["io.k8s.api.authentication.v1.TokenReview"];
    assert_eq!(
        review["x-kubernetes-group-version-kind"],
        serde_json::json!([{"group": "authentication.k8s.io", "kind": "TokenReview", "version": "v1"}])
    );
    assert_eq!(
        doc["paths"]["/apis/authentication.k8s.io/v1/tokenreviews"]["post"]["operationId"],
        "createAuthenticationV1TokenReview"
    );

    let proto = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";
    let r = s
        .request("GET", "/openapi/v2", None, &[("accept", proto)], Admin)
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
    );
    assert_eq!(r.header("vary"), "Accept");
    // Field 1 of the Document message: `swagger: "2.0"`.
    assert_eq!(&r.body[..5], b"\x0a\x032.0");
    let etag = r.header("etag").to_string();
    assert!(etag.starts_with('"') && etag.len() > 2, "{etag}");

    let again = s
        .request(
            "GET",
            "/openapi/v2",
            None,
            &[("accept", proto), ("if-none-match", &etag)],
            Admin,
        )
        .unwrap();
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());

    let json = s.request("GET", "/openapi/v2", None, &[], Admin).unwrap();
    assert_eq!(json.header("content-type"), "application/json");
    assert_eq!(json.header("etag"), etag, "one tag for both forms");
    assert_eq!(json.header("cache-control"), "no-cache, private");
    assert_eq!(json.json(), doc);

    let refused = s
        .request("GET", "/openapi/v2", None, &[("accept", "text/html")], Admin)
        .unwrap();
    assert_eq!(refused.status, 406);

    let crds = s
        .request(
            "GET",
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            None,
            &[],
            Admin,
        )
        .unwrap();
    assert_eq!(crds.status, 200);
    let crds = crds.json();
    assert_eq!(crds["kind"], "CustomResourceDefinitionList");
    assert_eq!(crds["items"], serde_json::json!([]));
    let one = s
        .request(
            "GET",
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/things.example.com",
            None,
            &[],
            Admin,
        )
        .unwrap();
    assert_eq!(one.status, 404);
}

/// A `v1 List` is always validated on the client, item by item, against `/openapi/v2`.
#[test]
fn kubectl_validates_list_items_against_openapi_v2() {
    let s = server();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("list.yaml");
    std::fs::write(
        &file,
        "apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: ServiceAccount
  metadata: {name: robot, namespace: default}
  automountServiceAccountToken: false
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: settings, namespace: default}
  data: {mode: fast}
- apiVersion: rbac.authorization.k8s.io/v1
  kind: Role
  metadata: {name: reader, namespace: default}
  rules:
  - apiGroups: [\"\"]
    resources: [configmaps]
    verbs: [get]
",
    )
    .unwrap();
    let out = s.kubectl_ok(&["create", "-f", file.to_str().unwrap()]);
    assert!(out.contains("serviceaccount/robot created"), "{out}");
    assert!(
        out.contains("role.rbac.authorization.k8s.io/reader created"),
        "{out}"
    );

    std::fs::write(
        &file,
        "apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: other, namespace: default}
  dta: {mode: slow}
",
    )
    .unwrap();
    let err = s.kubectl_err(&["create", "-f", file.to_str().unwrap()]);
    assert!(
        err.contains("ValidationError(ConfigMap): unknown field \"dta\""),
        "{err}"
    );
}
