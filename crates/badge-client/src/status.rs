//! Errors of a request: a Kubernetes Status the server answered with, or a failure to
//! reach it. A reply that is not a Status is turned into one from its HTTP code, with the
//! reason and message client-go gives it (apimachinery pkg/api/errors/errors.go,
//! `NewGenericServerResponse`).

use serde_json::Value;

/// The part of a `meta/v1` Status a caller acts on.
#[derive(Clone, PartialEq)]
pub struct Status {
    /// The HTTP status code.
    pub code: u16,
    /// `NotFound`, `AlreadyExists`, `Conflict`, `Forbidden`...; empty when unknown.
    pub reason: String,
    /// The human-readable description of the error.
    pub message: String,
    /// The whole body as received (a Status carries `details` some callers read).
    pub body: Value,
}

impl Status {
    /// Decodes an error reply: its Status when it is one, else one made from the HTTP code.
    pub fn from_reply(code: u16, body: &[u8]) -> Status {
        match serde_json::from_slice::<Value>(body) {
            Ok(value) if value["kind"] == "Status" => Status::from_value(code, value),
            Ok(value) => Status::generic(code, value),
            Err(_) => Status::generic(code, Value::String(String::from_utf8_lossy(body).into_owned())),
        }
    }

    /// A Status from a parsed body; fields it lacks come from the HTTP code.
    pub fn from_value(code: u16, body: Value) -> Status {
        if body["kind"] != "Status" {
            return Status::generic(code, body);
        }
        let (reason, message) = generic_reason(code);
        Status {
            code: body["code"]
                .as_u64()
                .and_then(|c| u16::try_from(c).ok())
                .unwrap_or(code),
            reason: body["reason"].as_str().unwrap_or(reason).to_string(),
            message: body["message"]
                .as_str()
                .map_or_else(|| message.to_string(), String::from),
            body,
        }
    }

    fn generic(code: u16, body: Value) -> Status {
        let (reason, message) = generic_reason(code);
        let message = match reason {
            // The server's own words say more than "unknown reason" when it gave some.
            "InternalError" | "" => {
                let said = body.as_str().map_or_else(|| body.to_string(), str::to_string);
                let said = shown_reply(&said);
                format!("an error on the server ({said:?}) has prevented the request from succeeding")
            }
            _ => message.to_string(),
        };
        Status {
            code,
            reason: reason.to_string(),
            message,
            body,
        }
    }

    /// Whether the object does not exist (reason `NotFound`, or a bare 404).
    pub fn is_not_found(&self) -> bool {
        self.reason == "NotFound" || (self.reason.is_empty() && self.code == 404)
    }

    /// Whether a create found the object present.
    pub fn is_already_exists(&self) -> bool {
        self.reason == "AlreadyExists"
    }

    /// Whether a write lost a race with another (a `resourceVersion` precondition failed).
    pub fn is_conflict(&self) -> bool {
        self.reason == "Conflict" || (self.code == 409 && !self.is_already_exists())
    }
}

impl std::fmt::Debug for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The body is left out: a reply that is not a Status may hold a credential.
        f.debug_struct("Status")
            .field("code", &self.code)
            .field("reason", &self.reason)
            .field("message", &self.message)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// What of a reply that is not a Status an error message may repeat: errors are logged, so a
/// reply that may hold a credential (a JWT, a `token` member) is not repeated, and a long
/// one is cut.
fn shown_reply(said: &str) -> String {
    const MAX: usize = 256;
    if said.contains("eyJ") || said.contains("\"token\"") {
        return "the reply is not shown: it may hold a credential".to_string();
    }
    match said.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}…", &said[..end]),
        None => said.to_string(),
    }
}

/// The reason and message client-go gives a reply that carries no Status.
fn generic_reason(code: u16) -> (&'static str, &'static str) {
    match code {
        400 => (
            "BadRequest",
            "the server rejected our request for an unknown reason",
        ),
        401 => (
            "Unauthorized",
            "the server has asked for the client to provide credentials",
        ),
        403 => (
            "Forbidden",
            "the server does not allow access to the requested resource",
        ),
        404 => ("NotFound", "the server could not find the requested resource"),
        405 => (
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        ),
        406 => (
            "NotAcceptable",
            "the server was unable to respond with a content type that the client supports",
        ),
        409 => ("Conflict", "the server reported a conflict"),
        410 => ("Expired", "the resource version is too old"),
        415 => (
            "UnsupportedMediaType",
            "the server was unable to process a request with a content type that the client supports",
        ),
        422 => (
            "Invalid",
            "the server rejected our request due to an error in our request",
        ),
        429 => (
            "TooManyRequests",
            "the server has received too many requests and has asked us to try again later",
        ),
        500 => ("InternalError", ""),
        503 => (
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
        ),
        504 => (
            "Timeout",
            "the server was unable to return a response in the time allotted, but may still be processing the request",
        ),
        _ => ("", ""),
    }
}

/// Why a request did not yield what was asked.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with an error.
    #[error("{0}")]
    Status(Box<Status>),
    /// The server could not be reached, or the exchange broke.
    #[error(transparent)]
    Transport(#[from] anyhow::Error),
}

impl Error {
    /// The Status the server answered with, if it answered.
    pub fn status(&self) -> Option<&Status> {
        match self {
            Error::Status(status) => Some(status),
            Error::Transport(_) => None,
        }
    }

    /// Whether the server answered that the object does not exist.
    pub fn is_not_found(&self) -> bool {
        self.status().is_some_and(Status::is_not_found)
    }
}

/// The `message` of a Status, or the body.
pub fn error_text(body: &Value) -> String {
    body.get("message")
        .and_then(Value::as_str)
        .map(String::from)
        .unwrap_or_else(|| body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_reply_that_may_hold_a_token_is_never_repeated_in_the_message() {
        let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl";
        for body in [
            jwt.to_string(),
            json!({"status": {"token": "opaque-secret"}}).to_string(),
        ] {
            let status = Status::from_reply(500, body.as_bytes());
            assert!(!status.message.contains(jwt), "{}", status.message);
            assert!(!status.message.contains("opaque-secret"), "{}", status.message);
            assert!(
                status.message.contains("may hold a credential"),
                "{}",
                status.message
            );
        }
        let long = "x".repeat(1000);
        let status = Status::from_reply(500, long.as_bytes());
        assert!(status.message.len() < 400, "{}", status.message);
        assert!(
            Status::from_reply(500, b"disk full")
                .message
                .contains("disk full")
        );
    }

    #[test]
    fn a_status_body_keeps_its_code_reason_and_message() {
        let body = json!({
            "kind": "Status", "apiVersion": "v1", "status": "Failure",
            "message": "serviceaccounts \"ghost\" not found", "reason": "NotFound",
            "details": {"name": "ghost", "kind": "serviceaccounts"}, "code": 404
        });
        let status = Status::from_reply(404, &serde_json::to_vec(&body).unwrap());
        assert_eq!(status.code, 404);
        assert_eq!(status.reason, "NotFound");
        assert_eq!(status.message, "serviceaccounts \"ghost\" not found");
        assert_eq!(status.body["details"]["name"], "ghost");
        assert!(status.is_not_found());
        assert_eq!(
            Error::Status(Box::new(status)).to_string(),
            "serviceaccounts \"ghost\" not found"
        );
    }

    #[test]
    fn already_exists_is_not_a_conflict() {
        let status = Status::from_reply(
            409,
            br#"{"kind":"Status","reason":"AlreadyExists","message":"exists","code":409}"#,
        );
        assert!(status.is_already_exists());
        assert!(!status.is_conflict());
        let status = Status::from_reply(409, br#"{"kind":"Status","reason":"Conflict","code":409}"#);
        assert!(status.is_conflict());
        assert_eq!(status.message, "the server reported a conflict");
    }

    #[test]
    fn a_reply_that_is_not_a_status_gets_the_generic_reason_of_its_code() {
        let status = Status::from_reply(404, b"404 page not found\n");
        assert_eq!(status.reason, "NotFound");
        assert_eq!(status.message, "the server could not find the requested resource");
        assert_eq!(status.body, json!("404 page not found\n"));

        let status = Status::from_reply(503, br#"{"unexpected": true}"#);
        assert_eq!(status.reason, "ServiceUnavailable");

        let status = Status::from_reply(500, b"boom");
        assert_eq!(status.reason, "InternalError");
        assert_eq!(
            status.message,
            "an error on the server (\"boom\") has prevented the request from succeeding"
        );
    }

    #[test]
    fn error_text_prefers_the_message() {
        assert_eq!(error_text(&json!({"message": "denied"})), "denied");
        assert_eq!(error_text(&json!("plain")), "\"plain\"");
    }
}
