//! `badge rbac suggest` from a real audit log: its output applied with kubectl, the broad
//! binding removed, and the identity's same requests still allowed.

use std::process::Command;

use badge_testkit::TestServer;

const BIN: &str = env!("CARGO_BIN_EXE_badge");

fn as_token(s: &TestServer, token: &str, args: &[&str]) -> std::process::Output {
    Command::new(badge_testkit::kubectl_path())
        .arg("--kubeconfig")
        .arg(s.credential_free_kubeconfig())
        .args(["--token", token])
        .args(args)
        .output()
        .unwrap()
}

fn the_same_requests(s: &TestServer, token: &str) {
    let requests: [&[&str]; 2] = [
        &["get", "configmap", "settings", "-n", "shop"],
        &["get", "pods", "-n", "shop", "-o", "name"],
    ];
    for args in requests {
        let out = as_token(s, token, args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn suggested_rbac_keeps_what_was_used_when_the_broad_binding_goes() {
    let s = TestServer::start(BIN);
    s.kubectl_ok(&["create", "namespace", "shop"]);
    s.kubectl_ok(&["create", "serviceaccount", "web", "-n", "shop"]);
    s.kubectl_ok(&[
        "create",
        "configmap",
        "settings",
        "-n",
        "shop",
        "--from-literal=k=v",
    ]);
    s.kubectl_ok(&[
        "create",
        "rolebinding",
        "broad",
        "-n",
        "shop",
        "--clusterrole=edit",
        "--serviceaccount=shop:web",
    ]);
    let token = s
        .kubectl_ok(&["create", "token", "web", "-n", "shop"])
        .trim()
        .to_string();
    the_same_requests(&s, &token);

    let audit_log = s.data_dir().join("audit.log");
    crate::eventually("the requests in the audit log", || {
        let text = std::fs::read_to_string(&audit_log).unwrap_or_default();
        text.lines().any(|l| {
            l.contains("system:serviceaccount:shop:web")
                && l.contains("ResponseComplete")
                && l.contains("\"pods\"")
        })
    });
    let out = Command::new(BIN)
        .args([
            "rbac",
            "suggest",
            "web",
            "-n",
            "shop",
            "--since",
            "1h",
            "--data-dir",
        ])
        .arg(s.data_dir())
        .output()
        .unwrap();
    let (yaml, stderr) = (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(
        yaml.contains("resourceNames:") && yaml.contains("- settings"),
        "{yaml}"
    );
    assert!(!yaml.contains("secrets"), "{yaml}");
    assert!(
        stderr.contains("held but not used") && stderr.contains("RoleBinding broad: delete secrets"),
        "{stderr}"
    );

    let applied = s.kubectl_with_stdin(&["apply", "-f", "-"], Some(&yaml));
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    s.kubectl_ok(&["delete", "rolebinding", "broad", "-n", "shop"]);
    crate::eventually("the broad grant gone", || {
        !as_token(&s, &token, &["get", "secrets", "-n", "shop"])
            .status
            .success()
    });
    the_same_requests(&s, &token);
    // A name it did not use is not granted.
    s.kubectl_ok(&["create", "configmap", "other", "-n", "shop"]);
    assert!(
        !as_token(&s, &token, &["get", "configmap", "other", "-n", "shop"])
            .status
            .success()
    );
}
