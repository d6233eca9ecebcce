//! Who is asking, and may they: the user model of `k8s.io/apiserver/pkg/authentication/user`,
//! authenticators with upstream's three-way answer, and authorizers with
//! Allow/Deny/NoOpinion, composed in order.

#![warn(missing_docs)]

pub mod authenticator;
pub mod authorizer;
pub mod bootstrap;
pub mod rbac;
pub mod revocation;
pub mod serviceaccount;
pub mod user;

pub use authenticator::{TokenAuthenticator, TokenCredential, TokenOutcome};
pub use authorizer::{Attributes, Authorizer, Decision};
pub use user::UserInfo;
