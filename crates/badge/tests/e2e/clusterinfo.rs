//! `kube-public/cluster-info` end to end: anonymous clients read the kubeconfig kubeadm would
//! publish, signing bootstrap tokens add their detached JWS of it (checked with PyJWT), the
//! signatures follow the tokens and the content, and `badge token create
//! --print-join-command` pins the CA as kubeadm does.

use std::collections::BTreeMap;
use std::process::Command;

use badge_testkit::Credential::{Admin, Anonymous};
use badge_testkit::TestServer;
use base64::Engine;
use serde_json::Value;

use crate::{CLUSTER_INFO, badge_token, eventually, server};

fn cluster_info(s: &TestServer) -> Value {
    let r = s.request("GET", CLUSTER_INFO, None, &[], Admin).unwrap();
    assert_eq!(r.status, 200, "{}", r.json());
    r.json()
}

fn signatures(cm: &Value) -> BTreeMap<String, String> {
    cm["data"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.starts_with("jws-kubeconfig-"))
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect()
}

fn ca_pem(s: &TestServer) -> String {
    std::fs::read_to_string(s.data_dir().join("pki/ca.crt")).unwrap()
}

/// Verifies `signature` as a joining node would, with PyJWT: the detached payload put back
/// as its base64url, HS256 keyed with the token secret zero-padded to 32 bytes as upstream
/// keys it. Also checks that another secret fails.
pub(crate) fn pyjwt_verify(signature: &str, content: &str, id: &str, secret: &str) -> Result<(), String> {
    let script = r#"
import base64, sys, jwt
signature, content, token_id, secret = sys.argv[1:5]
header, empty, mac = signature.split(".")
assert empty == "", "the payload segment must be empty"
payload = base64.urlsafe_b64encode(content.encode()).rstrip(b"=").decode()
attached = header + "." + payload + "." + mac
def key(s):
    return s.encode().ljust(32, b"\0")
decoded = jwt.PyJWS().decode_complete(attached, key(secret), algorithms=["HS256"])
assert decoded["payload"] == content.encode()
assert decoded["header"] == {"alg": "HS256", "kid": token_id}, decoded["header"]
try:
    jwt.PyJWS().decode_complete(attached, key("x" * 16), algorithms=["HS256"])
    print("WRONG-KEY-ACCEPTED")
except jwt.InvalidSignatureError:
    print("verified")
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args([signature, content, id, secret])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if out.status.success() && stdout.trim() == "verified" {
        Ok(())
    } else {
        Err(format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)))
    }
}

#[test]
fn anonymous_clients_get_the_cluster_info_kubeconfig_and_nothing_else() {
    let s = server();
    let r = s.request("GET", CLUSTER_INFO, None, &[], Anonymous).unwrap();
    assert_eq!(r.status, 200, "{}", r.json());
    let cm = r.json();
    let text = cm["data"]["kubeconfig"].as_str().unwrap();
    let server_url = format!("https://127.0.0.1:{}", s.port);
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem(&s));
    assert_eq!(
        text,
        format!(
            "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: {ca}\n    server: {server_url}\n  name: \"\"\ncontexts: null\ncurrent-context: \"\"\nkind: Config\npreferences: {{}}\nusers: null\n"
        )
    );

    // kubeadm's RBAC, and only it: anonymous gets that one object.
    let role = s
        .request(
            "GET",
            "/apis/rbac.authorization.k8s.io/v1/namespaces/kube-public/roles/kubeadm:bootstrap-signer-clusterinfo",
            None,
            &[],
            Admin,
        )
        .unwrap()
        .json();
    assert_eq!(
        role["rules"],
        serde_json::json!([{"verbs": ["get"], "apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["cluster-info"]}])
    );
    let binding = s
        .request(
            "GET",
            "/apis/rbac.authorization.k8s.io/v1/namespaces/kube-public/rolebindings/kubeadm:bootstrap-signer-clusterinfo",
            None,
            &[],
            Admin,
        )
        .unwrap()
        .json();
    assert_eq!(
        binding["subjects"],
        serde_json::json!([{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "system:anonymous"}])
    );
    for path in [
        "/api/v1/namespaces/kube-public/configmaps",
        "/api/v1/namespaces/kube-public/configmaps/kube-root-ca.crt",
        "/api/v1/namespaces/kube-system/configmaps/cluster-info",
    ] {
        let r = s.request("GET", path, None, &[], Anonymous).unwrap();
        assert_eq!(r.status, 403, "{path}: {}", r.json());
    }
}

#[test]
fn signing_tokens_sign_cluster_info_and_their_signatures_follow_them() {
    let mut s = server();
    let unsigned = badge_token(&s, &["create", "--usages", "authentication"]);
    let (unsigned_id, _) = unsigned.split_once('.').unwrap();
    let token = badge_token(&s, &["create"]);
    let (id, secret) = token.split_once('.').unwrap();
    let key = format!("jws-kubeconfig-{id}");
    let mut cm = Value::Null;
    eventually("the signing token's signature", || {
        cm = cluster_info(&s);
        signatures(&cm).contains_key(&key)
    });
    // The signature was made with every token in view: the other one has none.
    assert_eq!(signatures(&cm).keys().collect::<Vec<_>>(), vec![&key]);
    assert!(cm["data"].get(format!("jws-kubeconfig-{unsigned_id}")).is_none());
    let content = cm["data"]["kubeconfig"].as_str().unwrap().to_string();
    pyjwt_verify(&signatures(&cm)[&key], &content, id, secret).unwrap();

    // A token that changes no signature writes nothing: from here the ConfigMap changes
    // once, when the next signing token is added.
    let rv = cm["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    badge_token(&s, &["create", "--usages", "authentication"]);
    let second = badge_token(&s, &["create"]);
    let second_key = format!("jws-kubeconfig-{}", second.split_once('.').unwrap().0);
    eventually("the second signing token's signature", || {
        signatures(&cluster_info(&s)).contains_key(&second_key)
    });
    let watched = s
        .request(
            "GET",
            &format!(
                "/api/v1/namespaces/kube-public/configmaps?watch=true&fieldSelector=metadata.name%3Dcluster-info&resourceVersion={rv}&timeoutSeconds=1"
            ),
            None,
            &[],
            Admin,
        )
        .unwrap();
    assert_eq!(watched.status, 200);
    let events: Vec<Value> = String::from_utf8(watched.body)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["type"], "MODIFIED");
    assert_eq!(signatures(&events[0]["object"]).len(), 2);
    badge_token(&s, &["delete", &second]);

    // A new port is a new server URL: the kubeconfig is rewritten and signed again.
    let old_port = s.port;
    s.restart();
    assert_ne!(s.port, old_port);
    eventually("the rewritten kubeconfig signed", || {
        cm = cluster_info(&s);
        let text = cm["data"]["kubeconfig"].as_str().unwrap();
        text.contains(&format!("server: https://127.0.0.1:{}\n", s.port))
            && signatures(&cm)
                .get(&key)
                .is_some_and(|sig| pyjwt_verify(sig, text, id, secret).is_ok())
    });

    badge_token(&s, &["delete", id]);
    eventually("the deleted token's signature gone", || {
        signatures(&cluster_info(&s)).is_empty()
    });
}

#[test]
fn the_cluster_info_server_flag_names_the_published_endpoint() {
    let s = TestServer::start_with(
        env!("CARGO_BIN_EXE_badge"),
        &["--cluster-info-server", "https://cp.example.com:6443"],
    );
    let r = s.request("GET", CLUSTER_INFO, None, &[], Anonymous).unwrap();
    let text = r.json()["data"]["kubeconfig"].as_str().unwrap().to_string();
    assert!(
        text.contains("\n    server: https://cp.example.com:6443\n"),
        "{text}"
    );

    let join = badge_token(&s, &["create", "--print-join-command"]);
    let expected_hash = openssl_pin(&s);
    let words: Vec<&str> = join.split(' ').collect();
    assert_eq!(words.len(), 12, "{join}");
    assert_eq!(&words[..3], ["badge", "agent", "--bootstrap-token"]);
    let token = words[3];
    let (id, _) = token.split_once('.').unwrap();
    assert_eq!(
        &words[4..],
        [
            "--server",
            "https://cp.example.com:6443",
            "--discovery-token-ca-cert-hash",
            expected_hash.as_str(),
            "--node-name",
            "$(hostname)",
            "--root-dir",
            "/var/lib/badge-agent",
        ]
    );
    // The printed token is the one created.
    let secret = s
        .request(
            "GET",
            &format!("/api/v1/namespaces/kube-system/secrets/bootstrap-token-{id}"),
            None,
            &[],
            Admin,
        )
        .unwrap();
    assert_eq!(secret.status, 200);
}

/// `sha256:<hex>` of the CA's SubjectPublicKeyInfo, computed by openssl as kubeadm's docs do.
pub(crate) fn openssl_pin(s: &TestServer) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg("openssl x509 -pubkey -noout -in \"$1\" | openssl pkey -pubin -outform der | sha256sum")
        .arg("sh")
        .arg(s.data_dir().join("pki/ca.crt"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let hex = stdout.split_whitespace().next().unwrap();
    assert_eq!(hex.len(), 64, "{stdout}");
    format!("sha256:{hex}")
}
