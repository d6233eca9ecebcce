//! Admission of CertificateSigningRequests (`plugin/pkg/admission/certificates`): only
//! those allowed to `approve` for a signer may approve or deny its requests, only those
//! allowed to `sign` for it may set a certificate, and no one may request a
//! `system:masters` client certificate.

use badge_api::resources::Resource;
use badge_api::{Status, meta};
use badge_auth::{Attributes, Decision, UserInfo};
use badge_registry::csr::{self, KUBE_APISERVER_CLIENT};
use serde_json::Value;

use crate::ApiServer;

impl ApiServer {
    /// Whether `user` may `verb` (`approve`, `sign`) for `signer`, named or as its
    /// domain's `<domain>/*` (`IsAuthorizedForSignerName`).
    fn authorized_for_signer(&self, user: &UserInfo, verb: &str, signer: &str) -> bool {
        let allowed = |name: String| {
            let attributes = Attributes {
                user: user.clone(),
                verb: verb.into(),
                is_resource_request: true,
                api_group: "certificates.k8s.io".into(),
                api_version: "*".into(),
                resource: "signers".into(),
                name,
                ..Default::default()
            };
            matches!(self.authorizer.authorize(&attributes), Decision::Allow)
        };
        if allowed(signer.to_string()) {
            return true;
        }
        signer
            .split_once('/')
            .is_some_and(|(domain, _)| allowed(format!("{domain}/*")))
    }

    /// Admits a write of a CertificateSigningRequest through `subresource` ("" for the
    /// object itself); `old` is the stored object on an update.
    pub(crate) fn admit_certificate_request(
        &self,
        user: &UserInfo,
        resource: &Resource,
        subresource: &str,
        object: &Value,
        old: Option<&Value>,
    ) -> Result<(), Status> {
        let forbidden =
            |message: String| Status::forbidden(resource.group_resource(), meta::name(object), &message);
        let Some(old) = old else {
            let signer = csr::signer_name(object);
            if signer == KUBE_APISERVER_CLIENT
                && csr::parse_request(&csr::request_bytes(object)).is_ok_and(|r| {
                    r.organizations
                        .iter()
                        .any(|o| o == badge_auth::user::SYSTEM_MASTERS)
                })
            {
                return Err(forbidden(format!(
                    "use of {signer} signer with system:masters group is not allowed"
                )));
            }
            return Ok(());
        };
        // The signer is the stored one: an update cannot change the spec.
        let signer = csr::signer_name(old);
        match subresource {
            "approval" if !self.authorized_for_signer(user, "approve", signer) => Err(forbidden(format!(
                "user not permitted to approve requests with signerName \"{signer}\""
            ))),
            "status"
                if object.pointer("/status/certificate") != old.pointer("/status/certificate")
                    && !self.authorized_for_signer(user, "sign", signer) =>
            {
                Err(forbidden(format!(
                    "user not permitted to sign requests with signerName \"{signer}\""
                )))
            }
            _ => Ok(()),
        }
    }
}
