//! Certificate subjects with repeated attributes, over badge-token's DER module: rcgen's
//! `DistinguishedName` keeps one value per attribute type, and Kubernetes puts each group in
//! its own O.

use badge_token::der::{
    Reader, TAG_BIT_STRING, TAG_CONTEXT_0, TAG_SEQUENCE, TAG_SET, TAG_UTF8_STRING, push_tlv,
};
use rcgen::{KeyPair, SigningKey as _};

use crate::PkiError;

pub(crate) use badge_token::pem::encode as pem;

/// id-at-organizationName, 2.5.4.10, as an encoded OID TLV.
const OID_ORGANIZATION: [u8; 5] = [0x06, 0x03, 0x55, 0x04, 0x0a];
/// id-at-commonName, 2.5.4.3, as an encoded OID TLV.
const OID_COMMON_NAME: [u8; 5] = [0x06, 0x03, 0x55, 0x04, 0x03];

/// A subject Name: one RDN per organization, in order, then the CN, the
/// order Go's crypto/x509 writes them in. Strings are UTF8String, as
/// RFC 5280 asks of new certificates.
pub(crate) fn subject(common_name: &str, organizations: &[&str]) -> Vec<u8> {
    let mut rdns = Vec::new();
    let attributes = organizations
        .iter()
        .map(|o| (&OID_ORGANIZATION, *o))
        .chain([(&OID_COMMON_NAME, common_name)]);
    for (oid, value) in attributes {
        let mut pair = oid.to_vec();
        push_tlv(&mut pair, TAG_UTF8_STRING, value.as_bytes());
        let mut set = Vec::new();
        push_tlv(&mut set, TAG_SEQUENCE, &pair);
        push_tlv(&mut rdns, TAG_SET, &set);
    }
    let mut name = Vec::new();
    push_tlv(&mut name, TAG_SEQUENCE, &rdns);
    name
}

/// Returns `cert` with its subject replaced by `subject` (an encoded Name)
/// and re-signed by `signer`, which must be the key that signed `cert`: the
/// signature algorithm identifiers are kept as they are.
pub(crate) fn replace_subject(cert: &[u8], subject: &[u8], signer: &KeyPair) -> Result<Vec<u8>, PkiError> {
    let malformed = || PkiError::Parse {
        what: "generated certificate".into(),
        reason: "unexpected DER layout".into(),
    };
    // Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue }
    let mut outer = Reader::new(Reader::new(cert).expect(TAG_SEQUENCE).ok_or_else(malformed)?);
    let tbs = outer.expect(TAG_SEQUENCE).ok_or_else(malformed)?;
    let (_, _, sig_alg) = outer.next().ok_or_else(malformed)?;

    // TBSCertificate: [0] version (v3), serialNumber, signature, issuer,
    // validity, then subject.
    let mut fields = Reader::new(tbs);
    let mut new_fields = Vec::new();
    let (tag, _, first) = fields.next().ok_or_else(malformed)?;
    new_fields.extend_from_slice(first);
    let before_subject = if tag == TAG_CONTEXT_0 { 4 } else { 3 };
    for _ in 0..before_subject {
        let (_, _, whole) = fields.next().ok_or_else(malformed)?;
        new_fields.extend_from_slice(whole);
    }
    fields.expect(TAG_SEQUENCE).ok_or_else(malformed)?; // the subject replaced
    new_fields.extend_from_slice(subject);
    new_fields.extend_from_slice(fields.rest());
    let mut new_tbs = Vec::new();
    push_tlv(&mut new_tbs, TAG_SEQUENCE, &new_fields);

    let signature = signer.sign(&new_tbs)?;
    let mut bits = Vec::with_capacity(signature.len() + 1);
    bits.push(0); // no unused bits
    bits.extend_from_slice(&signature);

    let mut body = new_tbs;
    body.extend_from_slice(sig_alg);
    push_tlv(&mut body, TAG_BIT_STRING, &bits);
    let mut out = Vec::new();
    push_tlv(&mut out, TAG_SEQUENCE, &body);
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use x509_parser::prelude::FromDer as _;

    #[test]
    fn subject_parses_with_every_organization() {
        let der = subject("u", &["a", "b", "c"]);
        let (rest, name) = x509_parser::x509::X509Name::from_der(&der).unwrap();
        assert!(rest.is_empty());
        let orgs: Vec<_> = name.iter_organization().map(|o| o.as_str().unwrap()).collect();
        assert_eq!(orgs, ["a", "b", "c"]);
        let cn: Vec<_> = name.iter_common_name().map(|o| o.as_str().unwrap()).collect();
        assert_eq!(cn, ["u"]);
    }
}
