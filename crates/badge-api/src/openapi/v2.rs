//! The OpenAPI v2 (Swagger 2.0) document at `/openapi/v2`, rendered from the same model as
//! the v3 documents, in JSON and in gnostic's protobuf form.
//!
//! kubectl reads it (always as protobuf) when v3 cannot answer: `create -f` of a kind with
//! no PATCH operation (the review kinds) asks v2 whether the server validates fields, and
//! then validates the object on the client against the v2 definitions. The layout follows
//! kube-openapi's v2 builder: parameters every operation of a path shares move to the
//! path, and parameters that are not specific to one kind are shared through the top-level
//! `parameters` map.

use std::sync::OnceLock;

use serde_json::{Map, Value, json};

use super::{
    GVK, KUBERNETES_VERSION, Model, Op, Param, PathItem, SCHEMA_PREFIX, definition_name, group_version_model,
    hash_hex,
};
use crate::resources::{GROUPS, versions_of};

/// The protobuf media type upstream answers with; kubectl asks for the older spelling,
/// `application/com.github.proto-openapi.spec.v2@v1.0+protobuf`, and both are accepted.
pub const PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

const DEFINITION_PREFIX: &str = "#/definitions/";
const PARAMETER_PREFIX: &str = "#/parameters/";

struct Cache {
    json: Vec<u8>,
    protobuf: Vec<u8>,
    etag: String,
}

static CACHE: OnceLock<Cache> = OnceLock::new();

fn cache() -> &'static Cache {
    CACHE.get_or_init(|| {
        let document = document();
        let json = serde_json::to_vec(&document).unwrap_or_default();
        let protobuf = encode_document(&document);
        // One tag for both forms, as upstream: responses vary by Accept.
        let etag = format!("\"{}\"", hash_hex(&json));
        Cache { json, protobuf, etag }
    })
}

/// The serialized JSON document.
pub fn json_bytes() -> &'static [u8] {
    &cache().json
}

/// The document as a serialized `openapi.v2.Document` protobuf message.
pub fn protobuf_bytes() -> &'static [u8] {
    &cache().protobuf
}

/// The quoted entity tag of the document.
pub fn etag() -> &'static str {
    &cache().etag
}

/// The two forms the document is served in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    /// `application/json`.
    Json,
    /// `application/com.github.proto-openapi.spec.v2.v1.0+protobuf`, which kubectl prefers.
    Protobuf,
}

impl Form {
    /// The `Content-Type` the form is served with.
    pub fn content_type(self) -> &'static str {
        match self {
            Form::Json => "application/json",
            Form::Protobuf => PROTOBUF,
        }
    }

    /// The document in this form, built once.
    pub fn bytes(self) -> &'static [u8] {
        match self {
            Form::Json => json_bytes(),
            Form::Protobuf => protobuf_bytes(),
        }
    }
}

/// The form an `Accept` header asks for, as kube-openapi's handler chooses it: clauses by
/// falling quality, exact types before wildcards, and the first one that names a form (JSON
/// first for wildcards). No header means `*/*`; `None` means 406 Not Acceptable.
pub fn negotiate(accept: &str) -> Option<Form> {
    let accept = if accept.trim().is_empty() { "*/*" } else { accept };
    let mut clauses: Vec<(f32, &str, &str)> = accept
        .split(',')
        .filter_map(|clause| {
            let mut parts = clause.split(';');
            let media = parts.next()?.trim();
            let (ty, subtype) = media.split_once('/').unwrap_or((media, "*"));
            let quality = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            Some((quality, ty.trim(), subtype.trim()))
        })
        .collect();
    clauses.sort_by(|a, b| {
        b.0.total_cmp(&a.0)
            .then((a.1 == "*").cmp(&(b.1 == "*")))
            .then((a.2 == "*").cmp(&(b.2 == "*")))
    });
    const FORMS: &[(&str, Form)] = &[
        ("json", Form::Json),
        ("com.github.proto-openapi.spec.v2@v1.0+protobuf", Form::Protobuf),
        ("com.github.proto-openapi.spec.v2.v1.0+protobuf", Form::Protobuf),
    ];
    clauses.iter().find_map(|(_, ty, subtype)| {
        if *ty != "application" && *ty != "*" {
            return None;
        }
        FORMS
            .iter()
            .find(|(name, _)| subtype == name || *subtype == "*")
            .map(|(_, form)| *form)
    })
}

/// The Swagger 2.0 document of every served group-version.
pub fn document() -> Value {
    let mut paths = Map::new();
    let mut definitions = Map::new();
    for group in GROUPS {
        for version in versions_of(group) {
            let Some(model) = group_version_model(group, version) else {
                continue;
            };
            add_model(&model, &mut paths, &mut definitions);
        }
    }
    let mut document = json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": KUBERNETES_VERSION},
        "paths": paths,
        "definitions": definitions,
        "securityDefinitions": {
            "BearerToken": {
                "description": "Bearer Token authentication",
                "type": "apiKey",
                "name": "authorization",
                "in": "header",
            },
        },
        "security": [{"BearerToken": []}],
    });
    share_parameters(&mut document);
    document
}

fn add_model(model: &Model, paths: &mut Map<String, Value>, definitions: &mut Map<String, Value>) {
    for item in &model.paths {
        paths.insert(item.path.clone(), path_item(item));
    }
    for (name, schema) in &model.schemas {
        let mut schema = schema.clone();
        to_swagger20(&mut schema);
        match definitions.get_mut(name) {
            // The same type in several group-versions: one definition, every kind it is.
            Some(existing) => merge_kinds(existing, &schema),
            None => {
                definitions.insert(name.clone(), schema);
            }
        }
    }
}

fn merge_kinds(existing: &mut Value, other: &Value) {
    let Some(Value::Array(more)) = other.get(GVK) else {
        return;
    };
    if let Value::Object(existing) = existing
        && let Value::Array(kinds) = existing.entry(GVK).or_insert_with(|| Value::Array(Vec::new()))
    {
        for kind in more {
            if !kinds.contains(kind) {
                kinds.push(kind.clone());
            }
        }
    }
}

/// Parameters every operation of the path has move to the path, as kube-openapi's builder
/// does; both lists are sorted by name and location.
fn path_item(item: &PathItem) -> Value {
    let common: Vec<&Param> = item
        .operations
        .first()
        .map(|(_, first)| {
            first
                .parameters
                .iter()
                .filter(|p| {
                    item.operations
                        .iter()
                        .all(|(_, op)| op.parameters.iter().any(|q| same_param(p, q)))
                })
                .collect()
        })
        .unwrap_or_default();
    let mut value = Map::new();
    for (method, op) in &item.operations {
        let own = op
            .parameters
            .iter()
            .filter(|p| !common.iter().any(|c| same_param(p, c)));
        value.insert((*method).to_string(), operation(op, own));
    }
    let mut shared: Vec<Value> = item
        .parameters
        .iter()
        .chain(common.iter().copied())
        .map(param)
        .collect();
    sort_params(&mut shared);
    if !shared.is_empty() {
        value.insert("parameters".into(), Value::Array(shared));
    }
    Value::Object(value)
}

fn same_param(a: &Param, b: &Param) -> bool {
    a.name == b.name && a.location == b.location
}

fn sort_params(params: &mut [Value]) {
    params.sort_by(|a, b| {
        let key = |p: &Value| {
            (
                p["name"].as_str().map(String::from),
                p["in"].as_str().map(String::from),
            )
        };
        key(a).cmp(&key(b))
    });
}

fn operation<'a>(op: &Op, own: impl Iterator<Item = &'a Param>) -> Value {
    let mut parameters: Vec<Value> = own.map(param).collect();
    let consumes = match &op.body {
        Some(body) => {
            let mut parameter = json!({
                "name": "body",
                "in": "body",
                "schema": {"$ref": v2_ref(&body.schema_ref)},
            });
            if body.required {
                parameter["required"] = Value::Bool(true);
            }
            parameters.push(parameter);
            body.media_types
        }
        None => &["*/*"][..],
    };
    sort_params(&mut parameters);
    let mut produces: Vec<&str> = Vec::new();
    let mut responses = Map::new();
    for reply in &op.responses {
        let mut response = json!({"description": reply.description});
        if let Some(schema_ref) = &reply.schema_ref {
            response["schema"] = json!({"$ref": v2_ref(schema_ref)});
        }
        for media_type in reply.media_types {
            if !produces.contains(media_type) {
                produces.push(media_type);
            }
        }
        responses.insert(reply.code.into(), response);
    }
    let mut value = json!({
        "tags": [op.tag],
        "description": op.description,
        "operationId": op.operation_id(),
        "consumes": consumes,
        "produces": produces,
        "schemes": ["https"],
        "responses": responses,
        "x-kubernetes-action": op.action,
    });
    value[GVK] = op.gvk.to_value();
    if !parameters.is_empty() {
        value["parameters"] = Value::Array(parameters);
    }
    value
}

fn param(p: &Param) -> Value {
    let mut value = json!({
        "name": p.name,
        "in": p.location,
        "description": p.description,
        "type": p.ty,
        "uniqueItems": true,
    });
    if p.location == "path" {
        value["required"] = Value::Bool(true);
    }
    value
}

fn v2_ref(reference: &str) -> String {
    format!("{DEFINITION_PREFIX}{}", definition_name(reference))
}

/// Replaces parameters that are not specific to one kind with references into the
/// top-level `parameters` map. Like upstream, `name` (its description names the kind),
/// `dryRun` and `fieldValidation` (clients look for them on the operation) and bodies of
/// a kind's own schema stay where they are.
fn share_parameters(document: &mut Value) {
    let mut shared = Map::new();
    if let Some(Value::Object(paths)) = document.get_mut("paths") {
        for item in paths.values_mut() {
            let Value::Object(item) = item else { continue };
            for (key, value) in item.iter_mut() {
                let list = if key == "parameters" {
                    value.as_array_mut()
                } else {
                    value.get_mut("parameters").and_then(Value::as_array_mut)
                };
                for p in list.into_iter().flatten() {
                    if shareable(p) {
                        let text = p.to_string();
                        let name = format!("{}-{}", p["name"].as_str().unwrap_or("param"), short_hash(&text));
                        shared.insert(name.clone(), p.take());
                        *p = json!({"$ref": format!("{PARAMETER_PREFIX}{name}")});
                    }
                }
            }
        }
    }
    document["parameters"] = Value::Object(shared);
}

fn shareable(p: &Value) -> bool {
    let name = p["name"].as_str().unwrap_or_default();
    match p["in"].as_str().unwrap_or_default() {
        "query" | "path" if name == "name" => false,
        "query" => name != "fieldValidation" && name != "dryRun",
        "body" => p["schema"]["$ref"]
            .as_str()
            .is_some_and(|r| r.starts_with("#/definitions/io.k8s.apimachinery")),
        _ => true,
    }
}

/// Eight URL-safe base64 characters of the parameter's FNV-1 hash, the shape of upstream's
/// shared parameter names (`pretty-tJGM1-ng`).
fn short_hash(text: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        hash ^= u64::from(byte);
    }
    // Six bytes are 48 bits: eight base64 digits exactly.
    let bits = hash >> 16;
    (0..8)
        .map(|i| char::from(ALPHABET[((bits >> (42 - 6 * i)) & 0x3f) as usize]))
        .collect()
}

/// Rewrites an OpenAPI 3.0 schema into Swagger 2.0: references point into `definitions`,
/// a described reference is a `$ref` with siblings again, and keywords 2.0 lacks go.
fn to_swagger20(schema: &mut Value) {
    let Value::Object(object) = schema else {
        return;
    };
    for key in ["nullable", "oneOf", "anyOf", "not", "writeOnly", "deprecated"] {
        object.remove(key);
    }
    if let Some(Value::String(reference)) = object.get_mut("$ref")
        && let Some(name) = reference.strip_prefix(SCHEMA_PREFIX)
    {
        *reference = format!("{DEFINITION_PREFIX}{name}");
    }
    // `allOf: [{$ref}]` is how 3.0 describes a reference; 2.0 (and kubectl's parser,
    // which ignores allOf) wants the reference itself.
    if let Some(Value::Array(all_of)) = object.get("allOf")
        && let [only] = all_of.as_slice()
        && let Some(reference) = only.get("$ref").cloned()
        && only.as_object().is_some_and(|o| o.len() == 1)
    {
        object.remove("allOf");
        object.remove("default");
        object.insert("$ref".into(), reference);
        to_swagger20(schema);
        return;
    }
    if let Some(Value::Object(properties)) = object.get_mut("properties") {
        properties.values_mut().for_each(to_swagger20);
    }
    for key in ["items", "additionalProperties"] {
        if let Some(sub) = object.get_mut(key) {
            to_swagger20(sub);
        }
    }
    if let Some(Value::Array(all_of)) = object.get_mut("allOf") {
        all_of.iter_mut().for_each(to_swagger20);
    }
}

// ---------------------------------------------------------------------------------------
// Protobuf: gnostic's `openapi.v2.Document` (openapiv2/OpenAPIv2.proto), encoded from the
// JSON document so that both forms say the same thing. proto3 rules: scalars equal to
// their default are left out; a present message is written even when empty.

#[derive(Default)]
struct Writer(Vec<u8>);

impl Writer {
    fn varint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.0.push((value as u8 & 0x7f) | 0x80);
            value >>= 7;
        }
        self.0.push(value as u8);
    }

    fn key(&mut self, field: u32, wire_type: u8) {
        self.varint((u64::from(field) << 3) | u64::from(wire_type));
    }

    fn bytes(&mut self, field: u32, bytes: &[u8]) {
        self.key(field, 2);
        self.varint(bytes.len() as u64);
        self.0.extend_from_slice(bytes);
    }

    fn string(&mut self, field: u32, value: &str) {
        if !value.is_empty() {
            self.bytes(field, value.as_bytes());
        }
    }

    fn string_of(&mut self, field: u32, object: &Value, key: &str) {
        if let Some(value) = object.get(key).and_then(Value::as_str) {
            self.string(field, value);
        }
    }

    fn strings_of(&mut self, field: u32, object: &Value, key: &str) {
        if let Some(values) = object.get(key) {
            self.strings(field, values);
        }
    }

    fn strings(&mut self, field: u32, values: &Value) {
        for value in values.as_array().into_iter().flatten() {
            if let Some(value) = value.as_str() {
                // Repeated strings keep empty elements.
                self.bytes(field, value.as_bytes());
            }
        }
    }

    fn bool_of(&mut self, field: u32, object: &Value, key: &str) {
        if object.get(key).and_then(Value::as_bool) == Some(true) {
            self.key(field, 0);
            self.varint(1);
        }
    }

    fn double_of(&mut self, field: u32, object: &Value, key: &str) {
        if let Some(value) = object.get(key).and_then(Value::as_f64)
            && value != 0.0
        {
            self.key(field, 1);
            self.0.extend_from_slice(&value.to_le_bytes());
        }
    }

    fn int64_of(&mut self, field: u32, object: &Value, key: &str) {
        if let Some(value) = object.get(key).and_then(Value::as_i64)
            && value != 0
        {
            self.key(field, 0);
            // Negative int64 values are ten-byte two's complement varints.
            self.varint(value as u64);
        }
    }

    fn message(&mut self, field: u32, encode: impl FnOnce(&mut Writer)) {
        let mut inner = Writer::default();
        encode(&mut inner);
        self.bytes(field, &inner.0);
    }

    fn message_of(
        &mut self,
        field: u32,
        object: &Value,
        key: &str,
        encode: impl FnOnce(&mut Writer, &Value),
    ) {
        if let Some(value) = object.get(key) {
            self.message(field, |w| encode(w, value));
        }
    }

    /// `Any`: gnostic keeps values it has no message for as YAML text; JSON is YAML.
    fn any(&mut self, field: u32, value: &Value) {
        self.message(field, |w| w.string(2, &value.to_string()));
    }

    /// `repeated NamedAny vendor_extension`: the object's `x-` keys.
    fn extensions(&mut self, field: u32, object: &Value) {
        for (name, value) in object.as_object().into_iter().flatten() {
            if name.starts_with("x-") {
                self.message(field, |w| {
                    w.string(1, name);
                    w.any(2, value);
                });
            }
        }
    }

    /// A map of named messages: `repeated Named* { name = 1; value = 2; }`.
    fn named(&mut self, field: u32, map: &Value, encode: impl Fn(&mut Writer, &Value)) {
        for (name, value) in map.as_object().into_iter().flatten() {
            self.message(field, |w| {
                w.string(1, name);
                w.message(2, |w| encode(w, value));
            });
        }
    }
}

fn encode_document(document: &Value) -> Vec<u8> {
    let mut w = Writer::default();
    w.string_of(1, document, "swagger");
    w.message_of(2, document, "info", |w, info| {
        w.string_of(1, info, "title");
        w.string_of(2, info, "version");
    });
    w.message_of(8, document, "paths", |w, paths| w.named(2, paths, path_item_pb));
    w.message_of(9, document, "definitions", |w, definitions| {
        w.named(1, definitions, schema_pb)
    });
    w.message_of(10, document, "parameters", |w, parameters| {
        w.named(1, parameters, parameter_pb)
    });
    for requirement in document["security"].as_array().into_iter().flatten() {
        w.message(12, |w| w.named(1, requirement, |w, scopes| w.strings(1, scopes)));
    }
    w.message_of(13, document, "securityDefinitions", |w, definitions| {
        w.named(1, definitions, |w, definition| {
            // Only `apiKey` definitions exist: oneof field 2, ApiKeySecurity.
            w.message(2, |w| {
                w.string_of(1, definition, "type");
                w.string_of(2, definition, "name");
                w.string_of(3, definition, "in");
                w.string_of(4, definition, "description");
                w.extensions(5, definition);
            })
        })
    });
    w.extensions(16, document);
    w.0
}

fn path_item_pb(w: &mut Writer, item: &Value) {
    for (field, method) in [
        (2, "get"),
        (3, "put"),
        (4, "post"),
        (5, "delete"),
        (6, "options"),
        (7, "head"),
        (8, "patch"),
    ] {
        w.message_of(field, item, method, operation_pb);
    }
    for p in item["parameters"].as_array().into_iter().flatten() {
        w.message(9, |w| parameters_item_pb(w, p));
    }
    w.extensions(10, item);
}

fn operation_pb(w: &mut Writer, op: &Value) {
    w.strings_of(1, op, "tags");
    w.string_of(2, op, "summary");
    w.string_of(3, op, "description");
    w.string_of(5, op, "operationId");
    w.strings_of(6, op, "produces");
    w.strings_of(7, op, "consumes");
    for p in op["parameters"].as_array().into_iter().flatten() {
        w.message(8, |w| parameters_item_pb(w, p));
    }
    w.message_of(9, op, "responses", |w, responses| {
        w.named(1, responses, |w, response| {
            // ResponseValue: oneof response = 1.
            w.message(1, |w| {
                w.string_of(1, response, "description");
                // SchemaItem: oneof schema = 1.
                w.message_of(2, response, "schema", |w, schema| {
                    w.message(1, |w| schema_pb(w, schema))
                });
                w.extensions(5, response);
            })
        })
    });
    w.strings_of(10, op, "schemes");
    w.bool_of(11, op, "deprecated");
    w.extensions(13, op);
}

/// `ParametersItem`: a reference (field 2) or a parameter (field 1).
fn parameters_item_pb(w: &mut Writer, p: &Value) {
    match p.get("$ref").and_then(Value::as_str) {
        Some(reference) => w.message(2, |w| w.string(1, reference)),
        None => w.message(1, |w| parameter_pb(w, p)),
    }
}

/// `Parameter`: a body parameter (field 1) or one of the non-body kinds (field 2).
fn parameter_pb(w: &mut Writer, p: &Value) {
    if p["in"] == "body" {
        w.message(1, |w| {
            w.string_of(1, p, "description");
            w.string_of(2, p, "name");
            w.string_of(3, p, "in");
            w.bool_of(4, p, "required");
            w.message_of(5, p, "schema", schema_pb);
            w.extensions(6, p);
        });
        return;
    }
    // NonBodyParameter's oneof, and where each sub-schema keeps type, format and uniqueItems.
    let (field, ty, format, unique_items, extensions) = match p["in"].as_str() {
        Some("header") => (1, 5, 6, 19, 22),
        Some("formData") => (2, 6, 7, 20, 23),
        Some("path") => (4, 5, 6, 19, 22),
        _ => (3, 6, 7, 20, 23),
    };
    w.message(2, |w| {
        w.message(field, |w| {
            w.bool_of(1, p, "required");
            w.string_of(2, p, "in");
            w.string_of(3, p, "description");
            w.string_of(4, p, "name");
            w.string_of(ty, p, "type");
            w.string_of(format, p, "format");
            w.bool_of(unique_items, p, "uniqueItems");
            w.extensions(extensions, p);
        })
    });
}

fn schema_pb(w: &mut Writer, s: &Value) {
    w.string_of(1, s, "$ref");
    w.string_of(2, s, "format");
    w.string_of(3, s, "title");
    w.string_of(4, s, "description");
    if let Some(default) = s.get("default") {
        w.any(5, default);
    }
    w.double_of(6, s, "multipleOf");
    w.double_of(7, s, "maximum");
    w.bool_of(8, s, "exclusiveMaximum");
    w.double_of(9, s, "minimum");
    w.bool_of(10, s, "exclusiveMinimum");
    w.int64_of(11, s, "maxLength");
    w.int64_of(12, s, "minLength");
    w.string_of(13, s, "pattern");
    w.int64_of(14, s, "maxItems");
    w.int64_of(15, s, "minItems");
    w.bool_of(16, s, "uniqueItems");
    w.int64_of(17, s, "maxProperties");
    w.int64_of(18, s, "minProperties");
    w.strings_of(19, s, "required");
    for value in s["enum"].as_array().into_iter().flatten() {
        w.any(20, value);
    }
    match s.get("additionalProperties") {
        // AdditionalPropertiesItem's oneof: a schema (1) or a boolean (2), written even when
        // false because a oneof member has presence.
        Some(Value::Bool(allowed)) => w.message(21, |w| {
            w.key(2, 0);
            w.varint(u64::from(*allowed));
        }),
        Some(sub) => w.message(21, |w| w.message(1, |w| schema_pb(w, sub))),
        None => {}
    }
    match s.get("type") {
        Some(Value::String(ty)) => w.message(22, |w| w.string(1, ty)),
        Some(Value::Array(_)) => w.message(22, |w| w.strings_of(1, s, "type")),
        _ => {}
    }
    match s.get("items") {
        Some(Value::Array(items)) => w.message(23, |w| {
            for item in items {
                w.message(1, |w| schema_pb(w, item));
            }
        }),
        Some(item) => w.message(23, |w| w.message(1, |w| schema_pb(w, item))),
        None => {}
    }
    for sub in s["allOf"].as_array().into_iter().flatten() {
        w.message(24, |w| schema_pb(w, sub));
    }
    w.message_of(25, s, "properties", |w, properties| {
        w.named(1, properties, schema_pb)
    });
    w.string_of(26, s, "discriminator");
    w.bool_of(27, s, "readOnly");
    if let Some(example) = s.get("example") {
        w.any(30, example);
    }
    w.extensions(31, s);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::resources::RESOURCES;

    const REVIEWS: &[(&str, &str, &str)] = &[
        (
            "authentication.k8s.io",
            "TokenReview",
            "/apis/authentication.k8s.io/v1/tokenreviews",
        ),
        (
            "authentication.k8s.io",
            "SelfSubjectReview",
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        ),
        (
            "authorization.k8s.io",
            "SubjectAccessReview",
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
        ),
        (
            "authorization.k8s.io",
            "LocalSubjectAccessReview",
            "/apis/authorization.k8s.io/v1/namespaces/{namespace}/localsubjectaccessreviews",
        ),
        (
            "authorization.k8s.io",
            "SelfSubjectAccessReview",
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        ),
        (
            "authorization.k8s.io",
            "SelfSubjectRulesReview",
            "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
        ),
    ];

    fn gvk(group: &str, version: &str, kind: &str) -> Value {
        json!({"group": group, "version": version, "kind": kind})
    }

    /// Every operation of the document, with its path and method.
    fn operations(doc: &Value) -> Vec<(&str, &str, &Value)> {
        let mut ops = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                if method != "parameters" {
                    ops.push((path.as_str(), method.as_str(), op));
                }
            }
        }
        ops
    }

    /// The definition tagged with a kind.
    fn definition_of<'a>(doc: &'a Value, kind: &Value) -> Option<(&'a String, &'a Value)> {
        doc["definitions"]
            .as_object()
            .unwrap()
            .iter()
            .find(|(_, schema)| schema[GVK].as_array().is_some_and(|kinds| kinds.contains(kind)))
    }

    /// The parameters of an operation with references resolved, path-level ones included.
    fn parameters_of<'a>(doc: &'a Value, path: &str, method: &str) -> Vec<&'a Value> {
        let item = &doc["paths"][path];
        item["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(item[method]["parameters"].as_array().into_iter().flatten())
            .map(|p| match p["$ref"].as_str() {
                Some(r) => &doc["parameters"][r.strip_prefix(PARAMETER_PREFIX).unwrap()],
                None => p,
            })
            .collect()
    }

    #[test]
    fn every_resource_kind_has_a_definition_and_operations() {
        let doc = document();
        assert_eq!(doc["swagger"], "2.0");
        assert_eq!(doc["info"]["version"], KUBERNETES_VERSION);
        let ops = operations(&doc);
        for r in RESOURCES {
            let kind = gvk(r.group, r.version, r.kind);
            assert!(definition_of(&doc, &kind).is_some(), "{kind}");
            assert!(ops.iter().any(|(_, _, op)| op[GVK] == kind), "{kind}");
            for sub in r.subresources {
                let kind = gvk(sub.group, sub.version, sub.kind);
                assert!(definition_of(&doc, &kind).is_some(), "{kind}");
            }
        }
        // One definition for Status, with its kind once although every group uses it.
        assert_eq!(
            doc["definitions"]["io.k8s.apimachinery.pkg.apis.meta.v1.Status"][GVK],
            json!([gvk("", "v1", "Status")])
        );
        // Every group-version's paths are in the one document.
        for path in [
            "/api/v1/namespaces/{namespace}/serviceaccounts/{name}",
            "/apis/rbac.authorization.k8s.io/v1/clusterroles",
            "/apis/authentication.k8s.io/v1/tokenreviews",
        ] {
            assert!(doc["paths"].get(path).is_some(), "{path}");
        }
    }

    #[test]
    fn review_kinds_are_defined_and_created() {
        let doc = document();
        for (group, kind, path) in REVIEWS {
            let tag = gvk(group, "v1", kind);
            let (name, schema) = definition_of(&doc, &tag).unwrap();
            assert!(
                schema["properties"]["spec"].is_object() || *kind == "SelfSubjectReview",
                "{kind}"
            );
            let item = doc["paths"][path].as_object().unwrap();
            assert_eq!(item.len(), 2, "{path}: only post and parameters");
            let post = &item["post"];
            assert_eq!(post[GVK], tag);
            assert_eq!(post["x-kubernetes-action"], "post");
            let names: Vec<&str> = parameters_of(&doc, path, "post")
                .iter()
                .map(|p| p["name"].as_str().unwrap())
                .collect();
            for expected in ["body", "dryRun", "fieldManager", "fieldValidation", "pretty"] {
                assert!(names.contains(&expected), "{path}: {names:?}");
            }
            let body = &post["parameters"][0];
            assert_eq!(body["in"], "body");
            assert_eq!(body["required"], true);
            assert_eq!(body["schema"]["$ref"], format!("{DEFINITION_PREFIX}{name}"));
            assert_eq!(
                post["responses"]["201"]["schema"]["$ref"],
                format!("{DEFINITION_PREFIX}{name}")
            );
        }
        let token_review = &doc["definitions"]["io.k8s.api.authentication.v1.TokenReview"];
        assert_eq!(token_review["required"], json!(["spec"]));
        assert_eq!(
            token_review["properties"]["spec"]["$ref"],
            "#/definitions/io.k8s.api.authentication.v1.TokenReviewSpec"
        );
    }

    use crate::openapi::collect_refs;

    #[test]
    fn refs_resolve() {
        let doc = document();
        let mut refs = Vec::new();
        collect_refs(&doc, &mut refs);
        assert!(refs.len() > 100);
        let mut shared = 0;
        for reference in refs {
            if let Some(name) = reference.strip_prefix(DEFINITION_PREFIX) {
                assert!(doc["definitions"].get(name).is_some(), "{reference}");
            } else if let Some(name) = reference.strip_prefix(PARAMETER_PREFIX) {
                assert!(doc["parameters"].get(name).is_some(), "{reference}");
                shared += 1;
            } else {
                panic!("{reference} points outside the document's definitions and parameters");
            }
        }
        assert!(shared > 100, "parameters are shared");
    }

    #[test]
    fn parameters_sit_where_the_builder_puts_them() {
        let doc = document();
        let paths = &doc["paths"];
        let item = &paths["/api/v1/namespaces/{namespace}/serviceaccounts/{name}"];
        // name stays inline (its description names the kind); namespace and pretty are shared.
        let path_params = item["parameters"].as_array().unwrap();
        assert_eq!(path_params[0]["name"], "name");
        assert_eq!(path_params[0]["in"], "path");
        assert_eq!(path_params[0]["required"], true);
        assert!(
            path_params[1]["$ref"]
                .as_str()
                .unwrap()
                .starts_with("#/parameters/namespace-")
        );
        assert!(
            path_params[2]["$ref"]
                .as_str()
                .unwrap()
                .starts_with("#/parameters/pretty-")
        );
        assert_eq!(path_params.len(), 3);
        let patch = &item["patch"];
        assert_eq!(patch["operationId"], "patchCoreV1NamespacedServiceAccount");
        let consumes = patch["consumes"].as_array().unwrap();
        assert!(consumes.contains(&json!("application/merge-patch+json")));
        assert!(!consumes.contains(&json!("application/strategic-merge-patch+json")));
        // fieldValidation stays inline on PATCH: kubectl looks for it there.
        assert!(
            patch["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "fieldValidation" && p["in"] == "query")
        );
        let names: Vec<&str> = parameters_of(
            &doc,
            "/api/v1/namespaces/{namespace}/serviceaccounts/{name}",
            "patch",
        )
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
        assert_eq!(
            names,
            [
                "name",
                "namespace",
                "pretty",
                "body",
                "dryRun",
                "fieldManager",
                "fieldValidation",
                "force"
            ]
        );
        assert_eq!(item["get"]["consumes"], json!(["*/*"]));
        assert_eq!(item["get"]["produces"], json!(["application/json"]));
        assert_eq!(item["get"]["schemes"], json!(["https"]));
        assert!(item["get"].get("parameters").is_none());

        // A path with one operation has all its parameters on the path.
        let all = &paths["/api/v1/serviceaccounts"];
        assert!(all["get"].get("parameters").is_none());
        assert_eq!(all["parameters"].as_array().unwrap().len(), 11);
        assert_eq!(
            all["get"]["produces"],
            json!(["application/json", "application/json;stream=watch"])
        );
        let delete = &paths["/api/v1/namespaces/{namespace}/serviceaccounts"]["delete"];
        let body = delete["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find_map(|p| p["$ref"].as_str().filter(|r| r.starts_with("#/parameters/body-")))
            .unwrap();
        let body = &doc["parameters"][body.strip_prefix(PARAMETER_PREFIX).unwrap()];
        assert_eq!(
            body["schema"]["$ref"],
            "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions"
        );
        assert!(body.get("required").is_none());
        assert_eq!(doc["securityDefinitions"]["BearerToken"]["type"], "apiKey");
    }

    /// Swagger 2.0 Schema Object keywords, and what kubectl's parser of the protobuf form
    /// (kube-openapi `pkg/util/proto`) refuses.
    fn check_schema(schema: &Value, at: &str) {
        const KEYWORDS: &[&str] = &[
            "$ref",
            "format",
            "title",
            "description",
            "default",
            "multipleOf",
            "maximum",
            "exclusiveMaximum",
            "minimum",
            "exclusiveMinimum",
            "maxLength",
            "minLength",
            "pattern",
            "maxItems",
            "minItems",
            "uniqueItems",
            "maxProperties",
            "minProperties",
            "required",
            "enum",
            "additionalProperties",
            "type",
            "items",
            "allOf",
            "properties",
            "discriminator",
            "readOnly",
            "xml",
            "externalDocs",
            "example",
        ];
        let object = schema
            .as_object()
            .unwrap_or_else(|| panic!("{at}: not an object"));
        for key in object.keys() {
            assert!(
                KEYWORDS.contains(&key.as_str()) || key.starts_with("x-"),
                "{at}: {key} is not Swagger 2.0"
            );
        }
        if object.contains_key("$ref") {
            assert!(
                !object.contains_key("type") && !object.contains_key("properties"),
                "{at}"
            );
        }
        if let Some(ty) = object.get("type") {
            let ty = ty.as_str().unwrap_or_else(|| panic!("{at}: one type"));
            assert!(
                ["object", "array", "string", "integer", "number", "boolean"].contains(&ty),
                "{at}: {ty}"
            );
            if ty == "array" {
                assert!(object["items"].is_object(), "{at}: an array has one item schema");
            }
        }
        if let Some(sub) = object.get("items") {
            check_schema(sub, &format!("{at}/items"));
        }
        if let Some(sub) = object.get("additionalProperties").filter(|s| s.is_object()) {
            check_schema(sub, &format!("{at}/additionalProperties"));
        }
        for (name, sub) in object
            .get("properties")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            check_schema(sub, &format!("{at}.{name}"));
        }
    }

    #[test]
    fn definitions_are_swagger_20() {
        let doc = document();
        for (name, schema) in doc["definitions"].as_object().unwrap() {
            check_schema(schema, name);
        }
        assert!(!doc.to_string().contains("#/components/"));
    }

    #[test]
    fn cached_forms_match_the_document() {
        let doc = document();
        assert_eq!(serde_json::from_slice::<Value>(json_bytes()).unwrap(), doc);
        assert_eq!(etag(), format!("\"{}\"", hash_hex(json_bytes())));
        assert_eq!(protobuf_bytes(), encode_document(&doc).as_slice());
    }

    #[test]
    fn accept_headers_choose_a_form() {
        use Form::{Json, Protobuf};
        let kubectl = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";
        assert_eq!(negotiate(kubectl), Some(Protobuf));
        assert_eq!(negotiate(PROTOBUF), Some(Protobuf));
        assert_eq!(negotiate(""), Some(Json));
        assert_eq!(negotiate("*/*"), Some(Json));
        assert_eq!(negotiate("application/json, */*"), Some(Json));
        assert_eq!(negotiate("application/*"), Some(Json));
        assert_eq!(negotiate(&format!("*/*;q=0.5, {kubectl}")), Some(Protobuf));
        assert_eq!(
            negotiate(&format!("application/json;q=0.8, {kubectl};q=0.9")),
            Some(Protobuf)
        );
        assert_eq!(negotiate("application/yaml, application/json"), Some(Json));
        assert_eq!(negotiate("text/html"), None);
        assert_eq!(negotiate("application/yaml"), None);
        assert_eq!(Protobuf.content_type(), PROTOBUF);
        assert_eq!(Json.bytes(), json_bytes());
    }

    /// The subset of gnostic's `openapi.v2` messages this document uses, declared by hand.
    /// A oneof is declared as its members' optional fields: the wire format is the same.
    mod gnostic {
        #[derive(Clone, PartialEq, prost::Message)]
        pub(super) struct Document {
            #[prost(string, tag = "1")]
            pub swagger: String,
            #[prost(message, optional, tag = "2")]
            pub info: Option<Info>,
            #[prost(message, optional, tag = "8")]
            pub paths: Option<Paths>,
            #[prost(message, optional, tag = "9")]
            pub definitions: Option<Definitions>,
            #[prost(message, optional, tag = "10")]
            pub parameters: Option<ParameterDefinitions>,
            #[prost(message, repeated, tag = "12")]
            pub security: Vec<SecurityRequirement>,
            #[prost(message, optional, tag = "13")]
            pub security_definitions: Option<SecurityDefinitions>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub(super) struct Info {
            #[prost(string, tag = "1")]
            pub title: String,
            #[prost(string, tag = "2")]
            pub version: String,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub(super) struct Paths {
            #[prost(message, repeated, tag = "2")]
            pub path: Vec<NamedPathItem>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub(super) struct NamedPathItem {
            #[prost(string, tag = "1")]
            pub name: String,
            #[prost(message, optional, tag = "2")]
            pub value: Option<PathItem>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub(super) struct PathItem {
            #[prost(message, optional, tag = "2")]
            pub get: Option<Operation>,
            #[prost(message, optional, tag = "3")]
            pub put: Option<Operation>,
            #[prost(message, optional, tag = "4")]
            pub post: Option<Operation>,
            #[prost(message, optional, tag = "5")]
            pub delete: Option<Operation>,
            #[prost(message, optional, tag = "8")]
            pub patch: Option<Operation>,
            #[prost(message, repeated, tag = "9")]
            pub parameters: Vec<ParametersItem>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub(super) struct Operation {
            #[prost(string, repeated, tag = "1")]
            pub tags: Vec<String>,
            #[prost(string, tag = "3")]
            pub description: String,
            #[prost(string, tag = "5")]
            pub operation_id: String,
            #[prost(string, repeated, tag = "6")]
            pub produces: Vec<String>,
            #[prost(string, repeated, tag = "7")]
            pub consumes: Vec<String>,
            #[prost(message, repeated, tag = "8")]
            pub parameters: Vec<ParametersItem>,
            #[prost(message, optional, tag = "9")]
            pub responses: Option<Responses>,
            #[prost(string, repeated, tag = "10")]
            pub schemes: Vec<String>,
            #[prost(message, repeated, tag = "13")]
            pub vendor_extension: Vec<NamedAny>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub(super) struct ParametersItem {
            #[prost(message, optional, tag = "1")]
            pub parameter: Option<Parameter>,
            #[prost(message, optional, tag = "2")]
            pub json_reference: Option<JsonReference>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub(super) struct JsonReference {
            #[prost(string, tag = "1")]
            pub r#ref: String,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub(super) struct Parameter {
            #[prost(message, optional, tag = "1")]
            pub body_parameter: Option<BodyParameter>,
            #[prost(message, optional, tag = "2")]
            pub non_body_parameter: Option<NonBodyParameter>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub(super) struct BodyParameter {
            #[prost(string, tag = "1")]
            pub description: String,
            #[prost(string, tag = "2")]
            pub name: String,
            #[prost(string, tag = "3")]
            pub r#in: String,
            #[prost(bool, tag = "4")]
            pub required: bool,
            #[prost(message, optional, tag = "5")]
            pub schema: Option<Schema>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub(super) struct NonBodyParameter {
            #[prost(message, optional, tag = "3")]
            pub query_parameter_sub_schema: Option<QueryParameterSubSchema>,
            #[prost(message, optional, tag = "4")]
            pub path_parameter_sub_schema: Option<PathParameterSubSchema>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub(super) struct QueryParameterSubSchema {
            #[prost(bool, tag = "1")]
            pub required: bool,
            #[prost(string, tag = "2")]
            pub r#in: String,
            #[prost(string, tag = "3")]
            pub description: String,
            #[prost(string, tag = "4")]
            pub name: String,
            #[prost(string, tag = "6")]
            pub r#type: String,
            #[prost(bool, tag = "20")]
            pub unique_items: bool,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub(super) struct PathParameterSubSchema {
            #[prost(bool, tag = "1")]
            pub required: bool,
            #[prost(string, tag = "2")]
            pub r#in: String,
            #[prost(string, tag = "3")]
            pub description: String,
            #[prost(string, tag = "4")]
            pub name: String,
            #[prost(string, tag = "5")]
            pub r#type: String,
            #[prost(bool, tag = "19")]
            pub unique_items: bool,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub(super) struct Responses {
            #[prost(message, repeated, tag = "1")]
            pub response_code: Vec<NamedResponseValue>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub(super) struct NamedResponseValue {
            #[prost(string, tag = "1")]
            pub name: String,
            #[prost(message, optional, tag = "2")]
            pub value: Option<ResponseValue>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub(super) struct ResponseValue {
            #[prost(message, optional, tag = "1")]
            pub response: Option<Response>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub(super) struct Response {
            #[prost(string, tag = "1")]
            pub description: String,
            #[prost(message, optional, tag = "2")]
            pub schema: Option<SchemaItem>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub(super) struct SchemaItem {
            #[prost(message, optional, tag = "1")]
            pub schema: Option<Schema>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub(super) struct Schema {
            #[prost(string, tag = "1")]
            pub r#ref: String,
            #[prost(string, tag = "2")]
            pub format: String,
            #[prost(string, tag = "4")]
            pub description: String,
            #[prost(message, optional, tag = "5")]
            pub default: Option<Any>,
            #[prost(string, repeated, tag = "19")]
            pub required: Vec<String>,
            #[prost(message, repeated, tag = "20")]
            pub r#enum: Vec<Any>,
            #[prost(message, optional, boxed, tag = "21")]
            pub additional_properties: Option<Box<AdditionalPropertiesItem>>,
            #[prost(message, optional, tag = "22")]
            pub r#type: Option<TypeItem>,
            #[prost(message, optional, tag = "23")]
            pub items: Option<ItemsItem>,
            #[prost(message, repeated, tag = "24")]
            pub all_of: Vec<Schema>,
            #[prost(message, optional, tag = "25")]
            pub properties: Option<Properties>,
            #[prost(message, repeated, tag = "31")]
            pub vendor_extension: Vec<NamedAny>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub(super) struct AdditionalPropertiesItem {
            #[prost(message, optional, tag = "1")]
            pub schema: Option<Schema>,
            #[prost(bool, optional, tag = "2")]
            pub boolean: Option<bool>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub(super) struct TypeItem {
            #[prost(string, repeated, tag = "1")]
            pub value: Vec<String>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub(super) struct ItemsItem {
            #[prost(message, repeated, tag = "1")]
            pub schema: Vec<Schema>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub(super) struct Properties {
            #[prost(message, repeated, tag = "1")]
            pub additional_properties: Vec<NamedSchema>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub(super) struct Definitions {
            #[prost(message, repeated, tag = "1")]
            pub additional_properties: Vec<NamedSchema>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub(super) struct NamedSchema {
            #[prost(string, tag = "1")]
            pub name: String,
            #[prost(message, optional, tag = "2")]
            pub value: Option<Schema>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub(super) struct ParameterDefinitions {
            #[prost(message, repeated, tag = "1")]
            pub additional_properties: Vec<NamedParameter>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub(super) struct NamedParameter {
            #[prost(string, tag = "1")]
            pub name: String,
            #[prost(message, optional, tag = "2")]
            pub value: Option<Parameter>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub(super) struct NamedAny {
            #[prost(string, tag = "1")]
            pub name: String,
            #[prost(message, optional, tag = "2")]
            pub value: Option<Any>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub(super) struct Any {
            #[prost(string, tag = "2")]
            pub yaml: String,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub(super) struct SecurityRequirement {
            #[prost(message, repeated, tag = "1")]
            pub additional_properties: Vec<NamedStringArray>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub(super) struct NamedStringArray {
            #[prost(string, tag = "1")]
            pub name: String,
            #[prost(message, optional, tag = "2")]
            pub value: Option<StringArray>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub(super) struct StringArray {
            #[prost(string, repeated, tag = "1")]
            pub value: Vec<String>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub(super) struct SecurityDefinitions {
            #[prost(message, repeated, tag = "1")]
            pub additional_properties: Vec<NamedSecurityDefinitionsItem>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub(super) struct NamedSecurityDefinitionsItem {
            #[prost(string, tag = "1")]
            pub name: String,
            #[prost(message, optional, tag = "2")]
            pub value: Option<SecurityDefinitionsItem>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub(super) struct SecurityDefinitionsItem {
            #[prost(message, optional, tag = "2")]
            pub api_key_security: Option<ApiKeySecurity>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub(super) struct ApiKeySecurity {
            #[prost(string, tag = "1")]
            pub r#type: String,
            #[prost(string, tag = "2")]
            pub name: String,
            #[prost(string, tag = "3")]
            pub r#in: String,
            #[prost(string, tag = "4")]
            pub description: String,
        }
    }

    /// Renders decoded messages back as Swagger JSON, to compare with the JSON form.
    mod back_to_json {
        use super::gnostic::*;
        use serde_json::{Map, Value, json};

        fn put(object: &mut Map<String, Value>, key: &str, value: &str) {
            if !value.is_empty() {
                object.insert(key.into(), json!(value));
            }
        }

        fn any(value: &Option<Any>) -> Value {
            serde_json::from_str(&value.as_ref().unwrap().yaml).unwrap()
        }

        fn extensions(object: &mut Map<String, Value>, extensions: &[NamedAny]) {
            for extension in extensions {
                object.insert(extension.name.clone(), any(&extension.value));
            }
        }

        pub(super) fn document(d: &Document) -> Value {
            let info = d.info.as_ref().unwrap();
            let paths: Map<String, Value> = d
                .paths
                .as_ref()
                .unwrap()
                .path
                .iter()
                .map(|p| (p.name.clone(), path_item(p.value.as_ref().unwrap())))
                .collect();
            let definitions: Map<String, Value> = d
                .definitions
                .as_ref()
                .unwrap()
                .additional_properties
                .iter()
                .map(|s| (s.name.clone(), schema(s.value.as_ref().unwrap())))
                .collect();
            let parameters: Map<String, Value> = d
                .parameters
                .as_ref()
                .unwrap()
                .additional_properties
                .iter()
                .map(|p| (p.name.clone(), parameter(p.value.as_ref().unwrap())))
                .collect();
            let security: Vec<Value> = d
                .security
                .iter()
                .map(|r| {
                    let scopes: Map<String, Value> = r
                        .additional_properties
                        .iter()
                        .map(|s| (s.name.clone(), json!(s.value.as_ref().unwrap().value)))
                        .collect();
                    Value::Object(scopes)
                })
                .collect();
            let security_definitions: Map<String, Value> = d
                .security_definitions
                .as_ref()
                .unwrap()
                .additional_properties
                .iter()
                .map(|item| {
                    let key = item.value.as_ref().unwrap().api_key_security.as_ref().unwrap();
                    let value = json!({
                        "type": key.r#type,
                        "name": key.name,
                        "in": key.r#in,
                        "description": key.description,
                    });
                    (item.name.clone(), value)
                })
                .collect();
            json!({
                "swagger": d.swagger,
                "info": {"title": info.title, "version": info.version},
                "paths": paths,
                "definitions": definitions,
                "parameters": parameters,
                "security": security,
                "securityDefinitions": security_definitions,
            })
        }

        fn path_item(item: &PathItem) -> Value {
            let mut object = Map::new();
            for (method, op) in [
                ("get", &item.get),
                ("put", &item.put),
                ("post", &item.post),
                ("delete", &item.delete),
                ("patch", &item.patch),
            ] {
                if let Some(op) = op {
                    object.insert(method.into(), operation(op));
                }
            }
            if !item.parameters.is_empty() {
                object.insert(
                    "parameters".into(),
                    item.parameters.iter().map(parameters_item).collect(),
                );
            }
            Value::Object(object)
        }

        fn operation(op: &Operation) -> Value {
            let mut object = Map::new();
            object.insert("tags".into(), json!(op.tags));
            put(&mut object, "description", &op.description);
            put(&mut object, "operationId", &op.operation_id);
            object.insert("produces".into(), json!(op.produces));
            object.insert("consumes".into(), json!(op.consumes));
            object.insert("schemes".into(), json!(op.schemes));
            if !op.parameters.is_empty() {
                object.insert(
                    "parameters".into(),
                    op.parameters.iter().map(parameters_item).collect(),
                );
            }
            let responses: Map<String, Value> = op
                .responses
                .as_ref()
                .unwrap()
                .response_code
                .iter()
                .map(|r| {
                    let response = r.value.as_ref().unwrap().response.as_ref().unwrap();
                    let mut value = Map::new();
                    put(&mut value, "description", &response.description);
                    if let Some(item) = &response.schema {
                        value.insert("schema".into(), schema(item.schema.as_ref().unwrap()));
                    }
                    (r.name.clone(), Value::Object(value))
                })
                .collect();
            object.insert("responses".into(), Value::Object(responses));
            extensions(&mut object, &op.vendor_extension);
            Value::Object(object)
        }

        fn parameters_item(item: &ParametersItem) -> Value {
            match (&item.parameter, &item.json_reference) {
                (Some(p), None) => parameter(p),
                (None, Some(r)) => json!({"$ref": r.r#ref}),
                _ => panic!("a ParametersItem is one of the two"),
            }
        }

        fn parameter(p: &Parameter) -> Value {
            let mut object = Map::new();
            match (&p.body_parameter, &p.non_body_parameter) {
                (Some(body), None) => {
                    put(&mut object, "description", &body.description);
                    put(&mut object, "name", &body.name);
                    put(&mut object, "in", &body.r#in);
                    if body.required {
                        object.insert("required".into(), json!(true));
                    }
                    object.insert("schema".into(), schema(body.schema.as_ref().unwrap()));
                }
                (None, Some(non_body)) => {
                    let (required, location, description, name, ty, unique) = match (
                        &non_body.query_parameter_sub_schema,
                        &non_body.path_parameter_sub_schema,
                    ) {
                        (Some(q), None) => (
                            q.required,
                            &q.r#in,
                            &q.description,
                            &q.name,
                            &q.r#type,
                            q.unique_items,
                        ),
                        (None, Some(p)) => (
                            p.required,
                            &p.r#in,
                            &p.description,
                            &p.name,
                            &p.r#type,
                            p.unique_items,
                        ),
                        _ => panic!("query or path"),
                    };
                    if required {
                        object.insert("required".into(), json!(true));
                    }
                    put(&mut object, "in", location);
                    put(&mut object, "description", description);
                    put(&mut object, "name", name);
                    put(&mut object, "type", ty);
                    if unique {
                        object.insert("uniqueItems".into(), json!(true));
                    }
                }
                _ => panic!("a Parameter is one of the two"),
            }
            Value::Object(object)
        }

        fn schema(s: &Schema) -> Value {
            let mut object = Map::new();
            put(&mut object, "$ref", &s.r#ref);
            put(&mut object, "format", &s.format);
            put(&mut object, "description", &s.description);
            if s.default.is_some() {
                object.insert("default".into(), any(&s.default));
            }
            if !s.required.is_empty() {
                object.insert("required".into(), json!(s.required));
            }
            if !s.r#enum.is_empty() {
                let values: Vec<Value> = s.r#enum.iter().map(|v| any(&Some(v.clone()))).collect();
                object.insert("enum".into(), Value::Array(values));
            }
            if let Some(additional) = &s.additional_properties {
                let value = match (&additional.schema, additional.boolean) {
                    (Some(sub), None) => schema(sub),
                    (None, Some(allowed)) => json!(allowed),
                    _ => panic!("a schema or a boolean"),
                };
                object.insert("additionalProperties".into(), value);
            }
            if let Some(ty) = &s.r#type {
                assert_eq!(ty.value.len(), 1);
                object.insert("type".into(), json!(ty.value[0]));
            }
            if let Some(items) = &s.items {
                assert_eq!(items.schema.len(), 1);
                object.insert("items".into(), schema(&items.schema[0]));
            }
            if !s.all_of.is_empty() {
                object.insert("allOf".into(), s.all_of.iter().map(schema).collect());
            }
            if let Some(properties) = &s.properties {
                let properties: Map<String, Value> = properties
                    .additional_properties
                    .iter()
                    .map(|p| (p.name.clone(), schema(p.value.as_ref().unwrap())))
                    .collect();
                object.insert("properties".into(), Value::Object(properties));
            }
            extensions(&mut object, &s.vendor_extension);
            Value::Object(object)
        }
    }

    #[test]
    fn protobuf_decodes_to_the_json_document() {
        use prost::Message;
        let decoded = gnostic::Document::decode(protobuf_bytes()).unwrap();
        assert_eq!(decoded.swagger, "2.0");
        // Paths keep the JSON document's order, as a gnostic map does.
        let names: Vec<&str> = decoded
            .paths
            .as_ref()
            .unwrap()
            .path
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        let json = document();
        let json_names: Vec<&str> = json["paths"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(names, json_names);
        assert_eq!(back_to_json::document(&decoded), json);
        // The GVK extension kubectl reads from the PATCH operation is YAML (here JSON) text.
        let item = decoded
            .paths
            .unwrap()
            .path
            .into_iter()
            .find(|p| p.name == "/api/v1/namespaces/{name}")
            .unwrap();
        let patch = item.value.unwrap().patch.unwrap();
        let gvk = patch.vendor_extension.iter().find(|e| e.name == GVK).unwrap();
        let gvk: Value = serde_json::from_str(&gvk.value.as_ref().unwrap().yaml).unwrap();
        assert_eq!(gvk, json!({"group": "", "version": "v1", "kind": "Namespace"}));
    }

    #[test]
    fn short_hashes_are_eight_url_safe_characters() {
        let a = short_hash("{\"name\":\"pretty\"}");
        assert_eq!(a.len(), 8);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_ne!(a, short_hash("{\"name\":\"pretty \"}"));
    }

    #[test]
    fn writer_encodes_proto3_wire_format() {
        let mut w = Writer::default();
        w.string(1, "2.0");
        w.string(2, "");
        w.int64_of(3, &json!({"n": 300}), "n");
        w.int64_of(4, &json!({"n": -1}), "n");
        w.bool_of(5, &json!({"b": false}), "b");
        w.double_of(6, &json!({"d": 1.5}), "d");
        w.message(7, |_| {});
        let mut expected = vec![0x0a, 3, b'2', b'.', b'0', 0x18, 0xac, 0x02, 0x20];
        expected.extend([0xff; 9]);
        expected.push(0x01);
        expected.push(0x31);
        expected.extend(1.5f64.to_le_bytes());
        expected.extend([0x3a, 0]);
        assert_eq!(w.0, expected);
    }
}
