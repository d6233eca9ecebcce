//! Label and field selectors, parsed as `k8s.io/apimachinery/pkg/labels` and
//! `pkg/fields` parse them.

use std::collections::BTreeMap;

/// One label requirement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Requirement {
    /// `key=value` or `key==value`.
    Equals(String, String),
    /// `key!=value`: also holds when the label is absent.
    NotEquals(String, String),
    /// `key in (a,b)`.
    In(String, Vec<String>),
    /// `key notin (a,b)`: also holds when the label is absent.
    NotIn(String, Vec<String>),
    /// `key`: the label is set.
    Exists(String),
    /// `!key`: the label is not set.
    DoesNotExist(String),
}

impl Requirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        }
    }
}

/// A parsed label selector: all requirements must hold. Empty matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector {
    /// The requirements, all of which must hold.
    pub requirements: Vec<Requirement>,
}

/// A selector that cannot be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unable to parse requirement: {0}")]
pub struct SelectorError(pub String);

impl LabelSelector {
    /// Parses `text`, as `labelSelector` is written.
    pub fn parse(text: &str) -> Result<LabelSelector, SelectorError> {
        let mut requirements = Vec::new();
        for term in split_top_level(text) {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            requirements.push(parse_requirement(term)?);
        }
        Ok(LabelSelector { requirements })
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Whether there is no requirement.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }
}

/// Splits on commas that are not inside a `( ... )` value set.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                out.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&text[start..]);
    out
}

fn parse_requirement(term: &str) -> Result<Requirement, SelectorError> {
    let bad = || SelectorError(term.to_string());
    if let Some(key) = term.strip_prefix('!') {
        let key = key.trim();
        check_key(key).map_err(|_| bad())?;
        return Ok(Requirement::DoesNotExist(key.to_string()));
    }
    for (op, ctor) in [("!=", 0), ("==", 1), ("=", 1)] {
        if let Some((k, v)) = term.split_once(op) {
            let (k, v) = (k.trim(), v.trim());
            check_key(k).map_err(|_| bad())?;
            check_value(v).map_err(|_| bad())?;
            return Ok(if ctor == 0 {
                Requirement::NotEquals(k.into(), v.into())
            } else {
                Requirement::Equals(k.into(), v.into())
            });
        }
    }
    let words: Vec<&str> = term.splitn(2, char::is_whitespace).collect();
    if words.len() == 2 {
        let key = words[0].trim();
        let rest = words[1].trim();
        let (negated, set) = if let Some(set) = rest.strip_prefix("notin") {
            (true, set)
        } else if let Some(set) = rest.strip_prefix("in") {
            (false, set)
        } else {
            return Err(bad());
        };
        let set = set.trim();
        let inner = set
            .strip_prefix('(')
            .and_then(|s| s.strip_suffix(')'))
            .ok_or_else(bad)?;
        let values: Vec<String> = inner.split(',').map(|v| v.trim().to_string()).collect();
        check_key(key).map_err(|_| bad())?;
        for v in &values {
            check_value(v).map_err(|_| bad())?;
        }
        return Ok(if negated {
            Requirement::NotIn(key.into(), values)
        } else {
            Requirement::In(key.into(), values)
        });
    }
    check_key(term).map_err(|_| bad())?;
    Ok(Requirement::Exists(term.to_string()))
}

fn check_key(key: &str) -> Result<(), ()> {
    if crate::validation::qualified_name_errors(key).is_empty() {
        Ok(())
    } else {
        Err(())
    }
}

fn check_value(value: &str) -> Result<(), ()> {
    if crate::validation::label_value_errors(value).is_empty() {
        Ok(())
    } else {
        Err(())
    }
}

/// One field selector term.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldTerm {
    /// The field path (`metadata.name`, `spec.nodeName`).
    pub field: String,
    /// The value compared with.
    pub value: String,
    /// `!=` rather than `=`.
    pub negated: bool,
}

/// A parsed field selector: every term must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector {
    /// The terms.
    pub terms: Vec<FieldTerm>,
}

impl FieldSelector {
    /// Parses `text`, as `fieldSelector` is written.
    pub fn parse(text: &str) -> Result<FieldSelector, SelectorError> {
        let mut terms = Vec::new();
        for term in text.split(',') {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            let (field, value, negated) = if let Some((f, v)) = term.split_once("!=") {
                (f, v, true)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, v, false)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, v, false)
            } else {
                return Err(SelectorError(term.to_string()));
            };
            terms.push(FieldTerm {
                field: field.trim().into(),
                value: value.trim().into(),
                negated,
            });
        }
        Ok(FieldSelector { terms })
    }

    /// Matches against the object's selectable fields; `lookup` returns a field's value.
    pub fn matches(&self, lookup: impl Fn(&str) -> Option<String>) -> bool {
        self.terms.iter().all(|t| {
            let value = lookup(&t.field).unwrap_or_default();
            (value == t.value) != t.negated
        })
    }

    /// Whether there is no term.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// The value a term requires a field to equal (`metadata.name=x`), if any.
    pub fn required_value(&self, field: &str) -> Option<&str> {
        self.terms
            .iter()
            .find(|t| t.field == field && !t.negated)
            .map(|t| t.value.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn label_selectors() {
        let l = labels(&[("app", "web"), ("tier", "front")]);
        let cases = [
            ("", true),
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("app in (web, api)", true),
            ("app notin (web)", false),
            ("tier", true),
            ("!tier", false),
            ("!missing", true),
            ("app=web,tier=back", false),
            ("missing notin (x)", true),
        ];
        for (sel, want) in cases {
            let parsed = LabelSelector::parse(sel);
            assert_eq!(parsed.as_ref().map(|s| s.matches(&l)), Ok(want), "{sel}");
        }
    }

    #[test]
    fn bad_label_selectors() {
        for sel in ["app in web", "a b c", "=x", "app=we b", "Bad Key=x"] {
            assert!(LabelSelector::parse(sel).is_err(), "{sel}");
        }
    }

    #[test]
    fn field_selectors_as_sets() {
        let s = FieldSelector::parse("involvedObject.name=a,involvedObject.kind=ServiceAccount")
            .unwrap_or_default();
        let fields = |f: &str| match f {
            "involvedObject.name" => Some("a".to_string()),
            "involvedObject.kind" => Some("ServiceAccount".to_string()),
            _ => None,
        };
        assert!(s.matches(fields));
        let s = FieldSelector::parse("metadata.name!=a").unwrap_or_default();
        assert!(!s.matches(|_| Some("a".into())));
        assert_eq!(
            FieldSelector::parse("metadata.name=x")
                .ok()
                .and_then(|s| s.required_value("metadata.name").map(String::from))
                .as_deref(),
            Some("x")
        );
        assert!(FieldSelector::parse("nonsense").is_err());
    }
}
