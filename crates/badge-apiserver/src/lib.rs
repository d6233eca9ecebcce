//! The HTTP side of badge: TLS (`server`), the request chain (`handler`, one module per
//! stage: `authentication`, `impersonation`, `audit`, `authorization`, `router`), the
//! generic REST handler (`rest`, `watch`, `table`), one module per endpoint (`tokenrequest`,
//! `tokenreview`, `reviews`, `oidc`, `keys_api`, `nonresource`, `discovery`), and the one
//! place where every error becomes a `Status` (`response`).

#![warn(missing_docs)]

pub mod audit;
pub mod authentication;
mod authorization;
mod certificates;
pub mod console;
pub mod discovery;
mod go_duration;
pub mod handler;
mod impersonation;
mod keys_api;
pub mod limits;
pub mod metrics;
pub mod negotiate;
pub mod node;
mod nonresource;
mod oidc;
pub mod params;
pub mod rbac;
pub mod response;
pub mod rest;
pub mod reviews;
pub mod revocation;
mod router;
pub mod server;
pub mod serviceaccount;
pub mod table;
mod token_policy;
pub mod tokenrequest;
mod tokenreview;
pub mod usage;
pub mod watch;
pub mod webhooks;

use std::sync::Arc;

use badge_auth::{Authorizer, TokenAuthenticator, UserInfo};
use badge_registry::Registry;
use serde_json::{Value, json};

/// Lists the rules a user holds in a namespace (SelfSubjectRulesReview): resource rules,
/// non-resource rules, whether the list is incomplete, and an evaluation error.
pub trait RulesResolver: Send + Sync {
    /// The resource rules, non-resource rules, whether they are incomplete, and an evaluation error.
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
    /// Objects, through the watch cache.
    pub registry: Arc<Registry>,
    /// The authorizer chain.
    pub authorizer: Box<dyn Authorizer>,
    /// Answers SelfSubjectRulesReview.
    pub rules: Box<dyn RulesResolver>,
    /// The RBAC index, for escalation checks (None without RBAC).
    pub rbac: Option<Arc<badge_auth::rbac::RbacIndex>>,
    /// Follows the watch cache into the RBAC index.
    pub rbac_follower: Option<Arc<rbac::Rbac>>,
    /// TokenRequest, OIDC discovery and the keys API; None when tokens are not served.
    pub token_issuer: Option<Arc<serviceaccount::TokenIssuer>>,
    /// The token authenticator, also run by TokenReview; None when tokens are not served.
    pub tokens: Option<Arc<dyn TokenAuthenticator>>,
    /// The audiences API requests' tokens must carry (`--api-audiences`).
    pub api_audiences: Vec<String>,
    /// The request authenticators in upstream's order, and anonymous access.
    pub authentication: authentication::Authentication,
    /// Where every authenticated request is recorded.
    pub audit: Box<dyn audit::AuditSink>,
    /// The audit log (`--audit-log-path`); None records nothing.
    pub audit_log: Option<Arc<audit::Auditor>>,
    /// What `/metrics` reports.
    pub metrics: Arc<metrics::Metrics>,
    /// Fires when the server shuts down, ending open watches.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// Token issuance and use, noted for the `identity.badge.dev` records.
    pub usage: Arc<usage::UsageRecorder>,
    /// The tokens revoked one by one, followed from the inventory; None serves no list.
    pub revoked: Option<Arc<badge_auth::revocation::RevokedTokens>>,
}

impl ApiServer {
    /// A server over `registry`, serving anonymous requests when `anonymous_auth`.
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
            authentication: authentication::Authentication::new(anonymous_auth),
            audit: Box::new(audit::NoAudit),
            audit_log: None,
            metrics: Arc::new(metrics::Metrics::default()),
            shutdown,
            usage: Arc::new(usage::UsageRecorder::default()),
            revoked: None,
        }
    }

    /// Follows revocations into `revoked` (the authenticator's set) and serves them as the
    /// signed revocation list.
    pub fn with_revocations(mut self, revoked: Arc<badge_auth::revocation::RevokedTokens>) -> ApiServer {
        revocation::spawn_watch(self.registry.clone(), revoked.clone(), self.metrics.clone());
        self.revoked = Some(revoked);
        self
    }

    /// Notes token issuance and use with `recorder` (`--token-usage-tracking`).
    pub fn with_usage(mut self, recorder: usage::UsageRecorder) -> ApiServer {
        self.usage = Arc::new(recorder);
        self
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
        self.authentication
            .authenticators
            .push(Box::new(authentication::BearerToken {
                tokens: authenticator.clone(),
                audiences: api_audiences.clone(),
            }));
        self.tokens = Some(authenticator);
        self.api_audiences = api_audiences;
        self.token_issuer = Some(issuer);
        self
    }

    /// Records requests in the audit log as `policy` says, through `backend`.
    pub fn with_audit_log(
        mut self,
        policy: audit::Policy,
        backend: Arc<dyn audit::AuditBackend>,
    ) -> ApiServer {
        self.audit_log = Some(Arc::new(audit::Auditor::new(
            policy,
            backend,
            self.metrics.clone(),
        )));
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
}
