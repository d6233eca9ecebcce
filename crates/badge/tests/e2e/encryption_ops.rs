//! Operating encryption at rest: `badge encryption status` and `rotate` carry Secrets from
//! one key to the next, and a server refuses key files others can read.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use badge_testkit::TestServer;
use badge_testkit::etcd::EtcdCluster;
use base64::Engine;

use crate::server;

const BIN: &str = env!("CARGO_BIN_EXE_badge");

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn secretbox(name: &str, secret: &str) -> String {
    format!(
        "      - secretbox:\n          keys:\n            - name: {name}\n              secret: {secret}\n"
    )
}

/// Writes an EncryptionConfiguration for Secrets, private as badge requires.
fn write_config(path: &Path, providers: &str) {
    let yaml = format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n{providers}"
    );
    std::fs::write(path, yaml).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// The secret of the first key in a configuration file.
fn first_secret(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .find_map(|l| l.trim().strip_prefix("secret: "))
        .unwrap()
        .to_string()
}

fn encryption(args: &[&str]) -> Output {
    Command::new(BIN).arg("encryption").args(args).output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn encryption_ok(args: &[&str]) -> String {
    let out = encryption(args);
    assert!(
        out.status.success(),
        "badge encryption {args:?}: {}",
        stderr(&out)
    );
    stdout(&out)
}

/// The `secrets` line of `badge encryption status`.
fn secrets_line(status: &str) -> String {
    status
        .lines()
        .find(|l| l.starts_with("secrets "))
        .unwrap_or_else(|| panic!("no secrets line in {status}"))
        .to_string()
}

fn secret_value(s: &TestServer, name: &str) -> String {
    let data = s.kubectl_ok(&["get", "secret", name, "-o", "jsonpath={.data.v}"]);
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .unwrap(),
    )
    .unwrap()
}

fn secret_count(s: &TestServer) -> usize {
    s.kubectl_ok(&["get", "secrets", "-A", "-o", "name"])
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count()
}

/// Runs `rotate --limit 2` until it reports done; returns how many runs that took.
fn rotate_in_runs_of_two(store: &[&str], total: usize) -> usize {
    let mut runs = 0;
    loop {
        runs += 1;
        assert!(runs <= total / 2 + 2, "rotate does not finish");
        let mut args = vec!["rotate", "--limit", "2"];
        args.extend_from_slice(store);
        let out = encryption_ok(&args);
        if out.contains("done:") {
            return runs;
        }
        assert!(
            out.contains("stopped after 2 objects (--limit); run again to continue"),
            "{out}"
        );
    }
}

#[test]
fn secrets_move_to_a_new_key_in_resumable_runs_and_the_old_key_can_go() {
    let mut s = server();
    let values: Vec<String> = (0..4).map(|i| format!("rotated-value-{i}-6c1f")).collect();
    for (i, value) in values.iter().enumerate() {
        s.kubectl_ok(&[
            "create",
            "secret",
            "generic",
            &format!("s{i}"),
            &format!("--from-literal=v={value}"),
        ]);
    }
    let total = secret_count(&s);
    assert!(total >= 4);
    let data_dir = s.data_dir().display().to_string();
    let store = ["--data-dir", data_dir.as_str()];
    let status = encryption_ok(&["status", "--data-dir", &data_dir]);
    assert_eq!(
        secrets_line(&status),
        format!("secrets  secretbox/key1: {total} (current)")
    );

    // Upstream's order: the new key first, the old one still listed to read.
    s.stop();
    let config = s.data_dir().join("pki/encryption-config.yaml");
    let old = first_secret(&config);
    let new = b64(&[7u8; 32]);
    write_config(
        &config,
        &(secretbox("key2", &new) + &secretbox("key1", &old) + "      - identity: {}\n"),
    );
    s.restart();
    s.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "fresh",
        "--from-literal=v=written-under-key2",
    ]);
    let status = encryption_ok(&["status", "--data-dir", &data_dir]);
    assert_eq!(
        secrets_line(&status),
        format!("secrets  secretbox/key1: {total}  secretbox/key2: 1 (current)")
    );

    // A configuration without the old key cannot read those: status says so and fails.
    let dir = tempfile::tempdir().unwrap();
    let only_new = dir.path().join("only-new.yaml");
    write_config(&only_new, &secretbox("key2", &new));
    let out = encryption(&[
        "status",
        "--data-dir",
        &data_dir,
        "--encryption-provider-config",
        only_new.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!("{total} secrets under secretbox/key1")),
        "{}",
        stderr(&out)
    );

    // The embedded store is rewritten with its server stopped (its cache sees only its own
    // writes). Each run rewrites at most two; together they finish the job.
    s.stop();
    let runs = rotate_in_runs_of_two(&store, total);
    assert!(runs >= 2, "the limit stops a run");
    let status = encryption_ok(&["status", "--data-dir", &data_dir]);
    assert_eq!(
        secrets_line(&status),
        format!("secrets  secretbox/key2: {} (current)", total + 1)
    );
    let again = encryption_ok(&["rotate", "--data-dir", &data_dir]);
    assert!(
        again.contains(&format!("done: 0 rewritten, {} already current", total + 1)),
        "{again}"
    );

    // The old key goes; every Secret still reads.
    write_config(&config, &secretbox("key2", &new));
    s.restart();
    for (i, value) in values.iter().enumerate() {
        assert_eq!(&secret_value(&s, &format!("s{i}")), value);
    }
    assert_eq!(secret_value(&s, "fresh"), "written-under-key2");
    assert_eq!(secret_count(&s), total + 1);
    s.kubectl_ok(&["get", "secrets", "-A"]);
}

#[test]
fn rotate_runs_beside_a_server_on_etcd() {
    let etcd = EtcdCluster::start(1);
    let endpoints = etcd.endpoints_flag();
    let etcd_args = ["--storage", "etcd", "--etcd-servers", endpoints.as_str()];
    let mut s = TestServer::start_with(BIN, &etcd_args);
    for i in 0..3 {
        s.kubectl_ok(&[
            "create",
            "secret",
            "generic",
            &format!("e{i}"),
            &format!("--from-literal=v=etcd-value-{i}"),
        ]);
    }
    s.stop();
    let config = s.data_dir().join("pki/encryption-config.yaml");
    let old = first_secret(&config);
    let new = b64(&[9u8; 32]);
    write_config(&config, &(secretbox("key2", &new) + &secretbox("key1", &old)));
    s.restart();
    let total = secret_count(&s);

    let data_dir = s.data_dir().display().to_string();
    let mut store = vec!["--data-dir", data_dir.as_str()];
    store.extend_from_slice(&etcd_args);
    let mut status_args = vec!["status"];
    status_args.extend_from_slice(&store);
    assert_eq!(
        secrets_line(&encryption_ok(&status_args)),
        format!("secrets  secretbox/key1: {total}")
    );
    let mut rotate_args = vec!["rotate"];
    rotate_args.extend_from_slice(&store);
    let out = encryption_ok(&rotate_args);
    assert!(out.contains(&format!("done: {total} rewritten")), "{out}");
    assert_eq!(
        secrets_line(&encryption_ok(&status_args)),
        format!("secrets  secretbox/key2: {total} (current)")
    );

    // The serving server sees the rewrites as updates and goes on serving them.
    for i in 0..3 {
        assert_eq!(secret_value(&s, &format!("e{i}")), format!("etcd-value-{i}"));
    }
    s.kubectl_ok(&["label", "secret", "e0", "after=rotation"]);
    write_config(&config, &secretbox("key2", &new));
    s.restart();
    for i in 0..3 {
        assert_eq!(secret_value(&s, &format!("e{i}")), format!("etcd-value-{i}"));
    }
}

#[test]
fn a_server_refuses_an_encryption_configuration_others_can_read() {
    let mut s = server();
    s.stop();
    let config = s.data_dir().join("pki/encryption-config.yaml");
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut child = Command::new(BIN)
        .args(["server", "--secure-port", "0", "--data-dir"])
        .arg(s.data_dir())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Bounded: a server that starts anyway is killed and the test fails.
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let message = format!(
        "{} is readable by others (mode 0644); run chmod 600 {}",
        config.display(),
        config.display()
    );
    assert!(stderr(&out).contains(&message), "{}", stderr(&out));

    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    s.restart();
    assert!(s.is_running());
}
