//! `badge-perf`: measures badge's hot paths against the limits of the machine, in one run.
//!
//! ```sh
//! cargo build --release -p badge -p badge-perf && target/release/badge-perf [--quick]
//! target/release/badge-perf [--quick] etcd    # creates through badge on etcd vs raw puts
//! ```
//!
//! The load generator is this binary's `load` subcommand, run as a separate process on
//! 127.0.0.1; the HTTP ceiling is its `ceiling` subcommand (the same rustls + hyper stack
//! as badge answering a fixed reply). Results go to `bench-results/latest.{json,md}`.

mod etcd;
mod load;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use clap::{Parser, Subcommand};
use http_body_util::BodyExt;
use serde_json::{Value, json};

#[derive(Parser)]
#[command(name = "badge-perf")]
struct Cli {
    #[command(subcommand)]
    command: Option<Sub>,
    /// Smaller sizes and shorter runs (about a minute).
    #[arg(long)]
    quick: bool,
    /// The badge binary to measure.
    #[arg(long, default_value = "target/release/badge")]
    badge: PathBuf,
    /// Where results are written.
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
}

#[derive(Subcommand)]
enum Sub {
    /// The load generator.
    Load(load::LoadOptions),
    /// The HTTP ceiling server.
    Ceiling { dir: PathBuf },
    /// ServiceAccount creates through badge on etcd against raw etcd puts.
    Etcd,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.command {
        Some(Sub::Load(options)) => runtime.block_on(load::run(options)),
        Some(Sub::Ceiling { dir }) => runtime.block_on(ceiling(&dir)),
        Some(Sub::Etcd) => runtime.block_on(etcd::bench(cli.quick, &cli.badge, &cli.out)),
        None => runtime.block_on(bench(cli.quick, &cli.badge, &cli.out)),
    }
}

/// The same TLS and HTTP stack as badge, answering every request with a fixed ~360 B JSON.
async fn ceiling(dir: &Path) -> anyhow::Result<()> {
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

struct Server {
    child: Child,
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
    port: u16,
}

impl Server {
    fn start(badge: &Path, dir: tempfile::TempDir, extra: &[&str]) -> anyhow::Result<(Server, Duration)> {
        // badge refuses a data dir others can read; a new temporary one follows the umask.
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        let started = Instant::now();
        let mut child = Command::new(badge)
            .args(["server", "--secure-port", "0", "--data-dir"])
            .arg(dir.path())
            .args(extra)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", badge.display()))?;
        let stderr = child.stderr.take().context("stderr")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(port) = line.split("serving securely on 127.0.0.1:").nth(1) {
                    let _ = tx.send(port.trim().parse::<u16>().unwrap_or(0));
                }
            }
        });
        let port = rx
            .recv_timeout(Duration::from_secs(60))
            .context("badge did not start")?;
        let server = Server {
            child,
            path: dir.path().to_path_buf(),
            dir: Some(dir),
            port,
        };
        let tls = load::client_config(&server.ca(), None, None)?;
        loop {
            if let Ok((200, _)) = block(call(&tls, port, "GET", "/readyz", None)) {
                break;
            }
            if started.elapsed() > Duration::from_secs(60) {
                return Err(anyhow!("badge did not become ready"));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok((server, started.elapsed()))
    }

    fn ca(&self) -> PathBuf {
        self.path.join("pki/ca.crt")
    }

    fn admin(&self) -> anyhow::Result<Arc<rustls::ClientConfig>> {
        let pki = self.path.join("pki");
        load::client_config(
            &self.ca(),
            Some(&pki.join("admin.crt")),
            Some(&pki.join("admin.key")),
        )
    }

    fn rss_bytes(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            })
            .map_or(0, |kb| kb * 1024)
    }

    fn stop(mut self) -> anyhow::Result<tempfile::TempDir> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
        self.dir.take().context("the data dir")
    }

    /// The load generator against this server, as the admin.
    fn load(&self, path: &str, bodies: &[String], seconds: f64, once: bool) -> anyhow::Result<Value> {
        let file = tempfile::NamedTempFile::new()?;
        std::fs::write(file.path(), bodies.join("\n"))?;
        let pki = self.path.join("pki");
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.args([
            "load",
            "--port",
            &self.port.to_string(),
            "--path",
            path,
            "--seconds",
            &seconds.to_string(),
        ])
        .arg("--ca")
        .arg(self.ca())
        .arg("--cert")
        .arg(pki.join("admin.crt"))
        .arg("--key")
        .arg(pki.join("admin.key"))
        .arg("--bodies")
        .arg(file.path());
        if once {
            cmd.arg("--once");
        }
        run_load(cmd)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run_load(mut cmd: Command) -> anyhow::Result<Value> {
    let out = cmd.output()?;
    if !out.status.success() {
        return Err(anyhow!(
            "load generator failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn block<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

/// One keep-alive HTTPS connection, as a client such as kubectl holds.
struct Connection {
    sender: hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
}

impl Connection {
    async fn open(tls: &Arc<rustls::ClientConfig>, port: u16) -> anyhow::Result<Connection> {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let stream = tokio_rustls::TlsConnector::from(tls.clone())
            .connect(rustls::pki_types::ServerName::try_from("localhost")?, tcp)
            .await?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok(Connection { sender })
    }

    async fn send(&mut self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<(u16, Value)> {
        let bytes = body.map(|b| b.to_string()).unwrap_or_default();
        let request = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(bytes)))?;
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
    }
}

/// One request on its own connection.
async fn call(
    tls: &Arc<rustls::ClientConfig>,
    port: u16,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<(u16, Value)> {
    Connection::open(tls, port).await?.send(method, path, body).await
}

/// A WatchList (`sendInitialEvents=true`, as client-go's informers open it) of `path` on
/// its own connection: the ADDED events received up to the bookmark that ends the initial
/// events, and the time from the request to that bookmark.
async fn watch_initial_events(
    tls: &Arc<rustls::ClientConfig>,
    port: u16,
    path: &str,
) -> anyhow::Result<(usize, Duration)> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let stream = tokio_rustls::TlsConnector::from(tls.clone())
        .connect(rustls::pki_types::ServerName::try_from("localhost")?, tcp)
        .await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = http::Request::builder()
        .uri(format!(
            "{path}?watch=1&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan"
        ))
        .header("host", "localhost")
        .body(http_body_util::Empty::<bytes::Bytes>::new())?;
    let started = Instant::now();
    let mut body = sender.send_request(request).await?.into_body();
    let (mut added, mut line) = (0usize, Vec::new());
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else { continue };
        for chunk in data.split_inclusive(|b| *b == b'\n') {
            line.extend_from_slice(chunk);
            if line.last() != Some(&b'\n') {
                continue;
            }
            // Events lead with their type (as upstream writes them); reading only that keeps
            // the client's share of the cores small.
            if line.starts_with(br#"{"type":"ADDED""#) {
                added += 1;
            } else if line.starts_with(br#"{"type":"BOOKMARK""#) {
                let event: Value = serde_json::from_slice(&line)?;
                if event["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"] == "true" {
                    return Ok((added, started.elapsed()));
                }
            }
            line.clear();
        }
    }
    Err(anyhow!("the watch ended before its initial events did"))
}

fn rate(seconds: f64, mut f: impl FnMut()) -> f64 {
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

struct Row {
    section: String,
    figure: String,
    limit: String,
    ratio: Option<f64>,
    goal: String,
    met: Option<bool>,
    /// The rate the machine reaches if the server adds nothing to the crypto and the HTTP
    /// ceiling's work: both run on the same cores, so their costs per request add. With the
    /// figure's ratio to it.
    bound: Option<(f64, f64)>,
}

fn row(
    section: &str,
    figure: String,
    limit: String,
    ratio: Option<f64>,
    goal: &str,
    met: Option<bool>,
) -> Row {
    Row {
        section: section.into(),
        figure,
        limit,
        ratio,
        goal: goal.into(),
        met,
        bound: None,
    }
}

/// The reachable rate when every request costs one crypto operation (at `crypto` per second
/// on all cores) plus one ceiling request (at `ceiling` per second on all cores).
fn combined_bound(crypto: Option<f64>, ceiling: f64) -> f64 {
    match crypto {
        Some(crypto) => 1.0 / (1.0 / crypto + 1.0 / ceiling),
        None => ceiling,
    }
}

/// A row for a load generator result measured against `limit`, with `goal` the least
/// ratio that meets it, and against `bound`, what the machine can reach at all.
fn throughput_row(
    section: &str,
    alg: &str,
    result: &Value,
    (limit, limit_text): (f64, String),
    goal: f64,
    bound: f64,
) -> Row {
    let rps = result["rps"].as_f64().unwrap_or(0.0);
    let ratio = rps / limit;
    Row {
        section: section.into(),
        figure: format!(
            "{alg} {rps:.0}/s, p50 {} µs, p99 {} µs",
            result["p50_us"], result["p99_us"]
        ),
        limit: limit_text,
        ratio: Some(ratio),
        goal: format!("≥ {goal}"),
        met: Some(ratio >= goal),
        bound: Some((bound, rps / bound)),
    }
}

const TOKEN_REQUEST: &str = r#"{"apiVersion":"authentication.k8s.io/v1","kind":"TokenRequest","spec":{}}"#;

async fn mint(server: &Server, n: usize) -> anyhow::Result<Vec<String>> {
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

fn review_body(token: &str) -> String {
    json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}})
        .to_string()
}

/// Median time from deleting a bound Pod through `writer` to the first failing TokenReview
/// on `reviewer` (the same server, or another one on the same store), with the token
/// verified (and cached) on `reviewer` beforehand.
async fn revocation_ms(writer: &Server, reviewer: &Server) -> anyhow::Result<f64> {
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

fn authorization_rate() -> f64 {
    use badge_auth::rbac::RbacIndex;
    use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    let index = RbacIndex::new();
    for r in 0..1000 {
        let ns = format!("ns-{}", r % 100);
        index.upsert_role(
            &ns,
            Role {
                metadata: ObjectMeta {
                    name: Some(format!("role-{r}")),
                    namespace: Some(ns.clone()),
                    ..Default::default()
                },
                rules: Some(vec![PolicyRule {
                    api_groups: Some(vec![String::new()]),
                    resources: Some(vec!["pods".into()]),
                    verbs: vec!["get".into(), "list".into()],
                    ..Default::default()
                }]),
            },
        );
    }
    for b in 0..10_000 {
        let ns = format!("ns-{}", b % 100);
        index.upsert_role_binding(
            &ns,
            RoleBinding {
                metadata: ObjectMeta {
                    name: Some(format!("binding-{b}")),
                    namespace: Some(ns.clone()),
                    ..Default::default()
                },
                role_ref: RoleRef {
                    api_group: "rbac.authorization.k8s.io".into(),
                    kind: "Role".into(),
                    name: format!("role-{}", b % 1000),
                },
                subjects: Some(vec![Subject {
                    kind: "User".into(),
                    name: format!("user-{}", b % 2000),
                    api_group: Some("rbac.authorization.k8s.io".into()),
                    ..Default::default()
                }]),
            },
        );
    }
    let mut i = 0usize;
    rate(1.0, || {
        i += 1;
        let attrs = badge_auth::Attributes {
            user: badge_auth::UserInfo {
                name: format!("user-{}", i % 2000),
                groups: vec!["system:authenticated".into()],
                ..Default::default()
            },
            verb: "get".into(),
            is_resource_request: true,
            namespace: format!("ns-{}", i % 100),
            resource: "pods".into(),
            ..Default::default()
        };
        std::hint::black_box(badge_auth::Authorizer::authorize(&index, &attrs));
    })
}

async fn bench(quick: bool, badge: &Path, out: &Path) -> anyhow::Result<()> {
    let seconds = if quick { 1.5 } else { 4.0 };
    let mut rows = Vec::new();
    let machine = format!(
        "{} cores, {}, {} MiB",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| c.lines().find(|l| l.starts_with("model name")).map(|l| l
                .split(':')
                .nth(1)
                .unwrap_or("")
                .trim()
                .to_string()))
            .unwrap_or_default(),
        std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| m
                .lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok()))
            .unwrap_or(0)
            / 1024
    );
    eprintln!("machine: {machine}");

    // 1. Raw limits.
    let payload = json!({"sub": "system:serviceaccount:default:default", "iss": "x", "aud": ["x"], "exp": 4_000_000_000i64});
    let mut raw_sign = std::collections::HashMap::new();
    let mut raw_verify = std::collections::HashMap::new();
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

    // 2-4. Token paths on each key type.
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

    // 5. Scale.
    let n = if quick { 5_000 } else { 100_000 };
    let (server, empty_start) = Server::start(badge, tempfile::tempdir()?, &[])?;
    std::thread::sleep(Duration::from_millis(500));
    let rss_empty = server.rss_bytes();
    let sas: Vec<String> = (0..n)
        .map(|i| json!({"metadata": {"name": format!("sa-{i}")}}).to_string())
        .collect();
    server.load("/api/v1/namespaces/default/serviceaccounts", &sas, 0.0, true)?;
    let secrets: Vec<String> = (0..n)
        .map(|i| json!({"metadata": {"name": format!("s-{i}")}, "stringData": {"k": "v"}}).to_string())
        .collect();
    server.load("/api/v1/namespaces/default/secrets", &secrets, 0.0, true)?;
    std::thread::sleep(Duration::from_millis(500));
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
    let dir = server.stop()?;
    let (server, loaded_start) = Server::start(badge, dir, &[])?;
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
            "{n} ServiceAccounts + {n} Secrets: {:.0} ms",
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

    // 6. Authorization.
    let decisions = authorization_rate();
    rows.push(row(
        "6 authorization",
        format!("{decisions:.0} decisions/s, 1,000 roles and 10,000 bindings (one core)"),
        "-".into(),
        None,
        "-",
        None,
    ));

    // 7. The audit log's cost.
    rows.extend(audit_cost(badge, seconds).await?);

    let mut md = format!(
        "Machine: {machine}. Mode: {}.\n\n| section | figure | limit | ratio | goal | met | bound (ratio) |\n|---|---|---|---|---|---|---|\n",
        if quick { "quick" } else { "full" }
    );
    for r in &rows {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            r.section,
            r.figure,
            r.limit,
            r.ratio.map_or("-".into(), |x| format!("{x:.2}")),
            r.goal,
            r.met.map_or("-", |m| if m { "yes" } else { "no" }),
            r.bound
                .map_or("-".into(), |(bound, ratio)| format!("{bound:.0}/s ({ratio:.2})")),
        ));
    }
    md.push_str(
        "\nbound: the rate reachable if the server added nothing to one crypto operation and one \
         ceiling request, whose costs add on the same cores: 1 / (1/crypto + 1/ceiling).\n",
    );
    println!("{md}");
    std::fs::create_dir_all(out)?;
    std::fs::write(out.join("latest.md"), &md)?;
    let json_rows: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({"section": r.section, "figure": r.figure, "limit": r.limit, "ratio": r.ratio,
                "goal": r.goal, "met": r.met, "bound": r.bound.map(|b| b.0), "bound_ratio": r.bound.map(|b| b.1)})
        })
        .collect();
    std::fs::write(
        out.join("latest.json"),
        serde_json::to_vec_pretty(&json!({"machine": machine, "quick": quick, "rows": json_rows}))?,
    )?;
    Ok(())
}

/// The audit log's cost on the hot paths: ES256 TokenRequest and cached TokenReview with the
/// log off and at its default (Metadata for every request), each measured twice, the two
/// settings alternating so that drift in a shared machine hits both alike.
async fn audit_cost(badge: &Path, seconds: f64) -> anyhow::Result<Vec<Row>> {
    const ISSUE: &str = "/api/v1/namespaces/default/serviceaccounts/default/token";
    const REVIEW: &str = "/apis/authentication.k8s.io/v1/tokenreviews";
    let settings: [(&str, &[&str]); 2] = [("off", &["--audit-log-path="]), ("Metadata", &[])];
    // (issue, cached review) req/s per setting, summed over the rounds.
    let mut sums = [(0.0, 0.0); 2];
    for _round in 0..2 {
        for (i, (_, args)) in settings.iter().enumerate() {
            let mut extra = vec!["--service-account-signing-key-type", "ES256"];
            extra.extend_from_slice(args);
            let (server, _) = Server::start(badge, tempfile::tempdir()?, &extra)?;
            let issued = server.load(ISSUE, &[TOKEN_REQUEST.to_string()], seconds, false)?;
            let token = mint(&server, 1).await?.remove(0);
            let cached = server.load(REVIEW, &[review_body(&token)], seconds, false)?;
            server.stop()?;
            sums[i].0 += issued["rps"].as_f64().unwrap_or(0.0);
            sums[i].1 += cached["rps"].as_f64().unwrap_or(0.0);
        }
    }
    let mut rows = Vec::new();
    for (path, off, on) in [
        ("TokenRequest ES256", sums[0].0 / 2.0, sums[1].0 / 2.0),
        ("TokenReview cached ES256", sums[0].1 / 2.0, sums[1].1 / 2.0),
    ] {
        let ratio = if off > 0.0 { on / off } else { 0.0 };
        rows.push(row(
            "7 audit",
            format!("{path}: audit log off {off:.0} req/s, Metadata {on:.0} req/s"),
            format!("{off:.0}/s"),
            Some(ratio),
            ">= 0.95",
            Some(ratio >= 0.95),
        ));
    }
    Ok(rows)
}
