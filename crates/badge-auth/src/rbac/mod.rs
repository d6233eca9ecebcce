//! Role-based access control as kube-apiserver's `--authorization-mode=RBAC`: pure logic
//! over Role, ClusterRole, RoleBinding and ClusterRoleBinding objects that the server feeds
//! in. No I/O, no HTTP, no store.
//!
//! - [`rules`]: matching one request against one rule (`pkg/apis/rbac/v1/evaluation_helpers.go`).
//! - [`index`]: the live policy indexed by subject, the authorizer and `RulesFor`
//!   (`plugin/pkg/auth/authorizer/rbac/rbac.go`, `pkg/registry/rbac/validation/rule.go`).
//! - [`escalation`]: `Covers` and `ConfirmNoEscalation`
//!   (`component-helpers/auth/rbac/validation/policy_comparator.go`).
//! - [`aggregation`]: the clusterrole-aggregation controller's union.
//! - [`bootstrap`]: the default roles and bindings and their reconciliation
//!   (`plugin/pkg/auth/authorizer/rbac/bootstrappolicy`).

pub mod aggregation;
pub mod bootstrap;
pub mod escalation;
pub mod index;
pub mod rules;

pub use aggregation::{aggregate, label_selector_matches};
pub use bootstrap::{
    BindingChange, default_cluster_role_bindings, default_cluster_roles, default_role_bindings,
    default_roles, reconcile, reconcile_cluster_role_binding, reconcile_role, reconcile_role_binding,
};
pub use escalation::{
    AGGREGATION_RULE_FORBIDDEN, bind_attributes, breakdown_rule, compact_rules, confirm_no_escalation_with,
    covers, escalate_attributes, escalation_message, full_authority,
};
pub use index::{
    ApplyError, RbacCounts, RbacIndex, RbacKind, RbacObject, RbacPolicy, RuleSource, Visit, applies_to_user,
    service_account_username,
};
pub use rules::{compact_string, rule_allows, rules_allow};

#[cfg(test)]
mod tests;
