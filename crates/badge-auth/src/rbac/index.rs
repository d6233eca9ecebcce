//! The RBAC authorizer over an in-memory index of roles and bindings: mirrors
//! `plugin/pkg/auth/authorizer/rbac/rbac.go` and the `DefaultRuleResolver` of
//! `pkg/registry/rbac/validation/rule.go`.
//!
//! Upstream lists every binding on every decision. Here bindings are indexed by the
//! subjects they name (a user name, a group name, or the username a ServiceAccount subject
//! stands for), so a decision visits only the bindings that can apply to the caller. The
//! policy is an immutable snapshot behind `Arc`; readers clone the `Arc` and let the lock go
//! at once, writers copy only the parts they change (copy-on-write, per namespace).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use parking_lot::RwLock;

use super::escalation;
use super::rules::{Request, go_quote};
use crate::authorizer::{Attributes, Authorizer, Decision};
use crate::user::UserInfo;

/// The prefix of a ServiceAccount's user name.
pub const SERVICE_ACCOUNT_USERNAME_PREFIX: &str = "system:serviceaccount:";
/// The API group of the RBAC kinds.
pub const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// `system:serviceaccount:<namespace>:<name>`.
pub fn service_account_username(namespace: &str, name: &str) -> String {
    format!("{SERVICE_ACCOUNT_USERNAME_PREFIX}{namespace}:{name}")
}

/// Whether a binding subject names the user (`appliesToUser`). `namespace` is the
/// binding's namespace, empty for ClusterRoleBindings: a ServiceAccount subject without a
/// namespace takes the binding's, and in a ClusterRoleBinding never matches.
pub fn applies_to_user(user: &UserInfo, subject: &Subject, namespace: &str) -> bool {
    match subject.kind.as_str() {
        "User" => user.name == subject.name,
        "Group" => user.in_group(&subject.name),
        "ServiceAccount" => {
            let ns = match subject.namespace.as_deref() {
                Some(ns) if !ns.is_empty() => ns,
                _ => namespace,
            };
            !ns.is_empty() && is_service_account_username(&user.name, ns, &subject.name)
        }
        _ => false,
    }
}

/// `serviceaccount.MatchesUsername`, without building the string.
fn is_service_account_username(username: &str, namespace: &str, name: &str) -> bool {
    username
        .strip_prefix(SERVICE_ACCOUNT_USERNAME_PREFIX)
        .and_then(|rest| rest.strip_prefix(namespace))
        .and_then(|rest| rest.strip_prefix(':'))
        == Some(name)
}

/// The index of the first subject that names the user (`appliesTo`).
fn applies_to(user: &UserInfo, subjects: &[Subject], namespace: &str) -> Option<usize> {
    subjects.iter().position(|s| applies_to_user(user, s, namespace))
}

/// Upstream's NotFound message from the role listers.
fn not_found(resource: &str, name: &str) -> String {
    format!("{resource}.{RBAC_GROUP} {} not found", go_quote(name))
}

/// What the two binding kinds have in common.
trait Binding {
    fn name(&self) -> &str;
    fn subjects(&self) -> &[Subject];
    fn role_ref(&self) -> &RoleRef;
}

impl Binding for RoleBinding {
    fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or_default()
    }
    fn subjects(&self) -> &[Subject] {
        self.subjects.as_deref().unwrap_or_default()
    }
    fn role_ref(&self) -> &RoleRef {
        &self.role_ref
    }
}

impl Binding for ClusterRoleBinding {
    fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or_default()
    }
    fn subjects(&self) -> &[Subject] {
        self.subjects.as_deref().unwrap_or_default()
    }
    fn role_ref(&self) -> &RoleRef {
        &self.role_ref
    }
}

/// Where an index entry is filed: ServiceAccount subjects are filed under the username
/// they match, since matching them is username equality.
#[derive(PartialEq, Eq)]
enum Key {
    User(String),
    Group(String),
}

fn subject_keys(subjects: &[Subject], namespace: &str) -> Vec<Key> {
    let mut keys: Vec<Key> = Vec::with_capacity(subjects.len());
    for s in subjects {
        let key = match s.kind.as_str() {
            "User" => Key::User(s.name.clone()),
            "Group" => Key::Group(s.name.clone()),
            "ServiceAccount" => {
                let ns = match s.namespace.as_deref() {
                    Some(ns) if !ns.is_empty() => ns,
                    _ => namespace,
                };
                if ns.is_empty() {
                    continue;
                }
                Key::User(service_account_username(ns, &s.name))
            }
            _ => continue,
        };
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    keys
}

/// The bindings of one scope (the cluster, or one namespace), by name and by subject.
struct BindingSet<B> {
    by_name: HashMap<String, Arc<B>>,
    by_user: HashMap<String, Vec<Arc<B>>>,
    by_group: HashMap<String, Vec<Arc<B>>>,
}

impl<B> Default for BindingSet<B> {
    fn default() -> Self {
        BindingSet {
            by_name: HashMap::new(),
            by_user: HashMap::new(),
            by_group: HashMap::new(),
        }
    }
}

// By hand: the derive would ask `B: Clone`, and only the `Arc`s are cloned.
impl<B> Clone for BindingSet<B> {
    fn clone(&self) -> Self {
        BindingSet {
            by_name: self.by_name.clone(),
            by_user: self.by_user.clone(),
            by_group: self.by_group.clone(),
        }
    }
}

impl<B: Binding> BindingSet<B> {
    fn slot(&mut self, key: Key) -> (&mut HashMap<String, Vec<Arc<B>>>, String) {
        match key {
            Key::User(k) => (&mut self.by_user, k),
            Key::Group(k) => (&mut self.by_group, k),
        }
    }

    fn insert(&mut self, namespace: &str, binding: B) {
        let name = binding.name().to_string();
        self.remove(namespace, &name);
        let binding = Arc::new(binding);
        for key in subject_keys(binding.subjects(), namespace) {
            let (map, k) = self.slot(key);
            map.entry(k).or_default().push(binding.clone());
        }
        self.by_name.insert(name, binding);
    }

    fn remove(&mut self, namespace: &str, name: &str) -> bool {
        let Some(old) = self.by_name.remove(name) else {
            return false;
        };
        for key in subject_keys(old.subjects(), namespace) {
            let (map, k) = self.slot(key);
            if let Some(list) = map.get_mut(&k) {
                list.retain(|b| !Arc::ptr_eq(b, &old));
                if list.is_empty() {
                    map.remove(&k);
                }
            }
        }
        true
    }

    /// The bindings that name the user or one of its groups, once each, by name so that
    /// decisions and their reasons do not depend on hash order.
    fn candidates(&self, user: &UserInfo) -> Vec<&Arc<B>> {
        let mut out: Vec<&Arc<B>> = Vec::new();
        if let Some(list) = self.by_user.get(user.name.as_str()) {
            out.extend(list);
        }
        for group in &user.groups {
            if let Some(list) = self.by_group.get(group.as_str()) {
                out.extend(list);
            }
        }
        if out.len() > 1 {
            out.sort_unstable_by(|a, b| a.name().cmp(b.name()));
            out.dedup_by(|a, b| Arc::ptr_eq(a, b));
        }
        out
    }
}

#[derive(Clone, Default)]
struct NamespacePolicy {
    roles: HashMap<String, Arc<Role>>,
    bindings: BindingSet<RoleBinding>,
}

impl NamespacePolicy {
    fn is_empty(&self) -> bool {
        self.roles.is_empty() && self.bindings.by_name.is_empty()
    }
}

/// Which binding granted a rule; prints as upstream's describers, e.g.
/// `ClusterRoleBinding "x" of ClusterRole "y" to Group "z"`.
#[derive(Clone, Copy, Debug)]
pub struct RuleSource<'a> {
    /// Empty for a ClusterRoleBinding.
    pub binding_namespace: &'a str,
    /// The binding's name.
    pub binding_name: &'a str,
    /// The role the binding grants.
    pub role_ref: &'a RoleRef,
    /// The subject of the binding that matched.
    pub subject: &'a Subject,
}

impl fmt::Display for RuleSource<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.binding_namespace.is_empty() {
            write!(f, "ClusterRoleBinding {}", go_quote(self.binding_name))?;
        } else {
            let name = format!("{}/{}", self.binding_name, self.binding_namespace);
            write!(f, "RoleBinding {}", go_quote(&name))?;
        }
        write!(
            f,
            " of {} {} to ",
            self.role_ref.kind,
            go_quote(&self.role_ref.name)
        )?;
        let s = self.subject;
        if s.kind == "ServiceAccount" {
            let ns = match s.namespace.as_deref() {
                Some(ns) if !ns.is_empty() => ns,
                _ => self.binding_namespace,
            };
            write!(f, "{} {}", s.kind, go_quote(&format!("{}/{ns}", s.name)))
        } else {
            write!(f, "{} {}", s.kind, go_quote(&s.name))
        }
    }
}

/// One step of `visit_rules_for`.
#[derive(Debug)]
pub enum Visit<'a> {
    /// A rule and the binding it came from.
    Rule {
        /// The binding it came from.
        source: &'a RuleSource<'a>,
        /// The rule.
        rule: &'a PolicyRule,
    },
    /// A binding whose role could not be resolved (missing role, unknown kind).
    Error(&'a str),
}

/// How many objects the policy holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RbacCounts {
    /// Roles, over every namespace.
    pub roles: usize,
    /// ClusterRoles.
    pub cluster_roles: usize,
    /// RoleBindings, over every namespace.
    pub role_bindings: usize,
    /// ClusterRoleBindings.
    pub cluster_role_bindings: usize,
}

/// Decoding an object handed to [`RbacPolicy::apply`] failed.
#[derive(Debug)]
pub enum ApplyError {
    /// The object's kind is not one of the four RBAC kinds.
    UnknownKind(String),
    /// The object does not decode as its kind.
    Decode(serde_json::Error),
}

impl fmt::Display for ApplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApplyError::UnknownKind(kind) => write!(f, "not an RBAC kind: {kind:?}"),
            ApplyError::Decode(e) => write!(f, "decoding RBAC object: {e}"),
        }
    }
}

impl std::error::Error for ApplyError {}

/// The four RBAC kinds, as the server names them (kind or plural resource).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RbacKind {
    /// `Role`, `roles`.
    Role,
    /// `ClusterRole`, `clusterroles`.
    ClusterRole,
    /// `RoleBinding`, `rolebindings`.
    RoleBinding,
    /// `ClusterRoleBinding`, `clusterrolebindings`.
    ClusterRoleBinding,
}

impl RbacKind {
    /// From a kind (`RoleBinding`) or a resource (`rolebindings`).
    pub fn parse(s: &str) -> Option<RbacKind> {
        match s {
            "Role" | "roles" => Some(RbacKind::Role),
            "ClusterRole" | "clusterroles" => Some(RbacKind::ClusterRole),
            "RoleBinding" | "rolebindings" => Some(RbacKind::RoleBinding),
            "ClusterRoleBinding" | "clusterrolebindings" => Some(RbacKind::ClusterRoleBinding),
            _ => None,
        }
    }
}

/// One decoded RBAC object.
#[derive(Clone, Debug)]
pub enum RbacObject {
    /// A Role.
    Role(Role),
    /// A ClusterRole.
    ClusterRole(ClusterRole),
    /// A RoleBinding.
    RoleBinding(RoleBinding),
    /// A ClusterRoleBinding.
    ClusterRoleBinding(ClusterRoleBinding),
}

fn decode<T: serde::de::DeserializeOwned>(object: serde_json::Value) -> Result<T, ApplyError> {
    serde_json::from_value(object).map_err(ApplyError::Decode)
}

impl RbacObject {
    /// Decodes a stored object: Ok(Ok(object)) to upsert, Ok(Err(kind)) for a deletion
    /// (`object` None). A non-empty `name` replaces the object's own.
    pub fn decode(
        kind: &str,
        name: &str,
        object: Option<serde_json::Value>,
    ) -> Result<Result<RbacObject, RbacKind>, ApplyError> {
        let kind = RbacKind::parse(kind).ok_or_else(|| ApplyError::UnknownKind(kind.into()))?;
        let Some(object) = object else {
            return Ok(Err(kind));
        };
        let mut decoded = match kind {
            RbacKind::Role => RbacObject::Role(decode(object)?),
            RbacKind::ClusterRole => RbacObject::ClusterRole(decode(object)?),
            RbacKind::RoleBinding => RbacObject::RoleBinding(decode(object)?),
            RbacKind::ClusterRoleBinding => RbacObject::ClusterRoleBinding(decode(object)?),
        };
        if !name.is_empty() {
            let meta = match &mut decoded {
                RbacObject::Role(o) => &mut o.metadata,
                RbacObject::ClusterRole(o) => &mut o.metadata,
                RbacObject::RoleBinding(o) => &mut o.metadata,
                RbacObject::ClusterRoleBinding(o) => &mut o.metadata,
            };
            meta.name = Some(name.to_string());
        }
        Ok(Ok(decoded))
    }
}

/// One consistent view of every Role, ClusterRole, RoleBinding and ClusterRoleBinding.
/// Cheap to clone: the parts are shared until written.
#[derive(Clone, Default)]
pub struct RbacPolicy {
    cluster_roles: Arc<HashMap<String, Arc<ClusterRole>>>,
    cluster_bindings: Arc<BindingSet<ClusterRoleBinding>>,
    namespaces: HashMap<String, Arc<NamespacePolicy>>,
}

impl fmt::Debug for RbacPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RbacPolicy")
            .field("counts", &self.counts())
            .finish()
    }
}

impl RbacPolicy {
    /// An empty policy.
    pub fn new() -> RbacPolicy {
        RbacPolicy::default()
    }

    /// How many objects of each kind the policy holds.
    pub fn counts(&self) -> RbacCounts {
        let mut counts = RbacCounts {
            cluster_roles: self.cluster_roles.len(),
            cluster_role_bindings: self.cluster_bindings.by_name.len(),
            ..Default::default()
        };
        for ns in self.namespaces.values() {
            counts.roles += ns.roles.len();
            counts.role_bindings += ns.bindings.by_name.len();
        }
        counts
    }

    fn namespace_mut(&mut self, namespace: &str) -> &mut NamespacePolicy {
        Arc::make_mut(self.namespaces.entry(namespace.to_string()).or_default())
    }

    fn prune(&mut self, namespace: &str) {
        if self.namespaces.get(namespace).is_some_and(|ns| ns.is_empty()) {
            self.namespaces.remove(namespace);
        }
    }

    /// Adds or replaces a Role, keyed by `namespace` and its `metadata.name`.
    pub fn upsert_role(&mut self, namespace: &str, role: Role) {
        let name = role.metadata.name.clone().unwrap_or_default();
        self.namespace_mut(namespace).roles.insert(name, Arc::new(role));
    }

    /// Removes the Role `namespace/name`, if present.
    pub fn remove_role(&mut self, namespace: &str, name: &str) {
        if let Some(ns) = self.namespaces.get_mut(namespace)
            && ns.roles.contains_key(name)
        {
            Arc::make_mut(ns).roles.remove(name);
            self.prune(namespace);
        }
    }

    /// Adds or replaces a ClusterRole.
    pub fn upsert_cluster_role(&mut self, role: ClusterRole) {
        let name = role.metadata.name.clone().unwrap_or_default();
        Arc::make_mut(&mut self.cluster_roles).insert(name, Arc::new(role));
    }

    /// Removes the ClusterRole `name`, if present.
    pub fn remove_cluster_role(&mut self, name: &str) {
        if self.cluster_roles.contains_key(name) {
            Arc::make_mut(&mut self.cluster_roles).remove(name);
        }
    }

    /// Adds or replaces a RoleBinding, keyed by `namespace` and its `metadata.name`.
    pub fn upsert_role_binding(&mut self, namespace: &str, binding: RoleBinding) {
        self.namespace_mut(namespace).bindings.insert(namespace, binding);
    }

    /// Removes the RoleBinding `namespace/name`, if present.
    pub fn remove_role_binding(&mut self, namespace: &str, name: &str) {
        if let Some(ns) = self.namespaces.get_mut(namespace)
            && ns.bindings.by_name.contains_key(name)
        {
            Arc::make_mut(ns).bindings.remove(namespace, name);
            self.prune(namespace);
        }
    }

    /// Adds or replaces a ClusterRoleBinding.
    pub fn upsert_cluster_role_binding(&mut self, binding: ClusterRoleBinding) {
        Arc::make_mut(&mut self.cluster_bindings).insert("", binding);
    }

    /// Removes the ClusterRoleBinding `name`, if present.
    pub fn remove_cluster_role_binding(&mut self, name: &str) {
        if self.cluster_bindings.by_name.contains_key(name) {
            Arc::make_mut(&mut self.cluster_bindings).remove("", name);
        }
    }

    /// Applies a stored object as the server keeps it: `kind` is a kind or a plural
    /// resource, `object` the JSON (None for a deletion). `namespace` and `name` are the
    /// storage key and win over the object's metadata.
    pub fn apply(
        &mut self,
        kind: &str,
        namespace: &str,
        name: &str,
        object: Option<serde_json::Value>,
    ) -> Result<(), ApplyError> {
        let change = RbacObject::decode(kind, name, object)?;
        self.apply_decoded(namespace, name, change);
        Ok(())
    }

    /// Applies a decoded change: an object to upsert, or the kind of the one to remove.
    pub fn apply_decoded(&mut self, namespace: &str, name: &str, change: Result<RbacObject, RbacKind>) {
        match change {
            Ok(RbacObject::Role(role)) => self.upsert_role(namespace, role),
            Ok(RbacObject::ClusterRole(role)) => self.upsert_cluster_role(role),
            Ok(RbacObject::RoleBinding(b)) => self.upsert_role_binding(namespace, b),
            Ok(RbacObject::ClusterRoleBinding(b)) => self.upsert_cluster_role_binding(b),
            Err(RbacKind::Role) => self.remove_role(namespace, name),
            Err(RbacKind::ClusterRole) => self.remove_cluster_role(name),
            Err(RbacKind::RoleBinding) => self.remove_role_binding(namespace, name),
            Err(RbacKind::ClusterRoleBinding) => self.remove_cluster_role_binding(name),
        }
    }

    /// The Role `namespace/name`.
    pub fn role(&self, namespace: &str, name: &str) -> Option<&Role> {
        self.namespaces.get(namespace)?.roles.get(name).map(|r| &**r)
    }

    /// The ClusterRole `name`.
    pub fn cluster_role(&self, name: &str) -> Option<&ClusterRole> {
        self.cluster_roles.get(name).map(|r| &**r)
    }

    /// Every ClusterRole, in no particular order (the input of `aggregate`).
    pub fn cluster_roles(&self) -> impl Iterator<Item = &ClusterRole> {
        self.cluster_roles.values().map(|r| &**r)
    }

    /// The rules a roleRef points at (`GetRoleReferenceRules`); `binding_namespace` is empty
    /// for ClusterRoleBindings. Errors carry upstream's messages, e.g.
    /// `clusterrole.rbac.authorization.k8s.io "x" not found`.
    pub fn role_reference_rules(
        &self,
        role_ref: &RoleRef,
        binding_namespace: &str,
    ) -> Result<&[PolicyRule], String> {
        match role_ref.kind.as_str() {
            "Role" => self
                .role(binding_namespace, &role_ref.name)
                .map(|r| r.rules.as_deref().unwrap_or_default())
                .ok_or_else(|| not_found("role", &role_ref.name)),
            "ClusterRole" => self
                .cluster_role(&role_ref.name)
                .map(|r| r.rules.as_deref().unwrap_or_default())
                .ok_or_else(|| not_found("clusterrole", &role_ref.name)),
            other => Err(format!("unsupported role reference kind: {}", go_quote(other))),
        }
    }

    /// Calls `visitor` with every rule that applies to the user in the namespace, cluster
    /// bindings first, then (for a non-empty namespace) that namespace's RoleBindings, and
    /// with every role that could not be resolved. Stops when `visitor` returns false.
    pub fn visit_rules_for(
        &self,
        user: &UserInfo,
        namespace: &str,
        mut visitor: impl FnMut(Visit<'_>) -> bool,
    ) {
        if !self.visit_set(&self.cluster_bindings, user, "", &mut visitor) {
            return;
        }
        if !namespace.is_empty()
            && let Some(ns) = self.namespaces.get(namespace)
        {
            self.visit_set(&ns.bindings, user, namespace, &mut visitor);
        }
    }

    fn visit_set<B: Binding>(
        &self,
        set: &BindingSet<B>,
        user: &UserInfo,
        namespace: &str,
        visitor: &mut impl FnMut(Visit<'_>) -> bool,
    ) -> bool {
        for binding in set.candidates(user) {
            let subjects = binding.subjects();
            let Some(index) = applies_to(user, subjects, namespace) else {
                continue;
            };
            match self.role_reference_rules(binding.role_ref(), namespace) {
                Err(e) => {
                    if !visitor(Visit::Error(&e)) {
                        return false;
                    }
                }
                Ok(rules) => {
                    let source = RuleSource {
                        binding_namespace: namespace,
                        binding_name: binding.name(),
                        role_ref: binding.role_ref(),
                        subject: &subjects[index],
                    };
                    for rule in rules {
                        if !visitor(Visit::Rule {
                            source: &source,
                            rule,
                        }) {
                            return false;
                        }
                    }
                }
            }
        }
        true
    }

    /// Every rule that applies to the user in the namespace, and the resolution errors
    /// (`RulesFor`): cluster bindings' rules, plus the namespace's RoleBindings' when the
    /// namespace is not empty. For SelfSubjectRulesReview and escalation checks.
    pub fn rules_for(&self, user: &UserInfo, namespace: &str) -> (Vec<PolicyRule>, Vec<String>) {
        let mut rules = Vec::new();
        let mut errors = Vec::new();
        self.visit_rules_for(user, namespace, |visit| {
            match visit {
                Visit::Rule { rule, .. } => rules.push(rule.clone()),
                Visit::Error(e) => errors.push(e.to_string()),
            }
            true
        });
        (rules, errors)
    }

    /// `ConfirmNoEscalation`: Ok when the user's own rules in `namespace` (empty for
    /// cluster-scoped objects) cover `rules`, else upstream's message naming what is missing.
    pub fn confirm_no_escalation(
        &self,
        user: &UserInfo,
        rules: &[PolicyRule],
        namespace: &str,
    ) -> Result<(), String> {
        let (owner, errors) = self.rules_for(user, namespace);
        escalation::confirm_no_escalation_with(user, &owner, &errors, rules)
    }

    /// Whether the user holds every permission there is at this scope; needed to set or
    /// remove an `aggregationRule`.
    pub fn has_full_authority(&self, user: &UserInfo, namespace: &str) -> bool {
        self.confirm_no_escalation(user, &escalation::full_authority(), namespace)
            .is_ok()
    }

    /// The decision, as `RBACAuthorizer.Authorize`: Allow when a rule of an applicable
    /// binding matches, else NoOpinion (RBAC never denies) whose reason is empty, or
    /// `RBAC: <errors>` when some bound roles could not be resolved.
    pub fn decide(&self, attributes: &Attributes) -> Decision {
        self.evaluate(attributes, false).0
    }

    /// Like `decide`, with the reason upstream returns alongside Allow, which
    /// `Decision::Allow` has no room for:
    /// `RBAC: allowed by ClusterRoleBinding "x" of ClusterRole "y" to Group "z"`.
    pub fn decide_with_reason(&self, attributes: &Attributes) -> (Decision, String) {
        self.evaluate(attributes, true)
    }

    fn evaluate(&self, attributes: &Attributes, want_reason: bool) -> (Decision, String) {
        let request = Request::new(attributes);
        let mut allowed: Option<String> = None;
        let mut errors: Vec<String> = Vec::new();
        self.visit_rules_for(&attributes.user, &attributes.namespace, |visit| match visit {
            Visit::Rule { source, rule } => {
                if request.allows(rule) {
                    allowed = Some(if want_reason {
                        format!("RBAC: allowed by {source}")
                    } else {
                        String::new()
                    });
                    false
                } else {
                    true
                }
            }
            Visit::Error(e) => {
                errors.push(e.to_string());
                true
            }
        });
        match allowed {
            Some(reason) => (Decision::Allow, reason),
            None if errors.is_empty() => (Decision::NoOpinion(String::new()), String::new()),
            None => {
                let reason = format!("RBAC: {}", aggregate_errors(&errors));
                (Decision::NoOpinion(reason.clone()), reason)
            }
        }
    }
}

/// `utilerrors.NewAggregate(errs).Error()`: one message alone, several deduplicated in
/// `[a, b]`.
pub fn aggregate_errors(errors: &[String]) -> String {
    let mut seen: Vec<&str> = Vec::new();
    for e in errors {
        if !seen.contains(&e.as_str()) {
            seen.push(e);
        }
    }
    match seen.as_slice() {
        [one] => one.to_string(),
        many => format!("[{}]", many.join(", ")),
    }
}

impl Authorizer for RbacPolicy {
    fn authorize(&self, attributes: &Attributes) -> Decision {
        self.decide(attributes)
    }
}

/// The live policy: a snapshot swapped on every change. Readers take the current `Arc` and
/// release the lock at once; a writer changes the snapshot in place when no reader holds
/// it (as at startup, loading thousands of objects) and copies only the touched parts
/// otherwise.
#[derive(Debug, Default)]
pub struct RbacIndex {
    current: RwLock<Arc<RbacPolicy>>,
}

impl RbacIndex {
    /// An index over an empty policy.
    pub fn new() -> RbacIndex {
        RbacIndex::default()
    }

    /// An index over `policy`.
    pub fn from_policy(policy: RbacPolicy) -> RbacIndex {
        RbacIndex {
            current: RwLock::new(Arc::new(policy)),
        }
    }

    /// The current policy, for several consistent reads.
    pub fn snapshot(&self) -> Arc<RbacPolicy> {
        self.current.read().clone()
    }

    /// Applies several changes as one: readers see all of them or none.
    pub fn update<R>(&self, change: impl FnOnce(&mut RbacPolicy) -> R) -> R {
        let mut guard = self.current.write();
        change(Arc::make_mut(&mut guard))
    }

    /// Adds or replaces a Role in `namespace`.
    pub fn upsert_role(&self, namespace: &str, role: Role) {
        self.update(|p| p.upsert_role(namespace, role));
    }

    /// Removes the Role `namespace/name`, if present.
    pub fn remove_role(&self, namespace: &str, name: &str) {
        self.update(|p| p.remove_role(namespace, name));
    }

    /// Adds or replaces a ClusterRole.
    pub fn upsert_cluster_role(&self, role: ClusterRole) {
        self.update(|p| p.upsert_cluster_role(role));
    }

    /// Removes the ClusterRole `name`, if present.
    pub fn remove_cluster_role(&self, name: &str) {
        self.update(|p| p.remove_cluster_role(name));
    }

    /// Adds or replaces a RoleBinding in `namespace`.
    pub fn upsert_role_binding(&self, namespace: &str, binding: RoleBinding) {
        self.update(|p| p.upsert_role_binding(namespace, binding));
    }

    /// Removes the RoleBinding `namespace/name`, if present.
    pub fn remove_role_binding(&self, namespace: &str, name: &str) {
        self.update(|p| p.remove_role_binding(namespace, name));
    }

    /// Adds or replaces a ClusterRoleBinding.
    pub fn upsert_cluster_role_binding(&self, binding: ClusterRoleBinding) {
        self.update(|p| p.upsert_cluster_role_binding(binding));
    }

    /// Removes the ClusterRoleBinding `name`, if present.
    pub fn remove_cluster_role_binding(&self, name: &str) {
        self.update(|p| p.remove_cluster_role_binding(name));
    }

    /// See [`RbacPolicy::apply`].
    pub fn apply(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        object: Option<serde_json::Value>,
    ) -> Result<(), ApplyError> {
        // Decoded before taking the write lock, so a large or bad object costs readers nothing.
        let change = RbacObject::decode(kind, name, object)?;
        self.update(|p| p.apply_decoded(namespace, name, change));
        Ok(())
    }

    /// Every rule granted to `user` in `namespace`, and the bindings that could not be resolved (upstream's `RulesFor`).
    pub fn rules_for(&self, user: &UserInfo, namespace: &str) -> (Vec<PolicyRule>, Vec<String>) {
        self.snapshot().rules_for(user, namespace)
    }

    /// Whether `user` already holds every one of `rules` in `namespace`; the error lists what is missing.
    pub fn confirm_no_escalation(
        &self,
        user: &UserInfo,
        rules: &[PolicyRule],
        namespace: &str,
    ) -> Result<(), String> {
        self.snapshot().confirm_no_escalation(user, rules, namespace)
    }

    /// The RBAC decision, and the binding that allowed it or why nothing did.
    pub fn decide_with_reason(&self, attributes: &Attributes) -> (Decision, String) {
        self.snapshot().decide_with_reason(attributes)
    }
}

impl Authorizer for RbacIndex {
    fn authorize(&self, attributes: &Attributes) -> Decision {
        self.snapshot().decide(attributes)
    }
}
