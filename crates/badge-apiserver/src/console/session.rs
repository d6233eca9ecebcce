//! The console's server-side sessions: the credential a user logged in with stays here,
//! and the browser holds only a random session id in an HttpOnly cookie.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine;
use parking_lot::Mutex;
use rand::RngCore;

/// The session cookie. `__Host-` makes browsers insist on Secure, Path=/ and no Domain.
pub const COOKIE_NAME: &str = "__Host-badge-console";
/// A session unused this long is forgotten.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// No session outlives this, however busy.
pub const ABSOLUTE_TIMEOUT: Duration = Duration::from_secs(12 * 3600);
/// More live sessions than this and the oldest is forgotten, bounding memory.
const MAX_SESSIONS: usize = 10_000;

/// What a session acts with.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// A bearer token, sent on every API request made for the session.
    Token(String),
    /// The client certificate of this user name; each request must present it again.
    Certificate(String),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Token(_) => f.write_str("Token(<redacted>)"),
            Credential::Certificate(user) => write!(f, "Certificate({user})"),
        }
    }
}

/// One logged-in user.
#[derive(Clone, Debug)]
pub struct Session {
    /// What the session's requests authenticate with.
    pub credential: Credential,
    /// Every write must carry this in `X-CSRF-Token`.
    pub csrf: String,
    /// The user name the session authenticated as.
    pub user: String,
    /// That user's groups.
    pub groups: Vec<String>,
    created: Instant,
    last_seen: Instant,
}

/// The live sessions by id.
#[derive(Debug)]
pub struct Sessions {
    live: Mutex<HashMap<String, Session>>,
    idle: Duration,
    absolute: Duration,
}

impl Default for Sessions {
    fn default() -> Sessions {
        Sessions::new(IDLE_TIMEOUT, ABSOLUTE_TIMEOUT)
    }
}

/// 256 random bits, URL-safe.
pub fn random_id() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Compares secrets in time that does not depend on where they differ.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Sessions {
    /// Sessions that end after `idle` unused or `absolute` in all.
    pub fn new(idle: Duration, absolute: Duration) -> Sessions {
        Sessions {
            live: Mutex::new(HashMap::new()),
            idle,
            absolute,
        }
    }

    /// Starts a session; returns its id, the cookie's value.
    pub fn create(&self, credential: Credential, user: String, groups: Vec<String>) -> (String, Session) {
        let now = Instant::now();
        let session = Session {
            credential,
            csrf: random_id(),
            user,
            groups,
            created: now,
            last_seen: now,
        };
        let id = random_id();
        let mut live = self.live.lock();
        live.retain(|_, s| !self.expired(s, now));
        if live.len() >= MAX_SESSIONS
            && let Some(oldest) = live
                .iter()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(id, _)| id.clone())
        {
            live.remove(&oldest);
        }
        live.insert(id.clone(), session.clone());
        (id, session)
    }

    /// The live session of `id`, marking it used.
    pub fn get(&self, id: &str) -> Option<Session> {
        let now = Instant::now();
        let mut live = self.live.lock();
        let expired = self.expired(live.get(id)?, now);
        if expired {
            live.remove(id);
            return None;
        }
        let session = live.get_mut(id)?;
        session.last_seen = now;
        Some(session.clone())
    }

    /// Forgets a session and its credential; whether it was live.
    pub fn remove(&self, id: &str) -> bool {
        self.live.lock().remove(id).is_some()
    }

    /// How many sessions are live.
    pub fn len(&self) -> usize {
        self.live.lock().len()
    }

    /// Whether no session is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn expired(&self, session: &Session, now: Instant) -> bool {
        now.duration_since(session.last_seen) >= self.idle
            || now.duration_since(session.created) >= self.absolute
    }
}

/// The session id from a request's `Cookie` headers.
pub fn cookie_session_id(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value.to_string())
        .filter(|value| !value.is_empty())
}

/// The `Set-Cookie` value that hands the browser a session id.
pub fn set_cookie(id: &str) -> String {
    format!("{COOKIE_NAME}={id}; Path=/; Secure; HttpOnly; SameSite=Strict")
}

/// The `Set-Cookie` value that makes the browser drop its session id.
pub fn clear_cookie() -> String {
    format!("{COOKIE_NAME}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_found_by_its_id_and_forgotten_on_removal() {
        let sessions = Sessions::default();
        let (id, session) = sessions.create(Credential::Token("secret".into()), "alice".into(), vec![]);
        assert_eq!(sessions.get(&id).unwrap().user, "alice");
        assert_eq!(sessions.get(&id).unwrap().csrf, session.csrf);
        assert!(sessions.get("another").is_none());
        assert!(sessions.remove(&id));
        assert!(sessions.get(&id).is_none());
        assert!(!sessions.remove(&id));
    }

    #[test]
    fn ids_and_csrf_tokens_are_random_and_distinct() {
        let sessions = Sessions::default();
        let (a, sa) = sessions.create(Credential::Token("t".into()), "a".into(), vec![]);
        let (b, sb) = sessions.create(Credential::Token("t".into()), "b".into(), vec![]);
        assert_ne!(a, b);
        assert_ne!(sa.csrf, sb.csrf);
        assert_ne!(a, sa.csrf);
        assert_eq!(a.len(), 43);
    }

    #[test]
    fn an_idle_session_expires() {
        let sessions = Sessions::new(Duration::ZERO, ABSOLUTE_TIMEOUT);
        let (id, _) = sessions.create(Credential::Token("t".into()), "a".into(), vec![]);
        assert!(sessions.get(&id).is_none());
        assert!(sessions.is_empty());
    }

    #[test]
    fn a_session_expires_at_its_absolute_limit_however_busy() {
        let sessions = Sessions::new(IDLE_TIMEOUT, Duration::ZERO);
        let (id, _) = sessions.create(Credential::Token("t".into()), "a".into(), vec![]);
        assert!(sessions.get(&id).is_none());
    }

    #[test]
    fn the_debug_form_hides_the_token() {
        let shown = format!("{:?}", Credential::Token("very-secret".into()));
        assert!(!shown.contains("very-secret"), "{shown}");
    }

    #[test]
    fn the_cookie_is_http_only_secure_and_same_site_strict() {
        let cookie = set_cookie("abc");
        for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
            assert!(cookie.contains(attribute), "{cookie}");
        }
        assert!(cookie.starts_with("__Host-badge-console=abc;"));
        assert!(clear_cookie().contains("Max-Age=0"));
    }

    #[test]
    fn the_session_id_is_read_among_other_cookies() {
        let mut headers = http::HeaderMap::new();
        headers.append(
            http::header::COOKIE,
            "a=1; __Host-badge-console=xyz; b=2".parse().unwrap(),
        );
        assert_eq!(cookie_session_id(&headers).as_deref(), Some("xyz"));
        let mut headers = http::HeaderMap::new();
        headers.append(http::header::COOKIE, "badge-console=xyz".parse().unwrap());
        assert_eq!(cookie_session_id(&headers), None);
    }

    #[test]
    fn secrets_compare_equal_only_when_equal() {
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "ab"));
    }
}
