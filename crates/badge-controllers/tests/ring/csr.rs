//! CertificateSigningRequests: the server sets the requestor, validation refuses what
//! upstream refuses, and each of the object, `approval` and `status` changes only its part.
//! With the approving controller running, a bootstrapper's node client request is approved
//! and a stranger's is not.

use std::sync::Arc;
use std::time::Duration;

use badge_auth::{Attributes, Authorizer, Decision};
use serde_json::{Value, json};

use crate::support::{Caller, Ring, certificate_request};

const CSRS: &str = "/apis/certificates.k8s.io/v1/certificatesigningrequests";
const KUBELET_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";

fn csr(name: &str, signer: &str, request: String) -> Value {
    json!({"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
           "metadata": {"name": name},
           "spec": {"request": request, "signerName": signer,
                    "usages": ["digital signature", "client auth"]}})
}

fn node_csr(name: &str) -> Value {
    csr(
        name,
        KUBELET_SIGNER,
        certificate_request("system:node:n1", &["system:nodes"]),
    )
}

fn condition_types(object: &Value) -> Vec<String> {
    object
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .map(|l| {
            l.iter()
                .map(|c| c["type"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn with_condition(mut object: Value, kind: &str) -> Value {
    let mut conditions = object
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    conditions.push(json!({"type": kind, "status": "True", "reason": "Test", "message": "m"}));
    object["status"]["conditions"] = Value::Array(conditions);
    object
}

fn causes(reply: &crate::support::Reply) -> Vec<String> {
    reply.body["details"]["causes"]
        .as_array()
        .map(|l| {
            l.iter()
                .map(|c| {
                    format!(
                        "{}: {}",
                        c["field"].as_str().unwrap_or(""),
                        c["message"].as_str().unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn the_requestor_is_who_created_the_request() {
    let ring = Ring::new().await;
    ring.grant_cluster(
        "alice",
        json!([{"apiGroups": ["certificates.k8s.io"], "resources": ["certificatesigningrequests"],
                "verbs": ["create", "get"]}]),
    )
    .await;
    let mut body = node_csr("by-alice");
    body["spec"]["username"] = json!("system:node:n1");
    body["spec"]["uid"] = json!("forged");
    body["spec"]["groups"] = json!(["system:masters"]);
    body["spec"]["extra"] = json!({"k": ["v"]});
    body["status"] = json!({"conditions": [{"type": "Approved", "status": "True"}]});
    let reply = ring.call(&Caller::user("alice"), "POST", CSRS, Some(&body)).await;
    assert_eq!(reply.code, 201, "{}", reply.body);
    let spec = &reply.body["spec"];
    assert_eq!(spec["username"], "alice");
    assert_eq!(spec["groups"], json!(["system:authenticated"]));
    assert!(spec.get("uid").is_none(), "{spec}");
    assert!(spec.get("extra").is_none(), "{spec}");
    assert!(reply.body.get("status").is_none() || condition_types(&reply.body).is_empty());
    // An update cannot rewrite it either.
    let mut changed = reply.body.clone();
    changed["spec"]["username"] = json!("mallory");
    let reply = ring
        .call(
            &Caller::admin(),
            "PUT",
            &format!("{CSRS}/by-alice"),
            Some(&changed),
        )
        .await;
    assert_eq!(reply.code, 200, "{}", reply.body);
    assert_eq!(reply.body["spec"]["username"], "alice");
}

#[tokio::test]
async fn any_path_segment_names_a_request_as_the_kubelets_digested_names() {
    let ring = Ring::new().await;
    // `node-csr-` and the base64url of a digest: capitals and underscores.
    let name = "node-csr-LAU0t5Y3kNbiK_wn9kLeXtN1TPNGxgrSYfPe2XT3Is0";
    let reply = ring
        .call(&Caller::admin(), "POST", CSRS, Some(&node_csr(name)))
        .await;
    assert_eq!(reply.code, 201, "{}", reply.body);
    let reply = ring
        .call(&Caller::admin(), "GET", &format!("{CSRS}/{name}"), None)
        .await;
    assert_eq!(reply.code, 200, "{}", reply.body);
    // What cannot be a path segment still cannot name one.
    let reply = ring
        .call(&Caller::admin(), "POST", CSRS, Some(&node_csr("a%b")))
        .await;
    assert_eq!(reply.code, 422, "{}", reply.body);
    assert_eq!(
        causes(&reply),
        vec!["metadata.name: Invalid value: \"a%b\": may not contain '%'"]
    );
}

#[tokio::test]
async fn invalid_requests_are_refused() {
    let ring = Ring::new().await;
    let garbage = csr("garbage", KUBELET_SIGNER, "bm90IGEgcmVxdWVzdA==".into());
    let reply = ring.call(&Caller::admin(), "POST", CSRS, Some(&garbage)).await;
    assert_eq!(reply.code, 422, "{}", reply.body);
    assert_eq!(reply.body["reason"], "Invalid");
    assert_eq!(
        causes(&reply),
        vec!["spec.request: Invalid value: \"not a request\": PEM block type must be CERTIFICATE REQUEST"]
    );
    let legacy = csr(
        "legacy",
        "kubernetes.io/legacy-unknown",
        certificate_request("u", &[]),
    );
    let reply = ring.call(&Caller::admin(), "POST", CSRS, Some(&legacy)).await;
    assert_eq!(reply.code, 422, "{}", reply.body);
    assert!(
        reply.body["message"]
            .as_str()
            .unwrap()
            .contains("the legacy signerName is not allowed via this API version"),
        "{}",
        reply.body
    );
    let mut short = node_csr("short");
    short["spec"]["expirationSeconds"] = json!(60);
    let reply = ring.call(&Caller::admin(), "POST", CSRS, Some(&short)).await;
    assert_eq!(reply.code, 422, "{}", reply.body);
}

#[tokio::test]
async fn approval_changes_only_conditions_and_they_stay() {
    let ring = Ring::new().await;
    let created = ring.create(CSRS, node_csr("c1")).await;
    let approval = format!("{CSRS}/c1/approval");
    // The object itself cannot approve.
    let reply = ring
        .call(
            &Caller::admin(),
            "PUT",
            &format!("{CSRS}/c1"),
            Some(&with_condition(created.clone(), "Approved")),
        )
        .await;
    assert_eq!(reply.code, 200, "{}", reply.body);
    assert!(condition_types(&reply.body).is_empty(), "{}", reply.body);
    // Nor can status.
    let reply = ring
        .call(
            &Caller::admin(),
            "PUT",
            &format!("{CSRS}/c1/status"),
            Some(&with_condition(created.clone(), "Approved")),
        )
        .await;
    assert_eq!(reply.code, 200, "{}", reply.body);
    assert!(condition_types(&reply.body).is_empty(), "{}", reply.body);
    // Approval can, and nothing else changes with it.
    let mut approve = with_condition(reply.body.clone(), "Approved");
    approve["spec"]["signerName"] = json!("example.com/other");
    approve["status"]["certificate"] = json!("eA==");
    let reply = ring
        .call(&Caller::admin(), "PUT", &approval, Some(&approve))
        .await;
    assert_eq!(reply.code, 200, "{}", reply.body);
    assert_eq!(condition_types(&reply.body), vec!["Approved"]);
    assert_eq!(reply.body["spec"]["signerName"], KUBELET_SIGNER);
    assert!(reply.body["status"].get("certificate").is_none());
    assert!(reply.body["status"]["conditions"][0]["lastUpdateTime"].is_string());
    let approved = reply.body;
    // Denied cannot join Approved, and Approved cannot be taken back.
    let reply = ring
        .call(
            &Caller::admin(),
            "PUT",
            &approval,
            Some(&with_condition(approved.clone(), "Denied")),
        )
        .await;
    assert_eq!(reply.code, 422, "{}", reply.body);
    assert!(
        causes(&reply)
            .iter()
            .any(|c| c.contains("Approved and Denied conditions are mutually exclusive")),
        "{}",
        reply.body
    );
    let mut withdrawn = approved.clone();
    withdrawn["status"]["conditions"] = json!([]);
    let reply = ring
        .call(&Caller::admin(), "PUT", &approval, Some(&withdrawn))
        .await;
    assert_eq!(reply.code, 422, "{}", reply.body);
    assert_eq!(
        causes(&reply),
        vec!["status.conditions: Forbidden: updates may not remove a condition of type \"Approved\""]
    );
    // Status takes a Failed condition, keeps the approval, and refuses a non-certificate.
    let mut bad = approved.clone();
    bad["status"]["certificate"] = json!("eA==");
    let reply = ring
        .call(&Caller::admin(), "PUT", &format!("{CSRS}/c1/status"), Some(&bad))
        .await;
    assert_eq!(reply.code, 422, "{}", reply.body);
    assert_eq!(causes(&reply)[0].split(':').next(), Some("status.certificate"));
    let mut failed = with_condition(approved.clone(), "Failed");
    failed["status"]["conditions"].as_array_mut().unwrap().remove(0);
    let reply = ring
        .call(
            &Caller::admin(),
            "PUT",
            &format!("{CSRS}/c1/status"),
            Some(&failed),
        )
        .await;
    assert_eq!(reply.code, 200, "{}", reply.body);
    assert_eq!(condition_types(&reply.body), vec!["Approved", "Failed"]);
}

#[tokio::test]
async fn deny_through_approval() {
    let ring = Ring::new().await;
    let created = ring.create(CSRS, node_csr("d1")).await;
    let reply = ring
        .call(
            &Caller::admin(),
            "PUT",
            &format!("{CSRS}/d1/approval"),
            Some(&with_condition(created, "Denied")),
        )
        .await;
    assert_eq!(reply.code, 200, "{}", reply.body);
    let reply = ring
        .call(
            &Caller::admin(),
            "PUT",
            &format!("{CSRS}/d1/approval"),
            Some(&with_condition(reply.body, "Approved")),
        )
        .await;
    assert_eq!(reply.code, 422, "{}", reply.body);
}

/// The server's authorizer, shared with the approver as `badge server` shares it.
struct ServerAuthorizer(Arc<badge_apiserver::ApiServer>);

impl Authorizer for ServerAuthorizer {
    fn authorize(&self, attributes: &Attributes) -> Decision {
        self.0.authorizer.authorize(attributes)
    }
}

async fn wait_for(ring: &Ring, name: &str, done: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..200 {
        let reply = ring.get(&Caller::admin(), &format!("{CSRS}/{name}")).await;
        if done(&reply.body) {
            return reply.body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{name} never reached the wanted state");
}

#[tokio::test]
async fn bootstrappers_node_requests_are_approved_and_signed() {
    let ring = Ring::new().await;
    let dir = tempfile::tempdir().unwrap();
    let pki = badge_pki::Pki::load_or_create(dir.path(), &[]).unwrap();
    badge_controllers::csr::spawn(
        ring.api.registry.clone(),
        Arc::new(pki.csr_signer().unwrap()),
        badge_controllers::csr::DEFAULT_SIGNING_DURATION,
        Arc::new(ServerAuthorizer(ring.api.clone())),
        None,
    );
    let bootstrapper = Caller::Cert(
        "system:bootstrap:abcdef".into(),
        vec!["system:bootstrappers".into()],
    );
    let reply = ring
        .call(&bootstrapper, "POST", CSRS, Some(&node_csr("boot")))
        .await;
    assert_eq!(reply.code, 201, "{}", reply.body);
    let signed = wait_for(&ring, "boot", |o| o.pointer("/status/certificate").is_some()).await;
    assert_eq!(condition_types(&signed), vec!["Approved"]);
    assert_eq!(signed["status"]["conditions"][0]["reason"], "AutoApproved");
    // A node renewing its own certificate is approved through selfnodeclient.
    let reply = ring
        .call(&Caller::node("n1"), "POST", CSRS, Some(&node_csr("renew")))
        .await;
    assert_eq!(reply.code, 201, "{}", reply.body);
    let renewed = wait_for(&ring, "renew", |o| o.pointer("/status/certificate").is_some()).await;
    assert_eq!(
        renewed["status"]["conditions"][0]["message"],
        "Auto approving self kubelet client certificate after SubjectAccessReview."
    );
    // The admin's node request is approved too (system:masters may do anything); a
    // stranger's stays pending, and so does a request for another signer.
    ring.grant_cluster(
        "stranger",
        json!([{"apiGroups": ["certificates.k8s.io"], "resources": ["certificatesigningrequests"],
                "verbs": ["create"]}]),
    )
    .await;
    let reply = ring
        .call(
            &Caller::user("stranger"),
            "POST",
            CSRS,
            Some(&node_csr("strange")),
        )
        .await;
    assert_eq!(reply.code, 201, "{}", reply.body);
    let other = csr(
        "other",
        "example.com/other",
        certificate_request("system:node:n1", &["system:nodes"]),
    );
    let reply = ring.call(&bootstrapper, "POST", CSRS, Some(&other)).await;
    assert_eq!(reply.code, 201, "{}", reply.body);
    // A later request that is approved shows the controller has seen the earlier ones.
    let reply = ring
        .call(&bootstrapper, "POST", CSRS, Some(&node_csr("later")))
        .await;
    assert_eq!(reply.code, 201, "{}", reply.body);
    wait_for(&ring, "later", |o| o.pointer("/status/certificate").is_some()).await;
    let selected = ring
        .get(
            &Caller::admin(),
            &format!("{CSRS}?fieldSelector=spec.signerName%3Dexample.com%2Fother"),
        )
        .await;
    assert_eq!(selected.names(), vec!["other"], "{}", selected.body);
    for name in ["strange", "other"] {
        let reply = ring.get(&Caller::admin(), &format!("{CSRS}/{name}")).await;
        assert!(condition_types(&reply.body).is_empty(), "{name}: {}", reply.body);
    }
    // An approved request that breaks its signer's rules fails.
    let wrong = csr(
        "wrong",
        KUBELET_SIGNER,
        certificate_request("alice", &["system:nodes"]),
    );
    let created = ring.create(CSRS, wrong).await;
    let reply = ring
        .call(
            &Caller::admin(),
            "PUT",
            &format!("{CSRS}/wrong/approval"),
            Some(&with_condition(created, "Approved")),
        )
        .await;
    assert_eq!(reply.code, 200, "{}", reply.body);
    let failed = wait_for(&ring, "wrong", |o| {
        condition_types(o).contains(&"Failed".to_string())
    })
    .await;
    assert!(failed.pointer("/status/certificate").is_none());
    let condition = &failed["status"]["conditions"][1];
    assert_eq!(condition["reason"], "SignerValidationFailure");
    assert_eq!(
        condition["message"],
        "subject common name does not begin with system:node:"
    );
}

#[tokio::test]
async fn approving_takes_approve_on_the_signer_and_masters_certificates_are_refused() {
    let ring = Ring::new().await;
    let created = ring.create(CSRS, node_csr("a1")).await;
    ring.grant_cluster(
        "approver",
        json!([{"apiGroups": ["certificates.k8s.io"], "resources": ["certificatesigningrequests/approval"],
                "verbs": ["update"]}]),
    )
    .await;
    let approval = format!("{CSRS}/a1/approval");
    let approve = with_condition(created, "Approved");
    let reply = ring
        .call(&Caller::user("approver"), "PUT", &approval, Some(&approve))
        .await;
    assert_eq!(reply.code, 403, "{}", reply.body);
    assert_eq!(
        reply.body["message"],
        format!(
            "certificatesigningrequests.certificates.k8s.io \"a1\" is forbidden: user not permitted to approve requests with signerName \"{KUBELET_SIGNER}\""
        )
    );
    ring.grant_cluster(
        "approver",
        json!([{"apiGroups": ["certificates.k8s.io"], "resources": ["signers"],
                "resourceNames": ["kubernetes.io/*"], "verbs": ["approve"]}]),
    )
    .await;
    let reply = ring
        .call(&Caller::user("approver"), "PUT", &approval, Some(&approve))
        .await;
    assert_eq!(reply.code, 200, "{}", reply.body);

    let masters = csr(
        "masters",
        "kubernetes.io/kube-apiserver-client",
        certificate_request("root", &["system:masters"]),
    );
    let reply = ring.call(&Caller::admin(), "POST", CSRS, Some(&masters)).await;
    assert_eq!(reply.code, 403, "{}", reply.body);
    assert!(
        reply.body["message"].as_str().unwrap().ends_with(
            "use of kubernetes.io/kube-apiserver-client signer with system:masters group is not allowed"
        ),
        "{}",
        reply.body
    );
}
