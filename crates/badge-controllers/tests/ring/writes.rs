//! Create, update, merge patch and server-side apply (creating and changing) are one write:
//! the same admission, RBAC escalation checks, validation and warnings answer each of them.

use serde_json::{Value, json};

use crate::support::{Caller, Reply, Ring};

const ROLES: &str = "/apis/rbac.authorization.k8s.io/v1/namespaces/demo/roles";
const SERVICEACCOUNTS: &str = "/api/v1/namespaces/demo/serviceaccounts";
const PODS: &str = "/api/v1/namespaces/demo/pods";
const APPLY: &str = "application/apply-patch+yaml";

/// The ways a client writes an object.
#[derive(Clone, Copy, Debug)]
enum Verb {
    Create,
    Update,
    MergePatch,
    /// Apply of an object that does not exist yet.
    ApplyNew,
    /// Apply of an object that exists.
    Apply,
}

const VERBS: [Verb; 5] = [
    Verb::Create,
    Verb::Update,
    Verb::MergePatch,
    Verb::ApplyNew,
    Verb::Apply,
];

impl Verb {
    /// Whether the object must exist before the write.
    fn changes_existing(self) -> bool {
        matches!(self, Verb::Update | Verb::MergePatch | Verb::Apply)
    }

    /// Writes `object` (a whole object of `collection`) as `caller`. A merge patch sends the
    /// whole object as the patch, which asks for the same result.
    async fn send(self, ring: &Ring, caller: &Caller, collection: &str, object: &Value) -> Reply {
        let name = object["metadata"]["name"].as_str().unwrap();
        let path = format!("{collection}/{name}");
        match self {
            Verb::Create => ring.call(caller, "POST", collection, Some(object)).await,
            Verb::Update => ring.call(caller, "PUT", &path, Some(object)).await,
            Verb::MergePatch => ring.call(caller, "PATCH", &path, Some(object)).await,
            Verb::ApplyNew | Verb::Apply => {
                ring.call_with(
                    caller,
                    "PATCH",
                    &format!("{path}?fieldManager=test"),
                    Some(object),
                    &[("content-type", APPLY)],
                )
                .await
            }
        }
    }
}

fn role(name: &str, rules: Value) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
           "metadata": {"name": name}, "rules": rules})
}

fn causes(reply: &Reply) -> Vec<(String, String)> {
    reply.body["details"]["causes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                c["field"].as_str().unwrap_or("").to_string(),
                c["reason"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn warnings(reply: &Reply) -> Vec<String> {
    reply
        .headers
        .get_all("warning")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn every_write_refuses_an_invalid_role_with_the_same_causes() {
    let ring = Ring::new().await;
    ring.namespace("demo").await;
    for (i, verb) in VERBS.into_iter().enumerate() {
        let name = format!("r{i}");
        if verb.changes_existing() {
            ring.create(ROLES, role(&name, json!([]))).await;
        }
        let invalid = role(&name, json!([{"apiGroups": [""], "resources": ["pods"]}]));
        let reply = verb.send(&ring, &Caller::admin(), ROLES, &invalid).await;
        assert_eq!(reply.code, 422, "{verb:?}: {}", reply.body);
        assert_eq!(reply.body["reason"], "Invalid", "{verb:?}");
        assert_eq!(
            causes(&reply),
            vec![("rules[0].verbs".to_string(), "FieldValueRequired".to_string())],
            "{verb:?}"
        );
    }
}

#[tokio::test]
async fn every_write_refuses_a_role_granting_more_than_its_writer_holds() {
    let ring = Ring::new().await;
    ring.namespace("demo").await;
    ring.grant(
        "demo",
        "eve",
        json!([{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles"],
                "verbs": ["create", "update", "patch", "get"]}]),
    )
    .await;
    let eve = Caller::user("eve");
    for (i, verb) in VERBS.into_iter().enumerate() {
        let name = format!("r{i}");
        if verb.changes_existing() {
            ring.create(ROLES, role(&name, json!([]))).await;
        }
        let escalating = role(
            &name,
            json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]),
        );
        let reply = verb.send(&ring, &eve, ROLES, &escalating).await;
        assert_eq!(reply.code, 403, "{verb:?}: {}", reply.body);
        assert!(
            reply.body["message"]
                .as_str()
                .unwrap()
                .contains("attempting to grant RBAC permissions not currently held"),
            "{verb:?}: {}",
            reply.body
        );
        // What eve holds she may grant, through every verb.
        let held = role(
            &name,
            json!([{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles"], "verbs": ["get"]}]),
        );
        let reply = verb.send(&ring, &eve, ROLES, &held).await;
        assert!(reply.code == 200 || reply.code == 201, "{verb:?}: {}", reply.body);
    }
}

#[tokio::test]
async fn every_write_warns_when_a_service_account_starts_enforcing_mountable_secrets() {
    let ring = Ring::new().await;
    ring.namespace("demo").await;
    for (i, verb) in VERBS.into_iter().enumerate() {
        let name = format!("sa{i}");
        if verb.changes_existing() {
            ring.service_account("demo", &name).await;
        }
        let enforcing = json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": name,
                         "annotations": {"kubernetes.io/enforce-mountable-secrets": "true"}}});
        let reply = verb
            .send(&ring, &Caller::admin(), SERVICEACCOUNTS, &enforcing)
            .await;
        assert!(reply.code == 200 || reply.code == 201, "{verb:?}: {}", reply.body);
        let given = warnings(&reply);
        assert_eq!(given.len(), 1, "{verb:?}: {given:?}");
        assert!(
            given[0].contains("kubernetes.io/enforce-mountable-secrets"),
            "{verb:?}: {given:?}"
        );
        // Already enforcing: nothing new to warn about.
        if verb.changes_existing() {
            let reply = verb
                .send(&ring, &Caller::admin(), SERVICEACCOUNTS, &enforcing)
                .await;
            assert_eq!(reply.code, 200, "{verb:?}: {}", reply.body);
            assert!(warnings(&reply).is_empty(), "{verb:?}");
        }
    }
}

#[tokio::test]
async fn applying_a_new_pod_admits_it_as_creating_it_does() {
    let ring = Ring::new().await;
    ring.namespace("demo").await;
    ring.service_account("demo", "default").await;
    let pod = |name: &str| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
               "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
    };
    for (name, verb) in [("created", Verb::Create), ("applied", Verb::ApplyNew)] {
        let reply = verb.send(&ring, &Caller::admin(), PODS, &pod(name)).await;
        assert_eq!(reply.code, 201, "{verb:?}: {}", reply.body);
        assert_eq!(reply.body["spec"]["serviceAccountName"], "default", "{verb:?}");
        let volumes = reply.body["spec"]["volumes"].as_array().unwrap();
        assert!(
            volumes[0]["name"]
                .as_str()
                .unwrap()
                .starts_with("kube-api-access-"),
            "{verb:?}: {volumes:?}"
        );
    }
    // Without the ServiceAccount, admission refuses both alike.
    for (name, verb) in [("lost", Verb::Create), ("lost-applied", Verb::ApplyNew)] {
        let mut orphan = pod(name);
        orphan["spec"]["serviceAccountName"] = json!("missing");
        let reply = verb.send(&ring, &Caller::admin(), PODS, &orphan).await;
        assert_eq!(reply.code, 403, "{verb:?}: {}", reply.body);
    }
}

#[tokio::test]
async fn a_stale_resource_version_conflicts_through_every_change() {
    let ring = Ring::new().await;
    ring.namespace("demo").await;
    for (i, verb) in VERBS.into_iter().filter(|v| v.changes_existing()).enumerate() {
        let name = format!("sa{i}");
        let created = ring.service_account("demo", &name).await;
        // Moves the object past the version the client read.
        let moved = json!({"metadata": {"labels": {"moved": "yes"}}});
        let reply = ring
            .call(
                &Caller::admin(),
                "PATCH",
                &format!("{SERVICEACCOUNTS}/{name}"),
                Some(&moved),
            )
            .await;
        assert_eq!(reply.code, 200, "{}", reply.body);
        let mut stale = json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": name, "labels": {"stale": "yes"}}});
        stale["metadata"]["resourceVersion"] = created["metadata"]["resourceVersion"].clone();
        let reply = verb.send(&ring, &Caller::admin(), SERVICEACCOUNTS, &stale).await;
        assert_eq!(reply.code, 409, "{verb:?}: {}", reply.body);
        assert_eq!(reply.body["reason"], "Conflict", "{verb:?}");
    }
}
