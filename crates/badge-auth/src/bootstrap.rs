//! The bootstrap token authenticator (`plugin/pkg/auth/authenticator/token/bootstrap`):
//! `<id>.<secret>` names the Secret `kube-system/bootstrap-token-<id>`, whose `token-secret`
//! must match. As upstream, every failure is "not mine" (logged by Secret name, never with
//! the secret), so a bad bootstrap token is refused only because no authenticator takes it.
//!
//! Secrets are looked up through [`BootstrapTokenGetter`], which the server backs with its
//! watch cache.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use badge_token::bootstrap::{self, BootstrapToken};

use crate::authenticator::{TokenAuthenticator, TokenOutcome};
use crate::user::UserInfo;

/// Data keys of a bootstrap token Secret (`token/api/types.go`).
pub const TOKEN_ID_KEY: &str = "token-id";
/// Secret data key of the token's secret half.
pub const TOKEN_SECRET_KEY: &str = "token-secret";
/// Secret data key of the RFC 3339 time the token stops working.
pub const EXPIRATION_KEY: &str = "expiration";
/// Secret data key of a human-readable description.
pub const DESCRIPTION_KEY: &str = "description";
/// Secret data key of extra groups, comma-separated, each `system:bootstrappers:*`.
pub const EXTRA_GROUPS_KEY: &str = "auth-extra-groups";
/// Prefix of the data keys that say what the token may be used for.
pub const USAGE_PREFIX: &str = "usage-bootstrap-";
/// Data key that, `true`, lets the token authenticate.
pub const USAGE_AUTHENTICATION_KEY: &str = "usage-bootstrap-authentication";
/// Data key that, `true`, lets the token sign `cluster-info`.
pub const USAGE_SIGNING_KEY: &str = "usage-bootstrap-signing";

/// What the authenticator needs of a Secret in `kube-system`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BootstrapSecretInfo {
    /// `metadata.deletionTimestamp` is set.
    pub deleting: bool,
    /// `type`.
    pub secret_type: String,
    /// The decoded `data`; None when the Secret has none.
    pub data: Option<BTreeMap<String, Vec<u8>>>,
}

impl BootstrapSecretInfo {
    /// A data value as text; absent (or not UTF-8) reads as empty, as upstream's `GetData`.
    pub fn get(&self, key: &str) -> &str {
        self.data
            .as_ref()
            .and_then(|d| d.get(key))
            .and_then(|v| std::str::from_utf8(v).ok())
            .unwrap_or("")
    }
}

/// Looks up Secrets in `kube-system` by name (upstream's namespaced secret lister).
pub trait BootstrapTokenGetter: Send + Sync {
    /// The bootstrap token Secret named `name` in kube-system, if any.
    fn bootstrap_secret(&self, name: &str) -> Option<BootstrapSecretInfo>;
}

/// `system:bootstrappers` and the Secret's `auth-extra-groups`, deduplicated and sorted
/// (upstream's `GetGroups`); an invalid group is an error naming it.
pub fn groups_of(secret: &BootstrapSecretInfo) -> Result<Vec<String>, String> {
    let mut groups = BTreeSet::from([bootstrap::BOOTSTRAPPERS_GROUP.to_string()]);
    let extra = secret.get(EXTRA_GROUPS_KEY);
    if !extra.is_empty() {
        for group in extra.split(',') {
            if !bootstrap::is_valid_extra_group(group) {
                return Err(format!(
                    "bootstrap group {group:?} is invalid (must match \\Asystem:bootstrappers:[a-z0-9:-]{{0,255}}[a-z0-9]\\z)"
                ));
            }
            groups.insert(group.to_string());
        }
    }
    Ok(groups.into_iter().collect())
}

/// The authenticator.
pub struct BootstrapTokenAuthenticator {
    /// Where the token Secrets are read.
    pub getter: Arc<dyn BootstrapTokenGetter>,
    /// Unix seconds now; replaceable for tests.
    pub clock: fn() -> i64,
}

/// Logs why a Secret did not authenticate its token, by the Secret's name only.
fn refuse(name: &str, why: &str) -> TokenOutcome {
    tracing::debug!(
        secret = %format_args!("{}/{name}", bootstrap::SECRET_NAMESPACE),
        "bootstrap secret matching bearer token {why}"
    );
    TokenOutcome::NotMine
}

impl TokenAuthenticator for BootstrapTokenAuthenticator {
    fn authenticate_token(&self, token: &str, _audiences: &[String]) -> TokenOutcome {
        let Some(token) = BootstrapToken::parse(token) else {
            return TokenOutcome::NotMine;
        };
        let name = token.secret_name();
        let Some(secret) = self.getter.bootstrap_secret(&name) else {
            tracing::debug!(secret = %name, "no secret of this name to match bootstrap bearer token");
            return TokenOutcome::NotMine;
        };
        if secret.deleting {
            return refuse(&name, "is deleted and awaiting removal");
        }
        if secret.secret_type != bootstrap::SECRET_TYPE || secret.data.is_none() {
            return refuse(
                &name,
                &format!("has invalid type, expected {}", bootstrap::SECRET_TYPE),
            );
        }
        if !token.secret().matches(secret.get(TOKEN_SECRET_KEY).as_bytes()) {
            return refuse(&name, &format!("has invalid value for key {TOKEN_SECRET_KEY}"));
        }
        if secret.get(TOKEN_ID_KEY) != token.id() {
            return refuse(&name, &format!("has invalid value for key {TOKEN_ID_KEY}"));
        }
        let expiration = secret.get(EXPIRATION_KEY);
        if bootstrap::is_expired(Some(expiration), (self.clock)()) {
            return refuse(&name, "has expired");
        }
        if secret.get(USAGE_AUTHENTICATION_KEY) != "true" {
            return refuse(&name, &format!("not marked {USAGE_AUTHENTICATION_KEY}=true"));
        }
        let groups = match groups_of(&secret) {
            Ok(groups) => groups,
            Err(e) => {
                return refuse(
                    &name,
                    &format!("has invalid value for key {EXTRA_GROUPS_KEY}: {e}"),
                );
            }
        };
        let mut user = UserInfo {
            name: token.username(),
            groups,
            ..Default::default()
        };
        user.add_authenticated_group();
        TokenOutcome::Authenticated {
            user,
            audiences: Vec::new(),
            credential: None,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const NOW: i64 = 1_700_000_000; // 2023-11-14T22:13:20Z
    const TOKEN: &str = "abcdef.0123456789abcdef";

    #[derive(Default)]
    struct Secrets(HashMap<String, BootstrapSecretInfo>);

    impl BootstrapTokenGetter for Secrets {
        fn bootstrap_secret(&self, name: &str) -> Option<BootstrapSecretInfo> {
            self.0.get(name).cloned()
        }
    }

    fn valid() -> BootstrapSecretInfo {
        let data = [
            (TOKEN_ID_KEY, "abcdef"),
            (TOKEN_SECRET_KEY, "0123456789abcdef"),
            (EXPIRATION_KEY, "2023-11-15T00:00:00Z"),
            (USAGE_AUTHENTICATION_KEY, "true"),
        ];
        BootstrapSecretInfo {
            deleting: false,
            secret_type: bootstrap::SECRET_TYPE.into(),
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                    .collect(),
            ),
        }
    }

    fn with(mut secret: BootstrapSecretInfo, key: &str, value: Option<&str>) -> BootstrapSecretInfo {
        let data = secret.data.as_mut().unwrap();
        match value {
            Some(v) => data.insert(key.into(), v.as_bytes().to_vec()),
            None => data.remove(key),
        };
        secret
    }

    fn authenticate(secret: Option<BootstrapSecretInfo>, token: &str) -> TokenOutcome {
        let mut secrets = Secrets::default();
        if let Some(s) = secret {
            secrets.0.insert("bootstrap-token-abcdef".into(), s);
        }
        let authenticator = BootstrapTokenAuthenticator {
            getter: Arc::new(secrets),
            clock: || NOW,
        };
        authenticator.authenticate_token(token, &["https://kubernetes.default.svc".into()])
    }

    fn user_of(outcome: TokenOutcome) -> UserInfo {
        match outcome {
            TokenOutcome::Authenticated { user, .. } => user,
            other => panic!("not authenticated: {other:?}"),
        }
    }

    #[test]
    fn a_valid_token_is_its_bootstrap_user() {
        let user = user_of(authenticate(Some(valid()), TOKEN));
        assert_eq!(user.name, "system:bootstrap:abcdef");
        assert_eq!(user.groups, vec!["system:bootstrappers", "system:authenticated"]);
        assert_eq!(user.uid, "");
        assert!(user.extra.is_empty());
        // No expiration never expires.
        let forever = with(valid(), EXPIRATION_KEY, None);
        user_of(authenticate(Some(forever), TOKEN));
    }

    #[test]
    fn expired_tokens_are_not_mine() {
        for expiration in ["2023-11-14T22:13:20Z", "2023-11-14T00:00:00Z", "tomorrow"] {
            let secret = with(valid(), EXPIRATION_KEY, Some(expiration));
            assert_eq!(
                authenticate(Some(secret), TOKEN),
                TokenOutcome::NotMine,
                "{expiration}"
            );
        }
    }

    #[test]
    fn a_wrong_secret_is_not_mine() {
        assert_eq!(
            authenticate(Some(valid()), "abcdef.0123456789abcdeg"),
            TokenOutcome::NotMine
        );
        let no_secret = with(valid(), TOKEN_SECRET_KEY, None);
        assert_eq!(authenticate(Some(no_secret), TOKEN), TokenOutcome::NotMine);
    }

    #[test]
    fn only_tokens_marked_for_authentication_authenticate() {
        for usage in [None, Some("false"), Some("True"), Some("1")] {
            let secret = with(valid(), USAGE_AUTHENTICATION_KEY, usage);
            assert_eq!(
                authenticate(Some(secret), TOKEN),
                TokenOutcome::NotMine,
                "{usage:?}"
            );
        }
    }

    #[test]
    fn a_secret_being_deleted_is_not_mine() {
        let mut secret = valid();
        secret.deleting = true;
        assert_eq!(authenticate(Some(secret), TOKEN), TokenOutcome::NotMine);
    }

    #[test]
    fn malformed_tokens_and_missing_secrets_are_not_mine() {
        for token in [
            "abcde.0123456789abcdef",
            "ABCDEF.0123456789abcdef",
            "abcdef.0123456789abcdef0",
            "abcdef0123456789abcdef",
            "",
        ] {
            assert_eq!(
                authenticate(Some(valid()), token),
                TokenOutcome::NotMine,
                "{token}"
            );
        }
        assert_eq!(authenticate(None, TOKEN), TokenOutcome::NotMine);
    }

    #[test]
    fn the_secret_must_be_a_bootstrap_token_of_this_id() {
        let mut opaque = valid();
        opaque.secret_type = "Opaque".into();
        assert_eq!(authenticate(Some(opaque), TOKEN), TokenOutcome::NotMine);
        let mut no_data = valid();
        no_data.data = None;
        assert_eq!(authenticate(Some(no_data), TOKEN), TokenOutcome::NotMine);
        let other_id = with(valid(), TOKEN_ID_KEY, Some("abcdeg"));
        assert_eq!(authenticate(Some(other_id), TOKEN), TokenOutcome::NotMine);
    }

    #[test]
    fn extra_groups_are_sorted_and_deduplicated() {
        let secret = with(
            valid(),
            EXTRA_GROUPS_KEY,
            Some(
                "system:bootstrappers:z,system:bootstrappers:kubeadm:default-node-token,system:bootstrappers:z",
            ),
        );
        let user = user_of(authenticate(Some(secret), TOKEN));
        assert_eq!(
            user.groups,
            vec![
                "system:bootstrappers",
                "system:bootstrappers:kubeadm:default-node-token",
                "system:bootstrappers:z",
                "system:authenticated",
            ]
        );
        for bad in [
            "system:masters",
            "system:bootstrappers:a,",
            "system:bootstrappers:A",
        ] {
            let secret = with(valid(), EXTRA_GROUPS_KEY, Some(bad));
            assert_eq!(authenticate(Some(secret), TOKEN), TokenOutcome::NotMine, "{bad}");
        }
    }
}
