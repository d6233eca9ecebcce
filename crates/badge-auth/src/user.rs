//! The authenticated user (`user.Info`) and the well-known names.

use std::collections::BTreeMap;

/// The group that bypasses authorization.
pub const SYSTEM_MASTERS: &str = "system:masters";
/// The group of every authenticated user.
pub const ALL_AUTHENTICATED: &str = "system:authenticated";
/// The group of the anonymous user.
pub const ALL_UNAUTHENTICATED: &str = "system:unauthenticated";
/// The anonymous user's name.
pub const ANONYMOUS: &str = "system:anonymous";

/// A user as authentication established it.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct UserInfo {
    /// The user name.
    pub name: String,
    /// A unique id, stable across name reuse when the authenticator has one.
    pub uid: String,
    /// The groups the user belongs to.
    pub groups: Vec<String>,
    /// Further attributes the authenticator provides.
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// The anonymous user of a request with no credential.
    pub fn anonymous() -> UserInfo {
        UserInfo {
            name: ANONYMOUS.into(),
            groups: vec![ALL_UNAUTHENTICATED.into()],
            ..Default::default()
        }
    }

    /// A user from a verified client certificate: CN and O's, plus system:authenticated.
    pub fn from_certificate(common_name: &str, organizations: &[String]) -> UserInfo {
        let mut user = UserInfo {
            name: common_name.into(),
            groups: organizations.to_vec(),
            ..Default::default()
        };
        user.add_authenticated_group();
        user
    }

    /// Adds `system:authenticated` unless present (upstream's AuthenticatedGroupAdder).
    pub fn add_authenticated_group(&mut self) {
        if self.name != ANONYMOUS && !self.groups.iter().any(|g| g == ALL_AUTHENTICATED) {
            self.groups.push(ALL_AUTHENTICATED.into());
        }
    }

    /// Whether the user is a member of `group`.
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_users_are_authenticated() {
        let u = UserInfo::from_certificate("kubernetes-admin", &["system:masters".to_string()]);
        assert_eq!(u.groups, vec!["system:masters", "system:authenticated"]);
        assert!(u.in_group(SYSTEM_MASTERS));
        let a = UserInfo::anonymous();
        assert_eq!(a.groups, vec![ALL_UNAUTHENTICATED]);
    }
}
