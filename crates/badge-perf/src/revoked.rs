//! Section 8: cached TokenReview with many revoked jtis against none: every cache hit checks
//! the revoked set, which must not cost in proportion to its size.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::client::{Connection, call};
use crate::report::{Row, row};
use crate::server::Server;
use crate::tokens::{REVIEW, TOKEN_REQUEST, review_body, wait_for_inventory};

const REVOKED: usize = 10_000;
const RECORDS: &str = "/apis/identity.badge.dev/v1/namespaces/default/issuedtokens";

pub(crate) async fn measure(badge: &Path, seconds: f64) -> anyhow::Result<Vec<Row>> {
    // Two servers in the same state but for the revocations: the same tokens issued, the same
    // number of writes to their records (a label on one, `spec.revoked` on the other), then
    // measured in turns so that drift in a shared machine hits both alike.
    let mut prepared = Vec::new();
    for revoke in [false, true] {
        prepared.push(prepare(badge, revoke).await?);
    }
    let mut sums = [0.0; 2];
    const ROUNDS: usize = 2;
    for _round in 0..ROUNDS {
        for (i, (server, review)) in prepared.iter().enumerate() {
            let result = server.load(REVIEW, std::slice::from_ref(review), seconds, false)?;
            sums[i] += result["rps"].as_f64().unwrap_or(0.0);
        }
    }
    for (server, _) in prepared {
        server.stop()?;
    }
    let (none, revoked) = (sums[0] / ROUNDS as f64, sums[1] / ROUNDS as f64);
    let ratio = if none > 0.0 { revoked / none } else { 0.0 };
    Ok(vec![row(
        "8 revoked jtis",
        format!(
            "TokenReview cached ES256: none revoked {none:.0} req/s, {REVOKED} revoked {revoked:.0} req/s"
        ),
        format!("{none:.0}/s"),
        Some(ratio),
        "≥ 0.95",
        Some(ratio >= 0.95),
    )])
}

/// A server holding `REVOKED + 1` issued tokens, all but one revoked when `revoke` (else
/// labelled, the same number of writes), and the review of the one kept.
async fn prepare(badge: &Path, revoke: bool) -> anyhow::Result<(Server, String)> {
    let (server, _) = Server::start(
        badge,
        tempfile::tempdir()?,
        &[
            "--service-account-signing-key-type=ES256",
            "--usage-flush-period=1s",
        ],
    )?;
    // One token more than those revoked: the one reviewed.
    let tokens = server.load_tokens(
        "/api/v1/namespaces/default/serviceaccounts/default/token",
        &vec![TOKEN_REQUEST.to_string(); REVOKED + 1],
        &[],
    )?;
    wait_for_inventory(&server, REVOKED + 1).await?;
    let names = record_names(&server).await?;
    let kept = &tokens[REVOKED];
    // Revoked through the API, as an operator would: spec.revoked on each record but one.
    let kept_name = record_of(&server, kept, &names).await?;
    let patch = if revoke {
        r#"{"spec":{"revoked":true}}"#
    } else {
        r#"{"metadata":{"labels":{"reviewed":"yes"}}}"#
    };
    let patches: Vec<String> = names
        .iter()
        .filter(|n| **n != kept_name)
        .take(REVOKED)
        .map(|n| format!("{RECORDS}/{n} {patch}"))
        .collect();
    anyhow::ensure!(patches.len() == REVOKED, "{} records to patch", patches.len());
    let patched = server.load_with(
        "-",
        &patches,
        0.0,
        true,
        &[
            "--paths-in-bodies",
            "--method",
            "PATCH",
            "--content-type",
            "application/merge-patch+json",
        ],
    )?;
    anyhow::ensure!(patched["errors"] == 0, "patching failed: {patched}");
    if revoke {
        wait_until_revoked(&server, &tokens[..REVOKED]).await?;
    }
    let review = review_body(kept);
    Ok((server, review))
}

/// Every IssuedToken record's name, by pages.
async fn record_names(server: &Server) -> anyhow::Result<Vec<String>> {
    let mut connection = Connection::open(&server.admin()?, server.port).await?;
    let (mut names, mut from) = (Vec::new(), String::new());
    loop {
        let (status, page) = connection
            .send("GET", &format!("{RECORDS}?limit=500&continue={from}"), None)
            .await?;
        anyhow::ensure!(status == 200, "listing IssuedTokens: {status}");
        for item in page["items"].as_array().into_iter().flatten() {
            if let Some(name) = item["metadata"]["name"].as_str() {
                names.push(name.to_string());
            }
        }
        match page["metadata"]["continue"].as_str() {
            Some(next) if !next.is_empty() => from = next.to_string(),
            _ => return Ok(names),
        }
    }
}

/// The record of `token`: the one whose name its review's `authentication.kubernetes.io/
/// credential-id` extra names (`JTI=<name>`), else the first listed.
async fn record_of(server: &Server, token: &str, names: &[String]) -> anyhow::Result<String> {
    let body = serde_json::from_str(&review_body(token))?;
    let (_, reply) = call(&server.admin()?, server.port, "POST", REVIEW, Some(body)).await?;
    let jti = reply["status"]["user"]["extra"]["authentication.kubernetes.io/credential-id"][0]
        .as_str()
        .and_then(|id| id.strip_prefix("JTI="))
        .map(str::to_string);
    match jti {
        Some(jti) if names.contains(&jti) => Ok(jti),
        _ => Err(anyhow::anyhow!("the kept token's record is not listed")),
    }
}

/// Waits (at most half a minute) until the last revoked tokens fail review: the server follows
/// the records in the store's order, so once the last write is seen, all are.
async fn wait_until_revoked(server: &Server, revoked: &[String]) -> anyhow::Result<()> {
    let mut connection = Connection::open(&server.admin()?, server.port).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut pending: Vec<&String> = revoked.iter().collect();
    while !pending.is_empty() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} tokens still authenticate half a minute after their revocation",
            pending.len()
        );
        let mut still = Vec::new();
        for token in pending {
            let body = serde_json::from_str(&review_body(token))?;
            let (_, reply) = connection.send("POST", REVIEW, Some(body)).await?;
            if reply["status"]["authenticated"] == true {
                still.push(token);
            }
        }
        pending = still;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}
