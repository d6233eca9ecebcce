//! The end of a pod's life as the kubelet finishes it: once a pod bound to this node is
//! marked for deletion, its volumes are removed and the deletion is confirmed with a grace
//! of zero and a uid precondition (pkg/kubelet/status/status_manager.go), so the server
//! removes the object and its tokens die with it. Nothing runs in the pod here, so there is
//! nothing to stop first.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::bail;
use badge_client::{Client, error_text};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::schedule;

const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A pod whose deletion this node has yet to confirm.
struct Pending {
    namespace: String,
    name: String,
    due: Instant,
    failures: u32,
}

/// The terminating pods of this node, by uid.
#[derive(Default)]
pub struct Terminations {
    pending: HashMap<String, Pending>,
}

/// Whether the server marked `pod` for deletion.
pub fn is_terminating(pod: &Value) -> bool {
    pod.pointer("/metadata/deletionTimestamp").is_some()
}

impl Terminations {
    /// Schedules the confirmation of a terminating pod (once per uid). A grace of zero is
    /// already the server's own final deletion (or one that waits for finalizers only).
    pub fn note(&mut self, uid: &str, pod: &Value) {
        if pod
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            == Some(0)
        {
            return;
        }
        let text = |p: &str| pod.pointer(p).and_then(Value::as_str).unwrap_or("").to_string();
        self.pending.entry(uid.to_string()).or_insert_with(|| Pending {
            namespace: text("/metadata/namespace"),
            name: text("/metadata/name"),
            due: Instant::now(),
            failures: 0,
        });
    }

    /// The pod is gone: nothing left to confirm.
    pub fn forget(&mut self, uid: &str) {
        self.pending.remove(uid);
    }

    /// When the next pending deletion is due to be confirmed, if any is pending.
    pub fn next_due(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.due).min()
    }

    /// Confirms every deletion that is due; a failure is retried with backoff.
    pub async fn confirm_due(&mut self, client: &Client) {
        let now = Instant::now();
        let due: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| p.due <= now)
            .map(|(uid, _)| uid.clone())
            .collect();
        for uid in due {
            let Some(pending) = self.pending.get_mut(&uid) else {
                continue;
            };
            match confirm(client, &pending.namespace, &pending.name, &uid).await {
                Ok(()) => {
                    tracing::info!(pod = %format_args!("{}/{}", pending.namespace, pending.name), pod_uid = %uid, "pod deletion confirmed");
                    self.pending.remove(&uid);
                }
                Err(e) => {
                    pending.failures += 1;
                    let wait = schedule::backoff(pending.failures, MAX_BACKOFF);
                    tracing::warn!(pod_uid = %uid, error = %format!("{e:#}"), retry_in = ?wait, "confirming a pod deletion failed");
                    pending.due = Instant::now() + wait;
                }
            }
        }
    }
}

/// Deletes the pod with a grace of zero, only if it is still the pod of that uid. A pod
/// already gone, or replaced by another of the same name, needs nothing more.
async fn confirm(client: &Client, namespace: &str, name: &str, uid: &str) -> anyhow::Result<()> {
    let options = json!({
        "apiVersion": "v1",
        "kind": "DeleteOptions",
        "gracePeriodSeconds": 0,
        "preconditions": {"uid": uid},
    });
    let (status, body) = client
        .request(
            "DELETE",
            &format!("/api/v1/namespaces/{namespace}/pods/{name}"),
            Some(options),
        )
        .await?;
    match status {
        200 | 202 | 404 | 409 => Ok(()),
        _ => bail!(
            "deleting pod {namespace}/{name} ({status}): {}",
            error_text(&body)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_pod_in_its_grace_awaits_this_nodes_confirmation() {
        let mut terminations = Terminations::default();
        let running = json!({"metadata": {"name": "a", "namespace": "default"}});
        assert!(!is_terminating(&running));
        let graceful = json!({"metadata": {"name": "b", "namespace": "default",
            "deletionTimestamp": "2026-01-01T00:00:30Z", "deletionGracePeriodSeconds": 30}});
        let final_mark = json!({"metadata": {"name": "c", "namespace": "default",
            "deletionTimestamp": "2026-01-01T00:00:00Z", "deletionGracePeriodSeconds": 0}});
        assert!(is_terminating(&graceful) && is_terminating(&final_mark));
        terminations.note("uid-c", &final_mark);
        assert!(
            terminations.next_due().is_none(),
            "grace 0 is the server's own deletion"
        );
        terminations.note("uid-b", &graceful);
        assert!(terminations.next_due().is_some());
        terminations.forget("uid-b");
        assert!(terminations.next_due().is_none());
    }
}
