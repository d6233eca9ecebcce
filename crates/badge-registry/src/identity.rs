//! Writes to badge's `identity.badge.dev` records that several writers share: the servers
//! flushing usage and the controller removing expired tokens. Every write is a
//! compare-and-swap that merges into what is stored (latest time wins, counts recomputed),
//! so servers sharing one store never lose each other's updates.

use std::borrow::Cow;

use badge_api::identity::API_VERSION;
use badge_api::{Status, meta, resources};
use serde_json::{Value, json};

use crate::{CachedObject, Registry, WatchCache, WriteOptions};

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

/// What scans over many IssuedTokens read of each: its labels and expiry, borrowed from the
/// cached JSON, the rest of the record skipped.
pub struct TokenView<'a> {
    /// The `identity.badge.dev/service-account` label, or `spec.serviceAccountName` on a
    /// record without one.
    pub service_account: Option<Cow<'a, str>>,
    /// The `identity.badge.dev/token-kind` label.
    pub token_kind: Option<Cow<'a, str>>,
    /// `spec.expiresAt`.
    pub expires_at: Option<Cow<'a, str>>,
    /// Whether `spec.revoked` is `true`.
    pub revoked: bool,
}

impl TokenView<'_> {
    /// A legacy token's record, read from a Secret.
    pub fn legacy(&self) -> bool {
        self.token_kind.as_deref() == Some("legacy")
    }
}

/// The [`TokenView`] of an IssuedToken's JSON (None when it is not shaped as one).
pub fn token_view(json: &[u8]) -> Option<TokenView<'_>> {
    #[derive(serde::Deserialize)]
    struct Record<'a> {
        #[serde(borrow, default)]
        metadata: Option<Metadata<'a>>,
        #[serde(borrow, default)]
        spec: Option<Spec<'a>>,
    }
    #[derive(serde::Deserialize)]
    struct Metadata<'a> {
        #[serde(borrow, default)]
        labels: Option<Labels<'a>>,
    }
    #[derive(serde::Deserialize)]
    struct Labels<'a> {
        #[serde(rename = "identity.badge.dev/service-account", borrow, default)]
        service_account: Option<Cow<'a, str>>,
        #[serde(rename = "identity.badge.dev/token-kind", borrow, default)]
        token_kind: Option<Cow<'a, str>>,
    }
    #[derive(serde::Deserialize)]
    struct Spec<'a> {
        #[serde(rename = "serviceAccountName", borrow, default)]
        service_account_name: Option<Cow<'a, str>>,
        #[serde(rename = "expiresAt", borrow, default)]
        expires_at: Option<Cow<'a, str>>,
        #[serde(default)]
        revoked: Option<Value>,
    }
    let record = serde_json::from_slice::<Record<'_>>(json).ok()?;
    let labels = record.metadata.and_then(|m| m.labels);
    let (service_account, token_kind) = labels.map_or((None, None), |l| (l.service_account, l.token_kind));
    let (named, expires_at, revoked) = record.spec.map_or((None, None, None), |s| {
        (s.service_account_name, s.expires_at, s.revoked)
    });
    Some(TokenView::of_fields(
        service_account,
        token_kind,
        named,
        expires_at,
        revoked.as_ref(),
    ))
}

impl<'a> TokenView<'a> {
    /// The view of a record with these labels (`identity.badge.dev/service-account`,
    /// `identity.badge.dev/token-kind`) and `spec` fields (`serviceAccountName`,
    /// `expiresAt`, `revoked`).
    pub(crate) fn of_fields(
        service_account_label: Option<Cow<'a, str>>,
        token_kind: Option<Cow<'a, str>>,
        service_account_name: Option<Cow<'a, str>>,
        expires_at: Option<Cow<'a, str>>,
        revoked: Option<&Value>,
    ) -> TokenView<'a> {
        TokenView {
            // The label, or the spec's name for an account whose name is too long for one
            // (`service_account_label`).
            service_account: service_account_label.or(service_account_name),
            token_kind,
            expires_at,
            revoked: revoked == Some(&Value::Bool(true)),
        }
    }
}

/// Calls `f` with the [`TokenView`] of a cached IssuedToken (None when it is not shaped as
/// one).
pub fn with_token_view<R>(cached: &CachedObject, f: impl FnOnce(Option<TokenView<'_>>) -> R) -> R {
    cached.with_json(|json| f(token_view(json)))
}

/// What makes an IssuedToken's JSON count towards a ServiceAccount's live tokens: the
/// ServiceAccount it is for ([`TokenView::service_account`]), and its expiry (None when it has none, or none that
/// reads as a time: such a record is live until removed). None when it counts for no one.
pub fn live_token_fields(json: &[u8]) -> Option<(Cow<'_, str>, Option<jiff::Timestamp>)> {
    let view = token_view(json)?;
    let account = view.service_account?;
    Some((account, view.expires_at.as_deref().and_then(meta::parse_time)))
}

/// How many IssuedTokens of a ServiceAccount are live (unexpired, or legacy) at `now`, as
/// the watch cache holds them, from the count it keeps: nothing is scanned.
pub async fn live_tokens(
    registry: &Registry,
    namespace: &str,
    service_account: &str,
    now: jiff::Timestamp,
) -> Result<i64, Status> {
    Ok(registry.cache().live_tokens(namespace, service_account, now))
}

/// How many IssuedTokens each ServiceAccount of `namespace` has live at `now`, from the
/// counts the watch cache keeps (the accounts with none left out).
pub fn live_tokens_by_service_account(
    registry: &Registry,
    namespace: &str,
    now: jiff::Timestamp,
) -> std::collections::HashMap<String, i64> {
    registry.cache().live_tokens_by_service_account(namespace, now)
}

/// The counts of [`live_tokens_by_service_account`] found the long way, by reading every
/// record of the namespace: what the kept counts must always agree with.
pub fn scan_live_tokens(
    cache: &WatchCache,
    namespace: &str,
    now: jiff::Timestamp,
) -> std::collections::HashMap<String, i64> {
    let mut counts = std::collections::HashMap::new();
    let prefix = resources::ISSUEDTOKENS.namespace_prefix(namespace);
    cache.for_each(&prefix, |_, cached| {
        with_token_view(cached, |view| {
            let Some(view) = view else {
                return;
            };
            let Some(account) = view.service_account else {
                return;
            };
            let expires = view.expires_at;
            if expires
                .as_deref()
                .and_then(meta::parse_time)
                .is_none_or(|at| at > now)
            {
                *counts.entry(account.into_owned()).or_insert(0) += 1;
            }
        });
    });
    counts
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
    let live = live_tokens(registry, namespace, service_account, now).await?;
    write_service_account_usage(registry, namespace, service_account, update, live).await
}

/// Merges `update` into the ServiceAccountUsage named after the ServiceAccount, creating it
/// when absent, with `live` tokens counted by the caller.
pub async fn write_service_account_usage(
    registry: &Registry,
    namespace: &str,
    service_account: &str,
    update: &UsageUpdate,
    live: i64,
) -> Result<(), Status> {
    let usages = resources::SERVICEACCOUNTUSAGES;
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

    #[tokio::test]
    async fn kept_counts_are_each_service_accounts_live_tokens_as_a_scan_finds_them() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            std::sync::Arc::new(badge_store::sqlite::SqliteStore::open(&dir.path().join("s.db")).unwrap());
        let registry = Registry::start(store, 100).await;
        let namespaces = resources::lookup("", "v1", "namespaces").unwrap();
        let options = WriteOptions::default();
        registry
            .create(namespaces, "", json!({"metadata": {"name": "demo"}}), &options)
            .await
            .unwrap();
        let now = at("2026-12-05T07:30:00Z");
        let records = [
            ("a", Some("2026-12-05T08:00:00Z")),
            ("a", Some("2026-12-05T08:00:00Z")),
            ("a", Some("2026-12-05T07:00:00Z")),
            ("b", None),
            ("c", Some("2026-12-05T07:00:00Z")),
        ];
        for (i, (account, expires)) in records.iter().enumerate() {
            let mut spec = json!({"serviceAccountName": account, "serviceAccountUID": "u",
                "audiences": ["x"], "keyID": "k", "requester": {"username": "admin"},
                "issuedAt": "2026-12-05T06:00:00Z"});
            if let Some(expires) = expires {
                spec["expiresAt"] = json!(expires);
            }
            let record = json!({"apiVersion": API_VERSION, "kind": "IssuedToken",
                "metadata": {"name": format!("t{i}"), "labels": {badge_api::identity::SERVICE_ACCOUNT_LABEL: account}},
                "spec": spec});
            registry
                .create(resources::ISSUEDTOKENS, "demo", record, &options)
                .await
                .unwrap();
        }
        // An account whose name is too long for a label value: counted by its spec's name.
        let long = "l".repeat(100);
        let record = json!({"apiVersion": API_VERSION, "kind": "IssuedToken",
            "metadata": {"name": "unlabelled", "labels": {badge_api::identity::TOKEN_KIND_LABEL: "bound"}},
            "spec": {"serviceAccountName": long, "serviceAccountUID": "u", "audiences": ["x"],
                "keyID": "k", "requester": {"username": "admin"},
                "issuedAt": "2026-12-05T06:00:00Z", "expiresAt": "2026-12-05T08:00:00Z"}});
        let created = registry
            .create(resources::ISSUEDTOKENS, "demo", record, &options)
            .await
            .unwrap();
        let revision = created["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            registry
                .cache()
                .wait_for(revision, std::time::Duration::from_secs(5))
                .await
        );
        assert_eq!(live_tokens(&registry, "demo", &long, now).await.unwrap(), 1);
        let counts = live_tokens_by_service_account(&registry, "demo", now);
        assert_eq!(counts, scan_live_tokens(registry.cache(), "demo", now));
        assert_eq!(counts.len(), 3, "{counts:?}");
        assert_eq!(counts[long.as_str()], 1);
        for account in ["a", "b", "c"] {
            let listed = live_tokens(&registry, "demo", account, now).await.unwrap();
            assert_eq!(counts.get(account).copied().unwrap_or(0), listed, "{account}");
        }
        assert_eq!(counts["a"], 2);
        assert!(live_tokens_by_service_account(&registry, "other", now).is_empty());
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
