#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use k8s_openapi::api::rbac::v1::{
    AggregationRule, ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement, ObjectMeta};
use serde_json::json;

use super::rules::{RuleBuilder, rule};
use super::*;
use crate::authorizer::{Attributes, Authorizer, Decision};
use crate::user::UserInfo;

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        ..Default::default()
    }
}

fn cluster_role(name: &str, rules: Vec<PolicyRule>) -> ClusterRole {
    ClusterRole {
        metadata: meta(name),
        rules: Some(rules),
        aggregation_rule: None,
    }
}

fn role(name: &str, rules: Vec<PolicyRule>) -> Role {
    Role {
        metadata: meta(name),
        rules: Some(rules),
    }
}

fn subject(kind: &str, name: &str, namespace: Option<&str>) -> Subject {
    Subject {
        api_group: (kind != "ServiceAccount").then(|| "rbac.authorization.k8s.io".into()),
        kind: kind.into(),
        name: name.into(),
        namespace: namespace.map(Into::into),
    }
}

fn role_ref(kind: &str, name: &str) -> RoleRef {
    RoleRef {
        api_group: "rbac.authorization.k8s.io".into(),
        kind: kind.into(),
        name: name.into(),
    }
}

fn crb(name: &str, role: &str, subjects: Vec<Subject>) -> ClusterRoleBinding {
    ClusterRoleBinding {
        metadata: meta(name),
        role_ref: role_ref("ClusterRole", role),
        subjects: Some(subjects),
    }
}

fn rb(name: &str, kind: &str, role: &str, subjects: Vec<Subject>) -> RoleBinding {
    RoleBinding {
        metadata: meta(name),
        role_ref: role_ref(kind, role),
        subjects: Some(subjects),
    }
}

fn user(name: &str, groups: &[&str]) -> UserInfo {
    UserInfo {
        name: name.into(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        ..Default::default()
    }
}

fn r(verbs: &[&str], groups: &[&str], resources: &[&str]) -> RuleBuilder {
    rule(verbs).groups(groups).resources(resources)
}

/// A resource request: `resource` may be `res/sub`.
fn req(u: &UserInfo, verb: &str, group: &str, resource: &str, ns: &str, name: &str) -> Attributes {
    let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
    Attributes {
        user: u.clone(),
        verb: verb.into(),
        is_resource_request: true,
        namespace: ns.into(),
        api_group: group.into(),
        api_version: "v1".into(),
        resource: resource.into(),
        subresource: subresource.into(),
        name: name.into(),
        path: String::new(),
    }
}

fn path_req(u: &UserInfo, verb: &str, path: &str) -> Attributes {
    Attributes {
        user: u.clone(),
        verb: verb.into(),
        path: path.into(),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------------
// Rule matching, one rule against one request.

#[test]
fn rule_matcher_table() {
    let u = user("alice", &[]);
    struct Case {
        what: &'static str,
        rule: PolicyRule,
        verb: &'static str,
        group: &'static str,
        resource: &'static str,
        name: &'static str,
        allowed: bool,
    }
    let case = |what, rule: RuleBuilder, verb, group, resource, name, allowed| Case {
        what,
        rule: rule.build(),
        verb,
        group,
        resource,
        name,
        allowed,
    };
    let cases = vec![
        case(
            "exact",
            r(&["get"], &[""], &["pods"]),
            "get",
            "",
            "pods",
            "p",
            true,
        ),
        case(
            "other verb",
            r(&["get"], &[""], &["pods"]),
            "list",
            "",
            "pods",
            "",
            false,
        ),
        case(
            "verb *",
            r(&["*"], &[""], &["pods"]),
            "deletecollection",
            "",
            "pods",
            "",
            true,
        ),
        case(
            "group * covers core",
            r(&["get"], &["*"], &["pods"]),
            "get",
            "",
            "pods",
            "",
            true,
        ),
        case(
            "group * covers any",
            r(&["get"], &["*"], &["leases"]),
            "get",
            "coordination.k8s.io",
            "leases",
            "",
            true,
        ),
        case(
            "core group is not apps",
            r(&["get"], &[""], &["pods"]),
            "get",
            "apps",
            "pods",
            "",
            false,
        ),
        case(
            "named group is not core",
            r(&["get"], &["apps"], &["pods"]),
            "get",
            "",
            "pods",
            "",
            false,
        ),
        case(
            "resource *",
            r(&["get"], &[""], &["*"]),
            "get",
            "",
            "secrets",
            "",
            true,
        ),
        case(
            "resource * covers subresources",
            r(&["create"], &[""], &["*"]),
            "create",
            "",
            "serviceaccounts/token",
            "sa",
            true,
        ),
        case(
            "resource does not grant its subresource",
            r(&["create"], &[""], &["serviceaccounts"]),
            "create",
            "",
            "serviceaccounts/token",
            "sa",
            false,
        ),
        case(
            "exact subresource",
            r(&["create"], &[""], &["serviceaccounts/token"]),
            "create",
            "",
            "serviceaccounts/token",
            "sa",
            true,
        ),
        case(
            "subresource does not grant its parent",
            r(&["get"], &[""], &["pods/status"]),
            "get",
            "",
            "pods",
            "p",
            false,
        ),
        case(
            "*/sub",
            r(&["create"], &[""], &["*/token"]),
            "create",
            "",
            "serviceaccounts/token",
            "sa",
            true,
        ),
        case(
            "*/sub is not another sub",
            r(&["get"], &[""], &["*/status"]),
            "get",
            "",
            "pods/log",
            "p",
            false,
        ),
        case(
            "*/sub is not the parent",
            r(&["get"], &[""], &["*/status"]),
            "get",
            "",
            "pods",
            "p",
            false,
        ),
        case(
            "no res/* wildcard",
            r(&["get"], &[""], &["pods/*"]),
            "get",
            "",
            "pods/status",
            "p",
            false,
        ),
        case(
            "names: named request in list",
            r(&["get"], &[""], &["secrets"]).names(&["a", "b"]),
            "get",
            "",
            "secrets",
            "b",
            true,
        ),
        case(
            "names: other name",
            r(&["get"], &[""], &["secrets"]).names(&["a"]),
            "get",
            "",
            "secrets",
            "c",
            false,
        ),
        case(
            "names never match unnamed list",
            r(&["list"], &[""], &["secrets"]).names(&["a"]),
            "list",
            "",
            "secrets",
            "",
            false,
        ),
        case(
            "names never match unnamed create",
            r(&["create"], &[""], &["configmaps"]).names(&["cm"]),
            "create",
            "",
            "configmaps",
            "",
            false,
        ),
        case(
            "create of a subresource carries the name",
            r(&["create"], &[""], &["serviceaccounts/token"]).names(&["build"]),
            "create",
            "",
            "serviceaccounts/token",
            "build",
            true,
        ),
        case(
            "create of a subresource, other name",
            r(&["create"], &[""], &["serviceaccounts/token"]).names(&["build"]),
            "create",
            "",
            "serviceaccounts/token",
            "deploy",
            false,
        ),
        case(
            "no names matches named",
            r(&["get"], &[""], &["secrets"]),
            "get",
            "",
            "secrets",
            "x",
            true,
        ),
        case(
            "rule without groups",
            rule(&["get"]).resources(&["pods"]),
            "get",
            "",
            "pods",
            "",
            false,
        ),
        case(
            "URL rule never matches resources",
            rule(&["get"]).urls(&["*"]),
            "get",
            "",
            "pods",
            "",
            false,
        ),
    ];
    for c in cases {
        let a = req(&u, c.verb, c.group, c.resource, "ns", c.name);
        assert_eq!(rule_allows(&a, &c.rule), c.allowed, "{}", c.what);
    }
}

#[test]
fn non_resource_url_table() {
    let u = user("alice", &[]);
    let cases: Vec<(&str, &[&str], &str, &str, bool)> = vec![
        ("exact", &["/healthz"], "get", "/healthz", true),
        ("exact only", &["/healthz"], "get", "/healthz/etcd", false),
        ("trailing slash differs", &["/version"], "get", "/version/", false),
        ("prefix *", &["/healthz/*"], "get", "/healthz/etcd", true),
        (
            "prefix * needs the prefix",
            &["/healthz/*"],
            "get",
            "/healthz",
            false,
        ),
        ("prefix without slash", &["/api*"], "get", "/apis/x", true),
        ("star alone", &["*"], "get", "/anything", true),
        ("double star trims both", &["/a**"], "get", "/abc", true),
        ("verb", &["/healthz"], "post", "/healthz", false),
    ];
    for (what, urls, verb, path, allowed) in cases {
        let rule = rule(&["get"]).urls(urls).build();
        assert_eq!(rule_allows(&path_req(&u, verb, path), &rule), allowed, "{what}");
    }
    // A resource rule never matches a path.
    let resource_rule = r(&["*"], &["*"], &["*"]).build();
    assert!(!rule_allows(&path_req(&u, "get", "/healthz"), &resource_rule));
    let star = rule(&["*"]).urls(&["*"]).build();
    assert!(rule_allows(&path_req(&u, "delete", "/x"), &star));
}

// ---------------------------------------------------------------------------------------
// Subjects and bindings, through the index.

fn policy() -> RbacPolicy {
    let mut p = RbacPolicy::new();
    p.upsert_cluster_role(cluster_role(
        "pod-reader",
        vec![r(&["get", "list"], &[""], &["pods"]).build()],
    ));
    p.upsert_cluster_role(cluster_role(
        "token-creator",
        vec![r(&["create"], &[""], &["serviceaccounts/token"]).build()],
    ));
    p.upsert_role(
        "demo",
        role("cm-editor", vec![r(&["*"], &[""], &["configmaps"]).build()]),
    );
    p
}

#[test]
fn subjects_table() {
    let mut p = policy();
    p.upsert_cluster_role_binding(crb("users", "pod-reader", vec![subject("User", "alice", None)]));
    p.upsert_cluster_role_binding(crb(
        "groups",
        "pod-reader",
        vec![subject("Group", "readers", None)],
    ));
    p.upsert_cluster_role_binding(crb(
        "sa",
        "pod-reader",
        vec![subject("ServiceAccount", "bot", Some("ops"))],
    ));
    // A ServiceAccount subject of a ClusterRoleBinding without a namespace never matches.
    p.upsert_cluster_role_binding(crb(
        "sa-no-ns",
        "token-creator",
        vec![subject("ServiceAccount", "bot", None)],
    ));
    // In a RoleBinding it takes the binding's namespace.
    p.upsert_role_binding(
        "demo",
        rb(
            "local-sa",
            "Role",
            "cm-editor",
            vec![subject("ServiceAccount", "app", None)],
        ),
    );
    p.upsert_role_binding(
        "demo",
        rb(
            "remote-sa",
            "ClusterRole",
            "token-creator",
            vec![subject("ServiceAccount", "app", Some("other"))],
        ),
    );
    p.upsert_role_binding(
        "demo",
        rb(
            "all-sas",
            "ClusterRole",
            "pod-reader",
            vec![subject("Group", "system:serviceaccounts:demo", None)],
        ),
    );
    p.upsert_role_binding(
        "demo",
        rb(
            "weird",
            "ClusterRole",
            "token-creator",
            vec![subject("Robot", "alice", None)],
        ),
    );

    let cases: Vec<(&str, UserInfo, &str, &str, &str, bool)> = vec![
        ("user by name", user("alice", &[]), "list", "pods", "x", true),
        (
            "user name is exact",
            user("alice2", &[]),
            "list",
            "pods",
            "x",
            false,
        ),
        ("group", user("bob", &["readers"]), "list", "pods", "x", true),
        (
            "group name as user name does not match",
            user("readers", &[]),
            "list",
            "pods",
            "x",
            false,
        ),
        (
            "sa username",
            user("system:serviceaccount:ops:bot", &[]),
            "get",
            "pods",
            "",
            true,
        ),
        (
            "sa in other namespace",
            user("system:serviceaccount:dev:bot", &[]),
            "get",
            "pods",
            "",
            false,
        ),
        (
            "sa without namespace in CRB",
            user("system:serviceaccount:demo:bot", &[]),
            "create",
            "serviceaccounts/token",
            "demo",
            false,
        ),
        (
            "sa defaults to binding namespace",
            user("system:serviceaccount:demo:app", &[]),
            "update",
            "configmaps",
            "demo",
            true,
        ),
        (
            "sa from another namespace bound here",
            user("system:serviceaccount:other:app", &[]),
            "create",
            "serviceaccounts/token",
            "demo",
            true,
        ),
        (
            "that binding grants only in its namespace",
            user("system:serviceaccount:other:app", &[]),
            "create",
            "serviceaccounts/token",
            "other",
            false,
        ),
        (
            "sa group",
            user(
                "system:serviceaccount:demo:x",
                &["system:serviceaccounts", "system:serviceaccounts:demo"],
            ),
            "list",
            "pods",
            "demo",
            true,
        ),
        (
            "sa group of another namespace",
            user(
                "system:serviceaccount:dev:x",
                &["system:serviceaccounts", "system:serviceaccounts:dev"],
            ),
            "list",
            "pods",
            "demo",
            false,
        ),
        (
            "unknown subject kind",
            user("alice", &[]),
            "create",
            "serviceaccounts/token",
            "demo",
            false,
        ),
    ];
    for (what, u, verb, resource, ns, allowed) in cases {
        let d = p.authorize(&req(&u, verb, "", resource, ns, "n"));
        assert_eq!(d == Decision::Allow, allowed, "{what}: {d:?}");
    }
}

#[test]
fn binding_scope() {
    let mut p = policy();
    p.upsert_role_binding(
        "demo",
        rb("edit", "Role", "cm-editor", vec![subject("User", "alice", None)]),
    );
    p.upsert_role_binding(
        "demo",
        rb(
            "read",
            "ClusterRole",
            "pod-reader",
            vec![subject("User", "alice", None)],
        ),
    );
    p.upsert_cluster_role_binding(crb(
        "everywhere",
        "token-creator",
        vec![subject("User", "carol", None)],
    ));
    let alice = user("alice", &[]);
    let carol = user("carol", &[]);
    // A RoleBinding applies in its namespace only, for a Role or a ClusterRole.
    assert_eq!(
        p.authorize(&req(&alice, "delete", "", "configmaps", "demo", "c")),
        Decision::Allow
    );
    assert_eq!(
        p.authorize(&req(&alice, "list", "", "pods", "demo", "")),
        Decision::Allow
    );
    assert!(matches!(
        p.authorize(&req(&alice, "list", "", "pods", "prod", "")),
        Decision::NoOpinion(_)
    ));
    // ... and never at the cluster scope.
    assert!(matches!(
        p.authorize(&req(&alice, "list", "", "pods", "", "")),
        Decision::NoOpinion(_)
    ));
    // A ClusterRoleBinding applies in every namespace and at the cluster scope.
    for ns in ["demo", "prod", ""] {
        assert_eq!(
            p.authorize(&req(&carol, "create", "", "serviceaccounts/token", ns, "sa")),
            Decision::Allow,
            "{ns}"
        );
    }
}

#[test]
fn missing_roles_contribute_nothing_and_are_reported() {
    let mut p = policy();
    p.upsert_cluster_role_binding(crb("ghost", "nope", vec![subject("User", "alice", None)]));
    p.upsert_role_binding(
        "demo",
        rb(
            "ghost-role",
            "Role",
            "absent",
            vec![subject("User", "alice", None)],
        ),
    );
    p.upsert_role_binding(
        "demo",
        rb(
            "ok",
            "ClusterRole",
            "pod-reader",
            vec![subject("User", "alice", None)],
        ),
    );
    let alice = user("alice", &[]);
    // Still allowed by the binding that resolves.
    assert_eq!(
        p.authorize(&req(&alice, "get", "", "pods", "demo", "p")),
        Decision::Allow
    );
    assert_eq!(
        p.authorize(&req(&alice, "delete", "", "pods", "demo", "p")),
        Decision::NoOpinion(
            "RBAC: [clusterrole.rbac.authorization.k8s.io \"nope\" not found, role.rbac.authorization.k8s.io \"absent\" not found]".into()
        )
    );
    assert_eq!(
        p.authorize(&req(&alice, "delete", "", "pods", "other", "p")),
        Decision::NoOpinion("RBAC: clusterrole.rbac.authorization.k8s.io \"nope\" not found".into())
    );
    // No errors: the reason is empty, as upstream's.
    assert_eq!(
        p.authorize(&req(&user("bob", &[]), "get", "", "pods", "demo", "p")),
        Decision::NoOpinion(String::new())
    );
    // A ClusterRoleBinding to a Role cannot resolve; an unknown kind neither.
    p.upsert_cluster_role_binding(ClusterRoleBinding {
        metadata: meta("odd"),
        role_ref: role_ref("Role", "cm-editor"),
        subjects: Some(vec![subject("User", "dan", None)]),
    });
    p.upsert_role_binding(
        "demo",
        rb("odd2", "Thing", "x", vec![subject("User", "dan", None)]),
    );
    let (rules, errors) = p.rules_for(&user("dan", &[]), "demo");
    assert!(rules.is_empty());
    assert_eq!(
        errors,
        vec![
            "role.rbac.authorization.k8s.io \"cm-editor\" not found".to_string(),
            "unsupported role reference kind: \"Thing\"".to_string()
        ]
    );
}

#[test]
fn allow_reasons_name_the_binding() {
    let mut p = policy();
    p.upsert_cluster_role_binding(crb(
        "readers",
        "pod-reader",
        vec![subject("User", "x", None), subject("Group", "g", None)],
    ));
    p.upsert_role_binding(
        "demo",
        rb(
            "sa",
            "ClusterRole",
            "token-creator",
            vec![subject("ServiceAccount", "app", None)],
        ),
    );
    let (d, reason) = p.decide_with_reason(&req(&user("bob", &["g"]), "get", "", "pods", "", "p"));
    assert_eq!(d, Decision::Allow);
    assert_eq!(
        reason,
        "RBAC: allowed by ClusterRoleBinding \"readers\" of ClusterRole \"pod-reader\" to Group \"g\""
    );
    let (_, reason) = p.decide_with_reason(&req(
        &user("system:serviceaccount:demo:app", &[]),
        "create",
        "",
        "serviceaccounts/token",
        "demo",
        "app",
    ));
    assert_eq!(
        reason,
        "RBAC: allowed by RoleBinding \"sa/demo\" of ClusterRole \"token-creator\" to ServiceAccount \"app/demo\""
    );
}

#[test]
fn rules_for_lists_cluster_then_namespace_rules() {
    let mut p = policy();
    p.upsert_cluster_role_binding(crb(
        "a",
        "pod-reader",
        vec![subject("Group", "system:authenticated", None)],
    ));
    p.upsert_role_binding(
        "demo",
        rb("b", "Role", "cm-editor", vec![subject("User", "alice", None)]),
    );
    let alice = user("alice", &["system:authenticated"]);
    let (rules, errors) = p.rules_for(&alice, "demo");
    assert!(errors.is_empty());
    assert_eq!(
        rules,
        vec![
            r(&["get", "list"], &[""], &["pods"]).build(),
            r(&["*"], &[""], &["configmaps"]).build()
        ]
    );
    // No namespace: cluster rules only.
    assert_eq!(p.rules_for(&alice, "").0.len(), 1);
}

// ---------------------------------------------------------------------------------------
// The live index.

#[test]
fn index_updates_take_effect_at_once() {
    let index = RbacIndex::new();
    let alice = user("alice", &[]);
    let get = req(&alice, "get", "", "pods", "demo", "p");
    assert!(matches!(index.authorize(&get), Decision::NoOpinion(_)));

    index.upsert_role_binding(
        "demo",
        rb(
            "b",
            "ClusterRole",
            "pod-reader",
            vec![subject("User", "alice", None)],
        ),
    );
    // A binding to a role not yet there: nothing, with the error.
    assert_eq!(
        index.authorize(&get),
        Decision::NoOpinion("RBAC: clusterrole.rbac.authorization.k8s.io \"pod-reader\" not found".into())
    );
    index.upsert_cluster_role(cluster_role(
        "pod-reader",
        vec![r(&["get"], &[""], &["pods"]).build()],
    ));
    assert_eq!(index.authorize(&get), Decision::Allow);

    // A snapshot taken before a change keeps its view; the index moves on.
    let before = index.snapshot();
    index.upsert_cluster_role(cluster_role(
        "pod-reader",
        vec![r(&["list"], &[""], &["pods"]).build()],
    ));
    assert_eq!(before.authorize(&get), Decision::Allow);
    assert!(matches!(index.authorize(&get), Decision::NoOpinion(_)));
    index.upsert_cluster_role(cluster_role(
        "pod-reader",
        vec![r(&["get"], &[""], &["pods"]).build()],
    ));

    // Replacing a binding drops its old subjects from the index.
    index.upsert_role_binding(
        "demo",
        rb(
            "b",
            "ClusterRole",
            "pod-reader",
            vec![subject("User", "bob", None)],
        ),
    );
    assert!(matches!(index.authorize(&get), Decision::NoOpinion(_)));
    assert_eq!(
        index.authorize(&req(&user("bob", &[]), "get", "", "pods", "demo", "p")),
        Decision::Allow
    );

    index.remove_role_binding("demo", "b");
    assert!(matches!(
        index.authorize(&req(&user("bob", &[]), "get", "", "pods", "demo", "p")),
        Decision::NoOpinion(_)
    ));
    assert_eq!(
        index.snapshot().counts(),
        RbacCounts {
            cluster_roles: 1,
            ..Default::default()
        }
    );

    index.upsert_cluster_role_binding(crb("c", "pod-reader", vec![subject("Group", "g", None)]));
    let g = user("x", &["g"]);
    assert_eq!(
        index.authorize(&req(&g, "get", "", "pods", "", "p")),
        Decision::Allow
    );
    index.remove_cluster_role("pod-reader");
    assert!(matches!(
        index.authorize(&req(&g, "get", "", "pods", "", "p")),
        Decision::NoOpinion(_)
    ));
    index.remove_cluster_role_binding("c");

    index.upsert_role("demo", role("r", vec![r(&["get"], &[""], &["secrets"]).build()]));
    index.upsert_role_binding(
        "demo",
        rb("rb", "Role", "r", vec![subject("User", "alice", None)]),
    );
    let secret = req(&alice, "get", "", "secrets", "demo", "s");
    assert_eq!(index.authorize(&secret), Decision::Allow);
    index.remove_role("demo", "r");
    assert!(matches!(index.authorize(&secret), Decision::NoOpinion(_)));
    index.remove_role_binding("demo", "rb");
    assert_eq!(index.snapshot().counts(), RbacCounts::default());
}

#[test]
fn index_applies_stored_json() {
    let index = RbacIndex::new();
    index
        .apply(
            "clusterroles",
            "",
            "reader",
            Some(json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": {"name": "reader"},
                "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]
            })),
        )
        .unwrap();
    index
        .apply(
            "RoleBinding",
            "demo",
            "rb",
            Some(json!({
                "metadata": {"name": "rb", "namespace": "demo"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "reader"},
                "subjects": [{"kind": "ServiceAccount", "name": "default"}]
            })),
        )
        .unwrap();
    let sa = user("system:serviceaccount:demo:default", &[]);
    assert_eq!(
        index.authorize(&req(&sa, "get", "", "pods", "demo", "p")),
        Decision::Allow
    );
    index.apply("rolebindings", "demo", "rb", None).unwrap();
    assert!(matches!(
        index.authorize(&req(&sa, "get", "", "pods", "demo", "p")),
        Decision::NoOpinion(_)
    ));
    assert!(matches!(
        index.apply("pods", "demo", "x", None),
        Err(ApplyError::UnknownKind(_))
    ));
    assert!(matches!(
        index.apply("roles", "demo", "x", Some(json!({"kind": "Pod"}))),
        Err(ApplyError::Decode(_))
    ));
    // Batches apply as one.
    index.update(|p| {
        p.apply("Role", "demo", "r", Some(json!({"metadata": {"name": "r"}, "rules": []}))).unwrap();
        p.apply("ClusterRoleBinding", "", "c", Some(json!({"metadata": {"name": "c"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "reader"}}))).unwrap();
    });
    assert_eq!(
        index.snapshot().counts(),
        RbacCounts {
            roles: 1,
            cluster_roles: 1,
            role_bindings: 0,
            cluster_role_bindings: 1
        }
    );
}

// ---------------------------------------------------------------------------------------
// Escalation.

#[test]
fn covers_table() {
    let owner_admin = vec![
        r(&["*"], &["*"], &["*"]).build(),
        rule(&["*"]).urls(&["*"]).build(),
    ];
    let cases: Vec<(&str, Vec<PolicyRule>, Vec<PolicyRule>, bool)> = vec![
        (
            "full authority covers all",
            owner_admin.clone(),
            vec![
                r(&["get"], &[""], &["pods"]).build(),
                rule(&["get"]).urls(&["/x"]).build(),
            ],
            true,
        ),
        (
            "exact",
            vec![r(&["get", "list"], &[""], &["pods"]).build()],
            vec![r(&["get"], &[""], &["pods"]).build()],
            true,
        ),
        (
            "verb missing",
            vec![r(&["get"], &[""], &["pods"]).build()],
            vec![r(&["get", "delete"], &[""], &["pods"]).build()],
            false,
        ),
        (
            "target * needs owner *",
            vec![r(READ_WRITE, &[""], &["pods"]).build()],
            vec![r(&["*"], &[""], &["pods"]).build()],
            false,
        ),
        (
            "owner * covers target *",
            vec![r(&["*"], &[""], &["pods"]).build()],
            vec![r(&["*"], &[""], &["pods"]).build()],
            true,
        ),
        (
            "target group * needs owner *",
            vec![r(&["get"], &["", "apps"], &["pods"]).build()],
            vec![r(&["get"], &["*"], &["pods"]).build()],
            false,
        ),
        (
            "resource * covers subresources",
            vec![r(&["create"], &[""], &["*"]).build()],
            vec![r(&["create"], &[""], &["serviceaccounts/token"]).build()],
            true,
        ),
        (
            "resource does not cover subresource",
            vec![r(&["create"], &[""], &["serviceaccounts"]).build()],
            vec![r(&["create"], &[""], &["serviceaccounts/token"]).build()],
            false,
        ),
        (
            "*/sub covers x/sub",
            vec![r(&["create"], &[""], &["*/token"]).build()],
            vec![r(&["create"], &[""], &["serviceaccounts/token"]).build()],
            true,
        ),
        (
            "owner names cover those names",
            vec![r(&["get"], &[""], &["secrets"]).names(&["a", "b"]).build()],
            vec![r(&["get"], &[""], &["secrets"]).names(&["a"]).build()],
            true,
        ),
        (
            "owner names do not cover unnamed",
            vec![r(&["get"], &[""], &["secrets"]).names(&["a"]).build()],
            vec![r(&["get"], &[""], &["secrets"]).build()],
            false,
        ),
        (
            "owner without names covers named",
            vec![r(&["get"], &[""], &["secrets"]).build()],
            vec![r(&["get"], &[""], &["secrets"]).names(&["z"]).build()],
            true,
        ),
        (
            "url prefix",
            vec![rule(&["get"]).urls(&["/healthz*"]).build()],
            vec![rule(&["get"]).urls(&["/healthz/etcd"]).build()],
            true,
        ),
        (
            "url exact only",
            vec![rule(&["get"]).urls(&["/healthz"]).build()],
            vec![rule(&["get"]).urls(&["/healthz/etcd"]).build()],
            false,
        ),
        (
            "resource rules never cover urls",
            vec![r(&["*"], &["*"], &["*"]).build()],
            vec![rule(&["get"]).urls(&["/x"]).build()],
            false,
        ),
        (
            "url rules never cover resources",
            vec![rule(&["*"]).urls(&["*"]).build()],
            vec![r(&["get"], &[""], &["pods"]).build()],
            false,
        ),
        (
            "atoms may come from different owner rules",
            vec![
                r(&["get"], &[""], &["pods"]).build(),
                r(&["list"], &[""], &["pods"]).build(),
            ],
            vec![r(&["get", "list"], &[""], &["pods"]).build()],
            true,
        ),
        ("nothing requested", vec![], vec![], true),
    ];
    for (what, owner, requested, want) in cases {
        let (ok, missing) = covers(&owner, &requested);
        assert_eq!(ok, want, "{what}: {missing:?}");
        assert_eq!(missing.is_empty(), want, "{what}");
    }
    // The uncovered atoms are reported one by one.
    let (_, missing) = covers(
        &[r(&["get"], &[""], &["pods"]).build()],
        &[r(&["get", "delete"], &["", "apps"], &["pods"])
            .names(&["a"])
            .build()],
    );
    let shown: Vec<String> = missing.iter().map(compact_string).collect();
    assert_eq!(
        shown,
        vec![
            r#"{APIGroups:[""], Resources:["pods"], ResourceNames:["a"], Verbs:["delete"]}"#,
            r#"{APIGroups:["apps"], Resources:["pods"], ResourceNames:["a"], Verbs:["delete"]}"#,
            r#"{APIGroups:["apps"], Resources:["pods"], ResourceNames:["a"], Verbs:["get"]}"#,
        ]
    );
}

const READ_WRITE: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
];

#[test]
fn compact_string_rendering() {
    assert_eq!(
        compact_string(&r(&["delete"], &[""], &["pods"]).build()),
        r#"{APIGroups:[""], Resources:["pods"], Verbs:["delete"]}"#
    );
    assert_eq!(
        compact_string(&rule(&["get"]).urls(&["/healthz", "/api/*"]).build()),
        r#"{NonResourceURLs:["/api/*" "/healthz"], Verbs:["get"]}"#
    );
    assert_eq!(
        compact_string(&r(&["get"], &["a", "b"], &["x/y"]).names(&["n\"q"]).build()),
        r#"{APIGroups:["a" "b"], Resources:["x/y"], ResourceNames:["n\"q"], Verbs:["get"]}"#
    );
    assert_eq!(compact_string(&PolicyRule::default()), "{}");
    assert_eq!(super::rules::go_quote("tab\there\u{1}é"), "\"tab\\there\\x01é\"");
}

#[test]
fn escalation_message_as_upstream() {
    let mut p = policy();
    p.upsert_cluster_role_binding(crb("r", "pod-reader", vec![subject("User", "alice", None)]));
    let alice = user("alice", &["g1", "g2"]);
    let requested = vec![
        r(&["get", "delete", "patch"], &[""], &["pods"]).build(),
        r(&["get"], &[""], &["secrets"]).names(&["s1"]).build(),
        rule(&["get"]).urls(&["/metrics"]).build(),
        r(&["list"], &[""], &["pods"]).build(),
    ];
    let err = p.confirm_no_escalation(&alice, &requested, "demo").unwrap_err();
    assert_eq!(
        err,
        "user \"alice\" (groups=[\"g1\" \"g2\"]) is attempting to grant RBAC permissions not currently held:\n\
         {APIGroups:[\"\"], Resources:[\"pods\"], Verbs:[\"delete\" \"patch\"]}\n\
         {APIGroups:[\"\"], Resources:[\"secrets\"], ResourceNames:[\"s1\"], Verbs:[\"get\"]}\n\
         {NonResourceURLs:[\"/metrics\"], Verbs:[\"get\"]}"
    );
    assert!(p.confirm_no_escalation(&alice, &requested[3..], "demo").is_ok());

    // The brief's example, and resolution errors appended.
    p.upsert_cluster_role_binding(crb("ghost", "gone", vec![subject("User", "bob", None)]));
    let err = p
        .confirm_no_escalation(&user("bob", &[]), &[r(&["delete"], &[""], &["pods"]).build()], "")
        .unwrap_err();
    assert_eq!(
        err,
        "user \"bob\" (groups=[]) is attempting to grant RBAC permissions not currently held:\n\
         {APIGroups:[\"\"], Resources:[\"pods\"], Verbs:[\"delete\"]}; resolution errors: [clusterrole.rbac.authorization.k8s.io \"gone\" not found]"
    );
    let two = escalation_message(&user("u", &[]), &[], &["a".into(), "b".into(), "a".into()]);
    assert!(two.ends_with("; resolution errors: [[a, b]]"), "{two}");
}

#[test]
fn compaction_merges_verbs_of_simple_rules_only() {
    let atoms = vec![
        r(&["get"], &[""], &["pods"]).build(),
        r(&["get"], &[""], &["secrets"]).names(&["x"]).build(),
        r(&["list"], &[""], &["pods"]).build(),
        r(&["get"], &["apps"], &["pods"]).build(),
    ];
    let compacted = compact_rules(&atoms);
    let shown: Vec<String> = compacted.iter().map(compact_string).collect();
    assert_eq!(
        shown,
        vec![
            r#"{APIGroups:[""], Resources:["secrets"], ResourceNames:["x"], Verbs:["get"]}"#,
            r#"{APIGroups:[""], Resources:["pods"], Verbs:["get" "list"]}"#,
            r#"{APIGroups:["apps"], Resources:["pods"], Verbs:["get"]}"#,
        ]
    );
}

#[test]
fn full_authority_and_attribute_helpers() {
    let mut p = RbacPolicy::new();
    for role in default_cluster_roles() {
        p.upsert_cluster_role(role);
    }
    for b in default_cluster_role_bindings() {
        p.upsert_cluster_role_binding(b);
    }
    let admin = user("admin", &["system:masters", "system:authenticated"]);
    let nobody = user("nobody", &["system:authenticated"]);
    assert!(p.has_full_authority(&admin, ""));
    assert!(!p.has_full_authority(&nobody, ""));

    let a = escalate_attributes(&nobody, "clusterroles", "", "edit");
    assert_eq!(
        (
            a.verb.as_str(),
            a.api_group.as_str(),
            a.resource.as_str(),
            a.name.as_str()
        ),
        ("escalate", "rbac.authorization.k8s.io", "clusterroles", "edit")
    );
    let b = bind_attributes(&nobody, &role_ref("ClusterRole", "view"), "demo").unwrap();
    assert_eq!(
        (
            b.verb.as_str(),
            b.resource.as_str(),
            b.name.as_str(),
            b.namespace.as_str()
        ),
        ("bind", "clusterroles", "view", "demo")
    );
    assert_eq!(
        bind_attributes(&nobody, &role_ref("Role", "r"), "demo")
            .unwrap()
            .resource,
        "roles"
    );
    assert!(bind_attributes(&nobody, &role_ref("Other", "r"), "demo").is_none());
    assert_eq!(p.authorize(&b), Decision::NoOpinion(String::new()));
}

// ---------------------------------------------------------------------------------------
// Aggregation.

fn labelled(name: &str, labels: &[(&str, &str)], rules: Vec<PolicyRule>) -> ClusterRole {
    let mut role = cluster_role(name, rules);
    role.metadata.labels = Some(
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    role
}

fn aggregated(name: &str, selectors: Vec<LabelSelector>) -> ClusterRole {
    ClusterRole {
        metadata: meta(name),
        rules: None,
        aggregation_rule: Some(AggregationRule {
            cluster_role_selectors: Some(selectors),
        }),
    }
}

fn match_labels(pairs: &[(&str, &str)]) -> LabelSelector {
    LabelSelector {
        match_labels: Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        match_expressions: None,
    }
}

fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelector {
    LabelSelector {
        match_labels: None,
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
        }]),
    }
}

#[test]
fn label_selectors() {
    let labels: BTreeMap<String, String> = [("tier", "web"), ("env", "prod")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let cases: Vec<(&str, LabelSelector, Result<bool, ()>)> = vec![
        ("empty matches all", LabelSelector::default(), Ok(true)),
        ("matchLabels", match_labels(&[("tier", "web")]), Ok(true)),
        (
            "matchLabels all of them",
            match_labels(&[("tier", "web"), ("env", "dev")]),
            Ok(false),
        ),
        ("In", expr("env", "In", &["dev", "prod"]), Ok(true)),
        ("In absent", expr("zone", "In", &["a"]), Ok(false)),
        ("NotIn", expr("env", "NotIn", &["prod"]), Ok(false)),
        ("NotIn absent matches", expr("zone", "NotIn", &["a"]), Ok(true)),
        ("Exists", expr("tier", "Exists", &[]), Ok(true)),
        ("DoesNotExist", expr("tier", "DoesNotExist", &[]), Ok(false)),
        ("DoesNotExist absent", expr("zone", "DoesNotExist", &[]), Ok(true)),
        ("In needs values", expr("env", "In", &[]), Err(())),
        ("Exists takes no values", expr("env", "Exists", &["x"]), Err(())),
        ("unknown operator", expr("env", "Equals", &["x"]), Err(())),
    ];
    for (what, selector, want) in cases {
        assert_eq!(
            label_selector_matches(&selector, &labels).map_err(|_| ()),
            want,
            "{what}"
        );
    }
}

#[test]
fn aggregation_unions_matching_roles() {
    let pods = r(&["get"], &[""], &["pods"]).build();
    let secrets = r(&["get"], &[""], &["secrets"]).build();
    let leases = r(&["get"], &["coordination.k8s.io"], &["leases"]).build();
    let roles = vec![
        aggregated(
            "combo",
            vec![match_labels(&[("a", "true")]), expr("b", "In", &["yes"])],
        ),
        labelled("z-one", &[("a", "true")], vec![secrets.clone(), pods.clone()]),
        labelled("a-two", &[("a", "true"), ("b", "yes")], vec![pods.clone()]),
        labelled("three", &[("b", "yes")], vec![leases.clone(), pods.clone()]),
        labelled("other", &[("b", "no")], vec![r(&["*"], &["*"], &["*"]).build()]),
        // Aggregated roles already up to date are left out.
        ClusterRole {
            rules: Some(vec![pods.clone()]),
            ..aggregated("same", vec![match_labels(&[("c", "1")])])
        },
        labelled("c", &[("c", "1")], vec![pods.clone()]),
    ];
    let out = aggregate(&roles);
    // Selector order, then by name within a selector; each rule once.
    assert_eq!(
        out,
        vec![(
            "combo".to_string(),
            vec![pods.clone(), secrets.clone(), leases.clone()]
        )]
    );

    // An aggregated role is not aggregated into itself even when it matches.
    let mut selfish = aggregated("self", vec![match_labels(&[("a", "true")])]);
    selfish.metadata.labels = Some(BTreeMap::from([("a".into(), "true".into())]));
    selfish.rules = Some(vec![r(&["*"], &["*"], &["*"]).build()]);
    let out = aggregate(&[selfish, labelled("p", &[("a", "true")], vec![pods.clone()])]);
    assert_eq!(out, vec![("self".to_string(), vec![pods.clone()])]);

    // Nothing matches: the rules become empty.
    let stale = ClusterRole {
        rules: Some(vec![pods.clone()]),
        ..aggregated("stale", vec![match_labels(&[("x", "y")])])
    };
    assert_eq!(aggregate(&[stale]), vec![("stale".to_string(), vec![])]);
    // An invalid selector leaves the role alone.
    let bad = ClusterRole {
        rules: Some(vec![pods.clone()]),
        ..aggregated("bad", vec![expr("x", "In", &[])])
    };
    assert!(aggregate(&[bad]).is_empty());
}

#[test]
fn default_admin_edit_view_aggregate_to_a_chain() {
    let roles = default_cluster_roles();
    let out: BTreeMap<String, Vec<PolicyRule>> = aggregate(&roles).into_iter().collect();
    assert_eq!(out.keys().collect::<Vec<_>>(), vec!["admin", "edit", "view"]);
    let (view, edit, admin) = (&out["view"], &out["edit"], &out["admin"]);
    assert!(covers(edit, view).0, "edit ⊇ view");
    assert!(covers(admin, edit).0, "admin ⊇ edit");
    assert!(!covers(view, edit).0);
    // Aggregating again changes nothing.
    let mut updated = roles.clone();
    for role in &mut updated {
        if let Some(rules) = out.get(role.metadata.name.as_deref().unwrap()) {
            role.rules = Some(rules.clone());
        }
    }
    assert!(aggregate(&updated).is_empty());
}

// ---------------------------------------------------------------------------------------
// Default policy.

fn default_policy() -> RbacPolicy {
    let mut roles = default_cluster_roles();
    let filled: BTreeMap<String, Vec<PolicyRule>> = aggregate(&roles).into_iter().collect();
    for role in &mut roles {
        if let Some(rules) = filled.get(role.metadata.name.as_deref().unwrap()) {
            role.rules = Some(rules.clone());
        }
    }
    let mut p = RbacPolicy::new();
    for role in roles {
        p.upsert_cluster_role(role);
    }
    for b in default_cluster_role_bindings() {
        p.upsert_cluster_role_binding(b);
    }
    for (ns, role) in default_roles() {
        p.upsert_role(&ns, role);
    }
    for (ns, b) in default_role_bindings() {
        p.upsert_role_binding(&ns, b);
    }
    p
}

#[test]
fn default_roles_hold_what_upstream_grants() {
    let mut p = default_policy();
    for (binding, role) in [("e", "edit"), ("v", "view"), ("a", "admin")] {
        p.upsert_role_binding(
            "demo",
            rb(binding, "ClusterRole", role, vec![subject("User", role, None)]),
        );
    }
    let (edit, view, admin) = (user("edit", &[]), user("view", &[]), user("admin", &[]));
    let allowed = |u: &UserInfo, verb: &str, group: &str, res: &str, name: &str| {
        p.authorize(&req(u, verb, group, res, "demo", name)) == Decision::Allow
    };
    // edit: write secrets and serviceaccounts, mint tokens, impersonate SAs; leases.
    assert!(allowed(&edit, "create", "", "serviceaccounts/token", "sa"));
    assert!(allowed(&edit, "get", "", "secrets", "s"));
    assert!(allowed(&edit, "delete", "", "secrets", "s"));
    assert!(allowed(&edit, "create", "", "serviceaccounts", ""));
    assert!(allowed(&edit, "impersonate", "", "serviceaccounts", "sa"));
    assert!(allowed(&edit, "update", "coordination.k8s.io", "leases", "l"));
    assert!(allowed(&edit, "get", "", "pods/status", "p"));
    assert!(!allowed(&edit, "update", "", "pods/status", "p"));
    assert!(!allowed(
        &edit,
        "create",
        "rbac.authorization.k8s.io",
        "roles",
        ""
    ));
    assert!(!allowed(&edit, "delete", "", "namespaces", "demo"));
    // view: no secrets, no tokens.
    assert!(allowed(&view, "list", "", "pods", ""));
    assert!(allowed(&view, "get", "", "namespaces", "demo"));
    assert!(allowed(&view, "list", "", "serviceaccounts", ""));
    assert!(!allowed(&view, "get", "", "secrets", "s"));
    assert!(!allowed(&view, "list", "", "secrets", ""));
    assert!(!allowed(&view, "create", "", "serviceaccounts/token", "sa"));
    assert!(!allowed(&view, "update", "", "configmaps", "c"));
    // admin: edit plus roles, rolebindings and local access reviews.
    assert!(allowed(
        &admin,
        "create",
        "rbac.authorization.k8s.io",
        "rolebindings",
        ""
    ));
    assert!(allowed(
        &admin,
        "create",
        "authorization.k8s.io",
        "localsubjectaccessreviews",
        ""
    ));
    assert!(allowed(&admin, "create", "", "serviceaccounts/token", "sa"));
    assert!(!allowed(
        &admin,
        "create",
        "rbac.authorization.k8s.io",
        "clusterroles",
        ""
    ));

    let anyone = user("someone", &["system:authenticated"]);
    let anonymous = UserInfo::anonymous();
    let get_path = |u: &UserInfo, path: &str| p.authorize(&path_req(u, "get", path)) == Decision::Allow;
    // Discovery and self reviews for the authenticated; health and version for all.
    assert!(get_path(&anyone, "/apis/rbac.authorization.k8s.io/v1"));
    assert!(!get_path(&anonymous, "/api"));
    for path in ["/healthz", "/livez", "/readyz", "/version", "/version/"] {
        assert!(get_path(&anonymous, path), "{path}");
    }
    assert!(!get_path(&anonymous, "/healthz/etcd"));
    assert!(!get_path(&anonymous, "/metrics"));
    assert!(get_path(&user("prom", &["system:monitoring"]), "/metrics"));
    let self_review = req(
        &anyone,
        "create",
        "authorization.k8s.io",
        "selfsubjectaccessreviews",
        "",
        "",
    );
    assert_eq!(p.authorize(&self_review), Decision::Allow);
    assert_eq!(
        p.authorize(&req(
            &anyone,
            "create",
            "authentication.k8s.io",
            "selfsubjectreviews",
            "",
            ""
        )),
        Decision::Allow
    );
    assert_eq!(
        p.authorize(&req(
            &anonymous,
            "create",
            "authentication.k8s.io",
            "selfsubjectreviews",
            "",
            ""
        )),
        Decision::NoOpinion(String::new())
    );
    // OIDC discovery: every ServiceAccount, with and without the trailing slash.
    let sa = user(
        "system:serviceaccount:demo:x",
        &[
            "system:serviceaccounts",
            "system:serviceaccounts:demo",
            "system:authenticated",
        ],
    );
    for path in [
        "/.well-known/openid-configuration",
        "/.well-known/openid-configuration/",
        "/openid/v1/jwks",
        "/openid/v1/jwks/",
        "/openid/v1/revocations",
        "/openid/v1/revocations/",
    ] {
        assert!(get_path(&sa, path), "{path}");
        assert!(!get_path(&anyone, path), "{path}");
    }
    // cluster-admin through system:masters.
    let master = user("root", &["system:masters"]);
    assert_eq!(
        p.authorize(&req(
            &master,
            "escalate",
            "rbac.authorization.k8s.io",
            "clusterroles",
            "",
            "x"
        )),
        Decision::Allow
    );
    assert!(get_path(&master, "/anything"));
    // system:node is bound to nobody.
    let node = user("system:node:n1", &["system:nodes", "system:authenticated"]);
    assert_eq!(
        p.authorize(&req(&node, "create", "", "serviceaccounts/token", "demo", "sa")),
        Decision::NoOpinion(String::new())
    );
    // The controllers' ServiceAccounts.
    let ctl = |n: &str| user(&format!("system:serviceaccount:kube-system:{n}"), &[]);
    assert_eq!(
        p.authorize(&req(
            &ctl("clusterrole-aggregation-controller"),
            "escalate",
            "rbac.authorization.k8s.io",
            "clusterroles",
            "",
            "admin"
        )),
        Decision::Allow
    );
    assert_eq!(
        p.authorize(&req(
            &ctl("token-cleaner"),
            "delete",
            "",
            "secrets",
            "kube-system",
            "bootstrap-token-abc"
        )),
        Decision::Allow
    );
    assert!(matches!(
        p.authorize(&req(
            &ctl("token-cleaner"),
            "delete",
            "",
            "secrets",
            "default",
            "s"
        )),
        Decision::NoOpinion(_)
    ));
    assert_eq!(
        p.authorize(&req(
            &ctl("bootstrap-signer"),
            "update",
            "",
            "configmaps",
            "kube-public",
            "cluster-info"
        )),
        Decision::Allow
    );
    assert!(matches!(
        p.authorize(&req(
            &ctl("bootstrap-signer"),
            "update",
            "",
            "configmaps",
            "kube-public",
            "other"
        )),
        Decision::NoOpinion(_)
    ));
    assert_eq!(
        p.authorize(&req(
            &ctl("root-ca-cert-publisher"),
            "create",
            "",
            "configmaps",
            "demo",
            ""
        )),
        Decision::Allow
    );
    assert_eq!(
        p.authorize(&req(
            &ctl("namespace-controller"),
            "deletecollection",
            "",
            "pods",
            "demo",
            ""
        )),
        Decision::Allow
    );
    let kcm = user("system:kube-controller-manager", &["system:authenticated"]);
    assert_eq!(
        p.authorize(&req(&kcm, "create", "", "serviceaccounts/token", "demo", "sa")),
        Decision::Allow
    );
    assert_eq!(
        p.authorize(&req(
            &kcm,
            "get",
            "coordination.k8s.io",
            "leases",
            "kube-system",
            "kube-controller-manager"
        )),
        Decision::Allow
    );
}

#[test]
fn default_objects_carry_bootstrap_metadata_and_served_rules_only() {
    let label = |m: &ObjectMeta| {
        m.labels
            .as_ref()
            .and_then(|l| l.get("kubernetes.io/bootstrapping"))
            .cloned()
    };
    let auto = |m: &ObjectMeta| {
        m.annotations
            .as_ref()
            .and_then(|a| a.get("rbac.authorization.kubernetes.io/autoupdate"))
            .cloned()
    };
    let rbac_defaults = Some("rbac-defaults".to_string());
    let yes = Some("true".to_string());
    let roles = default_cluster_roles();
    let mut names: Vec<&str> = roles
        .iter()
        .map(|r| r.metadata.name.as_deref().unwrap())
        .collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), roles.len(), "unique names");
    for name in [
        "cluster-admin",
        "admin",
        "edit",
        "view",
        "system:aggregate-to-admin",
        "system:aggregate-to-edit",
        "system:aggregate-to-view",
        "system:basic-user",
        "system:discovery",
        "system:public-info-viewer",
        "system:service-account-issuer-discovery",
        "system:auth-delegator",
        "system:node",
        "system:kube-controller-manager",
        "system:monitoring",
    ] {
        assert!(names.contains(&name), "{name}");
    }
    for role in &roles {
        assert_eq!(label(&role.metadata), rbac_defaults);
        assert_eq!(auto(&role.metadata), yes);
        for rule in role.rules.iter().flatten() {
            assert!(!rule.verbs.is_empty());
            let groups: Vec<&str> = rule.api_groups.iter().flatten().map(String::as_str).collect();
            let resources: Vec<&str> = rule.resources.iter().flatten().map(String::as_str).collect();
            let serves = |g: &str, res: &str| {
                g == "*"
                    || res == "*"
                    || res.starts_with("*/")
                    || bootstrap::SERVED_RESOURCES.contains(&(g, res))
            };
            let who = role.metadata.name.as_deref().unwrap();
            for res in &resources {
                assert!(
                    groups.iter().any(|g| serves(g, res)),
                    "{who}: {res} is not served"
                );
            }
            for g in &groups {
                assert!(
                    resources.iter().any(|res| serves(g, res)),
                    "{who}: group {g:?} serves none"
                );
            }
        }
    }
    for b in default_cluster_role_bindings() {
        assert_eq!(label(&b.metadata), rbac_defaults);
        assert_eq!(auto(&b.metadata), yes);
        assert!(names.contains(&b.role_ref.name.as_str()), "{}", b.role_ref.name);
    }
    let crbs = default_cluster_role_bindings();
    let find = |n: &str| {
        crbs.iter()
            .find(|b| b.metadata.name.as_deref() == Some(n))
            .unwrap()
    };
    assert_eq!(find("system:node").subjects, None);
    let groups = |b: &ClusterRoleBinding| {
        b.subjects
            .iter()
            .flatten()
            .map(|s| (s.kind.clone(), s.name.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        groups(find("system:public-info-viewer")),
        vec![
            ("Group".into(), "system:authenticated".into()),
            ("Group".into(), "system:unauthenticated".into())
        ]
    );
    assert_eq!(
        groups(find("system:discovery")),
        vec![("Group".into(), "system:authenticated".into())]
    );
    assert_eq!(
        groups(find("system:service-account-issuer-discovery")),
        vec![("Group".into(), "system:serviceaccounts".into())]
    );
    assert_eq!(
        groups(find("cluster-admin")),
        vec![("Group".into(), "system:masters".into())]
    );
    for (_, role) in default_roles() {
        assert_eq!(label(&role.metadata), rbac_defaults);
        assert!(role.metadata.namespace.is_some());
    }
    for (ns, b) in default_role_bindings() {
        assert_eq!(b.metadata.namespace.as_deref(), Some(ns.as_str()));
        assert!(
            default_roles()
                .iter()
                .any(|(rns, r)| *rns == ns && r.metadata.name == Some(b.role_ref.name.clone()))
        );
    }
    // Edit's source rules as narrowed; view has no secrets.
    let find_role = |n: &str| {
        roles
            .iter()
            .find(|r| r.metadata.name.as_deref() == Some(n))
            .unwrap()
            .rules
            .clone()
            .unwrap()
    };
    let edit = find_role("system:aggregate-to-edit");
    assert!(edit.contains(&r(&["create"], &[""], &["serviceaccounts/token"]).build()));
    assert!(edit.contains(&r(&["impersonate"], &[""], &["serviceaccounts"]).build()));
    assert!(
        edit.contains(
            &r(
                &["create", "delete", "deletecollection", "patch", "update"],
                &[""],
                &["configmaps", "events", "secrets", "serviceaccounts"]
            )
            .build()
        )
    );
    let view = find_role("system:aggregate-to-view");
    assert!(view.iter().all(|rule| {
        !rule
            .resources
            .iter()
            .flatten()
            .any(|r| r == "secrets" || r.starts_with("serviceaccounts/"))
    }));
    // Events rules keep the served core group only.
    assert!(
        find_role("system:controller:root-ca-cert-publisher")
            .contains(&r(&["create", "patch", "update"], &[""], &["events"]).build())
    );
}

#[test]
fn reconciliation_adds_what_is_missing_and_keeps_the_rest() {
    let defaults = default_cluster_roles();
    let find = |n: &str| {
        defaults
            .iter()
            .find(|r| r.metadata.name.as_deref() == Some(n))
            .unwrap()
            .clone()
    };
    let basic = find("system:basic-user");
    // Nothing stored: create.
    assert_eq!(reconcile(None, &basic), Some(basic.clone()));
    // Up to date: nothing.
    assert_eq!(reconcile(Some(&basic), &basic), None);
    // A user removed a rule and a label, and added a rule and an annotation.
    let mut changed = basic.clone();
    let extra = r(&["get"], &[""], &["pods"]).build();
    changed.rules = Some(vec![changed.rules.as_ref().unwrap()[1].clone(), extra.clone()]);
    changed.metadata.labels = None;
    changed
        .metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert("note".into(), "mine".into());
    let fixed = reconcile(Some(&changed), &basic).unwrap();
    let rules = fixed.rules.clone().unwrap();
    assert!(rules.contains(&extra), "extra rules stay");
    assert!(
        covers(&rules, basic.rules.as_ref().unwrap()).0,
        "missing rules come back"
    );
    assert_eq!(
        fixed.metadata.labels.as_ref().unwrap()["kubernetes.io/bootstrapping"],
        "rbac-defaults"
    );
    assert_eq!(fixed.metadata.annotations.as_ref().unwrap()["note"], "mine");
    assert_eq!(reconcile(Some(&fixed), &basic), None, "converges");
    // autoupdate "false": hands off.
    let mut protected = changed.clone();
    protected.metadata.annotations.as_mut().unwrap().insert(
        "rbac.authorization.kubernetes.io/autoupdate".into(),
        "false".into(),
    );
    assert_eq!(reconcile(Some(&protected), &basic), None);
    // Aggregated roles: the selectors come back, the aggregated rules are not touched.
    let admin = find("admin");
    let mut stored = admin.clone();
    stored.rules = Some(vec![extra.clone()]);
    stored.aggregation_rule = Some(AggregationRule {
        cluster_role_selectors: Some(vec![match_labels(&[("mine", "true")])]),
    });
    let fixed = reconcile(Some(&stored), &admin).unwrap();
    assert_eq!(fixed.rules, Some(vec![extra.clone()]));
    assert_eq!(
        fixed
            .aggregation_rule
            .unwrap()
            .cluster_role_selectors
            .unwrap()
            .len(),
        2
    );
    // A default without aggregation removes a stored aggregationRule.
    let mut agg_basic = basic.clone();
    agg_basic.aggregation_rule = admin.aggregation_rule.clone();
    assert_eq!(
        reconcile(Some(&agg_basic), &basic).unwrap().aggregation_rule,
        None
    );

    // Roles.
    let (_, leader) = default_roles()
        .into_iter()
        .find(|(_, r)| r.metadata.name.as_deref() == Some("system:controller:token-cleaner"))
        .unwrap();
    let mut stored_role = leader.clone();
    stored_role.rules = Some(vec![]);
    let fixed = reconcile_role(Some(&stored_role), &leader).unwrap();
    assert!(covers(fixed.rules.as_ref().unwrap(), leader.rules.as_ref().unwrap()).0);
    assert_eq!(reconcile_role(Some(&leader), &leader), None);

    // Bindings: subjects added, extra kept; a different roleRef means recreate.
    let crbs = default_cluster_role_bindings();
    let discovery = crbs
        .iter()
        .find(|b| b.metadata.name.as_deref() == Some("system:discovery"))
        .unwrap()
        .clone();
    assert_eq!(
        reconcile_cluster_role_binding(None, &discovery),
        Some(BindingChange::Create(discovery.clone()))
    );
    assert_eq!(reconcile_cluster_role_binding(Some(&discovery), &discovery), None);
    let mut stored_b = discovery.clone();
    stored_b.subjects = Some(vec![subject("Group", "system:unauthenticated", None)]);
    match reconcile_cluster_role_binding(Some(&stored_b), &discovery) {
        Some(BindingChange::Update(b)) => assert_eq!(b.subjects.unwrap().len(), 2),
        other => panic!("{other:?}"),
    }
    let mut moved = discovery.clone();
    moved.role_ref.name = "cluster-admin".into();
    assert_eq!(
        reconcile_cluster_role_binding(Some(&moved), &discovery),
        Some(BindingChange::Recreate(discovery.clone()))
    );
    let (_, rb0) = default_role_bindings().remove(0);
    assert_eq!(reconcile_role_binding(Some(&rb0), &rb0), None);
}
