//! `tokencleaner` (`pkg/controller/bootstrap/tokencleaner.go`): bootstrap token Secrets in
//! kube-system are deleted once their `expiration` passes. A Secret not yet expired is
//! requeued for the instant it expires, so nothing polls.

use std::sync::Arc;
use std::time::Duration;

use badge_api::{Status, meta, resources};
use badge_registry::{DeleteOptions, Registry};
use badge_token::bootstrap::{SECRET_NAMESPACE, SECRET_TYPE};
use serde_json::Value;

use crate::runtime::{Action, Controller};
use crate::{leader, namespaced_key};

/// What to do with a bootstrap Secret whose `expiration` is `expiration` at `now`
/// (upstream's `GetExpiration`): absent never expires, unparseable counts as expired.
#[derive(Debug, PartialEq, Eq)]
pub enum Expiry {
    /// No `expiration`: the token never expires.
    Never,
    /// Past its `expiration`, or the time cannot be read.
    Expired,
    /// Expires after this long.
    In(Duration),
}

/// When the bootstrap token with `expiration` expires, seen at `now`.
pub fn expiry(expiration: Option<&str>, now: jiff::Timestamp) -> Expiry {
    let Some(text) = expiration.filter(|t| !t.is_empty()) else {
        return Expiry::Never;
    };
    let Ok(at) = text.parse::<jiff::Timestamp>() else {
        return Expiry::Expired;
    };
    if at <= now {
        return Expiry::Expired;
    }
    let nanos = at.as_nanosecond() - now.as_nanosecond();
    Expiry::In(Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX)))
}

/// The decoded `data.expiration` of a Secret.
fn expiration_of(secret: &Value) -> Option<String> {
    use base64::Engine;
    let encoded = secret.pointer("/data/expiration")?.as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).ok();
    // Undecodable counts as unparseable: expired, as upstream reads garbage.
    Some(
        bytes
            .and_then(|b| String::from_utf8(b).ok())
            .unwrap_or_else(|| "-".into()),
    )
}

/// Starts the controller; it reconciles while `leading` says this server leads (always when None).
pub fn spawn(registry: Arc<Registry>, leading: Option<leader::Leading>) {
    let cleaner = Controller::new("tokencleaner", registry.clone(), |event| {
        namespaced_key(&event.key, "/registry/secrets/")
            .filter(|(ns, _)| ns == SECRET_NAMESPACE)
            .map(|(_, name)| vec![name])
            .unwrap_or_default()
    });
    let cleaner = cleaner.with_leader_election(leading);
    cleaner.spawn(move |name| {
        let registry = registry.clone();
        async move { reconcile(&registry, &name).await }
    });
}

async fn reconcile(registry: &Registry, name: &str) -> Result<Action, Status> {
    let secrets = resources::SECRETS;
    let Some(secret) = registry.get_cached(secrets, SECRET_NAMESPACE, name) else {
        return Ok(Action::Done);
    };
    if secret.get("type").and_then(Value::as_str) != Some(SECRET_TYPE) {
        return Ok(Action::Done);
    }
    match expiry(expiration_of(&secret).as_deref(), badge_api::clock::now()) {
        Expiry::Never => Ok(Action::Done),
        // A little past the instant, so the next look sees it expired.
        Expiry::In(left) => Ok(Action::RequeueAfter(left + Duration::from_millis(10))),
        Expiry::Expired => {
            tracing::info!(secret = %format_args!("{SECRET_NAMESPACE}/{name}"), "deleting expired bootstrap token secret");
            let uid = meta::uid(&secret);
            let options = DeleteOptions {
                precondition_uid: (!uid.is_empty()).then(|| uid.to_string()),
                ..Default::default()
            };
            match registry.delete(secrets, SECRET_NAMESPACE, name, &options).await {
                // Gone already, or replaced by a Secret of another uid (seen on its own event).
                Err(s) if s.is_not_found() || s.is_conflict() => Ok(Action::Done),
                Err(s) => Err(s),
                Ok(_) => Ok(Action::Done),
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn expiry_as_upstream_reads_it() {
        let now: jiff::Timestamp = "2023-11-14T22:13:20Z".parse().unwrap();
        assert_eq!(expiry(None, now), Expiry::Never);
        assert_eq!(expiry(Some(""), now), Expiry::Never);
        assert_eq!(expiry(Some("2023-11-14T22:13:20Z"), now), Expiry::Expired);
        assert_eq!(expiry(Some("2023-11-14T22:00:00Z"), now), Expiry::Expired);
        assert_eq!(expiry(Some("garbage"), now), Expiry::Expired);
        assert_eq!(
            expiry(Some("2023-11-14T23:13:21+01:00"), now),
            Expiry::In(Duration::from_secs(1))
        );
        assert_eq!(
            expiry(Some("2023-11-14T22:23:20Z"), now),
            Expiry::In(Duration::from_secs(600))
        );
    }
}
