//! `badge agent` end to end: a real server, a real agent process, the kubelet's file layout
//! (crates/badge-agent). `BADGE_AGENT_BIN=/path/to/badge-agent` runs the standalone binary
//! instead of `badge agent` (same flags).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use badge_testkit::ChildGuard;

use base64::Engine;
use serde_json::json;

use crate::{eventually, jti_of, server};

fn start_agent(kubeconfig: &str, root: &Path) -> (ChildGuard, String) {
    // 3607 s tokens refresh after a few seconds.
    start_agent_with(kubeconfig, root, &["--token-refresh-fraction", "0.001"])
}

/// Starts the agent with its metrics on a port of its choosing; returns it (killed when
/// dropped, also when the test panics) and the metrics address it reported.
fn start_agent_with(kubeconfig: &str, root: &Path, extra: &[&str]) -> (ChildGuard, String) {
    let mut command = match std::env::var_os("BADGE_AGENT_BIN") {
        Some(binary) => Command::new(binary),
        None => {
            let mut c = Command::new(env!("CARGO_BIN_EXE_badge"));
            c.arg("agent");
            c
        }
    };
    let mut agent = command
        .args([
            "--kubeconfig",
            kubeconfig,
            "--node-name",
            "n1",
            "--metrics-bind-address",
            "127.0.0.1:0",
            "--root",
        ])
        .arg(root)
        .args(extra)
        .env("BADGE_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = agent.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    // Reads to the end, so the agent never blocks on a full pipe.
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("serving agent metrics")
                && let Some(address) = line.split("address=").nth(1)
            {
                let _ = tx.send(address.split_whitespace().next().unwrap_or("").to_string());
            }
        }
    });
    // An agent that exits ends the wait at once (the reader drops the sender).
    let metrics = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the agent did not report its metrics address");
    (ChildGuard(agent), metrics)
}

/// `badge node add n1`; returns the node's kubeconfig path.
fn node_kubeconfig(s: &badge_testkit::TestServer) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_badge"))
        .args(["node", "add", "n1", "--data-dir"])
        .arg(s.data_dir())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn create(s: &badge_testkit::TestServer, manifest: &str) {
    let out = s.kubectl_with_stdin(&["create", "-f", "-"], Some(manifest));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn projected(root: &Path, uid: &str) -> PathBuf {
    root.join("pods")
        .join(uid)
        .join("volumes")
        .join("kubernetes.io~projected")
}

fn volume_of(root: &Path, uid: &str) -> Option<PathBuf> {
    std::fs::read_dir(projected(root, uid))
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.join("token").exists())
}

#[test]
fn the_agent_writes_refreshes_and_removes_pod_tokens() {
    let s = server();
    let kubeconfig = node_kubeconfig(&s);
    s.kubectl_ok(&["create", "sa", "app"]);
    let pod = |name: &str, node: &str, automount: bool| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  serviceAccountName: app\n  nodeName: {node}\n  automountServiceAccountToken: {automount}\n  containers:\n  - name: c\n    image: busybox\n"
        )
    };
    for (name, node, automount) in [
        ("web", "n1", true),
        ("quiet", "n1", false),
        ("elsewhere", "n2", true),
    ] {
        create(&s, &pod(name, node, automount));
    }
    let uid = |name: &str| s.kubectl_ok(&["get", "pod", name, "-o", "jsonpath={.metadata.uid}"]);
    let (web, quiet, elsewhere) = (uid("web"), uid("quiet"), uid("elsewhere"));

    let root = tempfile::tempdir().unwrap();
    let (mut agent, metrics) = start_agent(&kubeconfig, root.path());
    let mut volume = None;
    eventually("the agent to write the token volume", || {
        volume = volume_of(root.path(), &web);
        volume.is_some()
    });
    let volume = volume.unwrap();
    // The kubelet's layout: a timestamped directory behind the `..data` symlink.
    let data = std::fs::read_link(volume.join("..data")).unwrap();
    assert!(data.to_string_lossy().starts_with("..20"), "{}", data.display());
    assert_eq!(
        std::fs::read_link(volume.join("token")).unwrap(),
        Path::new("..data/token")
    );
    assert_eq!(
        std::fs::read_to_string(volume.join("namespace")).unwrap(),
        "default"
    );
    assert_eq!(
        std::fs::read(volume.join("ca.crt")).unwrap(),
        std::fs::read(s.data_dir().join("pki/ca.crt")).unwrap()
    );
    let first = std::fs::read_to_string(volume.join("token")).unwrap();
    let review = crate::token_review(&s, &first, &[]);
    assert_eq!(review["authenticated"], true, "{review}");
    assert_eq!(
        review["user"]["extra"]["authentication.kubernetes.io/pod-name"],
        json!(["web"])
    );
    let who = s.kubectl_ok(&[
        "--token",
        &first,
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username}",
    ]);
    assert_eq!(who, "system:serviceaccount:default:app");

    eventually("the token to be refreshed before it expires", || {
        std::fs::read_to_string(volume.join("token")).is_ok_and(|t| t != first)
    });
    let scrape = || {
        use std::io::{Read, Write};
        let mut tcp = std::net::TcpStream::connect(&metrics).unwrap();
        tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        tcp.read_to_string(&mut text).unwrap();
        text
    };
    // The counter follows the write it counts: wait for it rather than race it.
    let written = |text: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix("badge_agent_volumes_written_total "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    eventually("both writes to be counted", || written(&scrape()) >= 2);
    assert!(
        !root.path().join("pods").join(&quiet).exists(),
        "automount disabled: no token files"
    );
    assert!(
        !root.path().join("pods").join(&elsewhere).exists(),
        "another node's pod is not ours"
    );

    // Killed and restarted, the agent keeps the files and keeps refreshing them.
    agent.kill().unwrap();
    agent.wait().unwrap();
    let kept = std::fs::read_to_string(volume.join("token")).unwrap();
    let (mut agent, _) = start_agent(&kubeconfig, root.path());
    eventually("a refresh after the restart", || {
        std::fs::read_to_string(volume.join("token")).is_ok_and(|t| t != kept)
    });

    let current = std::fs::read_to_string(volume.join("token")).unwrap();
    s.kubectl_ok(&["delete", "pod", "web", "--wait=false"]);
    eventually("the pod's token to be revoked and its files removed", || {
        crate::token_review(&s, &current, &[])
            .get("authenticated")
            .is_none()
            && !root.path().join("pods").join(&web).exists()
    });
    agent.kill().unwrap();
    agent.wait().unwrap();
}

/// The volume ServiceAccount admission injects, spelled out, plus a Secret source with an
/// item mode; a planted symlink where a volume belongs is never written through.
#[test]
fn an_explicit_kube_api_access_volume_with_modes_jti_and_a_planted_link() {
    let s = server();
    let kubeconfig = node_kubeconfig(&s);
    s.kubectl_ok(&["create", "sa", "app"]);
    s.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "extra",
        "--from-literal=key=s3cret",
    ]);
    let pod = |name: &str, node: &str| {
        format!(
            r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  serviceAccountName: app
  nodeName: {node}
  containers:
  - name: c
    image: busybox
    volumeMounts:
    - name: kube-api-access-test
      mountPath: /var/run/secrets/kubernetes.io/serviceaccount
      readOnly: true
    - name: extra
      mountPath: /extra
  volumes:
  - name: kube-api-access-test
    projected:
      defaultMode: 420
      sources:
      - serviceAccountToken:
          expirationSeconds: 3607
          path: token
      - configMap:
          name: kube-root-ca.crt
          items:
          - key: ca.crt
            path: ca.crt
      - downwardAPI:
          items:
          - path: namespace
            fieldRef:
              apiVersion: v1
              fieldPath: metadata.namespace
  - name: extra
    projected:
      sources:
      - secret:
          name: extra
          items:
          - key: key
            path: nested/key
            mode: 256
  - name: planted
    projected:
      sources:
      - downwardAPI:
          items:
          - path: name
            fieldRef:
              fieldPath: metadata.name
"#
        )
    };
    create(&s, &pod("web", "n1"));
    create(&s, &pod("away", "n2"));
    let uid = |name: &str| s.kubectl_ok(&["get", "pod", name, "-o", "jsonpath={.metadata.uid}"]);
    let (web, away) = (uid("web"), uid("away"));

    // Something other than the agent left a link where the `planted` volume goes.
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(projected(root.path(), &web)).unwrap();
    std::os::unix::fs::symlink(outside.path(), projected(root.path(), &web).join("planted")).unwrap();

    let (mut agent, _) = start_agent(&kubeconfig, root.path());
    let volume = projected(root.path(), &web).join("kube-api-access-test");
    eventually("the agent to write the volume", || volume.join("token").exists());
    assert_eq!(
        s.kubectl_ok(&["get", "node", "n1", "-o", "jsonpath={.metadata.name}"]),
        "n1",
        "the agent registers its Node"
    );
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    for name in ["token", "ca.crt", "namespace"] {
        assert_eq!(
            std::fs::read_link(volume.join(name)).unwrap(),
            Path::new("..data").join(name)
        );
        assert_eq!(mode(&volume.join(name)), 0o644, "{name}");
    }
    assert_eq!(
        std::fs::read_to_string(volume.join("namespace")).unwrap(),
        "default"
    );
    let extra = projected(root.path(), &web).join("extra");
    eventually("the Secret volume", || extra.join("nested/key").exists());
    assert_eq!(
        std::fs::read_link(extra.join("nested")).unwrap(),
        Path::new("..data/nested")
    );
    assert_eq!(
        std::fs::read_to_string(extra.join("nested/key")).unwrap(),
        "s3cret"
    );
    assert_eq!(mode(&extra.join("nested/key")), 0o400);
    assert!(
        std::fs::read_dir(outside.path()).unwrap().next().is_none(),
        "nothing is written through a planted link"
    );

    let first = std::fs::read_to_string(volume.join("token")).unwrap();
    let review = crate::token_review(&s, &first, &[]);
    assert_eq!(review["authenticated"], true, "{review}");
    assert_eq!(
        review["user"]["extra"]["authentication.kubernetes.io/pod-uid"],
        json!([web])
    );
    let who: serde_json::Value =
        serde_json::from_str(&s.kubectl_ok(&["--token", &first, "auth", "whoami", "-o", "json"])).unwrap();
    assert_eq!(
        who["status"]["userInfo"]["extra"]["authentication.kubernetes.io/pod-name"],
        json!(["web"]),
        "{who}"
    );
    let first_jti = jti_of(&first);
    eventually("a token with a new jti", || {
        std::fs::read_to_string(volume.join("token")).is_ok_and(|t| jti_of(&t) != first_jti)
    });
    // The replaced token still authenticates until its own expiry (refresh is early).
    assert_eq!(crate::token_review(&s, &first, &[])["authenticated"], true);

    assert!(
        !root.path().join("pods").join(&away).exists(),
        "another node's pod is ignored"
    );

    // While the agent is down the files stay readable.
    agent.kill().unwrap();
    agent.wait().unwrap();
    let kept = std::fs::read_to_string(volume.join("token")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(std::fs::read_to_string(volume.join("token")).unwrap(), kept);
    let (mut agent, _) = start_agent(&kubeconfig, root.path());
    eventually("a refresh after the restart", || {
        std::fs::read_to_string(volume.join("token")).is_ok_and(|t| t != kept)
    });
    assert!(
        std::fs::read_dir(outside.path()).unwrap().next().is_none(),
        "still nothing through the planted link"
    );

    s.kubectl_ok(&["delete", "pod", "web", "--wait=false"]);
    eventually("the pod's directory to be removed", || {
        !root.path().join("pods").join(&web).exists()
    });
    assert!(
        outside.path().exists(),
        "removing the pod removes the link, not its target"
    );
    agent.kill().unwrap();
    agent.wait().unwrap();
}

fn claims(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn plain_volume(root: &Path, uid: &str, plugin: &str, name: &str) -> PathBuf {
    root.join("pods")
        .join(uid)
        .join("volumes")
        .join(plugin)
        .join(name)
}

/// Plain `secret` and `configMap` volumes as pkg/volume/secret and pkg/volume/configmap
/// write them: a legacy token Secret mounted whole, a Secret's items renamed with modes,
/// a ConfigMap, a missing optional Secret (an empty volume) and a missing required one
/// (a FailedMount event until it appears); a change to a Secret is written at once.
#[test]
fn secret_and_configmap_volumes_follow_their_objects_and_the_pod() {
    let s = server();
    let kubeconfig = node_kubeconfig(&s);
    s.kubectl_ok(&["create", "sa", "app"]);
    create(
        &s,
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: default-token-abcde\n  annotations:\n    kubernetes.io/service-account.name: app\ntype: kubernetes.io/service-account-token\n",
    );
    let mut legacy = String::new();
    eventually("the token controller to fill the legacy Secret", || {
        let b64 = s.kubectl_ok(&[
            "get",
            "secret",
            "default-token-abcde",
            "-o",
            "jsonpath={.data.token}",
        ]);
        legacy = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b64).unwrap()).unwrap();
        !legacy.is_empty()
    });
    s.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "creds",
        "--from-literal=user=admin",
        "--from-literal=password=pw1",
    ]);
    s.kubectl_ok(&["create", "configmap", "settings", "--from-literal=speed=fast"]);
    create(
        &s,
        r#"apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  serviceAccountName: app
  automountServiceAccountToken: false
  nodeName: n1
  containers:
  - name: c
    image: busybox
    volumeMounts:
    - name: token
      mountPath: /var/run/secrets/kubernetes.io/serviceaccount
      readOnly: true
  volumes:
  - name: token
    secret:
      secretName: default-token-abcde
  - name: creds
    secret:
      secretName: creds
      defaultMode: 256
      items:
      - key: password
        path: auth/pw
      - key: user
        path: user
        mode: 288
  - name: settings
    configMap:
      name: settings
  - name: maybe
    secret:
      secretName: absent
      optional: true
"#,
    );
    create(
        &s,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: broken\nspec:\n  automountServiceAccountToken: false\n  nodeName: n1\n  containers:\n  - name: c\n    image: busybox\n  volumes:\n  - name: needed\n    secret:\n      secretName: later\n",
    );
    let uid = |name: &str| s.kubectl_ok(&["get", "pod", name, "-o", "jsonpath={.metadata.uid}"]);
    let (web, broken) = (uid("web"), uid("broken"));

    let root = tempfile::tempdir().unwrap();
    let (mut agent, _) = start_agent(&kubeconfig, root.path());
    let token = plain_volume(root.path(), &web, "kubernetes.io~secret", "token");
    let creds = plain_volume(root.path(), &web, "kubernetes.io~secret", "creds");
    let settings = plain_volume(root.path(), &web, "kubernetes.io~configmap", "settings");
    let maybe = plain_volume(root.path(), &web, "kubernetes.io~secret", "maybe");
    eventually("the secret and configMap volumes", || {
        token.join("token").exists()
            && creds.join("user").exists()
            && settings.join("speed").exists()
            && maybe.join("..data").exists()
    });
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let read = |p: PathBuf| std::fs::read_to_string(p).unwrap();

    // The legacy token Secret, whole: every key at the default 0644, behind `..data`.
    assert_eq!(read(token.join("token")), legacy);
    assert_eq!(read(token.join("namespace")), "default");
    assert_eq!(
        std::fs::read(token.join("ca.crt")).unwrap(),
        std::fs::read(s.data_dir().join("pki/ca.crt")).unwrap()
    );
    for name in ["token", "namespace", "ca.crt"] {
        assert_eq!(
            std::fs::read_link(token.join(name)).unwrap(),
            Path::new("..data").join(name)
        );
        assert_eq!(mode(&token.join(name)), 0o644, "{name}");
    }
    assert_eq!(
        crate::token_review(&s, &read(token.join("token")), &[])["authenticated"],
        true
    );

    // Items pick and rename keys; an item's mode beats defaultMode.
    assert_eq!(read(creds.join("auth/pw")), "pw1");
    assert_eq!(mode(&creds.join("auth/pw")), 0o400);
    assert_eq!(read(creds.join("user")), "admin");
    assert_eq!(mode(&creds.join("user")), 0o440);
    assert!(!creds.join("password").exists(), "only the listed keys");
    assert_eq!(read(settings.join("speed")), "fast");
    assert_eq!(mode(&settings.join("speed")), 0o644);
    // A missing optional Secret: an empty volume.
    let visible: Vec<String> = std::fs::read_dir(&maybe)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with(".."))
        .collect();
    assert!(visible.is_empty(), "{visible:?}");

    // A missing required Secret is reported on the pod, and nothing is written for it.
    let needed = plain_volume(root.path(), &broken, "kubernetes.io~secret", "needed");
    eventually("a FailedMount event for the missing Secret", || {
        let events: serde_json::Value =
            serde_json::from_str(&s.kubectl_ok(&["get", "events", "-o", "json"])).unwrap();
        events["items"].as_array().unwrap().iter().any(|e| {
            e["involvedObject"]["name"] == "broken"
                && e["reason"] == "FailedMount"
                && e["type"] == "Warning"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(r#"secret "later" not found"#))
        })
    });
    assert!(!needed.exists());
    // Once it exists, its watch brings it in without waiting for a resync.
    s.kubectl_ok(&["create", "secret", "generic", "later", "--from-literal=k=v"]);
    eventually("the late Secret's volume", || {
        std::fs::read_to_string(needed.join("k")).is_ok_and(|v| v == "v")
    });

    // A change to the Secret rewrites the file.
    let before = std::fs::read_link(creds.join("..data")).unwrap();
    s.kubectl_ok(&[
        "patch",
        "secret",
        "creds",
        "--type=merge",
        "-p",
        r#"{"data":{"password":"cHcy"}}"#,
    ]);
    eventually("the new password in the file", || {
        std::fs::read_to_string(creds.join("auth/pw")).is_ok_and(|v| v == "pw2")
    });
    assert_ne!(std::fs::read_link(creds.join("..data")).unwrap(), before);
    assert_eq!(mode(&creds.join("auth/pw")), 0o400);

    s.kubectl_ok(&["delete", "pod", "web", "--wait=false"]);
    eventually("the pod's volumes to be removed", || {
        !root.path().join("pods").join(&web).exists()
    });
    assert!(root.path().join("pods").join(&broken).exists());
    agent.kill().unwrap();
    agent.wait().unwrap();
}

/// The token cache follows the ServiceAccount's uid: a recreated account (same name, new
/// uid) gets a new token at once, long before the old one would be refreshed.
#[test]
fn a_recreated_service_account_gets_a_new_token_at_once() {
    let s = server();
    let kubeconfig = node_kubeconfig(&s);
    s.kubectl_ok(&["create", "sa", "app"]);
    create(
        &s,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  serviceAccountName: app\n  nodeName: n1\n  containers:\n  - name: c\n    image: busybox\n",
    );
    let web = s.kubectl_ok(&["get", "pod", "web", "-o", "jsonpath={.metadata.uid}"]);
    let sa_uid = || s.kubectl_ok(&["get", "sa", "app", "-o", "jsonpath={.metadata.uid}"]);
    let old_uid = sa_uid();

    let root = tempfile::tempdir().unwrap();
    // The default refresh rule: a one-hour token is not refreshed for most of an hour.
    let (mut agent, _) = start_agent_with(&kubeconfig, root.path(), &[]);
    let mut volume = None;
    eventually("the token volume", || {
        volume = volume_of(root.path(), &web);
        volume.is_some()
    });
    let token_file = volume.unwrap().join("token");
    let first = std::fs::read_to_string(&token_file).unwrap();
    let sa_uid_of = |token: &str| claims(token)["kubernetes.io"]["serviceaccount"]["uid"].clone();
    assert_eq!(sa_uid_of(&first), json!(old_uid));

    s.kubectl_ok(&["delete", "sa", "app"]);
    s.kubectl_ok(&["create", "sa", "app"]);
    let new_uid = sa_uid();
    assert_ne!(new_uid, old_uid);
    eventually("a token for the new ServiceAccount", || {
        std::fs::read_to_string(&token_file).is_ok_and(|t| sa_uid_of(&t) == json!(new_uid))
    });
    let current = std::fs::read_to_string(&token_file).unwrap();
    assert_eq!(crate::token_review(&s, &current, &[])["authenticated"], true);
    assert!(
        crate::token_review(&s, &first, &[])
            .get("authenticated")
            .is_none()
    );
    agent.kill().unwrap();
    agent.wait().unwrap();
}
