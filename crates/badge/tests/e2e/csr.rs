//! CertificateSigningRequests end to end: a request made with openssl, created and approved
//! with kubectl, is signed by the cluster CA with the requested subject and authenticates
//! as it; a bootstrap token user's node client request is approved and signed with no admin;
//! requests for other signers stay pending and malformed ones are refused.

use std::path::Path;
use std::process::Command;

use badge_testkit::Credential::Admin;
use badge_testkit::TestServer;
use base64::Engine;
use serde_json::{Value, json};

use crate::{eventually, server};

const CSRS: &str = "/apis/certificates.k8s.io/v1/certificatesigningrequests";

/// A new P-256 key and a certificate request for `subject` (`/O=dev/CN=jane`), made by
/// openssl in `dir`; returns the request PEM.
fn openssl_request(dir: &Path, name: &str, subject: &str) -> String {
    let key = dir.join(format!("{name}.key"));
    let csr = dir.join(format!("{name}.csr"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&csr)
        .args(["-subj", subject])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl req: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(csr).unwrap()
}

/// Writes a CertificateSigningRequest manifest to `dir` and returns its path.
fn manifest(dir: &Path, name: &str, request_pem: &str, signer: &str, usages: &[&str]) -> String {
    let object = json!({
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"name": name},
        "spec": {
            "request": base64::engine::general_purpose::STANDARD.encode(request_pem),
            "signerName": signer,
            "usages": usages,
            "expirationSeconds": 3600,
        }
    });
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_vec(&object).unwrap()).unwrap();
    path.to_str().unwrap().to_string()
}

fn csr_json(s: &TestServer, name: &str) -> Value {
    serde_json::from_str(&s.kubectl_ok(&["get", "csr", name, "-o", "json"])).unwrap()
}

/// Waits for the certificate of `name` and writes it to `dir`/`name`.crt.
fn issued_certificate(s: &TestServer, dir: &Path, name: &str) -> std::path::PathBuf {
    let mut certificate = String::new();
    eventually(&format!("a certificate for {name}"), || {
        certificate = csr_json(s, name)["status"]["certificate"]
            .as_str()
            .unwrap_or("")
            .to_string();
        !certificate.is_empty()
    });
    let pem = base64::engine::general_purpose::STANDARD
        .decode(certificate)
        .unwrap();
    let path = dir.join(format!("{name}.crt"));
    std::fs::write(&path, pem).unwrap();
    path
}

fn openssl_ok(args: &[&str], files: &[&Path]) -> String {
    let out = Command::new("openssl").args(args).args(files).output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The row of `name` in `kubectl get csr`, split on whitespace, after checking the header.
fn table_row(s: &TestServer, name: &str) -> Vec<String> {
    let out = s.kubectl_ok(&["get", "csr", name]);
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        vec![
            "NAME",
            "AGE",
            "SIGNERNAME",
            "REQUESTOR",
            "REQUESTEDDURATION",
            "CONDITION"
        ]
    );
    lines
        .next()
        .unwrap()
        .split_whitespace()
        .map(String::from)
        .collect()
}

#[test]
fn kubectl_approves_and_the_signer_issues_the_requested_certificate() {
    let s = server();
    let dir = tempfile::tempdir().unwrap();
    let request = openssl_request(dir.path(), "jane", "/O=dev/CN=jane");
    let file = manifest(
        dir.path(),
        "jane",
        &request,
        "kubernetes.io/kube-apiserver-client",
        &["client auth"],
    );
    let out = s.kubectl_ok(&["create", "-f", &file]);
    assert_eq!(
        out.trim(),
        "certificatesigningrequest.certificates.k8s.io/jane created"
    );
    let row = table_row(&s, "jane");
    assert_eq!(row[0], "jane");
    assert_eq!(
        row[2..],
        [
            "kubernetes.io/kube-apiserver-client",
            "kubernetes-admin",
            "60m",
            "Pending"
        ]
    );
    // The server said who asked, whatever the manifest said.
    assert_eq!(
        csr_json(&s, "jane")["spec"]["groups"],
        json!(["system:masters", "system:authenticated"])
    );

    let out = s.kubectl_ok(&["certificate", "approve", "jane"]);
    assert_eq!(
        out.trim(),
        "certificatesigningrequest.certificates.k8s.io/jane approved"
    );
    let cert = issued_certificate(&s, dir.path(), "jane");
    let ca = s.data_dir().join("pki/ca.crt");
    let verified = openssl_ok(&["verify", "-CAfile", ca.to_str().unwrap()], &[&cert]);
    assert!(verified.contains(": OK"), "{verified}");
    let subject = openssl_ok(&["x509", "-noout", "-subject", "-in"], &[&cert]);
    assert!(
        subject.contains("O = dev") && subject.contains("CN = jane"),
        "{subject}"
    );
    let row = table_row(&s, "jane");
    assert_eq!(row.last().map(String::as_str), Some("Approved,Issued"));
    let conditions = &csr_json(&s, "jane")["status"]["conditions"];
    assert_eq!(conditions[0]["type"], "Approved");
    assert_eq!(conditions[0]["reason"], "KubectlApprove");

    // The certificate authenticates as its subject.
    let out = Command::new(badge_testkit::kubectl_path())
        .arg("--kubeconfig")
        .arg(s.credential_free_kubeconfig())
        .arg("--client-certificate")
        .arg(&cert)
        .arg("--client-key")
        .arg(dir.path().join("jane.key"))
        .args(["auth", "whoami", "-o", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let who: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(who["status"]["userInfo"]["username"], "jane");
    assert_eq!(
        who["status"]["userInfo"]["groups"],
        json!(["dev", "system:authenticated"])
    );
}

#[test]
fn kubectl_denies_and_nothing_is_issued() {
    let s = server();
    let dir = tempfile::tempdir().unwrap();
    let request = openssl_request(dir.path(), "nope", "/CN=nope");
    let file = manifest(
        dir.path(),
        "nope",
        &request,
        "kubernetes.io/kube-apiserver-client",
        &["client auth"],
    );
    s.kubectl_ok(&["create", "-f", &file]);
    let out = s.kubectl_ok(&["certificate", "deny", "nope"]);
    assert_eq!(
        out.trim(),
        "certificatesigningrequest.certificates.k8s.io/nope denied"
    );
    let row = table_row(&s, "nope");
    assert_eq!(row.last().map(String::as_str), Some("Denied"));
    // kubectl will not approve a denied request, and the server refuses it too.
    let err = s.kubectl_err(&["certificate", "approve", "nope"]);
    assert!(err.contains("is already Denied"), "{err}");
    let mut both = csr_json(&s, "nope");
    both["status"]["conditions"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "Approved", "status": "True"}));
    let r = s
        .request(
            "PUT",
            &format!("{CSRS}/nope/approval"),
            Some(serde_json::to_vec(&both).unwrap()),
            &[("content-type", "application/json")],
            Admin,
        )
        .unwrap();
    assert_eq!(r.status, 422, "{}", r.json());
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("Approved and Denied conditions are mutually exclusive"),
        "{}",
        r.json()
    );
    assert!(csr_json(&s, "nope")["status"].get("certificate").is_none());
}

#[test]
fn a_bootstrap_token_users_node_request_is_approved_and_signed() {
    let s = server();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_badge"))
        .args(["token", "create", "--data-dir"])
        .arg(s.data_dir())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let id = token.split_once('.').unwrap().0.to_string();

    // A request for a signer badge does not run stays pending.
    let other = openssl_request(dir.path(), "other", "/O=system:nodes/CN=system:node:n1");
    let file = manifest(dir.path(), "other", &other, "example.com/other", &["client auth"]);
    s.kubectl_ok(&["--token", &token, "create", "-f", &file]);

    let request = openssl_request(dir.path(), "n1", "/O=system:nodes/CN=system:node:n1");
    let file = manifest(
        dir.path(),
        "node-n1",
        &request,
        "kubernetes.io/kube-apiserver-client-kubelet",
        &["digital signature", "client auth"],
    );
    let out = s.kubectl_ok(&["--token", &token, "create", "-f", &file]);
    assert_eq!(
        out.trim(),
        "certificatesigningrequest.certificates.k8s.io/node-n1 created"
    );
    let cert = issued_certificate(&s, dir.path(), "node-n1");
    let ca = s.data_dir().join("pki/ca.crt");
    openssl_ok(&["verify", "-CAfile", ca.to_str().unwrap()], &[&cert]);
    let csr = csr_json(&s, "node-n1");
    assert_eq!(csr["spec"]["username"], format!("system:bootstrap:{id}"));
    assert_eq!(csr["status"]["conditions"][0]["reason"], "AutoApproved");
    assert_eq!(
        csr["status"]["conditions"][0]["message"],
        "Auto approving kubelet client certificate after SubjectAccessReview."
    );
    let row = table_row(&s, "other");
    assert_eq!(row.last().map(String::as_str), Some("Pending"));

    // A malformed request is refused.
    let mut bad = json!({"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
        "metadata": {"name": "bad"},
        "spec": {"request": base64::engine::general_purpose::STANDARD.encode("not a request"),
                 "signerName": "kubernetes.io/kube-apiserver-client-kubelet",
                 "usages": ["digital signature", "client auth"]}});
    let r = s
        .request(
            "POST",
            CSRS,
            Some(serde_json::to_vec(&bad).unwrap()),
            &[("content-type", "application/json")],
            Admin,
        )
        .unwrap();
    assert_eq!(r.status, 422, "{}", r.json());
    assert_eq!(r.json()["reason"], "Invalid");
    assert_eq!(r.json()["details"]["causes"][0]["field"], "spec.request");
    bad["spec"]["signerName"] = json!("kubernetes.io/legacy-unknown");
    let path = dir.path().join("bad.json");
    std::fs::write(&path, serde_json::to_vec(&bad).unwrap()).unwrap();
    let err = s.kubectl_err(&["create", "-f", path.to_str().unwrap()]);
    assert!(
        err.contains("the legacy signerName is not allowed via this API version"),
        "{err}"
    );
}
