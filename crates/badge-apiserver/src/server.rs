//! Serving over TLS: accept, handshake, read the client certificate's identity once per
//! connection, and serve HTTP/1.1 or HTTP/2 until shutdown drains the connections.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;

use crate::ApiServer;
use crate::handler::PeerIdentity;
use crate::limits::{Limits, RequestFilters};

/// How long a client has to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long in-flight requests get to finish after SIGTERM.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

/// How the server bounds what clients may hold.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// The limits of every request.
    pub limits: Limits,
    /// Connections open at once; past it the server accepts no more until one closes
    /// (0: no limit). Keep it below the open-file limit.
    pub max_connections: usize,
}

impl Default for ServeOptions {
    fn default() -> ServeOptions {
        ServeOptions {
            limits: Limits::default(),
            max_connections: 1000,
        }
    }
}

/// Serves `api` on `listener` until `shutdown` fires, then drains in-flight requests.
pub async fn serve(
    api: Arc<ApiServer>,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    options: ServeOptions,
) {
    let acceptor = TlsAcceptor::from(tls);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let filters = Arc::new(RequestFilters::new(&options.limits));
    let idle = options.limits.client_idle_timeout;
    let mut h1 = http1::Builder::new();
    // Also closes keep-alive connections that stay idle between requests.
    h1.timer(TokioTimer::new()).header_read_timeout(idle);
    let mut h2 = http2::Builder::new(TokioExecutor::new());
    // Pings while the client sends nothing: a live client answers within the interval, a
    // dead or stalled one is dropped.
    h2.timer(TokioTimer::new())
        .keep_alive_interval(idle / 2)
        .keep_alive_timeout(idle / 2);
    let connections =
        (options.max_connections > 0).then(|| Arc::new(Semaphore::new(options.max_connections)));
    while let Some((permit, tcp, remote)) =
        accept(&listener, connections.as_ref(), &mut shutdown, "api").await
    {
        let acceptor = acceptor.clone();
        let api = api.clone();
        let filters = filters.clone();
        let watcher = graceful.watcher();
        let (h1, h2) = (h1.clone(), h2.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%remote, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let peer = Arc::new(peer_identity(&tls));
            let is_h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                let api = api.clone();
                let peer = peer.clone();
                let filters = filters.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(filters.handle(api, request, peer, Some(remote)).await)
                }
            });
            // The protocol is the one ALPN chose, as upstream: HTTP/2 only when negotiated.
            let served = if is_h2 {
                let io = TokioIo::new(ReadIdle::new(tls, idle));
                watcher.watch(h2.serve_connection(io, service)).await
            } else {
                watcher
                    .watch(h1.serve_connection(TokioIo::new(tls), service))
                    .await
            };
            if let Err(e) = served {
                tracing::debug!(%remote, error = %e, "connection ended with an error");
            }
        });
    }
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests did not finish in time");
    }
}

/// A connection that fails its reads once the peer has sent nothing for `idle`. HTTP/2
/// keep-alive pings bound an established connection; this also bounds one whose client
/// never sends its preface.
struct ReadIdle<T> {
    inner: T,
    idle: Duration,
    last_read: Instant,
    timer: Pin<Box<Sleep>>,
}

impl<T> ReadIdle<T> {
    fn new(inner: T, idle: Duration) -> ReadIdle<T> {
        let now = Instant::now();
        ReadIdle {
            inner,
            idle,
            last_read: now,
            timer: Box::pin(tokio::time::sleep_until(now + idle)),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ReadIdle<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.last_read = Instant::now();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => loop {
                // The timer is moved on only when it fires, not on every read.
                ready!(self.timer.as_mut().poll(cx));
                let deadline = self.last_read + self.idle;
                if deadline <= Instant::now() {
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the client sent nothing in time",
                    )));
                }
                self.timer.as_mut().reset(deadline);
            },
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ReadIdle<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The next connection, once under the connection limit: its permit (held while it is
/// open), the stream and the peer address; None once `shutdown` is signalled. At the limit
/// nothing is accepted, so new clients wait in the listen backlog.
pub(crate) async fn accept(
    listener: &TcpListener,
    connections: Option<&Arc<Semaphore>>,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
    what: &'static str,
) -> Option<(
    Option<tokio::sync::OwnedSemaphorePermit>,
    tokio::net::TcpStream,
    SocketAddr,
)> {
    let permit = match connections {
        Some(connections) => tokio::select! {
            permit = connections.clone().acquire_owned() => Some(permit.ok()?),
            _ = shutdown.changed() => return None,
        },
        None => None,
    };
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, remote)) => {
                    let _ = tcp.set_nodelay(true);
                    return Some((permit, tcp, remote));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "{what} accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => return None,
        }
    }
}

pub(crate) fn peer_identity(tls: &tokio_rustls::server::TlsStream<tokio::net::TcpStream>) -> PeerIdentity {
    let (_, connection) = tls.get_ref();
    let identity = connection
        .peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(|cert| badge_pki::identity_from_der(cert.as_ref()))
        .map(|id| badge_auth::UserInfo::from_certificate(&id.user, &id.groups));
    PeerIdentity(identity)
}

/// Binds the listener, logging the address chosen for port 0.
pub async fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(address).await
}
