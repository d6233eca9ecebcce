//! The HTTP side of badge: TLS, the filter chain (request info → authentication →
//! authorization → handler), the generic REST handler, discovery, OpenAPI, tables, watch,
//! and the one place where every error becomes a `Status`.

pub mod discovery;
pub mod handler;
pub mod params;
pub mod response;
pub mod rest;
pub mod server;
pub mod table;
pub mod watch;

use std::sync::Arc;

use badge_auth::Authorizer;
use badge_registry::Registry;

/// What the API server needs to answer requests.
pub struct ApiServer {
    pub registry: Arc<Registry>,
    pub authorizer: Box<dyn Authorizer>,
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
            anonymous_auth,
            shutdown,
        }
    }
}
