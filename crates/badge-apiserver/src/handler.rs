//! The request chain, one named stage per module (upstream's `DefaultBuildHandlerChain`):
//! request info (`badge_api::request_info`) → authentication (`authentication`) →
//! impersonation (`impersonation`) → audit (`audit`) → authorization (`authorization`) →
//! the router (`router`) and the handler of what the request names, with admission inside
//! the write paths (`badge_registry::admission`). Every failure becomes a `Status` here.

use std::sync::Arc;

use badge_api::Status;
use badge_api::request_info::{self, PathError};
use badge_api::status::MAX_REQUEST_BODY_BYTES;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Limited};

use crate::ApiServer;
pub use crate::authentication::PeerIdentity;
pub use crate::nonresource::{KUBERNETES_VERSION, version_info};
use crate::response::{self, Body};

/// Request info an outer filter already parsed (the limits need the verb), handed on so the
/// path is parsed once.
#[derive(Clone, Debug)]
pub struct ParsedRequestInfo(pub Result<badge_api::request_info::RequestInfo, PathError>);

impl ApiServer {
    /// Handles one request.
    pub async fn handle<B>(self: Arc<Self>, request: Request<B>, peer: Arc<PeerIdentity>) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        match self.serve(request, &peer).await {
            Ok(response) => response,
            Err(status) => response::status(&status),
        }
    }

    async fn serve<B>(&self, request: Request<B>, peer: &PeerIdentity) -> Result<Response<Body>, Status>
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
        let info = request_info::parse(method.as_str(), uri.path(), uri.query()).map_err(|e| match e {
            PathError::InvalidName(_) => Status::bad_request(e.to_string()),
            _ => Status::path_not_found(),
        })?;
        let (authenticated, credential) = self.authentication.authenticate_request(&mut headers, peer)?;
        if let Some(credential) = &credential {
            let source = extensions
                .get::<crate::authentication::ClientAddress>()
                .map(|a| a.0.ip());
            let agent = headers
                .get(http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            self.usage
                .record(credential, badge_api::clock::now(), source, agent);
        }
        let user = crate::impersonation::impersonate(self.authorizer.as_ref(), &headers, authenticated)?;
        self.audit.request(&crate::audit::RequestEvent {
            info: &info,
            user: &user,
        });
        let user = crate::authorization::authorize(self.authorizer.as_ref(), user, &info)?;
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
