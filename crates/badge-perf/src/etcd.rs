//! `badge-perf etcd`: ServiceAccount creates per second through badge on etcd, beside raw
//! etcd puts per second measured in the same run against the same single-member etcd
//! (started from Debian's `etcd-server`, or `$BADGE_ETCD`, in a temporary directory).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use badge_store::Store;
use serde_json::json;

use crate::server::Server;

/// Requests in flight, as the HTTP load generator's connection count.
const IN_FLIGHT: usize = 16;

pub(crate) async fn bench(quick: bool, badge: &Path, out: &Path) -> anyhow::Result<()> {
    let count = if quick { 2_000 } else { 10_000 };
    let etcd = tokio::task::spawn_blocking(|| badge_testkit::etcd::EtcdCluster::start(1)).await?;

    // Raw puts: the store client badge uses, IN_FLIGHT transactions of one put at a time,
    // values the size of a stored ServiceAccount.
    let store = badge_store_etcd::EtcdStore::new(badge_store_etcd::EtcdConfig::new(etcd.endpoints()))?;
    store.wait_ready(std::time::Duration::from_secs(10)).await?;
    let value = bytes::Bytes::from(
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "x".repeat(12),
            "namespace": "default", "uid": "00000000-0000-0000-0000-000000000000",
            "creationTimestamp": "2026-01-01T00:00:00Z"}})
        .to_string(),
    );
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..IN_FLIGHT {
        let (store, next, value) = (store.clone(), next.clone(), value.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= count {
                    return Ok::<_, badge_store::Error>(());
                }
                store.create(&format!("/bench/raw-{i}"), value.clone()).await?;
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    let raw = count as f64 / started.elapsed().as_secs_f64();
    let _ = store.current_revision().await?;
    eprintln!("raw etcd puts: {raw:.0}/s");

    // The same number of ServiceAccount creates through badge, over HTTPS.
    let endpoints = etcd.endpoints_flag();
    let (server, _) = Server::start(
        badge,
        tempfile::tempdir()?,
        &["--storage", "etcd", "--etcd-servers", &endpoints],
    )?;
    let bodies: Vec<String> = (0..count)
        .map(|i| {
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": format!("bench-{i}")}})
                .to_string()
        })
        .collect();
    let result = server.load("/api/v1/namespaces/default/serviceaccounts", &bodies, 0.0, true)?;
    let creates = result["rps"].as_f64().unwrap_or(0.0);
    let errors = result["errors"].as_u64().unwrap_or(0);
    let (p50, p99) = (
        result["p50_us"].as_f64().unwrap_or(0.0) / 1000.0,
        result["p99_us"].as_f64().unwrap_or(0.0) / 1000.0,
    );

    // Revocation seen by another server: a pod deleted through one server, its token
    // reviewed (and cached as verified) on a second one sharing the pki directory.
    let peer_dir = tempfile::tempdir()?;
    copy_dir(&server.path.join("pki"), &peer_dir.path().join("pki"))?;
    let (peer, _) = Server::start(
        badge,
        peer_dir,
        &["--storage", "etcd", "--etcd-servers", &endpoints],
    )?;
    let revocation = crate::tokens::revocation_ms(&server, &peer).await?;
    drop(peer);
    drop(server);
    drop(etcd);

    let ratio = creates / raw;
    let table = format!(
        "| path | figure | limit | ratio |\n|---|---|---|---|\n\
         | ServiceAccount create through badge on etcd | {creates:.0}/s, p50 {p50:.1} ms, p99 {p99:.1} ms, {errors} errors | raw etcd puts {raw:.0}/s | {ratio:.2} |\n\
         | revocation on another server | {revocation:.1} ms from pod delete on one server to a failing TokenReview on the other (median of 5) | 1000 ms | - |\n\n\
         {count} creates, {IN_FLIGHT} in flight, one etcd member on this machine's disk.\n"
    );
    println!("{table}");
    std::fs::create_dir_all(out)?;
    std::fs::write(out.join("etcd.md"), &table)?;
    std::fs::write(
        out.join("etcd.json"),
        serde_json::to_vec_pretty(&json!({
            "count": count, "in_flight": IN_FLIGHT,
            "raw_etcd_puts_per_second": raw,
            "serviceaccount_creates_per_second": creates,
            "p50_ms": p50, "p99_ms": p99, "errors": errors, "ratio": ratio,
            "cross_server_revocation_ms": revocation,
        }))?,
    )?;
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        std::fs::copy(entry.path(), to.join(entry.file_name()))?;
    }
    Ok(())
}
