//! Non-resource paths: health, version, discovery documents and OpenAPI.

use badge_api::Status;
use badge_api::request_info::RequestInfo;
use bytes::Bytes;
use http::{Method, Response, StatusCode, header};

use crate::response::{self, Body};
use crate::{ApiServer, discovery};

/// The kube-apiserver version badge presents itself as.
pub const KUBERNETES_VERSION: &str = "v1.35.0";

/// The checks of a health endpoint, in the order upstream reports them. Only readiness
/// looks at the storage: a server cut off from etcd still serves from its cache and must not
/// be restarted for it, but should take no new traffic.
fn health_checks(endpoint: &str) -> Option<&'static [&'static str]> {
    match endpoint {
        "healthz" | "livez" => Some(&["ping"]),
        "readyz" => Some(&["ping", "etcd"]),
        _ => None,
    }
}

/// The health endpoint a path is under, if any.
pub(crate) fn health_endpoint(path: &str) -> Option<&'static str> {
    let first = path.trim_start_matches('/').split('/').next()?;
    ["healthz", "livez", "readyz"].into_iter().find(|e| *e == first)
}

fn health_text(code: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(response::full(body));
    *response.status_mut() = code;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        "X-Content-Type-Options",
        http::HeaderValue::from_static("nosniff"),
    );
    response
}

impl ApiServer {
    /// `/metrics` in Prometheus' text format, authorized as upstream's (the nonResourceURL
    /// `/metrics`, which `system:monitoring` holds). How stale this server's view may be: the
    /// age of its last confirmation of the store and of the signing keys, and the bound past
    /// which it stops serving them as current.
    fn metrics(&self) -> Response<Body> {
        let mut text = String::new();
        let mut gauge = |name: &str, help: &str, value: f64| {
            text.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"
            ));
        };
        gauge(
            "badge_storage_unconfirmed_seconds",
            "Seconds since the watch cache was last confirmed to hold every committed write.",
            self.registry.unconfirmed_for().as_secs_f64(),
        );
        gauge(
            "badge_storage_stale_read_bound_seconds",
            "Seconds the cache may go unconfirmed before consistent reads and signing stop.",
            self.registry.stale_read_bound().as_secs_f64(),
        );
        if let Some(issuer) = &self.token_issuer {
            gauge(
                "badge_signing_keys_unconfirmed_seconds",
                "Seconds since the signing key ring was last confirmed current in the store.",
                issuer.keys.ring_unconfirmed_for().as_secs_f64(),
            );
        }
        self.metrics.render(&mut text);
        self.token_metrics(&mut text);
        let mut response = Response::new(response::full(text));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        response
    }
}

impl ApiServer {
    /// The ServiceAccount token families: upstream's counts of the tokens authenticated,
    /// the verification cache, and verifications per signing key.
    fn token_metrics(&self, text: &mut String) {
        use std::sync::atomic::Ordering::Relaxed;

        use crate::metrics::{counter, header, sample};
        let counts = &badge_auth::serviceaccount::TOKEN_COUNTERS;
        counter(
            text,
            "serviceaccount_legacy_tokens_total",
            "Cumulative legacy service account tokens used",
            counts.legacy.load(Relaxed),
        );
        counter(
            text,
            "serviceaccount_stale_tokens_total",
            "Cumulative stale projected service account tokens used",
            counts.stale.load(Relaxed),
        );
        counter(
            text,
            "serviceaccount_valid_tokens_total",
            "Cumulative valid projected service account tokens used",
            counts.valid.load(Relaxed),
        );
        counter(
            text,
            "badge_token_cache_hits_total",
            "ServiceAccount tokens whose signature check the verification cache answered.",
            counts.cache_hits.load(Relaxed),
        );
        counter(
            text,
            "badge_token_cache_misses_total",
            "ServiceAccount tokens the verification cache did not hold.",
            counts.cache_misses.load(Relaxed),
        );
        header(
            text,
            "badge_token_verifications_total",
            "counter",
            "ServiceAccount tokens verified, by the key id that signed them.",
        );
        if let Some(issuer) = &self.token_issuer {
            let keys = issuer.keys.current();
            let mut counts: Vec<(String, u64)> = keys
                .keys()
                .iter()
                .map(|key| {
                    let kid = key.kid().to_string();
                    let used = keys.usage(&kid).map_or(0, |u| u.count());
                    (kid, used)
                })
                .collect();
            counts.sort();
            for (kid, used) in counts {
                sample(
                    text,
                    "badge_token_verifications_total",
                    &[("kid", kid)],
                    used as f64,
                );
            }
        }
    }

    async fn run_check(&self, name: &str) -> Result<(), String> {
        match name {
            "etcd" => self.registry.storage_health().await,
            _ => Ok(()),
        }
    }

    /// `/healthz`, `/livez`, `/readyz` and their per-check paths, as upstream's healthz
    /// handlers answer them: `ok`, or every check's line when verbose or failing (the reason
    /// withheld, since the root paths are public), `?exclude=` skipping checks; a per-check
    /// path answers `ok` or its reason.
    pub(crate) async fn health(
        &self,
        method: &Method,
        endpoint: &'static str,
        path: &str,
        raw_query: Option<&str>,
    ) -> Result<Response<Body>, Status> {
        if method != Method::GET && method != Method::HEAD {
            return Err(Status::method_not_allowed());
        }
        let checks = health_checks(endpoint).ok_or_else(Status::path_not_found)?;
        let rest = path
            .trim_start_matches('/')
            .trim_end_matches('/')
            .strip_prefix(endpoint)
            .unwrap_or("")
            .trim_start_matches('/');
        if !rest.is_empty() {
            let check = checks
                .iter()
                .find(|c| **c == rest)
                .ok_or_else(Status::path_not_found)?;
            return Ok(match self.run_check(check).await {
                Ok(()) => health_text(StatusCode::OK, "ok".into()),
                Err(reason) => health_text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("internal server error: {reason}\n"),
                ),
            });
        }
        // Every `exclude` value counts, and `verbose` counts by its presence, as Go's
        // `url.Values` give them.
        let pairs: Vec<badge_api::query::QueryParams> = raw_query
            .unwrap_or("")
            .split('&')
            .map(|pair| badge_api::query::QueryParams::parse(Some(pair)))
            .collect();
        let verbose = pairs.iter().any(|p| p.get("verbose").is_some());
        let mut excluded: Vec<&str> = pairs.iter().filter_map(|p| p.get("exclude")).collect();
        let mut lines = String::new();
        let mut failed = Vec::new();
        for &name in checks {
            if excluded.contains(&name) {
                excluded.retain(|e| *e != name);
                lines.push_str(&format!("[+]{name} excluded: ok\n"));
                continue;
            }
            match self.run_check(name).await {
                Ok(()) => lines.push_str(&format!("[+]{name} ok\n")),
                Err(reason) => {
                    lines.push_str(&format!("[-]{name} failed: reason withheld\n"));
                    failed.push(format!("[-]{name} failed: {reason}"));
                }
            }
        }
        if !excluded.is_empty() {
            excluded.sort_unstable();
            excluded.dedup();
            let quoted: Vec<String> = excluded.iter().map(|e| format!("{e:?}")).collect();
            lines.push_str(&format!(
                "warn: some health checks cannot be excluded: no matches for {}\n",
                quoted.join(",")
            ));
        }
        if !failed.is_empty() {
            // Probes repeat every few seconds; the transitions are logged where they happen.
            tracing::debug!(checks = %failed.join("; "), "{endpoint} check failed");
            return Ok(health_text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("{lines}{endpoint} check failed\n"),
            ));
        }
        if !verbose {
            return Ok(health_text(StatusCode::OK, "ok".into()));
        }
        Ok(health_text(
            StatusCode::OK,
            format!("{lines}{endpoint} check passed\n"),
        ))
    }

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
            ["version"] => Ok(response::json(StatusCode::OK, &version_info())),
            ["metrics"] => Ok(self.metrics()),
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
            ["openid", "v1", "revocations"] => self.revocation_list(),
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
