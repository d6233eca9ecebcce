//! The `kube-public/cluster-info` ConfigMap, as kubeadm's `bootstraptoken/clusterinfo`
//! phase writes it: a kubeconfig with the cluster only (server and CA), which a joining node
//! reads anonymously and checks against a bootstrap token's signature. The Role and
//! RoleBinding `kubeadm:bootstrap-signer-clusterinfo` let `system:anonymous` get it.

use badge_api::{Resource, Status, meta, resources};
use badge_registry::{Registry, WriteOptions};
use serde_json::{Value, json};

/// The namespace anyone may read, anonymous callers included.
pub const NAMESPACE: &str = "kube-public";
/// The ConfigMap a joining node reads.
pub const CONFIGMAP: &str = "cluster-info";
/// The ConfigMap key holding the cluster-only kubeconfig.
pub const KUBECONFIG_KEY: &str = "kubeconfig";
/// The name of kubeadm's Role and RoleBinding.
pub const RBAC_NAME: &str = "kubeadm:bootstrap-signer-clusterinfo";
const ANONYMOUS_USER: &str = "system:anonymous";
const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// Writes `cluster-info` with `kubeconfig`, or rewrites its `kubeconfig` when the server URL
/// or the CA changed (the bootstrap signer then re-signs it), and the RBAC that exposes it.
pub async fn ensure(registry: &Registry, kubeconfig: &str) -> Result<(), Status> {
    ensure_configmap(registry, kubeconfig).await?;
    ensure_object(
        registry,
        resources::ROLES,
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": RBAC_NAME, "namespace": NAMESPACE},
            "rules": [{
                "verbs": ["get"],
                "apiGroups": [""],
                "resources": ["configmaps"],
                "resourceNames": [CONFIGMAP],
            }],
        }),
        &["rules"],
    )
    .await?;
    ensure_object(
        registry,
        resources::ROLEBINDINGS,
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": RBAC_NAME, "namespace": NAMESPACE},
            "roleRef": {"apiGroup": RBAC_GROUP, "kind": "Role", "name": RBAC_NAME},
            "subjects": [{"kind": "User", "apiGroup": RBAC_GROUP, "name": ANONYMOUS_USER}],
        }),
        // roleRef is immutable: a binding pointing elsewhere is someone's choice, kept.
        &["subjects"],
    )
    .await
}

async fn ensure_configmap(registry: &Registry, kubeconfig: &str) -> Result<(), Status> {
    let configmaps = resources::CONFIGMAPS;
    let current = registry.get_cached(configmaps, NAMESPACE, CONFIGMAP);
    if current.is_none() {
        let object = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": CONFIGMAP, "namespace": NAMESPACE},
            "data": {KUBECONFIG_KEY: kubeconfig},
        });
        match registry
            .create(configmaps, NAMESPACE, object, &WriteOptions::default())
            .await
        {
            Ok(_) => {
                tracing::info!("created {NAMESPACE}/{CONFIGMAP}");
                return Ok(());
            }
            // Another server wrote it meanwhile: bring it to this one's content below.
            Err(s) if s.is_already_exists() => {}
            Err(s) => return Err(s),
        }
    } else if current
        .as_ref()
        .and_then(|c| c.pointer("/data/kubeconfig"))
        .and_then(Value::as_str)
        == Some(kubeconfig)
    {
        return Ok(());
    }
    registry
        .update(
            configmaps,
            NAMESPACE,
            CONFIGMAP,
            "",
            &WriteOptions::default(),
            |current| {
                let mut updated = current.clone();
                if !updated.get("data").is_some_and(Value::is_object) {
                    updated["data"] = json!({});
                }
                updated["data"][KUBECONFIG_KEY] = Value::String(kubeconfig.to_string());
                Ok(updated)
            },
        )
        .await?;
    tracing::info!("updated the kubeconfig of {NAMESPACE}/{CONFIGMAP}");
    Ok(())
}

/// Creates `desired`, or sets the `fields` of the existing object to desired's.
async fn ensure_object(
    registry: &Registry,
    resource: &Resource,
    desired: Value,
    fields: &[&str],
) -> Result<(), Status> {
    let name = meta::name(&desired).to_string();
    let differs = |current: &Value| fields.iter().any(|f| current.get(*f) != desired.get(*f));
    match registry.get_cached(resource, NAMESPACE, &name) {
        None => match registry
            .create(resource, NAMESPACE, desired.clone(), &WriteOptions::default())
            .await
        {
            Ok(_) => return Ok(()),
            Err(s) if s.is_already_exists() => {}
            Err(s) => return Err(s),
        },
        Some(current) if !differs(&current) => return Ok(()),
        Some(_) => {}
    }
    registry
        .update(
            resource,
            NAMESPACE,
            &name,
            "",
            &WriteOptions::default(),
            |current| {
                let mut updated = current.clone();
                for field in fields {
                    if let Some(value) = desired.get(*field) {
                        updated[*field] = value.clone();
                    }
                }
                Ok(updated)
            },
        )
        .await
        .map(|_| ())
}
