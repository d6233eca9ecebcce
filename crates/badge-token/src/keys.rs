//! Signing and verifying keys, after kube-apiserver's `pkg/serviceaccount/jwt.go`
//! (`JWTTokenGenerator`, `keyIDFromPublicKey`), `openidmetadata.go` (`jwkFromPublicKey`) and
//! client-go `util/keyutil` (`ParsePublicKeysPEM`, what `--service-account-key-file` accepts).
//!
//! Every key is parsed once, when loaded, into an aws-lc-rs object that lives as long as the key:
//! rebuilding a key per token was measured to double the cost of RS256 signing.
//!
//! Deliberate differences from upstream: RSA keys under 2048 bits (and over 8192, which
//! aws-lc-rs cannot verify) are refused at load, and a PEM block whose label names a key but
//! whose contents do not parse is an error rather than silently skipped.

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::digest;
use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED,
    ECDSA_P384_SHA384_FIXED_SIGNING, ECDSA_P521_SHA512_FIXED, ECDSA_P521_SHA512_FIXED_SIGNING, EcdsaKeyPair,
    EcdsaSigningAlgorithm, EcdsaVerificationAlgorithm, KeyPair as _, ParsedPublicKey,
    RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::{der, pem};

/// Smallest RSA modulus accepted anywhere (verification step 5).
pub const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus aws-lc-rs verifies with `RSA_PKCS1_2048_8192_SHA256`.
pub const MAX_RSA_BITS: usize = 8192;

/// A JWS algorithm that badge signs with and accepts. The algorithm is a property of the key,
/// never chosen by a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256, any RSA key.
    #[serde(rename = "RS256")]
    Rs256,
    /// ECDSA P-256 with SHA-256.
    #[serde(rename = "ES256")]
    Es256,
    /// ECDSA P-384 with SHA-384.
    #[serde(rename = "ES384")]
    Es384,
    /// ECDSA P-521 with SHA-512.
    #[serde(rename = "ES512")]
    Es512,
}

impl Algorithm {
    /// The JOSE name, as written in the `alg` header.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::Es256 => "ES256",
            Self::Es384 => "ES384",
            Self::Es512 => "ES512",
        }
    }

    /// The algorithm with this exact (case-sensitive) JOSE name, if badge accepts it.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "RS256" => Some(Self::Rs256),
            "ES256" => Some(Self::Es256),
            "ES384" => Some(Self::Es384),
            "ES512" => Some(Self::Es512),
            _ => None,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The NIST curves upstream accepts for ECDSA keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Curve {
    /// secp256r1 / prime256v1, ES256.
    P256,
    /// secp384r1, ES384.
    P384,
    /// secp521r1, ES512.
    P521,
}

impl Curve {
    /// The JWK `crv` name.
    pub fn name(self) -> &'static str {
        match self {
            Self::P256 => "P-256",
            Self::P384 => "P-384",
            Self::P521 => "P-521",
        }
    }

    /// The JWS algorithm pinned to keys on this curve.
    pub fn algorithm(self) -> Algorithm {
        match self {
            Self::P256 => Algorithm::Es256,
            Self::P384 => Algorithm::Es384,
            Self::P521 => Algorithm::Es512,
        }
    }

    /// Bytes in one coordinate, and in each of r and s of a JOSE signature.
    pub fn coordinate_len(self) -> usize {
        match self {
            Self::P256 => 32,
            Self::P384 => 48,
            Self::P521 => 66,
        }
    }

    fn from_oid(oid: &[u8]) -> Option<Self> {
        match oid {
            der::OID_P256 => Some(Self::P256),
            der::OID_P384 => Some(Self::P384),
            der::OID_P521 => Some(Self::P521),
            _ => None,
        }
    }

    fn signing(self) -> &'static EcdsaSigningAlgorithm {
        match self {
            Self::P256 => &ECDSA_P256_SHA256_FIXED_SIGNING,
            Self::P384 => &ECDSA_P384_SHA384_FIXED_SIGNING,
            Self::P521 => &ECDSA_P521_SHA512_FIXED_SIGNING,
        }
    }

    fn verification(self) -> &'static EcdsaVerificationAlgorithm {
        match self {
            Self::P256 => &ECDSA_P256_SHA256_FIXED,
            Self::P384 => &ECDSA_P384_SHA384_FIXED,
            Self::P521 => &ECDSA_P521_SHA512_FIXED,
        }
    }
}

/// Why a key could not be loaded, generated or used. Messages never contain key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The input has no usable key.
    #[error("no key found in PEM input")]
    NoKey,
    /// The input must hold exactly one private key.
    #[error("expected exactly one private key in PEM input, found {0}")]
    NotOneKey(usize),
    /// Broken armour or base64 inside it.
    #[error("malformed PEM")]
    MalformedPem,
    /// Password-protected keys cannot be loaded by an unattended server.
    #[error("encrypted PEM keys are not supported")]
    EncryptedPem,
    /// The DER inside a recognised block does not parse as that kind of key.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// Neither RSA nor ECDSA.
    #[error("unknown key type, must be RSA or ECDSA")]
    UnsupportedKeyType,
    /// An ECDSA curve other than P-256/384/521 (upstream wording).
    #[error("unknown private key curve, must be 256, 384, or 521")]
    UnsupportedCurve,
    /// An elliptic-curve point in compressed form, which Go's x509 parser refuses too.
    #[error("compressed elliptic-curve points are not supported")]
    CompressedPoint,
    /// RSA modulus too short to be trusted.
    #[error("RSA key of {bits} bits refused: at least {MIN_RSA_BITS} bits are required")]
    RsaTooSmall {
        /// Modulus size found.
        bits: usize,
    },
    /// RSA modulus longer than the verifier supports.
    #[error("RSA key of {bits} bits refused: at most {MAX_RSA_BITS} bits are supported")]
    RsaTooLarge {
        /// Modulus size found.
        bits: usize,
    },
    /// `generate_rsa` supports the sizes aws-lc-rs generates.
    #[error("RSA key generation supports 2048, 3072, 4096 or 8192 bits, not {0}")]
    UnsupportedRsaSize(usize),
    /// aws-lc-rs refused to generate, serialise or sign.
    #[error("cryptographic operation failed: {0}")]
    Crypto(&'static str),
}

// === impl SigningKey ===

/// A private key that signs tokens. Cheap to clone (shared); the aws-lc-rs key object is built
/// once. `Debug` shows only the algorithm and kid.
#[derive(Clone)]
pub struct SigningKey {
    inner: Arc<SigningInner>,
}

struct SigningInner {
    pair: Pair,
    public: VerifyingKey,
}

enum Pair {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
}

impl SigningKey {
    /// A new RSA key of `bits` (2048, 3072, 4096 or 8192). Slow: tens of milliseconds to
    /// seconds.
    pub fn generate_rsa(bits: usize) -> Result<Self, KeyError> {
        let size = match bits {
            2048 => KeySize::Rsa2048,
            3072 => KeySize::Rsa3072,
            4096 => KeySize::Rsa4096,
            8192 => KeySize::Rsa8192,
            b if b < MIN_RSA_BITS => return Err(KeyError::RsaTooSmall { bits }),
            _ => return Err(KeyError::UnsupportedRsaSize(bits)),
        };
        let pair = RsaKeyPair::generate(size).map_err(|_| KeyError::Crypto("RSA key generation"))?;
        Self::from_rsa(pair)
    }

    /// A new ECDSA key on `curve`.
    pub fn generate_ec(curve: Curve) -> Result<Self, KeyError> {
        let pair =
            EcdsaKeyPair::generate(curve.signing()).map_err(|_| KeyError::Crypto("EC key generation"))?;
        Self::from_ec(pair)
    }

    /// The single private key in `pem`: PKCS#1 `RSA PRIVATE KEY`, PKCS#8 `PRIVATE KEY` or SEC1
    /// `EC PRIVATE KEY`. Other blocks (`EC PARAMETERS`, certificates, public keys) are ignored,
    /// so a key file with its certificate beside it loads.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let mut keys = Vec::new();
        for block in pem::parse_all(pem)? {
            if let Some(key) = Self::from_block(&block)? {
                keys.push(key);
            }
        }
        match keys.len() {
            1 => Ok(keys.remove(0)),
            0 => Err(KeyError::NoKey),
            n => Err(KeyError::NotOneKey(n)),
        }
    }

    /// A PKCS#8 `PrivateKeyInfo` holding an RSA or ECDSA key.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, KeyError> {
        let info = der::pkcs8(der).ok_or(KeyError::Malformed("PKCS#8 private key"))?;
        match info.algorithm {
            der::OID_RSA_ENCRYPTION => {
                check_rsa_bits(der::rsa_private_modulus(info.key))?;
                let pair =
                    RsaKeyPair::from_pkcs8(der).map_err(|_| KeyError::Malformed("PKCS#8 RSA private key"))?;
                Self::from_rsa(pair)
            }
            der::OID_EC_PUBLIC_KEY => {
                let curve = match info.parameters {
                    Some((der::TAG_OID, oid)) => Curve::from_oid(oid).ok_or(KeyError::UnsupportedCurve)?,
                    _ => return Err(KeyError::Malformed("PKCS#8 EC private key")),
                };
                let pair = EcdsaKeyPair::from_pkcs8(curve.signing(), der)
                    .map_err(|_| KeyError::Malformed("PKCS#8 EC private key"))?;
                Self::from_ec(pair)
            }
            _ => Err(KeyError::UnsupportedKeyType),
        }
    }

    /// A PKCS#1 `RSAPrivateKey`.
    pub fn from_pkcs1_der(der: &[u8]) -> Result<Self, KeyError> {
        check_rsa_bits(der::rsa_private_modulus(der))?;
        let pair = RsaKeyPair::from_der(der).map_err(|_| KeyError::Malformed("PKCS#1 RSA private key"))?;
        Self::from_rsa(pair)
    }

    /// A SEC1 (RFC 5915) `ECPrivateKey`.
    pub fn from_sec1_der(der: &[u8]) -> Result<Self, KeyError> {
        let curve = sec1_curve(der)?;
        let candidates: &[Curve] = match &curve {
            Some(c) => std::slice::from_ref(c),
            // Parameters are optional in SEC1; then the key only fits its own curve.
            None => &[Curve::P256, Curve::P384, Curve::P521],
        };
        for c in candidates {
            if let Ok(pair) = EcdsaKeyPair::from_private_key_der(c.signing(), der) {
                return Self::from_ec(pair);
            }
        }
        Err(KeyError::Malformed("SEC1 EC private key"))
    }

    /// The key as an unencrypted PKCS#8 PEM block, for persisting. This is private key
    /// material: never log it.
    pub fn to_pkcs8_pem(&self) -> Result<String, KeyError> {
        let der = match &self.inner.pair {
            Pair::Rsa(pair) => {
                let doc: Pkcs8V1Der<'static> = pair
                    .as_der()
                    .map_err(|_| KeyError::Crypto("PKCS#8 serialisation"))?;
                doc.as_ref().to_vec()
            }
            Pair::Ec(pair) => pair
                .to_pkcs8v1()
                .map_err(|_| KeyError::Crypto("PKCS#8 serialisation"))?
                .as_ref()
                .to_vec(),
        };
        Ok(pem::encode("PRIVATE KEY", &der))
    }

    /// The algorithm this key signs with.
    pub fn algorithm(&self) -> Algorithm {
        self.inner.public.algorithm()
    }

    /// The kid of the public half.
    pub fn kid(&self) -> &str {
        self.inner.public.kid()
    }

    /// The public half.
    pub fn public(&self) -> &VerifyingKey {
        &self.inner.public
    }

    /// Signs `msg`. ECDSA signatures are in JOSE form: r‖s, each left-padded to the curve size.
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, KeyError> {
        let rng = SystemRandom::new();
        match &self.inner.pair {
            Pair::Rsa(pair) => {
                let mut sig = vec![0; pair.public_modulus_len()];
                pair.sign(&RSA_PKCS1_SHA256, &rng, msg, &mut sig)
                    .map_err(|_| KeyError::Crypto("RSA signing"))?;
                Ok(sig)
            }
            Pair::Ec(pair) => Ok(pair
                .sign(&rng, msg)
                .map_err(|_| KeyError::Crypto("ECDSA signing"))?
                .as_ref()
                .to_vec()),
        }
    }

    fn from_block(block: &pem::Block) -> Result<Option<Self>, KeyError> {
        match block.label.as_str() {
            "RSA PRIVATE KEY" => Self::from_pkcs1_der(&block.der).map(Some),
            "PRIVATE KEY" => Self::from_pkcs8_der(&block.der).map(Some),
            "EC PRIVATE KEY" => Self::from_sec1_der(&block.der).map(Some),
            _ => Ok(None),
        }
    }

    fn from_rsa(pair: RsaKeyPair) -> Result<Self, KeyError> {
        let spki: PublicKeyX509Der<'static> = pair
            .public_key()
            .as_der()
            .map_err(|_| KeyError::Crypto("public key serialisation"))?;
        let public = VerifyingKey::from_spki_der(spki.as_ref())?;
        Ok(Self {
            inner: Arc::new(SigningInner {
                pair: Pair::Rsa(pair),
                public,
            }),
        })
    }

    fn from_ec(pair: EcdsaKeyPair) -> Result<Self, KeyError> {
        let spki: PublicKeyX509Der<'static> = pair
            .public_key()
            .as_der()
            .map_err(|_| KeyError::Crypto("public key serialisation"))?;
        let public = VerifyingKey::from_spki_der(spki.as_ref())?;
        Ok(Self {
            inner: Arc::new(SigningInner {
                pair: Pair::Ec(pair),
                public,
            }),
        })
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.algorithm())
            .field("kid", &self.kid())
            .finish_non_exhaustive()
    }
}

// === impl VerifyingKey ===

/// A public key that verifies tokens, with its pinned algorithm and its kid. Cheap to clone.
#[derive(Clone)]
pub struct VerifyingKey {
    inner: Arc<VerifyingInner>,
}

struct VerifyingInner {
    alg: Algorithm,
    kid: String,
    spki: Vec<u8>,
    parsed: ParsedPublicKey,
    signature_len: usize,
    params: JwkParams,
}

enum JwkParams {
    Rsa { n: String, e: String },
    Ec { curve: Curve, x: String, y: String },
}

impl VerifyingKey {
    /// A DER SubjectPublicKeyInfo (`PUBLIC KEY`) holding an RSA or ECDSA key.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, KeyError> {
        let info = der::spki(der).ok_or(KeyError::Malformed("SubjectPublicKeyInfo"))?;
        match info.algorithm {
            der::OID_RSA_ENCRYPTION => {
                let (n, _) = der::rsa_public_key(info.key).ok_or(KeyError::Malformed("RSA public key"))?;
                check_rsa_bits(Some(n))?;
                let parsed = ParsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, der)
                    .map_err(|_| KeyError::Malformed("RSA public key"))?;
                // The kid hashes Go's `x509.MarshalPKIXPublicKey` output, which is the canonical
                // re-encoding of the key, not whatever bytes the file held.
                let canonical = canonical_spki(&parsed)?;
                let canonical_info =
                    der::spki(&canonical).ok_or(KeyError::Malformed("SubjectPublicKeyInfo"))?;
                let (n, e) =
                    der::rsa_public_key(canonical_info.key).ok_or(KeyError::Malformed("RSA public key"))?;
                let params = JwkParams::Rsa {
                    n: URL_SAFE_NO_PAD.encode(n),
                    e: URL_SAFE_NO_PAD.encode(e),
                };
                let signature_len = n.len();
                Ok(Self::assemble(
                    Algorithm::Rs256,
                    canonical,
                    parsed,
                    signature_len,
                    params,
                ))
            }
            der::OID_EC_PUBLIC_KEY => {
                let curve = match info.parameters {
                    Some((der::TAG_OID, oid)) => Curve::from_oid(oid).ok_or(KeyError::UnsupportedCurve)?,
                    _ => return Err(KeyError::Malformed("EC public key parameters")),
                };
                let size = curve.coordinate_len();
                match info.key.first() {
                    Some(0x04) if info.key.len() == 1 + 2 * size => {}
                    Some(0x02 | 0x03) => return Err(KeyError::CompressedPoint),
                    _ => return Err(KeyError::Malformed("EC public key point")),
                }
                let parsed = ParsedPublicKey::new(curve.verification(), der)
                    .map_err(|_| KeyError::Malformed("EC public key"))?;
                let canonical = canonical_spki(&parsed)?;
                let point = &info.key[1..];
                let params = JwkParams::Ec {
                    curve,
                    x: URL_SAFE_NO_PAD.encode(&point[..size]),
                    y: URL_SAFE_NO_PAD.encode(&point[size..]),
                };
                Ok(Self::assemble(
                    curve.algorithm(),
                    canonical,
                    parsed,
                    2 * size,
                    params,
                ))
            }
            _ => Err(KeyError::UnsupportedKeyType),
        }
    }

    /// A PKCS#1 `RSAPublicKey` (`RSA PUBLIC KEY`).
    pub fn from_pkcs1_der(der: &[u8]) -> Result<Self, KeyError> {
        let (n, _) = der::rsa_public_key(der).ok_or(KeyError::Malformed("PKCS#1 RSA public key"))?;
        check_rsa_bits(Some(n))?;
        let parsed = ParsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, der)
            .map_err(|_| KeyError::Malformed("PKCS#1 RSA public key"))?;
        Self::from_spki_der(&canonical_spki(&parsed)?)
    }

    /// The single key in `pem`; see [`VerifyingKey::all_from_pem`] for what counts as a key.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let mut keys = Self::all_from_pem(pem)?;
        match keys.len() {
            1 => Ok(keys.remove(0)),
            n => Err(KeyError::NotOneKey(n)),
        }
    }

    /// Every key in `pem`, in order, as kube-apiserver's `--service-account-key-file` reads it:
    /// `PUBLIC KEY`, `RSA PUBLIC KEY`, `CERTIFICATE`, and private keys (`RSA PRIVATE KEY`,
    /// `PRIVATE KEY`, `EC PRIVATE KEY`) reduced to their public halves, so the kid is the same
    /// whichever half is listed. Other blocks (`EC PARAMETERS`) are skipped; no key at all is an
    /// error.
    pub fn all_from_pem(pem: &str) -> Result<Vec<Self>, KeyError> {
        let mut keys = Vec::new();
        for block in pem::parse_all(pem)? {
            let key = match block.label.as_str() {
                "PUBLIC KEY" => Self::from_spki_der(&block.der)?,
                "RSA PUBLIC KEY" => Self::from_pkcs1_der(&block.der)?,
                "CERTIFICATE" => Self::from_spki_der(
                    der::certificate_spki(&block.der).ok_or(KeyError::Malformed("certificate"))?,
                )?,
                _ => match SigningKey::from_block(&block)? {
                    Some(private) => private.public().clone(),
                    None => continue,
                },
            };
            keys.push(key);
        }
        if keys.is_empty() {
            return Err(KeyError::NoKey);
        }
        Ok(keys)
    }

    /// base64url (no padding) of SHA-256 over the DER SubjectPublicKeyInfo: always 43
    /// characters, the same in token headers, the verifier and the JWKS.
    pub fn kid(&self) -> &str {
        &self.inner.kid
    }

    /// The only algorithm tokens checked with this key may use.
    pub fn algorithm(&self) -> Algorithm {
        self.inner.alg
    }

    /// The canonical DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> &[u8] {
        &self.inner.spki
    }

    /// The key as a `PUBLIC KEY` PEM block.
    pub fn to_pem(&self) -> String {
        pem::encode("PUBLIC KEY", &self.inner.spki)
    }

    /// The public JWK, with upstream's members in go-jose's order.
    pub fn to_jwk(&self) -> Jwk {
        let mut jwk = Jwk {
            use_: "sig",
            kty: "RSA",
            kid: self.inner.kid.clone(),
            crv: None,
            alg: self.inner.alg.as_str(),
            x: None,
            y: None,
            n: None,
            e: None,
        };
        match &self.inner.params {
            JwkParams::Rsa { n, e } => {
                jwk.n = Some(n.clone());
                jwk.e = Some(e.clone());
            }
            JwkParams::Ec { curve, x, y } => {
                jwk.kty = "EC";
                jwk.crv = Some(curve.name());
                jwk.x = Some(x.clone());
                jwk.y = Some(y.clone());
            }
        }
        jwk
    }

    /// Whether `signature` is this key's signature over `msg` with the key's algorithm. ECDSA
    /// signatures must be raw r‖s of exactly twice the coordinate size (aws-lc also enforces
    /// 1 ≤ r, s < n); RSA signatures exactly the modulus size.
    pub fn verify(&self, msg: &[u8], signature: &[u8]) -> bool {
        signature.len() == self.inner.signature_len && self.inner.parsed.verify_sig(msg, signature).is_ok()
    }

    fn assemble(
        alg: Algorithm,
        spki: Vec<u8>,
        parsed: ParsedPublicKey,
        signature_len: usize,
        params: JwkParams,
    ) -> Self {
        let kid = URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, &spki));
        Self {
            inner: Arc::new(VerifyingInner {
                alg,
                kid,
                spki,
                parsed,
                signature_len,
                params,
            }),
        }
    }
}

impl PartialEq for VerifyingKey {
    fn eq(&self, other: &Self) -> bool {
        self.inner.spki == other.inner.spki
    }
}

impl Eq for VerifyingKey {}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("alg", &self.inner.alg)
            .field("kid", &self.inner.kid)
            .finish_non_exhaustive()
    }
}

/// A public JSON Web Key as kube-apiserver publishes it. Serialises with go-jose's member order:
/// `use, kty, kid, crv, alg, x, y, n, e`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Jwk {
    /// Always `sig`.
    #[serde(rename = "use")]
    pub use_: &'static str,
    /// `RSA` or `EC`.
    pub kty: &'static str,
    /// The key's kid.
    pub kid: String,
    /// EC curve name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crv: Option<&'static str>,
    /// The pinned algorithm.
    pub alg: &'static str,
    /// EC x coordinate, base64url, fixed width.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    /// EC y coordinate, base64url, fixed width.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    /// RSA modulus, base64url, no leading zeros.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    /// RSA public exponent, base64url.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
}

fn canonical_spki(parsed: &ParsedPublicKey) -> Result<Vec<u8>, KeyError> {
    let der: PublicKeyX509Der<'static> = parsed
        .as_der()
        .map_err(|_| KeyError::Crypto("public key serialisation"))?;
    Ok(der.as_ref().to_vec())
}

fn check_rsa_bits(modulus: Option<&[u8]>) -> Result<(), KeyError> {
    let bits = der::bit_len(modulus.ok_or(KeyError::Malformed("RSA key"))?);
    if bits < MIN_RSA_BITS {
        return Err(KeyError::RsaTooSmall { bits });
    }
    if bits > MAX_RSA_BITS {
        return Err(KeyError::RsaTooLarge { bits });
    }
    Ok(())
}

/// The named curve in a SEC1 `ECPrivateKey`'s optional `[0] parameters`.
fn sec1_curve(der: &[u8]) -> Result<Option<Curve>, KeyError> {
    let malformed = KeyError::Malformed("SEC1 EC private key");
    let mut body = der::Reader::new(der::Reader::new(der).expect(der::TAG_SEQUENCE).ok_or(malformed)?);
    body.expect(der::TAG_INTEGER)
        .ok_or(KeyError::Malformed("SEC1 EC private key"))?;
    body.expect(der::TAG_OCTET_STRING)
        .ok_or(KeyError::Malformed("SEC1 EC private key"))?;
    match body.next() {
        Some((0xa0, params, _)) => {
            let oid = der::Reader::new(params)
                .expect(der::TAG_OID)
                .ok_or(KeyError::Malformed("SEC1 EC private key"))?;
            Curve::from_oid(oid).map(Some).ok_or(KeyError::UnsupportedCurve)
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const RSA2048_PKCS1: &str = include_str!("testdata/rsa2048_pkcs1.pem");
    pub(crate) const RSA2048_PKCS8: &str = include_str!("testdata/rsa2048_pkcs8.pem");
    const RSA2048_SPKI: &str = include_str!("testdata/rsa2048_spki.pem");
    const RSA2048_PKCS1_PUB: &str = include_str!("testdata/rsa2048_pkcs1_pub.pem");
    const RSA2048_CERT: &str = include_str!("testdata/rsa2048_cert.pem");
    const RSA1024_PKCS1: &str = include_str!("testdata/rsa1024_pkcs1.pem");
    const RSA1024_SPKI: &str = include_str!("testdata/rsa1024_spki.pem");
    const RSA4096_PKCS1: &str = include_str!("testdata/rsa4096_pkcs1.pem");
    pub(crate) const EC_P256_SEC1: &str = include_str!("testdata/ec_p256_sec1.pem");
    const EC_P256_PKCS8: &str = include_str!("testdata/ec_p256_pkcs8.pem");
    const EC_P256_SPKI: &str = include_str!("testdata/ec_p256_spki.pem");
    const EC_P256_CERT: &str = include_str!("testdata/ec_p256_cert.pem");
    const EC_P256_WITH_PARAMS: &str = include_str!("testdata/ec_p256_with_params.pem");
    const EC_P384_SEC1: &str = include_str!("testdata/ec_p384_sec1.pem");
    const EC_P384_PKCS8: &str = include_str!("testdata/ec_p384_pkcs8.pem");
    const EC_P384_SPKI: &str = include_str!("testdata/ec_p384_spki.pem");
    const EC_P521_SEC1: &str = include_str!("testdata/ec_p521_sec1.pem");
    const EC_P521_PKCS8: &str = include_str!("testdata/ec_p521_pkcs8.pem");
    const EC_P521_SPKI: &str = include_str!("testdata/ec_p521_spki.pem");
    const EC_SECP256K1: &str = include_str!("testdata/ec_secp256k1_sec1.pem");
    const ED25519: &str = include_str!("testdata/ed25519_pkcs8.pem");

    // Computed with `openssl pkey -in KEY -pubout -outform DER | openssl dgst -sha256 -binary |
    // base64 | tr '+/' '-_' | tr -d '='` (see testdata/kids.txt).
    pub(crate) const RSA2048_KID: &str = "8MGIsX8bMakeMMOQAMkDjZsK1AY6D2Pao6PXJvRYUvc";
    pub(crate) const EC_P256_KID: &str = "6njo-N4i6w7HNMWmHj65E1laDB79zf8mJkaN0HvW1so";
    const EC_P384_KID: &str = "1TyFNMTF5IeWuAJCweAnOwWEu5QQ_6_9ry-lSJs7z64";
    const EC_P521_KID: &str = "lT_FgEgXNVEd2Uz0GwPgnUe2ee_umMVJ81Ta4Vk1OWQ";
    const RSA4096_KID: &str = "smSZ3LR4KBPNjgc5EevQ7295kErggBONbKfpvAIvvt0";
    /// Another P-256 key, in a file that starts with an `EC PARAMETERS` block.
    const EC_P256_WITH_PARAMS_KID: &str = "N81HmtLgDsjj9FbOlLDm4ge1D8T1TZ_nIchEA4V3J_0";

    fn vector(name: &str) -> &'static str {
        include_str!("testdata/jwk_vectors.txt")
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .unwrap()
    }

    #[test]
    fn every_pem_form_of_one_key_has_the_openssl_kid() {
        for pem in [
            RSA2048_PKCS1,
            RSA2048_PKCS8,
            RSA2048_SPKI,
            RSA2048_PKCS1_PUB,
            RSA2048_CERT,
        ] {
            let key = VerifyingKey::from_pem(pem).unwrap();
            assert_eq!(key.kid(), RSA2048_KID);
            assert_eq!(key.kid().len(), 43);
            assert_eq!(key.algorithm(), Algorithm::Rs256);
        }
        for pem in [EC_P256_SEC1, EC_P256_PKCS8, EC_P256_SPKI, EC_P256_CERT] {
            let key = VerifyingKey::from_pem(pem).unwrap();
            assert_eq!(key.kid(), EC_P256_KID);
            assert_eq!(key.algorithm(), Algorithm::Es256);
        }
        assert_eq!(
            VerifyingKey::from_pem(EC_P256_WITH_PARAMS).unwrap().kid(),
            EC_P256_WITH_PARAMS_KID
        );
        for pem in [EC_P384_SEC1, EC_P384_PKCS8, EC_P384_SPKI] {
            let key = VerifyingKey::from_pem(pem).unwrap();
            assert_eq!((key.kid(), key.algorithm()), (EC_P384_KID, Algorithm::Es384));
        }
        for pem in [EC_P521_SEC1, EC_P521_PKCS8, EC_P521_SPKI] {
            let key = VerifyingKey::from_pem(pem).unwrap();
            assert_eq!((key.kid(), key.algorithm()), (EC_P521_KID, Algorithm::Es512));
        }
        assert_eq!(VerifyingKey::from_pem(RSA4096_PKCS1).unwrap().kid(), RSA4096_KID);
    }

    #[test]
    fn private_keys_load_in_every_format() {
        for (pem, alg, kid) in [
            (RSA2048_PKCS1, Algorithm::Rs256, RSA2048_KID),
            (RSA2048_PKCS8, Algorithm::Rs256, RSA2048_KID),
            (EC_P256_SEC1, Algorithm::Es256, EC_P256_KID),
            (EC_P256_PKCS8, Algorithm::Es256, EC_P256_KID),
            (EC_P256_WITH_PARAMS, Algorithm::Es256, EC_P256_WITH_PARAMS_KID),
            (EC_P384_SEC1, Algorithm::Es384, EC_P384_KID),
            (EC_P384_PKCS8, Algorithm::Es384, EC_P384_KID),
            (EC_P521_SEC1, Algorithm::Es512, EC_P521_KID),
            (EC_P521_PKCS8, Algorithm::Es512, EC_P521_KID),
        ] {
            let key = SigningKey::from_pem(pem).unwrap();
            assert_eq!((key.algorithm(), key.kid()), (alg, kid));
            // PKCS#8 round trip keeps the key.
            let again = SigningKey::from_pem(&key.to_pkcs8_pem().unwrap()).unwrap();
            assert_eq!(again.kid(), kid);
            let sig = again.sign(b"msg").unwrap();
            assert!(key.public().verify(b"msg", &sig));
        }
    }

    #[test]
    fn private_key_next_to_its_certificate_loads() {
        let both = format!("{RSA2048_CERT}{RSA2048_PKCS1}");
        assert_eq!(SigningKey::from_pem(&both).unwrap().kid(), RSA2048_KID);
        // As a key file, both blocks are keys (upstream lists duplicates too).
        let keys = VerifyingKey::all_from_pem(&both).unwrap();
        assert_eq!(keys.len(), 2);
        assert!(keys.iter().all(|k| k.kid() == RSA2048_KID));
    }

    #[test]
    fn refuses_weak_or_foreign_keys() {
        assert!(matches!(
            VerifyingKey::from_pem(RSA1024_SPKI),
            Err(KeyError::RsaTooSmall { bits: 1024 })
        ));
        assert!(matches!(
            VerifyingKey::from_pem(RSA1024_PKCS1),
            Err(KeyError::RsaTooSmall { bits: 1024 })
        ));
        assert!(matches!(
            SigningKey::from_pem(RSA1024_PKCS1),
            Err(KeyError::RsaTooSmall { bits: 1024 })
        ));
        assert!(matches!(
            SigningKey::generate_rsa(1024),
            Err(KeyError::RsaTooSmall { bits: 1024 })
        ));
        assert!(matches!(
            SigningKey::generate_rsa(2500),
            Err(KeyError::UnsupportedRsaSize(2500))
        ));
        assert!(matches!(
            SigningKey::from_pem(EC_SECP256K1),
            Err(KeyError::UnsupportedCurve)
        ));
        assert!(matches!(
            VerifyingKey::from_pem(EC_SECP256K1),
            Err(KeyError::UnsupportedCurve)
        ));
        assert!(matches!(
            SigningKey::from_pem(ED25519),
            Err(KeyError::UnsupportedKeyType)
        ));
        assert!(matches!(SigningKey::from_pem(RSA2048_SPKI), Err(KeyError::NoKey)));
        assert!(matches!(VerifyingKey::from_pem("nothing"), Err(KeyError::NoKey)));
        let two = format!("{RSA2048_PKCS1}{EC_P256_SEC1}");
        assert!(matches!(SigningKey::from_pem(&two), Err(KeyError::NotOneKey(2))));
        assert!(matches!(
            VerifyingKey::from_pem(&two),
            Err(KeyError::NotOneKey(2))
        ));
        let garbage = "-----BEGIN PUBLIC KEY-----\nAQID\n-----END PUBLIC KEY-----\n";
        assert!(matches!(
            VerifyingKey::from_pem(garbage),
            Err(KeyError::Malformed(_))
        ));
    }

    #[test]
    fn refuses_compressed_points() {
        let key = VerifyingKey::from_pem(EC_P256_SPKI).unwrap();
        let spki = key.spki_der();
        // Re-encode the point compressed: prefix 02/03 by y parity, x only.
        let point = &spki[spki.len() - 65..];
        let mut compressed = spki[..spki.len() - 65].to_vec();
        compressed.push(if point[64] & 1 == 1 { 3 } else { 2 });
        compressed.extend_from_slice(&point[1..33]);
        // Fix the two lengths (outer SEQUENCE and BIT STRING) that shrank by 32.
        compressed[1] -= 32;
        let bit_string_len = compressed.len() - 2 - 21 - 2;
        compressed[2 + 21 + 1] = bit_string_len as u8;
        assert!(matches!(
            VerifyingKey::from_spki_der(&compressed),
            Err(KeyError::CompressedPoint)
        ));
    }

    #[test]
    fn jwk_matches_openssl_numbers_and_upstream_shape() {
        let rsa = VerifyingKey::from_pem(RSA2048_SPKI).unwrap();
        let jwk = serde_json::to_string(&rsa.to_jwk()).unwrap();
        assert_eq!(
            jwk,
            format!(
                r#"{{"use":"sig","kty":"RSA","kid":"{RSA2048_KID}","alg":"RS256","n":"{}","e":"AQAB"}}"#,
                vector("rsa2048_n")
            )
        );
        for (pem, crv, alg, kid, name) in [
            (EC_P256_SPKI, "P-256", "ES256", EC_P256_KID, "p256"),
            (EC_P384_SPKI, "P-384", "ES384", EC_P384_KID, "p384"),
            (EC_P521_SPKI, "P-521", "ES512", EC_P521_KID, "p521"),
        ] {
            let key = VerifyingKey::from_pem(pem).unwrap();
            let jwk = serde_json::to_string(&key.to_jwk()).unwrap();
            assert_eq!(
                jwk,
                format!(
                    r#"{{"use":"sig","kty":"EC","kid":"{kid}","crv":"{crv}","alg":"{alg}","x":"{}","y":"{}"}}"#,
                    vector(&format!("{name}_x")),
                    vector(&format!("{name}_y"))
                )
            );
        }
    }

    #[test]
    fn generated_keys_sign_and_verify() {
        for curve in [Curve::P256, Curve::P384, Curve::P521] {
            let key = SigningKey::generate_ec(curve).unwrap();
            assert_eq!(key.algorithm(), curve.algorithm());
            let sig = key.sign(b"hello").unwrap();
            assert_eq!(sig.len(), 2 * curve.coordinate_len(), "JOSE r||s, not DER");
            assert!(key.public().verify(b"hello", &sig));
            assert!(!key.public().verify(b"hellp", &sig));
            assert_eq!(key.kid().len(), 43);
        }
        let rsa = SigningKey::generate_rsa(2048).unwrap();
        let sig = rsa.sign(b"hello").unwrap();
        assert_eq!(sig.len(), 256);
        assert!(rsa.public().verify(b"hello", &sig));
        assert!(!rsa.public().verify(b"hello", &sig[1..]));
    }

    #[test]
    fn debug_never_shows_key_material() {
        let key = SigningKey::from_pem(RSA2048_PKCS1).unwrap();
        let shown = format!("{key:?} {:?}", key.public());
        assert!(shown.contains(RSA2048_KID));
        assert!(!shown.contains(&vector("rsa2048_n")[..16]));
        assert!(shown.len() < 200, "{shown}");
    }

    #[test]
    fn public_pem_round_trips() {
        let key = VerifyingKey::from_pem(EC_P384_SEC1).unwrap();
        assert_eq!(VerifyingKey::from_pem(&key.to_pem()).unwrap(), key);
    }
}
