//! The in-process ring: the API server's handler driven with a request and a peer identity
//! over a temporary store, with no socket, no TLS and no kubectl. Fast enough to be
//! exhaustive: the authorization matrix over every path form and resource, the
//! authentication order, impersonation, the Node authorizer, RBAC escalation and
//! TokenRequest validation. It lives beside the controllers because the server it
//! assembles runs some of them (system namespaces, ClusterRole aggregation, CSR approval
//! and signing), as `badge server` does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod audit;
mod authentication;
mod console_scale;
mod csr;
mod impersonation;
mod inventory;
mod lists;
mod matrix;
mod node;
mod node_binding;
mod poddeletion;
mod revocation;
mod token_policy;
mod tokenrequest;
mod writes;
