//! `metav1.Status`, the one error shape of the Kubernetes API, with constructors whose
//! codes, reasons and messages match `k8s.io/apimachinery/pkg/api/errors`.

use serde::{Deserialize, Serialize};

/// A Kubernetes `Status` object (`kind: Status`, `apiVersion: v1`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// Always `Status`.
    pub kind: String,
    /// Always `v1`.
    pub api_version: String,
    /// List metadata, empty.
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// `Success` or `Failure`.
    pub status: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    /// A description of the outcome, for people.
    pub message: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    /// A machine-readable cause of a failure (`NotFound`, `Conflict`).
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// What the failure is about: the object and the field causes.
    pub details: Option<StatusDetails>,
    /// The HTTP status code.
    pub code: u16,
    /// An internal error whose message is written for the client and names no internals
    /// (a stored value that cannot be decrypted); other internal errors reach clients with a
    /// generic message. Never sent.
    #[serde(skip)]
    pub shown_to_client: bool,
}

/// `metav1.StatusDetails`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusDetails {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    /// The name of the object concerned.
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    /// Its API group.
    pub group: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    /// Its resource (upstream calls it kind).
    pub kind: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    /// Its UID.
    pub uid: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    /// Field-level causes.
    pub causes: Vec<StatusCause>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// How long a client should wait before retrying.
    pub retry_after_seconds: Option<i64>,
}

/// `metav1.StatusCause`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusCause {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    /// The machine-readable cause (`FieldValueInvalid`).
    pub reason: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    /// The cause, for people.
    pub message: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    /// The field path concerned.
    pub field: String,
}

/// The group and resource an error is about (`schema.GroupResource`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupResource<'a> {
    /// The API group, "" for the core group.
    pub group: &'a str,
    /// The resource, plural.
    pub resource: &'a str,
}

impl std::fmt::Display for GroupResource<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.group.is_empty() {
            f.write_str(self.resource)
        } else {
            write!(f, "{}.{}", self.resource, self.group)
        }
    }
}

/// The largest request body accepted (upstream's 3 MiB).
pub const MAX_REQUEST_BODY_BYTES: usize = 3 * 1024 * 1024;

impl Status {
    fn failure(code: u16, reason: &str, message: impl Into<String>) -> Status {
        Status {
            kind: "Status".into(),
            api_version: "v1".into(),
            metadata: Default::default(),
            status: "Failure".into(),
            message: message.into(),
            reason: reason.into(),
            details: None,
            code,
            shown_to_client: false,
        }
    }

    /// A `Status` of `status: Success` (delete of an object that is gone at once).
    pub fn success(gr: GroupResource<'_>, name: &str, uid: &str) -> Status {
        Status {
            kind: "Status".into(),
            api_version: "v1".into(),
            status: "Success".into(),
            code: 200,
            details: Some(StatusDetails {
                name: name.into(),
                group: gr.group.into(),
                kind: gr.resource.into(),
                uid: uid.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn with_details(mut self, gr: GroupResource<'_>, name: &str) -> Status {
        self.details = Some(StatusDetails {
            name: name.into(),
            group: gr.group.into(),
            kind: gr.resource.into(),
            ..Default::default()
        });
        self
    }

    /// 404 NotFound: `<resource> "<name>" not found`.
    pub fn not_found(gr: GroupResource<'_>, name: &str) -> Status {
        Status::failure(404, "NotFound", format!("{gr} \"{name}\" not found")).with_details(gr, name)
    }

    /// 404 for a path that names nothing the server serves.
    pub fn path_not_found() -> Status {
        let mut status = Status::failure(
            404,
            "NotFound",
            "the server could not find the requested resource",
        );
        status.details = Some(StatusDetails::default());
        status
    }

    /// 409 AlreadyExists: `<resource> "<name>" already exists`.
    pub fn already_exists(gr: GroupResource<'_>, name: &str) -> Status {
        Status::failure(409, "AlreadyExists", format!("{gr} \"{name}\" already exists"))
            .with_details(gr, name)
    }

    /// 409 for an update or delete whose precondition (resourceVersion, uid) failed.
    pub fn conflict(gr: GroupResource<'_>, name: &str, why: &str) -> Status {
        Status::failure(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {gr} \"{name}\": {why}"),
        )
        .with_details(gr, name)
    }

    /// The message for a stale resourceVersion (`registry.OptimisticLockErrorMsg`).
    pub const OPTIMISTIC_LOCK_MESSAGE: &'static str =
        "the object has been modified; please apply your changes to the latest version and try again";

    /// 422 with field causes; `kind` is the Kind (`ServiceAccount`), not the resource.
    pub fn invalid(group: &str, kind: &str, name: &str, errors: &[FieldError]) -> Status {
        let causes: Vec<StatusCause> = errors
            .iter()
            .map(|e| StatusCause {
                reason: e.kind.reason().into(),
                message: e.message_without_field(),
                field: e.field.clone(),
            })
            .collect();
        let aggregate = match errors {
            [one] => one.to_string(),
            many => format!(
                "[{}]",
                many.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(", ")
            ),
        };
        let qualified = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        let mut status = Status::failure(
            422,
            "Invalid",
            format!("{qualified} \"{name}\" is invalid: {aggregate}"),
        );
        status.details = Some(StatusDetails {
            name: name.into(),
            group: group.into(),
            kind: kind.into(),
            causes,
            ..Default::default()
        });
        status
    }

    /// 400 BadRequest with `message`.
    pub fn bad_request(message: impl Into<String>) -> Status {
        Status::failure(400, "BadRequest", message)
    }

    /// 401 Unauthorized.
    pub fn unauthorized() -> Status {
        Status::failure(401, "Unauthorized", "Unauthorized")
    }

    /// 403 with upstream's `forbidden` wording; `message` is the authorizer's reason.
    pub fn forbidden(gr: GroupResource<'_>, name: &str, message: &str) -> Status {
        let subject = if name.is_empty() {
            gr.to_string()
        } else {
            format!("{gr} \"{name}\"")
        };
        Status::failure(403, "Forbidden", format!("{subject} is forbidden: {message}")).with_details(gr, name)
    }

    /// 403 for a request that names no resource (a path).
    pub fn forbidden_path(message: &str) -> Status {
        let mut status = Status::failure(403, "Forbidden", format!("forbidden: {message}"));
        status.details = Some(StatusDetails::default());
        status
    }

    /// 405 MethodNotAllowed: `action` is not supported on the resource.
    pub fn method_not_supported(gr: GroupResource<'_>, action: &str) -> Status {
        Status::failure(
            405,
            "MethodNotAllowed",
            format!("{action} is not supported on resources of kind \"{gr}\""),
        )
        .with_details(gr, "")
    }

    /// 405 for a method the path never accepts.
    pub fn method_not_allowed() -> Status {
        Status::failure(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
    }

    /// 406 NotAcceptable: only `accepted` can be answered.
    pub fn not_acceptable(accepted: &str) -> Status {
        Status::failure(
            406,
            "NotAcceptable",
            format!("only the following media types are accepted: {accepted}"),
        )
    }

    /// 415 UnsupportedMediaType for `content_type`.
    pub fn unsupported_media_type(content_type: &str) -> Status {
        Status::failure(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: \
                 application/json, application/yaml, application/vnd.kubernetes.protobuf \
                 (got {content_type:?})"
            ),
        )
    }

    /// 413 RequestEntityTooLarge over `limit` bytes.
    pub fn request_entity_too_large(limit: usize) -> Status {
        Status::failure(
            413,
            "RequestEntityTooLarge",
            format!("Request entity too large: limit is {limit}"),
        )
    }

    /// 410 for a resourceVersion that is no longer in the history.
    pub fn resource_expired(message: impl Into<String>) -> Status {
        Status::failure(410, "Expired", message)
    }

    /// 500 InternalError with `message`.
    pub fn internal(message: impl Into<String>) -> Status {
        let message = message.into();
        let mut status = Status::failure(
            500,
            "InternalError",
            format!("Internal error occurred: {message}"),
        );
        status.details = Some(StatusDetails {
            causes: vec![StatusCause {
                message,
                ..Default::default()
            }],
            ..Default::default()
        });
        status
    }

    /// [`Status::internal`] whose message the client sees: a stored value that cannot be
    /// decrypted, named by provider and key name (never key material).
    pub fn internal_shown(message: impl Into<String>) -> Status {
        Status {
            shown_to_client: true,
            ..Status::internal(message)
        }
    }

    /// 503 ServiceUnavailable with `message`.
    pub fn service_unavailable(message: impl Into<String>) -> Status {
        Status::failure(503, "ServiceUnavailable", message)
    }

    /// 504 Timeout with `message`.
    pub fn timeout(message: impl Into<String>) -> Status {
        Status::failure(504, "Timeout", message)
    }

    /// 429 with a Retry-After hint.
    pub fn too_many_requests(message: impl Into<String>, retry_after: i64) -> Status {
        let mut status = Status::failure(429, "TooManyRequests", message);
        status.details = Some(StatusDetails {
            retry_after_seconds: Some(retry_after),
            ..Default::default()
        });
        status
    }

    /// A `Status` whose code is 404.
    pub fn is_not_found(&self) -> bool {
        self.code == 404
    }

    /// Whether the reason is `Conflict`.
    pub fn is_conflict(&self) -> bool {
        self.code == 409 && self.reason == "Conflict"
    }

    /// Whether the reason is `AlreadyExists`.
    pub fn is_already_exists(&self) -> bool {
        self.reason == "AlreadyExists"
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.reason, self.message)
    }
}

impl std::error::Error for Status {}

/// The kind of a field validation error (`field.ErrorType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldErrorKind {
    /// `FieldValueDuplicate`: a value given twice.
    Duplicate,
    /// `FieldValueForbidden`: a value not allowed here.
    Forbidden,
    /// `FieldValueInvalid`: a malformed value.
    Invalid,
    /// `FieldValueNotFound`: a value referring to nothing.
    NotFound,
    /// `FieldValueNotSupported`: a value outside a fixed set.
    NotSupported,
    /// `FieldValueRequired`: a value missing.
    Required,
    /// `FieldValueTooLong`: a value over its length limit.
    TooLong,
    /// `FieldValueTooMany`: a list over its size limit.
    TooMany,
}

impl FieldErrorKind {
    /// The `StatusCause.reason` string.
    pub fn reason(self) -> &'static str {
        match self {
            FieldErrorKind::Duplicate => "FieldValueDuplicate",
            FieldErrorKind::Forbidden => "FieldValueForbidden",
            FieldErrorKind::Invalid => "FieldValueInvalid",
            FieldErrorKind::NotFound => "FieldValueNotFound",
            FieldErrorKind::NotSupported => "FieldValueNotSupported",
            FieldErrorKind::Required => "FieldValueRequired",
            FieldErrorKind::TooLong => "FieldValueTooLong",
            FieldErrorKind::TooMany => "FieldValueTooMany",
        }
    }

    fn label(self) -> &'static str {
        match self {
            FieldErrorKind::Duplicate => "Duplicate value",
            FieldErrorKind::Forbidden => "Forbidden",
            FieldErrorKind::Invalid => "Invalid value",
            FieldErrorKind::NotFound => "Not found",
            FieldErrorKind::NotSupported => "Unsupported value",
            FieldErrorKind::Required => "Required value",
            FieldErrorKind::TooLong => "Too long",
            FieldErrorKind::TooMany => "Too many",
        }
    }

    /// Kinds whose message shows the bad value.
    fn shows_value(self) -> bool {
        matches!(
            self,
            FieldErrorKind::Duplicate
                | FieldErrorKind::Invalid
                | FieldErrorKind::NotSupported
                | FieldErrorKind::NotFound
        )
    }
}

/// One field validation error (`field.Error`).
#[derive(Clone, Debug, PartialEq)]
pub struct FieldError {
    /// The kind of error.
    pub kind: FieldErrorKind,
    /// The field path (`spec.audiences[0]`).
    pub field: String,
    /// The offending value.
    pub value: serde_json::Value,
    /// Why it is wrong.
    pub detail: String,
}

impl FieldError {
    /// An error of `kind` at `field`.
    pub fn new(
        kind: FieldErrorKind,
        field: impl Into<String>,
        value: serde_json::Value,
        detail: impl Into<String>,
    ) -> FieldError {
        FieldError {
            kind,
            field: field.into(),
            value,
            detail: detail.into(),
        }
    }

    /// `FieldValueInvalid` at `field`.
    pub fn invalid(
        field: impl Into<String>,
        value: impl Into<serde_json::Value>,
        detail: impl Into<String>,
    ) -> FieldError {
        FieldError::new(FieldErrorKind::Invalid, field, value.into(), detail)
    }

    /// `FieldValueRequired` at `field`.
    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> FieldError {
        FieldError::new(
            FieldErrorKind::Required,
            field,
            serde_json::Value::String(String::new()),
            detail,
        )
    }

    /// `FieldValueForbidden` at `field`.
    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> FieldError {
        FieldError::new(FieldErrorKind::Forbidden, field, serde_json::Value::Null, detail)
    }

    /// `FieldValueNotSupported` at `field`, listing the supported values.
    pub fn not_supported(
        field: impl Into<String>,
        value: impl Into<serde_json::Value>,
        supported: &[&str],
    ) -> FieldError {
        let quoted: Vec<String> = supported.iter().map(|s| format!("\"{s}\"")).collect();
        FieldError::new(
            FieldErrorKind::NotSupported,
            field,
            value.into(),
            format!("supported values: {}", quoted.join(", ")),
        )
    }

    /// `FieldValueDuplicate` at `field`.
    pub fn duplicate(field: impl Into<String>, value: impl Into<serde_json::Value>) -> FieldError {
        FieldError::new(FieldErrorKind::Duplicate, field, value.into(), "")
    }

    /// `FieldValueTooLong` at `field`, over `max` characters.
    pub fn too_long(field: impl Into<String>, max: usize) -> FieldError {
        FieldError::new(
            FieldErrorKind::TooLong,
            field,
            serde_json::Value::Null,
            format!("must have at most {max} bytes"),
        )
    }

    /// The message without the leading field path, as upstream puts in `StatusCause.message`.
    fn message_without_field(&self) -> String {
        let mut out = String::from(self.kind.label());
        if self.kind.shows_value() {
            out.push_str(": ");
            out.push_str(&render_value(&self.value));
        }
        if !self.detail.is_empty() {
            out.push_str(": ");
            out.push_str(&self.detail);
        }
        out
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message_without_field())
    }
}

/// Renders a bad value the way upstream's `field.Error` does: strings quoted, others as JSON.
fn render_value(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => format!("{s:?}"),
        serde_json::Value::Null => "null".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SA: GroupResource<'static> = GroupResource {
        group: "",
        resource: "serviceaccounts",
    };

    #[test]
    fn not_found_matches_upstream() {
        let s = Status::not_found(SA, "nope");
        let json = serde_json::to_value(&s).unwrap_or_default();
        assert_eq!(
            json,
            serde_json::json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
                "message":"serviceaccounts \"nope\" not found","reason":"NotFound",
                "details":{"name":"nope","kind":"serviceaccounts"},"code":404})
        );
    }

    #[test]
    fn grouped_resource_names_the_group() {
        let gr = GroupResource {
            group: "rbac.authorization.k8s.io",
            resource: "roles",
        };
        assert_eq!(
            Status::already_exists(gr, "r").message,
            "roles.rbac.authorization.k8s.io \"r\" already exists"
        );
    }

    #[test]
    fn invalid_lists_causes() {
        let errs = vec![FieldError::invalid(
            "metadata.name",
            "Bad_Name",
            "must be lowercase",
        )];
        let s = Status::invalid("", "ServiceAccount", "Bad_Name", &errs);
        assert_eq!(s.code, 422);
        assert_eq!(
            s.message,
            "ServiceAccount \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\": must be lowercase"
        );
        let details = s.details.unwrap_or_default();
        assert_eq!(details.causes[0].reason, "FieldValueInvalid");
        assert_eq!(details.causes[0].field, "metadata.name");
        let two = vec![errs[0].clone(), FieldError::required("data", "")];
        let s = Status::invalid("", "Secret", "x", &two);
        assert!(
            s.message.ends_with(
                "[metadata.name: Invalid value: \"Bad_Name\": must be lowercase, data: Required value]"
            ),
            "{}",
            s.message
        );
    }

    #[test]
    fn conflict_wording() {
        let s = Status::conflict(SA, "a", Status::OPTIMISTIC_LOCK_MESSAGE);
        assert_eq!(
            s.message,
            "Operation cannot be fulfilled on serviceaccounts \"a\": the object has been modified; please apply your changes to the latest version and try again"
        );
    }
}
