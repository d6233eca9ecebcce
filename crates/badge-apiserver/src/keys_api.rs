//! `/badge/v1/keys`: the signing keys, their rotation and revocation.

use badge_api::Status;
use bytes::Bytes;
use http::{Method, Response, StatusCode};

use crate::ApiServer;
use crate::response::{self, Body};

/// How recently a key may have verified a token and still be retired without `force`.
const DEFAULT_RETIRE_WINDOW_SECONDS: i64 = 3600;

impl ApiServer {
    /// `/badge/v1/keys`: list (GET), `rotate`, `<kid>/revoke` and `<kid>/retire` (POST).
    pub(crate) async fn keys_api(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
        _body: &Bytes,
    ) -> Result<Response<Body>, Status> {
        let issuer = self.token_issuer.as_ref().ok_or_else(Status::path_not_found)?;
        let rest = path.trim_start_matches("/badge/v1/keys").trim_matches('/');
        let parts: Vec<&str> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/').collect()
        };
        match (method, parts.as_slice()) {
            (&Method::GET, []) => Ok(response::json(StatusCode::OK, &issuer.keys.describe())),
            (&Method::POST, ["rotate"]) => {
                let query = crate::params::Query::parse(query);
                let lead = match query.get("publishLeadSeconds") {
                    Some(v) => v
                        .parse::<i64>()
                        .map_err(|_| Status::bad_request(format!("invalid publishLeadSeconds: {v}")))?,
                    None => badge_token::oidc::CACHE_MAX_AGE_SECONDS,
                };
                let kid = issuer.keys.rotate(lead).await?;
                let mut described = issuer.keys.describe();
                described["rotated"] = serde_json::json!(kid);
                Ok(response::json(StatusCode::OK, &described))
            }
            (&Method::POST, [kid, "revoke"]) => {
                issuer.keys.revoke(kid).await?;
                Ok(response::json(StatusCode::OK, &issuer.keys.describe()))
            }
            (&Method::POST, [kid, "retire"]) => {
                let query = crate::params::Query::parse(query);
                let force = match query.get("force") {
                    None => false,
                    Some(v) => v
                        .parse::<bool>()
                        .map_err(|_| Status::bad_request(format!("invalid force: {v}")))?,
                };
                let window = match query.get("window") {
                    None => DEFAULT_RETIRE_WINDOW_SECONDS,
                    Some(v) => crate::limits::parse_go_duration(v)
                        .ok()
                        .and_then(|d| i64::try_from(d.as_secs()).ok())
                        .ok_or_else(|| Status::bad_request(format!("invalid window: {v}")))?,
                };
                issuer.keys.retire(kid, force, window).await?;
                Ok(response::json(StatusCode::OK, &issuer.keys.describe()))
            }
            (&Method::GET | &Method::POST, _) => Err(Status::path_not_found()),
            _ => Err(Status::method_not_allowed()),
        }
    }
}
