//! A node's side of its client certificate, as the kubelet keeps it
//! (k8s.io/client-go/util/certificate and pkg/kubelet/certificate/bootstrap): a key made
//! on the node, a certificate request for `system:node:<name>` in `system:nodes`, and the
//! validity of the certificate that comes back.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PublicKeyData as _};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

use crate::PkiError;

/// The usages a kubelet asks for its client certificate (`requestNodeCertificate`).
pub const NODE_CLIENT_USAGES: [&str; 3] = ["digital signature", "key encipherment", "client auth"];

/// A new key and a request for a node client certificate. No `Debug`: it holds the key.
pub struct NodeClientRequest {
    /// PKCS#8 PEM.
    pub key_pem: String,
    /// The PKCS#10 request, PEM, as `spec.request` carries it (base64 of this).
    pub request_pem: String,
    /// `node-csr-<digest>` of the key, subject and usages (`digestedName`): a node that
    /// restarts before its request is answered finds its own request again.
    pub digested_name: String,
}

impl NodeClientRequest {
    /// A fresh ECDSA P-256 key and its request for `system:node:<node>`.
    pub fn generate(node: &str) -> Result<NodeClientRequest, PkiError> {
        let key = KeyPair::generate()?;
        let common_name = format!("system:node:{node}");
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut subject = DistinguishedName::new();
        subject.push(DnType::OrganizationName, "system:nodes");
        subject.push(DnType::CommonName, common_name.as_str());
        params.distinguished_name = subject;
        let request = params.serialize_request(&key)?;
        Ok(NodeClientRequest {
            key_pem: key.serialize_pem(),
            request_pem: request.pem()?,
            digested_name: digested_name(
                &key.subject_public_key_info(),
                &common_name,
                &["system:nodes"],
                &NODE_CLIENT_USAGES,
            ),
        })
    }
}

/// Upstream's `digestedName`: SHA-512/256 over each part base64url-encoded and ended by
/// `|` (not in that alphabet, so no two inputs hash the same stream).
fn digested_name(spki_der: &[u8], common_name: &str, organizations: &[&str], usages: &[&str]) -> String {
    let encode = |data: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data);
    let mut stream = String::new();
    let mut write = |data: &[u8]| {
        stream.push_str(&encode(data));
        stream.push('|');
    };
    write(spki_der);
    write(common_name.as_bytes());
    for o in organizations {
        write(o.as_bytes());
    }
    for u in usages {
        write(u.as_bytes());
    }
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA512_256, stream.as_bytes());
    format!("node-csr-{}", encode(digest.as_ref()))
}

/// When a certificate starts and stops being valid, and whom it names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateInfo {
    /// Start of the validity period (`notBefore`).
    pub not_before: SystemTime,
    /// End of the validity period (`notAfter`).
    pub not_after: SystemTime,
    /// The subject's common name: the user name Kubernetes authenticates.
    pub common_name: String,
    /// The subject's organizations: the groups Kubernetes authenticates.
    pub organizations: Vec<String>,
}

/// The validity and subject of the first certificate in a PEM bundle.
pub fn certificate_info(cert_pem: &[u8]) -> Result<CertificateInfo, PkiError> {
    let der = CertificateDer::from_pem_slice(cert_pem).map_err(|e| parse_err(&e))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| parse_err(&e))?;
    let at = |t: x509_parser::time::ASN1Time| {
        let seconds = t.timestamp();
        if seconds >= 0 {
            UNIX_EPOCH + Duration::from_secs(seconds.unsigned_abs())
        } else {
            UNIX_EPOCH
        }
    };
    let identity = crate::identity_from_der(&der);
    Ok(CertificateInfo {
        not_before: at(cert.validity().not_before),
        not_after: at(cert.validity().not_after),
        common_name: identity.as_ref().map(|i| i.user.clone()).unwrap_or_default(),
        organizations: identity.map(|i| i.groups).unwrap_or_default(),
    })
}

/// Whether `cert_pem`'s public key is the one of `key_pem` (`tls.X509KeyPair`'s check),
/// so a certificate issued for another key is never stored with this one.
pub fn key_matches(cert_pem: &[u8], key_pem: &[u8]) -> bool {
    let Ok(der) = CertificateDer::from_pem_slice(cert_pem) else {
        return false;
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(&der) else {
        return false;
    };
    let Ok(key_text) = std::str::from_utf8(key_pem) else {
        return false;
    };
    let Ok(key) = KeyPair::from_pem(key_text) else {
        return false;
    };
    cert.public_key().raw == key.subject_public_key_info().as_slice()
}

/// Writes `contents` to `path` atomically with `mode`.
pub fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), PkiError> {
    crate::write_atomic(path, contents, mode)
}

fn parse_err(e: &dyn std::fmt::Display) -> PkiError {
    PkiError::Parse {
        what: "certificate".into(),
        reason: e.to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_node_request_names_the_node_and_is_signed_by_its_key() {
        let request = NodeClientRequest::generate("n1").unwrap();
        let der =
            rustls::pki_types::CertificateSigningRequestDer::from_pem_slice(request.request_pem.as_bytes())
                .unwrap();
        let params = rcgen::CertificateSigningRequestParams::from_der(&der).unwrap();
        let subject: Vec<String> = params
            .params
            .distinguished_name
            .iter()
            .map(|(t, v)| format!("{t:?}={v:?}"))
            .collect();
        assert!(
            subject.iter().any(|s| s.contains("system:node:n1")),
            "{subject:?}"
        );
        assert!(subject.iter().any(|s| s.contains("system:nodes")), "{subject:?}");
        let key = KeyPair::from_pem(&request.key_pem).unwrap();
        assert_eq!(
            params.public_key.subject_public_key_info(),
            key.subject_public_key_info()
        );
        assert!(request.digested_name.starts_with("node-csr-"));
        // A new key is a new name; the same inputs the same name.
        let other = NodeClientRequest::generate("n1").unwrap();
        assert_ne!(other.digested_name, request.digested_name);
        assert_eq!(
            digested_name(b"k", "system:node:a", &["system:nodes"], &NODE_CLIENT_USAGES),
            digested_name(b"k", "system:node:a", &["system:nodes"], &NODE_CLIENT_USAGES)
        );
        // The delimiter keeps shifted boundaries apart.
        assert_ne!(
            digested_name(b"k", "ab", &["c"], &[]),
            digested_name(b"k", "a", &["bc"], &[])
        );
    }

    #[test]
    fn certificate_info_and_key_match() {
        let dir = tempfile::tempdir().unwrap();
        let pki = crate::Pki::load_or_create(&dir.path().join("pki"), &[]).unwrap();
        let issued = pki
            .issue_client_cert("system:node:n1", &["system:nodes"], Duration::from_secs(3600))
            .unwrap();
        let info = certificate_info(issued.cert_pem.as_bytes()).unwrap();
        assert_eq!(info.common_name, "system:node:n1");
        assert_eq!(info.organizations, ["system:nodes"]);
        let lifetime = info.not_after.duration_since(info.not_before).unwrap();
        assert!(lifetime >= Duration::from_secs(3600), "{lifetime:?}");
        assert!(key_matches(issued.cert_pem.as_bytes(), issued.key_pem.as_bytes()));
        let other = NodeClientRequest::generate("n1").unwrap();
        assert!(!key_matches(issued.cert_pem.as_bytes(), other.key_pem.as_bytes()));
        assert!(certificate_info(b"not a certificate").is_err());
    }
}
