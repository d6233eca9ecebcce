//! Authorization: the request's attributes, as request info parsed them, go to the
//! authorizer union (system:masters, Node, RBAC); anything but Allow is a 403 Status
//! naming what was refused (`endpoints/filters/authorization.go`).

use badge_api::Status;
use badge_api::request_info::RequestInfo;
use badge_auth::{Attributes, Authorizer, Decision, UserInfo, authorizer::forbidden_message};

/// Authorizes the request. The user moves into the attributes and is handed back, so
/// the caller's identity is not copied on every request.
#[cfg(test)]
pub(crate) fn authorize(
    authorizer: &dyn Authorizer,
    user: UserInfo,
    info: &RequestInfo,
) -> Result<UserInfo, Status> {
    authorize_with_reason(authorizer, user, info).map_err(|(status, _)| status)
}

/// Authorizes the request; a refusal comes with the authorizer's reason, for the audit
/// log's `authorization.k8s.io/reason`.
pub(crate) fn authorize_with_reason(
    authorizer: &dyn Authorizer,
    user: UserInfo,
    info: &RequestInfo,
) -> Result<UserInfo, (Status, String)> {
    let attributes = Attributes {
        user,
        verb: info.verb.clone(),
        is_resource_request: info.is_resource_request,
        namespace: info.namespace.clone(),
        api_group: info.api_group.clone(),
        api_version: info.api_version.clone(),
        resource: info.resource.clone(),
        subresource: info.subresource.clone(),
        name: info.name.clone(),
        path: info.path.clone(),
    };
    match authorizer.authorize(&attributes) {
        Decision::Allow => Ok(attributes.user),
        Decision::Deny(reason) | Decision::NoOpinion(reason) => {
            let mut message = forbidden_message(&attributes);
            if !reason.is_empty() {
                message.push_str(": ");
                message.push_str(&reason);
            }
            let refused = |status: Status| (status, reason.clone());
            if info.is_resource_request {
                // The Status names the resource without its subresource, as upstream's
                // `responsewriters.Forbidden` does; the message names both.
                let gr = badge_api::GroupResource {
                    group: &info.api_group,
                    resource: &info.resource,
                };
                Err(refused(Status::forbidden(gr, &info.name, &message)))
            } else {
                Err(refused(Status::forbidden_path(&message)))
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    struct Refuse;

    impl Authorizer for Refuse {
        fn authorize(&self, _: &Attributes) -> Decision {
            Decision::NoOpinion(String::new())
        }
    }

    fn info(method: &str, path: &str) -> RequestInfo {
        badge_api::request_info::parse(method, path, None).unwrap()
    }

    #[test]
    fn refusals_name_what_was_refused_as_upstream() {
        let user = UserInfo::from_certificate("u", &[]);
        let status = authorize(
            &Refuse,
            user.clone(),
            &info("POST", "/api/v1/namespaces/d/serviceaccounts/sa/token"),
        )
        .unwrap_err();
        assert_eq!(status.code, 403);
        assert_eq!(
            status.message,
            "serviceaccounts \"sa\" is forbidden: User \"u\" cannot create resource \"serviceaccounts/token\" in API group \"\" in the namespace \"d\""
        );
        let status = authorize(&Refuse, user, &info("GET", "/metrics")).unwrap_err();
        assert_eq!(
            status.message,
            "forbidden: User \"u\" cannot get path \"/metrics\""
        );
    }
}
