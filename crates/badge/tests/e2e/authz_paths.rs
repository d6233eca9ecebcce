//! The request path through the real kubectl: a grant on one name is enough for
//! `kubectl get NAME -w` and serves that name only; kubectl's client certificate wins over
//! a `--token` as in kube-apiserver.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::server;

#[test]
fn a_watch_on_one_named_secret_serves_that_secret_only() {
    let s = server();
    s.kubectl_ok(&["create", "namespace", "w"]);
    for name in ["mine", "mine2", "other"] {
        s.kubectl_ok(&[
            "create",
            "secret",
            "generic",
            name,
            "-n",
            "w",
            &format!("--from-literal=v=value-of-{name}"),
        ]);
    }
    s.kubectl_ok(&["create", "sa", "reader", "-n", "w"]);
    s.kubectl_ok(&[
        "create",
        "role",
        "one-secret",
        "-n",
        "w",
        "--verb=get,list,watch",
        "--resource=secrets",
        "--resource-name=mine",
    ]);
    s.kubectl_ok(&[
        "create",
        "rolebinding",
        "one-secret",
        "-n",
        "w",
        "--role=one-secret",
        "--serviceaccount=w:reader",
    ]);
    let token = s.kubectl_ok(&["create", "token", "reader", "-n", "w"]);
    let token = token.trim();
    // Under the grant: the object, and the watch kubectl makes of it.
    assert!(
        s.kubectl_err(&["--token", token, "get", "secrets", "-n", "w"])
            .contains("Forbidden")
    );
    let mut child = Command::new(badge_testkit::kubectl_path())
        .arg("--kubeconfig")
        .arg(s.credential_free_kubeconfig())
        .args([
            "--token",
            token,
            "get",
            "secret",
            "mine",
            "-n",
            "w",
            "-w",
            "-o",
            "jsonpath={.metadata.name}={.metadata.labels.round}{\"\\n\"}",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let wait = || {
        rx.recv_timeout(Duration::from_secs(30))
            .expect("kubectl printed nothing")
    };
    assert_eq!(wait(), "mine=");
    for name in ["mine2", "other", "mine"] {
        s.kubectl_ok(&["label", "secret", name, "-n", "w", "round=1"]);
    }
    // The next line is `mine`'s change: the others' came first and were not served.
    assert_eq!(wait(), "mine=1");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn the_client_certificate_wins_over_a_bearer_token() {
    let s = server();
    let out = Command::new(badge_testkit::kubectl_path())
        .arg("--kubeconfig")
        .arg(s.kubeconfig())
        .args([
            "--token=garbage",
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "kubernetes-admin");
    // With no certificate the garbage token is refused.
    let err = s.kubectl_err(&["--token", "garbage", "get", "pods"]);
    assert!(
        err.contains("the server has asked for the client to provide credentials"),
        "{err}"
    );
}
