//! Joining a cluster with a bootstrap token, as `kubeadm join` and the kubelet's TLS
//! bootstrap do it (cmd/kubeadm/app/discovery/token/token.go,
//! cmd/kubeadm/app/util/pubkeypin/pubkeypin.go, pkg/kubelet/certificate/bootstrap):
//!
//! 1. `kube-public/cluster-info` is read anonymously over TLS without trusting the server
//!    yet; its kubeconfig must carry the detached JWS `jws-kubeconfig-<token id>` keyed by
//!    the token (so whoever answered knows the token), and its CA's public key must be
//!    one of the pinned `--discovery-token-ca-cert-hash` values (so the server is the one
//!    the operator meant). The ConfigMap is then read again trusting that CA, and must be
//!    the same.
//! 2. Authenticated with the token, the node asks for a client certificate for
//!    `system:node:<name>` in `system:nodes` with a key made here, and waits until the
//!    request is approved and signed.
//! 3. The certificate and key, and a kubeconfig naming them, are written under the root
//!    dir (0600); later starts use them while the certificate is valid.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use badge_client::{Client, Identity, Kubeconfig, error_text};
use badge_token::bootstrap::{BootstrapToken, JWS_KEY_PREFIX, detached_signature_is_valid};
use rustls::pki_types::pem::PemObject as _;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::certificate::{self, CertificateFiles};

/// Where the ConfigMap is read.
pub const CLUSTER_INFO_PATH: &str = "/api/v1/namespaces/kube-public/configmaps/cluster-info";
/// How long discovery waits for the server and for the token's signature (kubeadm's
/// default discovery timeout).
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// Between discovery attempts (kubeadm's `DiscoveryRetryInterval`).
const DISCOVERY_RETRY: Duration = Duration::from_secs(5);
/// How long a node waits for its certificate request to be answered (the kubelet's hour).
pub const CERTIFICATE_WAIT: Duration = Duration::from_secs(3600);
/// The signer of kubelet client certificates.
pub const KUBELET_CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";

/// The flags of `kubeadm join`'s token discovery.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct JoinOptions {
    /// Join with this bootstrap token (`ID.SECRET`, from `badge token create`): discover
    /// the cluster, get a client certificate for the node, and keep it rotated. Unused
    /// while the kubeconfig under the root dir holds a valid certificate.
    #[arg(long, value_name = "ID.SECRET", value_parser = parse_token)]
    pub bootstrap_token: Option<BootstrapToken>,
    /// The API server to discover the cluster from (`https://host:port`).
    #[arg(long, value_name = "URL", requires = "bootstrap_token")]
    pub server: Option<String>,
    /// The CA public key pin (`sha256:<hex>` of its SubjectPublicKeyInfo) the server's CA
    /// must match; may be repeated.
    #[arg(long, value_name = "sha256:HEX", value_delimiter = ',')]
    pub discovery_token_ca_cert_hash: Vec<String>,
    /// Trust whatever CA the server presents, with no pin. Unsafe: anyone who learns the
    /// token can impersonate the server.
    #[arg(long)]
    pub discovery_token_unsafe_skip_ca_verification: bool,
}

fn parse_token(text: &str) -> Result<BootstrapToken, String> {
    // The value is never echoed.
    BootstrapToken::parse(text)
        .ok_or_else(|| "the bootstrap token is not of the form \"[a-z0-9]{6}.[a-z0-9]{16}\"".to_string())
}

/// The kubeconfig a joined node uses: `ROOT/kubelet.conf`.
pub fn kubeconfig_path(root: &Path) -> PathBuf {
    root.join("kubelet.conf")
}

/// A `sha256:<hex>` pin, checked as `pubkeypin.Set.Allow` checks it; lowercase.
pub fn parse_pin(pin: &str) -> anyhow::Result<String> {
    let parts: Vec<&str> = pin.split(':').collect();
    let [format, value] = parts[..] else {
        bail!("invalid hash, expected \"format:hex-value\". Known format(s) are: sha256");
    };
    if !format.eq_ignore_ascii_case("sha256") {
        bail!("unknown hash format {format:?}. Known format(s) are: sha256");
    }
    if value.len() != 64 {
        bail!(
            "invalid hash {pin:?}, expected a 32 byte SHA-256 hash, found {} bytes",
            value.len() / 2
        );
    }
    if !value.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("invalid hash {pin:?}, could not decode SHA-256 from hex");
    }
    Ok(format!("sha256:{}", value.to_ascii_lowercase()))
}

/// `--server` as a URL: kubeadm's `host:port` endpoint is taken as `https://host:port`.
pub fn server_url(server: &str) -> String {
    if server.contains("://") {
        server.to_string()
    } else {
        format!("https://{server}")
    }
}

/// The pins to check, or an error when neither a pin nor the unsafe skip is given.
pub fn pins(options: &JoinOptions) -> anyhow::Result<Vec<String>> {
    let pins = options
        .discovery_token_ca_cert_hash
        .iter()
        .map(|p| parse_pin(p).context("invalid discovery token CA certificate hash"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if pins.is_empty() && !options.discovery_token_unsafe_skip_ca_verification {
        bail!(
            "using token-based discovery without --discovery-token-ca-cert-hash can be unsafe; \
             pass --discovery-token-unsafe-skip-ca-verification to continue"
        );
    }
    Ok(pins)
}

/// What verified discovery yields: the server and CA of the cluster's kubeconfig.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterInfo {
    /// The `kubeconfig` entry of `kube-public/cluster-info`, as published.
    pub kubeconfig: String,
    /// The API server's URL, from that kubeconfig's cluster.
    pub server: String,
    /// PEM of the cluster CA, checked against the pinned hashes when any are given.
    pub ca_pem: String,
}

/// Why `kube-public/cluster-info` is not (yet) trusted.
#[derive(Debug, PartialEq, Eq)]
pub enum Rejection {
    /// Not there yet: the signer adds a new token's signature a moment after the token.
    Retry(String),
    /// A check failed; the message names it.
    Refused(String),
}

/// Checks a `cluster-info` ConfigMap as `validateClusterInfoToken` and `validateClusterCA`
/// do: the token's detached JWS over the kubeconfig, then (unless `pins` is empty) the
/// CA's public key against the pins.
pub fn verify_cluster_info(
    configmap: &Value,
    token: &BootstrapToken,
    pins: &[String],
) -> Result<ClusterInfo, Rejection> {
    let kubeconfig = configmap
        .pointer("/data/kubeconfig")
        .and_then(Value::as_str)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| {
            Rejection::Retry(
                "there is no kubeconfig key in the cluster-info ConfigMap. This API Server isn't set up for token bootstrapping, can't connect"
                    .into(),
            )
        })?;
    let signature = configmap
        .pointer(&format!("/data/{JWS_KEY_PREFIX}{}", token.id()))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            Rejection::Retry(format!(
                "could not find a JWS signature in the cluster-info ConfigMap for token ID {:?}: the token is invalid for this cluster or it has expired (create a new one with \"badge token create\")",
                token.id()
            ))
        })?;
    if !detached_signature_is_valid(signature, kubeconfig, token.id(), token.secret().expose()) {
        return Err(Rejection::Refused(format!(
            "JWS signature check failed: the {JWS_KEY_PREFIX}{} signature does not match the kubeconfig in the cluster-info ConfigMap, can't trust this API Server",
            token.id()
        )));
    }
    let refused = |what: String| Rejection::Refused(what);
    let parsed = Kubeconfig::parse(kubeconfig).map_err(|e| {
        refused(format!(
            "couldn't parse the kubeconfig file in the cluster-info ConfigMap: {e}"
        ))
    })?;
    let cluster = parsed
        .first_cluster()
        .ok_or_else(|| refused("malformed kubeconfig in the cluster-info ConfigMap: no cluster".into()))?;
    let server = Some(cluster.server.as_str())
        .filter(|s| s.starts_with("https://"))
        .ok_or_else(|| {
            refused("malformed kubeconfig in the cluster-info ConfigMap: no https server".into())
        })?;
    let ca_pem = cluster
        .inline_ca_pem()
        .ok_or_else(|| refused("malformed kubeconfig in the cluster-info ConfigMap: no CA".into()))?;
    if !pins.is_empty() {
        check_pins(&ca_pem, pins).map_err(refused)?;
    }
    Ok(ClusterInfo {
        kubeconfig: kubeconfig.to_string(),
        server: server.to_string(),
        ca_pem,
    })
}

/// `pubkeypin.Set.CheckAny`: some certificate of the bundle has a pinned public key.
pub fn check_pins(ca_pem: &str, pins: &[String]) -> Result<(), String> {
    let mut hashes = Vec::new();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert =
            cert.map_err(|e| format!("failed to parse cluster CA from the cluster-info ConfigMap: {e}"))?;
        let hash = badge_pki::ca_cert_hash(&cert)
            .ok_or_else(|| "failed to parse cluster CA from the cluster-info ConfigMap".to_string())?;
        if pins.contains(&hash) {
            return Ok(());
        }
        hashes.push(hash);
    }
    if hashes.is_empty() {
        return Err("failed to parse cluster CA from the cluster-info ConfigMap: no certificate".into());
    }
    Err(format!(
        "CA public key pin check failed: cluster CA found in cluster-info ConfigMap is invalid: none of the public keys {:?} are pinned",
        hashes.join(":")
    ))
}

/// Reads `cluster-info` through `client` until it verifies, it is refused, or the
/// discovery timeout passes.
async fn fetch_verified(
    client: &Client,
    token: &BootstrapToken,
    pins: &[String],
    deadline: Instant,
) -> anyhow::Result<ClusterInfo> {
    loop {
        let problem = match client.request("GET", CLUSTER_INFO_PATH, None).await {
            Ok((200, configmap)) => match verify_cluster_info(&configmap, token, pins) {
                Ok(info) => return Ok(info),
                Err(Rejection::Refused(why)) => bail!("{why}"),
                Err(Rejection::Retry(why)) => why,
            },
            Ok((status, body)) => format!(
                "failed to request the cluster-info ConfigMap ({status}): {}",
                error_text(&body)
            ),
            Err(e) => format!("failed to request the cluster-info ConfigMap: {e:#}"),
        };
        if Instant::now() + DISCOVERY_RETRY > deadline {
            bail!("{problem}");
        }
        tracing::info!(server = client.server(), reason = %problem, "discovery: retrying");
        tokio::time::sleep(DISCOVERY_RETRY).await;
    }
}

/// kubeadm's token discovery: the cluster's server and CA, verified.
pub async fn discover(server: &str, token: &BootstrapToken, pins: &[String]) -> anyhow::Result<ClusterInfo> {
    let deadline = Instant::now() + DISCOVERY_TIMEOUT;
    if pins.is_empty() {
        tracing::warn!(
            "discovery without --discovery-token-ca-cert-hash: the server's CA is trusted on the token's signature alone"
        );
    }
    let insecure = Client::unverified(server)?;
    let first = fetch_verified(&insecure, token, pins, deadline).await?;
    if pins.is_empty() {
        return Ok(first);
    }
    // Again, now that the pinned CA is known: the server must prove it holds that CA's
    // certificate and serve the same kubeconfig.
    let secure = Client::new(server, Some(first.ca_pem.as_bytes()), Identity::Anonymous)?;
    let second = fetch_verified(&secure, token, pins, deadline).await?;
    if second.kubeconfig != first.kubeconfig {
        bail!(
            "the second kubeconfig from the cluster-info ConfigMap (using validated TLS) was different from the first"
        );
    }
    tracing::info!(
        server = %second.server,
        "discovery: the cluster-info signature and contents are valid and TLS validates against the pinned CA"
    );
    Ok(second)
}

/// The node's credentials: those under the root dir while their certificate is valid,
/// else new ones from a TLS bootstrap with the token.
pub async fn credentials(
    root: &Path,
    kubeconfig: Option<&Path>,
    node: &str,
    options: &JoinOptions,
) -> anyhow::Result<Arc<Client>> {
    let files = CertificateFiles::new(root);
    let kubeconfig = kubeconfig.map_or_else(|| kubeconfig_path(root), Path::to_path_buf);
    match certificate::still_valid(&kubeconfig) {
        Ok(true) => {
            tracing::info!(kubeconfig = %kubeconfig.display(), "the node's kubeconfig is valid; no bootstrap needed");
            return Ok(Arc::new(Client::from_kubeconfig(&kubeconfig)?));
        }
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "the node's kubeconfig cannot be used; bootstrapping")
        }
    }
    let token = options.bootstrap_token.as_ref().ok_or_else(|| {
        anyhow!(
            "no valid kubeconfig at {} and no --bootstrap-token",
            kubeconfig.display()
        )
    })?;
    let server = options
        .server
        .as_deref()
        .map(server_url)
        .ok_or_else(|| anyhow!("--bootstrap-token needs --server"))?;
    let pins = pins(options)?;
    let info = discover(&server, token, &pins).await?;
    let bootstrap = Client::new(
        &info.server,
        Some(info.ca_pem.as_bytes()),
        Identity::Bearer(token.expose()),
    )?;
    let (cert_pem, key_pem) = certificate::request_node_certificate(&bootstrap, node, true).await?;
    files.store(&cert_pem, &key_pem)?;
    certificate::write_kubeconfig(&kubeconfig, &info.server, &info.ca_pem, &files.current())?;
    tracing::info!(node, kubeconfig = %kubeconfig.display(), "joined: the node's client certificate is issued");
    Ok(Arc::new(Client::from_kubeconfig(&kubeconfig)?))
}

/// A Node object for `name`, registered by the node itself.
pub fn node_object(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use badge_token::bootstrap::detached_signature;

    const TOKEN: &str = "abcdef.0123456789abcdef";

    fn cluster_info(pki: &badge_pki::Pki, server: &str) -> (String, Value) {
        let kubeconfig = badge_pki::cluster_info_kubeconfig(server, pki.ca_pem());
        let signature = detached_signature(&kubeconfig, "abcdef", "0123456789abcdef");
        let cm = json!({"data": {"kubeconfig": kubeconfig, "jws-kubeconfig-abcdef": signature}});
        (kubeconfig, cm)
    }

    fn new_pki() -> (tempfile::TempDir, badge_pki::Pki) {
        let dir = tempfile::tempdir().unwrap();
        let pki = badge_pki::Pki::load_or_create(&dir.path().join("pki"), &[]).unwrap();
        (dir, pki)
    }

    #[test]
    fn a_signed_and_pinned_cluster_info_is_trusted() {
        let (_dir, pki) = new_pki();
        let token = BootstrapToken::parse(TOKEN).unwrap();
        let (kubeconfig, cm) = cluster_info(&pki, "https://127.0.0.1:6443");
        let pin = badge_pki::ca_cert_hash_from_pem(pki.ca_pem()).unwrap();
        let info = verify_cluster_info(&cm, &token, std::slice::from_ref(&pin)).unwrap();
        assert_eq!(info.server, "https://127.0.0.1:6443");
        assert_eq!(info.ca_pem, pki.ca_pem());
        assert_eq!(info.kubeconfig, kubeconfig);
        // Without pins (the unsafe skip) the signature alone is checked.
        assert!(verify_cluster_info(&cm, &token, &[]).is_ok());
    }

    #[test]
    fn an_edited_kubeconfig_or_another_token_fails_the_jws_check() {
        let (_dir, pki) = new_pki();
        let token = BootstrapToken::parse(TOKEN).unwrap();
        let pin = badge_pki::ca_cert_hash_from_pem(pki.ca_pem()).unwrap();
        let (kubeconfig, mut cm) = cluster_info(&pki, "https://127.0.0.1:6443");
        cm["data"]["kubeconfig"] = json!(kubeconfig.replace("127.0.0.1:6443", "evil.example.com:6443"));
        let Err(Rejection::Refused(why)) = verify_cluster_info(&cm, &token, std::slice::from_ref(&pin))
        else {
            panic!("an edited kubeconfig was trusted");
        };
        assert!(why.starts_with("JWS signature check failed"), "{why}");
        // The right id with another secret.
        let (_, cm) = cluster_info(&pki, "https://127.0.0.1:6443");
        let other = BootstrapToken::parse("abcdef.0123456789abcdeg").unwrap();
        let Err(Rejection::Refused(why)) = verify_cluster_info(&cm, &other, std::slice::from_ref(&pin))
        else {
            panic!("another secret was accepted");
        };
        assert!(why.contains("JWS signature check failed"), "{why}");
        // Another id: no signature yet, which discovery waits for.
        let unknown = BootstrapToken::parse("zzzzzz.0123456789abcdef").unwrap();
        assert!(matches!(
            verify_cluster_info(&cm, &unknown, &[pin]),
            Err(Rejection::Retry(why)) if why.contains("\"zzzzzz\"")
        ));
    }

    #[test]
    fn another_ca_fails_the_pin_check() {
        let (_dir, pki) = new_pki();
        let (_other_dir, other) = new_pki();
        let token = BootstrapToken::parse(TOKEN).unwrap();
        let (_, cm) = cluster_info(&pki, "https://127.0.0.1:6443");
        let wrong = badge_pki::ca_cert_hash_from_pem(other.ca_pem()).unwrap();
        let Err(Rejection::Refused(why)) = verify_cluster_info(&cm, &token, &[wrong]) else {
            panic!("an unpinned CA was trusted");
        };
        let actual = badge_pki::ca_cert_hash_from_pem(pki.ca_pem()).unwrap();
        assert!(why.starts_with("CA public key pin check failed"), "{why}");
        assert!(why.contains(&actual), "{why}");
        // The pin is of the public key, not the certificate: upper case hex is the same pin.
        let upper = format!("sha256:{}", actual["sha256:".len()..].to_ascii_uppercase());
        let pin = parse_pin(&upper).unwrap();
        assert!(verify_cluster_info(&cm, &token, &[pin]).is_ok());
    }

    #[test]
    fn pins_are_parsed_as_kubeadm_parses_them() {
        let hex = "ab".repeat(32);
        assert_eq!(
            parse_pin(&format!("SHA256:{hex}")).unwrap(),
            format!("sha256:{hex}")
        );
        assert!(
            parse_pin(&hex)
                .unwrap_err()
                .to_string()
                .contains("format:hex-value")
        );
        assert!(
            parse_pin(&format!("md5:{hex}"))
                .unwrap_err()
                .to_string()
                .contains("unknown hash format")
        );
        assert!(
            parse_pin("sha256:abcd")
                .unwrap_err()
                .to_string()
                .contains("32 byte")
        );
        assert!(
            parse_pin(&format!("sha256:{}", "zz".repeat(32)))
                .unwrap_err()
                .to_string()
                .contains("hex")
        );
        assert!(parse_pin(&format!("sha256:{hex}:x")).is_err());
        let none = JoinOptions::default();
        assert!(
            pins(&none)
                .unwrap_err()
                .to_string()
                .contains("--discovery-token-unsafe-skip-ca-verification")
        );
        let skip = JoinOptions {
            discovery_token_unsafe_skip_ca_verification: true,
            ..JoinOptions::default()
        };
        assert!(pins(&skip).unwrap().is_empty());
    }

    #[test]
    fn a_kubeadm_endpoint_is_a_server_url() {
        assert_eq!(server_url("10.0.0.1:6443"), "https://10.0.0.1:6443");
        assert_eq!(
            server_url("https://cp.example.com:6443"),
            "https://cp.example.com:6443"
        );
        assert!(Client::unverified(&server_url("http://plain:80")).is_err());
    }

    #[test]
    fn a_cluster_info_without_kubeconfig_is_waited_for() {
        let token = BootstrapToken::parse(TOKEN).unwrap();
        assert!(matches!(
            verify_cluster_info(&json!({"data": {}}), &token, &[]),
            Err(Rejection::Retry(_))
        ));
    }

    #[test]
    fn the_token_flag_is_never_echoed() {
        let err = parse_token("abcdef.0123456789ABCDEF").unwrap_err();
        assert!(!err.contains("0123456789ABCDEF"), "{err}");
        let token = parse_token(TOKEN).unwrap();
        assert!(!format!("{token:?}").contains("0123456789abcdef"));
    }
}
