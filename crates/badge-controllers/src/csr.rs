//! CertificateSigningRequest controllers, as kube-controller-manager's:
//!
//! - `csrapproving` (`pkg/controller/certificates/approver/sarapprove.go`): a node client
//!   request is approved when its requestor may `create certificatesigningrequests/nodeclient`,
//!   or, renewing its own node's certificate, `.../selfnodeclient`, as a SubjectAccessReview
//!   for the requestor would answer.
//! - `csrsigning` (`pkg/controller/certificates/signer`): an approved request for
//!   `kubernetes.io/kube-apiserver-client-kubelet` or `kubernetes.io/kube-apiserver-client`
//!   that follows its signer's rules is signed with the cluster CA; one that breaks them
//!   gets a Failed condition.

use std::sync::Arc;
use std::time::Duration;

use badge_api::{Status, meta, resources};
use badge_auth::{Attributes, Authorizer, Decision, UserInfo};
use badge_pki::csr::CsrSigner;
use badge_registry::csr::{
    self as rules, APPROVED, DENIED, FAILED, KUBE_APISERVER_CLIENT, KUBE_APISERVER_CLIENT_KUBELET,
    ParsedRequest,
};
use badge_registry::{Registry, WriteOptions};
use base64::Engine;
use serde_json::{Value, json};

use crate::leader;
use crate::runtime::{Action, Controller};

const PREFIX: &str = "/registry/certificatesigningrequests/";

/// kube-controller-manager's `--cluster-signing-duration` default: one year.
pub const DEFAULT_SIGNING_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Starts the approving and signing controllers.
pub fn spawn(
    registry: Arc<Registry>,
    signer: Arc<CsrSigner>,
    signing_duration: Duration,
    authorizer: Arc<dyn Authorizer>,
    leading: Option<leader::Leading>,
) {
    let keys = |event: &badge_registry::CacheEvent| {
        event
            .key
            .strip_prefix(PREFIX)
            .map(|name| vec![name.to_string()])
            .unwrap_or_default()
    };
    let approving =
        Controller::new("csrapproving", registry.clone(), keys).with_leader_election(leading.clone());
    let reg = registry.clone();
    approving.spawn(move |name| {
        let registry = reg.clone();
        let authorizer = authorizer.clone();
        async move { approve(&registry, authorizer.as_ref(), &name).await }
    });
    let signing = Controller::new("csrsigning", registry.clone(), keys).with_leader_election(leading);
    signing.spawn(move |name| {
        let registry = registry.clone();
        let signer = signer.clone();
        async move { sign(&registry, &signer, signing_duration, &name).await }
    });
}

/// `ValidateKubeletClientCSR`: what makes a request a node's client certificate request.
pub fn kubelet_client_errors(request: &ParsedRequest, usages: &[&str]) -> Result<(), String> {
    if request.organizations != ["system:nodes"] {
        return Err("subject organization is not system:nodes".into());
    }
    if request.san_count > 0 {
        return Err("subjectAltNames are not allowed".into());
    }
    if !request.common_name.starts_with("system:node:") {
        return Err("subject common name does not begin with system:node:".into());
    }
    let mut wanted: Vec<&str> = usages.to_vec();
    wanted.sort_unstable();
    wanted.dedup();
    let with_rsa = ["client auth", "digital signature", "key encipherment"];
    let without_rsa = ["client auth", "digital signature"];
    if wanted != with_rsa && wanted != without_rsa {
        return Err(format!("usages did not match {with_rsa:?}"));
    }
    Ok(())
}

/// `validAPIServerClientUsages`: client auth, with at most digital signature and key
/// encipherment besides.
pub fn apiserver_client_errors(usages: &[&str]) -> Result<(), String> {
    let mut has_client_auth = false;
    for usage in usages {
        match *usage {
            "client auth" => has_client_auth = true,
            "digital signature" | "key encipherment" => {}
            other => return Err(format!("invalid usage for client certificate: {other}")),
        }
    }
    if !has_client_auth {
        return Err("missing required usage for client certificate: client auth".into());
    }
    Ok(())
}

/// The rules of the signers badge runs; None for a signer it does not run.
pub fn signer_rules(signer: &str, request: &ParsedRequest, usages: &[&str]) -> Option<Result<(), String>> {
    match signer {
        KUBE_APISERVER_CLIENT_KUBELET => Some(kubelet_client_errors(request, usages)),
        KUBE_APISERVER_CLIENT => Some(apiserver_client_errors(usages)),
        _ => None,
    }
}

fn requestor(csr: &Value) -> UserInfo {
    let spec = csr.get("spec").cloned().unwrap_or(Value::Null);
    let text = |k: &str| spec.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    UserInfo {
        name: text("username"),
        uid: text("uid"),
        groups: spec
            .get("groups")
            .and_then(|g| serde_json::from_value(g.clone()).ok())
            .unwrap_or_default(),
        extra: spec
            .get("extra")
            .and_then(|e| serde_json::from_value(e.clone()).ok())
            .unwrap_or_default(),
    }
}

/// A SubjectAccessReview for the requestor: `create certificatesigningrequests/<subresource>`.
fn may_create(authorizer: &dyn Authorizer, user: &UserInfo, subresource: &str) -> bool {
    let attributes = Attributes {
        user: user.clone(),
        verb: "create".into(),
        is_resource_request: true,
        api_group: "certificates.k8s.io".into(),
        api_version: "*".into(),
        resource: "certificatesigningrequests".into(),
        subresource: subresource.into(),
        ..Default::default()
    };
    matches!(authorizer.authorize(&attributes), Decision::Allow)
}

async fn approve(registry: &Registry, authorizer: &dyn Authorizer, name: &str) -> Result<Action, Status> {
    let resource = resources::CERTIFICATESIGNINGREQUESTS;
    let Some(csr) = registry.get_cached(resource, "", name) else {
        return Ok(Action::Done);
    };
    let signed = !csr
        .pointer("/status/certificate")
        .and_then(Value::as_str)
        .unwrap_or("")
        .is_empty();
    if signed || rules::has_condition(&csr, APPROVED) || rules::has_condition(&csr, DENIED) {
        return Ok(Action::Done);
    }
    if rules::signer_name(&csr) != KUBE_APISERVER_CLIENT_KUBELET {
        return Ok(Action::Done);
    }
    let Ok(request) = rules::parse_request(&rules::request_bytes(&csr)) else {
        return Ok(Action::Done);
    };
    if kubelet_client_errors(&request, &rules::usages(&csr)).is_err() {
        return Ok(Action::Done);
    }
    let user = requestor(&csr);
    let renewing_own = user.name == request.common_name;
    let message = if renewing_own && may_create(authorizer, &user, "selfnodeclient") {
        "Auto approving self kubelet client certificate after SubjectAccessReview."
    } else if may_create(authorizer, &user, "nodeclient") {
        "Auto approving kubelet client certificate after SubjectAccessReview."
    } else {
        tracing::debug!(
            csr = name,
            "node client request not approved by subject access review"
        );
        return Ok(Action::Done);
    };
    let condition = json!({
        "type": APPROVED,
        "status": "True",
        "reason": "AutoApproved",
        "message": message,
    });
    update_unless_replaced(registry, &csr, "approval", |current| {
        let mut updated = current.clone();
        if !rules::has_condition(current, APPROVED) && !rules::has_condition(current, DENIED) {
            push_condition(&mut updated, condition.clone());
        }
        updated
    })
    .await
}

/// Writes `change` of the request through `subresource`, unless it was deleted or replaced
/// (another uid) since it was read: then there is nothing left to do.
async fn update_unless_replaced(
    registry: &Registry,
    csr: &Value,
    subresource: &str,
    mut change: impl FnMut(&Value) -> Value + Send,
) -> Result<Action, Status> {
    let resource = resources::CERTIFICATESIGNINGREQUESTS;
    let name = meta::name(csr);
    let uid = meta::uid(csr);
    let result = registry
        .update(
            resource,
            "",
            name,
            subresource,
            &WriteOptions::default(),
            |current| {
                if meta::uid(current) != uid {
                    return Err(Status::conflict(
                        resource.group_resource(),
                        name,
                        "the request was replaced",
                    ));
                }
                Ok(change(current))
            },
        )
        .await;
    match result {
        Ok(_) => Ok(Action::Done),
        Err(s) if s.is_not_found() || s.code == 409 => Ok(Action::Done),
        Err(s) => Err(s),
    }
}

/// Appends a condition to `status.conditions`.
fn push_condition(object: &mut Value, condition: Value) {
    if !object.get("status").is_some_and(Value::is_object) {
        object["status"] = json!({});
    }
    match object["status"]["conditions"].as_array_mut() {
        Some(conditions) => conditions.push(condition),
        None => object["status"]["conditions"] = json!([condition]),
    }
}

async fn sign(registry: &Registry, signer: &CsrSigner, max: Duration, name: &str) -> Result<Action, Status> {
    let resource = resources::CERTIFICATESIGNINGREQUESTS;
    let Some(csr) = registry.get_cached(resource, "", name) else {
        return Ok(Action::Done);
    };
    let pending = rules::has_condition(&csr, APPROVED)
        && !rules::has_condition(&csr, FAILED)
        && csr
            .pointer("/status/certificate")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty();
    if !pending {
        return Ok(Action::Done);
    }
    let usages = rules::usages(&csr);
    let request = rules::parse_request(&rules::request_bytes(&csr));
    let verdict = match &request {
        Ok(request) => match signer_rules(rules::signer_name(&csr), request, &usages) {
            Some(verdict) => verdict,
            None => return Ok(Action::Done),
        },
        Err(e) => Err(format!("unable to parse csr: {e}")),
    };
    let outcome = match (verdict, request) {
        (Ok(()), Ok(request)) => {
            let requested = csr
                .pointer("/spec/expirationSeconds")
                .and_then(Value::as_u64)
                .map(Duration::from_secs);
            let validity = requested.map_or(max, |r| r.min(max));
            match signer.sign(&request.der, &request.subject_der, &usages, validity) {
                Ok(pem) => Ok(pem),
                Err(e) => Err(format!("error auto signing csr: {e}")),
            }
        }
        (Err(message), _) | (Ok(()), Err(message)) => Err(message),
    };
    update_unless_replaced(registry, &csr, "status", |current| {
        let mut updated = current.clone();
        match &outcome {
            Ok(pem) => {
                if !updated.get("status").is_some_and(Value::is_object) {
                    updated["status"] = json!({});
                }
                updated["status"]["certificate"] =
                    json!(base64::engine::general_purpose::STANDARD.encode(pem.as_bytes()));
            }
            Err(message) => push_condition(
                &mut updated,
                json!({
                    "type": FAILED,
                    "status": "True",
                    "reason": "SignerValidationFailure",
                    "message": message,
                }),
            ),
        }
        updated
    })
    .await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn request(cn: &str, orgs: &[&str], sans: usize) -> ParsedRequest {
        ParsedRequest {
            common_name: cn.into(),
            organizations: orgs.iter().map(|o| o.to_string()).collect(),
            san_count: sans,
            subject_der: Vec::new(),
            der: Vec::new(),
        }
    }

    const NODE_USAGES: &[&str] = &["digital signature", "client auth"];

    #[test]
    fn kubelet_client_rules() {
        let node = request("system:node:n1", &["system:nodes"], 0);
        assert_eq!(kubelet_client_errors(&node, NODE_USAGES), Ok(()));
        assert_eq!(
            kubelet_client_errors(&node, &["key encipherment", "digital signature", "client auth"]),
            Ok(())
        );
        let errors = |r: &ParsedRequest, usages: &[&str]| kubelet_client_errors(r, usages).unwrap_err();
        assert_eq!(
            errors(&request("system:node:n1", &["system:nodes", "x"], 0), NODE_USAGES),
            "subject organization is not system:nodes"
        );
        assert_eq!(
            errors(&request("system:node:n1", &[], 0), NODE_USAGES),
            "subject organization is not system:nodes"
        );
        assert_eq!(
            errors(&request("system:node:n1", &["system:nodes"], 1), NODE_USAGES),
            "subjectAltNames are not allowed"
        );
        assert_eq!(
            errors(&request("alice", &["system:nodes"], 0), NODE_USAGES),
            "subject common name does not begin with system:node:"
        );
        assert!(errors(&node, &["client auth"]).starts_with("usages did not match"));
        assert!(
            errors(&node, &["digital signature", "client auth", "server auth"])
                .starts_with("usages did not match")
        );
    }

    #[test]
    fn apiserver_client_rules() {
        assert_eq!(apiserver_client_errors(&["client auth"]), Ok(()));
        assert_eq!(apiserver_client_errors(NODE_USAGES), Ok(()));
        assert!(apiserver_client_errors(&["digital signature"]).is_err());
        assert!(apiserver_client_errors(&["client auth", "server auth"]).is_err());
    }

    #[test]
    fn only_badges_signers_have_rules() {
        let node = request("system:node:n1", &["system:nodes"], 0);
        assert!(signer_rules(KUBE_APISERVER_CLIENT_KUBELET, &node, NODE_USAGES).is_some());
        assert!(signer_rules(KUBE_APISERVER_CLIENT, &node, NODE_USAGES).is_some());
        assert!(signer_rules("kubernetes.io/kubelet-serving", &node, NODE_USAGES).is_none());
        assert!(signer_rules("example.com/other", &node, NODE_USAGES).is_none());
    }
}
