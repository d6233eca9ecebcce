//! Why a token was refused. Every variant is precise enough for a server log and none carries
//! the token or any attacker-chosen string; callers answer every one with a bare 401 (or
//! TokenReview `authenticated: false`), never with this detail.

/// A refused token, by the verification step that refused it (the crate docs list them).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    // --- step 1: size and shape
    /// Longer than [`crate::jwt::MAX_TOKEN_BYTES`].
    #[error("token larger than the size limit")]
    TooLarge,
    /// Not exactly three dot-separated segments (JWE, JSON serialisation, junk).
    #[error("token is not a compact JWS with exactly three segments")]
    SegmentCount,
    /// A segment is empty (unsigned `alg: none` tokens end with one).
    #[error("token has an empty {0} segment")]
    EmptySegment(&'static str),

    // --- step 2: strict base64url
    /// Not canonical unpadded base64url.
    #[error("token {0} segment is not canonical base64url")]
    Base64(&'static str),

    // --- step 3: header
    /// The header is not a JSON object, or nests too deep.
    #[error("token header is not a JSON object")]
    HeaderJson,
    /// A header parameter other than `alg`, `kid`, `typ` (the name if it is a known one).
    #[error("token header parameter {0:?} is not allowed")]
    ForbiddenHeader(&'static str),
    /// `alg`/`kid` not a string, or `typ` not `"JWT"`.
    #[error("token header parameter {0:?} has an invalid value")]
    InvalidHeader(&'static str),

    // --- step 4: algorithm
    /// `alg` absent or outside {RS256, ES256, ES384, ES512} (`none`, HS*, PS*, …).
    #[error("token algorithm is not accepted")]
    UnsupportedAlgorithm,

    // --- step 5: key selection
    /// The `kid` names no local key.
    #[error("invalid signature, no keys found")]
    UnknownKeyId,
    /// No kid, and no key pinned to the token's algorithm.
    #[error("invalid signature, no keys found for the token algorithm")]
    NoKeyForAlgorithm,
    /// The kid's key is pinned to another algorithm (RS↔ES substitution).
    #[error("token algorithm does not match the key's algorithm")]
    AlgorithmMismatch,

    // --- step 6: signature
    /// No candidate key verifies the signature.
    #[error("invalid signature")]
    InvalidSignature,

    // --- step 7: payload
    /// The payload is not a JSON object, or nests too deep.
    #[error("token payload is not a JSON object")]
    PayloadJson,
    /// A member name repeats in the header or the payload.
    #[error("token {0} has a duplicate member")]
    DuplicateMember(&'static str),
    /// A registered claim has the wrong JSON type or range (CVE-2026-25537 class).
    #[error("token claim {0:?} has the wrong type")]
    ClaimType(&'static str),

    // --- step 8: issuer
    /// `iss` is not an accepted issuer (or is the legacy issuer while legacy tokens are off).
    #[error("token issuer is invalid")]
    InvalidIssuer,

    // --- step 9: time, 60 s leeway
    /// `exp` more than the leeway in the past.
    #[error("service account token has expired")]
    Expired,
    /// `nbf` more than the leeway in the future.
    #[error("service account token is not valid yet")]
    NotYetValid,
    /// `iat` more than the leeway in the future.
    #[error("service account token is issued in the future")]
    IssuedInFuture,

    // --- step 10: audience
    /// No requested audience is among the token's (upstream's words, with Go's `%q` of
    /// each list).
    #[error("token audiences {} is invalid for the target audiences {}", go_quoted(.token), go_quoted(.target))]
    AudienceMismatch {
        /// The token's `aud` claim.
        token: Vec<String>,
        /// The audiences the caller accepts.
        target: Vec<String>,
    },

    // --- claim content (upstream validators)
    /// A claim the token kind requires is absent or empty (upstream: "`<name>` claim is missing").
    #[error("{0} claim is missing")]
    MissingClaim(&'static str),
    /// A claim is present but malformed or inconsistent (upstream: "sub claim is invalid").
    #[error("{0} claim is invalid")]
    InvalidClaim(&'static str),
}

impl TokenError {
    /// Whether the input is not a compact JWS at all (steps 1–2). Upstream's service-account
    /// authenticator answers "not mine" for these, letting other token authenticators try.
    pub fn is_not_a_jws(&self) -> bool {
        matches!(
            self,
            Self::TooLarge | Self::SegmentCount | Self::EmptySegment(_) | Self::Base64(_)
        )
    }
}

/// A string list as Go's `%q` prints a `[]string`: `["a" "b"]`.
fn go_quoted(items: &[String]) -> String {
    let quoted: Vec<String> = items
        .iter()
        .map(|item| serde_json::Value::String(item.clone()).to_string())
        .collect();
    format!("[{}]", quoted.join(" "))
}
