//! Section 1: the machine's limits, measured in the same run as what is held against them:
//! signing and verifying on one core, and the HTTP ceiling, the same rustls + hyper stack as
//! badge answering a fixed reply.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use http_body_util::BodyExt;
use serde_json::json;

use crate::report::{Row, row};
use crate::server::run_load;

/// What the machine allows, per second on all its cores.
pub(crate) struct Limits {
    pub sign: HashMap<&'static str, f64>,
    pub verify: HashMap<&'static str, f64>,
    pub ceiling: f64,
}

pub(crate) fn measure(seconds: f64, rows: &mut Vec<Row>) -> anyhow::Result<Limits> {
    // 1. Raw limits.
    let payload = json!({"sub": "system:serviceaccount:default:default", "iss": "x", "aud": ["x"], "exp": 4_000_000_000i64});
    let mut raw_sign = HashMap::new();
    let mut raw_verify = HashMap::new();
    for (alg, key) in [
        ("RS256", badge_token::SigningKey::generate_rsa(2048)?),
        (
            "ES256",
            badge_token::SigningKey::generate_ec(badge_token::Curve::P256)?,
        ),
    ] {
        let sign = rate(seconds / 2.0, || {
            std::hint::black_box(badge_token::jwt::sign(&key, &payload).ok());
        });
        let token = badge_token::jwt::sign(&key, &payload)?.into_exposed();
        let keys = badge_token::KeySet::new(Some(key.clone()), []);
        let verify = rate(seconds / 2.0, || {
            std::hint::black_box(badge_token::jwt::parse_and_verify(&token, &keys).ok());
        });
        rows.push(row(
            "1 raw",
            format!("{alg} sign {sign:.0}/s, verify {verify:.0}/s (one core)"),
            "-".into(),
            None,
            "-",
            None,
        ));
        raw_sign.insert(alg, sign * 2.0);
        raw_verify.insert(alg, verify * 2.0);
    }
    let ceiling_dir = tempfile::tempdir()?;
    let mut ceiling_child = Command::new(std::env::current_exe()?)
        .arg("ceiling")
        .arg(ceiling_dir.path())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(ceiling_child.stdout.take().context("ceiling stdout")?).read_line(&mut line)?;
    let ceiling_port: u16 = line.trim().parse()?;
    let bodies_file = tempfile::NamedTempFile::new()?;
    std::fs::write(bodies_file.path(), json!({"pad": "y".repeat(1000)}).to_string())?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args([
        "load",
        "--port",
        &ceiling_port.to_string(),
        "--path",
        "/",
        "--seconds",
        &seconds.to_string(),
    ])
    .arg("--ca")
    .arg(ceiling_dir.path().join("ca.crt"))
    .arg("--bodies")
    .arg(bodies_file.path());
    let ceiling_result = run_load(cmd)?;
    let _ = ceiling_child.kill();
    let ceiling_rps = ceiling_result["rps"].as_f64().unwrap_or(0.0);
    rows.push(row(
        "1 raw",
        format!("HTTP ceiling {ceiling_rps:.0} req/s (2 cores, same TLS+hyper stack, 16 connections)"),
        "-".into(),
        None,
        "-",
        None,
    ));

    Ok(Limits {
        sign: raw_sign,
        verify: raw_verify,
        ceiling: ceiling_rps,
    })
}

pub(crate) fn rate(seconds: f64, mut f: impl FnMut()) -> f64 {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let mut n = 0u64;
    while Instant::now() < deadline {
        for _ in 0..16 {
            f();
        }
        n += 16;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// The same TLS and HTTP stack as badge, answering every request with a fixed ~360 B JSON.
pub(crate) async fn ceiling(dir: &Path) -> anyhow::Result<()> {
    let pki = badge_pki::Pki::load_or_create(dir, &[])?;
    let tls = tokio_rustls::TlsAcceptor::from(pki.server_config(&[b"http/1.1"])?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("{}", listener.local_addr()?.port());
    let reply = bytes::Bytes::from(format!(
        "{{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"status\":\"Success\",\"message\":\"{}\"}}",
        "x".repeat(300)
    ));
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let tls = tls.clone();
        let reply = reply.clone();
        tokio::spawn(async move {
            let Ok(stream) = tls.accept(tcp).await else { return };
            let service = hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                let reply = reply.clone();
                async move {
                    let _ = request.into_body().collect().await;
                    let mut response = http::Response::new(http_body_util::Full::new(reply));
                    response
                        .headers_mut()
                        .insert("content-type", http::HeaderValue::from_static("application/json"));
                    Ok::<_, std::convert::Infallible>(response)
                }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            let _ = builder
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}
