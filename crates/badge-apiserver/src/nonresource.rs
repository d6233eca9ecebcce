//! Non-resource paths: health, version, discovery documents and OpenAPI.

use badge_api::Status;
use badge_api::request_info::RequestInfo;
use bytes::Bytes;
use http::{Method, Response, StatusCode, header};

use crate::response::{self, Body};
use crate::{ApiServer, discovery};

/// The kube-apiserver version badge presents itself as.
pub const KUBERNETES_VERSION: &str = "v1.35.0";

impl ApiServer {
    pub(crate) fn non_resource(
        &self,
        method: &Method,
        info: &RequestInfo,
        accept: &str,
        if_none_match: &str,
    ) -> Result<Response<Body>, Status> {
        if method != Method::GET && method != Method::HEAD {
            return Err(Status::method_not_allowed());
        }
        let path = info.path.trim_end_matches('/');
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match parts.as_slice() {
            ["healthz"] | ["livez"] | ["readyz"] => Ok(response::text(StatusCode::OK, "ok")),
            ["version"] => Ok(response::json(StatusCode::OK, &version_info())),
            ["api"] | ["apis"] => {
                let core = parts[0] == "api";
                if let Some(v) = discovery::aggregated_version(accept) {
                    let doc = discovery::aggregated(core, v);
                    let bytes = serde_json::to_vec(&doc).map_err(|e| Status::internal(e.to_string()))?;
                    return Ok(response::json_bytes(
                        StatusCode::OK,
                        &discovery::aggregated_content_type(v),
                        bytes,
                    ));
                }
                let doc = if core {
                    discovery::api_versions()
                } else {
                    discovery::api_group_list()
                };
                Ok(response::json(StatusCode::OK, &doc))
            }
            ["api", version] => discovery::api_resource_list("", version)
                .map(|d| response::json(StatusCode::OK, &d))
                .ok_or_else(Status::path_not_found),
            ["apis", group] => discovery::api_group(group)
                .map(|d| response::json(StatusCode::OK, &d))
                .ok_or_else(Status::path_not_found),
            ["apis", group, version] => discovery::api_resource_list(group, version)
                .map(|d| response::json(StatusCode::OK, &d))
                .ok_or_else(Status::path_not_found),
            [".well-known", "openid-configuration"] | ["openid", "v1", "jwks"] => self.oidc(path),
            ["openapi", "v2"] => Ok(openapi_v2_response(accept, if_none_match)),
            ["openapi", "v3"] => Ok(openapi_response(badge_api::openapi::index_bytes())),
            ["openapi", "v3", rest @ ..] => badge_api::openapi::document_bytes(&rest.join("/"))
                .map(openapi_response)
                .ok_or_else(Status::path_not_found),
            _ => Err(Status::path_not_found()),
        }
    }
}

fn openapi_response(bytes: &'static [u8]) -> Response<Body> {
    let mut response = response::json_bytes(StatusCode::OK, "application/json", bytes.to_vec());
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache, private"),
    );
    response
}

/// `/openapi/v2` in the form `Accept` asks for, as kube-openapi's handler serves it: one
/// entity tag for both forms, `Vary: Accept`, 304 when the client's copy is current, and an
/// empty 406 when no form is acceptable.
fn openapi_v2_response(accept: &str, if_none_match: &str) -> Response<Body> {
    use badge_api::openapi::v2;
    let mut response = match v2::negotiate(accept) {
        None => {
            let mut response = Response::new(response::full(Bytes::new()));
            *response.status_mut() = StatusCode::NOT_ACCEPTABLE;
            response
        }
        Some(_) if etag_matches(if_none_match, v2::etag()) => {
            let mut response = Response::new(response::full(Bytes::new()));
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            response
                .headers_mut()
                .insert(header::ETAG, http::HeaderValue::from_static(v2::etag()));
            response
        }
        Some(form) => {
            let mut response = Response::new(response::full(Bytes::from_static(form.bytes())));
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static(form.content_type()),
            );
            headers.insert(header::ETAG, http::HeaderValue::from_static(v2::etag()));
            response
        }
    };
    let headers = response.headers_mut();
    headers.insert(header::VARY, http::HeaderValue::from_static("Accept"));
    headers.insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache, private"),
    );
    response
}

/// Whether an `If-None-Match` list names the tag (or is `*`); weak tags compare equal.
fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    if_none_match
        .split(',')
        .map(str::trim)
        .any(|candidate| candidate == "*" || candidate.strip_prefix("W/").unwrap_or(candidate) == etag)
}

/// `/version`, as upstream's `version.Info`.
pub fn version_info() -> serde_json::Value {
    serde_json::json!({
        "major": "1",
        "minor": "35",
        "emulationMajor": "1",
        "emulationMinor": "35",
        "minCompatibilityMajor": "1",
        "minCompatibilityMinor": "34",
        "gitVersion": KUBERNETES_VERSION,
        "gitCommit": "badge",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "rust",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, if cfg!(target_arch = "x86_64") { "amd64" } else { std::env::consts::ARCH }),
    })
}
