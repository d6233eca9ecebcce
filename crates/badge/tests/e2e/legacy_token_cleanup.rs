//! LegacyServiceAccountTokenCleanUp with its period compressed to seconds: an unused
//! auto-generated legacy token Secret is labelled invalid and its token refused, one a pod
//! mounts is left alone, and the labelled one is deleted once its mark is a period old.

use badge_testkit::{Credential, TestServer};
use base64::Engine;
use serde_json::Value;

use crate::eventually;

const BIN: &str = env!("CARGO_BIN_EXE_badge");
const TRACKING: &str = "kube-apiserver-legacy-service-account-token-tracking";

fn secret(s: &TestServer, name: &str) -> Option<Value> {
    let out = s.kubectl(&["get", "secret", name, "-o", "json"]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

fn token_of(s: &TestServer, name: &str) -> String {
    let mut token = String::new();
    eventually("the token filled in", || {
        token = secret(s, name)
            .and_then(|v| v["data"]["token"].as_str().map(str::to_string))
            .unwrap_or_default();
        !token.is_empty()
    });
    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(&token).unwrap()).unwrap()
}

fn invalid_since(s: &TestServer, name: &str) -> Option<String> {
    secret(s, name).and_then(|v| {
        v["metadata"]["labels"]["kubernetes.io/legacy-token-invalid-since"]
            .as_str()
            .map(str::to_string)
    })
}

fn status_with(s: &TestServer, token: &str) -> u16 {
    s.request(
        "GET",
        "/api/v1/namespaces/default/serviceaccounts",
        None,
        &[],
        Credential::Bearer(token.to_string()),
    )
    .unwrap()
    .status
}

#[test]
fn an_unused_legacy_token_is_invalidated_then_deleted_while_a_mounted_one_stays() {
    let s = TestServer::start_with(BIN, &["--legacy-service-account-token-clean-up-period=2s"]);
    // Use has been tracked since the server's first day; as if that were long ago.
    eventually("the tracking ConfigMap", || {
        s.kubectl(&["get", "configmap", TRACKING, "-n", "kube-system"])
            .status
            .success()
    });
    s.kubectl_ok(&[
        "patch",
        "configmap",
        TRACKING,
        "-n",
        "kube-system",
        "--type=merge",
        "-p",
        r#"{"data":{"since":"2020-01-01"}}"#,
    ]);
    s.kubectl_ok(&["create", "serviceaccount", "legacy"]);
    for name in ["mounted-token", "unused-token"] {
        let created = s.kubectl_with_stdin(
            &["apply", "-f", "-"],
            Some(&format!(
                r#"{{"apiVersion":"v1","kind":"Secret","type":"kubernetes.io/service-account-token",
                "metadata":{{"name":"{name}","annotations":{{"kubernetes.io/service-account.name":"legacy"}}}}}}"#
            )),
        );
        assert!(created.status.success(), "{created:?}");
    }
    let unused = token_of(&s, "unused-token");
    token_of(&s, "mounted-token");
    let pod = s.kubectl_with_stdin(
        &["apply", "-f", "-"],
        Some(
            r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web"},
            "spec":{"serviceAccountName":"legacy","containers":[{"name":"web","image":"nginx"}],
            "volumes":[{"name":"token","secret":{"secretName":"mounted-token"}}]}}"#,
        ),
    );
    assert!(pod.status.success(), "{pod:?}");
    // Listed in the ServiceAccount's secrets: what upstream takes for auto-generated.
    s.kubectl_ok(&[
        "patch",
        "serviceaccount",
        "legacy",
        "--type=merge",
        "-p",
        r#"{"secrets":[{"name":"mounted-token"},{"name":"unused-token"}]}"#,
    ]);

    eventually("the unused token labelled invalid", || {
        invalid_since(&s, "unused-token").is_some()
    });
    let today = invalid_since(&s, "unused-token").unwrap();
    assert_eq!(today.len(), "2006-01-02".len(), "{today}");
    assert_eq!(status_with(&s, &unused), 401);
    assert!(s.logged("marking the auto-generated service account token as invalid"));
    // The sweep that marked it looked at the mounted one first (they are listed by name).
    assert!(secret(&s, "mounted-token").is_some());
    assert_eq!(invalid_since(&s, "mounted-token"), None);

    // Marks are days, compared as upstream compares them: one made today is kept until a
    // period after its day, so the test dates it back rather than wait for midnight.
    s.kubectl_ok(&[
        "label",
        "secret",
        "unused-token",
        "--overwrite",
        "kubernetes.io/legacy-token-invalid-since=2020-01-01",
    ]);
    eventually("the unused token deleted", || {
        secret(&s, "unused-token").is_none()
    });
    assert!(secret(&s, "mounted-token").is_some());
    assert_eq!(invalid_since(&s, "mounted-token"), None);
}
