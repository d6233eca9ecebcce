//! A small HTTPS client configured from a kubeconfig the way kubectl reads one (the current
//! context's cluster server and CA, the user's client certificate or token), with a
//! streaming GET for watches. The agent and the `badge` commands that talk to a server
//! (`keys`, `token inspect`) share it.

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use base64::Engine;
use http_body_util::BodyExt;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;

/// How long one plain request may take; a watch has no such limit.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A connection target and credentials from a kubeconfig.
pub struct Client {
    server: String,
    host: String,
    port: u16,
    /// The CA the server must chain to; None only while discovering it (see [`Client::unverified`]).
    roots: Option<Arc<rustls::RootCertStore>>,
    /// Swapped whole when the client certificate is rotated: each request connects anew,
    /// so the next one presents the new certificate.
    tls: RwLock<Arc<rustls::ClientConfig>>,
    bearer: Option<String>,
    /// False once a connection to the server has failed, until the server is seen ready
    /// again (see [`crate::reachability`]).
    reachable: tokio::sync::watch::Sender<bool>,
    /// Bumped when the client certificate changes: open watches then end, so their
    /// callers watch again as the new identity (the kubelet closes its connections so).
    credential: tokio::sync::watch::Sender<u64>,
}

// Hand-written so a bearer token never reaches a log.
impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("host", &self.host)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// What a client presents to the server.
pub enum Identity {
    Anonymous,
    Bearer(String),
    /// A client certificate (chain) and its private key, PEM.
    Certificate {
        cert_pem: Vec<u8>,
        key_pem: Vec<u8>,
    },
}

fn b64(value: &Value) -> anyhow::Result<Vec<u8>> {
    let text = value.as_str().ok_or_else(|| anyhow!("expected base64 data"))?;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .context("decoding base64 data")
}

/// Inline `<field>-data`, else the file `<field>` names (relative to the kubeconfig's
/// directory, as kubectl resolves it); None when neither is set.
fn inline_or_file(section: &Value, field: &str, base: &Path) -> anyhow::Result<Option<Vec<u8>>> {
    if let Some(data) = section.get(format!("{field}-data")).filter(|v| !v.is_null()) {
        return b64(data).map(Some);
    }
    match section.get(field).and_then(Value::as_str) {
        Some(file) if !file.is_empty() => {
            let path = base.join(file);
            std::fs::read(&path)
                .with_context(|| format!("reading {}", path.display()))
                .map(Some)
        }
        _ => Ok(None),
    }
}

type Sender = hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn tls_config(
    roots: Option<&Arc<rustls::RootCertStore>>,
    identity: Option<(&[u8], &[u8])>,
) -> anyhow::Result<rustls::ClientConfig> {
    let builder =
        rustls::ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let builder = match roots {
        Some(roots) => builder.with_root_certificates(roots.clone()),
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServerCertificate(provider()))),
    };
    Ok(match identity {
        Some((cert, key)) => {
            let certs: Vec<_> = CertificateDer::pem_slice_iter(cert).collect::<Result<_, _>>()?;
            if certs.is_empty() {
                bail!("no client certificate");
            }
            let key = PrivateKeyDer::from_pem_slice(key).context("the client key")?;
            builder.with_client_auth_cert(certs, key)?
        }
        None => builder.with_no_client_auth(),
    })
}

/// The current context's server, CA and credential, as kubectl reads them.
pub fn read_kubeconfig(path: &Path) -> anyhow::Result<(String, Vec<u8>, Identity)> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let config: Value =
        serde_yaml_ng::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let current = config["current-context"].as_str().unwrap_or_default();
    let find = |list: &str, name: &str| {
        config[list]
            .as_array()
            .and_then(|items| items.iter().find(|i| i["name"].as_str() == Some(name)))
            .cloned()
            .ok_or_else(|| anyhow!("kubeconfig has no {list} entry {name:?}"))
    };
    let context = find("contexts", current)?;
    let cluster = find(
        "clusters",
        context["context"]["cluster"].as_str().unwrap_or_default(),
    )?;
    let user = find("users", context["context"]["user"].as_str().unwrap_or_default())?;
    let server = cluster["cluster"]["server"]
        .as_str()
        .ok_or_else(|| anyhow!("the cluster has no server"))?;
    let ca = inline_or_file(&cluster["cluster"], "certificate-authority", base)?
        .ok_or_else(|| anyhow!("the cluster has no certificate authority"))?;
    let u = &user["user"];
    let identity = match (
        inline_or_file(u, "client-certificate", base)?,
        inline_or_file(u, "client-key", base)?,
    ) {
        (Some(cert_pem), Some(key_pem)) => Identity::Certificate { cert_pem, key_pem },
        (Some(_), None) => bail!("the user has a client certificate but no key"),
        _ => match u["token"].as_str() {
            Some(token) => Identity::Bearer(token.to_string()),
            None => Identity::Anonymous,
        },
    };
    Ok((server.to_string(), ca, identity))
}

impl Client {
    pub fn from_kubeconfig(path: &Path) -> anyhow::Result<Client> {
        let (server, ca, identity) = read_kubeconfig(path)?;
        Client::new(&server, Some(&ca), identity)
    }

    /// A client of `server` (an https URL) trusting the CA certificates in `ca_pem`.
    pub fn new(server: &str, ca_pem: Option<&[u8]>, identity: Identity) -> anyhow::Result<Client> {
        let authority = server
            .strip_prefix("https://")
            .ok_or_else(|| anyhow!("only https servers are supported"))?
            .trim_end_matches('/');
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                (h.to_string(), p.parse().context("the server port")?)
            }
            _ => (authority.to_string(), 443),
        };
        let roots = match ca_pem {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(ca) {
                    roots.add(cert?).context("adding the CA")?;
                }
                if roots.is_empty() {
                    bail!("no CA certificate");
                }
                Some(Arc::new(roots))
            }
            None => None,
        };
        let (bearer, tls) = match &identity {
            Identity::Anonymous => (None, tls_config(roots.as_ref(), None)?),
            Identity::Bearer(token) => (Some(token.clone()), tls_config(roots.as_ref(), None)?),
            Identity::Certificate { cert_pem, key_pem } => {
                (None, tls_config(roots.as_ref(), Some((cert_pem, key_pem)))?)
            }
        };
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        Ok(Client {
            server: format!("https://{authority}"),
            host,
            port,
            roots,
            tls: RwLock::new(Arc::new(tls)),
            bearer,
            reachable: tokio::sync::watch::Sender::new(true),
            credential: tokio::sync::watch::Sender::new(0),
        })
    }

    /// An anonymous client that accepts any server certificate: only for fetching what is
    /// verified by other means before it is trusted (kubeadm's insecure discovery client,
    /// whose answer a JWS and a CA pin then vouch for).
    pub fn unverified(server: &str) -> anyhow::Result<Client> {
        Client::new(server, None, Identity::Anonymous)
    }

    /// The server URL, `https://host:port`.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Presents another client certificate from the next request on.
    pub fn set_client_certificate(&self, cert_pem: &[u8], key_pem: &[u8]) -> anyhow::Result<()> {
        if self.roots.is_none() {
            bail!("an unverified client cannot carry a credential");
        }
        let tls = tls_config(self.roots.as_ref(), Some((cert_pem, key_pem)))?;
        match self.tls.write() {
            Ok(mut current) => *current = Arc::new(tls),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(tls),
        }
        self.credential.send_modify(|generation| *generation += 1);
        Ok(())
    }

    /// Whether the last attempt to reach the server connected; changes are seen by
    /// [`tokio::sync::watch::Receiver::changed`].
    pub fn reachability(&self) -> tokio::sync::watch::Receiver<bool> {
        self.reachable.subscribe()
    }

    /// Records whether the server answered.
    pub fn set_reachable(&self, reachable: bool) {
        self.reachable.send_if_modified(|current| {
            let changed = *current != reachable;
            *current = reachable;
            changed
        });
    }

    fn current_tls(&self) -> Arc<rustls::ClientConfig> {
        match self.tls.read() {
            Ok(tls) => tls.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    async fn connect(&self) -> anyhow::Result<Sender> {
        let tcp = match tokio::net::TcpStream::connect((self.host.as_str(), self.port)).await {
            Ok(tcp) => tcp,
            Err(e) => {
                self.set_reachable(false);
                return Err(
                    anyhow::Error::new(e).context(format!("connecting to {}:{}", self.host, self.port))
                );
            }
        };
        // badge's serving certificate names localhost, not the loopback address.
        let name = if self.host.parse::<std::net::IpAddr>().is_ok() {
            "localhost".to_string()
        } else {
            self.host.clone()
        };
        let server_name = rustls::pki_types::ServerName::try_from(name)?;
        let tls = tokio_rustls::TlsConnector::from(self.current_tls())
            .connect(server_name, tcp)
            .await?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
        tokio::spawn(connection);
        Ok(sender)
    }

    fn builder(&self, method: &str, path: &str) -> http::request::Builder {
        let mut request = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.host)
            .header("accept", "application/json");
        if let Some(token) = &self.bearer {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        request
    }

    /// Sends one request; returns the status and the JSON body.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let exchange = async {
            let mut sender = self.connect().await?;
            let mut request = self.builder(method, path);
            let bytes = match body {
                Some(v) => {
                    request = request.header("content-type", "application/json");
                    serde_json::to_vec(&v)?
                }
                None => Vec::new(),
            };
            let response = sender
                .send_request(request.body(http_body_util::Full::new(bytes::Bytes::from(bytes)))?)
                .await?;
            let status = response.status().as_u16();
            let body = response.into_body().collect().await?.to_bytes();
            let value = serde_json::from_slice(&body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
            anyhow::Ok((status, value))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .with_context(|| format!("{method} {path} timed out"))?
    }

    /// Starts a watch (a streaming GET). Each event line, parsed, goes to the returned
    /// channel; a final `Err` reports a broken stream, and the channel closes when the
    /// stream ends.
    pub async fn watch(
        &self,
        path: &str,
    ) -> anyhow::Result<tokio::sync::mpsc::Receiver<anyhow::Result<Value>>> {
        let mut sender = self.connect().await?;
        let request = self
            .builder("GET", path)
            .body(http_body_util::Full::new(bytes::Bytes::new()))?;
        let response = tokio::time::timeout(REQUEST_TIMEOUT, sender.send_request(request))
            .await
            .context("starting the watch timed out")??;
        if response.status() != 200 {
            let status = response.status().as_u16();
            let body = response.into_body().collect().await?.to_bytes();
            let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            bail!("watch failed ({status}): {}", error_text(&value));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let mut body = response.into_body();
        let mut credential = self.credential.subscribe();
        tokio::spawn(async move {
            let mut buffer: Vec<u8> = Vec::new();
            loop {
                let next = tokio::select! {
                    next = body.frame() => next,
                    // Ends the stream (and its connection) as for a server that closed it.
                    _ = credential.changed() => return,
                };
                let frame = match next {
                    None => return,
                    Some(Err(e)) => {
                        let _ = tx.send(Err(anyhow!("watch stream broke: {e}"))).await;
                        return;
                    }
                    Some(Ok(frame)) => frame,
                };
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                buffer.extend_from_slice(&data);
                while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buffer.drain(..=end).collect();
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    let event =
                        serde_json::from_slice::<Value>(&line).context("a watch event that is not JSON");
                    if tx.send(event).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(rx)
    }
}

/// The `message` of a Status, or the body.
pub fn error_text(body: &Value) -> String {
    body.get("message")
        .and_then(Value::as_str)
        .map(String::from)
        .unwrap_or_else(|| body.to_string())
}

/// Accepts any server certificate while still checking the handshake signatures, so the
/// connection is encrypted to whoever answered; what it fetches must be verified otherwise.
#[derive(Debug)]
struct AnyServerCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServerCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
