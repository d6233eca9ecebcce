//! Bootstrap tokens end to end: `badge token` writes them through the server, kubectl and
//! TokenReview authenticate them, failures are 401 without the secret in the log, and the
//! token cleaner deletes expired ones.

use std::process::Command;

use badge_testkit::Credential::{Admin, Bearer};
use badge_testkit::TestServer;
use serde_json::{Value, json};

use crate::{badge_token, server};

fn status_with(s: &TestServer, token: &str) -> u16 {
    s.request("GET", "/api", None, &[], Bearer(token.into()))
        .unwrap()
        .status
}

fn assert_log_free_of(s: &TestServer, secrets: &[&str]) {
    let log = s.log.lock().unwrap().join("\n");
    for secret in secrets {
        assert!(!log.contains(secret), "the server log shows a token secret");
    }
}

#[test]
fn a_created_token_is_its_bootstrap_user_for_kubectl_and_token_review() {
    let s = server();
    let token = badge_token(
        &s,
        &[
            "create",
            "--groups",
            "system:bootstrappers:worker,system:bootstrappers:kubeadm:default-node-token,system:bootstrappers:worker",
        ],
    );
    let token = token.trim();
    let (id, secret) = token.split_once('.').unwrap();
    assert_eq!((id.len(), secret.len()), (6, 16), "prints the token only");

    let who = s.kubectl_ok(&["--token", token, "auth", "whoami", "-o", "json"]);
    let who: Value = serde_json::from_str(&who).unwrap();
    assert_eq!(
        who["status"]["userInfo"],
        json!({
            "username": format!("system:bootstrap:{id}"),
            "groups": [
                "system:bootstrappers",
                "system:bootstrappers:kubeadm:default-node-token",
                "system:bootstrappers:worker",
                "system:authenticated",
            ],
        })
    );

    let reviewed = crate::token_review(&s, token, &[]);
    assert_eq!(reviewed["authenticated"], true, "{reviewed}");
    assert_eq!(reviewed["user"]["username"], format!("system:bootstrap:{id}"));
    assert_eq!(
        reviewed["audiences"],
        json!(["https://kubernetes.default.svc.cluster.local"])
    );
    // Audience-agnostic: good for the API audiences only.
    let elsewhere = crate::token_review(&s, token, &["vault"]);
    assert!(elsewhere.get("authenticated").is_none(), "{elsewhere}");
    assert_log_free_of(&s, &[secret]);
}

#[test]
fn failing_bootstrap_tokens_are_refused_and_never_logged() {
    let s = server();
    let good = badge_token(&s, &["create", "0abcde.0123456789abcdef"]);
    assert_eq!(good.trim(), "0abcde.0123456789abcdef");
    assert_eq!(status_with(&s, "0abcde.0123456789abcdef"), 200);
    // Written by hand, expired: refused as such (or already deleted by the token cleaner).
    let expired = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "bootstrap-token-1abcde", "namespace": "kube-system"},
        "type": "bootstrap.kubernetes.io/token",
        "stringData": {"token-id": "1abcde", "token-secret": "1111111111111111",
                       "expiration": "2001-01-01T00:00:00Z", "usage-bootstrap-authentication": "true"},
    });
    let written = s.kubectl_with_stdin(&["create", "-f", "-"], Some(&expired.to_string()));
    assert!(
        written.status.success(),
        "{}",
        String::from_utf8_lossy(&written.stderr)
    );
    // Only kube-system holds bootstrap tokens: one elsewhere is refused when written.
    let elsewhere = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "bootstrap-token-6abcde", "namespace": "default"},
        "type": "bootstrap.kubernetes.io/token",
        "stringData": {"token-id": "6abcde", "token-secret": "6666666666666666",
                       "usage-bootstrap-authentication": "true"},
    });
    let written = s.kubectl_with_stdin(&["create", "-f", "-"], Some(&elsewhere.to_string()));
    assert!(
        String::from_utf8_lossy(&written.stderr).contains("metadata.namespace"),
        "{}",
        String::from_utf8_lossy(&written.stderr)
    );
    badge_token(
        &s,
        &[
            "create",
            "2abcde.2222222222222222",
            "--usages",
            "signing",
            "--groups=",
        ],
    );
    badge_token(&s, &["create", "3abcde.3333333333333333"]);
    assert_eq!(status_with(&s, "3abcde.3333333333333333"), 200);
    let deleted = badge_token(&s, &["delete", "3abcde"]);
    assert_eq!(deleted.trim(), "bootstrap token \"3abcde\" deleted");

    for (why, token) in [
        ("expired", "1abcde.1111111111111111"),
        ("wrong secret", "0abcde.0123456789abcdeg"),
        ("no authentication usage", "2abcde.2222222222222222"),
        ("deleted", "3abcde.3333333333333333"),
        ("malformed", "0abcde.0123456789ABCDEF"),
        ("unknown id", "4abcde.4444444444444444"),
        ("outside kube-system", "6abcde.6666666666666666"),
    ] {
        assert_eq!(status_with(&s, token), 401, "{why}");
        let reviewed = crate::token_review(&s, token, &[]);
        assert!(reviewed.get("authenticated").is_none(), "{why}: {reviewed}");
    }
    assert_log_free_of(
        &s,
        &[
            "0123456789abcdef",
            "0123456789abcdeg",
            "1111111111111111",
            "2222222222222222",
            "3333333333333333",
            "4444444444444444",
            "6666666666666666",
        ],
    );
}

#[test]
fn token_list_shows_kubeadms_columns_with_the_secret_masked() {
    let s = server();
    let token = badge_token(
        &s,
        &["create", "--ttl", "2h", "--description", "joins the workers"],
    );
    let token = token.trim();
    let (id, secret) = token.split_once('.').unwrap();
    badge_token(
        &s,
        &[
            "create",
            "5abcde.5555555555555555",
            "--ttl",
            "0",
            "--usages",
            "signing",
            "--groups=",
        ],
    );
    let listed = badge_token(&s, &["list"]);
    assert!(
        !listed.contains(secret) && !listed.contains("5555555555555555"),
        "{listed}"
    );
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 3, "{listed}");
    let header: Vec<&str> = lines[0]
        .split("   ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(
        header,
        ["TOKEN", "TTL", "EXPIRES", "USAGES", "DESCRIPTION", "EXTRA GROUPS"]
    );
    let row = |prefix: &str| -> Vec<String> {
        let line = lines.iter().find(|l| l.starts_with(prefix)).unwrap();
        line.split_whitespace().map(String::from).collect()
    };
    let created = row(id);
    assert_eq!(created[0], format!("{id}.****************"));
    assert!(created[1] == "1h" || created[1] == "2h", "{listed}");
    assert!(created[2].ends_with('Z'), "{listed}");
    assert_eq!(created[3], "authentication,signing");
    assert_eq!(created[4..7], ["joins", "the", "workers"]);
    assert_eq!(created[7], "system:bootstrappers:kubeadm:default-node-token");
    assert_eq!(
        row("5abcde"),
        [
            "5abcde.****************",
            "<forever>",
            "<never>",
            "signing",
            "<none>",
            "<none>"
        ]
    );
}

#[test]
fn the_token_cleaner_deletes_a_token_when_it_expires() {
    let s = server();
    let token = badge_token(&s, &["create", "--ttl", "2s"]);
    let id = token.trim().split_once('.').unwrap().0;
    let name = format!("secret/bootstrap-token-{id}");
    // Waits on the watch for the deletion, with a generous bound.
    s.kubectl_ok(&[
        "wait",
        "--for=delete",
        &name,
        "-n",
        "kube-system",
        "--timeout=60s",
    ]);
    let gone = s
        .request(
            "GET",
            &format!("/api/v1/namespaces/kube-system/secrets/bootstrap-token-{id}"),
            None,
            &[],
            Admin,
        )
        .unwrap();
    assert_eq!(gone.status, 404);
    assert_eq!(status_with(&s, token.trim()), 401);
}

#[test]
fn bootstrap_token_auth_can_be_turned_off() {
    let s = TestServer::start_with(
        env!("CARGO_BIN_EXE_badge"),
        &["--enable-bootstrap-token-auth=false"],
    );
    let token = badge_token(&s, &["create"]);
    assert_eq!(status_with(&s, token.trim()), 401);
    let reviewed = crate::token_review(&s, token.trim(), &[]);
    assert!(reviewed.get("authenticated").is_none(), "{reviewed}");
}

#[test]
fn token_generate_needs_no_server() {
    let out = Command::new(env!("CARGO_BIN_EXE_badge"))
        .args(["token", "generate"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout).unwrap();
    let (id, secret) = token.trim().split_once('.').unwrap();
    assert_eq!((id.len(), secret.len()), (6, 16));
    assert!(
        token
            .trim()
            .bytes()
            .all(|c| c == b'.' || c.is_ascii_lowercase() || c.is_ascii_digit())
    );
}
