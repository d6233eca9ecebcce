//! ServiceAccount tokens end to end: TokenRequest through kubectl, bearer authentication,
//! TokenReview, revocation by deletion, legacy Secret tokens, OIDC discovery checked by an
//! outside verifier, and key rotation.

use badge_testkit::Credential::{Admin, Bearer};
use badge_testkit::TestServer;
use serde_json::{Value, json};

use crate::{eventually, server};

fn claims_of(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

fn header_of(token: &str) -> Value {
    use base64::Engine;
    let header = token.split('.').next().unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header)
            .unwrap(),
    )
    .unwrap()
}

#[test]
fn create_token_and_use_it_with_rbac() {
    let s = server();
    s.kubectl_ok(&["create", "sa", "reader", "-n", "default"]);
    let token = s.kubectl_ok(&["create", "token", "reader", "-n", "default"]);
    assert_eq!(header_of(&token)["alg"], "RS256");
    assert_eq!(
        header_of(&token).as_object().unwrap().len(),
        2,
        "alg and kid only"
    );
    let claims = claims_of(&token);
    assert_eq!(claims["iss"], "https://kubernetes.default.svc.cluster.local");
    assert_eq!(claims["sub"], "system:serviceaccount:default:reader");
    assert_eq!(
        claims["aud"],
        json!(["https://kubernetes.default.svc.cluster.local"])
    );
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        3600
    );
    assert_eq!(claims["kubernetes.io"]["serviceaccount"]["name"], "reader");

    let who = s.kubectl_ok(&["--token", &token, "auth", "whoami", "-o", "json"]);
    let who: Value = serde_json::from_str(&who).unwrap();
    assert_eq!(
        who["status"]["userInfo"]["username"],
        "system:serviceaccount:default:reader"
    );
    let jti = claims["jti"].as_str().unwrap();
    assert_eq!(
        who["status"]["userInfo"]["extra"]["authentication.kubernetes.io/credential-id"],
        json!([format!("JTI={jti}")])
    );

    // The seed scenario: a pod-reader Role bound to the ServiceAccount.
    let denied = s.kubectl_err(&["--token", &token, "get", "pods", "-n", "default"]);
    assert!(denied.contains("cannot list resource \"pods\""), "{denied}");
    s.kubectl_ok(&[
        "create",
        "role",
        "pod-reader",
        "--verb=get,list,watch",
        "--resource=pods",
        "-n",
        "default",
    ]);
    s.kubectl_ok(&[
        "create",
        "rolebinding",
        "reader-pods",
        "--role=pod-reader",
        "--serviceaccount=default:reader",
        "-n",
        "default",
    ]);
    let out = s.kubectl(&["--token", &token, "get", "pods", "-n", "default"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for refused in [
        vec!["get", "pods", "-n", "kube-system"],
        vec!["get", "secrets", "-n", "default"],
        vec!["delete", "pod", "anything", "-n", "default"],
    ] {
        let mut args = vec!["--token", token.as_str()];
        args.extend(refused.iter());
        let err = s.kubectl_err(&args);
        assert!(
            err.contains("Forbidden") || err.contains("forbidden"),
            "{refused:?}: {err}"
        );
    }
    assert_eq!(
        s.kubectl_ok(&[
            "auth",
            "can-i",
            "list",
            "pods",
            "-n",
            "default",
            "--as=system:serviceaccount:default:reader"
        ])
        .trim(),
        "yes"
    );
    let no = s.kubectl(&[
        "auth",
        "can-i",
        "list",
        "secrets",
        "-n",
        "default",
        "--as=system:serviceaccount:default:reader",
    ]);
    assert_eq!(String::from_utf8_lossy(&no.stdout).trim(), "no");

    // A forged or garbled token is 401 with no detail.
    let mut forged = token.clone();
    forged.replace_range(forged.len() - 4.., "AAAA");
    let r = s
        .request(
            "GET",
            "/api/v1/namespaces/default/pods",
            None,
            &[],
            Bearer(forged.clone()),
        )
        .unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["message"], "Unauthorized");
    assert!(!String::from_utf8_lossy(&r.body).contains(&forged));
}

#[test]
fn token_request_options_and_errors() {
    let s = server();
    s.kubectl_ok(&["create", "sa", "app", "-n", "default"]);
    let token = s.kubectl_ok(&[
        "create",
        "token",
        "app",
        "-n",
        "default",
        "--audience=vault",
        "--audience=api",
        "--duration=20m",
    ]);
    let claims = claims_of(&token);
    assert_eq!(claims["aud"], json!(["vault", "api"]));
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        1200
    );
    // Audiences: the review's, as an intersection in request order.
    let r = crate::token_review(&s, &token, &["api", "other"]);
    assert_eq!(r["authenticated"], true);
    assert_eq!(r["audiences"], json!(["api"]));
    let wrong = crate::token_review(&s, &token, &["other"]);
    assert!(wrong.get("authenticated").is_none(), "{wrong}");
    assert_eq!(wrong["user"], json!({}));
    // The API refuses a token for another audience.
    let r = s
        .request("GET", "/api/v1/namespaces/default/pods", None, &[], Bearer(token))
        .unwrap();
    assert_eq!(r.status, 401);

    let short = s.kubectl_err(&["create", "token", "app", "-n", "default", "--duration=5m"]);
    assert!(
        short.contains("may not specify a duration less than 10 minutes"),
        "{short}"
    );
    let missing = s.kubectl_err(&["create", "token", "nope", "-n", "default"]);
    assert!(
        missing.contains("serviceaccounts \"nope\" not found"),
        "{missing}"
    );
    let no_pod = s.kubectl_err(&[
        "create",
        "token",
        "app",
        "-n",
        "default",
        "--bound-object-kind=Pod",
        "--bound-object-name=ghost",
    ]);
    assert!(no_pod.contains("pods \"ghost\" not found"), "{no_pod}");
    s.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "bound",
        "--from-literal=a=b",
        "-n",
        "default",
    ]);
    let bad_uid = s.kubectl_err(&[
        "create",
        "token",
        "app",
        "-n",
        "default",
        "--bound-object-kind=Secret",
        "--bound-object-name=bound",
        "--bound-object-uid=not-the-uid",
    ]);
    assert!(bad_uid.contains("does not match the UID in record"), "{bad_uid}");
    let path = "/api/v1/namespaces/default/serviceaccounts/app/token";
    let body = json!({"spec": {"boundObjectRef": {"kind": "ConfigMap", "apiVersion": "v1", "name": "x"}}});
    let r = s
        .request(
            "POST",
            path,
            Some(serde_json::to_vec(&body).unwrap()),
            &[("content-type", "application/json")],
            Admin,
        )
        .unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["message"],
        "cannot bind token to object of type /v1, Kind=ConfigMap"
    );
}

#[test]
fn deleting_what_a_token_is_bound_to_revokes_it() {
    let s = server();
    s.kubectl_ok(&["create", "sa", "app", "-n", "default"]);
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  namespace: default\nspec:\n  serviceAccountName: app\n  nodeName: node-1\n  containers:\n  - name: c\n    image: busybox\n";
    assert!(
        s.kubectl_with_stdin(&["create", "-f", "-"], Some(pod))
            .status
            .success()
    );
    let node = "apiVersion: v1\nkind: Node\nmetadata:\n  name: node-1\n";
    assert!(
        s.kubectl_with_stdin(&["create", "-f", "-"], Some(node))
            .status
            .success()
    );
    s.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "bound",
        "--from-literal=a=b",
        "-n",
        "default",
    ]);

    let pod_token = s.kubectl_ok(&[
        "create",
        "token",
        "app",
        "-n",
        "default",
        "--bound-object-kind=Pod",
        "--bound-object-name=web",
    ]);
    let pod_claims = claims_of(&pod_token);
    assert_eq!(pod_claims["kubernetes.io"]["pod"]["name"], "web");
    assert_eq!(pod_claims["kubernetes.io"]["node"]["name"], "node-1");
    let secret_token = s.kubectl_ok(&[
        "create",
        "token",
        "app",
        "-n",
        "default",
        "--bound-object-kind=Secret",
        "--bound-object-name=bound",
    ]);
    let node_token = s.kubectl_ok(&[
        "create",
        "token",
        "app",
        "-n",
        "default",
        "--bound-object-kind=Node",
        "--bound-object-name=node-1",
    ]);
    let plain = s.kubectl_ok(&["create", "token", "app", "-n", "default"]);
    for t in [&pod_token, &secret_token, &node_token, &plain] {
        assert!(crate::authenticated(&s, t));
    }
    let r = crate::token_review(&s, &pod_token, &[]);
    assert_eq!(
        r["user"]["extra"]["authentication.kubernetes.io/pod-name"],
        json!(["web"])
    );

    // Nothing runs on node-1 to confirm a graceful deletion: force it.
    s.kubectl_ok(&[
        "delete",
        "pod",
        "web",
        "-n",
        "default",
        "--grace-period=0",
        "--force",
    ]);
    eventually("the pod-bound token to die", || {
        !crate::authenticated(&s, &pod_token)
    });
    // Recreating the pod under the same name does not revive the token.
    assert!(
        s.kubectl_with_stdin(&["create", "-f", "-"], Some(pod))
            .status
            .success()
    );
    assert!(!crate::authenticated(&s, &pod_token));
    s.kubectl_ok(&["delete", "secret", "bound", "-n", "default"]);
    eventually("the secret-bound token to die", || {
        !crate::authenticated(&s, &secret_token)
    });
    s.kubectl_ok(&["delete", "node", "node-1"]);
    eventually("the node-bound token to die", || {
        !crate::authenticated(&s, &node_token)
    });
    assert!(crate::authenticated(&s, &plain));
    s.kubectl_ok(&["delete", "sa", "app", "-n", "default"]);
    eventually("every token of the ServiceAccount to die", || {
        !crate::authenticated(&s, &plain)
    });
    s.kubectl_ok(&["create", "sa", "app", "-n", "default"]);
    assert!(
        !crate::authenticated(&s, &plain),
        "a recreated ServiceAccount has a new uid"
    );
}

#[test]
fn legacy_secret_tokens_are_filled_and_die_with_their_serviceaccount() {
    let s = server();
    s.kubectl_ok(&["create", "sa", "old", "-n", "default"]);
    let secret = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: old-token\n  namespace: default\n  annotations:\n    kubernetes.io/service-account.name: old\ntype: kubernetes.io/service-account-token\n";
    assert!(
        s.kubectl_with_stdin(&["apply", "-f", "-"], Some(secret))
            .status
            .success()
    );
    let mut token = String::new();
    eventually("the token controller to fill the secret", || {
        let b64 = s.kubectl_ok(&[
            "get",
            "secret",
            "old-token",
            "-n",
            "default",
            "-o",
            "jsonpath={.data.token}",
        ]);
        if b64.is_empty() {
            return false;
        }
        use base64::Engine;
        token = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b64).unwrap()).unwrap();
        true
    });
    let claims = claims_of(&token);
    assert_eq!(claims["iss"], "kubernetes/serviceaccount");
    assert!(claims.get("exp").is_none());
    assert_eq!(claims["kubernetes.io/serviceaccount/secret.name"], "old-token");
    let ns = s.kubectl_ok(&[
        "get",
        "secret",
        "old-token",
        "-n",
        "default",
        "-o",
        "jsonpath={.data.namespace}",
    ]);
    assert_eq!(ns, "ZGVmYXVsdA==");
    let uid = s.kubectl_ok(&[
        "get",
        "sa",
        "old",
        "-n",
        "default",
        "-o",
        "jsonpath={.metadata.uid}",
    ]);
    let annotated = s.kubectl_ok(&[
        "get",
        "secret",
        "old-token",
        "-n",
        "default",
        "-o",
        "jsonpath={.metadata.annotations.kubernetes\\.io/service-account\\.uid}",
    ]);
    assert_eq!(uid, annotated);
    let who = s.kubectl_ok(&[
        "--token",
        &token,
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username}",
    ]);
    assert_eq!(who, "system:serviceaccount:default:old");
    // The unchanged manifest applies as unchanged even though the server filled fields.
    let again = s.kubectl_with_stdin(&["apply", "-f", "-"], Some(secret));
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("unchanged"),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
    let describe = s.kubectl_ok(&["describe", "secret", "old-token", "-n", "default"]);
    assert!(
        describe.contains("kubernetes.io/service-account-token") && describe.contains("token:"),
        "{describe}"
    );
    s.kubectl_ok(&["delete", "sa", "old", "-n", "default"]);
    eventually("the token secret to be deleted", || {
        !s.kubectl(&["get", "secret", "old-token", "-n", "default"])
            .status
            .success()
    });
    assert!(!crate::authenticated(&s, &token));
}

#[test]
fn legacy_auto_generation_lists_a_working_secret() {
    let s = TestServer::start_with(
        env!("CARGO_BIN_EXE_badge"),
        // A bare boolean flag means true, as Go's pflag reads it.
        &["--legacy-service-account-token-auto-generation"],
    );
    s.kubectl_ok(&["create", "sa", "legacy", "-n", "default"]);
    let mut name = String::new();
    eventually("the ServiceAccount to list its token Secret", || {
        name = s.kubectl_ok(&[
            "get",
            "sa",
            "legacy",
            "-n",
            "default",
            "-o",
            "jsonpath={.secrets[0].name}",
        ]);
        !name.is_empty()
    });
    assert!(name.starts_with("legacy-token-"), "{name}");
    let mut token = String::new();
    eventually("the token to be filled in", || {
        let b64 = s.kubectl_ok(&[
            "get",
            "secret",
            &name,
            "-n",
            "default",
            "-o",
            "jsonpath={.data.token}",
        ]);
        use base64::Engine;
        token = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .unwrap_or_default();
        !token.is_empty()
    });
    let who = s.kubectl_ok(&[
        "--token",
        &token,
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username}",
    ]);
    assert_eq!(who, "system:serviceaccount:default:legacy");
}

#[test]
fn an_outside_verifier_accepts_tokens_through_oidc_discovery() {
    let s = server();
    s.kubectl_ok(&["create", "sa", "ext", "-n", "default"]);
    let token = s.kubectl_ok(&[
        "create",
        "token",
        "ext",
        "-n",
        "default",
        "--audience=sts.example.com",
    ]);
    let config = s
        .request("GET", "/.well-known/openid-configuration", None, &[], Admin)
        .unwrap();
    assert_eq!(config.header("cache-control"), "public, max-age=3600");
    let config = config.json();
    assert_eq!(config["issuer"], "https://kubernetes.default.svc.cluster.local");
    let jwks = s.request("GET", "/openid/v1/jwks", None, &[], Admin).unwrap();
    assert_eq!(jwks.header("content-type"), "application/jwk-set+json");
    // ServiceAccounts may read discovery (system:service-account-issuer-discovery).
    let sa_read = s
        .request(
            "GET",
            "/openid/v1/jwks",
            None,
            &[],
            Bearer(s.kubectl_ok(&["create", "token", "ext", "-n", "default"])),
        )
        .unwrap();
    assert_eq!(sa_read.status, 200);
    let dir = tempfile::tempdir().unwrap();
    let jwks_path = dir.path().join("jwks.json");
    std::fs::write(&jwks_path, &jwks.body).unwrap();
    let script = r#"
import json, sys, jwt
token, jwks_path = sys.argv[1], sys.argv[2]
keys = json.load(open(jwks_path))["keys"]
kid = jwt.get_unverified_header(token)["kid"]
key = next(jwt.PyJWK(k).key for k in keys if k["kid"] == kid)
claims = jwt.decode(token, key, algorithms=["RS256", "ES256"], audience="sts.example.com",
                    issuer="https://kubernetes.default.svc.cluster.local")
print(claims["sub"])
parts = token.split(".")
tampered = parts[0] + "." + parts[1][:-2] + ("AA" if parts[1][-2:] != "AA" else "BB") + "." + parts[2]
try:
    jwt.decode(tampered, key, algorithms=["RS256", "ES256"], audience="sts.example.com")
    print("TAMPERED-ACCEPTED")
except jwt.PyJWTError:
    print("tampered-rejected")
"#;
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&token)
        .arg(&jwks_path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        vec!["system:serviceaccount:default:ext", "tampered-rejected"]
    );
}

#[test]
fn key_rotation_without_downtime_and_revocation() {
    let s = server();
    s.kubectl_ok(&["create", "sa", "rot", "-n", "default"]);
    let before = s.kubectl_ok(&["create", "token", "rot", "-n", "default"]);
    let old_kid = header_of(&before)["kid"].as_str().unwrap().to_string();
    let rotate = |lead: i64| {
        let r = s
            .request(
                "POST",
                &format!("/badge/v1/keys/rotate?publishLeadSeconds={lead}"),
                None,
                &[],
                Admin,
            )
            .unwrap();
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        r.json()
    };
    let jwks_kids = || -> Vec<String> {
        let jwks = s
            .request("GET", "/openid/v1/jwks", None, &[], Admin)
            .unwrap()
            .json();
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_string())
            .collect()
    };
    // The rotation is in force on this server once the request returns: the new key signs,
    // and the old one is still published for the tokens it signed. How long a new key is
    // published before it signs, and how long a retired one keeps verifying, is pinned with
    // the clock passed in (badge-token's KeyRing and badge-keys' unit tests).
    let rotated = rotate(0);
    let new_kid = rotated["rotated"].as_str().unwrap().to_string();
    let kids = jwks_kids();
    assert!(kids.contains(&old_kid) && kids.contains(&new_kid), "{kids:?}");
    let during = s.kubectl_ok(&["create", "token", "rot", "-n", "default"]);
    let during_kid = header_of(&during)["kid"].as_str().unwrap().to_string();
    assert!(during_kid == old_kid || during_kid == new_kid, "{during_kid}");
    let after = s.kubectl_ok(&["create", "token", "rot", "-n", "default"]);
    assert_eq!(header_of(&after)["kid"], new_kid.as_str());
    // Old tokens keep verifying through the rotation.
    assert!(
        crate::authenticated(&s, &before)
            && crate::authenticated(&s, &during)
            && crate::authenticated(&s, &after)
    );
    let listed = s
        .request("GET", "/badge/v1/keys", None, &[], Admin)
        .unwrap()
        .json();
    assert_eq!(listed["keys"].as_array().unwrap().len(), 2);
    // Revoking the old key kills its tokens at once.
    let r = s
        .request(
            "POST",
            &format!("/badge/v1/keys/{old_kid}/revoke"),
            None,
            &[],
            Admin,
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(!crate::authenticated(&s, &before));
    assert!(crate::authenticated(&s, &after));
    // With a lead, the next key is published at once but does not sign: tokens issued now
    // are still the current key's, and the listing says when each side of the hand-over
    // happens.
    let published = rotate(3600);
    let pending_kid = published["rotated"].as_str().unwrap().to_string();
    assert!(jwks_kids().contains(&pending_kid));
    let pending = published["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == pending_kid.as_str())
        .unwrap();
    assert_eq!(pending["state"], "Pending");
    let signer = published["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == new_kid.as_str())
        .unwrap();
    assert_eq!(signer["state"], "Active");
    assert_eq!(signer["retiresAt"], pending["activatesAt"]);
    let meanwhile = s.kubectl_ok(&["create", "token", "rot", "-n", "default"]);
    assert_eq!(header_of(&meanwhile)["kid"], new_kid.as_str());
    // Only cluster admins may manage keys.
    let sa = s.kubectl_ok(&["create", "token", "rot", "-n", "default"]);
    assert_eq!(
        s.request("POST", "/badge/v1/keys/rotate", None, &[], Bearer(sa))
            .unwrap()
            .status,
        403
    );
}

#[test]
fn es256_keys_and_keys_survive_restarts() {
    let mut s = TestServer::start_with(
        env!("CARGO_BIN_EXE_badge"),
        &["--service-account-signing-key-type=ES256"],
    );
    s.kubectl_ok(&["create", "sa", "ec", "-n", "default"]);
    let token = s.kubectl_ok(&["create", "token", "ec", "-n", "default"]);
    assert_eq!(header_of(&token)["alg"], "ES256");
    s.restart();
    assert!(
        crate::authenticated(&s, &token),
        "tokens issued before a restart verify after it"
    );
}

#[test]
fn max_expiration_clamps_with_a_warning() {
    let s = TestServer::start_with(
        env!("CARGO_BIN_EXE_badge"),
        &["--service-account-max-token-expiration=2h"],
    );
    s.kubectl_ok(&["create", "sa", "c", "-n", "default"]);
    let out = s.kubectl(&["create", "token", "c", "-n", "default", "--duration=10h"]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("requested expiration of 36000 seconds shortened to 7200 seconds"),
        "{stderr}"
    );
    let claims = claims_of(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        7200
    );
}

#[test]
fn badge_keys_and_token_inspect_commands() {
    let s = server();
    let badge = |args: &[&str], stdin: Option<&str>| {
        use std::io::Write;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_badge"))
            .args(args)
            .env("KUBECONFIG", s.kubeconfig())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(input) = stdin {
            child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        }
        child.wait_with_output().unwrap()
    };
    let listed = badge(&["keys", "list"], None);
    let text = String::from_utf8_lossy(&listed.stdout).to_string();
    assert!(listed.status.success() && text.contains("Active"), "{text}");
    let rotated = badge(&["keys", "rotate", "--publish-lead-seconds", "0"], None);
    let text = String::from_utf8_lossy(&rotated.stdout).to_string();
    assert!(text.starts_with("added key "), "{text}");
    let new_kid = text
        .lines()
        .next()
        .unwrap()
        .trim_start_matches("added key ")
        .to_string();
    assert!(text.contains("Retired"), "{text}");

    s.kubectl_ok(&["create", "sa", "cli", "-n", "default"]);
    let token = s.kubectl_ok(&["create", "token", "cli", "-n", "default"]);
    assert_eq!(header_of(&token)["kid"], new_kid.as_str());
    let inspected = badge(&["token", "inspect", "-"], Some(&token));
    let text = String::from_utf8_lossy(&inspected.stdout).to_string();
    assert!(
        inspected.status.success(),
        "{}",
        String::from_utf8_lossy(&inspected.stderr)
    );
    assert!(
        text.contains("Subject:     system:serviceaccount:default:cli"),
        "{text}"
    );
    assert!(text.contains("In JWKS:     yes"), "{text}");
    assert!(
        text.contains("Verifies:    yes, the server accepts it as system:serviceaccount:default:cli"),
        "{text}"
    );
    s.kubectl_ok(&["delete", "sa", "cli", "-n", "default"]);
    crate::eventually("the token to be refused", || {
        let out = badge(&["token", "inspect", "-"], Some(&token));
        String::from_utf8_lossy(&out.stdout).contains("Verifies:    no")
    });
    let garbage = badge(&["token", "inspect", "not.a.token"], None);
    assert!(!garbage.status.success());
}

#[test]
fn keys_from_files_sign_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let signer = badge_token::SigningKey::generate_ec(badge_token::Curve::P256).unwrap();
    let other = badge_token::SigningKey::generate_rsa(2048).unwrap();
    let signer_path = dir.path().join("sa.key");
    let other_path = dir.path().join("other.pub");
    std::fs::write(&signer_path, signer.to_pkcs8_pem().unwrap()).unwrap();
    std::fs::write(&other_path, other.public().to_pem()).unwrap();
    let s = TestServer::start_with(
        env!("CARGO_BIN_EXE_badge"),
        &[
            "--service-account-signing-key-file",
            signer_path.to_str().unwrap(),
            "--service-account-key-file",
            other_path.to_str().unwrap(),
        ],
    );
    s.kubectl_ok(&["create", "sa", "files", "-n", "default"]);
    let token = s.kubectl_ok(&["create", "token", "files", "-n", "default"]);
    assert_eq!(header_of(&token)["kid"], signer.kid());
    assert_eq!(header_of(&token)["alg"], "ES256");
    // A token signed elsewhere with a key listed in --service-account-key-file verifies.
    let uid = s.kubectl_ok(&[
        "get",
        "sa",
        "files",
        "-n",
        "default",
        "-o",
        "jsonpath={.metadata.uid}",
    ]);
    let now = badge_api::clock::now().as_second();
    let claims = badge_token::BoundClaims::new(
        "https://kubernetes.default.svc.cluster.local",
        vec!["https://kubernetes.default.svc.cluster.local".into()],
        "default",
        badge_token::ObjectRef::new("files", uid),
        now,
        600,
    );
    let outside = badge_token::jwt::sign(&other, &claims.to_value().unwrap())
        .unwrap()
        .into_exposed();
    assert!(crate::authenticated(&s, &outside));
    let jwks = s
        .request("GET", "/openid/v1/jwks", None, &[], Admin)
        .unwrap()
        .json();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
    // Keys from files are rotated by replacing the files, not through the API.
    assert_eq!(
        s.request("POST", "/badge/v1/keys/rotate", None, &[], Admin)
            .unwrap()
            .status,
        400
    );
}
