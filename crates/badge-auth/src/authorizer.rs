//! Authorization: request attributes in, Allow/Deny/NoOpinion out
//! (`k8s.io/apiserver/pkg/authorization/authorizer`), chained in order.

use crate::user::{SYSTEM_MASTERS, UserInfo};

/// What a request wants to do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attributes {
    /// Who is asking.
    pub user: UserInfo,
    /// The verb: `get`, `list`, `create`..., or the lowercase HTTP method for a non-resource URL.
    pub verb: String,
    /// Whether the request is for an API resource rather than a non-resource URL.
    pub is_resource_request: bool,
    /// The namespace, "" for cluster-scoped requests.
    pub namespace: String,
    /// The API group, "" for the core group.
    pub api_group: String,
    /// The API version.
    pub api_version: String,
    /// The resource, plural (`pods`); "" for a non-resource request.
    pub resource: String,
    /// The subresource, "" for the object itself.
    pub subresource: String,
    /// The object's name, "" when the request names none (list, create).
    pub name: String,
    /// The request path, for non-resource requests.
    pub path: String,
}

/// An authorizer's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The request is allowed.
    Allow,
    /// The request is denied, for this reason; no later authorizer is asked.
    Deny(String),
    /// This authorizer neither allows nor denies, for this reason; the next is asked.
    NoOpinion(String),
}

/// One authorizer.
pub trait Authorizer: Send + Sync {
    /// The decision on the request `attributes` describe.
    fn authorize(&self, attributes: &Attributes) -> Decision;
}

/// `system:masters` may do everything (upstream's privileged-group authorizer).
pub struct PrivilegedGroups;

impl Authorizer for PrivilegedGroups {
    fn authorize(&self, a: &Attributes) -> Decision {
        if a.user.in_group(SYSTEM_MASTERS) {
            Decision::Allow
        } else {
            Decision::NoOpinion(String::new())
        }
    }
}

/// The paths anyone may read, as upstream's default `system:public-info-viewer` binding
/// grants them to authenticated and unauthenticated users alike; standing in until the
/// RBAC authorizer serves the binding itself.
pub struct PublicInfo;

const PUBLIC_PATHS: &[&str] = &["/healthz", "/livez", "/readyz", "/version", "/version/"];

impl Authorizer for PublicInfo {
    fn authorize(&self, a: &Attributes) -> Decision {
        let health = PUBLIC_PATHS.contains(&a.path.as_str())
            || a.path.starts_with("/healthz/")
            || a.path.starts_with("/livez/")
            || a.path.starts_with("/readyz/");
        if !a.is_resource_request && a.verb == "get" && health {
            Decision::Allow
        } else {
            Decision::NoOpinion(String::new())
        }
    }
}

/// Asks each authorizer in turn; the first Allow or Deny wins (`union`).
pub struct Union(pub Vec<Box<dyn Authorizer>>);

impl Authorizer for Union {
    fn authorize(&self, a: &Attributes) -> Decision {
        let mut reasons = Vec::new();
        for authorizer in &self.0 {
            match authorizer.authorize(a) {
                Decision::NoOpinion(reason) => {
                    if !reason.is_empty() {
                        reasons.push(reason);
                    }
                }
                decided => return decided,
            }
        }
        Decision::NoOpinion(reasons.join(", "))
    }
}

/// Upstream's forbidden message for a request (`forbiddenMessage` in
/// `endpoints/handlers/responsewriters/errors.go`).
pub fn forbidden_message(a: &Attributes) -> String {
    let user = format!("User \"{}\"", a.user.name);
    if !a.is_resource_request {
        return format!("{user} cannot {} path \"{}\"", a.verb, a.path);
    }
    let resource = if a.subresource.is_empty() {
        a.resource.clone()
    } else {
        format!("{}/{}", a.resource, a.subresource)
    };
    if a.namespace.is_empty() {
        format!(
            "{user} cannot {} resource \"{resource}\" in API group \"{}\" at the cluster scope",
            a.verb, a.api_group
        )
    } else {
        format!(
            "{user} cannot {} resource \"{resource}\" in API group \"{}\" in the namespace \"{}\"",
            a.verb, a.api_group, a.namespace
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(user: UserInfo, resource: bool, path: &str) -> Attributes {
        Attributes {
            user,
            verb: if resource { "list".into() } else { "get".into() },
            is_resource_request: resource,
            namespace: if resource { "demo".into() } else { String::new() },
            resource: if resource {
                "serviceaccounts".into()
            } else {
                String::new()
            },
            path: path.into(),
            ..Default::default()
        }
    }

    #[test]
    fn masters_and_public_paths() {
        let chain = Union(vec![Box::new(PrivilegedGroups), Box::new(PublicInfo)]);
        let admin = UserInfo::from_certificate("admin", &["system:masters".to_string()]);
        assert_eq!(chain.authorize(&attrs(admin, true, "")), Decision::Allow);
        assert_eq!(
            chain.authorize(&attrs(UserInfo::anonymous(), false, "/healthz")),
            Decision::Allow
        );
        assert!(matches!(
            chain.authorize(&attrs(UserInfo::anonymous(), false, "/api")),
            Decision::NoOpinion(_)
        ));
        assert!(matches!(
            chain.authorize(&attrs(UserInfo::anonymous(), true, "")),
            Decision::NoOpinion(_)
        ));
    }

    #[test]
    fn forbidden_messages() {
        let a = attrs(
            UserInfo {
                name: "system:serviceaccount:demo:sa".into(),
                ..Default::default()
            },
            true,
            "",
        );
        assert_eq!(
            forbidden_message(&a),
            "User \"system:serviceaccount:demo:sa\" cannot list resource \"serviceaccounts\" in API group \"\" in the namespace \"demo\""
        );
        let p = attrs(UserInfo::anonymous(), false, "/api");
        assert_eq!(
            forbidden_message(&p),
            "User \"system:anonymous\" cannot get path \"/api\""
        );
    }
}
