//! Upstream's ExternalJWTSigner API (`badge server --external-signer-socket`, `badge signer`)
//! driven by a gRPC client generated at test time from upstream's messages
//! (externaljwt/api.proto), verifying with PyJWT: through two rotations every token verifies
//! with the keys FetchKeys returned before it was signed.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use badge_testkit::TestServer;
use badge_testkit::etcd::EtcdCluster;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_badge");

fn client_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/externaljwt/client.py")
}

fn wait_for_socket(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !path.exists() {
        assert!(Instant::now() < deadline, "{} never appeared", path.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn assert_owner_only(path: &Path) {
    let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "socket mode {mode:o}");
}

/// Runs the outside client against `socket`, rotating with `badge keys rotate` on `server`.
fn run_client(socket: &Path, server: &TestServer) -> Value {
    let stubs = tempfile::tempdir().unwrap();
    let kubeconfig = server.kubeconfig();
    let out = Command::new("python3")
        .arg(client_script())
        .arg(stubs.path())
        .arg(socket)
        .args([BIN, "keys", "--kubeconfig"])
        .arg(&kubeconfig)
        .args(["rotate", "--publish-lead-seconds", "2"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    // The first key and the two that took over, each listed as soon as it was added.
    assert_eq!(summary["signers"].as_array().unwrap().len(), 3, "{summary}");
    assert_eq!(
        summary["staged_listed"],
        serde_json::json!([true, true]),
        "{summary}"
    );
    summary
}

#[test]
fn server_signs_for_kube_apiserver_through_two_rotations() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("signer.sock");
    let flag = format!("--external-signer-socket={}", socket.display());
    let s = TestServer::start_with(BIN, &[&flag, "--service-account-max-token-expiration=48h"]);
    wait_for_socket(&socket);
    assert_owner_only(&socket);
    let summary = run_client(&socket, &s);
    assert_eq!(summary["max_token_expiration_seconds"], 48 * 3600, "{summary}");
}

/// Ends the signer it holds when dropped, so a failing test leaves no process behind.
struct Signer(Child);

impl Drop for Signer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn badge_signer_follows_the_ring_of_an_etcd_deployment() {
    let etcd = EtcdCluster::start(1);
    let endpoints = etcd.endpoints_flag();
    let s = TestServer::start_with(BIN, &["--storage", "etcd", "--etcd-servers", &endpoints]);
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("signer.sock");
    let _signer = Signer(
        Command::new(BIN)
            .arg("signer")
            .arg("--socket")
            .arg(&socket)
            .arg("--data-dir")
            .arg(s.data_dir())
            .args(["--storage", "etcd", "--etcd-servers", &endpoints])
            .args(["--service-account-max-token-expiration", "1h"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_socket(&socket);
    assert_owner_only(&socket);
    let summary = run_client(&socket, &s);
    assert_eq!(summary["max_token_expiration_seconds"], 3600, "{summary}");
}

#[test]
fn badge_signer_refuses_a_data_dir_without_a_server() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .arg("signer")
        .arg("--socket")
        .arg(dir.path().join("s.sock"))
        .arg("--data-dir")
        .arg(dir.path().join("nothing"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("holds no certificates"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
