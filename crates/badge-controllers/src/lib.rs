//! Controllers: each a `reconcile(key)` over a small work queue fed by the watch cache,
//! as kube-controller-manager's are.
//!
//! - `serviceaccounts`: a ServiceAccount `default` in every active namespace.
//! - `root-ca-cert-publisher`: a ConfigMap `kube-root-ca.crt` with the CA in every namespace.
//! - `namespace`: a terminating namespace has its content deleted, then is finalized.
//! - `tokencleaner`: expired bootstrap token Secrets are deleted.
//! - `bootstrapsigner`: bootstrap tokens that may sign put their signature of the
//!   `kube-public/cluster-info` kubeconfig into it.
//! - `csrapproving`, `csrsigning`: node client certificate requests are approved, and
//!   approved client requests signed with the cluster CA.
//! - `clusterrole-aggregation`: aggregated ClusterRoles hold the union of the rules of the
//!   ClusterRoles they select.
//! - `keyrotation`: the ServiceAccount key ring's scheduled changes are written to the store
//!   (rotation on a period when configured; keys whose tokens have all expired dropped).
//! - `pod-garbage-collector`: pods no node will finish (orphans, and terminating pods on a
//!   node whose agent is gone) are force-deleted.
//! - `legacy-service-account-token-cleaner`: auto-generated legacy token Secrets unused for a
//!   period are labelled invalid, then deleted (spawned on its own, with its period).

#![warn(missing_docs)]

pub mod audit;
pub mod bootstrapsigner;
pub mod clusterinfo;
pub mod clusterroleaggregation;
pub mod csr;
pub mod idle;
pub mod issuedtokens;
pub mod keyrotation;
pub mod leader;
pub mod legacytokencleaner;
pub mod podgc;
pub mod runtime;
pub mod tokencleaner;
pub mod tokens;

pub use tokens::LegacyTokenSigner;

use std::sync::Arc;
use std::time::Duration;

use badge_api::{Status, meta, resources};
use badge_registry::{DeleteOptions, Filter, ReadFrom, Registry, WriteOptions};
use serde_json::{Value, json};

use runtime::{Action, Controller};

/// The namespaces that exist from the start.
pub const SYSTEM_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

/// The ConfigMap published into every namespace with the cluster CA (`ca.crt`).
pub const ROOT_CA_CONFIGMAP: &str = "kube-root-ca.crt";
const ROOT_CA_DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

/// Creates the system namespaces when missing.
pub async fn ensure_system_namespaces(registry: &Registry) -> Result<(), Status> {
    let namespaces = resources::NAMESPACES;
    for name in SYSTEM_NAMESPACES {
        let object = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        match registry
            .create(namespaces, "", object, &WriteOptions::default())
            .await
        {
            Ok(_) => tracing::info!(namespace = name, "created system namespace"),
            Err(s) if s.is_already_exists() => {}
            Err(s) => return Err(s),
        }
    }
    Ok(())
}

/// Starts every controller; they run until the process ends.
pub fn spawn_all(registry: Arc<Registry>, ca_pem: String, leading: Option<leader::Leading>) {
    let ca_pem = Arc::new(ca_pem);
    let service_accounts = Controller::new("serviceaccounts", registry.clone(), |event| {
        match event.key.strip_prefix("/registry/namespaces/") {
            Some(ns) => vec![ns.to_string()],
            None => namespaced_key(&event.key, "/registry/serviceaccounts/")
                .filter(|(_, n)| n == "default")
                .map(|(ns, _)| vec![ns])
                .unwrap_or_default(),
        }
    });
    let service_accounts = service_accounts.with_leader_election(leading.clone());
    let reg = registry.clone();
    service_accounts.spawn(move |ns| {
        let registry = reg.clone();
        async move { reconcile_default_service_account(&registry, &ns).await }
    });

    let publisher = Controller::new("root-ca-cert-publisher", registry.clone(), |event| {
        match event.key.strip_prefix("/registry/namespaces/") {
            Some(ns) => vec![ns.to_string()],
            None => namespaced_key(&event.key, "/registry/configmaps/")
                .filter(|(_, n)| n == ROOT_CA_CONFIGMAP)
                .map(|(ns, _)| vec![ns])
                .unwrap_or_default(),
        }
    });
    let publisher = publisher.with_leader_election(leading.clone());
    let reg = registry.clone();
    publisher.spawn(move |ns| {
        let registry = reg.clone();
        let ca = ca_pem.clone();
        async move { reconcile_root_ca(&registry, &ns, &ca).await }
    });

    let namespaces = Controller::new("namespace", registry.clone(), |event| {
        event
            .key
            .strip_prefix("/registry/namespaces/")
            .map(|ns| vec![ns.to_string()])
            .unwrap_or_default()
    });
    tokencleaner::spawn(registry.clone(), leading.clone());
    issuedtokens::spawn(registry.clone(), leading.clone());
    clusterroleaggregation::spawn(registry.clone(), leading.clone());
    bootstrapsigner::spawn(registry.clone(), leading.clone());
    podgc::spawn(registry.clone(), leading.clone());

    let namespaces = namespaces.with_leader_election(leading);
    let reg = registry;
    namespaces.spawn(move |ns| {
        let registry = reg.clone();
        async move { reconcile_namespace(&registry, &ns).await }
    });
}

/// `/registry/<r>/<ns>/<name>` → (ns, name).
fn namespaced_key(key: &str, prefix: &str) -> Option<(String, String)> {
    let rest = key.strip_prefix(prefix)?;
    let (ns, name) = rest.split_once('/')?;
    Some((ns.to_string(), name.to_string()))
}

fn active_namespace(registry: &Registry, ns: &str) -> Option<Arc<Value>> {
    registry
        .get_cached(resources::NAMESPACES, "", ns)
        .filter(|o| meta::deletion_timestamp(o).is_none())
}

async fn reconcile_default_service_account(registry: &Registry, ns: &str) -> Result<Action, Status> {
    if active_namespace(registry, ns).is_none() {
        return Ok(Action::Done);
    }
    let sa = resources::SERVICEACCOUNTS;
    if registry.get_cached(sa, ns, "default").is_some() {
        return Ok(Action::Done);
    }
    let object = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": ns}});
    match registry.create(sa, ns, object, &WriteOptions::default()).await {
        Ok(_) => Ok(Action::Done),
        Err(s) if s.is_already_exists() => Ok(Action::Done),
        // The namespace began terminating meanwhile.
        Err(s) if s.code == 403 || s.is_not_found() => Ok(Action::Done),
        Err(s) => Err(s),
    }
}

async fn reconcile_root_ca(registry: &Registry, ns: &str, ca_pem: &str) -> Result<Action, Status> {
    if active_namespace(registry, ns).is_none() {
        return Ok(Action::Done);
    }
    let cm = resources::CONFIGMAPS;
    let wanted_data = json!({"ca.crt": ca_pem});
    match registry.get_cached(cm, ns, ROOT_CA_CONFIGMAP) {
        Some(current) if current.get("data") == Some(&wanted_data) => Ok(Action::Done),
        Some(_) => {
            registry
                .update(
                    cm,
                    ns,
                    ROOT_CA_CONFIGMAP,
                    "",
                    &WriteOptions::default(),
                    |current| {
                        let mut updated = current.clone();
                        updated["data"] = wanted_data.clone();
                        meta::set_annotation(&mut updated, "kubernetes.io/description", ROOT_CA_DESCRIPTION);
                        Ok(updated)
                    },
                )
                .await?;
            Ok(Action::Done)
        }
        None => {
            let object = json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": ROOT_CA_CONFIGMAP, "namespace": ns,
                             "annotations": {"kubernetes.io/description": ROOT_CA_DESCRIPTION}},
                "data": wanted_data,
            });
            match registry.create(cm, ns, object, &WriteOptions::default()).await {
                Ok(_) => Ok(Action::Done),
                Err(s) if s.is_already_exists() || s.code == 403 || s.is_not_found() => Ok(Action::Done),
                Err(s) => Err(s),
            }
        }
    }
}

/// Deletes everything in a terminating namespace, then removes its `kubernetes` finalizer.
async fn reconcile_namespace(registry: &Registry, ns: &str) -> Result<Action, Status> {
    let namespaces = resources::NAMESPACES;
    let Some(namespace) = registry.get_cached(namespaces, "", ns) else {
        return Ok(Action::Done);
    };
    if meta::deletion_timestamp(&namespace).is_none() {
        return Ok(Action::Done);
    }
    let mut remaining = 0usize;
    for r in resources::RESOURCES
        .iter()
        .filter(|r| r.namespaced && r.storage == resources::Storage::Stored)
    {
        let page = registry
            .list(r, ns, &Filter::default(), ReadFrom::Latest, 0, None)
            .await?;
        for object in page.items {
            remaining += 1;
            match registry
                .delete(r, ns, meta::name(&object), &DeleteOptions::default())
                .await
            {
                Ok(_) => {}
                Err(s) if s.is_not_found() => {}
                Err(s) => return Err(s),
            }
        }
    }
    if remaining > 0 {
        // Check again once the deletions (and any finalizers) have gone through.
        return Ok(Action::RequeueAfter(Duration::from_millis(200)));
    }
    let has_finalizer = namespace
        .pointer("/spec/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| f.iter().any(|v| v == "kubernetes"));
    if has_finalizer {
        match registry
            .update(
                namespaces,
                "",
                ns,
                "finalize",
                &WriteOptions::default(),
                |current| {
                    let mut updated = current.clone();
                    if let Some(list) = updated
                        .pointer_mut("/spec/finalizers")
                        .and_then(Value::as_array_mut)
                    {
                        list.retain(|v| v != "kubernetes");
                    }
                    Ok(updated)
                },
            )
            .await
        {
            Ok(_) => {}
            Err(s) if s.is_not_found() => {}
            Err(s) => return Err(s),
        }
    }
    Ok(Action::Done)
}
