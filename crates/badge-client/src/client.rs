//! The HTTPS client: one connection per request (so a rotated client certificate is used
//! from the next request on), JSON bodies, and watches as streams of events.

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use http_body_util::BodyExt as _;
use serde_json::Value;

use crate::kubeconfig::{ClientConfig, Kubeconfig, Trust};
use crate::status::{Error, Status};
use crate::tls;
use crate::watch::LineFramer;

/// How long one plain request may take; a watch has no such limit.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What a client presents to the server.
pub enum Identity {
    /// No credential: the request is `system:anonymous` to the server.
    Anonymous,
    /// A bearer token sent in `Authorization`.
    Bearer(String),
    /// A client certificate (chain) and its private key, PEM.
    Certificate {
        /// The certificate, leaf first.
        cert_pem: Vec<u8>,
        /// The leaf's private key.
        key_pem: Vec<u8>,
    },
}

/// A connection target and credentials.
pub struct Client {
    server: String,
    host: String,
    port: u16,
    /// The name the server certificate is checked against.
    server_name: String,
    /// The CA the server must chain to; None when any certificate is accepted.
    roots: Option<Arc<rustls::RootCertStore>>,
    /// Swapped whole when the client certificate is rotated: each request connects anew,
    /// so the next one presents the new certificate.
    tls: RwLock<Arc<rustls::ClientConfig>>,
    bearer: Option<String>,
    /// False once a connection to the server has failed, until the server is seen ready
    /// again.
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

type Sender = hyper::client::conn::http1::SendRequest<http_body_util::Full<Bytes>>;

/// The events of a watch, parsed; a final `Err` reports a broken stream, and the channel
/// closes when the stream ends.
pub type WatchEvents = tokio::sync::mpsc::Receiver<Result<Value, Error>>;

impl Client {
    /// A client for the current context of the kubeconfig at `path`.
    pub fn from_kubeconfig(path: &Path) -> anyhow::Result<Client> {
        Client::from_config(Kubeconfig::load(path)?.client_config()?)
    }

    /// A client for `config`, its CA and client certificate loaded.
    pub fn from_config(config: ClientConfig) -> anyhow::Result<Client> {
        let roots = match &config.trust {
            Trust::Ca(ca) => Some(tls::roots(ca)?),
            Trust::SkipVerify => None,
        };
        Client::build(&config.server, roots, config.tls_server_name, config.identity)
    }

    /// A client of `server` (an https URL) trusting the CA certificates in `ca_pem`; with
    /// no CA, see [`Client::unverified`].
    pub fn new(server: &str, ca_pem: Option<&[u8]>, identity: Identity) -> anyhow::Result<Client> {
        let roots = ca_pem.map(tls::roots).transpose()?;
        Client::build(server, roots, None, identity)
    }

    /// An anonymous client that accepts any server certificate: only for fetching what is
    /// verified by other means before it is trusted (kubeadm's insecure discovery client,
    /// whose answer a JWS and a CA pin then vouch for).
    pub fn unverified(server: &str) -> anyhow::Result<Client> {
        Client::new(server, None, Identity::Anonymous)
    }

    fn build(
        server: &str,
        roots: Option<Arc<rustls::RootCertStore>>,
        server_name: Option<String>,
        identity: Identity,
    ) -> anyhow::Result<Client> {
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
        let (bearer, tls) = match &identity {
            Identity::Anonymous => (None, tls::config(roots.as_ref(), None)?),
            Identity::Bearer(token) => (Some(token.clone()), tls::config(roots.as_ref(), None)?),
            Identity::Certificate { cert_pem, key_pem } => {
                (None, tls::config(roots.as_ref(), Some((cert_pem, key_pem)))?)
            }
        };
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        // badge's serving certificate names localhost, not the loopback address.
        let server_name = server_name.unwrap_or_else(|| {
            if host.parse::<std::net::IpAddr>().is_ok() {
                "localhost".to_string()
            } else {
                host.clone()
            }
        });
        Ok(Client {
            server: format!("https://{authority}"),
            host,
            port,
            server_name,
            roots,
            tls: RwLock::new(Arc::new(tls)),
            bearer,
            reachable: tokio::sync::watch::Sender::new(true),
            credential: tokio::sync::watch::Sender::new(0),
        })
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
        let tls = tls::config(self.roots.as_ref(), Some((cert_pem, key_pem)))?;
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
        let server_name = rustls::pki_types::ServerName::try_from(self.server_name.clone())?;
        let tls = tokio_rustls::TlsConnector::from(self.current_tls())
            .connect(server_name, tcp)
            .await?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
        tokio::spawn(connection);
        Ok(sender)
    }

    /// Adds what every request carries: the host, and the bearer token unless the request
    /// brings its own `Authorization`.
    fn prepare(&self, request: &mut http::Request<http_body_util::Full<Bytes>>) -> anyhow::Result<()> {
        let headers = request.headers_mut();
        if !headers.contains_key(http::header::HOST) {
            headers.insert(http::header::HOST, http::HeaderValue::from_str(&self.host)?);
        }
        if let Some(token) = &self.bearer
            && !headers.contains_key(http::header::AUTHORIZATION)
        {
            let mut value = http::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| anyhow!("the bearer token is not a valid header value"))?;
            value.set_sensitive(true);
            headers.insert(http::header::AUTHORIZATION, value);
        }
        Ok(())
    }

    /// Sends a request as given (plus host and credential) and reads the whole reply,
    /// whatever its status. No time limit: the caller sets one if it wants one.
    pub async fn send(&self, request: http::Request<Bytes>) -> anyhow::Result<http::Response<Bytes>> {
        let (parts, body) = request.into_parts();
        let mut request = http::Request::from_parts(parts, http_body_util::Full::new(body));
        self.prepare(&mut request)?;
        let mut sender = self.connect().await?;
        let response = sender.send_request(request).await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(http::Response::from_parts(parts, body))
    }

    fn json_request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<http::Request<Bytes>> {
        let mut request = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::ACCEPT, "application/json");
        let bytes = match body {
            Some(value) => {
                request = request.header(http::header::CONTENT_TYPE, "application/json");
                serde_json::to_vec(value)?
            }
            None => Vec::new(),
        };
        Ok(request.body(Bytes::from(bytes))?)
    }

    /// Sends one JSON request; returns the status and the body (JSON, or the text as a
    /// JSON string), whatever the status.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let request = self.json_request(method, path, body.as_ref())?;
        let response = tokio::time::timeout(REQUEST_TIMEOUT, self.send(request))
            .await
            .with_context(|| format!("{method} {path} timed out"))??;
        let status = response.status().as_u16();
        let body = response.body();
        let value = serde_json::from_slice(body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()));
        Ok((status, value))
    }

    /// Sends one JSON request; a reply other than 2xx is an [`Error::Status`].
    pub async fn json(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, Error> {
        let request = self.json_request(method, path, body)?;
        let response = tokio::time::timeout(REQUEST_TIMEOUT, self.send(request))
            .await
            .map_err(|_| anyhow!("{method} {path} timed out"))??;
        let code = response.status().as_u16();
        if !response.status().is_success() {
            return Err(Error::Status(Box::new(Status::from_reply(code, response.body()))));
        }
        if response.body().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(response.body())
            .with_context(|| format!("{method} {path}: the reply is not JSON"))
            .map_err(Error::Transport)
    }

    /// `GET path`, decoded.
    pub async fn get(&self, path: &str) -> Result<Value, Error> {
        self.json("GET", path, None).await
    }

    /// Starts a watch (a streaming GET of `path`, which carries `watch=true`). A refusal is
    /// an [`Error::Status`]; a client certificate rotation ends the stream.
    pub async fn watch(&self, path: &str) -> Result<WatchEvents, Error> {
        let mut sender = self.connect().await?;
        let mut request = http::Request::builder()
            .method("GET")
            .uri(path)
            .header(http::header::ACCEPT, "application/json")
            .body(http_body_util::Full::new(Bytes::new()))
            .map_err(anyhow::Error::from)?;
        self.prepare(&mut request)?;
        let response = tokio::time::timeout(REQUEST_TIMEOUT, sender.send_request(request))
            .await
            .map_err(|_| anyhow!("starting the watch timed out"))?
            .map_err(anyhow::Error::from)?;
        if response.status() != 200 {
            let code = response.status().as_u16();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(anyhow::Error::from)?
                .to_bytes();
            return Err(Error::Status(Box::new(Status::from_reply(code, &body))));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let mut body = response.into_body();
        let mut credential = self.credential.subscribe();
        tokio::spawn(async move {
            let mut framer = LineFramer::default();
            loop {
                let next = tokio::select! {
                    next = body.frame() => next,
                    // Ends the stream (and its connection) as for a server that closed it.
                    _ = credential.changed() => return,
                };
                let frame = match next {
                    None => return,
                    Some(Err(e)) => {
                        let _ = tx.send(Err(anyhow!("watch stream broke: {e}").into())).await;
                        return;
                    }
                    Some(Ok(frame)) => frame,
                };
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                for event in framer.push(&data) {
                    if tx
                        .send(event.map_err(|e| anyhow::Error::new(e).into()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        });
        Ok(rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_are_parsed_into_host_port_and_certificate_name() {
        let client = Client::unverified("https://127.0.0.1:6443/").unwrap();
        assert_eq!((client.host.as_str(), client.port), ("127.0.0.1", 6443));
        assert_eq!(client.server_name, "localhost");
        assert_eq!(client.server(), "https://127.0.0.1:6443");
        let client = Client::unverified("https://[::1]:8443").unwrap();
        assert_eq!((client.host.as_str(), client.port), ("::1", 8443));
        let client = Client::unverified("https://api.example.com").unwrap();
        assert_eq!((client.host.as_str(), client.port), ("api.example.com", 443));
        assert_eq!(client.server_name, "api.example.com");
        assert!(Client::unverified("http://plain:80").is_err());
    }

    #[test]
    fn an_unverified_client_refuses_a_credential() {
        let client = Client::unverified("https://127.0.0.1:1").unwrap();
        assert!(client.set_client_certificate(b"", b"").is_err());
    }

    #[test]
    fn debug_output_never_shows_the_token() {
        let client = Client::build(
            "https://127.0.0.1:1",
            None,
            None,
            Identity::Bearer("secret-token-value".into()),
        )
        .unwrap();
        assert!(!format!("{client:?}").contains("secret-token-value"));
    }
}
