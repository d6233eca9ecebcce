//! The token cache, as the kubelet's token manager keeps it
//! (pkg/kubelet/token/token_manager.go): a token per projected source, reused while it is
//! fresh and for the same ServiceAccount, else requested anew through TokenRequest and
//! given a refresh time (see [`crate::schedule`]).

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use badge_client::error_text;
use base64::Engine;
use serde_json::{Value, json};

use crate::agent::Ctx;
use crate::metrics::bump;
use crate::volumes::{service_account, text};
use crate::{clock, schedule, writer};

/// A token as the kubelet's token manager caches it. No `Debug`: it holds the token.
pub(crate) struct CachedToken {
    /// The ServiceAccount the token was issued for: a recreated account (same name, new
    /// uid) makes the cached token useless at once.
    pub(crate) service_account_uid: String,
    pub(crate) token: String,
    pub(crate) expires: SystemTime,
    pub(crate) refresh_at: SystemTime,
}

/// The `jti` of a token, for logs; the token itself is never logged.
pub fn jti_of(token: &str) -> String {
    token
        .split('.')
        .nth(1)
        .and_then(|p| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(p).ok())
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|c| c.get("jti").and_then(Value::as_str).map(String::from))
        .unwrap_or_else(|| "-".into())
}

impl Ctx {
    /// A cached token while it is fresh, else a new one from the TokenRequest API.
    pub(crate) async fn token(
        &self,
        pod: &Value,
        volume: &str,
        source: &Value,
        path: &str,
        tokens: &mut HashMap<String, CachedToken>,
    ) -> anyhow::Result<String> {
        let now = clock::now();
        let namespace = text(pod, "/metadata/namespace");
        let pod_name = text(pod, "/metadata/name");
        let sa = service_account(pod);
        let sa_uid = self.service_account_uid(namespace, sa).await?;
        if let Some(cached) = tokens.get(path)
            && cached.service_account_uid == sa_uid
            && now < cached.refresh_at
        {
            return Ok(cached.token.clone());
        }
        let expiration = source
            .get("expirationSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(3600);
        let mut spec = json!({
            "expirationSeconds": expiration,
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pod_name, "uid": text(pod, "/metadata/uid")},
        });
        // An empty audience means the API audiences: send none and let the server choose.
        if let Some(audience) = source
            .get("audience")
            .and_then(Value::as_str)
            .filter(|a| !a.is_empty())
        {
            spec["audiences"] = json!([audience]);
        }
        let request = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec});
        bump(&self.counters.tokens_requested);
        let response = self
            .client
            .request(
                "POST",
                &format!("/api/v1/namespaces/{namespace}/serviceaccounts/{sa}/token"),
                Some(request),
            )
            .await;
        let body = match response {
            Ok((201, body)) => body,
            Ok((status, body)) => {
                bump(&self.counters.token_request_errors);
                bail!(
                    "token request for {namespace}/{sa} ({status}): {}",
                    error_text(&body)
                );
            }
            Err(e) => {
                bump(&self.counters.token_request_errors);
                return Err(e.context(format!("token request for {namespace}/{sa}")));
            }
        };
        let token = text(&body, "/status/token");
        if token.is_empty() {
            bump(&self.counters.token_request_errors);
            bail!("the token response for {namespace}/{sa} has no token");
        }
        let expires = text(&body, "/status/expirationTimestamp")
            .parse::<jiff::Timestamp>()
            .map(SystemTime::from)
            .context("the token response's expirationTimestamp")?;
        // Upstream's iat: the reported expiry minus the granted lifetime.
        let granted = body
            .pointer("/spec/expirationSeconds")
            .and_then(Value::as_u64)
            .unwrap_or(expiration.max(0).unsigned_abs());
        let issued = expires
            .checked_sub(Duration::from_secs(granted))
            .unwrap_or(now)
            .min(now);
        let jitter = Duration::from_secs_f64(rand::random::<f64>() * schedule::MAX_JITTER.as_secs_f64());
        let refresh_at = schedule::refresh_at(
            issued,
            expires,
            now,
            self.options.refresh_fraction,
            self.options.max_refresh,
            jitter,
        );
        let jti = jti_of(token);
        let refresh_in = refresh_at.duration_since(now).unwrap_or_default();
        let previous = tokens.get(path).map(|t| jti_of(&t.token));
        tracing::info!(
            pod = %format!("{namespace}/{pod_name}"),
            volume,
            service_account = sa,
            jti = %jti,
            previous_jti = previous.as_deref().unwrap_or("-"),
            expires = %jiff::Timestamp::try_from(expires).map(|t| t.to_string()).unwrap_or_default(),
            refresh_in = ?Duration::from_secs(refresh_in.as_secs()),
            "token refreshed"
        );
        tokens.insert(
            path.to_string(),
            CachedToken {
                service_account_uid: sa_uid,
                token: token.to_string(),
                expires,
                refresh_at,
            },
        );
        Ok(token.to_string())
    }

    /// The uid of the ServiceAccount a token would be issued for now.
    async fn service_account_uid(&self, namespace: &str, name: &str) -> anyhow::Result<String> {
        writer::validate_name(name).context("the pod's ServiceAccount")?;
        let (status, body) = self
            .client
            .request(
                "GET",
                &format!("/api/v1/namespaces/{namespace}/serviceaccounts/{name}"),
                None,
            )
            .await?;
        if status != 200 {
            bail!(
                "getting serviceaccount {namespace}/{name} ({status}): {}",
                error_text(&body)
            );
        }
        let uid = text(&body, "/metadata/uid");
        if uid.is_empty() {
            bail!("serviceaccount {namespace}/{name} has no uid");
        }
        Ok(uid.to_string())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn jti_is_read_from_the_payload() {
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"jti":"abc-123"}"#);
        assert_eq!(jti_of(&format!("h.{payload}.sig")), "abc-123");
        assert_eq!(jti_of("not a jwt"), "-");
    }
}
