//! Nodes: the Node authorizer (`plugin/pkg/auth/authorizer/node`) and NodeRestriction for
//! token requests (`plugin/pkg/admission/noderestriction`). A node (`system:node:<name>` in
//! `system:nodes`) may read only the Secrets, ConfigMaps and ServiceAccounts its pods use,
//! and request tokens only for its own pods' ServiceAccounts, bound to those pods, for the
//! audiences those pods ask for.

use std::sync::Arc;

use badge_api::{Status, meta, resources};
use badge_auth::{Attributes, Authorizer, Decision, UserInfo};
use badge_registry::Registry;
use serde_json::Value;

/// The group every node's user belongs to.
pub const NODES_GROUP: &str = "system:nodes";
const NODE_PREFIX: &str = "system:node:";

/// The node a user is, if it is one.
pub fn node_name(user: &UserInfo) -> Option<&str> {
    if !user.in_group(NODES_GROUP) {
        return None;
    }
    user.name.strip_prefix(NODE_PREFIX).filter(|n| !n.is_empty())
}

/// Calls `f` with every pod bound to `node` in `namespace` (all namespaces when empty), read
/// from the cache's pods-by-node index: a node's request decodes only that node's pods.
fn for_each_pod_on(registry: &Registry, node: &str, namespace: &str, mut f: impl FnMut(&Value)) {
    for (_, cached) in registry.cache().pods_on_node(node, namespace) {
        f(&cached.value());
    }
}

/// The Secrets and ConfigMaps a pod references (volumes, projected sources, env, envFrom,
/// image pull secrets).
fn references(pod: &Value, secrets: &mut Vec<String>, config_maps: &mut Vec<String>) {
    let s = |v: &Value, p: &str| v.pointer(p).and_then(Value::as_str).map(String::from);
    for volume in pod
        .pointer("/spec/volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        secrets.extend(s(volume, "/secret/secretName"));
        config_maps.extend(s(volume, "/configMap/name"));
        for source in volume
            .pointer("/projected/sources")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            secrets.extend(s(source, "/secret/name"));
            config_maps.extend(s(source, "/configMap/name"));
        }
    }
    for secret in pod
        .pointer("/spec/imagePullSecrets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        secrets.extend(s(secret, "/name"));
    }
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        for c in pod
            .pointer(&format!("/spec/{list}"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for env in c.get("env").and_then(Value::as_array).into_iter().flatten() {
                secrets.extend(s(env, "/valueFrom/secretKeyRef/name"));
                config_maps.extend(s(env, "/valueFrom/configMapKeyRef/name"));
            }
            for from in c.get("envFrom").and_then(Value::as_array).into_iter().flatten() {
                secrets.extend(s(from, "/secretRef/name"));
                config_maps.extend(s(from, "/configMapRef/name"));
            }
        }
    }
}

/// The audiences a pod's projected token volumes ask for (empty audience: the API's).
pub fn pod_token_audiences(pod: &Value, api_audiences: &[String]) -> Vec<String> {
    let mut audiences = Vec::new();
    for volume in pod
        .pointer("/spec/volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        for source in volume
            .pointer("/projected/sources")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(token) = source.get("serviceAccountToken") {
                match token
                    .get("audience")
                    .and_then(Value::as_str)
                    .filter(|a| !a.is_empty())
                {
                    Some(a) => audiences.push(a.to_string()),
                    None => audiences.extend(api_audiences.iter().cloned()),
                }
            }
        }
    }
    audiences
}

/// The Node authorizer.
pub struct NodeAuthorizer(pub Arc<Registry>);

impl NodeAuthorizer {
    fn related(&self, node: &str, a: &Attributes) -> bool {
        let mut found = false;
        match (a.resource.as_str(), a.subresource.as_str()) {
            ("secrets" | "configmaps", "") => {
                for_each_pod_on(&self.0, node, &a.namespace, |pod| {
                    let (mut secrets, mut config_maps) = (Vec::new(), Vec::new());
                    references(pod, &mut secrets, &mut config_maps);
                    let names = if a.resource == resources::SECRETS.plural {
                        &secrets
                    } else {
                        &config_maps
                    };
                    found |= names.contains(&a.name);
                });
            }
            ("serviceaccounts", "" | "token") => {
                for_each_pod_on(&self.0, node, &a.namespace, |pod| {
                    let sa = pod
                        .pointer("/spec/serviceAccountName")
                        .and_then(Value::as_str)
                        .unwrap_or("default");
                    found |= sa == a.name;
                });
            }
            _ => {}
        }
        found
    }
}

impl Authorizer for NodeAuthorizer {
    fn authorize(&self, a: &Attributes) -> Decision {
        let Some(node) = node_name(&a.user) else {
            return Decision::NoOpinion(String::new());
        };
        if !a.is_resource_request {
            return match (a.verb.as_str(), a.path.as_str()) {
                ("get", "/healthz" | "/livez" | "/readyz" | "/version" | "/api" | "/apis") => Decision::Allow,
                ("get", p) if p.starts_with("/api/") || p.starts_with("/apis/") => Decision::Allow,
                _ => Decision::NoOpinion(String::new()),
            };
        }
        let read = matches!(a.verb.as_str(), "get" | "list" | "watch");
        let allowed = match (a.api_group.as_str(), a.resource.as_str(), a.subresource.as_str()) {
            // Named reads only: a get, or a list or watch that an exact `metadata.name` field
            // selector names (the kubelet watches each Secret it mounts that way).
            ("", "secrets" | "configmaps" | "serviceaccounts", "") => {
                read && !a.name.is_empty() && self.related(node, a)
            }
            ("", "serviceaccounts", "token") => a.verb == "create" && self.related(node, a),
            // The kubelet's own node and the pods it runs (the `system:node` rules).
            ("", "nodes", "") => {
                read || (matches!(a.verb.as_str(), "create" | "update" | "patch")
                    && (a.name.is_empty() || a.name == node))
            }
            ("", "nodes", "status") => {
                a.name == node && matches!(a.verb.as_str(), "get" | "update" | "patch")
            }
            // Deleting confirms a pod's termination; NodeRestriction limits it to the
            // node's own pods.
            ("", "pods", "") => read || a.verb == "delete",
            ("", "pods", "status") => matches!(a.verb.as_str(), "get" | "update" | "patch"),
            ("", "events", "") => matches!(a.verb.as_str(), "create" | "update" | "patch"),
            ("coordination.k8s.io", "leases", "") => {
                a.namespace == "kube-node-lease" && (a.name.is_empty() || a.name == node)
            }
            // Client certificate requests, for the kubelet's certificate rotation.
            ("certificates.k8s.io", "certificatesigningrequests", "") => {
                matches!(a.verb.as_str(), "create" | "get" | "list" | "watch")
            }
            ("authentication.k8s.io", "tokenreviews" | "selfsubjectreviews", "") => a.verb == "create",
            (
                "authorization.k8s.io",
                "subjectaccessreviews" | "selfsubjectaccessreviews" | "selfsubjectrulesreviews",
                "",
            ) => a.verb == "create",
            _ => false,
        };
        if allowed {
            Decision::Allow
        } else {
            Decision::NoOpinion(format!(
                "no relationship found between node '{node}' and this object"
            ))
        }
    }
}

/// NodeRestriction for a TokenRequest made by a node.
pub async fn admit_node_token_request(
    registry: &Registry,
    node: &str,
    namespace: &str,
    sa_name: &str,
    request: &crate::tokenrequest::TokenRequestInput,
    api_audiences: &[String],
) -> Result<(), Status> {
    let gr = badge_api::GroupResource {
        group: "",
        resource: "serviceaccounts",
    };
    let forbidden = |message: String| Status::forbidden(gr, sa_name, &message);
    let r = request.bound_object_ref.clone().unwrap_or_default();
    if request.bound_object_ref.is_none()
        || r.api_version() != "v1"
        || r.kind() != "Pod"
        || r.name().is_empty()
    {
        return Err(forbidden("node requested token not bound to a pod".to_string()));
    }
    if r.uid().is_empty() {
        return Err(forbidden(
            "node requested token with a pod binding without a uid".to_string(),
        ));
    }
    // A missing pod is the lookup's 404, as upstream returns it unwrapped.
    let pod = registry
        .get(
            resources::PODS,
            namespace,
            r.name(),
            badge_registry::ReadFrom::Recent,
        )
        .await?;
    if meta::uid(&pod) != r.uid() {
        return Err(forbidden(format!(
            "the UID in the bound object reference ({}) does not match the UID in record. The object might have been deleted and then recreated",
            r.uid()
        )));
    }
    if pod.pointer("/spec/nodeName").and_then(Value::as_str) != Some(node) {
        return Err(forbidden(
            "node requested token bound to a pod scheduled on a different node".to_string(),
        ));
    }
    let allowed = pod_token_audiences(&pod, api_audiences);
    let requested = if request.audiences.is_empty() {
        api_audiences
    } else {
        &request.audiences
    };
    for audience in requested {
        if !allowed.contains(audience) {
            return Err(forbidden(format!(
                "node \"{node}\" is not authorized to request tokens for audience \"{audience}\" for service account \"{sa_name}\""
            )));
        }
    }
    Ok(())
}

/// NodeRestriction for a pod delete made by a node: only pods bound to that node.
pub async fn admit_node_pod_delete(
    registry: &Registry,
    node: &str,
    namespace: &str,
    name: &str,
) -> Result<(), Status> {
    let pod = registry
        .get(resources::PODS, namespace, name, badge_registry::ReadFrom::Latest)
        .await?;
    if pod.pointer("/spec/nodeName").and_then(Value::as_str) != Some(node) {
        return Err(Status::forbidden(
            resources::PODS.group_resource(),
            name,
            &format!("node \"{node}\" can only delete pods with spec.nodeName set to itself"),
        ));
    }
    Ok(())
}
