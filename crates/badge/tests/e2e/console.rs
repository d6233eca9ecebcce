//! The web console in real headless browsers, Debian's Chromium (driven by playwright-core)
//! and Debian's Firefox (driven by puppeteer-core over WebDriver BiDi): log in with a token,
//! revoke a token, disable and re-enable a ServiceAccount, read a permission matrix, create
//! a bootstrap token RBAC allows and see it listed and authenticate, and be refused actions
//! RBAC denies with the server's Status on the page. `scripts/install-chromium.sh`,
//! `scripts/install-firefox.sh`, `scripts/install-playwright.sh` and
//! `scripts/install-puppeteer.sh` install what it needs; `BADGE_CONSOLE_SCREENSHOTS=DIR`
//! keeps the screenshots (the README's come from `docs/console`).

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use badge_testkit::TestServer;
use serde_json::Value;

const SETUP: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: web, namespace: shop}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: reporter, namespace: shop}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: operator, namespace: default}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: serviceaccount-switch, namespace: shop}
rules:
- {apiGroups: [""], resources: [serviceaccounts], verbs: [patch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: operator-switches-shop, namespace: shop}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: serviceaccount-switch}
subjects:
- {kind: ServiceAccount, name: operator, namespace: default}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: pod-reader, namespace: shop}
rules:
- {apiGroups: [""], resources: [pods], verbs: [get, list, watch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: web-pod-reader, namespace: shop}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: pod-reader}
subjects:
- {kind: ServiceAccount, name: web, namespace: shop}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: web-token-minter, namespace: shop}
rules:
- {apiGroups: [""], resources: [serviceaccounts/token], resourceNames: [web], verbs: [create]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: ci-mints-web, namespace: shop}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: web-token-minter}
subjects:
- {kind: User, name: ci-bot, apiGroup: rbac.authorization.k8s.io}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: console-operator}
rules:
- {apiGroups: [""], resources: [namespaces, serviceaccounts, nodes], verbs: [get, list, watch]}
- {apiGroups: [""], resources: [secrets], verbs: [get, list, watch, create]}
- {apiGroups: [rbac.authorization.k8s.io], resources: [roles, rolebindings, clusterroles, clusterrolebindings], verbs: [get, list, watch]}
- {apiGroups: [authorization.k8s.io], resources: [subjectaccessreviews], verbs: [create]}
- {apiGroups: [coordination.k8s.io], resources: [leases], verbs: [list]}
- {apiGroups: [identity.badge.dev], resources: [issuedtokens, serviceaccountusages], verbs: [get, list, watch, patch]}
- {nonResourceURLs: [/badge/v1/keys], verbs: [get]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: console-operator}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: console-operator}
subjects:
- {kind: ServiceAccount, name: operator, namespace: default}
"#;

fn chromium_path() -> PathBuf {
    let path = PathBuf::from(std::env::var("BADGE_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()));
    assert!(
        path.exists(),
        "chromium not found at {}: run scripts/install-chromium.sh",
        path.display()
    );
    path
}

fn playwright_path() -> PathBuf {
    let path = match std::env::var("BADGE_PLAYWRIGHT") {
        Ok(p) => PathBuf::from(p),
        Err(_) => PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()))
            .join(".cache/badge/playwright/node_modules/playwright-core"),
    };
    assert!(
        path.join("package.json").exists(),
        "playwright-core not found at {}: run scripts/install-playwright.sh",
        path.display()
    );
    path
}

/// The console's URL, from the line the server logs when it binds.
fn console_url(server: &TestServer) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found = server.log.lock().unwrap().iter().find_map(|line| {
            let at = line.find("console listening on https://")?;
            let rest = &line[at + "console listening on ".len()..];
            Some(rest[..rest.find("/console/")?].to_string())
        });
        if let Some(url) = found {
            return url;
        }
        assert!(
            Instant::now() < deadline,
            "the console did not report its address"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The browser a run drives, and where its driver and binary are.
enum Browser {
    Chromium,
    Firefox { binary: PathBuf, puppeteer: PathBuf },
}

/// Firefox and puppeteer-core from `BADGE_FIREFOX` and `BADGE_PUPPETEER`; None (said loudly)
/// when `BADGE_FIREFOX` is unset outside CI, where `scripts/test.sh` always sets it.
fn firefox() -> Option<Browser> {
    let Ok(binary) = std::env::var("BADGE_FIREFOX") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "BADGE_FIREFOX is not set: scripts/test.sh installs Firefox (scripts/install-firefox.sh) and sets it"
        );
        eprintln!(
            "\n!!! SKIPPED: the console's Firefox test needs BADGE_FIREFOX (run scripts/install-firefox.sh and scripts/install-puppeteer.sh, or scripts/test.sh) !!!\n"
        );
        return None;
    };
    let binary = PathBuf::from(binary);
    assert!(
        binary.exists(),
        "Firefox not found at {}: run scripts/install-firefox.sh",
        binary.display()
    );
    let puppeteer = match std::env::var("BADGE_PUPPETEER") {
        Ok(p) => PathBuf::from(p),
        Err(_) => PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()))
            .join(".cache/badge/puppeteer/node_modules/puppeteer-core"),
    };
    assert!(
        puppeteer.join("package.json").exists(),
        "puppeteer-core not found at {}: run scripts/install-puppeteer.sh",
        puppeteer.display()
    );
    Some(Browser::Firefox { binary, puppeteer })
}

#[test]
fn console_in_headless_chromium_shows_the_matrix_allows_what_rbac_allows_and_shows_the_refusal() {
    console_flow(Browser::Chromium);
}

#[test]
fn console_in_headless_firefox_runs_the_same_flow_without_errors() {
    if let Some(browser) = firefox() {
        console_flow(browser);
    }
}

fn console_flow(browser: Browser) {
    let s = TestServer::start_with(
        env!("CARGO_BIN_EXE_badge"),
        &[
            "--console-bind-address",
            "127.0.0.1:0",
            "--usage-flush-period=200ms",
        ],
    );
    let url = console_url(&s);
    let applied = s.kubectl_with_stdin(&["apply", "-f", "-"], Some(SETUP));
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    let token = s.kubectl_ok(&["create", "token", "operator", "-n", "default"]);
    // The token the console revokes, through the real identity API.
    let web_token = s
        .kubectl_ok(&["create", "token", "web", "-n", "shop"])
        .trim()
        .to_string();
    // The token of the ServiceAccount the console disables and enables again.
    let reporter_token = s
        .kubectl_ok(&["create", "token", "reporter", "-n", "shop"])
        .trim()
        .to_string();
    assert!(crate::authenticated(&s, &reporter_token));
    let (web_jti, web_kid) = {
        let part = |i: usize| -> Value {
            serde_json::from_slice(
                &base64::Engine::decode(
                    &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                    web_token.split('.').nth(i).unwrap(),
                )
                .unwrap(),
            )
            .unwrap()
        };
        (
            part(1)["jti"].as_str().unwrap().to_string(),
            part(0)["kid"].as_str().unwrap().to_string(),
        )
    };
    assert!(crate::authenticated(&s, &web_token));
    crate::eventually("the web token's record", || {
        s.kubectl(&["get", "issuedtoken", &web_jti, "-n", "shop"])
            .status
            .success()
    });
    let name = match browser {
        Browser::Chromium => "chromium",
        Browser::Firefox { .. } => "firefox",
    };
    let shots = match std::env::var("BADGE_CONSOLE_SCREENSHOTS") {
        // The README's screenshots are Chromium's; Firefox's go beside them.
        Ok(dir) if name == "chromium" => PathBuf::from(dir),
        Ok(dir) => PathBuf::from(dir).join(name),
        Err(_) => s.data_dir().join("screenshots").join(name),
    };
    let driver = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/console/drive.mjs");
    let mut command = Command::new("node");
    command
        .arg(driver)
        .env("BROWSER", name)
        .env("CONSOLE_URL", &url)
        .env("CONSOLE_TOKEN", token.trim())
        .env("CONSOLE_USER", "system:serviceaccount:default:operator")
        .env("SA_NS", "shop")
        .env("SA_NAME", "web")
        .env("DISABLE_SA", "reporter")
        .env("WEB_JTI", &web_jti)
        .env("SCREENSHOT_DIR", &shots)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match &browser {
        Browser::Chromium => {
            command
                .env("PLAYWRIGHT_CORE", playwright_path())
                .env("CHROMIUM", chromium_path());
        }
        Browser::Firefox { binary, puppeteer } => {
            command.env("PUPPETEER_CORE", puppeteer).env("FIREFOX", binary);
        }
    }
    let mut child = command.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let stderr_pipe = child.stderr.take().unwrap();
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut BufReader::new(stderr_pipe), &mut text).unwrap();
        text
    });
    // The driver stops at each checkpoint until the server side is checked.
    let mut last = String::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        match line.strip_prefix("@checkpoint ") {
            Some("disabled") => {
                crate::eventually("the disabled ServiceAccount's token failing TokenReview", || {
                    !crate::authenticated(&s, &reporter_token)
                });
                assert_eq!(
                    s.kubectl_ok(&[
                        "get",
                        "serviceaccount",
                        "reporter",
                        "-n",
                        "shop",
                        "-o",
                        "jsonpath={.metadata.labels.identity\\.badge\\.dev/disabled}"
                    ]),
                    "true"
                );
                writeln!(stdin, "ok").unwrap();
            }
            Some("enabled") => {
                crate::eventually("the enabled ServiceAccount's token passing TokenReview", || {
                    crate::authenticated(&s, &reporter_token)
                });
                writeln!(stdin, "ok").unwrap();
            }
            Some(other) => panic!("unknown checkpoint {other}"),
            None => last = line,
        }
    }
    let status = child.wait().unwrap();
    let stderr = stderr_reader.join().unwrap();
    assert!(status.success(), "the browser driver failed:\n{stderr}");
    let result: Value =
        serde_json::from_str(last.trim()).unwrap_or_else(|e| panic!("driver output: {e}\n{stderr}"));
    assert_eq!(result["errors"], serde_json::json!([]), "{result:#}\n{stderr}");

    // A wrong token is refused with the server's Status.
    assert!(
        result["badLogin"].as_str().unwrap().contains("Unauthorized"),
        "{result:#}"
    );
    // The session is an HttpOnly, Secure, SameSite=Strict cookie; nothing is in storage.
    let cookies = result["cookies"].as_array().unwrap();
    assert_eq!(cookies.len(), 1, "{result:#}");
    assert_eq!(cookies[0]["httpOnly"], true);
    assert_eq!(cookies[0]["secure"], true);
    assert_eq!(cookies[0]["sameSite"], "Strict");
    assert_eq!(result["storage"]["local"], 0);
    assert_eq!(result["storage"]["session"], 0);
    assert_eq!(result["storage"]["cookie"], "");
    // The identity API is served: nothing is shown as unavailable.
    assert_eq!(result["tokenInventoryUnavailable"], 0, "{result:#}");

    // The filter narrows the list to the one ServiceAccount named.
    assert_eq!(result["filteredRows"], 1, "{result:#}");
    // The token is listed from the server's identity API, and Revoke sends a merge patch of
    // spec.revoked with the CSRF token.
    assert_eq!(result["liveBefore"], "1", "{result:#}");
    let row = result["tokenRow"].as_str().unwrap();
    assert!(row.contains(&web_kid), "{row}");
    let revoke = &result["revoke"];
    assert_eq!(
        revoke["path"],
        format!("/console/api/apis/identity.badge.dev/v1/namespaces/shop/issuedtokens/{web_jti}")
    );
    assert_eq!(revoke["contentType"], "application/merge-patch+json");
    assert_eq!(revoke["csrf"], true);
    // Firefox's driver does not expose request bodies; the confirmation shows it instead.
    if let Some(body) = revoke["body"].as_str() {
        assert_eq!(
            serde_json::from_str::<Value>(body).unwrap(),
            serde_json::json!({"spec": {"revoked": true}})
        );
    }
    assert!(
        result["revokeRequest"].as_str().unwrap().starts_with(&format!(
            "PATCH /apis/identity.badge.dev/v1/namespaces/shop/issuedtokens/{web_jti}"
        )),
        "{result:#}"
    );
    assert_eq!(result["liveAfter"], "0", "{result:#}");
    // The revocation is real: the token now fails TokenReview.
    assert_eq!(
        s.kubectl_ok(&[
            "get",
            "issuedtoken",
            &web_jti,
            "-n",
            "shop",
            "-o",
            "jsonpath={.spec.revoked}"
        ]),
        "true"
    );
    crate::eventually("the revoked token failing TokenReview", || {
        !crate::authenticated(&s, &web_token)
    });

    // Disable and enable: each confirmation named the exact merge patch of the label; the
    // TokenReview checks ran at the driver's checkpoints.
    let disable = result["disableRequest"].as_str().unwrap();
    assert!(
        disable.starts_with(
            "PATCH /api/v1/namespaces/shop/serviceaccounts/reporter\nContent-Type: application/merge-patch+json"
        ),
        "{disable}"
    );
    assert!(
        disable.contains("\"identity.badge.dev/disabled\": \"true\""),
        "{disable}"
    );
    let enable = result["enableRequest"].as_str().unwrap();
    assert!(
        enable.contains("\"identity.badge.dev/disabled\": null"),
        "{enable}"
    );
    assert_eq!(result["disabledState"], "disabled");
    assert!(
        s.kubectl_ok(&["get", "serviceaccount", "reporter", "-n", "shop", "-o", "json"])
            .find("identity.badge.dev/disabled")
            .is_none()
    );
    // Where RBAC grants no patch, the page shows the server's Forbidden Status.
    let refused = result["disableRefused"].as_str().unwrap();
    assert!(refused.contains("403 Forbidden"), "{refused}");
    assert!(
        refused.contains(
            "User \"system:serviceaccount:default:operator\" cannot patch resource \"serviceaccounts\" in API group \"\" in the namespace \"default\""
        ),
        "{refused}"
    );
    assert_eq!(result["operatorStillEnabled"], "false");

    // The matrix: the Role grants pods list, through the binding shown in the cell.
    let matrix = &result["matrix"];
    assert!(
        matrix["podsList"]["class"].as_str().unwrap().contains("allowed"),
        "{matrix:#}"
    );
    assert!(
        matrix["podsList"]["text"]
            .as_str()
            .unwrap()
            .contains("web-pod-reader"),
        "{matrix:#}"
    );
    assert!(
        matrix["podsDelete"]["class"].as_str().unwrap().contains("denied"),
        "{matrix:#}"
    );
    assert!(
        matrix["secretsGet"]["class"].as_str().unwrap().contains("denied"),
        "{matrix:#}"
    );
    // The same ServiceAccount holds nothing in another namespace.
    assert!(
        result["podsListInDefault"].as_str().unwrap().contains("denied"),
        "{result:#}"
    );
    // Beside it, a Role of exactly the allowed cells, to download.
    let suggestion = result["leastPrivilege"].as_str().unwrap();
    assert!(
        suggestion.contains("resources: [\"pods\"]\n  verbs: [\"get\", \"list\", \"watch\"]"),
        "{suggestion}"
    );
    assert!(
        suggestion.contains("kind: ServiceAccount, name: \"web\", namespace: \"shop\""),
        "{suggestion}"
    );
    assert_eq!(result["leastPrivilegeDownload"], "web-least-privilege.yaml");
    // The keys with their state.
    assert!(result["keys"].as_str().unwrap().contains("Active"), "{result:#}");
    assert!(
        result["keysNext"].as_str().unwrap().contains("transition"),
        "{result:#}"
    );
    // Who may mint the ServiceAccount's tokens.
    let whocan = result["whocan"].as_str().unwrap();
    assert!(
        whocan.contains("User ci-bot") && whocan.contains("create its tokens"),
        "{whocan}"
    );

    // The allowed action: the confirmation named the exact request, and the token it made
    // exists and authenticates.
    assert!(
        result["confirmRequest"]
            .as_str()
            .unwrap()
            .starts_with("POST /api/v1/namespaces/kube-system/secrets"),
        "{result:#}"
    );
    let created = result["createdToken"].as_str().unwrap();
    let id = created.split('.').next().unwrap();
    s.kubectl_ok(&[
        "get",
        "secret",
        "-n",
        "kube-system",
        &format!("bootstrap-token-{id}"),
    ]);
    assert!(
        crate::authenticated(&s, created),
        "the created bootstrap token does not authenticate"
    );

    // The denied action: the page shows the server's Forbidden Status, and nothing changed.
    assert!(
        result["deleteRequest"].as_str().unwrap().starts_with(&format!(
            "DELETE /api/v1/namespaces/kube-system/secrets/bootstrap-token-{id}"
        )),
        "{result:#}"
    );
    let refused = result["refused"].as_str().unwrap();
    assert!(refused.contains("403 Forbidden"), "{refused}");
    assert!(
        refused.contains(
            "cannot delete resource \"secrets\" in API group \"\" in the namespace \"kube-system\""
        ),
        "{refused}"
    );
    assert_eq!(result["stillListed"], 1);
    s.kubectl_ok(&[
        "get",
        "secret",
        "-n",
        "kube-system",
        &format!("bootstrap-token-{id}"),
    ]);

    // Readable at phone width: the page itself does not scroll sideways.
    assert!(result["phoneOverflow"].as_i64().unwrap() <= 0, "{result:#}");
    // Logging out forgets the session.
    assert_eq!(result["afterLogout"], 401);
    assert_eq!(result["signedInShownAtLogin"], false);
    assert_eq!(result["signedInShownAfterLogout"], false);
}

/// The console port of a running server, over raw HTTPS: assets and headers, a certificate
/// login, a token login whose writes the real RBAC refuses with its Status, CSRF, logout,
/// and the API port serving no console.
#[test]
fn console_sessions_against_the_real_server() {
    use badge_testkit::Credential;
    let s = TestServer::start_with(
        env!("CARGO_BIN_EXE_badge"),
        &["--console-bind-address", "127.0.0.1:0"],
    );
    let url = console_url(&s);
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    let origin = ("origin", "https://localhost");
    let json = ("content-type", "application/json");

    let page = s
        .request_on(port, "GET", "/console/", None, &[], Credential::Anonymous)
        .unwrap();
    assert_eq!(page.status, 200);
    assert!(page.header("content-type").starts_with("text/html"));
    assert!(
        page.header("content-security-policy")
            .contains("script-src 'self'")
    );
    let api_port = s
        .request("GET", "/console/", None, &[], Credential::Admin)
        .unwrap();
    assert_eq!(api_port.status, 404, "the API port serves no console");

    // A client certificate logs in, and each request must present it again.
    let login = s
        .request_on(
            port,
            "POST",
            "/console/login",
            Some(br#"{"certificate":true}"#.to_vec()),
            &[origin, json],
            Credential::Admin,
        )
        .unwrap();
    assert_eq!(login.status, 201, "{}", String::from_utf8_lossy(&login.body));
    let set_cookie = login.header("set-cookie").to_string();
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"),
        "{set_cookie}"
    );
    assert!(
        login.json()["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g == "system:masters")
    );
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    let namespaces = "/console/api/api/v1/namespaces";
    let listed = s
        .request_on(
            port,
            "GET",
            namespaces,
            None,
            &[("cookie", &cookie)],
            Credential::Admin,
        )
        .unwrap();
    assert_eq!(listed.status, 200);
    assert!(listed.json()["items"].as_array().unwrap().len() >= 4);
    let without_cert = s
        .request_on(
            port,
            "GET",
            namespaces,
            None,
            &[("cookie", &cookie)],
            Credential::Anonymous,
        )
        .unwrap();
    assert_eq!(without_cert.status, 401);

    // A token with no grants logs in; RBAC refuses its write with the server's Status.
    s.kubectl_ok(&["create", "serviceaccount", "nobody"]);
    let token = s.kubectl_ok(&["create", "token", "nobody"]);
    let body = serde_json::json!({"token": token.trim()})
        .to_string()
        .into_bytes();
    let login = s
        .request_on(
            port,
            "POST",
            "/console/login",
            Some(body),
            &[origin, json],
            Credential::Anonymous,
        )
        .unwrap();
    assert_eq!(login.status, 201);
    assert_eq!(login.json()["user"], "system:serviceaccount:default:nobody");
    let csrf = login.json()["csrfToken"].as_str().unwrap().to_string();
    let cookie = login.header("set-cookie").split(';').next().unwrap().to_string();
    let secret = br#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"x"}}"#.to_vec();
    let secrets = "/console/api/api/v1/namespaces/default/secrets";
    let refused = s
        .request_on(
            port,
            "POST",
            secrets,
            Some(secret.clone()),
            &[origin, json, ("cookie", &cookie), ("x-csrf-token", &csrf)],
            Credential::Anonymous,
        )
        .unwrap();
    assert_eq!(refused.status, 403);
    let status = refused.json();
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["reason"], "Forbidden");
    assert_eq!(
        status["message"],
        "secrets is forbidden: User \"system:serviceaccount:default:nobody\" cannot create resource \"secrets\" in API group \"\" in the namespace \"default\""
    );
    // Without the CSRF token the write does not reach the API.
    let no_csrf = s
        .request_on(
            port,
            "POST",
            secrets,
            Some(secret),
            &[origin, json, ("cookie", &cookie)],
            Credential::Anonymous,
        )
        .unwrap();
    assert_eq!(no_csrf.status, 403);
    assert!(no_csrf.json()["message"].as_str().unwrap().contains("CSRF"));

    // Logging out forgets the session.
    let out = s
        .request_on(
            port,
            "POST",
            "/console/logout",
            None,
            &[origin, ("cookie", &cookie), ("x-csrf-token", &csrf)],
            Credential::Anonymous,
        )
        .unwrap();
    assert_eq!(out.status, 200);
    let after = s
        .request_on(
            port,
            "GET",
            namespaces,
            None,
            &[("cookie", &cookie)],
            Credential::Anonymous,
        )
        .unwrap();
    assert_eq!(after.status, 401);
}
