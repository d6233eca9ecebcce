//! High availability on etcd: several badge servers on one real etcd cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use badge_testkit::etcd::EtcdCluster;
use badge_testkit::{Credential, TestServer, kubectl_path};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_badge");

fn etcd_args(etcd: &EtcdCluster) -> Vec<String> {
    vec![
        "--storage".into(),
        "etcd".into(),
        "--etcd-servers".into(),
        etcd.endpoints_flag(),
    ]
}

fn start_on(etcd: &EtcdCluster) -> TestServer {
    let args = etcd_args(etcd);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    TestServer::start_with(BIN, &args)
}

fn start_peer(etcd: &EtcdCluster, peer: &TestServer) -> TestServer {
    let args = etcd_args(etcd);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    TestServer::start_sharing_pki(BIN, &args, peer)
}

/// Polls `check` until it returns true or `limit` passes.
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

/// Whether this server's controllers hold the leader lease, by its last leadership line.
fn leads(server: &TestServer) -> bool {
    let log = server.log.lock().unwrap();
    log.iter()
        .rev()
        .find(|line| line.contains("leadership changed"))
        .is_some_and(|line| line.contains("leading=true"))
}

fn create_configmap(server: &TestServer, name: &str) -> badge_testkit::RawResponse {
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}});
    server
        .request(
            "POST",
            "/api/v1/namespaces/default/configmaps",
            Some(body.to_string().into_bytes()),
            &[("Content-Type", "application/json")],
            Credential::Admin,
        )
        .unwrap()
}

fn whoami(server: &TestServer, token: &str) -> badge_testkit::RawResponse {
    let body = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"});
    server
        .request(
            "POST",
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            Some(body.to_string().into_bytes()),
            &[("Content-Type", "application/json")],
            Credential::Bearer(token.to_string()),
        )
        .unwrap()
}

#[test]
fn ha_servers_share_objects_watches_tokens_and_controllers() {
    let mut etcd = EtcdCluster::start(3);
    let a = start_on(&etcd);
    let b = start_peer(&etcd, &a);

    // Written through one, read through the other at once (a consistent read).
    a.kubectl_ok(&["create", "serviceaccount", "robot"]);
    let uid_a = a.kubectl_ok(&["get", "sa", "robot", "-o", "jsonpath={.metadata.uid}"]);
    let uid_b = b.kubectl_ok(&["get", "sa", "robot", "-o", "jsonpath={.metadata.uid}"]);
    assert!(!uid_a.is_empty());
    assert_eq!(uid_a, uid_b, "both servers see the same object");

    // Watched through the other.
    a.kubectl_ok(&["create", "configmap", "before"]);
    let mut watch = Command::new(kubectl_path())
        .arg("--kubeconfig")
        .arg(b.kubeconfig())
        .args(["get", "configmaps", "--watch", "-o", "name"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (lines_tx, lines) = mpsc::channel();
    let stdout = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let wait_line = |want: &str| {
        let deadline = Instant::now() + Duration::from_secs(15);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match lines.recv_timeout(left) {
                Ok(line) if line.trim() == want => return,
                Ok(_) => continue,
                Err(_) => break,
            }
        }
        panic!("the watch through the other server never showed {want}");
    };
    wait_line("configmap/before");
    a.kubectl_ok(&["create", "configmap", "after"]);
    wait_line("configmap/after");
    let _ = watch.kill();
    let _ = watch.wait();

    // A token issued by one verifies on the other: the signing keys live in etcd.
    let token = a.kubectl_ok(&["create", "token", "robot"]).trim().to_string();
    let review = whoami(&b, &token);
    assert_eq!(review.status, 201, "{}", String::from_utf8_lossy(&review.body));
    assert_eq!(
        review.json()["status"]["userInfo"]["username"],
        "system:serviceaccount:default:robot"
    );
    // Revocation through one is seen by the other.
    a.kubectl_ok(&["delete", "sa", "robot"]);
    within(Duration::from_secs(5), "revocation on the other server", || {
        whoami(&b, &token).status == 401
    });

    // Controllers run on exactly one server, and move when it dies.
    within(Duration::from_secs(30), "a controller leader", || {
        leads(&a) || leads(&b)
    });
    assert!(!(leads(&a) && leads(&b)), "two leaders at once");
    let (mut leader, survivor) = if leads(&a) { (a, b) } else { (b, a) };
    leader.kill();
    survivor.kubectl_ok(&["create", "namespace", "after-failover"]);
    within(
        Duration::from_secs(45),
        "the default ServiceAccount from the new leader's controllers",
        || {
            survivor
                .kubectl(&["get", "sa", "default", "-n", "after-failover"])
                .status
                .success()
        },
    );
    assert!(leads(&survivor), "the survivor took the lease");

    // One etcd member down: the cluster keeps serving reads and writes.
    etcd.kill(0);
    let mut written = 0;
    within(
        Duration::from_secs(15),
        "writes with one etcd member down",
        || {
            if create_configmap(&survivor, &format!("member-down-{written}")).status == 201 {
                written += 1;
            }
            written >= 5
        },
    );
    let names = survivor.kubectl_ok(&["get", "configmaps", "-o", "name"]);
    for i in 0..written {
        assert!(names.contains(&format!("configmap/member-down-{i}")), "{names}");
    }
    etcd.restart(0);
    etcd.wait_healthy(Duration::from_secs(30));
}

#[test]
fn ha_quorum_loss_fails_writes_and_keeps_cached_reads() {
    let mut etcd = EtcdCluster::start(3);
    let server = start_on(&etcd);
    server.kubectl_ok(&["create", "serviceaccount", "robot"]);
    let token = server
        .kubectl_ok(&["create", "token", "robot"])
        .trim()
        .to_string();
    let mut acknowledged = vec![];
    for i in 0..5 {
        let name = format!("before-{i}");
        assert_eq!(create_configmap(&server, &name).status, 201);
        acknowledged.push(name);
    }

    etcd.kill(1);
    etcd.kill(2);
    // Writes fail with a Status (503 or 504) once the survivor notices it lost quorum;
    // a write racing that moment may still succeed and then counts as acknowledged.
    let mut failure = None;
    for i in 0..50 {
        let name = format!("during-{i}");
        let response = create_configmap(&server, &name);
        match response.status {
            201 => acknowledged.push(name),
            _ => {
                failure = Some(response);
                break;
            }
        }
    }
    let failure = failure.expect("writes kept succeeding without quorum");
    let status = failure.json();
    assert!(
        matches!(failure.status, 503 | 504),
        "a write without quorum: {} {status}",
        failure.status
    );
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["code"], failure.status);

    // Reads of cached data keep working, authentication too.
    let got = server.kubectl_ok(&["get", "sa", "robot", "-o", "jsonpath={.metadata.name}"]);
    assert_eq!(got, "robot");
    let listed = server.kubectl_ok(&["get", "configmaps", "-o", "name"]);
    for name in &acknowledged {
        assert!(listed.contains(&format!("configmap/{name}")), "{listed}");
    }
    let review = whoami(&server, &token);
    assert_eq!(review.status, 201, "{}", String::from_utf8_lossy(&review.body));

    // Quorum back: writes work again and nothing acknowledged was lost.
    etcd.restart(1);
    etcd.restart(2);
    etcd.wait_healthy(Duration::from_secs(30));
    within(Duration::from_secs(20), "writes after recovery", || {
        create_configmap(&server, "after-recovery").status == 201
    });
    // A consistent read answers once the server's watch has caught up with the recovered
    // cluster; until then it refuses (504 Too large resource version) rather than serve a
    // stale list, so wait for an answer, then check that it holds everything.
    let mut listed = String::new();
    within(
        Duration::from_secs(60),
        "a consistent list after recovery",
        || {
            let out = server.kubectl(&["get", "configmaps", "-o", "name"]);
            listed = String::from_utf8_lossy(&out.stdout).into_owned();
            out.status.success()
        },
    );
    assert!(listed.contains("configmap/after-recovery"), "{listed}");
    for name in &acknowledged {
        assert!(
            listed.contains(&format!("configmap/{name}")),
            "lost {name}: {listed}"
        );
    }
}

/// What one writer saw of one attempt.
enum Outcome {
    /// 200: applied on top of `base`.
    Applied { base: String },
    /// 409 against `base`.
    Conflict { base: String },
    /// No answer, or 5xx: applied or not.
    Unknown,
}

#[test]
fn ha_concurrent_writers_lose_nothing_acknowledged() {
    let etcd = EtcdCluster::start(1);
    let a = start_on(&etcd);
    let mut b = start_peer(&etcd, &a);
    let path = "/api/v1/namespaces/default/configmaps/ledger";
    assert_eq!(create_configmap(&a, "ledger").status, 201);

    const WRITERS: usize = 4;
    const ATTEMPTS: usize = 100;
    let outcomes: Vec<Vec<(String, Outcome)>> = std::thread::scope(|scope| {
        let servers = [&a, &b];
        let handles: Vec<_> = (0..WRITERS)
            .map(|writer| {
                let server = servers[writer % 2];
                scope.spawn(move || {
                    let mut seen = vec![];
                    for attempt in 0..ATTEMPTS {
                        let id = format!("w{writer}-{attempt}");
                        let Ok(current) = server.request("GET", path, None, &[], Credential::Admin) else {
                            break;
                        };
                        if current.status != 200 {
                            continue;
                        }
                        let mut object = current.json();
                        let base = object["metadata"]["resourceVersion"]
                            .as_str()
                            .unwrap()
                            .to_string();
                        let entries = object["data"]["entries"].as_str().unwrap_or("").to_string();
                        object["data"] = json!({"entries": format!("{entries}{id},")});
                        let put = server.request(
                            "PUT",
                            path,
                            Some(object.to_string().into_bytes()),
                            &[("Content-Type", "application/json")],
                            Credential::Admin,
                        );
                        let outcome = match put {
                            Ok(r) if r.status == 200 => Outcome::Applied { base },
                            Ok(r) if r.status == 409 => {
                                assert_eq!(r.json()["reason"], "Conflict");
                                Outcome::Conflict { base }
                            }
                            _ => Outcome::Unknown,
                        };
                        seen.push((id, outcome));
                    }
                    seen
                })
            })
            .collect();
        // One server is killed while the writers are at it: whatever it acknowledged is
        // in etcd already; its writers' last attempts have unknown outcomes.
        std::thread::sleep(Duration::from_millis(200));
        let pid = b.pid().unwrap().to_string();
        assert!(
            Command::new("kill")
                .args(["-KILL", &pid])
                .status()
                .unwrap()
                .success()
        );
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    b.kill();

    let ledger = a
        .request("GET", path, None, &[], Credential::Admin)
        .unwrap()
        .json();
    let entries: Vec<String> = ledger["data"]["entries"]
        .as_str()
        .unwrap_or("")
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    let in_ledger: BTreeSet<&String> = entries.iter().collect();
    assert_eq!(
        in_ledger.len(),
        entries.len(),
        "an update applied twice: {entries:?}"
    );

    let mut bases: BTreeMap<String, String> = BTreeMap::new();
    let (mut applied, mut conflicts, mut unknown) = (0, 0, 0);
    for (id, outcome) in outcomes.iter().flatten() {
        match outcome {
            Outcome::Applied { base } => {
                applied += 1;
                assert!(in_ledger.contains(id), "acknowledged write {id} was lost");
                // Two acknowledged writes on the same base: one overwrote the other.
                if let Some(other) = bases.insert(base.clone(), id.clone()) {
                    panic!("{id} and {other} were both acknowledged on resourceVersion {base}");
                }
            }
            Outcome::Conflict { .. } => {
                conflicts += 1;
                assert!(!in_ledger.contains(id), "{id} got 409 but was applied");
            }
            Outcome::Unknown => unknown += 1,
        }
    }
    // A 409 is genuine when another write did move the object on from the base it read.
    for (id, outcome) in outcomes.iter().flatten() {
        if let Outcome::Conflict { base } = outcome {
            assert!(
                bases.contains_key(base) || unknown > 0,
                "{id} got 409 on resourceVersion {base}, which no other write replaced"
            );
        }
    }
    eprintln!("concurrent writers: {applied} applied, {conflicts} conflicts, {unknown} unknown");
    assert!(
        applied > 0 && conflicts > 0,
        "the writers contended: {applied} applied, {conflicts} conflicts"
    );
    assert_eq!(
        entries.len(),
        applied
            + outcomes
                .iter()
                .flatten()
                .filter(|(id, o)| matches!(o, Outcome::Unknown) && in_ledger.contains(id))
                .count(),
        "the ledger holds exactly the applied writes"
    );
}

fn migrate(server: &TestServer, etcd: &EtcdCluster, to: &str) -> std::process::Output {
    Command::new(BIN)
        .arg("migrate")
        .arg("--data-dir")
        .arg(server.data_dir())
        .args(["--to", to, "--etcd-servers", &etcd.endpoints_flag()])
        .output()
        .unwrap()
}

#[test]
fn migrate_copies_a_data_dir_into_etcd_and_back() {
    let etcd = EtcdCluster::start(1);
    let mut server = TestServer::start(BIN);
    server.kubectl_ok(&["create", "serviceaccount", "robot"]);
    server.kubectl_ok(&["create", "secret", "generic", "creds", "--from-literal=k=v"]);
    let uid = server.kubectl_ok(&["get", "sa", "robot", "-o", "jsonpath={.metadata.uid}"]);
    let token = server
        .kubectl_ok(&["create", "token", "robot"])
        .trim()
        .to_string();
    assert_eq!(server.stop().code(), Some(0));

    let out = migrate(&server, &etcd, "etcd");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("copied"), "{out:?}");

    let args = etcd_args(&etcd);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    server.restart_with(&args);
    let on_etcd = server.kubectl_ok(&["get", "sa", "robot", "-o", "jsonpath={.metadata.uid}"]);
    assert_eq!(on_etcd, uid, "uids are kept");
    let secret = server.kubectl_ok(&["get", "secret", "creds", "-o", "jsonpath={.data.k}"]);
    assert_eq!(secret, "dg==", "data is kept");
    // The key ring came along: tokens issued before the move still verify.
    let review = whoami(&server, &token);
    assert_eq!(review.status, 201, "{}", String::from_utf8_lossy(&review.body));
    server.kubectl_ok(&["create", "configmap", "written-on-etcd"]);

    // A second copy into the same etcd is refused: nothing there is overwritten.
    assert_eq!(server.stop().code(), Some(0));
    let again = migrate(&server, &etcd, "etcd");
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already holds data"),
        "{again:?}"
    );

    // And back into a fresh embedded store.
    for file in ["store.db", "store.db-wal", "store.db-shm"] {
        let _ = std::fs::remove_file(server.data_dir().join(file));
    }
    let out = migrate(&server, &etcd, "embedded");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    server.restart_with(&[]);
    let back = server.kubectl_ok(&["get", "sa", "robot", "-o", "jsonpath={.metadata.uid}"]);
    assert_eq!(back, uid);
    server.kubectl_ok(&["get", "configmap", "written-on-etcd"]);
    assert_eq!(whoami(&server, &token).status, 201);
}

/// The raw value of a store key in etcd.
fn etcd_value(etcd: &EtcdCluster, key: &str) -> Vec<u8> {
    use badge_store::Store;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store =
            badge_store_etcd::EtcdStore::new(badge_store_etcd::EtcdConfig::new(etcd.endpoints())).unwrap();
        store
            .get(key)
            .await
            .unwrap()
            .0
            .expect("the key exists")
            .value
            .to_vec()
    })
}

#[test]
fn ha_key_ring_is_sealed_and_needs_the_shared_seal_key() {
    let etcd = EtcdCluster::start(1);
    let _server = start_on(&etcd);
    let ring = etcd_value(&etcd, "/badge/serviceaccount-keys");
    assert!(
        ring.starts_with(b"badge-sealed:v1:"),
        "the key ring is sealed in etcd"
    );
    assert!(
        !String::from_utf8_lossy(&ring).contains("PRIVATE KEY"),
        "no private key in the clear"
    );

    // A server with its own certificates (so its own seal key) cannot use the ring: it
    // refuses to start rather than sign with keys of its own.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let output = Command::new(BIN)
        .args(["server", "--secure-port", "0", "--storage", "etcd"])
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--etcd-servers", &etcd.endpoints_flag()])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot be opened with this key"), "{stderr}");
}

#[test]
fn server_on_etcd_over_tls_with_client_certificates() {
    let etcd = EtcdCluster::start_tls(1);
    let tls = etcd.tls().unwrap();
    let (ca, cert, key) = (
        tls.ca_file.display().to_string(),
        tls.client_cert.display().to_string(),
        tls.client_key.display().to_string(),
    );
    let endpoints = etcd.endpoints_flag();
    assert!(endpoints.starts_with("https://"));
    let server = TestServer::start_with(
        BIN,
        &[
            "--storage",
            "etcd",
            "--etcd-servers",
            &endpoints,
            "--etcd-cafile",
            &ca,
            "--etcd-certfile",
            &cert,
            "--etcd-keyfile",
            &key,
        ],
    );
    server.kubectl_ok(&["create", "serviceaccount", "over-tls"]);
    server.kubectl_ok(&["get", "serviceaccount", "over-tls"]);
}

/// Two deployments on one etcd under different prefixes: neither sees the other's objects,
/// and one's writes (which advance etcd's cluster-wide revision) do not stall the other's
/// consistent reads.
#[test]
fn deployments_with_different_prefixes_share_an_etcd() {
    let etcd = EtcdCluster::start(1);
    let servers = ["/tenant-a/registry", "/tenant-b/registry"].map(|prefix| {
        TestServer::start_with(
            BIN,
            &[
                "--storage",
                "etcd",
                "--etcd-servers",
                &etcd.endpoints_flag(),
                "--etcd-prefix",
                prefix,
            ],
        )
    });
    let [a, b] = &servers;
    a.kubectl_ok(&["create", "serviceaccount", "only-in-a"]);
    let missing = b.kubectl_err(&["get", "sa", "only-in-a"]);
    assert!(missing.contains("NotFound"), "{missing}");
    for i in 0..20 {
        assert_eq!(create_configmap(a, &format!("a-{i}")).status, 201);
    }
    // A consistent read on b right after a's writes: answered, not a 504 after waiting
    // for revisions that never show up in b's watch.
    let response = b
        .request(
            "GET",
            "/api/v1/namespaces/default/configmaps",
            None,
            &[],
            Credential::Admin,
        )
        .unwrap();
    assert_eq!(
        response.status,
        200,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    let names: Vec<String> = response.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert!(names.iter().all(|n| !n.starts_with("a-")), "{names:?}");
}
