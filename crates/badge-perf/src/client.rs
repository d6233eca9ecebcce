//! Client connections to a badge server: keep-alive HTTPS as kubectl holds them, and a
//! WatchList's initial events.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use http_body_util::BodyExt;
use serde_json::Value;

/// One keep-alive HTTPS connection, as a client such as kubectl holds.
pub(crate) struct Connection {
    sender: hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
}

impl Connection {
    pub(crate) async fn open(tls: &Arc<rustls::ClientConfig>, port: u16) -> anyhow::Result<Connection> {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let stream = tokio_rustls::TlsConnector::from(tls.clone())
            .connect(rustls::pki_types::ServerName::try_from("localhost")?, tcp)
            .await?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok(Connection { sender })
    }

    pub(crate) async fn send(
        &mut self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let bytes = body.map(|b| b.to_string()).unwrap_or_default();
        let request = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(bytes)))?;
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
    }
}

/// One request on its own connection.
pub(crate) async fn call(
    tls: &Arc<rustls::ClientConfig>,
    port: u16,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<(u16, Value)> {
    Connection::open(tls, port).await?.send(method, path, body).await
}

/// A WatchList (`sendInitialEvents=true`, as client-go's informers open it) of `path` on
/// its own connection: the ADDED events received up to the bookmark that ends the initial
/// events, and the time from the request to that bookmark.
pub(crate) async fn watch_initial_events(
    tls: &Arc<rustls::ClientConfig>,
    port: u16,
    path: &str,
) -> anyhow::Result<(usize, Duration)> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let stream = tokio_rustls::TlsConnector::from(tls.clone())
        .connect(rustls::pki_types::ServerName::try_from("localhost")?, tcp)
        .await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = http::Request::builder()
        .uri(format!(
            "{path}?watch=1&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan"
        ))
        .header("host", "localhost")
        .body(http_body_util::Empty::<bytes::Bytes>::new())?;
    let started = Instant::now();
    let mut body = sender.send_request(request).await?.into_body();
    let (mut added, mut line) = (0usize, Vec::new());
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else { continue };
        for chunk in data.split_inclusive(|b| *b == b'\n') {
            line.extend_from_slice(chunk);
            if line.last() != Some(&b'\n') {
                continue;
            }
            // Events lead with their type (as upstream writes them); reading only that keeps
            // the client's share of the cores small.
            if line.starts_with(br#"{"type":"ADDED""#) {
                added += 1;
            } else if line.starts_with(br#"{"type":"BOOKMARK""#) {
                let event: Value = serde_json::from_slice(&line)?;
                if event["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"] == "true" {
                    return Ok((added, started.elapsed()));
                }
            }
            line.clear();
        }
    }
    Err(anyhow!("the watch ended before its initial events did"))
}
