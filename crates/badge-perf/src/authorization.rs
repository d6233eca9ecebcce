//! Section 6: RBAC decisions per second on one core, with 1,000 roles and 10,000 bindings.

use crate::raw::rate;
use crate::report::{Row, row};

pub(crate) fn measure() -> Row {
    let decisions = authorization_rate();
    row(
        "6 authorization",
        format!("{decisions:.0} decisions/s, 1,000 roles and 10,000 bindings (one core)"),
        "-".into(),
        None,
        "-",
        None,
    )
}

fn authorization_rate() -> f64 {
    use badge_auth::rbac::RbacIndex;
    use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    let index = RbacIndex::new();
    for r in 0..1000 {
        let ns = format!("ns-{}", r % 100);
        index.upsert_role(
            &ns,
            Role {
                metadata: ObjectMeta {
                    name: Some(format!("role-{r}")),
                    namespace: Some(ns.clone()),
                    ..Default::default()
                },
                rules: Some(vec![PolicyRule {
                    api_groups: Some(vec![String::new()]),
                    resources: Some(vec!["pods".into()]),
                    verbs: vec!["get".into(), "list".into()],
                    ..Default::default()
                }]),
            },
        );
    }
    for b in 0..10_000 {
        let ns = format!("ns-{}", b % 100);
        index.upsert_role_binding(
            &ns,
            RoleBinding {
                metadata: ObjectMeta {
                    name: Some(format!("binding-{b}")),
                    namespace: Some(ns.clone()),
                    ..Default::default()
                },
                role_ref: RoleRef {
                    api_group: "rbac.authorization.k8s.io".into(),
                    kind: "Role".into(),
                    name: format!("role-{}", b % 1000),
                },
                subjects: Some(vec![Subject {
                    kind: "User".into(),
                    name: format!("user-{}", b % 2000),
                    api_group: Some("rbac.authorization.k8s.io".into()),
                    ..Default::default()
                }]),
            },
        );
    }
    let mut i = 0usize;
    rate(1.0, || {
        i += 1;
        let attrs = badge_auth::Attributes {
            user: badge_auth::UserInfo {
                name: format!("user-{}", i % 2000),
                groups: vec!["system:authenticated".into()],
                ..Default::default()
            },
            verb: "get".into(),
            is_resource_request: true,
            namespace: format!("ns-{}", i % 100),
            resource: "pods".into(),
            ..Default::default()
        };
        std::hint::black_box(badge_auth::Authorizer::authorize(&index, &attrs));
    })
}
