//! A minimal HTTPS client for the issuer's documents and TokenReview: one request per
//! connection, a size cap on every body, a timeout on every exchange.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};

/// Bodies larger than this are refused: a key set or a TokenReview is a few kilobytes.
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Where trust anchors come from when no CA is given: the usual system bundles.
const SYSTEM_BUNDLES: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
    "/etc/ssl/ca-bundle.pem",
];

/// An HTTPS client with fixed trust anchors and an optional bearer credential.
#[derive(Clone)]
pub(crate) struct HttpsClient {
    tls: Arc<rustls::ClientConfig>,
    bearer: Option<Arc<str>>,
    timeout: Duration,
}

// Hand-written so the bearer credential never reaches a log.
impl std::fmt::Debug for HttpsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsClient")
            .field("bearer", &self.bearer.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// A response: status, `Cache-Control`, body.
#[derive(Debug)]
pub(crate) struct Response {
    pub status: u16,
    pub cache_control: Option<String>,
    pub body: Vec<u8>,
}

impl HttpsClient {
    /// Trusts the certificates in `ca_pem`, or the system bundle when None.
    pub(crate) fn new(
        ca_pem: Option<&[u8]>,
        bearer: Option<String>,
        timeout: Duration,
    ) -> Result<Self, String> {
        let mut roots = rustls::RootCertStore::empty();
        let bundle = match ca_pem {
            Some(pem) => pem.to_vec(),
            None => system_bundle()?,
        };
        for cert in CertificateDer::pem_slice_iter(&bundle) {
            let cert = cert.map_err(|e| format!("reading the CA bundle: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("adding a CA certificate: {e}"))?;
        }
        if roots.is_empty() {
            return Err("the CA bundle has no certificate".into());
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            tls: Arc::new(tls),
            bearer: bearer.map(Arc::from),
            timeout,
        })
    }

    /// GET `url`.
    pub(crate) async fn get(&self, url: &str) -> Result<Response, String> {
        self.send("GET", url, None).await
    }

    /// POST a JSON body to `url`.
    pub(crate) async fn post_json(&self, url: &str, body: Vec<u8>) -> Result<Response, String> {
        self.send("POST", url, Some(body)).await
    }

    async fn send(&self, method: &str, url: &str, body: Option<Vec<u8>>) -> Result<Response, String> {
        let parsed = url::Url::parse(url).map_err(|e| format!("{url}: {e}"))?;
        if parsed.scheme() != "https" {
            return Err(format!("{url}: only https URLs are fetched"));
        }
        let host = parsed
            .host_str()
            .ok_or_else(|| format!("{url}: no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = parsed.port_or_known_default().unwrap_or(443);
        let mut target = parsed.path().to_string();
        if let Some(query) = parsed.query() {
            target.push('?');
            target.push_str(query);
        }
        let authority = match parsed.port() {
            Some(p) => format!("{}:{p}", parsed.host_str().unwrap_or_default()),
            None => parsed.host_str().unwrap_or_default().to_string(),
        };
        let exchange = async {
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
                .await
                .map_err(|e| format!("connecting to {authority}: {e}"))?;
            let name = ServerName::try_from(host.clone()).map_err(|e| format!("{host}: {e}"))?;
            let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS with {authority}: {e}"))?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                    .await
                    .map_err(|e| format!("HTTP with {authority}: {e}"))?;
            tokio::spawn(connection);
            let mut request = http::Request::builder()
                .method(method)
                .uri(&target)
                .header("host", &authority)
                .header("accept", "application/json");
            if let Some(bearer) = &self.bearer {
                request = request.header("authorization", format!("Bearer {bearer}"));
            }
            if body.is_some() {
                request = request.header("content-type", "application/json");
            }
            let request = request
                .body(Full::new(bytes::Bytes::from(body.unwrap_or_default())))
                .map_err(|e| e.to_string())?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| format!("{method} {url}: {e}"))?;
            let status = response.status().as_u16();
            let cache_control = response
                .headers()
                .get_all(http::header::CACHE_CONTROL)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect::<Vec<_>>()
                .join(", ");
            let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
                .collect()
                .await
                .map_err(|e| format!("reading {url}: {e}"))?
                .to_bytes()
                .to_vec();
            Ok(Response {
                status,
                cache_control: Some(cache_control).filter(|c| !c.is_empty()),
                body,
            })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| format!("{method} {url} timed out"))?
    }
}

fn system_bundle() -> Result<Vec<u8>, String> {
    let from_env = std::env::var_os("SSL_CERT_FILE").map(std::path::PathBuf::from);
    from_env
        .into_iter()
        .chain(SYSTEM_BUNDLES.iter().map(std::path::PathBuf::from))
        .find_map(|path| std::fs::read(path).ok())
        .ok_or_else(|| "no CA given and no system CA bundle found".to_string())
}

/// The `max-age` of a `Cache-Control` value: `no-store`/`no-cache` count as zero; no
/// directive is None.
pub(crate) fn max_age(cache_control: &str) -> Option<Duration> {
    let mut age = None;
    for directive in cache_control.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" {
            return Some(Duration::ZERO);
        }
        if let Some(value) = lower.strip_prefix("max-age=") {
            age = value
                .trim_matches('"')
                .parse::<u64>()
                .ok()
                .map(Duration::from_secs);
        }
    }
    age
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_max_age() {
        assert_eq!(max_age("public, max-age=3600"), Some(Duration::from_secs(3600)));
        assert_eq!(max_age("Max-Age=\"60\""), Some(Duration::from_secs(60)));
        assert_eq!(max_age("max-age=60, no-store"), Some(Duration::ZERO));
        assert_eq!(max_age("public"), None);
        assert_eq!(max_age("max-age=-1"), None);
    }
}
