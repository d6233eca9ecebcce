//! ServiceAccount admission for pods (`plugin/pkg/admission/serviceaccount/admission.go`):
//! the default ServiceAccount, its image pull secrets, the projected token volume mounted in
//! every container, and the `kubernetes.io/enforce-mountable-secrets` policy (covering
//! ephemeral containers and envFrom: CVE-2023-2728, CVE-2024-3177).

use badge_api::Status;
use serde_json::{Value, json};

pub const MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
const VOLUME_PREFIX: &str = "kube-api-access-";
const ENFORCE_MOUNTABLE_SECRETS: &str = "kubernetes.io/enforce-mountable-secrets";
const MIRROR_POD: &str = "kubernetes.io/config.mirror";
/// What the projected token asks for; the server extends it to a year for the kubelet.
pub const TOKEN_SECONDS: i64 = 3607;

/// The ServiceAccount a pod runs as, after defaulting.
pub fn service_account_name(pod: &Value) -> String {
    match pod.pointer("/spec/serviceAccountName").and_then(Value::as_str) {
        Some(name) if !name.is_empty() => name.to_string(),
        _ => "default".to_string(),
    }
}

fn forbidden(pod: &Value, message: &str) -> Status {
    let name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    Status::forbidden(
        badge_api::GroupResource {
            group: "",
            resource: "pods",
        },
        name,
        message,
    )
}

/// The injected volume (`kube-api-access-<suffix>`), exactly as upstream builds it.
pub fn token_volume(suffix: &str) -> Value {
    json!({
        "name": format!("{VOLUME_PREFIX}{suffix}"),
        "projected": {
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": TOKEN_SECONDS, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            ],
        },
    })
}

fn containers_mut<'a>(pod: &'a mut Value, list: &str) -> impl Iterator<Item = &'a mut Value> {
    pod.pointer_mut(&format!("/spec/{list}"))
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
}

/// Admits a pod being created: `service_account` is the one `service_account_name` names
/// (None when it does not exist). Returns warnings.
pub fn admit_pod(
    pod: &mut Value,
    service_account: Option<&Value>,
    suffix: &str,
) -> Result<Vec<String>, Status> {
    let sa_name = service_account_name(pod);
    if pod
        .pointer(&format!(
            "/metadata/annotations/{}",
            MIRROR_POD.replace('/', "~1")
        ))
        .is_some()
    {
        // Mirror pods come from a kubelet's static manifests and may not use ServiceAccounts.
        return Ok(Vec::new());
    }
    let namespace = pod
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let Some(sa) = service_account else {
        return Err(forbidden(
            pod,
            &format!(
                "error looking up service account {namespace}/{sa_name}: serviceaccount \"{sa_name}\" not found"
            ),
        ));
    };
    if let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) {
        spec.insert("serviceAccountName".into(), json!(sa_name));
    }
    let mut warnings = Vec::new();
    if enforces_mountable_secrets(sa) {
        warnings.push(format!(
            "the \"{ENFORCE_MOUNTABLE_SECRETS}\" annotation on ServiceAccount {sa_name} is deprecated since v1.32; use separate namespaces to isolate access to secrets"
        ));
        check_mountable_secrets(
            pod,
            sa,
            &sa_name,
            &["containers", "initContainers", "ephemeralContainers"],
        )?;
    }
    let automount = pod
        .pointer("/spec/automountServiceAccountToken")
        .and_then(Value::as_bool)
        .or_else(|| sa.get("automountServiceAccountToken").and_then(Value::as_bool))
        .unwrap_or(true);
    if automount {
        mount_token_volume(pod, suffix);
    }
    let pod_pull_secrets = pod
        .pointer("/spec/imagePullSecrets")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    if !pod_pull_secrets
        && let Some(secrets) = sa
            .get("imagePullSecrets")
            .and_then(Value::as_array)
            .filter(|a| !a.is_empty())
        && let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut)
    {
        spec.insert("imagePullSecrets".into(), json!(secrets));
    }
    Ok(warnings)
}

fn mount_token_volume(pod: &mut Value, suffix: &str) {
    let mounted = |c: &Value| {
        c.get("volumeMounts").and_then(Value::as_array).is_some_and(|m| {
            m.iter()
                .any(|m| m.get("mountPath").and_then(Value::as_str) == Some(MOUNT_PATH))
        })
    };
    let volumes = pod
        .pointer("/spec/volumes")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    // A pod that already has our kind of volume keeps it.
    let existing = volumes
        .iter()
        .filter_map(|v| v.get("name").and_then(Value::as_str))
        .find(|n| n.starts_with(VOLUME_PREFIX))
        .map(String::from);
    let mut needed = false;
    for list in ["initContainers", "containers"] {
        if pod
            .pointer(&format!("/spec/{list}"))
            .and_then(Value::as_array)
            .is_some_and(|cs| cs.iter().any(|c| !mounted(c)))
        {
            needed = true;
        }
    }
    if !needed {
        return;
    }
    let name = existing
        .clone()
        .unwrap_or_else(|| format!("{VOLUME_PREFIX}{suffix}"));
    if existing.is_none()
        && let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut)
    {
        let list = spec.entry("volumes").or_insert_with(|| json!([]));
        if let Some(list) = list.as_array_mut() {
            list.push(token_volume(suffix));
        }
    }
    let mount = json!({"name": name, "readOnly": true, "mountPath": MOUNT_PATH});
    for list in ["initContainers", "containers"] {
        for c in containers_mut(pod, list) {
            if mounted(c) {
                continue;
            }
            if let Some(obj) = c.as_object_mut() {
                let mounts = obj.entry("volumeMounts").or_insert_with(|| json!([]));
                if let Some(mounts) = mounts.as_array_mut() {
                    mounts.push(mount.clone());
                }
            }
        }
    }
}

fn enforces_mountable_secrets(sa: &Value) -> bool {
    sa.pointer(&format!(
        "/metadata/annotations/{}",
        ENFORCE_MOUNTABLE_SECRETS.replace('/', "~1")
    ))
    .and_then(Value::as_str)
        == Some("true")
}

fn container_label(list: &str) -> &'static str {
    match list {
        "initContainers" => "init container",
        "ephemeralContainers" => "ephemeral container",
        _ => "container",
    }
}

/// Every Secret the pod references must be listed in the ServiceAccount's `secrets`.
fn check_mountable_secrets(pod: &Value, sa: &Value, sa_name: &str, lists: &[&str]) -> Result<(), Status> {
    let allowed: Vec<&str> = sa
        .get("secrets")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.get("name").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    let refuse = |what: String| {
        forbidden(
            pod,
            &format!(
                "{what} is not allowed because service account {sa_name} does not reference that secret"
            ),
        )
    };
    for volume in pod
        .pointer("/spec/volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(name) = volume.pointer("/secret/secretName").and_then(Value::as_str)
            && !allowed.contains(&name)
        {
            return Err(refuse(format!("volume with secret.secretName=\"{name}\"")));
        }
        for source in volume
            .pointer("/projected/sources")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(name) = source.pointer("/secret/name").and_then(Value::as_str)
                && !allowed.contains(&name)
            {
                return Err(refuse(format!("projected volume with secret.name=\"{name}\"")));
            }
        }
    }
    for list in lists {
        for c in pod
            .pointer(&format!("/spec/{list}"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let cname = c.get("name").and_then(Value::as_str).unwrap_or("");
            let label = container_label(list);
            for env in c.get("env").and_then(Value::as_array).into_iter().flatten() {
                if let Some(name) = env
                    .pointer("/valueFrom/secretKeyRef/name")
                    .and_then(Value::as_str)
                    && !allowed.contains(&name)
                {
                    return Err(refuse(format!(
                        "{label} {cname} with envVar {} referencing secret.secretName=\"{name}\"",
                        env.get("name").and_then(Value::as_str).unwrap_or("")
                    )));
                }
            }
            for from in c.get("envFrom").and_then(Value::as_array).into_iter().flatten() {
                if let Some(name) = from.pointer("/secretRef/name").and_then(Value::as_str)
                    && !allowed.contains(&name)
                {
                    return Err(refuse(format!(
                        "{label} {cname} with envFrom referencing secret.secretName=\"{name}\""
                    )));
                }
            }
        }
    }
    Ok(())
}

/// The `pods/ephemeralcontainers` update path: ephemeral containers obey the policy too.
pub fn admit_ephemeral_containers(pod: &Value, service_account: Option<&Value>) -> Result<(), Status> {
    match service_account {
        Some(sa) if enforces_mountable_secrets(sa) => {
            check_mountable_secrets(pod, sa, &service_account_name(pod), &["ephemeralContainers"])
        }
        _ => Ok(()),
    }
}

impl crate::ApiServer {
    /// Runs ServiceAccount admission on a pod being created in `namespace`.
    pub(crate) async fn admit_pod(&self, namespace: &str, pod: &mut Value) -> Result<Vec<String>, Status> {
        if let Some(meta) = pod.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("namespace".into(), json!(namespace));
        }
        let Some(serviceaccounts) = badge_api::resources::lookup("", "v1", "serviceaccounts") else {
            return Ok(Vec::new());
        };
        let name = service_account_name(pod);
        let sa = match self
            .registry
            .get(
                serviceaccounts,
                namespace,
                &name,
                badge_registry::ReadFrom::Latest,
            )
            .await
        {
            Ok(sa) => Some(sa),
            Err(s) if s.is_not_found() => None,
            Err(s) => return Err(s),
        };
        admit_pod(pod, sa.as_deref(), &badge_registry::registry::random_suffix())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pod(extra: Value) -> Value {
        let mut p = json!({"metadata": {"name": "p", "namespace": "ns"},
            "spec": {"containers": [{"name": "c", "image": "i"}], "initContainers": [{"name": "init", "image": "i"}]}});
        badge_api::patch::merge_patch(&mut p, &extra);
        p
    }

    fn mounted(p: &Value) -> bool {
        p.pointer("/spec/volumes")
            .and_then(Value::as_array)
            .is_some_and(|v| v.iter().any(|v| v["name"] == "kube-api-access-abcde"))
    }

    #[test]
    fn automount_matrix() {
        let cases = [
            (None, None, true),
            (None, Some(true), true),
            (None, Some(false), false),
            (Some(true), None, true),
            (Some(true), Some(false), true),
            (Some(false), None, false),
            (Some(false), Some(true), false),
            (Some(false), Some(false), false),
        ];
        for (pod_value, sa_value, want) in cases {
            let mut p = pod(json!({}));
            if let Some(v) = pod_value {
                p["spec"]["automountServiceAccountToken"] = json!(v);
            }
            let mut sa = json!({"metadata": {"name": "default"}});
            if let Some(v) = sa_value {
                sa["automountServiceAccountToken"] = json!(v);
            }
            admit_pod(&mut p, Some(&sa), "abcde").unwrap();
            assert_eq!(mounted(&p), want, "pod {pod_value:?} sa {sa_value:?}");
        }
    }

    #[test]
    fn injected_volume_and_mounts() {
        let mut p = pod(json!({}));
        admit_pod(&mut p, Some(&json!({})), "abcde").unwrap();
        assert_eq!(p["spec"]["serviceAccountName"], "default");
        assert_eq!(p["spec"]["volumes"][0], token_volume("abcde"));
        assert_eq!(
            p["spec"]["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"],
            3607
        );
        for list in ["containers", "initContainers"] {
            assert_eq!(
                p["spec"][list][0]["volumeMounts"],
                json!([{"name": "kube-api-access-abcde", "readOnly": true, "mountPath": MOUNT_PATH}])
            );
        }
        // A container already mounting the path is left alone.
        let mut own = pod(json!({}));
        own["spec"]["containers"][0]["volumeMounts"] = json!([{"name": "mine", "mountPath": MOUNT_PATH}]);
        admit_pod(&mut own, Some(&json!({})), "abcde").unwrap();
        assert_eq!(
            own["spec"]["containers"][0]["volumeMounts"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn missing_service_account_is_forbidden() {
        let mut p = pod(json!({"spec": {"serviceAccountName": "ghost"}}));
        let err = admit_pod(&mut p, None, "abcde").unwrap_err();
        assert_eq!(err.code, 403);
        assert_eq!(
            err.message,
            "pods \"p\" is forbidden: error looking up service account ns/ghost: serviceaccount \"ghost\" not found"
        );
    }

    #[test]
    fn image_pull_secrets_only_when_the_pod_has_none() {
        let sa = json!({"imagePullSecrets": [{"name": "reg"}]});
        let mut p = pod(json!({}));
        admit_pod(&mut p, Some(&sa), "abcde").unwrap();
        assert_eq!(p["spec"]["imagePullSecrets"], json!([{"name": "reg"}]));
        let mut own = pod(json!({"spec": {"imagePullSecrets": [{"name": "mine"}]}}));
        admit_pod(&mut own, Some(&sa), "abcde").unwrap();
        assert_eq!(own["spec"]["imagePullSecrets"], json!([{"name": "mine"}]));
    }

    #[test]
    fn mountable_secrets_cover_volumes_env_envfrom_and_ephemeral_containers() {
        let sa = json!({"metadata": {"annotations": {ENFORCE_MOUNTABLE_SECRETS: "true"}}, "secrets": [{"name": "ok"}]});
        let refused = [
            json!({"spec": {"volumes": [{"name": "v", "secret": {"secretName": "no"}}]}}),
            json!({"spec": {"volumes": [{"name": "v", "projected": {"sources": [{"secret": {"name": "no"}}]}}]}}),
            json!({"spec": {"containers": [{"name": "c", "image": "i", "env": [{"name": "E", "valueFrom": {"secretKeyRef": {"name": "no", "key": "k"}}}]}]}}),
            json!({"spec": {"containers": [{"name": "c", "image": "i", "envFrom": [{"secretRef": {"name": "no"}}]}]}}),
            json!({"spec": {"initContainers": [{"name": "i", "image": "i", "envFrom": [{"secretRef": {"name": "no"}}]}]}}),
            json!({"spec": {"ephemeralContainers": [{"name": "e", "image": "i", "envFrom": [{"secretRef": {"name": "no"}}]}]}}),
        ];
        for extra in refused {
            let mut p = pod(extra.clone());
            assert_eq!(
                admit_pod(&mut p, Some(&sa), "abcde")
                    .map(|_| ())
                    .unwrap_err()
                    .code,
                403,
                "{extra}"
            );
        }
        let mut allowed = pod(json!({"spec": {"volumes": [{"name": "v", "secret": {"secretName": "ok"}}]}}));
        let warnings = admit_pod(&mut allowed, Some(&sa), "abcde").unwrap();
        assert!(warnings[0].contains("deprecated"));
        let ephemeral = pod(
            json!({"spec": {"ephemeralContainers": [{"name": "e", "image": "i", "env": [{"name": "E", "valueFrom": {"secretKeyRef": {"name": "no", "key": "k"}}}]}]}}),
        );
        assert!(admit_ephemeral_containers(&ephemeral, Some(&sa)).is_err());
    }
}
