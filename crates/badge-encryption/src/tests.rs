#![allow(clippy::unwrap_used)]

use super::*;
use base64::Engine;

const SECRET_KEY: &str = "/registry/secrets/default/s";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

fn config(providers: &str) -> Encryption {
    let yaml = format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n{providers}"
    );
    Encryption::new(&EncryptionConfiguration::parse(yaml.as_bytes()).unwrap()).unwrap()
}

fn keyed(provider: &str, name: &str, key: &[u8]) -> String {
    format!(
        "  - {provider}:\n      keys:\n      - name: {name}\n        secret: {}\n",
        b64(key)
    )
}

const IDENTITY: &str = "  - identity: {}\n";

fn parse_error(yaml: &str) -> String {
    EncryptionConfiguration::parse(yaml.as_bytes()).unwrap_err().0
}

#[test]
fn each_provider_round_trips_with_its_prefix() {
    for (provider, key) in [
        ("aescbc", vec![7u8; 32]),
        ("aescbc", vec![7u8; 16]),
        ("aesgcm", vec![7u8; 32]),
        ("aesgcm", vec![7u8; 24]),
        ("secretbox", vec![7u8; 32]),
    ] {
        let encryption = config(&keyed(provider, "k1", &key));
        let stored = encryption
            .transform_to_storage(SECRET_KEY, b"{\"data\":\"s3cr3t\"}")
            .unwrap();
        let prefix = format!("k8s:enc:{provider}:v1:k1:");
        assert!(stored.starts_with(prefix.as_bytes()), "{provider}");
        assert!(!stored.windows(6).any(|w| w == b"s3cr3t"), "{provider}");
        let again = encryption
            .transform_to_storage(SECRET_KEY, b"{\"data\":\"s3cr3t\"}")
            .unwrap();
        assert_ne!(stored, again, "{provider}: a fresh IV or nonce per write");
        assert_eq!(
            encryption.transform_from_storage(SECRET_KEY, &stored).unwrap(),
            &b"{\"data\":\"s3cr3t\"}"[..]
        );
    }
}

#[test]
fn aescbc_reads_a_known_ciphertext() {
    // openssl enc -aes-256-cbc -K 000102…1f -iv 0f0e…00 of "hello, world".
    let key: Vec<u8> = (0u8..32).collect();
    let encryption = config(&keyed("aescbc", "k1", &key));
    let mut stored = b"k8s:enc:aescbc:v1:k1:".to_vec();
    stored.extend(hex("0f0e0d0c0b0a09080706050403020100"));
    stored.extend(hex("50c2f6e6603bdf8ae10e4f4944be6a16"));
    assert_eq!(
        encryption.transform_from_storage(SECRET_KEY, &stored).unwrap(),
        &b"hello, world"[..]
    );
}

#[test]
fn aesgcm_reads_a_known_ciphertext_bound_to_the_store_key() {
    // AES-256-GCM, nonce 00…0b, additional data the store key, as upstream's dataCtx.
    let key: Vec<u8> = (0u8..32).collect();
    let encryption = config(&keyed("aesgcm", "k1", &key));
    let mut stored = b"k8s:enc:aesgcm:v1:k1:".to_vec();
    stored.extend(0u8..12);
    stored.extend(hex("2f67ba77aac9e26ce233fbef4c117cee7a92a574a284abe7cf9707fc"));
    assert_eq!(
        encryption.transform_from_storage(SECRET_KEY, &stored).unwrap(),
        &b"hello, world"[..]
    );
    // The same bytes under another key fail: a value cannot be moved between objects.
    let err = encryption
        .transform_from_storage("/registry/secrets/default/other", &stored)
        .unwrap_err();
    assert_eq!(err.0, "aesgcm key \"k1\": cipher: message authentication failed");
}

#[test]
fn secretbox_reads_nacls_test_vector() {
    // NaCl's tests/secretbox.c: key "firstkey", nonce, 131-byte message.
    let key = hex("1b27556473e985d462cd51197a9a46c76009549eac6474f206c4ee0844f68389");
    let nonce = hex("69696ee955b62b73cd62bda875fc73d68219e0036b7a0b37");
    let plaintext = hex(concat!(
        "be075fc53c81f2d5cf141316ebeb0c7b5228c52a4c62cbd44b66849b64244ffce5ecbaaf33bd751a",
        "1ac728d45e6c61296cdc3c01233561f41db66cce314adb310e3be8250c46f06dceea3a7fa1348057",
        "e2f6556ad6b1318a024a838f21af1fde048977eb48f59ffd4924ca1c60902e52f0a089bc76897040",
        "e082f937763848645e0705"
    ));
    let boxed = hex(concat!(
        "f3ffc7703f9400e52a7dfb4b3d3305d98e993b9f48681273c29650ba32fc76ce48332ea7164d96a4",
        "476fb8c531a1186ac0dfc17c98dce87b4da7f011ec48c97271d2c20f9b928fe2270d6fb863d51738",
        "b48eeee314a7cc8ab932164548e526ae90224368517acfeabd6bb3732bc0e9da99832b61ca01b6de",
        "56244a9e88d5f9b37973f622a43d14a6599b1f654cb45a74e355a5"
    ));
    let encryption = config(&keyed("secretbox", "key1", &key));
    let mut stored = b"k8s:enc:secretbox:v1:key1:".to_vec();
    stored.extend(&nonce);
    stored.extend(&boxed);
    assert_eq!(
        encryption.transform_from_storage(SECRET_KEY, &stored).unwrap(),
        plaintext
    );
}

#[test]
fn a_wrong_key_or_tampered_bytes_fail_naming_provider_and_key() {
    for provider in ["aescbc", "aesgcm", "secretbox"] {
        let writer = config(&keyed(provider, "k1", &[1u8; 32]));
        let stored = writer
            .transform_to_storage(SECRET_KEY, b"{\"a\":\"bcdefghijklmnopqrstuvwxyz\"}")
            .unwrap();

        let other_key = config(&keyed(provider, "k1", &[2u8; 32]));
        match other_key.transform_from_storage(SECRET_KEY, &stored) {
            Err(err) => assert!(
                err.0.starts_with(&format!("{provider} key \"k1\": ")),
                "{provider}: {err}"
            ),
            // Unauthenticated CBC under another key ends in valid padding now and then; the
            // bytes are then garbage, never the value.
            Ok(garbage) => {
                assert_eq!(provider, "aescbc");
                assert_ne!(garbage, &b"{\"a\":\"bcdefghijklmnopqrstuvwxyz\"}"[..]);
            }
        }

        let mut tampered = stored.to_vec();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        let err = writer.transform_from_storage(SECRET_KEY, &tampered);
        match provider {
            // CBC is not authenticated: a flipped last byte breaks the padding, or yields
            // other bytes; never the value written.
            "aescbc" => assert_ne!(
                err.ok().as_deref(),
                Some(&b"{\"a\":\"bcdefghijklmnopqrstuvwxyz\"}"[..])
            ),
            _ => assert!(err.unwrap_err().0.contains("authentication failed"), "{provider}"),
        }

        let unknown = config(&keyed(provider, "k2", &[1u8; 32]));
        let err = unknown.transform_from_storage(SECRET_KEY, &stored).unwrap_err();
        assert_eq!(
            err.0,
            format!(
                "no matching prefix found: the value was written by the {provider} provider with key \"k1\", \
                 which the encryption configuration does not list"
            )
        );
        assert!(!err.0.contains(&b64(&[1u8; 32])));
    }
}

#[test]
fn identity_reads_plain_values_and_refuses_encrypted_ones() {
    let encryption = config(&(keyed("secretbox", "k1", &[1u8; 32]) + IDENTITY));
    assert_eq!(
        encryption
            .transform_from_storage(SECRET_KEY, b"{\"plain\":1}")
            .unwrap(),
        &b"{\"plain\":1}"[..]
    );
    let without_identity = config(&keyed("secretbox", "k1", &[1u8; 32]));
    assert_eq!(
        without_identity
            .transform_from_storage(SECRET_KEY, b"{\"plain\":1}")
            .unwrap_err()
            .0,
        "no matching prefix found"
    );
    // Identity first writes plain, and reads what the later provider wrote.
    let identity_first = config(&(IDENTITY.to_string() + &keyed("secretbox", "k1", &[1u8; 32])));
    let sealed = encryption.transform_to_storage(SECRET_KEY, b"{}").unwrap();
    assert_eq!(
        identity_first.transform_to_storage(SECRET_KEY, b"{}").unwrap(),
        &b"{}"[..]
    );
    assert_eq!(
        identity_first
            .transform_from_storage(SECRET_KEY, &sealed)
            .unwrap(),
        &b"{}"[..]
    );
}

#[test]
fn later_keys_and_providers_read_and_the_first_writes() {
    let old = config(&keyed("aescbc", "old", &[3u8; 32]));
    let rotated = config(&(keyed("secretbox", "new", &[4u8; 32]) + &keyed("aescbc", "old", &[3u8; 32])));
    let stored = old.transform_to_storage(SECRET_KEY, b"{}").unwrap();
    assert_eq!(
        rotated.transform_from_storage(SECRET_KEY, &stored).unwrap(),
        &b"{}"[..]
    );
    assert!(
        rotated
            .transform_to_storage(SECRET_KEY, b"{}")
            .unwrap()
            .starts_with(b"k8s:enc:secretbox:v1:new:")
    );
}

#[test]
fn only_the_configured_resources_are_encrypted() {
    let encryption = config(&keyed("secretbox", "k1", &[1u8; 32]));
    assert!(encryption.encrypts("/registry/secrets/ns/a"));
    assert!(!encryption.encrypts("/registry/serviceaccounts/ns/a"));
    assert!(encryption.transforms("/registry/secrets/ns/a"));
    assert!(!encryption.transforms("/registry/serviceaccounts/ns/a"));
    assert_eq!(
        encryption
            .transform_to_storage("/registry/serviceaccounts/ns/a", b"{}")
            .unwrap(),
        &b"{}"[..]
    );
    assert_eq!(
        encryption.transform_to_storage("/badge/keyring", b"{}").unwrap(),
        &b"{}"[..]
    );
}

#[test]
fn wildcards_name_a_group_or_everything() {
    let yaml = |resources: &str| {
        format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: {resources}\n  providers:\n{}",
            keyed("aesgcm", "k", &[5u8; 16])
        )
    };
    let build = |resources: &str| {
        Encryption::new(&EncryptionConfiguration::parse(yaml(resources).as_bytes()).unwrap()).unwrap()
    };
    let rbac = build("['*.rbac.authorization.k8s.io']");
    assert!(rbac.encrypts("/registry/clusterroles/admin"));
    assert!(!rbac.encrypts("/registry/secrets/ns/a"));
    let core = build("['*.']");
    assert!(core.encrypts("/registry/secrets/ns/a"));
    assert!(core.encrypts("/registry/serviceaccounts/ns/a"));
    assert!(!core.encrypts("/registry/clusterroles/admin"));
    let all = build("['*.*']");
    assert!(all.encrypts("/registry/clusterroles/admin"));
    assert!(all.encrypts("/registry/minions/n1"));
}

#[test]
fn json_configurations_parse_too() {
    let json = format!(
        r#"{{"apiVersion":"apiserver.config.k8s.io/v1","kind":"EncryptionConfiguration",
            "resources":[{{"resources":["secrets"],"providers":[{{"aescbc":{{"keys":[{{"name":"k","secret":"{}"}}]}}}},{{"identity":{{}}}}]}}]}}"#,
        b64(&[9u8; 32])
    );
    let encryption = Encryption::new(&EncryptionConfiguration::parse(json.as_bytes()).unwrap()).unwrap();
    assert!(encryption.encrypts("/registry/secrets/a/b"));
}

#[test]
fn validation_errors_name_the_field_as_upstream() {
    let head = "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\n";
    assert_eq!(
        parse_error("apiVersion: v1\nkind: ConfigMap\n"),
        "got unexpected config type: v1, Kind=ConfigMap"
    );
    assert_eq!(
        parse_error(head),
        "resources: Required value: at least one resources is required"
    );
    assert_eq!(
        parse_error(&format!(
            "{head}resources:\n- resources: [secrets]\n  providers:\n  - aescbc:\n      keys:\n      - name: k\n        secret: {}\n",
            b64(&[1u8; 8])
        )),
        "resources[0].providers[0].aescbc.keys[0].secret: Invalid value: \"REDACTED\": secret is not of the expected length, got 8, expected one of [16 24 32]"
    );
    assert_eq!(
        parse_error(&format!(
            "{head}resources:\n- resources: [secrets]\n  providers:\n  - secretbox:\n      keys:\n      - name: k\n        secret: {}\n",
            b64(&[1u8; 16])
        )),
        "resources[0].providers[0].secretbox.keys[0].secret: Invalid value: \"REDACTED\": secret is not of the expected length, got 16, expected one of [32]"
    );
    assert_eq!(
        parse_error(&format!(
            "{head}resources:\n- resources: [secrets]\n  providers:\n  - aesgcm:\n      keys:\n      - name: ''\n        secret: '!!'\n"
        )),
        "[resources[0].providers[0].aesgcm.keys[0].name: Required value: name is a mandatory field for a key, \
         resources[0].providers[0].aesgcm.keys[0].secret: Invalid value: \"REDACTED\": secrets must be base64 encoded]"
    );
    assert_eq!(
        parse_error(&format!(
            "{head}resources:\n- resources: [secrets]\n  providers: []\n"
        )),
        "resources[0].providers: Required value: at least one resources[0].providers is required"
    );
    assert!(
        parse_error(&format!("{head}resources:\n- resources: [secrets]\n  providers:\n  - {{}}\n"))
            .ends_with("provider does not contain any of the expected providers: KMS, AESGCM, AESCBC, Secretbox, Identity")
    );
    assert!(
        parse_error(&format!("{head}resources:\n- resources: [secrets]\n  providers:\n  - identity: {{}}\n    aescbc: {{keys: []}}\n"))
            .contains("more than one provider specified in a single element")
    );
    assert_eq!(
        parse_error(&format!(
            "{head}resources:\n- resources: ['*']\n  providers:\n  - identity: {{}}\n"
        )),
        "resources[0].resources[0]: Invalid value: \"*\": use '*.' to encrypt all the resources from core API group or *.* to encrypt all resources"
    );
    assert_eq!(
        parse_error(&format!(
            "{head}resources:\n- resources: [Secrets]\n  providers:\n  - identity: {{}}\n"
        )),
        "resources[0].resources[0]: Invalid value: \"Secrets\": resource name should not contain capital letters"
    );
    assert_eq!(
        parse_error(&format!(
            "{head}resources:\n- resources: [secrets, '*.']\n  providers:\n  - identity: {{}}\n"
        )),
        "resources[0].resources: Invalid value: []string{\"secrets\", \"*.\"}: using overlapping resources such as 'secrets' and '*.' in the same resource list is not allowed as they will be masked"
    );
    assert_eq!(
        parse_error(&format!(
            "{head}resources:\n- resources: [secrets, secrets]\n  providers:\n  - identity: {{}}\n"
        )),
        "resources[0].resources: Invalid value: []string{\"secrets\", \"secrets\"}: the same resource cannot be specified multiple times"
    );
    // Masking is found when the rules are built, as upstream.
    let masked = EncryptionConfiguration::parse(
        format!("{head}resources:\n- resources: ['*.*']\n  providers:\n  - identity: {{}}\n- resources: [secrets]\n  providers:\n  - identity: {{}}\n").as_bytes(),
    )
    .unwrap();
    assert_eq!(
        Encryption::new(&masked).err().unwrap().0,
        "resource \"secrets\" is masked by earlier rule \"*.*\""
    );
}

#[test]
fn the_default_file_is_private_kept_and_encrypts_secrets_with_secretbox() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let (path, first) = Encryption::load_or_create_default(&pki).unwrap();
    assert_eq!(path, pki.join("encryption-config.yaml"));
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(&pki).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let text = std::fs::read_to_string(&path).unwrap();
    let stored = first.transform_to_storage(SECRET_KEY, b"{}").unwrap();
    assert!(stored.starts_with(b"k8s:enc:secretbox:v1:key1:"));
    assert_eq!(
        first
            .transform_from_storage(SECRET_KEY, b"{\"legacy\":1}")
            .unwrap(),
        &b"{\"legacy\":1}"[..]
    );
    let (_, second) = Encryption::load_or_create_default(&pki).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    assert_eq!(
        second.transform_from_storage(SECRET_KEY, &stored).unwrap(),
        &b"{}"[..]
    );
    assert_eq!(
        std::fs::read_dir(&pki).unwrap().count(),
        1,
        "no temporary file is left"
    );
}

#[test]
fn files_that_cannot_be_read_say_which() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.yaml");
    std::fs::write(&empty, "\n").unwrap();
    let err = Encryption::load(&empty).err().unwrap().0;
    assert!(err.contains("is empty"), "{err}");
    let missing = Encryption::load(&dir.path().join("missing.yaml"))
        .err()
        .unwrap()
        .0;
    assert!(
        missing.starts_with("error reading encryption provider configuration file"),
        "{missing}"
    );
}

#[test]
fn kms_providers_validate_as_upstream_and_only_v2_is_accepted() {
    let head = "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n";
    assert_eq!(
        parse_error(&format!(
            "{head}  - kms:\n      name: a\n      endpoint: unix:///tmp/a.sock\n"
        )),
        "resources[0].providers[0].kms.apiVersion: Invalid value: \"v1\": KMSv1 is deprecated and not supported; use apiVersion: v2"
    );
    assert_eq!(
        parse_error(&format!(
            "{head}  - kms:\n      apiVersion: v2\n      name: 'a:b'\n      endpoint: tcp://host:1\n      cachesize: 10\n      timeout: 0s\n"
        )),
        "[resources[0].providers[0].kms.name: Invalid value: \"a:b\": invalid KMS provider name a:b, must not contain ':', \
         resources[0].providers[0].kms.timeout: Invalid value: \"0s\": timeout should be a positive value, \
         resources[0].providers[0].kms.endpoint: Invalid value: \"tcp://host:1\": unsupported scheme \"tcp\" for KMS provider, only unix is supported, \
         resources[0].providers[0].kms.cachesize: Invalid value: 10: cachesize is not supported in v2]"
    );
    assert_eq!(
        parse_error(&format!(
            "{head}  - kms:\n      apiVersion: v2\n      name: a\n      endpoint: unix:///tmp/a.sock\n  - kms:\n      apiVersion: v2\n      name: a\n      endpoint: unix:///tmp/b.sock\n"
        )),
        "resources[0].providers[1].kms.name: Invalid value: \"a\": duplicate KMS provider name a, names must be unique"
    );
    assert_eq!(
        parse_error(&format!(
            "{head}  - kms:\n      apiVersion: v3\n      name: a\n      endpoint: ''\n"
        )),
        "[resources[0].providers[0].kms.endpoint: Invalid value: \"\": endpoint is a mandatory field for a kms, \
         resources[0].providers[0].kms.apiVersion: Invalid value: \"v3\": unsupported apiVersion apiVersion for KMS provider, only v1 and v2 are supported]"
    );
    let valid = EncryptionConfiguration::parse(
        format!("{head}  - kms:\n      apiVersion: v2\n      name: a\n      endpoint: unix:///tmp/a.sock\n      timeout: 1m30s\n").as_bytes(),
    )
    .unwrap();
    let kms = valid.resources[0].providers[0].kms.as_ref().unwrap();
    assert_eq!(kms.timeout.as_deref(), Some("1m30s"));
}
