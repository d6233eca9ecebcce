//! Patch formats: JSON merge patch (RFC 7386, [`merge_patch`]), JSON patch (RFC 6902,
//! [`json_patch`]) and strategic merge patch ([`strategic_merge_patch`], with the kinds'
//! merge metadata in [`CoreSchema`]). [`apply_patch`] applies a PATCH body of any of these
//! types with the apiserver's status codes; server-side apply is not handled here.

mod json;
mod schema;
mod strategic;

use serde_json::Value;

use crate::decode;
use crate::status::{FieldError, Status, StatusDetails};

pub use json::{MAX_JSON_PATCH_COPY_BYTES, MAX_JSON_PATCH_OPERATIONS, json_patch};
pub use schema::CoreSchema;
pub use strategic::{ListStrategy, MergeSchema, strategic_merge_patch};

/// The patch content types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchType {
    /// `application/json-patch+json` (RFC 6902).
    Json,
    /// `application/merge-patch+json` (RFC 7386).
    Merge,
    /// `application/strategic-merge-patch+json`.
    StrategicMerge,
    /// `application/apply-patch+yaml`: server-side apply.
    Apply,
}

impl PatchType {
    /// The patch type of a `Content-Type`, ignoring parameters; None when it is none.
    pub fn from_content_type(content_type: &str) -> Option<PatchType> {
        match content_type.split(';').next().unwrap_or("").trim() {
            "application/json-patch+json" => Some(PatchType::Json),
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::StrategicMerge),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => Some(PatchType::Apply),
            _ => None,
        }
    }
}

/// Applies an RFC 7386 merge patch to `target`.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch_map) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    if let Value::Object(target_map) = target {
        for (k, v) in patch_map {
            if v.is_null() {
                target_map.remove(k);
            } else {
                merge_patch(target_map.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// Applies a PATCH `body` of `patch_type` to `original`, an object of `kind`, returning
/// the patched object (not yet decoded or validated as `kind`).
///
/// Errors are the apiserver's: an unparsable or malformed patch is 400, a JSON patch of
/// too many operations 413, a JSON patch operation that fails 422, a strategic merge patch
/// for a kind without merge metadata 415, and a result that is not an object 422.
/// Server-side apply (`PatchType::Apply`) is the field manager's job; it is refused here.
pub fn apply_patch(
    patch_type: PatchType,
    original: &Value,
    body: &[u8],
    kind: &str,
) -> Result<Value, Status> {
    let patched = match patch_type {
        PatchType::Json => {
            let (ops, duplicates) = decode::parse_json(body)
                .map_err(|e| Status::bad_request(format!("error decoding patch: {e}")))?;
            // RFC 6902 §5 (Appendix A.13): an operation with a repeated member is an error,
            // not "the last one wins".
            if let Some(member) = duplicates.iter().find(|p| is_operation_member(p)) {
                return Err(Status::bad_request(format!(
                    "error decoding patch: json patch operation has a duplicate member: {member}"
                )));
            }
            json_patch(original, &ops)?
        }
        PatchType::Merge => {
            let (patch, _) = decode::parse_json(body)
                .map_err(|e| Status::bad_request(format!("error decoding patch: {e}")))?;
            match &patch {
                Value::Object(_) => {}
                Value::Null => return Err(Status::bad_request("Invalid JSON Patch")),
                other => {
                    return Err(Status::bad_request(format!(
                        "error decoding patch: json: cannot unmarshal {} into Go value of type \
                         map[string]interface {{}}",
                        json::go_json_type(other)
                    )));
                }
            }
            let mut target = original.clone();
            merge_patch(&mut target, &patch);
            target
        }
        PatchType::StrategicMerge => {
            let Some(schema) = CoreSchema::for_kind(kind) else {
                // Upstream offers no strategic merge patch where it has no Go types (CRDs).
                let mut status = Status::unsupported_media_type("application/strategic-merge-patch+json");
                status.message = "the body of the request was in an unknown format - accepted media \
                                  types include: application/json-patch+json, \
                                  application/merge-patch+json, application/apply-patch+yaml"
                    .into();
                return Err(status);
            };
            let (patch, _) = decode::parse_json(body).map_err(Status::bad_request)?;
            strategic_merge_patch(original, &patch, schema)?
        }
        PatchType::Apply => {
            return Err(Status::internal(
                "server-side apply patches are applied by the field manager, not by patch::apply_patch",
            ));
        }
    };
    ensure_object(patched)
}

/// Whether a duplicate-field path from [`decode::parse_json`] is a member of one of the
/// patch's operations (`[3].op`), rather than something inside a value.
fn is_operation_member(path: &str) -> bool {
    let Some((index, member)) = path.strip_prefix('[').and_then(|rest| rest.split_once("].")) else {
        return false;
    };
    !index.is_empty()
        && index.bytes().all(|b| b.is_ascii_digit())
        && matches!(member, "op" | "path" | "from" | "value")
}

/// A patched document must still be an object; upstream fails to decode it otherwise and
/// answers 422 naming the `patch` field.
fn ensure_object(patched: Value) -> Result<Value, Status> {
    if patched.is_object() {
        return Ok(patched);
    }
    let detail = if patched.is_null() {
        "Object 'Kind' is missing in 'null'".to_string()
    } else {
        format!(
            "couldn't get version/kind; json parse error: json: cannot unmarshal {} into Go value \
             of type struct {{ APIVersion string \"json:\\\"apiVersion,omitempty\\\"\"; Kind string \
             \"json:\\\"kind,omitempty\\\"\" }}",
            json::go_json_type(&patched)
        )
    };
    Err(Status::invalid(
        "",
        "",
        "",
        &[FieldError::invalid("patch", patched.to_string(), detail)],
    ))
}

/// Upstream's answer to a patch that fails to apply: `NewGenericServerResponse(422)`,
/// whose message is fixed and whose details are empty.
pub(crate) fn unprocessable() -> Status {
    let mut status = Status::bad_request("the server rejected our request due to an error in our request");
    status.code = 422;
    status.reason = "Invalid".into();
    status.details = Some(StatusDetails::default());
    status
}

/// The 415 answer for a PATCH whose content type is none of the patch types.
pub fn unsupported_patch_type(content_type: &str) -> Status {
    let mut status = Status::unsupported_media_type(content_type);
    status.message = format!(
        "the body of the request was in an unknown format - accepted media types include: \
         application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, \
         application/strategic-merge-patch+json (got {content_type:?})"
    );
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rfc7386_examples() {
        let cases = [
            (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
            (json!({"a":"b"}), json!({"a":null}), json!({})),
            (json!({"a":"b","b":"c"}), json!({"a":null}), json!({"b":"c"})),
            (json!({"a":["b"]}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"c"}), json!({"a":["b"]}), json!({"a":["b"]})),
            (
                json!({"a":{"b":"c"}}),
                json!({"a":{"b":"d","c":null}}),
                json!({"a":{"b":"d"}}),
            ),
            (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
            (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
            (json!([1, 2]), json!({"a":"b","c":null}), json!({"a":"b"})),
            (
                json!({}),
                json!({"a":{"bb":{"ccc":null}}}),
                json!({"a":{"bb":{}}}),
            ),
        ];
        for (mut target, patch, want) in cases {
            merge_patch(&mut target, &patch);
            assert_eq!(target, want, "patch {patch}");
        }
    }

    fn apply(patch_type: PatchType, original: &Value, body: Value, kind: &str) -> Result<Value, Status> {
        apply_patch(patch_type, original, body.to_string().as_bytes(), kind)
    }

    fn patched(patch_type: PatchType, original: Value, body: Value, kind: &str) -> Value {
        match apply(patch_type, &original, body.clone(), kind) {
            Ok(v) => v,
            Err(e) => panic!("{body}: {e}"),
        }
    }

    fn code(result: Result<Value, Status>) -> (u16, String) {
        match result {
            Ok(v) => panic!("applied: {v}"),
            Err(s) => (s.code, s.reason),
        }
    }

    fn smp(kind: &str, original: Value, patch: Value) -> Value {
        patched(PatchType::StrategicMerge, original, patch, kind)
    }

    fn sa() -> Value {
        json!({"apiVersion":"v1","kind":"ServiceAccount",
            "metadata":{"name":"dashboard-sa","namespace":"demo","labels":{"app":"x","tier":"web"}},
            "secrets":[{"name":"a"},{"name":"b","namespace":"demo"}],
            "imagePullSecrets":[{"name":"reg1"}]})
    }

    fn pod() -> Value {
        json!({"apiVersion":"v1","kind":"Pod",
        "metadata":{"name":"p","namespace":"demo","finalizers":["a/x","b/y","c/z"]},
        "spec":{
            "containers":[
                {"name":"app","image":"app:1","imagePullPolicy":"IfNotPresent",
                 "env":[{"name":"A","value":"1"},{"name":"B","value":"2"}],
                 "ports":[{"containerPort":80,"protocol":"TCP"}],
                 "args":["--a","--b"]},
                {"name":"sidecar","image":"side:1"}
            ],
            "volumes":[{"name":"data","emptyDir":{}}],
            "imagePullSecrets":[{"name":"reg1"}],
            "tolerations":[{"key":"k","operator":"Exists"}]
        }})
    }

    // RFC 6902 Appendix A.13: a repeated member makes the document invalid.
    #[test]
    fn rfc6902_a13_invalid_patch_document() {
        let body = br#"[{ "op": "add", "path": "/baz", "value": "qux", "op": "remove" }]"#;
        let result = apply_patch(PatchType::Json, &json!({"foo":"bar"}), body, "ConfigMap");
        assert_eq!(code(result), (400, "BadRequest".into()));
        // A repeated member inside a value is not the operation's business.
        let body = br#"[{"op":"add","path":"/baz","value":{"a":1,"a":2}}]"#;
        assert!(apply_patch(PatchType::Json, &json!({}), body, "ConfigMap").is_ok());
    }

    #[test]
    fn kubectl_patch_types() {
        // `kubectl patch sa ... -p '{"automountServiceAccountToken":false}'` (strategic).
        let out = smp(
            "ServiceAccount",
            sa(),
            json!({"automountServiceAccountToken":false}),
        );
        assert_eq!(out["automountServiceAccountToken"], json!(false));
        assert_eq!(out["secrets"], sa()["secrets"]);
        // `--type=json`.
        let out = patched(
            PatchType::Json,
            out,
            json!([{"op":"replace","path":"/automountServiceAccountToken","value":true}]),
            "ServiceAccount",
        );
        assert_eq!(out["automountServiceAccountToken"], json!(true));
        // `kubectl label` (merge).
        let out = patched(
            PatchType::Merge,
            out,
            json!({"metadata":{"labels":{"env":"prod","tier":null}}}),
            "ServiceAccount",
        );
        assert_eq!(out["metadata"]["labels"], json!({"app":"x","env":"prod"}));
    }

    #[test]
    fn apply_patch_errors() {
        let sa = sa();
        let bad_json = apply_patch(PatchType::StrategicMerge, &sa, b"{nope", "ServiceAccount");
        assert_eq!(code(bad_json), (400, "BadRequest".into()));
        let bad_json = apply_patch(PatchType::Json, &sa, b"[", "ServiceAccount");
        assert_eq!(code(bad_json), (400, "BadRequest".into()));
        for body in [json!([1]), json!("x"), json!(null)] {
            assert_eq!(
                code(apply(PatchType::Merge, &sa, body, "ServiceAccount")),
                (400, "BadRequest".into())
            );
        }
        assert_eq!(
            code(apply(
                PatchType::StrategicMerge,
                &sa,
                json!(["x"]),
                "ServiceAccount"
            )),
            (400, "BadRequest".into())
        );
        assert_eq!(
            code(apply(PatchType::Json, &sa, json!({"op":"add"}), "ServiceAccount")),
            (400, "BadRequest".into())
        );
        // An unknown op, a missing path and a failed test are all upstream's generic 422.
        for ops in [
            json!([{"op":"merge","path":"/a","value":1}]),
            json!([{"op":"remove","path":"/spec/nope"}]),
            json!([{"op":"test","path":"/metadata/name","value":"other"}]),
        ] {
            assert_eq!(
                code(apply(PatchType::Json, &sa, ops, "ServiceAccount")),
                (422, "Invalid".into())
            );
        }
        let unknown = apply(PatchType::StrategicMerge, &json!({}), json!({}), "Widget");
        assert_eq!(code(unknown), (415, "UnsupportedMediaType".into()));
        let ssa = apply(PatchType::Apply, &sa, json!({}), "ServiceAccount");
        assert_eq!(code(ssa), (500, "InternalError".into()));
    }

    #[test]
    fn result_must_stay_an_object() {
        let result = apply(
            PatchType::Json,
            &json!({"a":1}),
            json!([{"op":"add","path":"","value":[1]}]),
            "ConfigMap",
        );
        let Err(status) = result else {
            panic!("a list result was accepted");
        };
        assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
        assert!(
            status
                .message
                .starts_with(r#" "" is invalid: patch: Invalid value: "[1]": couldn't get version/kind"#),
            "{}",
            status.message
        );
    }

    #[test]
    fn unknown_patch_directive_is_a_bad_request() {
        for patch in [
            json!({"metadata":{"labels":{"$patch":"bogus"}}}),
            json!({"$patch":"merge"}),
            json!({"secrets":[{"name":"a","$patch":"bogus"}]}),
            json!({"$deleteFromPrimitiveList":["x"]}),
            json!({"metadata":{"$retainKeys":{"name":true}}}),
        ] {
            let result = apply(PatchType::StrategicMerge, &sa(), patch.clone(), "ServiceAccount");
            assert_eq!(code(result), (400, "BadRequest".into()), "{patch}");
        }
    }

    #[test]
    fn kubectl_apply_of_a_secret_merges_labels_and_annotations() {
        let secret = json!({"apiVersion":"v1","kind":"Secret",
            "metadata":{"name":"t","namespace":"demo",
                "annotations":{"kubernetes.io/service-account.name":"dashboard-sa","old":"x"},
                "labels":{"keep":"1"}},
            "type":"kubernetes.io/service-account-token",
            "data":{"token":"dG9r","ca.crt":"Y2E="}});
        let out = smp(
            "Secret",
            secret,
            json!({"metadata":{"annotations":{"kubectl.kubernetes.io/last-applied-configuration":"{}\n","old":null},
                "labels":{"app":"dashboard"}}}),
        );
        assert_eq!(
            out["metadata"]["annotations"],
            json!({"kubernetes.io/service-account.name":"dashboard-sa",
                "kubectl.kubernetes.io/last-applied-configuration":"{}\n"})
        );
        assert_eq!(out["metadata"]["labels"], json!({"keep":"1","app":"dashboard"}));
        assert_eq!(out["data"]["token"], json!("dG9r"));
    }

    #[test]
    fn service_account_secrets_merge_by_name_and_image_pull_secrets_replace() {
        let out = smp(
            "ServiceAccount",
            sa(),
            json!({"$setElementOrder/secrets":[{"name":"a"},{"name":"b"},{"name":"c"}],
                "secrets":[{"name":"c"}],
                "imagePullSecrets":[{"name":"reg2"}]}),
        );
        assert_eq!(
            out["secrets"],
            json!([{"name":"a"},{"name":"b","namespace":"demo"},{"name":"c"}])
        );
        // ServiceAccount.imagePullSecrets has no patchStrategy tag upstream: atomic.
        assert_eq!(out["imagePullSecrets"], json!([{"name":"reg2"}]));
        let out = smp(
            "ServiceAccount",
            sa(),
            json!({"secrets":[{"name":"a","$patch":"delete"}]}),
        );
        assert_eq!(out["secrets"], json!([{"name":"b","namespace":"demo"}]));
    }

    #[test]
    fn containers_merge_by_name_keeping_untouched_fields() {
        // What `kubectl apply` sends after changing one image and one env var.
        let out = smp(
            "Pod",
            pod(),
            json!({"spec":{
                "$setElementOrder/containers":[{"name":"app"},{"name":"sidecar"}],
                "containers":[{"name":"app","image":"app:2",
                    "$setElementOrder/env":[{"name":"A"},{"name":"B"}],
                    "env":[{"name":"B","value":"3"}]}]}}),
        );
        let containers = &out["spec"]["containers"];
        assert_eq!(containers[0]["image"], json!("app:2"));
        assert_eq!(containers[0]["imagePullPolicy"], json!("IfNotPresent"));
        assert_eq!(
            containers[0]["env"],
            json!([{"name":"A","value":"1"},{"name":"B","value":"3"}])
        );
        assert_eq!(containers[0]["ports"], pod()["spec"]["containers"][0]["ports"]);
        assert_eq!(containers[1], json!({"name":"sidecar","image":"side:1"}));
        // A port merges by containerPort; args (untagged) are replaced whole.
        let out = smp(
            "Pod",
            pod(),
            json!({"spec":{"containers":[{"name":"app","args":["--c"],
                "ports":[{"containerPort":80,"name":"http"},{"containerPort":443}]}]}}),
        );
        let app = &out["spec"]["containers"][0];
        assert_eq!(app["args"], json!(["--c"]));
        assert_eq!(
            app["ports"],
            json!([{"containerPort":80,"name":"http","protocol":"TCP"},{"containerPort":443}])
        );
        // A new container without an order lands first, as upstream puts it.
        let out = smp(
            "Pod",
            pod(),
            json!({"spec":{"containers":[{"name":"new","image":"n:1"}]}}),
        );
        let names: Vec<&Value> = out["spec"]["containers"]
            .as_array()
            .map(|c| c.iter().map(|c| &c["name"]).collect())
            .unwrap_or_default();
        assert_eq!(names, [&json!("new"), &json!("app"), &json!("sidecar")]);
    }

    #[test]
    fn container_delete_directive_and_reorder() {
        let out = smp(
            "Pod",
            pod(),
            json!({"spec":{"containers":[{"name":"sidecar","$patch":"delete"}]}}),
        );
        let containers = out["spec"]["containers"].as_array().map_or(0, Vec::len);
        assert_eq!(containers, 1);
        assert_eq!(out["spec"]["containers"][0]["name"], json!("app"));
        let out = smp(
            "Pod",
            pod(),
            json!({"spec":{"$setElementOrder/containers":[{"name":"sidecar"},{"name":"app"}]}}),
        );
        assert_eq!(out["spec"]["containers"][0]["name"], json!("sidecar"));
        assert_eq!(out["spec"]["containers"][1], pod()["spec"]["containers"][0]);
        // What `kubectl apply` sends after a container and an env var leave the manifest.
        let out = smp(
            "Pod",
            pod(),
            json!({"spec":{
            "$setElementOrder/containers":[{"name":"app"}],
            "containers":[
                {"$patch":"delete","name":"sidecar"},
                {"name":"app","$setElementOrder/env":[{"name":"A"}],
                 "env":[{"$patch":"delete","name":"B"}]}
            ]}}),
        );
        let mut want = pod()["spec"]["containers"][0].clone();
        want["env"] = json!([{"name":"A","value":"1"}]);
        assert_eq!(out["spec"]["containers"], json!([want]));
    }

    #[test]
    fn finalizers_merge_as_a_set() {
        let out = smp(
            "Pod",
            pod(),
            json!({"metadata":{"$deleteFromPrimitiveList/finalizers":["b/y"]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["a/x", "c/z"]));
        let out = smp(
            "Pod",
            pod(),
            json!({"metadata":{"$setElementOrder/finalizers":["a/x","c/z","d/w"],
                "$deleteFromPrimitiveList/finalizers":["b/y"],
                "finalizers":["d/w"]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["a/x", "c/z", "d/w"]));
        // No duplicates when a present finalizer is added again.
        let out = smp("Pod", pod(), json!({"metadata":{"finalizers":["a/x"]}}));
        assert_eq!(out["metadata"]["finalizers"], json!(["a/x", "b/y", "c/z"]));
        // Namespace spec.finalizers is atomic upstream.
        let ns = json!({"metadata":{"name":"n"},"spec":{"finalizers":["kubernetes"]}});
        let out = smp("Namespace", ns, json!({"spec":{"finalizers":["other"]}}));
        assert_eq!(out["spec"]["finalizers"], json!(["other"]));
    }

    #[test]
    fn volumes_retain_keys() {
        // kubectl apply switching a volume from emptyDir to configMap.
        let out = smp(
            "Pod",
            pod(),
            json!({"spec":{
                "$setElementOrder/volumes":[{"name":"data"}],
                "volumes":[{"$retainKeys":["configMap","name"],"configMap":{"name":"cm"},"name":"data"}]}}),
        );
        assert_eq!(
            out["spec"]["volumes"],
            json!([{"name":"data","configMap":{"name":"cm"}}])
        );
    }

    #[test]
    fn image_pull_secrets_owner_references_and_tolerations() {
        let mut original = pod();
        original["metadata"]["ownerReferences"] =
            json!([{"uid":"u1","kind":"ReplicaSet","name":"rs","apiVersion":"apps/v1"}]);
        let out = smp(
            "Pod",
            original,
            json!({"metadata":{"ownerReferences":[{"uid":"u1","controller":true}]},
                "spec":{"imagePullSecrets":[{"name":"reg2"}],
                    "tolerations":[{"key":"other","operator":"Exists"}]}}),
        );
        assert_eq!(
            out["metadata"]["ownerReferences"],
            json!([{"uid":"u1","kind":"ReplicaSet","name":"rs","apiVersion":"apps/v1","controller":true}])
        );
        assert_eq!(
            out["spec"]["imagePullSecrets"],
            json!([{"name":"reg2"},{"name":"reg1"}])
        );
        assert_eq!(
            out["spec"]["tolerations"],
            json!([{"key":"other","operator":"Exists"}])
        );
    }

    #[test]
    fn status_conditions_merge_by_type() {
        let node = json!({"metadata":{"name":"n"},"status":{
            "conditions":[{"type":"Ready","status":"False"},{"type":"DiskPressure","status":"False"}],
            "addresses":[{"type":"InternalIP","address":"10.0.0.1"}]}});
        let out = smp(
            "Node",
            node,
            json!({"status":{"conditions":[{"type":"Ready","status":"True"}],
                "addresses":[{"type":"Hostname","address":"n"}]}}),
        );
        assert_eq!(
            out["status"]["conditions"],
            json!([{"type":"Ready","status":"True"},{"type":"DiskPressure","status":"False"}])
        );
        assert_eq!(
            out["status"]["addresses"],
            json!([{"type":"Hostname","address":"n"},{"type":"InternalIP","address":"10.0.0.1"}])
        );
    }

    #[test]
    fn rbac_lists_are_atomic() {
        let role = json!({"metadata":{"name":"r"},"rules":[{"apiGroups":[""],"resources":["pods"],"verbs":["get"]}]});
        let out = smp(
            "Role",
            role,
            json!({"rules":[{"apiGroups":[""],"resources":["secrets"],"verbs":["list"]}]}),
        );
        assert_eq!(
            out["rules"],
            json!([{"apiGroups":[""],"resources":["secrets"],"verbs":["list"]}])
        );
    }
}
