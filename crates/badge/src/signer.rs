//! `badge signer` and `badge server --external-signer-socket`: upstream's ExternalJWTSigner
//! gRPC API over badge's ServiceAccount keys, for a kube-apiserver's
//! `--service-account-signing-endpoint`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use badge_keys::external_signer::{self, ExternalSigner};
use clap::Args;

use crate::server::{StorageOptions, parse_duration};

#[derive(Args, Debug)]
pub(crate) struct SignerOptions {
    /// The unix socket to serve on, created with mode 0600 (kube-apiserver's
    /// `--service-account-signing-endpoint`).
    #[arg(long)]
    socket: PathBuf,
    /// The data dir of a server of the deployment: its certificates hold the key ring's
    /// sealing key, and with embedded storage it holds the store.
    #[arg(long, default_value = "./badge-data")]
    data_dir: PathBuf,
    /// The longest token lifetime reported to kube-apiserver (a Go duration, at least 10m);
    /// keep it within the servers' `--service-account-max-token-expiration`.
    #[arg(long, default_value = "8760h")]
    service_account_max_token_expiration: String,
    /// How long the signer goes on signing with a key ring it cannot confirm current in the
    /// store; past it Sign fails as the server's TokenRequest does (a Go duration).
    #[arg(long, default_value = "30s")]
    storage_stale_read_bound: String,
    #[command(flatten)]
    storage: StorageOptions,
}

/// Binds `socket` and serves the signer API over `keys` until `shutdown` turns true.
pub(crate) fn spawn(
    socket: &Path,
    keys: Arc<badge_keys::ServiceAccountKeys>,
    max_token_expiration_seconds: i64,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener =
        external_signer::bind(socket).with_context(|| format!("listening on {}", socket.display()))?;
    let signer = Arc::new(ExternalSigner::new(keys, max_token_expiration_seconds));
    tracing::info!(socket = %socket.display(), "external JWT signer serving");
    let socket = socket.to_path_buf();
    Ok(tokio::spawn(async move {
        let stopped = async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        };
        if let Err(e) = external_signer::serve(listener, signer, stopped).await {
            tracing::error!(error = %e, socket = %socket.display(), "external JWT signer stopped");
        }
        let _ = std::fs::remove_file(&socket);
    }))
}

pub(crate) async fn run(
    options: SignerOptions,
    terminated: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let max_expiration = parse_duration(&options.service_account_max_token_expiration)
        .context("--service-account-max-token-expiration")?;
    if max_expiration < 600 {
        anyhow::bail!("--service-account-max-token-expiration must be at least 10m");
    }
    let bound = parse_duration(&options.storage_stale_read_bound).context("--storage-stale-read-bound")?;
    if bound < 1 {
        anyhow::bail!("--storage-stale-read-bound must be at least 1s");
    }
    let pki_dir = options.data_dir.join("pki");
    if !pki_dir.is_dir() {
        anyhow::bail!(
            "{} holds no certificates: point --data-dir at a server's data dir",
            options.data_dir.display()
        );
    }
    crate::permissions::check_private(&options.data_dir)?;
    let pki = badge_pki::Pki::load_or_create(&pki_dir, &[]).context("loading the certificates")?;
    let seal_key = pki
        .keyring_seal_key()
        .context("loading the key ring's sealing key")?;
    if options.storage.storage == "embedded" {
        tracing::warn!(
            "with the embedded store this signer sees key rotations only when restarted; use etcd storage or `badge server --external-signer-socket`"
        );
    }
    let store = options.storage.open(&options.data_dir).await?;
    // The signer follows the ring the servers keep; it never makes one.
    match store.get(badge_keys::KEYRING_KEY).await {
        Ok((Some(_), _)) => {}
        Ok((None, _)) => {
            anyhow::bail!("the store holds no signing keys yet: start a badge server on it first")
        }
        Err(e) => anyhow::bail!("reading the signing keys: {e}"),
    }
    let bound = std::time::Duration::from_secs(bound as u64);
    let registry = badge_registry::Registry::start_with_bound(
        store.clone(),
        badge_registry::cache::DEFAULT_HISTORY,
        bound,
    )
    .await;
    let keys = badge_keys::ServiceAccountKeys::load(
        store,
        badge_keys::StoredRing::new(&seal_key),
        badge_keys::KeyType::Rs256,
        None,
        None,
        Vec::new(),
        max_expiration + 60,
    )
    .await
    .map_err(|s| anyhow::anyhow!("loading the service account keys: {}", s.message))?;
    keys.spawn_watch(registry, bound);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let serving = spawn(&options.socket, keys, max_expiration, stop_rx)?;
    terminated.await;
    let _ = stop_tx.send(true);
    serving.await.context("the signer task failed")?;
    Ok(())
}
