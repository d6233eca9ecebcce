#![allow(clippy::unwrap_used)]

use super::*;

use rustls::ClientConfig;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_rustls::{TlsAcceptor, TlsConnector};

fn read(dir: &Path, name: &str) -> Vec<u8> {
    fs::read(dir.join(name)).unwrap()
}

fn mode(dir: &Path, name: &str) -> u32 {
    fs::metadata(dir.join(name)).unwrap().permissions().mode() & 0o777
}

fn sans_of(pem: &str) -> Vec<San> {
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    cert_sans(&cert).unwrap()
}

fn not_after_of(pem: &str) -> i64 {
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    cert.validity().not_after.timestamp()
}

const ALL_FILES: [&str; 6] = [
    CA_CERT_FILE,
    CA_KEY_FILE,
    APISERVER_CERT_FILE,
    APISERVER_KEY_FILE,
    ADMIN_CERT_FILE,
    ADMIN_KEY_FILE,
];

#[test]
fn create_then_reload_reuses_everything() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki");
    let first = Pki::load_or_create(&dir, &[]).unwrap();
    let before: Vec<Vec<u8>> = ALL_FILES.iter().map(|f| read(&dir, f)).collect();

    let second = Pki::load_or_create(&dir, &[]).unwrap();
    let after: Vec<Vec<u8>> = ALL_FILES.iter().map(|f| read(&dir, f)).collect();
    assert_eq!(before, after);
    assert_eq!(first.ca_pem(), second.ca_pem());
    assert_eq!(first.serving_cert_pem(), second.serving_cert_pem());
    assert_eq!(first.admin().cert_pem, second.admin().cert_pem);
    assert_eq!(first.ca_pem().as_bytes(), read(&dir, CA_CERT_FILE));
    // Nothing but the six files (no leftover temporaries).
    assert_eq!(fs::read_dir(&dir).unwrap().count(), ALL_FILES.len());
}

#[test]
fn file_modes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    Pki::load_or_create(dir, &[]).unwrap();
    for key in [CA_KEY_FILE, APISERVER_KEY_FILE, ADMIN_KEY_FILE] {
        assert_eq!(mode(dir, key), 0o600, "{key}");
        let pem = String::from_utf8(read(dir, key)).unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "{key} is PKCS#8");
    }
    for cert in [CA_CERT_FILE, APISERVER_CERT_FILE, ADMIN_CERT_FILE] {
        assert_eq!(mode(dir, cert), 0o644, "{cert}");
    }
}

#[test]
fn a_new_pki_dir_is_private() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki");
    let pki = Pki::load_or_create(&dir, &[]).unwrap();
    assert_eq!(mode(tmp.path(), "pki"), 0o700);
    pki.keyring_seal_key().unwrap();
    assert_eq!(mode(&dir, KEYRING_SEAL_FILE), 0o600);
}

#[test]
fn ca_is_a_ten_year_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::load_or_create(tmp.path(), &[]).unwrap();
    let (_, ca) = x509_parser::parse_x509_certificate(pki.ca_der()).unwrap();
    let cn = ca.subject().iter_common_name().next().unwrap().as_str().unwrap();
    assert_eq!(cn, CA_COMMON_NAME);
    assert!(ca.is_ca());
    let years = (ca.validity().not_after.timestamp() - unix_now() as i64) / (365 * DAY as i64);
    assert!((9..=10).contains(&years), "{years}");
}

#[test]
fn serving_cert_has_default_and_extra_sans() {
    let tmp = tempfile::tempdir().unwrap();
    let extra = vec![
        "192.0.2.10".to_string(),
        "Badge.Example.com".to_string(),
        "[2001:db8::1]".to_string(),
        "0.0.0.0".to_string(),
    ];
    let pki = Pki::load_or_create(tmp.path(), &extra).unwrap();
    let sans = sans_of(pki.serving_cert_pem());
    for dns in DEFAULT_SANS.iter().filter(|s| s.parse::<IpAddr>().is_err()) {
        assert!(sans.contains(&San::Dns((*dns).into())), "{dns}");
    }
    for ip in ["127.0.0.1", "::1", "192.0.2.10", "2001:db8::1"] {
        assert!(sans.contains(&San::Ip(ip.parse().unwrap())), "{ip}");
    }
    assert!(sans.contains(&San::Dns("badge.example.com".into())));
    // The unspecified bind address is not a SAN.
    assert!(!sans.contains(&San::Ip("0.0.0.0".parse().unwrap())));
    let days = (not_after_of(pki.serving_cert_pem()) - unix_now() as i64) / DAY as i64;
    assert!((364..=365).contains(&days), "{days}");
}

#[test]
fn invalid_san_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let err = Pki::load_or_create(tmp.path(), &["not a name".into()]).unwrap_err();
    assert!(matches!(err, PkiError::InvalidSan(_)), "{err}");
}

#[test]
fn new_san_reissues_only_the_serving_cert() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    Pki::load_or_create(dir, &["192.0.2.1".into()]).unwrap();
    let ca = read(dir, CA_CERT_FILE);
    let ca_key = read(dir, CA_KEY_FILE);
    let serving = read(dir, APISERVER_CERT_FILE);
    let admin = read(dir, ADMIN_CERT_FILE);

    // A SAN already present (in another spelling) changes nothing.
    Pki::load_or_create(dir, &["LOCALHOST".into(), "192.0.2.1".into()]).unwrap();
    assert_eq!(read(dir, APISERVER_CERT_FILE), serving);

    let pki = Pki::load_or_create(dir, &["new.example.com".into()]).unwrap();
    assert_eq!(read(dir, CA_CERT_FILE), ca);
    assert_eq!(read(dir, CA_KEY_FILE), ca_key);
    assert_eq!(read(dir, ADMIN_CERT_FILE), admin);
    assert_ne!(read(dir, APISERVER_CERT_FILE), serving);
    let sans = sans_of(pki.serving_cert_pem());
    assert!(sans.contains(&San::Dns("new.example.com".into())));
    assert_eq!(mode(dir, APISERVER_KEY_FILE), 0o600);
    assert_eq!(mode(dir, APISERVER_CERT_FILE), 0o644);
}

#[test]
fn expiring_serving_cert_is_reissued() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = Pki::load_or_create(dir, &[]).unwrap();
    let ca = read(dir, CA_CERT_FILE);
    let now = unix_now();
    let mut params = serving_params(&serving_sans(&[]).unwrap(), now).unwrap();
    set_validity(&mut params, now, Duration::from_secs(10 * DAY));
    let short = pki.sign(params).unwrap();
    write_pair(
        &(dir.join(APISERVER_CERT_FILE), dir.join(APISERVER_KEY_FILE)),
        &short,
    )
    .unwrap();

    let pki = Pki::load_or_create(dir, &[]).unwrap();
    assert_ne!(pki.serving_cert_pem(), short.cert_pem);
    assert!(not_after_of(pki.serving_cert_pem()) > (now + 300 * DAY) as i64);
    assert_eq!(read(dir, CA_CERT_FILE), ca);
}

#[test]
fn serving_cert_from_another_ca_is_reissued() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    Pki::load_or_create(&a, &[]).unwrap();
    Pki::load_or_create(&b, &[]).unwrap();
    for f in [
        APISERVER_CERT_FILE,
        APISERVER_KEY_FILE,
        ADMIN_CERT_FILE,
        ADMIN_KEY_FILE,
    ] {
        fs::copy(b.join(f), a.join(f)).unwrap();
    }
    Pki::load_or_create(&a, &[]).unwrap();
    assert_ne!(read(&a, APISERVER_CERT_FILE), read(&b, APISERVER_CERT_FILE));
    assert_ne!(read(&a, ADMIN_CERT_FILE), read(&b, ADMIN_CERT_FILE));
}

#[test]
fn half_a_ca_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    Pki::load_or_create(dir, &[]).unwrap();
    fs::remove_file(dir.join(CA_KEY_FILE)).unwrap();
    let err = Pki::load_or_create(dir, &[]).unwrap_err();
    assert!(matches!(err, PkiError::IncompleteCa { .. }), "{err}");
}

#[test]
fn identities() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::load_or_create(tmp.path(), &[]).unwrap();
    let der = CertificateDer::from_pem_slice(pki.admin().cert_pem.as_bytes()).unwrap();
    assert_eq!(
        identity_from_der(&der),
        Some(CertIdentity {
            user: "kubernetes-admin".into(),
            groups: vec!["system:masters".into()],
        })
    );

    let node = pki
        .issue_client_cert(
            "system:node:n1",
            &["system:nodes", "extra"],
            Duration::from_secs(DAY),
        )
        .unwrap();
    let der = CertificateDer::from_pem_slice(node.cert_pem.as_bytes()).unwrap();
    assert_eq!(
        identity_from_der(&der),
        Some(CertIdentity {
            user: "system:node:n1".into(),
            groups: vec!["system:nodes".into(), "extra".into()],
        })
    );

    // The serving cert has a CN and no O.
    let der = CertificateDer::from_pem_slice(pki.serving_cert_pem().as_bytes()).unwrap();
    assert_eq!(
        identity_from_der(&der),
        Some(CertIdentity {
            user: "kube-apiserver".into(),
            groups: vec![],
        })
    );
    assert_eq!(identity_from_der(b"not a certificate"), None);
    assert!(matches!(
        pki.issue_client_cert("", &[], Duration::from_secs(DAY)),
        Err(PkiError::InvalidRequest(_))
    ));
}

#[test]
fn debug_hides_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::load_or_create(tmp.path(), &[]).unwrap();
    let shown = format!("{pki:?} {:?}", pki.admin());
    assert!(!shown.contains("PRIVATE KEY"), "{shown}");
    assert!(!shown.contains(pki.admin().key_pem.lines().nth(1).unwrap()));
}

#[test]
fn kubeconfig_has_the_right_fields() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::load_or_create(&tmp.path().join("pki"), &[]).unwrap();
    let path = tmp.path().join("home/.kube/config");
    pki.write_admin_kubeconfig(&path, "https://127.0.0.1:6443")
        .unwrap();
    assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);

    let text = fs::read_to_string(&path).unwrap();
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    let b64 = |v: &serde_yaml_ng::Value| {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap();
        String::from_utf8(bytes).unwrap()
    };
    assert_eq!(doc["apiVersion"].as_str(), Some("v1"));
    assert_eq!(doc["kind"].as_str(), Some("Config"));
    assert_eq!(doc["current-context"].as_str(), Some("badge"));
    let cluster = &doc["clusters"][0];
    assert_eq!(cluster["name"].as_str(), Some("badge"));
    assert_eq!(
        cluster["cluster"]["server"].as_str(),
        Some("https://127.0.0.1:6443")
    );
    assert_eq!(
        b64(&cluster["cluster"]["certificate-authority-data"]),
        pki.ca_pem()
    );
    let context = &doc["contexts"][0];
    assert_eq!(context["name"].as_str(), Some("badge"));
    assert_eq!(context["context"]["cluster"].as_str(), Some("badge"));
    assert_eq!(context["context"]["user"].as_str(), Some("kubernetes-admin"));
    let user = &doc["users"][0];
    assert_eq!(user["name"].as_str(), Some("kubernetes-admin"));
    assert_eq!(
        b64(&user["user"]["client-certificate-data"]),
        pki.admin().cert_pem
    );
    assert_eq!(b64(&user["user"]["client-key-data"]), pki.admin().key_pem);

    // Awkward user names survive quoting; rewriting replaces the file.
    let odd = "system:node:a \"b\"\\c\u{1}\u{2028}é";
    write_kubeconfig(&path, "https://[::1]:6443", pki.ca_pem(), odd, "c", "k").unwrap();
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(doc["users"][0]["name"].as_str(), Some(odd));
    assert_eq!(doc["contexts"][0]["context"]["user"].as_str(), Some(odd));
    assert_eq!(
        doc["clusters"][0]["cluster"]["server"].as_str(),
        Some("https://[::1]:6443")
    );
    assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
}

/// How a handshake went, seen from both ends.
struct Outcome {
    server: Result<Option<CertIdentity>, io::Error>,
    client_ok: bool,
    alpn: Option<Vec<u8>>,
}

fn client_config(
    pki: &Pki,
    creds: Option<&IssuedCert>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(pki.ca_der().clone()).unwrap();
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match creds {
        Some(c) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(c.cert_pem.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(c.key_pem.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// Runs a handshake over an in-memory pipe, then one byte each way so a
/// TLS 1.3 client learns about a rejection of its certificate.
async fn handshake(pki: &Pki, client: Arc<ClientConfig>) -> Outcome {
    let acceptor = TlsAcceptor::from(pki.server_config(&[b"h2", b"http/1.1"]).unwrap());
    let connector = TlsConnector::from(client);
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);

    let server = async move {
        let mut tls = acceptor.accept(server_io).await?;
        let (_, conn) = tls.get_ref();
        let identity = conn
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|der| identity_from_der(der).unwrap());
        let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
        let mut byte = [0u8];
        tls.read_exact(&mut byte).await?;
        tls.write_all(&byte).await?;
        tls.shutdown().await?;
        Ok::<_, io::Error>((identity, alpn))
    };
    let client = async move {
        let name = ServerName::try_from("kubernetes.default.svc").unwrap();
        let mut tls = connector.connect(name, client_io).await?;
        tls.write_all(b"x").await?;
        let mut byte = [0u8];
        tls.read_exact(&mut byte).await?;
        Ok::<_, io::Error>(())
    };
    let (server, client) = tokio::join!(server, client);
    let (server, alpn) = match server {
        Ok((identity, alpn)) => (Ok(identity), alpn),
        Err(e) => (Err(e), None),
    };
    Outcome {
        server,
        client_ok: client.is_ok(),
        alpn,
    }
}

#[tokio::test]
async fn tls_admin_cert_is_verified() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::load_or_create(tmp.path(), &[]).unwrap();
    for versions in [&[&rustls::version::TLS13][..], &[&rustls::version::TLS12][..]] {
        let out = handshake(&pki, client_config(&pki, Some(pki.admin()), versions)).await;
        assert!(out.client_ok);
        assert_eq!(
            out.server.unwrap(),
            Some(CertIdentity {
                user: ADMIN_USER.into(),
                groups: vec![ADMIN_GROUP.into()],
            })
        );
        assert_eq!(out.alpn.as_deref(), Some(&b"h2"[..]));
    }
}

#[tokio::test]
async fn tls_anonymous_client_is_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::load_or_create(tmp.path(), &[]).unwrap();
    let out = handshake(&pki, client_config(&pki, None, rustls::DEFAULT_VERSIONS)).await;
    assert!(out.client_ok);
    assert_eq!(out.server.unwrap(), None);
}

#[tokio::test]
async fn tls_cert_from_another_ca_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::load_or_create(&tmp.path().join("ours"), &[]).unwrap();
    let other = Pki::load_or_create(&tmp.path().join("theirs"), &[]).unwrap();
    let out = handshake(
        &pki,
        client_config(&pki, Some(other.admin()), rustls::DEFAULT_VERSIONS),
    )
    .await;
    assert!(out.server.is_err());
    assert!(!out.client_ok);
}

#[tokio::test]
async fn tls_issued_node_cert_is_verified() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::load_or_create(tmp.path(), &[]).unwrap();
    let node = pki
        .issue_client_cert(
            "system:node:n1",
            &["system:nodes", "system:authenticated-extra"],
            Duration::from_secs(DAY),
        )
        .unwrap();
    let out = handshake(&pki, client_config(&pki, Some(&node), rustls::DEFAULT_VERSIONS)).await;
    assert_eq!(
        out.server.unwrap(),
        Some(CertIdentity {
            user: "system:node:n1".into(),
            groups: vec!["system:nodes".into(), "system:authenticated-extra".into()],
        })
    );
}

/// A CA made with `openssl req -x509 -newkey ec`, its pin computed with
/// `openssl x509 -pubkey -noout | openssl pkey -pubin -outform der | sha256sum`.
const FIXTURE_CA: &str = "-----BEGIN CERTIFICATE-----
MIIBgjCCASegAwIBAgIUGm5hh15hVLxwLz6wFwylR3OU+JQwCgYIKoZIzj0EAwIw
FTETMBEGA1UEAwwKZml4dHVyZS1jYTAgFw0yNjEyMDUwMTQxMjRaGA8yMTI2MTEx
MTAxNDEyNFowFTETMBEGA1UEAwwKZml4dHVyZS1jYTBZMBMGByqGSM49AgEGCCqG
SM49AwEHA0IABLQ964dCBKTVKuXH0CS8NEDS3m+HMr4oF8RCQrpBZEdASZCpXr7i
fiHZQb68z0v1/hFgwSsZ2mePlEzIQlS6qOejUzBRMB0GA1UdDgQWBBQPuau8sddF
jxwhIW598JtAxNdAjzAfBgNVHSMEGDAWgBQPuau8sddFjxwhIW598JtAxNdAjzAP
BgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0kAMEYCIQC+3SYxbmO9V3LALvqS
rk7lRKANVYl6vs4wwy7TopZKTgIhAO/nG1tcuLTfOMrggFUCbEShTcBxB9SVDXvU
sdaQRewp
-----END CERTIFICATE-----
";

#[test]
fn ca_cert_hash_is_kubeadms_public_key_pin() {
    assert_eq!(
        ca_cert_hash_from_pem(FIXTURE_CA).as_deref(),
        Some("sha256:306999397d0437e52e8525ab09ad290294e0f7f03e5a5bc45b6f15d513efc1a1")
    );
    assert_eq!(ca_cert_hash(b"not a certificate"), None);
    assert_eq!(ca_cert_hash_from_pem("no pem here"), None);
}

#[test]
fn ca_cert_hash_agrees_with_openssl_on_a_generated_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::load_or_create(tmp.path(), &[]).unwrap();
    let Ok(out) = std::process::Command::new("sh")
        .arg("-c")
        .arg("openssl x509 -pubkey -noout -in \"$1\" | openssl pkey -pubin -outform der | sha256sum")
        .arg("sh")
        .arg(tmp.path().join(CA_CERT_FILE))
        .output()
    else {
        return;
    };
    let stdout = String::from_utf8(out.stdout).unwrap();
    let Some(hex) = stdout.split_whitespace().next().filter(|h| h.len() == 64) else {
        // No openssl on this machine: the fixture test above stands alone.
        return;
    };
    assert_eq!(ca_cert_hash(pki.ca_der()).unwrap(), format!("sha256:{hex}"));
}

#[test]
fn cluster_info_kubeconfig_is_kubeadms() {
    let text = cluster_info_kubeconfig("https://10.0.0.1:6443", "PEM\n");
    assert_eq!(
        text,
        "apiVersion: v1\n\
         clusters:\n\
         - cluster:\n    certificate-authority-data: UEVNCg==\n    server: https://10.0.0.1:6443\n  name: \"\"\n\
         contexts: null\n\
         current-context: \"\"\n\
         kind: Config\n\
         preferences: {}\n\
         users: null\n"
    );
    let parsed: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    assert_eq!(parsed["clusters"][0]["name"].as_str(), Some(""));
    let odd = cluster_info_kubeconfig("https://h:1/a b", "x");
    let parsed: serde_yaml_ng::Value = serde_yaml_ng::from_str(&odd).unwrap();
    assert_eq!(
        parsed["clusters"][0]["cluster"]["server"].as_str(),
        Some("https://h:1/a b")
    );
}
