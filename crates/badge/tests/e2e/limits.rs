//! What clients may hold: stalled requests are closed, in-flight requests are bounded
//! (429), requests time out (504), and refusals sent before the body was read reach
//! HTTP/2 clients whole.

use std::sync::Arc;
use std::time::Duration;

use badge_testkit::Credential::{Admin, Anonymous};
use badge_testkit::TestServer;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::eventually;

const SA_PATH: &str = "/api/v1/namespaces/default/serviceaccounts";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// TLS client configurations for raw connections to one server.
struct Client {
    port: u16,
    anonymous: Arc<rustls::ClientConfig>,
    admin: Arc<rustls::ClientConfig>,
    h2: Arc<rustls::ClientConfig>,
}

impl Client {
    fn new(server: &TestServer) -> Client {
        let ca = std::fs::read(server.data_dir().join("pki/ca.crt")).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&ca) {
            roots.add(cert.unwrap()).unwrap();
        }
        let builder = || {
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots.clone())
        };
        let (cert, key) = server.admin_identity();
        let certs: Vec<_> = CertificateDer::pem_slice_iter(&cert)
            .collect::<Result<_, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(&key).unwrap();
        let admin = builder().with_client_auth_cert(certs, key).unwrap();
        let mut h2 = builder().with_no_client_auth();
        h2.alpn_protocols = vec![b"h2".to_vec()];
        Client {
            port: server.port,
            anonymous: Arc::new(builder().with_no_client_auth()),
            admin: Arc::new(admin),
            h2: Arc::new(h2),
        }
    }

    async fn connect(&self, config: &Arc<rustls::ClientConfig>) -> TlsStream<TcpStream> {
        let tcp = TcpStream::connect(("127.0.0.1", self.port)).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        tokio_rustls::TlsConnector::from(config.clone())
            .connect(name, tcp)
            .await
            .unwrap()
    }

    /// Sends the head of a request and the start of its body, and leaves the rest unsent.
    async fn stalled(
        &self,
        config: &Arc<rustls::ClientConfig>,
        method: &str,
        path: &str,
    ) -> TlsStream<TcpStream> {
        let mut tls = self.connect(config).await;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
             Content-Length: 100\r\n\r\n{{"
        );
        tls.write_all(head.as_bytes()).await.unwrap();
        tls.flush().await.unwrap();
        tls
    }
}

/// Reads until the server closes the connection (EOF or an error), within `limit`.
async fn closed_within(mut tls: TlsStream<TcpStream>, limit: Duration) -> bool {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(limit, async {
        loop {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// Reads one HTTP/1.1 response with a Content-Length: the status code and the body.
async fn read_response(tls: &mut TlsStream<TcpStream>) -> (u16, String, serde_json::Value) {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        let n = tls.read(&mut buf).await.unwrap();
        assert!(
            n > 0,
            "closed before a response: {}",
            String::from_utf8_lossy(&data)
        );
        data.extend_from_slice(&buf[..n]);
        if let Some(at) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = String::from_utf8_lossy(&data[..head_end]).to_string();
    let code: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap();
    while data.len() < head_end + length {
        let n = tls.read(&mut buf).await.unwrap();
        assert!(n > 0);
        data.extend_from_slice(&buf[..n]);
    }
    let body = serde_json::from_slice(&data[head_end..head_end + length]).unwrap();
    (code, head, body)
}

#[test]
fn stalled_requests_are_closed_while_the_admin_is_served() {
    let s = TestServer::start_with(env!("CARGO_BIN_EXE_badge"), &["--client-idle-timeout=10s"]);
    let client = Client::new(&s);
    let rt = runtime();
    let stalled = rt.block_on(async {
        let mut stalled = Vec::new();
        for i in 0..300 {
            // Half a request head; or, from a client allowed to create, a whole head and
            // the start of a body the handler waits for.
            let tls = if i % 2 == 0 {
                let mut tls = client.connect(&client.anonymous).await;
                tls.write_all(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\n")
                    .await
                    .unwrap();
                tls.flush().await.unwrap();
                tls
            } else {
                client.stalled(&client.admin, "POST", SA_PATH).await
            };
            stalled.push(tls);
        }
        // HTTP/2 clients that never send their preface, or half of it.
        for i in 0..20 {
            let mut tls = client.connect(&client.h2).await;
            assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
            if i % 2 == 0 {
                tls.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
                tls.flush().await.unwrap();
            }
            stalled.push(tls);
        }
        stalled
    });

    let ready = s.request("GET", "/readyz", None, &[], Admin).unwrap();
    assert_eq!((ready.status, ready.body.as_slice()), (200, b"ok".as_slice()));
    assert_eq!(s.kubectl_ok(&["get", "--raw", "/readyz"]), "ok");

    let still_open = rt.block_on(async {
        let waits: Vec<_> = stalled
            .into_iter()
            .map(|tls| tokio::spawn(closed_within(tls, Duration::from_secs(90))))
            .collect();
        let mut open = 0;
        for wait in waits {
            if !wait.await.unwrap() {
                open += 1;
            }
        }
        open
    });
    assert_eq!(still_open, 0, "stalled connections the server did not close");
    let ready = s.request("GET", "/readyz", None, &[], Anonymous).unwrap();
    assert_eq!(ready.status, 200);
}

#[test]
fn requests_past_the_inflight_limits_get_429() {
    let s = TestServer::start_with(
        env!("CARGO_BIN_EXE_badge"),
        &["--max-requests-inflight=1", "--max-mutating-requests-inflight=1"],
    );
    let client = Client::new(&s);
    let rt = runtime();
    // The admin's create whose body is still coming holds the one mutating slot.
    let held_mutating = rt.block_on(client.stalled(&client.admin, "POST", SA_PATH));
    let body = br#"{"metadata":{"name":"refused"}}"#.to_vec();
    let mut refused = None;
    eventually("an anonymous create to be refused with 429", || {
        let r = s
            .request("POST", SA_PATH, Some(body.clone()), &[], Anonymous)
            .unwrap();
        assert!(r.status == 429 || r.status == 403, "{}", r.status);
        let done = r.status == 429;
        refused = Some(r);
        done
    });
    let r = refused.unwrap();
    assert_eq!(r.header("retry-after"), "1");
    let status = r.json();
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["reason"], "TooManyRequests");
    assert_eq!(status["code"], 429);
    assert_eq!(status["message"], "Too many requests, please try again later.");
    assert_eq!(status["details"]["retryAfterSeconds"], 1);

    // Reads are counted apart: the read-only slot is free.
    let list = s.request("GET", SA_PATH, None, &[], Anonymous).unwrap();
    assert_eq!(list.status, 403);
    // system:masters is always served, as upstream.
    let exempt = br#"{"metadata":{"name":"exempt"}}"#.to_vec();
    let created = s.request("POST", SA_PATH, Some(exempt), &[], Admin).unwrap();
    assert_eq!(created.status, 201, "{}", String::from_utf8_lossy(&created.body));

    // A read whose body is still coming holds the read-only slot.
    let held_read = rt.block_on(client.stalled(&client.admin, "GET", SA_PATH));
    eventually("an anonymous read to be refused with 429", || {
        let r = s.request("GET", "/version", None, &[], Anonymous).unwrap();
        r.status == 429
    });
    // Watches are long-running: never counted, never refused.
    let watch = s
        .request("GET", &format!("{SA_PATH}?watch=true"), None, &[], Anonymous)
        .unwrap();
    assert_eq!(watch.status, 403);
    // The refusal reaches an HTTP/2 client that is still sending its body.
    if curl_speaks_http2() {
        let (written, status) = Curl::new(&s).post("--http2", From::Anonymous, "small");
        assert_eq!(written, "429 2");
        assert_eq!(status["reason"], "TooManyRequests");
    }
    drop((held_mutating, held_read));
    eventually("the slots to be free again", || {
        s.request("GET", "/version", None, &[], Anonymous).unwrap().status == 200
    });
}

#[test]
fn requests_time_out_as_upstream() {
    let mut s = crate::server();
    let client = Client::new(&s);
    let rt = runtime();
    // `?timeout=` shortens the server's minute.
    let (code, head, status) = rt.block_on(async {
        let mut tls = client
            .stalled(&client.admin, "POST", &format!("{SA_PATH}?timeout=1s"))
            .await;
        tokio::time::timeout(Duration::from_secs(30), read_response(&mut tls))
            .await
            .expect("no 504 within 30s")
    });
    assert_eq!(code, 504, "{head}");
    assert_eq!(status["reason"], "Timeout");
    assert_eq!(status["code"], 504);
    assert_eq!(
        status["message"],
        "Timeout: request did not complete within the allotted timeout"
    );
    let bad = s
        .request("GET", &format!("{SA_PATH}?timeout=soon"), None, &[], Admin)
        .unwrap();
    assert_eq!(bad.status, 400);
    assert_eq!(
        bad.json()["message"],
        "invalid timeout specified in the request URL - time: invalid duration \"soon\""
    );

    // --request-timeout bounds requests, but not watches.
    s.restart_with(&["--request-timeout=1s"]);
    let client = Client::new(&s);
    let (mut watch, watch_head) = rt.block_on(async {
        let mut tls = client.connect(&client.admin).await;
        let head = format!("GET {SA_PATH}?watch=true HTTP/1.1\r\nHost: localhost\r\n\r\n");
        tls.write_all(head.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tls.read(&mut buf).await.unwrap();
        (tls, String::from_utf8_lossy(&buf[..n]).to_string())
    });
    assert!(watch_head.starts_with("HTTP/1.1 200"), "{watch_head}");
    let (code, _, status) = rt.block_on(async {
        let mut tls = client.stalled(&client.admin, "POST", SA_PATH).await;
        tokio::time::timeout(Duration::from_secs(30), read_response(&mut tls))
            .await
            .expect("no 504 within 30s")
    });
    assert_eq!((code, status["reason"].as_str()), (504, Some("Timeout")));
    // The watch opened before that request outlived its second, and still delivers.
    let sa = br#"{"metadata":{"name":"after-the-timeout"}}"#.to_vec();
    let created = s.request("POST", SA_PATH, Some(sa), &[], Admin).unwrap();
    assert_eq!(created.status, 201);
    let seen = rt.block_on(async {
        let mut seen = watch_head;
        let mut buf = vec![0u8; 4096];
        tokio::time::timeout(Duration::from_secs(30), async {
            while !seen.contains("after-the-timeout") {
                let n = watch.read(&mut buf).await.unwrap();
                assert!(n > 0, "the watch ended: {seen}");
                seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
        .await
        .is_ok()
    });
    assert!(seen, "the watch did not deliver the new ServiceAccount");
}

fn curl_speaks_http2() -> bool {
    std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains("HTTP2"))
}

/// Who curl's request is from.
enum From {
    Admin,
    Anonymous,
    Bearer(&'static str),
}

/// curl POSTing bodies to a server's ServiceAccounts, with the admin's certificate at hand.
struct Curl {
    dir: tempfile::TempDir,
    url: String,
}

impl Curl {
    fn new(server: &TestServer) -> Curl {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = server.admin_identity();
        std::fs::write(dir.path().join("admin.crt"), cert).unwrap();
        std::fs::write(dir.path().join("admin.key"), key).unwrap();
        std::fs::write(dir.path().join("small"), vec![b'a'; 200 * 1024]).unwrap();
        std::fs::write(dir.path().join("large"), vec![b'a'; 4 * 1024 * 1024]).unwrap();
        Curl {
            dir,
            url: format!("https://127.0.0.1:{}{SA_PATH}", server.port),
        }
    }

    /// POSTs the body file named `body`: what curl reports (`code version`) and the Status.
    fn post(&self, version: &str, from: From, body: &str) -> (String, serde_json::Value) {
        let path = |name: &str| self.dir.path().join(name);
        let mut cmd = std::process::Command::new("curl");
        cmd.args(["-sS", "-k", version, "-X", "POST"])
            .args(["-H", "Content-Type: application/json"])
            .arg("--data-binary")
            .arg(format!("@{}", path(body).display()))
            .arg("-o")
            .arg(path("out"))
            .args(["-w", "%{http_code} %{http_version}"]);
        match from {
            From::Admin => {
                cmd.arg("--cert")
                    .arg(path("admin.crt"))
                    .arg("--key")
                    .arg(path("admin.key"));
            }
            From::Bearer(token) => {
                cmd.arg("-H").arg(format!("Authorization: Bearer {token}"));
            }
            From::Anonymous => {}
        }
        let out = cmd.arg(&self.url).output().unwrap();
        assert!(
            out.status.success(),
            "curl {version} {body}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let written = String::from_utf8_lossy(&out.stdout).to_string();
        let status = serde_json::from_slice(&std::fs::read(path("out")).unwrap()).unwrap();
        (written, status)
    }
}

#[test]
fn refusals_before_the_body_reach_http2_clients_whole() {
    if !curl_speaks_http2() {
        eprintln!("skipped: no curl with HTTP/2");
        return;
    }
    let s = crate::server();
    let curl = Curl::new(&s);
    for (version, shown) in [("--http2", "2"), ("--http1.1", "1.1")] {
        for body in ["small", "large"] {
            let (written, status) = curl.post(version, From::Bearer("not-a-token"), body);
            assert_eq!(written, format!("401 {shown}"), "{body}");
            assert_eq!(status["reason"], "Unauthorized");
            assert_eq!(status["kind"], "Status");
        }
        let (written, status) = curl.post(version, From::Anonymous, "small");
        assert_eq!(written, format!("403 {shown}"));
        assert_eq!(status["reason"], "Forbidden");
        let (written, status) = curl.post(version, From::Admin, "large");
        assert_eq!(written, format!("413 {shown}"));
        assert_eq!(status["reason"], "RequestEntityTooLarge");
        assert_eq!(status["message"], "Request entity too large: limit is 3145728");
    }
}
