//! `badge kms-plugin`: the reference KMS v2 plugin, for tests and single-machine use.

use std::path::PathBuf;
use std::sync::Arc;

use badge_encryption::kms::plugin;
use clap::Args;

#[derive(Args, Debug)]
pub(crate) struct KmsPluginOptions {
    /// The key file: one base64 32-byte AES key per line, newest first (the first encrypts,
    /// all decrypt). Written with a fresh key (mode 0600) when absent. Put a new key on top
    /// to rotate; the file is re-read on every status call.
    #[arg(long)]
    key_file: PathBuf,
    /// Where to serve, a unix socket (`unix:///path`), created with mode 0600. Name the
    /// same endpoint in the server's EncryptionConfiguration.
    #[arg(long)]
    listen: String,
}

pub(crate) async fn run(
    options: KmsPluginOptions,
    terminated: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let socket = plugin::socket_path(&options.listen).map_err(|e| anyhow::anyhow!("--listen: {e}"))?;
    if let Ok(metadata) = std::fs::metadata(&options.key_file) {
        use std::os::unix::fs::PermissionsExt;
        let mode = metadata.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            let path = options.key_file.display();
            anyhow::bail!("{path} is open to its group or others (mode {mode:04o}); run chmod 600 {path}");
        }
    }
    let keys = plugin::PluginKeys::load_or_create(&options.key_file)
        .map_err(|e| anyhow::anyhow!("--key-file: {e}"))?;
    let listener =
        plugin::bind(&socket).map_err(|e| anyhow::anyhow!("listening on {}: {e}", socket.display()))?;
    tracing::info!(socket = %socket.display(), "kms plugin serving");
    let served = plugin::serve(listener, Arc::new(keys), terminated).await;
    let _ = std::fs::remove_file(&socket);
    served.map_err(|e| anyhow::anyhow!("serving on {}: {e}", socket.display()))
}
