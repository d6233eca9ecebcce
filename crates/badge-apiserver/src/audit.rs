//! Audit: every authenticated request passes this hook, after impersonation and before
//! authorization, so a refused request is recorded as well as an allowed one. The sink
//! decides what to keep; it is never given a credential (the authentication stage removed
//! the header before this point).

use badge_api::request_info::RequestInfo;
use badge_auth::UserInfo;

/// What the hook sees of a request.
pub struct RequestEvent<'a> {
    pub info: &'a RequestInfo,
    /// The user the request acts as (the impersonated one, when it impersonates).
    pub user: &'a UserInfo,
}

/// Where audit events go.
pub trait AuditSink: Send + Sync {
    fn request(&self, event: &RequestEvent<'_>);
}

/// Records nothing: the default until an audit log is configured.
pub struct NoAudit;

impl AuditSink for NoAudit {
    fn request(&self, _: &RequestEvent<'_>) {}
}
