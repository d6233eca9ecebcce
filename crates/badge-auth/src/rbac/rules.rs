//! Matching one request against one rule, and printing rules: mirrors
//! `pkg/apis/rbac/v1/evaluation_helpers.go` and `RuleAllows` in
//! `plugin/pkg/auth/authorizer/rbac/rbac.go`, plus the `PolicyRuleBuilder` of
//! `pkg/apis/rbac/v1/helpers.go` that the default roles are written with.

use k8s_openapi::api::rbac::v1::PolicyRule;

use crate::authorizer::Attributes;

/// The wildcard of verbs, groups, resources and non-resource URLs.
pub const ALL: &str = "*";

/// The rule's list, with a missing list read as empty (Go's nil slice).
pub(crate) fn list(field: &Option<Vec<String>>) -> &[String] {
    field.as_deref().unwrap_or(&[])
}

/// Whether the rule covers `verb` (`*` covers all).
pub fn verb_matches(rule: &PolicyRule, verb: &str) -> bool {
    rule.verbs.iter().any(|v| v == ALL || v == verb)
}

/// Whether the rule covers API group `group` (`*` covers all).
pub fn api_group_matches(rule: &PolicyRule, group: &str) -> bool {
    list(&rule.api_groups).iter().any(|g| g == ALL || g == group)
}

/// `combined` is `resource` or `resource/subresource`. Besides `*` and the exact string, only
/// `*/<subresource>` matches: there is no `resource/*`, and plain `serviceaccounts` does not
/// grant `serviceaccounts/token`.
pub fn resource_matches(rule: &PolicyRule, combined: &str, subresource: &str) -> bool {
    list(&rule.resources).iter().any(|r| {
        r == ALL
            || r == combined
            || (!subresource.is_empty()
                && r.len() == subresource.len() + 2
                && r.starts_with("*/")
                && r.ends_with(subresource))
    })
}

/// A rule without names matches every name; a rule with names never matches an unnamed
/// request (list, watch, most creates).
pub fn resource_name_matches(rule: &PolicyRule, name: &str) -> bool {
    let names = list(&rule.resource_names);
    names.is_empty() || names.iter().any(|n| n == name)
}

/// Exact, `*`, or a trailing-`*` prefix (every trailing `*` is trimmed, as Go's TrimRight).
pub fn non_resource_url_matches(rule: &PolicyRule, path: &str) -> bool {
    list(&rule.non_resource_urls)
        .iter()
        .any(|u| u == ALL || u == path || (u.ends_with('*') && path.starts_with(u.trim_end_matches('*'))))
}

/// The parts of a request that rules are matched against, with the combined resource
/// string built once per decision rather than once per rule.
pub(crate) struct Request<'a> {
    attributes: &'a Attributes,
    combined: std::borrow::Cow<'a, str>,
}

impl<'a> Request<'a> {
    pub(crate) fn new(attributes: &'a Attributes) -> Request<'a> {
        let combined = if attributes.subresource.is_empty() {
            std::borrow::Cow::Borrowed(attributes.resource.as_str())
        } else {
            std::borrow::Cow::Owned(format!("{}/{}", attributes.resource, attributes.subresource))
        };
        Request { attributes, combined }
    }

    pub(crate) fn allows(&self, rule: &PolicyRule) -> bool {
        let a = self.attributes;
        if a.is_resource_request {
            verb_matches(rule, &a.verb)
                && api_group_matches(rule, &a.api_group)
                && resource_matches(rule, &self.combined, &a.subresource)
                && resource_name_matches(rule, &a.name)
        } else {
            verb_matches(rule, &a.verb) && non_resource_url_matches(rule, &a.path)
        }
    }
}

/// Whether one rule allows the request (`RuleAllows`).
pub fn rule_allows(attributes: &Attributes, rule: &PolicyRule) -> bool {
    Request::new(attributes).allows(rule)
}

/// Whether any of the rules allows the request (`RulesAllow`).
pub fn rules_allow(attributes: &Attributes, rules: &[PolicyRule]) -> bool {
    let request = Request::new(attributes);
    rules.iter().any(|r| request.allows(r))
}

/// Upstream's `CompactString`: only the non-empty fields, in the order APIGroups,
/// Resources, NonResourceURLs, ResourceNames, Verbs, each printed as Go's `%q` of a
/// string slice: `{APIGroups:[""], Resources:["pods"], Verbs:["get" "list"]}`.
pub fn compact_string(rule: &PolicyRule) -> String {
    let fields: [(&str, &[String]); 5] = [
        ("APIGroups", list(&rule.api_groups)),
        ("Resources", list(&rule.resources)),
        ("NonResourceURLs", list(&rule.non_resource_urls)),
        ("ResourceNames", list(&rule.resource_names)),
        ("Verbs", &rule.verbs),
    ];
    let parts: Vec<String> = fields
        .iter()
        .filter(|(_, values)| !values.is_empty())
        .map(|(label, values)| format!("{label}:{}", go_quote_list(values)))
        .collect();
    format!("{{{}}}", parts.join(", "))
}

/// Upstream's `String` of a rule, `PolicyRule{...}`, by which rules sort.
pub fn rule_string(rule: &PolicyRule) -> String {
    format!("PolicyRule{}", compact_string(rule))
}

/// Go's `%q` of a `[]string`: `["a" "b"]`.
pub(crate) fn go_quote_list(values: &[String]) -> String {
    let quoted: Vec<String> = values.iter().map(|v| go_quote(v)).collect();
    format!("[{}]", quoted.join(" "))
}

/// Go's `%q` of a string (`strconv.Quote`): printable characters as they are, the usual
/// backslash escapes, and `\x`/`\u`/`\U` for the rest.
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() || is_unprintable_space(c) => {
                if (c as u32) < 0x10000 {
                    out.push_str(&format!("\\u{:04x}", c as u32));
                } else {
                    out.push_str(&format!("\\U{:08x}", c as u32));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Spaces other than U+0020 are not printable for Go's `IsPrint`.
fn is_unprintable_space(c: char) -> bool {
    c != ' ' && c.is_whitespace()
}

/// A default-role rule, written as upstream's `NewRule(verbs...).Groups(...).Resources(...)`;
/// `build` sorts every list as `RuleOrDie` does, so the roles print as upstream's.
#[derive(Clone, Debug, Default)]
pub struct RuleBuilder {
    rule: PolicyRule,
}

fn owned(values: &[&str]) -> Vec<String> {
    values.iter().map(|v| v.to_string()).collect()
}

fn append(field: &mut Option<Vec<String>>, values: &[&str]) {
    field.get_or_insert_with(Vec::new).extend(owned(values));
}

/// Starts a rule with these verbs.
pub fn rule(verbs: &[&str]) -> RuleBuilder {
    RuleBuilder {
        rule: PolicyRule {
            verbs: owned(verbs),
            ..Default::default()
        },
    }
}

impl RuleBuilder {
    /// Adds API groups.
    pub fn groups(mut self, groups: &[&str]) -> RuleBuilder {
        append(&mut self.rule.api_groups, groups);
        self
    }

    /// Adds resources.
    pub fn resources(mut self, resources: &[&str]) -> RuleBuilder {
        append(&mut self.rule.resources, resources);
        self
    }

    /// Adds resource names.
    pub fn names(mut self, names: &[&str]) -> RuleBuilder {
        append(&mut self.rule.resource_names, names);
        self
    }

    /// Adds non-resource URLs.
    pub fn urls(mut self, urls: &[&str]) -> RuleBuilder {
        append(&mut self.rule.non_resource_urls, urls);
        self
    }

    /// The rule.
    pub fn build(self) -> PolicyRule {
        let mut rule = self.rule;
        for values in [
            &mut rule.resources,
            &mut rule.resource_names,
            &mut rule.api_groups,
            &mut rule.non_resource_urls,
        ]
        .into_iter()
        .flatten()
        {
            values.sort();
        }
        rule.verbs.sort();
        rule
    }
}

/// Rule equality as Go's `equality.Semantic.DeepEqual`: a missing list equals an empty one.
pub fn rules_equal(a: &PolicyRule, b: &PolicyRule) -> bool {
    a.verbs == b.verbs
        && list(&a.api_groups) == list(&b.api_groups)
        && list(&a.resources) == list(&b.resources)
        && list(&a.resource_names) == list(&b.resource_names)
        && list(&a.non_resource_urls) == list(&b.non_resource_urls)
}

/// Rule-list equality under the same reading.
pub fn rule_lists_equal(a: &[PolicyRule], b: &[PolicyRule]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| rules_equal(x, y))
}
