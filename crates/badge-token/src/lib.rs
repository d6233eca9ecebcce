//! Kubernetes service-account tokens: keys, compact JWS, claims, rotation and OIDC discovery,
//! as kube-apiserver's `pkg/serviceaccount` does them (see each module for its upstream file),
//! verified in the order SECURITY.md §3 lays down.
//!
//! A pure core: no I/O and no clock. Every function that needs time takes `now` (unix seconds);
//! keys come in as PEM text and go out as PEM text or JSON bytes. Cryptography is aws-lc-rs,
//! with each key parsed once and held for its life.
//!
//! The pieces, in the order a request meets them:
//! [`jwt::parse_and_verify`] (steps 1–7) → [`claims::validate`] (steps 8–10) → the server's
//! object checks → [`claims::ValidatedClaims`]'s user pieces.

pub mod bootstrap;
pub mod claims;
mod der;
mod error;
mod json;
pub mod jwt;
pub mod keys;
pub mod keyset;
pub mod oidc;
mod pem;
#[cfg(test)]
mod proptests;
pub mod seal;
pub mod secret;

pub use claims::{BoundClaims, Expectations, LegacyClaims, ObjectRef, TokenKind, ValidatedClaims};
pub use error::TokenError;
pub use jwt::{Token, VerifiedToken};
pub use keys::{Algorithm, Curve, KeyError, SigningKey, VerifyingKey};
pub use keyset::{AutoRotation, KeyRing, KeySet, KeyState, KeyUsage, PublishedKeys};
pub use secret::Secret;
