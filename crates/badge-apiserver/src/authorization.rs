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
    let mut info = info.clone();
    authorize_with_reason(authorizer, user, &mut info).map_err(|(status, _)| status)
}

/// Authorizes the request; a refusal comes with the authorizer's reason, for the audit
/// log's `authorization.k8s.io/reason`. The request info's strings move into the
/// attributes and back, unchanged, so that no request copies them.
pub(crate) fn authorize_with_reason(
    authorizer: &dyn Authorizer,
    user: UserInfo,
    info: &mut RequestInfo,
) -> Result<UserInfo, (Status, String)> {
    use std::mem::take;
    let mut attributes = Attributes {
        user,
        verb: take(&mut info.verb),
        is_resource_request: info.is_resource_request,
        namespace: take(&mut info.namespace),
        api_group: take(&mut info.api_group),
        api_version: take(&mut info.api_version),
        resource: take(&mut info.resource),
        subresource: take(&mut info.subresource),
        name: take(&mut info.name),
        path: take(&mut info.path),
    };
    let decision = authorizer.authorize(&attributes);
    let refusal = match decision {
        Decision::Allow => None,
        Decision::Deny(reason) | Decision::NoOpinion(reason) => {
            Some((forbidden_message(&attributes), reason))
        }
    };
    info.verb = take(&mut attributes.verb);
    info.namespace = take(&mut attributes.namespace);
    info.api_group = take(&mut attributes.api_group);
    info.api_version = take(&mut attributes.api_version);
    info.resource = take(&mut attributes.resource);
    info.subresource = take(&mut attributes.subresource);
    info.name = take(&mut attributes.name);
    info.path = take(&mut attributes.path);
    let Some((mut message, reason)) = refusal else {
        return Ok(attributes.user);
    };
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
    fn the_authorizer_sees_the_request_info_which_comes_back_unchanged() {
        let original = info("POST", "/apis/apps/v1/namespaces/d/deployments/x/scale");
        for allow in [true, false] {
            let seen = Seen(Default::default(), allow);
            let mut moved = original.clone();
            let decided = authorize_with_reason(&seen, UserInfo::from_certificate("u", &[]), &mut moved);
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
