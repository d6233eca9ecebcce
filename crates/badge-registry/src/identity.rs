//! Writes to badge's `identity.badge.dev` records that several writers share: the servers
//! flushing usage and the controller removing expired tokens. Every write is a
//! compare-and-swap that merges into what is stored (latest time wins, counts recomputed),
//! so servers sharing one store never lose each other's updates.

use std::borrow::Cow;
use std::collections::BTreeMap;

use badge_api::identity::{API_VERSION, SERVICE_ACCOUNT_LABEL};
use badge_api::{Status, meta, resources};
use serde_json::{Value, json};

use crate::{Registry, WriteOptions};

/// What one writer learned about a ServiceAccount since its last write.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UsageUpdate {
    /// The latest authentication: its time and the `lastAuthenticated` object.
    pub last_authenticated: Option<(jiff::Timestamp, Value)>,
    /// The latest token issued for the ServiceAccount.
    pub last_token_issued: Option<jiff::Timestamp>,
}

impl UsageUpdate {
    /// Keeps the later of two updates' times.
    pub fn merge(&mut self, other: UsageUpdate) {
        if let Some((at, value)) = other.last_authenticated
            && self
                .last_authenticated
                .as_ref()
                .is_none_or(|(mine, _)| at > *mine)
        {
            self.last_authenticated = Some((at, value));
        }
        if let Some(at) = other.last_token_issued {
            self.last_token_issued = Some(self.last_token_issued.map_or(at, |mine| mine.max(at)));
        }
    }
}

/// How many IssuedTokens of a ServiceAccount are live (unexpired, or legacy) at `now`, as
/// the watch cache holds them. Every flush counts, over every record of the namespace, so
/// each record is read for its label and expiry only, never decoded whole.
pub async fn live_tokens(
    registry: &Registry,
    namespace: &str,
    service_account: &str,
    now: jiff::Timestamp,
) -> Result<i64, Status> {
    #[derive(serde::Deserialize)]
    struct Token<'a> {
        #[serde(borrow)]
        metadata: TokenMeta<'a>,
        #[serde(borrow, default)]
        spec: Option<TokenSpec<'a>>,
    }
    #[derive(serde::Deserialize)]
    struct TokenMeta<'a> {
        #[serde(borrow, default)]
        labels: Option<BTreeMap<Cow<'a, str>, Cow<'a, str>>>,
    }
    #[derive(serde::Deserialize)]
    struct TokenSpec<'a> {
        #[serde(borrow, default, rename = "expiresAt")]
        expires_at: Option<Cow<'a, str>>,
    }
    // The server writes expiries in this one form, which orders as text; another form is
    // parsed.
    let now_text = meta::format_time(now);
    let unexpired = |expires: &str| {
        if expires.len() == now_text.len() && expires.ends_with('Z') {
            expires > now_text.as_str()
        } else {
            meta::parse_time(expires).is_none_or(|at| at > now)
        }
    };
    let mut live = 0i64;
    let prefix = resources::ISSUEDTOKENS.namespace_prefix(namespace);
    registry.cache().for_each(&prefix, |_, cached| {
        let Some(token) = cached.read::<Token<'_>>() else {
            return;
        };
        let owned = token
            .metadata
            .labels
            .as_ref()
            .and_then(|labels| labels.get(SERVICE_ACCOUNT_LABEL))
            .is_some_and(|name| name == service_account);
        let expires = token.spec.as_ref().and_then(|spec| spec.expires_at.as_deref());
        if owned && expires.is_none_or(unexpired) {
            live += 1;
        }
    });
    Ok(live)
}

/// The status `current` becomes with `update` merged in and `live` tokens.
pub fn merged_usage_status(current: Option<&Value>, update: &UsageUpdate, live: i64) -> Value {
    let mut status = current
        .and_then(|c| c.get("status"))
        .filter(|s| s.is_object())
        .cloned()
        .unwrap_or_else(|| json!({}));
    let stored_time = |status: &Value, pointer: &str| {
        status
            .pointer(pointer)
            .and_then(Value::as_str)
            .and_then(meta::parse_time)
    };
    if let Some((at, value)) = &update.last_authenticated
        && stored_time(&status, "/lastAuthenticated/time").is_none_or(|stored| *at >= stored)
    {
        let mut value = value.clone();
        value["time"] = json!(meta::format_time(*at));
        status["lastAuthenticated"] = value;
    }
    if let Some(at) = update.last_token_issued
        && stored_time(&status, "/lastTokenIssued").is_none_or(|stored| at > stored)
    {
        status["lastTokenIssued"] = json!(meta::format_time(at));
    }
    status["liveTokens"] = json!(live);
    status
}

/// Merges `update` into the ServiceAccountUsage named after the ServiceAccount, creating it
/// when absent, and recounts its live tokens.
pub async fn record_service_account_usage(
    registry: &Registry,
    namespace: &str,
    service_account: &str,
    update: &UsageUpdate,
    now: jiff::Timestamp,
) -> Result<(), Status> {
    let usages = resources::SERVICEACCOUNTUSAGES;
    let live = live_tokens(registry, namespace, service_account, now).await?;
    for _ in 0..8 {
        let updated = registry
            .update(
                usages,
                namespace,
                service_account,
                "status",
                &WriteOptions::default(),
                |current| {
                    let mut object = current.clone();
                    object["status"] = merged_usage_status(Some(current), update, live);
                    Ok(object)
                },
            )
            .await;
        match updated {
            Ok(_) => return Ok(()),
            Err(s) if s.is_not_found() => {}
            Err(s) => return Err(s),
        }
        let object = json!({
            "apiVersion": API_VERSION,
            "kind": "ServiceAccountUsage",
            "metadata": {"name": service_account, "namespace": namespace},
            "status": merged_usage_status(None, update, live),
        });
        match registry
            .create(usages, namespace, object, &WriteOptions::default())
            .await
        {
            Ok(_) => return Ok(()),
            // Another writer created it first: merge into theirs.
            Err(s) if s.is_already_exists() => {}
            Err(s) => return Err(s),
        }
    }
    Err(Status::conflict(
        usages.group_resource(),
        service_account,
        "too many concurrent updates; please try again",
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn at(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn the_latest_use_and_issue_win_whichever_writer_comes_last() {
        let early = UsageUpdate {
            last_authenticated: Some((at("2026-01-01T00:00:00Z"), json!({"credentialID": "JTI=a"}))),
            last_token_issued: Some(at("2026-01-01T00:00:05Z")),
        };
        let late = UsageUpdate {
            last_authenticated: Some((at("2026-01-01T00:01:00Z"), json!({"credentialID": "JTI=b"}))),
            last_token_issued: None,
        };
        let stored = json!({"status": merged_usage_status(None, &late, 2)});
        let status = merged_usage_status(Some(&stored), &early, 3);
        assert_eq!(
            status["lastAuthenticated"]["credentialID"], "JTI=b",
            "an older use never wins"
        );
        assert_eq!(status["lastTokenIssued"], "2026-01-01T00:00:05Z");
        assert_eq!(status["liveTokens"], 3);

        let mut merged = early.clone();
        merged.merge(late.clone());
        assert_eq!(merged.last_authenticated, late.last_authenticated);
        assert_eq!(merged.last_token_issued, early.last_token_issued);
    }
}
