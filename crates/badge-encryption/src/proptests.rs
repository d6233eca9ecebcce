//! Property tests: any configuration text parses or fails without panicking, a configuration
//! that parses builds its transformer, and the stored values it reads back are its own or
//! refused, whatever bytes the store holds. Bounded for the default run; `PROPTEST_CASES`
//! raises the count.

#![allow(clippy::unwrap_used)]

use badge_store::transform::Transformer;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use proptest::prelude::*;

use crate::Encryption;
use crate::config::{
    EncryptionConfiguration, Key, KeysConfiguration, ProviderConfiguration, ResourceConfiguration,
};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    }
}

fn resource() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "secrets",
            "configmaps",
            "*.",
            "*.*",
            "*",
            "*.apps",
            "Secrets",
            "",
            "serviceaccounts",
            "roles.rbac.authorization.k8s.io",
            "events",
            "leases.coordination.k8s.io",
            "a..b",
        ])
        .prop_map(String::from),
        "[a-z*.]{0,8}",
    ]
}

fn key_material() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![16usize, 24, 32, 31, 0]).prop_flat_map(|len| {
            prop::collection::vec(any::<u8>(), len).prop_map(|bytes| STANDARD.encode(bytes))
        }),
        any::<String>(),
    ]
}

fn keys() -> impl Strategy<Value = KeysConfiguration> {
    prop::collection::vec(
        (prop_oneof!["key[0-9]", Just(String::new())], key_material())
            .prop_map(|(name, secret)| Key { name, secret }),
        0..3,
    )
    .prop_map(|keys| KeysConfiguration { keys })
}

fn provider() -> impl Strategy<Value = ProviderConfiguration> {
    prop_oneof![
        keys().prop_map(|k| ProviderConfiguration {
            aesgcm: Some(k),
            ..Default::default()
        }),
        keys().prop_map(|k| ProviderConfiguration {
            aescbc: Some(k),
            ..Default::default()
        }),
        keys().prop_map(|k| ProviderConfiguration {
            secretbox: Some(k),
            ..Default::default()
        }),
        Just(ProviderConfiguration {
            identity: Some(serde_json::json!({})),
            ..Default::default()
        }),
        Just(ProviderConfiguration {
            kms: Some(crate::config::KmsConfiguration {
                name: "k".into(),
                endpoint: "unix:///x".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        Just(ProviderConfiguration::default()),
        (keys(), keys()).prop_map(|(a, b)| ProviderConfiguration {
            aesgcm: Some(a),
            secretbox: Some(b),
            ..Default::default()
        }),
    ]
}

fn configuration() -> impl Strategy<Value = EncryptionConfiguration> {
    prop::collection::vec(
        (
            prop::collection::vec(resource(), 0..4),
            prop::collection::vec(provider(), 0..3),
        )
            .prop_map(|(resources, providers)| ResourceConfiguration { resources, providers }),
        0..3,
    )
    .prop_map(|resources| EncryptionConfiguration {
        api_version: crate::config::API_VERSION.into(),
        kind: crate::config::KIND.into(),
        resources,
    })
}

/// Configurations that validate: one rule for Secrets, providers with well-sized keys.
fn valid_configuration() -> impl Strategy<Value = EncryptionConfiguration> {
    let key = |sizes: Vec<usize>| {
        prop::collection::vec(
            prop::sample::select(sizes).prop_flat_map(|len| prop::collection::vec(any::<u8>(), len)),
            1..3,
        )
        .prop_map(|secrets| KeysConfiguration {
            keys: secrets
                .iter()
                .enumerate()
                .map(|(i, secret)| Key {
                    name: format!("key{i}"),
                    secret: STANDARD.encode(secret),
                })
                .collect(),
        })
    };
    let provider = prop_oneof![
        key(vec![16, 24, 32]).prop_map(|k| ProviderConfiguration {
            aesgcm: Some(k),
            ..Default::default()
        }),
        key(vec![16, 24, 32]).prop_map(|k| ProviderConfiguration {
            aescbc: Some(k),
            ..Default::default()
        }),
        key(vec![32]).prop_map(|k| ProviderConfiguration {
            secretbox: Some(k),
            ..Default::default()
        }),
        Just(ProviderConfiguration {
            identity: Some(serde_json::json!({})),
            ..Default::default()
        }),
    ];
    prop::collection::vec(provider, 1..3).prop_map(|providers| EncryptionConfiguration {
        api_version: crate::config::API_VERSION.into(),
        kind: crate::config::KIND.into(),
        resources: vec![ResourceConfiguration {
            resources: vec!["secrets".into()],
            providers,
        }],
    })
}

fn secret_key() -> String {
    format!("{}default/s", badge_api::resources::SECRETS.key_prefix())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn config_arbitrary_text_never_panics(
        text in prop_oneof![
            any::<String>(),
            "[-:{}\\[\\],&*!|>'\"#%@ \na-z0-9]{0,200}",
        ],
        bytes in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        let _ = EncryptionConfiguration::parse(text.as_bytes());
        let _ = EncryptionConfiguration::parse(&bytes);
    }

    #[test]
    fn config_parses_iff_valid_and_builds(
        configuration in configuration(),
        as_json in any::<bool>(),
    ) {
        let text = if as_json {
            serde_json::to_vec(&configuration).unwrap()
        } else {
            serde_yaml_ng::to_string(&configuration).unwrap().into_bytes()
        };
        let errors = configuration.validate();
        match EncryptionConfiguration::parse(&text) {
            Ok(parsed) => {
                prop_assert!(errors.is_empty(), "{:?}", errors);
                let _ = Encryption::new(&parsed);
            }
            Err(_) => prop_assert!(!errors.is_empty()),
        }
    }

    #[test]
    fn config_mutated_text_never_panics(
        configuration in configuration(),
        cut in any::<prop::sample::Index>(),
        junk in "[-:{}\\[\\],&*!|>'\" \na-z0-9]{0,8}",
    ) {
        let text = serde_yaml_ng::to_string(&configuration).unwrap();
        let mut at = cut.index(text.len() + 1);
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        let mutated = format!("{}{junk}{}", &text[..at], &text[at..]);
        let _ = EncryptionConfiguration::parse(mutated.as_bytes());
    }

    #[test]
    fn stored_values_round_trip_and_hostile_ones_are_refused(
        configuration in valid_configuration(),
        value in prop::collection::vec(any::<u8>(), 0..64),
        stored in prop::collection::vec(any::<u8>(), 0..128),
        prefix in prop::sample::select(vec![
            "k8s:enc:aesgcm:v1:key0:", "k8s:enc:aescbc:v1:key0:", "k8s:enc:secretbox:v1:key0:",
            "k8s:enc:", "",
        ]),
    ) {
        prop_assert_eq!(configuration.validate(), Vec::<String>::new());
        let encryption = Encryption::new(&configuration).unwrap();
        let key = secret_key();
        if let Ok(sealed) = encryption.transform_to_storage(&key, &value) {
            let opened = encryption.transform_from_storage(&key, &sealed).unwrap();
            prop_assert_eq!(opened.as_ref(), value.as_slice());
        }
        let mut hostile = prefix.as_bytes().to_vec();
        hostile.extend_from_slice(&stored);
        let _ = encryption.transform_from_storage(&key, &hostile);
        let _ = encryption.transform_from_storage(&key, &stored);
    }
}
