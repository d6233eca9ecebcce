//! A small HTTPS client configured from a kubeconfig the way kubectl reads one (the current
//! context's cluster server and CA, the user's client certificate or token), with a
//! streaming GET for watches. The agent and the `badge` commands that talk to a server
//! (`keys`, `token inspect`) share it.

use std::path::Path;
use std::sync::Arc;
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
    host: String,
    port: u16,
    tls: Arc<rustls::ClientConfig>,
    bearer: Option<String>,
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

fn b64(value: &Value) -> anyhow::Result<Vec<u8>> {
    let text = value.as_str().ok_or_else(|| anyhow!("expected base64 data"))?;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .context("decoding base64 data")
}

type Sender = hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>;

impl Client {
    pub fn from_kubeconfig(path: &Path) -> anyhow::Result<Client> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let config: Value =
            serde_yaml_ng::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
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
        let mut roots = rustls::RootCertStore::empty();
        let ca = b64(&cluster["cluster"]["certificate-authority-data"])?;
        for cert in CertificateDer::pem_slice_iter(&ca) {
            roots.add(cert?).context("adding the CA")?;
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
        let u = &user["user"];
        let tls = if u.get("client-certificate-data").is_some() {
            let cert = b64(&u["client-certificate-data"])?;
            let key = b64(&u["client-key-data"])?;
            let certs: Vec<_> = CertificateDer::pem_slice_iter(&cert).collect::<Result<_, _>>()?;
            let key = PrivateKeyDer::from_pem_slice(&key).context("the client key")?;
            builder.with_client_auth_cert(certs, key)?
        } else {
            builder.with_no_client_auth()
        };
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        Ok(Client {
            host,
            port,
            tls: Arc::new(tls),
            bearer: u["token"].as_str().map(String::from),
        })
    }

    async fn connect(&self) -> anyhow::Result<Sender> {
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .with_context(|| format!("connecting to {}:{}", self.host, self.port))?;
        // badge's serving certificate names localhost, not the loopback address.
        let name = if self.host.parse::<std::net::IpAddr>().is_ok() {
            "localhost".to_string()
        } else {
            self.host.clone()
        };
        let server_name = rustls::pki_types::ServerName::try_from(name)?;
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
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
        tokio::spawn(async move {
            let mut buffer: Vec<u8> = Vec::new();
            loop {
                let frame = match body.frame().await {
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
