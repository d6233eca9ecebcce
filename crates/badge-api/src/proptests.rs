//! Property tests: every parser of request input (paths, queries, selectors, bodies,
//! patches) takes arbitrary input without panicking, and keeps its invariants. Bounded for
//! the default run; `PROPTEST_CASES` raises the count.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use crate::decode::{self, FieldValidation, MediaType};
use crate::patch::{self, CoreSchema, PatchType};
use crate::protobuf;
use crate::query::QueryParams;
use crate::request_info::{self, is_valid_path_segment_name};
use crate::resources::RESOURCES;
use crate::selectors::{FieldSelector, FieldTerm, LabelSelector, Requirement};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    }
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|n| json!(n)),
        "[a-z]{0,3}".prop_map(Value::String),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 40, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Member names that collide often, including the ones patches and schemas give meaning to.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "metadata",
            "name",
            "namespace",
            "labels",
            "spec",
            "data",
            "secrets",
            "rules",
            "subjects",
            "$patch",
            "$retainKeys",
            "$deleteFromPrimitiveList/finalizers",
            "$setElementOrder/secrets",
            "finalizers",
            "kind",
            "apiVersion",
            "a",
            "b",
        ])
        .prop_map(String::from),
        "[a-z$/]{0,4}",
    ]
}

// --- request paths and queries ---------------------------------------------------------

fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec!["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
            .prop_map(String::from),
        any::<String>(),
    ]
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "api",
            "apis",
            "v1",
            "namespaces",
            "watch",
            "status",
            "finalize",
            "default",
            "pods",
            "serviceaccounts",
            "token",
            ".",
            "..",
            "%2F",
            "%2e",
            "%2E%2E",
            "%",
            "%ff",
            "%25",
            "",
            "rbac.authorization.k8s.io",
        ])
        .prop_map(String::from),
        "[a-z0-9.%/-]{1,6}",
        any::<String>(),
    ]
}

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        (prop::collection::vec(segment(), 0..8), any::<bool>()).prop_map(|(segments, slash)| {
            let mut path = format!("/{}", segments.join("/"));
            if slash {
                path.push('/');
            }
            path
        }),
        any::<String>(),
    ]
}

fn query() -> impl Strategy<Value = Option<String>> {
    prop::option::of(prop_oneof![
        prop::collection::vec(
            (
                prop::sample::select(vec!["watch", "fieldSelector", "labelSelector", "x", ""]),
                "[a-z.=!,%+&0-9A-F]{0,12}",
            ),
            0..4,
        )
        .prop_map(|pairs| {
            pairs
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("&")
        }),
        any::<String>(),
    ])
}

// --- selectors -------------------------------------------------------------------------

fn label_key() -> impl Strategy<Value = String> {
    (
        prop::option::of("[a-z0-9]([a-z0-9-]{0,6}[a-z0-9])?(\\.[a-z0-9]{1,4}){0,2}"),
        "[A-Za-z0-9]([A-Za-z0-9_.-]{0,8}[A-Za-z0-9])?",
    )
        .prop_map(|(prefix, name)| match prefix {
            Some(prefix) => format!("{prefix}/{name}"),
            None => name,
        })
}

fn label_value() -> impl Strategy<Value = String> {
    "([A-Za-z0-9]([A-Za-z0-9_.-]{0,8}[A-Za-z0-9])?)?"
}

fn requirement() -> impl Strategy<Value = Requirement> {
    let values = || prop::collection::vec(label_value(), 1..4);
    prop_oneof![
        (label_key(), label_value()).prop_map(|(k, v)| Requirement::Equals(k, v)),
        (label_key(), label_value()).prop_map(|(k, v)| Requirement::NotEquals(k, v)),
        (label_key(), values()).prop_map(|(k, v)| Requirement::In(k, v)),
        (label_key(), values()).prop_map(|(k, v)| Requirement::NotIn(k, v)),
        label_key().prop_map(Requirement::Exists),
        label_key().prop_map(Requirement::DoesNotExist),
    ]
}

fn render(requirement: &Requirement) -> String {
    match requirement {
        Requirement::Equals(k, v) => format!("{k}={v}"),
        Requirement::NotEquals(k, v) => format!("{k} != {v}"),
        Requirement::In(k, vs) => format!("{k} in ({})", vs.join(", ")),
        Requirement::NotIn(k, vs) => format!("{k}  notin({})", vs.join(",")),
        Requirement::Exists(k) => k.clone(),
        Requirement::DoesNotExist(k) => format!("! {k}"),
    }
}

/// The meaning of one requirement, spelled out independently of the parser's own matcher.
fn holds(requirement: &Requirement, labels: &BTreeMap<String, String>) -> bool {
    match requirement {
        Requirement::Equals(k, v) => labels.get(k).map(String::as_str) == Some(v.as_str()),
        Requirement::NotEquals(k, v) => labels.get(k).map(String::as_str) != Some(v.as_str()),
        Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.iter().any(|x| x == v)),
        Requirement::NotIn(k, vs) => !labels.get(k).is_some_and(|v| vs.iter().any(|x| x == v)),
        Requirement::Exists(k) => labels.contains_key(k),
        Requirement::DoesNotExist(k) => !labels.contains_key(k),
    }
}

fn selector_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-z!=,() /.]{0,24}",
        prop::collection::vec(
            prop_oneof![
                Just("in".to_string()),
                Just("notin".to_string()),
                Just("(".to_string()),
                Just(")".to_string()),
                Just(",".to_string()),
                Just("!".to_string()),
                Just("=".to_string()),
                Just("!=".to_string()),
                Just(" ".to_string()),
                "[a-z]{1,3}",
            ],
            0..12,
        )
        .prop_map(|parts| parts.concat()),
    ]
}

fn labels() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(
        prop_oneof![label_key(), "[a-c]"],
        prop_oneof![label_value(), "[a-c]"],
        0..4,
    )
}

// --- protobuf --------------------------------------------------------------------------

fn varint(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn length_delimited(number: u64, bytes: &[u8], out: &mut Vec<u8>) {
    varint((number << 3) | 2, out);
    varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// A protobuf message of random fields, nested messages among them, with any wire type.
fn pb_message() -> impl Strategy<Value = Vec<u8>> {
    let scalar = (
        1u64..20,
        0u8..8,
        any::<u64>(),
        prop::collection::vec(any::<u8>(), 0..12),
    )
        .prop_map(|(number, wire, n, bytes)| {
            let mut out = Vec::new();
            varint((number << 3) | u64::from(wire), &mut out);
            match wire {
                0 => varint(n, &mut out),
                1 => out.extend_from_slice(&n.to_le_bytes()),
                5 => out.extend_from_slice(&n.to_le_bytes()[..4]),
                2 => {
                    varint(bytes.len() as u64, &mut out);
                    out.extend_from_slice(&bytes);
                }
                _ => out.extend_from_slice(&bytes),
            }
            out
        });
    let message = prop::collection::vec(scalar, 0..6).prop_map(|fields| fields.concat());
    message.prop_recursive(4, 32, 6, |inner| {
        prop::collection::vec(
            prop_oneof![
                (1u64..20, inner.clone()).prop_map(|(number, nested)| {
                    let mut out = Vec::new();
                    length_delimited(number, &nested, &mut out);
                    out
                }),
                inner,
            ],
            0..6,
        )
        .prop_map(|fields| fields.concat())
    })
}

fn pb_body(api_version: &str, kind: &str, raw: &[u8], content_type: &str) -> Vec<u8> {
    let mut type_meta = Vec::new();
    length_delimited(1, api_version.as_bytes(), &mut type_meta);
    length_delimited(2, kind.as_bytes(), &mut type_meta);
    let mut body = protobuf::MAGIC.to_vec();
    length_delimited(1, &type_meta, &mut body);
    length_delimited(2, raw, &mut body);
    length_delimited(4, content_type.as_bytes(), &mut body);
    body
}

fn pb_kind() -> impl Strategy<Value = (&'static str, &'static str)> {
    prop::sample::select(RESOURCES.iter().map(|r| (r.group, r.kind)).collect::<Vec<_>>())
}

// --- patches ---------------------------------------------------------------------------

fn pointer() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::collection::vec(
            prop_oneof![
                key(),
                "[0-9]{1,2}",
                Just("-".to_string()),
                Just("~1".to_string()),
                Just("~".to_string())
            ],
            0..4,
        )
        .prop_map(|parts| parts.iter().map(|p| format!("/{p}")).collect::<String>()),
        any::<String>(),
    ]
}

fn json_patch_ops() -> impl Strategy<Value = Value> {
    let op = (
        prop::sample::select(vec!["add", "remove", "replace", "move", "copy", "test", "bogus"]),
        pointer(),
        prop::option::of(pointer()),
        prop::option::of(json_value()),
    )
        .prop_map(|(op, path, from, value)| {
            let mut map = Map::new();
            map.insert("op".into(), json!(op));
            map.insert("path".into(), json!(path));
            if let Some(from) = from {
                map.insert("from".into(), json!(from));
            }
            if let Some(value) = value {
                map.insert("value".into(), value);
            }
            Value::Object(map)
        });
    prop_oneof![
        prop::collection::vec(op, 0..6).prop_map(Value::Array),
        json_value(),
    ]
}

fn schema_kind() -> impl Strategy<Value = &'static str> {
    prop::sample::select(RESOURCES.iter().map(|r| r.kind).collect::<Vec<_>>())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn request_info_parse_keeps_its_invariants(
        method in method(),
        path in path(),
        query in query(),
    ) {
        let first = request_info::parse(&method, &path, query.as_deref());
        prop_assert_eq!(&first, &request_info::parse(&method, &path, query.as_deref()));
        let Ok(info) = first else { return Ok(()) };
        if !info.is_resource_request {
            prop_assert_eq!(info.verb, method.to_ascii_lowercase());
            prop_assert!(info.name.is_empty() && info.namespace.is_empty());
            return Ok(());
        }
        prop_assert!(info.api_prefix == "api" || info.api_prefix == "apis");
        prop_assert!(!info.api_version.is_empty());
        prop_assert!(info.name.is_empty() || is_valid_path_segment_name(&info.name), "{:?}", info);
        prop_assert!(
            info.namespace.is_empty() || is_valid_path_segment_name(&info.namespace),
            "{:?}",
            info
        );
        if info.namespace_scoped_path {
            prop_assert!(!info.namespace.is_empty());
            prop_assert!(!info.resource.is_empty());
        }
        if !info.subresource.is_empty() {
            prop_assert!(!info.name.is_empty() || info.watch_path);
        }
        if info.watch_path {
            prop_assert_eq!(info.verb, "watch");
        }
    }

    #[test]
    fn request_info_paths_under_the_api_parse_their_segments(
        namespace in "[a-z0-9-]{1,8}",
        name in "[a-z0-9.-]{1,8}",
        resource in "[a-z]{1,8}",
    ) {
        prop_assume!(name != "." && name != "..");
        prop_assume!(!["status", "finalize"].contains(&resource.as_str()));
        let path = format!("/api/v1/namespaces/{namespace}/{resource}/{name}");
        let info = request_info::parse("GET", &path, None).unwrap();
        prop_assert!(info.is_resource_request && info.namespace_scoped_path);
        prop_assert_eq!(
            (info.namespace.as_str(), info.resource.as_str(), info.name.as_str(), info.verb.as_str()),
            (namespace.as_str(), resource.as_str(), name.as_str(), "get")
        );
    }

    #[test]
    fn query_params_parse_never_panics(query in query(), key in "[a-zA-Z]{0,6}") {
        let params = QueryParams::parse(query.as_deref());
        let _ = params.get(&key);
        let _ = params.watch();
        prop_assert_eq!(params, QueryParams::parse(query.as_deref()));
    }

    #[test]
    fn query_params_first_value_wins(
        pairs in prop::collection::vec(("[a-c]{1,2}", "[a-z0-9 ]{0,4}"), 1..6),
    ) {
        let text = pairs
            .iter()
            .map(|(k, v)| format!("{k}={}", v.replace(' ', "+")))
            .collect::<Vec<_>>()
            .join("&");
        let params = QueryParams::parse(Some(&text));
        for (k, _) in &pairs {
            let first = pairs.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
            prop_assert_eq!(params.get(k), first);
        }
    }

    #[test]
    fn label_selector_parse_never_panics_and_matches_deterministically(
        text in selector_text(),
        labels in labels(),
    ) {
        let parsed = LabelSelector::parse(&text);
        prop_assert_eq!(&parsed, &LabelSelector::parse(&text));
        if let Ok(selector) = parsed {
            let matched = selector.matches(&labels);
            prop_assert_eq!(matched, selector.matches(&labels));
            prop_assert_eq!(matched, selector.requirements.iter().all(|r| holds(r, &labels)));
            prop_assert_eq!(selector.is_empty(), selector.requirements.is_empty());
        }
    }

    #[test]
    fn label_selector_round_trips(
        requirements in prop::collection::vec(requirement(), 0..5),
        labels in labels(),
    ) {
        let text = requirements.iter().map(render).collect::<Vec<_>>().join(", ");
        let selector = LabelSelector::parse(&text).unwrap();
        prop_assert_eq!(&selector.requirements, &requirements, "{}", text);
        prop_assert_eq!(
            selector.matches(&labels),
            requirements.iter().all(|r| holds(r, &labels))
        );
    }

    #[test]
    fn field_selector_parse_never_panics(text in selector_text(), field in "[a-z.]{0,8}") {
        let parsed = FieldSelector::parse(&text);
        prop_assert_eq!(&parsed, &FieldSelector::parse(&text));
        if let Ok(selector) = parsed {
            let _ = selector.required_value(&field);
            let _ = selector.matches(|f| (f == field).then(|| "x".to_string()));
        }
    }

    #[test]
    fn field_selector_round_trips(
        terms in prop::collection::vec(("[a-zA-Z0-9._-]{0,8}", "[a-zA-Z0-9._-]{0,8}", any::<bool>()), 0..5),
    ) {
        let text = terms
            .iter()
            .map(|(f, v, negated)| format!("{f} {} {v}", if *negated { "!=" } else { "==" }))
            .collect::<Vec<_>>()
            .join(",");
        let selector = FieldSelector::parse(&text).unwrap();
        let want: Vec<FieldTerm> = terms
            .iter()
            .map(|(field, value, negated)| FieldTerm {
                field: field.clone(),
                value: value.clone(),
                negated: *negated,
            })
            .collect();
        prop_assert_eq!(&selector.terms, &want);
        let lookup = |f: &str| terms.iter().find(|(field, _, _)| field == f).map(|(_, v, _)| v.clone());
        prop_assert_eq!(
            selector.matches(lookup),
            want.iter().all(|t| (lookup(&t.field).unwrap_or_default() == t.value) != t.negated)
        );
    }

    #[test]
    fn decode_arbitrary_bytes_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
        media in prop::sample::select(vec![MediaType::Json, MediaType::Yaml, MediaType::Protobuf]),
    ) {
        let _ = decode::parse_body(media, &bytes);
        let mut prefixed = protobuf::MAGIC.to_vec();
        prefixed.extend_from_slice(&bytes);
        let _ = decode::parse_body(MediaType::Protobuf, &prefixed);
    }

    #[test]
    fn decode_arbitrary_text_never_panics(
        text in prop_oneof![
            any::<String>(),
            "[\\[\\]{}\":,0-9a-z.eE+\\- \\\\u]{0,200}",
            "[-:{}\\[\\],&*!|>'\"#%@ \na-z0-9]{0,200}",
        ],
    ) {
        let _ = decode::parse_json(text.as_bytes());
        let _ = decode::parse_yaml(text.as_bytes());
    }

    #[test]
    fn decode_json_round_trips(value in json_value()) {
        let text = serde_json::to_vec(&value).unwrap();
        let (parsed, duplicates) = decode::parse_json(&text).unwrap();
        prop_assert!(duplicates.is_empty());
        // Floats may come back a ulp away; compare the re-serialized text of both sides.
        prop_assert_eq!(serde_json::to_string(&parsed).unwrap(), serde_json::to_string(&serde_json::from_slice::<Value>(&text).unwrap()).unwrap());
    }

    #[test]
    fn decode_for_every_kind_never_panics(
        (group, kind) in pb_kind(),
        members in prop::collection::btree_map(key(), json_value(), 0..6),
        validation in prop::sample::select(vec![FieldValidation::Strict, FieldValidation::Warn, FieldValidation::Ignore]),
    ) {
        let resource = RESOURCES.iter().find(|r| r.group == group && r.kind == kind).unwrap();
        let value = Value::Object(members.into_iter().collect());
        if let Ok(decoded) = decode::decode_for(resource, value, &[], validation) {
            prop_assert_eq!(decoded.object["kind"].as_str(), Some(kind));
        }
    }

    #[test]
    fn protobuf_random_messages_never_panic(
        (group, kind) in pb_kind(),
        raw in prop_oneof![pb_message(), prop::collection::vec(any::<u8>(), 0..256)],
        content_type in prop::sample::select(vec!["", protobuf::CONTENT_TYPE, "application/json"]),
    ) {
        let api_version = if group.is_empty() { "v1".to_string() } else { format!("{group}/v1") };
        let body = pb_body(&api_version, kind, &raw, content_type);
        if let Ok(object) = protobuf::decode(&body) {
            prop_assert_eq!(object["kind"].as_str(), Some(kind));
            prop_assert_eq!(object["apiVersion"].as_str(), Some(api_version.as_str()));
        }
    }

    #[test]
    fn protobuf_config_maps_round_trip(
        name in ".{1,12}",
        namespace in ".{1,12}",
        labels in prop::collection::btree_map(".{1,6}", ".{0,6}", 1..4),
        data in prop::collection::btree_map(".{1,6}", any::<String>(), 1..4),
        binary in prop::collection::btree_map(".{1,6}", prop::collection::vec(any::<u8>(), 0..16), 1..4),
    ) {
        use base64::Engine;
        use k8s_pb::api::core::v1 as core;
        use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
        use prost::Message;

        let config_map = core::ConfigMap {
            metadata: Some(meta::ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                labels: labels.clone(),
                ..Default::default()
            }),
            data: data.clone(),
            binary_data: binary.clone(),
            ..Default::default()
        };
        let body = pb_body("v1", "ConfigMap", &config_map.encode_to_vec(), "");
        let object = protobuf::decode(&body).unwrap();
        prop_assert_eq!(&object["metadata"]["name"], &json!(name));
        prop_assert_eq!(&object["metadata"]["namespace"], &json!(namespace));
        prop_assert_eq!(&object["metadata"]["labels"], &json!(labels));
        prop_assert_eq!(&object["data"], &json!(data));
        let binary: BTreeMap<&String, String> = binary
            .iter()
            .map(|(k, v)| (k, base64::engine::general_purpose::STANDARD.encode(v)))
            .collect();
        prop_assert_eq!(&object["binaryData"], &json!(binary));
    }

    #[test]
    fn protobuf_truncated_bodies_never_panic(
        (group, kind) in pb_kind(),
        raw in pb_message(),
        cut in any::<prop::sample::Index>(),
    ) {
        let api_version = if group.is_empty() { "v1".to_string() } else { format!("{group}/v1") };
        let body = pb_body(&api_version, kind, &raw, "");
        let _ = protobuf::decode(&body[..cut.index(body.len() + 1)]);
    }

    #[test]
    fn merge_patch_never_panics_and_is_idempotent(target in json_value(), patch in json_value()) {
        let mut once = target.clone();
        patch::merge_patch(&mut once, &patch);
        let mut twice = once.clone();
        patch::merge_patch(&mut twice, &patch);
        prop_assert_eq!(once, twice);
    }

    #[test]
    fn json_patch_never_panics(target in json_value(), ops in json_patch_ops()) {
        let _ = patch::json_patch(&target, &ops);
    }

    #[test]
    fn strategic_merge_patch_never_panics(
        kind in schema_kind(),
        original in json_value(),
        patch in json_value(),
    ) {
        if let Some(schema) = CoreSchema::for_kind(kind) {
            let _ = patch::strategic_merge_patch(&original, &patch, schema);
        }
    }

    #[test]
    fn apply_patch_never_panics(
        patch_type in prop::sample::select(vec![PatchType::Json, PatchType::Merge, PatchType::StrategicMerge, PatchType::Apply]),
        kind in schema_kind(),
        original in json_value(),
        body in prop_oneof![
            json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
            json_patch_ops().prop_map(|v| serde_json::to_vec(&v).unwrap()),
            prop::collection::vec(any::<u8>(), 0..128),
        ],
    ) {
        if let Ok(patched) = patch::apply_patch(patch_type, &original, &body, kind) {
            prop_assert!(patched.is_object());
        }
    }
}
