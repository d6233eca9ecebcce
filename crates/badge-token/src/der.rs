//! badge's one DER module: just enough to read the parts of keys aws-lc-rs does not hand out
//! (the algorithm of a SubjectPublicKeyInfo, RSA `n`/`e` and EC points for JWKs, the SPKI
//! inside a certificate, the modulus size of an RSA private key before aws-lc-rs refuses it
//! without saying why), and to write the TLVs of the certificate subjects the PKI builds.
//! Inputs are operator-supplied key files, still every read is bounds-checked.

/// Universal tag of an INTEGER.
pub const TAG_INTEGER: u8 = 0x02;
/// Universal tag of a BIT STRING.
pub const TAG_BIT_STRING: u8 = 0x03;
/// Universal tag of an OCTET STRING.
pub const TAG_OCTET_STRING: u8 = 0x04;
/// Universal tag of an OBJECT IDENTIFIER.
pub const TAG_OID: u8 = 0x06;
/// Universal tag of a SEQUENCE, constructed.
pub const TAG_SEQUENCE: u8 = 0x30;
/// Universal tag of a UTF8String.
pub const TAG_UTF8_STRING: u8 = 0x0c;
/// Universal tag of a SET, constructed.
pub const TAG_SET: u8 = 0x31;
/// `[0]`, constructed: an explicit tag, such as a certificate's version.
pub const TAG_CONTEXT_0: u8 = 0xa0;

/// `rsaEncryption` (1.2.840.113549.1.1.1), the algorithm of every RSA key.
pub const OID_RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
/// `id-ecPublicKey` (1.2.840.10045.2.1), the algorithm of every EC key.
pub const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// `prime256v1` (1.2.840.10045.3.1.7), the curve of ES256.
pub const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// `secp384r1` (1.3.132.0.34), the curve of ES384.
pub const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
/// `secp521r1` (1.3.132.0.35), the curve of ES512.
pub const OID_P521: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x23];

/// A cursor over a run of DER TLVs.
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader at the start of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { rest: data }
    }

    /// Whether every TLV has been read.
    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// What has not been read yet.
    pub fn rest(&self) -> &'a [u8] {
        self.rest
    }

    /// Reads one TLV that must carry `tag`, returning its contents.
    pub fn expect(&mut self, tag: u8) -> Option<&'a [u8]> {
        match self.next()? {
            (t, contents, _) if t == tag => Some(contents),
            _ => None,
        }
    }
}

impl<'a> Iterator for Reader<'a> {
    type Item = (u8, &'a [u8], &'a [u8]);

    /// Reads one TLV: its tag, its contents, and the whole encoding.
    fn next(&mut self) -> Option<(u8, &'a [u8], &'a [u8])> {
        let data = self.rest;
        let tag = *data.first()?;
        // Multi-byte tags never occur in the structures read here.
        if tag & 0x1f == 0x1f {
            return None;
        }
        let first = *data.get(1)?;
        let (len, header) = if first < 0x80 {
            (usize::from(first), 2)
        } else {
            let n = usize::from(first & 0x7f);
            // 0x80 is BER's indefinite length, not DER; more than 4 length bytes is absurd here.
            if n == 0 || n > 4 {
                return None;
            }
            let mut len = 0usize;
            for b in data.get(2..2 + n)? {
                len = (len << 8) | usize::from(*b);
            }
            (len, 2 + n)
        };
        let end = header.checked_add(len)?;
        let whole = data.get(..end)?;
        let contents = &whole[header..];
        self.rest = &data[end..];
        Some((tag, contents, whole))
    }
}

/// The unsigned big-endian magnitude of a DER INTEGER's contents, without sign padding.
pub fn unsigned(int: &[u8]) -> &[u8] {
    let mut int = int;
    while let [0, rest @ ..] = int {
        if rest.is_empty() {
            break;
        }
        int = rest;
    }
    int
}

/// Bit length of an unsigned big-endian integer.
pub fn bit_len(magnitude: &[u8]) -> usize {
    let magnitude = unsigned(magnitude);
    match magnitude.first() {
        None | Some(0) => 0,
        Some(top) => (magnitude.len() - 1) * 8 + (8 - top.leading_zeros() as usize),
    }
}

/// The parts of a SubjectPublicKeyInfo: algorithm OID, its parameters TLV (if any) and the
/// subjectPublicKey bits (whole bytes only).
pub struct Spki<'a> {
    /// Contents of the algorithm OBJECT IDENTIFIER.
    pub algorithm: &'a [u8],
    /// Tag and contents of the algorithm's parameters: the curve OID for EC, NULL for RSA.
    pub parameters: Option<(u8, &'a [u8])>,
    /// The subjectPublicKey bits, as bytes.
    pub key: &'a [u8],
}

/// The parts of a SubjectPublicKeyInfo, `None` when `der` is not exactly one.
pub fn spki(der: &[u8]) -> Option<Spki<'_>> {
    let mut outer = Reader::new(der);
    let body = outer.expect(TAG_SEQUENCE)?;
    if !outer.is_empty() {
        return None;
    }
    let mut body = Reader::new(body);
    let mut alg = Reader::new(body.expect(TAG_SEQUENCE)?);
    let algorithm = alg.expect(TAG_OID)?;
    let parameters = alg.next().map(|(tag, contents, _)| (tag, contents));
    let bits = body.expect(TAG_BIT_STRING)?;
    let (&unused, key) = bits.split_first()?;
    if unused != 0 || !body.is_empty() {
        return None;
    }
    Some(Spki {
        algorithm,
        parameters,
        key,
    })
}

/// `n` and `e` of a PKCS#1 RSAPublicKey, as unsigned magnitudes.
pub fn rsa_public_key(der: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut body = Reader::new(Reader::new(der).expect(TAG_SEQUENCE)?);
    let n = body.expect(TAG_INTEGER)?;
    let e = body.expect(TAG_INTEGER)?;
    Some((unsigned(n), unsigned(e)))
}

/// The modulus of a PKCS#1 RSAPrivateKey.
pub fn rsa_private_modulus(der: &[u8]) -> Option<&[u8]> {
    let mut body = Reader::new(Reader::new(der).expect(TAG_SEQUENCE)?);
    body.expect(TAG_INTEGER)?; // version
    body.expect(TAG_INTEGER).map(unsigned)
}

/// The parts of a PKCS#8 PrivateKeyInfo: algorithm OID, its parameters TLV (if any) and the
/// contents of the privateKey OCTET STRING.
pub struct Pkcs8<'a> {
    /// Contents of the algorithm OBJECT IDENTIFIER.
    pub algorithm: &'a [u8],
    /// Tag and contents of the algorithm's parameters: the curve OID for EC, NULL for RSA.
    pub parameters: Option<(u8, &'a [u8])>,
    /// The privateKey OCTET STRING's contents (a PKCS#1 or SEC 1 key).
    pub key: &'a [u8],
}

/// The parts of a PKCS#8 PrivateKeyInfo, `None` when `der` is not one.
pub fn pkcs8(der: &[u8]) -> Option<Pkcs8<'_>> {
    let mut body = Reader::new(Reader::new(der).expect(TAG_SEQUENCE)?);
    body.expect(TAG_INTEGER)?; // version
    let mut alg = Reader::new(body.expect(TAG_SEQUENCE)?);
    let algorithm = alg.expect(TAG_OID)?;
    let parameters = alg.next().map(|(tag, contents, _)| (tag, contents));
    let key = body.expect(TAG_OCTET_STRING)?;
    Some(Pkcs8 {
        algorithm,
        parameters,
        key,
    })
}

/// The whole SubjectPublicKeyInfo TLV of an X.509 certificate.
pub fn certificate_spki(der: &[u8]) -> Option<&[u8]> {
    let mut cert = Reader::new(Reader::new(der).expect(TAG_SEQUENCE)?);
    let mut tbs = Reader::new(cert.expect(TAG_SEQUENCE)?);
    let (mut tag, _, _) = tbs.next()?;
    if tag == TAG_CONTEXT_0 {
        // explicit version, then the serial number
        (tag, _, _) = tbs.next()?;
    }
    if tag != TAG_INTEGER {
        return None;
    }
    tbs.expect(TAG_SEQUENCE)?; // signature algorithm
    tbs.expect(TAG_SEQUENCE)?; // issuer
    tbs.expect(TAG_SEQUENCE)?; // validity
    tbs.expect(TAG_SEQUENCE)?; // subject
    match tbs.next()? {
        (TAG_SEQUENCE, _, whole) => Some(whole),
        _ => None,
    }
}

/// Appends one TLV: `tag`, the definite length of `contents`, then `contents`.
pub fn push_tlv(out: &mut Vec<u8>, tag: u8, contents: &[u8]) {
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
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reads_short_and_long_lengths() {
        let mut long = vec![0x04, 0x81, 0x80];
        long.extend(std::iter::repeat_n(7u8, 0x80));
        let mut r = Reader::new(&long);
        let (tag, contents, whole) = r.next().unwrap();
        assert_eq!((tag, contents.len(), whole.len()), (0x04, 0x80, 0x83));
        assert!(r.is_empty());

        assert!(
            Reader::new(&[0x04, 0x80, 0x00, 0x00]).next().is_none(),
            "indefinite length"
        );
        assert!(Reader::new(&[0x04, 0x05, 0x00]).next().is_none(), "truncated");
        assert!(
            Reader::new(&[0x04, 0x85, 1, 1, 1, 1, 1]).next().is_none(),
            "5 length bytes"
        );
        assert!(
            Reader::new(&[0x1f, 0x01, 0x00]).next().is_none(),
            "multi-byte tag"
        );
        assert!(Reader::new(&[]).next().is_none());
    }

    #[test]
    fn written_lengths_read_back() {
        for len in [0usize, 1, 127, 128, 255, 256, 65_535, 65_536, 1 << 20] {
            let mut out = Vec::new();
            push_tlv(&mut out, TAG_SEQUENCE, &vec![7u8; len]);
            let mut r = Reader::new(&out);
            let (tag, contents, whole) = r.next().unwrap();
            assert_eq!((tag, contents.len(), whole.len()), (TAG_SEQUENCE, len, out.len()));
            assert!(r.is_empty());
        }
    }

    #[test]
    fn integers() {
        assert_eq!(unsigned(&[0, 0x80, 1]), &[0x80, 1]);
        assert_eq!(unsigned(&[0]), &[0]);
        assert_eq!(bit_len(&[0, 0x80, 0]), 16);
        assert_eq!(bit_len(&[0x01, 0xff]), 9);
        assert_eq!(bit_len(&[0]), 0);
    }
}
