//! Idle ServiceAccount cleanup, off unless `--idle-serviceaccount-cleanup-period` is set: a
//! ServiceAccount nobody authenticated as for one period is marked idle (label
//! `identity.badge.dev/idle-since=<day>`), after another period disabled (label
//! `identity.badge.dev/disabled=true`: no token is issued for it), after a third deleted. A use
//! clears the mark; removing the disabled label (`badge serviceaccount enable NS/NAME`) starts
//! over. Each step is logged and, through the server's [`Audit`], audited; in dry-run
//! nothing is written. The exact times of the steps
//! are kept in annotations, since label values cannot hold them.

use std::sync::Arc;
use std::time::Duration;

use badge_api::identity::{DISABLED_LABEL, IDLE_SINCE_LABEL};
use badge_api::{Status, meta, resources};
use badge_registry::{DeleteOptions, Filter, ReadFrom, Registry, WriteOptions};
use serde_json::Value;

use crate::audit::{self, Audit, Write};
use crate::leader;

/// The controller's name, which names its ServiceAccount in the audit log.
pub const CONTROLLER_NAME: &str = "idle-serviceaccount-cleaner";

/// When the ServiceAccount was found idle (RFC 3339).
pub const IDLE_SINCE_ANNOTATION: &str = "identity.badge.dev/idle-since";
/// When this controller disabled it (RFC 3339); absent when an admin disabled it by hand.
pub const DISABLED_AT_ANNOTATION: &str = "identity.badge.dev/disabled-at";
/// Namespaces whose ServiceAccounts run the cluster itself, never cleaned up.
const PROTECTED_NAMESPACES: &[&str] = &["kube-system", "kube-public", "kube-node-lease"];

#[derive(Clone, Copy, Debug)]
/// How the idle cleanup runs.
pub struct IdleCleanup {
    /// How long each step waits: unused this long marks, marked this long disables, disabled this long deletes.
    pub period: Duration,
    /// Log and audit the steps without writing them.
    pub dry_run: bool,
}

/// What to do to one ServiceAccount now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing is due.
    Nothing,
    /// Unused for a period: label it idle.
    MarkIdle,
    /// Used since it was marked, or enabled again by an admin: drop the marks.
    ClearMarks,
    /// Idle for another period: label it disabled, so no token is issued for it.
    Disable,
    /// Disabled for a third period: delete it.
    Delete,
}

fn time_at(object: &Value, pointer: &str) -> Option<jiff::Timestamp> {
    object
        .pointer(pointer)
        .and_then(Value::as_str)
        .and_then(meta::parse_time)
}

fn annotation_time(sa: &Value, key: &str) -> Option<jiff::Timestamp> {
    sa.pointer("/metadata/annotations")
        .and_then(|a| a.get(key))
        .and_then(Value::as_str)
        .and_then(meta::parse_time)
}

/// The step due for `sa` given its ServiceAccountUsage (if any).
pub fn next_step(sa: &Value, usage: Option<&Value>, now: jiff::Timestamp, period: Duration) -> Step {
    if PROTECTED_NAMESPACES.contains(&meta::namespace(sa)) || meta::deletion_timestamp(sa).is_some() {
        return Step::Nothing;
    }
    let period = i64::try_from(period.as_secs()).unwrap_or(i64::MAX);
    let elapsed = |since: jiff::Timestamp| now.as_second().saturating_sub(since.as_second()) >= period;
    let last_used = usage.and_then(|u| time_at(u, "/status/lastAuthenticated/time"));
    let idle_since = annotation_time(sa, IDLE_SINCE_ANNOTATION);
    let disabled_at = annotation_time(sa, DISABLED_AT_ANNOTATION);
    let disabled = sa
        .pointer("/metadata/labels")
        .and_then(|l| l.get(DISABLED_LABEL))
        .and_then(Value::as_str)
        == Some("true");
    match (idle_since, disabled_at) {
        (_, Some(_)) if !disabled => Step::ClearMarks,
        (_, Some(at)) => {
            if elapsed(at) {
                Step::Delete
            } else {
                Step::Nothing
            }
        }
        (Some(since), None) => {
            if last_used.is_some_and(|used| used > since) {
                Step::ClearMarks
            } else if elapsed(since) && !disabled {
                Step::Disable
            } else {
                Step::Nothing
            }
        }
        (None, None) => {
            let Some(active) = last_used.or_else(|| time_at(sa, "/metadata/creationTimestamp")) else {
                return Step::Nothing;
            };
            if elapsed(active) && !disabled {
                Step::MarkIdle
            } else {
                Step::Nothing
            }
        }
    }
}

/// `sa` with the step's labels and annotations.
pub fn apply_step(sa: &Value, step: Step, now: jiff::Timestamp) -> Value {
    let mut sa = sa.clone();
    let Some(metadata) = sa.get_mut("metadata").and_then(Value::as_object_mut) else {
        return sa;
    };
    let now_text = meta::format_time(now);
    let day = now_text.get(..10).unwrap_or("").to_string();
    for (map, key, value) in [
        ("labels", IDLE_SINCE_LABEL, Some(day)),
        ("annotations", IDLE_SINCE_ANNOTATION, Some(now_text.clone())),
        ("labels", DISABLED_LABEL, Some("true".to_string())),
        ("annotations", DISABLED_AT_ANNOTATION, Some(now_text)),
    ]
    .into_iter()
    .enumerate()
    .filter_map(|(i, entry)| {
        let wanted = match step {
            Step::MarkIdle => i < 2,
            Step::Disable => i >= 2,
            Step::ClearMarks => true,
            Step::Nothing | Step::Delete => false,
        };
        wanted.then_some(entry)
    }) {
        let entries = metadata
            .entry(map)
            .or_insert_with(|| Value::Object(Default::default()));
        if let Some(entries) = entries.as_object_mut() {
            if step == Step::ClearMarks {
                // An admin's own disabled label is theirs; only this controller's marks go.
                if key != DISABLED_LABEL {
                    entries.remove(key);
                }
            } else if let Some(value) = value {
                entries.insert(key.to_string(), Value::String(value));
            }
        }
    }
    sa
}

/// Starts the cleanup; it acts while `leading` says this server leads (always when None), auditing each step through `audit`.
pub fn spawn(registry: Arc<Registry>, leading: Option<leader::Leading>, options: IdleCleanup, audit: Audit) {
    // A tenth of the period, so each step lands within 10 % of its due time.
    let tick = (options.period / 10).clamp(Duration::from_millis(200), Duration::from_secs(3600));
    tracing::info!(
        period_seconds = options.period.as_secs(),
        dry_run = options.dry_run,
        "idle ServiceAccount cleanup is on"
    );
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(tick).await;
            if leading.as_ref().is_some_and(|l| !*l.borrow()) {
                continue;
            }
            if let Err(e) = sweep(&registry, options, &audit).await {
                tracing::warn!(error = %e.message, "idle ServiceAccount cleanup failed; retrying");
            }
        }
    });
}

async fn sweep(registry: &Registry, options: IdleCleanup, audit: &Audit) -> Result<(), Status> {
    let (sas, usages) = (resources::SERVICEACCOUNTS, resources::SERVICEACCOUNTUSAGES);
    let accounts = registry
        .list(sas, "", &Filter::default(), ReadFrom::Any, 0, None)
        .await?;
    let now = badge_api::clock::now();
    for sa in &accounts.items {
        let (namespace, name) = (meta::namespace(sa), meta::name(sa));
        let usage = registry.get_cached(usages, namespace, name);
        let step = next_step(sa, usage.as_deref(), now, options.period);
        if step == Step::Nothing {
            continue;
        }
        let what = match step {
            Step::MarkIdle => "marked idle",
            Step::ClearMarks => "idle marks cleared",
            Step::Disable => "disabled",
            Step::Delete => "deleted",
            Step::Nothing => "",
        };
        if options.dry_run {
            tracing::info!(
                namespace,
                serviceaccount = name,
                dry_run = true,
                "idle ServiceAccount would be {what}"
            );
            continue;
        }
        let uid = meta::uid(sa).to_string();
        let written = match step {
            Step::Delete => registry
                .delete(
                    sas,
                    namespace,
                    name,
                    &DeleteOptions {
                        precondition_uid: Some(uid.clone()),
                        ..Default::default()
                    },
                )
                .await
                .map(|_| ()),
            _ => registry
                .update(sas, namespace, name, "", &WriteOptions::default(), |current| {
                    if meta::uid(current) != uid {
                        return Err(Status::conflict(
                            sas.group_resource(),
                            name,
                            "the ServiceAccount was replaced",
                        ));
                    }
                    Ok(apply_step(current, step, now))
                })
                .await
                .map(|_| ()),
        };
        audit::record(
            audit,
            Write {
                controller: CONTROLLER_NAME,
                verb: if step == Step::Delete { "delete" } else { "update" },
                resource: sas,
                subresource: "",
                namespace,
                name,
                uid: &uid,
                failure: written.as_ref().err(),
            },
        );
        match written {
            Ok(()) => tracing::info!(namespace, serviceaccount = name, "idle ServiceAccount {what}"),
            Err(e) if e.is_not_found() => {}
            Err(e) => {
                tracing::warn!(namespace, serviceaccount = name, error = %e.message, "idle ServiceAccount not {what}")
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    const PERIOD: Duration = Duration::from_secs(100);

    fn at(second: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_800_000_000 + second).unwrap()
    }

    fn sa(namespace: &str) -> Value {
        json!({"metadata": {"name": "web", "namespace": namespace, "uid": "u",
            "creationTimestamp": meta::format_time(at(0))}})
    }

    fn used_at(second: i64) -> Value {
        json!({"status": {"lastAuthenticated": {"time": meta::format_time(at(second))}}})
    }

    #[test]
    fn an_unused_service_account_goes_idle_then_disabled_then_deleted() {
        let fresh = sa("shop");
        assert_eq!(next_step(&fresh, None, at(99), PERIOD), Step::Nothing);
        assert_eq!(next_step(&fresh, None, at(100), PERIOD), Step::MarkIdle);
        let idle = apply_step(&fresh, Step::MarkIdle, at(100));
        assert_eq!(idle["metadata"]["labels"][IDLE_SINCE_LABEL], "2027-01-15");
        assert_eq!(next_step(&idle, None, at(199), PERIOD), Step::Nothing);
        assert_eq!(next_step(&idle, None, at(200), PERIOD), Step::Disable);
        let disabled = apply_step(&idle, Step::Disable, at(200));
        assert_eq!(disabled["metadata"]["labels"][DISABLED_LABEL], "true");
        assert_eq!(next_step(&disabled, None, at(299), PERIOD), Step::Nothing);
        assert_eq!(next_step(&disabled, None, at(300), PERIOD), Step::Delete);
    }

    #[test]
    fn a_use_counts_from_its_time_and_clears_the_idle_mark() {
        let fresh = sa("shop");
        assert_eq!(
            next_step(&fresh, Some(&used_at(50)), at(120), PERIOD),
            Step::Nothing
        );
        assert_eq!(
            next_step(&fresh, Some(&used_at(50)), at(150), PERIOD),
            Step::MarkIdle
        );
        let idle = apply_step(&fresh, Step::MarkIdle, at(150));
        assert_eq!(
            next_step(&idle, Some(&used_at(160)), at(170), PERIOD),
            Step::ClearMarks
        );
        let cleared = apply_step(&idle, Step::ClearMarks, at(170));
        assert_eq!(cleared["metadata"]["labels"], json!({}));
        assert_eq!(cleared["metadata"]["annotations"], json!({}));
    }

    #[test]
    fn enabling_again_by_removing_the_label_clears_the_marks() {
        let idle = apply_step(&sa("shop"), Step::MarkIdle, at(100));
        let mut disabled = apply_step(&idle, Step::Disable, at(200));
        disabled["metadata"]["labels"]
            .as_object_mut()
            .unwrap()
            .remove(DISABLED_LABEL);
        assert_eq!(next_step(&disabled, None, at(250), PERIOD), Step::ClearMarks);
        // Disabled by an admin's hand (no disabled-at): never deleted by the controller.
        let mut by_hand = sa("shop");
        by_hand["metadata"]["labels"] = json!({DISABLED_LABEL: "true"});
        assert_eq!(next_step(&by_hand, None, at(1000), PERIOD), Step::Nothing);
    }

    #[test]
    fn the_clusters_own_service_accounts_are_left_alone() {
        for ns in PROTECTED_NAMESPACES {
            assert_eq!(next_step(&sa(ns), None, at(10_000), PERIOD), Step::Nothing);
        }
    }
}
