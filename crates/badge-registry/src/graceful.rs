//! Graceful deletion (`rest.BeforeDelete` with the pod strategy's `CheckGracefulDelete`):
//! a pod bound to a node is first marked with a deletion time and grace period, so that
//! its node can stop it, and removed when the node confirms with a grace of zero.

use badge_api::meta;
use badge_api::resources::Resource;
use serde_json::Value;

use crate::strategy::Deletion;

/// What a delete request does to an object.
#[derive(Debug, PartialEq, Eq)]
pub enum GracefulDelete {
    /// No grace applies: delete now (or mark for finalizers).
    Immediate,
    /// A graceful deletion already runs and this request does not shorten it.
    Pending,
    /// Write this deletion time and grace period; a grace of zero then deletes at once.
    Mark {
        /// RFC 3339 time to write as `metadata.deletionTimestamp`.
        deletion_timestamp: String,
        /// Seconds to write as `metadata.deletionGracePeriodSeconds`.
        grace_period_seconds: i64,
    },
}

/// Decides a delete of `object` (a resource's current state) with the request's
/// `gracePeriodSeconds`, at `now`.
pub fn plan(
    resource: &Resource,
    object: &Value,
    requested: Option<i64>,
    now: jiff::Timestamp,
) -> GracefulDelete {
    if crate::strategy::of(resource).deletion != Deletion::Graceful {
        return GracefulDelete::Immediate;
    }
    // A negative grace means one second on the delete path.
    let requested = requested.map(|g| if g < 0 { 1 } else { g });
    if let Some(marked) = meta::deletion_timestamp(object) {
        let current = object
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .map(|g| if g < 0 { 1 } else { g });
        // Marked without a grace (a mark whose delete failed): finish it now.
        let Some(current) = current.filter(|g| *g > 0) else {
            return GracefulDelete::Immediate;
        };
        // Only a shorter grace may be asked for, measured from the original request.
        return match requested {
            Some(period) if period < current => {
                let Some(marked) = meta::parse_time(marked) else {
                    return GracefulDelete::Immediate;
                };
                let shortened = marked - jiff::SignedDuration::from_secs(current)
                    + jiff::SignedDuration::from_secs(period);
                GracefulDelete::Mark {
                    deletion_timestamp: meta::format_time(shortened),
                    grace_period_seconds: period,
                }
            }
            _ => GracefulDelete::Pending,
        };
    }
    let mut period = requested.unwrap_or_else(|| {
        object
            .pointer("/spec/terminationGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0)
    });
    // Nothing runs a pod that no node has, nor one that has finished.
    let node = object
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("");
    let phase = object
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("");
    if node.is_empty() || matches!(phase, "Failed" | "Succeeded") {
        period = 0;
    }
    GracefulDelete::Mark {
        deletion_timestamp: meta::format_time(now + jiff::SignedDuration::from_secs(period)),
        grace_period_seconds: period,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use badge_api::resources;
    use serde_json::json;

    fn at(s: &str) -> jiff::Timestamp {
        meta::parse_time(s).unwrap()
    }

    const NOW: &str = "2026-01-01T00:00:00Z";

    fn mark(ts: &str, grace: i64) -> GracefulDelete {
        GracefulDelete::Mark {
            deletion_timestamp: ts.into(),
            grace_period_seconds: grace,
        }
    }

    #[test]
    fn a_pod_on_a_node_gets_its_grace() {
        let pod = json!({"spec": {"nodeName": "n1", "terminationGracePeriodSeconds": 30}, "status": {"phase": "Running"}});
        assert_eq!(
            plan(resources::PODS, &pod, None, at(NOW)),
            mark("2026-01-01T00:00:30Z", 30)
        );
        assert_eq!(
            plan(resources::PODS, &pod, Some(5), at(NOW)),
            mark("2026-01-01T00:00:05Z", 5)
        );
        assert_eq!(plan(resources::PODS, &pod, Some(0), at(NOW)), mark(NOW, 0));
        assert_eq!(
            plan(resources::PODS, &pod, Some(-3), at(NOW)),
            mark("2026-01-01T00:00:01Z", 1)
        );
    }

    #[test]
    fn unscheduled_or_finished_pods_go_at_once() {
        let unscheduled = json!({"spec": {"terminationGracePeriodSeconds": 30}});
        assert_eq!(
            plan(resources::PODS, &unscheduled, Some(10), at(NOW)),
            mark(NOW, 0)
        );
        let done = json!({"spec": {"nodeName": "n1"}, "status": {"phase": "Succeeded"}});
        assert_eq!(plan(resources::PODS, &done, None, at(NOW)), mark(NOW, 0));
        assert_eq!(
            plan(resources::SECRETS, &json!({}), Some(30), at(NOW)),
            GracefulDelete::Immediate
        );
    }

    #[test]
    fn a_second_delete_may_only_shorten_the_grace() {
        let pod = json!({
            "metadata": {"deletionTimestamp": "2026-01-01T00:00:30Z", "deletionGracePeriodSeconds": 30},
            "spec": {"nodeName": "n1"},
        });
        let later = at("2026-01-01T00:00:10Z");
        assert_eq!(plan(resources::PODS, &pod, None, later), GracefulDelete::Pending);
        assert_eq!(
            plan(resources::PODS, &pod, Some(30), later),
            GracefulDelete::Pending
        );
        assert_eq!(
            plan(resources::PODS, &pod, Some(60), later),
            GracefulDelete::Pending
        );
        // Measured from the first request, not from now.
        assert_eq!(
            plan(resources::PODS, &pod, Some(5), later),
            mark("2026-01-01T00:00:05Z", 5)
        );
        assert_eq!(plan(resources::PODS, &pod, Some(0), later), mark(NOW, 0));
        let zero = json!({"metadata": {"deletionTimestamp": NOW, "deletionGracePeriodSeconds": 0}});
        assert_eq!(
            plan(resources::PODS, &zero, None, later),
            GracefulDelete::Immediate
        );
    }
}
