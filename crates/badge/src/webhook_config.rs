//! `badge webhook-config`: the kubeconfig-format file a kube-apiserver's
//! `--authentication-token-webhook-config-file` or `--authorization-webhook-config-file`
//! reads, naming badge's webhook path, trusting badge's CA, and presenting a client
//! certificate for `system:kube-apiserver-webhook` (bound by default to
//! `system:auth-delegator`: create tokenreviews and subjectaccessreviews).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use badge_apiserver::webhooks::{SUBJECT_ACCESS_REVIEW_PATH, TOKEN_REVIEW_PATH};
use badge_auth::rbac::bootstrap::KUBE_APISERVER_WEBHOOK_USER;
use clap::{Args, ValueEnum};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Kind {
    /// TokenReviews: `--authentication-token-webhook-config-file`.
    Authentication,
    /// SubjectAccessReviews: `--authorization-webhook-config-file`.
    Authorization,
}

#[derive(Args, Debug)]
pub(crate) struct WebhookConfigOptions {
    /// Which webhook the file is for.
    #[arg(long, value_enum)]
    kind: Kind,
    /// badge's URL as the kube-apiserver reaches it, `https://HOST:PORT` (default: the one
    /// in DATA_DIR/admin.kubeconfig); the webhook path is added.
    #[arg(long)]
    server: Option<String>,
    /// The server's data dir (holds the CA).
    #[arg(long, default_value = "./badge-data")]
    data_dir: PathBuf,
    /// Where to write the file (default: DATA_DIR/webhooks/KIND.kubeconfig).
    #[arg(short = 'o', long = "output")]
    output: Option<PathBuf>,
    /// How long the client certificate is valid, in days.
    #[arg(long, default_value_t = 365)]
    days: u64,
}

/// `server` with the webhook path of `kind`; a server URL with a path of its own is refused,
/// since the apiserver posts to exactly the URL in the file.
fn webhook_url(server: &str, kind: Kind) -> anyhow::Result<String> {
    let base = server.trim_end_matches('/');
    let Some(rest) = base.strip_prefix("https://") else {
        anyhow::bail!("--server must be an https:// URL, not {server}");
    };
    if rest.is_empty() || rest.contains(['/', '?', '#']) {
        anyhow::bail!("--server must be https://HOST[:PORT] without a path, not {server}");
    }
    let path = match kind {
        Kind::Authentication => TOKEN_REVIEW_PATH,
        Kind::Authorization => SUBJECT_ACCESS_REVIEW_PATH,
    };
    Ok(format!("{base}{path}"))
}

pub(crate) fn run(options: WebhookConfigOptions) -> anyhow::Result<()> {
    let pki_dir = options.data_dir.join("pki");
    if !pki_dir.is_dir() {
        anyhow::bail!(
            "{} holds no CA: point --data-dir at a server's data dir",
            options.data_dir.display()
        );
    }
    let pki = badge_pki::Pki::load_or_create(&pki_dir, &[]).context("loading the CA")?;
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
    let url = webhook_url(&server, options.kind)?;
    let credential = pki
        .issue_client_cert(
            KUBE_APISERVER_WEBHOOK_USER,
            &[],
            Duration::from_secs(options.days * 24 * 3600),
        )
        .context("issuing the webhook client certificate")?;
    let (name, flag) = match options.kind {
        Kind::Authentication => ("authentication", "--authentication-token-webhook-config-file"),
        Kind::Authorization => ("authorization", "--authorization-webhook-config-file"),
    };
    let output = options.output.unwrap_or_else(|| {
        options
            .data_dir
            .join("webhooks")
            .join(format!("{name}.kubeconfig"))
    });
    badge_pki::write_kubeconfig(
        &output,
        &url,
        pki.ca_pem(),
        KUBE_APISERVER_WEBHOOK_USER,
        &credential.cert_pem,
        &credential.key_pem,
    )
    .context("writing the webhook configuration")?;
    println!("{}", output.display());
    eprintln!("give it to kube-apiserver as {flag}={}", output.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_webhook_path_is_added_to_a_bare_server_url() {
        assert_eq!(
            webhook_url("https://10.0.0.1:6443/", Kind::Authentication).unwrap(),
            "https://10.0.0.1:6443/badge/v1/webhooks/tokenreview"
        );
        assert_eq!(
            webhook_url("https://badge.example", Kind::Authorization).unwrap(),
            "https://badge.example/badge/v1/webhooks/subjectaccessreview"
        );
        assert!(webhook_url("http://badge:6443", Kind::Authorization).is_err());
        assert!(webhook_url("https://badge:6443/apis", Kind::Authorization).is_err());
    }
}
