//! `badge node add NAME`: a node credential (a client certificate for `system:node:NAME`
//! in `system:nodes`, as kubelets get from kubeadm) and a kubeconfig for `badge agent`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};

#[derive(Subcommand, Debug)]
pub(crate) enum NodeCommand {
    /// Issue a credential for a node and write its kubeconfig.
    Add(AddOptions),
}

#[derive(Args, Debug)]
pub(crate) struct AddOptions {
    /// The node's name.
    name: String,
    /// The server's data dir (holds the CA).
    #[arg(long, default_value = "./badge-data")]
    data_dir: PathBuf,
    /// Where to write the kubeconfig (default: DATA_DIR/nodes/NAME.kubeconfig).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The server URL the node uses (default: the one in DATA_DIR/admin.kubeconfig).
    #[arg(long)]
    server: Option<String>,
    /// How long the credential is valid, in days.
    #[arg(long, default_value_t = 365)]
    days: u64,
}

pub(crate) fn run(command: NodeCommand) -> anyhow::Result<()> {
    let NodeCommand::Add(options) = command;
    let problems = badge_api::validation::dns1123_subdomain_errors(&options.name);
    if !problems.is_empty() {
        anyhow::bail!("invalid node name {:?}: {}", options.name, problems.join("; "));
    }
    let pki = badge_pki::Pki::load_or_create(&options.data_dir.join("pki"), &[]).context("loading the CA")?;
    let server = match options.server {
        Some(s) => s,
        None => {
            let admin = options.data_dir.join("admin.kubeconfig");
            badge_client::Kubeconfig::load(&admin)?
                .current_server()
                .with_context(|| format!("no server in {}", admin.display()))?
                .to_string()
        }
    };
    let user = format!("system:node:{}", options.name);
    let credential = pki
        .issue_client_cert(
            &user,
            &["system:nodes"],
            Duration::from_secs(options.days * 24 * 3600),
        )
        .context("issuing the node certificate")?;
    let out = options.out.unwrap_or_else(|| {
        options
            .data_dir
            .join("nodes")
            .join(format!("{}.kubeconfig", options.name))
    });
    badge_pki::write_kubeconfig(
        &out,
        &server,
        pki.ca_pem(),
        &user,
        &credential.cert_pem,
        &credential.key_pem,
    )
    .context("writing the node kubeconfig")?;
    println!("{}", out.display());
    Ok(())
}
