//! `badge oidc publish DIR`: the issuer's OIDC discovery document and JWKS as static files,
//! for object storage or any web server, so cloud IAM (AWS, GCP, Azure) and Vault can trust
//! the issuer without reaching badge.
//!
//! The documents are fetched from the running server rather than built from the data dir's
//! key ring: the server's JWKS is by definition the set verifiers must know (the staged next
//! key, keys still verifying after retirement, `--service-account-key-file` keys), it works
//! the same for a data dir and an etcd deployment, and it needs only the admin kubeconfig.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use clap::{Args, Subcommand};
use serde_json::Value;

use badge_client::Client;

#[derive(Subcommand, Debug)]
pub enum OidcCommand {
    /// Write `.well-known/openid-configuration` and `openid/v1/jwks` under DIR, to be
    /// served at the issuer URL. Run again after every key rotation, before the new key signs.
    Publish(PublishOptions),
}

#[derive(Args, Debug)]
pub struct PublishOptions {
    /// The directory that is served at the issuer URL.
    dir: PathBuf,
    /// The issuer (`iss`) the documents are for (default: the server's signing issuer, its
    /// first --service-account-issuer).
    #[arg(long)]
    issuer: Option<String>,
    /// The JWKS URL written in the discovery document, as the server's
    /// --service-account-jwks-uri (default: <issuer>/openid/v1/jwks, the file written here).
    #[arg(long)]
    jwks_uri: Option<String>,
    /// The data dir whose admin kubeconfig is used when --kubeconfig is not given.
    #[arg(long, default_value = "./badge-data")]
    data_dir: PathBuf,
    /// The kubeconfig to reach the server with (default: <data-dir>/admin.kubeconfig).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
}

const CONFIG_FILE: &str = ".well-known/openid-configuration";
const JWKS_FILE: &str = "openid/v1/jwks";

pub async fn run(command: OidcCommand) -> anyhow::Result<()> {
    match command {
        OidcCommand::Publish(options) => publish(options).await,
    }
}

async fn get(client: &Client, path: &str) -> anyhow::Result<Value> {
    client.get(path).await.map_err(|e| anyhow!("GET {path}: {e}"))
}

async fn publish(options: PublishOptions) -> anyhow::Result<()> {
    let admin = options
        .kubeconfig
        .clone()
        .unwrap_or_else(|| options.data_dir.join("admin.kubeconfig"));
    let client = Client::from_kubeconfig(&admin)?;
    let served = get(&client, "/.well-known/openid-configuration").await?;
    let jwks = get(&client, "/openid/v1/jwks").await?;
    let signing_issuer = served["issuer"]
        .as_str()
        .context("the server's discovery document has no issuer")?;
    let issuer = options
        .issuer
        .clone()
        .unwrap_or_else(|| signing_issuer.to_string());
    if issuer != signing_issuer {
        eprintln!(
            "Warning: the server signs new tokens as {signing_issuer:?}; documents for {issuer:?} verify only tokens that carry that issuer"
        );
    }
    let jwks_uri = options
        .jwks_uri
        .clone()
        .unwrap_or_else(|| format!("{}/{JWKS_FILE}", issuer.trim_end_matches('/')));
    let (config, keys) = documents(&served, &jwks, &issuer, &jwks_uri)?;
    // The key set first: a verifier that reads the new discovery document finds its keys.
    write_atomic(&options.dir.join(JWKS_FILE), &keys)?;
    write_atomic(&options.dir.join(CONFIG_FILE), &config)?;
    println!(
        "wrote {} and {} for issuer {issuer}",
        options.dir.join(CONFIG_FILE).display(),
        options.dir.join(JWKS_FILE).display()
    );
    Ok(())
}

/// The discovery document for `issuer` with `jwks_uri`, and the key set, as bytes.
pub fn documents(
    served: &Value,
    jwks: &Value,
    issuer: &str,
    jwks_uri: &str,
) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    if !badge_token::oidc::serves_discovery(issuer) {
        bail!("the issuer {issuer:?} must be an https URL without query or fragment for OIDC discovery");
    }
    if !jwks_uri.starts_with("https://") {
        bail!("the JWKS URI {jwks_uri:?} must be an https URL");
    }
    let keys = jwks["keys"]
        .as_array()
        .context("the server's JWKS has no keys array")?;
    if keys.is_empty() {
        bail!("the server publishes no keys");
    }
    let mut config = served.clone();
    config["issuer"] = Value::String(issuer.to_string());
    config["jwks_uri"] = Value::String(jwks_uri.to_string());
    let mut config = serde_json::to_vec_pretty(&config)?;
    config.push(b'\n');
    let mut keys = serde_json::to_vec(jwks)?;
    keys.push(b'\n');
    Ok((config, keys))
}

/// Replaces `path` whole (a temporary file renamed over it), creating its directories, so a
/// web server or a sync to object storage never reads half a document.
fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().context("the path has no directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let file_name = path.file_name().context("the path has no file name")?;
    let temp = dir.join(format!(
        ".{}.tmp-{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = std::fs::write(&temp, bytes)
        .and_then(|()| std::fs::File::open(&temp)?.sync_all())
        .and_then(|()| std::fs::rename(&temp, path));
    if let Err(e) = result {
        let _ = std::fs::remove_file(&temp);
        return Err(e).with_context(|| format!("writing {}", path.display()));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn served() -> Value {
        json!({
            "issuer": "https://kubernetes.default.svc.cluster.local",
            "jwks_uri": "https://127.0.0.1:6443/openid/v1/jwks",
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
        })
    }

    #[test]
    fn the_issuer_and_jwks_uri_are_those_given() {
        let jwks = json!({"keys": [{"kid": "a"}]});
        let (config, keys) = documents(
            &served(),
            &jwks,
            "https://oidc.example.com/cluster-1",
            "https://cdn.example.com/cluster-1/jwks.json",
        )
        .unwrap();
        let config: Value = serde_json::from_slice(&config).unwrap();
        assert_eq!(config["issuer"], "https://oidc.example.com/cluster-1");
        assert_eq!(config["jwks_uri"], "https://cdn.example.com/cluster-1/jwks.json");
        assert_eq!(config["id_token_signing_alg_values_supported"], json!(["RS256"]));
        assert_eq!(serde_json::from_slice::<Value>(&keys).unwrap(), jwks);
    }

    #[test]
    fn refuses_what_discovery_cannot_use() {
        let jwks = json!({"keys": [{"kid": "a"}]});
        assert!(documents(&served(), &jwks, "http://oidc.example.com", "https://x/jwks").is_err());
        assert!(documents(&served(), &jwks, "https://oidc.example.com", "http://x/jwks").is_err());
        assert!(
            documents(
                &served(),
                &json!({"keys": []}),
                "https://o.example",
                "https://x/jwks"
            )
            .is_err()
        );
    }

    #[test]
    fn rewriting_leaves_only_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("openid/v1/jwks");
        write_atomic(&path, b"1").unwrap();
        write_atomic(&path, b"2").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"2");
        assert_eq!(std::fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
    }
}
