//! Section 7: the cost of the features that watch and protect the hot paths. The audit log at
//! Metadata level with last-used tracking and the IssuedToken inventory, against all three
//! off; and encryption at rest (AES-GCM for every resource) against none, those features on.

use std::path::Path;

use crate::report::{Row, row};
use crate::server::{PAST_A_FLUSH, Server};
use crate::tokens::{TOKEN_REQUEST, mint, review_body};

/// A fixed 32-byte key: the benchmark measures the provider's cost, not the key's secrecy.
const AES_KEY: &str = "BwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyAhIiMkJSY=";

fn encryption_config(dir: &Path, encrypted: bool) -> anyhow::Result<String> {
    let (resources, provider) = if encrypted {
        (
            "\"*.*\"",
            format!("aesgcm:\n          keys:\n            - name: key1\n              secret: {AES_KEY}"),
        )
    } else {
        ("secrets", "identity: {}".to_string())
    };
    let yaml = format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  \
         - resources: [{resources}]\n    providers:\n      - {provider}\n"
    );
    let path = dir.join(if encrypted { "aesgcm.yaml" } else { "identity.yaml" });
    std::fs::write(&path, yaml)?;
    Ok(path.to_string_lossy().into_owned())
}

/// ES256 TokenRequest and cached TokenReview under each setting, each measured twice, the
/// settings taking turns so that drift in a shared machine hits all alike: by throughput,
/// and by the server's CPU per request (steadier than a throughput on a shared machine, and
/// counting the flush of what the requests noted, which may come after a throughput run).
pub(crate) async fn measure(badge: &Path, quick: bool, seconds: f64) -> anyhow::Result<Vec<Row>> {
    const ISSUE: &str = "/api/v1/namespaces/default/serviceaccounts/default/token";
    const REVIEW: &str = "/apis/authentication.k8s.io/v1/tokenreviews";
    let configs = tempfile::tempdir()?;
    let plain = encryption_config(configs.path(), false)?;
    let aesgcm = encryption_config(configs.path(), true)?;
    let off = [
        "--audit-log-path=",
        "--token-usage-tracking=false",
        "--encryption-provider-config",
        plain.as_str(),
    ];
    let on = ["--encryption-provider-config", plain.as_str()];
    let encrypted = ["--encryption-provider-config", aesgcm.as_str()];
    let settings: [&[&str]; 3] = [&off, &on, &encrypted];
    // (issue, cached review) req/s per setting, summed over the rounds.
    let mut sums = [(0.0, 0.0); 3];
    // Server CPU ticks and requests, per setting: TokenRequests, cached reviews, distinct
    // reviews. Each window runs from the first request until the server is idle again.
    let mut cpu = [[(0u64, 0usize); 3]; 3];
    let distinct_reviews = if quick { 10_000 } else { 20_000 };
    const ROUNDS: usize = 2;
    for _round in 0..ROUNDS {
        for (i, args) in settings.iter().enumerate() {
            // Usage is flushed every second, so the inventory's writes fall inside the
            // TokenRequest window (its steady state), not after it.
            let mut extra = vec![
                "--service-account-signing-key-type",
                "ES256",
                "--usage-flush-period=1s",
            ];
            extra.extend_from_slice(args);
            let (server, _) = Server::start(badge, tempfile::tempdir()?, &extra)?;
            server.settle_over(PAST_A_FLUSH);
            let before = server.cpu_ticks();
            let issued = server.load(ISSUE, &[TOKEN_REQUEST.to_string()], seconds, false)?;
            server.settle_over(PAST_A_FLUSH);
            cpu[i][0].0 += server.cpu_ticks().saturating_sub(before);
            cpu[i][0].1 += requests(&issued);
            server.stop()?;
            // The reviews on a server of their own: the inventory of the burst just issued
            // is still being written and followed, which is no review's cost.
            let (server, _) = Server::start(badge, tempfile::tempdir()?, &extra)?;
            let token = mint(&server, 1).await?.remove(0);
            server.settle_over(PAST_A_FLUSH);
            let before = server.cpu_ticks();
            let cached = server.load(REVIEW, &[review_body(&token)], seconds, false)?;
            server.settle_over(PAST_A_FLUSH);
            cpu[i][1].0 += server.cpu_ticks().saturating_sub(before);
            cpu[i][1].1 += requests(&cached);
            // Distinct reviews are measured by the server's CPU, from the first review to
            // the end of the flush that writes their last use: a throughput that ended
            // before the flush would leave its cost out.
            let reviews: Vec<String> = mint(&server, distinct_reviews)
                .await?
                .iter()
                .map(|t| review_body(t))
                .collect();
            server.settle_over(PAST_A_FLUSH);
            let before = server.cpu_ticks();
            server.load(REVIEW, &reviews, 0.0, true)?;
            server.settle_over(PAST_A_FLUSH);
            cpu[i][2].0 += server.cpu_ticks().saturating_sub(before);
            cpu[i][2].1 += reviews.len();
            server.stop()?;
            sums[i].0 += issued["rps"].as_f64().unwrap_or(0.0);
            sums[i].1 += cached["rps"].as_f64().unwrap_or(0.0);
        }
    }
    let mean = |i: usize| (sums[i].0 / ROUNDS as f64, sums[i].1 / ROUNDS as f64);
    let (off, on, encrypted) = (mean(0), mean(1), mean(2));
    let mut rows = Vec::new();
    let comparisons = [
        (
            "TokenRequest ES256",
            "audit (Metadata), last-used tracking and inventory",
            off.0,
            on.0,
        ),
        (
            "TokenReview cached ES256",
            "audit (Metadata), last-used tracking and inventory",
            off.1,
            on.1,
        ),
        (
            "TokenRequest ES256",
            "encryption at rest (aesgcm, all resources; the above on)",
            on.0,
            encrypted.0,
        ),
        (
            "TokenReview cached ES256",
            "encryption at rest (aesgcm, all resources; the above on)",
            on.1,
            encrypted.1,
        ),
    ];
    // Microseconds of server CPU per request; a clock tick is 10 ms.
    let cpu_per_request = |setting: usize, path: usize| {
        let (ticks, requests) = cpu[setting][path];
        ticks as f64 * 10_000.0 / requests.max(1) as f64
    };
    for (path, name) in [
        (0, "TokenRequest ES256"),
        (1, "TokenReview cached ES256"),
        (2, "TokenReview distinct ES256"),
    ] {
        for (i, feature) in [
            (1, "audit (Metadata), last-used tracking and inventory"),
            (2, "encryption at rest (aesgcm, all resources; the above on)"),
        ] {
            let (without, with) = (cpu_per_request(i - 1, path), cpu_per_request(i, path));
            // Cost, not rate: the ratio is the time without over the time with.
            let ratio = if with > 0.0 { without / with } else { 0.0 };
            rows.push(row(
                "7 audit",
                format!(
                    "{name}, server CPU per request up to the end of the flush that records it: \
                     {feature} off {without:.1} µs, on {with:.1} µs"
                ),
                format!("{without:.1} µs"),
                Some(ratio),
                "≥ 0.95",
                Some(ratio >= 0.95),
            ));
        }
    }
    for (path, feature, without, with) in comparisons {
        let ratio = if without > 0.0 { with / without } else { 0.0 };
        rows.push(row(
            "7 audit",
            format!("{path}: {feature} off {without:.0} req/s, on {with:.0} req/s"),
            format!("{without:.0}/s"),
            Some(ratio),
            "≥ 0.95",
            Some(ratio >= 0.95),
        ));
    }
    Ok(rows)
}

/// How many requests a load run made.
fn requests(run: &serde_json::Value) -> usize {
    run["requests"]
        .as_u64()
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(0)
}
