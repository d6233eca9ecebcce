//! Name, label and key validation with upstream's rules and messages
//! (`k8s.io/apimachinery/pkg/util/validation`).

use crate::status::FieldError;

const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const QUALIFIED_NAME_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const CONFIG_KEY_MSG: &str = "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";

/// The longest DNS-1123 label.
pub const DNS1123_LABEL_MAX: usize = 63;
/// The longest DNS-1123 subdomain.
pub const DNS1123_SUBDOMAIN_MAX: usize = 253;

fn max_len_msg(max: usize) -> String {
    format!("must be no more than {max} characters")
}

fn is_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// `IsDNS1123Label`: the messages of each rule broken (empty when valid).
pub fn dns1123_label_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > DNS1123_LABEL_MAX {
        errs.push(max_len_msg(DNS1123_LABEL_MAX));
    }
    if !is_label(s) {
        errs.push(DNS1123_LABEL_MSG.to_string());
    }
    errs
}

/// `IsDNS1123Subdomain`.
pub fn dns1123_subdomain_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > DNS1123_SUBDOMAIN_MAX {
        errs.push(max_len_msg(DNS1123_SUBDOMAIN_MAX));
    }
    if !is_subdomain(s) {
        errs.push(DNS1123_SUBDOMAIN_MSG.to_string());
    }
    errs
}

/// Whether every dot-separated part of `s` is a DNS-1123 label, in one pass over its bytes
/// (every object name and label key passes here): a `-` may not follow a dot nor a dot
/// follow a dot or a `-`, and `s` may not end with either.
fn is_subdomain(s: &str) -> bool {
    let mut previous = b'.';
    for &c in s.as_bytes() {
        match c {
            b'a'..=b'z' | b'0'..=b'9' => {}
            b'-' if previous != b'.' => {}
            b'.' if previous != b'.' && previous != b'-' => {}
            _ => return false,
        }
        previous = c;
    }
    previous != b'.' && previous != b'-'
}

fn is_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// `IsQualifiedName`: label keys and annotation keys (`prefix/name`).
pub fn qualified_name_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            errs.push("prefix part must be non-empty".to_string());
        } else {
            errs.extend(
                dns1123_subdomain_errors(prefix)
                    .into_iter()
                    .map(|m| format!("prefix part {m}")),
            );
        }
        if name.contains('/') {
            errs.push(format!("a qualified name {QUALIFIED_NAME_MSG}").replacen("name part ", "", 1));
            return errs;
        }
    }
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else {
        if name.len() > 63 {
            errs.push(format!("name part {}", max_len_msg(63)));
        }
        if !is_qualified_name_part(name) {
            errs.push(QUALIFIED_NAME_MSG.to_string());
        }
    }
    errs
}

/// `IsValidLabelValue`.
pub fn label_value_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 63 {
        errs.push(max_len_msg(63));
    }
    if !s.is_empty() && !is_qualified_name_part(s) {
        errs.push(LABEL_VALUE_MSG.to_string());
    }
    errs
}

/// `IsConfigMapKey`: keys of Secret and ConfigMap data.
pub fn config_key_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > DNS1123_SUBDOMAIN_MAX {
        errs.push(max_len_msg(DNS1123_SUBDOMAIN_MAX));
    }
    if s.is_empty()
        || !s
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
    {
        errs.push(CONFIG_KEY_MSG.to_string());
    }
    if s == "." {
        errs.push("must not be '.'".to_string());
    } else if s == ".." {
        errs.push("must not be '..'".to_string());
    } else if s.starts_with("..") {
        errs.push("must not start with '..'".to_string());
    }
    errs
}

/// How a resource's names are checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameRule {
    /// A DNS-1123 label: at most 63 lowercase alphanumerics or `-`.
    Dns1123Label,
    /// A DNS-1123 subdomain: at most 253 characters of labels joined by `.`.
    Dns1123Subdomain,
    /// Any name usable as a path segment (RBAC objects).
    PathSegment,
}

impl NameRule {
    /// Why `name` breaks the rule; empty when it does not.
    pub fn errors(self, name: &str) -> Vec<String> {
        match self {
            NameRule::Dns1123Label => dns1123_label_errors(name),
            NameRule::Dns1123Subdomain => dns1123_subdomain_errors(name),
            NameRule::PathSegment => {
                if crate::request_info::is_valid_path_segment_name(name) {
                    Vec::new()
                } else if name == "." || name == ".." {
                    vec![format!("may not be '{name}'")]
                } else if name.contains('/') {
                    vec!["may not contain '/'".to_string()]
                } else {
                    vec!["may not contain '%'".to_string()]
                }
            }
        }
    }

    /// The rule for a resource, as upstream's per-type `ValidateXName`.
    pub fn for_resource(plural: &str) -> NameRule {
        match plural {
            "namespaces" => NameRule::Dns1123Label,
            // `ValidateCertificateRequestName` accepts any name: the kubelet's are
            // `node-csr-<base64url digest>`, with capitals and underscores.
            "roles"
            | "clusterroles"
            | "rolebindings"
            | "clusterrolebindings"
            | "certificatesigningrequests" => NameRule::PathSegment,
            _ => NameRule::Dns1123Subdomain,
        }
    }
}

/// Checks labels (`metadata.labels`) as `ValidateLabels` does.
pub fn validate_labels(labels: &serde_json::Map<String, serde_json::Value>, field: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (k, v) in labels {
        for m in qualified_name_errors(k) {
            errs.push(FieldError::invalid(field, k.as_str(), m));
        }
        match v.as_str() {
            Some(value) => {
                for m in label_value_errors(value) {
                    errs.push(FieldError::invalid(format!("{field}[{k}]"), value, m));
                }
            }
            None => errs.push(FieldError::invalid(
                format!("{field}[{k}]"),
                v.clone(),
                "must be a string",
            )),
        }
    }
    errs
}

/// The largest total size of an object's annotations (`TotalAnnotationSizeLimitB`).
pub const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;

/// Checks annotations as `ValidateAnnotations` does.
pub fn validate_annotations(
    annotations: &serde_json::Map<String, serde_json::Value>,
    field: &str,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut total = 0usize;
    for (k, v) in annotations {
        for m in qualified_name_errors(&k.to_ascii_lowercase()) {
            errs.push(FieldError::invalid(field, k.as_str(), m));
        }
        total += k.len() + v.as_str().map_or(0, str::len);
    }
    if total > TOTAL_ANNOTATION_SIZE_LIMIT {
        errs.push(FieldError::too_long(field, TOTAL_ANNOTATION_SIZE_LIMIT));
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subdomains_are_judged_as_label_by_label() {
        let alphabet = ['a', 'z', '0', '9', '-', '.', 'A', '_', '\u{e9}'];
        let mut strings = vec![String::new()];
        let mut last = vec![String::new()];
        for _ in 0..5 {
            last = last
                .iter()
                .flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}")))
                .collect();
            strings.extend(last.iter().cloned());
        }
        strings.extend(
            [
                "identity.badge.dev",
                "kubernetes.io",
                "6f1c2a9e-3b7d-4c1e-9a52-000000000001",
            ]
            .map(String::from),
        );
        for s in &strings {
            assert_eq!(is_subdomain(s), s.split('.').all(is_label), "{s:?}");
        }
    }

    #[test]
    fn names() {
        assert!(dns1123_subdomain_errors("my-sa.example").is_empty());
        assert_eq!(
            dns1123_subdomain_errors("Bad_Name"),
            vec![DNS1123_SUBDOMAIN_MSG.to_string()]
        );
        assert!(!dns1123_subdomain_errors(&"a".repeat(254)).is_empty());
        assert!(dns1123_label_errors("demo").is_empty());
        assert!(!dns1123_label_errors("a.b").is_empty());
        assert!(!dns1123_label_errors(&"a".repeat(64)).is_empty());
        assert!(NameRule::PathSegment.errors("system:controller:x").is_empty());
        assert!(!NameRule::PathSegment.errors("a/b").is_empty());
        assert_eq!(
            NameRule::for_resource("certificatesigningrequests"),
            NameRule::PathSegment
        );
        assert!(
            NameRule::for_resource("certificatesigningrequests")
                .errors("node-csr-7R1W5x3vGeNgNCMTBc4UpSt0pNur8rQ7sm28uEW2T9M")
                .is_empty()
        );
        assert_eq!(NameRule::for_resource("secrets"), NameRule::Dns1123Subdomain);
    }

    #[test]
    fn label_keys_and_values() {
        assert!(qualified_name_errors("app.kubernetes.io/name").is_empty());
        assert!(qualified_name_errors("app").is_empty());
        assert!(!qualified_name_errors("/app").is_empty());
        assert!(!qualified_name_errors("a b").is_empty());
        assert!(label_value_errors("").is_empty());
        assert!(label_value_errors("v1.2_x").is_empty());
        assert!(!label_value_errors("-x").is_empty());
    }

    #[test]
    fn config_keys() {
        assert!(config_key_errors("ca.crt").is_empty());
        assert!(!config_key_errors("..data").is_empty());
        assert!(!config_key_errors("a/b").is_empty());
    }
}
