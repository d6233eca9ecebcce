//! What a volume's files are: projected volumes (ServiceAccount token, ConfigMap, Secret
//! and downward API sources, pkg/volume/projected/projected.go) and plain `secret` and
//! `configMap` volumes (pkg/volume/secret, pkg/volume/configmap), and the objects each
//! reads.

use std::collections::{BTreeMap, HashMap};

use anyhow::{Context, anyhow, bail};
use badge_api::resources;
use badge_client::error_text;
use base64::Engine;
use serde_json::Value;

use crate::agent::Ctx;
use crate::tokens::CachedToken;
use crate::writer::{self, File};

/// The volume plugins the agent plays, with the directory each writes under
/// (`ROOT/pods/<uid>/volumes/<plugin>/<volume>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VolumeKind {
    Projected,
    Secret,
    ConfigMap,
}

impl VolumeKind {
    pub(crate) fn of(volume: &Value) -> Option<VolumeKind> {
        if volume.pointer("/projected/sources").is_some() {
            Some(VolumeKind::Projected)
        } else if volume.get("secret").is_some_and(Value::is_object) {
            Some(VolumeKind::Secret)
        } else if volume.get("configMap").is_some_and(Value::is_object) {
            Some(VolumeKind::ConfigMap)
        } else {
            None
        }
    }

    pub(crate) fn plugin_dir(self) -> &'static str {
        match self {
            VolumeKind::Projected => "kubernetes.io~projected",
            VolumeKind::Secret => "kubernetes.io~secret",
            VolumeKind::ConfigMap => "kubernetes.io~configmap",
        }
    }
}

/// An API object a volume reads, by namespace, resource and name; a change to it makes
/// the volume due.
pub(crate) type ObjectRef = (String, &'static str, String);

/// The objects a volume's files come from: Secrets, ConfigMaps, and the ServiceAccount
/// of a token source.
pub(crate) fn volume_refs(pod: &Value, volume: &Value) -> Vec<ObjectRef> {
    let namespace = text(pod, "/metadata/namespace").to_string();
    let mut refs = Vec::new();
    let mut add = |plural: &'static str, name: &str| {
        if !name.is_empty() {
            let r = (namespace.clone(), plural, name.to_string());
            if !refs.contains(&r) {
                refs.push(r);
            }
        }
    };
    add(resources::SECRETS.plural, text(volume, "/secret/secretName"));
    add(resources::CONFIGMAPS.plural, text(volume, "/configMap/name"));
    for source in volume
        .pointer("/projected/sources")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        add(resources::SECRETS.plural, text(source, "/secret/name"));
        add(resources::CONFIGMAPS.plural, text(source, "/configMap/name"));
        if source.get("serviceAccountToken").is_some() {
            add("serviceaccounts", service_account(pod));
        }
    }
    refs
}

pub(crate) fn service_account(pod: &Value) -> &str {
    match text(pod, "/spec/serviceAccountName") {
        "" => "default",
        sa => sa,
    }
}

pub(crate) fn text<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// The pod's volumes the agent writes, with their kind.
pub(crate) fn agent_volumes(pod: &Value) -> impl Iterator<Item = (&Value, VolumeKind)> {
    pod.pointer("/spec/volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| VolumeKind::of(v).map(|kind| (v, kind)))
}

impl Ctx {
    /// The files of one volume: a projected volume's in source order, or a Secret's or
    /// ConfigMap's keys (pkg/volume/secret, pkg/volume/configmap).
    pub(crate) async fn build(
        &self,
        pod: &Value,
        name: &str,
        kind: VolumeKind,
        tokens: &mut HashMap<String, CachedToken>,
    ) -> anyhow::Result<Vec<File>> {
        let volume = agent_volumes(pod)
            .find(|(v, k)| text(v, "/name") == name && *k == kind)
            .map(|(v, _)| v)
            .ok_or_else(|| anyhow!("the pod has no volume {name:?}"))?;
        let namespace = text(pod, "/metadata/namespace");
        let (source, plural, object_name) = match kind {
            VolumeKind::Projected => return self.build_projected(pod, name, volume, tokens).await,
            VolumeKind::Secret => (
                &volume["secret"],
                resources::SECRETS.plural,
                text(volume, "/secret/secretName"),
            ),
            VolumeKind::ConfigMap => (
                &volume["configMap"],
                resources::CONFIGMAPS.plural,
                text(volume, "/configMap/name"),
            ),
        };
        let default_mode = mode(source.get("defaultMode"), 0o644)?;
        let object = self
            .get_object(namespace, plural, object_name, is_optional(source))
            .await?;
        let data = match &object {
            Some(object) => object_data(plural, object)?,
            None => BTreeMap::new(),
        };
        key_files(source, object_name, object.is_some(), &data, default_mode)
    }

    /// The files of one projected volume, in source order.
    async fn build_projected(
        &self,
        pod: &Value,
        name: &str,
        volume: &Value,
        tokens: &mut HashMap<String, CachedToken>,
    ) -> anyhow::Result<Vec<File>> {
        let default_mode = mode(volume.pointer("/projected/defaultMode"), 0o644)?;
        let namespace = text(pod, "/metadata/namespace");
        let mut files = Vec::new();
        for source in volume
            .pointer("/projected/sources")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(token) = source.get("serviceAccountToken") {
                let path = token.get("path").and_then(Value::as_str).unwrap_or("");
                writer::validate_path(path)?;
                let value = self.token(pod, name, token, path, tokens).await?;
                files.push(File {
                    path: path.to_string(),
                    data: value.into_bytes(),
                    mode: default_mode,
                });
            } else if let Some((plural, source)) = source
                .get("configMap")
                .map(|s| (resources::CONFIGMAPS.plural, s))
                .or_else(|| source.get("secret").map(|s| (resources::SECRETS.plural, s)))
            {
                let object_name = text(source, "/name");
                let object = self
                    .get_object(namespace, plural, object_name, is_optional(source))
                    .await?;
                let data = match &object {
                    Some(object) => object_data(plural, object)?,
                    None => BTreeMap::new(),
                };
                files.extend(key_files(
                    source,
                    object_name,
                    object.is_some(),
                    &data,
                    default_mode,
                )?);
            } else if let Some(downward) = source.get("downwardAPI") {
                for item in downward
                    .get("items")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let path = text(item, "/path");
                    writer::validate_path(path)?;
                    let field = item
                        .pointer("/fieldRef/fieldPath")
                        .and_then(Value::as_str)
                        .ok_or_else(|| anyhow!("downwardAPI item {path:?}: only fieldRef is supported"))?;
                    files.push(File {
                        path: path.to_string(),
                        data: field_value(pod, field)?.into_bytes(),
                        mode: mode(item.get("mode"), default_mode)?,
                    });
                }
            } else {
                tracing::debug!(volume = name, "skipping an unsupported projected source");
            }
        }
        Ok(files)
    }

    /// GETs the ConfigMap or Secret a volume names; None when it is missing and optional.
    async fn get_object(
        &self,
        namespace: &str,
        plural: &str,
        name: &str,
        optional: bool,
    ) -> anyhow::Result<Option<Value>> {
        writer::validate_name(name).with_context(|| format!("a {plural} source"))?;
        let (status, body) = self
            .client
            .request(
                "GET",
                &format!("/api/v1/namespaces/{namespace}/{plural}/{name}"),
                None,
            )
            .await?;
        match status {
            200 => Ok(Some(body)),
            404 if optional => Ok(None),
            // The kubelet's wording: `secret "x" not found`.
            404 => bail!("{} {name:?} not found", singular(plural)),
            _ => bail!(
                "getting {plural} {namespace}/{name} ({status}): {}",
                error_text(&body)
            ),
        }
    }
}

/// A mode from the API (a decimal number such as 420 for 0644), or `default`.
fn mode(value: Option<&Value>, default: u32) -> anyhow::Result<u32> {
    match value.filter(|v| !v.is_null()) {
        None => Ok(default),
        Some(v) => v
            .as_u64()
            .filter(|m| *m <= 0o777)
            .map(|m| m as u32)
            .ok_or_else(|| anyhow!("file mode {v} is not between 0 and 0777")),
    }
}

fn decode(value: &Value) -> anyhow::Result<Vec<u8>> {
    let text = value
        .as_str()
        .ok_or_else(|| anyhow!("data that is not a string"))?;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .context("data that is not base64")
}

fn is_optional(source: &Value) -> bool {
    source.get("optional").and_then(Value::as_bool) == Some(true)
}

fn singular(plural: &str) -> &str {
    match plural {
        "configmaps" => "configmap",
        other => other.strip_suffix('s').unwrap_or(other),
    }
}

/// A Secret's decoded `data`, or a ConfigMap's `data` and `binaryData`, by key.
fn object_data(plural: &str, object: &Value) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
    let mut data = BTreeMap::new();
    for (key, value) in object["data"].as_object().into_iter().flatten() {
        if plural == resources::SECRETS.plural {
            data.insert(key.clone(), decode(value)?);
        } else if let Some(s) = value.as_str() {
            data.insert(key.clone(), s.as_bytes().to_vec());
        }
    }
    for (key, value) in object["binaryData"].as_object().into_iter().flatten() {
        data.insert(key.clone(), decode(value)?);
    }
    Ok(data)
}

/// The files of a ConfigMap or Secret (a volume or a projected source named
/// `object_name`): its `items`, else every key. A missing object gives no files (it was
/// optional); a missing item key is an error unless optional.
fn key_files(
    source: &Value,
    object_name: &str,
    exists: bool,
    data: &BTreeMap<String, Vec<u8>>,
    default_mode: u32,
) -> anyhow::Result<Vec<File>> {
    let optional = is_optional(source);
    if !exists {
        return Ok(Vec::new());
    }
    let mut files = Vec::new();
    match source.get("items").and_then(Value::as_array) {
        Some(items) => {
            for item in items {
                let key = text(item, "/key");
                let Some(bytes) = data.get(key) else {
                    if optional {
                        continue;
                    }
                    bail!("key {key:?} of {object_name:?} is missing");
                };
                let path = text(item, "/path");
                writer::validate_path(path)?;
                files.push(File {
                    path: path.to_string(),
                    data: bytes.clone(),
                    mode: mode(item.get("mode"), default_mode)?,
                });
            }
        }
        None => {
            for (key, bytes) in data {
                writer::validate_path(key)?;
                files.push(File {
                    path: key.clone(),
                    data: bytes.clone(),
                    mode: default_mode,
                });
            }
        }
    }
    Ok(files)
}

/// A downward API `fieldRef.fieldPath` (pkg/fieldpath/fieldpath.go `ExtractFieldPathAsString`).
fn field_value(pod: &Value, field: &str) -> anyhow::Result<String> {
    // metadata.labels['key'] and metadata.annotations['key'].
    if let Some((map, rest)) = field.split_once("['")
        && let Some(key) = rest.strip_suffix("']")
        && matches!(map, "metadata.labels" | "metadata.annotations")
    {
        let map = map.trim_start_matches("metadata.");
        return Ok(pod["metadata"][map][key].as_str().unwrap_or("").to_string());
    }
    let pointer = match field {
        "metadata.name"
        | "metadata.namespace"
        | "metadata.uid"
        | "spec.nodeName"
        | "spec.serviceAccountName"
        | "status.hostIP"
        | "status.podIP" => {
            format!("/{}", field.replace('.', "/"))
        }
        "metadata.labels" | "metadata.annotations" => {
            let map = field.trim_start_matches("metadata.");
            // The upstream format: sorted `key="value"` lines, values quoted like Go's %q.
            let mut lines: Vec<String> = pod["metadata"][map]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| format!("{k}={}", Value::String(v.as_str().unwrap_or("").into())))
                .collect();
            lines.sort();
            return Ok(lines.join("\n"));
        }
        _ => bail!("unsupported downward API field {field:?}"),
    };
    Ok(text(pod, &pointer).to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn downward_api_fields() {
        let pod = json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u-1",
                         "labels": {"b": "2", "a": "x\"y"}, "annotations": {}},
            "spec": {"nodeName": "n1", "serviceAccountName": "app"},
        });
        assert_eq!(field_value(&pod, "metadata.namespace").unwrap(), "default");
        assert_eq!(field_value(&pod, "metadata.uid").unwrap(), "u-1");
        assert_eq!(field_value(&pod, "spec.serviceAccountName").unwrap(), "app");
        assert_eq!(field_value(&pod, "metadata.labels['b']").unwrap(), "2");
        assert_eq!(
            field_value(&pod, "metadata.labels").unwrap(),
            "a=\"x\\\"y\"\nb=\"2\""
        );
        assert!(field_value(&pod, "spec.containers").is_err());
    }

    #[test]
    fn configmap_and_secret_items() {
        let data: BTreeMap<String, Vec<u8>> = [
            ("ca.crt".to_string(), b"CA".to_vec()),
            ("other".to_string(), b"o".to_vec()),
        ]
        .into();
        let source =
            json!({"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt", "mode": 256}]});
        let files = key_files(&source, "x", true, &data, 0o644).unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!((files[0].path.as_str(), files[0].mode), ("ca.crt", 0o400));
        let all = key_files(&json!({"name": "x"}), "x", true, &data, 0o600).unwrap();
        assert_eq!(all.len(), 2);
        let missing = json!({"name": "x", "items": [{"key": "nope", "path": "p"}]});
        assert!(key_files(&missing, "x", true, &data, 0o644).is_err());
        let optional = json!({"name": "x", "optional": true, "items": [{"key": "nope", "path": "p"}]});
        assert!(key_files(&optional, "x", true, &data, 0o644).unwrap().is_empty());
        let escape = json!({"name": "x", "items": [{"key": "other", "path": "../../etc/x"}]});
        assert!(key_files(&escape, "x", true, &data, 0o644).is_err());
        assert!(mode(Some(&json!(420)), 0).unwrap() == 0o644);
        assert!(mode(Some(&json!(4096)), 0).is_err());
    }

    #[test]
    fn secret_and_configmap_volumes_select_rename_and_mode_keys() {
        let pod = json!({
            "metadata": {"namespace": "ns"},
            "spec": {"serviceAccountName": "app", "volumes": [
                {"name": "token", "secret": {"secretName": "default-token-abcde", "defaultMode": 256,
                    "items": [{"key": "token", "path": "token"}, {"key": "ca.crt", "path": "certs/ca.crt", "mode": 292}]}},
                {"name": "settings", "configMap": {"name": "app-config", "optional": true}},
                {"name": "api", "projected": {"sources": [
                    {"serviceAccountToken": {"path": "token"}},
                    {"configMap": {"name": "kube-root-ca.crt"}},
                    {"secret": {"name": "extra"}},
                ]}},
                {"name": "scratch", "emptyDir": {}},
            ]},
        });
        let kinds: Vec<(&str, VolumeKind)> =
            agent_volumes(&pod).map(|(v, k)| (text(v, "/name"), k)).collect();
        assert_eq!(
            kinds,
            [
                ("token", VolumeKind::Secret),
                ("settings", VolumeKind::ConfigMap),
                ("api", VolumeKind::Projected),
            ]
        );
        assert_eq!(VolumeKind::Secret.plugin_dir(), "kubernetes.io~secret");
        assert_eq!(VolumeKind::ConfigMap.plugin_dir(), "kubernetes.io~configmap");
        let volumes = pod["spec"]["volumes"].as_array().unwrap();
        let r = |plural: &'static str, name: &str| ("ns".to_string(), plural, name.to_string());
        assert_eq!(
            volume_refs(&pod, &volumes[0]),
            [r("secrets", "default-token-abcde")]
        );
        assert_eq!(volume_refs(&pod, &volumes[1]), [r("configmaps", "app-config")]);
        assert_eq!(
            volume_refs(&pod, &volumes[2]),
            [
                r("serviceaccounts", "app"),
                r("configmaps", "kube-root-ca.crt"),
                r("secrets", "extra")
            ]
        );

        // A Secret's data is base64; items pick and rename keys, the volume's defaultMode
        // applies where an item has no mode.
        let secret = json!({"data": {"token": "dG9r", "ca.crt": "Q0E=", "namespace": "bnM="}});
        let data = object_data("secrets", &secret).unwrap();
        let source = &volumes[0]["secret"];
        let default_mode = mode(source.get("defaultMode"), 0o644).unwrap();
        let files = key_files(source, "default-token-abcde", true, &data, default_mode).unwrap();
        let got: Vec<(&str, &[u8], u32)> = files
            .iter()
            .map(|f| (f.path.as_str(), f.data.as_slice(), f.mode))
            .collect();
        assert_eq!(
            got,
            [("token", &b"tok"[..], 0o400), ("certs/ca.crt", &b"CA"[..], 0o444)]
        );
        // Without items every key is written, at 0644 unless defaultMode says otherwise.
        let all = key_files(&json!({"secretName": "s"}), "s", true, &data, 0o644).unwrap();
        let paths: Vec<&str> = all.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["ca.crt", "namespace", "token"]);
        assert!(all.iter().all(|f| f.mode == 0o644));
        // A ConfigMap's data is text, binaryData base64.
        let cm = json!({"data": {"a": "plain"}, "binaryData": {"b": "AAE="}});
        let data = object_data("configmaps", &cm).unwrap();
        assert_eq!(data["a"], b"plain");
        assert_eq!(data["b"], [0, 1]);
        assert!(object_data("secrets", &json!({"data": {"k": "not base64!"}})).is_err());
        // A missing optional object is an empty volume; a missing key in an existing
        // object is an error unless optional.
        assert!(
            key_files(
                &volumes[1]["configMap"],
                "app-config",
                false,
                &BTreeMap::new(),
                0o644
            )
            .unwrap()
            .is_empty()
        );
        let missing_key = json!({"name": "app-config", "items": [{"key": "gone", "path": "p"}]});
        let err = key_files(&missing_key, "app-config", true, &data, 0o644).unwrap_err();
        assert!(err.to_string().contains("\"gone\""), "{err}");
        assert_eq!(singular("secrets"), "secret");
        assert_eq!(singular("configmaps"), "configmap");
        assert!(is_optional(&volumes[1]["configMap"]));
        assert!(!is_optional(source));
    }
}
