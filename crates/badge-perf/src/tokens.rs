//! Sections 2 to 4: TokenRequest, TokenReview (distinct and repeated) on each key type, and
//! how soon a deleted Pod's token stops authenticating.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::client::{Connection, call};
use crate::raw::Limits;
use crate::report::{Row, combined_bound, row, throughput_row};
use crate::server::Server;

pub(crate) async fn measure(
    badge: &Path,
    quick: bool,
    seconds: f64,
    limits: &Limits,
) -> anyhow::Result<Vec<Row>> {
    let (raw_sign, raw_verify, ceiling_rps) = (&limits.sign, &limits.verify, limits.ceiling);
    let mut rows = Vec::new();
    for alg in ["RS256", "ES256"] {
        let (server, _) = Server::start(
            badge,
            tempfile::tempdir()?,
            &["--service-account-signing-key-type", alg],
        )?;
        let issued = server.load(
            "/api/v1/namespaces/default/serviceaccounts/default/token",
            &[TOKEN_REQUEST.to_string()],
            seconds,
            false,
        )?;
        rows.push(throughput_row(
            "2 TokenRequest",
            alg,
            &issued,
            (
                raw_sign[alg].min(ceiling_rps),
                format!(
                    "min(sign ×2 cores {:.0}, ceiling {ceiling_rps:.0})",
                    raw_sign[alg]
                ),
            ),
            0.8,
            combined_bound(Some(raw_sign[alg]), ceiling_rps),
        ));
        let n = if quick { 3000 } else { 20_000 };
        let tokens = mint(&server, n).await?;
        let distinct: Vec<String> = tokens.iter().map(|t| review_body(t)).collect();
        let uncached = server.load(
            "/apis/authentication.k8s.io/v1/tokenreviews",
            &distinct,
            seconds,
            true,
        )?;
        rows.push(throughput_row(
            "3 TokenReview distinct",
            alg,
            &uncached,
            (
                raw_verify[alg].min(ceiling_rps),
                format!(
                    "min(verify ×2 cores {:.0}, ceiling {ceiling_rps:.0})",
                    raw_verify[alg]
                ),
            ),
            0.8,
            combined_bound(Some(raw_verify[alg]), ceiling_rps),
        ));
        let cached = server.load(
            "/apis/authentication.k8s.io/v1/tokenreviews",
            &distinct[..1],
            seconds,
            false,
        )?;
        rows.push(throughput_row(
            "3 TokenReview repeated",
            alg,
            &cached,
            (ceiling_rps, format!("ceiling {ceiling_rps:.0}")),
            0.7,
            combined_bound(None, ceiling_rps),
        ));
        if alg == "RS256" {
            let ms = revocation_ms(&server, &server).await?;
            rows.push(row(
                "4 revocation",
                format!("{ms:.1} ms from pod delete to failing TokenReview (median of 5)"),
                "1000 ms".into(),
                None,
                "< 1 s",
                Some(ms < 1000.0),
            ));
        }
        server.stop()?;
    }

    Ok(rows)
}

pub(crate) const REVIEW: &str = "/apis/authentication.k8s.io/v1/tokenreviews";

pub(crate) const TOKEN_REQUEST: &str =
    r#"{"apiVersion":"authentication.k8s.io/v1","kind":"TokenRequest","spec":{}}"#;

pub(crate) async fn mint(server: &Server, n: usize) -> anyhow::Result<Vec<String>> {
    let tls = server.admin()?;
    let mut tokens = Vec::with_capacity(n);
    let path = "/api/v1/namespaces/default/serviceaccounts/default/token";
    // Several connections' worth in parallel.
    let per = n.div_ceil(8);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let tls = tls.clone();
        let port = server.port;
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            let mut connection = Connection::open(&tls, port).await?;
            for _ in 0..per {
                let (_, body) = connection
                    .send("POST", path, Some(serde_json::from_str(TOKEN_REQUEST)?))
                    .await?;
                out.push(body["status"]["token"].as_str().unwrap_or_default().to_string());
            }
            anyhow::Ok(out)
        }));
    }
    for t in tasks {
        tokens.extend(t.await??);
    }
    tokens.truncate(n);
    Ok(tokens)
}

pub(crate) fn review_body(token: &str) -> String {
    json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}})
        .to_string()
}

/// Median time from deleting a bound Pod through `writer` to the first failing TokenReview
/// on `reviewer` (the same server, or another one on the same store), with the token
/// verified (and cached) on `reviewer` beforehand.
pub(crate) async fn revocation_ms(writer: &Server, reviewer: &Server) -> anyhow::Result<f64> {
    let (writer_tls, reviewer_tls) = (writer.admin()?, reviewer.admin()?);
    let review_path = "/apis/authentication.k8s.io/v1/tokenreviews";
    let mut samples = Vec::new();
    for i in 0..5 {
        let name = format!("rev-{i}");
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "i"}]}});
        call(
            &writer_tls,
            writer.port,
            "POST",
            "/api/v1/namespaces/default/pods",
            Some(pod),
        )
        .await?;
        let request = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": name}}});
        let (_, body) = call(
            &writer_tls,
            writer.port,
            "POST",
            "/api/v1/namespaces/default/serviceaccounts/default/token",
            Some(request),
        )
        .await?;
        let token = body["status"]["token"].as_str().unwrap_or_default().to_string();
        let review: Value = serde_json::from_str(&review_body(&token))?;
        let (_, first) = call(
            &reviewer_tls,
            reviewer.port,
            "POST",
            review_path,
            Some(review.clone()),
        )
        .await?;
        anyhow::ensure!(
            first["status"]["authenticated"] == true,
            "the reviewing server did not accept the token"
        );
        let start = Instant::now();
        call(
            &writer_tls,
            writer.port,
            "DELETE",
            &format!("/api/v1/namespaces/default/pods/{name}"),
            None,
        )
        .await?;
        loop {
            let (_, r) = call(
                &reviewer_tls,
                reviewer.port,
                "POST",
                review_path,
                Some(review.clone()),
            )
            .await?;
            if r["status"]["authenticated"] != true || start.elapsed() > Duration::from_secs(5) {
                break;
            }
        }
        samples.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    samples.sort_by(f64::total_cmp);
    Ok(samples[samples.len() / 2])
}

/// How many IssuedToken records the server lists in `default`.
pub(crate) async fn inventory_count(server: &Server) -> anyhow::Result<u64> {
    let (status, list) = call(
        &server.admin()?,
        server.port,
        "GET",
        "/apis/identity.badge.dev/v1/namespaces/default/issuedtokens?limit=1",
        None,
    )
    .await?;
    anyhow::ensure!(status == 200, "listing IssuedTokens: {status} {list}");
    let items = list["items"].as_array().map_or(0, Vec::len) as u64;
    Ok(items + list["metadata"]["remainingItemCount"].as_u64().unwrap_or(0))
}

/// Waits (at most a minute) until the inventory holds at least `count` records, as the
/// servers flush what they issued.
pub(crate) async fn wait_for_inventory(server: &Server, count: usize) -> anyhow::Result<()> {
    wait_for_count(
        "records in the inventory",
        count as u64,
        Duration::from_secs(60),
        || inventory_count(server),
    )
    .await
}

/// Polls `counted` until it reaches `want`, for at most `limit`; `what` names the count.
pub(crate) async fn wait_for_count<F, Fut>(
    what: &str,
    want: u64,
    limit: Duration,
    mut counted: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<u64>>,
{
    let deadline = Instant::now() + limit;
    loop {
        let got = counted().await?;
        if got >= want {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{got} of {want} {what} after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
