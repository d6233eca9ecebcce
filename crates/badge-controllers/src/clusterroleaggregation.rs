//! The clusterrole-aggregation controller (`pkg/controller/clusterroleaggregation`): an
//! aggregated ClusterRole's rules are the union of the rules of the ClusterRoles its
//! `aggregationRule` selects. The union itself is `badge_auth::rbac::aggregate`; this writes
//! it, on the lease holder only, whenever a ClusterRole changes.

use std::sync::Arc;

use badge_api::{Status, resources};
use badge_registry::{Filter, ReadFrom, Registry, WriteOptions};
use k8s_openapi::api::rbac::v1::ClusterRole;

use crate::leader::Leading;
use crate::runtime::{Action, Controller};

const CLUSTERROLES_PREFIX: &str = "/registry/clusterroles/";
/// One queue key for every change: the union runs over all roles to its fixed point at once.
const ALL: &str = "all";

/// Starts the controller; it runs until the process ends.
pub fn spawn(registry: Arc<Registry>, leading: Option<Leading>) {
    let controller = Controller::new("clusterrole-aggregation", registry.clone(), |event| {
        if event.key.starts_with(CLUSTERROLES_PREFIX) {
            vec![ALL.to_string()]
        } else {
            Vec::new()
        }
    })
    .with_leader_election(leading);
    controller.spawn(move |_| {
        let registry = registry.clone();
        async move { reconcile(&registry).await }
    });
}

/// Rewrites aggregated ClusterRoles whose rules differ from the union of their sources.
async fn reconcile(registry: &Registry) -> Result<Action, Status> {
    let page = registry
        .list(
            resources::CLUSTERROLES,
            "",
            &Filter::default(),
            ReadFrom::Any,
            0,
            None,
        )
        .await?;
    let roles: Vec<ClusterRole> = page
        .items
        .iter()
        .filter_map(|role| serde_json::from_value(serde_json::Value::clone(role)).ok())
        .collect();
    for (name, rules) in badge_auth::rbac::aggregate(&roles) {
        let rules = serde_json::to_value(&rules).map_err(|e| Status::internal(e.to_string()))?;
        let result = registry
            .update(
                resources::CLUSTERROLES,
                "",
                &name,
                "",
                &WriteOptions::default(),
                |current| {
                    let mut updated = current.clone();
                    updated["rules"] = rules.clone();
                    Ok(updated)
                },
            )
            .await;
        match result {
            Ok(_) => {}
            Err(s) if s.is_not_found() => {}
            Err(s) => return Err(s),
        }
    }
    Ok(Action::Done)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use serde_json::{Value, json};

    use super::*;

    async fn registry(dir: &std::path::Path) -> Arc<Registry> {
        let store: Arc<dyn badge_store::Store> =
            Arc::new(badge_store::sqlite::SqliteStore::open(&dir.join("s.db")).unwrap());
        Registry::start(store, 100).await
    }

    fn role(name: &str, labels: Value, rules: Value, aggregation: Option<Value>) -> Value {
        let mut role = json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name, "labels": labels},
            "rules": rules,
        });
        if let Some(rule) = aggregation {
            role["aggregationRule"] = rule;
        }
        role
    }

    async fn rules_of(registry: &Registry, name: &str) -> Value {
        registry
            .get(resources::CLUSTERROLES, "", name, ReadFrom::Latest)
            .await
            .unwrap()["rules"]
            .clone()
    }

    /// The rules as a set: the union's order is the sources' order.
    fn sorted(rules: &Value) -> Vec<String> {
        let mut rules: Vec<String> = rules.as_array().unwrap().iter().map(Value::to_string).collect();
        rules.sort();
        rules
    }

    async fn wait_for_rules(registry: &Registry, name: &str, wanted: &Value) {
        let mut changes = registry.cache().watch(CLUSTERROLES_PREFIX, None).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while sorted(&rules_of(registry, name).await) != sorted(wanted) {
            tokio::time::timeout_at(deadline, changes.next())
                .await
                .expect("the aggregated rules never arrived")
                .unwrap();
        }
    }

    #[tokio::test]
    async fn aggregates_only_while_leading_and_follows_changes() {
        let dir = tempfile::tempdir().unwrap();
        let registry = registry(dir.path()).await;
        let write = WriteOptions::default();
        let pods = json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]);
        let selector = json!({"clusterRoleSelectors": [{"matchLabels": {"agg": "yes"}}]});
        registry
            .create(
                resources::CLUSTERROLES,
                "",
                role("sum", json!({}), json!([]), Some(selector)),
                &write,
            )
            .await
            .unwrap();
        registry
            .create(
                resources::CLUSTERROLES,
                "",
                role("part", json!({"agg": "yes"}), pods.clone(), None),
                &write,
            )
            .await
            .unwrap();

        let (leads, leading) = tokio::sync::watch::channel(false);
        spawn(registry.clone(), Some(leading));
        // Not leading: nothing is written.
        tokio::task::yield_now().await;
        assert_eq!(rules_of(&registry, "sum").await, json!([]));

        leads.send_replace(true);
        wait_for_rules(&registry, "sum", &pods).await;

        // A new source role is folded in.
        let secrets = json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]}]);
        registry
            .create(
                resources::CLUSTERROLES,
                "",
                role("more", json!({"agg": "yes"}), secrets.clone(), None),
                &write,
            )
            .await
            .unwrap();
        let mut both = pods.as_array().unwrap().clone();
        both.extend(secrets.as_array().unwrap().iter().cloned());
        wait_for_rules(&registry, "sum", &Value::Array(both)).await;
    }
}
