//! Secrets encrypted at rest: what lands in `store.db` (and its WAL) and in etcd is
//! ciphertext with upstream's prefixes, while the API serves the plain values.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use badge_testkit::etcd::EtcdCluster;
use badge_testkit::{Credential, TestServer};
use base64::Engine;

use crate::{eventually, server};

const BIN: &str = env!("CARGO_BIN_EXE_badge");

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Every byte of the embedded store on disk: the database, its write-ahead log and index.
fn store_bytes(data_dir: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    for name in ["store.db", "store.db-wal", "store.db-shm"] {
        if let Ok(mut file) = std::fs::read(data_dir.join(name)) {
            bytes.append(&mut file);
        }
    }
    assert!(!bytes.is_empty(), "no store files in {}", data_dir.display());
    bytes
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Asserts `value` is nowhere on disk, neither as is nor base64-encoded as Secret data.
fn assert_not_on_disk(data_dir: &Path, value: &str) {
    let bytes = store_bytes(data_dir);
    assert!(
        !contains(&bytes, value.as_bytes()),
        "plaintext found in the store files"
    );
    assert!(
        !contains(&bytes, b64(value.as_bytes()).as_bytes()),
        "base64 of the plaintext found in the store files"
    );
}

fn secret_value(s: &TestServer, name: &str, field: &str) -> String {
    let data = s.kubectl_ok(&[
        "get",
        "secret",
        name,
        "-o",
        &format!("jsonpath={{.data.{field}}}"),
    ]);
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .unwrap(),
    )
    .unwrap()
}

fn write_config(dir: &Path, providers: &str) -> String {
    let path = dir.join("encryption.yaml");
    let yaml = format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n{providers}"
    );
    std::fs::write(&path, yaml).unwrap();
    path.display().to_string()
}

fn aescbc(name: &str, key: u8) -> String {
    format!(
        "      - aescbc:\n          keys:\n            - name: {name}\n              secret: {}\n",
        b64(&[key; 32])
    )
}

const IDENTITY: &str = "      - identity: {}\n";

#[test]
fn secrets_are_encrypted_at_rest_by_default_and_survive_a_restart() {
    let mut s = server();
    let config = s.data_dir().join("pki/encryption-config.yaml");
    let mode = std::fs::metadata(&config).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the key file is private");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(
        text.contains("kind: EncryptionConfiguration") && text.contains("secretbox"),
        "{text}"
    );

    let value = "correct-horse-battery-staple-5d1e";
    s.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "vault",
        &format!("--from-literal=password={value}"),
    ]);
    s.kubectl_ok(&[
        "create",
        "configmap",
        "plain-settings",
        "--from-literal=colour=ultraviolet-9q",
    ]);
    assert_not_on_disk(s.data_dir(), value);
    let bytes = store_bytes(s.data_dir());
    assert!(
        contains(&bytes, b"k8s:enc:secretbox:v1:key1:"),
        "the secretbox prefix is stored"
    );
    assert!(contains(&bytes, b"ultraviolet-9q"), "only Secrets are encrypted");

    let json: serde_json::Value =
        serde_json::from_str(&s.kubectl_ok(&["get", "secret", "vault", "-o", "json"])).unwrap();
    assert_eq!(json["data"]["password"], b64(value.as_bytes()));
    let list = s.kubectl_ok(&["get", "secrets", "-o", "name"]);
    assert!(list.contains("secret/vault"), "{list}");

    s.restart();
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        text,
        "a restart keeps the key"
    );
    assert_eq!(secret_value(&s, "vault", "password"), value);
    // A write after the restart is readable too (the same key seals and opens).
    s.kubectl_ok(&["label", "secret", "vault", "tier=gold"]);
    assert_eq!(secret_value(&s, "vault", "password"), value);
    assert_not_on_disk(s.data_dir(), value);
}

#[test]
fn legacy_token_secrets_are_encrypted_at_rest() {
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
        let data = s.kubectl_ok(&["get", "secret", "old-token", "-o", "jsonpath={.data.token}"]);
        if data.trim().is_empty() {
            return false;
        }
        token = String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(data.trim())
                .unwrap(),
        )
        .unwrap();
        true
    });
    assert_eq!(token.split('.').count(), 3, "a JWT");
    assert_not_on_disk(s.data_dir(), &token);
    // The token's signature alone (no base64 alignment issue) is not there either.
    let signature = token.rsplit('.').next().unwrap();
    assert!(!contains(&store_bytes(s.data_dir()), signature.as_bytes()));
}

#[test]
fn an_explicit_aescbc_configuration_encrypts_and_plaintext_from_before_stays_readable() {
    let dir = tempfile::tempdir().unwrap();
    // Identity first: written as before encryption existed.
    let plain = write_config(dir.path(), IDENTITY);
    let mut s = TestServer::start_with(BIN, &["--encryption-provider-config", &plain]);
    let old = "stored-before-encryption-8c2b";
    s.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "legacy",
        &format!("--from-literal=v={old}"),
    ]);
    assert!(
        contains(&store_bytes(s.data_dir()), b64(old.as_bytes()).as_bytes()),
        "identity writes plain"
    );

    let cbc = write_config(dir.path(), &(aescbc("k1", 1) + IDENTITY));
    s.restart_with(&["--encryption-provider-config", &cbc]);
    assert_eq!(secret_value(&s, "legacy", "v"), old, "plaintext stays readable");
    let new = "sealed-with-aescbc-41f0";
    s.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "fresh",
        &format!("--from-literal=v={new}"),
    ]);
    // Rewriting the old Secret seals it.
    s.kubectl_ok(&["annotate", "secret", "legacy", "rotated=yes"]);
    assert_eq!(secret_value(&s, "fresh", "v"), new);
    assert_eq!(secret_value(&s, "legacy", "v"), old);
    s.stop();
    assert_not_on_disk(s.data_dir(), new);
    assert!(contains(&store_bytes(s.data_dir()), b"k8s:enc:aescbc:v1:k1:"));
    // The current values, read beneath the API (older copies may linger in free pages).
    let store = badge_store::sqlite::SqliteStore::open(&s.data_dir().join("store.db")).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for name in ["legacy", "fresh"] {
        let key = format!("/registry/secrets/default/{name}");
        let (kv, _) = runtime.block_on(badge_store::Store::get(&store, &key)).unwrap();
        assert!(
            kv.unwrap().value.starts_with(b"k8s:enc:aescbc:v1:k1:"),
            "{name} is sealed"
        );
    }
}

#[test]
fn a_secret_that_cannot_be_decrypted_fails_its_reads_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let first = write_config(dir.path(), &aescbc("k1", 1));
    let mut s = TestServer::start_with(BIN, &["--encryption-provider-config", &first]);
    s.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "lost",
        "--from-literal=v=unreachable-value-3e",
    ]);
    // The key it was written with is gone from the configuration.
    let second = write_config(dir.path(), &(aescbc("k2", 2) + IDENTITY));
    s.restart_with(&["--encryption-provider-config", &second]);

    let path = "/api/v1/namespaces/default/secrets/lost";
    let response = s.request("GET", path, None, &[], Credential::Admin).unwrap();
    assert_eq!(response.status, 500);
    let status = response.json();
    assert_eq!(status["reason"], "InternalError");
    let message = status["message"].as_str().unwrap();
    assert!(message.starts_with("Internal error occurred: "), "{message}");
    assert!(
        message.contains("aescbc") && message.contains("\"k1\""),
        "names provider and key: {message}"
    );
    assert!(!message.contains(&b64(&[1u8; 32])), "never the key material");
    assert!(
        s.log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("/registry/secrets/default/lost")),
        "logged"
    );

    // The list that meets it fails, as upstream's; other reads go on.
    let list = s
        .request(
            "GET",
            "/api/v1/namespaces/default/secrets",
            None,
            &[],
            Credential::Admin,
        )
        .unwrap();
    assert_eq!(list.status, 500);
    assert!(
        list.json()["message"]
            .as_str()
            .unwrap()
            .contains("unable to transform key")
    );
    s.kubectl_ok(&["create", "namespace", "elsewhere"]);
    s.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "ok",
        "-n",
        "elsewhere",
        "--from-literal=v=fine",
    ]);
    let listed = s.kubectl_ok(&["get", "secrets", "-n", "elsewhere", "-o", "name"]);
    assert_eq!(listed.trim(), "secret/ok");
    s.kubectl_ok(&["get", "serviceaccounts", "-A"]);
    // kubectl shows the Status as is.
    let kubectl_err = s.kubectl_err(&["get", "secret", "lost"]);
    assert!(kubectl_err.contains("Internal error occurred"), "{kubectl_err}");
    assert!(s.is_running());
}

#[test]
fn invalid_configurations_refuse_to_start_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let short = format!(
        "      - secretbox:\n          keys:\n            - name: k\n              secret: {}\n",
        b64(&[1u8; 16])
    );
    let config = write_config(dir.path(), &short);
    let out = Command::new(BIN)
        .args(["server", "--secure-port", "0", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--encryption-provider-config", &config])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "resources[0].providers[0].secretbox.keys[0].secret: Invalid value: \"REDACTED\": secret is not of the expected length, got 16, expected one of [32]"
        ),
        "{stderr}"
    );
}

fn etcd_args(etcd: &EtcdCluster) -> Vec<String> {
    vec![
        "--storage".into(),
        "etcd".into(),
        "--etcd-servers".into(),
        etcd.endpoints_flag(),
    ]
}

/// The value etcd holds at `key`, read with the store's own etcd client.
fn etcd_raw(etcd: &EtcdCluster, key: &str) -> Vec<u8> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (kv, _) = runtime
        .block_on(async {
            let config = badge_store_etcd::EtcdConfig::new(etcd.endpoints());
            let store = badge_store_etcd::EtcdStore::new(config).unwrap();
            badge_store::Store::get(&store, key).await
        })
        .unwrap();
    kv.expect("the key is in etcd").value.to_vec()
}

#[test]
fn secrets_in_etcd_are_encrypted_and_migrate_seals_plaintext() {
    let etcd = EtcdCluster::start(1);
    let args = etcd_args(&etcd);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let s = TestServer::start_with(BIN, &args);
    let value = "etcd-held-secret-value-92aa";
    s.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "remote",
        &format!("--from-literal=v={value}"),
    ]);
    let raw = etcd_raw(&etcd, "/registry/secrets/default/remote");
    assert!(raw.starts_with(b"k8s:enc:secretbox:v1:key1:"));
    assert!(!contains(&raw, value.as_bytes()) && !contains(&raw, b64(value.as_bytes()).as_bytes()));
    assert_eq!(secret_value(&s, "remote", "v"), value);
    drop(s);

    // An embedded store written without encryption, migrated into a fresh etcd: sealed
    // on the way with the data dir's default configuration, and served from there.
    let target = EtcdCluster::start(1);
    let dir = tempfile::tempdir().unwrap();
    let plain = write_config(dir.path(), IDENTITY);
    let mut old = TestServer::start_with(BIN, &["--encryption-provider-config", &plain]);
    let legacy = "migrated-plaintext-value-07bd";
    old.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "carried",
        &format!("--from-literal=v={legacy}"),
    ]);
    assert_eq!(old.stop().code(), Some(0));
    let out = Command::new(BIN)
        .arg("migrate")
        .arg("--data-dir")
        .arg(old.data_dir())
        .args(["--to", "etcd", "--etcd-servers", &target.endpoints_flag()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let raw = etcd_raw(&target, "/registry/secrets/default/carried");
    assert!(
        raw.starts_with(b"k8s:enc:secretbox:v1:key1:"),
        "migrate seals plaintext"
    );
    assert!(!contains(&raw, b64(legacy.as_bytes()).as_bytes()));
    let args = etcd_args(&target);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    old.restart_with(&args);
    assert_eq!(secret_value(&old, "carried", "v"), legacy);
}
