//! Signing CertificateSigningRequests with the cluster CA, as kube-controller-manager's
//! `csrsigning` controller does with `--cluster-signing-cert-file`.

use std::time::Duration;

use rcgen::{
    CertificateSigningRequestParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, CertificateSigningRequestDer};

use crate::{MAX_VALIDITY, PkiError, der, set_validity, unix_now};

/// The CA's certificate and key, for a signing controller.
pub struct CsrSigner {
    ca_der: CertificateDer<'static>,
    ca_key: KeyPair,
}

impl std::fmt::Debug for CsrSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CsrSigner").finish_non_exhaustive()
    }
}

impl crate::Pki {
    /// A signer for certificate requests with this CA.
    pub fn csr_signer(&self) -> Result<CsrSigner, PkiError> {
        Ok(CsrSigner {
            ca_der: self.ca_der.clone(),
            ca_key: KeyPair::from_pem(&self.ca_key.serialize_pem())?,
        })
    }
}

impl CsrSigner {
    /// Issues a certificate for a certificate request (DER): its public key, its subject
    /// (`subject_der`, copied as it is so every O survives) and its SANs, with the key
    /// usages named by `usages` (upstream's strings), valid from now (backdated for clock
    /// skew) for `validity`. Returns the certificate, PEM.
    pub fn sign(
        &self,
        request_der: &[u8],
        subject_der: &[u8],
        usages: &[&str],
        validity: Duration,
    ) -> Result<String, PkiError> {
        if validity.is_zero() || validity > MAX_VALIDITY {
            return Err(PkiError::InvalidRequest(format!(
                "validity {validity:?} outside (0, {MAX_VALIDITY:?}]"
            )));
        }
        let request = CertificateSigningRequestDer::from(request_der.to_vec());
        let mut csr = CertificateSigningRequestParams::from_der(&request)?;
        let params = &mut csr.params;
        params.is_ca = IsCa::ExplicitNoCa;
        params.custom_extensions.clear();
        params.key_usages = usages.iter().filter_map(|u| key_usage(u)).collect();
        params.extended_key_usages = usages.iter().filter_map(|u| extended_key_usage(u)).collect();
        params.use_authority_key_identifier_extension = true;
        set_validity(params, unix_now(), validity);
        let issuer = Issuer::from_ca_cert_der(&self.ca_der, &self.ca_key)?;
        let cert = csr.signed_by(&issuer)?;
        let der = der::replace_subject(cert.der(), subject_der, &self.ca_key)?;
        Ok(der::pem("CERTIFICATE", &der))
    }
}

/// `KeyUsagesFromStrings`: the key usage a usage string names, if any.
fn key_usage(usage: &str) -> Option<KeyUsagePurpose> {
    Some(match usage {
        "signing" | "digital signature" => KeyUsagePurpose::DigitalSignature,
        "content commitment" => KeyUsagePurpose::ContentCommitment,
        "key encipherment" => KeyUsagePurpose::KeyEncipherment,
        "key agreement" => KeyUsagePurpose::KeyAgreement,
        "data encipherment" => KeyUsagePurpose::DataEncipherment,
        "cert sign" => KeyUsagePurpose::KeyCertSign,
        "crl sign" => KeyUsagePurpose::CrlSign,
        "encipher only" => KeyUsagePurpose::EncipherOnly,
        "decipher only" => KeyUsagePurpose::DecipherOnly,
        _ => return None,
    })
}

/// The extended key usage a usage string names, if any.
fn extended_key_usage(usage: &str) -> Option<ExtendedKeyUsagePurpose> {
    Some(match usage {
        "any" => ExtendedKeyUsagePurpose::Any,
        "server auth" => ExtendedKeyUsagePurpose::ServerAuth,
        "client auth" => ExtendedKeyUsagePurpose::ClientAuth,
        "code signing" => ExtendedKeyUsagePurpose::CodeSigning,
        "email protection" | "s/mime" => ExtendedKeyUsagePurpose::EmailProtection,
        "timestamping" => ExtendedKeyUsagePurpose::TimeStamping,
        "ocsp signing" => ExtendedKeyUsagePurpose::OcspSigning,
        "ipsec end system" => ExtendedKeyUsagePurpose::Other(vec![1, 3, 6, 1, 5, 5, 7, 3, 5]),
        "ipsec tunnel" => ExtendedKeyUsagePurpose::Other(vec![1, 3, 6, 1, 5, 5, 7, 3, 6]),
        "ipsec user" => ExtendedKeyUsagePurpose::Other(vec![1, 3, 6, 1, 5, 5, 7, 3, 7]),
        "microsoft sgc" => ExtendedKeyUsagePurpose::Other(vec![1, 3, 6, 1, 4, 1, 311, 10, 3, 3]),
        "netscape sgc" => ExtendedKeyUsagePurpose::Other(vec![2, 16, 840, 1, 113730, 4, 1]),
        _ => return None,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rcgen::PublicKeyData as _;

    #[test]
    fn signs_with_the_requested_subject_usages_and_validity() {
        let dir = tempfile::tempdir().unwrap();
        let pki = crate::Pki::load_or_create(dir.path(), &[]).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "system:node:n1");
        let request = params.serialize_request(&key).unwrap();
        let subject = der::subject("system:node:n1", &["system:nodes", "extra"]);
        let pem = pki
            .csr_signer()
            .unwrap()
            .sign(
                request.der(),
                &subject,
                &["digital signature", "client auth"],
                Duration::from_secs(3600),
            )
            .unwrap();
        let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        let cert = block.parse_x509().unwrap();
        let identity = crate::identity_from_der(&block.contents).unwrap();
        assert_eq!(identity.user, "system:node:n1");
        assert_eq!(identity.groups, vec!["system:nodes", "extra"]);
        let ca = x509_parser::pem::parse_x509_pem(pki.ca_pem().as_bytes())
            .unwrap()
            .1;
        let ca = ca.parse_x509().unwrap();
        cert.verify_signature(Some(ca.public_key())).unwrap();
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
        let lifetime = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
        assert_eq!(lifetime, 3600 + 5 * 60);
        assert_eq!(cert.public_key().raw, key.subject_public_key_info());
    }
}
