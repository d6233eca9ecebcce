//! Controllers write through the registry in process, so no request carries their writes
//! into the audit log. The server hands the controllers that must account for their writes
//! a [`WriteAudit`], which records each as the request a controller-manager client would
//! have sent, under the controller's own ServiceAccount name.

use std::sync::Arc;

use badge_api::{Resource, Status};

/// One write a controller made (or tried to).
#[derive(Debug)]
pub struct Write<'a> {
    /// The controller's name, which is also its ServiceAccount's in `kube-system`.
    pub controller: &'a str,
    /// The verb its client would have sent: `patch`, `update`, `delete`.
    pub verb: &'a str,
    /// The resource written.
    pub resource: &'a Resource,
    /// The subresource written, "" for the object itself.
    pub subresource: &'a str,
    /// The object's namespace, "" when cluster-scoped.
    pub namespace: &'a str,
    /// The object's name.
    pub name: &'a str,
    /// The object's UID, which the write was guarded by.
    pub uid: &'a str,
    /// The write's failure, if it failed.
    pub failure: Option<&'a Status>,
}

impl Write<'_> {
    /// `system:serviceaccount:kube-system:<controller>`, as kube-controller-manager's
    /// controllers are when each uses its own credentials.
    pub fn username(&self) -> String {
        format!("system:serviceaccount:kube-system:{}", self.controller)
    }
}

/// Where controllers' writes are recorded.
pub trait WriteAudit: Send + Sync {
    /// Records `write`; never fails the controller.
    fn record(&self, write: &Write<'_>);
}

/// A controller's audit sink; None records nothing.
pub type Audit = Option<Arc<dyn WriteAudit>>;

pub(crate) fn record(audit: &Audit, write: Write<'_>) {
    if let Some(audit) = audit {
        audit.record(&write);
    }
}
