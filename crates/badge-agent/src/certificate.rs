//! The node's client certificate: requested through a CertificateSigningRequest, kept in
//! `ROOT/pki/kubelet-client-current.pem` (certificate and key, 0600) behind a kubeconfig
//! that names the file, and rotated before it expires as the kubelet's certificate
//! manager does (k8s.io/client-go/util/certificate: a new key and request at a random
//! point within 70–90% of the certificate's lifetime, as the node itself, which the
//! approver grants as `selfnodeclient`). The new certificate is used from the next
//! request on, without a restart.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, anyhow, bail};
use badge_client::{Client, Identity, Kubeconfig, error_text};
use badge_pki::node::{NODE_CLIENT_USAGES, NodeClientRequest, certificate_info, key_matches};
use base64::Engine;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::join::{CERTIFICATE_WAIT, KUBELET_CLIENT_SIGNER};
use crate::schedule;

const CSRS: &str = "/apis/certificates.k8s.io/v1/certificatesigningrequests";
/// The longest wait between failed rotation attempts.
const MAX_ROTATION_BACKOFF: Duration = Duration::from_secs(5 * 60);
/// How long one watch of a request may stay silent before it is read again.
const WATCH_QUIET: Duration = Duration::from_secs(60);

/// Where the node's certificate and key live.
pub struct CertificateFiles {
    dir: PathBuf,
}

impl CertificateFiles {
    /// The files under `root/pki`.
    pub fn new(root: &Path) -> CertificateFiles {
        CertificateFiles {
            dir: root.join("pki"),
        }
    }

    /// The file the kubeconfig names: the certificate, then its key.
    pub fn current(&self) -> PathBuf {
        self.dir.join("kubelet-client-current.pem")
    }

    /// Replaces the certificate and key at once (one rename), after checking they belong
    /// together.
    pub fn store(&self, cert_pem: &[u8], key_pem: &[u8]) -> anyhow::Result<()> {
        if !key_matches(cert_pem, key_pem) {
            bail!("the issued certificate is not for the node's key");
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        let mut both = cert_pem.to_vec();
        if !both.ends_with(b"\n") {
            both.push(b'\n');
        }
        both.extend_from_slice(key_pem);
        badge_pki::node::write_file(&self.current(), &both, 0o600)?;
        Ok(())
    }

    /// The file's certificate (and key), PEM.
    pub fn load(&self) -> anyhow::Result<Vec<u8>> {
        let path = self.current();
        std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
    }
}

/// Writes the node's kubeconfig (0600) as the kubelet writes its own after a bootstrap:
/// the cluster's server and CA, and the certificate file as both certificate and key.
pub fn write_kubeconfig(path: &Path, server: &str, ca_pem: &str, cert_file: &Path) -> anyhow::Result<()> {
    // Absolute: a relative path would be read relative to the kubeconfig's directory.
    let cert_file =
        std::path::absolute(cert_file).with_context(|| format!("resolving {}", cert_file.display()))?;
    let file = cert_file
        .to_str()
        .ok_or_else(|| anyhow!("{} is not UTF-8", cert_file.display()))?;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem.as_bytes());
    // JSON strings are YAML double-quoted scalars.
    let quote = |s: &str| Value::String(s.to_string()).to_string();
    let text = format!(
        "apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: default-cluster\n\
        \x20 cluster:\n\
        \x20   certificate-authority-data: {ca}\n\
        \x20   server: {server}\n\
         contexts:\n\
         - name: default-context\n\
        \x20 context:\n\
        \x20   cluster: default-cluster\n\
        \x20   namespace: default\n\
        \x20   user: default-auth\n\
         current-context: default-context\n\
         preferences: {{}}\n\
         users:\n\
         - name: default-auth\n\
        \x20 user:\n\
        \x20   client-certificate: {file}\n\
        \x20   client-key: {file}\n",
        server = quote(server),
        file = quote(file),
    );
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    badge_pki::node::write_file(path, text.as_bytes(), 0o600)?;
    Ok(())
}

/// Whether the kubeconfig exists and its client certificate has not expired
/// (`isClientConfigStillValid`). An unusable file is an error, so the caller can say why
/// it bootstraps again.
pub fn still_valid(kubeconfig: &Path) -> anyhow::Result<bool> {
    valid_at(kubeconfig, crate::clock::now())
}

fn valid_at(kubeconfig: &Path, now: SystemTime) -> anyhow::Result<bool> {
    if !kubeconfig.exists() {
        return Ok(false);
    }
    let identity = Kubeconfig::load(kubeconfig)?.client_config()?.identity;
    let Identity::Certificate { cert_pem, .. } = identity else {
        bail!("{} has no client certificate", kubeconfig.display());
    };
    let info = certificate_info(&cert_pem)?;
    Ok(now < info.not_after)
}

/// The kubelet's rotation deadline: `not_before` plus 70% of the lifetime plus up to 20%
/// more (`jitter` in [0, 1)).
pub fn rotation_deadline(not_before: SystemTime, not_after: SystemTime, jitter: f64) -> SystemTime {
    let total = not_after.duration_since(not_before).unwrap_or_default();
    let jitter = if jitter.is_finite() {
        jitter.clamp(0.0, 1.0)
    } else {
        0.0
    };
    not_before + total.mul_f64(0.7 + 0.2 * jitter)
}

fn condition<'a>(csr: &'a Value, kind: &str) -> Option<&'a Value> {
    csr.pointer("/status/conditions")
        .and_then(Value::as_array)?
        .iter()
        .find(|c| c["type"] == kind && c["status"] != "False")
}

/// The certificate of an answered request, None while pending (`WaitForCertificate`).
pub fn issued(csr: &Value) -> anyhow::Result<Option<Vec<u8>>> {
    let name = csr
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    for (kind, verb) in [("Denied", "denied"), ("Failed", "failed")] {
        if let Some(c) = condition(csr, kind) {
            bail!(
                "certificate signing request {name} is {verb}, reason: {}, message: {}",
                c["reason"].as_str().unwrap_or(""),
                c["message"].as_str().unwrap_or("")
            );
        }
    }
    if condition(csr, "Approved").is_none() {
        return Ok(None);
    }
    match csr.pointer("/status/certificate").and_then(Value::as_str) {
        Some(b64) if !b64.is_empty() => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map(Some)
            .context("the issued certificate is not base64"),
        _ => Ok(None),
    }
}

/// Requests a client certificate for `system:node:<node>` with a new key through
/// `client` (the bootstrap token, or the node's current certificate when rotating) and
/// waits for it. Returns the certificate and key, PEM.
pub async fn request_node_certificate(
    client: &Client,
    node: &str,
    bootstrap: bool,
) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let request = NodeClientRequest::generate(node)?;
    // A bootstrap request is named after its key, as the kubelet names it; a renewal
    // takes a generated name, as the certificate manager's.
    let metadata = if bootstrap {
        json!({"name": request.digested_name})
    } else {
        json!({"generateName": "csr-"})
    };
    let csr = json!({
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": metadata,
        "spec": {
            "request": base64::engine::general_purpose::STANDARD.encode(request.request_pem.as_bytes()),
            "signerName": KUBELET_CLIENT_SIGNER,
            "usages": NODE_CLIENT_USAGES,
        },
    });
    let (status, created) = client.request("POST", CSRS, Some(csr)).await?;
    if status != 201 {
        bail!(
            "creating the certificate signing request ({status}): {}",
            error_text(&created)
        );
    }
    let name = created
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let uid = created
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    tracing::info!(csr = %name, node, "waiting for the client certificate to be issued");
    let cert = tokio::time::timeout(CERTIFICATE_WAIT, wait_for_certificate(client, &name, &uid))
        .await
        .map_err(|_| anyhow!("timed out waiting for certificate signing request {name} to be issued"))??;
    Ok((cert, request.key_pem.into_bytes()))
}

/// Reads and watches the request until it is answered.
async fn wait_for_certificate(client: &Client, name: &str, uid: &str) -> anyhow::Result<Vec<u8>> {
    let path = format!("{CSRS}?fieldSelector=metadata.name%3D{name}");
    let check = |csr: &Value| -> anyhow::Result<Option<Vec<u8>>> {
        if csr.pointer("/metadata/uid").and_then(Value::as_str) != Some(uid) {
            bail!("certificate signing request {name} was deleted or replaced");
        }
        issued(csr)
    };
    let mut failures = 0;
    loop {
        let result: anyhow::Result<Option<Vec<u8>>> = async {
            let (status, list) = client.request("GET", &path, None).await?;
            if status != 200 {
                bail!(
                    "reading certificate signing request {name} ({status}): {}",
                    error_text(&list)
                );
            }
            let Some(csr) = list.pointer("/items/0") else {
                bail!("certificate signing request {name} was deleted");
            };
            if let Some(cert) = check(csr)? {
                return Ok(Some(cert));
            }
            let rv = list
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .unwrap_or("");
            let mut events = client
                .watch(&format!("{path}&watch=true&resourceVersion={rv}"))
                .await?;
            loop {
                let event = match tokio::time::timeout(WATCH_QUIET, events.recv()).await {
                    Err(_) | Ok(None) => return Ok(None),
                    Ok(Some(event)) => event?,
                };
                match event["type"].as_str() {
                    Some("ADDED" | "MODIFIED") => {
                        if let Some(cert) = check(&event["object"])? {
                            return Ok(Some(cert));
                        }
                    }
                    Some("DELETED") => bail!("certificate signing request {name} was deleted"),
                    _ => return Ok(None),
                }
            }
        }
        .await;
        match result {
            Ok(Some(cert)) => return Ok(cert),
            Ok(None) => failures = 0,
            Err(e) if is_final(&e) => return Err(e),
            Err(e) => {
                failures += 1;
                tracing::warn!(csr = name, error = %format!("{e:#}"), "waiting for the certificate");
            }
        }
        tokio::time::sleep(schedule::backoff(failures.max(1), Duration::from_secs(30))).await;
    }
}

/// A denial, a failure or a vanished request: waiting longer cannot help.
fn is_final(e: &anyhow::Error) -> bool {
    let text = e.to_string();
    text.contains(" is denied,") || text.contains(" is failed,") || text.contains("was deleted")
}

/// Rotates the node's certificate for as long as the agent runs: at each deadline a new
/// key and request as the node, and on success the files and `client` are switched.
pub async fn rotate(client: Arc<Client>, node: String, files: CertificateFiles) {
    let mut failures = 0u32;
    loop {
        let wait = match files.load().and_then(|cert| Ok(certificate_info(&cert)?)) {
            Ok(info) if failures == 0 => {
                let deadline = rotation_deadline(info.not_before, info.not_after, rand::random::<f64>());
                let wait = deadline.duration_since(crate::clock::now()).unwrap_or_default();
                tracing::info!(
                    expires = %jiff::Timestamp::try_from(info.not_after).map(|t| t.to_string()).unwrap_or_default(),
                    rotate_in = ?Duration::from_secs(wait.as_secs()),
                    "the node's client certificate is scheduled for rotation"
                );
                wait
            }
            Ok(_) => schedule::backoff(failures, MAX_ROTATION_BACKOFF),
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "cannot read the node's client certificate; rotating now");
                Duration::ZERO
            }
        };
        tokio::time::sleep_until(Instant::now() + wait).await;
        match rotate_once(&client, &node, &files).await {
            Ok(expires) => {
                failures = 0;
                tracing::info!(
                    node = %node,
                    expires = %jiff::Timestamp::try_from(expires).map(|t| t.to_string()).unwrap_or_default(),
                    "rotated the node's client certificate"
                );
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(
                    error = %format!("{e:#}"),
                    retry_in = ?schedule::backoff(failures, MAX_ROTATION_BACKOFF),
                    "rotating the node's client certificate failed; the current one is kept"
                );
            }
        }
    }
}

async fn rotate_once(client: &Client, node: &str, files: &CertificateFiles) -> anyhow::Result<SystemTime> {
    let (cert_pem, key_pem) = request_node_certificate(client, node, false).await?;
    let info = certificate_info(&cert_pem)?;
    if info.common_name != format!("system:node:{node}") {
        bail!("the issued certificate names {:?}", info.common_name);
    }
    files.store(&cert_pem, &key_pem)?;
    client.set_client_certificate(&cert_pem, &key_pem)?;
    Ok(info.not_after)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn rotation_falls_within_70_to_90_percent_of_the_lifetime() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let end = start + Duration::from_secs(1000);
        assert_eq!(
            rotation_deadline(start, end, 0.0),
            start + Duration::from_secs(700)
        );
        assert_eq!(
            rotation_deadline(start, end, 0.5),
            start + Duration::from_secs(800)
        );
        assert_eq!(
            rotation_deadline(start, end, 1.0),
            start + Duration::from_secs(900)
        );
        assert_eq!(
            rotation_deadline(start, end, f64::NAN),
            start + Duration::from_secs(700)
        );
        // A certificate that ends before it starts rotates at once.
        assert_eq!(rotation_deadline(end, start, 0.5), end);
    }

    #[test]
    fn a_request_is_answered_by_its_conditions_and_certificate() {
        let pending = json!({"metadata": {"name": "csr-1"}, "status": {}});
        assert!(issued(&pending).unwrap().is_none());
        let approved = json!({"metadata": {"name": "csr-1"},
            "status": {"conditions": [{"type": "Approved", "status": "True"}]}});
        assert!(issued(&approved).unwrap().is_none());
        let mut signed = approved.clone();
        signed["status"]["certificate"] = json!("Q0VSVA==");
        assert_eq!(issued(&signed).unwrap().unwrap(), b"CERT");
        let denied = json!({"metadata": {"name": "csr-1"},
            "status": {"conditions": [{"type": "Denied", "status": "True", "reason": "No", "message": "not you"}]}});
        let err = issued(&denied).unwrap_err();
        assert_eq!(
            err.to_string(),
            "certificate signing request csr-1 is denied, reason: No, message: not you"
        );
        assert!(is_final(&err));
        let failed = json!({"metadata": {"name": "csr-1"},
            "status": {"conditions": [{"type": "Failed", "status": "True", "reason": "SignerValidationFailure"}]}});
        assert!(is_final(&issued(&failed).unwrap_err()));
    }

    #[test]
    fn files_and_kubeconfig_round_trip_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = tempfile::tempdir().unwrap();
        let pki = badge_pki::Pki::load_or_create(&ca_dir.path().join("pki"), &[]).unwrap();
        let issued = pki
            .issue_client_cert("system:node:n1", &["system:nodes"], Duration::from_secs(3600))
            .unwrap();
        let files = CertificateFiles::new(dir.path());
        let kubeconfig = dir.path().join("kubelet.conf");
        assert!(!still_valid(&kubeconfig).unwrap());
        // A certificate for another key is never stored.
        let other = NodeClientRequest::generate("n1").unwrap();
        assert!(
            files
                .store(issued.cert_pem.as_bytes(), other.key_pem.as_bytes())
                .is_err()
        );
        files
            .store(issued.cert_pem.as_bytes(), issued.key_pem.as_bytes())
            .unwrap();
        write_kubeconfig(
            &kubeconfig,
            "https://127.0.0.1:6443",
            pki.ca_pem(),
            &files.current(),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        for path in [&kubeconfig, &files.current()] {
            let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", path.display());
        }
        assert!(still_valid(&kubeconfig).unwrap());
        let client = Client::from_kubeconfig(&kubeconfig).unwrap();
        assert_eq!(client.server(), "https://127.0.0.1:6443");
        // A relative certificate path is written absolute, so the kubeconfig works from
        // wherever it is read.
        let elsewhere = dir.path().join("elsewhere.conf");
        write_kubeconfig(
            &elsewhere,
            "https://127.0.0.1:6443",
            pki.ca_pem(),
            Path::new("rel/cert.pem"),
        )
        .unwrap();
        let expected = std::env::current_dir().unwrap().join("rel/cert.pem");
        let text = std::fs::read_to_string(&elsewhere).unwrap();
        assert!(
            text.contains(&format!("client-key: \"{}\"", expected.display())),
            "{text}"
        );
        // An expired certificate is not reused.
        let later = crate::clock::now() + Duration::from_secs(3601);
        assert!(!valid_at(&kubeconfig, later).unwrap());
        // A kubeconfig without a client certificate is an error to report.
        std::fs::write(
            &kubeconfig,
            "apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\ncurrent-context: x\nusers: []\n",
        )
        .unwrap();
        assert!(still_valid(&kubeconfig).is_err());
    }
}
