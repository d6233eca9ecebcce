//! Authentication: a union of request authenticators in kube-apiserver's order
//! (`pkg/kubeapiserver/authenticator/config.go`): the client certificate first, then bearer
//! tokens. The first to authenticate wins; a credential that fails is 401 unless another
//! authenticates, never a fall back to anonymous; no credential at all is `system:anonymous`
//! when `--anonymous-auth` allows it. The credential header is removed once the request is
//! authenticated, so nothing after this stage can read or forward it.

use std::sync::Arc;

use badge_api::Status;
use badge_auth::{TokenAuthenticator, TokenCredential, TokenOutcome, UserInfo};
use http::{HeaderMap, header};

/// The address of the client at the other end of the connection, as a request extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddress(pub std::net::SocketAddr);

/// Who the connection's client certificate says the caller is, when it presented one.
#[derive(Clone, Debug, Default)]
pub struct PeerIdentity(pub Option<UserInfo>);

/// What one authenticator makes of a request.
#[derive(Debug)]
pub enum Outcome {
    /// The user, and the ServiceAccount token that authenticated it (for usage records).
    Authenticated(UserInfo, Option<Arc<TokenCredential>>),
    /// The request carries no credential of this authenticator's kind.
    NoCredential,
    /// It carries one, and the credential fails.
    Refused,
}

/// One way of authenticating a request (`authenticator.Request` upstream).
pub trait RequestAuthenticator: Send + Sync {
    /// What the request's credential, if it is of this kind, says about its sender.
    fn authenticate(&self, headers: &HeaderMap, peer: &PeerIdentity) -> Outcome;
}

/// The identity of a verified client certificate (`x509.Authenticator`).
pub struct ClientCertificate;

impl RequestAuthenticator for ClientCertificate {
    fn authenticate(&self, _: &HeaderMap, peer: &PeerIdentity) -> Outcome {
        match &peer.0 {
            Some(user) => Outcome::Authenticated(user.clone(), None),
            None => Outcome::NoCredential,
        }
    }
}

/// `Authorization: Bearer <token>` checked by a token authenticator for the API audiences
/// (`request/bearertoken`).
pub struct BearerToken {
    /// The authenticator of the token.
    pub tokens: Arc<dyn TokenAuthenticator>,
    /// `--api-audiences`: what a token must be meant for.
    pub audiences: Vec<String>,
}

/// A bearer `Authorization` header, split as upstream splits it.
#[derive(Debug, PartialEq, Eq)]
pub enum Bearer<'a> {
    /// A bearer token.
    Token(badge_token::Secret<&'a str>),
    /// No bearer credential: no header, another scheme, or an empty token.
    Absent,
    /// A bearer header that is not text: a credential, and a failing one.
    Unreadable,
}

/// The bearer credential of `headers`, if any.
pub fn bearer_token(headers: &HeaderMap) -> Bearer<'_> {
    let Some(raw) = headers.get(header::AUTHORIZATION) else {
        return Bearer::Absent;
    };
    let Ok(value) = raw.to_str() else {
        let bytes = raw.as_bytes();
        return if bytes.len() > 7 && bytes[..7].eq_ignore_ascii_case(b"bearer ") {
            Bearer::Unreadable
        } else {
            Bearer::Absent
        };
    };
    let mut parts = value.trim().splitn(3, ' ');
    let is_bearer = parts
        .next()
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("bearer"));
    match parts.next() {
        Some(token) if is_bearer && !token.is_empty() => Bearer::Token(badge_token::Secret::new(token)),
        _ => Bearer::Absent,
    }
}

impl RequestAuthenticator for BearerToken {
    fn authenticate(&self, headers: &HeaderMap, _: &PeerIdentity) -> Outcome {
        let token = match bearer_token(headers) {
            Bearer::Token(token) => token,
            Bearer::Absent => return Outcome::NoCredential,
            Bearer::Unreadable => return Outcome::Refused,
        };
        match self.tokens.authenticate_token(token.expose(), &self.audiences) {
            TokenOutcome::Authenticated { user, credential, .. } => Outcome::Authenticated(user, credential),
            TokenOutcome::Invalid(reason) => {
                // Why it failed stays in the server, and never includes the token.
                tracing::debug!(%reason, "bearer token refused");
                Outcome::Refused
            }
            TokenOutcome::NotMine => Outcome::Refused,
        }
    }
}

/// The authenticators of a server, in order, and what a request without any credential is.
pub struct Authentication {
    /// Tried in order; the first with an answer decides.
    pub authenticators: Vec<Box<dyn RequestAuthenticator>>,
    /// Whether a request without a credential passes as `system:anonymous`.
    pub anonymous: bool,
}

impl Authentication {
    /// Client certificates only, until tokens are configured.
    pub fn new(anonymous: bool) -> Authentication {
        Authentication {
            authenticators: vec![Box::new(ClientCertificate)],
            anonymous,
        }
    }

    /// Authenticates the request, removing its credential header.
    pub fn authenticate(&self, headers: &mut HeaderMap, peer: &PeerIdentity) -> Result<UserInfo, Status> {
        self.authenticate_request(headers, peer).map(|(user, _)| user)
    }

    /// Authenticates the request, removing its credential header: the user, and the
    /// ServiceAccount token it authenticated with, if it did.
    pub fn authenticate_request(
        &self,
        headers: &mut HeaderMap,
        peer: &PeerIdentity,
    ) -> Result<(UserInfo, Option<Arc<TokenCredential>>), Status> {
        let mut refused = false;
        let mut user = None;
        for authenticator in &self.authenticators {
            match authenticator.authenticate(headers, peer) {
                Outcome::Authenticated(found, credential) => {
                    user = Some((found, credential));
                    break;
                }
                Outcome::Refused => refused = true,
                Outcome::NoCredential => {}
            }
        }
        headers.remove(header::AUTHORIZATION);
        match user {
            Some(found) => Ok(found),
            None if !refused && self.anonymous => Ok((UserInfo::anonymous(), None)),
            None => Err(Status::unauthorized()),
        }
    }
}
