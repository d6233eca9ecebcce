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

    /// Sees the attributes as the authorizer is handed them.
    struct Seen(std::sync::Mutex<Vec<String>>, bool);

    impl Authorizer for Seen {
        fn authorize(&self, a: &Attributes) -> Decision {
            self.0.lock().unwrap().extend([
                a.verb.clone(),
                a.namespace.clone(),
                a.api_group.clone(),
                a.api_version.clone(),
                a.resource.clone(),
                a.subresource.clone(),
                a.name.clone(),
                a.path.clone(),
            ]);
            if self.1 {
                Decision::Allow
            } else {
                Decision::Deny("no".into())
            }
        }
    }

    #[test]
    fn the_authorizer_sees_every_field_of_the_request_info_and_a_refusal_names_them() {
        let original = info("POST", "/apis/apps/v1/namespaces/d/deployments/x/scale");
        for allow in [true, false] {
            let seen = Seen(Default::default(), allow);
            let moved = original.clone();
            let decided = authorize_with_reason(&seen, UserInfo::from_certificate("u", &[]), &moved);
            assert_eq!(moved, original);
            assert_eq!(
                *seen.0.lock().unwrap(),
                [
                    "create",
                    "d",
                    "apps",
                    "v1",
                    "deployments",
                    "scale",
                    "x",
                    original.path.as_str()
                ]
            );
            match decided {
                Ok(user) => assert!(allow && user.name == "u"),
                Err((status, reason)) => {
                    assert!(!allow);
                    assert_eq!(reason, "no");
                    assert_eq!(
                        status.message,
                        "deployments.apps \"x\" is forbidden: User \"u\" cannot create resource \"deployments/scale\" in API group \"apps\" in the namespace \"d\": no"
                    );
                }
            }
        }
    }
}
