//! The node's heartbeat as the kubelet keeps it (pkg/kubelet/nodelease, component-helpers
//! apimachinery/lease/controller.go): a Lease named after the node in `kube-node-lease`,
//! renewed every quarter of its duration. The server's pod garbage collector reads it to
//! tell a node whose agent is gone.

use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use badge_client::{Client, error_text};
use serde_json::{Value, json};

use crate::schedule;

/// The kubelet's default `nodeLeaseDurationSeconds`.
pub const LEASE_DURATION_SECONDS: u64 = 40;
/// The namespace that holds every node's Lease.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";

/// Renews the lease until the returned handle is dropped.
pub fn keep_renewed(client: Arc<Client>, node: String) -> AbortOnDrop {
    AbortOnDrop(tokio::spawn(async move {
        let interval = Duration::from_secs(LEASE_DURATION_SECONDS / 4);
        let mut failures = 0;
        loop {
            match renew(&client, &node).await {
                Ok(()) => {
                    failures = 0;
                    tokio::time::sleep(interval).await;
                }
                Err(e) => {
                    failures += 1;
                    let wait = schedule::backoff(failures, interval);
                    tracing::warn!(error = %format!("{e:#}"), retry_in = ?wait, "renewing the node lease failed");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }))
}

/// Stops a task when dropped.
pub struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn micro_time(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// Writes a fresh `renewTime`, creating the Lease (owned by the Node, so it goes with it)
/// when missing.
async fn renew(client: &Client, node: &str) -> anyhow::Result<()> {
    let path = format!("/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases/{node}");
    let now = micro_time(crate::clock::timestamp());
    let (status, mut lease) = client.request("GET", &path, None).await?;
    match status {
        200 => {
            lease["spec"]["holderIdentity"] = json!(node);
            lease["spec"]["leaseDurationSeconds"] = json!(LEASE_DURATION_SECONDS);
            lease["spec"]["renewTime"] = json!(now);
            let (status, body) = client.request("PUT", &path, Some(lease)).await?;
            if status != 200 {
                bail!(
                    "renewing Lease {LEASE_NAMESPACE}/{node} ({status}): {}",
                    error_text(&body)
                );
            }
        }
        404 => {
            let mut lease = json!({
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": node, "namespace": LEASE_NAMESPACE},
                "spec": {"holderIdentity": node, "leaseDurationSeconds": LEASE_DURATION_SECONDS, "renewTime": now},
            });
            let (status, owner) = client
                .request("GET", &format!("/api/v1/nodes/{node}"), None)
                .await?;
            if status == 200
                && let Some(uid) = owner.pointer("/metadata/uid").and_then(Value::as_str)
            {
                lease["metadata"]["ownerReferences"] =
                    json!([{"apiVersion": "v1", "kind": "Node", "name": node, "uid": uid}]);
            }
            let (status, body) = client
                .request(
                    "POST",
                    &format!("/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases"),
                    Some(lease),
                )
                .await?;
            if status != 201 && status != 409 {
                bail!(
                    "creating Lease {LEASE_NAMESPACE}/{node} ({status}): {}",
                    error_text(&body)
                );
            }
        }
        _ => bail!(
            "reading Lease {LEASE_NAMESPACE}/{node} ({status}): {}",
            error_text(&lease)
        ),
    }
    Ok(())
}
