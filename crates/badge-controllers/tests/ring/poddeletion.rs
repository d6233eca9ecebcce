//! Graceful pod deletion as kube-apiserver does it: a pod on a node is marked, shown
//! Terminating, keeps its tokens during the grace, and goes when its node confirms with a
//! grace of zero; and write validation of bootstrap token Secrets.

use serde_json::{Value, json};

use crate::support::{Caller, Ring};

const PODS: &str = "/api/v1/namespaces/default/pods";

async fn pod(ring: &Ring, name: &str, spec: Value) -> Value {
    let mut spec = spec;
    spec["serviceAccountName"] = json!("app");
    spec["containers"] = json!([{"name": "c", "image": "i"}]);
    ring.create(
        PODS,
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}),
    )
    .await
}

fn delete_options(grace: Option<i64>, uid: Option<&str>) -> Value {
    let mut options = json!({"apiVersion": "v1", "kind": "DeleteOptions"});
    if let Some(grace) = grace {
        options["gracePeriodSeconds"] = json!(grace);
    }
    if let Some(uid) = uid {
        options["preconditions"] = json!({"uid": uid});
    }
    options
}

async fn delete(ring: &Ring, caller: &Caller, name: &str, options: Value) -> crate::support::Reply {
    ring.call(caller, "DELETE", &format!("{PODS}/{name}"), Some(&options))
        .await
}

fn deletion(object: &Value) -> (jiff::Timestamp, i64) {
    (
        object["metadata"]["deletionTimestamp"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap(),
        object["metadata"]["deletionGracePeriodSeconds"].as_i64().unwrap(),
    )
}

#[tokio::test]
async fn a_pod_on_a_node_terminates_gracefully_until_its_node_confirms() {
    let ring = Ring::new().await;
    ring.service_account("default", "app").await;
    let created = pod(&ring, "web", json!({"nodeName": "n1"})).await;
    let uid = created["metadata"]["uid"].as_str().unwrap().to_string();
    let token = ring
        .token(
            "default",
            "app",
            json!({"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "web", "uid": uid}}),
        )
        .await;
    let rv = created["metadata"]["resourceVersion"].as_str().unwrap();
    let mut watch = ring
        .watch(
            &Caller::admin(),
            &format!("{PODS}?watch=true&resourceVersion={rv}"),
        )
        .await
        .unwrap();

    // The default grace is the pod's terminationGracePeriodSeconds (30).
    let before = badge_api::clock::now();
    let reply = delete(&ring, &Caller::admin(), "web", json!({})).await;
    assert_eq!(reply.code, 200, "{}", reply.body);
    assert_eq!(reply.body["kind"], "Pod");
    let (marked, grace) = deletion(&reply.body);
    assert_eq!(grace, 30);
    let lead = marked.duration_since(before).as_secs();
    assert!(
        (29..=31).contains(&lead),
        "deletionTimestamp is now + grace: {lead}"
    );
    let event = watch.next().await;
    assert_eq!(event["type"], "MODIFIED");
    assert_eq!(event["object"]["metadata"]["deletionGracePeriodSeconds"], 30);

    // Still there, shown Terminating, and its token still works.
    let table = ring
        .call_with(
            &Caller::admin(),
            "GET",
            &format!("{PODS}/web"),
            None,
            &[("accept", "application/json;as=Table;v=v1;g=meta.k8s.io")],
        )
        .await;
    assert_eq!(table.code, 200, "{}", table.body);
    assert!(
        table.body["rows"][0]["cells"].to_string().contains("Terminating"),
        "{}",
        table.body
    );
    assert_eq!(
        ring.get(&Caller::bearer(&token), "/api").await.code,
        200,
        "the pod's token is valid during the grace"
    );

    // A longer grace does not extend it; a shorter one shortens it from the first request.
    let reply = delete(&ring, &Caller::admin(), "web", delete_options(Some(60), None)).await;
    assert_eq!(reply.code, 200);
    assert_eq!(deletion(&reply.body), (marked, 30));
    let reply = delete(&ring, &Caller::admin(), "web", delete_options(Some(10), None)).await;
    assert_eq!(reply.code, 200);
    assert_eq!(
        deletion(&reply.body),
        (marked - jiff::SignedDuration::from_secs(20), 10)
    );
    let event = watch.next().await;
    assert_eq!(event["type"], "MODIFIED");
    assert_eq!(event["object"]["metadata"]["deletionGracePeriodSeconds"], 10);

    // Another node may not confirm it; its own node may, guarded by the uid.
    let reply = delete(
        &ring,
        &Caller::node("n2"),
        "web",
        delete_options(Some(0), Some(&uid)),
    )
    .await;
    assert_eq!(reply.code, 403, "{}", reply.body);
    assert_eq!(
        reply.body["message"],
        "pods \"web\" is forbidden: node \"n2\" can only delete pods with spec.nodeName set to itself"
    );
    let reply = delete(
        &ring,
        &Caller::node("n1"),
        "web",
        delete_options(Some(0), Some("other")),
    )
    .await;
    assert_eq!(reply.code, 409, "{}", reply.body);
    let reply = delete(
        &ring,
        &Caller::node("n1"),
        "web",
        delete_options(Some(0), Some(&uid)),
    )
    .await;
    assert_eq!(reply.code, 200, "{}", reply.body);
    assert_eq!(reply.body["metadata"]["deletionGracePeriodSeconds"], 0);
    let events = watch.until(|e| e["type"] == "DELETED").await;
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["MODIFIED", "DELETED"]);

    assert_eq!(ring.get(&Caller::admin(), &format!("{PODS}/web")).await.code, 404);
    assert_eq!(
        ring.get(&Caller::bearer(&token), "/api").await.code,
        401,
        "the pod's token dies with the pod"
    );
}

#[tokio::test]
async fn pods_nothing_runs_are_deleted_at_once_after_a_mark() {
    let ring = Ring::new().await;
    ring.service_account("default", "app").await;
    pod(&ring, "unscheduled", json!({})).await;
    pod(&ring, "forced", json!({"nodeName": "n1"})).await;
    let done = pod(&ring, "done", json!({"nodeName": "n1"})).await;
    let mut finished = done.clone();
    finished["status"] = json!({"phase": "Succeeded"});
    let reply = ring
        .call(
            &Caller::admin(),
            "PUT",
            &format!("{PODS}/done/status"),
            Some(&finished),
        )
        .await;
    assert_eq!(reply.code, 200, "{}", reply.body);
    let rv = reply.body["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let mut watch = ring
        .watch(
            &Caller::admin(),
            &format!("{PODS}?watch=true&resourceVersion={rv}"),
        )
        .await
        .unwrap();
    for (name, options) in [
        ("unscheduled", json!({})),
        ("forced", delete_options(Some(0), None)),
        ("done", json!({})),
    ] {
        let reply = delete(&ring, &Caller::admin(), name, options).await;
        assert_eq!(reply.code, 200, "{name}: {}", reply.body);
        assert_eq!(reply.body["metadata"]["deletionGracePeriodSeconds"], 0, "{name}");
        assert_eq!(
            ring.get(&Caller::admin(), &format!("{PODS}/{name}")).await.code,
            404,
            "{name}"
        );
        // As upstream: the mark, then the deletion.
        let events = watch
            .until(|e| e["type"] == "DELETED" && e["object"]["metadata"]["name"] == name)
            .await;
        let kinds: Vec<&str> = events
            .iter()
            .filter(|e| e["object"]["metadata"]["name"] == name)
            .map(|e| e["type"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["MODIFIED", "DELETED"], "{name}");
    }
}

#[tokio::test]
async fn a_terminating_pod_with_a_finalizer_waits_for_both() {
    let ring = Ring::new().await;
    ring.service_account("default", "app").await;
    ring.create(
        PODS,
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "held", "finalizers": ["example.com/hold"]},
               "spec": {"nodeName": "n1", "serviceAccountName": "app", "containers": [{"name": "c", "image": "i"}]}}),
    )
    .await;
    let reply = delete(&ring, &Caller::admin(), "held", json!({})).await;
    assert_eq!(reply.code, 200);
    // Dropping the finalizer during the grace does not delete the pod.
    let mut current = ring.get(&Caller::admin(), &format!("{PODS}/held")).await.body;
    current["metadata"]["finalizers"] = json!([]);
    let reply = ring
        .call(&Caller::admin(), "PUT", &format!("{PODS}/held"), Some(&current))
        .await;
    assert_eq!(reply.code, 200, "{}", reply.body);
    assert_eq!(
        ring.get(&Caller::admin(), &format!("{PODS}/held")).await.code,
        200
    );
    let reply = delete(&ring, &Caller::admin(), "held", delete_options(Some(0), None)).await;
    assert_eq!(reply.code, 200);
    assert_eq!(
        ring.get(&Caller::admin(), &format!("{PODS}/held")).await.code,
        404
    );
}

#[tokio::test]
async fn malformed_bootstrap_token_secrets_are_refused_naming_the_field() {
    let ring = Ring::new().await;
    let secrets = "/api/v1/namespaces/kube-system/secrets";
    let secret = |name: &str, data: Value| {
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
               "type": "bootstrap.kubernetes.io/token", "stringData": data})
    };
    let good = json!({"token-id": "abcdef", "token-secret": "0123456789abcdef",
                      "usage-bootstrap-authentication": "true",
                      "auth-extra-groups": "system:bootstrappers:workers"});
    for (key, value, field) in [
        ("token-id", "ABCDEF", "data[token-id]"),
        ("token-id", "bcdefa", "data[token-id]"),
        ("token-secret", "tooshort", "data[token-secret]"),
        ("expiration", "next tuesday", "data[expiration]"),
        ("usage-bootstrap-signing", "yes", "data[usage-bootstrap-signing]"),
        ("auth-extra-groups", "system:masters", "data[auth-extra-groups]"),
    ] {
        let mut data = good.clone();
        data[key] = json!(value);
        let reply = ring
            .call(
                &Caller::admin(),
                "POST",
                secrets,
                Some(&secret("bootstrap-token-abcdef", data)),
            )
            .await;
        assert_eq!(reply.code, 422, "{key}: {}", reply.body);
        assert_eq!(reply.body["kind"], "Status");
        assert_eq!(reply.body["reason"], "Invalid");
        assert_eq!(
            reply.body["details"]["causes"][0]["field"], field,
            "{}",
            reply.body
        );
        assert!(
            reply.body["message"]
                .as_str()
                .unwrap()
                .starts_with("Secret \"bootstrap-token-abcdef\" is invalid: data["),
            "{}",
            reply.body
        );
        assert!(
            !reply.body.to_string().contains("tooshort"),
            "the secret is never echoed"
        );
    }
    let reply = ring
        .call(
            &Caller::admin(),
            "POST",
            secrets,
            Some(&secret("bootstrap-token-x", good.clone())),
        )
        .await;
    assert_eq!(reply.body["details"]["causes"][0]["field"], "metadata.name");
    let created = ring.create(secrets, secret("bootstrap-token-abcdef", good)).await;
    // Updates are checked too.
    let mut changed = created.clone();
    changed["data"]["usage-bootstrap-authentication"] = json!("bWF5YmU=");
    let reply = ring
        .call(
            &Caller::admin(),
            "PUT",
            &format!("{secrets}/bootstrap-token-abcdef"),
            Some(&changed),
        )
        .await;
    assert_eq!(reply.code, 422, "{}", reply.body);
    assert_eq!(
        reply.body["details"]["causes"][0]["field"],
        "data[usage-bootstrap-authentication]"
    );
}
