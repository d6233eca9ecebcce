//! Section 7: the cost of the features that watch and protect the hot paths. The audit log at
//! Metadata level with last-used tracking and the IssuedToken inventory, against all three
//! off; and encryption at rest (AES-GCM for every resource) against none, those features on.

use std::path::Path;

use crate::report::{Row, row};
use crate::server::Server;
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
/// settings taking turns so that drift in a shared machine hits all alike.
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
    // Server CPU ticks for the distinct reviews, and how many there were, per setting.
    let mut distinct_cpu = [(0u64, 0usize); 3];
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
            let issued = server.load(ISSUE, &[TOKEN_REQUEST.to_string()], seconds, false)?;
            server.stop()?;
            // The reviews on a server of their own: the inventory of the burst just issued
            // is still being written and followed, which is no review's cost.
            let (server, _) = Server::start(badge, tempfile::tempdir()?, &extra)?;
            let token = mint(&server, 1).await?.remove(0);
            let cached = server.load(REVIEW, &[review_body(&token)], seconds, false)?;
            // Distinct reviews are measured by the server's CPU, from the first review to
            // the end of the flush that writes their last use: a throughput that ended
            // before the flush would leave its cost out.
            let reviews: Vec<String> = mint(&server, distinct_reviews)
                .await?
                .iter()
                .map(|t| review_body(t))
                .collect();
            server.settle();
            let before = server.cpu_ticks();
            server.load(REVIEW, &reviews, 0.0, true)?;
            server.settle();
            distinct_cpu[i].0 += server.cpu_ticks().saturating_sub(before);
            distinct_cpu[i].1 += reviews.len();
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
    // Microseconds of server CPU per distinct review; a clock tick is 10 ms.
    let cpu_per_review = |i: usize| {
        let (ticks, reviews) = distinct_cpu[i];
        ticks as f64 * 10_000.0 / reviews.max(1) as f64
    };
    for (i, feature) in [
        (1, "audit (Metadata), last-used tracking and inventory"),
        (2, "encryption at rest (aesgcm, all resources; the above on)"),
    ] {
        let (without, with) = (cpu_per_review(i - 1), cpu_per_review(i));
        // Cost, not rate: the ratio is the time without over the time with.
        let ratio = if with > 0.0 { without / with } else { 0.0 };
        rows.push(row(
            "7 audit",
            format!(
                "TokenReview distinct ES256, server CPU per review with the flush of its last use: \
                 {feature} off {without:.0} µs, on {with:.0} µs"
            ),
            format!("{without:.0} µs"),
            Some(ratio),
            "≥ 0.95",
            Some(ratio >= 0.95),
        ));
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
