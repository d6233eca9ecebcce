//! The load generator, run as its own process (`badge-perf load ...`): N keep-alive HTTPS
//! connections in a closed loop for a duration (or over a list of bodies once), printing one
//! JSON line of results.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use http_body_util::BodyExt;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Args, Debug, Clone)]
pub(crate) struct LoadOptions {
    #[arg(long)]
    pub port: u16,
    #[arg(long)]
    pub ca: PathBuf,
    /// Client certificate and key (PEM), for the admin.
    #[arg(long)]
    pub cert: Option<PathBuf>,
    #[arg(long)]
    pub key: Option<PathBuf>,
    #[arg(long)]
    pub path: String,
    /// One request body per line; connections cycle through them.
    #[arg(long)]
    pub bodies: PathBuf,
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// Send every body exactly once, then stop.
    #[arg(long)]
    pub once: bool,
    #[arg(long, default_value = "POST")]
    pub method: String,
    #[arg(long, default_value = "application/json")]
    pub content_type: String,
    /// Each body line is `PATH BODY`: the request's own path, then its body.
    #[arg(long)]
    pub paths_in_bodies: bool,
    /// Open loop: start request i at i/rate seconds whether or not earlier ones were
    /// answered, its latency counted from then (so a server that falls behind is seen to).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Append each response's `status.token` to this file, one a line.
    #[arg(long)]
    pub save_tokens: Option<PathBuf>,
}

/// A request's path and body from one line of the bodies file.
fn split_line(line: &str, paths_in_bodies: bool, path: &str) -> (String, bytes::Bytes) {
    if paths_in_bodies && let Some((own, body)) = line.split_once(' ') {
        return (own.to_string(), bytes::Bytes::from(body.to_string()));
    }
    (path.to_string(), bytes::Bytes::from(line.to_string()))
}

pub(crate) fn client_config(
    ca: &PathBuf,
    cert: Option<&PathBuf>,
    key: Option<&PathBuf>,
) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    let ca = std::fs::read(ca)?;
    for c in CertificateDer::pem_slice_iter(&ca) {
        roots.add(c?)?;
    }
    let builder =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
    let config = match (cert, key) {
        (Some(cert), Some(key)) => {
            let cert = std::fs::read(cert)?;
            let key = std::fs::read(key)?;
            let certs: Vec<_> = CertificateDer::pem_slice_iter(&cert).collect::<Result<_, _>>()?;
            let key = PrivateKeyDer::from_pem_slice(&key).context("the client key")?;
            builder.with_client_auth_cert(certs, key)?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

pub(crate) async fn run(options: LoadOptions) -> anyhow::Result<()> {
    let tls = client_config(&options.ca, options.cert.as_ref(), options.key.as_ref())?;
    let bodies: Arc<Vec<(String, bytes::Bytes)>> = Arc::new(
        std::fs::read_to_string(&options.bodies)?
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| split_line(l, options.paths_in_bodies, &options.path))
            .collect(),
    );
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(options.seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..options.connections {
        let tls = tls.clone();
        let bodies = bodies.clone();
        let next = next.clone();
        let port = options.port;
        let once = options.once;
        let (method, content_type) = (options.method.clone(), options.content_type.clone());
        let (open_loop, saving) = (options.rate, options.save_tokens.is_some());
        tasks.push(tokio::spawn(async move {
            let mut latencies: Vec<u32> = Vec::new();
            let mut errors = 0u64;
            let mut tokens = Vec::new();
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
            tcp.set_nodelay(true)?;
            let name = rustls::pki_types::ServerName::try_from("localhost")?;
            let stream = tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
            tokio::spawn(connection);
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if once && i >= bodies.len() {
                    break;
                }
                if !once && Instant::now() >= deadline {
                    break;
                }
                let (path, body) = bodies[i % bodies.len()].clone();
                let request = http::Request::builder()
                    .method(method.as_str())
                    .uri(&path)
                    .header("host", "localhost")
                    .header("content-type", content_type.as_str())
                    .header("accept", "application/json")
                    .body(http_body_util::Full::new(body))?;
                let t = match open_loop {
                    Some(rate) => {
                        let due = started + Duration::from_secs_f64(i as f64 / rate);
                        tokio::time::sleep_until(due.into()).await;
                        due
                    }
                    None => Instant::now(),
                };
                sender.ready().await?;
                let response = sender.send_request(request).await?;
                let ok = response.status().is_success();
                let reply = response.into_body().collect().await?.to_bytes();
                latencies.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
                if !ok {
                    errors += 1;
                }
                if saving && ok {
                    let reply: serde_json::Value = serde_json::from_slice(&reply).unwrap_or_default();
                    if let Some(token) = reply.pointer("/status/token").and_then(|t| t.as_str()) {
                        tokens.push(token.to_string());
                    }
                }
            }
            anyhow::Ok((latencies, errors, tokens))
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut tokens = Vec::new();
    for task in tasks {
        let (l, e, t) = task.await??;
        latencies.extend(l);
        errors += e;
        tokens.extend(t);
    }
    let elapsed = started.elapsed().as_secs_f64();
    if let Some(file) = &options.save_tokens {
        std::fs::write(file, tokens.join("\n"))?;
    }
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    let out = serde_json::json!({
        "requests": latencies.len(),
        "errors": errors,
        "seconds": elapsed,
        "rps": latencies.len() as f64 / elapsed,
        "p50_us": pct(0.5),
        "p99_us": pct(0.99),
        "max_us": latencies.last().copied().unwrap_or(0),
    });
    println!("{out}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::split_line;

    #[test]
    fn a_line_names_its_own_path_only_when_asked() {
        let (path, body) = split_line("/a/b {\"x\": 1}", true, "/default");
        assert_eq!(path, "/a/b");
        assert_eq!(&body[..], b"{\"x\": 1}");
        let (path, body) = split_line("/a/b {\"x\": 1}", false, "/default");
        assert_eq!(path, "/default");
        assert_eq!(&body[..], b"/a/b {\"x\": 1}");
    }
}
