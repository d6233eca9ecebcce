//! Leader election through a `coordination.k8s.io/v1` Lease, as kube-controller-manager's
//! (`client-go/tools/leaderelection`): the holder renews the Lease every few seconds; when
//! it stops for longer than the lease duration another server takes it over. Controllers
//! reconcile only while their server leads.

use std::sync::Arc;
use std::time::Duration;

use badge_api::{Status, meta, resources};
use badge_registry::{ReadFrom, Registry, WriteOptions};
use serde_json::{Value, json};
use tokio::sync::watch;

/// Where the Lease is kept, as kube-controller-manager keeps its own.
pub const LEASE_NAMESPACE: &str = "kube-system";
/// The Lease's name.
pub const LEASE_NAME: &str = "badge-controller-manager";
/// How long a lease lasts without renewal (upstream's default 15 s).
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the holder renews, and others retry (upstream's retry period 2 s).
pub const RETRY_PERIOD: Duration = Duration::from_secs(2);

/// A `MicroTime` as the API writes it.
fn micro_time(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// Whether this server leads, as it changes.
pub type Leading = watch::Receiver<bool>;

/// Starts electing; the receiver tells whether `identity` holds the lease.
pub fn spawn(registry: Arc<Registry>, identity: String) -> Leading {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        loop {
            let leading = match try_acquire_or_renew(&registry, &identity).await {
                Ok(leading) => leading,
                Err(status) => {
                    tracing::warn!(error = %status, "leader election: could not reach the lease");
                    false
                }
            };
            if *tx.borrow() != leading {
                tracing::info!(%identity, leading, "leader election: leadership changed");
            }
            tx.send_replace(leading);
            tokio::time::sleep(RETRY_PERIOD).await;
        }
    });
    rx
}

/// One round: take a free or expired lease, renew our own, or observe another holder.
async fn try_acquire_or_renew(registry: &Registry, identity: &str) -> Result<bool, Status> {
    let now = badge_api::clock::now();
    let duration = LEASE_DURATION.as_secs() as i64;
    let current = match registry
        .get(resources::LEASES, LEASE_NAMESPACE, LEASE_NAME, ReadFrom::Latest)
        .await
    {
        Ok(lease) => Some(lease),
        Err(s) if s.is_not_found() => None,
        Err(s) => return Err(s),
    };
    let Some(current) = current else {
        let lease = json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": LEASE_NAME, "namespace": LEASE_NAMESPACE},
            "spec": {
                "holderIdentity": identity,
                "leaseDurationSeconds": duration,
                "acquireTime": micro_time(now),
                "renewTime": micro_time(now),
                "leaseTransitions": 0,
            },
        });
        return match registry
            .create(
                resources::LEASES,
                LEASE_NAMESPACE,
                lease,
                &WriteOptions::default(),
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(s) if s.is_already_exists() => Ok(false),
            Err(s) => Err(s),
        };
    };
    let holder = current
        .pointer("/spec/holderIdentity")
        .and_then(Value::as_str)
        .unwrap_or("");
    let renewed = current
        .pointer("/spec/renewTime")
        .and_then(Value::as_str)
        .and_then(meta::parse_time)
        .map_or(0, |t| t.as_second());
    let held_by_other = !holder.is_empty() && holder != identity && now.as_second() < renewed + duration;
    if held_by_other {
        return Ok(false);
    }
    let expected_rv = meta::resource_version(&current).to_string();
    let taking_over = holder != identity;
    let result = registry
        .update(
            resources::LEASES,
            LEASE_NAMESPACE,
            LEASE_NAME,
            "",
            &WriteOptions::default(),
            |latest| {
                // Someone else renewed between our read and this write: not ours.
                if meta::resource_version(latest) != expected_rv {
                    return Err(Status::conflict(
                        resources::LEASES.group_resource(),
                        LEASE_NAME,
                        Status::OPTIMISTIC_LOCK_MESSAGE,
                    ));
                }
                let mut lease = latest.clone();
                let spec = lease
                    .as_object_mut()
                    .map(|o| o.entry("spec").or_insert_with(|| json!({})));
                if let Some(Value::Object(spec)) = spec {
                    spec.insert("holderIdentity".into(), json!(identity));
                    spec.insert("leaseDurationSeconds".into(), json!(duration));
                    spec.insert("renewTime".into(), json!(micro_time(now)));
                    if taking_over {
                        let transitions = spec.get("leaseTransitions").and_then(Value::as_i64).unwrap_or(0);
                        spec.insert("leaseTransitions".into(), json!(transitions + 1));
                        spec.insert("acquireTime".into(), json!(micro_time(now)));
                    }
                }
                Ok(lease)
            },
        )
        .await;
    match result {
        Ok(_) => Ok(true),
        Err(s) if s.is_conflict() || s.is_not_found() => Ok(false),
        Err(s) => Err(s),
    }
}
