//! `badge encryption status|rotate`: how stored objects are encrypted, and the rewrite that
//! moves them all under the configuration's current write key (upstream's
//! `kubectl get secrets -A -o json | kubectl replace -f -`, done on the store).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Subcommand};

use badge_encryption::operate::{self, DEFAULT_PAGE};
use badge_store::Store;

use crate::server::{EtcdOptions, open_embedded};

#[derive(Subcommand, Debug)]
pub(crate) enum EncryptionCommand {
    /// Count, per resource, the stored objects under each provider and key; fail when some
    /// sit under a key the configuration no longer lists.
    Status(StoreArgs),
    /// Rewrite every object of the configured resources that is not under the current write
    /// key. Resumable, and safe beside servers sharing an etcd store.
    Rotate(RotateArgs),
}

/// Which store and configuration, as `badge server` takes them.
#[derive(Args, Debug)]
pub(crate) struct StoreArgs {
    /// The data dir: its embedded store, and its default encryption configuration.
    #[arg(long, default_value = "./badge-data")]
    data_dir: PathBuf,
    /// `embedded` (SQLite in the data dir) or `etcd`.
    #[arg(long = "storage", default_value = "embedded")]
    storage: String,
    #[command(flatten)]
    etcd: EtcdOptions,
    /// The EncryptionConfiguration (default: <data-dir>/pki/encryption-config.yaml).
    #[arg(long = "encryption-provider-config")]
    encryption_provider_config: Option<PathBuf>,
    /// Keys read per page.
    #[arg(long, default_value_t = DEFAULT_PAGE)]
    chunk_size: usize,
}

#[derive(Args, Debug)]
pub(crate) struct RotateArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Rewrite at most this many objects, then stop (0: all); run again to go on.
    #[arg(long, default_value_t = 0)]
    limit: u64,
}

impl StoreArgs {
    /// The raw store (values as stored, nothing decrypted) and the configuration.
    async fn open(&self) -> anyhow::Result<(Arc<dyn Store>, badge_encryption::Encryption)> {
        let config = self.encryption_provider_config.clone().unwrap_or_else(|| {
            self.data_dir
                .join("pki")
                .join(badge_encryption::DEFAULT_CONFIG_FILE)
        });
        // Never written here: a fresh key would describe nothing stored.
        if !config.exists() {
            anyhow::bail!(
                "no encryption configuration at {}; pass --encryption-provider-config",
                config.display()
            );
        }
        let encryption = badge_encryption::Encryption::load(&config)
            .map_err(|e| anyhow::anyhow!("{}: {e}", config.display()))?;
        let store: Arc<dyn Store> = match self.storage.as_str() {
            "embedded" => {
                let path = self.data_dir.join("store.db");
                if !path.exists() {
                    anyhow::bail!("no embedded store at {}", path.display());
                }
                Arc::new(open_embedded(&self.data_dir)?)
            }
            "etcd" => Arc::new(self.etcd.connect().await?),
            other => anyhow::bail!("--storage must be embedded or etcd, not {other:?}"),
        };
        Ok((store, encryption))
    }
}

pub(crate) async fn run(command: EncryptionCommand) -> anyhow::Result<()> {
    match command {
        EncryptionCommand::Status(args) => status(args).await,
        EncryptionCommand::Rotate(args) => rotate(args).await,
    }
}

async fn status(args: StoreArgs) -> anyhow::Result<()> {
    let (store, encryption) = args.open().await?;
    let statuses = operate::status(&*store, &encryption, args.chunk_size)
        .await
        .context("reading the store")?;
    let mut missing = Vec::new();
    for status in &statuses {
        println!("{status}");
        for under in &status.unreadable {
            let count = status.counts.get(under).copied().unwrap_or(0);
            missing.push(format!("{count} {} under {under}", status.resource));
        }
    }
    if !missing.is_empty() {
        anyhow::bail!(
            "stored objects are under keys the encryption configuration does not list, and cannot be read: {}",
            missing.join(", ")
        );
    }
    Ok(())
}

async fn rotate(args: RotateArgs) -> anyhow::Result<()> {
    let (store, encryption) = args.store.open().await?;
    let report = operate::rotate(&*store, &encryption, args.store.chunk_size, args.limit, |p| {
        println!(
            "{}: {} scanned, {} rewritten, {} already current, {} changed meanwhile",
            p.resource, p.scanned, p.report.rewritten, p.report.current, p.report.conflicts
        )
    })
    .await
    .context("rewriting the store")?;
    for (key, error) in &report.failed {
        eprintln!("{key}: {error}");
    }
    if !report.failed.is_empty() {
        anyhow::bail!(
            "{} objects could not be rewritten (listed above)",
            report.failed.len()
        );
    }
    if report.stopped_at_limit {
        println!(
            "stopped after {} objects (--limit); run again to continue",
            report.rewritten
        );
    } else {
        println!(
            "done: {} rewritten, {} already current, {} changed meanwhile",
            report.rewritten, report.current, report.conflicts
        );
    }
    Ok(())
}
