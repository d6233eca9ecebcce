//! What `kubectl get` shows of each resource: the columns of its Table and the cells of one
//! object's row, as upstream's printers (`pkg/printers/internalversion/printers.go`). Each
//! resource's [`crate::strategy::Strategy`] names its printer.

use badge_api::meta;
use jiff::Timestamp;
use serde_json::{Value, json};

/// One column of a Table (`metav1.TableColumnDefinition`).
pub struct Column {
    /// The header kubectl prints.
    pub name: &'static str,
    /// The OpenAPI type of the column's cells.
    pub kind: &'static str,
    /// The OpenAPI format of the cells (`name` marks the object's name column).
    pub format: &'static str,
    /// What the column shows, as upstream describes it.
    pub description: &'static str,
    /// 0 for the columns always shown, 1 for those only `-o wide` shows.
    pub priority: u8,
}

/// The columns of a resource and how one object fills them.
pub struct Printer {
    /// The columns, in order.
    pub columns: &'static [Column],
    /// One cell per column, with ages counted up to `now`.
    pub cells: fn(&Value, Timestamp) -> Vec<Value>,
}

impl Printer {
    /// The row cells of `object` at `now`.
    pub fn cells(&self, object: &Value, now: Timestamp) -> Vec<Value> {
        (self.cells)(object, now)
    }
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

/// Upstream's default table (`defaultTableConvertor`), also what it prints for Roles and
/// ClusterRoles.
pub const DEFAULT: Printer = Printer {
    columns: &[NAME, col("Created At", "date", "")],
    cells: |object, _| vec![json!(meta::name(object)), json!(meta::creation_timestamp(object))],
};

/// The columns of Namespaces.
pub static NAMESPACES: Printer = Printer {
    columns: &[NAME, col("Status", "string", "The status of the namespace"), AGE],
    cells: |object, now| {
        vec![
            json!(meta::name(object)),
            json!(string_at(object, "/status/phase")),
            json!(age(object, now)),
        ]
    },
};

/// The columns of ServiceAccounts.
pub static SERVICEACCOUNTS: Printer = Printer {
    columns: &[
        NAME,
        col(
            "Secrets",
            "integer",
            "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use.",
        ),
        AGE,
    ],
    cells: |object, now| {
        vec![
            json!(meta::name(object)),
            json!(count(object, "secrets")),
            json!(age(object, now)),
        ]
    },
};

/// The columns of Secrets.
pub static SECRETS: Printer = Printer {
    columns: &[
        NAME,
        col("Type", "string", "The type of the secret"),
        col("Data", "string", "The number of data entries in the secret"),
        AGE,
    ],
    cells: |object, now| {
        vec![
            json!(meta::name(object)),
            json!(string_at(object, "/type")),
            json!(count(object, "data")),
            json!(age(object, now)),
        ]
    },
};

/// The columns of ConfigMaps.
pub static CONFIGMAPS: Printer = Printer {
    columns: &[
        NAME,
        col("Data", "string", "The number of data entries in the configmap"),
        AGE,
    ],
    cells: |object, now| {
        vec![
            json!(meta::name(object)),
            json!(count(object, "data") + count(object, "binaryData")),
            json!(age(object, now)),
        ]
    },
};

/// The columns of Pods.
pub static PODS: Printer = Printer {
    columns: &[
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
    cells: pod_cells,
};

/// The columns of Nodes.
pub static NODES: Printer = Printer {
    columns: &[
        NAME,
        col("Status", "string", "The status of the node"),
        col("Roles", "string", "The roles of the node"),
        AGE,
        col("Version", "string", "Kubelet Version reported by the node."),
    ],
    cells: node_cells,
};

/// The columns of Events.
pub static EVENTS: Printer = Printer {
    columns: &[
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
    cells: event_cells,
};

/// RoleBindings and ClusterRoleBindings.
pub static BINDINGS: Printer = Printer {
    columns: &[
        NAME,
        col("Role", "string", "Role of the binding"),
        AGE,
        wide("Users", "string", "Users in the binding"),
        wide("Groups", "string", "Groups in the binding"),
        wide("ServiceAccounts", "string", "ServiceAccounts in the binding"),
    ],
    cells: binding_cells,
};

/// The columns of Leases.
pub static LEASES: Printer = Printer {
    columns: &[NAME, col("Holder", "string", "Name of the Lease holder"), AGE],
    cells: |object, now| {
        vec![
            json!(meta::name(object)),
            json!(or_none(string_at(object, "/spec/holderIdentity").to_string())),
            json!(age(object, now)),
        ]
    },
};

/// The columns of CertificateSigningRequests.
pub static CERTIFICATESIGNINGREQUESTS: Printer = Printer {
    columns: &[
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
    cells: csr_cells,
};

/// The columns of IssuedTokens.
pub static ISSUEDTOKENS: Printer = Printer {
    columns: &[
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
    cells: issued_token_cells,
};

/// The columns of TokenPolicies.
pub static TOKENPOLICIES: Printer = Printer {
    columns: &[
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
    cells: token_policy_cells,
};

/// The columns of ServiceAccountUsages.
pub static SERVICEACCOUNTUSAGES: Printer = Printer {
    columns: &[
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
    cells: |object, now| {
        vec![
            json!(meta::name(object)),
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
            json!(age(object, now)),
        ]
    },
};

fn pod_cells(object: &Value, now: Timestamp) -> Vec<Value> {
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
        json!(meta::name(object)),
        json!(format!("{ready}/{total}")),
        json!(phase),
        json!(restarts.to_string()),
        json!(age(object, now)),
        json!(or_none(string_at(object, "/status/podIP").to_string())),
        json!(or_none(string_at(object, "/spec/nodeName").to_string())),
        json!("<none>"),
        json!("<none>"),
    ]
}

fn node_cells(object: &Value, now: Timestamp) -> Vec<Value> {
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
        json!(meta::name(object)),
        json!(ready),
        json!("<none>"),
        json!(age(object, now)),
        json!(string_at(object, "/status/nodeInfo/kubeletVersion")),
    ]
}

fn event_cells(object: &Value, now: Timestamp) -> Vec<Value> {
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

fn binding_cells(object: &Value, now: Timestamp) -> Vec<Value> {
    let role = format!(
        "{}/{}",
        string_at(object, "/roleRef/kind"),
        string_at(object, "/roleRef/name")
    );
    vec![
        json!(meta::name(object)),
        json!(role),
        json!(age(object, now)),
        json!(subjects_of_kind(object, "User")),
        json!(subjects_of_kind(object, "Group")),
        json!(subjects_of_kind(object, "ServiceAccount")),
    ]
}

fn csr_cells(object: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        json!(meta::name(object)),
        json!(age(object, now)),
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
    ]
}

fn issued_token_cells(object: &Value, now: Timestamp) -> Vec<Value> {
    let bound = match (
        string_at(object, "/spec/boundObjectRef/kind"),
        string_at(object, "/spec/boundObjectRef/name"),
    ) {
        ("", _) => "<none>".to_string(),
        (kind, name) => format!("{kind}/{name}"),
    };
    vec![
        json!(meta::name(object)),
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
        json!(age(object, now)),
    ]
}

fn token_policy_cells(object: &Value, now: Timestamp) -> Vec<Value> {
    let joined = |pointer: &str| {
        let items: Vec<&str> = object
            .pointer(pointer)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        or_none(items.join(","))
    };
    vec![
        json!(meta::name(object)),
        object
            .pointer("/spec/maxExpirationSeconds")
            .cloned()
            .unwrap_or(Value::Null),
        json!(joined("/spec/allowedAudiences")),
        json!(joined("/spec/requiredBoundObjectKinds")),
        json!(age(object, now)),
    ]
}

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

/// How long ago `pointer` (a time) was, or `<never>`.
fn ago(object: &Value, pointer: &str, now: Timestamp) -> String {
    match meta::parse_time(string_at(object, pointer)) {
        Some(t) => meta::human_duration(now.as_second() - t.as_second()),
        None => "<never>".into(),
    }
}

/// How long until `pointer` (a time) comes, `<expired>` once past, `<never>` when absent.
fn until(object: &Value, pointer: &str, now: Timestamp) -> String {
    match meta::parse_time(string_at(object, pointer)) {
        Some(t) if t > now => meta::human_duration(t.as_second() - now.as_second()),
        Some(_) => "<expired>".into(),
        None => "<never>".into(),
    }
}

fn age(object: &Value, now: Timestamp) -> String {
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
