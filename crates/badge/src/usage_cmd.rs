//! `badge usage --unused-for 30d`: the ServiceAccounts and tokens nobody authenticated with
//! for that long, from the server's ServiceAccountUsage and IssuedToken records. A
//! ServiceAccount never used counts from its creation, a token from its issue.

use clap::{Args, ValueEnum};
use serde_json::{Value, json};

use badge_api::meta;
use badge_client::error_text;

use crate::token_cmd::Connection;

#[derive(Args, Debug)]
pub(crate) struct UsageOptions {
    /// List what has not been used for this long (`90s`, `15m`, `12h`, `30d`).
    #[arg(long, value_parser = parse_duration)]
    unused_for: i64,
    /// Only this namespace (default: all).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(flatten)]
    connection: Connection,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
}

/// A duration with a unit: `s`, `m`, `h` or `d`.
pub(crate) fn parse_duration(text: &str) -> Result<i64, String> {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: i64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 30d, 12h, 15m or 90s"))?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("{text:?} is not a duration such as 30d, 12h, 15m or 90s")),
    };
    number
        .checked_mul(scale)
        .ok_or_else(|| format!("{text:?} is too long"))
}

/// One identity or token unused for long enough.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Idle {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    pub service_account: String,
    /// The last use, or None when never used.
    pub last_used: Option<jiff::Timestamp>,
    /// Since when it counts as unused: the last use, else its creation or issue.
    pub idle_since: jiff::Timestamp,
}

fn time_at(object: &Value, pointer: &str) -> Option<jiff::Timestamp> {
    object
        .pointer(pointer)
        .and_then(Value::as_str)
        .and_then(meta::parse_time)
}

/// The ServiceAccounts, then the tokens, idle since before `now - unused_for`, oldest first.
pub(crate) fn idle(
    service_accounts: &[Value],
    usages: &[Value],
    tokens: &[Value],
    now: jiff::Timestamp,
    unused_for: i64,
) -> Vec<Idle> {
    let cutoff = now.as_second().saturating_sub(unused_for);
    let mut accounts = Vec::new();
    for sa in service_accounts {
        let (namespace, name) = (meta::namespace(sa), meta::name(sa));
        let last_used = usages
            .iter()
            .find(|u| meta::namespace(u) == namespace && meta::name(u) == name)
            .and_then(|u| time_at(u, "/status/lastAuthenticated/time"));
        let Some(idle_since) = last_used.or_else(|| time_at(sa, "/metadata/creationTimestamp")) else {
            continue;
        };
        if idle_since.as_second() <= cutoff {
            accounts.push(Idle {
                kind: "ServiceAccount",
                namespace: namespace.to_string(),
                name: name.to_string(),
                service_account: name.to_string(),
                last_used,
                idle_since,
            });
        }
    }
    let mut idle_tokens = Vec::new();
    for token in tokens {
        let last_used = time_at(token, "/status/lastUsed/time");
        let Some(idle_since) = last_used
            .or_else(|| time_at(token, "/spec/issuedAt"))
            .or_else(|| time_at(token, "/metadata/creationTimestamp"))
        else {
            continue;
        };
        if idle_since.as_second() <= cutoff {
            idle_tokens.push(Idle {
                kind: "IssuedToken",
                namespace: meta::namespace(token).to_string(),
                name: meta::name(token).to_string(),
                service_account: token
                    .pointer("/spec/serviceAccountName")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                last_used,
                idle_since,
            });
        }
    }
    accounts.sort_by_key(|i| i.idle_since);
    idle_tokens.sort_by_key(|i| i.idle_since);
    accounts.extend(idle_tokens);
    accounts
}

fn days_and_hours(seconds: i64) -> String {
    match seconds {
        s if s >= 86400 => format!("{}d{}h", s / 86400, s % 86400 / 3600),
        s if s >= 3600 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("{}m{}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

pub(crate) fn render_table(rows: &[Idle], now: jiff::Timestamp) -> String {
    let mut cells = vec![[
        "KIND".to_string(),
        "NAMESPACE".into(),
        "NAME".into(),
        "SERVICEACCOUNT".into(),
        "LAST USED".into(),
        "UNUSED FOR".into(),
    ]];
    for row in rows {
        cells.push([
            row.kind.to_string(),
            row.namespace.clone(),
            row.name.clone(),
            row.service_account.clone(),
            row.last_used
                .map(meta::format_time)
                .unwrap_or_else(|| "<never>".into()),
            days_and_hours(now.as_second() - row.idle_since.as_second()),
        ]);
    }
    let mut widths = [0usize; 6];
    for row in &cells {
        for (width, cell) in widths.iter_mut().zip(row.iter()) {
            *width = (*width).max(cell.chars().count() + 3);
        }
    }
    let mut out = String::new();
    for row in &cells {
        let line: String = widths
            .iter()
            .zip(row.iter())
            .map(|(width, cell)| format!("{cell:<width$}"))
            .collect();
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

pub(crate) fn render_json(rows: &[Idle], now: jiff::Timestamp) -> Value {
    let items: Vec<Value> = rows
        .iter()
        .map(|row| {
            json!({
                "kind": row.kind,
                "namespace": row.namespace,
                "name": row.name,
                "serviceAccountName": row.service_account,
                "lastUsed": row.last_used.map(meta::format_time),
                "idleSince": meta::format_time(row.idle_since),
                "unusedSeconds": now.as_second() - row.idle_since.as_second(),
            })
        })
        .collect();
    json!({"items": items})
}

pub(crate) async fn run(options: UsageOptions) -> anyhow::Result<()> {
    let client = options.connection.client()?;
    let scope = match &options.namespace {
        Some(ns) => format!("/namespaces/{ns}"),
        None => String::new(),
    };
    let list = |path: String| {
        let client = &client;
        async move {
            let (status, body) = client.request("GET", &path, None).await?;
            if status != 200 {
                anyhow::bail!("listing {path}: {}", error_text(&body));
            }
            anyhow::Ok(body["items"].as_array().cloned().unwrap_or_default())
        }
    };
    let service_accounts = list(format!("/api/v1{scope}/serviceaccounts")).await?;
    let usages = list(format!("/apis/identity.badge.dev/v1{scope}/serviceaccountusages")).await?;
    let tokens = list(format!("/apis/identity.badge.dev/v1{scope}/issuedtokens")).await?;
    let now = badge_api::clock::now();
    let rows = idle(&service_accounts, &usages, &tokens, now, options.unused_for);
    match options.output {
        Output::Table if rows.is_empty() => eprintln!("nothing unused for that long"),
        Output::Table => print!("{}", render_table(&rows, now)),
        Output::Json => println!("{}", serde_json::to_string_pretty(&render_json(&rows, now))?),
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn at(text: &str) -> jiff::Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn durations_take_a_unit() {
        assert_eq!(parse_duration("30d"), Ok(30 * 86400));
        assert_eq!(parse_duration("12h"), Ok(43200));
        assert_eq!(parse_duration("90s"), Ok(90));
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("d").is_err());
        assert!(parse_duration("1w").is_err());
    }

    #[test]
    fn never_used_counts_from_creation_and_used_from_the_last_use() {
        let sa = |name: &str, created: &str| json!({"metadata": {"name": name, "namespace": "shop", "creationTimestamp": created}});
        let accounts = [
            sa("old-never", "2026-01-01T00:00:00Z"),
            sa("new-never", "2026-03-25T00:00:00Z"),
            sa("old-used-lately", "2026-01-01T00:00:00Z"),
            sa("old-used-long-ago", "2026-01-01T00:00:00Z"),
        ];
        let usage = |name: &str, last: &str| {
            json!({"metadata": {"name": name, "namespace": "shop"},
                "status": {"lastAuthenticated": {"time": last}}})
        };
        let usages = [
            usage("old-used-lately", "2026-03-30T00:00:00Z"),
            usage("old-used-long-ago", "2026-02-01T00:00:00Z"),
        ];
        let tokens = [
            json!({"metadata": {"name": "j1", "namespace": "shop"},
                "spec": {"serviceAccountName": "old-used-lately", "issuedAt": "2026-01-02T00:00:00Z"}}),
            json!({"metadata": {"name": "j2", "namespace": "shop"},
                "spec": {"serviceAccountName": "old-used-lately", "issuedAt": "2026-01-02T00:00:00Z"},
                "status": {"lastUsed": {"time": "2026-03-30T00:00:00Z"}}}),
        ];
        let now = at("2026-04-01T00:00:00Z");
        let rows = idle(&accounts, &usages, &tokens, now, 30 * 86400);
        let names: Vec<(&str, &str)> = rows.iter().map(|r| (r.kind, r.name.as_str())).collect();
        assert_eq!(
            names,
            [
                ("ServiceAccount", "old-never"),
                ("ServiceAccount", "old-used-long-ago"),
                ("IssuedToken", "j1")
            ]
        );
        assert_eq!(rows[0].last_used, None);
        assert_eq!(rows[1].last_used, Some(at("2026-02-01T00:00:00Z")));
        let text = render_table(&rows, now);
        assert!(text.starts_with("KIND "), "{text}");
        assert!(text.contains("<never>") && text.contains("90d0h"), "{text}");
        let json = render_json(&rows, now);
        assert_eq!(json["items"][2]["serviceAccountName"], "old-used-lately");
        assert_eq!(json["items"][1]["unusedSeconds"], 59 * 86400);
    }
}
