//! The token inventory with real kubectl: IssuedTokens for TokenRequests and legacy Secret
//! tokens, last-used flushed in batches (from two servers on one etcd into one record),
//! records removed when their token expires, ServiceAccountUsages.

use std::path::Path;

use badge_testkit::etcd::EtcdCluster;
use badge_testkit::{Credential, TestServer};
use base64::Engine;
use serde_json::{Value, json};

use crate::{eventually, jti_of};

const BIN: &str = env!("CARGO_BIN_EXE_badge");
/// Short enough that a test sees its flushes promptly.
const FLUSH: &str = "--usage-flush-period=200ms";

/// `kubectl auth whoami` with `token`, so the use carries kubectl's user agent.
fn whoami(s: &TestServer, kubeconfig: &Path, token: &str) -> String {
    let out = std::process::Command::new(badge_testkit::kubectl_path())
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args([
            "--token",
            token,
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "whoami on {}: {}",
        s.data_dir().display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A SelfSubjectReview sent without kubectl (the test client's user agent).
fn raw_use(s: &TestServer, token: &str) {
    let body = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"});
    let r = s
        .request(
            "POST",
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            Some(body.to_string().into_bytes()),
            &[("Content-Type", "application/json")],
            Credential::Bearer(token.to_string()),
        )
        .unwrap();
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
}

fn record(s: &TestServer, ns: &str, name: &str) -> Option<Value> {
    let out = s.kubectl(&["get", "issuedtoken", name, "-n", ns, "-o", "json"]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

fn use_count(s: &TestServer, ns: &str, name: &str) -> i64 {
    record(s, ns, name)
        .and_then(|r| r.pointer("/status/useCount").and_then(Value::as_i64))
        .unwrap_or(0)
}

#[test]
fn kubectl_lists_issued_tokens_and_their_last_use() {
    let s = TestServer::start_with(BIN, &[FLUSH, "--service-account-min-token-expiration=1s"]);
    let free = s.credential_free_kubeconfig();
    s.kubectl_ok(&["create", "namespace", "demo"]);
    for sa in ["app", "other"] {
        s.kubectl_ok(&["-n", "demo", "create", "serviceaccount", sa]);
    }
    let used = s
        .kubectl_ok(&["-n", "demo", "create", "token", "app"])
        .trim()
        .to_string();
    let unused = s
        .kubectl_ok(&["-n", "demo", "create", "token", "app"])
        .trim()
        .to_string();
    s.kubectl_ok(&["-n", "demo", "create", "token", "other"]);
    let (used_jti, unused_jti) = (jti_of(&used), jti_of(&unused));

    eventually("three IssuedTokens", || {
        s.kubectl_ok(&["get", "issuedtokens", "-A", "-o", "name"])
            .lines()
            .count()
            == 3
    });
    // Typed like the built-in kinds: kubectl explains them from the server's OpenAPI.
    let explained = s.kubectl_ok(&["explain", "issuedtokens.spec"]);
    assert!(
        explained.contains("GROUP:      identity.badge.dev"),
        "{explained}"
    );
    assert!(explained.contains("revoked\t<boolean>"), "{explained}");
    let explained = s.kubectl_ok(&["explain", "serviceaccountusages.status.lastAuthenticated"]);
    assert!(explained.contains("credentialID"), "{explained}");
    let listed = s.kubectl_ok(&["get", "issuedtokens", "-A"]);
    let header = listed.lines().next().unwrap();
    for column in [
        "NAMESPACE",
        "NAME",
        "SERVICE ACCOUNT",
        "EXPIRES",
        "LAST USED",
        "USES",
        "REVOKED",
    ] {
        assert!(header.contains(column), "{header}");
    }
    let by_app = s.kubectl_ok(&[
        "get",
        "issuedtokens",
        "-n",
        "demo",
        "-l",
        "identity.badge.dev/service-account=app",
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ]);
    let mut names: Vec<&str> = by_app.split_whitespace().collect();
    names.sort();
    let mut want = vec![used_jti.as_str(), unused_jti.as_str()];
    want.sort();
    assert_eq!(names, want);

    assert_eq!(whoami(&s, &free, &used), "system:serviceaccount:demo:app");
    eventually("the use flushed", || use_count(&s, "demo", &used_jti) == 1);
    let used_record = record(&s, "demo", &used_jti).unwrap();
    assert!(
        used_record["status"]["lastUsed"]["userAgent"]
            .as_str()
            .unwrap()
            .starts_with("kubectl"),
        "{used_record}"
    );
    assert_eq!(used_record["status"]["lastUsed"]["sourceAddress"], "127.0.0.1");
    assert_eq!(used_record["spec"]["requester"]["username"], "kubernetes-admin");

    // Sorted by last use: the used token comes last, after those never used.
    let sorted = s.kubectl_ok(&[
        "get",
        "issuedtokens",
        "-n",
        "demo",
        "--sort-by=.status.lastUsed.time",
        "-o",
        "name",
    ]);
    assert_eq!(
        sorted.lines().last(),
        Some(format!("issuedtoken.identity.badge.dev/{used_jti}").as_str()),
        "{sorted}"
    );

    let usages = s.kubectl_ok(&["get", "serviceaccountusages", "-n", "demo"]);
    assert!(usages.lines().any(|l| l.starts_with("app ")), "{usages}");
    let usage: Value = serde_json::from_str(&s.kubectl_ok(&[
        "get",
        "serviceaccountusage",
        "app",
        "-n",
        "demo",
        "-o",
        "json",
    ]))
    .unwrap();
    assert_eq!(
        usage["status"]["lastAuthenticated"]["credentialID"],
        format!("JTI={used_jti}")
    );
    assert_eq!(usage["status"]["liveTokens"], 2);

    // Read-only but for revocation.
    let refused = s.kubectl_err(&[
        "-n",
        "demo",
        "patch",
        "issuedtoken",
        &unused_jti,
        "--type=merge",
        "-p",
        r#"{"spec":{"audiences":["vault"]}}"#,
    ]);
    assert!(refused.contains("field is immutable"), "{refused}");
    s.kubectl_ok(&[
        "-n",
        "demo",
        "patch",
        "issuedtoken",
        &unused_jti,
        "--type=merge",
        "-p",
        r#"{"spec":{"revoked":true}}"#,
    ]);
    let refused = s.kubectl_err(&["-n", "demo", "delete", "issuedtoken", &unused_jti]);
    assert!(
        refused.contains("MethodNotAllowed") || refused.contains("not supported"),
        "{refused}"
    );

    // Removed once the token expires (the controller waits for the record's expiresAt).
    let short = s
        .kubectl_ok(&["-n", "demo", "create", "token", "other", "--duration=2s"])
        .trim()
        .to_string();
    let short_jti = jti_of(&short);
    eventually("the short token's record", || {
        record(&s, "demo", &short_jti).is_some()
    });
    eventually("the expired record removed", || {
        record(&s, "demo", &short_jti).is_none()
    });
    eventually("the other account counted without it", || {
        s.kubectl_ok(&[
            "get",
            "serviceaccountusage",
            "other",
            "-n",
            "demo",
            "-o",
            "jsonpath={.status.liveTokens}",
        ]) == "1"
    });
}

#[test]
fn legacy_secret_tokens_are_inventoried_and_labelled_by_day() {
    let s = TestServer::start_with(BIN, &[FLUSH]);
    let free = s.credential_free_kubeconfig();
    s.kubectl_ok(&["create", "serviceaccount", "legacy"]);
    s.kubectl_with_stdin(
        &["apply", "-f", "-"],
        Some(
            r#"{"apiVersion":"v1","kind":"Secret","type":"kubernetes.io/service-account-token",
                "metadata":{"name":"legacy-token","annotations":{"kubernetes.io/service-account.name":"legacy"}}}"#,
        ),
    );
    let token = std::cell::RefCell::new(String::new());
    eventually("the token Secret populated", || {
        let data = s.kubectl(&["get", "secret", "legacy-token", "-o", "jsonpath={.data.token}"]);
        let encoded = String::from_utf8_lossy(&data.stdout).to_string();
        if encoded.is_empty() {
            return false;
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .unwrap();
        *token.borrow_mut() = String::from_utf8(bytes).unwrap();
        true
    });
    let token = token.into_inner();
    eventually("the legacy record, named after its Secret", || {
        record(&s, "default", "legacy-token").is_some_and(|r| {
            r["metadata"]["labels"]["identity.badge.dev/token-kind"] == "legacy"
                && r["spec"]["boundObjectRef"]["kind"] == "Secret"
        })
    });
    assert_eq!(whoami(&s, &free, &token), "system:serviceaccount:default:legacy");
    eventually("the legacy use flushed", || {
        use_count(&s, "default", "legacy-token") == 1
    });
    let today = badge_api::clock::now().strftime("%Y-%m-%d").to_string();
    eventually("upstream's last-used label on the Secret", || {
        let label = s.kubectl_ok(&[
            "get",
            "secret",
            "legacy-token",
            "-o",
            r"jsonpath={.metadata.labels.kubernetes\.io/legacy-token-last-used}",
        ]);
        // The day of the use; the test may straddle midnight (UTC).
        label == today || label == badge_api::clock::now().strftime("%Y-%m-%d").to_string()
    });

    // Deleting the Secret removes its record.
    s.kubectl_ok(&["delete", "secret", "legacy-token"]);
    eventually("the legacy record removed", || {
        record(&s, "default", "legacy-token").is_none()
    });
}

#[test]
fn uses_on_two_servers_on_etcd_land_in_one_record() {
    let etcd = EtcdCluster::start(1);
    let args = [
        "--storage",
        "etcd",
        "--etcd-servers",
        &etcd.endpoints_flag(),
        FLUSH,
    ];
    let a = TestServer::start_with(BIN, &args);
    let b = TestServer::start_sharing_pki(BIN, &args, &a);
    let token = a.kubectl_ok(&["create", "token", "default"]).trim().to_string();
    let jti = jti_of(&token);
    eventually("the record, through the other server", || {
        record(&b, "default", &jti).is_some()
    });

    for _ in 0..2 {
        raw_use(&a, &token);
    }
    eventually("the first server's uses", || use_count(&b, "default", &jti) == 2);
    for _ in 0..2 {
        raw_use(&b, &token);
    }
    // The latest use of all, through the second server with kubectl.
    let free = b.credential_free_kubeconfig();
    whoami(&b, &free, &token);
    eventually("both servers' uses added up", || {
        use_count(&a, "default", &jti) == 5
    });
    let merged = record(&a, "default", &jti).unwrap();
    assert!(
        merged["status"]["lastUsed"]["userAgent"]
            .as_str()
            .unwrap()
            .starts_with("kubectl"),
        "the latest use wins: {merged}"
    );
    let usage = a.kubectl_ok(&[
        "get",
        "serviceaccountusage",
        "default",
        "-o",
        "jsonpath={.status.lastAuthenticated.credentialID}",
    ]);
    assert_eq!(usage, format!("JTI={jti}"));

    // Each server counts live tokens from the records its watch cache holds, the other
    // server's included.
    let live = |s: &TestServer| {
        s.kubectl_ok(&[
            "get",
            "serviceaccountusage",
            "default",
            "-o",
            "jsonpath={.status.liveTokens}",
        ])
    };
    b.kubectl_ok(&["create", "token", "default"]);
    eventually("the second server counts both servers' tokens", || {
        live(&a) == "2"
    });
    a.kubectl_ok(&["create", "token", "default"]);
    eventually("the first server counts all three", || live(&b) == "3");
}

/// A flush on etcd writes its records in one transaction, so they share a revision; the
/// other server's watch cache and its watchers take every one of them.
#[test]
fn records_of_one_etcd_transaction_all_reach_another_server_s_watch() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    use std::time::Duration;

    let etcd = EtcdCluster::start(1);
    let shared = ["--storage", "etcd", "--etcd-servers", &etcd.endpoints_flag()];
    // The first server flushes only when it stops: everything it issued in one batch.
    let mut a = TestServer::start_with(BIN, &[&shared[..], &["--usage-flush-period=1h"]].concat());
    let b = TestServer::start_sharing_pki(BIN, &[&shared[..], &[FLUSH]].concat(), &a);
    let mut watch = Command::new(badge_testkit::kubectl_path())
        .arg("--kubeconfig")
        .arg(b.kubeconfig())
        .args(["get", "issuedtokens", "-n", "default", "-w", "-o", "name"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = watch.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let next = || rx.recv_timeout(Duration::from_secs(30)).unwrap();
    // A record of the second server's own marks the watch as running.
    let marker = jti_of(b.kubectl_ok(&["create", "token", "default"]).trim());
    assert_eq!(next(), format!("issuedtoken.identity.badge.dev/{marker}"));

    // The first server's cache holds what the second one wrote with its record, so its
    // own batch is made from the current state.
    eventually("the second server's usage record, through the first", || {
        a.kubectl(&["get", "serviceaccountusage", "default"])
            .status
            .success()
    });
    let mut issued: Vec<String> = (0..5)
        .map(|_| jti_of(a.kubectl_ok(&["create", "token", "default"]).trim()))
        .collect();
    assert!(a.stop().success());
    let mut seen: Vec<String> = (0..5)
        .map(|_| {
            next()
                .trim_start_matches("issuedtoken.identity.badge.dev/")
                .to_string()
        })
        .collect();
    seen.sort();
    issued.sort();
    assert_eq!(seen, issued, "every record of the batch, through the watch");
    let _ = watch.kill();
    let _ = watch.wait();

    let versions: std::collections::BTreeSet<String> = issued
        .iter()
        .map(|jti| {
            b.kubectl_ok(&[
                "get",
                "issuedtoken",
                jti,
                "-o",
                "jsonpath={.metadata.resourceVersion}",
            ])
        })
        .collect();
    assert_eq!(versions.len(), 1, "one transaction, one revision: {versions:?}");
}
