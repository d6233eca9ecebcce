//! A pod's end as upstream: `kubectl delete pod` marks a pod on a node Terminating, its
//! tokens work through the grace, and the node's agent removes its files and confirms the
//! deletion; a pod on a node with no live agent is removed by the pod garbage collector
//! once its grace has passed; and a malformed bootstrap token Secret is refused when
//! written.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use badge_testkit::TestServer;
use serde_json::{Value, json};

use crate::{authenticated, eventually, server};

fn node_kubeconfig(s: &TestServer, node: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_badge"))
        .args(["node", "add", node, "--data-dir"])
        .arg(s.data_dir())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn start_agent(kubeconfig: &str, node: &str, root: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_badge"))
        .args(["agent", "--kubeconfig", kubeconfig, "--node-name", node, "--root"])
        .arg(root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn create(s: &TestServer, manifest: &Value) {
    let out = s.kubectl_with_stdin(&["create", "-f", "-"], Some(&manifest.to_string()));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn pod(name: &str, node: &str, grace: i64) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
           "spec": {"serviceAccountName": "app", "nodeName": node,
                    "terminationGracePeriodSeconds": grace,
                    "containers": [{"name": "c", "image": "busybox"}]}})
}

/// The STATUS column of `kubectl get pod NAME`, or None once the pod is gone.
fn status_column(s: &TestServer, name: &str) -> Option<String> {
    let out = s.kubectl(&["get", "pod", name, "--no-headers"]);
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("NotFound"), "{err}");
        return None;
    }
    let line = String::from_utf8_lossy(&out.stdout).to_string();
    line.split_whitespace().nth(2).map(String::from)
}

fn pod_token_file(root: &Path, uid: &str) -> Option<String> {
    let projected = root
        .join("pods")
        .join(uid)
        .join("volumes")
        .join("kubernetes.io~projected");
    std::fs::read_dir(projected)
        .ok()?
        .flatten()
        .map(|e| e.path().join("token"))
        .find_map(|p| std::fs::read_to_string(p).ok())
}

#[test]
fn a_deleted_pod_terminates_with_a_valid_token_until_its_agent_confirms() {
    let s = server();
    let kubeconfig = node_kubeconfig(&s, "n1");
    let root = tempfile::tempdir().unwrap();
    s.kubectl_ok(&["create", "sa", "app"]);
    // A long grace: only the agent's confirmation can end it within the test.
    create(&s, &pod("web", "n1", 600));
    let uid = s.kubectl_ok(&["get", "pod", "web", "-o", "jsonpath={.metadata.uid}"]);

    let mut agent = start_agent(&kubeconfig, "n1", root.path());
    let mut token = None;
    eventually("the agent to write the pod's token", || {
        token = pod_token_file(root.path(), &uid);
        token.is_some()
    });
    let token = token.unwrap();
    // The agent keeps its node's heartbeat, as the kubelet does.
    eventually("the node lease", || {
        let out = s.kubectl(&["get", "lease", "n1", "-n", "kube-node-lease", "-o", "json"]);
        out.status.success()
            && serde_json::from_slice::<Value>(&out.stdout).unwrap()["spec"]["holderIdentity"] == "n1"
    });

    // With the agent stopped, the deletion waits for the node.
    agent.kill().unwrap();
    agent.wait().unwrap();
    let deleted = s.kubectl_ok(&["delete", "pod", "web", "--wait=false"]);
    assert!(deleted.starts_with("pod \"web\" deleted"), "{deleted}");
    assert_eq!(status_column(&s, "web").as_deref(), Some("Terminating"));
    let marked: Value = serde_json::from_str(&s.kubectl_ok(&["get", "pod", "web", "-o", "json"])).unwrap();
    assert_eq!(marked["metadata"]["deletionGracePeriodSeconds"], 600);
    assert!(authenticated(&s, &token), "the token is valid during the grace");
    assert!(root.path().join("pods").join(&uid).exists());

    // Back, the agent removes the pod's files and confirms; the token dies with the pod.
    let mut agent = start_agent(&kubeconfig, "n1", root.path());
    eventually("the agent to confirm the deletion", || {
        status_column(&s, "web").is_none()
    });
    assert!(!root.path().join("pods").join(&uid).exists(), "files removed");
    assert!(
        !authenticated(&s, &token),
        "the token is invalid once the pod is gone"
    );
    agent.kill().unwrap();
    agent.wait().unwrap();
}

#[test]
fn pods_no_agent_will_finish_are_garbage_collected() {
    let s = server();
    s.kubectl_ok(&["create", "sa", "app"]);
    // A node that exists but whose agent never ran: no lease.
    create(
        &s,
        &json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "silent"}}),
    );
    create(&s, &pod("stuck", "silent", 2));
    // A pod bound to a node that does not exist.
    create(&s, &pod("orphan", "nowhere", 30));
    let token = s.kubectl_ok(&[
        "create",
        "token",
        "app",
        "--bound-object-kind=Pod",
        "--bound-object-name=stuck",
    ]);
    let token = token.trim();
    assert!(authenticated(&s, token));

    s.kubectl_ok(&["delete", "pod", "stuck", "--wait=false"]);
    assert_eq!(status_column(&s, "stuck").as_deref(), Some("Terminating"));
    assert!(authenticated(&s, token), "the token is valid during the grace");
    eventually("the pod garbage collector to remove the terminating pod", || {
        status_column(&s, "stuck").is_none()
    });
    assert!(!authenticated(&s, token));

    // An orphan goes after the node has stayed absent for the quarantine (40 s).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while status_column(&s, "orphan").is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "the orphaned pod was never collected"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn kubectl_is_told_which_field_of_a_bootstrap_token_secret_is_malformed() {
    let s = server();
    let secret = |data: Value| {
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "bootstrap-token-abcdef", "namespace": "kube-system"},
               "type": "bootstrap.kubernetes.io/token", "stringData": data})
    };
    for (data, field) in [
        (
            json!({"token-id": "abcdef", "token-secret": "not-sixteen"}),
            "data[token-secret]",
        ),
        (
            json!({"token-id": "ABCDEF", "token-secret": "0123456789abcdef"}),
            "data[token-id]",
        ),
        (
            json!({"token-id": "abcdef", "token-secret": "0123456789abcdef", "expiration": "soon"}),
            "data[expiration]",
        ),
        (
            json!({"token-id": "abcdef", "token-secret": "0123456789abcdef",
                   "usage-bootstrap-authentication": "yes"}),
            "data[usage-bootstrap-authentication]",
        ),
        (
            json!({"token-id": "abcdef", "token-secret": "0123456789abcdef",
                   "auth-extra-groups": "system:masters"}),
            "data[auth-extra-groups]",
        ),
    ] {
        let out = s.kubectl_with_stdin(&["create", "-f", "-"], Some(&secret(data).to_string()));
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("Secret \"bootstrap-token-abcdef\" is invalid") && err.contains(field),
            "{field}: {err}"
        );
        assert!(!err.contains("not-sixteen"), "the secret is never echoed");
    }
    // Its API answer: 422 Invalid, the field in the causes.
    let r = s
        .request(
            "POST",
            "/api/v1/namespaces/kube-system/secrets",
            Some(
                secret(json!({"token-id": "abcdef", "token-secret": "short"}))
                    .to_string()
                    .into_bytes(),
            ),
            &[("content-type", "application/json")],
            badge_testkit::Credential::Admin,
        )
        .unwrap();
    assert_eq!(r.status, 422);
    let body = r.json();
    assert_eq!(body["reason"], "Invalid");
    assert_eq!(body["details"]["causes"][0]["field"], "data[token-secret]");
    // A well-formed one is written.
    let good = secret(json!({"token-id": "abcdef", "token-secret": "0123456789abcdef",
                             "usage-bootstrap-authentication": "true"}));
    let out = s.kubectl_with_stdin(&["create", "-f", "-"], Some(&good.to_string()));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
