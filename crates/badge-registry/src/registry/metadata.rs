//! Object metadata on create: `ValidateObjectMeta` and `generateName`.

use badge_api::meta;
use badge_api::resources::Resource;
use badge_api::status::FieldError;
use rand::Rng;
use serde_json::Value;

use crate::strategy;

/// `ValidateObjectMeta`: name or generateName, labels, annotations, finalizers.
pub(super) fn validate_meta(resource: &Resource, object: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = meta::name(object);
    if name.is_empty() {
        errs.push(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        ));
    } else {
        for m in strategy::name_rule(resource.plural).errors(name) {
            errs.push(FieldError::invalid("metadata.name", name, m));
        }
    }
    if resource.namespaced && meta::namespace(object).is_empty() {
        errs.push(FieldError::required("metadata.namespace", ""));
    }
    if let Some(m) = object.get("metadata").and_then(|m| m.get("labels")) {
        match m.as_object() {
            Some(labels) => errs.extend(badge_api::validation::validate_labels(labels, "metadata.labels")),
            None if !m.is_null() => {
                errs.push(FieldError::invalid("metadata.labels", m.clone(), "must be a map"))
            }
            None => {}
        }
    }
    if let Some(a) = object
        .get("metadata")
        .and_then(|m| m.get("annotations"))
        .and_then(Value::as_object)
    {
        errs.extend(badge_api::validation::validate_annotations(
            a,
            "metadata.annotations",
        ));
    }
    for (i, f) in meta::finalizers(object).iter().enumerate() {
        for m in badge_api::validation::qualified_name_errors(f) {
            errs.push(FieldError::invalid(
                format!("metadata.finalizers[{i}]"),
                f.as_str(),
                m,
            ));
        }
    }
    errs
}

/// `names.SimpleNameGenerator`: the prefix plus five random characters.
pub(super) fn generate_name(prefix: &str) -> String {
    let prefix = if prefix.len() > 58 { &prefix[..58] } else { prefix };
    format!("{prefix}{}", random_suffix())
}

/// Five characters of `utilrand.String(5)`'s alphabet (no vowels, no look-alikes).
pub fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}
