//! RBAC decisions per second over 1,000 roles and 10,000 bindings: allowed, denied with
//! bindings to look at, and denied with none. Run with `cargo bench -p badge-auth`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use badge_auth::authorizer::{Attributes, Authorizer, Decision};
use badge_auth::rbac::RbacIndex;
use badge_auth::user::UserInfo;
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

const NAMESPACES: usize = 100;
const CLUSTER_ROLES: usize = 500;
const ROLES_PER_NAMESPACE: usize = 5; // 500 Roles
const CLUSTER_BINDINGS: usize = 1_000;
const BINDINGS_PER_NAMESPACE: usize = 90; // 9,000 RoleBindings
const USERS: usize = 5_000;
const GROUPS: usize = 200;

const RESOURCES: &[&str] = &[
    "pods",
    "configmaps",
    "secrets",
    "serviceaccounts",
    "events",
    "leases",
];

fn meta(name: String, namespace: Option<String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace,
        ..Default::default()
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Five rules of a few verbs on one resource each, never `delete`.
fn rules(seed: usize) -> Vec<PolicyRule> {
    (0..5)
        .map(|i| PolicyRule {
            api_groups: Some(strings(&[""])),
            resources: Some(vec![RESOURCES[(seed + i) % RESOURCES.len()].to_string()]),
            verbs: strings(&["get", "list", "watch"]),
            ..Default::default()
        })
        .collect()
}

fn subject(i: usize, namespace: &str) -> Subject {
    match i % 3 {
        0 => Subject {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "User".into(),
            name: format!("user-{}", i % USERS),
            namespace: None,
        },
        1 => Subject {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Group".into(),
            name: format!("group-{}", i % GROUPS),
            namespace: None,
        },
        _ => Subject {
            api_group: None,
            kind: "ServiceAccount".into(),
            name: format!("sa-{}", i % 50),
            namespace: Some(if namespace.is_empty() {
                "ns-0".into()
            } else {
                namespace.into()
            }),
        },
    }
}

fn role_ref(kind: &str, name: String) -> RoleRef {
    RoleRef {
        api_group: "rbac.authorization.k8s.io".into(),
        kind: kind.into(),
        name,
    }
}

fn build(index: &RbacIndex) {
    for i in 0..CLUSTER_ROLES {
        index.upsert_cluster_role(ClusterRole {
            metadata: meta(format!("cr-{i}"), None),
            rules: Some(rules(i)),
            aggregation_rule: None,
        });
    }
    for n in 0..NAMESPACES {
        let ns = format!("ns-{n}");
        for i in 0..ROLES_PER_NAMESPACE {
            index.upsert_role(
                &ns,
                Role {
                    metadata: meta(format!("r-{i}"), Some(ns.clone())),
                    rules: Some(rules(n + i)),
                },
            );
        }
        for i in 0..BINDINGS_PER_NAMESPACE {
            let k = n * BINDINGS_PER_NAMESPACE + i;
            let role_ref = if i % 2 == 0 {
                role_ref("Role", format!("r-{}", i % ROLES_PER_NAMESPACE))
            } else {
                role_ref("ClusterRole", format!("cr-{}", k % CLUSTER_ROLES))
            };
            index.upsert_role_binding(
                &ns,
                RoleBinding {
                    metadata: meta(format!("rb-{i}"), Some(ns.clone())),
                    role_ref,
                    subjects: Some(vec![subject(k, &ns), subject(k + 7, &ns)]),
                },
            );
        }
    }
    for i in 0..CLUSTER_BINDINGS {
        index.upsert_cluster_role_binding(ClusterRoleBinding {
            metadata: meta(format!("crb-{i}"), None),
            role_ref: role_ref("ClusterRole", format!("cr-{}", i % CLUSTER_ROLES)),
            subjects: Some(vec![subject(i * 5, ""), subject(i * 5 + 1, "")]),
        });
    }
}

fn request(user: UserInfo, verb: &str, resource: &str, namespace: &str) -> Attributes {
    Attributes {
        user,
        verb: verb.into(),
        is_resource_request: true,
        namespace: namespace.into(),
        api_version: "v1".into(),
        resource: resource.into(),
        name: "x".into(),
        ..Default::default()
    }
}

/// Runs the requests round-robin for about `budget`; returns decisions per second.
fn rate(index: &RbacIndex, requests: &[Attributes], want_allow: bool, budget: Duration) -> f64 {
    for r in requests {
        assert_eq!(
            index.authorize(r) == Decision::Allow,
            want_allow,
            "{:?}",
            r.user.name
        );
    }
    let start = Instant::now();
    let mut done = 0u64;
    while start.elapsed() < budget {
        for r in requests {
            black_box(index.authorize(black_box(r)));
        }
        done += requests.len() as u64;
    }
    done as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let index = RbacIndex::new();
    let started = Instant::now();
    build(&index);
    let counts = index.snapshot().counts();
    println!(
        "built {} roles, {} cluster roles, {} role bindings, {} cluster role bindings in {:?}",
        counts.roles,
        counts.cluster_roles,
        counts.role_bindings,
        counts.cluster_role_bindings,
        started.elapsed()
    );

    // Callers: a user name, groups, and ServiceAccounts with their groups, as authentication
    // produces them.
    let users: Vec<(UserInfo, String)> = (0..200)
        .map(|i| {
            let ns = format!("ns-{}", i % NAMESPACES);
            let user = if i % 2 == 0 {
                UserInfo {
                    name: format!("user-{}", (i * 27) % USERS),
                    groups: vec![format!("group-{}", i % GROUPS), "system:authenticated".into()],
                    ..Default::default()
                }
            } else {
                UserInfo {
                    name: format!("system:serviceaccount:{ns}:sa-{}", i % 50),
                    groups: vec![
                        "system:serviceaccounts".into(),
                        format!("system:serviceaccounts:{ns}"),
                        "system:authenticated".into(),
                    ],
                    ..Default::default()
                }
            };
            (user, ns)
        })
        .collect();

    // Allowed: some resource each caller can read in its namespace.
    let snapshot = index.snapshot();
    let mut allowed = Vec::new();
    for (user, ns) in &users {
        let (rules, _) = snapshot.rules_for(user, ns);
        if let Some(resource) = rules
            .first()
            .and_then(|r| r.resources.as_ref())
            .and_then(|r| r.first())
        {
            allowed.push(request(user.clone(), "get", resource, ns));
        }
    }
    // Denied after visiting the caller's bindings: no role grants delete.
    let denied: Vec<Attributes> = users
        .iter()
        .map(|(u, ns)| request(u.clone(), "delete", "pods", ns))
        .collect();
    // Denied with no binding at all.
    let strangers: Vec<Attributes> = (0..200)
        .map(|i| {
            request(
                UserInfo {
                    name: format!("stranger-{i}"),
                    groups: vec!["system:authenticated".into()],
                    ..Default::default()
                },
                "get",
                "pods",
                "ns-1",
            )
        })
        .collect();
    let visited: usize = users.iter().map(|(u, ns)| index.rules_for(u, ns).0.len()).sum();
    println!(
        "{} callers, {} allowed requests; on average {:.1} rules visited per caller",
        users.len(),
        allowed.len(),
        visited as f64 / users.len() as f64
    );

    let budget = Duration::from_millis(700);
    println!(
        "allowed:              {:>12.0} decisions/s",
        rate(&index, &allowed, true, budget)
    );
    println!(
        "denied (bindings):    {:>12.0} decisions/s",
        rate(&index, &denied, false, budget)
    );
    println!(
        "denied (no bindings): {:>12.0} decisions/s",
        rate(&index, &strangers, false, budget)
    );

    // Writes: in place when no reader holds the snapshot; otherwise each copies only the
    // part it touches (one namespace, or the cluster bindings).
    let writes = |what: &str, hold: bool, write: &dyn Fn(usize)| {
        let started = Instant::now();
        for i in 0..20 {
            let held = hold.then(|| index.snapshot());
            write(i);
            drop(held);
        }
        println!("{what:<58} {:>10.1?} per write", started.elapsed() / 20);
    };
    writes("RoleBinding write", false, &|i| {
        index.remove_role_binding("ns-3", &format!("rb-{i}"))
    });
    writes("RoleBinding write, a reader holding the snapshot", true, &|i| {
        index.remove_role_binding("ns-4", &format!("rb-{i}"))
    });
    writes("ClusterRoleBinding write", false, &|i| {
        index.remove_cluster_role_binding(&format!("crb-{i}"))
    });
    writes(
        "ClusterRoleBinding write, a reader holding the snapshot",
        true,
        &|i| index.remove_cluster_role_binding(&format!("crb-{}", 100 + i)),
    );
}
