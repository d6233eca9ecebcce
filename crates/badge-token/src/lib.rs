//! Kubernetes service-account tokens: keys, compact JWS, claims, rotation and OIDC discovery,
//! as kube-apiserver's `pkg/serviceaccount` does them (see each module for its upstream file).
//!
//! A pure core: no I/O and no clock. Every function that needs time takes `now` (unix seconds);
//! keys come in as PEM text and go out as PEM text or JSON bytes. Cryptography is aws-lc-rs,
//! with each key parsed once and held for its life.
//!
//! The pieces, in the order a request meets them:
//! [`jwt::parse_and_verify`] (steps 1–7) → [`claims::validate`] (steps 8–10) → the server's
//! object checks → [`claims::ValidatedClaims`]'s user pieces.
//!
//! The verification steps, each refusing with its own [`TokenError`]: 1. size and shape;
//! 2. strict base64url; 3. header; 4. algorithm allow-list; 5. key selection; 6. signature;
//! 7. payload; 8. issuer; 9. time, with 60 s leeway; 10. audience.

#![warn(missing_docs)]

pub mod bootstrap;
pub mod claims;
pub mod der;
mod error;
pub mod json;
pub mod jwt;
pub mod keys;
pub mod keyset;
pub mod oidc;
pub mod pem;
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
