//! `badge keys list|rotate|revoke|retire`: the ServiceAccount signing keys, through the server's
//! `/badge/v1/keys` API (authorized like any request: cluster admins by default).

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::Value;

use badge_client::Client;

#[derive(Args, Debug)]
pub(crate) struct KeysOptions {
    /// The kubeconfig to reach the server with.
    #[arg(long, env = "KUBECONFIG", default_value = "./badge-data/admin.kubeconfig")]
    kubeconfig: PathBuf,
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Subcommand, Debug)]
enum KeysCommand {
    /// Show each key, its state, its dates and its next transition (and the automatic
    /// rotation period when it is on).
    List,
    /// Add a new key: published in the JWKS now, signing after the publish lead.
    Rotate {
        /// Seconds between publishing the key and signing with it (default: the JWKS cache
        /// lifetime, 3600, so every verifier has it before it signs).
        #[arg(long, default_value_t = 3600)]
        publish_lead_seconds: i64,
    },
    /// Revoke a compromised key: every token it signed stops verifying now.
    Revoke {
        /// Key ids are base64url and may begin with `-`.
        #[arg(allow_hyphen_values = true)]
        kid: String,
    },
    /// Retire a key early: it leaves the JWKS and its tokens stop verifying now. Refused for
    /// the signing key, and while the key verified a token within the window (as counted by
    /// the server answering; each server counts only its own verifications).
    Retire {
        #[arg(allow_hyphen_values = true)]
        kid: String,
        /// Retire even though the key verified a token within the window.
        #[arg(long)]
        force: bool,
        /// How recent a use refuses the retirement, as a Go duration.
        #[arg(long, default_value = "1h", value_parser = crate::server::parse_duration)]
        window: i64,
    },
}

/// Whole seconds as a Go duration prints them (`720h0m0s`, `5s`).
fn go_duration(seconds: i64) -> String {
    let (h, m, s) = (seconds / 3600, seconds % 3600 / 60, seconds % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

fn print_keys(body: &Value) {
    if let Some(rotation) = body.get("rotation") {
        let seconds = |f: &str| go_duration(rotation[f].as_i64().unwrap_or(0));
        println!(
            "automatic rotation every {}, new keys published {} before signing",
            seconds("periodSeconds"),
            seconds("publishLeadSeconds")
        );
    }
    println!(
        "{:<45} {:<6} {:<8} {:<21} {:<21} {:<21} {:<21} {:<9} {:<21}",
        "KID", "ALG", "STATE", "CREATED", "SIGNS FROM", "RETIRES", "NEXT TRANSITION", "VERIFIED", "LAST USED"
    );
    for k in body["keys"].as_array().into_iter().flatten() {
        let s = |f: &str| k[f].as_str().unwrap_or("-").to_string();
        println!(
            "{:<45} {:<6} {:<8} {:<21} {:<21} {:<21} {:<21} {:<9} {:<21}",
            s("kid"),
            s("algorithm"),
            s("state"),
            s("created"),
            s("activatesAt"),
            s("retiresAt"),
            s("nextTransition"),
            k["verifiedTokens"].as_u64().unwrap_or(0),
            s("lastUsed")
        );
    }
}

pub(crate) async fn run(options: KeysOptions) -> anyhow::Result<()> {
    let client = Client::from_kubeconfig(&options.kubeconfig)?;
    let (method, path) = match &options.command {
        KeysCommand::List => ("GET", "/badge/v1/keys".to_string()),
        KeysCommand::Rotate { publish_lead_seconds } => (
            "POST",
            format!("/badge/v1/keys/rotate?publishLeadSeconds={publish_lead_seconds}"),
        ),
        KeysCommand::Revoke { kid } => ("POST", format!("/badge/v1/keys/{kid}/revoke")),
        KeysCommand::Retire { kid, force, window } => (
            "POST",
            format!("/badge/v1/keys/{kid}/retire?force={force}&window={window}s"),
        ),
    };
    let body = client.json(method, &path, None).await?;
    if let Some(kid) = body["rotated"].as_str() {
        println!("added key {kid}");
    }
    if let KeysCommand::Retire { kid, .. } = &options.command {
        println!("retired key {kid}; its tokens no longer verify");
    }
    print_keys(&body);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::go_duration;

    #[test]
    fn durations_print_as_go_does() {
        assert_eq!(go_duration(5), "5s");
        assert_eq!(go_duration(90), "1m30s");
        assert_eq!(go_duration(720 * 3600), "720h0m0s");
        assert_eq!(go_duration(3600), "1h0m0s");
    }
}
