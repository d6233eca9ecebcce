//! A first start: /readyz answers 200 only once the server can sign tokens and authorize
//! requests by the default policy, as kube-apiserver's readiness waits for its storage and
//! its post-start hooks (rbac/bootstrap-roles among them).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use badge_client::{Client, Identity};
use badge_testkit::ChildGuard;
use serde_json::json;

/// Polls /readyz on a fixed port from the moment the process starts, before its certificates
/// exist, and checks at the first 200 that the key ring, the default roles and a token
/// request are all there.
#[test]
fn readyz_passes_only_once_the_server_can_sign_and_authorize() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_badge"))
            .args(["server", "--secure-port", &port.to_string(), "--data-dir"])
            .arg(dir.path())
            .arg("--service-account-signing-key-type=RS256")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let url = format!("https://127.0.0.1:{port}");
    let pki = dir.path().join("pki");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(child.exited().is_none(), "badge exited while starting");
            // Until the CA exists there is nothing to trust, and nothing listens yet either.
            if let Ok(ca) = std::fs::read(pki.join("ca.crt")) {
                let anonymous = Client::new(&url, Some(&ca), Identity::Anonymous).unwrap();
                let request = http::Request::get("/readyz")
                    .header("host", "localhost")
                    .body(Default::default())
                    .unwrap();
                if let Ok(response) = anonymous.send(request).await
                    && response.status() == 200
                {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "badge did not become ready");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }

        let admin = Client::new(
            &url,
            Some(&std::fs::read(pki.join("ca.crt")).unwrap()),
            Identity::Certificate {
                cert_pem: std::fs::read(pki.join("admin.crt")).unwrap(),
                key_pem: std::fs::read(pki.join("admin.key")).unwrap(),
            },
        )
        .unwrap();
        let jwks = admin.json("GET", "/openid/v1/jwks", None).await.unwrap();
        let keys = jwks["keys"].as_array().unwrap();
        assert!(
            keys.iter().any(|k| k["alg"] == "RS256"),
            "ready without a signing key: {jwks}"
        );
        let role = admin
            .json(
                "GET",
                "/apis/rbac.authorization.k8s.io/v1/clusterroles/system:basic-user",
                None,
            )
            .await
            .unwrap();
        assert_eq!(role["metadata"]["name"], "system:basic-user");
        let binding = admin
            .json(
                "GET",
                "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/system:public-info-viewer",
                None,
            )
            .await
            .unwrap();
        assert_eq!(binding["roleRef"]["name"], "system:public-info-viewer");

        let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "first"}});
        admin
            .json("POST", "/api/v1/namespaces/default/serviceaccounts", Some(&sa))
            .await
            .unwrap();
        let request = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}});
        let issued = admin
            .json(
                "POST",
                "/api/v1/namespaces/default/serviceaccounts/first/token",
                Some(&request),
            )
            .await
            .unwrap();
        let token = issued["status"]["token"].as_str().unwrap();
        assert_eq!(token.split('.').count(), 3, "not a JWT");
    });
}
