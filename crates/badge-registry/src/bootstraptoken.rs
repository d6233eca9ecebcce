//! Write validation of bootstrap token Secrets (`bootstrap.kubernetes.io/token`), so a
//! malformed token is refused with the field at fault when written rather than silently
//! ignored when used. The authenticator still reads whatever is stored as upstream does.

use badge_api::meta;
use badge_api::status::FieldError;
use badge_token::bootstrap::{
    SECRET_NAME_PREFIX, SECRET_NAMESPACE, id_from_secret_name, is_valid_extra_group,
};
use base64::Engine;
use serde_json::Value;

const USAGE_PREFIX: &str = "usage-bootstrap-";

/// A data value as text; `None` when absent, `Some(Err)` when not base64 or UTF-8 (which
/// the generic Secret rules report).
fn data_text(object: &Value, key: &str) -> Option<Option<String>> {
    let encoded = object.get("data")?.get(key)?.as_str()?;
    Some(
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok()),
    )
}

fn is_token_part(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
}

/// Checks a bootstrap token Secret: its place, id, secret, expiration, usages and groups.
pub fn validate(object: &Value, errs: &mut Vec<FieldError>) {
    let namespace = meta::namespace(object);
    if namespace != SECRET_NAMESPACE {
        errs.push(FieldError::invalid(
            "metadata.namespace",
            namespace,
            format!("bootstrap token Secrets must be in the {SECRET_NAMESPACE} namespace"),
        ));
    }
    let name = meta::name(object);
    let name_id = id_from_secret_name(name);
    if name_id.is_none() {
        errs.push(FieldError::invalid(
            "metadata.name",
            name,
            format!("must be {SECRET_NAME_PREFIX}<token-id>, where <token-id> matches [a-z0-9]{{6}}"),
        ));
    }
    match data_text(object, "token-id") {
        None => errs.push(FieldError::required("data[token-id]", "")),
        Some(None) => {}
        Some(Some(id)) if !is_token_part(&id, 6) => {
            errs.push(FieldError::invalid(
                "data[token-id]",
                id,
                "must match [a-z0-9]{6}",
            ));
        }
        Some(Some(id)) => {
            if let Some(name_id) = name_id
                && name_id != id
            {
                errs.push(FieldError::invalid(
                    "data[token-id]",
                    id,
                    format!("must match the Secret's name ({name})"),
                ));
            }
        }
    }
    match data_text(object, "token-secret") {
        None => errs.push(FieldError::required("data[token-secret]", "")),
        Some(None) => {}
        // The value is a credential: never echo it.
        Some(Some(secret)) if !is_token_part(&secret, 16) => errs.push(FieldError::invalid(
            "data[token-secret]",
            "<secret contents redacted>",
            "must match [a-z0-9]{16}",
        )),
        Some(Some(_)) => {}
    }
    if let Some(Some(expiration)) = data_text(object, "expiration")
        && expiration.parse::<jiff::Timestamp>().is_err()
    {
        errs.push(FieldError::invalid(
            "data[expiration]",
            expiration,
            "must be an RFC3339 timestamp",
        ));
    }
    let usages: Vec<&String> = object
        .get("data")
        .and_then(Value::as_object)
        .map(|d| d.keys().filter(|k| k.starts_with(USAGE_PREFIX)).collect())
        .unwrap_or_default();
    for key in usages {
        if let Some(Some(value)) = data_text(object, key)
            && value != "true"
            && value != "false"
        {
            errs.push(FieldError::not_supported(
                format!("data[{key}]"),
                value,
                &["false", "true"],
            ));
        }
    }
    if let Some(Some(groups)) = data_text(object, "auth-extra-groups") {
        for group in groups.split(',').map(str::trim) {
            if !is_valid_extra_group(group) {
                errs.push(FieldError::invalid(
                    "data[auth-extra-groups]",
                    group,
                    "must match ^system:bootstrappers:[a-z0-9:-]{0,255}[a-z0-9]$",
                ));
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn secret(name: &str, data: &[(&str, &str)]) -> Value {
        let data: serde_json::Map<String, Value> =
            data.iter().map(|(k, v)| ((*k).into(), b64(v).into())).collect();
        json!({"metadata": {"name": name, "namespace": "kube-system"}, "type": "bootstrap.kubernetes.io/token", "data": data})
    }

    fn fields(object: &Value) -> Vec<String> {
        let mut errs = Vec::new();
        validate(object, &mut errs);
        errs.into_iter().map(|e| e.field).collect()
    }

    const GOOD: &[(&str, &str)] = &[
        ("token-id", "abcdef"),
        ("token-secret", "0123456789abcdef"),
        ("expiration", "2030-01-01T00:00:00Z"),
        ("usage-bootstrap-authentication", "true"),
        ("usage-bootstrap-signing", "false"),
        (
            "auth-extra-groups",
            "system:bootstrappers:kubeadm:default-node-token, system:bootstrappers:x",
        ),
        ("description", "anything at all"),
    ];

    fn with(key: &str, value: &str) -> Value {
        let mut data: Vec<(&str, &str)> = GOOD.iter().filter(|(k, _)| *k != key).copied().collect();
        data.push((key, value));
        secret("bootstrap-token-abcdef", &data)
    }

    #[test]
    fn a_well_formed_token_passes() {
        assert!(fields(&secret("bootstrap-token-abcdef", GOOD)).is_empty());
    }

    #[test]
    fn each_bad_value_names_its_field() {
        assert_eq!(fields(&with("token-id", "ABCDEF")), ["data[token-id]"]);
        assert_eq!(fields(&with("token-id", "abcdeg")), ["data[token-id]"]);
        assert_eq!(fields(&with("token-secret", "short")), ["data[token-secret]"]);
        assert_eq!(fields(&with("expiration", "tomorrow")), ["data[expiration]"]);
        assert_eq!(
            fields(&with("usage-bootstrap-authentication", "yes")),
            ["data[usage-bootstrap-authentication]"]
        );
        assert_eq!(
            fields(&with(
                "auth-extra-groups",
                "system:bootstrappers:ok,system:masters"
            )),
            ["data[auth-extra-groups]"]
        );
        assert_eq!(
            fields(&secret("bootstrap-token-abcdef", &[("token-id", "abcdef")])),
            ["data[token-secret]"]
        );
        assert_eq!(fields(&secret("bootstrap-token-x", GOOD)), ["metadata.name"]);
        let mut elsewhere = secret("bootstrap-token-abcdef", GOOD);
        elsewhere["metadata"]["namespace"] = json!("default");
        assert_eq!(fields(&elsewhere), ["metadata.namespace"]);
    }

    #[test]
    fn the_secret_is_never_echoed() {
        let mut errs = Vec::new();
        validate(&with("token-secret", "not-a-valid-secret"), &mut errs);
        assert!(!format!("{errs:?}").contains("not-a-valid-secret"));
    }
}
