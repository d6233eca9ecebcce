//! The web console at `/console/` on its own port (`--console-bind-address`): static
//! assets compiled in, server-side sessions, and a same-origin proxy under `/console/api/`
//! that sends each request through the API's own handler as the logged-in user, so
//! authentication, RBAC and the audit log apply to everything the console shows or does.
//!
//! Its own port keeps cookies away from the API: the API never reads a cookie, so a
//! browser's ambient credential can reach it only through this proxy's CSRF checks.

pub mod search;
pub mod session;
pub mod throttle;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use badge_api::Status;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::ApiServer;
use crate::handler::PeerIdentity;
use crate::limits::RequestFilters;
use crate::response::{self, Body};
use session::{Credential, Session, Sessions};
use throttle::{ClientAddress, LoginThrottle};

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// Scripts, styles and fetches from this origin only, nothing inline, never framed.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
/// The header every write must carry, holding the session's CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Where the proxied API lives under the console.
const API_PREFIX: &str = "/console/api/";
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the console sends API requests.
pub trait Backend: Send + Sync + 'static {
    /// Answers `request` as the API would for the client `peer`.
    fn call(
        &self,
        request: Request<Full<Bytes>>,
        peer: Arc<PeerIdentity>,
    ) -> Pin<Box<dyn Future<Output = Response<Body>> + Send + '_>>;
}

/// The API server's own handler chain, behind the same limits as the API port.
pub struct ApiBackend {
    /// The API server.
    pub api: Arc<ApiServer>,
    /// The API port's limits, applied to the console's requests too.
    pub filters: RequestFilters,
}

impl Backend for ApiBackend {
    fn call(
        &self,
        request: Request<Full<Bytes>>,
        peer: Arc<PeerIdentity>,
    ) -> Pin<Box<dyn Future<Output = Response<Body>> + Send + '_>> {
        // The console's requests name no client address to the chain.
        Box::pin(self.filters.handle(self.api.clone(), request, peer, None))
    }
}

/// The console: its sessions and where it sends API requests.
pub struct Console<B> {
    /// Where API requests go.
    pub backend: B,
    /// The logged-in users.
    pub sessions: Sessions,
    /// Failed logins by client address.
    pub throttle: LoginThrottle,
}

impl<B: Backend> Console<B> {
    /// A console over `backend`, with default session lifetimes and login throttle.
    pub fn new(backend: B) -> Console<B> {
        Console {
            backend,
            sessions: Sessions::default(),
            throttle: LoginThrottle::default(),
        }
    }

    /// Serves one request on the console port.
    pub async fn handle<RB>(&self, request: Request<RB>, peer: Arc<PeerIdentity>) -> Response<Body>
    where
        RB: hyper::body::Body<Data = Bytes> + Send + 'static,
        RB::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let mut response = match self.route(request, peer).await {
            Ok(response) => response,
            Err(status) => response::status(&status),
        };
        secure_headers(response.headers_mut());
        response
    }

    async fn route<RB>(&self, request: Request<RB>, peer: Arc<PeerIdentity>) -> Result<Response<Body>, Status>
    where
        RB: hyper::body::Body<Data = Bytes> + Send + 'static,
        RB::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (parts, body) = request.into_parts();
        let writes = !matches!(parts.method, Method::GET | Method::HEAD);
        if !same_origin(&parts.headers, &parts.uri, writes) {
            return Err(Status::forbidden_path(
                "cross-origin requests to the console are refused",
            ));
        }
        let path = parts.uri.path();
        match (&parts.method, path) {
            (&Method::GET, "/console") => Ok(redirect("/console/")),
            (&Method::GET | &Method::HEAD, "/console/" | "/console/index.html") => {
                Ok(asset("text/html; charset=utf-8", INDEX_HTML))
            }
            (&Method::GET | &Method::HEAD, "/console/app.js") => {
                Ok(asset("text/javascript; charset=utf-8", APP_JS))
            }
            (&Method::GET | &Method::HEAD, "/console/app.css") => {
                Ok(asset("text/css; charset=utf-8", APP_CSS))
            }
            (&Method::GET, "/console/session") => {
                let (_, session) = self.session(&parts.headers, &peer)?;
                Ok(session_response(StatusCode::OK, &session))
            }
            (&Method::POST, "/console/login") => {
                let client = ClientAddress::of(&parts.extensions);
                if let Err(wait) = self.throttle.check(client, Instant::now()) {
                    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                    return Err(Status::too_many_requests(
                        crate::limits::TOO_MANY_REQUESTS_MESSAGE,
                        i64::try_from(seconds.max(1)).unwrap_or(i64::MAX),
                    ));
                }
                let body = crate::handler::read_body(body).await?;
                let response = self.login(&body, &peer).await;
                if !response.as_ref().is_ok_and(|r| r.status().is_success()) {
                    self.throttle.failed(client, Instant::now());
                }
                let response = response?;
                // A new login never continues an old session.
                if response.status().is_success()
                    && let Some(old) = session::cookie_session_id(&parts.headers)
                {
                    self.sessions.remove(&old);
                }
                Ok(response)
            }
            (&Method::POST, "/console/logout") => {
                let (id, session) = self.session(&parts.headers, &peer)?;
                check_csrf(&parts.headers, &session)?;
                self.sessions.remove(&id);
                let mut response = response::json(StatusCode::OK, &json!({"loggedOut": true}));
                set_header(
                    response.headers_mut(),
                    header::SET_COOKIE,
                    &session::clear_cookie(),
                );
                Ok(response)
            }
            (&Method::GET, p) if p.starts_with(search::SEARCH_PREFIX) => {
                let (_, session) = self.session(&parts.headers, &peer)?;
                let request = search::SearchRequest::parse(parts.uri.query())?;
                let list_path = format!("/{}", &p[search::SEARCH_PREFIX.len()..]);
                search::search(&list_path, &request, |api_request| {
                    let forwarded = forward_request(api_request, &session, &peer);
                    async move {
                        match forwarded {
                            Ok((api_request, peer)) => self.backend.call(api_request, peer).await,
                            Err(status) => response::status(&status),
                        }
                    }
                })
                .await
            }
            (_, p) if p.starts_with(API_PREFIX) => {
                let (_, session) = self.session(&parts.headers, &peer)?;
                if writes {
                    check_csrf(&parts.headers, &session)?;
                }
                let target = match parts.uri.query() {
                    Some(query) => format!("/{}?{query}", &p[API_PREFIX.len()..]),
                    None => format!("/{}", &p[API_PREFIX.len()..]),
                };
                let body = crate::handler::read_body(body).await?;
                let (request, peer) = forward(&parts.method, &target, &parts.headers, &session, &peer, body)?;
                Ok(self.backend.call(request, peer).await)
            }
            (&Method::GET | &Method::HEAD | &Method::POST, _) => Err(Status::path_not_found()),
            _ => Err(Status::method_not_allowed()),
        }
    }

    /// The live session the request's cookie names; for a certificate session, the
    /// connection must present that user's certificate again.
    fn session(&self, headers: &HeaderMap, peer: &PeerIdentity) -> Result<(String, Session), Status> {
        let id = session::cookie_session_id(headers).ok_or_else(Status::unauthorized)?;
        let session = self.sessions.get(&id).ok_or_else(Status::unauthorized)?;
        if let Credential::Certificate(user) = &session.credential
            && peer.0.as_ref().map(|u| &u.name) != Some(user)
        {
            return Err(Status::unauthorized());
        }
        Ok((id, session))
    }

    /// Checks a credential by asking the API who it is (a SelfSubjectReview, so the
    /// server's own authenticators decide) and starts a session for it.
    async fn login(&self, body: &Bytes, peer: &Arc<PeerIdentity>) -> Result<Response<Body>, Status> {
        let form: Value = serde_json::from_slice(body)
            .map_err(|e| Status::bad_request(format!("the login request is not JSON: {e}")))?;
        // A token, or else (None) the connection's client certificate.
        let token = match form.get("token").and_then(Value::as_str) {
            Some(token) if !token.trim().is_empty() => Some(token.trim().to_string()),
            _ if form.get("certificate").and_then(Value::as_bool) == Some(true) => None,
            _ => return Err(Status::bad_request("log in with a token or a client certificate")),
        };
        if token.is_none() && peer.0.is_none() {
            return Err(Status::bad_request(
                "no client certificate was presented to the console",
            ));
        }
        let review = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"});
        let mut request = Request::builder()
            .method(Method::POST)
            .uri("/apis/authentication.k8s.io/v1/selfsubjectreviews")
            .header(header::CONTENT_TYPE, response::JSON)
            .header(header::ACCEPT, response::JSON)
            .body(Full::new(Bytes::from(review.to_string())))
            .map_err(|e| Status::internal(format!("building the review: {e}")))?;
        let forwarded_peer = match &token {
            Some(token) => {
                let value = HeaderValue::from_str(&format!("Bearer {token}"))
                    .map_err(|_| Status::bad_request("the token holds characters a header cannot"))?;
                request.headers_mut().insert(header::AUTHORIZATION, value);
                Arc::new(PeerIdentity(None))
            }
            None => peer.clone(),
        };
        let response = self.backend.call(request, forwarded_peer).await;
        if !response.status().is_success() {
            return Ok(response);
        }
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let review: Value = serde_json::from_slice(&body)
            .map_err(|e| Status::internal(format!("reading the SelfSubjectReview: {e}")))?;
        let user = &review["status"]["userInfo"];
        let name = user["username"].as_str().unwrap_or_default().to_string();
        if name.is_empty() || name == badge_auth::user::ANONYMOUS {
            return Err(Status::unauthorized());
        }
        let groups = user["groups"]
            .as_array()
            .map(|g| g.iter().filter_map(Value::as_str).map(String::from).collect())
            .unwrap_or_default();
        let credential = match token {
            Some(token) => Credential::Token(token),
            None => Credential::Certificate(name.clone()),
        };
        let (id, session) = self.sessions.create(credential, name, groups);
        let mut response = session_response(StatusCode::CREATED, &session);
        set_header(
            response.headers_mut(),
            header::SET_COOKIE,
            &session::set_cookie(&id),
        );
        Ok(response)
    }
}

/// The API request the console makes for a session: only the headers that say what the
/// body is and what answer is wanted pass through; the credential is the session's.
fn forward(
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    session: &Session,
    peer: &Arc<PeerIdentity>,
    body: Bytes,
) -> Result<(Request<Full<Bytes>>, Arc<PeerIdentity>), Status> {
    let mut request = Request::builder()
        .method(method.clone())
        .uri(target)
        .body(Full::new(body))
        .map_err(|_| Status::bad_request(format!("invalid path {target}")))?;
    for name in [header::CONTENT_TYPE, header::ACCEPT] {
        if let Some(value) = headers.get(&name) {
            request.headers_mut().insert(name, value.clone());
        }
    }
    forward_request(request, session, peer)
}

/// `request` with the session's credential.
fn forward_request(
    mut request: Request<Full<Bytes>>,
    session: &Session,
    peer: &Arc<PeerIdentity>,
) -> Result<(Request<Full<Bytes>>, Arc<PeerIdentity>), Status> {
    let peer = match &session.credential {
        Credential::Token(token) => {
            let value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| Status::internal("the session's token is not a header value"))?;
            request.headers_mut().insert(header::AUTHORIZATION, value);
            Arc::new(PeerIdentity(None))
        }
        Credential::Certificate(_) => peer.clone(),
    };
    Ok((request, peer))
}

/// Whether a request comes from the console's own pages: a browser names the page's
/// origin on every cross-origin request and on every write.
fn same_origin(headers: &HeaderMap, uri: &http::Uri, writes: bool) -> bool {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(String::from)
        .or_else(|| uri.authority().map(|a| a.to_string()));
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && site != "same-origin"
        && site != "none"
    {
        return false;
    }
    match (headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()), host) {
        (Some(origin), Some(host)) => origin == format!("https://{host}"),
        (Some(_), None) => false,
        (None, _) => !writes,
    }
}

fn check_csrf(headers: &HeaderMap, session: &Session) -> Result<(), Status> {
    match headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()) {
        Some(token) if session::constant_time_eq(token, &session.csrf) => Ok(()),
        _ => Err(Status::forbidden_path(
            "the console's CSRF token is missing or does not match the session",
        )),
    }
}

fn session_response(code: StatusCode, session: &Session) -> Response<Body> {
    let kind = match session.credential {
        Credential::Token(_) => "token",
        Credential::Certificate(_) => "certificate",
    };
    response::json(
        code,
        &json!({"user": session.user, "groups": session.groups, "csrfToken": session.csrf, "credential": kind}),
    )
}

fn asset(content_type: &'static str, text: &'static str) -> Response<Body> {
    let mut response = Response::new(response::full(text));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn redirect(to: &'static str) -> Response<Body> {
    let mut response = Response::new(response::full(""));
    *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
    response
        .headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(to));
    response
}

fn set_header(headers: &mut HeaderMap, name: header::HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

/// The headers every console response carries.
pub fn secure_headers(headers: &mut HeaderMap) {
    let fixed = [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
        (header::STRICT_TRANSPORT_SECURITY, "max-age=31536000"),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
}

/// Serves the console on `listener` with the API's TLS configuration until `shutdown`,
/// holding at most `max_connections` open (0: no limit).
pub async fn serve<B: Backend>(
    console: Arc<Console<B>>,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    max_connections: usize,
) {
    let connections = (max_connections > 0).then(|| Arc::new(tokio::sync::Semaphore::new(max_connections)));
    let acceptor = TlsAcceptor::from(tls);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut h1 = http1::Builder::new();
    h1.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(60));
    let h2 = http2::Builder::new(TokioExecutor::new());
    while let Some((permit, tcp, remote)) =
        crate::server::accept(&listener, connections.as_ref(), &mut shutdown, "console").await
    {
        let acceptor = acceptor.clone();
        let console = console.clone();
        let watcher = graceful.watcher();
        let (h1, h2) = (h1.clone(), h2.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                _ => return,
            };
            let peer = Arc::new(crate::server::peer_identity(&tls));
            let is_h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            let service = service_fn(move |mut request: Request<hyper::body::Incoming>| {
                let console = console.clone();
                let peer = peer.clone();
                request.extensions_mut().insert(ClientAddress(remote.ip()));
                async move { Ok::<_, std::convert::Infallible>(console.handle(request, peer).await) }
            });
            let served = if is_h2 {
                watcher
                    .watch(h2.serve_connection(TokioIo::new(tls), service))
                    .await
            } else {
                watcher
                    .watch(h1.serve_connection(TokioIo::new(tls), service))
                    .await
            };
            if let Err(e) = served {
                tracing::debug!(%remote, error = %e, "console connection ended with an error");
            }
        });
    }
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await;
}

#[cfg(test)]
mod tests;
