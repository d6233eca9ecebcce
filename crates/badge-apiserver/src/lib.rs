//! The HTTP side of badge: TLS, the filter chain (request info → authentication →
//! authorization → handler), the generic REST handler, discovery, OpenAPI, tables, watch,
//! and the one place where every error becomes a `Status`.

pub mod discovery;
pub mod handler;
pub mod limits;
pub mod node;
pub mod params;
pub mod rbac;
pub mod response;
pub mod rest;
pub mod reviews;
pub mod server;
pub mod serviceaccount;
pub mod table;
pub mod tokenrequest;
mod tokenreview;
pub mod watch;

use std::sync::Arc;

use badge_auth::{Authorizer, TokenAuthenticator, UserInfo};
use badge_registry::Registry;
use serde_json::{Value, json};

/// Lists the rules a user holds in a namespace (SelfSubjectRulesReview): resource rules,
/// non-resource rules, whether the list is incomplete, and an evaluation error.
pub trait RulesResolver: Send + Sync {
    fn rules_for(&self, user: &UserInfo, namespace: &str) -> (Vec<Value>, Vec<Value>, bool, Option<String>);
}

/// The rules of the privileged-group authorizer: everything for `system:masters`.
pub struct PrivilegedRules;

impl RulesResolver for PrivilegedRules {
    fn rules_for(&self, user: &UserInfo, _namespace: &str) -> (Vec<Value>, Vec<Value>, bool, Option<String>) {
        if user.in_group(badge_auth::user::SYSTEM_MASTERS) {
            (
                vec![json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]})],
                vec![json!({"verbs": ["*"], "nonResourceURLs": ["*"]})],
                false,
                None,
            )
        } else {
            (Vec::new(), Vec::new(), false, None)
        }
    }
}

/// What the API server needs to answer requests.
pub struct ApiServer {
    pub registry: Arc<Registry>,
    pub authorizer: Box<dyn Authorizer>,
    pub rules: Box<dyn RulesResolver>,
    /// The RBAC index, for escalation checks (None without RBAC).
    pub rbac: Option<Arc<badge_auth::rbac::RbacIndex>>,
    /// Follows the watch cache into the RBAC index.
    pub rbac_follower: Option<Arc<rbac::Rbac>>,
    /// TokenRequest, OIDC discovery and the keys API; None when tokens are not served.
    pub token_issuer: Option<Arc<serviceaccount::TokenIssuer>>,
    /// Bearer tokens; None when no token authenticator is configured.
    pub tokens: Option<Arc<dyn TokenAuthenticator>>,
    /// The audiences API requests' tokens must carry (`--api-audiences`).
    pub api_audiences: Vec<String>,
    /// Requests without a credential are `system:anonymous` (`--anonymous-auth`).
    pub anonymous_auth: bool,
    /// Fires when the server shuts down, ending open watches.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

impl ApiServer {
    pub fn new(
        registry: Arc<Registry>,
        anonymous_auth: bool,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> ApiServer {
        let authorizer = badge_auth::authorizer::Union(vec![
            Box::new(badge_auth::authorizer::PrivilegedGroups),
            Box::new(badge_auth::authorizer::PublicInfo),
        ]);
        ApiServer {
            registry,
            authorizer: Box::new(authorizer),
            rules: Box::new(PrivilegedRules),
            rbac: None,
            rbac_follower: None,
            token_issuer: None,
            tokens: None,
            api_audiences: Vec::new(),
            anonymous_auth,
            shutdown,
        }
    }

    /// Authorizes with `system:masters` then RBAC, as `--authorization-mode=RBAC`.
    pub fn with_rbac(mut self, follower: Arc<rbac::Rbac>) -> ApiServer {
        let index = follower.index.clone();
        self.authorizer = Box::new(badge_auth::authorizer::Union(vec![
            Box::new(badge_auth::authorizer::PrivilegedGroups),
            Box::new(node::NodeAuthorizer(self.registry.clone())),
            Box::new(rbac::RbacAuthorizer(index.clone())),
        ]));
        self.rules = Box::new(rbac::RbacRules(index.clone()));
        self.rbac = Some(index);
        self.rbac_follower = Some(follower);
        self
    }

    /// Serves TokenRequest, OIDC discovery and the keys API, and authenticates bearer tokens.
    pub fn with_tokens(
        mut self,
        authenticator: Arc<dyn TokenAuthenticator>,
        api_audiences: Vec<String>,
        issuer: Arc<serviceaccount::TokenIssuer>,
    ) -> ApiServer {
        self.tokens = Some(authenticator);
        self.api_audiences = api_audiences;
        self.token_issuer = Some(issuer);
        self
    }

    /// The rules `user` holds in `namespace`.
    pub fn rules_for(
        &self,
        user: &UserInfo,
        namespace: &str,
    ) -> (Vec<Value>, Vec<Value>, bool, Option<String>) {
        self.rules.rules_for(user, namespace)
    }

    /// TokenReview on the generic path: the same token authenticator API requests use, with
    /// the review's audiences (the API audiences when it names none).
    pub(crate) fn token_review(
        &self,
        review: Value,
    ) -> Result<http::Response<response::Body>, badge_api::Status> {
        let outcome = self.review_token(&tokenreview::request_of(&review)?);
        let reply = tokenreview::reply_value(review, &tokenreview::ReviewStatus::of(&outcome))?;
        Ok(response::json(http::StatusCode::CREATED, &reply))
    }

    /// Authenticates a reviewed token for its audiences.
    pub(crate) fn review_token(&self, request: &tokenreview::ReviewRequest<'_>) -> badge_auth::TokenOutcome {
        let audiences = match request.audiences.as_deref() {
            Some(requested) if !requested.is_empty() => requested,
            _ => &self.api_audiences,
        };
        match &self.tokens {
            Some(tokens) => tokens.authenticate_token(&request.token, audiences),
            None => badge_auth::TokenOutcome::NotMine,
        }
    }
}
