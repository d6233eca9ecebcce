//! Section 5: many objects: start-up, memory per object, a paged list and a WatchList; and the
//! token paths with many live tokens in the verified-token cache and the IssuedToken inventory.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::client::{Connection, watch_initial_events};
use crate::raw::Limits;
use crate::report::{Row, combined_bound, row, throughput_row};
use crate::server::{PAST_A_FLUSH, Server};
use crate::tokens::{REVIEW, TOKEN_REQUEST, review_body};

/// RS256, the default, and the inventory flushed every second so that it fills quickly.
const ARGS: [&str; 3] = [
    "--service-account-signing-key-type=RS256",
    "--usage-flush-period=1s",
    "--token-usage-tracking=true",
];

pub(crate) async fn measure(
    badge: &Path,
    quick: bool,
    seconds: f64,
    limits: &Limits,
) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    let n = if quick { 5_000 } else { 100_000 };
    let (server, empty_start) = Server::start(badge, tempfile::tempdir()?, &ARGS)?;
    server.settle();
    let rss_empty = server.rss_bytes();
    let sas: Vec<String> = (0..n)
        .map(|i| json!({"metadata": {"name": format!("sa-{i}")}}).to_string())
        .collect();
    server.load("/api/v1/namespaces/default/serviceaccounts", &sas, 0.0, true)?;
    let secrets: Vec<String> = (0..n)
        .map(|i| json!({"metadata": {"name": format!("s-{i}")}, "stringData": {"k": "v"}}).to_string())
        .collect();
    server.load("/api/v1/namespaces/default/secrets", &secrets, 0.0, true)?;
    server.settle();
    let rss_loaded = server.rss_bytes();
    let per_object = (rss_loaded.saturating_sub(rss_empty)) as f64 / (2 * n) as f64;
    let tls = server.admin()?;
    let list_start = Instant::now();
    let mut connection = Connection::open(&tls, server.port).await?;
    let mut token = String::new();
    let mut listed = 0usize;
    loop {
        let path = format!("/api/v1/namespaces/default/serviceaccounts?limit=500&continue={token}");
        let (_, page) = connection.send("GET", &path, None).await?;
        listed += page["items"].as_array().map_or(0, Vec::len);
        match page["metadata"]["continue"].as_str() {
            Some(t) if !t.is_empty() => token = t.to_string(),
            _ => break,
        }
    }
    let list_seconds = list_start.elapsed().as_secs_f64();
    let (watched, watch_time) =
        watch_initial_events(&tls, server.port, "/api/v1/namespaces/default/serviceaccounts").await?;
    let (service_accounts, live, scale) = token_scale(quick);
    rows.extend(tokens_at_scale(&server, service_accounts, live, &scale, seconds, limits).await?);
    let dir = server.stop()?;
    let (server, loaded_start) = Server::start(badge, dir, &ARGS)?;
    rows.push(row(
        "5 start-up",
        format!("empty {:.0} ms", empty_start.as_secs_f64() * 1000.0),
        "100 ms".into(),
        None,
        "< 100 ms",
        Some(empty_start < Duration::from_millis(100)),
    ));
    rows.push(row(
        "5 start-up",
        format!(
            "{n} ServiceAccounts + {n} Secrets + {live} IssuedTokens: {:.0} ms",
            loaded_start.as_secs_f64() * 1000.0
        ),
        "3000 ms".into(),
        None,
        "< 3 s",
        Some(loaded_start < Duration::from_secs(3)),
    ));
    rows.push(row(
        "5 memory",
        format!(
            "{per_object:.0} B per stored object ({} MiB → {} MiB)",
            rss_empty >> 20,
            rss_loaded >> 20
        ),
        "2048 B".into(),
        None,
        "< 2 KiB",
        Some(per_object < 2048.0),
    ));
    rows.push(row(
        "5 list",
        format!("{listed} ServiceAccounts in pages of 500: {list_seconds:.3} s"),
        "-".into(),
        None,
        "-",
        None,
    ));
    rows.push(row(
        "5 watch",
        format!(
            "{watched} ServiceAccounts as a watch's initial events (sendInitialEvents): {:.3} s",
            watch_time.as_secs_f64()
        ),
        "-".into(),
        None,
        "-",
        None,
    ));
    drop(server);

    Ok(rows)
}

/// TokenRequest and TokenReview once `live` tokens of `service_accounts` ServiceAccounts are in
/// the inventory and were each reviewed once (so in the verified-token cache as far as it
/// holds them), and the memory each costs.
async fn tokens_at_scale(
    server: &Server,
    service_accounts: usize,
    live: usize,
    scale: &str,
    seconds: f64,
    limits: &Limits,
) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    let ceiling = limits.ceiling;
    let sign = limits.sign["RS256"];
    let verify = limits.verify["RS256"];
    let requests = token_requests(service_accounts);
    let (tokens, memory_row) = fill_inventory(server, &requests, live, scale).await?;
    let after_records = server.rss_bytes();
    let reviews: Vec<String> = tokens.iter().map(|t| review_body(t)).collect();
    let distinct = server.load(REVIEW, &reviews, 0.0, true)?;
    // The flush writing the last-used of every token reviewed belongs to the distinct
    // reviews, not to the cached ones measured next.
    server.settle_over(PAST_A_FLUSH);
    let after_cache = server.rss_bytes();
    let per_cached = after_cache.saturating_sub(after_records) as f64 / live as f64;
    // The last reviewed are the likeliest to be in a cache smaller than `live`.
    let recent = &reviews[live - service_accounts.min(live)..];
    let cached = server.load(REVIEW, recent, seconds, false)?;
    server.settle();
    let issued = server.load_with("-", &requests, seconds, false, &["--paths-in-bodies"])?;
    rows.push(throughput_row(
        "5 TokenRequest at scale",
        &format!("RS256 ({scale}, one ServiceAccount after another)"),
        &issued,
        (
            sign.min(ceiling),
            format!("min(sign ×2 cores {sign:.0}, ceiling {ceiling:.0})"),
        ),
        0.8,
        combined_bound(Some(sign), ceiling),
    ));
    rows.push(throughput_row(
        "5 TokenReview distinct at scale",
        &format!("RS256 (each of the {live} once)"),
        &distinct,
        (
            verify.min(ceiling),
            format!("min(verify ×2 cores {verify:.0}, ceiling {ceiling:.0})"),
        ),
        0.8,
        combined_bound(Some(verify), ceiling),
    ));
    rows.push(throughput_row(
        "5 TokenReview cached at scale",
        &format!("RS256 (the last {} reviewed, in turn)", recent.len()),
        &cached,
        (ceiling, format!("ceiling {ceiling:.0}")),
        0.7,
        combined_bound(None, ceiling),
    ));
    rows.push(memory_row);
    rows.push(row(
        "5 memory",
        format!(
            "{per_cached:.0} B of verified-token cache per live token ({live} reviewed once; {} MiB → {} MiB)",
            after_records >> 20,
            after_cache >> 20
        ),
        "-".into(),
        None,
        "-",
        None,
    ));
    Ok(rows)
}

/// The ServiceAccounts and live tokens the token rows run at, and how the rows say it.
fn token_scale(quick: bool) -> (usize, usize, String) {
    let (service_accounts, live) = if quick { (1_000, 10_000) } else { (10_000, 100_000) };
    let scale = format!(
        "{live} live tokens for {service_accounts} ServiceAccounts{}",
        if quick {
            " (quick: scaled down from 100000 for 10000)"
        } else {
            ""
        }
    );
    (service_accounts, live, scale)
}

/// A TokenRequest for each of the ServiceAccounts `sa-0`, `sa-1`, ..., as the load
/// generator's `--paths-in-bodies` lines.
fn token_requests(service_accounts: usize) -> Vec<String> {
    (0..service_accounts)
        .map(|i| format!("/api/v1/namespaces/default/serviceaccounts/sa-{i}/token {TOKEN_REQUEST}"))
        .collect()
}

/// Mints `live` tokens, one request after another in turn, in two halves, and after each
/// waits until their records and the ServiceAccountUsages counting them are written. The
/// row is judged on what the server grew by from the start, per record, which counts the
/// buffers that are bounded whatever the number of records (the watch cache's history of
/// 20,000 events, the store's page caches, the event channels) as if each record paid its
/// share; what it grew by over the second half, once those are full, is printed beside it
/// as the cost of one more record (it moves more between runs: the history holds other
/// events at each reading). The tokens, and the memory row.
async fn fill_inventory(
    server: &Server,
    requests: &[String],
    live: usize,
    scale: &str,
) -> anyhow::Result<(Vec<String>, Row)> {
    server.settle();
    let before = server.rss_bytes();
    let half = live / 2;
    let mut tokens = mint_counted(server, requests, 0..half).await?;
    server.settle();
    let middle = server.rss_bytes();
    tokens.extend(mint_counted(server, requests, half..live).await?);
    // What the last flush left behind (the server's release of freed pages after it) is
    // done before the memory is read.
    server.settle();
    let after = server.rss_bytes();
    let per_record = after.saturating_sub(before) as f64 / live as f64;
    let second_half = after.saturating_sub(middle) as f64 / (live - half) as f64;
    let row = row(
        "5 memory",
        format!(
            "{per_record:.0} B per IssuedToken record ({scale}; {} MiB → {} MiB → {} MiB; \
             {second_half:.0} B per record from {half} to {live})",
            before >> 20,
            middle >> 20,
            after >> 20
        ),
        "1024 B".into(),
        None,
        "< 1 KiB",
        Some(per_record < 1024.0),
    );
    Ok((tokens, row))
}

/// Mints the tokens numbered `range` (request `i` is `requests[i % len]`), and waits until
/// the ServiceAccountUsages count every token minted so far.
async fn mint_counted(
    server: &Server,
    requests: &[String],
    range: std::ops::Range<usize>,
) -> anyhow::Result<Vec<String>> {
    let end = range.end;
    let bodies: Vec<String> = range.map(|i| requests[i % requests.len()].clone()).collect();
    let tokens = server.load_tokens("-", &bodies, &["--paths-in-bodies"])?;
    wait_for_usage_counts(server, end).await?;
    Ok(tokens)
}

/// Waits (at most ten minutes) until the ServiceAccountUsages in `default` count `live`
/// tokens between them: every record is written, and the flush that wrote the last ones has
/// also finished its recounts, so nothing it allocated is still in use.
async fn wait_for_usage_counts(server: &Server, live: usize) -> anyhow::Result<()> {
    let tls = server.admin()?;
    // In pages: a list of all 10,000 at once would grow the server by what it measures.
    let counted = || async {
        let mut total = 0;
        let mut next = String::new();
        loop {
            let (status, list) = crate::client::call(
                &tls,
                server.port,
                "GET",
                &format!(
                    "/apis/identity.badge.dev/v1/namespaces/default/serviceaccountusages?limit=500&continue={next}"
                ),
                None,
            )
            .await?;
            anyhow::ensure!(status == 200, "listing ServiceAccountUsages: {status} {list}");
            total += list["items"].as_array().map_or(0, |items| {
                items
                    .iter()
                    .filter_map(|u| u["status"]["liveTokens"].as_u64())
                    .sum()
            });
            match list["metadata"]["continue"].as_str() {
                Some(token) if !token.is_empty() => next = token.to_string(),
                _ => return Ok(total),
            }
        }
    };
    crate::tokens::wait_for_count(
        "live tokens counted by the ServiceAccountUsages",
        live as u64,
        Duration::from_secs(600),
        counted,
    )
    .await
}

/// `badge-perf [--quick] memory`: the IssuedToken memory row alone, on a fresh server given
/// the ServiceAccounts it needs.
pub(crate) async fn memory(badge: &Path, quick: bool) -> anyhow::Result<Vec<Row>> {
    let (service_accounts, live, scale) = token_scale(quick);
    let (server, _) = Server::start(badge, tempfile::tempdir()?, &ARGS)?;
    let accounts: Vec<String> = (0..service_accounts)
        .map(|i| json!({"metadata": {"name": format!("sa-{i}")}}).to_string())
        .collect();
    server.load("/api/v1/namespaces/default/serviceaccounts", &accounts, 0.0, true)?;
    let (_, row) = fill_inventory(&server, &token_requests(service_accounts), live, &scale).await?;
    Ok(vec![row])
}
