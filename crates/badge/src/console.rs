//! Starting the web console beside the API (`--console-bind-address`).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use badge_apiserver::console::{ApiBackend, Console};

/// Binds the console's port and serves it until `shutdown`, with the API's TLS
/// configuration, request limits and connection limit.
pub(crate) async fn start(
    address: SocketAddr,
    api: Arc<badge_apiserver::ApiServer>,
    tls: Arc<rustls::ServerConfig>,
    shutdown: tokio::sync::watch::Receiver<bool>,
    serve_options: &badge_apiserver::server::ServeOptions,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = badge_apiserver::server::bind(address)
        .await
        .with_context(|| format!("binding the console to {address}"))?;
    let bound = listener.local_addr()?;
    tracing::info!("console listening on https://{bound}/console/");
    let console = Arc::new(Console::new(ApiBackend {
        api,
        filters: badge_apiserver::limits::RequestFilters::new(&serve_options.limits),
    }));
    Ok(tokio::spawn(badge_apiserver::console::serve(
        console,
        listener,
        tls,
        shutdown,
        serve_options.max_connections,
    )))
}
