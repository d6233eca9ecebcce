//! Revoking one ServiceAccount token: by `badge token revoke` and by `kubectl patch`, seen
//! by a second server on the same etcd, refused to a non-admin, and published as a signed
//! revocation list that an outside verifier checks against the JWKS.

use badge_testkit::etcd::EtcdCluster;
use badge_testkit::{Credential, TestServer};
use base64::Engine;
use serde_json::Value;

use crate::{authenticated, eventually, jti_of, token_review};

const BIN: &str = env!("CARGO_BIN_EXE_badge");

fn badge_revoke(s: &TestServer, args: &[&str]) -> std::process::Output {
    std::process::Command::new(BIN)
        .args(["token", "revoke", "--data-dir"])
        .arg(s.data_dir())
        .args(args)
        .output()
        .unwrap()
}

/// The status of an API request authenticated by `token`.
fn api_status(s: &TestServer, token: &str) -> (u16, String) {
    let r = s
        .request(
            "GET",
            "/api/v1/namespaces/demo/serviceaccounts",
            None,
            &[],
            Credential::Bearer(token.to_string()),
        )
        .unwrap();
    (r.status, String::from_utf8_lossy(&r.body).into_owned())
}

fn issued(s: &TestServer, sa: &str) -> String {
    s.kubectl_ok(&["-n", "demo", "create", "token", sa])
        .trim()
        .to_string()
}

fn revoked_total(s: &TestServer) -> u64 {
    let r = s
        .request("GET", "/metrics", None, &[], Credential::Admin)
        .unwrap();
    let text = String::from_utf8_lossy(&r.body).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("badge_token_revocations_total "))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0)
}

#[test]
fn one_token_is_revoked_by_cli_or_kubectl_while_its_siblings_work() {
    let s = TestServer::start(BIN);
    s.kubectl_ok(&["create", "namespace", "demo"]);
    s.kubectl_ok(&["-n", "demo", "create", "serviceaccount", "app"]);
    s.kubectl_ok(&[
        "-n",
        "demo",
        "create",
        "rolebinding",
        "app-view",
        "--clusterrole=view",
        "--serviceaccount=demo:app",
    ]);
    let first = issued(&s, "app");
    let second = issued(&s, "app");
    let sibling = issued(&s, "app");
    for token in [&first, &second, &sibling] {
        assert!(authenticated(&s, token));
        assert_eq!(api_status(&s, token).0, 200);
    }
    let (first_jti, second_jti) = (jti_of(&first), jti_of(&second));
    eventually("the records", || {
        s.kubectl(&["-n", "demo", "get", "issuedtoken", &second_jti])
            .status
            .success()
    });

    // A ServiceAccount without `update issuedtokens` is refused.
    let refused = s.kubectl_err(&[
        "--token",
        &sibling,
        "-n",
        "demo",
        "patch",
        "issuedtoken",
        &first_jti,
        "--type=merge",
        "-p",
        r#"{"spec":{"revoked":true}}"#,
    ]);
    assert!(
        refused.contains("Forbidden") && refused.contains("cannot patch"),
        "{refused}"
    );
    assert!(authenticated(&s, &first));

    // By the CLI.
    let out = badge_revoke(&s, &[&first_jti, "-n", "demo"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("issuedtoken.identity.badge.dev/{first_jti} revoked\n")
    );
    eventually("the revoked token refused", || !authenticated(&s, &first));
    let (status, body) = api_status(&s, &first);
    assert_eq!(status, 401, "{body}");
    assert!(!body.contains("revoked") && !body.contains(&first_jti), "{body}");
    assert!(authenticated(&s, &second) && authenticated(&s, &sibling));
    assert_eq!(api_status(&s, &sibling).0, 200);

    // By kubectl.
    s.kubectl_ok(&[
        "-n",
        "demo",
        "patch",
        "issuedtoken",
        &second_jti,
        "--type=merge",
        "-p",
        r#"{"spec":{"revoked":true}}"#,
    ]);
    eventually("the patched token refused", || !authenticated(&s, &second));
    assert_eq!(api_status(&s, &second).0, 401);
    assert!(authenticated(&s, &sibling));
    eventually("both revocations counted", || revoked_total(&s) == 2);

    // An unknown jti is reported, not invented.
    let out = badge_revoke(&s, &["no-such-jti", "-n", "demo"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not found"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_legacy_secret_token_is_revoked_by_its_secret_name() {
    let s = TestServer::start(BIN);
    s.kubectl_ok(&["create", "namespace", "demo"]);
    s.kubectl_ok(&["-n", "demo", "create", "serviceaccount", "legacy"]);
    s.kubectl_with_stdin(
        &["-n", "demo", "apply", "-f", "-"],
        Some(
            r#"{"apiVersion":"v1","kind":"Secret","type":"kubernetes.io/service-account-token",
                "metadata":{"name":"legacy-token","annotations":{"kubernetes.io/service-account.name":"legacy"}}}"#,
        ),
    );
    let token = std::cell::RefCell::new(String::new());
    eventually("the token Secret populated", || {
        let encoded = s.kubectl_ok(&[
            "-n",
            "demo",
            "get",
            "secret",
            "legacy-token",
            "-o",
            "jsonpath={.data.token}",
        ]);
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
    eventually("the legacy record", || {
        s.kubectl(&["-n", "demo", "get", "issuedtoken", "legacy-token"])
            .status
            .success()
    });
    assert!(authenticated(&s, &token));
    let bound = issued(&s, "legacy");
    let out = badge_revoke(&s, &["legacy-token", "-n", "demo"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    eventually("the legacy token refused", || !authenticated(&s, &token));
    assert!(authenticated(&s, &bound));
}

#[test]
fn a_second_server_on_etcd_refuses_the_revoked_token() {
    let etcd = EtcdCluster::start(1);
    let args = ["--storage", "etcd", "--etcd-servers", &etcd.endpoints_flag()];
    let a = TestServer::start_with(BIN, &args);
    let b = TestServer::start_sharing_pki(BIN, &args, &a);
    let token = a.kubectl_ok(&["create", "token", "default"]).trim().to_string();
    let other = a.kubectl_ok(&["create", "token", "default"]).trim().to_string();
    let jti = jti_of(&token);
    // Verified (and cached) on the second server before the revocation.
    assert!(authenticated(&b, &token));
    eventually("the record, through the second server", || {
        b.kubectl(&["get", "issuedtoken", &jti]).status.success()
    });
    a.kubectl_ok(&[
        "patch",
        "issuedtoken",
        &jti,
        "--type=merge",
        "-p",
        r#"{"spec":{"revoked":true}}"#,
    ]);
    eventually("the second server refusing the token", || {
        !authenticated(&b, &token)
    });
    assert!(!authenticated(&a, &token));
    assert!(authenticated(&b, &other) && authenticated(&a, &other));
    assert_eq!(
        token_review(&b, &token, &[])["error"],
        "service account token has been invalidated"
    );
}

#[test]
fn the_signed_revocation_list_verifies_against_the_jwks_outside_badge() {
    let s = TestServer::start(BIN);
    let token = s.kubectl_ok(&["create", "token", "default"]).trim().to_string();
    let jti = jti_of(&token);
    let discovery = s
        .request(
            "GET",
            "/.well-known/openid-configuration",
            None,
            &[],
            Credential::Admin,
        )
        .unwrap()
        .json();
    let list_uri = discovery["revocation_list_uri"].as_str().unwrap().to_string();
    assert!(list_uri.ends_with("/openid/v1/revocations"), "{discovery}");
    eventually("the record", || {
        s.kubectl(&["get", "issuedtoken", &jti]).status.success()
    });
    s.kubectl_ok(&[
        "patch",
        "issuedtoken",
        &jti,
        "--type=merge",
        "-p",
        r#"{"spec":{"revoked":true}}"#,
    ]);
    let list = std::cell::RefCell::new(String::new());
    eventually("the jti in the list", || {
        let r = s
            .request("GET", "/openid/v1/revocations", None, &[], Credential::Admin)
            .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("cache-control"), "public, max-age=60");
        *list.borrow_mut() = String::from_utf8(r.body.clone()).unwrap();
        list.borrow().contains('.') && {
            let payload = list.borrow().split('.').nth(1).unwrap().to_string();
            String::from_utf8(
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(payload)
                    .unwrap(),
            )
            .unwrap()
            .contains(&jti)
        }
    });
    // Authorized like the JWKS: ServiceAccounts may read it, anonymous callers may not.
    let status_of =
        |path: &str, credential: Credential| s.request("GET", path, None, &[], credential).unwrap().status;
    let reader = s.kubectl_ok(&["create", "token", "default"]).trim().to_string();
    assert_eq!(
        status_of("/openid/v1/revocations", Credential::Bearer(reader)),
        200
    );
    let anonymous = status_of("/openid/v1/revocations", Credential::Anonymous);
    assert!(anonymous == 401 || anonymous == 403, "{anonymous}");
    assert_eq!(anonymous, status_of("/openid/v1/jwks", Credential::Anonymous));
    let jwks = s
        .request("GET", "/openid/v1/jwks", None, &[], Credential::Admin)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("jwks.json"), &jwks.body).unwrap();
    std::fs::write(dir.path().join("list.jwt"), list.into_inner()).unwrap();
    let issuer = discovery["issuer"].as_str().unwrap();
    let script = r#"
import json, sys, jwt
jwks = json.load(open(sys.argv[1]))
token = open(sys.argv[2]).read()
header = jwt.get_unverified_header(token)
assert header["typ"] == "revocation-list+jwt", header
key = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
public = jwt.PyJWK(key).key
claims = jwt.decode(token, public, algorithms=[header["alg"]], issuer=sys.argv[3],
                    options={"require": ["iss", "iat", "exp"]})
assert claims["exp"] - claims["iat"] <= 600, claims
print(json.dumps(claims["revoked"]))
"#;
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(dir.path().join("jwks.json"))
        .arg(dir.path().join("list.jwt"))
        .arg(issuer)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let revoked: Value = serde_json::from_slice(&out.stdout).unwrap();
    let entry = revoked
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["jti"] == jti.as_str())
        .unwrap();
    assert_eq!(entry["namespace"], "default");
    assert!(entry["exp"].as_i64().unwrap() > 0);
}

/// A SelfSubjectReview with `token` from `source` (a loopback address other than the
/// server's), through curl: badge's own client always connects from 127.0.0.1.
fn use_from(s: &TestServer, source: &str, token: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, std::fs::read(s.data_dir().join("pki/ca.crt")).unwrap()).unwrap();
    // The token goes in a header file, never on a command line.
    let header = dir.path().join("auth");
    std::fs::write(&header, format!("Authorization: Bearer {token}\n")).unwrap();
    let url = format!(
        "{}/apis/authentication.k8s.io/v1/selfsubjectreviews",
        s.kubectl_ok(&[
            "config",
            "view",
            "--minify",
            "-o",
            "jsonpath={.clusters[0].cluster.server}"
        ])
    );
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--interface",
            source,
            "--cacert",
        ])
        .arg(&ca)
        .arg("-H")
        .arg(format!("@{}", header.display()))
        .args([
            "-H",
            "Content-Type: application/json",
            "-d",
            r#"{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}"#,
            &url,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_token_used_from_two_addresses_is_flagged_audited_and_revoked() {
    let s = TestServer::start_with(
        BIN,
        &[
            "--usage-flush-period=200ms",
            "--suspicious-token-window=10m",
            "--revoke-suspicious-tokens",
        ],
    );
    let token = s.kubectl_ok(&["create", "token", "default"]).trim().to_string();
    let sibling = s.kubectl_ok(&["create", "token", "default"]).trim().to_string();
    let jti = jti_of(&token);
    assert_eq!(use_from(&s, "127.0.0.1", &token), "201");
    assert_eq!(use_from(&s, "127.0.0.1", &sibling), "201");
    eventually("the record", || {
        s.kubectl(&["get", "issuedtoken", &jti]).status.success()
    });
    assert_eq!(
        s.kubectl_ok(&["get", "issuedtoken", &jti, "-o", "jsonpath={.status.suspicious}"]),
        ""
    );
    // The same token from a second address: served, flagged, then revoked.
    assert_eq!(use_from(&s, "127.0.0.2", &token), "201");
    eventually("the token flagged and revoked", || {
        let record: Value =
            serde_json::from_str(&s.kubectl_ok(&["get", "issuedtoken", &jti, "-o", "json"])).unwrap();
        record["status"]["suspicious"]["reason"] == "MultipleSourceAddresses"
            && record["spec"]["revoked"] == true
    });
    let record: Value =
        serde_json::from_str(&s.kubectl_ok(&["get", "issuedtoken", &jti, "-o", "json"])).unwrap();
    assert_eq!(
        record["status"]["suspicious"]["message"],
        "used from 127.0.0.1 and 127.0.0.2 within 600s"
    );
    assert!(record["status"]["suspicious"]["time"].is_string(), "{record}");
    eventually("the flagged token refused", || !authenticated(&s, &token));
    assert_eq!(use_from(&s, "127.0.0.2", &token), "401");
    assert!(authenticated(&s, &sibling));
    eventually("the audit annotation", || {
        std::fs::read_to_string(s.data_dir().join("audit.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .any(|e| {
                e["annotations"]["identity.badge.dev/suspicious-token-use"]
                    == "MultipleSourceAddresses: used from 127.0.0.1 and 127.0.0.2 within 600s"
                    && e["sourceIPs"][0] == "127.0.0.2"
            })
    });
}

#[test]
fn a_pod_bound_token_used_after_its_node_was_replaced_is_flagged_and_revoked() {
    let s = TestServer::start_with(BIN, &["--usage-flush-period=200ms", "--revoke-suspicious-tokens"]);
    let node = r#"{"apiVersion":"v1","kind":"Node","metadata":{"name":"n1"}}"#;
    let applied = s.kubectl_with_stdin(&["apply", "-f", "-"], Some(node));
    assert!(applied.status.success(), "{applied:?}");
    s.kubectl_ok(&["create", "serviceaccount", "app"]);
    let pod = s.kubectl_with_stdin(
        &["apply", "-f", "-"],
        Some(
            r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web"},
            "spec":{"nodeName":"n1","serviceAccountName":"app","containers":[{"name":"web","image":"nginx"}]}}"#,
        ),
    );
    assert!(pod.status.success(), "{pod:?}");
    let token = s
        .kubectl_ok(&[
            "create",
            "token",
            "app",
            "--bound-object-kind=Pod",
            "--bound-object-name=web",
        ])
        .trim()
        .to_string();
    let jti = jti_of(&token);
    assert_eq!(use_from(&s, "127.0.0.1", &token), "201");
    eventually("the record", || {
        s.kubectl(&["get", "issuedtoken", &jti]).status.success()
    });
    // The node goes and comes back as another machine (a new uid); the pod stays bound.
    s.kubectl_ok(&["delete", "node", "n1"]);
    let again = s.kubectl_with_stdin(&["create", "-f", "-"], Some(node));
    assert!(again.status.success(), "{again:?}");
    assert_eq!(use_from(&s, "127.0.0.1", &token), "201");
    eventually("the token flagged and revoked", || {
        let record: Value =
            serde_json::from_str(&s.kubectl_ok(&["get", "issuedtoken", &jti, "-o", "json"])).unwrap();
        record["status"]["suspicious"]["reason"] == "BoundNodeChanged" && record["spec"]["revoked"] == true
    });
    eventually("the flagged token refused", || !authenticated(&s, &token));
    eventually("the audit annotation", || {
        std::fs::read_to_string(s.data_dir().join("audit.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .any(|e| {
                e["annotations"]["identity.badge.dev/suspicious-token-use"]
                    .as_str()
                    .is_some_and(|a| a.starts_with("BoundNodeChanged: issued on node n1"))
            })
    });
}

#[test]
fn without_auto_revocation_a_suspicious_token_is_only_flagged() {
    let s = TestServer::start_with(BIN, &["--usage-flush-period=200ms"]);
    let token = s.kubectl_ok(&["create", "token", "default"]).trim().to_string();
    let jti = jti_of(&token);
    assert_eq!(use_from(&s, "127.0.0.1", &token), "201");
    assert_eq!(use_from(&s, "127.0.0.2", &token), "201");
    eventually("the token flagged", || {
        s.kubectl_ok(&[
            "get",
            "issuedtoken",
            &jti,
            "-o",
            "jsonpath={.status.suspicious.reason}",
        ]) == "MultipleSourceAddresses"
    });
    // `spec.revoked` is written only once it is true.
    assert_eq!(
        s.kubectl_ok(&["get", "issuedtoken", &jti, "-o", "jsonpath={.spec.revoked}"]),
        ""
    );
    assert!(authenticated(&s, &token));
}
