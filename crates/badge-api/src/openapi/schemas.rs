//! Schemas: references to k8s-openapi's definitions, list kinds, and the rewrite of what
//! JSON Schema says and OpenAPI 3.0 cannot.

use schemars::{Schema, SchemaGenerator};
use serde_json::{Map, Value, json};

use super::*;

pub(super) fn schema_ref(
    generator: &mut SchemaGenerator,
    schema: impl FnOnce(&mut SchemaGenerator) -> Schema,
) -> String {
    let schema = schema(generator);
    schema
        .get("$ref")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

pub(super) fn definition_name(reference: &str) -> &str {
    reference.strip_prefix(SCHEMA_PREFIX).unwrap_or(reference)
}

pub(super) fn unrequire(schema: &mut Map<String, Value>, field: &str) {
    if let Some(Value::Array(required)) = schema.get_mut("required") {
        required.retain(|r| r.as_str() != Some(field));
        if required.is_empty() {
            schema.remove("required");
        }
    }
}

pub(super) fn list_schema(gvk: &Gvk, list_kind: &str, kind_ref: &str, list_meta_ref: &str) -> Value {
    json!({
        "description": format!("{list_kind} is a list of {} objects.", gvk.kind),
        "type": "object",
        "properties": {
            "apiVersion": {
                "description": "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources",
                "type": "string",
            },
            "items": {
                "description": format!("List of {} objects.", gvk.kind),
                "type": "array",
                "items": {"$ref": kind_ref},
            },
            "kind": {
                "description": "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds",
                "type": "string",
            },
            "metadata": {
                "description": "Standard list metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds",
                "allOf": [{"$ref": list_meta_ref}],
                "default": {},
            },
        },
        "required": ["items"],
    })
}

/// Schema keys that hold one subschema.
pub(super) const SUBSCHEMA_KEYS: &[&str] = &["items", "additionalProperties", "not"];
/// Schema keys that hold a list of subschemas.
pub(super) const SUBSCHEMA_LIST_KEYS: &[&str] = &["allOf", "anyOf", "oneOf"];

/// Rewrites what JSON Schema 2020-12 can say and OpenAPI 3.0 cannot. schemars' OpenAPI 3
/// settings already do most of it; this is the safety net for whatever a type's
/// hand-written schema contains.
pub(super) fn to_openapi30(schema: &mut Value) {
    match schema {
        // Boolean schemas: `true` accepts anything; `false` nothing.
        Value::Bool(true) => *schema = json!({}),
        Value::Bool(false) => *schema = json!({"not": {}}),
        Value::Object(object) => {
            for key in ["$schema", "$id", "$comment", "$anchor", "$defs", "definitions"] {
                object.remove(key);
            }
            if let Some(Value::Array(types)) = object.get("type").cloned() {
                let nullable = types.iter().any(|t| t == "null");
                let rest: Vec<Value> = types.into_iter().filter(|t| t != "null").collect();
                match rest.as_slice() {
                    [single] => {
                        object.insert("type".into(), single.clone());
                    }
                    _ => {
                        object.remove("type");
                    }
                }
                if nullable {
                    object.insert("nullable".into(), Value::Bool(true));
                }
            }
            if let Some(value) = object.remove("const") {
                object.insert("enum".into(), json!([value]));
            }
            if let Some(Value::Array(examples)) = object.remove("examples")
                && let Some(first) = examples.into_iter().next()
            {
                object.insert("example".into(), first);
            }
            // `$ref` siblings are ignored in 3.0; keep them by moving the reference into allOf.
            if object.len() > 1
                && let Some(reference) = object.remove("$ref")
            {
                let all_of = object.entry("allOf").or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(all_of) = all_of {
                    all_of.push(json!({"$ref": reference}));
                }
            }
            if let Some(Value::Object(properties)) = object.get_mut("properties") {
                properties.values_mut().for_each(to_openapi30);
            }
            for key in SUBSCHEMA_KEYS {
                // `additionalProperties: true/false` is valid 3.0 and means what it says.
                match object.get_mut(*key) {
                    Some(Value::Bool(_)) if *key == "additionalProperties" => {}
                    Some(sub) => to_openapi30(sub),
                    None => {}
                }
            }
            for key in SUBSCHEMA_LIST_KEYS {
                if let Some(Value::Array(subs)) = object.get_mut(*key) {
                    subs.iter_mut().for_each(to_openapi30);
                }
            }
        }
        _ => {}
    }
}
