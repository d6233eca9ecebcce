//! `badge migrate`: copies everything a badge deployment stores — API objects and the
//! ServiceAccount key ring — between a data dir's embedded store and etcd, in either
//! direction. Objects keep their uids and contents; resourceVersions become the
//! destination's revisions, as after an etcd restore. Values pass through the encryption
//! configuration both ways: read with every provider it lists, written with the first, so
//! Secrets stored before encryption arrive encrypted. Stop the servers first: the copy is
//! one consistent snapshot of the source, and writes after it are not carried over.

use clap::Args;

use std::sync::Arc;

use crate::server::{EncryptionOptions, EtcdOptions, open_embedded};
use badge_store::{ListOptions, Store};

#[derive(Args, Debug)]
pub(crate) struct MigrateOptions {
    /// The data dir whose embedded store is copied from or into.
    #[arg(long, default_value = "./badge-data")]
    data_dir: std::path::PathBuf,
    /// The direction: `etcd` copies the data dir into etcd, `embedded` copies etcd into the
    /// data dir.
    #[arg(long)]
    to: String,
    #[command(flatten)]
    etcd: EtcdOptions,
    #[command(flatten)]
    encryption: EncryptionOptions,
}

pub(crate) async fn run(options: MigrateOptions) -> anyhow::Result<()> {
    let etcd: Arc<dyn Store> = Arc::new(options.etcd.connect().await?);
    crate::server::create_private_dir(&options.data_dir)?;
    let embedded: Arc<dyn Store> = Arc::new(open_embedded(&options.data_dir)?);
    let etcd = options.encryption.wrap(etcd, &options.data_dir)?;
    let embedded = options.encryption.wrap(embedded, &options.data_dir)?;
    let (source, destination): (&dyn Store, &dyn Store) = match options.to.as_str() {
        "etcd" => (&*embedded, &*etcd),
        "embedded" => (&*etcd, &*embedded),
        other => anyhow::bail!("--to must be etcd or embedded, not {other:?}"),
    };
    let (from, to) = match options.to.as_str() {
        "etcd" => (options.data_dir.display().to_string(), "etcd".to_string()),
        _ => ("etcd".to_string(), options.data_dir.display().to_string()),
    };
    let occupied = destination
        .list(
            "",
            ListOptions {
                limit: 1,
                ..Default::default()
            },
        )
        .await?;
    if let Some(first) = occupied.items.first() {
        anyhow::bail!(
            "{to} already holds data (such as {}); migrate only into an empty store",
            first.key
        );
    }
    let snapshot = source.list("", ListOptions::default()).await?;
    for kv in &snapshot.items {
        destination.create(&kv.key, kv.value.clone()).await?;
    }
    println!(
        "copied {} keys from {from} (revision {}) to {to}",
        snapshot.items.len(),
        snapshot.revision
    );
    Ok(())
}
