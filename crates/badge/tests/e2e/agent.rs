//! `badge agent` end to end: a real server, a real agent process, the kubelet's file layout.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use badge_testkit::Credential::Admin;
use serde_json::json;

use crate::{eventually, server};

fn start_agent(kubeconfig: &str, root: &Path, metrics: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_badge"))
        .args([
            "agent",
            "--kubeconfig",
            kubeconfig,
            "--node-name",
            "n1",
            "--metrics-bind-address",
            metrics,
            "--root",
        ])
        .arg(root)
        // 3607 s tokens refresh after a few seconds.
        .args(["--token-refresh-fraction", "0.001"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn volume_of(root: &Path, uid: &str) -> Option<PathBuf> {
    let dir = root
        .join("pods")
        .join(uid)
        .join("volumes")
        .join("kubernetes.io~projected");
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.join("token").exists())
}

fn authenticated(s: &badge_testkit::TestServer, token: &str) -> serde_json::Value {
    let body =
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}});
    let r = s
        .request(
            "POST",
            "/apis/authentication.k8s.io/v1/tokenreviews",
            Some(serde_json::to_vec(&body).unwrap()),
            &[("content-type", "application/json")],
            Admin,
        )
        .unwrap();
    r.json()["status"].clone()
}

#[test]
fn the_agent_writes_refreshes_and_removes_pod_tokens() {
    let s = server();
    let out = Command::new(env!("CARGO_BIN_EXE_badge"))
        .args(["node", "add", "n1", "--data-dir"])
        .arg(s.data_dir())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let kubeconfig = String::from_utf8_lossy(&out.stdout).trim().to_string();
    s.kubectl_ok(&["create", "sa", "app"]);
    let pod = |name: &str, node: &str, automount: bool| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  serviceAccountName: app\n  nodeName: {node}\n  automountServiceAccountToken: {automount}\n  containers:\n  - name: c\n    image: busybox\n"
        )
    };
    for (name, node, automount) in [
        ("web", "n1", true),
        ("quiet", "n1", false),
        ("elsewhere", "n2", true),
    ] {
        let out = s.kubectl_with_stdin(&["create", "-f", "-"], Some(&pod(name, node, automount)));
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let uid = |name: &str| s.kubectl_ok(&["get", "pod", name, "-o", "jsonpath={.metadata.uid}"]);
    let (web, quiet, elsewhere) = (uid("web"), uid("quiet"), uid("elsewhere"));

    let root = tempfile::tempdir().unwrap();
    let metrics = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().to_string()
    };
    let mut agent = start_agent(&kubeconfig, root.path(), &metrics);
    let mut volume = None;
    eventually("the agent to write the token volume", || {
        volume = volume_of(root.path(), &web);
        volume.is_some()
    });
    let volume = volume.unwrap();
    // The kubelet's layout: a timestamped directory behind the `..data` symlink.
    let data = std::fs::read_link(volume.join("..data")).unwrap();
    assert!(data.to_string_lossy().starts_with("..20"), "{}", data.display());
    assert_eq!(
        std::fs::read_link(volume.join("token")).unwrap(),
        Path::new("..data/token")
    );
    assert_eq!(
        std::fs::read_to_string(volume.join("namespace")).unwrap(),
        "default"
    );
    assert_eq!(
        std::fs::read(volume.join("ca.crt")).unwrap(),
        std::fs::read(s.data_dir().join("pki/ca.crt")).unwrap()
    );
    let first = std::fs::read_to_string(volume.join("token")).unwrap();
    let review = authenticated(&s, &first);
    assert_eq!(review["authenticated"], true, "{review}");
    assert_eq!(
        review["user"]["extra"]["authentication.kubernetes.io/pod-name"],
        json!(["web"])
    );
    let who = s.kubectl_ok(&[
        "--token",
        &first,
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username}",
    ]);
    assert_eq!(who, "system:serviceaccount:default:app");

    eventually("the token to be refreshed before it expires", || {
        std::fs::read_to_string(volume.join("token")).is_ok_and(|t| t != first)
    });
    let scrape = || {
        use std::io::{Read, Write};
        let mut tcp = std::net::TcpStream::connect(&metrics).unwrap();
        tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        tcp.read_to_string(&mut text).unwrap();
        text
    };
    let text = scrape();
    let written = text
        .lines()
        .find_map(|l| l.strip_prefix("badge_agent_volumes_written_total "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    assert!(written >= 2, "{text}");
    assert!(
        !root.path().join("pods").join(&quiet).exists(),
        "automount disabled: no token files"
    );
    assert!(
        !root.path().join("pods").join(&elsewhere).exists(),
        "another node's pod is not ours"
    );

    // Killed and restarted, the agent keeps the files and keeps refreshing them.
    agent.kill().unwrap();
    agent.wait().unwrap();
    let kept = std::fs::read_to_string(volume.join("token")).unwrap();
    let mut agent = start_agent(&kubeconfig, root.path(), &metrics);
    eventually("a refresh after the restart", || {
        std::fs::read_to_string(volume.join("token")).is_ok_and(|t| t != kept)
    });

    let current = std::fs::read_to_string(volume.join("token")).unwrap();
    s.kubectl_ok(&["delete", "pod", "web", "--wait=false"]);
    eventually("the pod's token to be revoked and its files removed", || {
        authenticated(&s, &current).get("authenticated").is_none()
            && !root.path().join("pods").join(&web).exists()
    });
    agent.kill().unwrap();
    agent.wait().unwrap();
}
