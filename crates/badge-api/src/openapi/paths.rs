//! Paths and operations: the operations, parameters, bodies and responses of each resource
//! and subresource path, as upstream's generated documents name them.

use crate::resources::{Resource, Storage, Subresource};

use super::*;

/// `CoreV1`, `RbacAuthorizationV1`: the group (without `.k8s.io`) and version in camel
/// case, as upstream's operation IDs spell them.
pub(super) fn operation_prefix(group: &str, version: &str) -> String {
    let group = if group.is_empty() {
        "core"
    } else {
        group.strip_suffix(".k8s.io").unwrap_or(group)
    };
    let mut prefix: String = group.split(['.', '-']).map(capitalize).collect();
    prefix.push_str(&capitalize(version));
    prefix
}

/// Upstream's operation tags: `core_v1`, `rbacAuthorization_v1`.
pub(super) fn operation_tag(group: &str, version: &str) -> String {
    let prefix = operation_prefix(group, version);
    let group_part = prefix.strip_suffix(&capitalize(version)).unwrap_or(&prefix);
    let mut chars = group_part.chars();
    let lower: String = chars
        .next()
        .map(|c| c.to_ascii_lowercase())
        .into_iter()
        .chain(chars)
        .collect();
    format!("{lower}_{version}")
}

pub(super) fn capitalize(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|c| c.to_ascii_uppercase())
        .into_iter()
        .chain(chars)
        .collect()
}

pub(super) fn query_param(name: &'static str, ty: &'static str, description: &str) -> Param {
    Param {
        name,
        location: "query",
        description: description.to_string(),
        ty,
    }
}

pub(super) fn path_param(name: &'static str, description: &str) -> Param {
    Param {
        name,
        location: "path",
        description: description.to_string(),
        ty: "string",
    }
}

pub(super) fn pretty_param() -> Param {
    query_param(
        "pretty",
        "string",
        "If 'true', then the output is pretty printed. Defaults to 'false' unless the user-agent indicates a browser or command-line HTTP tool (curl and wget).",
    )
}

pub(super) fn dry_run_param() -> Param {
    query_param(
        "dryRun",
        "string",
        "When present, indicates that modifications should not be persisted. An invalid or unrecognized dryRun directive will result in an error response and no further processing of the request. Valid values are: - All: all dry run stages will be processed",
    )
}

pub(super) fn field_manager_param(patch: bool) -> Param {
    let description = if patch {
        "fieldManager is a name associated with the actor or entity that is making these changes. The value must be less than or 128 characters long, and only contain printable characters, as defined by https://golang.org/pkg/unicode/#IsPrint. This field is required for apply requests (application/apply-patch) but optional for non-apply patch types (JsonPatch, MergePatch, StrategicMergePatch)."
    } else {
        "fieldManager is a name associated with the actor or entity that is making these changes. The value must be less than or 128 characters long, and only contain printable characters, as defined by https://golang.org/pkg/unicode/#IsPrint."
    };
    query_param("fieldManager", "string", description)
}

pub(super) fn field_validation_param() -> Param {
    query_param(
        "fieldValidation",
        "string",
        "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore: This will ignore any unknown fields that are silently dropped from the object, and will ignore all but the last duplicate field that the decoder encounters. This is the default behavior prior to v1.23. - Warn: This will send a warning via the standard warning response header for each unknown field that is dropped from the object, and for each duplicate field that is encountered. The request will still succeed if there are no other errors, and will only persist the last of any duplicate fields. This is the default in v1.23+ - Strict: This will fail the request with a BadRequest error if any unknown fields would be dropped from the object, or if any duplicate fields are present. The error returned from the server will contain all unknown and duplicate fields encountered.",
    )
}

pub(super) fn write_params() -> Vec<Param> {
    vec![
        dry_run_param(),
        field_manager_param(false),
        field_validation_param(),
    ]
}

pub(super) fn patch_params() -> Vec<Param> {
    vec![
        dry_run_param(),
        field_manager_param(true),
        field_validation_param(),
        query_param(
            "force",
            "boolean",
            "Force is going to \"force\" Apply requests. It means user will re-acquire conflicting fields owned by other people. Force flag must be unset for non-apply patch requests.",
        ),
    ]
}

pub(super) fn delete_params() -> Vec<Param> {
    vec![
        dry_run_param(),
        query_param(
            "gracePeriodSeconds",
            "integer",
            "The duration in seconds before the object should be deleted. Value must be non-negative integer. The value zero indicates delete immediately. If this value is nil, the default grace period for the specified type will be used. Defaults to a per object value if not specified. zero means delete immediately.",
        ),
        query_param(
            "orphanDependents",
            "boolean",
            "Deprecated: please use the PropagationPolicy, this field will be deprecated in 1.7. Should the dependent objects be orphaned. If true/false, the \"orphan\" finalizer will be added to/removed from the object's finalizers list. Either this field or PropagationPolicy may be set, but not both.",
        ),
        query_param(
            "propagationPolicy",
            "string",
            "Whether and how garbage collection will be performed. Either this field or OrphanDependents may be set, but not both. The default policy is decided by the existing finalizer set in the metadata.finalizers and the resource-specific default policy. Acceptable values are: 'Orphan' - orphan the dependents; 'Background' - allow the garbage collector to delete the dependents in the background; 'Foreground' - a cascading policy that deletes all dependents in the foreground.",
        ),
    ]
}

pub(super) fn list_params() -> Vec<Param> {
    vec![
        query_param(
            "allowWatchBookmarks",
            "boolean",
            "allowWatchBookmarks requests watch events with type \"BOOKMARK\". Servers that do not implement bookmarks may ignore this flag and bookmarks are sent at the server's discretion. Clients should not assume bookmarks are returned at any specific interval, nor may they assume the server will send any BOOKMARK event during a session. If this is not a watch, this field is ignored.",
        ),
        query_param(
            "continue",
            "string",
            "The continue option should be set when retrieving more results from the server. Since this value is server defined, clients may only use the continue value from a previous query result with identical query parameters (except for the value of continue) and the server may reject a continue value it does not recognize.",
        ),
        query_param(
            "fieldSelector",
            "string",
            "A selector to restrict the list of returned objects by their fields. Defaults to everything.",
        ),
        query_param(
            "labelSelector",
            "string",
            "A selector to restrict the list of returned objects by their labels. Defaults to everything.",
        ),
        query_param(
            "limit",
            "integer",
            "limit is a maximum number of responses to return for a list call. If more items exist, the server will set the `continue` field on the list metadata to a value that can be used with the same initial query to retrieve the next set of results.",
        ),
        query_param(
            "resourceVersion",
            "string",
            "resourceVersion sets a constraint on what resource versions a request may be served from. See https://kubernetes.io/docs/reference/using-api/api-concepts/#resource-versions for details.\n\nDefaults to unset",
        ),
        query_param(
            "resourceVersionMatch",
            "string",
            "resourceVersionMatch determines how resourceVersion is applied to list calls. It is highly recommended that resourceVersionMatch be set for list calls where resourceVersion is set See https://kubernetes.io/docs/reference/using-api/api-concepts/#resource-versions for details.\n\nDefaults to unset",
        ),
        query_param(
            "sendInitialEvents",
            "boolean",
            "`sendInitialEvents=true` may be set together with `watch=true`. In that case, the watch stream will begin with synthetic events to produce the current state of objects in the collection. Once all such events have been sent, a synthetic \"Bookmark\" event will be sent.",
        ),
        query_param(
            "timeoutSeconds",
            "integer",
            "Timeout for the list/watch call. This limits the duration of the call, regardless of any activity or inactivity.",
        ),
        query_param(
            "watch",
            "boolean",
            "Watch for changes to the described resources and return them as a stream of add, update, and remove notifications. Specify resourceVersion.",
        ),
    ]
}

pub(super) const JSON: &[&str] = &["application/json"];
pub(super) const ANY: &[&str] = &["*/*"];
/// Patch types badge accepts; strategic merge is left out on purpose (see the module docs).
pub(super) const PATCH_TYPES: &[&str] = &[
    "application/apply-patch+yaml",
    "application/json-patch+json",
    "application/merge-patch+json",
];
pub(super) const LIST_TYPES: &[&str] = &["application/json", "application/json;stream=watch"];

pub(super) fn body(schema_ref: &str) -> Option<Body> {
    Some(Body {
        schema_ref: schema_ref.to_string(),
        required: true,
        media_types: ANY,
    })
}

pub(super) fn delete_body(delete_options_ref: &str) -> Option<Body> {
    Some(Body {
        schema_ref: delete_options_ref.to_string(),
        required: false,
        media_types: ANY,
    })
}

pub(super) fn patch_body(patch_ref: &str) -> Option<Body> {
    Some(Body {
        schema_ref: patch_ref.to_string(),
        required: true,
        media_types: PATCH_TYPES,
    })
}

pub(super) fn unauthorized() -> Reply {
    Reply {
        code: "401",
        description: "Unauthorized",
        schema_ref: None,
        media_types: &[],
    }
}

pub(super) fn responses(codes: &[(&'static str, &'static str)], schema_ref: &str) -> Vec<Reply> {
    let mut out: Vec<Reply> = codes
        .iter()
        .map(|(code, description)| Reply {
            code,
            description,
            schema_ref: Some(schema_ref.to_string()),
            media_types: JSON,
        })
        .collect();
    out.push(unauthorized());
    out
}

pub(super) const OK: (&str, &str) = ("200", "OK");
pub(super) const CREATED: (&str, &str) = ("201", "Created");
pub(super) const ACCEPTED: (&str, &str) = ("202", "Accepted");

pub(super) fn add_resource_paths(
    paths: &mut Vec<PathItem>,
    r: &Resource,
    kind_ref: &str,
    list_ref: &str,
    refs: &Refs,
) {
    let base = format!("/{}", gv_path(r.group, r.version));
    let (collection, scope) = if r.namespaced {
        (
            format!("{base}/namespaces/{{namespace}}/{}", r.plural),
            "Namespaced",
        )
    } else {
        (format!("{base}/{}", r.plural), "")
    };
    let item = format!("{collection}/{{name}}");
    let gvk = Gvk::new(r.group, r.version, r.kind);
    let prefix = operation_prefix(r.group, r.version);
    let tag = operation_tag(r.group, r.version);
    let subject = format!("{scope}{}", r.kind);
    let op = |id_verb: &'static str, id_subject: String, action: &'static str, description: String| Op {
        id_verb,
        id_subject,
        action,
        gvk: gvk.clone(),
        description,
        parameters: Vec::new(),
        body: None,
        responses: Vec::new(),
        tag: tag.clone(),
        prefix: prefix.clone(),
    };
    let mut scope_params = Vec::new();
    if r.namespaced {
        scope_params.push(path_param(
            "namespace",
            "object name and auth scope, such as for teams and projects",
        ));
    }

    let mut collection_ops = Vec::new();
    if r.allows("list") {
        let mut list = op(
            "list",
            subject.clone(),
            "list",
            format!("list or watch objects of kind {}", r.kind),
        );
        list.parameters = list_params();
        list.responses = list_responses(list_ref);
        collection_ops.push(("get", list));
    }
    if r.allows("create") {
        let mut create = op(
            "create",
            subject.clone(),
            "post",
            format!("create {}", article(r.kind)),
        );
        create.parameters = write_params();
        create.body = body(kind_ref);
        create.responses = if r.storage == Storage::Virtual {
            responses(&[OK, CREATED], kind_ref)
        } else {
            responses(&[OK, CREATED, ACCEPTED], kind_ref)
        };
        collection_ops.push(("post", create));
    }
    if r.allows("deletecollection") {
        let mut delete = op(
            "delete",
            format!("Collection{subject}"),
            "deletecollection",
            format!("delete collection of {}", r.kind),
        );
        delete.parameters = delete_params();
        delete.parameters.extend(
            list_params()
                .into_iter()
                .filter(|p| p.name != "watch" && p.name != "allowWatchBookmarks"),
        );
        delete.body = delete_body(&refs.delete_options);
        delete.responses = responses(&[OK], &refs.status);
        collection_ops.push(("delete", delete));
    }
    insert_path(
        paths,
        collection,
        collection_ops,
        scope_params.iter().cloned().chain([pretty_param()]).collect(),
    );

    if r.namespaced && r.allows("list") {
        let mut list = op(
            "list",
            format!("{}ForAllNamespaces", r.kind),
            "list",
            format!("list or watch objects of kind {}", r.kind),
        );
        list.parameters = list_params();
        list.parameters.push(pretty_param());
        list.responses = list_responses(list_ref);
        let ops = vec![("get", list)];
        insert_path(paths, format!("{base}/{}", r.plural), ops, Vec::new());
    }

    let mut item_ops = Vec::new();
    if r.allows("get") {
        let mut read = op(
            "read",
            subject.clone(),
            "get",
            format!("read the specified {}", r.kind),
        );
        read.responses = responses(&[OK], kind_ref);
        item_ops.push(("get", read));
    }
    if r.allows("update") {
        let mut replace = op(
            "replace",
            subject.clone(),
            "put",
            format!("replace the specified {}", r.kind),
        );
        replace.parameters = write_params();
        replace.body = body(kind_ref);
        replace.responses = responses(&[OK, CREATED], kind_ref);
        item_ops.push(("put", replace));
    }
    if r.allows("patch") {
        let mut patch = op(
            "patch",
            subject.clone(),
            "patch",
            format!("partially update the specified {}", r.kind),
        );
        patch.parameters = patch_params();
        patch.body = patch_body(&refs.patch);
        patch.responses = responses(&[OK, CREATED], kind_ref);
        item_ops.push(("patch", patch));
    }
    if r.allows("delete") {
        let mut delete = op(
            "delete",
            subject.clone(),
            "delete",
            format!("delete {}", article(r.kind)),
        );
        delete.parameters = delete_params();
        delete.body = delete_body(&refs.delete_options);
        delete.responses = responses(&[OK, ACCEPTED], &refs.status);
        item_ops.push(("delete", delete));
    }
    let mut item_params = vec![path_param("name", &format!("name of the {}", r.kind))];
    item_params.extend(scope_params);
    item_params.push(pretty_param());
    insert_path(paths, item, item_ops, item_params);
}

pub(super) fn add_subresource_paths(
    paths: &mut Vec<PathItem>,
    r: &Resource,
    sub: &Subresource,
    sub_ref: &str,
    refs: &Refs,
) {
    let base = format!("/{}", gv_path(r.group, r.version));
    let (path, scope) = if r.namespaced {
        (
            format!(
                "{base}/namespaces/{{namespace}}/{}/{{name}}/{}",
                r.plural, sub.name
            ),
            "Namespaced",
        )
    } else {
        (format!("{base}/{}/{{name}}/{}", r.plural, sub.name), "")
    };
    let gvk = Gvk::new(sub.group, sub.version, sub.kind);
    let subject = format!("{scope}{}{}", r.kind, capitalize(sub.name));
    let prefix = operation_prefix(r.group, r.version);
    let tag = operation_tag(r.group, r.version);
    let what = format!("{} of the specified {}", sub.name, r.kind);
    let mut ops = Vec::new();
    for verb in sub.verbs {
        let (method, id_verb, action, description) = match *verb {
            "get" => ("get", "read", "get", format!("read {what}")),
            "update" => ("put", "replace", "put", format!("replace {what}")),
            "patch" => ("patch", "patch", "patch", format!("partially update {what}")),
            "create" => (
                "post",
                "create",
                "post",
                format!("create {} of {}", sub.name, article(r.kind)),
            ),
            _ => continue,
        };
        let (parameters, request_body, codes): (_, _, &[_]) = match method {
            "put" => (write_params(), body(sub_ref), &[OK, CREATED]),
            "patch" => (patch_params(), patch_body(&refs.patch), &[OK, CREATED]),
            "post" => (write_params(), body(sub_ref), &[OK, CREATED, ACCEPTED]),
            _ => (Vec::new(), None, &[OK]),
        };
        let op = Op {
            id_verb,
            id_subject: subject.clone(),
            action,
            gvk: gvk.clone(),
            description,
            parameters,
            body: request_body,
            responses: responses(codes, sub_ref),
            tag: tag.clone(),
            prefix: prefix.clone(),
        };
        ops.push((method, op));
    }
    let mut params = vec![path_param("name", &format!("name of the {}", sub.kind))];
    if r.namespaced {
        params.push(path_param(
            "namespace",
            "object name and auth scope, such as for teams and projects",
        ));
    }
    params.push(pretty_param());
    insert_path(paths, path, ops, params);
}

pub(super) fn list_responses(list_ref: &str) -> Vec<Reply> {
    vec![
        Reply {
            code: "200",
            description: "OK",
            schema_ref: Some(list_ref.to_string()),
            media_types: LIST_TYPES,
        },
        unauthorized(),
    ]
}

pub(super) fn insert_path(
    paths: &mut Vec<PathItem>,
    path: String,
    operations: Vec<(&'static str, Op)>,
    parameters: Vec<Param>,
) {
    if operations.is_empty() {
        return;
    }
    paths.push(PathItem {
        path,
        parameters,
        operations,
    });
}

pub(super) fn article(kind: &str) -> String {
    let vowel = kind.starts_with(['A', 'E', 'I', 'O', 'U']);
    format!("{} {kind}", if vowel { "an" } else { "a" })
}
