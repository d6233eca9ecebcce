//! The agent's counters, rendered as Prometheus text and served over plain HTTP on an
//! operator-chosen (loopback) address.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;

/// What the agent counts; also logged periodically.
#[derive(Default, Debug)]
pub struct Counters {
    /// TokenRequests sent.
    pub tokens_requested: AtomicU64,
    /// TokenRequests that failed.
    pub token_request_errors: AtomicU64,
    /// Projected volumes written.
    pub volumes_written: AtomicU64,
    /// Projected volume writes that failed.
    pub volume_write_errors: AtomicU64,
    /// Volume directories removed after their pod left the node.
    pub pods_cleaned: AtomicU64,
}

/// Counts one more event; relaxed, as the counters order nothing.
pub fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    fn all(&self) -> [(&'static str, &'static str, u64); 5] {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            (
                "badge_agent_tokens_requested_total",
                "TokenRequests sent.",
                get(&self.tokens_requested),
            ),
            (
                "badge_agent_token_request_errors_total",
                "TokenRequests that failed.",
                get(&self.token_request_errors),
            ),
            (
                "badge_agent_volumes_written_total",
                "Volumes written.",
                get(&self.volumes_written),
            ),
            (
                "badge_agent_volume_write_errors_total",
                "Volume updates that failed (the old files were kept).",
                get(&self.volume_write_errors),
            ),
            (
                "badge_agent_pods_cleaned_total",
                "Pods whose volumes were removed.",
                get(&self.pods_cleaned),
            ),
        ]
    }

    /// The Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, help, value) in self.all() {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"
            ));
        }
        out
    }

    /// A one-line summary for the log.
    pub fn summary(&self) -> String {
        self.all()
            .iter()
            .map(|(name, _, value)| format!("{}={value}", name.trim_start_matches("badge_agent_")))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Binds `address` and serves `GET /metrics` until the runtime stops.
pub async fn serve(address: std::net::SocketAddr, counters: Arc<Counters>) -> anyhow::Result<()> {
    if !address.ip().is_loopback() {
        tracing::warn!(%address, "serving agent metrics over plain HTTP beyond loopback");
    }
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("binding {address}"))?;
    tracing::info!(address = %listener.local_addr()?, "serving agent metrics");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let counters = counters.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: http::Request<_>| {
                    let (status, body) = if request.uri().path() == "/metrics" {
                        (http::StatusCode::OK, counters.render())
                    } else {
                        (http::StatusCode::NOT_FOUND, "not found\n".to_string())
                    };
                    async move {
                        let mut response =
                            http::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
                        *response.status_mut() = status;
                        response.headers_mut().insert(
                            http::header::CONTENT_TYPE,
                            http::HeaderValue::from_static("text/plain; version=0.0.4"),
                        );
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let io = hyper_util::rt::TokioIo::new(tcp);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text() {
        let c = Counters::default();
        bump(&c.volumes_written);
        bump(&c.volumes_written);
        let text = c.render();
        assert!(text.contains("# TYPE badge_agent_volumes_written_total counter\n"));
        assert!(text.contains("\nbadge_agent_volumes_written_total 2\n"));
        assert!(text.contains("\nbadge_agent_pods_cleaned_total 0\n"));
        assert!(c.summary().contains("volumes_written_total=2"));
    }
}
