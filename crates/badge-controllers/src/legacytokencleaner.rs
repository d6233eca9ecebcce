//! Upstream's LegacyServiceAccountTokenCleanUp
//! (`pkg/controller/serviceaccount/legacy_serviceaccount_token_cleaner.go`), on by default
//! with `--legacy-service-account-token-clean-up-period` (365 days): an auto-generated legacy
//! token Secret nobody used for one period and no pod references is labelled
//! `kubernetes.io/legacy-token-invalid-since=<day>` (its token then fails authentication),
//! and deleted once that day is more than a period ago. Removing the label enables the token
//! again. Days are UTC dates compared as strings, as upstream compares them, so with a period
//! under a day the deletion still waits for the date to change.
//!
//! Use is known only since the server began recording it: the tracking ConfigMap
//! `kube-system/kube-apiserver-legacy-service-account-token-tracking` (kept by
//! [`spawn_tracking`]) says since when, and nothing is cleaned before a whole period after
//! the day following that date.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use badge_api::{Status, meta, resources};
use badge_registry::{DeleteOptions, Filter, ReadFrom, Registry, WriteOptions};
use serde_json::{Value, json};

use crate::audit::{self, Audit, Write};
use crate::leader;
use crate::runtime::{Action, Controller};
use crate::tokens::{SA_NAME_ANNOTATION, SA_UID_ANNOTATION, SERVICE_ACCOUNT_TOKEN_TYPE};

/// Label set on a token Secret found unused: the UTC day it became invalid.
pub const INVALID_SINCE_LABEL: &str = "kubernetes.io/legacy-token-invalid-since";
pub use badge_api::identity::LEGACY_TOKEN_LAST_USED_LABEL as LAST_USED_LABEL;
/// The ConfigMap in kube-system that says since when use is tracked.
pub const TRACKING_CONFIGMAP: &str = "kube-apiserver-legacy-service-account-token-tracking";
/// That ConfigMap's key holding the UTC day tracking began.
pub const TRACKING_SINCE_KEY: &str = "since";
/// Upstream's controller name, which names its ServiceAccount too.
pub const CONTROLLER_NAME: &str = "legacy-service-account-token-cleaner";
/// `--legacy-service-account-token-clean-up-period`'s default: 365 days.
pub const DEFAULT_PERIOD: Duration = Duration::from_secs(365 * 24 * 3600);
/// Upstream's sync interval.
const MAX_SYNC_INTERVAL: Duration = Duration::from_secs(24 * 3600);

/// A UTC day as the labels hold it (`2006-01-02`).
pub fn day(at: jiff::Timestamp) -> String {
    at.strftime("%Y-%m-%d").to_string()
}

fn parse_day(text: &str) -> Option<jiff::civil::Date> {
    jiff::civil::Date::strptime("%Y-%m-%d", text).ok()
}

fn minus(now: jiff::Timestamp, period: Duration) -> jiff::Timestamp {
    jiff::SignedDuration::try_from(period)
        .ok()
        .and_then(|p| now.checked_sub(p).ok())
        .unwrap_or(jiff::Timestamp::MIN)
}

/// How often the Secrets are looked at: upstream's day, or a tenth of a shorter period so
/// that a compressed period still acts within it.
pub fn sync_interval(period: Duration) -> Duration {
    (period / 10).clamp(Duration::from_millis(200), MAX_SYNC_INTERVAL)
}

/// Whether use has been tracked long enough: from midnight after the tracking `since` day,
/// one whole period. An absent or unparseable day answers no.
pub fn tracked_long_enough(since: Option<&str>, now: jiff::Timestamp, period: Duration) -> bool {
    let Some(date) = since.and_then(parse_day) else {
        return false;
    };
    let Ok(next_midnight) = date
        .tomorrow()
        .and_then(|d| d.to_zoned(jiff::tz::TimeZone::UTC))
        .map(|z| z.timestamp())
    else {
        return false;
    };
    minus(now, period) >= next_midnight
}

/// The names of the Secrets a pod refers to, as upstream's `VisitPodSecretNames` walks them:
/// image pull secrets, each container's env and envFrom, and volumes.
pub fn secrets_referenced_by(pod: &Value) -> HashSet<String> {
    let mut names = HashSet::new();
    let mut add = |name: Option<&Value>| {
        if let Some(name) = name.and_then(Value::as_str).filter(|n| !n.is_empty()) {
            names.insert(name.to_string());
        }
    };
    let spec = &pod["spec"];
    let list = |value: &Value| value.as_array().cloned().unwrap_or_default();
    for secret in list(&spec["imagePullSecrets"]) {
        add(secret.get("name"));
    }
    for kind in ["initContainers", "containers", "ephemeralContainers"] {
        for container in list(&spec[kind]) {
            for from in list(&container["envFrom"]) {
                add(from.pointer("/secretRef/name"));
            }
            for env in list(&container["env"]) {
                add(env.pointer("/valueFrom/secretKeyRef/name"));
            }
        }
    }
    for volume in list(&spec["volumes"]) {
        add(volume.pointer("/secret/secretName"));
        add(volume.pointer("/azureFile/secretName"));
        for source in list(&volume["projected"]["sources"]) {
            add(source.pointer("/secret/name"));
        }
        for (kind, field) in [
            ("cephfs", "secretRef"),
            ("cinder", "secretRef"),
            ("flexVolume", "secretRef"),
            ("rbd", "secretRef"),
            ("scaleIO", "secretRef"),
            ("iscsi", "secretRef"),
            ("storageos", "secretRef"),
            ("csi", "nodePublishSecretRef"),
        ] {
            add(volume
                .get(kind)
                .and_then(|v| v.get(field))
                .and_then(|r| r.get("name")));
        }
    }
    names
}

/// What to do with one Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Leave it as it is.
    Keep,
    /// Label it invalid since this day.
    MarkInvalid(String),
    /// Invalid for more than a period: delete it.
    Delete,
}

/// Upstream's conditions: a ServiceAccount token Secret created and last used (or never
/// used) more than a period ago, not being deleted, listed in the `secrets` of the
/// ServiceAccount it names (so auto-generated, not made by hand), and referenced by no pod
/// of its namespace. Unmarked, it is marked; marked more than a period ago, deleted.
pub fn verdict(
    secret: &Value,
    service_account: Option<&Value>,
    referenced: &HashSet<String>,
    now: jiff::Timestamp,
    period: Duration,
) -> Verdict {
    if secret.get("type").and_then(Value::as_str) != Some(SERVICE_ACCOUNT_TOKEN_TYPE)
        || meta::deletion_timestamp(secret).is_some()
    {
        return Verdict::Keep;
    }
    let preserve_from = minus(now, period);
    let created = meta::parse_time(meta::creation_timestamp(secret));
    if created.is_none_or(|created| created >= preserve_from) {
        return Verdict::Keep;
    }
    let preserve_used_from = day(preserve_from);
    let labels = meta::labels(secret);
    if let Some(last_used) = labels.get(LAST_USED_LABEL) {
        // An unreadable day says nothing about the last use: keep the Secret.
        if parse_day(last_used).is_none() || *last_used >= preserve_used_from {
            return Verdict::Keep;
        }
    }
    let name = meta::name(secret);
    let Some(account) = service_account else {
        return Verdict::Keep;
    };
    let expected_uid = meta::annotation(secret, SA_UID_ANNOTATION).unwrap_or("");
    let lists_it = account["secrets"]
        .as_array()
        .is_some_and(|s| s.iter().any(|r| r["name"].as_str() == Some(name)));
    if meta::annotation(secret, SA_NAME_ANNOTATION) != Some(meta::name(account))
        || (!expected_uid.is_empty() && expected_uid != meta::uid(account))
        || !lists_it
        || referenced.contains(name)
    {
        return Verdict::Keep;
    }
    match labels.get(INVALID_SINCE_LABEL).filter(|d| parse_day(d).is_some()) {
        None => Verdict::MarkInvalid(day(now)),
        Some(since) if *since >= preserve_used_from => Verdict::Keep,
        Some(_) => Verdict::Delete,
    }
}

/// What one sweep did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Swept {
    /// Names of the Secrets labelled invalid.
    pub marked: Vec<String>,
    /// Names of the Secrets deleted.
    pub deleted: Vec<String>,
}

/// Looks at every token Secret once, at `now`.
pub async fn sweep(
    registry: &Registry,
    period: Duration,
    now: jiff::Timestamp,
    audit: &Audit,
) -> Result<Swept, Status> {
    let mut swept = Swept::default();
    let tracking = registry.get_cached(resources::CONFIGMAPS, "kube-system", TRACKING_CONFIGMAP);
    let since = tracking
        .as_deref()
        .and_then(|c| c.pointer("/data/since"))
        .and_then(Value::as_str);
    if !tracked_long_enough(since, now, period) {
        return Ok(swept);
    }
    let (secrets, pods, accounts) = (resources::SECRETS, resources::PODS, resources::SERVICEACCOUNTS);
    let listed = registry
        .list(secrets, "", &Filter::default(), ReadFrom::Any, 0, None)
        .await?;
    let mut referenced_in: HashMap<String, HashSet<String>> = HashMap::new();
    for secret in &listed.items {
        if secret.get("type").and_then(Value::as_str) != Some(SERVICE_ACCOUNT_TOKEN_TYPE) {
            continue;
        }
        let (namespace, name) = (meta::namespace(secret), meta::name(secret));
        let account = meta::annotation(secret, SA_NAME_ANNOTATION)
            .filter(|n| !n.is_empty())
            .and_then(|n| registry.get_cached(accounts, namespace, n));
        if !referenced_in.contains_key(namespace) {
            let in_namespace = registry
                .list(pods, namespace, &Filter::default(), ReadFrom::Any, 0, None)
                .await?;
            let names = in_namespace
                .items
                .iter()
                .flat_map(|pod| secrets_referenced_by(pod))
                .collect();
            referenced_in.insert(namespace.to_string(), names);
        }
        let referenced = referenced_in.get(namespace).cloned().unwrap_or_default();
        let key = format!("{namespace}/{name}");
        let uid = meta::uid(secret).to_string();
        match verdict(secret, account.as_deref(), &referenced, now, period) {
            Verdict::Keep => {}
            Verdict::MarkInvalid(since) => {
                tracing::info!(secret = %key, invalid_since = %since, "marking the auto-generated service account token as invalid");
                // A merge patch carrying the uid upstream sends, so a replaced Secret is left.
                let written = registry
                    .update(
                        secrets,
                        namespace,
                        name,
                        "",
                        &WriteOptions::default(),
                        |current| {
                            if meta::uid(current) != uid {
                                return Err(Status::conflict(
                                    secrets.group_resource(),
                                    name,
                                    "the Secret was replaced",
                                ));
                            }
                            let mut updated = current.clone();
                            let metadata = meta::meta_mut(&mut updated);
                            let labels = metadata.entry("labels").or_insert_with(|| json!({}));
                            if !labels.is_object() {
                                *labels = json!({});
                            }
                            labels[INVALID_SINCE_LABEL] = json!(since);
                            Ok(updated)
                        },
                    )
                    .await;
                audit_write(audit, "patch", namespace, name, &uid, written.as_ref().err());
                match written {
                    Ok(_) => swept.marked.push(key),
                    Err(e) => {
                        tracing::warn!(secret = %key, error = %e.message, "labelling a legacy token secret invalid failed")
                    }
                }
            }
            Verdict::Delete => {
                tracing::info!(secret = %key, "deleting the unused auto-generated service account token");
                let options = DeleteOptions {
                    precondition_resource_version: Some(meta::resource_version(secret).to_string()),
                    ..Default::default()
                };
                let deleted = registry.delete(secrets, namespace, name, &options).await;
                audit_write(audit, "delete", namespace, name, &uid, deleted.as_ref().err());
                match deleted {
                    Ok(_) => swept.deleted.push(key),
                    // Changed or gone meanwhile: the next sweep looks again.
                    Err(e) if e.is_conflict() || e.is_not_found() => {}
                    Err(e) => {
                        tracing::warn!(secret = %key, error = %e.message, "deleting a legacy token secret failed")
                    }
                }
            }
        }
    }
    Ok(swept)
}

fn audit_write(audit: &Audit, verb: &str, namespace: &str, name: &str, uid: &str, failure: Option<&Status>) {
    audit::record(
        audit,
        Write {
            controller: CONTROLLER_NAME,
            verb,
            resource: resources::SECRETS,
            subresource: "",
            namespace,
            name,
            uid,
            failure,
        },
    );
}

/// Runs the cleaner while this server leads.
pub fn spawn(
    registry: Arc<Registry>,
    leading: Option<leader::Leading>,
    period: Duration,
    clock: fn() -> jiff::Timestamp,
    audit: Audit,
) {
    let interval = sync_interval(period);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(interval).await;
            if leading.as_ref().is_some_and(|l| !*l.borrow()) {
                continue;
            }
            if let Err(e) = sweep(&registry, period, clock(), &audit).await {
                tracing::warn!(error = %e.message, "legacy service account token clean-up failed; retrying");
            }
        }
    });
}

/// Keeps the tracking ConfigMap, as every kube-apiserver does: created with today's date
/// when missing, rewritten when its date is unreadable. Run it only where legacy token use
/// is recorded, or the cleaner would take unrecorded use for none.
pub fn spawn_tracking(registry: Arc<Registry>, clock: fn() -> jiff::Timestamp) {
    let key = resources::CONFIGMAPS.key("kube-system", TRACKING_CONFIGMAP);
    let tracker = Controller::new("legacy-token-tracking", registry.clone(), move |event| {
        if event.key == key {
            vec![String::new()]
        } else {
            Vec::new()
        }
    });
    tracker.enqueue(String::new());
    tracker.spawn(move |_| {
        let registry = registry.clone();
        async move { ensure_tracking(&registry, clock()).await }
    });
}

async fn ensure_tracking(registry: &Registry, now: jiff::Timestamp) -> Result<Action, Status> {
    let configmaps = resources::CONFIGMAPS;
    match registry.get_cached(configmaps, "kube-system", TRACKING_CONFIGMAP) {
        Some(current)
            if current
                .pointer("/data/since")
                .and_then(Value::as_str)
                .and_then(parse_day)
                .is_some() =>
        {
            Ok(Action::Done)
        }
        Some(_) => {
            registry
                .update(
                    configmaps,
                    "kube-system",
                    TRACKING_CONFIGMAP,
                    "",
                    &WriteOptions::default(),
                    |current| {
                        let mut updated = current.clone();
                        updated["data"] = json!({TRACKING_SINCE_KEY: day(now)});
                        Ok(updated)
                    },
                )
                .await?;
            Ok(Action::Done)
        }
        None => {
            let object = json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": TRACKING_CONFIGMAP, "namespace": "kube-system"},
                "data": {TRACKING_SINCE_KEY: day(now)},
            });
            match registry
                .create(configmaps, "kube-system", object, &WriteOptions::default())
                .await
            {
                Ok(_) => Ok(Action::Done),
                Err(s) if s.is_already_exists() => Ok(Action::Done),
                Err(s) => Err(s),
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const DAY: u64 = 24 * 3600;

    fn at(text: &str) -> jiff::Timestamp {
        text.parse().unwrap()
    }

    fn secret(created: &str, labels: Value) -> Value {
        json!({
            "type": SERVICE_ACCOUNT_TOKEN_TYPE,
            "metadata": {"name": "app-token", "namespace": "shop", "uid": "s1",
                "creationTimestamp": created, "labels": labels,
                "annotations": {SA_NAME_ANNOTATION: "app", SA_UID_ANNOTATION: "a1"}},
        })
    }

    fn account() -> Value {
        json!({"metadata": {"name": "app", "namespace": "shop", "uid": "a1"},
            "secrets": [{"name": "app-token"}]})
    }

    #[test]
    fn tracking_must_cover_a_whole_period_from_the_next_midnight() {
        let period = Duration::from_secs(30 * DAY);
        assert!(!tracked_long_enough(None, at("2030-01-01T00:00:00Z"), period));
        assert!(!tracked_long_enough(
            Some("garbage"),
            at("2030-01-01T00:00:00Z"),
            period
        ));
        assert!(!tracked_long_enough(
            Some("2025-01-01"),
            at("2025-01-31T23:59:59Z"),
            period
        ));
        assert!(tracked_long_enough(
            Some("2025-01-01"),
            at("2025-02-01T00:00:00Z"),
            period
        ));
    }

    #[test]
    fn an_unused_auto_generated_token_is_marked_then_deleted_a_period_later() {
        let period = Duration::from_secs(30 * DAY);
        let none = HashSet::new();
        let old = secret("2025-01-01T00:00:00Z", json!({}));
        let now = at("2025-03-01T12:00:00Z");
        assert_eq!(
            verdict(&old, Some(&account()), &none, now, period),
            Verdict::MarkInvalid("2025-03-01".into())
        );
        let marked = secret("2025-01-01T00:00:00Z", json!({INVALID_SINCE_LABEL: "2025-03-01"}));
        assert_eq!(
            verdict(&marked, Some(&account()), &none, now, period),
            Verdict::Keep
        );
        // The day compare: marked on 03-01, kept through the day a period later.
        assert_eq!(
            verdict(
                &marked,
                Some(&account()),
                &none,
                at("2025-03-31T23:00:00Z"),
                period
            ),
            Verdict::Keep
        );
        assert_eq!(
            verdict(
                &marked,
                Some(&account()),
                &none,
                at("2025-04-01T00:00:00Z"),
                period
            ),
            Verdict::Delete
        );
        // An unreadable mark is replaced by today's.
        let garbled = secret("2025-01-01T00:00:00Z", json!({INVALID_SINCE_LABEL: "soon"}));
        assert_eq!(
            verdict(&garbled, Some(&account()), &none, now, period),
            Verdict::MarkInvalid("2025-03-01".into())
        );
    }

    #[test]
    fn tokens_in_use_or_not_auto_generated_are_kept() {
        let period = Duration::from_secs(30 * DAY);
        let now = at("2025-03-01T12:00:00Z");
        let none = HashSet::new();
        let young = secret("2025-02-15T00:00:00Z", json!({}));
        assert_eq!(
            verdict(&young, Some(&account()), &none, now, period),
            Verdict::Keep
        );
        let used = secret("2025-01-01T00:00:00Z", json!({LAST_USED_LABEL: "2025-01-30"}));
        assert_eq!(
            verdict(&used, Some(&account()), &none, now, period),
            Verdict::Keep
        );
        let used_long_ago = secret("2025-01-01T00:00:00Z", json!({LAST_USED_LABEL: "2025-01-29"}));
        assert!(matches!(
            verdict(&used_long_ago, Some(&account()), &none, now, period),
            Verdict::MarkInvalid(_)
        ));
        let unreadable = secret("2025-01-01T00:00:00Z", json!({LAST_USED_LABEL: "yesterday"}));
        assert_eq!(
            verdict(&unreadable, Some(&account()), &none, now, period),
            Verdict::Keep
        );
        let old = secret("2025-01-01T00:00:00Z", json!({}));
        let mounted: HashSet<String> = ["app-token".to_string()].into();
        assert_eq!(
            verdict(&old, Some(&account()), &mounted, now, period),
            Verdict::Keep
        );
        assert_eq!(verdict(&old, None, &none, now, period), Verdict::Keep);
        let mut by_hand = account();
        by_hand["secrets"] = json!([]);
        assert_eq!(verdict(&old, Some(&by_hand), &none, now, period), Verdict::Keep);
        let mut recreated = account();
        recreated["metadata"]["uid"] = json!("a2");
        assert_eq!(verdict(&old, Some(&recreated), &none, now, period), Verdict::Keep);
        let mut opaque = old.clone();
        opaque["type"] = json!("Opaque");
        assert_eq!(
            verdict(&opaque, Some(&account()), &none, now, period),
            Verdict::Keep
        );
    }

    #[test]
    fn every_place_a_pod_names_a_secret_counts() {
        let pod = json!({"spec": {
            "imagePullSecrets": [{"name": "pull"}],
            "initContainers": [{"envFrom": [{"secretRef": {"name": "init-env"}}]}],
            "containers": [{"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "env", "key": "k"}}}]}],
            "volumes": [
                {"name": "a", "secret": {"secretName": "mounted"}},
                {"name": "b", "projected": {"sources": [{"secret": {"name": "projected"}}]}},
                {"name": "c", "csi": {"driver": "d", "nodePublishSecretRef": {"name": "csi"}}},
            ],
        }});
        let names = secrets_referenced_by(&pod);
        for name in ["pull", "init-env", "env", "mounted", "projected", "csi"] {
            assert!(names.contains(name), "{name} in {names:?}");
        }
        assert_eq!(names.len(), 6);
    }
}
