//! `badge oidc publish DIR`: the issuer's OIDC discovery document and JWKS (and its signed
//! revocation list, when the server publishes one) as static files, for object storage or any
//! web server, so cloud IAM (AWS, GCP, Azure) and Vault can trust the issuer without reaching
//! badge.
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
pub(crate) enum OidcCommand {
    /// Write `.well-known/openid-configuration`, `openid/v1/jwks` and (when the server has
    /// one) the signed revocation list `openid/v1/revocations` under DIR, to be served at the
    /// issuer URL. Run again after every key rotation, before the new key signs, and every
    /// minute while verifiers check the revocation list (it expires after a few minutes).
    Publish(PublishOptions),
}

#[derive(Args, Debug)]
pub(crate) struct PublishOptions {
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
const LIST_FILE: &str = "openid/v1/revocations";

pub(crate) async fn run(command: OidcCommand) -> anyhow::Result<()> {
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
    let list = if served.get("revocation_list_uri").is_none() {
        None
    } else if issuer != signing_issuer {
        // The list is signed for the server's issuer: verifiers of another would refuse it.
        eprintln!(
            "Warning: the revocation list is signed for {signing_issuer:?}; it is not published for {issuer:?}"
        );
        None
    } else {
        Some(revocation_list(&client, &jwks).await?)
    };
    let list_uri = list
        .as_ref()
        .map(|_| format!("{}/{LIST_FILE}", issuer.trim_end_matches('/')));
    let (config, keys) = documents(&served, &jwks, &issuer, &jwks_uri, list_uri.as_deref())?;
    // The key set first: a verifier that reads the new discovery document (or list) finds
    // the keys they name.
    write_atomic(&options.dir.join(JWKS_FILE), &keys)?;
    let list_path = options.dir.join(LIST_FILE);
    match &list {
        Some(list) => write_atomic(&list_path, list.jwt.as_bytes())?,
        // The discovery document written names no list; none is left for a verifier to find.
        None => match std::fs::remove_file(&list_path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing {}", list_path.display()));
            }
            _ => {}
        },
    }
    write_atomic(&options.dir.join(CONFIG_FILE), &config)?;
    println!(
        "wrote {} and {} for issuer {issuer}",
        options.dir.join(CONFIG_FILE).display(),
        options.dir.join(JWKS_FILE).display()
    );
    if let Some(list) = &list {
        println!(
            "wrote {}, valid for {} seconds: publish again before then, or verifiers that check it stop accepting tokens",
            list_path.display(),
            list.lifetime_seconds
        );
    }
    Ok(())
}

/// The server's signed revocation list.
struct RevocationList {
    jwt: String,
    lifetime_seconds: i64,
}

/// Fetches the list, checking it is signed by a key of `jwks` (the set written beside it).
async fn revocation_list(client: &Client, jwks: &Value) -> anyhow::Result<RevocationList> {
    let (status, body) = client.request("GET", "/openid/v1/revocations", None).await?;
    if status != 200 {
        let reason = body["message"]
            .as_str()
            .map_or_else(|| format!("HTTP {status}"), str::to_string);
        bail!("GET /openid/v1/revocations: {reason}");
    }
    let jwt = body
        .as_str()
        .context("the server's revocation list is not a JWT")?
        .trim()
        .to_string();
    let (header, claims) = jwt_parts(&jwt).context("the server's revocation list is not a JWT")?;
    let kid = header["kid"].as_str().unwrap_or_default();
    let listed = jwks["keys"]
        .as_array()
        .is_some_and(|keys| keys.iter().any(|k| k["kid"] == kid));
    if !listed {
        // A rotation between the two reads: the files would not verify together.
        bail!("the revocation list is signed with a key the JWKS does not list yet; run again");
    }
    let lifetime_seconds = claims["exp"].as_i64().unwrap_or(0) - claims["iat"].as_i64().unwrap_or(0);
    Ok(RevocationList {
        jwt,
        lifetime_seconds,
    })
}

/// The decoded header and payload of a compact JWS (unverified: the server signed it).
fn jwt_parts(jwt: &str) -> Option<(Value, Value)> {
    use base64::Engine;
    let decode = |segment: &str| -> Option<Value> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(segment)
            .ok()?;
        serde_json::from_slice(&bytes).ok()
    };
    let mut parts = jwt.split('.');
    let (header, payload) = (parts.next()?, parts.next()?);
    Some((decode(header)?, decode(payload)?))
}

/// The discovery document for `issuer` with `jwks_uri` (and `list_uri`, the published
/// revocation list, if any), and the key set, as bytes.
pub(crate) fn documents(
    served: &Value,
    jwks: &Value,
    issuer: &str,
    jwks_uri: &str,
    list_uri: Option<&str>,
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
    // The server's list URL is the server's; only a published list is named.
    match list_uri {
        Some(uri) => config["revocation_list_uri"] = Value::String(uri.to_string()),
        None => {
            if let Some(config) = config.as_object_mut() {
                config.remove("revocation_list_uri");
            }
        }
    }
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
            "revocation_list_uri": "https://127.0.0.1:6443/openid/v1/revocations",
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
            Some("https://oidc.example.com/cluster-1/openid/v1/revocations"),
        )
        .unwrap();
        let config: Value = serde_json::from_slice(&config).unwrap();
        assert_eq!(config["issuer"], "https://oidc.example.com/cluster-1");
        assert_eq!(config["jwks_uri"], "https://cdn.example.com/cluster-1/jwks.json");
        assert_eq!(
            config["revocation_list_uri"],
            "https://oidc.example.com/cluster-1/openid/v1/revocations"
        );
        assert_eq!(config["id_token_signing_alg_values_supported"], json!(["RS256"]));
        assert_eq!(serde_json::from_slice::<Value>(&keys).unwrap(), jwks);
    }

    #[test]
    fn without_a_published_list_the_servers_list_url_is_not_named() {
        let jwks = json!({"keys": [{"kid": "a"}]});
        let (config, _) = documents(
            &served(),
            &jwks,
            "https://o.example",
            "https://o.example/jwks",
            None,
        )
        .unwrap();
        let config: Value = serde_json::from_slice(&config).unwrap();
        assert!(config.get("revocation_list_uri").is_none(), "{config}");
    }

    #[test]
    fn refuses_what_discovery_cannot_use() {
        let jwks = json!({"keys": [{"kid": "a"}]});
        assert!(
            documents(
                &served(),
                &jwks,
                "http://oidc.example.com",
                "https://x/jwks",
                None
            )
            .is_err()
        );
        assert!(
            documents(
                &served(),
                &jwks,
                "https://oidc.example.com",
                "http://x/jwks",
                None
            )
            .is_err()
        );
        assert!(
            documents(
                &served(),
                &json!({"keys": []}),
                "https://o.example",
                "https://x/jwks",
                None
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
