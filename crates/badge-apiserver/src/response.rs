//! Building responses: the one place where every error becomes a `Status`, and where
//! content types are set.

use std::convert::Infallible;

use badge_api::Status;
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};

/// A response body.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// The `Content-Type` of JSON.
pub const JSON: &str = "application/json";
/// The `Content-Type` of a `meta.k8s.io/v1` Table.
pub const TABLE_JSON: &str = "application/json;as=Table;v=v1;g=meta.k8s.io";

/// A body of `bytes`.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed_unsync()
}

/// A JSON response with the given code.
pub fn json_bytes(code: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Body> {
    let mut response = Response::new(full(body));
    *response.status_mut() = code;
    let headers = response.headers_mut();
    let content_type = match content_type {
        JSON => HeaderValue::from_static(JSON),
        TABLE_JSON => HeaderValue::from_static(TABLE_JSON),
        other => HeaderValue::from_str(other).unwrap_or(HeaderValue::from_static(JSON)),
    };
    headers.insert(header::CONTENT_TYPE, content_type);
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    response
}

/// `value` as a JSON response with `code`.
pub fn json<T: serde::Serialize + ?Sized>(code: StatusCode, value: &T) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(body) => json_bytes(code, JSON, body),
        Err(e) => status(&Status::internal(format!("encoding the response: {e}"))),
    }
}

/// Why a request failed on the server's side (a 5xx), kept with the response so the edge
/// logs it once; the client never sees an internal error's detail.
#[derive(Clone, Debug)]
pub struct ServerFailure(pub String);

/// What a client is told of an internal error; the cause goes to the log.
pub const INTERNAL_ERROR_MESSAGE: &str = "Internal error occurred: see the server log for the cause";

/// A `Status` error (or success) response.
pub fn status(status: &Status) -> Response<Body> {
    let code = StatusCode::from_u16(status.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if code.is_server_error() {
        let cause = ServerFailure(status.to_string());
        let mut response = if status.reason == "InternalError" && !status.shown_to_client {
            let mut generic = status.clone();
            generic.message = INTERNAL_ERROR_MESSAGE.into();
            generic.details = None;
            json(code, &generic)
        } else {
            json(code, status)
        };
        add_retry_after(&mut response, status);
        response.extensions_mut().insert(cause);
        return response;
    }
    let mut response = json(code, status);
    add_retry_after(&mut response, status);
    response
}

fn add_retry_after(response: &mut Response<Body>, status: &Status) {
    if let Some(retry) = status.details.as_ref().and_then(|d| d.retry_after_seconds)
        && let Ok(v) = HeaderValue::from_str(&retry.to_string())
    {
        response.headers_mut().insert(header::RETRY_AFTER, v);
    }
}

/// A plain-text response (health checks).
pub fn text(code: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(full(body));
    *response.status_mut() = code;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
        .headers_mut()
        .insert("X-Content-Type-Options", HeaderValue::from_static("nosniff"));
    response
}

/// Adds `Warning: 299 - "text"` headers.
pub fn add_warnings(response: &mut Response<Body>, warnings: &[String]) {
    for w in warnings {
        let escaped = w.replace('\\', "\\\\").replace('"', "\\\"");
        if let Ok(v) = HeaderValue::from_str(&format!("299 - \"{escaped}\"")) {
            response.headers_mut().append(header::WARNING, v);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn internal_errors_reach_the_client_without_their_cause() {
        let response = status(&Status::internal("the key ring at /secret/path"));
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(
            response
                .extensions()
                .get::<ServerFailure>()
                .unwrap()
                .0
                .contains("/secret/path")
        );
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let body = runtime
            .block_on(response.into_body().collect())
            .unwrap()
            .to_bytes();
        let sent: Status = serde_json::from_slice(&body).unwrap();
        assert_eq!(sent.reason, "InternalError");
        assert_eq!(sent.message, INTERNAL_ERROR_MESSAGE);
        assert!(sent.details.is_none());

        let timeout = status(&Status::timeout("storage timeout: etcd"));
        assert_eq!(
            timeout.extensions().get::<ServerFailure>().unwrap().0,
            "504 (Timeout): storage timeout: etcd"
        );
        let refused = status(&Status::unauthorized());
        assert!(refused.extensions().get::<ServerFailure>().is_none());
    }
}
