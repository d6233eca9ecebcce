//! `meta.k8s.io/v1` Table responses for `kubectl get`, with upstream's columns
//! (`pkg/printers/internalversion/printers.go`).

use badge_api::meta;
use serde_json::{Value, json};

struct Column {
    name: &'static str,
    kind: &'static str,
    format: &'static str,
    description: &'static str,
    priority: u8,
}

const fn col(name: &'static str, kind: &'static str, description: &'static str) -> Column {
    Column {
        name,
        kind,
        format: "",
        description,
        priority: 0,
    }
}

const fn wide(name: &'static str, kind: &'static str, description: &'static str) -> Column {
    Column {
        name,
        kind,
        format: "",
        description,
        priority: 1,
    }
}

const NAME: Column = Column {
    name: "Name",
    kind: "string",
    format: "name",
    description: "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names",
    priority: 0,
};
const AGE: Column = col(
    "Age",
    "string",
    "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata",
);

fn columns(resource: &str) -> Vec<Column> {
    match resource {
        "namespaces" => vec![NAME, col("Status", "string", "The status of the namespace"), AGE],
        "serviceaccounts" => vec![
            NAME,
            col(
                "Secrets",
                "integer",
                "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use.",
            ),
            AGE,
        ],
        "secrets" => vec![
            NAME,
            col("Type", "string", "The type of the secret"),
            col("Data", "string", "The number of data entries in the secret"),
            AGE,
        ],
        "configmaps" => vec![
            NAME,
            col("Data", "string", "The number of data entries in the configmap"),
            AGE,
        ],
        "pods" => vec![
            NAME,
            col(
                "Ready",
                "string",
                "The aggregate readiness state of this pod for accepting traffic.",
            ),
            col(
                "Status",
                "string",
                "The aggregate status of the containers in this pod.",
            ),
            col(
                "Restarts",
                "string",
                "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
            ),
            AGE,
            wide("IP", "string", "The IP address assigned to the pod"),
            wide(
                "Node",
                "string",
                "The name of the node to which the pod is assigned",
            ),
            wide(
                "Nominated Node",
                "string",
                "The name of the node that the pod is nominated to run on",
            ),
            wide("Readiness Gates", "string", "The readiness gates of the pod"),
        ],
        "nodes" => vec![
            NAME,
            col("Status", "string", "The status of the node"),
            col("Roles", "string", "The roles of the node"),
            AGE,
            col("Version", "string", "Kubelet Version reported by the node."),
        ],
        "events" => vec![
            col("Last Seen", "string", "Time when this Event was last observed."),
            col(
                "Type",
                "string",
                "Type of this event (Normal, Warning), new types could be added in the future.",
            ),
            col(
                "Reason",
                "string",
                "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.",
            ),
            col("Object", "string", "The object that this event is about."),
            col(
                "Message",
                "string",
                "A human-readable description of the status of this operation.",
            ),
        ],
        "roles" | "clusterroles" => vec![NAME, col("Created At", "date", "")],
        "rolebindings" | "clusterrolebindings" => vec![
            NAME,
            col("Role", "string", "Role of the binding"),
            AGE,
            wide("Users", "string", "Users in the binding"),
            wide("Groups", "string", "Groups in the binding"),
            wide("ServiceAccounts", "string", "ServiceAccounts in the binding"),
        ],
        "leases" => vec![NAME, col("Holder", "string", "Name of the Lease holder"), AGE],
        "certificatesigningrequests" => vec![
            NAME,
            AGE,
            col(
                "SignerName",
                "string",
                "signerName indicates the requested signer, and is a qualified name.",
            ),
            col("Requestor", "string", "Name of the user which made this request."),
            col(
                "RequestedDuration",
                "string",
                "expirationSeconds is the requested duration of validity of the issued certificate.",
            ),
            col(
                "Condition",
                "string",
                "State of the request, e.g. Pending, Approved, Denied, Failed...",
            ),
        ],
        "issuedtokens" => vec![
            NAME,
            col(
                "Service Account",
                "string",
                "The ServiceAccount the token authenticates as.",
            ),
            col("Bound To", "string", "The object the token is bound to."),
            col("Expires", "string", "How long until the token expires."),
            col(
                "Last Used",
                "string",
                "How long ago the token last authenticated.",
            ),
            col("Uses", "integer", "How many times the token authenticated."),
            col("Revoked", "boolean", "Whether the token has been revoked."),
            wide("Key ID", "string", "The key that signed the token."),
            wide("Requester", "string", "Who asked for the token."),
            AGE,
        ],
        "tokenpolicies" => vec![
            NAME,
            col(
                "Max Expiration",
                "integer",
                "The longest token lifetime issued, in seconds.",
            ),
            col("Audiences", "string", "The audiences a token may carry."),
            col("Bound To", "string", "The kinds a token must be bound to."),
            AGE,
        ],
        "serviceaccountusages" => vec![
            NAME,
            col(
                "Last Authenticated",
                "string",
                "How long ago the ServiceAccount last authenticated.",
            ),
            col(
                "Credential",
                "string",
                "The credential it last authenticated with.",
            ),
            col(
                "Last Token Issued",
                "string",
                "How long ago a token was last issued for it.",
            ),
            col("Live Tokens", "integer", "How many of its tokens are live."),
            AGE,
        ],
        _ => vec![NAME, col("Created At", "date", "")],
    }
}

/// How long ago `pointer` (a time) was, or `<never>`.
fn ago(object: &Value, pointer: &str, now: jiff::Timestamp) -> String {
    match meta::parse_time(string_at(object, pointer)) {
        Some(t) => meta::human_duration(now.as_second() - t.as_second()),
        None => "<never>".into(),
    }
}

/// How long until `pointer` (a time) comes, `<expired>` once past, `<never>` when absent.
fn until(object: &Value, pointer: &str, now: jiff::Timestamp) -> String {
    match meta::parse_time(string_at(object, pointer)) {
        Some(t) if t > now => meta::human_duration(t.as_second() - now.as_second()),
        Some(_) => "<expired>".into(),
        None => "<never>".into(),
    }
}

fn age(object: &Value, now: jiff::Timestamp) -> String {
    match meta::parse_time(meta::creation_timestamp(object)) {
        Some(t) => meta::human_duration(now.as_second() - t.as_second()),
        None => "<unknown>".into(),
    }
}

fn count(object: &Value, field: &str) -> usize {
    match object.get(field) {
        Some(Value::Object(m)) => m.len(),
        Some(Value::Array(a)) => a.len(),
        _ => 0,
    }
}

fn string_at<'a>(object: &'a Value, pointer: &str) -> &'a str {
    object.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn or_none(s: String) -> String {
    if s.is_empty() { "<none>".into() } else { s }
}

fn subjects_of_kind(object: &Value, kind: &str) -> String {
    let names: Vec<String> = object
        .get("subjects")
        .and_then(Value::as_array)
        .map(|subjects| {
            subjects
                .iter()
                .filter(|s| s.get("kind").and_then(Value::as_str) == Some(kind))
                .map(|s| {
                    let name = s.get("name").and_then(Value::as_str).unwrap_or("");
                    match (kind, s.get("namespace").and_then(Value::as_str)) {
                        ("ServiceAccount", Some(ns)) => format!("{ns}/{name}"),
                        _ => name.to_string(),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    names.join(", ")
}

fn cells(resource: &str, object: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let name = json!(meta::name(object));
    let age = json!(age(object, now));
    match resource {
        "namespaces" => vec![name, json!(string_at(object, "/status/phase")), age],
        "serviceaccounts" => vec![name, json!(count(object, "secrets")), age],
        "issuedtokens" => {
            let bound = match (
                string_at(object, "/spec/boundObjectRef/kind"),
                string_at(object, "/spec/boundObjectRef/name"),
            ) {
                ("", _) => "<none>".to_string(),
                (kind, name) => format!("{kind}/{name}"),
            };
            vec![
                name,
                json!(string_at(object, "/spec/serviceAccountName")),
                json!(bound),
                json!(until(object, "/spec/expiresAt", now)),
                json!(ago(object, "/status/lastUsed/time", now)),
                json!(
                    object
                        .pointer("/status/useCount")
                        .and_then(Value::as_i64)
                        .unwrap_or(0)
                ),
                json!(
                    object
                        .pointer("/spec/revoked")
                        .and_then(Value::as_bool)
                        .unwrap_or(false)
                ),
                json!(or_none(string_at(object, "/spec/keyID").to_string())),
                json!(or_none(string_at(object, "/spec/requester/username").to_string())),
                age,
            ]
        }
        "tokenpolicies" => {
            let joined = |pointer: &str| {
                let items: Vec<&str> = object
                    .pointer(pointer)
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                or_none(items.join(","))
            };
            vec![
                name,
                object
                    .pointer("/spec/maxExpirationSeconds")
                    .cloned()
                    .unwrap_or(Value::Null),
                json!(joined("/spec/allowedAudiences")),
                json!(joined("/spec/requiredBoundObjectKinds")),
                age,
            ]
        }
        "serviceaccountusages" => vec![
            name,
            json!(ago(object, "/status/lastAuthenticated/time", now)),
            json!(or_none(
                string_at(object, "/status/lastAuthenticated/credentialID").to_string()
            )),
            json!(ago(object, "/status/lastTokenIssued", now)),
            json!(
                object
                    .pointer("/status/liveTokens")
                    .and_then(Value::as_i64)
                    .unwrap_or(0)
            ),
            age,
        ],
        "secrets" => {
            let kind = string_at(object, "/type");
            vec![name, json!(kind), json!(count(object, "data")), age]
        }
        "configmaps" => vec![
            name,
            json!(count(object, "data") + count(object, "binaryData")),
            age,
        ],
        "pods" => {
            let total = object
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            let statuses = object
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array);
            let ready = statuses.map_or(0, |s| {
                s.iter()
                    .filter(|c| c.get("ready").and_then(Value::as_bool) == Some(true))
                    .count()
            });
            let restarts: i64 = statuses.map_or(0, |s| {
                s.iter()
                    .filter_map(|c| c.get("restartCount").and_then(Value::as_i64))
                    .sum()
            });
            let mut phase = string_at(object, "/status/phase").to_string();
            if meta::deletion_timestamp(object).is_some() {
                phase = "Terminating".into();
            }
            vec![
                name,
                json!(format!("{ready}/{total}")),
                json!(phase),
                json!(restarts.to_string()),
                age,
                json!(or_none(string_at(object, "/status/podIP").to_string())),
                json!(or_none(string_at(object, "/spec/nodeName").to_string())),
                json!("<none>"),
                json!("<none>"),
            ]
        }
        "nodes" => {
            let ready = object
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .and_then(|c| {
                    c.iter()
                        .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))
                })
                .and_then(|c| c.get("status").and_then(Value::as_str))
                .map_or("Unknown", |s| if s == "True" { "Ready" } else { "NotReady" });
            vec![
                name,
                json!(ready),
                json!("<none>"),
                age,
                json!(string_at(object, "/status/nodeInfo/kubeletVersion")),
            ]
        }
        "events" => {
            let last = ["/lastTimestamp", "/eventTime", "/metadata/creationTimestamp"]
                .iter()
                .find_map(|p| {
                    object
                        .pointer(p)
                        .and_then(Value::as_str)
                        .and_then(meta::parse_time)
                })
                .map_or("<unknown>".to_string(), |t| {
                    meta::human_duration(now.as_second() - t.as_second())
                });
            let kind = string_at(object, "/involvedObject/kind").to_ascii_lowercase();
            let target = format!("{kind}/{}", string_at(object, "/involvedObject/name"));
            vec![
                json!(last),
                json!(string_at(object, "/type")),
                json!(string_at(object, "/reason")),
                json!(target),
                json!(string_at(object, "/message").trim()),
            ]
        }
        "roles" | "clusterroles" => vec![name, json!(meta::creation_timestamp(object))],
        "rolebindings" | "clusterrolebindings" => {
            let role = format!(
                "{}/{}",
                string_at(object, "/roleRef/kind"),
                string_at(object, "/roleRef/name")
            );
            vec![
                name,
                json!(role),
                age,
                json!(subjects_of_kind(object, "User")),
                json!(subjects_of_kind(object, "Group")),
                json!(subjects_of_kind(object, "ServiceAccount")),
            ]
        }
        "certificatesigningrequests" => vec![
            name,
            age,
            json!(or_none(string_at(object, "/spec/signerName").to_string())),
            json!(string_at(object, "/spec/username")),
            json!(
                object
                    .pointer("/spec/expirationSeconds")
                    .and_then(Value::as_i64)
                    .map(meta::human_duration)
                    .unwrap_or_else(|| "<none>".into())
            ),
            json!(csr_condition(object)),
        ],
        "leases" => vec![
            name,
            json!(or_none(string_at(object, "/spec/holderIdentity").to_string())),
            age,
        ],
        _ => vec![name, json!(meta::creation_timestamp(object))],
    }
}

/// The `PartialObjectMetadata` a row carries.
/// Denied, else Approved, else Pending; then Failed and Issued (`extractCSRStatus`).
fn csr_condition(object: &Value) -> String {
    let has = |kind: &str| {
        object
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|list| {
                list.iter()
                    .any(|c| c.get("type").and_then(Value::as_str) == Some(kind))
            })
    };
    let mut condition = if has("Denied") {
        "Denied".to_string()
    } else if has("Approved") {
        "Approved".to_string()
    } else {
        "Pending".to_string()
    };
    if has("Failed") {
        condition.push_str(",Failed");
    }
    if !string_at(object, "/status/certificate").is_empty() {
        condition.push_str(",Issued");
    }
    condition
}

fn row_object(object: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": object.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

/// How much of each object a row carries (`includeObject`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IncludeObject {
    /// No object in the rows.
    None,
    /// Each row carries its object's PartialObjectMetadata.
    Metadata,
    /// Each row carries its whole object.
    Object,
}

impl IncludeObject {
    /// The `includeObject` value given; Metadata when absent or unknown.
    pub fn parse(value: Option<&str>) -> IncludeObject {
        match value {
            Some("None") => IncludeObject::None,
            Some("Object") => IncludeObject::Object,
            _ => IncludeObject::Metadata,
        }
    }
}

fn row(resource: &str, object: &Value, now: jiff::Timestamp, include: IncludeObject) -> Value {
    let mut row = json!({"cells": cells(resource, object, now)});
    match include {
        IncludeObject::None => {}
        IncludeObject::Metadata => row["object"] = row_object(object),
        IncludeObject::Object => row["object"] = object.clone(),
    }
    row
}

fn column_definitions(resource: &str) -> Vec<Value> {
    columns(resource)
        .iter()
        .map(|c| json!({"name": c.name, "type": c.kind, "format": c.format, "description": c.description, "priority": c.priority}))
        .collect()
}

/// A Table of objects. `with_columns` is false for watch events after the first.
pub fn table<'a>(
    resource: &str,
    objects: impl IntoIterator<Item = &'a Value>,
    list_meta: Value,
    with_columns: bool,
    include: IncludeObject,
) -> Value {
    let now = badge_api::clock::now();
    let rows: Vec<Value> = objects
        .into_iter()
        .map(|o| row(resource, o, now, include))
        .collect();
    let mut table = json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "rows": rows,
    });
    if with_columns {
        table["columnDefinitions"] = json!(column_definitions(resource));
    } else {
        table["columnDefinitions"] = Value::Null;
    }
    table
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn serviceaccount_columns() {
        let sa = json!({"metadata":{"name":"sa","creationTimestamp":"2020-01-01T00:00:00Z"},"secrets":[{"name":"a"}]});
        let t = table(
            "serviceaccounts",
            [&sa],
            json!({"resourceVersion":"5"}),
            true,
            IncludeObject::Metadata,
        );
        let names: Vec<&str> = t["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, vec!["Name", "Secrets", "Age"]);
        assert_eq!(t["rows"][0]["cells"][0], "sa");
        assert_eq!(t["rows"][0]["cells"][1], 1);
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
    }

    #[test]
    fn secret_columns() {
        let s = json!({"metadata":{"name":"s"},"type":"Opaque","data":{"a":"eA==","b":"eQ=="}});
        let t = table("secrets", [&s], json!({}), true, IncludeObject::None);
        assert_eq!(t["rows"][0]["cells"][1], "Opaque");
        assert_eq!(t["rows"][0]["cells"][2], 2);
        assert!(t["rows"][0].get("object").is_none());
    }

    #[test]
    fn certificate_signing_request_columns() {
        let pending =
            json!({"metadata":{"name":"c"},"spec":{"signerName":"example.com/s","username":"alice"}});
        let issued = json!({"metadata":{"name":"d"},
            "spec":{"signerName":"example.com/s","username":"bob","expirationSeconds":3600},
            "status":{"certificate":"eA==","conditions":[{"type":"Approved","status":"True"},{"type":"Failed","status":"True"}]}});
        let denied = json!({"metadata":{"name":"e"},"spec":{},"status":{"conditions":[{"type":"Denied","status":"True"}]}});
        let t = table(
            "certificatesigningrequests",
            [&pending, &issued, &denied],
            json!({}),
            true,
            IncludeObject::None,
        );
        let names: Vec<&str> = t["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            vec![
                "Name",
                "Age",
                "SignerName",
                "Requestor",
                "RequestedDuration",
                "Condition"
            ]
        );
        let cells = |i: usize| t["rows"][i]["cells"].as_array().unwrap()[2..].to_vec();
        assert_eq!(
            cells(0),
            vec![
                json!("example.com/s"),
                json!("alice"),
                json!("<none>"),
                json!("Pending")
            ]
        );
        assert_eq!(
            cells(1),
            vec![
                json!("example.com/s"),
                json!("bob"),
                json!("60m"),
                json!("Approved,Failed,Issued")
            ]
        );
        assert_eq!(
            cells(2),
            vec![json!("<none>"), json!(""), json!("<none>"), json!("Denied")]
        );
    }
}
