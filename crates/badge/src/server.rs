//! `badge server`: config → build → serve → drain.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;

/// Flags of `badge server`, named as kube-apiserver's.
#[derive(Args, Debug)]
pub struct ServerOptions {
    /// Where the store, keys and certificates live.
    #[arg(long, default_value = "./badge-data")]
    data_dir: PathBuf,
    /// The address to serve on.
    #[arg(long, default_value = "127.0.0.1")]
    bind_address: IpAddr,
    /// The HTTPS port; 0 picks a free one.
    #[arg(long, default_value_t = 6443)]
    secure_port: u16,
    /// Extra names (DNS or IP) for the serving certificate.
    #[arg(long = "tls-san")]
    tls_san: Vec<String>,
    /// Treat requests without a credential as system:anonymous.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    anonymous_auth: bool,
    /// How many past events the watch cache keeps for watches resuming from a
    /// resourceVersion; older ones get 410 Gone.
    #[arg(long, default_value_t = badge_registry::cache::DEFAULT_HISTORY)]
    default_watch_cache_size: usize,
}

pub async fn run(options: ServerOptions) -> anyhow::Result<()> {
    create_private_dir(&options.data_dir)?;
    let store_path = options.data_dir.join("store.db");
    let store = badge_store::sqlite::SqliteStore::open(&store_path)
        .with_context(|| format!("opening the store at {}", store_path.display()))?;
    let store = Arc::new(store);
    store.spawn_compactor(std::time::Duration::from_secs(300));
    let registry = badge_registry::Registry::start(store, options.default_watch_cache_size).await;

    let mut sans = vec![options.bind_address.to_string()];
    sans.extend(options.tls_san.iter().cloned());
    let pki = badge_pki::Pki::load_or_create(&options.data_dir.join("pki"), &sans)
        .context("loading the certificates")?;
    let tls = pki
        .server_config(&[b"h2", b"http/1.1"])
        .context("building the TLS configuration")?;

    let listener = badge_apiserver::server::bind(SocketAddr::new(options.bind_address, options.secure_port))
        .await
        .with_context(|| format!("binding {}:{}", options.bind_address, options.secure_port))?;
    let address = listener.local_addr()?;
    let host = if address.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        address.ip().to_string()
    };
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    let server_url = format!("https://{host}:{}", address.port());
    let kubeconfig = options.data_dir.join("admin.kubeconfig");
    pki.write_admin_kubeconfig(&kubeconfig, &server_url)
        .context("writing the admin kubeconfig")?;

    badge_controllers::ensure_system_namespaces(&registry)
        .await
        .map_err(|s| anyhow::anyhow!("{s}"))?;
    badge_apiserver::rbac::reconcile_defaults(&registry)
        .await
        .map_err(|s| anyhow::anyhow!("reconciling the default RBAC policy: {s}"))?;
    let rbac = badge_apiserver::rbac::Rbac::start(registry.clone());
    badge_controllers::spawn_all(registry.clone(), pki.ca_pem().to_string());

    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let api = Arc::new(
        badge_apiserver::ApiServer::new(registry, options.anonymous_auth, shutdown_rx.clone())
            .with_rbac(rbac),
    );
    tracing::info!("serving securely on {address}");
    tracing::info!(
        "admin kubeconfig written: export KUBECONFIG={}",
        kubeconfig.display()
    );
    let serving = tokio::spawn(badge_apiserver::server::serve(api, listener, tls, shutdown_rx));

    wait_for_signal().await;
    tracing::info!("shutting down: draining in-flight requests");
    let _ = shutdown_tx.send(true);
    serving.await.context("the server task failed")?;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn create_private_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}
