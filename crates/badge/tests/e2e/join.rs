//! A node joining with a bootstrap token, end to end: `badge token create
//! --print-join-command` prints the agent command; the agent (a real process) discovers the
//! cluster through `kube-public/cluster-info`, checks its JWS and CA pin, gets its client
//! certificate through a CertificateSigningRequest, registers its Node, writes its pods'
//! tokens, rotates its certificate, and rides out an API outage.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use badge_testkit::Credential::Admin;
use badge_testkit::{ChildGuard, TestServer};
use serde_json::Value;

use crate::clusterinfo::{openssl_pin, pyjwt_verify};
use crate::{CLUSTER_INFO, authenticated, badge_token, server};

/// Polls `check` until it holds or `timeout` passes.
fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

/// `badge token create --print-join-command`: the printed words.
fn join_command(s: &TestServer, extra: &[&str]) -> Vec<String> {
    badge_token(s, &[&["create", "--print-join-command"], extra].concat())
        .split_whitespace()
        .map(String::from)
        .collect()
}

/// The value after `flag` in a command line.
fn flag<'a>(words: &'a [String], flag: &str) -> &'a str {
    let at = words.iter().position(|w| w == flag).unwrap();
    &words[at + 1]
}

/// A running agent: the process (killed on drop) and its log file.
struct Agent {
    process: ChildGuard,
    log: PathBuf,
}

impl Agent {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_for_log(&self, what: &str, timeout: Duration) {
        wait_for(&format!("the agent to log {what:?}"), timeout, || {
            self.log().contains(what)
        });
    }
}

/// Runs the printed join command as it is, with the node name and root dir filled in,
/// plus `extra` flags. Its log goes to `root/../agent-N.log`.
fn run_join(words: &[String], node: &str, root: &Path, extra: &[&str]) -> Agent {
    assert_eq!(&words[..2], ["badge", "agent"], "{words:?}");
    let args: Vec<String> = words[2..]
        .iter()
        .map(|w| match w.as_str() {
            "$(hostname)" => node.to_string(),
            "/var/lib/badge-agent" => root.to_str().unwrap().to_string(),
            other => other.to_string(),
        })
        .collect();
    let dir = root.parent().unwrap();
    let n = std::fs::read_dir(dir).unwrap().count();
    let log = dir.join(format!("agent-{n}.log"));
    let process = Command::new(env!("CARGO_BIN_EXE_badge"))
        .arg("agent")
        .args(&args)
        .args(extra)
        .env("BADGE_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    Agent {
        process: ChildGuard(process),
        log,
    }
}

fn create_pod(s: &TestServer, name: &str, node: &str) -> String {
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  serviceAccountName: app\n  nodeName: {node}\n  containers:\n  - name: c\n    image: busybox\n"
    );
    let out = s.kubectl_with_stdin(&["create", "-f", "-"], Some(&manifest));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    s.kubectl_ok(&["get", "pod", name, "-o", "jsonpath={.metadata.uid}"])
}

/// The pod's projected token, once the agent has written it.
fn token_file(root: &Path, uid: &str) -> Option<String> {
    let dir = root
        .join("pods")
        .join(uid)
        .join("volumes")
        .join("kubernetes.io~projected");
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .find_map(|e| std::fs::read_to_string(e.path().join("token")).ok())
}

fn wait_for_token(root: &Path, uid: &str) -> String {
    let mut token = None;
    wait_for("the pod's token file", Duration::from_secs(60), || {
        token = token_file(root, uid);
        token.is_some()
    });
    token.unwrap()
}

fn csrs(s: &TestServer) -> Vec<Value> {
    let out = s.kubectl_ok(&["get", "csr", "-o", "json"]);
    serde_json::from_str::<Value>(&out).unwrap()["items"]
        .as_array()
        .unwrap()
        .clone()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// `kubectl auth whoami` with the node's own kubeconfig: its user name.
fn whoami(s: &TestServer, kubeconfig: &Path) -> String {
    let out = Command::new(badge_testkit::kubectl_path())
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(s.data_dir().join("node-kube-cache"))
        .args(["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn cert_file(root: &Path) -> PathBuf {
    root.join("pki/kubelet-client-current.pem")
}

#[test]
fn a_node_joins_with_a_token_and_its_pods_tokens_authenticate() {
    let s = server();
    s.kubectl_ok(&["create", "sa", "app"]);
    let words = join_command(&s, &[]);
    let token = flag(&words, "--bootstrap-token").to_string();
    let (id, secret) = token.split_once('.').unwrap();
    assert_eq!(flag(&words, "--server"), format!("https://127.0.0.1:{}", s.port));
    assert_eq!(flag(&words, "--discovery-token-ca-cert-hash"), openssl_pin(&s));

    // The signature the agent checks, checked by an independent HS256 implementation.
    let mut checked = false;
    wait_for(
        "PyJWT to verify the token's cluster-info signature",
        Duration::from_secs(30),
        || {
            let cm = s.request("GET", CLUSTER_INFO, None, &[], Admin).unwrap().json();
            let kubeconfig = cm["data"]["kubeconfig"].as_str().unwrap_or("").to_string();
            checked = cm["data"][format!("jws-kubeconfig-{id}")]
                .as_str()
                .is_some_and(|sig| pyjwt_verify(sig, &kubeconfig, id, secret).is_ok());
            checked
        },
    );

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let agent = run_join(&words, "n1", &root, &[]);
    let kubeconfig = root.join("kubelet.conf");
    wait_for("the node to register", Duration::from_secs(60), || {
        s.kubectl(&["get", "node", "n1"]).status.success()
    });
    assert_eq!(mode(&kubeconfig), 0o600);
    assert_eq!(mode(&cert_file(&root)), 0o600);
    // The node's kubeconfig is the node, for kubectl too.
    assert_eq!(whoami(&s, &kubeconfig), "system:node:n1");

    // One request, by the token's user, for the kubelet signer, approved and issued.
    let requests = csrs(&s);
    assert_eq!(requests.len(), 1, "{requests:?}");
    let csr = &requests[0];
    assert_eq!(csr["spec"]["username"], format!("system:bootstrap:{id}"));
    assert_eq!(
        csr["spec"]["signerName"],
        "kubernetes.io/kube-apiserver-client-kubelet"
    );
    assert!(csr["metadata"]["name"].as_str().unwrap().starts_with("node-csr-"));
    assert_eq!(csr["status"]["conditions"][0]["reason"], "AutoApproved");
    assert!(!csr["status"]["certificate"].as_str().unwrap_or("").is_empty());

    // A pod on the node gets a token that authenticates.
    let uid = create_pod(&s, "web", "n1");
    let pod_token = wait_for_token(&root, &uid);
    assert!(authenticated(&s, &pod_token));

    // Restarted without its token (deleted meanwhile), the agent reuses its certificate.
    drop(agent);
    badge_token(&s, &["delete", id]);
    let agent = run_join(&words, "n1", &root, &[]);
    agent.wait_for_log("no bootstrap needed", Duration::from_secs(30));
    let uid = create_pod(&s, "api", "n1");
    let pod_token = wait_for_token(&root, &uid);
    assert!(authenticated(&s, &pod_token));
    assert_eq!(csrs(&s).len(), 1);
    assert!(!agent.log().contains(secret), "the agent logged the token secret");
}

#[test]
fn a_wrong_ca_hash_is_refused_naming_the_pin_check_and_the_unsafe_skip_warns() {
    let s = server();
    let words = join_command(&s, &[]);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let wrong: Vec<String> = words
        .iter()
        .map(|w| {
            if w.starts_with("sha256:") {
                format!("sha256:{}", "ab".repeat(32))
            } else {
                w.clone()
            }
        })
        .collect();
    let mut agent = run_join(&wrong, "n1", &root, &[]);
    let status = agent
        .process
        .wait_timeout(Duration::from_secs(60))
        .expect("the agent to exit");
    assert!(!status.success());
    let log = agent.log();
    assert!(log.contains("CA public key pin check failed"), "{log}");
    assert!(log.contains(&openssl_pin(&s)), "{log}");
    assert!(!root.join("kubelet.conf").exists());
    assert!(csrs(&s).is_empty());

    // Without a pin the agent refuses to start unless told to skip it, and then warns.
    let unpinned: Vec<String> = {
        let at = words
            .iter()
            .position(|w| w == "--discovery-token-ca-cert-hash")
            .unwrap();
        let mut w = words.clone();
        w.drain(at..at + 2);
        w
    };
    let mut agent = run_join(&unpinned, "n1", &root, &[]);
    let status = agent
        .process
        .wait_timeout(Duration::from_secs(60))
        .expect("the agent to exit");
    assert!(!status.success());
    assert!(
        agent
            .log()
            .contains("--discovery-token-unsafe-skip-ca-verification")
    );
    let agent = run_join(
        &unpinned,
        "n1",
        &root,
        &["--discovery-token-unsafe-skip-ca-verification"],
    );
    wait_for("the node to register", Duration::from_secs(60), || {
        s.kubectl(&["get", "node", "n1"]).status.success()
    });
    let log = agent.log();
    assert!(
        log.contains("WARN") && log.contains("without --discovery-token-ca-cert-hash"),
        "{log}"
    );
}

/// Serves one fixed `cluster-info` body over TLS with a certificate of its own CA, as a
/// server in the middle would, until dropped; returns its URL.
struct FakeServer {
    url: String,
    stop: Arc<std::sync::atomic::AtomicBool>,
    _dir: tempfile::TempDir,
}

impl FakeServer {
    fn start(body: Value) -> FakeServer {
        let dir = tempfile::tempdir().unwrap();
        let pki = badge_pki::Pki::load_or_create(&dir.path().join("pki"), &[]).unwrap();
        let config = pki.server_config(&[b"http/1.1"]).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let body = body.to_string();
        std::thread::spawn(move || {
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok((tcp, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                tcp.set_nonblocking(false).unwrap();
                tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let connection = rustls::ServerConnection::new(config.clone()).unwrap();
                let mut tls = rustls::StreamOwned::new(connection, tcp);
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(response.as_bytes());
                let _ = tls.flush();
                tls.conn.send_close_notify();
                let _ = tls.flush();
            }
        });
        FakeServer { url, stop, _dir: dir }
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

#[test]
fn a_tampered_cluster_info_is_refused_naming_the_jws_check() {
    let s = server();
    let words = join_command(&s, &[]);
    let id = flag(&words, "--bootstrap-token")
        .split_once('.')
        .unwrap()
        .0
        .to_string();
    let mut cm = Value::Null;
    wait_for("the token's signature", Duration::from_secs(30), || {
        cm = s.request("GET", CLUSTER_INFO, None, &[], Admin).unwrap().json();
        cm["data"][format!("jws-kubeconfig-{id}")].is_string()
    });
    // Someone between the node and the server rewrites the kubeconfig to send the node
    // elsewhere; the genuine signature no longer matches it.
    let kubeconfig = cm["data"]["kubeconfig"].as_str().unwrap().to_string();
    let genuine = format!("server: https://127.0.0.1:{}", s.port);
    assert!(kubeconfig.contains(&genuine), "{kubeconfig}");
    cm["data"]["kubeconfig"] = Value::String(kubeconfig.replace(&genuine, "server: https://10.6.6.6:6443"));
    let fake = FakeServer::start(cm.clone());

    let redirected: Vec<String> = words
        .iter()
        .map(|w| {
            if w.starts_with("https://") {
                fake.url.clone()
            } else {
                w.clone()
            }
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let mut agent = run_join(&redirected, "n1", &root, &[]);
    let status = agent
        .process
        .wait_timeout(Duration::from_secs(60))
        .expect("the agent to exit");
    assert!(!status.success());
    let log = agent.log();
    assert!(
        log.contains(&format!(
            "JWS signature check failed: the jws-kubeconfig-{id} signature does not match"
        )),
        "{log}"
    );
    assert!(!root.join("kubelet.conf").exists());
    assert!(csrs(&s).is_empty());

    // The genuine server, once the token's secret was replaced: its signature is of the
    // new secret, and a node holding the old one cannot trust what it reads.
    let key = format!("jws-kubeconfig-{id}");
    let old = cm["data"][&key].clone();
    badge_token(&s, &["create", &format!("{id}.0000000000000000")]);
    wait_for("the signature of the new secret", Duration::from_secs(30), || {
        let cm = s.request("GET", CLUSTER_INFO, None, &[], Admin).unwrap().json();
        cm["data"][&key].is_string() && cm["data"][&key] != old
    });
    let mut agent = run_join(&words, "n1", &root, &[]);
    let status = agent
        .process
        .wait_timeout(Duration::from_secs(60))
        .expect("the agent to exit");
    assert!(!status.success());
    let log = agent.log();
    assert!(log.contains("JWS signature check failed"), "{log}");
    assert!(csrs(&s).is_empty());
}

#[test]
fn the_agent_keeps_its_files_through_an_api_outage_and_refreshes_when_the_server_returns() {
    let mut s = server();
    s.kubectl_ok(&["create", "sa", "app"]);
    let words = join_command(&s, &[]);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    // 3607 s tokens are refreshed after a few seconds.
    let agent = run_join(&words, "n1", &root, &["--token-refresh-fraction", "0.001"]);
    let uid = create_pod(&s, "web", "n1");
    let first = wait_for_token(&root, &uid);

    s.stop();
    // The refresh point passes while the server is down, and retries back off until the
    // next one is half a minute away.
    wait_for(
        "the volume's retries to back off to 32 s",
        Duration::from_secs(120),
        || {
            agent
                .log()
                .lines()
                .any(|l| l.contains("the old files are kept") && l.contains("retry_in=32s"))
        },
    );
    let kept = token_file(&root, &uid).unwrap();

    s.start_on_same_port();
    // Long before that retry, the agent notices the server and refreshes the token.
    let mut refreshed = String::new();
    wait_for(
        "the token refreshed after the outage",
        Duration::from_secs(20),
        || {
            refreshed = token_file(&root, &uid).unwrap_or_default();
            refreshed != kept
        },
    );
    assert!(authenticated(&s, &refreshed));
    // The token kept through the outage was valid all along.
    assert!(authenticated(&s, &kept));
    assert!(authenticated(&s, &first));
    assert!(agent.log().contains("the API server answers again"));
    // The node's own credential survived the outage.
    assert_eq!(whoami(&s, &root.join("kubelet.conf")), "system:node:n1");
}

#[test]
fn the_node_certificate_rotates_before_it_expires_without_a_restart() {
    // 130 s certificates, backdated 5 minutes, are rotated 1 to 87 s after issue.
    let s = TestServer::start_with(
        env!("CARGO_BIN_EXE_badge"),
        &["--cluster-signing-duration", "130s"],
    );
    s.kubectl_ok(&["create", "sa", "app"]);
    let words = join_command(&s, &[]);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let mut agent = run_join(&words, "n1", &root, &[]);
    wait_for("the node to register", Duration::from_secs(60), || {
        s.kubectl(&["get", "node", "n1"]).status.success()
    });
    let first = std::fs::read(cert_file(&root)).unwrap();

    wait_for(
        "a renewal request by the node itself",
        Duration::from_secs(150),
        || {
            csrs(&s)
                .iter()
                .any(|c| c["spec"]["username"] == "system:node:n1" && c["status"]["certificate"].is_string())
        },
    );
    let renewal = csrs(&s)
        .into_iter()
        .find(|c| c["spec"]["username"] == "system:node:n1")
        .unwrap();
    assert!(renewal["metadata"]["name"].as_str().unwrap().starts_with("csr-"));
    assert_eq!(
        renewal["status"]["conditions"][0]["message"],
        "Auto approving self kubelet client certificate after SubjectAccessReview."
    );
    agent.wait_for_log("rotated the node's client certificate", Duration::from_secs(30));
    let second = std::fs::read(cert_file(&root)).unwrap();
    assert_ne!(first, second, "the certificate file was not replaced");
    assert_eq!(mode(&cert_file(&root)), 0o600);
    assert!(agent.process.exited().is_none(), "the agent restarted");

    // The same process keeps working, now with the new certificate.
    let uid = create_pod(&s, "web", "n1");
    let token = wait_for_token(&root, &uid);
    assert!(authenticated(&s, &token));
    assert_eq!(whoami(&s, &root.join("kubelet.conf")), "system:node:n1");
}
