//! badge-agent: the kubelet's volume part for a machine that runs workloads. It registers
//! its Node, watches the pods bound to it, and materializes their projected volumes
//! (ServiceAccount token, ConfigMap, Secret and downward API sources) and plain `secret`
//! and `configMap` volumes the way the kubelet does: pkg/kubelet/token/token_manager.go
//! for the token cache and refresh rule, pkg/volume/projected/projected.go for the
//! sources, pkg/volume/secret and pkg/volume/configmap for the plain volumes,
//! pkg/volume/util/atomic_writer.go for the file layout (see [`writer`]). Each Secret,
//! ConfigMap and ServiceAccount a volume reads is watched by name, so a change rewrites
//! the volume at once. Old files are kept while the API is unreachable, and a pod's
//! directory is removed with the pod.
//!
//! The parts: [`options`] (flags), `agent` (the main loop over pods, watches and due
//! volumes), `volumes` (what each volume's files are), `tokens` (the token cache),
//! [`join`] and [`certificate`] (bootstrap and client certificate rotation).

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod agent;
pub mod certificate;
mod clock;
pub mod join;
pub mod metrics;
pub mod nodelease;
pub mod options;
pub mod reachability;
pub mod schedule;
pub mod termination;
mod tokens;
mod volumes;
pub mod writer;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use badge_client::Client;

use crate::agent::Agent;
use crate::metrics::Counters;
pub use crate::options::AgentOptions;
pub use crate::tokens::jti_of;

/// Runs the agent until `shutdown` completes. Only start-up errors (an unreadable
/// kubeconfig, an unusable root, a metrics address in use) are returned; API errors are
/// logged and retried.
pub async fn run(options: AgentOptions, shutdown: impl Future) -> anyhow::Result<()> {
    writer::validate_name(&options.node_name).context("the node name")?;
    std::fs::create_dir_all(&options.root).with_context(|| format!("creating {}", options.root.display()))?;
    writer::ensure_dir(&options.root, &["pods"])?;
    tokio::pin!(shutdown);
    let client = match &options.kubeconfig {
        Some(kubeconfig) if options.join.bootstrap_token.is_none() => {
            Arc::new(Client::from_kubeconfig(kubeconfig)?)
        }
        _ => tokio::select! {
            client = join::credentials(&options.root, options.kubeconfig.as_deref(), &options.node_name, &options.join) => client?,
            _ = &mut shutdown => return Ok(()),
        },
    };
    let mut background = vec![tokio::spawn(reachability::probe(client.clone()))];
    if options.join.bootstrap_token.is_some() {
        background.push(tokio::spawn(certificate::rotate(
            client.clone(),
            options.node_name.clone(),
            certificate::CertificateFiles::new(&options.root),
        )));
    }
    let _background = AbortOnDrop(background);
    let counters = Arc::new(Counters::default());
    if let Some(address) = options.metrics_address {
        metrics::serve(address, counters.clone()).await?;
    }
    let mut agent = Agent::new(client, options, counters.clone());
    tokio::select! {
        () = agent.run() => Ok(()),
        _ = &mut shutdown => {
            // Every file write is synchronous, so stopping here never leaves half a volume.
            tracing::info!(counters = %counters.summary(), "agent stopping");
            Ok(())
        }
    }
}

/// Background tasks that end with the agent.
struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}
