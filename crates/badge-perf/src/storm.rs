//! Section 9: a refresh storm: every pod of a big node asks for its projected token at once,
//! as after the node agent restarts (kubernetes/kubernetes#124646).

use std::path::Path;

use serde_json::json;

use crate::report::{Row, row};
use crate::server::Server;

const PODS: usize = 10_000;
/// Below the default limit of mutating requests in flight (200): the storm measures the token
/// path, not the limiter.
const CONNECTIONS: &str = "128";

pub(crate) async fn measure(badge: &Path) -> anyhow::Result<Vec<Row>> {
    let (server, _) = Server::start(
        badge,
        tempfile::tempdir()?,
        &["--service-account-signing-key-type=RS256"],
    )?;
    let pods: Vec<String> = (0..PODS)
        .map(|i| {
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("p-{i}")},
                "spec": {"containers": [{"name": "c", "image": "i"}]}})
            .to_string()
        })
        .collect();
    let created = server.load("/api/v1/namespaces/default/pods", &pods, 0.0, true)?;
    anyhow::ensure!(created["errors"] == 0, "creating the pods failed: {created}");
    let requests: Vec<String> = (0..PODS)
        .map(|i| {
            json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "spec": {"expirationSeconds": 3607, "boundObjectRef":
                    {"apiVersion": "v1", "kind": "Pod", "name": format!("p-{i}")}}})
            .to_string()
        })
        .collect();
    // All sent within one second whether or not the earlier ones were answered; each latency
    // counts from when its request was due.
    let storm = server.load_with(
        "/api/v1/namespaces/default/serviceaccounts/default/token",
        &requests,
        0.0,
        true,
        &["--rate", &PODS.to_string(), "--connections", CONNECTIONS],
    )?;
    server.stop()?;
    let served = storm["requests"].as_u64().unwrap_or(0);
    let refused = storm["errors"].as_u64().unwrap_or(u64::MAX);
    Ok(vec![row(
        "9 refresh storm",
        format!(
            "{PODS} Pod-bound TokenRequests RS256 due within 1 s on {CONNECTIONS} connections: {} served, \
             the last answered after {:.2} s, p50 {} µs, p99 {} µs, {refused} not 2xx",
            served - refused.min(served),
            storm["seconds"].as_f64().unwrap_or(0.0),
            storm["p50_us"],
            storm["p99_us"],
        ),
        "0 not 2xx".into(),
        None,
        "all served",
        Some(refused == 0 && served == PODS as u64),
    )])
}
