//! RBAC in the server: the index follows the watch cache, the default policy is reconciled
//! at start (`bootstrappolicy` + `reconcile`), and writes of roles and bindings are checked
//! for escalation (`pkg/registry/rbac/*/policybased`). Aggregated ClusterRoles are written
//! by the clusterrole-aggregation controller (`badge-controllers`).

use std::sync::Arc;
use std::time::Duration;

use badge_api::{Resource, Status, meta, resources};
use badge_auth::rbac::{self, BindingChange, RbacIndex};
use badge_auth::{Attributes, Authorizer, Decision, UserInfo};
use badge_registry::{Registry, WriteOptions};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef};
use serde_json::{Value, json};
use tokio::sync::watch;

const PREFIXES: &[(&str, &str)] = &[
    ("/registry/roles/", "roles"),
    ("/registry/clusterroles/", "clusterroles"),
    ("/registry/rolebindings/", "rolebindings"),
    ("/registry/clusterrolebindings/", "clusterrolebindings"),
];

/// The live RBAC policy.
pub struct Rbac {
    /// The index the authorizer reads.
    pub index: Arc<RbacIndex>,
    applied: watch::Sender<i64>,
}

/// `(namespace, name)` of an RBAC key, and its resource.
fn parse_key(key: &str) -> Option<(&'static str, String, String)> {
    for (prefix, plural) in PREFIXES {
        if let Some(rest) = key.strip_prefix(prefix) {
            return Some(match rest.split_once('/') {
                Some((ns, name)) => (*plural, ns.to_string(), name.to_string()),
                None => (*plural, String::new(), rest.to_string()),
            });
        }
    }
    None
}

impl Rbac {
    /// Fills the index from the cache, then follows it.
    pub fn start(registry: Arc<Registry>) -> Arc<Rbac> {
        let index = Arc::new(RbacIndex::new());
        let (applied, _) = watch::channel(0);
        let rbac = Arc::new(Rbac { index, applied });
        let follower = rbac.clone();
        let cache_watch = registry.cache().watch("/registry/", None);
        let Ok(mut cache_watch) = cache_watch else {
            unreachable!("a watch from the current state cannot be too old")
        };
        for event in cache_watch.initial.drain(..) {
            follower.apply(&event);
        }
        follower.applied.send_replace(cache_watch.revision);
        tokio::spawn(async move {
            loop {
                match cache_watch.next().await {
                    Ok(event) => {
                        follower.apply(&event);
                        follower.applied.send_replace(event.revision);
                    }
                    Err(badge_registry::WatchEnd::Lagged | badge_registry::WatchEnd::Reset) => {
                        // Rebuild from the current state.
                        match registry.cache().watch("/registry/", None) {
                            Ok(mut fresh) => {
                                follower.index.update(|p| *p = rbac::RbacPolicy::new());
                                for event in fresh.initial.drain(..) {
                                    follower.apply(&event);
                                }
                                follower.applied.send_replace(fresh.revision);
                                cache_watch = fresh;
                            }
                            Err(_) => return,
                        }
                    }
                    Err(badge_registry::WatchEnd::Closed) => return,
                }
            }
        });
        rbac
    }

    fn apply(&self, event: &badge_registry::CacheEvent) {
        let Some((plural, ns, name)) = parse_key(&event.key) else {
            return;
        };
        let object = match event.kind {
            badge_registry::EventType::Deleted => None,
            _ => Some(Arc::unwrap_or_clone(event.object.value())),
        };
        if let Err(e) = self.index.apply(plural, &ns, &name, object) {
            tracing::warn!(error = %e, key = %event.key, "RBAC object not understood");
        }
    }

    /// Waits until the index has applied `revision` (a write's), so the next request is
    /// decided by it.
    pub async fn wait_for(&self, revision: i64) {
        let mut rx = self.applied.subscribe();
        let _ = tokio::time::timeout(Duration::from_secs(2), rx.wait_for(|r| *r >= revision)).await;
    }
}

/// The RBAC authorizer over the shared index.
pub struct RbacAuthorizer(pub Arc<RbacIndex>);

impl Authorizer for RbacAuthorizer {
    fn authorize(&self, attributes: &Attributes) -> Decision {
        self.0.authorize(attributes)
    }
}

/// SelfSubjectRulesReview from the RBAC rules.
pub struct RbacRules(pub Arc<RbacIndex>);

impl crate::RulesResolver for RbacRules {
    fn rules_for(&self, user: &UserInfo, namespace: &str) -> (Vec<Value>, Vec<Value>, bool, Option<String>) {
        let (rules, errors) = self.0.rules_for(user, namespace);
        let mut resource_rules = Vec::new();
        let mut non_resource_rules = Vec::new();
        for rule in rules {
            let urls = rule.non_resource_urls.clone().unwrap_or_default();
            if urls.is_empty() {
                let mut r = json!({
                    "verbs": rule.verbs,
                    "apiGroups": rule.api_groups.clone().unwrap_or_default(),
                    "resources": rule.resources.clone().unwrap_or_default(),
                });
                if let Some(names) = rule.resource_names.as_ref().filter(|n| !n.is_empty()) {
                    r["resourceNames"] = json!(names);
                }
                resource_rules.push(r);
            } else {
                non_resource_rules.push(json!({"verbs": rule.verbs, "nonResourceURLs": urls}));
            }
        }
        let error = (!errors.is_empty()).then(|| errors.join(", "));
        (resource_rules, non_resource_rules, false, error)
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<Value, Status> {
    serde_json::to_value(value).map_err(|e| Status::internal(e.to_string()))
}

fn from_json<T: serde::de::DeserializeOwned>(value: &Value) -> Option<T> {
    serde_json::from_value(value.clone()).ok()
}

/// Creates or updates `desired` (a full object) in place of what is stored.
async fn put(
    registry: &Registry,
    resource: &Resource,
    namespace: &str,
    desired: Value,
) -> Result<(), Status> {
    let name = meta::name(&desired).to_string();
    if registry.get_cached(resource, namespace, &name).is_none() {
        return match registry
            .create(resource, namespace, desired, &WriteOptions::default())
            .await
        {
            Err(s) if !s.is_already_exists() => Err(s),
            _ => Ok(()),
        };
    }
    registry
        .update(
            resource,
            namespace,
            &name,
            "",
            &WriteOptions::default(),
            |current| {
                let mut updated = desired.clone();
                meta::set(&mut updated, "resourceVersion", meta::resource_version(current));
                Ok(updated)
            },
        )
        .await
        .map(|_| ())
}

async fn apply_binding_change<T: serde::Serialize>(
    registry: &Registry,
    resource: &Resource,
    namespace: &str,
    change: BindingChange<T>,
) -> Result<(), Status> {
    match change {
        BindingChange::Create(b) | BindingChange::Update(b) => {
            put(registry, resource, namespace, to_json(&b)?).await
        }
        BindingChange::Recreate(b) => {
            let desired = to_json(&b)?;
            let name = meta::name(&desired).to_string();
            match registry
                .delete(resource, namespace, &name, &Default::default())
                .await
            {
                Ok(_) => {}
                Err(s) if s.is_not_found() => {}
                Err(s) => return Err(s),
            }
            put(registry, resource, namespace, desired).await
        }
    }
}

/// Creates or updates the default roles and bindings, keeping what users added
/// (`rbac/bootstrappolicy` reconciliation at kube-apiserver start).
pub async fn reconcile_defaults(registry: &Registry) -> Result<(), Status> {
    let cluster_roles = resources::CLUSTERROLES;
    for default in rbac::default_cluster_roles() {
        let name = default.metadata.name.clone().unwrap_or_default();
        let existing: Option<ClusterRole> = registry
            .get_cached(cluster_roles, "", &name)
            .and_then(|o| from_json(&o));
        if let Some(role) = rbac::reconcile(existing.as_ref(), &default) {
            put(registry, cluster_roles, "", to_json(&role)?).await?;
        }
    }
    let crbs = resources::CLUSTERROLEBINDINGS;
    for default in rbac::default_cluster_role_bindings() {
        let name = default.metadata.name.clone().unwrap_or_default();
        let existing: Option<ClusterRoleBinding> =
            registry.get_cached(crbs, "", &name).and_then(|o| from_json(&o));
        if let Some(change) = rbac::reconcile_cluster_role_binding(existing.as_ref(), &default) {
            apply_binding_change(registry, crbs, "", change).await?;
        }
    }
    let roles = resources::ROLES;
    for (ns, default) in rbac::default_roles() {
        let name = default.metadata.name.clone().unwrap_or_default();
        let existing: Option<Role> = registry.get_cached(roles, &ns, &name).and_then(|o| from_json(&o));
        if let Some(role) = rbac::reconcile_role(existing.as_ref(), &default) {
            put(registry, roles, &ns, to_json(&role)?).await?;
        }
    }
    let rbs = resources::ROLEBINDINGS;
    for (ns, default) in rbac::default_role_bindings() {
        let name = default.metadata.name.clone().unwrap_or_default();
        let existing: Option<RoleBinding> = registry.get_cached(rbs, &ns, &name).and_then(|o| from_json(&o));
        if let Some(change) = rbac::reconcile_role_binding(existing.as_ref(), &default) {
            apply_binding_change(registry, rbs, &ns, change).await?;
        }
    }
    Ok(())
}

impl crate::ApiServer {
    /// Escalation prevention for writes of roles and bindings: the caller must hold what
    /// it grants, or have `escalate` (roles) or `bind` (bindings) on the role.
    pub(crate) fn check_rbac_write(
        &self,
        user: &UserInfo,
        resource: &Resource,
        namespace: &str,
        object: &Value,
        old: Option<&Value>,
    ) -> Result<(), Status> {
        let Some(index) = &self.rbac else { return Ok(()) };
        if resource.group != "rbac.authorization.k8s.io" || user.in_group(badge_auth::user::SYSTEM_MASTERS) {
            return Ok(());
        }
        let name = meta::name(object);
        let gr = resource.group_resource();
        let forbidden = |message: &str| Status::forbidden(gr, name, message);
        let allowed =
            |attributes: Attributes| matches!(self.authorizer.authorize(&attributes), Decision::Allow);
        // Roles and ClusterRoles differ only in scope, as do their bindings.
        let scope = if resource.namespaced { namespace } else { "" };
        if resource.is(resources::ROLES) || resource.is(resources::CLUSTERROLES) {
            if let Some(old) = old
                && only_gc_fields_changed(object, old)
            {
                return Ok(());
            }
            let aggregation_changed = object.get("aggregationRule").filter(|v| !v.is_null())
                != old
                    .and_then(|o| o.get("aggregationRule"))
                    .filter(|v| !v.is_null());
            if resource.is(resources::CLUSTERROLES)
                && (object.get("aggregationRule").is_some_and(|v| !v.is_null()) || aggregation_changed)
                && (aggregation_changed || old.is_none())
                && !index.snapshot().has_full_authority(user, "")
            {
                return Err(forbidden(rbac::AGGREGATION_RULE_FORBIDDEN));
            }
            if allowed(rbac::escalate_attributes(user, resource.plural, scope, name)) {
                return Ok(());
            }
            let rules: Vec<PolicyRule> = object
                .get("rules")
                .and_then(|r| serde_json::from_value(r.clone()).ok())
                .unwrap_or_default();
            index
                .confirm_no_escalation(user, &rules, scope)
                .map_err(|m| forbidden(&m))
        } else if resource.is(resources::ROLEBINDINGS) || resource.is(resources::CLUSTERROLEBINDINGS) {
            if let Some(old) = old
                && only_gc_fields_changed(object, old)
            {
                return Ok(());
            }
            let Some(role_ref) = object
                .get("roleRef")
                .and_then(|r| serde_json::from_value::<RoleRef>(r.clone()).ok())
            else {
                return Ok(());
            };
            if let Some(attributes) = rbac::bind_attributes(user, &role_ref, scope)
                && allowed(attributes)
            {
                return Ok(());
            }
            let snapshot = index.snapshot();
            let rules = snapshot
                .role_reference_rules(&role_ref, scope)
                .map_err(|m| forbidden(&m))?
                .to_vec();
            snapshot
                .confirm_no_escalation(user, &rules, scope)
                .map_err(|m| forbidden(&m))
        } else {
            Ok(())
        }
    }

    /// Waits until the RBAC index reflects a write to an RBAC object.
    pub(crate) async fn settle_rbac_write(&self, resource: &Resource, object: &Value) {
        if resource.group != "rbac.authorization.k8s.io" {
            return;
        }
        if let (Some(rbac), Ok(revision)) =
            (&self.rbac_follower, meta::resource_version(object).parse::<i64>())
        {
            rbac.wait_for(revision).await;
        }
    }
}

/// Updates that change only finalizers or owner references are not escalation checked.
fn only_gc_fields_changed(object: &Value, old: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        for field in [
            "finalizers",
            "ownerReferences",
            "resourceVersion",
            "managedFields",
        ] {
            meta::remove(&mut v, field);
        }
        v
    };
    strip(object) == strip(old)
}
