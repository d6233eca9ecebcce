//! Escalation prevention: a user may grant only what they hold. Mirrors `Covers` and
//! `BreakdownRule` of `component-helpers/auth/rbac/validation/policy_comparator.go`,
//! `ConfirmNoEscalation` of `pkg/registry/rbac/validation/rule.go`, `CompactRules` of
//! `pkg/registry/rbac/validation/policy_compact.go`, and the `escalate`/`bind` attribute
//! records of `pkg/registry/rbac/escalation_check.go`.
//!
//! The server's order, as the policybased storages: a user in `system:masters`, or holding
//! `escalate` on the role (`bind` on the bound role), passes; otherwise the rules must be
//! covered, and an `aggregationRule` set or removed needs [`full_authority`].

use std::collections::{BTreeSet, HashMap};

use k8s_openapi::api::rbac::v1::{PolicyRule, RoleRef};

use super::rules::{ALL, compact_string, go_quote, go_quote_list, list};
use crate::authorizer::Attributes;
use crate::user::UserInfo;

/// The message when someone without full authority sets or removes an aggregationRule.
pub const AGGREGATION_RULE_FORBIDDEN: &str = "must have cluster-admin privileges to use the aggregationRule";

/// `*` on `*.*` and on every non-resource URL: what setting an aggregationRule requires.
pub fn full_authority() -> Vec<PolicyRule> {
    vec![
        PolicyRule {
            verbs: vec![ALL.into()],
            api_groups: Some(vec![ALL.into()]),
            resources: Some(vec![ALL.into()]),
            ..Default::default()
        },
        PolicyRule {
            verbs: vec![ALL.into()],
            non_resource_urls: Some(vec![ALL.into()]),
            ..Default::default()
        },
    ]
}

fn one(value: &str) -> Option<Vec<String>> {
    Some(vec![value.to_string()])
}

/// Splits a rule into atoms of one group, resource and verb (and name, when the rule has
/// names), or one non-resource URL and verb (`BreakdownRule`).
pub fn breakdown_rule(rule: &PolicyRule) -> Vec<PolicyRule> {
    let mut atoms = Vec::new();
    let names = list(&rule.resource_names);
    for group in list(&rule.api_groups) {
        for resource in list(&rule.resources) {
            for verb in &rule.verbs {
                let atom = |name: Option<&String>| PolicyRule {
                    api_groups: one(group),
                    resources: one(resource),
                    verbs: vec![verb.clone()],
                    resource_names: name.map(|n| vec![n.clone()]),
                    non_resource_urls: None,
                };
                if names.is_empty() {
                    atoms.push(atom(None));
                } else {
                    atoms.extend(names.iter().map(|n| atom(Some(n))));
                }
            }
        }
    }
    for url in list(&rule.non_resource_urls) {
        for verb in &rule.verbs {
            atoms.push(PolicyRule {
                non_resource_urls: one(url),
                verbs: vec![verb.clone()],
                ..Default::default()
            });
        }
    }
    atoms
}

fn has(set: &[String], element: &str) -> bool {
    set.iter().any(|s| s == element)
}

fn has_all(set: &[String], wanted: &[String]) -> bool {
    wanted.iter().all(|w| has(set, w))
}

/// Owner resources cover the wanted ones: `*`, the exact string, or `*/sub` for `x/sub`.
fn resource_covers_all(owner: &[String], wanted: &[String]) -> bool {
    if has(owner, ALL) || has_all(owner, wanted) {
        return true;
    }
    wanted.iter().all(|path| {
        has(owner, path)
            || path
                .split_once('/')
                .is_some_and(|(_, sub)| has(owner, &format!("*/{sub}")))
    })
}

fn non_resource_url_covers(owner: &str, wanted: &str) -> bool {
    owner == wanted || (owner.ends_with('*') && wanted.starts_with(owner.trim_end_matches('*')))
}

fn non_resource_urls_cover_all(owner: &[String], wanted: &[String]) -> bool {
    wanted
        .iter()
        .all(|w| owner.iter().any(|o| non_resource_url_covers(o, w)))
}

/// Whether one owner rule covers one atom (`ruleCovers`). A wanted verb `*` is covered only
/// by an owner `*`; an unnamed atom only by an owner rule without names.
fn rule_covers(owner: &PolicyRule, atom: &PolicyRule) -> bool {
    let verbs = has(&owner.verbs, ALL) || has_all(&owner.verbs, &atom.verbs);
    let groups =
        has(list(&owner.api_groups), ALL) || has_all(list(&owner.api_groups), list(&atom.api_groups));
    let resources = resource_covers_all(list(&owner.resources), list(&atom.resources));
    let urls = non_resource_urls_cover_all(list(&owner.non_resource_urls), list(&atom.non_resource_urls));
    let owner_names = list(&owner.resource_names);
    let atom_names = list(&atom.resource_names);
    let names = if atom_names.is_empty() {
        owner_names.is_empty()
    } else {
        owner_names.is_empty() || has_all(owner_names, atom_names)
    };
    verbs && groups && resources && names && urls
}

/// Whether the owner rules cover every requested rule, and the atoms they do not cover
/// (`Covers`).
pub fn covers(owner: &[PolicyRule], requested: &[PolicyRule]) -> (bool, Vec<PolicyRule>) {
    let uncovered: Vec<PolicyRule> = requested
        .iter()
        .flat_map(breakdown_rule)
        .filter(|atom| !owner.iter().any(|o| rule_covers(o, atom)))
        .collect();
    (uncovered.is_empty(), uncovered)
}

/// Merges rules of one group and one resource, with no names or URLs, that differ only in
/// verbs (`CompactRules`); the verbs keep their order and are not deduplicated.
pub fn compact_rules(rules: &[PolicyRule]) -> Vec<PolicyRule> {
    let mut compacted = Vec::with_capacity(rules.len());
    let mut simple: Vec<PolicyRule> = Vec::new();
    let mut by_resource: HashMap<(String, String), usize> = HashMap::new();
    for rule in rules {
        let groups = list(&rule.api_groups);
        let resources = list(&rule.resources);
        let is_simple = list(&rule.resource_names).is_empty()
            && list(&rule.non_resource_urls).is_empty()
            && groups.len() == 1
            && resources.len() == 1;
        if !is_simple {
            compacted.push(rule.clone());
            continue;
        }
        let key = (groups[0].clone(), resources[0].clone());
        match by_resource.get(&key) {
            Some(&i) => simple[i].verbs.extend(rule.verbs.iter().cloned()),
            None => {
                by_resource.insert(key, simple.len());
                simple.push(PolicyRule {
                    api_groups: rule.api_groups.clone(),
                    resources: rule.resources.clone(),
                    verbs: rule.verbs.clone(),
                    resource_names: None,
                    non_resource_urls: None,
                });
            }
        }
    }
    compacted.extend(simple);
    compacted
}

/// Upstream's message for rules not covered:
/// `user "u" (groups=["g1" "g2"]) is attempting to grant RBAC permissions not currently
/// held:` and the compacted missing rules, sorted and deduplicated, one per line, then
/// `; resolution errors: [...]` when resolving the user's own rules failed somewhere.
pub fn escalation_message(user: &UserInfo, missing: &[PolicyRule], resolution_errors: &[String]) -> String {
    let descriptions: BTreeSet<String> = compact_rules(missing).iter().map(compact_string).collect();
    let lines: Vec<String> = descriptions.into_iter().collect();
    let mut message = format!(
        "user {} (groups={}) is attempting to grant RBAC permissions not currently held:\n{}",
        go_quote(&user.name),
        go_quote_list(&user.groups),
        lines.join("\n")
    );
    if !resolution_errors.is_empty() {
        // Upstream prints a one-element slice of the aggregate error with %v.
        message.push_str(&format!(
            "; resolution errors: [{}]",
            super::index::aggregate_errors(resolution_errors)
        ));
    }
    message
}

/// `ConfirmNoEscalation` given the user's own rules and the errors met resolving them.
pub fn confirm_no_escalation_with(
    user: &UserInfo,
    owner_rules: &[PolicyRule],
    resolution_errors: &[String],
    requested: &[PolicyRule],
) -> Result<(), String> {
    let (covered, missing) = covers(owner_rules, requested);
    if covered {
        Ok(())
    } else {
        Err(escalation_message(user, &missing, resolution_errors))
    }
}

/// The request that asks whether the user may `escalate` a role: `resource` is `roles` or
/// `clusterroles`, `name` the object, `namespace` the request's (`RoleEscalationAuthorized`).
pub fn escalate_attributes(user: &UserInfo, resource: &str, namespace: &str, name: &str) -> Attributes {
    Attributes {
        user: user.clone(),
        verb: "escalate".into(),
        is_resource_request: true,
        namespace: namespace.into(),
        api_group: super::index::RBAC_GROUP.into(),
        api_version: "*".into(),
        resource: resource.into(),
        name: name.into(),
        ..Default::default()
    }
}

/// The request that asks whether the user may `bind` the role a binding refers to, in the
/// binding's namespace (empty for ClusterRoleBindings) (`BindingAuthorized`). None for a
/// roleRef kind that is neither Role nor ClusterRole.
pub fn bind_attributes(user: &UserInfo, role_ref: &RoleRef, binding_namespace: &str) -> Option<Attributes> {
    let resource = match role_ref.kind.as_str() {
        "ClusterRole" => "clusterroles",
        "Role" => "roles",
        _ => return None,
    };
    Some(Attributes {
        user: user.clone(),
        verb: "bind".into(),
        is_resource_request: true,
        namespace: binding_namespace.into(),
        api_group: role_ref.api_group.clone(),
        api_version: "*".into(),
        resource: resource.into(),
        name: role_ref.name.clone(),
        ..Default::default()
    })
}
