//! `pod-garbage-collector` (`pkg/controller/podgc/gc_controller.go`): the server removes the
//! pods no node will ever finish.
//!
//! - Orphans: pods bound to a Node that does not exist, once it has stayed absent for the
//!   quarantine (upstream's 40 s, so a pod created just before its node registers is kept).
//! - Terminating pods whose grace has passed on a node with no live agent: the node's Lease
//!   in `kube-node-lease` (which the agent renews, as the kubelet) is missing or expired.
//!   Upstream waits for an out-of-service taint there; badge has no such operator step, and
//!   the lease is what tells a node whose agent is gone.
//!
//! - Unscheduled pods still marked for deletion.
//!
//! All are force deletions: grace zero, guarded by the pod's uid.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use badge_api::{Status, meta, resources};
use badge_registry::{DeleteOptions, ReadFrom, Registry};
use parking_lot::Mutex;
use serde_json::Value;

use crate::runtime::{Action, Controller};
use crate::{leader, namespaced_key};

/// How long a Node must stay absent before its pods count as orphans.
pub const QUARANTINE: Duration = Duration::from_secs(40);
/// The namespace of node heartbeat Leases.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// Starts the collector; it reconciles while `leading` says this server leads (always when None).
pub fn spawn(registry: Arc<Registry>, leading: Option<leader::Leading>) {
    let nodes_prefix = resources::NODES.key_prefix();
    let pods_prefix = resources::PODS.key_prefix();
    let reg = registry.clone();
    let gc = Controller::new("pod-garbage-collector", registry.clone(), move |event| {
        if let Some((ns, name)) = namespaced_key(&event.key, &pods_prefix) {
            return vec![format!("{ns}/{name}")];
        }
        // A Node going away concerns every pod bound to it.
        let Some(node) = event.key.strip_prefix(&nodes_prefix) else {
            return Vec::new();
        };
        if event.kind != badge_registry::EventType::Deleted {
            return Vec::new();
        }
        reg.cache()
            .pods_on_node(node, "")
            .iter()
            .filter_map(|(key, _)| namespaced_key(key, &pods_prefix))
            .map(|(ns, name)| format!("{ns}/{name}"))
            .collect()
    });
    let gc = gc.with_leader_election(leading);
    let absent_since: Arc<Mutex<HashMap<String, tokio::time::Instant>>> = Arc::default();
    gc.spawn(move |key| {
        let registry = registry.clone();
        let absent_since = absent_since.clone();
        async move { reconcile(&registry, &absent_since, &key).await }
    });
}

fn node_of(pod: &Value) -> &str {
    pod.pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// What the collector does with a pod whose node exists.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Leave the pod.
    Keep,
    /// Look again after this long (the quarantine or the grace is still running).
    RecheckIn(Duration),
    /// Delete the pod with grace zero.
    ForceDelete,
}

fn until(at: jiff::Timestamp, now: jiff::Timestamp) -> Duration {
    let nanos = at.as_nanosecond() - now.as_nanosecond();
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(0)) + Duration::from_millis(10)
}

/// When the node's agent stops counting as live: its lease's last renewal plus the
/// lease's duration. None when there is no usable lease.
fn lease_expiry(lease: Option<&Value>) -> Option<jiff::Timestamp> {
    let spec = lease?.get("spec")?;
    let renewed: jiff::Timestamp = spec.get("renewTime")?.as_str()?.parse().ok()?;
    let seconds = spec.get("leaseDurationSeconds")?.as_i64()?;
    Some(renewed + jiff::SignedDuration::from_secs(seconds))
}

/// A pod bound to an existing node: kept, unless it terminates, its grace has passed and
/// its node's agent is not live.
pub fn judge(pod: &Value, lease: Option<&Value>, now: jiff::Timestamp) -> Verdict {
    let Some(deadline) = meta::deletion_timestamp(pod) else {
        return Verdict::Keep;
    };
    let Some(deadline) = meta::parse_time(deadline) else {
        return Verdict::Keep;
    };
    if now < deadline {
        return Verdict::RecheckIn(until(deadline, now));
    }
    match lease_expiry(lease) {
        // The agent is alive and will confirm; look again should it stop renewing.
        Some(expiry) if now < expiry => Verdict::RecheckIn(until(expiry, now)),
        _ => Verdict::ForceDelete,
    }
}

async fn reconcile(
    registry: &Registry,
    absent_since: &Mutex<HashMap<String, tokio::time::Instant>>,
    key: &str,
) -> Result<Action, Status> {
    let Some((namespace, name)) = key.split_once('/') else {
        return Ok(Action::Done);
    };
    let pods = resources::PODS;
    let Some(pod) = registry.get_cached(pods, namespace, name) else {
        return Ok(Action::Done);
    };
    let node = node_of(&pod);
    if node.is_empty() {
        // An unscheduled pod is deleted at once when asked; one still marked (written
        // before that rule, or held by finalizers) is finished as upstream's
        // gcUnscheduledTerminating does.
        if meta::deletion_timestamp(&pod).is_some() {
            return force_delete(registry, &pod).await;
        }
        return Ok(Action::Done);
    }
    let nodes = resources::NODES;
    if registry.get_cached(nodes, "", node).is_none() {
        let first = *absent_since
            .lock()
            .entry(node.to_string())
            .or_insert_with(tokio::time::Instant::now);
        let waited = first.elapsed();
        if waited < QUARANTINE {
            return Ok(Action::RequeueAfter(
                QUARANTINE - waited + Duration::from_millis(10),
            ));
        }
        // The cache may lag: only a Node absent from the store makes an orphan.
        match registry.get(nodes, "", node, ReadFrom::Latest).await {
            Ok(_) => return Ok(Action::Done),
            Err(s) if s.is_not_found() => {}
            Err(s) => return Err(s),
        }
        tracing::info!(pod = %key, node, "deleting an orphaned pod: its node does not exist");
        return force_delete(registry, &pod).await;
    }
    absent_since.lock().remove(node);
    let lease = registry.get_cached(resources::LEASES, NODE_LEASE_NAMESPACE, node);
    match judge(&pod, lease.as_deref(), badge_api::clock::now()) {
        Verdict::Keep => Ok(Action::Done),
        Verdict::RecheckIn(after) => Ok(Action::RequeueAfter(after)),
        Verdict::ForceDelete => {
            tracing::info!(pod = %key, node, "force-deleting a terminating pod: its grace has passed and its node has no live agent");
            force_delete(registry, &pod).await
        }
    }
}

async fn force_delete(registry: &Registry, pod: &Value) -> Result<Action, Status> {
    let options = DeleteOptions {
        precondition_uid: Some(meta::uid(pod).to_string()),
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    match registry
        .delete(resources::PODS, meta::namespace(pod), meta::name(pod), &options)
        .await
    {
        // Gone already, or replaced by another pod of the name (seen on its own event).
        Err(s) if s.is_not_found() || s.is_conflict() => Ok(Action::Done),
        Err(s) => Err(s),
        Ok(_) => Ok(Action::Done),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    fn lease(renewed: &str) -> Value {
        json!({"spec": {"renewTime": renewed, "leaseDurationSeconds": 40}})
    }

    #[test]
    fn a_running_pod_is_kept() {
        let pod = json!({"metadata": {}, "spec": {"nodeName": "n1"}});
        assert_eq!(judge(&pod, None, at("2026-01-01T00:00:00Z")), Verdict::Keep);
    }

    #[test]
    fn a_terminating_pod_waits_for_its_grace_then_for_a_live_agent() {
        let pod = json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:30Z", "deletionGracePeriodSeconds": 30}});
        assert_eq!(
            judge(&pod, None, at("2026-01-01T00:00:10Z")),
            Verdict::RecheckIn(Duration::from_millis(20_010))
        );
        let after = at("2026-01-01T00:00:31Z");
        assert_eq!(judge(&pod, None, after), Verdict::ForceDelete);
        assert_eq!(
            judge(&pod, Some(&lease("2026-01-01T00:00:21.000000Z")), after),
            Verdict::RecheckIn(Duration::from_millis(30_010)),
            "a live agent confirms itself"
        );
        assert_eq!(
            judge(&pod, Some(&lease("2025-12-31T23:59:00.000000Z")), after),
            Verdict::ForceDelete,
            "an expired lease is no agent"
        );
        assert_eq!(
            judge(&pod, Some(&json!({"spec": {}})), after),
            Verdict::ForceDelete
        );
    }
}
