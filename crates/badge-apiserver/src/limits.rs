//! The filters around every request, in upstream's order (`DefaultBuildHandlerChain`): the
//! request deadline and its `?timeout=` (`endpoints/filters/request_deadline.go`), the
//! timeout (`server/filters/timeout.go`), the in-flight limits
//! (`server/filters/maxinflight.go`) and panic recovery (`server/filters/wrap.go`); and
//! the request body's guard: a client that stops sending it fails the request, and a body
//! left unread by a refusal is drained so an HTTP/2 client gets the whole response.

use std::error::Error as StdError;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use badge_api::Status;
use badge_api::request_info::{self, PathError, RequestInfo};

use crate::handler::Known;
use bytes::Bytes;
use futures::FutureExt;
use http::{Method, Request, Response, StatusCode};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio::time::{Instant, Sleep};

use crate::ApiServer;
pub use crate::go_duration::parse_go_duration;
use crate::handler::PeerIdentity;
use crate::response::{self, Body, ServerFailure};

type BoxError = Box<dyn StdError + Send + Sync>;

/// Upstream's `tooManyRequests` message; clients retry after `Retry-After: 1`.
pub const TOO_MANY_REQUESTS_MESSAGE: &str = "Too many requests, please try again later.";
/// What the timeout filter answers when a request outlives its deadline.
pub const TIMEOUT_MESSAGE: &str = "Timeout: request did not complete within the allotted timeout";
/// What a client is told when its request made the server panic (`wrap.go`).
pub const PANIC_MESSAGE: &str = "This request caused apiserver to panic. Look in the logs for details.";
/// A refused request's unread body is read and dropped up to this much, so the stream ends
/// cleanly; a larger one is reset.
const DRAIN_MAX_BYTES: usize = 4 * 1024 * 1024;
/// How long draining an unread body may take.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The request-level limits, with kube-apiserver's defaults.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Non-mutating requests (get, list) served at once; 0 is no limit
    /// (`--max-requests-inflight`).
    pub max_requests_inflight: usize,
    /// Mutating requests served at once; 0 is no limit (`--max-mutating-requests-inflight`).
    pub max_mutating_requests_inflight: usize,
    /// How long a request that is not long-running may take (`--request-timeout`).
    pub request_timeout: Duration,
    /// How long the server waits on a client that sends nothing: for a request's headers,
    /// for more of its body, for any HTTP/2 frame. The request fails, or the connection
    /// closes.
    pub client_idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_requests_inflight: 400,
            max_mutating_requests_inflight: 200,
            request_timeout: Duration::from_secs(60),
            client_idle_timeout: Duration::from_secs(60),
        }
    }
}

/// The filters, built once per server and shared by its connections.
pub struct RequestFilters {
    read_only: Option<Arc<Semaphore>>,
    mutating: Option<Arc<Semaphore>>,
    request_timeout: Duration,
    body_idle_timeout: Duration,
}

/// How the filters treat a request, from its verb.
struct Kind {
    long_running: bool,
    mutating: bool,
}

impl Kind {
    /// Upstream's `BasicLongRunningRequestCheck` with kube-apiserver's verbs and
    /// subresources, and `maxinflight.go`'s non-mutating verbs.
    fn of(method: &Method, info: &Result<RequestInfo, PathError>) -> Kind {
        match info {
            Ok(info) => Kind {
                long_running: matches!(info.verb.as_str(), "watch" | "proxy")
                    || (info.is_resource_request
                        && matches!(
                            info.subresource.as_str(),
                            "attach" | "exec" | "proxy" | "log" | "portforward"
                        )),
                mutating: !matches!(info.verb.as_str(), "get" | "list" | "watch"),
            },
            // The handler answers an unparseable path; it is counted by its method.
            Err(_) => Kind {
                long_running: false,
                mutating: method != Method::GET,
            },
        }
    }
}

impl RequestFilters {
    /// Filters enforcing `limits`.
    pub fn new(limits: &Limits) -> RequestFilters {
        let semaphore = |n: usize| (n > 0).then(|| Arc::new(Semaphore::new(n)));
        RequestFilters {
            read_only: semaphore(limits.max_requests_inflight),
            mutating: semaphore(limits.max_mutating_requests_inflight),
            request_timeout: limits.request_timeout,
            body_idle_timeout: limits.client_idle_timeout,
        }
    }

    /// Serves one request through the filters and `api`.
    pub async fn handle<B>(
        &self,
        api: Arc<ApiServer>,
        request: Request<B>,
        peer: Arc<PeerIdentity>,
        remote: Option<std::net::SocketAddr>,
    ) -> Response<Body>
    where
        B: HttpBody<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        let method = request.method().clone();
        let uri = request.uri().clone();
        // Whatever answers the request, a refusal too, leaves the body unread: it comes
        // back through `unread` to be drained.
        // Every version drains: over HTTP/1.1 a client that stopped waiting for
        // `100 Continue` (curl gives up after a second) is sending its body, and a connection
        // closed under it resets before the response is read.
        let (parts, body) = request.into_parts();
        let (body, unread) = GuardedBody::new(body, self.body_idle_timeout, true);
        let (response, timed_out) = self
            .filter(api, Request::from_parts(parts, body), peer, remote)
            .await;
        // A timed-out request's body is not waited for: the stream or connection ends.
        if !timed_out && let Ok(body) = unread.await {
            drain(body).await;
        }
        if response.status().is_server_error() {
            let cause = response
                .extensions()
                .get::<ServerFailure>()
                .map_or("", |failure| failure.0.as_str());
            tracing::error!(%method, path = uri.path(), code = response.status().as_u16(), cause, "request failed");
        }
        response
    }

    /// The response, and whether the request timed out.
    async fn filter<B>(
        &self,
        api: Arc<ApiServer>,
        request: Request<GuardedBody<B>>,
        peer: Arc<PeerIdentity>,
        remote: Option<std::net::SocketAddr>,
    ) -> (Response<Body>, bool)
    where
        B: HttpBody<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        // Request info is parsed once, here, and travels with the request to the chain.
        let info = request_info::parse(
            request.method().as_str(),
            request.uri().path(),
            request.uri().query(),
        );
        let kind = Kind::of(request.method(), &info);
        let deadline = if kind.long_running {
            None
        } else {
            match requested_timeout(request.uri().query()) {
                Ok(requested) => Some(Instant::now() + self.timeout_for(requested)),
                Err(status) => return (response::status(&status), false),
            }
        };
        let _permit = if kind.long_running {
            None
        } else {
            match self.admit(&kind, &api, request.headers(), &peer) {
                Ok(permit) => permit,
                Err(status) => return (response::status(&status), false),
            }
        };
        let known = Known {
            remote,
            info: Some(info),
        };
        let served = catch_panic(api.handle_known(request, peer, known));
        match deadline {
            None => (served.await, false),
            // The handler is dropped with its request, as a client's disconnect drops it.
            Some(deadline) => match tokio::time::timeout_at(deadline, served).await {
                Ok(response) => (response, false),
                Err(_) => (response::status(&timeout_status()), true),
            },
        }
    }

    /// The request's deadline: `?timeout=` when shorter than the server's, as upstream.
    fn timeout_for(&self, requested: Option<Duration>) -> Duration {
        match requested {
            Some(t) if !t.is_zero() && t < self.request_timeout => t,
            _ => self.request_timeout,
        }
    }

    /// Takes an in-flight slot, or refuses with 429 unless the caller is in
    /// `system:masters`, which upstream always serves.
    fn admit(
        &self,
        kind: &Kind,
        api: &ApiServer,
        headers: &http::HeaderMap,
        peer: &PeerIdentity,
    ) -> Result<Option<OwnedSemaphorePermit>, Status> {
        let semaphore = if kind.mutating {
            &self.mutating
        } else {
            &self.read_only
        };
        let Some(semaphore) = semaphore else {
            return Ok(None);
        };
        match semaphore.clone().try_acquire_owned() {
            Ok(permit) => Ok(Some(permit)),
            Err(_) if is_privileged(api, headers, peer) => Ok(None),
            Err(_) => Err(Status::too_many_requests(TOO_MANY_REQUESTS_MESSAGE, 1)),
        }
    }
}

/// Whether the caller's credential makes it a `system:masters` member. Only asked when
/// a request would be refused, so the token is verified a second time only then.
fn is_privileged(api: &ApiServer, headers: &http::HeaderMap, peer: &PeerIdentity) -> bool {
    // The same authentication the request chain runs, on a copy: it removes the credential.
    let mut headers = headers.clone();
    api.authentication
        .authenticate(&mut headers, peer)
        .is_ok_and(|user| user.in_group(badge_auth::user::SYSTEM_MASTERS))
}

/// The `timeout` query parameter, as upstream's `parseTimeout`.
fn requested_timeout(query: Option<&str>) -> Result<Option<Duration>, Status> {
    // Most requests carry no timeout: they skip parsing the query.
    let Some(query) = query.filter(|q| q.contains("timeout")) else {
        return Ok(None);
    };
    let query = crate::params::Query::parse(Some(query));
    let Some(value) = query.get("timeout").filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    parse_go_duration(value)
        .map(Some)
        .map_err(|e| Status::bad_request(format!("invalid timeout specified in the request URL - {e}")))
}

fn timeout_status() -> Status {
    let mut status = Status::timeout(TIMEOUT_MESSAGE);
    status.details = Some(Default::default());
    status
}

/// Runs a handler future; a panic becomes a 500 whose cause only the log sees, and the
/// connection goes on serving.
pub async fn catch_panic<F>(handler: F) -> Response<Body>
where
    F: Future<Output = Response<Body>>,
{
    match AssertUnwindSafe(handler).catch_unwind().await {
        Ok(response) => response,
        Err(panic) => {
            let cause = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".into());
            let mut status = Status::internal(PANIC_MESSAGE);
            status.message = PANIC_MESSAGE.into();
            status.details = None;
            let mut response = response::json(StatusCode::INTERNAL_SERVER_ERROR, &status);
            response
                .extensions_mut()
                .insert(ServerFailure(format!("panic: {cause}")));
            response
        }
    }
}

/// Reads and drops what is left of a body, within bounds, so that the client's stream
/// ends before the response does (an HTTP/2 stream reset, or an HTTP/1.1 connection closed,
/// before the client sent its whole body makes clients such as curl discard the response).
async fn drain<B>(mut body: B)
where
    B: HttpBody<Data = Bytes> + Unpin,
{
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    let mut left = DRAIN_MAX_BYTES;
    while !body.is_end_stream() {
        let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx));
        match tokio::time::timeout_at(deadline, frame).await {
            Ok(Some(Ok(frame))) => {
                let n = frame.data_ref().map_or(0, Bytes::len);
                match left.checked_sub(n) {
                    Some(rest) => left = rest,
                    None => return,
                }
            }
            _ => return,
        }
    }
}

/// A request body that fails when the client sends nothing of it for `idle`, and that,
/// when dropped unfinished, hands what is left back for draining.
pub struct GuardedBody<B> {
    inner: Option<B>,
    idle: Duration,
    stall: Option<Pin<Box<Sleep>>>,
    /// Data arrived since the stall timer was last armed.
    progressed: bool,
    /// Ended or failed: nothing is left to drain.
    finished: bool,
    unread: Option<oneshot::Sender<B>>,
}

impl<B> GuardedBody<B> {
    /// Wraps `body`; with `drains`, the receiver gets the body back if it is dropped before
    /// its end.
    pub fn new(body: B, idle: Duration, drains: bool) -> (GuardedBody<B>, oneshot::Receiver<B>) {
        let (tx, rx) = oneshot::channel();
        let guarded = GuardedBody {
            inner: Some(body),
            idle,
            stall: None,
            progressed: false,
            finished: false,
            unread: drains.then_some(tx),
        };
        (guarded, rx)
    }
}

/// The error of a body the client stopped sending.
#[derive(Debug)]
pub struct BodyStalled(Duration);

impl std::fmt::Display for BodyStalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the client sent nothing of the body for {}s",
            self.0.as_secs_f64()
        )
    }
}

impl StdError for BodyStalled {}

impl<B> HttpBody for GuardedBody<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.progressed = true;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.finished = true;
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                this.finished = true;
                Poll::Ready(None)
            }
            Poll::Pending => {
                let deadline = Instant::now() + this.idle;
                match &mut this.stall {
                    None => this.stall = Some(Box::pin(tokio::time::sleep_until(deadline))),
                    Some(stall) if this.progressed => stall.as_mut().reset(deadline),
                    Some(_) => {}
                }
                this.progressed = false;
                if let Some(stall) = this.stall.as_mut() {
                    ready!(stall.as_mut().poll(cx));
                }
                this.finished = true;
                Poll::Ready(Some(Err(Box::new(BodyStalled(this.idle)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(HttpBody::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), HttpBody::size_hint)
    }
}

impl<B> Drop for GuardedBody<B> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        if let (Some(tx), Some(body)) = (self.unread.take(), self.inner.take()) {
            let _ = tx.send(body);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use http_body_util::BodyExt;

    #[test]
    fn go_duration_fraction_past_the_largest_whole_is_invalid() {
        // The most whole hours that fit in a u128 of nanoseconds: the fraction added to them
        // used to overflow.
        let text = format!("{}.9h", u128::MAX / 3_600_000_000_000);
        assert_eq!(
            parse_go_duration(&text).unwrap_err(),
            format!("time: invalid duration {text:?}")
        );
    }

    #[test]
    fn requested_timeout_is_upstreams() {
        assert_eq!(requested_timeout(None).unwrap(), None);
        assert_eq!(requested_timeout(Some("watch=1")).unwrap(), None);
        assert_eq!(
            requested_timeout(Some("timeout=5s")).unwrap(),
            Some(Duration::from_secs(5))
        );
        let bad = requested_timeout(Some("timeout=soon")).unwrap_err();
        assert_eq!(bad.code, 400);
        assert_eq!(
            bad.message,
            "invalid timeout specified in the request URL - time: invalid duration \"soon\""
        );
        let filters = RequestFilters::new(&Limits::default());
        assert_eq!(filters.timeout_for(None), Duration::from_secs(60));
        assert_eq!(
            filters.timeout_for(Some(Duration::from_secs(5))),
            Duration::from_secs(5)
        );
        assert_eq!(
            filters.timeout_for(Some(Duration::from_secs(600))),
            Duration::from_secs(60)
        );
        assert_eq!(filters.timeout_for(Some(Duration::ZERO)), Duration::from_secs(60));
    }

    #[test]
    fn long_running_and_mutating_as_upstream() {
        let kind = |method: Method, uri: &str| {
            let uri: http::Uri = uri.parse().unwrap();
            let k = Kind::of(
                &method,
                &request_info::parse(method.as_str(), uri.path(), uri.query()),
            );
            (k.long_running, k.mutating)
        };
        assert_eq!(
            kind(Method::GET, "/api/v1/serviceaccounts?watch=true"),
            (true, false)
        );
        assert_eq!(
            kind(Method::GET, "/api/v1/watch/namespaces/a/serviceaccounts"),
            (true, false)
        );
        assert_eq!(
            kind(Method::GET, "/api/v1/namespaces/a/serviceaccounts"),
            (false, false)
        );
        assert_eq!(
            kind(Method::POST, "/api/v1/namespaces/a/serviceaccounts"),
            (false, true)
        );
        assert_eq!(
            kind(Method::DELETE, "/api/v1/namespaces/a/serviceaccounts/b"),
            (false, true)
        );
        assert_eq!(
            kind(Method::GET, "/api/v1/namespaces/a/pods/p/log"),
            (true, false)
        );
        assert_eq!(kind(Method::GET, "/readyz"), (false, false));
    }

    #[tokio::test]
    async fn a_panic_becomes_a_500_without_its_text() {
        let response = catch_panic(async {
            if std::hint::black_box(true) {
                panic!("secret detail");
            }
            response::text(StatusCode::OK, "ok")
        })
        .await;
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            response.extensions().get::<ServerFailure>().unwrap().0,
            "panic: secret detail"
        );
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let status: Status = serde_json::from_slice(&body).unwrap();
        assert_eq!(status.reason, "InternalError");
        assert_eq!(status.code, 500);
        assert_eq!(status.message, PANIC_MESSAGE);
        assert!(!String::from_utf8_lossy(&body).contains("secret"));
    }

    #[tokio::test]
    async fn a_stalled_body_fails_after_the_idle_time() {
        use futures::StreamExt;
        let stream = futures::stream::once(async {
            Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"{")))
        })
        .chain(futures::stream::pending());
        let (body, unread) = GuardedBody::new(
            http_body_util::StreamBody::new(Box::pin(stream)),
            Duration::from_millis(50),
            true,
        );
        let error = body.collect().await.unwrap_err();
        assert!(error.is::<BodyStalled>(), "{error}");
        // A failed body is not drained.
        assert!(unread.await.is_err());
    }

    #[tokio::test]
    async fn an_unread_body_comes_back_for_draining() {
        let (body, unread) = GuardedBody::new(
            http_body_util::Full::new(Bytes::from_static(b"unread")),
            Duration::from_secs(60),
            true,
        );
        drop(body);
        let left = unread.await.unwrap();
        assert_eq!(left.collect().await.unwrap().to_bytes(), "unread");

        let (body, unread) = GuardedBody::new(
            http_body_util::Full::new(Bytes::from_static(b"read")),
            Duration::from_secs(60),
            true,
        );
        assert_eq!(body.collect().await.unwrap().to_bytes(), "read");
        assert!(unread.await.is_err());
    }
}

#[cfg(test)]
mod proptests {
    #![allow(clippy::unwrap_used)]

    use proptest::prelude::*;

    use super::*;

    fn config() -> ProptestConfig {
        ProptestConfig {
            cases: 256,
            ..ProptestConfig::default()
        }
    }

    const UNITS: &[(&str, u128)] = &[
        ("ns", 1),
        ("us", 1_000),
        ("µs", 1_000),
        ("ms", 1_000_000),
        ("s", 1_000_000_000),
        ("m", 60_000_000_000),
        ("h", 3_600_000_000_000),
    ];

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn go_duration_arbitrary_text_never_panics(
            text in prop_oneof![
                any::<String>(),
                "[-+]?([0-9]{0,40}(\\.[0-9]{0,40})?(ns|us|µs|μs|ms|s|m|h|x|)){0,4}",
            ],
        ) {
            if let Ok(duration) = parse_go_duration(&text) {
                prop_assert!(duration.as_nanos() <= i64::MAX as u128);
            }
        }

        #[test]
        fn go_duration_past_the_limit_is_invalid(
            (unit, nanos) in prop::sample::select(UNITS),
            below_max in 0u128..2,
            fraction in "[5-9][0-9]{0,20}",
        ) {
            // Whole parts near the largest u128 of nanoseconds, where arithmetic would wrap.
            let whole = u128::MAX / nanos - below_max;
            let text = format!("{whole}.{fraction}{unit}");
            prop_assert!(parse_go_duration(&text).is_err());
        }

        #[test]
        fn go_duration_sums_its_parts(
            parts in prop::collection::vec((0u64..100_000, prop::sample::select(UNITS)), 1..5),
            negative in any::<bool>(),
        ) {
            let text = format!(
                "{}{}",
                if negative { "-" } else { "" },
                parts.iter().map(|(n, (unit, _))| format!("{n}{unit}")).collect::<String>()
            );
            let want: u128 = parts.iter().map(|(n, (_, nanos))| u128::from(*n) * nanos).sum();
            let want = if negative { 0 } else { want };
            prop_assert_eq!(parse_go_duration(&text).unwrap().as_nanos(), want);
        }
    }
}
