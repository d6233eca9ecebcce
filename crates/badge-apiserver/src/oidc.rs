//! OIDC discovery and the JWKS (`pkg/routes/openidmetadata.go`).

use badge_api::Status;
use http::{Response, StatusCode, header};

use crate::ApiServer;
use crate::response::{self, Body};

impl ApiServer {
    /// OIDC discovery and the JWKS, as `pkg/routes/openidmetadata.go` serves them.
    pub(crate) fn oidc(&self, path: &str) -> Result<Response<Body>, Status> {
        let issuer = self.token_issuer.as_ref().ok_or_else(Status::path_not_found)?;
        let first = issuer.config.issuers.first().cloned().unwrap_or_default();
        if !crate::serviceaccount::serves_discovery(&first) {
            return Err(Status::path_not_found());
        }
        // The published snapshot, whose JWKS was rendered when the keys last changed.
        let keys = issuer.keys.current();
        let (body, content_type) = if path.ends_with("jwks") {
            (keys.jwks().to_vec(), badge_token::oidc::JWKS_CONTENT_TYPE)
        } else {
            (
                badge_token::oidc::openid_configuration(
                    &first,
                    &issuer.config.jwks_uri,
                    self.revoked
                        .as_ref()
                        .and_then(|_| crate::revocation::list_uri(&issuer.config.jwks_uri))
                        .as_deref(),
                    keys.keys(),
                ),
                badge_token::oidc::CONFIG_CONTENT_TYPE,
            )
        };
        let mut response = response::json_bytes(StatusCode::OK, content_type, body);
        response.headers_mut().insert(
            header::CACHE_CONTROL,
            http::HeaderValue::from_static(badge_token::oidc::CACHE_CONTROL),
        );
        Ok(response)
    }
}
