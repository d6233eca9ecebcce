//! The everyday kubectl workflow: apply and re-apply, diff, edit, create generators, output
//! formats, describe.

use crate::server;

const CM_V1: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: default\n  labels:\n    app: web\n    tier: front\ndata:\n  a: \"1\"\n  b: \"2\"\n";
const CM_V2: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: default\n  labels:\n    app: web\ndata:\n  a: \"1\"\n";

#[test]
fn apply_reapply_removes_dropped_fields_and_diff() {
    let s = server();
    let out = s.kubectl_with_stdin(&["apply", "-f", "-"], Some(CM_V1));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("configmap/settings created"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let annotation = s.kubectl_ok(&[
        "get",
        "cm",
        "settings",
        "-o",
        "jsonpath={.metadata.annotations.kubectl\\.kubernetes\\.io/last-applied-configuration}",
    ]);
    assert!(annotation.contains("\"tier\":\"front\""), "{annotation}");
    let same = s.kubectl_with_stdin(&["apply", "-f", "-"], Some(CM_V1));
    assert!(String::from_utf8_lossy(&same.stdout).contains("unchanged"));
    // kubectl diff shows what a re-apply would change and exits 1.
    let diff = s.kubectl_with_stdin(&["diff", "-f", "-"], Some(CM_V2));
    assert_eq!(
        diff.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&diff.stderr)
    );
    let text = String::from_utf8_lossy(&diff.stdout);
    assert!(
        text.contains("-  b: \"2\"") && text.contains("-    tier: front"),
        "{text}"
    );
    let out = s.kubectl_with_stdin(&["apply", "-f", "-"], Some(CM_V2));
    assert!(String::from_utf8_lossy(&out.stdout).contains("configured"));
    let cm: serde_json::Value =
        serde_json::from_str(&s.kubectl_ok(&["get", "cm", "settings", "-o", "json"])).unwrap();
    assert!(cm["data"].get("b").is_none(), "{cm}");
    assert!(cm["metadata"]["labels"].get("tier").is_none(), "{cm}");
    assert_eq!(cm["data"]["a"], "1");
    let out = s.kubectl_with_stdin(&["delete", "-f", "-"], Some(CM_V2));
    assert!(String::from_utf8_lossy(&out.stdout).contains("deleted"));
}

#[test]
fn edit_through_an_editor_script() {
    let s = server();
    s.kubectl_ok(&["create", "sa", "edited", "-n", "default"]);
    let dir = tempfile::tempdir().unwrap();
    let editor = dir.path().join("editor.sh");
    std::fs::write(
        &editor,
        "#!/bin/sh\nsed -i 's/^  name: edited$/  name: edited\\n  labels:\\n    edited: \"yes\"/' \"$1\"\n",
    )
    .unwrap();
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&editor)
        .status()
        .unwrap();
    let out = std::process::Command::new(badge_testkit::kubectl_path())
        .arg("--kubeconfig")
        .arg(s.kubeconfig())
        .args(["edit", "sa", "edited", "-n", "default"])
        .env("EDITOR", &editor)
        .env("KUBE_EDITOR", &editor)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let label = s.kubectl_ok(&[
        "get",
        "sa",
        "edited",
        "-n",
        "default",
        "-o",
        "jsonpath={.metadata.labels.edited}",
    ]);
    assert_eq!(label, "yes");
}

#[test]
fn create_generators_and_output_formats() {
    let s = server();
    let cert = format!("--cert={}", s.data_dir().join("pki/apiserver.crt").display());
    let keyp = format!("--key={}", s.data_dir().join("pki/apiserver.key").display());
    for args in [
        vec!["create", "secret", "tls", "web-tls", cert.as_str(), keyp.as_str()],
        vec![
            "create",
            "configmap",
            "cfg",
            "--from-literal=k=v",
            "--from-literal=x=y",
        ],
        vec![
            "create",
            "clusterrole",
            "reader",
            "--verb=get",
            "--resource=configmaps",
        ],
        vec![
            "create",
            "clusterrolebinding",
            "reader",
            "--clusterrole=reader",
            "--user=alice",
        ],
        vec![
            "create",
            "rolebinding",
            "reader",
            "--clusterrole=reader",
            "--group=devs",
        ],
    ] {
        s.kubectl_ok(&args);
    }
    assert_eq!(
        s.kubectl_ok(&["get", "secret", "web-tls", "-o", "jsonpath={.type}"]),
        "kubernetes.io/tls"
    );
    let cm_table = s.kubectl_ok(&["get", "cm", "cfg"]);
    assert!(
        cm_table.lines().nth(1).unwrap().split_whitespace().nth(1) == Some("2"),
        "{cm_table}"
    );
    let names = s.kubectl_ok(&["get", "cm", "-o", "name"]);
    assert!(names.contains("configmap/cfg"));
    let columns = s.kubectl_ok(&[
        "get",
        "cm",
        "cfg",
        "-o",
        "custom-columns=NAME:.metadata.name,K:.data.k",
    ]);
    assert_eq!(
        columns
            .lines()
            .nth(1)
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        vec!["cfg", "v"]
    );
    s.kubectl_ok(&["label", "cm", "cfg", "team=id"]);
    let labels = s.kubectl_ok(&["get", "cm", "cfg", "--show-labels"]);
    assert!(labels.contains("team=id"), "{labels}");
    let all = s.kubectl_ok(&["get", "cm", "-A"]);
    assert!(
        all.starts_with("NAMESPACE") && all.contains("kube-system"),
        "{all}"
    );
    let wide = s.kubectl_ok(&["get", "rolebinding", "reader", "-o", "wide"]);
    assert!(
        wide.contains("ClusterRole/reader") && wide.contains("devs"),
        "{wide}"
    );
    let crb = s.kubectl_ok(&["describe", "clusterrolebinding", "reader"]);
    assert!(crb.contains("alice") && crb.contains("ClusterRole"), "{crb}");
    let role = s.kubectl_ok(&["describe", "clusterrole", "reader"]);
    assert!(role.contains("configmaps") && role.contains("[get]"), "{role}");
    let secret = s.kubectl_ok(&["describe", "secret", "web-tls"]);
    assert!(
        secret.contains("tls.crt:") && secret.contains("bytes") && !secret.contains("BEGIN"),
        "{secret}"
    );
    let ns = s.kubectl_ok(&["describe", "ns", "default"]);
    assert!(ns.contains("Status:") && ns.contains("Active"), "{ns}");
}

#[test]
fn pods_are_stored_and_described() {
    let s = server();
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: c\n    image: busybox\n";
    let out = s.kubectl_with_stdin(&["apply", "-f", "-"], Some(pod));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let table = s.kubectl_ok(&["get", "pods"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, vec!["NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
    assert!(table.contains("0/1") && table.contains("Pending"), "{table}");
    let describe = s.kubectl_ok(&["describe", "pod", "web"]);
    assert!(
        describe.contains("busybox") && describe.contains("Pending"),
        "{describe}"
    );
    let unknown = s.kubectl_with_stdin(
        &["apply", "-f", "-"],
        Some(&pod.replace("image: busybox", "image: busybox\n    bogus: 1")),
    );
    assert!(!unknown.status.success());
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("unknown field"),
        "{}",
        String::from_utf8_lossy(&unknown.stderr)
    );
    let warn = s.kubectl_with_stdin(
        &["apply", "--validate=warn", "-f", "-"],
        Some(
            &pod.replace("name: web", "name: web2")
                .replace("image: busybox", "image: busybox\n    bogus: 1"),
        ),
    );
    assert!(warn.status.success(), "{}", String::from_utf8_lossy(&warn.stderr));
    assert!(
        String::from_utf8_lossy(&warn.stderr).contains("unknown field"),
        "{}",
        String::from_utf8_lossy(&warn.stderr)
    );
}

#[test]
fn server_side_apply_with_managers_and_conflicts() {
    let s = server();
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\n  namespace: default\ndata:\n  a: \"1\"\n  b: \"2\"\n";
    let out = s.kubectl_with_stdin(&["apply", "--server-side", "-f", "-"], Some(cm));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("serverside-applied"));
    let managers = s.kubectl_ok(&[
        "get",
        "cm",
        "ssa",
        "--show-managed-fields",
        "-o",
        "jsonpath={.metadata.managedFields[*].manager}",
    ]);
    assert_eq!(managers, "kubectl");
    // Dropping a field from the applied configuration removes it.
    let out = s.kubectl_with_stdin(
        &["apply", "--server-side", "-f", "-"],
        Some(&cm.replace("  b: \"2\"\n", "")),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let data = s.kubectl_ok(&["get", "cm", "ssa", "-o", "jsonpath={.data}"]);
    assert_eq!(data, r#"{"a":"1"}"#);
    // Another manager setting the same field differently conflicts...
    let other = cm.replace("  a: \"1\"\n  b: \"2\"\n", "  a: \"9\"\n");
    let conflict = s.kubectl_with_stdin(
        &["apply", "--server-side", "--field-manager=other", "-f", "-"],
        Some(&other),
    );
    assert!(!conflict.status.success());
    let err = String::from_utf8_lossy(&conflict.stderr);
    assert!(
        err.contains("Apply failed with 1 conflict: conflict with \"kubectl\"") && err.contains(".data.a"),
        "{err}"
    );
    assert_eq!(
        s.kubectl_ok(&["get", "cm", "ssa", "-o", "jsonpath={.data.a}"]),
        "1",
        "nothing changed"
    );
    // ...until forced, which moves ownership.
    let forced = s.kubectl_with_stdin(
        &[
            "apply",
            "--server-side",
            "--field-manager=other",
            "--force-conflicts",
            "-f",
            "-",
        ],
        Some(&other),
    );
    assert!(
        forced.status.success(),
        "{}",
        String::from_utf8_lossy(&forced.stderr)
    );
    assert_eq!(
        s.kubectl_ok(&["get", "cm", "ssa", "-o", "jsonpath={.data.a}"]),
        "9"
    );
    // Server-side diff and dry run.
    let diff = s.kubectl_with_stdin(
        &["diff", "--server-side", "--field-manager=other", "-f", "-"],
        Some(&other.replace("\"9\"", "\"10\"")),
    );
    assert_eq!(
        diff.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&diff.stderr)
    );
    assert_eq!(
        s.kubectl_ok(&["get", "cm", "ssa", "-o", "jsonpath={.data.a}"]),
        "9"
    );
    // Creating through apply works for a missing object.
    let sa = "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: applied-sa\n  namespace: default\n";
    let out = s.kubectl_with_stdin(&["apply", "--server-side", "-f", "-"], Some(sa));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    s.kubectl_ok(&["get", "sa", "applied-sa"]);
}

#[test]
fn version_resources_dry_runs_and_watch_only() {
    let s = server();
    let version: serde_json::Value = serde_json::from_str(&s.kubectl_ok(&["version", "-o", "json"])).unwrap();
    assert_eq!(version["serverVersion"]["gitVersion"], "v1.35.0");
    let wide = s.kubectl_ok(&["api-resources", "-o", "wide"]);
    let sa = wide.lines().find(|l| l.starts_with("serviceaccounts ")).unwrap();
    assert!(
        sa.contains("create,delete,deletecollection,get,list,patch,update,watch"),
        "{sa}"
    );
    s.kubectl_ok(&["create", "sa", "dry"]);
    let patched = s.kubectl_ok(&[
        "patch",
        "sa",
        "dry",
        "--dry-run=server",
        "-p",
        r#"{"metadata":{"labels":{"x":"y"}}}"#,
    ]);
    assert!(patched.contains("patched"), "{patched}");
    assert_eq!(
        s.kubectl_ok(&["get", "sa", "dry", "-o", "jsonpath={.metadata.labels}"]),
        ""
    );
    let deleted = s.kubectl_ok(&["delete", "sa", "dry", "--dry-run=server"]);
    assert!(deleted.contains("(server dry run)"), "{deleted}");
    s.kubectl_ok(&["get", "sa", "dry"]);
    // --validate=false drops unknown fields instead of refusing them.
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: loose\ndata:\n  a: \"1\"\nbogus: true\n";
    let out = s.kubectl_with_stdin(&["apply", "--validate=false", "-f", "-"], Some(cm));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stored: serde_json::Value =
        serde_json::from_str(&s.kubectl_ok(&["get", "cm", "loose", "-o", "json"])).unwrap();
    assert!(stored.get("bogus").is_none(), "{stored}");
    // --watch-only prints changes, not the current state. At -v=6 kubectl logs each response
    // as it arrives: once the watch's has, anything created is a change the watch delivers.
    let mut child = std::process::Command::new(badge_testkit::kubectl_path())
        .arg("--kubeconfig")
        .arg(s.kubeconfig())
        .args(["get", "sa", "--watch-only", "-o", "name", "-v=6"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let (watching_tx, watching) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("watch=true") && line.contains("200 OK") {
                let _ = watching_tx.send(());
            }
        }
    });
    watching
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("kubectl's watch was never answered");
    s.kubectl_ok(&["create", "sa", "fresh"]);
    let first = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
    assert_eq!(first, "serviceaccount/fresh", "existing objects are not listed");
    let _ = child.kill();
    let _ = child.wait();
}
