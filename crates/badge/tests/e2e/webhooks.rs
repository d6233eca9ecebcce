//! A kube-apiserver's token and authorization webhooks pointed at badge with the file
//! `badge webhook-config` writes: the exact TokenReview and SubjectAccessReview bodies
//! upstream's webhook clients post (v1 and v1beta1), sent over TLS with that file's CA and
//! client certificate (curl), answered in the version they came in.

use std::path::{Path, PathBuf};
use std::process::Command;

use badge_testkit::Credential::Admin;
use badge_testkit::TestServer;
use base64::Engine;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_badge");

/// A webhook configuration file, unpacked as curl needs it.
struct WebhookClient {
    url: String,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn webhook_config(s: &TestServer, kind: &str, dir: &Path) -> WebhookClient {
    let file = dir.join(format!("{kind}.kubeconfig"));
    let out = Command::new(BIN)
        .args(["webhook-config", "--kind", kind, "--data-dir"])
        .arg(s.data_dir())
        .arg("-o")
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let config: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(config["users"][0]["name"], "system:kube-apiserver-webhook");
    let unpack = |value: &Value, name: &str| {
        let path = dir.join(format!("{kind}-{name}.pem"));
        let pem = base64::engine::general_purpose::STANDARD
            .decode(value.as_str().unwrap())
            .unwrap();
        std::fs::write(&path, pem).unwrap();
        path
    };
    let cluster = &config["clusters"][0]["cluster"];
    let user = &config["users"][0]["user"];
    WebhookClient {
        url: cluster["server"].as_str().unwrap().to_string(),
        ca: unpack(&cluster["certificate-authority-data"], "ca"),
        cert: unpack(&user["client-certificate-data"], "cert"),
        key: unpack(&user["client-key-data"], "key"),
    }
}

impl WebhookClient {
    /// POSTs `body` as the apiserver's webhook client does; the status code and the answer.
    fn post(&self, body: &Value, bearer: Option<&str>) -> (u16, Value) {
        let mut command = Command::new("curl");
        command
            .args(["-sS", "-w", "\n%{http_code}", "--cacert"])
            .arg(&self.ca)
            .args([
                "-H",
                "Content-Type: application/json",
                "-H",
                "Accept: application/json, */*",
            ])
            .args(["-X", "POST", "--data-binary"])
            .arg(body.to_string());
        match bearer {
            // Another caller, without the certificate.
            Some(token) => command.args(["-H", &format!("Authorization: Bearer {token}")]),
            None => command.arg("--cert").arg(&self.cert).arg("--key").arg(&self.key),
        };
        let out = command.arg(&self.url).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8(out.stdout).unwrap();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (code.parse().unwrap(), serde_json::from_str(body).unwrap())
    }
}

fn token_for(s: &TestServer, sa: &str, audience: &str) -> String {
    let body = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                      "spec": {"audiences": [audience]}});
    let r = s
        .request(
            "POST",
            &format!("/api/v1/namespaces/default/serviceaccounts/{sa}/token"),
            Some(serde_json::to_vec(&body).unwrap()),
            &[("content-type", "application/json")],
            Admin,
        )
        .unwrap();
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    r.json()["status"]["token"].as_str().unwrap().to_string()
}

/// The body upstream's token webhook posts (`authenticationv1.TokenReview` through its
/// codec): type meta, an empty creationTimestamp, the spec, and the zero status.
fn token_review(version: &str, token: &str, audiences: &[&str]) -> Value {
    json!({
        "kind": "TokenReview",
        "apiVersion": format!("authentication.k8s.io/{version}"),
        "metadata": {"creationTimestamp": null},
        "spec": {"token": token, "audiences": audiences},
        "status": {"user": {}},
    })
}

/// The body upstream's authorization webhook posts for a resource request; v1beta1 calls
/// the groups `group`.
fn subject_access_review(version: &str, user: &str, groups: &[&str], verb: &str) -> Value {
    let groups_field = if version == "v1beta1" { "group" } else { "groups" };
    let mut spec = json!({
        "resourceAttributes": {"namespace": "default", "verb": verb, "version": "v1",
                               "resource": "serviceaccounts", "name": "app"},
        "user": user,
        "uid": "4b1d1a1c-0000-4000-8000-000000000001",
    });
    spec[groups_field] = json!(groups);
    json!({
        "kind": "SubjectAccessReview",
        "apiVersion": format!("authorization.k8s.io/{version}"),
        "metadata": {"creationTimestamp": null},
        "spec": spec,
        "status": {"allowed": false},
    })
}

#[test]
fn token_webhook_answers_v1_and_v1beta1_reviews() {
    let s = TestServer::start(BIN);
    s.kubectl_ok(&["create", "sa", "app", "-n", "default"]);
    let dir = tempfile::tempdir().unwrap();
    let client = webhook_config(&s, "authentication", dir.path());
    assert!(
        client.url.ends_with("/badge/v1/webhooks/tokenreview"),
        "{}",
        client.url
    );
    let token = token_for(&s, "app", "kube-a");

    for version in ["v1", "v1beta1"] {
        let (code, answer) = client.post(&token_review(version, &token, &["kube-a"]), None);
        assert_eq!(code, 201, "{answer}");
        assert_eq!(answer["apiVersion"], format!("authentication.k8s.io/{version}"));
        assert_eq!(answer["kind"], "TokenReview");
        let status = &answer["status"];
        assert_eq!(status["authenticated"], true, "{answer}");
        assert_eq!(status["user"]["username"], "system:serviceaccount:default:app");
        let groups: Vec<&str> = status["user"]["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g.as_str().unwrap())
            .collect();
        assert_eq!(
            groups,
            [
                "system:serviceaccounts",
                "system:serviceaccounts:default",
                "system:authenticated"
            ]
        );
        assert_eq!(status["audiences"], json!(["kube-a"]));

        // A token for another audience is not authenticated, with upstream's error.
        let (code, answer) = client.post(&token_review(version, &token, &["kube-b"]), None);
        assert_eq!(code, 201, "{answer}");
        assert_eq!(answer["apiVersion"], format!("authentication.k8s.io/{version}"));
        assert_ne!(answer["status"]["authenticated"], true, "{answer}");
        assert!(
            answer["status"]["error"]
                .as_str()
                .unwrap_or("")
                .contains("audience"),
            "{answer}"
        );
    }

    // Versions the webhook does not speak, and other kinds, are refused.
    let mut wrong = token_review("v1", &token, &[]);
    wrong["apiVersion"] = json!("authentication.k8s.io/v2");
    let (code, answer) = client.post(&wrong, None);
    assert_eq!(
        (code, answer["reason"].as_str()),
        (400, Some("BadRequest")),
        "{answer}"
    );

    // The path is authorized as upstream's review endpoint: create tokenreviews, which a
    // ServiceAccount does not have.
    let (code, answer) = client.post(
        &token_review("v1", &token, &["kube-a"]),
        Some(&token_for(
            &s,
            "app",
            "https://kubernetes.default.svc.cluster.local",
        )),
    );
    assert_eq!(code, 403, "{answer}");
    assert!(
        answer["message"].as_str().unwrap().contains(
            "cannot create resource \"tokenreviews\" in API group \"authentication.k8s.io\" at the cluster scope"
        ),
        "{answer}"
    );
}

#[test]
fn authorization_webhook_answers_v1_and_v1beta1_reviews() {
    let s = TestServer::start(BIN);
    s.kubectl_ok(&["create", "sa", "app", "-n", "default"]);
    s.kubectl_ok(&[
        "create",
        "role",
        "sa-reader",
        "--verb=get",
        "--resource=serviceaccounts",
        "-n",
        "default",
    ]);
    s.kubectl_ok(&[
        "create",
        "rolebinding",
        "sa-reader",
        "--role=sa-reader",
        "--serviceaccount=default:app",
        "-n",
        "default",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let client = webhook_config(&s, "authorization", dir.path());
    assert!(
        client.url.ends_with("/badge/v1/webhooks/subjectaccessreview"),
        "{}",
        client.url
    );
    let user = "system:serviceaccount:default:app";
    let groups = [
        "system:serviceaccounts",
        "system:serviceaccounts:default",
        "system:authenticated",
    ];

    for version in ["v1", "v1beta1"] {
        let (code, answer) = client.post(&subject_access_review(version, user, &groups, "get"), None);
        assert_eq!(code, 201, "{answer}");
        assert_eq!(answer["apiVersion"], format!("authorization.k8s.io/{version}"));
        assert_eq!(answer["kind"], "SubjectAccessReview");
        assert_eq!(answer["status"]["allowed"], true, "{answer}");
        // The spec comes back in the version's own field names.
        let (field, other) = if version == "v1beta1" {
            ("group", "groups")
        } else {
            ("groups", "group")
        };
        assert_eq!(answer["spec"][field], json!(groups), "{answer}");
        assert!(answer["spec"].get(other).is_none(), "{answer}");

        let (code, answer) = client.post(&subject_access_review(version, user, &groups, "delete"), None);
        assert_eq!(code, 201, "{answer}");
        assert_ne!(answer["status"]["allowed"], true, "{answer}");
        // RBAC has no opinion rather than a denial, so a next authorizer may still allow.
        assert_ne!(answer["status"]["denied"], true, "{answer}");

        // Groups count: system:masters may do anything, in either version's field.
        let (code, answer) = client.post(
            &subject_access_review(version, "someone", &["system:masters"], "delete"),
            None,
        );
        assert_eq!(code, 201, "{answer}");
        assert_eq!(answer["status"]["allowed"], true, "{answer}");
    }
}
