//! Property tests: hostile tokens and JSON never panic, and nothing but the exact bytes a key
//! signed ever verifies. Bounded for the default run; `PROPTEST_CASES` raises the count.

#![allow(clippy::unwrap_used)]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use proptest::prelude::*;
use serde_json::{Map, Value, json};

use crate::bootstrap::{self, BootstrapToken};
use crate::json::{JsonError, parse_object};
use crate::jwt::{parse_and_verify, sign};
use crate::keys::tests::{EC_P256_SEC1, RSA2048_PKCS1};
use crate::{KeySet, SigningKey};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    }
}

fn keys() -> (SigningKey, KeySet) {
    let ec = SigningKey::from_pem(EC_P256_SEC1).unwrap();
    let rsa = SigningKey::from_pem(RSA2048_PKCS1).unwrap();
    let set = KeySet::new(None, [ec.public().clone(), rsa.public().clone()]);
    (ec, set)
}

/// JSON values without floats, whose text form may round-trip off by one ulp.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// One edit of a token's text: replace, insert or delete a character.
#[derive(Clone, Debug)]
enum Edit {
    Replace(usize, char),
    Insert(usize, char),
    Delete(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    let ch = prop_oneof![
        prop::sample::select(
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/".to_vec()
        )
        .prop_map(char::from),
        any::<char>(),
    ];
    prop_oneof![
        (any::<usize>(), ch.clone()).prop_map(|(i, c)| Edit::Replace(i, c)),
        (any::<usize>(), ch).prop_map(|(i, c)| Edit::Insert(i, c)),
        any::<usize>().prop_map(Edit::Delete),
    ]
}

fn apply(text: &str, edit: &Edit) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    match *edit {
        Edit::Replace(i, c) => {
            let i = i % chars.len();
            chars[i] = c;
        }
        Edit::Insert(i, c) => chars.insert(i % (chars.len() + 1), c),
        Edit::Delete(i) => {
            let i = i % chars.len();
            chars.remove(i);
        }
    }
    chars.into_iter().collect()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn jwt_arbitrary_strings_never_verify(token in any::<String>()) {
        let (_, set) = keys();
        prop_assert!(parse_and_verify(&token, &set).is_err());
    }

    #[test]
    fn jwt_token_shaped_strings_never_verify(
        token in "[A-Za-z0-9_=+/-]{0,120}\\.[A-Za-z0-9_=+/-]{0,120}\\.[A-Za-z0-9_=+/-]{0,400}"
    ) {
        let (_, set) = keys();
        prop_assert!(parse_and_verify(&token, &set).is_err());
    }

    #[test]
    fn jwt_forged_bodies_never_verify(
        alg in prop::sample::select(vec!["ES256", "RS256", "none", "HS256", "es256", ""]),
        kid in prop::option::of(prop_oneof![Just(String::new()), any::<String>()]),
        payload in prop::collection::vec(any::<u8>(), 0..200),
        signature in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        let (ec, set) = keys();
        let kid = kid.unwrap_or_else(|| ec.kid().to_owned());
        let header = json!({"alg": alg, "kid": kid}).to_string();
        let token = format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(&payload),
            URL_SAFE_NO_PAD.encode(&signature)
        );
        prop_assert!(parse_and_verify(&token, &set).is_err());
    }

    #[test]
    fn jwt_mutated_real_tokens_never_verify(
        claims in json_value(),
        edits in prop::collection::vec(edit(), 1..4),
    ) {
        let (ec, set) = keys();
        let claims = json!({"sub": "system:serviceaccount:default:x", "extra": claims});
        let token = sign(&ec, &claims).unwrap();
        let original = token.expose().to_owned();
        let verified = parse_and_verify(&original, &set);
        let fits = depth(&claims) <= 16 && original.len() <= crate::jwt::MAX_TOKEN_BYTES;
        prop_assert_eq!(verified.is_ok(), fits);
        let mut mutated = original.clone();
        for e in &edits {
            if mutated.is_empty() {
                break;
            }
            mutated = apply(&mutated, e);
        }
        if mutated != original {
            prop_assert!(parse_and_verify(&mutated, &set).is_err());
        }
    }

    #[test]
    fn json_arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_object(&bytes, 16);
    }

    #[test]
    fn json_arbitrary_text_never_panics(text in "[\\[\\]{}\":,0-9a-z.eE+\\- \\\\u]{0,200}") {
        let _ = parse_object(text.as_bytes(), 16);
    }

    #[test]
    fn json_objects_round_trip(
        members in prop::collection::btree_map(any::<String>(), json_value(), 0..6),
        max_depth in 1usize..10,
    ) {
        let object = Value::Object(members.into_iter().collect::<Map<_, _>>());
        let text = serde_json::to_vec(&object).unwrap();
        match parse_object(&text, max_depth) {
            Ok(parsed) => {
                prop_assert!(depth(&object) <= max_depth);
                prop_assert_eq!(Value::Object(parsed), object);
            }
            Err(e) => {
                prop_assert_eq!(e, JsonError::TooDeep);
                prop_assert!(depth(&object) > max_depth);
            }
        }
    }

    #[test]
    fn bootstrap_arbitrary_strings_parse_only_in_exact_format(token in any::<String>()) {
        if let Some(parsed) = BootstrapToken::parse(&token) {
            prop_assert_eq!(parsed.expose(), token);
        }
    }

    #[test]
    fn bootstrap_near_format_round_trips(token in "[a-z0-9A-Z.]{5,7}\\.[a-z0-9A-Z.]{15,17}") {
        let exact = token.len() == 23
            && token.as_bytes()[6] == b'.'
            && token
                .bytes()
                .enumerate()
                .all(|(i, b)| i == 6 || b.is_ascii_lowercase() || b.is_ascii_digit());
        let parsed = BootstrapToken::parse(&token);
        prop_assert_eq!(parsed.is_some(), exact);
        if let Some(parsed) = parsed {
            prop_assert_eq!(parsed.expose(), token.clone());
            let secret_name = parsed.secret_name();
            prop_assert_eq!(bootstrap::id_from_secret_name(&secret_name), Some(parsed.id()));
            prop_assert_eq!(parsed.username(), format!("system:bootstrap:{}", &token[..6]));
        }
    }

    #[test]
    fn bootstrap_helpers_never_panic(
        name in any::<String>(),
        expiration in prop::option::of(any::<String>()),
        now in any::<i64>(),
    ) {
        let _ = bootstrap::id_from_secret_name(&name);
        let _ = bootstrap::is_valid_extra_group(&name);
        let _ = bootstrap::is_expired(expiration.as_deref(), now);
    }
}
