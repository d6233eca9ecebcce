//! `badge kubeconfig --serviceaccount NS/NAME`: a kubeconfig that authenticates as a
//! ServiceAccount, with a token from TokenRequest (or, with `--legacy`, from a long-lived
//! `kubernetes.io/service-account-token` Secret), the server's CA and its URL.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use clap::Args;
use serde_json::json;

use badge_client::{Client, Kubeconfig, error_text};

/// How long `--legacy` waits for the token controller to fill the Secret.
const LEGACY_TOKEN_WAIT: Duration = Duration::from_secs(30);

const LEGACY_WARNING: &str = "Warning: --legacy stores a token that never expires in a Secret: anyone who can read \
Secrets in the namespace can take it, and it stays valid until the Secret is deleted. Prefer the default \
(a TokenRequest token that expires; run this command again to renew it).";

#[derive(Args, Debug)]
pub(crate) struct KubeconfigOptions {
    /// The ServiceAccount, as NAMESPACE/NAME.
    #[arg(long, value_name = "NS/NAME")]
    serviceaccount: String,
    /// How long the token lives (a Go duration; the server may shorten it).
    #[arg(long, default_value = "1h")]
    duration: String,
    /// An audience of the token (repeatable; default: the server's API audiences). A token
    /// for another audience does not authenticate to the API server.
    #[arg(long = "audience")]
    audiences: Vec<String>,
    /// The server URL written in the kubeconfig (default: the admin kubeconfig's).
    #[arg(long)]
    server: Option<String>,
    /// Write the kubeconfig here (mode 0600) instead of standard output.
    #[arg(short = 'o', long = "output")]
    output: Option<PathBuf>,
    /// Use a long-lived token Secret `<name>-token` (created if missing) instead of a
    /// TokenRequest token. Not recommended.
    #[arg(long)]
    legacy: bool,
    /// The data dir whose admin kubeconfig is used when --kubeconfig is not given.
    #[arg(long, default_value = "./badge-data")]
    data_dir: PathBuf,
    /// The kubeconfig to reach the server with (default: <data-dir>/admin.kubeconfig).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
}

/// The server and CA (base64) of a kubeconfig's current context, to hand on in another.
fn cluster_of(kubeconfig: &Kubeconfig) -> anyhow::Result<(String, String)> {
    let cluster = kubeconfig.current_cluster()?;
    let ca = cluster
        .ca_pem()?
        .context("the kubeconfig's cluster has no certificate authority")?;
    Ok((
        cluster.server.clone(),
        base64::engine::general_purpose::STANDARD.encode(ca),
    ))
}

/// Splits `NS/NAME`.
pub(crate) fn parse_service_account(text: &str) -> anyhow::Result<(&str, &str)> {
    match text.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => Ok((ns, name)),
        _ => bail!("--serviceaccount must be NAMESPACE/NAME, not {text:?}"),
    }
}

/// The kubeconfig kubectl reads: one cluster, one user with the token, one context.
pub(crate) fn render(
    server: &str,
    ca_data: &str,
    namespace: &str,
    name: &str,
    token: &str,
) -> anyhow::Result<String> {
    let user = format!("system:serviceaccount:{namespace}:{name}");
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "badge", "cluster": {"server": server, "certificate-authority-data": ca_data}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": user, "context": {"cluster": "badge", "user": user, "namespace": namespace}}],
        "current-context": user,
        "preferences": {},
    });
    Ok(serde_yaml_ng::to_string(&config)?)
}

pub(crate) async fn run(options: KubeconfigOptions) -> anyhow::Result<()> {
    let (namespace, name) = parse_service_account(&options.serviceaccount)?;
    let admin = options
        .kubeconfig
        .clone()
        .unwrap_or_else(|| options.data_dir.join("admin.kubeconfig"));
    let kubeconfig = Kubeconfig::load(&admin)?;
    let (admin_server, ca_data) = cluster_of(&kubeconfig)?;
    let client = Client::from_config(kubeconfig.client_config()?)?;
    let server = options.server.clone().unwrap_or(admin_server);
    let token = if options.legacy {
        eprintln!("{LEGACY_WARNING}");
        legacy_token(&client, namespace, name).await?
    } else {
        let seconds = crate::server::parse_duration(&options.duration)
            .with_context(|| format!("--duration={}", options.duration))?;
        request_token(&client, namespace, name, seconds, &options.audiences).await?
    };
    let text = render(&server, &ca_data, namespace, name, &token)?;
    match &options.output {
        Some(path) => write_private(path, text.as_bytes())?,
        None => print!("{text}"),
    }
    Ok(())
}

async fn request_token(
    client: &Client,
    namespace: &str,
    name: &str,
    seconds: i64,
    audiences: &[String],
) -> anyhow::Result<String> {
    let mut spec = json!({"expirationSeconds": seconds});
    if !audiences.is_empty() {
        spec["audiences"] = json!(audiences);
    }
    let body = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec});
    let path = format!("/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token");
    let (status, response) = client.request("POST", &path, Some(body)).await?;
    if status != 201 && status != 200 {
        bail!(
            "requesting a token for {namespace}/{name}: {}",
            error_text(&response)
        );
    }
    response["status"]["token"]
        .as_str()
        .map(str::to_string)
        .context("the TokenRequest answer has no token")
}

/// The token of the Secret `<name>-token`, created for the ServiceAccount when missing, once
/// the token controller has filled it.
async fn legacy_token(client: &Client, namespace: &str, name: &str) -> anyhow::Result<String> {
    let sa_path = format!("/api/v1/namespaces/{namespace}/serviceaccounts/{name}");
    let (status, sa) = client.request("GET", &sa_path, None).await?;
    if status != 200 {
        bail!("reading ServiceAccount {namespace}/{name}: {}", error_text(&sa));
    }
    let secret_name = format!("{name}-token");
    let secrets = format!("/api/v1/namespaces/{namespace}/secrets");
    let secret_path = format!("{secrets}/{secret_name}");
    let (status, existing) = client.request("GET", &secret_path, None).await?;
    match status {
        200 => {
            let owner = existing["metadata"]["annotations"]["kubernetes.io/service-account.name"].as_str();
            if existing["type"] != "kubernetes.io/service-account-token" || owner != Some(name) {
                bail!(
                    "Secret {namespace}/{secret_name} exists and is not a token Secret of ServiceAccount {name}"
                );
            }
        }
        404 => {
            let secret = json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {
                    "name": secret_name,
                    "namespace": namespace,
                    "annotations": {"kubernetes.io/service-account.name": name},
                },
                "type": "kubernetes.io/service-account-token",
            });
            let (status, body) = client.request("POST", &secrets, Some(secret)).await?;
            if status != 201 && status != 409 {
                bail!("creating Secret {namespace}/{secret_name}: {}", error_text(&body));
            }
            eprintln!("secret/{secret_name} created in namespace {namespace}");
        }
        _ => bail!(
            "reading Secret {namespace}/{secret_name}: {}",
            error_text(&existing)
        ),
    }
    let deadline = tokio::time::Instant::now() + LEGACY_TOKEN_WAIT;
    loop {
        let (status, secret) = client.request("GET", &secret_path, None).await?;
        if status == 200
            && let Some(data) = secret["data"]["token"].as_str()
        {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(data)
                .context("the Secret's token is not base64")?;
            return String::from_utf8(bytes).context("the Secret's token is not text");
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("the token controller did not fill Secret {namespace}/{secret_name}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Writes `bytes` to `path` with mode 0600 through a temporary file and a rename, so a
/// reader never sees half a kubeconfig and the token is never readable by others.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = path.file_name().context("the output path has no file name")?;
    let temp = dir.join(format!(
        ".{}.tmp-{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .with_context(|| format!("creating {}", temp.display()))?;
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    if let Err(e) = written.and_then(|()| std::fs::rename(&temp, path)) {
        let _ = std::fs::remove_file(&temp);
        return Err(e).with_context(|| format!("writing {}", path.display()));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn service_account_flag() {
        assert_eq!(parse_service_account("ns/app").unwrap(), ("ns", "app"));
        for bad in ["app", "/app", "ns/", "a/b/c"] {
            assert!(parse_service_account(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rendered_kubeconfig_names_the_service_account() {
        let text = render("https://127.0.0.1:6443", "Q0E=", "ns", "app", "tok").unwrap();
        let config: Value = serde_yaml_ng::from_str(&text).unwrap();
        assert_eq!(config["current-context"], "system:serviceaccount:ns:app");
        assert_eq!(config["users"][0]["user"]["token"], "tok");
        assert_eq!(config["contexts"][0]["context"]["namespace"], "ns");
        assert_eq!(
            config["clusters"][0]["cluster"]["server"],
            "https://127.0.0.1:6443"
        );
    }

    #[test]
    fn private_files_are_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sa.kubeconfig");
        write_private(&path, b"one").unwrap();
        write_private(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
