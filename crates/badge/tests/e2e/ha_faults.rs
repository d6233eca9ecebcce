//! Servers on etcd under faults: every member stopped, a server cut off while etcd compacts
//! past it. Everything is observed from outside: HTTP statuses, bodies and watch events.

use std::io::{BufRead, BufReader, Read};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use badge_testkit::etcd::EtcdCluster;
use badge_testkit::{Credential, TestServer, kubectl_path};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_badge");

fn get(server: &TestServer, path: &str, credential: Credential) -> (u16, String) {
    let response = server.request("GET", path, None, &[], credential).unwrap();
    (
        response.status,
        String::from_utf8_lossy(&response.body).to_string(),
    )
}

fn token_request(server: &TestServer, sa: &str) -> badge_testkit::RawResponse {
    let body = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}});
    server
        .request(
            "POST",
            &format!("/api/v1/namespaces/default/serviceaccounts/{sa}/token"),
            Some(body.to_string().into_bytes()),
            &[("Content-Type", "application/json")],
            Credential::Admin,
        )
        .unwrap()
}

fn within(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out after {limit:?} waiting for {what}");
}

#[test]
fn ha_etcd_down_fails_readiness_and_token_requests_but_serves_the_cache() {
    let mut etcd = EtcdCluster::start(1);
    let args = [
        "--storage",
        "etcd",
        "--etcd-servers",
        &etcd.endpoints_flag(),
        "--storage-stale-read-bound=2s",
    ];
    let server = TestServer::start_with(BIN, &args);
    server.kubectl_ok(&["create", "serviceaccount", "robot"]);
    assert_eq!(token_request(&server, "robot").status, 201);
    let (code, body) = get(&server, "/readyz?verbose", Credential::Anonymous);
    assert_eq!(
        (code, body.as_str()),
        (200, "[+]ping ok\n[+]etcd ok\nreadyz check passed\n")
    );
    let (code, body) = get(&server, "/readyz?verbose&exclude=nope", Credential::Anonymous);
    assert_eq!(
        (code, body.as_str()),
        (
            200,
            "[+]ping ok\n[+]etcd ok\nwarn: some health checks cannot be excluded: no matches for \"nope\"\nreadyz check passed\n"
        )
    );
    let token = token_request(&server, "robot").json()["status"]["token"]
        .as_str()
        .unwrap()
        .to_string();

    etcd.kill(0);
    within(Duration::from_secs(30), "/readyz to fail", || {
        get(&server, "/readyz", Credential::Anonymous).0 == 500
    });
    let (code, body) = get(&server, "/readyz?verbose", Credential::Anonymous);
    assert_eq!(
        (code, body.as_str()),
        (
            500,
            "[+]ping ok\n[-]etcd failed: reason withheld\nreadyz check failed\n"
        )
    );
    let (code, body) = get(&server, "/readyz?exclude=etcd&verbose", Credential::Anonymous);
    assert_eq!(
        (code, body.as_str()),
        (200, "[+]ping ok\n[+]etcd excluded: ok\nreadyz check passed\n")
    );
    let (code, body) = get(&server, "/readyz/etcd", Credential::Admin);
    assert_eq!(code, 500);
    assert!(body.starts_with("internal server error: "), "{body}");
    assert_eq!(
        get(&server, "/readyz/ping", Credential::Admin),
        (200, "ok".into())
    );
    assert_eq!(get(&server, "/livez", Credential::Anonymous), (200, "ok".into()));

    // What the cache holds is still served, and tokens still verify from it.
    let (code, body) = get(
        &server,
        "/api/v1/namespaces/default/serviceaccounts/robot?resourceVersion=0",
        Credential::Admin,
    );
    assert_eq!(code, 200, "{body}");
    let review = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"});
    let whoami = server
        .request(
            "POST",
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            Some(review.to_string().into_bytes()),
            &[("Content-Type", "application/json")],
            Credential::Bearer(token),
        )
        .unwrap();
    assert_eq!(whoami.status, 201, "{}", String::from_utf8_lossy(&whoami.body));

    // But no token is signed with a key ring that may have been revoked elsewhere.
    let refused = token_request(&server, "robot");
    assert_eq!(refused.status, 503, "{}", String::from_utf8_lossy(&refused.body));
    let status = refused.json();
    assert_eq!(status["reason"], "ServiceUnavailable");
    assert_eq!(
        status["message"],
        "the service account signing keys could not be confirmed current for 2s; refusing to issue tokens"
    );
    // The staleness is visible: past the bound, and the bound itself.
    let (code, metrics) = get(&server, "/metrics", Credential::Admin);
    assert_eq!(code, 200, "{metrics}");
    let gauge = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {metrics}"))
    };
    assert_eq!(gauge("badge_storage_stale_read_bound_seconds"), 2.0);
    assert!(gauge("badge_storage_unconfirmed_seconds") > 2.0, "{metrics}");
    assert!(gauge("badge_signing_keys_unconfirmed_seconds") > 2.0, "{metrics}");

    let logged = |needle: &str| {
        let log = server.log.lock().unwrap();
        log.iter().filter(|line| line.contains(needle)).count()
    };
    const CROSSED: &str = "signing keys could not be confirmed current; refusing to issue tokens";
    const RECOVERED: &str = "signing keys are confirmed current again";
    within(Duration::from_secs(30), "the crossing to be logged", || {
        logged(CROSSED) > 0
    });

    etcd.restart(0);
    etcd.wait_healthy(Duration::from_secs(30));
    within(Duration::from_secs(30), "/readyz to pass", || {
        get(&server, "/readyz", Credential::Anonymous) == (200, "ok".into())
    });
    within(Duration::from_secs(30), "tokens to be issued again", || {
        token_request(&server, "robot").status == 201
    });
    within(Duration::from_secs(30), "the recovery to be logged", || {
        logged(RECOVERED) > 0
    });
    assert_eq!(
        (logged(CROSSED), logged(RECOVERED)),
        (1, 1),
        "logged once each way"
    );
}

/// A TCP forwarder to one etcd member that can cut every connection through it and refuse
/// new ones, then let them through again: one server cut off while the cluster goes on.
struct Cutter {
    port: u16,
    open: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<TcpStream>>>,
}

impl Cutter {
    fn start(target: u16) -> Cutter {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = Arc::new(AtomicBool::new(true));
        let connections: Arc<Mutex<Vec<TcpStream>>> = Default::default();
        let (accept_open, accept_connections) = (open.clone(), connections.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                if !accept_open.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(upstream) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let mut tracked = accept_connections.lock().unwrap();
                tracked.push(client.try_clone().unwrap());
                tracked.push(upstream.try_clone().unwrap());
                drop(tracked);
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), upstream.try_clone().unwrap()),
                    (upstream, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Cutter {
            port,
            open,
            connections,
        }
    }

    fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        for connection in self.connections.lock().unwrap().drain(..) {
            let _ = connection.shutdown(Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

fn client_port(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().parse().unwrap()
}

/// Compacts etcd at its current revision through `endpoint`: the member answering has
/// applied the compaction by the time the call returns.
fn compact_through(endpoint: &str) {
    use badge_store::Store;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store =
            badge_store_etcd::EtcdStore::new(badge_store_etcd::EtcdConfig::new(vec![endpoint.to_string()]))
                .unwrap();
        let current = store.current_revision().await.unwrap();
        store.compact(current).await.unwrap();
    });
}

#[test]
fn ha_a_relist_after_compaction_ends_open_watches_with_410() {
    let etcd = EtcdCluster::start(1);
    let endpoint = etcd.endpoints()[0].clone();
    let cutter = Cutter::start(client_port(&endpoint));
    let through_cutter = format!("http://127.0.0.1:{}", cutter.port);
    let cut_off = TestServer::start_with(BIN, &["--storage", "etcd", "--etcd-servers", &through_cutter]);
    let writer =
        TestServer::start_sharing_pki(BIN, &["--storage", "etcd", "--etcd-servers", &endpoint], &cut_off);
    cut_off.kubectl_ok(&["create", "configmap", "before"]);

    let mut watch = Command::new(kubectl_path())
        .arg("--kubeconfig")
        .arg(cut_off.kubeconfig())
        .args([
            "get",
            "configmaps",
            "--watch",
            "-o",
            "json",
            "--output-watch-events",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines_tx, lines) = mpsc::channel::<String>();
    let stdout = watch.stdout.take().unwrap();
    let stderr = watch.stderr.take().unwrap();
    for mut stream in [Box::new(stdout) as Box<dyn Read + Send>, Box::new(stderr)] {
        let tx = lines_tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(&mut stream).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    let mut seen = String::new();
    let mut wait_for = |want: &str, limit: Duration| {
        let deadline = Instant::now() + limit;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match lines.recv_timeout(left) {
                Ok(line) => {
                    seen.push_str(&line);
                    seen.push('\n');
                    if seen.contains(want) {
                        return;
                    }
                }
                Err(_) => break,
            }
        }
        panic!("the watch never showed {want}; it showed:\n{seen}");
    };
    // The watch is open once an object created after the list shows up in it.
    wait_for("\"before\"", Duration::from_secs(20));
    cut_off.kubectl_ok(&["create", "configmap", "opened"]);
    wait_for("\"opened\"", Duration::from_secs(20));

    // Cut off, the server misses writes, and etcd compacts past its position.
    cutter.cut();
    writer.kubectl_ok(&["create", "configmap", "missed"]);
    writer.kubectl_ok(&["delete", "configmap", "before"]);
    compact_through(&endpoint);
    cutter.restore();

    // Reconnected, it relists; the watch cannot be told what it missed, so it is ended
    // with 410 Expired and the client relists.
    wait_for("too old resource version", Duration::from_secs(60));
    assert!(seen.contains("Expired"), "{seen}");
    assert!(!seen.contains("\"missed\""), "{seen}");
    let _ = watch.kill();
    let _ = watch.wait();

    // A client that relists sees what the watch could not tell it.
    let listed = cut_off.kubectl_ok(&["get", "configmaps", "-o", "name"]);
    assert!(listed.contains("configmap/missed"), "{listed}");
    assert!(!listed.contains("configmap/before"), "{listed}");
}

#[test]
fn ha_etcd_out_of_space_answers_with_its_text_and_fails_readiness() {
    let etcd = EtcdCluster::start_with_args(1, &["--quota-backend-bytes=4194304"]);
    let server = TestServer::start_with(
        BIN,
        &["--storage", "etcd", "--etcd-servers", &etcd.endpoints_flag()],
    );
    assert_eq!(get(&server, "/readyz", Credential::Anonymous), (200, "ok".into()));
    let filler = "x".repeat(400 * 1024);
    let mut refused = None;
    for i in 0..40 {
        let body = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": format!("filler-{i}")},
            "data": {"x": filler},
        });
        let response = server
            .request(
                "POST",
                "/api/v1/namespaces/default/configmaps",
                Some(body.to_string().into_bytes()),
                &[("Content-Type", "application/json")],
                Credential::Admin,
            )
            .unwrap();
        if response.status != 201 {
            refused = Some(response);
            break;
        }
    }
    let refused = refused.expect("etcd never ran out of space");
    let status = refused.json();
    assert_eq!(refused.status, 500, "{status}");
    // As upstream passes etcd's error through: reason Unknown, etcd's text.
    assert_eq!(status["reason"].as_str().unwrap_or(""), "");
    assert_eq!(status["message"], "etcdserver: mvcc: database space exceeded");

    let (code, body) = get(&server, "/readyz?verbose", Credential::Anonymous);
    assert_eq!(
        (code, body.as_str()),
        (
            500,
            "[+]ping ok\n[-]etcd failed: reason withheld\nreadyz check failed\n"
        )
    );
    let (code, body) = get(&server, "/readyz/etcd", Credential::Admin);
    assert_eq!(code, 500);
    assert!(body.contains("NOSPACE"), "{body}");
    assert_eq!(get(&server, "/livez", Credential::Anonymous), (200, "ok".into()));
    // Reads go on.
    let (code, _) = get(
        &server,
        "/api/v1/namespaces/default/configmaps/filler-0",
        Credential::Admin,
    );
    assert_eq!(code, 200);
}
