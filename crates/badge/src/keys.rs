//! `badge keys list|rotate|revoke`: the ServiceAccount signing keys, through the server's
//! `/badge/v1/keys` API (authorized like any request: cluster admins by default).

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::Value;

use badge_agent::client::{Client, error_text};

#[derive(Args, Debug)]
pub struct KeysOptions {
    /// The kubeconfig to reach the server with.
    #[arg(long, env = "KUBECONFIG", default_value = "./badge-data/admin.kubeconfig")]
    kubeconfig: PathBuf,
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Subcommand, Debug)]
enum KeysCommand {
    /// Show each key, its state and dates.
    List,
    /// Add a new key: published in the JWKS now, signing after the publish lead.
    Rotate {
        /// Seconds between publishing the key and signing with it (default: the JWKS cache
        /// lifetime, 3600, so every verifier has it before it signs).
        #[arg(long, default_value_t = 3600)]
        publish_lead_seconds: i64,
    },
    /// Revoke a compromised key: every token it signed stops verifying now.
    Revoke { kid: String },
}

fn print_keys(body: &Value) {
    println!(
        "{:<45} {:<6} {:<8} {:<21} {:<21} {:<21}",
        "KID", "ALG", "STATE", "CREATED", "SIGNS FROM", "RETIRES"
    );
    for k in body["keys"].as_array().into_iter().flatten() {
        let s = |f: &str| k[f].as_str().unwrap_or("-").to_string();
        println!(
            "{:<45} {:<6} {:<8} {:<21} {:<21} {:<21}",
            s("kid"),
            s("algorithm"),
            s("state"),
            s("created"),
            s("activatesAt"),
            s("retiresAt")
        );
    }
}

pub async fn run(options: KeysOptions) -> anyhow::Result<()> {
    let client = Client::from_kubeconfig(&options.kubeconfig)?;
    let (method, path) = match &options.command {
        KeysCommand::List => ("GET", "/badge/v1/keys".to_string()),
        KeysCommand::Rotate { publish_lead_seconds } => (
            "POST",
            format!("/badge/v1/keys/rotate?publishLeadSeconds={publish_lead_seconds}"),
        ),
        KeysCommand::Revoke { kid } => ("POST", format!("/badge/v1/keys/{kid}/revoke")),
    };
    let (status, body) = client.request(method, &path, None).await?;
    if status != 200 {
        anyhow::bail!("{}", error_text(&body));
    }
    if let Some(kid) = body["rotated"].as_str() {
        println!("added key {kid}");
    }
    print_keys(&body);
    Ok(())
}
