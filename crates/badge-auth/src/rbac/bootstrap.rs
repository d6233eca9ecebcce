//! The default roles and bindings kube-apiserver creates and keeps up to date at start:
//! mirrors `plugin/pkg/auth/authorizer/rbac/bootstrappolicy/{policy,controller_policy,
//! namespace_policy}.go` (content as rendered in that package's `testdata/*.yaml`), and the
//! union-mode reconciliation of `pkg/registry/rbac/reconciliation/reconcile_role{,bindings}.go`.
//!
//! The rules are written as upstream writes them, then narrowed to the resources badge
//! serves ([`SERVED_RESOURCES`]): a rule for resources badge does not serve is dropped, and
//! unserved resources or groups are removed from the rest. Non-resource rules and
//! wildcards are kept as they are.

use std::collections::BTreeMap;

use k8s_openapi::api::rbac::v1::{
    AggregationRule, ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use super::escalation::covers;
use super::index::RBAC_GROUP;
use super::rules::{ALL, RuleBuilder, list, rule};

/// Label on every default role and binding.
pub const BOOTSTRAP_LABEL: &str = "kubernetes.io/bootstrapping";
/// The value of [`BOOTSTRAP_LABEL`] on them.
pub const BOOTSTRAP_LABEL_VALUE: &str = "rbac-defaults";
/// Annotation that, `false`, stops the server from reconciling a default role or binding.
pub const AUTOUPDATE_ANNOTATION: &str = "rbac.authorization.kubernetes.io/autoupdate";
/// Label whose ClusterRoles' rules are aggregated into `admin`.
pub const AGGREGATE_TO_ADMIN: &str = "rbac.authorization.k8s.io/aggregate-to-admin";
/// Label whose ClusterRoles' rules are aggregated into `edit`.
pub const AGGREGATE_TO_EDIT: &str = "rbac.authorization.k8s.io/aggregate-to-edit";
/// Label whose ClusterRoles' rules are aggregated into `view`.
pub const AGGREGATE_TO_VIEW: &str = "rbac.authorization.k8s.io/aggregate-to-view";

const CORE: &str = "";
const APPS: &str = "apps";
const AUTHN: &str = "authentication.k8s.io";
const AUTHZ: &str = "authorization.k8s.io";
const AUTOSCALING: &str = "autoscaling";
const BATCH: &str = "batch";
const CERTIFICATES: &str = "certificates.k8s.io";
const COORDINATION: &str = "coordination.k8s.io";
const DISCOVERY: &str = "discovery.k8s.io";
const EVENTS: &str = "events.k8s.io";
const EXTENSIONS: &str = "extensions";
const NETWORKING: &str = "networking.k8s.io";
const NODE: &str = "node.k8s.io";
const POLICY: &str = "policy";
const STORAGE: &str = "storage.k8s.io";

const READ: &[&str] = &["get", "list", "watch"];
const IDENTITY: &str = "identity.badge.dev";
const WRITE: &[&str] = &["create", "update", "patch", "delete", "deletecollection"];
const READ_WRITE: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
];

/// The (group, resource[/subresource]) pairs badge serves; keep in step with badge-api's
/// resource table. Default rules for anything else are left out.
pub const SERVED_RESOURCES: &[(&str, &str)] = &[
    (CORE, "configmaps"),
    (CORE, "events"),
    (CORE, "namespaces"),
    (CORE, "namespaces/finalize"),
    (CORE, "namespaces/status"),
    (CORE, "nodes"),
    (CORE, "pods"),
    (CORE, "pods/status"),
    (CORE, "secrets"),
    (CORE, "serviceaccounts"),
    (CORE, "serviceaccounts/token"),
    (AUTHN, "selfsubjectreviews"),
    (AUTHN, "tokenreviews"),
    (AUTHZ, "localsubjectaccessreviews"),
    (AUTHZ, "selfsubjectaccessreviews"),
    (AUTHZ, "selfsubjectrulesreviews"),
    (AUTHZ, "subjectaccessreviews"),
    (CERTIFICATES, "certificatesigningrequests"),
    (CERTIFICATES, "certificatesigningrequests/approval"),
    (CERTIFICATES, "certificatesigningrequests/status"),
    // Checked by the CSR approver, never served as paths.
    (CERTIFICATES, "certificatesigningrequests/nodeclient"),
    (CERTIFICATES, "certificatesigningrequests/selfnodeclient"),
    // Checked by CertificateSigningRequest admission (`approve`, `sign`).
    (CERTIFICATES, "signers"),
    (COORDINATION, "leases"),
    (IDENTITY, "issuedtokens"),
    (IDENTITY, "serviceaccountusages"),
    (IDENTITY, "tokenpolicies"),
    (RBAC_GROUP, "clusterrolebindings"),
    (RBAC_GROUP, "clusterroles"),
    (RBAC_GROUP, "rolebindings"),
    (RBAC_GROUP, "roles"),
];

fn served(group: &str, resource: &str) -> bool {
    SERVED_RESOURCES.contains(&(group, resource))
}

fn wildcard(resource: &str) -> bool {
    resource == ALL || resource.starts_with("*/")
}

/// The rule narrowed to served resources, or None when nothing served is left.
fn served_only(mut r: PolicyRule) -> Option<PolicyRule> {
    if list(&r.resources).is_empty() {
        return Some(r);
    }
    let groups = list(&r.api_groups).to_vec();
    let resources: Vec<String> = list(&r.resources)
        .iter()
        .filter(|res| wildcard(res) || groups.iter().any(|g| g == ALL || served(g, res)))
        .cloned()
        .collect();
    let groups: Vec<String> = groups
        .into_iter()
        .filter(|g| g == ALL || resources.iter().any(|res| wildcard(res) || served(g, res)))
        .collect();
    if resources.is_empty() || groups.is_empty() {
        return None;
    }
    r.resources = Some(resources);
    r.api_groups = Some(groups);
    Some(r)
}

fn rules(builders: Vec<RuleBuilder>) -> Vec<PolicyRule> {
    builders
        .into_iter()
        .filter_map(|b| served_only(b.build()))
        .collect()
}

fn default_meta(name: &str, namespace: Option<&str>, labels: &[(&str, &str)]) -> ObjectMeta {
    let mut all: BTreeMap<String, String> =
        BTreeMap::from([(BOOTSTRAP_LABEL.into(), BOOTSTRAP_LABEL_VALUE.into())]);
    all.extend(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    ObjectMeta {
        name: Some(name.into()),
        namespace: namespace.map(Into::into),
        labels: Some(all),
        annotations: Some(BTreeMap::from([(AUTOUPDATE_ANNOTATION.into(), "true".into())])),
        ..Default::default()
    }
}

fn cluster_role(name: &str, rule_list: Vec<RuleBuilder>) -> ClusterRole {
    ClusterRole {
        metadata: default_meta(name, None, &[]),
        rules: Some(rules(rule_list)),
        aggregation_rule: None,
    }
}

fn labelled_cluster_role(name: &str, label: &str, rule_list: Vec<RuleBuilder>) -> ClusterRole {
    ClusterRole {
        metadata: default_meta(name, None, &[(label, "true")]),
        rules: Some(rules(rule_list)),
        aggregation_rule: None,
    }
}

/// An aggregated role: no rules of its own; the aggregation fills them in.
fn aggregated_cluster_role(name: &str, labels: &[(&str, &str)], selects: &str) -> ClusterRole {
    ClusterRole {
        metadata: default_meta(name, None, labels),
        rules: None,
        aggregation_rule: Some(AggregationRule {
            cluster_role_selectors: Some(vec![LabelSelector {
                match_labels: Some(BTreeMap::from([(selects.into(), "true".into())])),
                match_expressions: None,
            }]),
        }),
    }
}

fn events_rule() -> RuleBuilder {
    rule(&["create", "update", "patch"])
        .groups(&[CORE, EVENTS])
        .resources(&["events"])
}

/// `NodeRules()` with every feature gate of 1.3x at its default.
fn node_rules() -> Vec<RuleBuilder> {
    vec![
        rule(&["create"]).groups(&[AUTHN]).resources(&["tokenreviews"]),
        rule(&["create"])
            .groups(&[AUTHZ])
            .resources(&["subjectaccessreviews", "localsubjectaccessreviews"]),
        rule(READ).groups(&[CORE]).resources(&["services"]),
        rule(&["create", "get", "list", "watch"])
            .groups(&[CORE])
            .resources(&["nodes"]),
        rule(&["update", "patch"])
            .groups(&[CORE])
            .resources(&["nodes/status"]),
        rule(&["update", "patch"]).groups(&[CORE]).resources(&["nodes"]),
        rule(&["create", "update", "patch"])
            .groups(&[CORE])
            .resources(&["events"]),
        rule(READ).groups(&[CORE]).resources(&["pods"]),
        rule(&["create", "delete"]).groups(&[CORE]).resources(&["pods"]),
        rule(&["update", "patch"])
            .groups(&[CORE])
            .resources(&["pods/status"]),
        rule(&["create"]).groups(&[CORE]).resources(&["pods/eviction"]),
        rule(READ).groups(&[CORE]).resources(&["secrets", "configmaps"]),
        rule(&["get"])
            .groups(&[CORE])
            .resources(&["persistentvolumeclaims", "persistentvolumes"]),
        rule(&["get"]).groups(&[CORE]).resources(&["endpoints"]),
        rule(&["create", "get", "list", "watch"])
            .groups(&[CERTIFICATES])
            .resources(&["certificatesigningrequests"]),
        rule(&["get", "create", "update", "patch", "delete"])
            .groups(&[COORDINATION])
            .resources(&["leases"]),
        rule(&["get"])
            .groups(&[STORAGE])
            .resources(&["volumeattachments"]),
        // The Node authorizer narrows this to pods on the node.
        rule(&["create"])
            .groups(&[CORE])
            .resources(&["serviceaccounts/token"]),
        rule(&["get", "update", "patch"])
            .groups(&[CORE])
            .resources(&["persistentvolumeclaims/status"]),
        rule(&["get", "watch", "list"])
            .groups(&[STORAGE])
            .resources(&["csidrivers"]),
        rule(&["get", "create", "update", "patch", "delete"])
            .groups(&[STORAGE])
            .resources(&["csinodes"]),
        rule(READ).groups(&[NODE]).resources(&["runtimeclasses"]),
    ]
}

fn aggregate_to_edit_rules() -> Vec<RuleBuilder> {
    vec![
        // Read on escalating resources.
        rule(READ).groups(&[CORE]).resources(&[
            "pods/attach",
            "pods/proxy",
            "pods/exec",
            "pods/portforward",
            "secrets",
            "services/proxy",
        ]),
        rule(&["impersonate"])
            .groups(&[CORE])
            .resources(&["serviceaccounts"]),
        rule(WRITE).groups(&[CORE]).resources(&[
            "pods",
            "pods/attach",
            "pods/proxy",
            "pods/exec",
            "pods/portforward",
        ]),
        rule(&["create"]).groups(&[CORE]).resources(&["pods/eviction"]),
        rule(WRITE).groups(&[CORE]).resources(&[
            "replicationcontrollers",
            "replicationcontrollers/scale",
            "serviceaccounts",
            "services",
            "services/proxy",
            "persistentvolumeclaims",
            "configmaps",
            "secrets",
            "events",
        ]),
        rule(&["create"])
            .groups(&[CORE])
            .resources(&["serviceaccounts/token"]),
        rule(WRITE).groups(&[APPS]).resources(&[
            "statefulsets",
            "statefulsets/scale",
            "daemonsets",
            "deployments",
            "deployments/scale",
            "deployments/rollback",
            "replicasets",
            "replicasets/scale",
        ]),
        rule(WRITE)
            .groups(&[AUTOSCALING])
            .resources(&["horizontalpodautoscalers"]),
        rule(WRITE).groups(&[BATCH]).resources(&["jobs", "cronjobs"]),
        rule(WRITE).groups(&[EXTENSIONS]).resources(&[
            "daemonsets",
            "deployments",
            "deployments/scale",
            "deployments/rollback",
            "ingresses",
            "replicasets",
            "replicasets/scale",
            "replicationcontrollers/scale",
            "networkpolicies",
        ]),
        rule(WRITE).groups(&[POLICY]).resources(&["poddisruptionbudgets"]),
        rule(WRITE)
            .groups(&[NETWORKING])
            .resources(&["networkpolicies", "ingresses"]),
        rule(READ_WRITE).groups(&[COORDINATION]).resources(&["leases"]),
    ]
}

fn aggregate_to_view_rules() -> Vec<RuleBuilder> {
    vec![
        // badge's own: who holds which token, and when each identity was last used.
        rule(READ)
            .groups(&[IDENTITY])
            .resources(&["issuedtokens", "serviceaccountusages", "tokenpolicies"]),
        rule(READ).groups(&[CORE]).resources(&[
            "pods",
            "replicationcontrollers",
            "replicationcontrollers/scale",
            "serviceaccounts",
            "services",
            "services/status",
            "endpoints",
            "persistentvolumeclaims",
            "persistentvolumeclaims/status",
            "configmaps",
        ]),
        rule(READ).groups(&[CORE]).resources(&[
            "limitranges",
            "resourcequotas",
            "bindings",
            "events",
            "pods/status",
            "resourcequotas/status",
            "namespaces/status",
            "replicationcontrollers/status",
            "pods/log",
        ]),
        // Reading namespaces at namespace scope means reading *this* namespace.
        rule(READ).groups(&[CORE]).resources(&["namespaces"]),
        rule(READ).groups(&[DISCOVERY]).resources(&["endpointslices"]),
        rule(READ).groups(&[APPS]).resources(&[
            "controllerrevisions",
            "statefulsets",
            "statefulsets/status",
            "statefulsets/scale",
            "daemonsets",
            "daemonsets/status",
            "deployments",
            "deployments/status",
            "deployments/scale",
            "replicasets",
            "replicasets/status",
            "replicasets/scale",
        ]),
        rule(READ)
            .groups(&[AUTOSCALING])
            .resources(&["horizontalpodautoscalers", "horizontalpodautoscalers/status"]),
        rule(READ)
            .groups(&[BATCH])
            .resources(&["jobs", "cronjobs", "cronjobs/status", "jobs/status"]),
        rule(READ).groups(&[EXTENSIONS]).resources(&[
            "daemonsets",
            "daemonsets/status",
            "deployments",
            "deployments/scale",
            "deployments/status",
            "ingresses",
            "ingresses/status",
            "replicasets",
            "replicasets/scale",
            "replicasets/status",
            "replicationcontrollers/scale",
            "networkpolicies",
        ]),
        rule(READ)
            .groups(&[POLICY])
            .resources(&["poddisruptionbudgets", "poddisruptionbudgets/status"]),
        rule(READ)
            .groups(&[NETWORKING])
            .resources(&["networkpolicies", "ingresses", "ingresses/status"]),
    ]
}

fn kube_controller_manager_rules() -> Vec<RuleBuilder> {
    vec![
        events_rule(),
        // Leader election.
        rule(&["create"]).groups(&[COORDINATION]).resources(&["leases"]),
        rule(&["get", "update"])
            .groups(&[COORDINATION])
            .resources(&["leases"])
            .names(&["kube-controller-manager"]),
        rule(&["create"])
            .groups(&[CORE])
            .resources(&["secrets", "serviceaccounts"]),
        rule(&["delete"]).groups(&[CORE]).resources(&["secrets"]),
        rule(&["get"])
            .groups(&[CORE])
            .resources(&["namespaces", "secrets", "serviceaccounts", "configmaps"]),
        rule(&["update"])
            .groups(&[CORE])
            .resources(&["secrets", "serviceaccounts"]),
        rule(&["create"]).groups(&[AUTHN]).resources(&["tokenreviews"]),
        rule(&["create"])
            .groups(&[AUTHZ])
            .resources(&["subjectaccessreviews"]),
        // Every shared informer.
        rule(&["list", "watch"]).groups(&[ALL]).resources(&[ALL]),
        rule(&["create"])
            .groups(&[CORE])
            .resources(&["serviceaccounts/token"]),
    ]
}

/// The `system:controller:*` roles of the controllers badge runs (clusterrole aggregation,
/// namespace deletion, root CA publishing, default ServiceAccounts, legacy token cleanup),
/// each bound to its ServiceAccount in kube-system.
fn controller_roles() -> Vec<ClusterRole> {
    vec![
        cluster_role(
            "system:controller:clusterrole-aggregation-controller",
            vec![
                rule(&["escalate", "get", "list", "watch", "update", "patch"])
                    .groups(&[RBAC_GROUP])
                    .resources(&["clusterroles"]),
            ],
        ),
        cluster_role(
            "system:controller:legacy-service-account-token-cleaner",
            vec![
                rule(&["get"])
                    .groups(&[CORE])
                    .resources(&["configmaps"])
                    .names(&["kube-apiserver-legacy-service-account-token-tracking"]),
                rule(&["patch", "delete"]).groups(&[CORE]).resources(&["secrets"]),
            ],
        ),
        cluster_role(
            "system:controller:namespace-controller",
            vec![
                rule(&["get", "list", "watch", "delete"])
                    .groups(&[CORE])
                    .resources(&["namespaces"]),
                rule(&["update"])
                    .groups(&[CORE])
                    .resources(&["namespaces/finalize", "namespaces/status"]),
                rule(&["get", "list", "watch", "delete", "deletecollection"])
                    .groups(&[ALL])
                    .resources(&[ALL]),
            ],
        ),
        cluster_role(
            "system:controller:root-ca-cert-publisher",
            vec![
                rule(&["create", "update"])
                    .groups(&[CORE])
                    .resources(&["configmaps"]),
                events_rule(),
            ],
        ),
        cluster_role(
            "system:controller:service-account-controller",
            vec![
                rule(&["create"]).groups(&[CORE]).resources(&["serviceaccounts"]),
                events_rule(),
            ],
        ),
    ]
}

/// The default ClusterRoles. `admin`, `edit` and `view` come with no rules: run
/// [`super::aggregate`] over all ClusterRoles to fill them.
pub fn default_cluster_roles() -> Vec<ClusterRole> {
    let mut roles = vec![
        cluster_role(
            "cluster-admin",
            vec![
                rule(&[ALL]).groups(&[ALL]).resources(&[ALL]),
                rule(&[ALL]).urls(&[ALL]),
            ],
        ),
        cluster_role(
            "system:discovery",
            vec![rule(&["get"]).urls(&[
                "/livez",
                "/readyz",
                "/healthz",
                "/version",
                "/version/",
                "/openapi",
                "/openapi/*",
                "/api",
                "/api/*",
                "/apis",
                "/apis/*",
            ])],
        ),
        cluster_role(
            "system:monitoring",
            vec![rule(&["get"]).urls(&[
                "/metrics",
                "/metrics/slis",
                "/livez",
                "/readyz",
                "/healthz",
                "/livez/*",
                "/readyz/*",
                "/healthz/*",
            ])],
        ),
        cluster_role(
            "system:basic-user",
            vec![
                rule(&["create"])
                    .groups(&[AUTHZ])
                    .resources(&["selfsubjectaccessreviews", "selfsubjectrulesreviews"]),
                rule(&["create"])
                    .groups(&[AUTHN])
                    .resources(&["selfsubjectreviews"]),
            ],
        ),
        cluster_role(
            "system:public-info-viewer",
            vec![rule(&["get"]).urls(&["/livez", "/readyz", "/healthz", "/version", "/version/"])],
        ),
        aggregated_cluster_role("admin", &[], AGGREGATE_TO_ADMIN),
        aggregated_cluster_role("edit", &[(AGGREGATE_TO_ADMIN, "true")], AGGREGATE_TO_EDIT),
        aggregated_cluster_role("view", &[(AGGREGATE_TO_EDIT, "true")], AGGREGATE_TO_VIEW),
        labelled_cluster_role(
            "system:aggregate-to-admin",
            AGGREGATE_TO_ADMIN,
            vec![
                rule(&["create"])
                    .groups(&[AUTHZ])
                    .resources(&["localsubjectaccessreviews"]),
                rule(READ_WRITE)
                    .groups(&[RBAC_GROUP])
                    .resources(&["roles", "rolebindings"]),
                // badge's own: revoking a token is an admin's act, not an editor's.
                rule(&["update", "patch"])
                    .groups(&[IDENTITY])
                    .resources(&["issuedtokens"]),
                // Token issuance policy is an admin's, as RBAC is.
                rule(READ_WRITE).groups(&[IDENTITY]).resources(&["tokenpolicies"]),
            ],
        ),
        labelled_cluster_role(
            "system:aggregate-to-edit",
            AGGREGATE_TO_EDIT,
            aggregate_to_edit_rules(),
        ),
        labelled_cluster_role(
            "system:aggregate-to-view",
            AGGREGATE_TO_VIEW,
            aggregate_to_view_rules(),
        ),
        cluster_role("system:node", node_rules()),
        cluster_role(
            "system:auth-delegator",
            vec![
                rule(&["create"]).groups(&[AUTHN]).resources(&["tokenreviews"]),
                rule(&["create"])
                    .groups(&[AUTHZ])
                    .resources(&["subjectaccessreviews"]),
            ],
        ),
        cluster_role("system:kube-controller-manager", kube_controller_manager_rules()),
        cluster_role(
            "system:node-bootstrapper",
            vec![
                rule(&["create", "get", "list", "watch"])
                    .groups(&[CERTIFICATES])
                    .resources(&["certificatesigningrequests"]),
            ],
        ),
        cluster_role(
            NODE_CLIENT_APPROVER,
            vec![
                rule(&["create"])
                    .groups(&[CERTIFICATES])
                    .resources(&["certificatesigningrequests/nodeclient"]),
            ],
        ),
        cluster_role(
            "system:certificates.k8s.io:kube-apiserver-client-approver",
            vec![
                rule(&["approve"])
                    .groups(&[CERTIFICATES])
                    .resources(&["signers"])
                    .names(&["kubernetes.io/kube-apiserver-client"]),
            ],
        ),
        cluster_role(
            "system:certificates.k8s.io:kube-apiserver-client-kubelet-approver",
            vec![
                rule(&["approve"])
                    .groups(&[CERTIFICATES])
                    .resources(&["signers"])
                    .names(&["kubernetes.io/kube-apiserver-client-kubelet"]),
            ],
        ),
        cluster_role(
            SELF_NODE_CLIENT_APPROVER,
            vec![
                rule(&["create"])
                    .groups(&[CERTIFICATES])
                    .resources(&["certificatesigningrequests/selfnodeclient"]),
            ],
        ),
        cluster_role(
            "system:service-account-issuer-discovery",
            vec![rule(&["get"]).urls(&[
                "/.well-known/openid-configuration",
                "/.well-known/openid-configuration/",
                "/openid/v1/jwks",
                "/openid/v1/jwks/",
                "/openid/v1/revocations",
                "/openid/v1/revocations/",
            ])],
        ),
    ];
    roles.extend(controller_roles());
    roles
}

fn group(name: &str) -> Subject {
    Subject {
        api_group: Some(RBAC_GROUP.into()),
        kind: "Group".into(),
        name: name.into(),
        namespace: None,
    }
}

fn user(name: &str) -> Subject {
    Subject {
        api_group: Some(RBAC_GROUP.into()),
        kind: "User".into(),
        name: name.into(),
        namespace: None,
    }
}

fn service_account(namespace: &str, name: &str) -> Subject {
    Subject {
        api_group: None,
        kind: "ServiceAccount".into(),
        name: name.into(),
        namespace: Some(namespace.into()),
    }
}

fn role_ref(kind: &str, name: &str) -> RoleRef {
    RoleRef {
        api_group: RBAC_GROUP.into(),
        kind: kind.into(),
        name: name.into(),
    }
}

fn cluster_binding(name: &str, subjects: Vec<Subject>) -> ClusterRoleBinding {
    cluster_binding_to(name, name, subjects)
}

fn cluster_binding_to(name: &str, role: &str, subjects: Vec<Subject>) -> ClusterRoleBinding {
    ClusterRoleBinding {
        metadata: default_meta(name, None, &[]),
        role_ref: role_ref("ClusterRole", role),
        subjects: (!subjects.is_empty()).then_some(subjects),
    }
}

/// The roles the CSR approver checks (`create certificatesigningrequests/nodeclient` and
/// `.../selfnodeclient`).
pub const NODE_CLIENT_APPROVER: &str = "system:certificates.k8s.io:certificatesigningrequests:nodeclient";
/// The role whose holders may have their own node client certificate renewed.
pub const SELF_NODE_CLIENT_APPROVER: &str =
    "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient";

/// The default ClusterRoleBindings, including the controllers' and `system:node` with no
/// subjects (the Node authorizer serves nodes; the empty binding lets reconciliation keep
/// it empty).
/// The user of the client certificate a kube-apiserver's webhooks present.
pub const KUBE_APISERVER_WEBHOOK_USER: &str = "system:kube-apiserver-webhook";

/// The default ClusterRoleBindings.
pub fn default_cluster_role_bindings() -> Vec<ClusterRoleBinding> {
    let mut bindings = vec![
        cluster_binding("cluster-admin", vec![group("system:masters")]),
        cluster_binding("system:monitoring", vec![group("system:monitoring")]),
        cluster_binding("system:discovery", vec![group("system:authenticated")]),
        cluster_binding("system:basic-user", vec![group("system:authenticated")]),
        cluster_binding(
            "system:public-info-viewer",
            vec![group("system:authenticated"), group("system:unauthenticated")],
        ),
        cluster_binding(
            "system:kube-controller-manager",
            vec![user("system:kube-controller-manager")],
        ),
        cluster_binding("system:node", vec![]),
        // The client certificate `badge webhook-config` issues a kube-apiserver, whose token
        // and authorization webhooks create reviews here.
        cluster_binding_to(
            "badge:kube-apiserver-webhook",
            "system:auth-delegator",
            vec![user(KUBE_APISERVER_WEBHOOK_USER)],
        ),
        // kubeadm's: bootstrap token users may request node client certificates, which are
        // approved for them, and nodes' renewals of their own are approved.
        cluster_binding_to(
            "kubeadm:kubelet-bootstrap",
            "system:node-bootstrapper",
            vec![group("system:bootstrappers")],
        ),
        cluster_binding_to(
            "kubeadm:node-autoapprove-bootstrap",
            NODE_CLIENT_APPROVER,
            vec![group("system:bootstrappers")],
        ),
        cluster_binding_to(
            "kubeadm:node-autoapprove-certificate-rotation",
            SELF_NODE_CLIENT_APPROVER,
            vec![group("system:nodes")],
        ),
        cluster_binding(
            "system:service-account-issuer-discovery",
            vec![group("system:serviceaccounts")],
        ),
    ];
    for role in controller_roles() {
        let name = role.metadata.name.unwrap_or_default();
        let sa = name.trim_start_matches("system:controller:").to_string();
        bindings.push(cluster_binding(&name, vec![service_account("kube-system", &sa)]));
    }
    bindings
}

fn namespaced_role(namespace: &str, name: &str, rule_list: Vec<RuleBuilder>) -> (String, Role) {
    (
        namespace.into(),
        Role {
            metadata: default_meta(name, Some(namespace), &[]),
            rules: Some(rules(rule_list)),
        },
    )
}

/// The default Roles, with their namespaces (`namespace_policy.go`).
pub fn default_roles() -> Vec<(String, Role)> {
    vec![
        namespaced_role(
            "kube-system",
            "extension-apiserver-authentication-reader",
            vec![
                rule(READ)
                    .groups(&[CORE])
                    .resources(&["configmaps"])
                    .names(&["extension-apiserver-authentication"]),
            ],
        ),
        namespaced_role(
            "kube-system",
            "system::leader-locking-kube-controller-manager",
            vec![
                rule(&["watch", "get", "list", "create", "update"])
                    .groups(&[COORDINATION])
                    .resources(&["leases"]),
                rule(&["watch", "get", "list", "create", "update"])
                    .groups(&[COORDINATION])
                    .resources(&["leasecandidates"]),
            ],
        ),
        namespaced_role(
            "kube-system",
            "system:controller:bootstrap-signer",
            vec![rule(READ).groups(&[CORE]).resources(&["secrets"])],
        ),
        namespaced_role(
            "kube-system",
            "system:controller:token-cleaner",
            vec![
                rule(&["delete", "get", "list", "watch"])
                    .groups(&[CORE])
                    .resources(&["secrets"]),
                events_rule(),
            ],
        ),
        namespaced_role(
            "kube-public",
            "system:controller:bootstrap-signer",
            vec![
                rule(READ).groups(&[CORE]).resources(&["configmaps"]),
                rule(&["update"])
                    .groups(&[CORE])
                    .resources(&["configmaps"])
                    .names(&["cluster-info"]),
                events_rule(),
            ],
        ),
    ]
}

fn role_binding(namespace: &str, name: &str, role: &str, subjects: Vec<Subject>) -> (String, RoleBinding) {
    (
        namespace.into(),
        RoleBinding {
            metadata: default_meta(name, Some(namespace), &[]),
            role_ref: role_ref("Role", role),
            subjects: Some(subjects),
        },
    )
}

/// The default RoleBindings, with their namespaces.
pub fn default_role_bindings() -> Vec<(String, RoleBinding)> {
    vec![
        role_binding(
            "kube-system",
            "system::extension-apiserver-authentication-reader",
            "extension-apiserver-authentication-reader",
            vec![
                user("system:kube-controller-manager"),
                user("system:kube-scheduler"),
            ],
        ),
        role_binding(
            "kube-system",
            "system::leader-locking-kube-controller-manager",
            "system::leader-locking-kube-controller-manager",
            vec![
                user("system:kube-controller-manager"),
                service_account("kube-system", "kube-controller-manager"),
                service_account("kube-system", "leader-election-controller"),
            ],
        ),
        role_binding(
            "kube-system",
            "system:controller:bootstrap-signer",
            "system:controller:bootstrap-signer",
            vec![service_account("kube-system", "bootstrap-signer")],
        ),
        role_binding(
            "kube-system",
            "system:controller:token-cleaner",
            "system:controller:token-cleaner",
            vec![service_account("kube-system", "token-cleaner")],
        ),
        role_binding(
            "kube-public",
            "system:controller:bootstrap-signer",
            "system:controller:bootstrap-signer",
            vec![service_account("kube-system", "bootstrap-signer")],
        ),
    ]
}

/// Whether reconciliation must leave the object alone (`autoupdate: "false"`).
fn protected(meta: &ObjectMeta) -> bool {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(AUTOUPDATE_ANNOTATION))
        .is_some_and(|v| v == "false")
}

/// Adds the expected labels and annotations the object lacks; its own values win.
fn merge_metadata(meta: &mut ObjectMeta, expected: &ObjectMeta) -> bool {
    let mut changed = false;
    for (field, wanted) in [
        (&mut meta.labels, &expected.labels),
        (&mut meta.annotations, &expected.annotations),
    ] {
        for (k, v) in wanted.iter().flatten() {
            let have = field.get_or_insert_with(BTreeMap::new);
            if !have.contains_key(k) {
                have.insert(k.clone(), v.clone());
                changed = true;
            }
        }
    }
    changed
}

/// Appends the expected rules the object does not cover, as the atoms `covers` reports;
/// extra rules stay (union mode, as kube-apiserver reconciles at start).
fn merge_rules(have: &mut Option<Vec<PolicyRule>>, expected: &Option<Vec<PolicyRule>>) -> bool {
    let (_, missing) = covers(list_rules(have), list_rules(expected));
    if missing.is_empty() {
        return false;
    }
    have.get_or_insert_with(Vec::new).extend(missing);
    true
}

fn list_rules(rules: &Option<Vec<PolicyRule>>) -> &[PolicyRule] {
    rules.as_deref().unwrap_or_default()
}

fn selector_eq(a: &LabelSelector, b: &LabelSelector) -> bool {
    let empty = BTreeMap::new();
    a.match_labels.as_ref().unwrap_or(&empty) == b.match_labels.as_ref().unwrap_or(&empty)
        && a.match_expressions.as_deref().unwrap_or_default()
            == b.match_expressions.as_deref().unwrap_or_default()
}

/// What reconciling a default ClusterRole against the stored one needs: None when nothing
/// (it is up to date, or annotated `autoupdate: "false"`), else the object to create
/// (nothing stored) or to write back. Missing labels, annotations, rules and aggregation
/// selectors are added; what users added is kept; an aggregationRule the default lacks is
/// removed.
pub fn reconcile(existing: Option<&ClusterRole>, default: &ClusterRole) -> Option<ClusterRole> {
    let Some(existing) = existing else {
        return Some(default.clone());
    };
    if protected(&existing.metadata) {
        return None;
    }
    let mut role = existing.clone();
    let mut changed = merge_metadata(&mut role.metadata, &default.metadata);
    changed |= merge_rules(&mut role.rules, &default.rules);
    match (&default.aggregation_rule, &mut role.aggregation_rule) {
        (None, current @ Some(_)) => {
            *current = None;
            changed = true;
        }
        (Some(wanted), current) => {
            let wanted = wanted.cluster_role_selectors.as_deref().unwrap_or_default();
            let have: Vec<LabelSelector> = current
                .as_ref()
                .and_then(|r| r.cluster_role_selectors.clone())
                .unwrap_or_default();
            let missing: Vec<LabelSelector> = wanted
                .iter()
                .filter(|w| !have.iter().any(|h| selector_eq(h, w)))
                .cloned()
                .collect();
            if !missing.is_empty() {
                current
                    .get_or_insert_with(Default::default)
                    .cluster_role_selectors
                    .get_or_insert_with(Vec::new)
                    .extend(missing);
                changed = true;
            }
        }
        (None, None) => {}
    }
    changed.then_some(role)
}

/// [`reconcile`] for a namespaced Role.
pub fn reconcile_role(existing: Option<&Role>, default: &Role) -> Option<Role> {
    let Some(existing) = existing else {
        return Some(default.clone());
    };
    if protected(&existing.metadata) {
        return None;
    }
    let mut role = existing.clone();
    let mut changed = merge_metadata(&mut role.metadata, &default.metadata);
    changed |= merge_rules(&mut role.rules, &default.rules);
    changed.then_some(role)
}

/// What reconciling a default binding needs.
#[derive(Clone, Debug, PartialEq)]
pub enum BindingChange<T> {
    /// Nothing is stored: create this.
    Create(T),
    /// Write this back (labels, annotations or subjects were missing).
    Update(T),
    /// The roleRef differs and cannot be changed: delete the stored one, create this.
    Recreate(T),
}

/// Go struct equality, reading a missing apiGroup or namespace as empty.
fn subject_eq(a: &Subject, b: &Subject) -> bool {
    a.kind == b.kind
        && a.name == b.name
        && a.api_group.as_deref().unwrap_or_default() == b.api_group.as_deref().unwrap_or_default()
        && a.namespace.as_deref().unwrap_or_default() == b.namespace.as_deref().unwrap_or_default()
}

fn subjects_merge(have: &mut Option<Vec<Subject>>, expected: &Option<Vec<Subject>>) -> bool {
    let mut changed = false;
    for s in expected.iter().flatten() {
        let list = have.get_or_insert_with(Vec::new);
        if !list.iter().any(|h| subject_eq(h, s)) {
            list.push(s.clone());
            changed = true;
        }
    }
    changed
}

/// Reconciles a default ClusterRoleBinding in union mode: subjects users added stay.
pub fn reconcile_cluster_role_binding(
    existing: Option<&ClusterRoleBinding>,
    default: &ClusterRoleBinding,
) -> Option<BindingChange<ClusterRoleBinding>> {
    let Some(existing) = existing else {
        return Some(BindingChange::Create(default.clone()));
    };
    if protected(&existing.metadata) {
        return None;
    }
    if existing.role_ref != default.role_ref {
        return Some(BindingChange::Recreate(default.clone()));
    }
    let mut binding = existing.clone();
    let mut changed = merge_metadata(&mut binding.metadata, &default.metadata);
    changed |= subjects_merge(&mut binding.subjects, &default.subjects);
    changed.then_some(BindingChange::Update(binding))
}

/// [`reconcile_cluster_role_binding`] for a RoleBinding.
pub fn reconcile_role_binding(
    existing: Option<&RoleBinding>,
    default: &RoleBinding,
) -> Option<BindingChange<RoleBinding>> {
    let Some(existing) = existing else {
        return Some(BindingChange::Create(default.clone()));
    };
    if protected(&existing.metadata) {
        return None;
    }
    if existing.role_ref != default.role_ref {
        return Some(BindingChange::Recreate(default.clone()));
    }
    let mut binding = existing.clone();
    let mut changed = merge_metadata(&mut binding.metadata, &default.metadata);
    changed |= subjects_merge(&mut binding.subjects, &default.subjects);
    changed.then_some(BindingChange::Update(binding))
}
