//! Noticing the API server's return after an outage. While requests fail to connect,
//! volumes back off; a cheap probe (`GET /readyz`, once a second) watches for the server
//! instead, and its first answer makes the waiting volumes due, so tokens are refreshed
//! within seconds of the server's return rather than at the end of a long backoff.

use std::sync::Arc;
use std::time::Duration;

use badge_client::Client;

/// Between probes while the server is unreachable.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Probes the server whenever `client` has failed to reach it, until it answers; runs
/// until aborted or the client is dropped.
pub async fn probe(client: Arc<Client>) {
    let mut reachable = client.reachability();
    loop {
        if reachable.wait_for(|r| !*r).await.is_err() {
            return;
        }
        tracing::info!(
            server = client.server(),
            "the API server is unreachable; probing it"
        );
        loop {
            tokio::time::sleep(PROBE_INTERVAL).await;
            // Ready, not merely listening: a retry that fails again would back off anew.
            if let Ok((200, _)) = client.request("GET", "/readyz", None).await {
                tracing::info!(server = client.server(), "the API server answers again");
                client.set_reachable(true);
                break;
            }
        }
    }
}
