//! RBAC through the real kubectl: default policy, manifests, escalation prevention.

use crate::server;

const MANIFEST: &str = r#"apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: sa-manager
  namespace: team
rules:
- apiGroups: [""]
  resources: ["serviceaccounts", "roles"]
  verbs: ["get", "list"]
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["create", "get", "list", "update", "patch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: sa-manager
  namespace: team
subjects:
- kind: ServiceAccount
  name: manager
  namespace: team
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: sa-manager
"#;

#[test]
fn default_policy_is_in_place() {
    let s = server();
    let roles = s.kubectl_ok(&["get", "clusterroles", "-o", "name"]);
    for want in [
        "cluster-admin",
        "admin",
        "edit",
        "view",
        "system:basic-user",
        "system:discovery",
        "system:public-info-viewer",
        "system:service-account-issuer-discovery",
    ] {
        assert!(
            roles.contains(&format!("clusterrole.rbac.authorization.k8s.io/{want}\n")),
            "{want} missing"
        );
    }
    let label = s.kubectl_ok(&[
        "get",
        "clusterrole",
        "cluster-admin",
        "-o",
        "jsonpath={.metadata.labels.kubernetes\\.io/bootstrapping}",
    ]);
    assert_eq!(label, "rbac-defaults");
    // Aggregation fills edit from system:aggregate-to-edit, including token requests.
    crate::eventually("edit to be aggregated", || {
        s.kubectl_ok(&["get", "clusterrole", "edit", "-o", "json"])
            .contains("serviceaccounts/token")
    });
    let view = s.kubectl_ok(&["get", "clusterrole", "view", "-o", "json"]);
    assert!(!view.contains("\"secrets\""), "view must not read secrets");
    let wide = s.kubectl_ok(&[
        "get",
        "clusterrolebinding",
        "system:public-info-viewer",
        "-o",
        "wide",
    ]);
    assert!(wide.contains("system:unauthenticated"), "{wide}");
}

#[test]
fn manifests_apply_and_escalation_is_refused() {
    let s = server();
    s.kubectl_ok(&["create", "ns", "team"]);
    s.kubectl_ok(&["create", "sa", "manager", "-n", "team"]);
    let out = s.kubectl_with_stdin(&["apply", "-f", "-"], Some(MANIFEST));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = s.kubectl_ok(&["create", "token", "manager", "-n", "team"]);
    let as_manager = |args: &[&str]| {
        let mut full = vec!["--token", token.as_str()];
        full.extend_from_slice(args);
        s.kubectl(&full)
    };
    // A role within what the manager holds is fine.
    let ok = as_manager(&[
        "create",
        "role",
        "reader",
        "--verb=get,list",
        "--resource=serviceaccounts",
        "-n",
        "team",
    ]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    // Granting more than it holds is refused with upstream's message.
    let escalate = as_manager(&[
        "create",
        "role",
        "deleter",
        "--verb=delete",
        "--resource=pods",
        "-n",
        "team",
    ]);
    assert!(!escalate.status.success());
    let err = String::from_utf8_lossy(&escalate.stderr);
    assert!(
        err.contains("is attempting to grant RBAC permissions not currently held"),
        "{err}"
    );
    assert!(
        err.contains("{APIGroups:[\"\"], Resources:[\"pods\"], Verbs:[\"delete\"]}"),
        "{err}"
    );
    // Binding a role it does not hold is refused; binding one it holds is allowed.
    let bind_admin = as_manager(&[
        "create",
        "rolebinding",
        "grab",
        "--clusterrole=admin",
        "--serviceaccount=team:manager",
        "-n",
        "team",
    ]);
    assert!(!bind_admin.status.success());
    assert!(String::from_utf8_lossy(&bind_admin.stderr).contains("forbidden"));
    let bind_reader = as_manager(&[
        "create",
        "rolebinding",
        "readers",
        "--role=reader",
        "--serviceaccount=team:manager",
        "-n",
        "team",
    ]);
    assert!(
        bind_reader.status.success(),
        "{}",
        String::from_utf8_lossy(&bind_reader.stderr)
    );
    // With `escalate` on roles the same role is allowed.
    s.kubectl_ok(&[
        "create",
        "role",
        "escalator",
        "--verb=escalate",
        "--resource=roles.rbac.authorization.k8s.io",
        "-n",
        "team",
    ]);
    s.kubectl_ok(&[
        "create",
        "rolebinding",
        "escalator",
        "--role=escalator",
        "--serviceaccount=team:manager",
        "-n",
        "team",
    ]);
    let now_ok = as_manager(&[
        "create",
        "role",
        "deleter",
        "--verb=delete",
        "--resource=pods",
        "-n",
        "team",
    ]);
    assert!(
        now_ok.status.success(),
        "{}",
        String::from_utf8_lossy(&now_ok.stderr)
    );
    // roleRef cannot change.
    let changed = s.kubectl_with_stdin(
        &["apply", "-f", "-"],
        Some(
            &MANIFEST
                .replace("name: sa-manager\n\"#", "")
                .replace("  kind: Role\n  name: sa-manager", "  kind: Role\n  name: reader"),
        ),
    );
    assert!(!changed.status.success());
    assert!(
        String::from_utf8_lossy(&changed.stderr).contains("cannot change roleRef"),
        "{}",
        String::from_utf8_lossy(&changed.stderr)
    );
    // A cluster role binding by kubectl create works for an admin.
    s.kubectl_ok(&[
        "create",
        "clusterrole",
        "ns-reader",
        "--verb=get,list",
        "--resource=namespaces",
    ]);
    s.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        "ns-reader",
        "--clusterrole=ns-reader",
        "--serviceaccount=team:manager",
    ]);
    let listed = as_manager(&["get", "ns"]);
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
}

#[test]
fn anonymous_requests_follow_the_default_bindings() {
    let s = server();
    let health = s
        .request("GET", "/readyz", None, &[], badge_testkit::Credential::Anonymous)
        .unwrap();
    assert_eq!(health.status, 200);
    let discovery = s
        .request("GET", "/apis", None, &[], badge_testkit::Credential::Anonymous)
        .unwrap();
    assert_eq!(
        discovery.status, 403,
        "discovery is for authenticated users since 1.14"
    );
    let jwks = s
        .request(
            "GET",
            "/openid/v1/jwks",
            None,
            &[],
            badge_testkit::Credential::Anonymous,
        )
        .unwrap();
    assert_eq!(
        jwks.status, 403,
        "issuer discovery is for service accounts by default"
    );
}
