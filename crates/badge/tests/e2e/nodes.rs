//! Node credentials, the Node authorizer and NodeRestriction for token requests.

use badge_testkit::Credential::Admin;
use serde_json::json;

use crate::server;

fn post(s: &badge_testkit::TestServer, path: &str, body: serde_json::Value) -> badge_testkit::RawResponse {
    s.request(
        "POST",
        path,
        Some(serde_json::to_vec(&body).unwrap()),
        &[("content-type", "application/json")],
        Admin,
    )
    .unwrap()
}

#[test]
fn nodes_get_tokens_only_for_their_own_pods() {
    let s = server();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_badge"))
        .args(["node", "add", "node-a", "--data-dir"])
        .arg(s.data_dir())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let node_kubeconfig = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let as_node = |args: &[&str]| {
        std::process::Command::new(badge_testkit::kubectl_path())
            .arg("--kubeconfig")
            .arg(&node_kubeconfig)
            .args(args)
            .output()
            .unwrap()
    };
    let who = as_node(&["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"]);
    assert_eq!(
        String::from_utf8_lossy(&who.stdout),
        "system:node:node-a",
        "{}",
        String::from_utf8_lossy(&who.stderr)
    );

    s.kubectl_ok(&["create", "sa", "app", "-n", "default"]);
    s.kubectl_ok(&["create", "secret", "generic", "mounted", "--from-literal=a=b"]);
    s.kubectl_ok(&["create", "secret", "generic", "other", "--from-literal=a=b"]);
    for (name, node) in [("mine", "node-a"), ("theirs", "node-b")] {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {
        "serviceAccountName": "app", "nodeName": node,
        "containers": [{"name": "c", "image": "i"}],
        "volumes": [
            {"name": "s", "secret": {"secretName": "mounted"}},
            {"name": "t", "projected": {"sources": [{"serviceAccountToken": {"audience": "vault", "path": "token"}}]}}
        ]}});
        assert_eq!(post(&s, "/api/v1/namespaces/default/pods", pod).status, 201);
    }
    // Reads: only what its pods use.
    assert!(as_node(&["get", "secret", "mounted"]).status.success());
    assert!(!as_node(&["get", "secret", "other"]).status.success());
    assert!(
        !as_node(&["get", "secrets"]).status.success(),
        "nodes cannot list secrets"
    );
    assert!(as_node(&["get", "pods"]).status.success());

    let uid_of = |name: &str| s.kubectl_ok(&["get", "pod", name, "-o", "jsonpath={.metadata.uid}"]);
    let request = |pod: &str, uid: &str, audience: &str| {
        let mut args = vec!["create", "token", "app", "--bound-object-kind=Pod"];
        let name = format!("--bound-object-name={pod}");
        let uid = format!("--bound-object-uid={uid}");
        let aud = format!("--audience={audience}");
        args.push(&name);
        if !uid.ends_with('=') {
            args.push(&uid);
        }
        args.push(&aud);
        as_node(&args)
    };
    let ok = request("mine", &uid_of("mine"), "vault");
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let other_node = request("theirs", &uid_of("theirs"), "vault");
    assert!(
        String::from_utf8_lossy(&other_node.stderr).contains("forbidden"),
        "{}",
        String::from_utf8_lossy(&other_node.stderr)
    );
    let no_uid = request("mine", "", "vault");
    assert!(
        String::from_utf8_lossy(&no_uid.stderr).contains("without a uid"),
        "{}",
        String::from_utf8_lossy(&no_uid.stderr)
    );
    let audience = request("mine", &uid_of("mine"), "other-audience");
    assert!(
        String::from_utf8_lossy(&audience.stderr).contains("not authorized to request tokens for audience"),
        "{}",
        String::from_utf8_lossy(&audience.stderr)
    );
    let unbound = as_node(&["create", "token", "app"]);
    assert!(
        String::from_utf8_lossy(&unbound.stderr).contains("not bound to a pod"),
        "{}",
        String::from_utf8_lossy(&unbound.stderr)
    );
}

#[test]
fn kubelet_tokens_get_the_extended_expiry() {
    use base64::Engine;
    let s = server();
    s.kubectl_ok(&["create", "sa", "app"]);
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}});
    assert_eq!(post(&s, "/api/v1/nodes", node).status, 201);
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"serviceAccountName": "app", "nodeName": "n1", "containers": [{"name": "c", "image": "i"}]}});
    assert_eq!(post(&s, "/api/v1/namespaces/default/pods", pod).status, 201);
    let request = |seconds: i64| {
        let body = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"expirationSeconds": seconds, "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "p"}}});
        post(&s, "/api/v1/namespaces/default/serviceaccounts/app/token", body).json()
    };
    let claims_of = |token: &str| -> serde_json::Value {
        let payload = token.split('.').nth(1).unwrap();
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap()
    };
    let extended = request(3607);
    let claims = claims_of(extended["status"]["token"].as_str().unwrap());
    let iat = claims["iat"].as_i64().unwrap();
    assert_eq!(
        claims["exp"].as_i64().unwrap() - iat,
        365 * 24 * 3600,
        "the JWT lives a year"
    );
    assert_eq!(claims["kubernetes.io"]["warnafter"].as_i64().unwrap() - iat, 3607);
    assert_eq!(
        extended["spec"]["expirationSeconds"], 3607,
        "the API still reports 3607 s"
    );
    let reported = extended["status"]["expirationTimestamp"]
        .as_str()
        .unwrap()
        .parse::<jiff::Timestamp>()
        .unwrap()
        .as_second();
    assert!((reported - iat - 3607).abs() <= 1);
    assert!(
        claims["kubernetes.io"]["node"]["uid"].is_string(),
        "the pod's node is named with its uid"
    );
    let plain = request(3600);
    let claims = claims_of(plain["status"]["token"].as_str().unwrap());
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        3600
    );
    assert!(claims["kubernetes.io"].get("warnafter").is_none());
}

#[test]
fn serviceaccount_admission_mounts_the_token_volume() {
    let s = server();
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: plain\nspec:\n  containers:\n  - name: c\n    image: busybox\n";
    let out = s.kubectl_with_stdin(&["create", "-f", "-"], Some(pod));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let created: serde_json::Value =
        serde_json::from_str(&s.kubectl_ok(&["get", "pod", "plain", "-o", "json"])).unwrap();
    assert_eq!(created["spec"]["serviceAccountName"], "default");
    let volume = &created["spec"]["volumes"][0];
    assert!(
        volume["name"].as_str().unwrap().starts_with("kube-api-access-"),
        "{volume}"
    );
    assert_eq!(volume["projected"]["defaultMode"], 420);
    assert_eq!(
        volume["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"],
        3607
    );
    assert_eq!(
        created["spec"]["containers"][0]["volumeMounts"][0]["mountPath"],
        "/var/run/secrets/kubernetes.io/serviceaccount"
    );
    assert_eq!(
        created["spec"]["containers"][0]["volumeMounts"][0]["readOnly"],
        true
    );

    let missing = s.kubectl_with_stdin(
        &["create", "-f", "-"],
        Some(
            &pod.replace("name: plain", "name: lost")
                .replace("spec:\n", "spec:\n  serviceAccountName: ghost\n"),
        ),
    );
    assert!(!missing.status.success());
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(
        err.contains("error looking up service account default/ghost: serviceaccount \"ghost\" not found"),
        "{err}"
    );

    s.kubectl_ok(&["create", "sa", "quiet"]);
    s.kubectl_ok(&[
        "patch",
        "sa",
        "quiet",
        "-p",
        r#"{"automountServiceAccountToken":false,"imagePullSecrets":[{"name":"reg"}]}"#,
    ]);
    let quiet = s.kubectl_with_stdin(
        &["create", "-f", "-"],
        Some(
            &pod.replace("name: plain", "name: quiet")
                .replace("spec:\n", "spec:\n  serviceAccountName: quiet\n"),
        ),
    );
    assert!(
        quiet.status.success(),
        "{}",
        String::from_utf8_lossy(&quiet.stderr)
    );
    let created: serde_json::Value =
        serde_json::from_str(&s.kubectl_ok(&["get", "pod", "quiet", "-o", "json"])).unwrap();
    assert!(created["spec"].get("volumes").is_none(), "{created}");
    assert_eq!(created["spec"]["imagePullSecrets"], json!([{"name": "reg"}]));
}

#[test]
fn the_enforce_mountable_secrets_annotation_warns_on_serviceaccount_writes_only() {
    const WARNING: &str = "Warning: metadata.annotations[kubernetes.io/enforce-mountable-secrets]: deprecated in v1.32+; prefer separate namespaces to isolate access to mounted secrets";
    let s = server();
    let stderr = |out: &std::process::Output| {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let annotated = "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: locked\n  annotations:\n    kubernetes.io/enforce-mountable-secrets: \"true\"\nsecrets:\n- name: allowed\n";
    let created = stderr(&s.kubectl_with_stdin(&["create", "-f", "-"], Some(annotated)));
    assert!(created.contains(WARNING), "{created}");

    // Setting it on an existing ServiceAccount warns; keeping it does not.
    s.kubectl_ok(&["create", "sa", "later"]);
    let annotate = s.kubectl(&[
        "annotate",
        "sa",
        "later",
        "kubernetes.io/enforce-mountable-secrets=true",
    ]);
    assert!(stderr(&annotate).contains(WARNING));
    let relabel = s.kubectl(&["label", "sa", "later", "team=a"]);
    assert!(!stderr(&relabel).contains("Warning"));

    // A pod of that ServiceAccount is admitted without a warning, and is held to the policy.
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: NAME\nspec:\n  serviceAccountName: locked\n  containers:\n  - name: c\n    image: busybox\n    envFrom:\n    - secretRef:\n        name: SECRET\n";
    let allowed = s.kubectl_with_stdin(
        &["create", "-f", "-"],
        Some(&pod.replace("NAME", "ok").replace("SECRET", "allowed")),
    );
    assert!(!stderr(&allowed).contains("Warning"));
    let refused = s.kubectl_with_stdin(
        &["create", "-f", "-"],
        Some(&pod.replace("NAME", "refused").replace("SECRET", "other")),
    );
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("container c with envFrom referencing secret.secretName=\"other\" is not allowed because service account locked does not reference that secret"),
        "{err}"
    );
}
