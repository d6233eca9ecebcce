//! Just enough DER to give an rcgen-made certificate a subject with
//! repeated attributes: rcgen's `DistinguishedName` keeps one value per
//! attribute type, and Kubernetes puts each group in its own O.

use base64::Engine as _;
use rcgen::{KeyPair, SigningKey as _};

use crate::PkiError;

const TAG_SEQUENCE: u8 = 0x30;
const TAG_SET: u8 = 0x31;
const TAG_UTF8_STRING: u8 = 0x0c;
const TAG_BIT_STRING: u8 = 0x03;
const TAG_VERSION: u8 = 0xa0;
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
    let outer = contents(cert).ok_or_else(malformed)?;
    let (_, tbs_len) = tlv(outer).ok_or_else(malformed)?;
    let tbs = outer.get(..tbs_len).ok_or_else(malformed)?;
    let rest = outer.get(tbs_len..).ok_or_else(malformed)?;
    let (_, sig_alg_len) = tlv(rest).ok_or_else(malformed)?;
    let sig_alg = rest.get(..sig_alg_len).ok_or_else(malformed)?;

    // TBSCertificate: [0] version (v3), serialNumber, signature, issuer,
    // validity, then subject.
    let fields = contents(tbs).ok_or_else(malformed)?;
    let before = if fields.first() == Some(&TAG_VERSION) {
        5
    } else {
        4
    };
    let mut offset = 0;
    for _ in 0..before {
        let (_, len) = tlv(fields.get(offset..).ok_or_else(malformed)?).ok_or_else(malformed)?;
        offset += len;
    }
    let (_, old_subject_len) = tlv(fields.get(offset..).ok_or_else(malformed)?).ok_or_else(malformed)?;
    let after = fields.get(offset + old_subject_len..).ok_or_else(malformed)?;

    let mut new_fields = fields.get(..offset).ok_or_else(malformed)?.to_vec();
    new_fields.extend_from_slice(subject);
    new_fields.extend_from_slice(after);
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

/// PEM text for `der` under `label`, 64 characters a line.
pub(crate) fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    // Base64 output is ASCII, so splitting bytes never splits a character.
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The header length and total length of the TLV at the start of `der`.
fn tlv(der: &[u8]) -> Option<(usize, usize)> {
    let first = *der.get(1)?;
    let (header, len) = if first < 0x80 {
        (2, usize::from(first))
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let len = der
            .get(2..2 + n)?
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (2 + n, len)
    };
    let total = header.checked_add(len)?;
    (total <= der.len()).then_some((header, total))
}

/// The contents of the TLV at the start of `der`.
fn contents(der: &[u8]) -> Option<&[u8]> {
    let (header, total) = tlv(der)?;
    der.get(header..total)
}

fn push_tlv(out: &mut Vec<u8>, tag: u8, contents: &[u8]) {
    out.push(tag);
    let len = contents.len();
    if let Ok(short) = u8::try_from(len)
        && short < 0x80
    {
        out.push(short);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        let long = &bytes[skip..];
        // At most size_of::<usize>() bytes, so this fits the 7-bit count.
        out.push(0x80 | long.len() as u8);
        out.extend_from_slice(long);
    }
    out.extend_from_slice(contents);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use x509_parser::prelude::FromDer as _;

    #[test]
    fn lengths_round_trip() {
        for len in [0usize, 1, 127, 128, 255, 256, 65_535, 65_536, 1 << 20] {
            let mut out = Vec::new();
            push_tlv(&mut out, TAG_SEQUENCE, &vec![7u8; len]);
            let (header, total) = tlv(&out).unwrap();
            assert_eq!(total, out.len());
            assert_eq!(total - header, len);
        }
        assert_eq!(tlv(&[0x30, 0x05, 0]), None, "truncated");
    }

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
