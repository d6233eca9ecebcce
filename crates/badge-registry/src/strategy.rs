//! Per-resource rules, as upstream's `rest.RESTCreateStrategy`/`RESTUpdateStrategy`/
//! `RESTDeleteStrategy`: defaults on create, what an update may not change, validation,
//! warnings, the admission the API server runs, selectable fields, what deletion does and
//! the columns `kubectl get` shows.
//! [`of`] is the one place that says which resource has which rules.

use crate::printers::{self, Printer};
use badge_api::meta;
use badge_api::resources::{self, Resource};
use badge_api::status::FieldError;
use badge_api::validation::{NameRule, config_key_errors};
use base64::Engine;
use serde_json::{Map, Value};

/// The Secret types upstream knows, with the keys each requires.
const SECRET_TYPES: &[&str] = &[
    "Opaque",
    "kubernetes.io/service-account-token",
    "kubernetes.io/dockercfg",
    "kubernetes.io/dockerconfigjson",
    "kubernetes.io/basic-auth",
    "kubernetes.io/ssh-auth",
    "kubernetes.io/tls",
    "bootstrap.kubernetes.io/token",
];

/// The largest total size of a Secret's or ConfigMap's data (`MaxSecretSize`).
pub const MAX_DATA_SIZE: usize = 1024 * 1024;

/// The admission the API server runs on a write of a resource, besides RBAC's escalation
/// checks (which every RBAC resource gets).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// No admission besides RBAC's.
    None,
    /// ServiceAccount admission on create (`plugin/pkg/admission/serviceaccount`): the
    /// pod's ServiceAccount, its token volume and pull secrets.
    ServiceAccount,
    /// The requestor is the requesting user, and the signer's rules apply
    /// (`plugin/pkg/admission/certificates`).
    CertificateSigning,
}

/// What a delete does to an object without finalizers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deletion {
    /// Removed at once; the answer is a Success Status.
    Immediate,
    /// Marked with a grace period first when bound to a node (pods), and answered with the
    /// object, as upstream's pod store does.
    Graceful,
    /// Kept, terminating, until `spec.finalizers` empties (namespaces).
    Finalized,
}

/// The rules of one resource.
pub struct Strategy {
    /// Fills defaults on create (after metadata is set).
    pub prepare_create: fn(&mut Value),
    /// Carries over on an update through a subresource ("" for the object itself) what
    /// that update may not change.
    pub prepare_update: fn(&str, &mut Value, &Value),
    /// Validates a create (`old` None) or an update through a subresource.
    pub validate: fn(&str, &Value, Option<&Value>, &mut Vec<FieldError>),
    /// `WarningsOnCreate`/`WarningsOnUpdate`: `old` is the stored object on an update.
    pub warnings: fn(&Value, Option<&Value>) -> Vec<String>,
    /// The value of a selectable field beyond `metadata.name` and `metadata.namespace`.
    pub field_value: fn(&Value, &str) -> Option<String>,
    /// The admission a write of the resource passes through.
    pub admission: Admission,
    /// What a delete does to the resource's objects.
    pub deletion: Deletion,
    /// The columns of the resource's Tables and how an object fills them.
    pub printer: &'static Printer,
}

/// The rules of a resource without rules of its own.
const PLAIN: Strategy = Strategy {
    prepare_create: |_| {},
    prepare_update: plain_update,
    validate: |_, _, _, _| {},
    warnings: |_, _| Vec::new(),
    field_value: |_, _| None,
    admission: Admission::None,
    deletion: Deletion::Immediate,
    printer: &printers::DEFAULT,
};

static CONFIGMAPS: Strategy = Strategy {
    validate: |_, object, old, errs| validate_configmap(object, old, errs),
    printer: &printers::CONFIGMAPS,
    ..PLAIN
};

static EVENTS: Strategy = Strategy {
    field_value: event_field,
    printer: &printers::EVENTS,
    ..PLAIN
};

static NAMESPACES: Strategy = Strategy {
    prepare_create: |object| {
        set_default(object, &["spec", "finalizers"], serde_json::json!(["kubernetes"]));
        set_path(object, &["status", "phase"], Value::String("Active".into()));
    },
    prepare_update: namespace_update,
    field_value: |object, field| match field {
        "status.phase" => Some(string_at(object, "/status/phase")),
        _ => None,
    },
    deletion: Deletion::Finalized,
    printer: &printers::NAMESPACES,
    ..PLAIN
};

static PODS: Strategy = Strategy {
    prepare_create: |object| {
        set_default(object, &["spec", "restartPolicy"], "Always".into());
        set_default(object, &["spec", "dnsPolicy"], "ClusterFirst".into());
        set_default(object, &["spec", "terminationGracePeriodSeconds"], 30.into());
        set_default(object, &["spec", "schedulerName"], "default-scheduler".into());
        set_default(object, &["spec", "enableServiceLinks"], true.into());
        set_default(object, &["spec", "securityContext"], serde_json::json!({}));
        if object.pointer("/status/phase").is_none() {
            set_path(object, &["status", "phase"], "Pending".into());
            set_path(object, &["status", "qosClass"], "BestEffort".into());
        }
    },
    prepare_update: |subresource, object, old| {
        if !carry_over_subresource(subresource, object, old)
            && let Some(status) = old.get("status")
        {
            set_path(object, &["status"], status.clone());
        }
    },
    validate: |_, object, old, errs| validate_pod(object, old, errs),
    field_value: |object, field| match field {
        "spec.nodeName" => Some(string_at(object, "/spec/nodeName")),
        "spec.serviceAccountName" => Some(string_at(object, "/spec/serviceAccountName")),
        "spec.restartPolicy" => Some(string_at(object, "/spec/restartPolicy")),
        "spec.schedulerName" => Some(string_at(object, "/spec/schedulerName")),
        "status.phase" => Some(string_at(object, "/status/phase")),
        "status.podIP" => Some(string_at(object, "/status/podIP")),
        "status.nominatedNodeName" => Some(string_at(object, "/status/nominatedNodeName")),
        _ => None,
    },
    admission: Admission::ServiceAccount,
    deletion: Deletion::Graceful,
    printer: &printers::PODS,
    ..PLAIN
};

static SECRETS: Strategy = Strategy {
    prepare_create: |object| {
        fold_string_data(object);
        set_default(object, &["type"], Value::String("Opaque".into()));
    },
    prepare_update: |subresource, object, old| {
        if carry_over_subresource(subresource, object, old) {
            return;
        }
        fold_string_data(object);
        set_default(
            object,
            &["type"],
            old.get("type").cloned().unwrap_or_else(|| "Opaque".into()),
        );
    },
    validate: |_, object, old, errs| validate_secret(object, old, errs),
    field_value: |object, field| match field {
        "type" => Some(string_at(object, "/type")),
        _ => None,
    },
    printer: &printers::SECRETS,
    ..PLAIN
};

static SERVICEACCOUNTS: Strategy = Strategy {
    warnings: crate::admission::enforce_mountable_secrets_warnings,
    printer: &printers::SERVICEACCOUNTS,
    ..PLAIN
};

static CERTIFICATESIGNINGREQUESTS: Strategy = Strategy {
    prepare_create: crate::csr::prepare_create,
    prepare_update: crate::csr::prepare_update,
    validate: |subresource, object, old, errs| crate::csr::validate(object, old, subresource, errs),
    field_value: |object, field| match field {
        "spec.signerName" => Some(string_at(object, "/spec/signerName")),
        _ => None,
    },
    admission: Admission::CertificateSigning,
    printer: &printers::CERTIFICATESIGNINGREQUESTS,
    ..PLAIN
};

static ISSUEDTOKENS: Strategy = Strategy {
    // Usage is the servers' to record; a client's copy of it is ignored, as upstream
    // ignores status in a plain update of a kind with a status subresource.
    prepare_update: |subresource, object, old| {
        if carry_over_subresource(subresource, object, old) {
            return;
        }
        match (old.get("status"), object.as_object_mut()) {
            (Some(status), _) => set_path(object, &["status"], status.clone()),
            (None, Some(map)) => {
                map.remove("status");
            }
            (None, None) => {}
        }
    },
    validate: |subresource, object, old, errs| {
        if subresource.is_empty() {
            validate_issued_token(object, old, errs);
        }
    },
    field_value: |object, field| match field {
        "spec.serviceAccountName" => Some(string_at(object, "/spec/serviceAccountName")),
        _ => None,
    },
    printer: &printers::ISSUEDTOKENS,
    ..PLAIN
};

static TOKENPOLICIES: Strategy = Strategy {
    validate: |_, object, _, errs| errs.extend(badge_api::tokenpolicy::validate(object)),
    printer: &printers::TOKENPOLICIES,
    ..PLAIN
};

static ROLES: Strategy = Strategy {
    validate: |_, object, _, errs| validate_rules(object, true, errs),
    ..PLAIN
};

static CLUSTERROLES: Strategy = Strategy {
    validate: |_, object, _, errs| validate_rules(object, false, errs),
    ..PLAIN
};

static ROLEBINDINGS: Strategy = Strategy {
    validate: |_, object, old, errs| validate_binding(object, old, true, errs),
    printer: &printers::BINDINGS,
    ..PLAIN
};

static CLUSTERROLEBINDINGS: Strategy = Strategy {
    validate: |_, object, old, errs| validate_binding(object, old, false, errs),
    printer: &printers::BINDINGS,
    ..PLAIN
};

static NODES: Strategy = Strategy {
    printer: &printers::NODES,
    ..PLAIN
};

static LEASES: Strategy = Strategy {
    printer: &printers::LEASES,
    ..PLAIN
};

static SERVICEACCOUNTUSAGES: Strategy = Strategy {
    printer: &printers::SERVICEACCOUNTUSAGES,
    ..PLAIN
};

static PLAIN_STRATEGY: Strategy = PLAIN;

/// The rules of `resource`.
pub fn of(resource: &Resource) -> &'static Strategy {
    let with_rules: [(&Resource, &'static Strategy); 16] = [
        (resources::CONFIGMAPS, &CONFIGMAPS),
        (resources::EVENTS, &EVENTS),
        (resources::NAMESPACES, &NAMESPACES),
        (resources::NODES, &NODES),
        (resources::PODS, &PODS),
        (resources::SECRETS, &SECRETS),
        (resources::SERVICEACCOUNTS, &SERVICEACCOUNTS),
        (resources::CERTIFICATESIGNINGREQUESTS, &CERTIFICATESIGNINGREQUESTS),
        (resources::ISSUEDTOKENS, &ISSUEDTOKENS),
        (resources::SERVICEACCOUNTUSAGES, &SERVICEACCOUNTUSAGES),
        (resources::LEASES, &LEASES),
        (resources::TOKENPOLICIES, &TOKENPOLICIES),
        (resources::ROLES, &ROLES),
        (resources::CLUSTERROLES, &CLUSTERROLES),
        (resources::ROLEBINDINGS, &ROLEBINDINGS),
        (resources::CLUSTERROLEBINDINGS, &CLUSTERROLEBINDINGS),
    ];
    with_rules
        .into_iter()
        .find(|(r, _)| r.group == resource.group && r.plural == resource.plural)
        .map_or(&PLAIN_STRATEGY, |(_, strategy)| strategy)
}

/// Fills defaults on create (after metadata is set).
pub fn prepare_create(resource: &Resource, object: &mut Value) {
    (of(resource).prepare_create)(object);
}

/// Carries over on update what this kind of update may not change: a plain update keeps
/// the status of kinds with a status subresource; `status` keeps everything but status;
/// `finalize` (namespaces) keeps everything but `spec.finalizers`.
pub fn prepare_update(resource: &Resource, subresource: &str, object: &mut Value, old: &Value) {
    (of(resource).prepare_update)(subresource, object, old);
}

/// Validates an object for create (`old` None) or update.
pub fn validate(resource: &Resource, object: &Value, old: Option<&Value>) -> Vec<FieldError> {
    validate_update_of(resource, "", object, old)
}

/// Validates an object for create or for an update through `subresource` ("" for the
/// object itself): some kinds allow different changes through each.
pub fn validate_update_of(
    resource: &Resource,
    subresource: &str,
    object: &Value,
    old: Option<&Value>,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    (of(resource).validate)(subresource, object, old, &mut errs);
    errs
}

/// The update of a kind with no rules of its own: only the subresources' carry-over.
fn plain_update(subresource: &str, object: &mut Value, old: &Value) {
    carry_over_subresource(subresource, object, old);
}

/// `status` keeps everything but status; `finalize` keeps everything but
/// `spec.finalizers`. Whether the update was through one of them.
fn carry_over_subresource(subresource: &str, object: &mut Value, old: &Value) -> bool {
    match subresource {
        "status" => {
            let status = object.get("status").cloned();
            *object = old.clone();
            if let Some(status) = status {
                set_path(object, &["status"], status);
            }
            true
        }
        "finalize" => {
            let finalizers = object.pointer("/spec/finalizers").cloned();
            *object = old.clone();
            match finalizers {
                Some(f) => set_path(object, &["spec", "finalizers"], f),
                None => {
                    if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
                        spec.remove("finalizers");
                    }
                }
            }
            true
        }
        _ => false,
    }
}

fn namespace_update(subresource: &str, object: &mut Value, old: &Value) {
    if carry_over_subresource(subresource, object, old) {
        return;
    }
    // Phase is the server's; spec.finalizers change only through /finalize.
    if let Some(status) = old.get("status") {
        set_path(object, &["status"], status.clone());
    }
    if let Some(f) = old.pointer("/spec/finalizers") {
        set_path(object, &["spec", "finalizers"], f.clone());
    } else if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
        spec.remove("finalizers");
    }
}

/// An IssuedToken records what was issued: a client may change `spec.revoked` and its own
/// labels and annotations, never what the token says nor the labels that select it.
fn validate_issued_token(object: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
    let Some(old) = old else { return };
    let empty = Map::new();
    let spec_of = |o: &Value| {
        o.get("spec")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default()
    };
    let (new_spec, old_spec) = (spec_of(object), spec_of(old));
    let mut fields: Vec<&String> = new_spec.keys().chain(old_spec.keys()).collect();
    fields.sort();
    fields.dedup();
    for field in fields {
        if field == "revoked" {
            continue;
        }
        let new = new_spec.get(field);
        if new != old_spec.get(field) {
            errs.push(FieldError::invalid(
                format!("spec.{field}"),
                new.cloned().unwrap_or(Value::Null),
                "field is immutable",
            ));
        }
    }
    if let Some(revoked) = new_spec.get("revoked")
        && !revoked.is_boolean()
        && !revoked.is_null()
    {
        errs.push(FieldError::invalid(
            "spec.revoked",
            revoked.clone(),
            "must be a boolean",
        ));
    }
    let labels_of = |o: &Value| o.pointer("/metadata/labels").and_then(Value::as_object).cloned();
    let (new_labels, old_labels) = (labels_of(object), labels_of(old));
    for label in [
        badge_api::identity::SERVICE_ACCOUNT_LABEL,
        badge_api::identity::TOKEN_KIND_LABEL,
    ] {
        let new = new_labels.as_ref().unwrap_or(&empty).get(label);
        if new != old_labels.as_ref().unwrap_or(&empty).get(label) {
            errs.push(FieldError::invalid(
                format!("metadata.labels[{label}]"),
                new.cloned().unwrap_or(Value::Null),
                "field is immutable",
            ));
        }
    }
}

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

fn strings(value: Option<&Value>) -> Vec<&str> {
    value
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// `ValidatePolicyRule` for every rule of a Role or ClusterRole.
fn validate_rules(object: &Value, namespaced: bool, errs: &mut Vec<FieldError>) {
    let Some(rules) = object.get("rules").and_then(Value::as_array) else {
        return;
    };
    for (i, rule) in rules.iter().enumerate() {
        let field = |f: &str| format!("rules[{i}].{f}");
        if strings(rule.get("verbs")).is_empty() {
            errs.push(FieldError::required(
                field("verbs"),
                "verbs must contain at least one value",
            ));
        }
        let urls = strings(rule.get("nonResourceURLs"));
        if !urls.is_empty() {
            if namespaced {
                errs.push(FieldError::invalid(
                    field("nonResourceURLs"),
                    rule["nonResourceURLs"].clone(),
                    "namespaced rules cannot apply to non-resource URLs",
                ));
            }
            if !strings(rule.get("apiGroups")).is_empty() || !strings(rule.get("resources")).is_empty() {
                errs.push(FieldError::invalid(
                    field("nonResourceURLs"),
                    rule["nonResourceURLs"].clone(),
                    "rules cannot apply to both regular resources and non-resource URLs",
                ));
            }
            continue;
        }
        if strings(rule.get("apiGroups")).is_empty()
            && rule.get("apiGroups").and_then(Value::as_array).is_none()
        {
            errs.push(FieldError::required(
                field("apiGroups"),
                "resource rules must supply at least one api group",
            ));
        }
        if strings(rule.get("resources")).is_empty() {
            errs.push(FieldError::required(
                field("resources"),
                "resource rules must supply at least one resource",
            ));
        }
    }
}

/// `ValidateRoleBinding` / `ValidateClusterRoleBinding`, and `roleRef` immutability.
fn validate_binding(object: &Value, old: Option<&Value>, namespaced: bool, errs: &mut Vec<FieldError>) {
    let role_ref = object.get("roleRef").cloned().unwrap_or(Value::Null);
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let group = s(&role_ref, "apiGroup");
    if group != RBAC_GROUP {
        errs.push(FieldError::not_supported(
            "roleRef.apiGroup",
            group,
            &[RBAC_GROUP],
        ));
    }
    let kind = s(&role_ref, "kind");
    let kinds: &[&str] = if namespaced {
        &["Role", "ClusterRole"]
    } else {
        &["ClusterRole"]
    };
    if !kinds.contains(&kind.as_str()) {
        errs.push(FieldError::not_supported("roleRef.kind", kind, kinds));
    }
    let name = s(&role_ref, "name");
    if name.is_empty() {
        errs.push(FieldError::required("roleRef.name", ""));
    } else {
        for m in NameRule::PathSegment.errors(&name) {
            errs.push(FieldError::invalid("roleRef.name", name.as_str(), m));
        }
    }
    if let Some(subjects) = object.get("subjects").and_then(Value::as_array) {
        for (i, subject) in subjects.iter().enumerate() {
            let field = |f: &str| format!("subjects[{i}].{f}");
            let name = s(subject, "name");
            if name.is_empty() {
                errs.push(FieldError::required(field("name"), ""));
            }
            let api_group = s(subject, "apiGroup");
            match s(subject, "kind").as_str() {
                "ServiceAccount" => {
                    if !api_group.is_empty() {
                        errs.push(FieldError::not_supported(field("apiGroup"), api_group, &[""]));
                    }
                    if !name.is_empty() {
                        for m in badge_api::validation::dns1123_subdomain_errors(&name) {
                            errs.push(FieldError::invalid(field("name"), name.as_str(), m));
                        }
                    }
                    if !namespaced && s(subject, "namespace").is_empty() {
                        errs.push(FieldError::required(field("namespace"), ""));
                    }
                }
                "User" | "Group" => {
                    if api_group != RBAC_GROUP {
                        errs.push(FieldError::not_supported(
                            field("apiGroup"),
                            api_group,
                            &[RBAC_GROUP],
                        ));
                    }
                }
                other => errs.push(FieldError::not_supported(
                    field("kind"),
                    other,
                    &["ServiceAccount", "User", "Group"],
                )),
            }
        }
    }
    if let Some(old) = old
        && old.get("roleRef") != object.get("roleRef")
    {
        errs.push(FieldError::invalid("roleRef", role_ref, "cannot change roleRef"));
    }
}

/// The name rule of a resource.
pub fn name_rule(resource: &str) -> NameRule {
    NameRule::for_resource(resource)
}

/// The value of a selectable field, for field selectors; None when the field is not
/// selectable for the resource.
pub fn field_value(resource: &Resource, object: &Value, field: &str) -> Option<String> {
    match field {
        "metadata.name" => Some(meta::name(object).to_string()),
        "metadata.namespace" => Some(meta::namespace(object).to_string()),
        _ => (of(resource).field_value)(object, field),
    }
}

fn string_at(object: &Value, pointer: &str) -> String {
    object
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// The selectable fields of an Event (`EventToSelectableFields`).
fn event_field(object: &Value, field: &str) -> Option<String> {
    match field {
        "involvedObject.kind"
        | "involvedObject.namespace"
        | "involvedObject.name"
        | "involvedObject.uid"
        | "involvedObject.apiVersion"
        | "involvedObject.resourceVersion"
        | "involvedObject.fieldPath"
        | "reason"
        | "reportingComponent"
        | "source"
        | "type" => Some(string_at(object, &format!("/{}", field.replace('.', "/")))),
        _ => None,
    }
}

fn set_path(object: &mut Value, path: &[&str], value: Value) {
    let mut cur = object;
    for (i, part) in path.iter().enumerate() {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        let Value::Object(map) = cur else { return };
        if i == path.len() - 1 {
            map.insert((*part).to_string(), value);
            return;
        }
        cur = map
            .entry((*part).to_string())
            .or_insert_with(|| Value::Object(Map::new()));
    }
}

fn set_default(object: &mut Value, path: &[&str], value: Value) {
    let pointer: String = path.iter().map(|p| format!("/{p}")).collect();
    match object.pointer(&pointer) {
        None | Some(Value::Null) => set_path(object, path, value),
        Some(Value::String(s)) if s.is_empty() => set_path(object, path, value),
        _ => {}
    }
}

/// Secrets' `stringData` is write-only: merged into `data` (base64) and dropped.
fn fold_string_data(object: &mut Value) {
    let Some(obj) = object.as_object_mut() else { return };
    let Some(Value::Object(string_data)) = obj.remove("stringData") else {
        return;
    };
    let data = obj.entry("data").or_insert_with(|| Value::Object(Map::new()));
    if !data.is_object() {
        *data = Value::Object(Map::new());
    }
    if let Value::Object(data) = data {
        for (k, v) in string_data {
            let text = v.as_str().unwrap_or_default();
            data.insert(
                k,
                Value::String(base64::engine::general_purpose::STANDARD.encode(text)),
            );
        }
    }
}

fn data_keys_and_size(object: &Value, fields: &[&str], errs: &mut Vec<FieldError>) -> usize {
    let mut total = 0;
    let mut seen = std::collections::BTreeSet::new();
    for field in fields {
        let Some(map) = object.get(*field).and_then(Value::as_object) else {
            continue;
        };
        for (k, v) in map {
            for m in config_key_errors(k) {
                errs.push(FieldError::invalid(format!("{field}[{k}]"), k.as_str(), m));
            }
            if !seen.insert(k.clone()) {
                errs.push(FieldError::invalid(
                    format!("{field}[{k}]"),
                    k.as_str(),
                    "duplicate of key present in another field",
                ));
            }
            total += decoded_len(field, v);
        }
    }
    total
}

/// The stored size of one data value (base64 fields count their decoded bytes).
fn decoded_len(field: &str, v: &Value) -> usize {
    let s = v.as_str().unwrap_or("");
    if field == "data" || field == "binaryData" {
        s.len() / 4 * 3
    } else {
        s.len()
    }
}

fn immutable(object: &Value) -> bool {
    object.get("immutable").and_then(Value::as_bool).unwrap_or(false)
}

fn check_immutable(object: &Value, old: Option<&Value>, fields: &[&str], errs: &mut Vec<FieldError>) {
    let Some(old) = old else { return };
    if !immutable(old) {
        return;
    }
    if !immutable(object) {
        errs.push(FieldError::forbidden(
            "immutable",
            "field is immutable when `immutable` is set",
        ));
    }
    for field in fields {
        if object.get(*field) != old.get(*field) {
            errs.push(FieldError::forbidden(
                *field,
                "field is immutable when `immutable` is set",
            ));
        }
    }
}

fn secret_data_has(object: &Value, key: &str) -> bool {
    object.get("data").and_then(|d| d.get(key)).is_some()
}

fn validate_secret(object: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
    let total = data_keys_and_size(object, &["data"], errs);
    if total > MAX_DATA_SIZE {
        errs.push(FieldError::too_long("data", MAX_DATA_SIZE));
    }
    let kind = object.get("type").and_then(Value::as_str).unwrap_or("Opaque");
    match kind {
        "kubernetes.io/service-account-token" => {
            if meta::annotation(object, "kubernetes.io/service-account.name")
                .unwrap_or("")
                .is_empty()
            {
                errs.push(FieldError::required(
                    "metadata.annotations[kubernetes.io/service-account.name]",
                    "",
                ));
            }
        }
        "kubernetes.io/dockercfg" => require_json_key(object, ".dockercfg", errs),
        "kubernetes.io/dockerconfigjson" => require_json_key(object, ".dockerconfigjson", errs),
        "kubernetes.io/basic-auth" => {
            if !secret_data_has(object, "username") && !secret_data_has(object, "password") {
                errs.push(FieldError::required("data[username]", ""));
                errs.push(FieldError::required("data[password]", ""));
            }
        }
        "kubernetes.io/ssh-auth" => {
            if !secret_data_has(object, "ssh-privatekey") {
                errs.push(FieldError::required("data[ssh-privatekey]", ""));
            }
        }
        "kubernetes.io/tls" => {
            for key in ["tls.key", "tls.crt"] {
                if !secret_data_has(object, key) {
                    errs.push(FieldError::required(format!("data[{key}]"), ""));
                }
            }
        }
        "bootstrap.kubernetes.io/token" => crate::bootstraptoken::validate(object, errs),
        other => {
            // Any other type is allowed if it is a qualified name, as upstream.
            if !SECRET_TYPES.contains(&other)
                && !badge_api::validation::qualified_name_errors(other).is_empty()
            {
                errs.push(FieldError::invalid("type", other, "must be a qualified name"));
            }
        }
    }
    if let Some(old) = old {
        let old_type = old.get("type").and_then(Value::as_str).unwrap_or("Opaque");
        if old_type != kind {
            errs.push(FieldError::invalid("type", kind, "field is immutable"));
        }
    }
    check_immutable(object, old, &["data"], errs);
}

fn require_json_key(object: &Value, key: &str, errs: &mut Vec<FieldError>) {
    let field = format!("data[{key}]");
    match object
        .get("data")
        .and_then(|d| d.get(key))
        .and_then(Value::as_str)
    {
        None => errs.push(FieldError::required(field, "")),
        Some(b64) => {
            let ok = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .ok()
                .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
                .is_some();
            if !ok {
                // The value is a credential: never echo it.
                errs.push(FieldError::invalid(
                    field,
                    "<secret contents redacted>",
                    "invalid JSON",
                ));
            }
        }
    }
}

fn validate_configmap(object: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
    let total = data_keys_and_size(object, &["data", "binaryData"], errs);
    if total > MAX_DATA_SIZE {
        errs.push(FieldError::too_long("", MAX_DATA_SIZE));
    }
    check_immutable(object, old, &["data", "binaryData"], errs);
}

fn validate_pod(object: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
    let containers = object.pointer("/spec/containers").and_then(Value::as_array);
    match containers {
        None => errs.push(FieldError::required("spec.containers", "")),
        Some(list) if list.is_empty() => errs.push(FieldError::required("spec.containers", "")),
        Some(list) => {
            let mut names = std::collections::BTreeSet::new();
            for (i, c) in list.iter().enumerate() {
                let name = c.get("name").and_then(Value::as_str).unwrap_or("");
                if name.is_empty() {
                    errs.push(FieldError::required(format!("spec.containers[{i}].name"), ""));
                } else {
                    for m in badge_api::validation::dns1123_label_errors(name) {
                        errs.push(FieldError::invalid(format!("spec.containers[{i}].name"), name, m));
                    }
                    if !names.insert(name.to_string()) {
                        errs.push(FieldError::duplicate(format!("spec.containers[{i}].name"), name));
                    }
                }
                if c.get("image").and_then(Value::as_str).unwrap_or("").is_empty() {
                    errs.push(FieldError::required(format!("spec.containers[{i}].image"), ""));
                }
            }
        }
    }
    if let Some(old) = old {
        // Only a few pod spec fields may change after creation.
        let mut new_spec = object.get("spec").cloned().unwrap_or(Value::Null);
        let mut old_spec = old.get("spec").cloned().unwrap_or(Value::Null);
        for spec in [&mut new_spec, &mut old_spec] {
            if let Some(map) = spec.as_object_mut() {
                map.remove("activeDeadlineSeconds");
                map.remove("tolerations");
                if let Some(Value::Array(cs)) = map.get_mut("containers") {
                    for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                        c.remove("image");
                    }
                }
            }
        }
        if new_spec != old_spec {
            errs.push(FieldError::forbidden(
                "spec",
                "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
            ));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_printer_fills_each_of_its_columns() {
        let object = json!({"metadata": {"name": "x", "creationTimestamp": "2020-01-01T00:00:00Z"}});
        let now = jiff::Timestamp::from_second(1_700_000_000).unwrap();
        for resource in resources::RESOURCES {
            let printer = of(resource).printer;
            assert_eq!(
                printer.cells(&object, now).len(),
                printer.columns.len(),
                "{}",
                resource.plural
            );
        }
    }

    #[test]
    fn resources_print_their_own_columns() {
        let names = |r| of(r).printer.columns.iter().map(|c| c.name).collect::<Vec<_>>();
        assert_eq!(names(resources::ROLES), ["Name", "Created At"]);
        assert_eq!(names(resources::TOKENREVIEWS), ["Name", "Created At"]);
        assert_eq!(
            names(resources::NODES),
            ["Name", "Status", "Roles", "Age", "Version"]
        );
        assert_eq!(names(resources::LEASES), ["Name", "Holder", "Age"]);
        assert_eq!(
            names(resources::CLUSTERROLEBINDINGS),
            names(resources::ROLEBINDINGS)
        );
        assert_eq!(
            names(resources::SERVICEACCOUNTUSAGES),
            [
                "Name",
                "Last Authenticated",
                "Credential",
                "Last Token Issued",
                "Live Tokens",
                "Age"
            ]
        );
    }

    fn issued_token() -> Value {
        json!({
            "metadata": {"name": "j", "labels": {"identity.badge.dev/service-account": "app"}},
            "spec": {"serviceAccountName": "app", "audiences": ["a"]},
            "status": {"useCount": 4}
        })
    }

    #[test]
    fn issued_tokens_change_only_revoked_and_keep_their_status() {
        let old = issued_token();
        let mut revoke = issued_token();
        revoke["spec"]["revoked"] = json!(true);
        revoke["status"] = json!({"useCount": 0});
        prepare_update(resources::ISSUEDTOKENS, "", &mut revoke, &old);
        assert_eq!(revoke["status"]["useCount"], 4, "a client cannot rewrite usage");
        assert!(validate(resources::ISSUEDTOKENS, &revoke, Some(&old)).is_empty());

        let mut widen = issued_token();
        widen["spec"]["audiences"] = json!(["a", "b"]);
        widen["spec"]["expiresAt"] = json!("2030-01-01T00:00:00Z");
        let errs = validate(resources::ISSUEDTOKENS, &widen, Some(&old));
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["spec.audiences", "spec.expiresAt"]);
        assert!(errs.iter().all(|e| e.to_string().contains("field is immutable")));

        let mut relabel = issued_token();
        relabel["metadata"]["labels"] = json!({"identity.badge.dev/service-account": "other"});
        let errs = validate(resources::ISSUEDTOKENS, &relabel, Some(&old));
        assert_eq!(
            errs[0].field,
            "metadata.labels[identity.badge.dev/service-account]"
        );

        // The servers' own status writes go through `status`, which the rule leaves alone.
        let mut used = issued_token();
        used["status"]["useCount"] = json!(9);
        assert!(validate_update_of(resources::ISSUEDTOKENS, "status", &used, Some(&old)).is_empty());
    }

    #[test]
    fn secret_defaults_and_string_data() {
        let mut s = json!({"metadata":{"name":"s"},"stringData":{"a":"b"}});
        prepare_create(resources::SECRETS, &mut s);
        assert_eq!(s["type"], "Opaque");
        assert_eq!(s["data"]["a"], "Yg==");
        assert!(s.get("stringData").is_none());
    }

    #[test]
    fn secret_type_rules() {
        let tls = json!({"type":"kubernetes.io/tls","data":{"tls.crt":"eA=="}});
        let errs = validate(resources::SECRETS, &tls, None);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "data[tls.key]");
        let sat = json!({"type":"kubernetes.io/service-account-token"});
        assert_eq!(
            validate(resources::SECRETS, &sat, None)[0].field,
            "metadata.annotations[kubernetes.io/service-account.name]"
        );
        let bad_key = json!({"data":{"a/b":"eA=="}});
        assert_eq!(validate(resources::SECRETS, &bad_key, None)[0].field, "data[a/b]");
    }

    #[test]
    fn immutable_secret() {
        let old = json!({"type":"Opaque","immutable":true,"data":{"a":"eA=="}});
        let changed = json!({"type":"Opaque","immutable":true,"data":{"a":"eQ=="}});
        let errs = validate(resources::SECRETS, &changed, Some(&old));
        assert!(errs.iter().any(|e| e.field == "data"), "{errs:?}");
        let unset = json!({"type":"Opaque","data":{"a":"eA=="}});
        assert!(
            validate(resources::SECRETS, &unset, Some(&old))
                .iter()
                .any(|e| e.field == "immutable")
        );
        let retyped = json!({"type":"kubernetes.io/basic-auth","data":{"username":"eA=="}});
        assert!(
            validate(resources::SECRETS, &retyped, Some(&json!({"type":"Opaque"})))
                .iter()
                .any(|e| e.field == "type")
        );
    }

    #[test]
    fn namespace_defaults() {
        let mut ns = json!({"metadata":{"name":"a"}});
        prepare_create(resources::NAMESPACES, &mut ns);
        assert_eq!(ns["spec"]["finalizers"], json!(["kubernetes"]));
        assert_eq!(ns["status"]["phase"], "Active");
    }

    #[test]
    fn pod_rules() {
        assert_eq!(
            validate(resources::PODS, &json!({"spec":{}}), None)[0].field,
            "spec.containers"
        );
        let ok = json!({"spec":{"containers":[{"name":"c","image":"i"}]}});
        assert!(validate(resources::PODS, &ok, None).is_empty());
        let changed = json!({"spec":{"containers":[{"name":"c","image":"j"}],"nodeName":"n"}});
        assert!(!validate(resources::PODS, &changed, Some(&ok)).is_empty());
    }

    #[test]
    fn rbac_rules() {
        let role = json!({"rules":[{"verbs":[],"apiGroups":[""],"resources":["pods"]},{"verbs":["get"],"nonResourceURLs":["/x"]}]});
        let errs = validate(resources::ROLES, &role, None);
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, vec!["rules[0].verbs", "rules[1].nonResourceURLs"]);
        let ok = json!({"rules":[{"verbs":["get"],"apiGroups":[""],"resources":["pods"]}]});
        assert!(validate(resources::ROLES, &ok, None).is_empty());
        assert!(
            validate(
                resources::CLUSTERROLES,
                &json!({"rules":[{"verbs":["get"],"nonResourceURLs":["/x"]}]}),
                None
            )
            .is_empty()
        );
    }

    #[test]
    fn rbac_bindings() {
        let b = json!({"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"Role","name":"r"},
                       "subjects":[{"kind":"ServiceAccount","name":"sa"},{"kind":"User","name":"u","apiGroup":"rbac.authorization.k8s.io"}]});
        assert!(validate(resources::ROLEBINDINGS, &b, None).is_empty());
        let errs = validate(resources::CLUSTERROLEBINDINGS, &b, None);
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, vec!["roleRef.kind", "subjects[0].namespace"]);
        let mut changed = b.clone();
        changed["roleRef"]["name"] = json!("other");
        assert!(
            validate(resources::ROLEBINDINGS, &changed, Some(&b))
                .iter()
                .any(|e| e.detail == "cannot change roleRef")
        );
    }

    #[test]
    fn selectable_fields() {
        let s = json!({"metadata":{"name":"a","namespace":"n"},"type":"Opaque"});
        assert_eq!(
            field_value(resources::SECRETS, &s, "type").as_deref(),
            Some("Opaque")
        );
        assert_eq!(
            field_value(resources::SECRETS, &s, "metadata.namespace").as_deref(),
            Some("n")
        );
        assert_eq!(field_value(resources::SECRETS, &s, "spec.nodeName"), None);
    }
}
