//! Request body decoding with upstream's field validation (`fieldValidation=Strict|Warn|Ignore`).
//!
//! A body is parsed into JSON (from JSON, YAML or Kubernetes protobuf), with duplicate
//! fields recorded rather than silently merged, then round-tripped through the kind's real
//! type: wrong types fail there, and fields the type does not know drop out. Comparing the
//! input with the round-tripped value names the unknown fields, which Strict rejects, Warn
//! reports and Ignore drops.

use serde_json::Value;

use crate::resources::Resource;
use crate::status::Status;

/// The body formats badge reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaType {
    /// `application/json`.
    Json,
    /// `application/yaml`.
    Yaml,
    /// `application/vnd.kubernetes.protobuf`.
    Protobuf,
}

/// The media type of a `Content-Type` header value, ignoring parameters.
pub fn media_type(content_type: &str) -> Option<MediaType> {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/json" | "" => Some(MediaType::Json),
        "application/yaml" | "application/x-yaml" | "text/yaml" => Some(MediaType::Yaml),
        "application/vnd.kubernetes.protobuf" => Some(MediaType::Protobuf),
        _ => None,
    }
}

/// `fieldValidation`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FieldValidation {
    /// Unknown and duplicate fields are dropped silently.
    Ignore,
    /// Unknown and duplicate fields are dropped with a warning.
    Warn,
    #[default]
    /// Unknown and duplicate fields fail the request.
    Strict,
}

impl FieldValidation {
    /// Parses the query parameter; upstream's default for an absent value is Warn for
    /// writes that do not ask (kubectl always asks).
    pub fn parse(value: Option<&str>) -> Result<FieldValidation, Status> {
        match value {
            None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some(other) => Err(Status::bad_request(format!(
                "fieldValidation parameter unsupported: {other}. Supported values are: Ignore, Strict, Warn"
            ))),
        }
    }
}

/// The deepest nesting accepted in a body (upstream limits JSON depth too).
pub const MAX_DEPTH: usize = 100;

/// Parses JSON, recording the path of every duplicated field instead of failing.
pub fn parse_json(bytes: &[u8]) -> Result<(Value, Vec<String>), String> {
    badge_token::json::parse_recording_duplicates(bytes, MAX_DEPTH).map_err(|e| e.to_string())
}

/// Parses a single YAML document into JSON. Aliases are expanded by the parser, which
/// bounds their expansion; depth is checked afterwards.
pub fn parse_yaml(bytes: &[u8]) -> Result<Value, String> {
    let value: Value =
        serde_yaml_ng::from_slice(bytes).map_err(|e| format!("error converting YAML to JSON: {e}"))?;
    if depth_of(&value) > MAX_DEPTH {
        return Err("error converting YAML to JSON: nesting too deep".into());
    }
    Ok(value)
}

fn depth_of(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth_of).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth_of).max().unwrap_or(0),
        _ => 0,
    }
}

/// Parses a body of any accepted media type into JSON plus duplicate-field paths.
pub fn parse_body(media: MediaType, bytes: &[u8]) -> Result<(Value, Vec<String>), Status> {
    match media {
        MediaType::Json => {
            parse_json(bytes).map_err(|e| Status::bad_request(format!("error decoding JSON body: {e}")))
        }
        MediaType::Yaml => parse_yaml(bytes)
            .map(|v| (v, Vec::new()))
            .map_err(Status::bad_request),
        MediaType::Protobuf => crate::protobuf::decode(bytes)
            .map(|v| (v, Vec::new()))
            .map_err(|e| Status::bad_request(format!("error decoding protobuf body: {e}"))),
    }
}

/// The result of decoding an object for a resource.
#[derive(Debug)]
pub struct Decoded {
    /// The object as its real type sees it (unknown fields removed).
    pub object: Value,
    /// Warnings for the `Warning` header (field validation Warn).
    pub warnings: Vec<String>,
}

/// Decodes `value` as an object of `kind` (the resource's kind, or a subresource's), applying
/// field validation. `duplicates` are from [`parse_json`].
pub fn decode_object(
    value: Value,
    duplicates: &[String],
    roundtrip: fn(&Value) -> Result<Value, String>,
    validation: FieldValidation,
) -> Result<Decoded, Status> {
    if !value.is_object() {
        return Err(Status::bad_request("the body must be a JSON object"));
    }
    let typed = roundtrip(&value).map_err(|e| Status::bad_request(format!("error decoding body: {e}")))?;
    let mut problems: Vec<String> = duplicates
        .iter()
        .map(|p| format!("duplicate field \"{p}\""))
        .collect();
    let mut unknown = Vec::new();
    unknown_fields(&value, &typed, String::new(), &mut unknown);
    problems.extend(unknown.into_iter().map(|p| format!("unknown field \"{p}\"")));
    match validation {
        FieldValidation::Strict if !problems.is_empty() => Err(Status::bad_request(format!(
            "strict decoding error: {}",
            problems.join(", ")
        ))),
        FieldValidation::Warn => Ok(Decoded {
            object: typed,
            warnings: problems,
        }),
        _ => Ok(Decoded {
            object: typed,
            warnings: Vec::new(),
        }),
    }
}

/// Checks that an object's `apiVersion` and `kind`, when given, are the resource's.
pub fn check_type_meta(object: &Value, api_version: &str, kind: &str) -> Result<(), Status> {
    let given_version = object.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let given_kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
    if !given_version.is_empty() && given_version != api_version {
        return Err(Status::bad_request(format!(
            "the API version in the data ({given_version}) does not match the expected API version ({api_version})"
        )));
    }
    if !given_kind.is_empty() && given_kind != kind {
        return Err(Status::bad_request(format!(
            "the kind in the data ({given_kind}) does not match the expected kind ({kind})"
        )));
    }
    Ok(())
}

/// Decodes a body for a stored resource, filling `apiVersion` and `kind`.
pub fn decode_for(
    resource: &Resource,
    value: Value,
    duplicates: &[String],
    validation: FieldValidation,
) -> Result<Decoded, Status> {
    let api_version = resource.api_version();
    check_type_meta(&value, &api_version, resource.kind)?;
    let mut decoded = decode_object(value, duplicates, resource.roundtrip, validation)?;
    if let Some(obj) = decoded.object.as_object_mut() {
        obj.insert("apiVersion".into(), Value::String(api_version));
        obj.insert("kind".into(), Value::String(resource.kind.into()));
    }
    Ok(decoded)
}

/// Paths present (non-null) in `input` and absent from `typed`.
fn unknown_fields(input: &Value, typed: &Value, path: String, out: &mut Vec<String>) {
    match (input, typed) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let child = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match b.get(k) {
                    None if !v.is_null() => out.push(child),
                    Some(tv) => unknown_fields(v, tv, child, out),
                    None => {}
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (v, tv)) in a.iter().zip(b.iter()).enumerate() {
                unknown_fields(v, tv, format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::resources;

    fn sa() -> &'static Resource {
        resources::SERVICEACCOUNTS
    }

    #[test]
    fn duplicates_are_recorded() {
        let (v, dups) = parse_json(br#"{"a":1,"b":{"c":1,"c":2},"a":3}"#).unwrap();
        assert_eq!(v["a"], 3);
        assert_eq!(dups, vec!["b.c".to_string(), "a".to_string()]);
    }

    #[test]
    fn malformed_and_deep_json_fail() {
        assert!(parse_json(b"{\"a\":").is_err());
        assert!(parse_json(b"{} trailing").is_err());
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert!(parse_json(deep.as_bytes()).is_err());
    }

    #[test]
    fn strict_rejects_unknown_and_duplicate_fields() {
        let body = br#"{"apiVersion":"v1","kind":"ServiceAccount","metadata":{"name":"a","bogus":1},"extra":true,"metadata":{"name":"a"}}"#;
        let (v, dups) = parse_json(body).unwrap();
        let err = decode_for(sa(), v.clone(), &dups, FieldValidation::Strict).unwrap_err();
        assert_eq!(err.code, 400);
        assert!(
            err.message.starts_with("strict decoding error: "),
            "{}",
            err.message
        );
        assert!(err.message.contains("unknown field \"extra\""), "{}", err.message);
        assert!(
            err.message.contains("duplicate field \"metadata\""),
            "{}",
            err.message
        );
        let ok = decode_for(sa(), v.clone(), &dups, FieldValidation::Warn).unwrap();
        assert!(ok.object.get("extra").is_none());
        assert_eq!(ok.warnings.len(), 2);
        let ignored = decode_for(sa(), v, &dups, FieldValidation::Ignore).unwrap();
        assert!(ignored.warnings.is_empty());
    }

    #[test]
    fn nested_unknown_fields_are_named() {
        let body = br#"{"metadata":{"name":"a","labelz":{}},"secrets":[{"name":"x","nope":1}]}"#;
        let (v, dups) = parse_json(body).unwrap();
        let err = decode_for(sa(), v, &dups, FieldValidation::Strict).unwrap_err();
        assert!(
            err.message.contains("unknown field \"metadata.labelz\""),
            "{}",
            err.message
        );
        assert!(
            err.message.contains("unknown field \"secrets[0].nope\""),
            "{}",
            err.message
        );
    }

    #[test]
    fn wrong_types_are_bad_requests() {
        let (v, dups) =
            parse_json(br#"{"metadata":{"name":"a"},"automountServiceAccountToken":"yes"}"#).unwrap();
        let err = decode_for(sa(), v, &dups, FieldValidation::Ignore).unwrap_err();
        assert_eq!(err.code, 400);
    }

    #[test]
    fn wrong_kind_is_refused() {
        let (v, dups) =
            parse_json(br#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"a"}}"#).unwrap();
        assert_eq!(
            decode_for(sa(), v, &dups, FieldValidation::Strict)
                .unwrap_err()
                .code,
            400
        );
    }

    #[test]
    fn yaml_bodies() {
        let v = parse_yaml(b"apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: a\n").unwrap();
        assert_eq!(v["metadata"]["name"], "a");
        assert!(parse_yaml(b"a: [1, 2").is_err());
        // An alias bomb is bounded by the parser.
        let bomb = b"a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\nh: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\ni: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]\n";
        assert!(parse_yaml(bomb).is_err());
    }

    #[test]
    fn media_types() {
        assert_eq!(
            media_type("application/json; charset=utf-8"),
            Some(MediaType::Json)
        );
        assert_eq!(
            media_type("application/vnd.kubernetes.protobuf"),
            Some(MediaType::Protobuf)
        );
        assert_eq!(media_type("text/plain"), None);
    }
}
