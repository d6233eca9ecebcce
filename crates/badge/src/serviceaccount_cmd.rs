//! `badge serviceaccount enable|disable NAMESPACE/NAME`: one command to take a ServiceAccount
//! out of use (no token is issued for it) and to bring it back, idle mark included.

use clap::{Args, Subcommand};
use serde_json::Value;

use badge_api::identity::{DISABLED_LABEL, IDLE_SINCE_LABEL};
use badge_client::error_text;

use crate::token_cmd::Connection;

#[derive(Subcommand)]
pub(crate) enum ServiceAccountCommand {
    /// Enable a disabled ServiceAccount again (and clear its idle mark).
    Enable(Target),
    /// Disable a ServiceAccount: no token is issued for it until it is enabled.
    Disable(Target),
}

#[derive(Args, Debug)]
pub(crate) struct Target {
    /// NAMESPACE/NAME.
    service_account: String,
    #[command(flatten)]
    connection: Connection,
}

/// `ns/name` split in two.
pub(crate) fn parse_target(text: &str) -> anyhow::Result<(&str, &str)> {
    match text.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => Ok((ns, name)),
        _ => anyhow::bail!("expected NAMESPACE/NAME, got {text:?}"),
    }
}

/// The ServiceAccount with the labels changed; None when nothing changes.
pub(crate) fn relabel(mut sa: Value, enable: bool) -> Option<Value> {
    let labels = sa
        .pointer_mut("/metadata")?
        .as_object_mut()?
        .entry("labels")
        .or_insert_with(|| Value::Object(Default::default()))
        .as_object_mut()?;
    let before = labels.clone();
    if enable {
        labels.remove(DISABLED_LABEL);
        labels.remove(IDLE_SINCE_LABEL);
    } else {
        labels.insert(DISABLED_LABEL.into(), Value::String("true".into()));
    }
    (*labels != before).then_some(sa)
}

pub(crate) async fn run(command: ServiceAccountCommand) -> anyhow::Result<()> {
    let (target, enable) = match command {
        ServiceAccountCommand::Enable(t) => (t, true),
        ServiceAccountCommand::Disable(t) => (t, false),
    };
    let (namespace, name) = parse_target(&target.service_account)?;
    let client = target.connection.client()?;
    let path = format!("/api/v1/namespaces/{namespace}/serviceaccounts/{name}");
    let verb = if enable { "enabled" } else { "disabled" };
    // A conflict means someone changed it meanwhile: read again and retry.
    for _ in 0..5 {
        let (status, sa) = client.request("GET", &path, None).await?;
        if status != 200 {
            anyhow::bail!("{}", error_text(&sa));
        }
        let Some(updated) = relabel(sa, enable) else {
            println!("serviceaccount/{name} already {verb}");
            return Ok(());
        };
        let (status, body) = client.request("PUT", &path, Some(updated)).await?;
        match status {
            200 => {
                println!("serviceaccount/{name} {verb}");
                return Ok(());
            }
            409 => continue,
            _ => anyhow::bail!("{}", error_text(&body)),
        }
    }
    anyhow::bail!("serviceaccount/{name} kept changing; try again")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn targets_are_namespace_slash_name() {
        assert_eq!(parse_target("shop/web").unwrap(), ("shop", "web"));
        for bad in ["web", "/web", "shop/", "a/b/c"] {
            assert!(parse_target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn enabling_drops_the_disabled_and_idle_labels_only() {
        let sa = json!({"metadata": {"name": "web", "labels": {
            "identity.badge.dev/disabled": "true", "identity.badge.dev/idle-since": "2026-01-01", "app": "web"}}});
        let enabled = relabel(sa, true).unwrap();
        assert_eq!(enabled["metadata"]["labels"], json!({"app": "web"}));
        assert!(relabel(enabled.clone(), true).is_none());
        let disabled = relabel(enabled, false).unwrap();
        assert_eq!(
            disabled["metadata"]["labels"]["identity.badge.dev/disabled"],
            "true"
        );
        assert!(relabel(json!({"metadata": {"name": "x"}}), true).is_none());
    }
}
