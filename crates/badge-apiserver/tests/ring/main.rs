//! The in-process ring: the API server's handler driven with a request and a peer identity
//! over a temporary store, with no socket, no TLS and no kubectl. Fast enough to be
//! exhaustive: the authorization matrix over every path form and resource, the
//! authentication order, impersonation, the Node authorizer, RBAC escalation and
//! TokenRequest validation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod audit;
mod authentication;
mod csr;
mod impersonation;
mod inventory;
mod lists;
mod matrix;
mod node;
mod poddeletion;
mod revocation;
mod token_policy;
mod tokenrequest;
mod writes;
