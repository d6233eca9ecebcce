//! OpenAPI v3 documents (`/openapi/v3` and `/openapi/v3/<group-version>`), generated from
//! the resource table and k8s-openapi's real types. Each group-version is first built as a
//! model (paths, operations, parameters, schemas); the v3 documents and the single v2
//! document ([`v2`]) are both rendered from it.
//!
//! kubectl uses them for `explain` (schemas tagged `x-kubernetes-group-version-kind`, with
//! descriptions), for apply's server-side validation check (a PATCH operation per kind that
//! declares the `fieldValidation` query parameter) and for patch computation. PATCH
//! operations deliberately do not list `application/strategic-merge-patch+json`, so kubectl
//! computes strategic merge patches from its compiled-in types instead of these schemas
//! (the v2 PATCH operations' `consumes` leave it out for the same reason).
//!
//! This module holds the model; `paths` builds its operations, `schemas` its definitions,
//! and `index` caches the rendered documents behind the `/openapi/v3` index.

use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use crate::resources::{RESOURCES, Resource, Storage};

mod index;
mod paths;
mod schemas;
pub mod v2;

pub use index::{document_bytes, document_hash, index, index_bytes};

use index::*;
use paths::*;
use schemas::*;

/// Where schemars (with OpenAPI 3.0 settings) puts definitions.
const SCHEMA_PREFIX: &str = "#/components/schemas/";
const PATCH_SCHEMA: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";
const GVK: &str = "x-kubernetes-group-version-kind";
/// Kinds whose `metadata` upstream marks required.
const METADATA_REQUIRED: &[&str] = &["io.k8s.api.core.v1.Event", "io.k8s.api.events.v1.Event"];
/// The Kubernetes release whose API the documents describe.
const KUBERNETES_VERSION: &str = "v1.35.0";

/// The path of a group-version below `/openapi/v3/` (`api/v1`, `apis/<group>/<version>`).
pub fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// The OpenAPI 3.0 document of one served group-version, or `None` if it is not served.
pub fn group_version_document(group: &str, version: &str) -> Option<Value> {
    group_version_model(group, version).map(|model| model.to_v3())
}

/// The paths and schemas of one served group-version, or `None` if it is not served.
pub(crate) fn group_version_model(group: &str, version: &str) -> Option<Model> {
    let resources: Vec<&Resource> = RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .collect();
    if resources.is_empty() {
        return None;
    }
    let mut generator = SchemaSettings::openapi3().into_generator();
    let refs = Refs {
        status: schema_ref(&mut generator, |g| g.subschema_for::<meta::Status>()),
        delete_options: schema_ref(&mut generator, |g| g.subschema_for::<meta::DeleteOptions>()),
        patch: format!("{SCHEMA_PREFIX}{PATCH_SCHEMA}"),
    };
    let list_meta = schema_ref(&mut generator, |g| g.subschema_for::<meta::ListMeta>());

    let mut paths = Vec::new();
    // Schemas to tag with their GVK, and list schemas to add once the definitions exist.
    let mut tags: Vec<(String, Gvk)> = vec![(
        definition_name(&refs.status).to_string(),
        Gvk::new("", "v1", "Status"),
    )];
    let mut lists: Vec<(String, String, Gvk)> = Vec::new();
    let mut kinds: Vec<String> = Vec::new();

    for resource in resources {
        let kind_ref = schema_ref(&mut generator, resource.schema);
        let gvk = Gvk::new(resource.group, resource.version, resource.kind);
        tags.push((definition_name(&kind_ref).to_string(), gvk.clone()));
        kinds.push(definition_name(&kind_ref).to_string());
        let list_ref = format!("{kind_ref}List");
        if resource.storage == Storage::Stored
            && (resource.allows("list") || resource.allows("deletecollection"))
        {
            lists.push((definition_name(&list_ref).to_string(), kind_ref.clone(), gvk));
        }
        add_resource_paths(&mut paths, resource, &kind_ref, &list_ref, &refs);
        for sub in resource.subresources {
            let sub_ref = schema_ref(&mut generator, sub.schema);
            tags.push((
                definition_name(&sub_ref).to_string(),
                Gvk::new(sub.group, sub.version, sub.kind),
            ));
            kinds.push(definition_name(&sub_ref).to_string());
            add_subresource_paths(&mut paths, resource, sub, &sub_ref, &refs);
        }
    }

    let mut schemas = generator.take_definitions(true);
    schemas.insert(
        PATCH_SCHEMA.into(),
        json!({
            "description": "Patch is provided to give a concrete name and type to the Kubernetes PATCH request body.",
            "type": "object",
        }),
    );
    for (name, kind_ref, gvk) in &lists {
        let list_kind = format!("{}List", gvk.kind);
        schemas.insert(name.clone(), list_schema(gvk, &list_kind, kind_ref, &list_meta));
        tags.push((name.clone(), Gvk::new(gvk.group, gvk.version, &list_kind)));
    }
    kinds.push(definition_name(&refs.status).to_string());
    for kind in &kinds {
        // k8s-openapi makes `metadata` required because its Rust field is not optional;
        // upstream only requires it where the Go field lacks `omitempty` (Event).
        if METADATA_REQUIRED.contains(&kind.as_str()) {
            continue;
        }
        if let Some(Value::Object(schema)) = schemas.get_mut(kind) {
            unrequire(schema, "metadata");
        }
    }
    for (name, gvk) in tags {
        if let Some(Value::Object(schema)) = schemas.get_mut(&name) {
            let entry = schema.entry(GVK).or_insert_with(|| Value::Array(Vec::new()));
            let tag = gvk.to_value();
            if let Value::Array(list) = entry
                && !list.contains(&tag)
            {
                list.push(tag);
            }
        }
    }
    for schema in schemas.values_mut() {
        to_openapi30(schema);
    }

    Some(Model { paths, schemas })
}

#[derive(Clone, Debug)]
struct Gvk {
    group: &'static str,
    version: &'static str,
    kind: String,
}

impl Gvk {
    fn new(group: &'static str, version: &'static str, kind: &str) -> Self {
        Gvk {
            group,
            version,
            kind: kind.to_string(),
        }
    }

    fn to_value(&self) -> Value {
        json!({"group": self.group, "version": self.version, "kind": self.kind})
    }
}

/// Shared schemas operations refer to.
struct Refs {
    status: String,
    delete_options: String,
    patch: String,
}

/// One operation, independent of the OpenAPI version it is rendered in.
struct Op {
    /// The verb of the operation ID: `read`, `list`, `create`, `replace`, `patch`, `delete`.
    id_verb: &'static str,
    /// What follows the group-version in the ID: `NamespacedServiceAccount`,
    /// `CollectionNamespacedRole`, `NamespaceStatus`.
    id_subject: String,
    action: &'static str,
    gvk: Gvk,
    description: String,
    parameters: Vec<Param>,
    body: Option<Body>,
    responses: Vec<Reply>,
    tag: String,
    prefix: String,
}

/// A query or path parameter.
#[derive(Clone)]
struct Param {
    name: &'static str,
    location: &'static str,
    description: String,
    ty: &'static str,
}

/// A request body: the schema it carries and the media types it may come in.
struct Body {
    schema_ref: String,
    required: bool,
    media_types: &'static [&'static str],
}

/// One response code.
struct Reply {
    code: &'static str,
    description: &'static str,
    /// The schema and media types of the response body, if it has one.
    schema_ref: Option<String>,
    media_types: &'static [&'static str],
}

/// The operations on one path, with the parameters the path itself declares.
struct PathItem {
    path: String,
    parameters: Vec<Param>,
    operations: Vec<(&'static str, Op)>,
}

/// What both OpenAPI documents are rendered from: paths, and schemas whose references use
/// the OpenAPI 3 prefix.
pub(crate) struct Model {
    paths: Vec<PathItem>,
    schemas: Map<String, Value>,
}

impl Op {
    fn operation_id(&self) -> String {
        format!("{}{}{}", self.id_verb, self.prefix, self.id_subject)
    }

    fn to_v3(&self) -> Value {
        let mut op = Map::new();
        op.insert("tags".into(), json!([self.tag]));
        op.insert("description".into(), Value::String(self.description.clone()));
        op.insert("operationId".into(), Value::String(self.operation_id()));
        if !self.parameters.is_empty() {
            op.insert(
                "parameters".into(),
                self.parameters.iter().map(Param::to_v3).collect(),
            );
        }
        if let Some(body) = &self.body {
            let schema = json!({"schema": {"$ref": body.schema_ref}});
            let content: Map<String, Value> = body
                .media_types
                .iter()
                .map(|m| ((*m).to_string(), schema.clone()))
                .collect();
            let mut request_body = Map::new();
            request_body.insert("content".into(), Value::Object(content));
            if body.required {
                request_body.insert("required".into(), Value::Bool(true));
            }
            op.insert("requestBody".into(), Value::Object(request_body));
        }
        let mut responses = Map::new();
        for reply in &self.responses {
            let mut response = Map::new();
            response.insert("description".into(), json!(reply.description));
            if let Some(schema_ref) = &reply.schema_ref {
                let schema = json!({"schema": {"$ref": schema_ref}});
                let content: Map<String, Value> = reply
                    .media_types
                    .iter()
                    .map(|m| ((*m).to_string(), schema.clone()))
                    .collect();
                response.insert("content".into(), Value::Object(content));
            }
            responses.insert(reply.code.into(), Value::Object(response));
        }
        op.insert("responses".into(), Value::Object(responses));
        op.insert("x-kubernetes-action".into(), Value::String(self.action.into()));
        op.insert(GVK.into(), self.gvk.to_value());
        Value::Object(op)
    }
}

impl Param {
    fn to_v3(&self) -> Value {
        let mut param = json!({
            "name": self.name,
            "in": self.location,
            "description": self.description,
            "schema": {"type": self.ty, "uniqueItems": true},
        });
        if self.location == "path" {
            param["required"] = Value::Bool(true);
        }
        param
    }
}

impl Model {
    /// The OpenAPI 3.0 document.
    fn to_v3(&self) -> Value {
        let mut paths = Map::new();
        for item in &self.paths {
            let mut value: Map<String, Value> = item
                .operations
                .iter()
                .map(|(method, op)| ((*method).to_string(), op.to_v3()))
                .collect();
            if !item.parameters.is_empty() {
                value.insert(
                    "parameters".into(),
                    item.parameters.iter().map(Param::to_v3).collect(),
                );
            }
            paths.insert(item.path.clone(), Value::Object(value));
        }
        json!({
            "openapi": "3.0.0",
            "info": {"title": "Kubernetes", "version": KUBERNETES_VERSION},
            "paths": paths,
            "components": {"schemas": self.schemas},
        })
    }
}

/// Every `$ref` in a document, for tests that check each one resolves.
#[cfg(test)]
pub(crate) fn collect_refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::Object(object) => {
            for (key, value) in object {
                match (key.as_str(), value) {
                    ("$ref", Value::String(reference)) => out.push(reference),
                    _ => collect_refs(value, out),
                }
            }
        }
        Value::Array(values) => values.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::resources::{GROUPS, versions_of};

    const RBAC: &str = "rbac.authorization.k8s.io";

    fn core() -> Value {
        group_version_document("", "v1").unwrap()
    }

    fn all_documents() -> Vec<(String, Value)> {
        let mut docs = Vec::new();
        for group in GROUPS {
            for version in versions_of(group) {
                docs.push((
                    gv_path(group, version),
                    group_version_document(group, version).unwrap(),
                ));
            }
        }
        docs
    }

    fn param_names(op: &Value) -> Vec<&str> {
        op["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["in"] == "query")
            .map(|p| p["name"].as_str().unwrap())
            .collect()
    }

    /// Every operation of a document, with its path and method.
    fn operations(doc: &Value) -> Vec<(&str, &str, &Value)> {
        let mut ops = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                if method != "parameters" {
                    ops.push((path.as_str(), method.as_str(), op));
                }
            }
        }
        ops
    }

    #[test]
    fn core_document_has_service_account_schema() {
        let doc = core();
        assert_eq!(doc["openapi"], "3.0.0");
        assert_eq!(doc["info"], json!({"title": "Kubernetes", "version": "v1.35.0"}));
        let schemas = &doc["components"]["schemas"];
        let sa = &schemas["io.k8s.api.core.v1.ServiceAccount"];
        assert_eq!(
            sa[GVK],
            json!([{"group": "", "version": "v1", "kind": "ServiceAccount"}])
        );
        assert_eq!(sa["type"], "object");
        let automount = &sa["properties"]["automountServiceAccountToken"];
        assert_eq!(automount["type"], "boolean");
        assert!(automount["description"].as_str().unwrap().contains("API token"));
        // Upstream does not require metadata; k8s-openapi's schema did.
        assert!(sa.get("required").is_none());
        assert_eq!(
            schemas["io.k8s.api.core.v1.Event"]["required"],
            json!(["involvedObject", "metadata"])
        );
        // metadata is a $ref with a description, as allOf.
        assert_eq!(
            sa["properties"]["metadata"]["allOf"],
            json!([{"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}])
        );
        // The token subresource's kind is in core's document, with its own group.
        assert_eq!(
            schemas["io.k8s.api.authentication.v1.TokenRequest"][GVK],
            json!([{"group": "authentication.k8s.io", "version": "v1", "kind": "TokenRequest"}])
        );
        let list = &schemas["io.k8s.api.core.v1.ServiceAccountList"];
        assert_eq!(
            list[GVK],
            json!([{"group": "", "version": "v1", "kind": "ServiceAccountList"}])
        );
        assert_eq!(
            list["properties"]["items"]["items"]["$ref"],
            "#/components/schemas/io.k8s.api.core.v1.ServiceAccount"
        );
        assert!(group_version_document("apps", "v1").is_none());
        assert!(group_version_document(RBAC, "v1beta1").is_none());
    }

    #[test]
    fn refs_resolve_within_each_document() {
        for (path, doc) in all_documents() {
            let schemas = doc["components"]["schemas"].as_object().unwrap();
            let mut refs = Vec::new();
            collect_refs(&doc, &mut refs);
            assert!(refs.len() > 10, "{path}");
            for reference in refs {
                let name = reference
                    .strip_prefix(SCHEMA_PREFIX)
                    .unwrap_or_else(|| panic!("{path}: {reference}"));
                assert!(schemas.contains_key(name), "{path}: {reference} does not resolve");
            }
        }
    }

    #[test]
    fn service_account_operations() {
        let doc = core();
        let item = &doc["paths"]["/api/v1/namespaces/{namespace}/serviceaccounts/{name}"];
        let patch = &item["patch"];
        assert_eq!(patch["operationId"], "patchCoreV1NamespacedServiceAccount");
        assert_eq!(patch["x-kubernetes-action"], "patch");
        assert_eq!(
            patch[GVK],
            json!({"group": "", "version": "v1", "kind": "ServiceAccount"})
        );
        assert_eq!(
            param_names(patch),
            ["dryRun", "fieldManager", "fieldValidation", "force"]
        );
        let content: Vec<&String> = patch["requestBody"]["content"]
            .as_object()
            .unwrap()
            .keys()
            .collect();
        assert_eq!(
            content,
            [
                "application/apply-patch+yaml",
                "application/json-patch+json",
                "application/merge-patch+json"
            ]
        );
        assert_eq!(item["get"]["operationId"], "readCoreV1NamespacedServiceAccount");
        assert_eq!(
            item["put"]["operationId"],
            "replaceCoreV1NamespacedServiceAccount"
        );
        assert_eq!(
            param_names(&item["put"]),
            ["dryRun", "fieldManager", "fieldValidation"]
        );
        assert_eq!(
            item["delete"]["operationId"],
            "deleteCoreV1NamespacedServiceAccount"
        );
        let path_params: Vec<&Value> = item["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| &p["name"])
            .collect();
        assert_eq!(
            path_params,
            [&json!("name"), &json!("namespace"), &json!("pretty")]
        );

        let collection = &doc["paths"]["/api/v1/namespaces/{namespace}/serviceaccounts"];
        assert_eq!(
            collection["post"]["operationId"],
            "createCoreV1NamespacedServiceAccount"
        );
        assert_eq!(collection["post"]["x-kubernetes-action"], "post");
        assert_eq!(
            param_names(&collection["post"]),
            ["dryRun", "fieldManager", "fieldValidation"]
        );
        assert_eq!(
            collection["get"]["operationId"],
            "listCoreV1NamespacedServiceAccount"
        );
        assert_eq!(collection["get"]["x-kubernetes-action"], "list");
        assert_eq!(
            collection["delete"]["operationId"],
            "deleteCoreV1CollectionNamespacedServiceAccount"
        );
        assert_eq!(collection["delete"]["x-kubernetes-action"], "deletecollection");
        assert_eq!(
            doc["paths"]["/api/v1/serviceaccounts"]["get"]["operationId"],
            "listCoreV1ServiceAccountForAllNamespaces"
        );

        let token = &doc["paths"]["/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token"];
        assert_eq!(
            token["post"]["operationId"],
            "createCoreV1NamespacedServiceAccountToken"
        );
        assert_eq!(
            token["post"][GVK],
            json!({"group": "authentication.k8s.io", "version": "v1", "kind": "TokenRequest"})
        );
        assert_eq!(token.as_object().unwrap().len(), 2, "only post and parameters");
    }

    #[test]
    fn namespace_paths_and_subresources() {
        let doc = core();
        let paths = &doc["paths"];
        assert_eq!(
            paths["/api/v1/namespaces"]["post"]["operationId"],
            "createCoreV1Namespace"
        );
        // Namespaces have no deletecollection.
        assert!(paths["/api/v1/namespaces"].get("delete").is_none());
        assert_eq!(
            paths["/api/v1/namespaces/{name}"]["patch"]["operationId"],
            "patchCoreV1Namespace"
        );
        let finalize = &paths["/api/v1/namespaces/{name}/finalize"];
        assert_eq!(finalize["put"]["operationId"], "replaceCoreV1NamespaceFinalize");
        assert!(finalize.get("get").is_none());
        let status = &paths["/api/v1/namespaces/{name}/status"];
        assert_eq!(status["get"]["operationId"], "readCoreV1NamespaceStatus");
        assert_eq!(status["put"]["operationId"], "replaceCoreV1NamespaceStatus");
        assert_eq!(status["patch"]["operationId"], "patchCoreV1NamespaceStatus");
        assert_eq!(
            status["patch"][GVK],
            json!({"group": "", "version": "v1", "kind": "Namespace"})
        );
        assert_eq!(
            paths["/api/v1/namespaces/{namespace}/pods/{name}/status"]["patch"]["operationId"],
            "patchCoreV1NamespacedPodStatus"
        );
    }

    #[test]
    fn group_operations_and_virtual_resources() {
        let rbac = group_version_document(RBAC, "v1").unwrap();
        let paths = &rbac["paths"];
        assert_eq!(
            paths["/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles/{name}"]["patch"]["operationId"],
            "patchRbacAuthorizationV1NamespacedRole"
        );
        assert_eq!(
            paths["/apis/rbac.authorization.k8s.io/v1/clusterrolebindings"]["post"]["operationId"],
            "createRbacAuthorizationV1ClusterRoleBinding"
        );
        assert_eq!(
            paths["/apis/rbac.authorization.k8s.io/v1/clusterroles"]["post"]["tags"],
            json!(["rbacAuthorization_v1"])
        );
        assert_eq!(
            rbac["components"]["schemas"]["io.k8s.api.rbac.v1.ClusterRole"][GVK],
            json!([{"group": RBAC, "version": "v1", "kind": "ClusterRole"}])
        );

        let authz = group_version_document("authorization.k8s.io", "v1").unwrap();
        let paths = authz["paths"].as_object().unwrap();
        let ssar = &paths["/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"];
        assert_eq!(
            ssar["post"]["operationId"],
            "createAuthorizationV1SelfSubjectAccessReview"
        );
        assert_eq!(ssar.as_object().unwrap().len(), 2, "only post and parameters");
        assert_eq!(
            paths["/apis/authorization.k8s.io/v1/namespaces/{namespace}/localsubjectaccessreviews"]["post"]["operationId"],
            "createAuthorizationV1NamespacedLocalSubjectAccessReview"
        );
        // Create-only resources have no item paths and no lists.
        assert!(paths.keys().all(|p| !p.ends_with("{name}")));
        assert!(
            authz["components"]["schemas"]
                .get("io.k8s.api.authorization.v1.SelfSubjectAccessReviewList")
                .is_none()
        );
    }

    #[test]
    fn every_write_declares_validation_and_no_strategic_merge() {
        for (path, doc) in all_documents() {
            for (op_path, method, op) in operations(&doc) {
                let gvk = op[GVK]
                    .as_object()
                    .unwrap_or_else(|| panic!("{op_path} {method}: GVK not an object"));
                assert!(gvk.contains_key("group") && gvk.contains_key("version") && gvk.contains_key("kind"));
                assert!(op["operationId"].is_string() && op["x-kubernetes-action"].is_string());
                let names = param_names(op);
                match method {
                    "patch" => {
                        assert_eq!(
                            names,
                            ["dryRun", "fieldManager", "fieldValidation", "force"],
                            "{path} {op_path}"
                        );
                        let content = op["requestBody"]["content"].as_object().unwrap();
                        assert!(!content.contains_key("application/strategic-merge-patch+json"));
                    }
                    "post" | "put" => {
                        assert_eq!(
                            names,
                            ["dryRun", "fieldManager", "fieldValidation"],
                            "{path} {op_path}"
                        );
                    }
                    _ => {}
                }
            }
        }
    }

    #[test]
    fn index_hashes_match_documents() {
        let index = index();
        let paths = index["paths"].as_object().unwrap();
        assert!(paths.contains_key("api/v1"));
        assert!(paths.contains_key("apis/rbac.authorization.k8s.io/v1"));
        assert_eq!(serde_json::from_slice::<Value>(index_bytes()).unwrap(), index);
        for (path, entry) in paths {
            let url = entry["serverRelativeURL"].as_str().unwrap();
            let bytes = document_bytes(path).unwrap();
            let hash = hash_hex(bytes);
            assert_eq!(url, format!("/openapi/v3/{path}?hash={hash}"));
            assert_eq!(document_hash(path), Some(hash.as_str()));
            assert!(hash.chars().all(|c| c.is_ascii_digit() || c.is_ascii_uppercase()));
            // The cached bytes are the document, and generation is deterministic.
            let (group, version) = match path.split('/').collect::<Vec<_>>().as_slice() {
                ["api", version] => (String::new(), version.to_string()),
                ["apis", group, version] => (group.to_string(), version.to_string()),
                _ => panic!("{path}"),
            };
            let doc = group_version_document(&group, &version).unwrap();
            assert_eq!(serde_json::from_slice::<Value>(bytes).unwrap(), doc);
        }
        assert_eq!(paths.len(), cache().documents.len());
        assert!(document_bytes("/api/v1").is_some());
        assert!(document_bytes("apis/apps/v1").is_none());
    }

    /// The keywords of an OpenAPI 3.0 Schema Object; anything else must be an `x-` extension.
    const OPENAPI30_KEYWORDS: &[&str] = &[
        "title",
        "multipleOf",
        "maximum",
        "exclusiveMaximum",
        "minimum",
        "exclusiveMinimum",
        "maxLength",
        "minLength",
        "pattern",
        "maxItems",
        "minItems",
        "uniqueItems",
        "maxProperties",
        "minProperties",
        "required",
        "enum",
        "type",
        "allOf",
        "oneOf",
        "anyOf",
        "not",
        "items",
        "properties",
        "additionalProperties",
        "description",
        "format",
        "default",
        "nullable",
        "discriminator",
        "readOnly",
        "writeOnly",
        "xml",
        "externalDocs",
        "example",
        "deprecated",
        "$ref",
    ];

    fn check_schema(schema: &Value, at: &str) {
        let object = schema
            .as_object()
            .unwrap_or_else(|| panic!("{at}: boolean or non-object schema"));
        for (key, value) in object {
            assert!(
                OPENAPI30_KEYWORDS.contains(&key.as_str()) || key.starts_with("x-"),
                "{at}: keyword {key} is not OpenAPI 3.0"
            );
            if key == "type" {
                assert!(value.is_string(), "{at}: type must be a string");
            }
            if key == "exclusiveMinimum" || key == "exclusiveMaximum" {
                assert!(value.is_boolean(), "{at}: {key} must be a boolean in 3.0");
            }
        }
        if object.contains_key("$ref") {
            assert_eq!(object.len(), 1, "{at}: $ref with siblings");
        }
        for key in ["items", "not"] {
            if let Some(sub) = object.get(key) {
                check_schema(sub, &format!("{at}/{key}"));
            }
        }
        if let Some(sub) = object.get("additionalProperties")
            && !sub.is_boolean()
        {
            check_schema(sub, &format!("{at}/additionalProperties"));
        }
        for key in ["allOf", "anyOf", "oneOf"] {
            if let Some(subs) = object.get(key) {
                for (i, sub) in subs.as_array().unwrap().iter().enumerate() {
                    check_schema(sub, &format!("{at}/{key}/{i}"));
                }
            }
        }
        if let Some(properties) = object.get("properties") {
            for (name, sub) in properties.as_object().unwrap() {
                check_schema(sub, &format!("{at}/{name}"));
            }
        }
    }

    #[test]
    fn documents_are_openapi_30() {
        for (path, doc) in all_documents() {
            let text = doc.to_string();
            assert!(!text.contains("\"$defs\""), "{path}");
            assert!(!text.contains("\"$schema\""), "{path}");
            for (name, schema) in doc["components"]["schemas"].as_object().unwrap() {
                check_schema(schema, &format!("{path}#{name}"));
            }
            for (op_path, method, op) in operations(&doc) {
                for param in op["parameters"].as_array().into_iter().flatten() {
                    check_schema(&param["schema"], &format!("{op_path} {method}"));
                }
            }
        }
    }

    #[test]
    fn json_schema_2020_constructs_are_rewritten() {
        let mut schema = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "properties": {
                "a": {"type": ["string", "null"], "const": "x"},
                "b": {"$ref": "#/components/schemas/B", "description": "b"},
                "c": true,
                "d": {"type": "array", "items": false, "examples": [1, 2]},
                "e": {"type": "object", "additionalProperties": true},
            },
        });
        to_openapi30(&mut schema);
        assert_eq!(
            schema,
            json!({
                "type": "object",
                "properties": {
                    "a": {"type": "string", "nullable": true, "enum": ["x"]},
                    "b": {"allOf": [{"$ref": "#/components/schemas/B"}], "description": "b"},
                    "c": {},
                    "d": {"type": "array", "items": {"not": {}}, "example": 1},
                    "e": {"type": "object", "additionalProperties": true},
                },
            })
        );
        check_schema(&schema, "synthetic");
    }

    #[test]
    fn operation_prefixes() {
        assert_eq!(operation_prefix("", "v1"), "CoreV1");
        assert_eq!(operation_prefix(RBAC, "v1"), "RbacAuthorizationV1");
        assert_eq!(operation_prefix("coordination.k8s.io", "v1"), "CoordinationV1");
        assert_eq!(
            operation_prefix("flowcontrol.apiserver.k8s.io", "v1beta3"),
            "FlowcontrolApiserverV1beta3"
        );
        assert_eq!(operation_tag("", "v1"), "core_v1");
        assert_eq!(operation_tag(RBAC, "v1"), "rbacAuthorization_v1");
    }
}
