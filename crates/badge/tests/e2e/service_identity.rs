//! ServiceAccount identities used outside the server: `badge kubeconfig`, `badge oidc
//! publish`, and badge-verify's axum and tonic examples accepting tokens from a real server,
//! and refusing one revoked by `badge token revoke` through the signed revocation list.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use badge_testkit::{Credential, TestServer};

use crate::server;

const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

fn badge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_badge"))
        .args(args)
        .output()
        .unwrap()
}

fn kubectl_as(kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new(badge_testkit::kubectl_path())
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .unwrap()
}

/// kubectl's output without the trailing newline.
fn out(s: &TestServer, args: &[&str]) -> String {
    s.kubectl_ok(args).trim().to_string()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A ServiceAccount that may read ConfigMaps in `default` and nothing else.
fn configmap_reader(s: &TestServer, name: &str) {
    s.kubectl_ok(&["create", "sa", name, "-n", "default"]);
    s.kubectl_ok(&[
        "create",
        "role",
        "cm-reader",
        "-n",
        "default",
        "--verb=get,list",
        "--resource=configmaps",
    ]);
    s.kubectl_ok(&[
        "create",
        "rolebinding",
        &format!("{name}-reads-cms"),
        "-n",
        "default",
        "--role=cm-reader",
        &format!("--serviceaccount=default:{name}"),
    ]);
}

fn kubeconfig_for(s: &TestServer, dir: &Path, extra: &[&str]) -> (PathBuf, Output) {
    let path = dir.join("sa.kubeconfig");
    let admin = s.kubeconfig();
    let mut args = vec![
        "kubeconfig",
        "--serviceaccount",
        "default/app",
        "--kubeconfig",
        admin.to_str().unwrap(),
    ];
    args.extend_from_slice(&["-o", path.to_str().unwrap()]);
    args.extend_from_slice(extra);
    let out = badge(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    (path, out)
}

fn assert_is_app_with_rbac(path: &Path) {
    let whoami = kubectl_as(
        path,
        &["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"],
    );
    assert!(whoami.status.success(), "{}", text(&whoami.stderr));
    assert_eq!(text(&whoami.stdout), "system:serviceaccount:default:app");
    let allowed = kubectl_as(path, &["get", "configmaps", "-n", "default"]);
    assert!(allowed.status.success(), "{}", text(&allowed.stderr));
    let denied = kubectl_as(path, &["get", "secrets", "-n", "default"]);
    assert!(!denied.status.success());
    assert!(
        text(&denied.stderr).contains(
            "User \"system:serviceaccount:default:app\" cannot list resource \"secrets\" in API group \"\" in the namespace \"default\""
        ),
        "{}",
        text(&denied.stderr)
    );
}

#[test]
fn kubeconfig_for_a_service_account_is_that_account_under_rbac() {
    let s = server();
    configmap_reader(&s, "app");
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = kubeconfig_for(&s, dir.path(), &["--duration", "2h"]);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_is_app_with_rbac(&path);
    // A TokenRequest token: it expires, and no Secret was made for it.
    assert!(
        s.kubectl_err(&["get", "secret", "app-token", "-n", "default"])
            .contains("NotFound")
    );

    // The legacy mode warns, creates the token Secret once, and works the same.
    let (legacy, legacy_out) = kubeconfig_for(&s, dir.path(), &["--legacy"]);
    let warning = text(&legacy_out.stderr);
    assert!(
        warning.contains("Warning: --legacy stores a token that never expires"),
        "{warning}"
    );
    assert_is_app_with_rbac(&legacy);
    assert_eq!(
        out(
            &s,
            &[
                "get",
                "secret",
                "app-token",
                "-n",
                "default",
                "-o",
                "jsonpath={.type}"
            ]
        ),
        "kubernetes.io/service-account-token"
    );
    let (_, again) = kubeconfig_for(&s, dir.path(), &["--legacy"]);
    assert!(
        !text(&again.stderr).contains("created"),
        "{}",
        text(&again.stderr)
    );

    // An unknown ServiceAccount is the server's NotFound.
    let admin = s.kubeconfig();
    let out = badge(&[
        "kubeconfig",
        "--serviceaccount",
        "default/ghost",
        "--kubeconfig",
        admin.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("serviceaccounts \"ghost\" not found"),
        "{}",
        text(&out.stderr)
    );
}

fn publish(s: &TestServer, dir: &Path, extra: &[&str]) -> Output {
    let admin = s.kubeconfig();
    let mut args = vec![
        "oidc",
        "publish",
        dir.to_str().unwrap(),
        "--kubeconfig",
        admin.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let out = badge(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    out
}

/// Verifies `token` with PyJWT from the published files only: the discovery document under
/// `dir`, then the JWKS its jwks_uri names (mapped from the issuer URL to `dir`).
fn verify_from_files(dir: &Path, issuer: &str, token: &str) -> String {
    let script = r#"
import json, os, sys, jwt
root, issuer, token = sys.argv[1], sys.argv[2], sys.argv[3]
config = json.load(open(os.path.join(root, ".well-known/openid-configuration")))
assert config["issuer"] == issuer, config
prefix = issuer.rstrip("/") + "/"
assert config["jwks_uri"].startswith(prefix), config
keys = json.load(open(os.path.join(root, config["jwks_uri"][len(prefix):])))["keys"]
kid = jwt.get_unverified_header(token)["kid"]
key = next(jwt.PyJWK(k).key for k in keys if k["kid"] == kid)
claims = jwt.decode(token, key, algorithms=config["id_token_signing_alg_values_supported"],
                    audience="sts.example.com", issuer=issuer)
print(claims["sub"])
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(dir)
        .arg(issuer)
        .arg(token)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    text(&out.stdout).trim().to_string()
}

/// The `revoked` entries of the published revocation list, verified with PyJWT against the
/// published JWKS, both found through the published discovery document.
fn published_revocations(dir: &Path, issuer: &str) -> serde_json::Value {
    let script = r#"
import json, os, sys, jwt
root, issuer = sys.argv[1], sys.argv[2]
config = json.load(open(os.path.join(root, ".well-known/openid-configuration")))
prefix = issuer.rstrip("/") + "/"
keys = json.load(open(os.path.join(root, config["jwks_uri"][len(prefix):])))["keys"]
assert config["revocation_list_uri"].startswith(prefix), config
token = open(os.path.join(root, config["revocation_list_uri"][len(prefix):])).read()
header = jwt.get_unverified_header(token)
assert header["typ"] == "revocation-list+jwt", header
key = next(jwt.PyJWK(k).key for k in keys if k["kid"] == header["kid"])
claims = jwt.decode(token, key, algorithms=[header["alg"]], issuer=issuer,
                    options={"require": ["iss", "iat", "exp"]})
print(json.dumps(claims["revoked"]))
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(dir)
        .arg(issuer)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn claim_of(token: &str, name: &str) -> String {
    use base64::Engine;
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.split('.').nth(1).unwrap())
        .unwrap();
    serde_json::from_slice::<serde_json::Value>(&payload).unwrap()[name]
        .as_str()
        .unwrap()
        .to_string()
}

/// `badge token revoke JTI -n default` against the server's data dir.
fn revoke(s: &TestServer, jti: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_badge"))
        .args(["token", "revoke", "--data-dir"])
        .arg(s.data_dir())
        .args([jti, "-n", "default"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
}

fn jwks_kids(dir: &Path) -> Vec<String> {
    let jwks: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("openid/v1/jwks")).unwrap()).unwrap();
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn oidc_publish_writes_documents_a_verifier_trusts_and_rotation_publishes_first() {
    let s = server();
    s.kubectl_ok(&["create", "sa", "ext", "-n", "default"]);
    let token = out(
        &s,
        &[
            "create",
            "token",
            "ext",
            "-n",
            "default",
            "--audience=sts.example.com",
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    publish(&s, dir.path(), &[]);
    assert_eq!(
        verify_from_files(dir.path(), ISSUER, &token),
        "system:serviceaccount:default:ext"
    );
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join(".well-known/openid-configuration")).unwrap())
            .unwrap();
    assert_eq!(config["jwks_uri"], format!("{ISSUER}/openid/v1/jwks"));
    // The server's revocation list is published beside the JWKS, named at the issuer URL.
    assert_eq!(
        config["revocation_list_uri"],
        format!("{ISSUER}/openid/v1/revocations")
    );
    assert_eq!(published_revocations(dir.path(), ISSUER), serde_json::json!([]));
    // Re-running is safe: the same key set, no leftovers.
    let before = std::fs::read(dir.path().join("openid/v1/jwks")).unwrap();
    publish(&s, dir.path(), &[]);
    assert_eq!(std::fs::read(dir.path().join("openid/v1/jwks")).unwrap(), before);
    let mut files: Vec<String> = std::fs::read_dir(dir.path().join("openid/v1"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["jwks", "revocations"]);

    // A revoked token reaches the published list on the next run.
    let jti = claim_of(&token, "jti");
    crate::eventually("the token's record", || {
        s.kubectl(&["get", "issuedtoken", &jti, "-n", "default"])
            .status
            .success()
    });
    revoke(&s, &jti);
    crate::eventually("the revocation in the published list", || {
        publish(&s, dir.path(), &[]);
        published_revocations(dir.path(), ISSUER)
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["jti"] == jti.as_str() && e["namespace"] == "default")
    });

    // A rotation stages the next key; publishing again lists it before it signs, and tokens
    // of the current key still verify from the files.
    let rotate = s
        .request(
            "POST",
            "/badge/v1/keys/rotate?publishLeadSeconds=3600",
            None,
            &[],
            Credential::Admin,
        )
        .unwrap();
    assert!(rotate.status < 300, "{}", String::from_utf8_lossy(&rotate.body));
    publish(&s, dir.path(), &[]);
    assert_eq!(jwks_kids(dir.path()).len(), 2);
    let still_old = out(
        &s,
        &[
            "create",
            "token",
            "ext",
            "-n",
            "default",
            "--audience=sts.example.com",
        ],
    );
    assert_eq!(
        verify_from_files(dir.path(), ISSUER, &still_old),
        "system:serviceaccount:default:ext"
    );

    // The issuer and the JWKS location are separate, as --service-account-issuer and
    // --service-account-jwks-uri are upstream.
    let other = tempfile::tempdir().unwrap();
    publish(
        &s,
        other.path(),
        &[
            "--issuer",
            ISSUER,
            "--jwks-uri",
            "https://cdn.example.com/keys.json",
        ],
    );
    let config: serde_json::Value = serde_json::from_slice(
        &std::fs::read(other.path().join(".well-known/openid-configuration")).unwrap(),
    )
    .unwrap();
    assert_eq!(config["issuer"], ISSUER);
    assert_eq!(config["jwks_uri"], "https://cdn.example.com/keys.json");

    // The list is signed for the server's issuer: documents for another issuer leave it out
    // (and a re-run removes the one published before), with a warning.
    let warned = publish(&s, dir.path(), &["--issuer", "https://oidc.example.com/other"]);
    assert!(
        text(&warned.stderr).contains("the revocation list is signed for"),
        "{}",
        text(&warned.stderr)
    );
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join(".well-known/openid-configuration")).unwrap())
            .unwrap();
    assert!(config.get("revocation_list_uri").is_none(), "{config}");
    assert!(!dir.path().join("openid/v1/revocations").exists());
}

// --- badge-verify's examples against a real server

#[allow(dead_code)]
#[path = "../../../badge-verify/examples/axum_service.rs"]
mod axum_example;
#[allow(dead_code)]
#[path = "../../../badge-verify/examples/tonic_service.rs"]
mod tonic_example;

fn verifier_for(s: &TestServer, audience: &str) -> badge_verify::Verifier {
    verifier_builder(s, ISSUER, audience).build().unwrap()
}

fn verifier_builder(s: &TestServer, issuer: &str, audience: &str) -> badge_verify::VerifierBuilder {
    // The issuer's discovery is readable by ServiceAccounts (not anonymously), so the
    // verifier fetches with a token of its own.
    let _ = s.kubectl(&["create", "sa", "verifier", "-n", "default"]);
    let fetch_token = out(s, &["create", "token", "verifier", "-n", "default"]);
    badge_verify::Verifier::builder(issuer)
        .audience(audience)
        .discovery_url(format!(
            "https://127.0.0.1:{}/.well-known/openid-configuration",
            s.port
        ))
        .ca_pem(std::fs::read(s.data_dir().join("pki/ca.crt")).unwrap())
        .fetch_bearer_token(fetch_token)
}

fn kid_of(token: &str) -> String {
    use base64::Engine;
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.split('.').next().unwrap())
        .unwrap();
    serde_json::from_slice::<serde_json::Value>(&header).unwrap()["kid"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn the_verifier_follows_a_real_rotation_and_matches_the_issuer_exactly() {
    let s = server();
    s.kubectl_ok(&["create", "sa", "checkout", "-n", "default"]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let policy = badge_verify::CachePolicy {
        min_refresh_interval: std::time::Duration::ZERO,
        ..Default::default()
    };
    let verifier = verifier_builder(&s, ISSUER, "payments")
        .cache_policy(policy)
        .build()
        .unwrap();
    let before = out(
        &s,
        &[
            "create",
            "token",
            "checkout",
            "-n",
            "default",
            "--audience=payments",
        ],
    );
    runtime.block_on(verifier.verify(&before)).unwrap();
    // The server rotates; the verifier's cached JWKS (max-age 1h) lacks the new key.
    let rotate = s
        .request(
            "POST",
            "/badge/v1/keys/rotate?publishLeadSeconds=1",
            None,
            &[],
            Credential::Admin,
        )
        .unwrap();
    assert!(rotate.status < 300, "{}", String::from_utf8_lossy(&rotate.body));
    let mut after = String::new();
    crate::eventually("the next key to sign", || {
        after = out(
            &s,
            &[
                "create",
                "token",
                "checkout",
                "-n",
                "default",
                "--audience=payments",
            ],
        );
        kid_of(&after) != kid_of(&before)
    });
    let identity = runtime.block_on(verifier.verify(&after)).unwrap();
    assert_eq!(identity.name, "checkout");
    runtime.block_on(verifier.verify(&before)).unwrap();

    // The same issuer with a trailing slash is another issuer: discovery's issuer does not
    // match it, so no keys are trusted.
    let slashed = verifier_builder(&s, &format!("{ISSUER}/"), "payments")
        .build()
        .unwrap();
    let err = runtime.block_on(slashed.verify(&after)).unwrap_err();
    assert!(
        matches!(err, badge_verify::VerifyError::KeysUnavailable(_)),
        "{err}"
    );
    assert!(err.to_string().contains("is not the configured issuer"), "{err}");
}

#[test]
fn the_verifier_refuses_a_token_revoked_with_badge_token_revoke() {
    let s = server();
    s.kubectl_ok(&["create", "sa", "checkout", "-n", "default"]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // No caching: each verification fetches the list again, so the test waits for the
    // revocation to reach the server's list rather than for a max-age to pass.
    let policy = badge_verify::CachePolicy {
        min_refresh_interval: std::time::Duration::ZERO,
        max_max_age: std::time::Duration::ZERO,
        ..Default::default()
    };
    // Only the issuer is configured: discovery names the list.
    let verifier = verifier_builder(&s, ISSUER, "payments")
        .cache_policy(policy)
        .build()
        .unwrap();
    let token = || {
        out(
            &s,
            &[
                "create",
                "token",
                "checkout",
                "-n",
                "default",
                "--audience=payments",
            ],
        )
    };
    let (revoked, sibling) = (token(), token());
    for t in [&revoked, &sibling] {
        assert_eq!(runtime.block_on(verifier.verify(t)).unwrap().name, "checkout");
    }
    let jti = claim_of(&revoked, "jti");
    crate::eventually("the token's record", || {
        s.kubectl(&["get", "issuedtoken", &jti, "-n", "default"])
            .status
            .success()
    });
    revoke(&s, &jti);
    crate::eventually("the verifier refusing the revoked token", || {
        match runtime.block_on(verifier.verify(&revoked)) {
            Err(badge_verify::VerifyError::Revoked) => true,
            Ok(_) => false,
            Err(other) => panic!("refused for another reason: {other}"),
        }
    });
    let identity = runtime.block_on(verifier.verify(&sibling)).unwrap();
    assert_eq!(
        (identity.namespace.as_str(), identity.name.as_str()),
        ("default", "checkout")
    );
}

/// One HTTP/1.1 GET with an optional bearer token: the status code and body.
fn http_get(port: u16, path: &str, token: Option<&str>) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split(' ').nth(1).unwrap().parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn axum_example_accepts_its_audience_and_refuses_others() {
    let s = server();
    s.kubectl_ok(&["create", "sa", "checkout", "-n", "default"]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let verifier = verifier_for(&s, "payments");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    runtime.spawn(async move { axum::serve(listener, axum_example::router(verifier)).await });

    let for_payments = out(
        &s,
        &[
            "create",
            "token",
            "checkout",
            "-n",
            "default",
            "--audience=payments",
        ],
    );
    let (status, body) = http_get(port, "/whoami", Some(&for_payments));
    assert_eq!(
        (status, body.as_str()),
        (200, "system:serviceaccount:default:checkout\n")
    );
    // A token for the API server (another audience) is not one for this service.
    let for_api = out(&s, &["create", "token", "checkout", "-n", "default"]);
    assert_eq!(http_get(port, "/whoami", Some(&for_api)).0, 401);
    assert_eq!(http_get(port, "/whoami", None).0, 401);
    let mut tampered = for_payments.clone();
    tampered.pop();
    tampered.push(if for_payments.ends_with('A') { 'B' } else { 'A' });
    assert_eq!(http_get(port, "/whoami", Some(&tampered)).0, 401);
}

#[test]
fn tonic_example_and_token_review_mode() {
    let s = server();
    s.kubectl_ok(&["create", "sa", "checkout", "-n", "default"]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let verifier = verifier_for(&s, "payments");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    runtime.spawn(tonic_example::serve(listener, verifier));

    let for_payments = out(
        &s,
        &[
            "create",
            "token",
            "checkout",
            "-n",
            "default",
            "--audience=payments",
        ],
    );
    let for_api = out(&s, &["create", "token", "checkout", "-n", "default"]);
    let check = |token: &str| {
        let token = token.to_string();
        runtime.block_on(async move {
            use tonic_health::pb::HealthCheckRequest;
            use tonic_health::pb::health_client::HealthClient;
            let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))
                .unwrap()
                .connect()
                .await
                .unwrap();
            let mut client = HealthClient::new(channel);
            let mut request = tonic::Request::new(HealthCheckRequest {
                service: String::new(),
            });
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
            client.check(request).await.map(|r| r.into_inner().status)
        })
    };
    assert_eq!(
        check(&for_payments).unwrap(),
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    assert_eq!(check(&for_api).unwrap_err().code(), tonic::Code::Unauthenticated);

    // TokenReview mode: the reviewer's own ServiceAccount may create TokenReviews.
    s.kubectl_ok(&["create", "sa", "reviewer", "-n", "default"]);
    s.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        "reviewer-delegates",
        "--clusterrole=system:auth-delegator",
        "--serviceaccount=default:reviewer",
    ]);
    let reviewer = badge_verify::TokenReviewer::new(
        &format!("https://127.0.0.1:{}", s.port),
        &std::fs::read(s.data_dir().join("pki/ca.crt")).unwrap(),
        out(&s, &["create", "token", "reviewer", "-n", "default"]),
        vec!["payments".to_string()],
    )
    .unwrap();
    let identity = runtime.block_on(reviewer.verify(&for_payments)).unwrap();
    assert_eq!(
        (identity.namespace.as_str(), identity.name.as_str()),
        ("default", "checkout")
    );
    assert_eq!(identity.audiences, vec!["payments".to_string()]);
    let uid = out(
        &s,
        &[
            "get",
            "sa",
            "checkout",
            "-n",
            "default",
            "-o",
            "jsonpath={.metadata.uid}",
        ],
    );
    assert_eq!(identity.uid, uid);
    assert!(matches!(
        runtime.block_on(reviewer.verify(&for_api)),
        Err(badge_verify::VerifyError::NotAuthenticated(_))
    ));
    // Deleting the ServiceAccount ends its tokens at once for TokenReview.
    s.kubectl_ok(&["delete", "sa", "checkout", "-n", "default"]);
    assert!(runtime.block_on(reviewer.verify(&for_payments)).is_err());
}
