//! The server's certificate authority and credentials, laid out as
//! kube-apiserver and kubeadm lay them out.
//!
//! [`Pki::load_or_create`] keeps these files in one directory:
//!
//! | file | what | mode |
//! | --- | --- | --- |
//! | `ca.crt` / `ca.key` | self-signed CA, CN `badge-ca`, 10 years | 0644 / 0600 |
//! | `apiserver.crt` / `apiserver.key` | serving certificate signed by the CA, 1 year | 0644 / 0600 |
//! | `admin.crt` / `admin.key` | client certificate `kubernetes-admin` in `system:masters`, 1 year | 0644 / 0600 |
//!
//! The directory is created with mode 0700. All keys are ECDSA P-256 in PKCS#8 PEM.
//! Every file is written atomically
//! (temporary file in the same directory, then rename), and key files are
//! created with mode 0600 so a key is never readable by others, not even
//! briefly.
//!
//! TLS uses the aws-lc-rs provider explicitly ([`Pki::server_config`]);
//! nothing here installs or relies on a process-wide rustls provider.
//!
//! A verified peer certificate becomes a Kubernetes user with
//! [`identity_from_der`]: the subject CN is the user name and each subject
//! O is a group, as upstream's x509 authenticator does.

#![warn(missing_docs)]

use std::fmt;
use std::fs::{self, DirBuilder, Permissions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData as _, SanType,
};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier as _;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

/// File name of the CA certificate inside the PKI directory.
pub const CA_CERT_FILE: &str = "ca.crt";
/// File name of the CA private key inside the PKI directory.
pub const CA_KEY_FILE: &str = "ca.key";
/// File name of the serving certificate inside the PKI directory.
pub const APISERVER_CERT_FILE: &str = "apiserver.crt";
/// File name of the serving certificate's private key inside the PKI directory.
pub const APISERVER_KEY_FILE: &str = "apiserver.key";
/// File name of the admin client certificate inside the PKI directory.
pub const ADMIN_CERT_FILE: &str = "admin.crt";
/// File name of the admin client certificate's private key inside the PKI directory.
pub const ADMIN_KEY_FILE: &str = "admin.key";
/// The key the ServiceAccount key ring is sealed with in the store (32 random bytes, hex).
/// Servers of one deployment share it with the rest of this directory.
pub const KEYRING_SEAL_FILE: &str = "keyring-seal.key";

/// Subject CN of the CA.
pub const CA_COMMON_NAME: &str = "badge-ca";
/// User name of the admin client certificate (kubeadm's).
pub const ADMIN_USER: &str = "kubernetes-admin";
/// Group of the admin client certificate; upstream RBAC binds it to cluster-admin.
pub const ADMIN_GROUP: &str = "system:masters";
/// Subject CN of the serving certificate (kubeadm's).
const APISERVER_COMMON_NAME: &str = "kube-apiserver";

/// Name of the cluster and the context in written kubeconfigs.
pub const KUBECONFIG_CLUSTER: &str = "badge";

const DAY: u64 = 24 * 60 * 60;
const CA_VALIDITY: Duration = Duration::from_secs(3650 * DAY);
const LEAF_VALIDITY: Duration = Duration::from_secs(365 * DAY);
/// Leaf certificates this close to expiry are re-issued at start.
const RENEW_BEFORE: Duration = Duration::from_secs(30 * DAY);
/// Certificates start a little in the past so clients with a slightly slow
/// clock accept them (kubeadm backdates by the same amount).
const BACKDATE: Duration = Duration::from_secs(5 * 60);
/// Upper bound on a requested validity; also keeps dates far from the
/// year-9999 limit of X.509 time encoding.
const MAX_VALIDITY: Duration = Duration::from_secs(100 * 365 * DAY);

/// SANs every serving certificate carries: loopback and the in-cluster names
/// of the `kubernetes` Service.
const DEFAULT_SANS: [&str; 7] = [
    "localhost",
    "127.0.0.1",
    "::1",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
];

/// Everything that can go wrong loading, creating or using the PKI.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Reading, writing or creating a file or directory failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Generating a key or signing a certificate failed.
    #[error("generating certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// A certificate or key could not be parsed or does not fit its pair.
    #[error("{what}: {reason}")]
    Parse {
        /// Which file or input.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A requested subject alternative name is neither an IP address nor a DNS name.
    #[error("invalid subject alternative name {0:?}: not an IP address or DNS name")]
    InvalidSan(String),
    /// Only one half of the CA pair exists; replacing it would silently
    /// invalidate every credential issued so far, so that is left to a person.
    #[error(
        "{} exists but {} does not; restore it, or remove both to create a new CA",
        present.display(),
        missing.display()
    )]
    IncompleteCa {
        /// The file that exists.
        present: PathBuf,
        /// The file that is missing.
        missing: PathBuf,
    },
    /// A request to issue a certificate was malformed (empty name, bad validity).
    #[error("invalid certificate request: {0}")]
    InvalidRequest(String),
    /// rustls rejected the certificate or key while building a TLS config.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// rustls could not build the client-certificate verifier.
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// A Kubernetes identity taken from a client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertIdentity {
    /// The user name: the subject CN.
    pub user: String,
    /// The groups: every subject O, in order.
    pub groups: Vec<String>,
}

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub struct IssuedCert {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PKCS#8 PEM.
    pub key_pem: String,
}

impl fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCert")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"[elided]")
            .finish()
    }
}

/// The loaded certificate authority and the server's own credentials.
pub struct Pki {
    dir: PathBuf,
    ca_pem: String,
    ca_der: CertificateDer<'static>,
    ca_key: KeyPair,
    serving: IssuedCert,
    admin: IssuedCert,
}

impl fmt::Debug for Pki {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Only public material: no key, not even the CA's.
        f.debug_struct("Pki")
            .field("dir", &self.dir)
            .field("ca_pem", &self.ca_pem)
            .finish_non_exhaustive()
    }
}

impl Pki {
    /// Loads the PKI from `dir`, creating whatever is missing.
    ///
    /// `sans` are extra subject alternative names for the serving
    /// certificate (the bind address, `--tls-san` values): each an IP
    /// address (IPv6 may be bracketed) or a DNS name. Unspecified addresses
    /// (`0.0.0.0`, `::`) are skipped, since no client connects to them.
    ///
    /// The CA is created once and then only ever loaded. The serving
    /// certificate is re-issued with the existing CA when it is missing,
    /// unreadable, not signed by the CA, lacks a requested SAN, or expires
    /// within 30 days; the admin certificate likewise (except for SANs).
    pub fn load_or_create(dir: &Path, sans: &[String]) -> Result<Pki, PkiError> {
        let wanted_sans = serving_sans(sans)?;
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| io_err(dir, source))?;

        let (ca_pem, ca_key, ca_created) = load_or_create_ca(dir)?;
        let ca_der = parse_cert_pem(&ca_pem, &dir.join(CA_CERT_FILE))?;
        let mut pki = Pki {
            dir: dir.to_path_buf(),
            ca_pem,
            ca_der,
            ca_key,
            serving: IssuedCert {
                cert_pem: String::new(),
                key_pem: String::new(),
            },
            admin: IssuedCert {
                cert_pem: String::new(),
                key_pem: String::new(),
            },
        };

        let now = unix_now();
        let serving_paths = (dir.join(APISERVER_CERT_FILE), dir.join(APISERVER_KEY_FILE));
        let serving = match pki.check_existing(&serving_paths, ca_created, |cert, der| {
            pki.check_serving(cert, der, &wanted_sans, now)
        })? {
            Some(existing) => existing,
            None => {
                let params = serving_params(&wanted_sans, now)?;
                let issued = pki.sign(params)?;
                write_pair(&serving_paths, &issued)?;
                issued
            }
        };
        pki.serving = serving;

        let admin_paths = (dir.join(ADMIN_CERT_FILE), dir.join(ADMIN_KEY_FILE));
        let admin = match pki.check_existing(&admin_paths, ca_created, |cert, der| {
            pki.check_admin(cert, der, now)
        })? {
            Some(existing) => existing,
            None => {
                let issued = pki.issue_client_cert(ADMIN_USER, &[ADMIN_GROUP], LEAF_VALIDITY)?;
                write_pair(&admin_paths, &issued)?;
                issued
            }
        };
        pki.admin = admin;
        Ok(pki)
    }

    /// The directory the PKI lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The key ring's sealing key, made on first use (mode 0600).
    pub fn keyring_seal_key(&self) -> Result<[u8; 32], PkiError> {
        let path = self.dir.join(KEYRING_SEAL_FILE);
        if let Some(text) = read_optional(&path)? {
            let text = text.trim();
            let mut key = [0u8; 32];
            let valid = text.len() == 64
                && key.iter_mut().enumerate().all(|(i, byte)| {
                    u8::from_str_radix(&text[2 * i..2 * i + 2], 16)
                        .map(|b| *byte = b)
                        .is_ok()
                });
            if !valid {
                return Err(PkiError::Parse {
                    what: path.display().to_string(),
                    reason: "expected 64 hexadecimal digits".into(),
                });
            }
            return Ok(key);
        }
        let mut key = [0u8; 32];
        rand::fill(&mut key);
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        write_atomic(&path, format!("{hex}\n").as_bytes(), 0o600)?;
        Ok(key)
    }

    /// The CA certificate, PEM (for the `kube-root-ca.crt` ConfigMap and kubeconfigs).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The CA certificate, DER.
    pub fn ca_der(&self) -> &CertificateDer<'static> {
        &self.ca_der
    }

    /// The admin client credentials (`kubernetes-admin` in `system:masters`).
    pub fn admin(&self) -> &IssuedCert {
        &self.admin
    }

    /// The serving certificate, PEM.
    pub fn serving_cert_pem(&self) -> &str {
        &self.serving.cert_pem
    }

    /// A TLS 1.2 + 1.3 server config presenting the serving certificate.
    ///
    /// Client certificates are verified against the CA, but clients without
    /// one are let through: whether an anonymous request is allowed is the
    /// authenticator's decision, made later. `alpn` lists the protocols to
    /// offer, most preferred first (e.g. `h2`, `http/1.1`).
    pub fn server_config(&self, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, PkiError> {
        let provider = provider();
        let verifier = WebPkiClientVerifier::builder_with_provider(self.ca_roots()?, provider.clone())
            .allow_unauthenticated()
            .build()?;
        let what = self.dir.join(APISERVER_KEY_FILE);
        let key = parse_key_pem(&self.serving.key_pem, &what)?;
        let cert = parse_cert_pem(&self.serving.cert_pem, &self.dir.join(APISERVER_CERT_FILE))?;
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![cert], key)?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }

    /// Signs a new client certificate with the CA: subject CN `common_name`,
    /// one subject O per entry of `organizations`, clientAuth usage, valid
    /// from now (less a few minutes for clock skew) for `validity`.
    ///
    /// Nothing is written to disk. Node credentials are
    /// `issue_client_cert("system:node:NAME", &["system:nodes"], ..)`.
    pub fn issue_client_cert(
        &self,
        common_name: &str,
        organizations: &[&str],
        validity: Duration,
    ) -> Result<IssuedCert, PkiError> {
        if common_name.is_empty() {
            return Err(PkiError::InvalidRequest("empty common name".into()));
        }
        if validity.is_zero() || validity > MAX_VALIDITY {
            return Err(PkiError::InvalidRequest(format!(
                "validity {validity:?} outside (0, {MAX_VALIDITY:?}]"
            )));
        }
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, unix_now(), validity);
        let issued = self.sign(params)?;
        // rcgen's DistinguishedName holds one value per attribute type, but
        // a user may be in several groups: put in a subject encoded here.
        let der = parse_cert_pem(&issued.cert_pem, Path::new("issued certificate"))?;
        let der = der::replace_subject(&der, &der::subject(common_name, organizations), &self.ca_key)?;
        Ok(IssuedCert {
            cert_pem: der::pem("CERTIFICATE", &der),
            key_pem: issued.key_pem,
        })
    }

    /// Writes a kubeconfig for the admin certificate (see [`write_kubeconfig`]).
    pub fn write_admin_kubeconfig(&self, path: &Path, server_url: &str) -> Result<(), PkiError> {
        write_kubeconfig(
            path,
            server_url,
            &self.ca_pem,
            ADMIN_USER,
            &self.admin.cert_pem,
            &self.admin.key_pem,
        )
    }

    /// Signs `params` with a fresh P-256 key. Every certificate gets its own
    /// key, so rcgen's serial number (a hash of the public key) is unique.
    fn sign(&self, params: CertificateParams) -> Result<IssuedCert, PkiError> {
        let issuer = Issuer::from_ca_cert_der(&self.ca_der, &self.ca_key)?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let cert = params.signed_by(&key, &issuer)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    fn ca_roots(&self) -> Result<Arc<RootCertStore>, PkiError> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca_der.clone())?;
        Ok(Arc::new(roots))
    }

    /// Loads an existing leaf pair if it is still fit for use, per `check`
    /// (which returns why not). `None` means: issue a new one.
    fn check_existing(
        &self,
        (cert_path, key_path): &(PathBuf, PathBuf),
        ca_created: bool,
        check: impl Fn(&X509Certificate<'_>, &CertificateDer<'static>) -> Result<(), String>,
    ) -> Result<Option<IssuedCert>, PkiError> {
        if ca_created {
            // Anything lying around was signed by some other CA.
            return Ok(None);
        }
        let (Some(cert_pem), Some(key_pem)) = (read_optional(cert_path)?, read_optional(key_path)?) else {
            return Ok(None);
        };
        let verdict = (|| {
            let der = parse_cert_pem(&cert_pem, cert_path).map_err(|e| e.to_string())?;
            let key = KeyPair::from_pem(&key_pem).map_err(|e| format!("{}: {e}", key_path.display()))?;
            let (_, cert) = x509_parser::parse_x509_certificate(&der)
                .map_err(|e| format!("{}: {e}", cert_path.display()))?;
            if cert.public_key().subject_public_key.data.as_ref() != key.der_bytes() {
                return Err(format!(
                    "{} does not match {}",
                    key_path.display(),
                    cert_path.display()
                ));
            }
            check(&cert, &der)
        })();
        match verdict {
            Ok(()) => Ok(Some(IssuedCert { cert_pem, key_pem })),
            Err(reason) => {
                tracing::info!(cert = %cert_path.display(), %reason, "re-issuing certificate");
                Ok(None)
            }
        }
    }

    fn check_serving(
        &self,
        cert: &X509Certificate<'_>,
        der: &CertificateDer<'static>,
        wanted: &[San],
        now: u64,
    ) -> Result<(), String> {
        check_not_expiring(cert, now)?;
        let verifier = WebPkiServerVerifier::builder_with_provider(
            self.ca_roots().map_err(|e| e.to_string())?,
            provider(),
        )
        .build()
        .map_err(|e| e.to_string())?;
        let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
        verifier
            .verify_server_cert(der, &[], &name, &[], UnixTime::now())
            .map_err(|e| format!("not valid for this CA: {e}"))?;
        let present = cert_sans(cert)?;
        for san in wanted {
            if !present.contains(san) {
                return Err(format!("lacks subject alternative name {san}"));
            }
        }
        Ok(())
    }

    fn check_admin(
        &self,
        cert: &X509Certificate<'_>,
        der: &CertificateDer<'static>,
        now: u64,
    ) -> Result<(), String> {
        check_not_expiring(cert, now)?;
        let verifier = WebPkiClientVerifier::builder_with_provider(
            self.ca_roots().map_err(|e| e.to_string())?,
            provider(),
        )
        .build()
        .map_err(|e| e.to_string())?;
        verifier
            .verify_client_cert(der, &[], UnixTime::now())
            .map_err(|e| format!("not valid for this CA: {e}"))?;
        let expected = CertIdentity {
            user: ADMIN_USER.into(),
            groups: vec![ADMIN_GROUP.into()],
        };
        if identity_from_der(der).as_ref() != Some(&expected) {
            return Err("not the admin identity".into());
        }
        Ok(())
    }
}

/// The Kubernetes identity of a client certificate: the subject CN is the
/// user (the last CN if there are several, as Go's crypto/x509 reads it),
/// each subject O a group, in order.
///
/// `None` if the certificate does not parse, has no or an empty CN, or a
/// name attribute that is not a string. This does not verify anything:
/// pass only certificates that the TLS layer has verified against the CA.
pub fn identity_from_der(cert_der: &[u8]) -> Option<CertIdentity> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    let subject = cert.subject();
    let mut user = None;
    for cn in subject.iter_common_name() {
        user = Some(cn.as_str().ok()?);
    }
    let user = user.filter(|u| !u.is_empty())?.to_owned();
    let groups = subject
        .iter_organization()
        .map(|o| o.as_str().ok().map(str::to_owned))
        .collect::<Option<Vec<_>>>()?;
    Some(CertIdentity { user, groups })
}

/// Writes a kubeconfig that reaches `server_url`, trusting `ca_pem` and
/// authenticating as `user` with the given client certificate and key.
///
/// The cluster and the context are both named `badge` and the context is
/// current. The file is written atomically with mode 0600 (it holds a
/// private key); missing parent directories are created with mode 0700.
pub fn write_kubeconfig(
    path: &Path,
    server_url: &str,
    ca_pem: &str,
    user: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<(), PkiError> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let cluster = yaml_quote(KUBECONFIG_CLUSTER);
    let user = yaml_quote(user);
    // Block YAML with every string double-quoted: no scalar can be
    // misread (user names like `system:node:x` contain colons).
    let text = format!(
        "apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: {cluster}\n\
        \x20 cluster:\n\
        \x20   certificate-authority-data: {ca}\n\
        \x20   server: {server}\n\
         contexts:\n\
         - name: {cluster}\n\
        \x20 context:\n\
        \x20   cluster: {cluster}\n\
        \x20   user: {user}\n\
         current-context: {cluster}\n\
         preferences: {{}}\n\
         users:\n\
         - name: {user}\n\
        \x20 user:\n\
        \x20   client-certificate-data: {cert}\n\
        \x20   client-key-data: {key}\n",
        ca = b64(ca_pem),
        server = yaml_quote(server_url),
        cert = b64(cert_pem),
        key = b64(key_pem),
    );
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|source| io_err(parent, source))?;
    }
    write_atomic(path, text.as_bytes(), 0o600)
}

/// The kubeconfig kubeadm publishes in `kube-public/cluster-info`: the cluster (server and
/// inline CA) under the empty name, no context, no user. Written byte for byte as client-go's
/// `clientcmd.Write` renders kubeadm's config (keys sorted, unset lists `null`), because a
/// joining node verifies a signature over exactly this text.
pub fn cluster_info_kubeconfig(server_url: &str, ca_pem: &str) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem.as_bytes());
    format!(
        "apiVersion: v1\n\
         clusters:\n\
         - cluster:\n\
        \x20   certificate-authority-data: {ca}\n\
        \x20   server: {server}\n\
        \x20 name: \"\"\n\
         contexts: null\n\
         current-context: \"\"\n\
         kind: Config\n\
         preferences: {{}}\n\
         users: null\n",
        server = yaml_url(server_url),
    )
}

/// A URL as a YAML scalar: plain when it cannot be misread, as Go's YAML writer leaves
/// `https://host:port`, else double-quoted.
fn yaml_url(url: &str) -> String {
    let plain = url.contains("://")
        && url.starts_with(|c: char| c.is_ascii_alphabetic())
        && url
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ":/.-_[]%~".contains(c));
    if plain { url.to_string() } else { yaml_quote(url) }
}

/// kubeadm's `--discovery-token-ca-cert-hash` of a CA certificate (`pubkeypin.Hash`):
/// `sha256:` and the lowercase hex SHA-256 of its DER SubjectPublicKeyInfo. `None` if the
/// certificate does not parse.
pub fn ca_cert_hash(cert_der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, cert.public_key().raw);
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    Some(format!("sha256:{hex}"))
}

/// [`ca_cert_hash`] of the first certificate in a PEM bundle.
pub fn ca_cert_hash_from_pem(ca_pem: &str) -> Option<String> {
    let der = CertificateDer::from_pem_slice(ca_pem.as_bytes()).ok()?;
    ca_cert_hash(&der)
}

/// A YAML double-quoted scalar. Its escapes are a superset of JSON's; the
/// characters YAML does not allow raw (controls, BOM, non-characters) and
/// the Unicode line separators (line breaks to YAML 1.1) are escaped.
fn yaml_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control()
                || matches!(c, '\u{2028}' | '\u{2029}' | '\u{FEFF}' | '\u{FFFE}' | '\u{FFFF}') =>
            {
                out.push_str(&format!("\\u{:04X}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A subject alternative name of the serving certificate, normalised so
/// requested and present names compare equal.
#[derive(Debug, Clone, PartialEq, Eq)]
enum San {
    Dns(String),
    Ip(IpAddr),
}

impl fmt::Display for San {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            San::Dns(name) => f.write_str(name),
            San::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

impl San {
    /// Parses one requested SAN; `None` for names deliberately skipped.
    fn parse(raw: &str) -> Result<Option<San>, PkiError> {
        let s = raw.trim();
        if s.is_empty() {
            return Ok(None);
        }
        let unbracketed = s
            .strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']'))
            .unwrap_or(s);
        if let Ok(ip) = unbracketed.parse::<IpAddr>() {
            // 0.0.0.0 / :: are "every address" to bind(), never a
            // destination a client would check a certificate against.
            return Ok((!ip.is_unspecified()).then_some(San::Ip(ip)));
        }
        // DNS names: letters, digits, '-', '.', plus '*' for wildcards and
        // '_' which real-world names use; DNS compares without case.
        let valid = s.len() <= 253
            && !s.starts_with('.')
            && !s.ends_with('.')
            && !s.contains("..")
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '*' | '_'));
        if !valid {
            return Err(PkiError::InvalidSan(raw.to_owned()));
        }
        Ok(Some(San::Dns(s.to_ascii_lowercase())))
    }

    fn to_rcgen(&self) -> Result<SanType, PkiError> {
        Ok(match self {
            San::Dns(name) => SanType::DnsName(name.clone().try_into()?),
            San::Ip(ip) => SanType::IpAddress(*ip),
        })
    }
}

/// The default SANs followed by the requested ones, without duplicates.
fn serving_sans(extra: &[String]) -> Result<Vec<San>, PkiError> {
    let mut sans: Vec<San> = Vec::new();
    for raw in DEFAULT_SANS
        .iter()
        .copied()
        .chain(extra.iter().map(String::as_str))
    {
        if let Some(san) = San::parse(raw)?
            && !sans.contains(&san)
        {
            sans.push(san);
        }
    }
    Ok(sans)
}

fn cert_sans(cert: &X509Certificate<'_>) -> Result<Vec<San>, String> {
    let Some(ext) = cert.subject_alternative_name().map_err(|e| e.to_string())? else {
        return Ok(Vec::new());
    };
    let mut sans = Vec::new();
    for name in &ext.value.general_names {
        match name {
            GeneralName::DNSName(dns) => sans.push(San::Dns(dns.to_ascii_lowercase())),
            GeneralName::IPAddress(bytes) => {
                let ip = match bytes.len() {
                    4 => <[u8; 4]>::try_from(*bytes).ok().map(IpAddr::from),
                    16 => <[u8; 16]>::try_from(*bytes).ok().map(IpAddr::from),
                    _ => None,
                };
                if let Some(ip) = ip {
                    sans.push(San::Ip(ip));
                }
            }
            _ => {}
        }
    }
    Ok(sans)
}

fn serving_params(sans: &[San], now: u64) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, APISERVER_COMMON_NAME);
    params.distinguished_name = name;
    params.subject_alt_names = sans.iter().map(San::to_rcgen).collect::<Result<_, _>>()?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, now, LEAF_VALIDITY);
    Ok(params)
}

/// Loads the CA pair, or creates it if neither file exists. Returns the
/// certificate PEM, the key, and whether it was just created.
fn load_or_create_ca(dir: &Path) -> Result<(String, KeyPair, bool), PkiError> {
    let cert_path = dir.join(CA_CERT_FILE);
    let key_path = dir.join(CA_KEY_FILE);
    match (read_optional(&cert_path)?, read_optional(&key_path)?) {
        (Some(cert_pem), Some(key_pem)) => {
            let key = KeyPair::from_pem(&key_pem).map_err(|e| parse_err(&key_path, e))?;
            let der = parse_cert_pem(&cert_pem, &cert_path)?;
            let (_, cert) =
                x509_parser::parse_x509_certificate(&der).map_err(|e| parse_err(&cert_path, e))?;
            if cert.public_key().subject_public_key.data.as_ref() != key.der_bytes() {
                return Err(PkiError::Parse {
                    what: key_path.display().to_string(),
                    reason: format!("does not match {}", cert_path.display()),
                });
            }
            if cert.validity().not_after.timestamp() < i64::try_from(unix_now()).unwrap_or(i64::MAX) {
                // Replacing the CA would break every credential handed out;
                // say so loudly and let a person decide.
                tracing::warn!(cert = %cert_path.display(), "the CA certificate has expired");
            }
            Ok((cert_pem, key, false))
        }
        (None, None) => {
            let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
            let mut params = CertificateParams::default();
            let mut name = DistinguishedName::new();
            name.push(DnType::CommonName, CA_COMMON_NAME);
            params.distinguished_name = name;
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            set_validity(&mut params, unix_now(), CA_VALIDITY);
            let cert = params.self_signed(&key)?;
            let cert_pem = cert.pem();
            // Key first: a crash in between leaves a key without a
            // certificate, which load reports instead of overwriting.
            write_atomic(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
            write_atomic(&cert_path, cert_pem.as_bytes(), 0o644)?;
            tracing::info!(dir = %dir.display(), "created a new certificate authority");
            Ok((cert_pem, key, true))
        }
        (Some(_), None) => Err(PkiError::IncompleteCa {
            present: cert_path,
            missing: key_path,
        }),
        (None, Some(_)) => Err(PkiError::IncompleteCa {
            present: key_path,
            missing: cert_path,
        }),
    }
}

fn check_not_expiring(cert: &X509Certificate<'_>, now: u64) -> Result<(), String> {
    let not_after = cert.validity().not_after.timestamp();
    let renew_at = now.saturating_add(RENEW_BEFORE.as_secs());
    if not_after < i64::try_from(renew_at).unwrap_or(i64::MAX) {
        return Err(format!(
            "expires at {} (unix), within {} days",
            not_after,
            RENEW_BEFORE.as_secs() / DAY
        ));
    }
    Ok(())
}

/// Sets not-before to `now` less [`BACKDATE`] and not-after to `now + validity`.
fn set_validity(params: &mut CertificateParams, now: u64, validity: Duration) {
    // rcgen takes the `time` crate's type; building it from the epoch
    // avoids depending on that crate. Callers bound `validity`, so the
    // sums stay far below year 9999 (where `time` would panic).
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + Duration::from_secs(now.saturating_sub(BACKDATE.as_secs()));
    params.not_after = epoch + Duration::from_secs(now) + validity;
}

/// The wall clock: certificates' validity starts from it.
#[allow(clippy::disallowed_methods, reason = "the PKI's one clock read")]
fn unix_now() -> u64 {
    // A clock before 1970 is broken beyond what certificates can fix.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn parse_cert_pem(pem: &str, path: &Path) -> Result<CertificateDer<'static>, PkiError> {
    CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| parse_err(path, e))
}

fn parse_key_pem(pem: &str, path: &Path) -> Result<PrivateKeyDer<'static>, PkiError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| parse_err(path, e))
}

fn parse_err(path: &Path, e: impl fmt::Display) -> PkiError {
    PkiError::Parse {
        what: path.display().to_string(),
        reason: e.to_string(),
    }
}

fn io_err(path: &Path, source: io::Error) -> PkiError {
    PkiError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn read_optional(path: &Path) -> Result<Option<String>, PkiError> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(io_err(path, source)),
    }
}

fn write_pair((cert_path, key_path): &(PathBuf, PathBuf), issued: &IssuedCert) -> Result<(), PkiError> {
    write_atomic(key_path, issued.key_pem.as_bytes(), 0o600)?;
    write_atomic(cert_path, issued.cert_pem.as_bytes(), 0o644)
}

/// Writes `contents` to `path` through a temporary file in the same
/// directory and a rename, so readers see the old file or the new one,
/// never a part. The temporary file is created with `mode` (the umask can
/// only narrow it) and then set to exactly `mode` before any byte is
/// written, so a key is never readable by others.
fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), PkiError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{file_name}."))
        .suffix(".tmp")
        .permissions(Permissions::from_mode(mode))
        .tempfile_in(dir)
        .map_err(|source| io_err(dir, source))?;
    let tmp_path = tmp.path().to_path_buf();
    tmp.as_file()
        .set_permissions(Permissions::from_mode(mode))
        .and_then(|()| tmp.write_all(contents))
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|source| io_err(&tmp_path, source))?;
    tmp.persist(path).map_err(|e| io_err(path, e.error))?;
    // Make the rename itself durable.
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| io_err(dir, source))
}

pub mod csr;
mod der;
pub mod node;

#[cfg(test)]
mod tests;
