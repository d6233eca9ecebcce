//! ClusterRole aggregation: mirrors `syncClusterRole` of
//! `pkg/controller/clusterroleaggregation/clusterroleaggregation_controller.go`, with label
//! selectors read as `metav1.LabelSelectorAsSelector` reads them.

use std::collections::BTreeMap;

use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::rules::{rule_lists_equal, rules_equal};

/// Whether a label selector matches a label set. An empty selector matches everything.
/// Errors as upstream's for an unknown operator or values that do not fit it.
pub fn label_selector_matches(
    selector: &LabelSelector,
    labels: &BTreeMap<String, String>,
) -> Result<bool, String> {
    let mut matches = true;
    for (key, value) in selector.match_labels.iter().flatten() {
        matches &= labels.get(key) == Some(value);
    }
    for requirement in selector.match_expressions.iter().flatten() {
        let values = requirement.values.as_deref().unwrap_or_default();
        let key = &requirement.key;
        let present = labels.get(key);
        let ok = match requirement.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => {
                return Err(format!(
                    "for 'in', 'notin' operators, values set can't be empty (key {key:?})"
                ));
            }
            "Exists" | "DoesNotExist" if !values.is_empty() => {
                return Err(format!(
                    "values set must be empty for exists and does not exist (key {key:?})"
                ));
            }
            "In" => present.is_some_and(|v| values.contains(v)),
            "NotIn" => present.is_none_or(|v| !values.contains(v)),
            "Exists" => present.is_some(),
            "DoesNotExist" => present.is_none(),
            other => return Err(format!("{other:?} is not a valid label selector operator")),
        };
        matches &= ok;
    }
    Ok(matches)
}

fn name(role: &ClusterRole) -> &str {
    role.metadata.name.as_deref().unwrap_or_default()
}

/// The rules one aggregated role should have given the current roles: for each selector
/// in order, the matching ClusterRoles by name (itself excluded), their rules in order,
/// each rule once. None when the role has no aggregationRule or a selector is invalid (the
/// controller then leaves it alone).
fn aggregated_rules(target: &ClusterRole, roles: &[ClusterRole]) -> Option<Vec<PolicyRule>> {
    let rule = target.aggregation_rule.as_ref()?;
    let mut by_name: Vec<&ClusterRole> = roles.iter().collect();
    by_name.sort_by(|a, b| name(a).cmp(name(b)));
    let empty = BTreeMap::new();
    let mut out: Vec<PolicyRule> = Vec::new();
    for selector in rule.cluster_role_selectors.iter().flatten() {
        // An invalid selector fails the sync before any role is listed.
        label_selector_matches(selector, &empty).ok()?;
        for role in &by_name {
            if name(role) == name(target) {
                continue;
            }
            let labels = role.metadata.labels.as_ref().unwrap_or(&empty);
            if !label_selector_matches(selector, labels).ok()? {
                continue;
            }
            for r in role.rules.iter().flatten() {
                if !out.iter().any(|o| rules_equal(o, r)) {
                    out.push(r.clone());
                }
            }
        }
    }
    Some(out)
}

/// For each ClusterRole with an aggregationRule, the union of the rules of the ClusterRoles
/// its selectors match, for the roles whose rules would change, in input order.
///
/// Upstream's controller syncs one role at a time and converges as each change re-queues
/// the others (`edit` is itself aggregated into `admin`); this runs those syncs to the
/// fixed point at once, so `admin` ⊇ `edit` ⊇ `view` after a single call.
pub fn aggregate(cluster_roles: &[ClusterRole]) -> Vec<(String, Vec<PolicyRule>)> {
    let mut current: Vec<ClusterRole> = cluster_roles.to_vec();
    let aggregated: Vec<usize> = (0..current.len())
        .filter(|&i| current[i].aggregation_rule.is_some())
        .collect();
    // Every pass either changes nothing (done) or propagates one more level; a bound keeps
    // selector cycles from spinning.
    for _ in 0..=aggregated.len() {
        let mut changed = false;
        for &i in &aggregated {
            let Some(rules) = aggregated_rules(&current[i], &current) else {
                continue;
            };
            let existing = current[i].rules.as_deref().unwrap_or_default();
            if !rule_lists_equal(&rules, existing) {
                current[i].rules = Some(rules);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    aggregated
        .into_iter()
        .filter_map(|i| {
            let before = cluster_roles[i].rules.as_deref().unwrap_or_default();
            let after = current[i].rules.as_deref().unwrap_or_default();
            (!rule_lists_equal(before, after)).then(|| (name(&current[i]).to_string(), after.to_vec()))
        })
        .collect()
}
