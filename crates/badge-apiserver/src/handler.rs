//! The request chain, one named stage per module (upstream's `DefaultBuildHandlerChain`):
//! request info (`badge_api::request_info`) → authentication (`authentication`) →
//! impersonation (`impersonation`) → audit (`audit`) → authorization (`authorization`) →
//! the router (`router`) and the handler of what the request names, with admission inside
//! the write paths (`badge_registry::admission`). Every failure becomes a `Status` here.
//! The audit log's record and the request metrics are finished here, once the response is
//! known.

use std::sync::Arc;

use badge_api::Status;
use badge_api::request_info::{self, PathError};
use badge_api::status::MAX_REQUEST_BODY_BYTES;
use bytes::Bytes;
use futures::FutureExt;
use http::{Request, Response};
use http_body_util::{BodyExt, Either, Limited};
use std::panic::AssertUnwindSafe;

use crate::ApiServer;
use crate::audit::{AUDIT_ID, DECISION_ANNOTATION, REASON_ANNOTATION};
pub use crate::authentication::PeerIdentity;
use crate::metrics::AuthenticationResult;
pub use crate::nonresource::{KUBERNETES_VERSION, version_info};
use crate::response::{self, Body};

/// What the connection and the filters before the chain already know of a request, handed
/// on as it is rather than in the request's extensions, which would allocate a map.
#[derive(Debug, Default)]
pub struct Known {
    /// The client's address, from its connection.
    pub remote: Option<std::net::SocketAddr>,
    /// Request info an outer filter already parsed (the limits need the verb), so that the
    /// path is parsed once.
    pub info: Option<Result<badge_api::request_info::RequestInfo, PathError>>,
}

/// What the chain learns of a request that the edge records once it is answered.
#[derive(Default)]
struct Exchange {
    /// The request metrics' counters, once the path is parsed.
    series: Option<Arc<crate::metrics::RequestSeries>>,
    recorder: Option<crate::audit::Recorder>,
}

impl Drop for Exchange {
    /// A request dropped before its end (the timeout filter, a client that left) still
    /// closes its audit record.
    fn drop(&mut self) {
        if let Some(recorder) = self.recorder.take() {
            recorder.abandoned();
        }
    }
}

impl ApiServer {
    /// Handles one request.
    pub async fn handle<B>(self: Arc<Self>, request: Request<B>, peer: Arc<PeerIdentity>) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.handle_known(request, peer, Known::default()).await
    }

    /// Handles one request, with what is `known` of it already.
    pub async fn handle_known<B>(
        self: Arc<Self>,
        request: Request<B>,
        peer: Arc<PeerIdentity>,
        mut known: Known,
    ) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let started = std::time::Instant::now();
        let received = badge_api::clock::now();
        // Kept as the header value it is echoed in: the client's is shared, not copied.
        let audit_id = request
            .headers()
            .get(AUDIT_ID)
            .filter(|v| v.to_str().is_ok_and(|v| !v.is_empty() && v.len() <= 128))
            .cloned()
            .unwrap_or_else(crate::audit::new_audit_id_header);
        let audit_id_text = audit_id.to_str().unwrap_or_default();
        let mut exchange = Exchange::default();
        let served =
            AssertUnwindSafe(self.serve(request, &mut known, &peer, &mut exchange, audit_id_text, received))
                .catch_unwind()
                .await;
        let (mut response, failure) = match served {
            Ok(Ok(response)) => (response, None),
            Ok(Err(status)) => (response::status(&status), Some(status)),
            Err(panic) => {
                if let Some(recorder) = exchange.recorder.take() {
                    recorder.panicked();
                }
                self.observe(&exchange, 500, started);
                std::panic::resume_unwind(panic);
            }
        };
        if let Some(recorder) = exchange.recorder.take() {
            response = recorder.respond(response, failure.as_ref()).await;
        }
        response.headers_mut().insert(AUDIT_ID, audit_id);
        self.observe(&exchange, response.status().as_u16(), started);
        response
    }

    fn observe(&self, exchange: &Exchange, code: u16, started: std::time::Instant) {
        if let Some(series) = &exchange.series {
            series.observe(code, started.elapsed());
        }
    }

    async fn serve<B>(
        &self,
        request: Request<B>,
        // Borrowed: by value it would grow this future, which is moved whole.
        known: &mut Known,
        peer: &PeerIdentity,
        exchange: &mut Exchange,
        audit_id: &str,
        received: jiff::Timestamp,
    ) -> Result<Response<Body>, Status>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (parts, body) = request.into_parts();
        let http::request::Parts {
            method,
            uri,
            mut headers,
            extensions,
            ..
        } = parts;
        // The limits filter has parsed the path already; a request served without it is
        // parsed here.
        let remote = known.remote;
        let info = match known.info.take() {
            Some(parsed) => parsed,
            None => request_info::parse(method.as_str(), uri.path(), uri.query()),
        };
        let info = info.map_err(|e| match e {
            PathError::InvalidName(_) => Status::bad_request(e.to_string()),
            _ => Status::path_not_found(),
        })?;
        let info = crate::webhooks::as_review(info);
        let apply = method == http::Method::PATCH
            && headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("application/apply-patch"));
        let known = !info.is_resource_request
            || badge_api::resources::lookup(&info.api_group, &info.api_version, &info.resource).is_some();
        exchange.series = Some(
            self.metrics
                .request_series(crate::metrics::RequestLabels::of(&info, apply, known)),
        );
        let remote = remote.or_else(|| {
            extensions
                .get::<crate::authentication::ClientAddress>()
                .map(|a| a.0)
        });
        // Read before authentication removes the credential header.
        let bearer = self.audit_log.is_some() && crate::audit::bearer_scheme(&headers);
        let had_credential = headers.contains_key(http::header::AUTHORIZATION);
        let outcome = self.authentication.authenticate_request(&mut headers, peer);
        let meta = crate::audit::RequestMeta {
            audit_id,
            uri: &uri,
            headers: &headers,
            remote,
            bearer,
            received,
        };
        let (authenticated, credential) = match outcome {
            Ok(found) => {
                self.metrics.authentication(AuthenticationResult::Success);
                found
            }
            Err(status) => {
                self.metrics.authentication(if had_credential {
                    AuthenticationResult::Error
                } else {
                    AuthenticationResult::Failure
                });
                if let Some(auditor) = &self.audit_log {
                    auditor.failed_authentication(&meta, &info, peer.0.is_some());
                }
                return Err(status);
            }
        };
        let suspicion = credential.as_ref().and_then(|credential| {
            let agent = headers
                .get(http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let now = badge_api::clock::now();
            self.usage
                .record(credential, now, remote.map(|a| a.ip()), agent)
                .or_else(|| self.node_binding_check(credential, &authenticated, now))
        });
        if let Some(auditor) = &self.audit_log {
            exchange.recorder = auditor.begin(&meta, &info, &authenticated);
        }
        if let (Some(recorder), Some(suspicion)) = (exchange.recorder.as_mut(), suspicion) {
            recorder.annotate(
                crate::usage::SUSPICIOUS_ANNOTATION,
                format!("{}: {}", suspicion.reason, suspicion.message),
            );
        }
        let user = crate::impersonation::impersonate(self.authorizer.as_ref(), &headers, authenticated)?;
        if let Some(recorder) = exchange.recorder.as_mut()
            && crate::impersonation::requested(&headers)
        {
            recorder.impersonated(&user);
        }
        self.audit.request(&crate::audit::RequestEvent {
            info: &info,
            user: &user,
        });
        let decided = crate::authorization::authorize_with_reason(self.authorizer.as_ref(), user, &info);
        if let Some(recorder) = exchange.recorder.as_mut() {
            let (decision, reason) = match &decided {
                Ok(_) => ("allow", ""),
                Err((_, reason)) => ("forbid", reason.as_str()),
            };
            recorder.annotate(DECISION_ANNOTATION, decision);
            recorder.annotate(REASON_ANNOTATION, reason.to_string());
        }
        let user = decided.map_err(|(status, _)| status)?;
        // The body is read here only when the event records it.
        let body = match exchange.recorder.as_mut() {
            Some(recorder) if recorder.level() >= crate::audit::Level::Request => {
                let bytes = read_body(body).await?;
                recorder.request_body(bytes.clone());
                Either::Right(http_body_util::Full::new(bytes))
            }
            _ => Either::Left(body),
        };
        self.route(method, uri, headers, body, info, user).await
    }
}

/// Reads a request body, refusing more than upstream's 3 MiB.
pub(crate) async fn read_body<B>(body: B) -> Result<Bytes, Status>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match Limited::new(body, MAX_REQUEST_BODY_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            Err(Status::request_entity_too_large(MAX_REQUEST_BODY_BYTES))
        }
        Err(e) => Err(Status::bad_request(format!(
            "error reading the request body: {e}"
        ))),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::audit::log::MemoryBackend;
    use crate::audit::{Auditor, Policy, RequestMeta};

    #[test]
    fn a_request_dropped_before_its_response_still_closes_its_audit_record() {
        let backend = Arc::new(MemoryBackend::default());
        let auditor = Arc::new(Auditor::new(
            Policy::metadata_for_everything(),
            backend.clone(),
            Arc::new(crate::metrics::Metrics::default()),
        ));
        let uri: http::Uri = "/api/v1/namespaces/a/configmaps".parse().unwrap();
        let headers = http::HeaderMap::new();
        let meta = RequestMeta::new("id", &uri, &headers, None, badge_api::clock::now());
        let info = request_info::parse("POST", uri.path(), None).unwrap();
        let user = badge_auth::UserInfo::from_certificate("alice", &[]);
        let exchange = Exchange {
            series: None,
            recorder: auditor.begin(&meta, &info, &user),
        };
        assert!(
            backend.events.lock().is_empty(),
            "the default leaves out RequestReceived"
        );
        drop(exchange);
        let events = backend.events.lock();
        assert_eq!(events.len(), 1);
        let event = serde_json::to_value(&events[0]).unwrap();
        assert_eq!(event["stage"], "ResponseComplete");
        assert_eq!(event["responseStatus"]["code"], 504);
        assert_eq!(event["verb"], "create");
    }
}
