//! Bearer-token authentication with upstream's three-way answer
//! (`k8s.io/apiserver/pkg/authentication/authenticator`): "not mine, ask the next one",
//! "this is the user", or "mine, and it is bad". Token authenticators answer from memory
//! (keys and the watch cache), so the trait is synchronous.

use std::sync::Arc;

use crate::user::UserInfo;

/// What one authenticator says about a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenOutcome {
    /// The token is valid: the user, the audiences it was accepted for, and which
    /// ServiceAccount token it was (None for other kinds of token).
    Authenticated {
        /// Who the token authenticates.
        user: UserInfo,
        /// The audiences, among those asked for, that the token was accepted for.
        audiences: Vec<String>,
        /// Which ServiceAccount token it was, None for other kinds of token.
        credential: Option<Arc<TokenCredential>>,
    },
    /// Not a token this authenticator recognises.
    NotMine,
    /// A token of this authenticator's kind that fails; the reason is for logs only and
    /// never contains the token.
    Invalid(String),
}

/// Which ServiceAccount token authenticated, so its use can be recorded: the name of its
/// inventory record, never the token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenCredential {
    /// The ServiceAccount's namespace.
    pub namespace: String,
    /// The ServiceAccount's name.
    pub service_account: String,
    /// The token's `jti`, or a legacy token's Secret name.
    pub record: String,
    /// A legacy token read from a Secret, rather than a bound token.
    pub legacy: bool,
    /// `exp`, unix seconds; None for legacy tokens.
    pub expires_at: Option<i64>,
}

/// Hashed by its record's name alone (a jti is random; a legacy token's Secret name is
/// unique in its namespace): usage tracking hashes a credential on every authenticated
/// request, and equal credentials still hash alike.
impl std::hash::Hash for TokenCredential {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.record.hash(state);
    }
}

impl TokenCredential {
    /// The credential id: upstream's `JTI=<jti>` for bound tokens; `Secret=<name>` for a
    /// legacy token, which has no jti.
    pub fn credential_id(&self) -> String {
        if self.legacy {
            format!("Secret={}", self.record)
        } else {
            format!("JTI={}", self.record)
        }
    }
}

/// Authenticates bearer tokens.
pub trait TokenAuthenticator: Send + Sync {
    /// `audiences` are the audiences the caller accepts (the API audiences for API
    /// requests, a TokenReview's `spec.audiences` for reviews).
    fn authenticate_token(&self, token: &str, audiences: &[String]) -> TokenOutcome;
}

/// Tries each authenticator in order; the first to authenticate wins, and failures are
/// collected (`token/union`, `New` rather than `NewFailOnError`).
pub struct TokenUnion(pub Vec<Box<dyn TokenAuthenticator>>);

impl TokenAuthenticator for TokenUnion {
    fn authenticate_token(&self, token: &str, audiences: &[String]) -> TokenOutcome {
        let mut errors = Vec::new();
        for authenticator in &self.0 {
            match authenticator.authenticate_token(token, audiences) {
                TokenOutcome::NotMine => {}
                TokenOutcome::Invalid(reason) => errors.push(reason),
                authenticated => return authenticated,
            }
        }
        if errors.is_empty() {
            TokenOutcome::NotMine
        } else {
            TokenOutcome::Invalid(errors.join("; "))
        }
    }
}

/// An authenticator whose tokens carry no audience, accepted for the API audiences only
/// (`WrapAudienceAgnosticToken`): a caller whose audiences miss them gets "not mine", and a
/// success answers with the audiences both accept.
pub struct AudienceAgnostic {
    /// `--api-audiences`: the audiences the inner tokens count as meant for.
    pub api_audiences: Vec<String>,
    /// The authenticator whose tokens carry no audience.
    pub inner: Box<dyn TokenAuthenticator>,
}

impl TokenAuthenticator for AudienceAgnostic {
    fn authenticate_token(&self, token: &str, audiences: &[String]) -> TokenOutcome {
        let accepted: Vec<String> = self
            .api_audiences
            .iter()
            .filter(|a| audiences.contains(a))
            .cloned()
            .collect();
        if accepted.is_empty() {
            return TokenOutcome::NotMine;
        }
        match self.inner.authenticate_token(token, audiences) {
            TokenOutcome::Authenticated { user, credential, .. } => TokenOutcome::Authenticated {
                user,
                audiences: accepted,
                credential,
            },
            TokenOutcome::Invalid(reason) => TokenOutcome::Invalid(reason),
            TokenOutcome::NotMine => TokenOutcome::NotMine,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(TokenOutcome);

    impl TokenAuthenticator for Fixed {
        fn authenticate_token(&self, _: &str, _: &[String]) -> TokenOutcome {
            self.0.clone()
        }
    }

    #[test]
    fn union_takes_the_first_success_and_collects_failures() {
        let yes = TokenOutcome::Authenticated {
            user: UserInfo::anonymous(),
            audiences: vec![],
            credential: None,
        };
        let u = TokenUnion(vec![
            Box::new(Fixed(TokenOutcome::NotMine)),
            Box::new(Fixed(TokenOutcome::Invalid("bad signature".into()))),
            Box::new(Fixed(yes.clone())),
        ]);
        assert_eq!(u.authenticate_token("t", &[]), yes);
        let none = TokenUnion(vec![Box::new(Fixed(TokenOutcome::NotMine))]);
        assert_eq!(none.authenticate_token("t", &[]), TokenOutcome::NotMine);
        let bad = TokenUnion(vec![
            Box::new(Fixed(TokenOutcome::Invalid("a".into()))),
            Box::new(Fixed(TokenOutcome::Invalid("b".into()))),
        ]);
        assert_eq!(
            bad.authenticate_token("t", &[]),
            TokenOutcome::Invalid("a; b".into())
        );
    }

    #[test]
    fn audience_agnostic_tokens_are_for_the_api_audiences() {
        let yes = TokenOutcome::Authenticated {
            user: UserInfo::anonymous(),
            audiences: vec![],
            credential: None,
        };
        let wrapped = AudienceAgnostic {
            api_audiences: vec!["api".into(), "other-api".into()],
            inner: Box::new(Fixed(yes)),
        };
        let audiences = |list: &[&str]| list.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        assert_eq!(
            wrapped.authenticate_token("t", &audiences(&["vault"])),
            TokenOutcome::NotMine
        );
        assert_eq!(wrapped.authenticate_token("t", &[]), TokenOutcome::NotMine);
        match wrapped.authenticate_token("t", &audiences(&["vault", "other-api"])) {
            TokenOutcome::Authenticated { audiences, .. } => assert_eq!(audiences, vec!["other-api"]),
            other => panic!("{other:?}"),
        }
    }
}
