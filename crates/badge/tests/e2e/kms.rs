//! The KMS v2 encryption provider with a real `badge kms-plugin` process: Secrets sealed
//! under a DEK the plugin encrypted, reads of cached DEKs while the plugin is down and writes
//! refused, a plugin key rotation moving new writes to the new key id; the encryption
//! configuration reloaded while serving; legacy tokens re-issued when their key is retired.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use badge_testkit::{Credential, TestServer};
use base64::Engine;
use serde_json::Value;

use crate::{authenticated, eventually};

const BIN: &str = env!("CARGO_BIN_EXE_badge");

/// Fast enough that a stopped plugin shows within seconds; a test never waits on these
/// times, only for what they lead to.
const FAST_KMS: [&str; 4] = [
    "--kms-v2-status-interval",
    "200ms",
    "--kms-v2-write-dek-ttl",
    "1s",
];

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack.windows(needle.len()).filter(|w| *w == needle).count()
}

fn store_bytes(data_dir: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    for name in ["store.db", "store.db-wal"] {
        if let Ok(mut file) = std::fs::read(data_dir.join(name)) {
            bytes.append(&mut file);
        }
    }
    bytes
}

/// A `badge kms-plugin` process.
struct Plugin {
    child: Option<Child>,
    socket: PathBuf,
    key_file: PathBuf,
}

impl Plugin {
    fn start(dir: &Path) -> Plugin {
        let mut plugin = Plugin {
            child: None,
            socket: dir.join("kms.sock"),
            key_file: dir.join("kms.key"),
        };
        plugin.launch();
        plugin
    }

    fn launch(&mut self) {
        let child = Command::new(BIN)
            .args(["kms-plugin", "--key-file"])
            .arg(&self.key_file)
            .arg("--listen")
            .arg(self.endpoint())
            .env("BADGE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        eventually("the plugin socket", || self.socket.exists());
    }

    fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let status = child.wait().unwrap();
            assert!(status.success(), "kms-plugin exited with {status}");
        }
    }

    /// The id the plugin reports for the key on line `line` of its key file.
    fn key_id(&self, line: usize) -> String {
        let text = std::fs::read_to_string(&self.key_file).unwrap();
        let key = base64::engine::general_purpose::STANDARD
            .decode(text.lines().nth(line).unwrap().trim())
            .unwrap();
        badge_encryption::kms::plugin::key_id(&key)
    }

    /// Puts a new key on top of the key file: the plugin's key rotates.
    fn rotate(&self) {
        let old = std::fs::read_to_string(&self.key_file).unwrap();
        let new = badge_encryption::kms::plugin::new_key_line();
        std::fs::write(&self.key_file, format!("{new}\n{old}")).unwrap();
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn kms_provider(name: &str, plugin: &Plugin) -> String {
    format!(
        "      - kms:\n          apiVersion: v2\n          name: {name}\n          endpoint: {}\n          timeout: 3s\n",
        plugin.endpoint()
    )
}

fn aescbc(name: &str) -> String {
    format!(
        "      - aescbc:\n          keys:\n            - name: {name}\n              secret: {}\n",
        b64(&[3; 32])
    )
}

fn write_config(path: &Path, providers: &str) {
    let yaml = format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n{providers}      - identity: {{}}\n"
    );
    // Written whole and renamed in, so a reload never sees half a file.
    let temp = path.with_extension("tmp");
    std::fs::write(&temp, yaml).unwrap();
    std::fs::rename(&temp, path).unwrap();
}

fn create_secret(s: &TestServer, name: &str, value: &str) -> badge_testkit::RawResponse {
    let body = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "data": {"v": b64(value.as_bytes())},
    });
    s.request(
        "POST",
        "/api/v1/namespaces/default/secrets",
        Some(body.to_string().into_bytes()),
        &[("content-type", "application/json")],
        Credential::Admin,
    )
    .unwrap()
}

fn secret_value(s: &TestServer, name: &str) -> String {
    let r = s
        .request(
            "GET",
            &format!("/api/v1/namespaces/default/secrets/{name}"),
            None,
            &[],
            Credential::Admin,
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let data = r.json()["data"]["v"].as_str().unwrap().to_string();
    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(data).unwrap()).unwrap()
}

fn kms_server(config: &Path, extra: &[&str]) -> TestServer {
    let config = config.display().to_string();
    let mut args = vec!["--encryption-provider-config", config.as_str()];
    args.extend(FAST_KMS);
    args.extend(extra);
    TestServer::start_with(BIN, &args)
}

#[test]
fn secrets_are_sealed_through_the_kms_plugin_and_writes_stop_while_it_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let mut plugin = Plugin::start(dir.path());
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&plugin.socket).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the plugin socket is private");
    let config = dir.path().join("encryption.yaml");
    write_config(&config, &kms_provider("badge-kms", &plugin));
    let mut s = kms_server(&config, &[]);

    let value = "kms-sealed-value-7f3e1d";
    let r = create_secret(&s, "sealed", value);
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let bytes = store_bytes(s.data_dir());
    assert!(!contains(&bytes, value.as_bytes()), "plaintext in store.db");
    assert!(
        !contains(&bytes, b64(value.as_bytes()).as_bytes()),
        "base64 plaintext in store.db"
    );
    assert!(
        contains(&bytes, b"k8s:enc:kms:v2:badge-kms:"),
        "the KMS v2 prefix is stored"
    );
    assert!(
        contains(&bytes, plugin.key_id(0).as_bytes()),
        "the plugin's key id is stored"
    );

    // A restart reads it back: the plugin decrypts the stored DEK.
    s.restart();
    assert_eq!(secret_value(&s, "sealed"), value);

    // The plugin goes down: writes fail with a 500 once the DEK goes unconfirmed, while
    // reads of objects under the cached DEK go on.
    plugin.stop();
    let mut refused = None;
    eventually("writes to be refused", || {
        let r = create_secret(&s, &format!("while-down-{}", rand_suffix()), "x");
        if r.status >= 500 {
            refused = Some(r);
            return true;
        }
        false
    });
    let refused = refused.unwrap();
    let status = refused.json();
    assert_eq!(refused.status, 500, "{status}");
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["reason"], "InternalError", "{status}");
    assert!(
        status["message"].as_str().unwrap().contains("expired at"),
        "{status}"
    );
    assert_eq!(secret_value(&s, "sealed"), value);

    // Back up: writes resume.
    plugin.launch();
    eventually("writes to resume", || {
        create_secret(&s, &format!("after-{}", rand_suffix()), "y").status == 201
    });
    assert_eq!(secret_value(&s, "sealed"), value);
}

fn rand_suffix() -> String {
    format!("{:x}", badge_api::clock::now().as_nanosecond())
}

#[test]
fn a_plugin_key_rotation_moves_new_writes_to_the_new_key_id() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = Plugin::start(dir.path());
    let config = dir.path().join("encryption.yaml");
    write_config(&config, &kms_provider("rotating", &plugin));
    let mut s = kms_server(&config, &[]);
    let old_id = plugin.key_id(0);
    assert_eq!(create_secret(&s, "before", "written-before-rotation").status, 201);
    assert!(contains(&store_bytes(s.data_dir()), old_id.as_bytes()));

    plugin.rotate();
    let new_id = plugin.key_id(0);
    assert_ne!(new_id, old_id);
    // The server's status probe sees the new key id and makes a new DEK for writes.
    let mut n = 0;
    eventually("a write under the new key id", || {
        n += 1;
        assert_eq!(
            create_secret(&s, &format!("after-{n}"), "written-after-rotation").status,
            201
        );
        contains(&store_bytes(s.data_dir()), new_id.as_bytes())
    });

    // Both read, before and after a restart (the plugin decrypts each DEK with its key).
    assert_eq!(secret_value(&s, "before"), "written-before-rotation");
    assert_eq!(secret_value(&s, &format!("after-{n}")), "written-after-rotation");
    s.restart();
    assert_eq!(secret_value(&s, "before"), "written-before-rotation");
    assert_eq!(secret_value(&s, &format!("after-{n}")), "written-after-rotation");

    // Offline, `badge encryption status` counts Secrets per plugin key id and `rotate`
    // moves the old key id's under the current one.
    s.stop();
    let encryption = |command: &str| {
        let out = Command::new(BIN)
            .args(["encryption", command, "--data-dir"])
            .arg(s.data_dir())
            .arg("--encryption-provider-config")
            .arg(&config)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    let status = encryption("status");
    let secrets_line = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("secrets"))
            .unwrap()
            .to_string()
    };
    let line = secrets_line(&status);
    // `<provider>/<name> (key id <id>): <count>[ (current)]`, two spaces apart.
    let part = |line: &str, id: &str| {
        line.split("  ")
            .find(|part| part.contains(&format!("(key id {id}): ")))
            .map(str::to_string)
    };
    let under_old = part(&line, &old_id).unwrap_or_else(|| panic!("{status}"));
    let under_new = part(&line, &new_id).unwrap_or_else(|| panic!("{status}"));
    assert!(!under_old.ends_with("(current)"), "{status}");
    assert!(under_new.ends_with(" (current)"), "{status}");
    encryption("rotate");
    let line = secrets_line(&encryption("status"));
    assert!(part(&line, &old_id).is_none(), "{line}");
    assert!(part(&line, &new_id).unwrap().ends_with(" (current)"), "{line}");
    s.restart();
    assert_eq!(secret_value(&s, "before"), "written-before-rotation");
}

#[test]
fn automatic_reload_switches_the_write_provider_and_keeps_it_over_an_invalid_file() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = Plugin::start(dir.path());
    let config = dir.path().join("encryption.yaml");
    write_config(&config, &aescbc("first"));
    let s = kms_server(
        &config,
        &[
            "--encryption-provider-config-automatic-reload",
            "--encryption-provider-config-reload-interval",
            "200ms",
        ],
    );
    assert_eq!(
        create_secret(&s, "under-aescbc", "old-provider-value").status,
        201
    );
    assert!(contains(&store_bytes(s.data_dir()), b"k8s:enc:aescbc:v1:first:"));

    // KMS first now, aescbc kept to read what it wrote.
    write_config(&config, &(kms_provider("reloaded", &plugin) + &aescbc("first")));
    let mut n = 0;
    eventually("writes under the reloaded provider", || {
        n += 1;
        assert_eq!(create_secret(&s, &format!("reloaded-{n}"), "new").status, 201);
        contains(&store_bytes(s.data_dir()), b"k8s:enc:kms:v2:reloaded:")
    });
    eventually("the reload to be logged", || {
        s.logged("loaded a new encryption provider configuration")
    });
    assert_eq!(secret_value(&s, "under-aescbc"), "old-provider-value");

    // An invalid file is logged and the configuration in use kept.
    std::fs::write(
        &config,
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources: []\n",
    )
    .unwrap();
    eventually("the invalid file to be refused", || {
        s.logged("automatic reload of the encryption provider configuration failed")
    });
    let before = count(&store_bytes(s.data_dir()), b"k8s:enc:kms:v2:reloaded:");
    assert_eq!(create_secret(&s, "after-invalid", "still-kms").status, 201);
    let bytes = store_bytes(s.data_dir());
    assert!(
        count(&bytes, b"k8s:enc:kms:v2:reloaded:") > before,
        "still written by the KMS provider"
    );
    assert_eq!(secret_value(&s, "after-invalid"), "still-kms");
}

fn kid_of(token: &str) -> String {
    let header = token.split('.').next().unwrap();
    let header: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header)
            .unwrap(),
    )
    .unwrap();
    header["kid"].as_str().unwrap().to_string()
}

fn legacy_token(s: &TestServer, name: &str) -> String {
    let data = s.kubectl_ok(&["get", "secret", name, "-o", "jsonpath={.data.token}"]);
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .unwrap_or_default(),
    )
    .unwrap()
}

fn badge_keys(s: &TestServer, args: &[&str]) {
    let out = Command::new(BIN)
        .arg("keys")
        .args(args)
        .env("KUBECONFIG", s.kubeconfig())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_legacy_token_signed_by_a_retired_key_is_reissued_with_the_current_key() {
    let s = crate::server();
    s.kubectl_ok(&["create", "sa", "robot", "-n", "default"]);
    let secret = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: robot-token\n  namespace: default\n  annotations:\n    kubernetes.io/service-account.name: robot\ntype: kubernetes.io/service-account-token\n";
    assert!(
        s.kubectl_with_stdin(&["apply", "-f", "-"], Some(secret))
            .status
            .success()
    );
    let mut old_token = String::new();
    eventually("the token controller to fill the secret", || {
        old_token = legacy_token(&s, "robot-token");
        !old_token.is_empty()
    });
    let old_kid = kid_of(&old_token);
    assert!(authenticated(&s, &old_token));

    badge_keys(&s, &["rotate", "--publish-lead-seconds", "0"]);
    // Still verifying under the old key: left alone.
    assert_eq!(legacy_token(&s, "robot-token"), old_token);
    badge_keys(&s, &["retire", &old_kid, "--force"]);

    let mut new_token = String::new();
    eventually("the token to be re-issued", || {
        new_token = legacy_token(&s, "robot-token");
        new_token != old_token
    });
    assert_ne!(kid_of(&new_token), old_kid, "signed by the current key");
    assert!(authenticated(&s, &new_token), "the new token verifies");
    assert!(!authenticated(&s, &old_token), "the old one is refused");
    let status = crate::token_review(&s, &new_token, &[]);
    assert_eq!(
        status["user"]["username"], "system:serviceaccount:default:robot",
        "{status}"
    );
}

#[test]
fn secrets_unreadable_while_the_plugin_is_down_at_start_read_once_it_is_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut plugin = Plugin::start(dir.path());
    let config = dir.path().join("encryption.yaml");
    write_config(&config, &kms_provider("late", &plugin));
    let mut s = kms_server(&config, &[]);
    assert_eq!(create_secret(&s, "kept", "sealed-before-restart").status, 201);
    s.stop();
    plugin.stop();

    // The server starts without its plugin: the Secret cannot be decrypted yet.
    s.restart();
    let r = s
        .request(
            "GET",
            "/api/v1/namespaces/default/secrets/kept",
            None,
            &[],
            Credential::Admin,
        )
        .unwrap();
    assert_eq!(r.status, 500, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["reason"], "InternalError");

    plugin.launch();
    eventually("the Secret to read once the plugin is up", || {
        s.request(
            "GET",
            "/api/v1/namespaces/default/secrets/kept",
            None,
            &[],
            Credential::Admin,
        )
        .unwrap()
        .status
            == 200
    });
    assert_eq!(secret_value(&s, "kept"), "sealed-before-restart");
    assert_eq!(create_secret(&s, "new", "written-after").status, 201);
}
