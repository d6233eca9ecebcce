//! badge-token's verification steps (its crate docs list them), attack by attack: each attack is
//! forged here with real keys and must be refused at the step that stops it. Plus round trips for every algorithm and a
//! seeded random-mutation loop. Black-box: only the crate's public API.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use aws_lc_rs::{hmac, rsa, signature};
use badge_token::claims::{self, BoundClaims, Expectations, LegacyClaims, ObjectRef, ValidatedClaims};
use badge_token::jwt::{self, MAX_TOKEN_BYTES};
use badge_token::{Algorithm, Curve, KeySet, SigningKey, TokenError, VerifyingKey};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const RSA_PEM: &str = include_str!("../src/testdata/rsa2048_pkcs1.pem");
const RSA_SPKI_PEM: &str = include_str!("../src/testdata/rsa2048_spki.pem");
const EC_PEM: &str = include_str!("../src/testdata/ec_p256_sec1.pem");
const NOW: i64 = 1_729_601_640;
const ISS: &str = "https://kubernetes.default.svc.cluster.local";

// Curve orders, from `openssl ecparam -name <curve> -param_enc explicit -text`.
const P256_N: &str = "ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551";
const P384_N: &str =
    "ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973";
const P521_N: &str = "01fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffa51868783bf2f966b7fcc0148f709a5d03bb5c9b8899c47aebb6fb71e91386409";

type Mutation = fn(&mut Value);

struct World {
    rsa: SigningKey,
    ec: SigningKey,
    es384: SigningKey,
    es512: SigningKey,
    keys: KeySet,
}

fn world() -> World {
    let rsa = SigningKey::from_pem(RSA_PEM).unwrap();
    let ec = SigningKey::from_pem(EC_PEM).unwrap();
    let es384 = SigningKey::generate_ec(Curve::P384).unwrap();
    let es512 = SigningKey::generate_ec(Curve::P521).unwrap();
    let keys = KeySet::new(
        Some(rsa.clone()),
        [
            ec.public().clone(),
            es384.public().clone(),
            es512.public().clone(),
        ],
    );
    World {
        rsa,
        ec,
        es384,
        es512,
        keys,
    }
}

fn issuers() -> Vec<String> {
    vec![ISS.to_owned()]
}

fn claims_value(now: i64) -> Value {
    let mut c = BoundClaims::new(
        ISS,
        issuers(),
        "default",
        ObjectRef::new("my-sa", "sa-uid"),
        now,
        3600,
    );
    c.pod = Some(ObjectRef::new("my-pod", "pod-uid"));
    c.to_value().unwrap()
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// `b64(header).b64(payload)` signed by `key`, header and payload given as raw JSON text.
fn forge(header: &str, payload: &str, key: &SigningKey) -> String {
    let input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
    let sig = key.sign(input.as_bytes()).unwrap();
    format!("{input}.{}", b64(&sig))
}

fn std_header(key: &SigningKey) -> String {
    format!(r#"{{"alg":"{}","kid":"{}"}}"#, key.algorithm(), key.kid())
}

fn with_sig(token: &str, sig: &[u8]) -> String {
    let (input, _) = token.rsplit_once('.').unwrap();
    format!("{input}.{}", b64(sig))
}

fn sig_of(token: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(token.rsplit_once('.').unwrap().1).unwrap()
}

fn verify_only(token: &str, w: &World) -> Result<jwt::VerifiedToken, TokenError> {
    jwt::parse_and_verify(token, &w.keys)
}

fn full(token: &str, w: &World, requested: &[&str], now: i64) -> Result<ValidatedClaims, TokenError> {
    let v = jwt::parse_and_verify(token, &w.keys)?;
    let issuers = issuers();
    let requested: Vec<String> = requested.iter().map(|s| (*s).to_owned()).collect();
    claims::validate(
        v.claims(),
        &Expectations {
            issuers: &issuers,
            api_audiences: &issuers,
            requested_audiences: &requested,
            accept_legacy: true,
            now,
        },
    )
}

fn refused(token: &str, w: &World, want: TokenError) {
    assert_eq!(verify_only(token, w).map(|_| ()), Err(want));
}

// === round trips ===

#[test]
fn round_trips_for_every_algorithm() {
    let w = world();
    for (key, alg) in [
        (&w.rsa, Algorithm::Rs256),
        (&w.ec, Algorithm::Es256),
        (&w.es384, Algorithm::Es384),
        (&w.es512, Algorithm::Es512),
    ] {
        let token = jwt::sign(key, &claims_value(NOW)).unwrap();
        let v = verify_only(token.expose(), &w).unwrap();
        assert_eq!((v.kid(), v.algorithm()), (key.kid(), alg));
        assert_eq!(v.claims(), &claims_value_without_jti(&v));
        let c = full(token.expose(), &w, &[], NOW).unwrap();
        assert_eq!(c.username(), "system:serviceaccount:default:my-sa");
        assert_eq!(c.audiences, issuers());
    }
}

fn claims_value_without_jti(v: &jwt::VerifiedToken) -> Value {
    // The jti is random per build; compare everything else.
    let mut want = claims_value(NOW);
    want["jti"] = v.claims()["jti"].clone();
    want
}

#[test]
fn a_token_without_kid_is_tried_against_every_key_of_its_algorithm() {
    let w = world();
    let payload = claims_value(NOW).to_string();
    for key in [&w.rsa, &w.ec, &w.es384, &w.es512] {
        let header = format!(r#"{{"alg":"{}"}}"#, key.algorithm());
        assert!(verify_only(&forge(&header, &payload, key), &w).is_ok());
        let header = format!(r#"{{"alg":"{}","kid":""}}"#, key.algorithm());
        assert!(verify_only(&forge(&header, &payload, key), &w).is_ok());
    }
    // No key of that algorithm at all.
    let only_rsa = KeySet::new(Some(w.rsa.clone()), []);
    let t = forge(r#"{"alg":"ES256"}"#, &payload, &w.ec);
    assert_eq!(
        jwt::parse_and_verify(&t, &only_rsa).map(|_| ()),
        Err(TokenError::NoKeyForAlgorithm)
    );
}

#[test]
fn legacy_tokens_round_trip() {
    let w = world();
    let c = LegacyClaims {
        namespace: "default".into(),
        service_account: ObjectRef::new("default", "uid"),
        secret_name: "default-token-x".into(),
    };
    let token = jwt::sign(&w.rsa, &c.to_value()).unwrap();
    let v = full(token.expose(), &w, &[], NOW).unwrap();
    assert_eq!(v.legacy_secret_name.as_deref(), Some("default-token-x"));
    // Very old legacy tokens have no kid.
    let t = forge(r#"{"alg":"RS256"}"#, &c.to_value().to_string(), &w.rsa);
    assert!(full(&t, &w, &[], NOW).is_ok());
}

#[test]
fn typ_jwt_is_the_only_typ() {
    let w = world();
    let payload = claims_value(NOW).to_string();
    let kid = w.rsa.kid();
    assert!(
        verify_only(
            &forge(
                &format!(r#"{{"alg":"RS256","kid":"{kid}","typ":"JWT"}}"#),
                &payload,
                &w.rsa
            ),
            &w
        )
        .is_ok()
    );
    for typ in [r#""jwt""#, r#""at+jwt""#, r#""JOSE""#, "1", "null"] {
        let t = forge(
            &format!(r#"{{"alg":"RS256","kid":"{kid}","typ":{typ}}}"#),
            &payload,
            &w.rsa,
        );
        refused(&t, &w, TokenError::InvalidHeader("typ"));
    }
    let t = forge(&format!(r#"{{"alg":["RS256"],"kid":"{kid}"}}"#), &payload, &w.rsa);
    refused(&t, &w, TokenError::InvalidHeader("alg"));
    let t = forge(r#"{"alg":"RS256","kid":7}"#, &payload, &w.rsa);
    refused(&t, &w, TokenError::InvalidHeader("kid"));
    let t = forge(&format!(r#"{{"kid":"{kid}"}}"#), &payload, &w.rsa);
    refused(&t, &w, TokenError::UnsupportedAlgorithm);
    for header in ["[]", "\"x\"", "{", "{}{}"] {
        refused(&forge(header, &payload, &w.rsa), &w, TokenError::HeaderJson);
    }
}

// === the catalogue ===

#[test]
fn alg_none_in_every_spelling() {
    let w = world();
    let payload = b64(claims_value(NOW).to_string().as_bytes());
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = b64(format!(r#"{{"alg":"{alg}"}}"#).as_bytes());
        refused(
            &format!("{header}.{payload}."),
            &w,
            TokenError::EmptySegment("signature"),
        );
        refused(
            &format!("{header}.{payload}.e30"),
            &w,
            TokenError::UnsupportedAlgorithm,
        );
        let header = b64(format!(r#"{{"alg":"{alg}","kid":"{}"}}"#, w.rsa.kid()).as_bytes());
        refused(
            &format!("{header}.{payload}.e30"),
            &w,
            TokenError::UnsupportedAlgorithm,
        );
        // Even with a real signature attached.
        let real = jwt::sign(&w.rsa, &claims_value(NOW)).unwrap();
        let sig = real.expose().rsplit_once('.').unwrap().1;
        refused(
            &format!("{header}.{payload}.{sig}"),
            &w,
            TokenError::UnsupportedAlgorithm,
        );
    }
}

#[test]
fn hmac_keyed_with_the_public_key() {
    let w = world();
    let public = VerifyingKey::from_pem(RSA_SPKI_PEM).unwrap();
    let jwk = serde_json::to_string(&public.to_jwk()).unwrap();
    let n = URL_SAFE_NO_PAD.decode(public.to_jwk().n.unwrap()).unwrap();
    let secrets: Vec<Vec<u8>> = vec![
        RSA_SPKI_PEM.as_bytes().to_vec(),
        public.to_pem().into_bytes(),
        public.spki_der().to_vec(),
        jwk.into_bytes(),
        n,
    ];
    let payload = b64(claims_value(NOW).to_string().as_bytes());
    for (alg, hmac_alg) in [
        ("HS256", hmac::HMAC_SHA256),
        ("HS384", hmac::HMAC_SHA384),
        ("HS512", hmac::HMAC_SHA512),
    ] {
        for secret in &secrets {
            for header in [
                format!(r#"{{"alg":"{alg}","kid":"{}"}}"#, w.rsa.kid()),
                format!(r#"{{"alg":"{alg}"}}"#),
            ] {
                let input = format!("{}.{payload}", b64(header.as_bytes()));
                let tag = hmac::sign(&hmac::Key::new(hmac_alg, secret), input.as_bytes());
                let token = format!("{input}.{}", b64(tag.as_ref()));
                refused(&token, &w, TokenError::UnsupportedAlgorithm);
            }
        }
    }
}

#[test]
fn algorithm_substitution() {
    let w = world();
    let payload = claims_value(NOW).to_string();
    let rsa_kid = w.rsa.kid();
    let ec_kid = w.ec.kid();

    // A genuine RSA-PSS signature by our own RSA key is still refused: PS256 is not allowed.
    let der = STANDARD
        .decode(
            RSA_PEM
                .lines()
                .filter(|l| !l.starts_with("-----"))
                .collect::<String>(),
        )
        .unwrap();
    let pair = rsa::KeyPair::from_der(&der).unwrap();
    for (alg, pss) in [
        ("PS256", &signature::RSA_PSS_SHA256),
        ("PS384", &signature::RSA_PSS_SHA384),
    ] {
        let input = format!(
            "{}.{}",
            b64(format!(r#"{{"alg":"{alg}","kid":"{rsa_kid}"}}"#).as_bytes()),
            b64(payload.as_bytes())
        );
        let mut sig = vec![0; pair.public_modulus_len()];
        pair.sign(
            pss,
            &aws_lc_rs::rand::SystemRandom::new(),
            input.as_bytes(),
            &mut sig,
        )
        .unwrap();
        refused(
            &format!("{input}.{}", b64(&sig)),
            &w,
            TokenError::UnsupportedAlgorithm,
        );
    }
    for alg in [
        "RS384", "RS512", "EdDSA", "ES256K", "rs256", "Rs256", "RS256 ", "",
    ] {
        let t = forge(
            &format!(r#"{{"alg":"{alg}","kid":"{rsa_kid}"}}"#),
            &payload,
            &w.rsa,
        );
        refused(&t, &w, TokenError::UnsupportedAlgorithm);
    }
    // ES256 naming the RSA key (signed with an EC key), and RS256 naming the EC key.
    refused(
        &forge(
            &format!(r#"{{"alg":"ES256","kid":"{rsa_kid}"}}"#),
            &payload,
            &w.ec,
        ),
        &w,
        TokenError::AlgorithmMismatch,
    );
    refused(
        &forge(
            &format!(r#"{{"alg":"RS256","kid":"{ec_kid}"}}"#),
            &payload,
            &w.rsa,
        ),
        &w,
        TokenError::AlgorithmMismatch,
    );
    // ES384 naming the P-256 key.
    refused(
        &forge(
            &format!(r#"{{"alg":"ES384","kid":"{ec_kid}"}}"#),
            &payload,
            &w.es384,
        ),
        &w,
        TokenError::AlgorithmMismatch,
    );
}

#[test]
fn kid_injection() {
    let w = world();
    let payload = claims_value(NOW).to_string();
    let big = "k".repeat(8 * 1024);
    for kid in [
        "../../dev/null",
        "/etc/passwd",
        "' OR 1=1 --",
        "http://evil.example/jwks",
        "\\u0000",
        "abc\\u0000def",
        big.as_str(),
        &w.rsa.kid()[..42],
        &format!("{} ", w.rsa.kid()),
        &w.rsa.kid().to_uppercase(),
    ] {
        let t = forge(&format!(r#"{{"alg":"RS256","kid":"{kid}"}}"#), &payload, &w.rsa);
        refused(&t, &w, TokenError::UnknownKeyId);
    }
    let huge = "k".repeat(64 * 1024);
    let t = forge(&format!(r#"{{"alg":"RS256","kid":"{huge}"}}"#), &payload, &w.rsa);
    refused(&t, &w, TokenError::TooLarge);
}

#[test]
fn key_carrying_and_extension_headers() {
    let w = world();
    let payload = claims_value(NOW).to_string();
    let attacker = SigningKey::generate_ec(Curve::P256).unwrap();
    let attacker_jwk = serde_json::to_string(&attacker.public().to_jwk()).unwrap();
    let x5c = STANDARD.encode(attacker.public().spki_der());
    let kid = w.rsa.kid();
    let cases: Vec<(String, &SigningKey, &'static str)> = vec![
        (
            format!(r#"{{"alg":"RS256","kid":"{kid}","jku":"https://evil.example/jwks"}}"#),
            &w.rsa,
            "jku",
        ),
        (
            format!(r#"{{"alg":"RS256","kid":"{kid}","x5u":"https://evil.example/cert"}}"#),
            &w.rsa,
            "x5u",
        ),
        (
            format!(r#"{{"alg":"ES256","jwk":{attacker_jwk}}}"#),
            &attacker,
            "jwk",
        ),
        (
            format!(
                r#"{{"alg":"ES256","kid":"{}","jwk":{attacker_jwk}}}"#,
                attacker.kid()
            ),
            &attacker,
            "jwk",
        ),
        (format!(r#"{{"alg":"ES256","x5c":["{x5c}"]}}"#), &attacker, "x5c"),
        (
            format!(r#"{{"alg":"RS256","kid":"{kid}","x5t":"abc"}}"#),
            &w.rsa,
            "x5t",
        ),
        (
            format!(r#"{{"alg":"RS256","kid":"{kid}","x5t#S256":"abc"}}"#),
            &w.rsa,
            "x5t#S256",
        ),
        (
            format!(r#"{{"alg":"RS256","kid":"{kid}","crit":["exp"],"exp":1}}"#),
            &w.rsa,
            "crit",
        ),
        (
            format!(r#"{{"alg":"RS256","kid":"{kid}","crit":["x-foo"]}}"#),
            &w.rsa,
            "crit",
        ),
        (
            format!(r#"{{"alg":"RS256","kid":"{kid}","crit":[]}}"#),
            &w.rsa,
            "crit",
        ),
        (
            format!(r#"{{"alg":"RS256","kid":"{kid}","cty":"JWT"}}"#),
            &w.rsa,
            "cty",
        ),
        (
            format!(r#"{{"alg":"RS256","kid":"{kid}","zip":"DEF"}}"#),
            &w.rsa,
            "zip",
        ),
        (
            format!(r#"{{"alg":"RS256","kid":"{kid}","enc":"A128GCM"}}"#),
            &w.rsa,
            "enc",
        ),
        (
            format!(r#"{{"alg":"RS256","kid":"{kid}","b64":false}}"#),
            &w.rsa,
            "b64",
        ),
        (
            format!(r#"{{"alg":"RS256","kid":"{kid}","x-custom":1}}"#),
            &w.rsa,
            "unrecognized",
        ),
        (
            format!(r#"{{"alg":"RS256","kid":"{kid}","Alg":"none"}}"#),
            &w.rsa,
            "unrecognized",
        ),
    ];
    for (header, key, name) in cases {
        refused(
            &forge(&header, &payload, key),
            &w,
            TokenError::ForbiddenHeader(name),
        );
    }
}

#[test]
fn nested_jwt_is_refused() {
    let w = world();
    let inner = jwt::sign(&w.rsa, &claims_value(NOW)).unwrap();
    let kid = w.rsa.kid();
    let quoted = serde_json::to_string(inner.expose()).unwrap();
    let t = forge(
        &format!(r#"{{"alg":"RS256","kid":"{kid}","cty":"JWT"}}"#),
        &quoted,
        &w.rsa,
    );
    refused(&t, &w, TokenError::ForbiddenHeader("cty"));
    // Without cty, a JWT as payload is not a claims object.
    let t = forge(&std_header(&w.rsa), &quoted, &w.rsa);
    refused(&t, &w, TokenError::PayloadJson);
    let t = forge(&std_header(&w.rsa), inner.expose(), &w.rsa);
    refused(&t, &w, TokenError::PayloadJson);
}

#[test]
fn jwe_and_json_serialisations() {
    let w = world();
    let real = jwt::sign(&w.rsa, &claims_value(NOW)).unwrap();
    let real = real.expose();
    let parts: Vec<&str> = real.split('.').collect();
    let jwe_header = b64(br#"{"alg":"RSA-OAEP","enc":"A256GCM"}"#);
    for t in [
        format!("{jwe_header}.AAAA.AAAA.AAAA.AAAA"),
        format!("{real}.AAAA.AAAA"),
        format!("{real}.AAAA"),
        format!("{}.{}", parts[0], parts[1]),
        parts[0].to_owned(),
        String::new(),
        format!(
            r#"{{"payload":"{}","signatures":[{{"protected":"{}","signature":"{}"}}]}}"#,
            parts[1], parts[0], parts[2]
        ),
        format!(
            r#"{{"payload":"{}","protected":"{}","signature":"{}"}}"#,
            parts[1], parts[0], parts[2]
        ),
    ] {
        refused(&t, &w, TokenError::SegmentCount);
    }
    refused(
        &format!("{}..{}", parts[0], parts[2]),
        &w,
        TokenError::EmptySegment("payload"),
    );
    refused(
        &format!(".{}.{}", parts[1], parts[2]),
        &w,
        TokenError::EmptySegment("header"),
    );
}

#[test]
fn missing_claims() {
    let w = world();
    let cases: Vec<(Mutation, TokenError)> = vec![
        (
            |v| drop(v.as_object_mut().unwrap().remove("exp")),
            TokenError::MissingClaim("exp"),
        ),
        (
            |v| drop(v.as_object_mut().unwrap().remove("sub")),
            TokenError::MissingClaim("sub"),
        ),
        (
            |v| drop(v.as_object_mut().unwrap().remove("iss")),
            TokenError::MissingClaim("iss"),
        ),
        (
            |v| drop(v.as_object_mut().unwrap().remove("aud")),
            TokenError::MissingClaim("aud"),
        ),
        (
            |v| drop(v.as_object_mut().unwrap().remove("kubernetes.io")),
            TokenError::MissingClaim("kubernetes.io"),
        ),
        (
            |v| v["kubernetes.io"]["namespace"] = json!(""),
            TokenError::MissingClaim("namespace"),
        ),
        (
            |v| {
                drop(
                    v["kubernetes.io"]["serviceaccount"]
                        .as_object_mut()
                        .unwrap()
                        .remove("uid"),
                )
            },
            TokenError::InvalidClaim("serviceaccount"),
        ),
    ];
    for (mutate, want) in cases {
        let mut v = claims_value(NOW);
        mutate(&mut v);
        let t = jwt::sign(&w.rsa, &v).unwrap();
        assert_eq!(full(t.expose(), &w, &[], NOW).map(|_| ()), Err(want));
    }
}

#[test]
fn case_variant_claim_names_are_other_claims() {
    // Go's encoding/json would match "Sub" to `sub`; here it is a different (ignored) member.
    let w = world();
    let mut v = claims_value(NOW);
    let sub = v.as_object_mut().unwrap().remove("sub").unwrap();
    v["Sub"] = sub;
    let t = jwt::sign(&w.rsa, &v).unwrap();
    assert_eq!(
        full(t.expose(), &w, &[], NOW).map(|_| ()),
        Err(TokenError::MissingClaim("sub"))
    );
    let mut v = claims_value(NOW);
    let exp = v.as_object_mut().unwrap().remove("exp").unwrap();
    v["EXP"] = exp;
    let t = jwt::sign(&w.rsa, &v).unwrap();
    assert_eq!(
        full(t.expose(), &w, &[], NOW).map(|_| ()),
        Err(TokenError::MissingClaim("exp"))
    );
}

#[test]
fn duplicate_members() {
    let w = world();
    let kid = w.rsa.kid();
    let exp = NOW + 3600;
    let payload = format!(
        r#"{{"aud":["{ISS}"],"exp":{exp},"iss":"{ISS}","kubernetes.io":{{"namespace":"a","serviceaccount":{{"name":"b","uid":"u"}}}},"sub":"system:serviceaccount:a:b","sub":"system:serviceaccount:kube-system:admin"}}"#
    );
    refused(
        &forge(&std_header(&w.rsa), &payload, &w.rsa),
        &w,
        TokenError::DuplicateMember("payload"),
    );
    let escaped = format!(r#"{{"iss":"{ISS}","\u0069ss":"https://evil.example","exp":{exp}}}"#);
    refused(
        &forge(&std_header(&w.rsa), &escaped, &w.rsa),
        &w,
        TokenError::DuplicateMember("payload"),
    );
    let nested = r#"{"kubernetes.io":{"namespace":"a","namespace":"kube-system"}}"#;
    refused(
        &forge(&std_header(&w.rsa), nested, &w.rsa),
        &w,
        TokenError::DuplicateMember("payload"),
    );
    for header in [
        format!(r#"{{"alg":"RS256","alg":"none","kid":"{kid}"}}"#),
        format!(r#"{{"alg":"RS256","kid":"{kid}","kid":"{kid}"}}"#),
        format!(r#"{{"alg":"RS256","kid":"{kid}","typ":"JWT","typ":"JWT"}}"#),
    ] {
        refused(
            &forge(&header, &claims_value(NOW).to_string(), &w.rsa),
            &w,
            TokenError::DuplicateMember("header"),
        );
    }
}

#[test]
fn type_confusion() {
    let w = world();
    let cases: Vec<(&str, &str, TokenError)> = vec![
        ("exp", r#""never""#, TokenError::ClaimType("exp")),
        ("exp", r#""1729605240""#, TokenError::ClaimType("exp")),
        ("nbf", r#""2099-01-01""#, TokenError::ClaimType("nbf")),
        ("exp", "1e400", TokenError::PayloadJson),
        ("exp", "1729605240.5", TokenError::ClaimType("exp")),
        ("exp", "1.7e9", TokenError::ClaimType("exp")),
        ("exp", "-1", TokenError::ClaimType("exp")),
        ("exp", "true", TokenError::ClaimType("exp")),
        ("exp", "null", TokenError::ClaimType("exp")),
        ("exp", "18446744073709551615", TokenError::ClaimType("exp")),
        ("exp", "99999999999999999999999", TokenError::ClaimType("exp")),
        ("iat", "{}", TokenError::ClaimType("iat")),
        ("aud", r#"{"a":1}"#, TokenError::ClaimType("aud")),
        ("aud", r#"["a",1]"#, TokenError::ClaimType("aud")),
        ("aud", "null", TokenError::ClaimType("aud")),
        (
            "iss",
            r#"["https://kubernetes.default.svc.cluster.local"]"#,
            TokenError::ClaimType("iss"),
        ),
        ("sub", "1", TokenError::ClaimType("sub")),
        ("jti", "[]", TokenError::ClaimType("jti")),
    ];
    for (name, raw, want) in cases {
        let mut v = claims_value(NOW);
        v.as_object_mut().unwrap().remove(name);
        let text = v.to_string();
        let payload = format!(r#"{{"{name}":{raw},{}"#, &text[1..]);
        let t = forge(&std_header(&w.rsa), &payload, &w.rsa);
        assert_eq!(verify_only(&t, &w).map(|_| ()), Err(want), "{name}: {raw}");
    }
    // A payload that is not an object at all.
    for payload in ["[]", "\"x\"", "1", "null", "{", "{}x"] {
        refused(
            &forge(&std_header(&w.rsa), payload, &w.rsa),
            &w,
            TokenError::PayloadJson,
        );
    }
}

#[test]
fn time_skew_at_the_leeway_edges() {
    let w = world();
    // exp at now−59 accepted, now−61 refused.
    let mut v = claims_value(NOW - 3600);
    v["exp"] = json!(NOW - 59);
    assert!(full(jwt::sign(&w.rsa, &v).unwrap().expose(), &w, &[], NOW).is_ok());
    v["exp"] = json!(NOW - 61);
    assert_eq!(
        full(jwt::sign(&w.rsa, &v).unwrap().expose(), &w, &[], NOW).map(|_| ()),
        Err(TokenError::Expired)
    );
    // nbf at now+59 accepted, now+61 refused.
    let mut v = claims_value(NOW);
    v["nbf"] = json!(NOW + 59);
    assert!(full(jwt::sign(&w.rsa, &v).unwrap().expose(), &w, &[], NOW).is_ok());
    v["nbf"] = json!(NOW + 61);
    assert_eq!(
        full(jwt::sign(&w.rsa, &v).unwrap().expose(), &w, &[], NOW).map(|_| ()),
        Err(TokenError::NotYetValid)
    );
    // iat in the future beyond leeway.
    let mut v = claims_value(NOW);
    v["iat"] = json!(NOW + 120);
    assert_eq!(
        full(jwt::sign(&w.rsa, &v).unwrap().expose(), &w, &[], NOW).map(|_| ()),
        Err(TokenError::IssuedInFuture)
    );
    v["iat"] = json!(NOW + 59);
    assert!(full(jwt::sign(&w.rsa, &v).unwrap().expose(), &w, &[], NOW).is_ok());
}

#[test]
fn huge_inputs_are_refused_by_size_before_parsing() {
    let w = world();
    // Each is refused for its size or its shape, never for what a parse of it would find.
    let dots = ".".repeat(200_000);
    refused(&dots, &w, TokenError::TooLarge);
    refused(&"a.".repeat(200_000), &w, TokenError::TooLarge);
    refused(&".".repeat(MAX_TOKEN_BYTES), &w, TokenError::SegmentCount);
    refused(&"a".repeat(1024 * 1024), &w, TokenError::TooLarge);
    let big_header = format!("{}.e30.AAAA", "A".repeat(5 * 1024 * 1024));
    refused(&big_header, &w, TokenError::TooLarge);
    let at_cap = "A".repeat(MAX_TOKEN_BYTES);
    refused(&at_cap, &w, TokenError::SegmentCount);
    refused(&format!("{at_cap}.."), &w, TokenError::TooLarge);

    // A deeply nested payload under the cap, correctly signed.
    let deep = format!(r#"{{"a":{}{}}}"#, "[".repeat(4500), "]".repeat(4500));
    let t = forge(&std_header(&w.ec), &deep, &w.ec);
    assert!(t.len() <= MAX_TOKEN_BYTES);
    refused(&t, &w, TokenError::PayloadJson);
}

/// Flips the unused low bits of the last character of a base64url segment, if it has any.
fn noncanonical_tail(segment: &str) -> Option<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    if segment.len().is_multiple_of(4) {
        return None;
    }
    let last = *segment.as_bytes().last()?;
    let i = ALPHABET.iter().position(|&c| c == last)?;
    let mut s = segment[..segment.len() - 1].to_owned();
    s.push(char::from(ALPHABET[i ^ 1]));
    Some(s)
}

#[test]
fn non_canonical_base64() {
    let w = world();
    // A token whose three segments all have unused trailing bits: pad the payload until its
    // length is not a multiple of 3 (header and ES256 signature lengths already are not).
    let token = (0..3)
        .map(|pad| {
            let mut v = claims_value(NOW);
            v["x-pad"] = json!("a".repeat(pad));
            jwt::sign(&w.ec, &v).unwrap().into_exposed()
        })
        .find(|t| t.split('.').all(|s| s.len() % 4 != 0))
        .unwrap();
    assert!(verify_only(&token, &w).is_ok());
    let parts: Vec<&str> = token.split('.').collect();
    let names = ["header", "payload", "signature"];
    for i in 0..3 {
        let mut variant = parts.clone();
        let tail = noncanonical_tail(parts[i]).unwrap();
        // The lenient decoding is the same bytes: exactly the variant a cache keyed on raw
        // token bytes would see as a second valid token.
        assert_eq!(
            base64::engine::GeneralPurpose::new(
                &base64::alphabet::URL_SAFE,
                base64::engine::GeneralPurposeConfig::new()
                    .with_decode_allow_trailing_bits(true)
                    .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
            )
            .decode(&tail)
            .unwrap(),
            URL_SAFE_NO_PAD.decode(parts[i]).unwrap()
        );
        variant[i] = &tail;
        refused(&variant.join("."), &w, TokenError::Base64(names[i]));

        let mut padded = parts.clone();
        let with_pad = URL_SAFE.encode(URL_SAFE_NO_PAD.decode(parts[i]).unwrap());
        padded[i] = &with_pad;
        refused(&padded.join("."), &w, TokenError::Base64(names[i]));

        for junk in ["\n", " ", "\t", "\r\n", "+", "/", "="] {
            let mut v = parts.clone();
            let s = format!("{}{junk}{}", &parts[i][..4], &parts[i][4..]);
            v[i] = &s;
            refused(&v.join("."), &w, TokenError::Base64(names[i]));
        }
    }
    // The standard alphabet in place of the URL one.
    let std_sig = STANDARD.encode(sig_of(&token)).trim_end_matches('=').to_owned();
    if std_sig.contains(['+', '/']) {
        refused(
            &format!("{}.{}.{std_sig}", parts[0], parts[1]),
            &w,
            TokenError::Base64("signature"),
        );
    }
    refused(&format!(" {token}"), &w, TokenError::Base64("header"));
    refused(&format!("{token}\n"), &w, TokenError::Base64("signature"));
}

fn sub_be(a: &[u8], b: &[u8]) -> Vec<u8> {
    // a − b for equal-length big-endian unsigned integers, a ≥ b.
    let mut out = vec![0u8; a.len()];
    let mut borrow = 0i16;
    for i in (0..a.len()).rev() {
        let mut d = i16::from(a[i]) - i16::from(b[i]) - borrow;
        borrow = i16::from(d < 0);
        if d < 0 {
            d += 256;
        }
        out[i] = d as u8;
    }
    out
}

fn der_signature(r: &[u8], s: &[u8]) -> Vec<u8> {
    fn int(x: &[u8]) -> Vec<u8> {
        let mut x = x;
        while x.len() > 1 && x[0] == 0 {
            x = &x[1..];
        }
        let mut v = vec![0x02];
        let pad = x[0] & 0x80 != 0;
        v.push((x.len() + usize::from(pad)) as u8);
        if pad {
            v.push(0);
        }
        v.extend_from_slice(x);
        v
    }
    let body = [int(r), int(s)].concat();
    let mut out = if body.len() < 128 {
        vec![0x30, body.len() as u8]
    } else {
        vec![0x30, 0x81, body.len() as u8]
    };
    out.extend(body);
    out
}

#[test]
fn ecdsa_psychic_and_malformed_signatures() {
    let w = world();
    for (key, n_hex) in [(&w.ec, P256_N), (&w.es384, P384_N), (&w.es512, P521_N)] {
        let size = 2 * match key.algorithm() {
            Algorithm::Es256 => 32,
            Algorithm::Es384 => 48,
            _ => 66,
        };
        let half = size / 2;
        let n = hex(n_hex);
        assert_eq!(n.len(), half);
        let token = jwt::sign(key, &claims_value(NOW)).unwrap().into_exposed();
        assert!(verify_only(&token, &w).is_ok());
        let sig = sig_of(&token);
        let (r, s) = sig.split_at(half);
        let zero = vec![0u8; half];
        let one = {
            let mut v = zero.clone();
            v[half - 1] = 1;
            v
        };
        let bad: Vec<Vec<u8>> = vec![
            vec![0; size],
            [zero.as_slice(), s].concat(),
            [r, zero.as_slice()].concat(),
            [n.as_slice(), n.as_slice()].concat(),
            [n.as_slice(), s].concat(),
            [r, n.as_slice()].concat(),
            [one.as_slice(), one.as_slice()].concat(),
            vec![0xff; size],
            der_signature(r, s),
            sig[..size - 1].to_vec(),
            [sig.as_slice(), &[0u8][..]].concat(),
            [&[0u8][..], sig.as_slice()].concat(),
            [s, r].concat(),
            Vec::from(&sig[..half]),
        ];
        for b in bad {
            refused(&with_sig(&token, &b), &w, TokenError::InvalidSignature);
        }
    }
}

#[test]
fn ecdsa_malleability_keeps_the_jti() {
    // (r, n−s) is also a valid signature of the same claims. It verifies, and it carries the
    // same jti: revocation must key on jti or bound objects, never on token bytes.
    let w = world();
    let token = jwt::sign(&w.ec, &claims_value(NOW)).unwrap().into_exposed();
    let sig = sig_of(&token);
    let (r, s) = sig.split_at(32);
    let malleated = with_sig(&token, &[r, &sub_be(&hex(P256_N), s)].concat());
    assert_ne!(malleated, token);
    let a = verify_only(&token, &w).unwrap();
    let b = verify_only(&malleated, &w).unwrap();
    assert_eq!(a.claims()["jti"], b.claims()["jti"]);
}

#[test]
fn tampering_is_detected() {
    let w = world();
    for key in [&w.rsa, &w.ec] {
        let token = jwt::sign(key, &claims_value(NOW)).unwrap().into_exposed();
        let (header, rest) = token.split_once('.').unwrap();
        let (_, sig) = rest.split_once('.').unwrap();
        let mutations: [Mutation; 4] = [
            |v: &mut Value| v["sub"] = json!("system:serviceaccount:kube-system:admin"),
            |v: &mut Value| v["kubernetes.io"]["namespace"] = json!("kube-system"),
            |v: &mut Value| v["aud"] = json!(["vault"]),
            |v: &mut Value| v["exp"] = json!(NOW + 100_000),
        ];
        for mutate in mutations {
            let mut v = claims_value(NOW);
            mutate(&mut v);
            let t = format!("{header}.{}.{sig}", b64(v.to_string().as_bytes()));
            refused(&t, &w, TokenError::InvalidSignature);
        }
        let mut flipped = sig_of(&token);
        flipped[10] ^= 1;
        refused(&with_sig(&token, &flipped), &w, TokenError::InvalidSignature);
        // The same payload and signature under a header naming another key of the same kind.
        let other = if key.algorithm() == Algorithm::Rs256 {
            SigningKey::from_pem(include_str!("../src/testdata/rsa4096_pkcs1.pem")).unwrap()
        } else {
            SigningKey::generate_ec(Curve::P256).unwrap()
        };
        let keys = KeySet::new(Some(key.clone()), [other.public().clone()]);
        let h = b64(std_header(&other).as_bytes());
        let swapped = format!("{h}.{rest}");
        assert_eq!(
            jwt::parse_and_verify(&swapped, &keys).map(|_| ()),
            Err(TokenError::InvalidSignature)
        );
    }
}

#[test]
fn foreign_keys_and_issuers() {
    let w = world();
    let foreign = SigningKey::generate_ec(Curve::P256).unwrap();
    let payload = claims_value(NOW).to_string();
    // Its own kid: unknown here.
    refused(
        &forge(&std_header(&foreign), &payload, &foreign),
        &w,
        TokenError::UnknownKeyId,
    );
    // Our kid, its signature.
    let ours = format!(r#"{{"alg":"ES256","kid":"{}"}}"#, w.ec.kid());
    refused(
        &forge(&ours, &payload, &foreign),
        &w,
        TokenError::InvalidSignature,
    );
    // No kid: every ES256 key is tried, none verifies.
    refused(
        &forge(r#"{"alg":"ES256"}"#, &payload, &foreign),
        &w,
        TokenError::InvalidSignature,
    );
    // Our key, but an issuer differing by a trailing slash, case or scheme.
    for iss in [
        format!("{ISS}/"),
        ISS.to_uppercase(),
        ISS.replace("https", "http"),
        "kubernetes/serviceaccount/".into(),
    ] {
        let mut v = claims_value(NOW);
        v["iss"] = json!(iss);
        let t = jwt::sign(&w.rsa, &v).unwrap();
        assert_eq!(
            full(t.expose(), &w, &[], NOW).map(|_| ()),
            Err(TokenError::InvalidIssuer),
            "{iss}"
        );
    }
}

#[test]
fn cross_audience_replay() {
    let w = world();
    let mut v = claims_value(NOW);
    v["aud"] = json!(["vault"]);
    let t = jwt::sign(&w.rsa, &v).unwrap();
    assert_eq!(
        full(t.expose(), &w, &[], NOW)
            .map(|_| ())
            .map_err(|e| e.to_string()),
        Err(format!(
            "token audiences [\"vault\"] is invalid for the target audiences [\"{ISS}\"]"
        ))
    );
    assert_eq!(
        full(t.expose(), &w, &["other"], NOW)
            .map(|_| ())
            .map_err(|e| e.to_string()),
        Err("token audiences [\"vault\"] is invalid for the target audiences [\"other\"]".to_string())
    );
    assert_eq!(
        full(t.expose(), &w, &["x", "vault"], NOW).unwrap().audiences,
        vec!["vault".to_owned()]
    );
}

#[test]
fn random_mutations_never_verify() {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ \n";
    let w = world();
    let mut rng = StdRng::seed_from_u64(0x05ee_d0fb_ad9e);
    for key in [&w.rsa, &w.ec] {
        let token = jwt::sign(key, &claims_value(NOW)).unwrap().into_exposed();
        assert!(verify_only(&token, &w).is_ok());
        let mut tried = 0;
        while tried < 3000 {
            let mut bytes = token.clone().into_bytes();
            for _ in 0..rng.random_range(1..=3) {
                let len = bytes.len();
                match rng.random_range(0..5) {
                    0 => bytes[rng.random_range(0..len)] = ALPHABET[rng.random_range(0..ALPHABET.len())],
                    1 => {
                        bytes.remove(rng.random_range(0..len));
                    }
                    2 => bytes.insert(
                        rng.random_range(0..=len),
                        ALPHABET[rng.random_range(0..ALPHABET.len())],
                    ),
                    3 => bytes.truncate(rng.random_range(0..len)),
                    _ => {
                        let (a, b) = (rng.random_range(0..len), rng.random_range(0..len));
                        bytes.swap(a, b);
                    }
                }
                if bytes.is_empty() {
                    bytes.push(b'.');
                }
            }
            let mutated = String::from_utf8(bytes).unwrap();
            if mutated == token {
                continue;
            }
            tried += 1;
            assert!(verify_only(&mutated, &w).is_err(), "mutation verified: {mutated}");
        }
    }
}
