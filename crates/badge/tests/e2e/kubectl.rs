//! kubectl workflows against a real server.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::{eventually, server};

#[test]
fn system_namespaces_default_serviceaccounts_and_root_ca() {
    let s = server();
    let ns = s.kubectl_ok(&["get", "namespaces", "-o", "name"]);
    for want in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(ns.contains(&format!("namespace/{want}")), "{ns}");
    }
    let table = s.kubectl_ok(&["get", "namespaces"]);
    assert!(
        table.starts_with("NAME") && table.contains("STATUS") && table.contains("Active"),
        "{table}"
    );
    eventually("default ServiceAccounts and kube-root-ca.crt", || {
        let sa = s.kubectl_ok(&["get", "sa", "-A", "-o", "name"]);
        let cm = s.kubectl_ok(&[
            "get",
            "cm",
            "kube-root-ca.crt",
            "-n",
            "kube-public",
            "--ignore-not-found",
            "-o",
            "name",
        ]);
        sa.matches("serviceaccount/default").count() == 4 && !cm.is_empty()
    });
    // Controllers run under the controller lease, which this server holds.
    let holder = s.kubectl_ok(&[
        "get",
        "lease",
        "badge-controller-manager",
        "-n",
        "kube-system",
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    assert!(!holder.is_empty());
    let ca = s.kubectl_ok(&[
        "get",
        "cm",
        "kube-root-ca.crt",
        "-n",
        "default",
        "-o",
        "jsonpath={.data.ca\\.crt}",
    ]);
    let on_disk = std::fs::read_to_string(s.data_dir().join("pki/ca.crt")).unwrap();
    assert_eq!(ca.trim(), on_disk.trim());
}

#[test]
fn create_get_list_and_delete_serviceaccounts() {
    let s = server();
    assert_eq!(
        s.kubectl_ok(&["create", "namespace", "demo"]).trim(),
        "namespace/demo created"
    );
    assert_eq!(
        s.kubectl_ok(&["create", "serviceaccount", "dash", "-n", "demo"])
            .trim(),
        "serviceaccount/dash created"
    );
    let table = s.kubectl_ok(&["get", "sa", "-n", "demo"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, vec!["NAME", "SECRETS", "AGE"]);
    assert!(table.lines().any(|l| l.starts_with("dash ")), "{table}");

    let yaml = s.kubectl_ok(&["get", "sa", "dash", "-n", "demo", "-o", "yaml"]);
    assert!(
        yaml.contains("kind: ServiceAccount") && yaml.contains("name: dash") && yaml.contains("uid: "),
        "{yaml}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&s.kubectl_ok(&["get", "sa", "dash", "-n", "demo", "-o", "json"])).unwrap();
    assert_eq!(json["metadata"]["namespace"], "demo");
    let uid = s.kubectl_ok(&[
        "get",
        "sa",
        "dash",
        "-n",
        "demo",
        "-o",
        "jsonpath={.metadata.uid}",
    ]);
    assert_eq!(uid, json["metadata"]["uid"].as_str().unwrap());

    let again = s.kubectl_err(&["create", "serviceaccount", "dash", "-n", "demo"]);
    assert!(
        again.contains("serviceaccounts \"dash\" already exists"),
        "{again}"
    );
    let missing = s.kubectl_err(&["get", "sa", "nope", "-n", "demo"]);
    assert!(
        missing.contains("Error from server (NotFound): serviceaccounts \"nope\" not found"),
        "{missing}"
    );
    let bad = s.kubectl_err(&["create", "serviceaccount", "Bad_Name", "-n", "demo"]);
    assert!(
        bad.contains("ServiceAccount \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\""),
        "{bad}"
    );

    assert!(
        s.kubectl_ok(&["delete", "sa", "dash", "-n", "demo"])
            .contains("deleted")
    );
    let gone = s.kubectl_err(&["get", "sa", "dash", "-n", "demo"]);
    assert!(gone.contains("NotFound"), "{gone}");
}

#[test]
fn label_and_field_selectors() {
    let s = server();
    s.kubectl_ok(&["create", "sa", "a", "-n", "default"]);
    s.kubectl_ok(&["create", "sa", "b", "-n", "default"]);
    s.kubectl_ok(&["label", "sa", "a", "-n", "default", "app=web"]);
    let web = s.kubectl_ok(&["get", "sa", "-n", "default", "-l", "app=web", "-o", "name"]);
    assert_eq!(web.trim(), "serviceaccount/a");
    let not_web = s.kubectl_ok(&["get", "sa", "-n", "default", "-l", "app!=web", "-o", "name"]);
    assert!(
        not_web.contains("serviceaccount/b") && !not_web.contains("serviceaccount/a"),
        "{not_web}"
    );
    let by_name = s.kubectl_ok(&[
        "get",
        "sa",
        "-A",
        "--field-selector",
        "metadata.name=b",
        "-o",
        "name",
    ]);
    assert_eq!(by_name.trim(), "serviceaccount/b");
    s.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "g",
        "--from-literal=k=v",
        "-n",
        "default",
    ]);
    s.kubectl_ok(&[
        "create",
        "secret",
        "docker-registry",
        "reg",
        "--docker-server=r.example",
        "--docker-username=u",
        "--docker-password=p",
        "-n",
        "default",
    ]);
    let opaque = s.kubectl_ok(&[
        "get",
        "secrets",
        "-n",
        "default",
        "--field-selector",
        "type=Opaque",
        "-o",
        "name",
    ]);
    assert_eq!(opaque.trim(), "secret/g");
    let secrets = s.kubectl_ok(&["get", "secrets", "-n", "default"]);
    let header: Vec<&str> = secrets.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, vec!["NAME", "TYPE", "DATA", "AGE"]);
    assert!(secrets.contains("kubernetes.io/dockerconfigjson"), "{secrets}");
    let bad = s.kubectl_err(&["get", "sa", "--field-selector", "spec.bogus=1"]);
    assert!(bad.contains("field label not supported: spec.bogus"), "{bad}");
}

#[test]
fn watch_sees_changes() {
    let s = server();
    let mut child = Command::new(badge_testkit::kubectl_path())
        .arg("--kubeconfig")
        .arg(s.kubeconfig())
        .args(["get", "sa", "-n", "default", "-w", "-o", "name"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let first = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
    assert_eq!(first, "serviceaccount/default");
    s.kubectl_ok(&["create", "sa", "watched", "-n", "default"]);
    let added = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
    assert_eq!(added, "serviceaccount/watched");
    s.kubectl_ok(&["delete", "sa", "watched", "-n", "default"]);
    let deleted = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
    assert_eq!(deleted, "serviceaccount/watched");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn describe_api_resources_and_explain() {
    let s = server();
    s.kubectl_ok(&["create", "sa", "dash", "-n", "default"]);
    let describe = s.kubectl_ok(&["describe", "sa", "dash", "-n", "default"]);
    assert!(
        describe.contains("Name:") && describe.contains("dash") && describe.contains("Namespace:"),
        "{describe}"
    );
    let resources = s.kubectl_ok(&["api-resources"]);
    let sa_line = resources
        .lines()
        .find(|l| l.starts_with("serviceaccounts "))
        .unwrap();
    let cols: Vec<&str> = sa_line.split_whitespace().collect();
    assert_eq!(
        cols,
        vec!["serviceaccounts", "sa", "v1", "true", "ServiceAccount"]
    );
    let explain = s.kubectl_ok(&["explain", "serviceaccount"]);
    assert!(
        explain.contains("KIND:       ServiceAccount") && explain.contains("automountServiceAccountToken"),
        "{explain}"
    );
    let field = s.kubectl_ok(&["explain", "serviceaccount.secrets"]);
    assert!(field.contains("FIELD: secrets"), "{field}");
    let versions = s.kubectl_ok(&["api-versions"]);
    assert!(
        versions.lines().any(|l| l == "v1") && versions.contains("rbac.authorization.k8s.io/v1"),
        "{versions}"
    );
}

#[test]
fn namespace_deletion_removes_content() {
    let s = server();
    s.kubectl_ok(&["create", "ns", "doomed"]);
    s.kubectl_ok(&["create", "sa", "x", "-n", "doomed"]);
    s.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "s",
        "--from-literal=a=b",
        "-n",
        "doomed",
    ]);
    let out = s.kubectl_ok(&["delete", "ns", "doomed", "--timeout=20s"]);
    assert!(out.contains("namespace \"doomed\" deleted"), "{out}");
    assert!(s.kubectl_err(&["get", "ns", "doomed"]).contains("NotFound"));
    let left = s.kubectl_ok(&["get", "sa,secrets,cm", "-n", "doomed", "-o", "name"]);
    assert!(left.trim().is_empty(), "{left}");
    let missing = s.kubectl_err(&["create", "sa", "y", "-n", "nowhere"]);
    assert!(missing.contains("namespaces \"nowhere\" not found"), "{missing}");
    // The default ServiceAccount comes back when deleted.
    s.kubectl_ok(&["delete", "sa", "default", "-n", "default"]);
    eventually("the default ServiceAccount to be recreated", || {
        s.kubectl(&["get", "sa", "default", "-n", "default"])
            .status
            .success()
    });
}

#[test]
fn restart_keeps_everything() {
    let mut s = server();
    s.kubectl_ok(&["create", "ns", "keep"]);
    s.kubectl_ok(&["create", "sa", "kept", "-n", "keep"]);
    let uid = s.kubectl_ok(&[
        "get",
        "sa",
        "kept",
        "-n",
        "keep",
        "-o",
        "jsonpath={.metadata.uid}",
    ]);
    let ca_before = std::fs::read(s.data_dir().join("pki/ca.crt")).unwrap();
    s.restart();
    let after = s.kubectl_ok(&[
        "get",
        "sa",
        "kept",
        "-n",
        "keep",
        "-o",
        "jsonpath={.metadata.uid}",
    ]);
    assert_eq!(uid, after);
    assert_eq!(ca_before, std::fs::read(s.data_dir().join("pki/ca.crt")).unwrap());
    // Killed without warning, acknowledged writes survive too.
    s.kubectl_ok(&["create", "sa", "acked", "-n", "keep"]);
    s.kill();
    s.restart();
    assert!(s.kubectl(&["get", "sa", "acked", "-n", "keep"]).status.success());
}

#[test]
fn sigterm_exits_cleanly() {
    let mut s = server();
    let status = s.stop();
    assert!(status.success(), "{status}");
    let log = s.log.lock().unwrap().join("\n");
    assert!(log.contains("admin kubeconfig written"), "{log}");
}

#[test]
fn dry_run_and_patch() {
    let s = server();
    let out = s.kubectl_ok(&["create", "sa", "ghost", "-n", "default", "--dry-run=server"]);
    assert!(
        out.contains("serviceaccount/ghost created (server dry run)"),
        "{out}"
    );
    assert!(
        s.kubectl_err(&["get", "sa", "ghost", "-n", "default"])
            .contains("NotFound")
    );
    s.kubectl_ok(&["create", "sa", "p", "-n", "default"]);
    s.kubectl_ok(&[
        "patch",
        "sa",
        "p",
        "-n",
        "default",
        "--type=merge",
        "-p",
        r#"{"automountServiceAccountToken":false}"#,
    ]);
    let v = s.kubectl_ok(&[
        "get",
        "sa",
        "p",
        "-n",
        "default",
        "-o",
        "jsonpath={.automountServiceAccountToken}",
    ]);
    assert_eq!(v, "false");
    s.kubectl_ok(&["annotate", "sa", "p", "-n", "default", "team=id"]);
    let a = s.kubectl_ok(&[
        "get",
        "sa",
        "p",
        "-n",
        "default",
        "-o",
        "jsonpath={.metadata.annotations.team}",
    ]);
    assert_eq!(a, "id");
    let manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\n  namespace: default\ndata:\n  a: \"1\"\n";
    let out = s.kubectl_with_stdin(&["apply", "-f", "-"], Some(manifest));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let data = s.kubectl_ok(&[
        "get",
        "cm",
        "applied",
        "-n",
        "default",
        "-o",
        "jsonpath={.data.a}",
    ]);
    assert_eq!(data, "1");
}

#[test]
fn finalizers_hold_a_terminating_namespace() {
    let s = server();
    s.kubectl_ok(&["create", "ns", "held"]);
    let held = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: held\n  namespace: held\n  finalizers: [\"example.com/hold\"]\n";
    let out = s.kubectl_with_stdin(&["create", "-f", "-"], Some(held));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    s.kubectl_ok(&["delete", "ns", "held", "--wait=false"]);
    eventually(
        "the namespace to be Terminating with only the held ConfigMap left",
        || {
            let phase = s.kubectl_ok(&["get", "ns", "held", "-o", "jsonpath={.status.phase}"]);
            let left = s.kubectl_ok(&["get", "cm", "-n", "held", "-o", "name"]);
            phase == "Terminating" && left.trim() == "configmap/held"
        },
    );
    let refused = s.kubectl_err(&["create", "sa", "late", "-n", "held"]);
    assert!(
        refused.contains("unable to create new content in namespace held because it is being terminated"),
        "{refused}"
    );
    let ts = s.kubectl_ok(&[
        "get",
        "cm",
        "held",
        "-n",
        "held",
        "-o",
        "jsonpath={.metadata.deletionTimestamp}",
    ]);
    assert!(!ts.is_empty(), "the held ConfigMap is marked for deletion");
    s.kubectl_ok(&[
        "patch",
        "cm",
        "held",
        "-n",
        "held",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    eventually("the namespace to be gone", || {
        !s.kubectl(&["get", "ns", "held"]).status.success()
    });
}

#[test]
fn every_patch_type() {
    let s = server();
    s.kubectl_ok(&["create", "sa", "p", "-n", "default"]);
    // Strategic merge (kubectl's default): secrets merge by name.
    s.kubectl_ok(&[
        "patch",
        "sa",
        "p",
        "-n",
        "default",
        "-p",
        r#"{"secrets":[{"name":"a"}]}"#,
    ]);
    s.kubectl_ok(&[
        "patch",
        "sa",
        "p",
        "-n",
        "default",
        "-p",
        r#"{"secrets":[{"name":"b"}]}"#,
    ]);
    let secrets = s.kubectl_ok(&[
        "get",
        "sa",
        "p",
        "-n",
        "default",
        "-o",
        "jsonpath={.secrets[*].name}",
    ]);
    assert_eq!(secrets, "b a");
    // JSON patch with a test op.
    s.kubectl_ok(&[
        "patch",
        "sa",
        "p",
        "-n",
        "default",
        "--type=json",
        "-p",
        r#"[{"op":"test","path":"/secrets/0/name","value":"b"},{"op":"remove","path":"/secrets/0"}]"#,
    ]);
    let secrets = s.kubectl_ok(&[
        "get",
        "sa",
        "p",
        "-n",
        "default",
        "-o",
        "jsonpath={.secrets[*].name}",
    ]);
    assert_eq!(secrets, "a");
    let failed = s.kubectl_err(&[
        "patch",
        "sa",
        "p",
        "-n",
        "default",
        "--type=json",
        "-p",
        r#"[{"op":"test","path":"/secrets/0/name","value":"zzz"}]"#,
    ]);
    assert!(
        failed.contains("Invalid")
            || failed.contains("422")
            || failed.contains("the server rejected our request"),
        "{failed}"
    );
    // Merge patch removing the list.
    s.kubectl_ok(&[
        "patch",
        "sa",
        "p",
        "-n",
        "default",
        "--type=merge",
        "-p",
        r#"{"secrets":null}"#,
    ]);
    let secrets = s.kubectl_ok(&["get", "sa", "p", "-n", "default", "-o", "jsonpath={.secrets}"]);
    assert_eq!(secrets, "");
}
