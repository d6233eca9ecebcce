//! ServiceAccount admission for pods, mirroring upstream's
//! `plugin/pkg/admission/serviceaccount/admission.go` (Kubernetes 1.34), as pure functions over
//! pods and ServiceAccounts as the server stores them (JSON).
//!
//! On pod creation ([`admit_pod`]): mirror pods are only validated; every other pod gets the
//! `default` ServiceAccount when it names none, must name one that exists, gets the projected
//! `kube-api-access-<suffix>` token volume mounted in every container and init container
//! (unless automount is off), inherits the ServiceAccount's `imagePullSecrets` when it has none,
//! and is held to the `kubernetes.io/enforce-mountable-secrets` policy when the ServiceAccount
//! opts in. On `pods/ephemeralcontainers` updates ([`admit_ephemeral_containers`]) the policy
//! covers the ephemeral containers (CVE-2023-2728); `envFrom` is covered everywhere
//! (CVE-2024-3177).
//!
//! Where this goes beyond upstream (both stricter, both only refusing):
//! * projected volumes' `secret` sources are held to the policy (upstream checks only `secret`
//!   volumes);
//! * ephemeral containers are checked on create too (upstream relies on pod validation refusing
//!   `ephemeralContainers` on create, which this server does not do).
//!
//! The annotation's 1.32 deprecation warning is not emitted here: upstream returns it when a
//! ServiceAccount is written (`pkg/registry/core/serviceaccount/strategy.go`), and pod creation
//! carries no warning. [`enforce_mountable_secrets_warnings`] gives the ServiceAccount strategy
//! that warning.

use std::collections::HashSet;

use badge_api::{GroupResource, Status};
use serde_json::{Map, Value, json};

/// The ServiceAccount a pod that names none runs as.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";
/// The ServiceAccount annotation that opts its pods into the mountable-secrets policy.
pub const ENFORCE_MOUNTABLE_SECRETS_ANNOTATION: &str = "kubernetes.io/enforce-mountable-secrets";
/// The annotation a kubelet puts on the API copy of a static pod.
pub const MIRROR_POD_ANNOTATION: &str = "kubernetes.io/config.mirror";
/// Where the token, CA bundle and namespace appear in containers.
pub const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The injected volume's name prefix; any volume so named counts as the token volume.
pub const TOKEN_VOLUME_PREFIX: &str = "kube-api-access-";
/// The token lifetime asked for (`WarnOnlyBoundTokenExpirationSeconds`): the issuer recognises
/// exactly this value and may extend it.
pub const TOKEN_EXPIRATION_SECONDS: i64 = 3607;
/// `0644`, written out explicitly as upstream does (kubernetes#104464).
pub const TOKEN_VOLUME_DEFAULT_MODE: i64 = 420;

const PODS: GroupResource<'static> = GroupResource {
    group: "",
    resource: "pods",
};

/// The container lists the policy covers on create, in upstream's order, with the words its
/// messages use.
const CONTAINER_LISTS: [(&str, &str); 3] = [
    ("initContainers", "init container"),
    ("containers", "container"),
    ("ephemeralContainers", "ephemeral container"),
];

/// The ServiceAccount a pod runs as after defaulting: `spec.serviceAccountName`, else the
/// deprecated alias `spec.serviceAccount` (v1 conversion reads it when the name is empty),
/// else `default`.
pub fn service_account_name(pod: &Value) -> String {
    match named_service_account(pod) {
        "" => DEFAULT_SERVICE_ACCOUNT.to_string(),
        name => name.to_string(),
    }
}

/// Admits a pod being created in `namespace`.
///
/// `service_account` is the ServiceAccount [`service_account_name`] names (None when it does not
/// exist); `random_suffix` names a newly injected token volume (`kube-api-access-<suffix>`).
/// On success the pod has been mutated; on refusal it is left as it was. Returns warnings, of
/// which upstream's plugin has none.
pub fn admit_pod(
    pod: &mut Value,
    service_account: Option<&Value>,
    namespace: &str,
    random_suffix: &str,
) -> Result<Vec<String>, Status> {
    // A mirror pod's spec must stay byte-for-byte what the kubelet sent (it deletes mirror pods
    // whose spec differs), so it is only validated.
    if is_mirror_pod(pod) {
        validate_mirror_pod(pod)?;
        return Ok(Vec::new());
    }
    let sa_name = service_account_name(pod);
    let Some(sa) = service_account else {
        return Err(forbidden(pod, &lookup_failure(namespace, &sa_name)));
    };
    // Upstream checks after mutating; checking first gives the same answers (the mutation adds
    // only a projected token volume and pull secrets the ServiceAccount lists) and leaves a
    // refused pod untouched.
    if enforces_mountable_secrets(sa) {
        check_pod_secret_references(pod, sa, &sa_name).map_err(|message| forbidden(pod, &message))?;
    }
    let automount = should_automount(pod, sa);
    let Some(spec) = spec_mut(pod) else {
        return Err(Status::bad_request("a pod must be a JSON object"));
    };
    // The stored v1 object carries the deprecated alias equal to the name.
    spec.insert("serviceAccountName".into(), json!(sa_name));
    spec.insert("serviceAccount".into(), json!(sa_name));
    if automount {
        mount_token_volume(spec, random_suffix);
    }
    copy_image_pull_secrets(spec, sa);
    Ok(Vec::new())
}

/// Admits an update of `pods/ephemeralcontainers`: `pod` is the pod as updated (it carries its
/// namespace) and `service_account` the one it names (None when it does not exist). Only the
/// mountable-secrets policy applies, to the ephemeral containers.
pub fn admit_ephemeral_containers(pod: &Value, service_account: Option<&Value>) -> Result<(), Status> {
    let namespace = str_at(pod, &["metadata", "namespace"]).unwrap_or("");
    // No defaulting here: the pod was admitted at create, so an empty name is an error.
    let sa_name = named_service_account(pod);
    if sa_name.is_empty() {
        let pod_name = str_at(pod, &["metadata", "name"]).unwrap_or("");
        return Err(forbidden(
            pod,
            &format!("no service account specified for pod {namespace}/{pod_name}"),
        ));
    }
    let Some(sa) = service_account else {
        return Err(forbidden(pod, &lookup_failure(namespace, sa_name)));
    };
    if !enforces_mountable_secrets(sa) {
        return Ok(());
    }
    let allowed = listed_names(sa, "secrets");
    let sa_label = service_account_label(sa, sa_name);
    for container in array_at(pod, &["spec", "ephemeralContainers"]) {
        check_container_secret_references(container, "ephemeral container", &allowed, sa_label)
            .map_err(|message| forbidden(pod, &message))?;
    }
    Ok(())
}

/// The warning upstream's ServiceAccount strategy returns when a create (`old` None) or update
/// newly sets the deprecated `kubernetes.io/enforce-mountable-secrets` annotation (any value).
pub fn enforce_mountable_secrets_warnings(service_account: &Value, old: Option<&Value>) -> Vec<String> {
    let has = |sa: &Value| annotation(sa, ENFORCE_MOUNTABLE_SECRETS_ANNOTATION).is_some();
    if old.is_some_and(has) || !has(service_account) {
        return Vec::new();
    }
    vec![format!(
        "metadata.annotations[{ENFORCE_MOUNTABLE_SECRETS_ANNOTATION}]: deprecated in v1.32+; \
         prefer separate namespaces to isolate access to mounted secrets"
    )]
}

/// The projected source of the injected volume (upstream's `TokenVolumeSource`): the token,
/// the cluster CA bundle and the namespace, in this order.
pub fn token_volume_source() -> Value {
    json!({
        "defaultMode": TOKEN_VOLUME_DEFAULT_MODE,
        "sources": [
            {"serviceAccountToken": {"expirationSeconds": TOKEN_EXPIRATION_SECONDS, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [
                {"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}},
            ]}},
        ],
    })
}

/// Whether the ServiceAccount opts into the mountable-secrets policy: its annotation parses as
/// true the way Go's `strconv.ParseBool` does.
pub fn enforces_mountable_secrets(service_account: &Value) -> bool {
    annotation(service_account, ENFORCE_MOUNTABLE_SECRETS_ANNOTATION).and_then(parse_go_bool) == Some(true)
}

/// The pod's own ServiceAccount name, or "" when it names none.
fn named_service_account(pod: &Value) -> &str {
    [["spec", "serviceAccountName"], ["spec", "serviceAccount"]]
        .iter()
        .filter_map(|path| str_at(pod, path))
        .find(|name| !name.is_empty())
        .unwrap_or("")
}

fn is_mirror_pod(pod: &Value) -> bool {
    // Presence is what counts, whatever the value.
    annotation(pod, MIRROR_POD_ANNOTATION).is_some()
}

/// Mirror pods come from a node's static manifests, outside API authorization, so they may not
/// borrow an identity or read secrets.
fn validate_mirror_pod(pod: &Value) -> Result<(), Status> {
    if !named_service_account(pod).is_empty() {
        return Err(forbidden(pod, "a mirror pod may not reference service accounts"));
    }
    if references_any_secret(pod) {
        return Err(forbidden(pod, "a mirror pod may not reference secrets"));
    }
    let projects_token = array_at(pod, &["spec", "volumes"])
        .iter()
        .flat_map(|volume| array_at(volume, &["projected", "sources"]))
        .any(|source| object_at(source, &["serviceAccountToken"]).is_some());
    if projects_token {
        return Err(forbidden(
            pod,
            "a mirror pod may not use ServiceAccountToken volume projections",
        ));
    }
    Ok(())
}

/// Whether the pod names any secret, as upstream's `VisitPodSecretNames` over all containers
/// sees it (empty names do not count).
fn references_any_secret(pod: &Value) -> bool {
    let named = |name: Option<&str>| name.is_some_and(|n| !n.is_empty());
    let pull = array_at(pod, &["spec", "imagePullSecrets"])
        .iter()
        .any(|reference| named(str_at(reference, &["name"])));
    let containers = CONTAINER_LISTS
        .iter()
        .flat_map(|(list, _)| array_at(pod, &["spec", *list]))
        .any(|container| {
            array_at(container, &["envFrom"])
                .iter()
                .any(|from| named(str_at(from, &["secretRef", "name"])))
                || array_at(container, &["env"])
                    .iter()
                    .any(|env| named(str_at(env, &["valueFrom", "secretKeyRef", "name"])))
        });
    // Every volume source that carries a secret reference.
    const VOLUME_SECRET_PATHS: [&[&str]; 10] = [
        &["azureFile", "secretName"],
        &["cephfs", "secretRef", "name"],
        &["cinder", "secretRef", "name"],
        &["flexVolume", "secretRef", "name"],
        &["rbd", "secretRef", "name"],
        &["secret", "secretName"],
        &["scaleIO", "secretRef", "name"],
        &["iscsi", "secretRef", "name"],
        &["storageos", "secretRef", "name"],
        &["csi", "nodePublishSecretRef", "name"],
    ];
    let volumes = array_at(pod, &["spec", "volumes"]).iter().any(|volume| {
        VOLUME_SECRET_PATHS.iter().any(|path| named(str_at(volume, path)))
            || array_at(volume, &["projected", "sources"])
                .iter()
                .any(|source| named(str_at(source, &["secret", "name"])))
    });
    pull || containers || volumes
}

/// The mountable-secrets policy on create: every secret the pod references must be listed in
/// the ServiceAccount's `secrets`, and every pull secret in its `imagePullSecrets`. Returns the
/// first refusal's reason.
fn check_pod_secret_references(pod: &Value, sa: &Value, sa_name: &str) -> Result<(), String> {
    let allowed = listed_names(sa, "secrets");
    let sa_label = service_account_label(sa, sa_name);
    let refuse = |what: String| {
        format!("{what} is not allowed because service account {sa_label} does not reference that secret")
    };
    for volume in array_at(pod, &["spec", "volumes"]) {
        if let Some(secret) = object_at(volume, &["secret"]) {
            let name = secret.get("secretName").and_then(Value::as_str).unwrap_or("");
            if !allowed.contains(name) {
                return Err(refuse(format!("volume with secret.secretName=\"{name}\"")));
            }
        }
        // Beyond upstream: a projected secret source exposes the secret just as a secret volume does.
        for source in array_at(volume, &["projected", "sources"]) {
            if let Some(secret) = object_at(source, &["secret"]) {
                let name = secret.get("name").and_then(Value::as_str).unwrap_or("");
                if !allowed.contains(name) {
                    return Err(refuse(format!("projected volume with secret.name=\"{name}\"")));
                }
            }
        }
    }
    for (list, label) in CONTAINER_LISTS {
        for container in array_at(pod, &["spec", list]) {
            check_container_secret_references(container, label, &allowed, sa_label)?;
        }
    }
    let pull_allowed = listed_names(sa, "imagePullSecrets");
    for (index, reference) in array_at(pod, &["spec", "imagePullSecrets"]).iter().enumerate() {
        let name = str_at(reference, &["name"]).unwrap_or("");
        if !pull_allowed.contains(name) {
            return Err(format!(
                "imagePullSecrets[{index}].name=\"{name}\" is not allowed because service account \
                 {sa_label} does not reference that imagePullSecret"
            ));
        }
    }
    Ok(())
}

/// One container's `env[].valueFrom.secretKeyRef` and `envFrom[].secretRef`, in that order.
fn check_container_secret_references(
    container: &Value,
    label: &str,
    allowed: &HashSet<&str>,
    sa_label: &str,
) -> Result<(), String> {
    let container_name = str_at(container, &["name"]).unwrap_or("");
    let suffix = format!("is not allowed because service account {sa_label} does not reference that secret");
    for env in array_at(container, &["env"]) {
        if let Some(reference) = object_at(env, &["valueFrom", "secretKeyRef"]) {
            let name = reference.get("name").and_then(Value::as_str).unwrap_or("");
            if !allowed.contains(name) {
                let env_name = str_at(env, &["name"]).unwrap_or("");
                return Err(format!(
                    "{label} {container_name} with envVar {env_name} referencing \
                     secret.secretName=\"{name}\" {suffix}"
                ));
            }
        }
    }
    for from in array_at(container, &["envFrom"]) {
        if let Some(reference) = object_at(from, &["secretRef"]) {
            let name = reference.get("name").and_then(Value::as_str).unwrap_or("");
            if !allowed.contains(name) {
                return Err(format!(
                    "{label} {container_name} with envFrom referencing secret.secretName=\"{name}\" {suffix}"
                ));
            }
        }
    }
    Ok(())
}

/// The pod's setting wins, then the ServiceAccount's; unset means mount (the historical default).
fn should_automount(pod: &Value, sa: &Value) -> bool {
    pod.get("spec")
        .and_then(|spec| spec.get("automountServiceAccountToken"))
        .and_then(Value::as_bool)
        .or_else(|| sa.get("automountServiceAccountToken").and_then(Value::as_bool))
        .unwrap_or(true)
}

/// Mounts the token volume at [`TOKEN_MOUNT_PATH`] in every init container and container that
/// has nothing there, reusing the first `kube-api-access-*` volume if the pod has one and adding
/// the volume otherwise (only if some container mounts it). Ephemeral containers are left alone:
/// they cannot be added on create.
fn mount_token_volume(spec: &mut Map<String, Value>, suffix: &str) {
    let existing = spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|volume| volume.get("name").and_then(Value::as_str))
        .find(|name| name.starts_with(TOKEN_VOLUME_PREFIX))
        .map(str::to_string);
    let volume_name = existing
        .clone()
        .unwrap_or_else(|| format!("{TOKEN_VOLUME_PREFIX}{suffix}"));
    let mount = json!({"name": volume_name, "readOnly": true, "mountPath": TOKEN_MOUNT_PATH});
    let mut mounted = false;
    for list in ["initContainers", "containers"] {
        let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) else {
            continue;
        };
        for container in containers {
            let Some(container) = container.as_object_mut() else {
                continue;
            };
            // Whatever the user mounts at the path wins, including another token volume.
            let taken = container
                .get("volumeMounts")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|m| m.get("mountPath").and_then(Value::as_str) == Some(TOKEN_MOUNT_PATH));
            if !taken {
                push(container, "volumeMounts", mount.clone());
                mounted = true;
            }
        }
    }
    if existing.is_none() && mounted {
        push(
            spec,
            "volumes",
            json!({"name": volume_name, "projected": token_volume_source()}),
        );
    }
}

/// A pod with no pull secrets gets the ServiceAccount's (names only), whether or not the token
/// is mounted; a pod with some keeps its own.
fn copy_image_pull_secrets(spec: &mut Map<String, Value>, sa: &Value) {
    let has_own = spec
        .get("imagePullSecrets")
        .and_then(Value::as_array)
        .is_some_and(|list| !list.is_empty());
    if has_own {
        return;
    }
    let copied: Vec<Value> = array_at(sa, &["imagePullSecrets"])
        .iter()
        .map(|reference| match str_at(reference, &["name"]) {
            Some(name) => json!({"name": name}),
            None => json!({}),
        })
        .collect();
    if !copied.is_empty() {
        spec.insert("imagePullSecrets".into(), Value::Array(copied));
    }
}

/// `error looking up service account <ns>/<sa>: serviceaccount "<sa>" not found`; upstream's
/// NotFound names the singular resource.
fn lookup_failure(namespace: &str, sa_name: &str) -> String {
    format!("error looking up service account {namespace}/{sa_name}: serviceaccount \"{sa_name}\" not found")
}

/// A 403 about the pod, named as upstream's `admission.NewForbidden` names it: by name, else by
/// generateName (names are generated after admission), else `Unknown`.
fn forbidden(pod: &Value, message: &str) -> Status {
    let name = ["name", "generateName"]
        .iter()
        .filter_map(|key| str_at(pod, &["metadata", key]))
        .find(|name| !name.is_empty())
        .unwrap_or("Unknown");
    Status::forbidden(PODS, name, message)
}

/// The ServiceAccount's own name for messages (upstream prints `serviceAccount.Name`), falling
/// back to the name the pod asked for.
fn service_account_label<'a>(sa: &'a Value, asked: &'a str) -> &'a str {
    str_at(sa, &["metadata", "name"])
        .filter(|name| !name.is_empty())
        .unwrap_or(asked)
}

/// The `name`s of the references in the ServiceAccount's list `field`.
fn listed_names<'a>(sa: &'a Value, field: &str) -> HashSet<&'a str> {
    array_at(sa, &[field])
        .iter()
        .map(|reference| str_at(reference, &["name"]).unwrap_or(""))
        .collect()
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

fn annotation<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    str_at(object, &["metadata", "annotations", key])
}

fn value_at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(value, |value, key| value.get(key))
}

fn str_at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    value_at(value, path).and_then(Value::as_str)
}

/// The object at `path`; a missing or null field is absent, as a nil pointer is in Go.
fn object_at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Map<String, Value>> {
    value_at(value, path).and_then(Value::as_object)
}

fn array_at<'a>(value: &'a Value, path: &[&str]) -> &'a [Value] {
    value_at(value, path)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// The pod's `spec`, created when missing; None when the pod is not an object.
fn spec_mut(pod: &mut Value) -> Option<&mut Map<String, Value>> {
    let spec = pod
        .as_object_mut()?
        .entry("spec")
        .or_insert_with(|| Value::Object(Map::new()));
    if !spec.is_object() {
        *spec = Value::Object(Map::new());
    }
    spec.as_object_mut()
}

/// Appends to the list `field`, treating a missing or null field as empty.
fn push(object: &mut Map<String, Value>, field: &str, item: Value) {
    match object.get_mut(field) {
        Some(Value::Array(list)) => list.push(item),
        _ => {
            object.insert(field.to_string(), Value::Array(vec![item]));
        }
    }
}

#[cfg(test)]
mod tests;
