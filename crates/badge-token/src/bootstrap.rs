//! Bootstrap tokens, after k8s.io/cluster-bootstrap `token/api/types.go`, `token/util/helpers.go`
//! and `util/secrets/secrets.go`: the `<id>.<secret>` format, the Secret that stores one, and its
//! expiry and group rules. The authenticator that looks the Secret up lives in the server.

use std::fmt;

use aws_lc_rs::constant_time;

/// Namespace of bootstrap token Secrets.
pub const SECRET_NAMESPACE: &str = "kube-system";
/// Prefix of their names.
pub const SECRET_NAME_PREFIX: &str = "bootstrap-token-";
/// Their `type`.
pub const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
/// The group every bootstrap token is in.
pub const BOOTSTRAPPERS_GROUP: &str = "system:bootstrappers";
/// Username prefix: `system:bootstrap:<id>`.
pub const USERNAME_PREFIX: &str = "system:bootstrap:";

const ID_LEN: usize = 6;
const SECRET_LEN: usize = 16;
const ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// A parsed `[a-z0-9]{6}.[a-z0-9]{16}` token. `Debug` shows the id only.
#[derive(Clone)]
pub struct BootstrapToken {
    id: String,
    secret: BootstrapSecret,
}

/// The secret half of a bootstrap token: redacted `Debug`, no `Display`, constant-time compare.
#[derive(Clone)]
pub struct BootstrapSecret(String);

impl BootstrapToken {
    /// Parses `token`; anything else than the exact format is `None` ("not mine").
    pub fn parse(token: &str) -> Option<Self> {
        let (id, secret) = token.split_once('.')?;
        if !is_token_part(id, ID_LEN) || !is_token_part(secret, SECRET_LEN) {
            return None;
        }
        Some(Self {
            id: id.to_owned(),
            secret: BootstrapSecret(secret.to_owned()),
        })
    }

    /// A new random token, from the operating system's CSPRNG.
    pub fn generate() -> Result<Self, aws_lc_rs::error::Unspecified> {
        Ok(Self {
            id: random_part(ID_LEN)?,
            secret: BootstrapSecret(random_part(SECRET_LEN)?),
        })
    }

    /// The public token id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The secret half.
    pub fn secret(&self) -> &BootstrapSecret {
        &self.secret
    }

    /// `bootstrap-token-<id>`, in `kube-system`.
    pub fn secret_name(&self) -> String {
        secret_name(&self.id)
    }

    /// `system:bootstrap:<id>`.
    pub fn username(&self) -> String {
        format!("{USERNAME_PREFIX}{}", self.id)
    }

    /// The whole `<id>.<secret>` credential.
    pub fn expose(&self) -> String {
        format!("{}.{}", self.id, self.secret.0)
    }
}

impl fmt::Debug for BootstrapToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BootstrapToken")
            .field("id", &self.id)
            .field("secret", &self.secret)
            .finish()
    }
}

impl BootstrapSecret {
    /// The secret text, for the one place that must write it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `stored` (the Secret's `token-secret`) equals this secret, in constant time.
    pub fn matches(&self, stored: &[u8]) -> bool {
        constant_time::verify_slices_are_equal(self.0.as_bytes(), stored).is_ok()
    }
}

impl fmt::Debug for BootstrapSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BootstrapSecret(<redacted>)")
    }
}

/// `bootstrap-token-<id>`.
pub fn secret_name(id: &str) -> String {
    format!("{SECRET_NAME_PREFIX}{id}")
}

/// The token id in a Secret name of the form `bootstrap-token-<id>`.
pub fn id_from_secret_name(name: &str) -> Option<&str> {
    name.strip_prefix(SECRET_NAME_PREFIX)
        .filter(|id| is_token_part(id, ID_LEN))
}

/// Whether a Secret's `expiration` (RFC 3339) has passed at `now`: absent never expires, an
/// unparseable value counts as expired, and expiry is at the instant itself.
pub fn is_expired(expiration: Option<&str>, now: i64) -> bool {
    let Some(text) = expiration.filter(|t| !t.is_empty()) else {
        return false;
    };
    match (text.parse::<jiff::Timestamp>(), jiff::Timestamp::from_second(now)) {
        (Ok(exp), Ok(now)) => exp <= now,
        _ => true,
    }
}

/// Whether `group` may be listed in `auth-extra-groups`:
/// `\Asystem:bootstrappers:[a-z0-9:-]{0,255}[a-z0-9]\z`.
pub fn is_valid_extra_group(group: &str) -> bool {
    let Some(rest) = group.strip_prefix("system:bootstrappers:") else {
        return false;
    };
    let b = rest.as_bytes();
    let Some((&last, body)) = b.split_last() else {
        return false;
    };
    body.len() <= 255
        && (last.is_ascii_lowercase() || last.is_ascii_digit())
        && body
            .iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b':' || c == b'-')
}

/// Prefix of the `cluster-info` keys holding a token's signature of the kubeconfig.
pub const JWS_KEY_PREFIX: &str = "jws-kubeconfig-";

/// The detached JWS (RFC 7515 appendix F) of `content` for a token, as
/// k8s.io/cluster-bootstrap `token/jws` computes it: HS256 with the protected header
/// `{"alg":"HS256","kid":"<token-id>"}`, keyed with the token secret zero-padded to 32 bytes
/// (the minimum HS256 key go-jose accepts), serialized compact with the payload left empty.
/// A joining node recomputes it and compares strings, so every byte must match upstream's.
pub fn detached_signature(content: &str, token_id: &str, token_secret: &str) -> String {
    use base64::Engine;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    // Spelled out: the member order is part of the signed bytes.
    let header = format!(
        r#"{{"alg":"HS256","kid":{}}}"#,
        serde_json::Value::String(token_id.to_owned())
    );
    let signing_input = format!("{}.{}", b64(header.as_bytes()), b64(content.as_bytes()));
    let mut key = token_secret.as_bytes().to_vec();
    if key.len() < 32 {
        key.resize(32, 0);
    }
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &key);
    let tag = aws_lc_rs::hmac::sign(&key, signing_input.as_bytes());
    format!("{}..{}", b64(header.as_bytes()), b64(tag.as_ref()))
}

/// Whether `detached` is the detached JWS of `content` for this token (upstream's
/// `DetachedTokenIsValid`: the signature is recomputed and the strings compared, here in
/// constant time).
pub fn detached_signature_is_valid(
    detached: &str,
    content: &str,
    token_id: &str,
    token_secret: &str,
) -> bool {
    let expected = detached_signature(content, token_id, token_secret);
    constant_time::verify_slices_are_equal(expected.as_bytes(), detached.as_bytes()).is_ok()
}

fn is_token_part(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
}

fn random_part(len: usize) -> Result<String, aws_lc_rs::error::Unspecified> {
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 32];
    while out.len() < len {
        aws_lc_rs::rand::fill(&mut buf)?;
        // Rejection sampling keeps the 36 characters equally likely: 252 = 7 × 36.
        for &b in buf.iter().filter(|&&b| b < 252) {
            if out.len() == len {
                break;
            }
            out.push(char::from(ALPHABET[usize::from(b % 36)]));
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_exact_format() {
        let t = BootstrapToken::parse("abcdef.0123456789abcdef").unwrap();
        assert_eq!(t.id(), "abcdef");
        assert_eq!(t.secret().expose(), "0123456789abcdef");
        assert_eq!(t.secret_name(), "bootstrap-token-abcdef");
        assert_eq!(t.username(), "system:bootstrap:abcdef");
        assert_eq!(t.expose(), "abcdef.0123456789abcdef");
        for bad in [
            "",
            "abcdef",
            "abcdef.",
            "ABCDEF.0123456789abcdef",
            "abcdef.0123456789ABCDEF",
            "abcde.0123456789abcdef",
            "abcdefg.0123456789abcdef",
            "abcdef.0123456789abcde",
            "abcdef.0123456789abcdef0",
            "abcdef.0123456789abcdef.",
            "abcdef:0123456789abcdef",
            " abcdef.0123456789abcdef",
            "abcdef.0123456789abcdef\n",
            "abcdé.0123456789abcdef",
            "abcdef.0123456789abcde-",
        ] {
            assert!(BootstrapToken::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn debug_hides_the_secret() {
        let t = BootstrapToken::parse("abcdef.0123456789abcdef").unwrap();
        let shown = format!("{t:?}");
        assert!(shown.contains("abcdef"));
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
    }

    #[test]
    fn constant_time_match() {
        let t = BootstrapToken::parse("abcdef.0123456789abcdef").unwrap();
        assert!(t.secret().matches(b"0123456789abcdef"));
        assert!(!t.secret().matches(b"0123456789abcdeg"));
        assert!(!t.secret().matches(b"0123456789abcde"));
        assert!(!t.secret().matches(b""));
    }

    #[test]
    fn generated_tokens_parse() {
        let a = BootstrapToken::generate().unwrap();
        let b = BootstrapToken::generate().unwrap();
        assert!(BootstrapToken::parse(&a.expose()).is_some());
        assert_ne!(a.expose(), b.expose());
    }

    #[test]
    fn secret_names() {
        assert_eq!(secret_name("abcdef"), "bootstrap-token-abcdef");
        assert_eq!(id_from_secret_name("bootstrap-token-abcdef"), Some("abcdef"));
        assert_eq!(id_from_secret_name("bootstrap-token-abc"), None);
        assert_eq!(id_from_secret_name("other-abcdef"), None);
    }

    #[test]
    fn expiry() {
        let t = 1_700_000_000; // 2023-11-14T22:13:20Z
        assert!(!is_expired(None, t));
        assert!(!is_expired(Some(""), t));
        assert!(!is_expired(Some("2023-11-14T22:13:21Z"), t));
        assert!(is_expired(Some("2023-11-14T22:13:20Z"), t));
        assert!(is_expired(Some("2023-11-14T23:13:19+01:00"), t));
        assert!(!is_expired(Some("2023-11-14T23:13:21+01:00"), t));
        assert!(is_expired(Some("tomorrow"), t));
        assert!(is_expired(Some("2023-11-14"), t));
    }

    /// The vectors of upstream's `token/jws/jws_test.go`.
    #[test]
    fn detached_signatures_match_upstream() {
        let content = "Hello from the other side. I must have called a thousand times.";
        let (id, secret) = ("joshua", "my voice is my passcode");
        assert_eq!(
            detached_signature(content, id, secret),
            "eyJhbGciOiJIUzI1NiIsImtpZCI6Impvc2h1YSJ9..VShe2taLd-YTrmWuRkcL_8QTNDHYxQIEBsAYYiIj1_8"
        );
        assert_eq!(
            detached_signature("", id, secret),
            "eyJhbGciOiJIUzI1NiIsImtpZCI6Impvc2h1YSJ9..7Ui1ALizW4jXphVUB7xUqC9vLYLL9RZeOFfVLoB7Tgk"
        );
        assert_eq!(
            detached_signature(content, id, ""),
            "eyJhbGciOiJIUzI1NiIsImtpZCI6Impvc2h1YSJ9..UfkqvDGiIFxrMnFseDj9LYJOLNrvjW8aHhF71mvvAs8"
        );
    }

    #[test]
    fn detached_signatures_verify_only_for_their_content_and_token() {
        let content = "apiVersion: v1\nkind: Config\n";
        let signature = detached_signature(content, "abcdef", "0123456789abcdef");
        assert!(detached_signature_is_valid(
            &signature,
            content,
            "abcdef",
            "0123456789abcdef"
        ));
        // Another content, secret or id; a payload put back; a truncated signature.
        assert!(!detached_signature_is_valid(
            &signature,
            "apiVersion: v2\n",
            "abcdef",
            "0123456789abcdef"
        ));
        assert!(!detached_signature_is_valid(
            &signature,
            content,
            "abcdef",
            "0123456789abcdeg"
        ));
        assert!(!detached_signature_is_valid(
            &signature,
            content,
            "abcdeg",
            "0123456789abcdef"
        ));
        let (header, mac) = signature.split_once("..").unwrap();
        let attached = format!("{header}.YXBpVmVyc2lvbjogdjEKa2luZDogQ29uZmlnCg.{mac}");
        assert!(!detached_signature_is_valid(
            &attached,
            content,
            "abcdef",
            "0123456789abcdef"
        ));
        assert!(!detached_signature_is_valid(
            &signature[..signature.len() - 1],
            content,
            "abcdef",
            "0123456789abcdef"
        ));
        assert!(!detached_signature_is_valid(
            "",
            content,
            "abcdef",
            "0123456789abcdef"
        ));
    }

    #[test]
    fn extra_groups() {
        assert!(is_valid_extra_group(
            "system:bootstrappers:kubeadm:default-node-token"
        ));
        assert!(is_valid_extra_group("system:bootstrappers:a"));
        for bad in [
            "system:bootstrappers:",
            "system:bootstrappers:a-",
            "system:bootstrappers:A",
            "system:masters",
            "system:bootstrappers",
            &format!("system:bootstrappers:{}", "a".repeat(257)),
        ] {
            assert!(!is_valid_extra_group(bad), "{bad}");
        }
        assert!(is_valid_extra_group(&format!(
            "system:bootstrappers:{}",
            "a".repeat(256)
        )));
    }
}
