//! Decoding of Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`).
//!
//! client-go's typed clients (kubectl `create namespace|secret|...`, `create token`,
//! `auth can-i`, `auth whoami`) send protobuf. Rather than handling a second wire format
//! everywhere, [`decode`] turns the body into the JSON a JSON client would have sent, and the
//! server handles it like any JSON body.
//!
//! The decoder is a small generic wire reader driven by static field tables, one per message.
//! Field numbers come from upstream's `generated.proto` files; JSON names and omission rules
//! from the Go `json` tags. It parses hostile input: every length is checked against the
//! input, nesting is bounded, and nothing panics.

use base64::Engine as _;
use serde_json::{Map, Value};

/// The Content-Type of Kubernetes protobuf bodies.
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// Every Kubernetes protobuf body starts with these bytes ("k8s\0").
pub const MAGIC: [u8; 4] = [0x6b, 0x38, 0x73, 0x00];

/// Deeper than any message in the tables below; only guards against a table cycle.
const MAX_DEPTH: usize = 32;

/// Why a protobuf body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtobufError {
    #[error("the body does not start with the Kubernetes protobuf prefix")]
    /// The Kubernetes protobuf envelope's magic prefix is missing.
    NotProtobuf,
    #[error("malformed protobuf body: {0}")]
    /// The bytes are not a valid message.
    Malformed(String),
    #[error("protobuf bodies of kind {kind} in {api_version} are not supported; send JSON")]
    /// A kind badge reads only as JSON.
    UnsupportedKind {
        /// The body's apiVersion.
        api_version: String,
        /// The body's kind.
        kind: String,
    },
}

fn malformed(what: impl Into<String>) -> ProtobufError {
    ProtobufError::Malformed(what.into())
}

/// Decodes a Kubernetes protobuf body (magic prefix + `runtime.Unknown` envelope) into the
/// equivalent Kubernetes JSON object, with `apiVersion` and `kind` from the envelope.
pub fn decode(body: &[u8]) -> Result<Value, ProtobufError> {
    let rest = body.strip_prefix(&MAGIC[..]).ok_or(ProtobufError::NotProtobuf)?;
    let envelope = Envelope::parse(rest)?;
    if !envelope.content_encoding.is_empty() {
        return Err(malformed(format!(
            "content encoding {:?} is not supported",
            envelope.content_encoding
        )));
    }
    // An empty contentType means protobuf; client-go never wraps anything else.
    if !envelope.content_type.is_empty() && envelope.content_type != CONTENT_TYPE {
        return Err(malformed(format!(
            "content type {:?} is not supported",
            envelope.content_type
        )));
    }
    let Some(table) = table_of(&envelope.api_version, &envelope.kind) else {
        return Err(ProtobufError::UnsupportedKind {
            api_version: envelope.api_version,
            kind: envelope.kind,
        });
    };
    let mut object = decode_message(envelope.raw, table, 0)?;
    object.insert("apiVersion".into(), Value::String(envelope.api_version));
    object.insert("kind".into(), Value::String(envelope.kind));
    Ok(Value::Object(object))
}

/// Whether [`decode`] knows the kind.
pub fn supports(api_version: &str, kind: &str) -> bool {
    table_of(api_version, kind).is_some()
}

fn table_of(api_version: &str, kind: &str) -> Option<&'static [Field]> {
    KINDS
        .iter()
        .find(|(v, k, _)| *v == api_version && *k == kind)
        .map(|(_, _, table)| *table)
}

/// `runtime.Unknown`: typeMeta=1 {apiVersion=1, kind=2}, raw=2, contentEncoding=3,
/// contentType=4.
struct Envelope<'a> {
    api_version: String,
    kind: String,
    raw: &'a [u8],
    content_encoding: String,
    content_type: String,
}

impl<'a> Envelope<'a> {
    fn parse(bytes: &'a [u8]) -> Result<Self, ProtobufError> {
        let mut envelope = Envelope {
            api_version: String::new(),
            kind: String::new(),
            raw: &[],
            content_encoding: String::new(),
            content_type: String::new(),
        };
        let mut reader = Reader::new(bytes);
        while let Some((number, value)) = reader.next_field()? {
            match number {
                1 => {
                    let mut type_meta = Reader::new(value.bytes()?);
                    while let Some((number, value)) = type_meta.next_field()? {
                        match number {
                            1 => envelope.api_version = utf8(value.bytes()?)?,
                            2 => envelope.kind = utf8(value.bytes()?)?,
                            _ => {}
                        }
                    }
                }
                2 => envelope.raw = value.bytes()?,
                3 => envelope.content_encoding = utf8(value.bytes()?)?,
                4 => envelope.content_type = utf8(value.bytes()?)?,
                _ => {}
            }
        }
        Ok(envelope)
    }
}

// ---------------------------------------------------------------------------------------
// Wire reader

/// One field value as it appears on the wire. No Kubernetes message has fixed-width
/// fields, so their values are only skipped.
#[derive(Clone, Copy, Debug)]
enum Wire<'a> {
    Varint(u64),
    Fixed64,
    Bytes(&'a [u8]),
    Fixed32,
}

impl<'a> Wire<'a> {
    fn bytes(self) -> Result<&'a [u8], ProtobufError> {
        match self {
            Wire::Bytes(bytes) => Ok(bytes),
            _ => Err(malformed("expected a length-delimited field")),
        }
    }

    fn varint(self) -> Result<u64, ProtobufError> {
        match self {
            Wire::Varint(v) => Ok(v),
            _ => Err(malformed("expected a varint field")),
        }
    }
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// A base-128 varint of at most 10 bytes; the 10th may only carry the 64th bit.
    fn varint(&mut self) -> Result<u64, ProtobufError> {
        let mut value: u64 = 0;
        for i in 0..10 {
            let (&byte, rest) = self
                .buf
                .split_first()
                .ok_or_else(|| malformed("truncated varint"))?;
            self.buf = rest;
            if i == 9 && byte > 1 {
                return Err(malformed("varint overflows 64 bits"));
            }
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(malformed("varint longer than 10 bytes"))
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], ProtobufError> {
        let n = usize::try_from(n).ok().filter(|&n| n <= self.buf.len());
        let n = n.ok_or_else(|| malformed("length exceeds the input"))?;
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// The next field's number and value, or `None` at the end of the message.
    fn next_field(&mut self) -> Result<Option<(u32, Wire<'a>)>, ProtobufError> {
        if self.is_empty() {
            return Ok(None);
        }
        let tag = self.varint()?;
        let number = u32::try_from(tag >> 3)
            .ok()
            .filter(|&n| n != 0 && n < (1 << 29))
            .ok_or_else(|| malformed("invalid field number"))?;
        let value = match tag & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Wire::Fixed64
            }
            2 => {
                let len = self.varint()?;
                Wire::Bytes(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Wire::Fixed32
            }
            // Groups (3, 4) are deprecated and never used by Kubernetes; 6 and 7 do not exist.
            other => return Err(malformed(format!("unsupported wire type {other}"))),
        };
        Ok(Some((number, value)))
    }
}

fn utf8(bytes: &[u8]) -> Result<String, ProtobufError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| malformed("string is not valid UTF-8"))
}

// ---------------------------------------------------------------------------------------
// Field tables

/// When a field appears in the JSON, mirroring the Go struct field and its `json` tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Presence {
    /// A non-pointer field tagged `omitempty`: Go writes it to protobuf even when zero, so a
    /// zero value (and an empty message) is dropped.
    OmitEmpty,
    /// A non-pointer field without `omitempty`: Go's JSON always has it, zero or not.
    Always,
    /// A pointer field: Go writes it only when set, so it is kept whenever present, even as
    /// `false`, `0` or `{}`.
    Pointer,
}

#[derive(Debug)]
enum Ty {
    String(Presence),
    /// JSON base64, as Go encodes `[]byte`.
    Bytes(Presence),
    Bool(Presence),
    /// int64 as a JSON number (what Go writes). int32 fields are not needed yet.
    Int64(Presence),
    Message(&'static [Field], Presence),
    /// `metav1.Time` {seconds=1, nanos=2} as an RFC 3339 string; the zero time (an empty
    /// message) is dropped.
    Time,
    /// A named `[]string` that protobuf wraps in a message {items=1} (`ExtraValue`); JSON is
    /// a plain array.
    StringList,
    /// Elements are never dropped, only an empty list.
    Repeated(&'static Ty),
    /// `map<string, V>` (entries {key=1, value=2}).
    Map(&'static Ty),
}

#[derive(Debug)]
struct Field {
    number: u32,
    name: &'static str,
    ty: Ty,
}

const fn field(number: u32, name: &'static str, ty: Ty) -> Field {
    Field { number, name, ty }
}

use Presence::{Always, OmitEmpty, Pointer};

const STR: Ty = Ty::String(OmitEmpty);
const STR_ALWAYS: Ty = Ty::String(Always);
const STRINGS: Ty = Ty::Repeated(&Ty::String(Always));
const STRING_MAP: Ty = Ty::Map(&Ty::String(Always));
const BYTES_MAP: Ty = Ty::Map(&Ty::Bytes(Always));
const OPT_BOOL: Ty = Ty::Bool(Pointer);

const fn msg(table: &'static [Field]) -> Ty {
    Ty::Message(table, OmitEmpty)
}

const fn ptr(table: &'static [Field]) -> Ty {
    Ty::Message(table, Pointer)
}

// meta/v1 (apimachinery/pkg/apis/meta/v1/generated.proto)

static OBJECT_META: &[Field] = &[
    field(1, "name", STR),
    field(2, "generateName", STR),
    field(3, "namespace", STR),
    field(4, "selfLink", STR),
    field(5, "uid", STR),
    field(6, "resourceVersion", STR),
    field(7, "generation", Ty::Int64(OmitEmpty)),
    field(8, "creationTimestamp", Ty::Time),
    field(9, "deletionTimestamp", Ty::Time),
    field(10, "deletionGracePeriodSeconds", Ty::Int64(Pointer)),
    field(11, "labels", STRING_MAP),
    field(12, "annotations", STRING_MAP),
    field(13, "ownerReferences", Ty::Repeated(&msg(OWNER_REFERENCE))),
    field(14, "finalizers", STRINGS),
    // managedFields (17) are set by the server, never taken from a request.
];

static OWNER_REFERENCE: &[Field] = &[
    field(5, "apiVersion", STR_ALWAYS),
    field(1, "kind", STR_ALWAYS),
    field(3, "name", STR_ALWAYS),
    field(4, "uid", STR_ALWAYS),
    field(6, "controller", OPT_BOOL),
    field(7, "blockOwnerDeletion", OPT_BOOL),
];

static LABEL_SELECTOR: &[Field] = &[
    field(1, "matchLabels", STRING_MAP),
    field(2, "matchExpressions", Ty::Repeated(&msg(SELECTOR_REQUIREMENT))),
];

/// LabelSelectorRequirement and FieldSelectorRequirement share their layout.
static SELECTOR_REQUIREMENT: &[Field] = &[
    field(1, "key", STR_ALWAYS),
    field(2, "operator", STR_ALWAYS),
    field(3, "values", STRINGS),
];

// core/v1

static OBJECT_REFERENCE: &[Field] = &[
    field(1, "kind", STR),
    field(2, "namespace", STR),
    field(3, "name", STR),
    field(4, "uid", STR),
    field(5, "apiVersion", STR),
    field(6, "resourceVersion", STR),
    field(7, "fieldPath", STR),
];

static LOCAL_OBJECT_REFERENCE: &[Field] = &[field(1, "name", STR)];

static NAMESPACE: &[Field] = &[
    field(1, "metadata", msg(OBJECT_META)),
    field(2, "spec", msg(&[field(1, "finalizers", STRINGS)])),
    field(3, "status", msg(NAMESPACE_STATUS)),
];

static NAMESPACE_STATUS: &[Field] = &[
    field(1, "phase", STR),
    field(2, "conditions", Ty::Repeated(&msg(NAMESPACE_CONDITION))),
];

static NAMESPACE_CONDITION: &[Field] = &[
    field(1, "type", STR_ALWAYS),
    field(2, "status", STR_ALWAYS),
    field(4, "lastTransitionTime", Ty::Time),
    field(5, "reason", STR),
    field(6, "message", STR),
];

static SERVICE_ACCOUNT: &[Field] = &[
    field(1, "metadata", msg(OBJECT_META)),
    field(2, "secrets", Ty::Repeated(&msg(OBJECT_REFERENCE))),
    field(3, "imagePullSecrets", Ty::Repeated(&msg(LOCAL_OBJECT_REFERENCE))),
    field(4, "automountServiceAccountToken", OPT_BOOL),
];

static SECRET: &[Field] = &[
    field(1, "metadata", msg(OBJECT_META)),
    field(2, "data", BYTES_MAP),
    field(3, "type", STR),
    field(4, "stringData", STRING_MAP),
    field(5, "immutable", OPT_BOOL),
];

static CONFIG_MAP: &[Field] = &[
    field(1, "metadata", msg(OBJECT_META)),
    field(2, "data", STRING_MAP),
    field(3, "binaryData", BYTES_MAP),
    field(4, "immutable", OPT_BOOL),
];

// rbac/v1

static POLICY_RULE: &[Field] = &[
    field(1, "verbs", STRINGS),
    field(2, "apiGroups", STRINGS),
    field(3, "resources", STRINGS),
    field(4, "resourceNames", STRINGS),
    field(5, "nonResourceURLs", STRINGS),
];

static ROLE: &[Field] = &[
    field(1, "metadata", msg(OBJECT_META)),
    field(2, "rules", Ty::Repeated(&msg(POLICY_RULE))),
];

static CLUSTER_ROLE: &[Field] = &[
    field(1, "metadata", msg(OBJECT_META)),
    field(2, "rules", Ty::Repeated(&msg(POLICY_RULE))),
    field(
        3,
        "aggregationRule",
        ptr(&[field(
            1,
            "clusterRoleSelectors",
            Ty::Repeated(&msg(LABEL_SELECTOR)),
        )]),
    ),
];

static SUBJECT: &[Field] = &[
    field(1, "kind", STR_ALWAYS),
    field(2, "apiGroup", STR),
    field(3, "name", STR_ALWAYS),
    field(4, "namespace", STR),
];

static ROLE_REF: &[Field] = &[
    field(1, "apiGroup", STR_ALWAYS),
    field(2, "kind", STR_ALWAYS),
    field(3, "name", STR_ALWAYS),
];

/// RoleBinding and ClusterRoleBinding share their layout.
static ROLE_BINDING: &[Field] = &[
    field(1, "metadata", msg(OBJECT_META)),
    field(2, "subjects", Ty::Repeated(&msg(SUBJECT))),
    field(3, "roleRef", msg(ROLE_REF)),
];

// authentication/v1 (status fields are outputs; requests' are ignored)

static TOKEN_REQUEST: &[Field] = &[
    field(1, "metadata", msg(OBJECT_META)),
    field(
        2,
        "spec",
        msg(&[
            field(1, "audiences", STRINGS),
            field(3, "boundObjectRef", ptr(BOUND_OBJECT_REFERENCE)),
            field(4, "expirationSeconds", Ty::Int64(Pointer)),
        ]),
    ),
];

static BOUND_OBJECT_REFERENCE: &[Field] = &[
    field(1, "kind", STR),
    field(2, "apiVersion", STR),
    field(3, "name", STR),
    field(4, "uid", STR),
];

static TOKEN_REVIEW: &[Field] = &[
    field(1, "metadata", msg(OBJECT_META)),
    field(
        2,
        "spec",
        msg(&[field(1, "token", STR), field(2, "audiences", STRINGS)]),
    ),
];

static SELF_SUBJECT_REVIEW: &[Field] = &[field(1, "metadata", msg(OBJECT_META))];

// authorization/v1

static RESOURCE_ATTRIBUTES: &[Field] = &[
    field(1, "namespace", STR),
    field(2, "verb", STR),
    field(3, "group", STR),
    field(4, "version", STR),
    field(5, "resource", STR),
    field(6, "subresource", STR),
    field(7, "name", STR),
    field(8, "fieldSelector", ptr(SELECTOR_ATTRIBUTES)),
    field(9, "labelSelector", ptr(SELECTOR_ATTRIBUTES)),
];

/// FieldSelectorAttributes and LabelSelectorAttributes share their layout.
static SELECTOR_ATTRIBUTES: &[Field] = &[
    field(1, "rawSelector", STR),
    field(2, "requirements", Ty::Repeated(&msg(SELECTOR_REQUIREMENT))),
];

static NON_RESOURCE_ATTRIBUTES: &[Field] = &[field(1, "path", STR), field(2, "verb", STR)];

/// SubjectAccessReview and LocalSubjectAccessReview share their layout.
static SUBJECT_ACCESS_REVIEW: &[Field] = &[
    field(1, "metadata", msg(OBJECT_META)),
    field(
        2,
        "spec",
        msg(&[
            field(1, "resourceAttributes", ptr(RESOURCE_ATTRIBUTES)),
            field(2, "nonResourceAttributes", ptr(NON_RESOURCE_ATTRIBUTES)),
            field(3, "user", STR),
            field(4, "groups", STRINGS),
            field(5, "extra", Ty::Map(&Ty::StringList)),
            field(6, "uid", STR),
        ]),
    ),
];

static SELF_SUBJECT_ACCESS_REVIEW: &[Field] = &[
    field(1, "metadata", msg(OBJECT_META)),
    field(
        2,
        "spec",
        msg(&[
            field(1, "resourceAttributes", ptr(RESOURCE_ATTRIBUTES)),
            field(2, "nonResourceAttributes", ptr(NON_RESOURCE_ATTRIBUTES)),
        ]),
    ),
];

static SELF_SUBJECT_RULES_REVIEW: &[Field] = &[
    field(1, "metadata", msg(OBJECT_META)),
    field(2, "spec", msg(&[field(1, "namespace", STR)])),
];

// certificates/v1

static CERTIFICATE_SIGNING_REQUEST: &[Field] = &[
    field(1, "metadata", msg(OBJECT_META)),
    field(
        2,
        "spec",
        msg(&[
            field(1, "request", Ty::Bytes(Always)),
            field(7, "signerName", STR_ALWAYS),
            field(8, "expirationSeconds", Ty::Int64(Pointer)),
            field(5, "usages", STRINGS),
            field(2, "username", STR),
            field(3, "uid", STR),
            field(4, "groups", STRINGS),
            field(6, "extra", Ty::Map(&Ty::StringList)),
        ]),
    ),
    field(
        3,
        "status",
        msg(&[
            field(1, "conditions", Ty::Repeated(&msg(CSR_CONDITION))),
            field(2, "certificate", Ty::Bytes(OmitEmpty)),
        ]),
    ),
];

static CSR_CONDITION: &[Field] = &[
    field(1, "type", STR_ALWAYS),
    field(6, "status", STR_ALWAYS),
    field(2, "reason", STR),
    field(3, "message", STR),
    field(4, "lastUpdateTime", Ty::Time),
    field(5, "lastTransitionTime", Ty::Time),
];

const RBAC: &str = "rbac.authorization.k8s.io/v1";
const AUTHN: &str = "authentication.k8s.io/v1";
const AUTHZ: &str = "authorization.k8s.io/v1";
const CERTIFICATES: &str = "certificates.k8s.io/v1";

/// The kinds clients send as protobuf, by apiVersion and kind.
static KINDS: &[(&str, &str, &[Field])] = &[
    ("v1", "Namespace", NAMESPACE),
    ("v1", "ServiceAccount", SERVICE_ACCOUNT),
    ("v1", "Secret", SECRET),
    ("v1", "ConfigMap", CONFIG_MAP),
    (RBAC, "Role", ROLE),
    (RBAC, "ClusterRole", CLUSTER_ROLE),
    (RBAC, "RoleBinding", ROLE_BINDING),
    (RBAC, "ClusterRoleBinding", ROLE_BINDING),
    (AUTHN, "TokenRequest", TOKEN_REQUEST),
    (AUTHN, "TokenReview", TOKEN_REVIEW),
    (AUTHN, "SelfSubjectReview", SELF_SUBJECT_REVIEW),
    (AUTHZ, "SubjectAccessReview", SUBJECT_ACCESS_REVIEW),
    (AUTHZ, "LocalSubjectAccessReview", SUBJECT_ACCESS_REVIEW),
    (AUTHZ, "SelfSubjectAccessReview", SELF_SUBJECT_ACCESS_REVIEW),
    (AUTHZ, "SelfSubjectRulesReview", SELF_SUBJECT_RULES_REVIEW),
    (
        CERTIFICATES,
        "CertificateSigningRequest",
        CERTIFICATE_SIGNING_REQUEST,
    ),
];

// ---------------------------------------------------------------------------------------
// Table-driven decoding

fn decode_message(bytes: &[u8], table: &[Field], depth: usize) -> Result<Map<String, Value>, ProtobufError> {
    if depth >= MAX_DEPTH {
        return Err(malformed("messages nested too deeply"));
    }
    let mut out = Map::new();
    let mut reader = Reader::new(bytes);
    while let Some((number, wire)) = reader.next_field()? {
        // Unknown fields (newer API versions, outputs such as status) are skipped.
        let Some(field) = table.iter().find(|f| f.number == number) else {
            continue;
        };
        match &field.ty {
            Ty::Repeated(element) => {
                let mut values = Vec::new();
                match (element, wire) {
                    // Packed encoding of scalar numbers: one length-delimited run of varints.
                    (Ty::Bool(_) | Ty::Int64(_), Wire::Bytes(run)) => {
                        let mut run = Reader::new(run);
                        while !run.is_empty() {
                            values.push(decode_value(element, Wire::Varint(run.varint()?), depth)?);
                        }
                    }
                    _ => values.push(decode_value(element, wire, depth)?),
                }
                let entry = out.entry(field.name).or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(array) = entry {
                    array.extend(values);
                }
            }
            Ty::Map(value_ty) => {
                let (key, value) = decode_map_entry(wire.bytes()?, value_ty, depth)?;
                let entry = out.entry(field.name).or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(map) = entry {
                    map.insert(key, value);
                }
            }
            // A repeated singular field: the last one wins, as in protobuf.
            ty => {
                let value = decode_value(ty, wire, depth)?;
                out.insert(field.name.into(), value);
            }
        }
    }
    // Apply Go's JSON omission rules now that every field has been seen.
    for field in table {
        let present = out.get(field.name);
        match (presence_of(&field.ty), present) {
            (Presence::OmitEmpty, Some(value)) if is_zero(value) => {
                out.remove(field.name);
            }
            (Presence::Always, None) => {
                if let Some(zero) = zero_of(&field.ty) {
                    out.insert(field.name.into(), zero);
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// How a field is omitted: lists, maps and times are dropped when empty; messages that
/// are not pointers are dropped when they decode to `{}`.
fn presence_of(ty: &Ty) -> Presence {
    match ty {
        Ty::String(p) | Ty::Bytes(p) | Ty::Bool(p) | Ty::Int64(p) => *p,
        Ty::Message(_, Presence::Pointer) => Presence::Pointer,
        Ty::Message(_, _) | Ty::Time | Ty::StringList | Ty::Repeated(_) | Ty::Map(_) => Presence::OmitEmpty,
    }
}

fn is_zero(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_i64() == Some(0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

/// The JSON of a field's zero value, for fields Go always writes to JSON.
fn zero_of(ty: &Ty) -> Option<Value> {
    match ty {
        Ty::String(_) | Ty::Bytes(_) => Some(Value::String(String::new())),
        Ty::Bool(_) => Some(Value::Bool(false)),
        Ty::Int64(_) => Some(Value::from(0)),
        Ty::StringList => Some(Value::Array(Vec::new())),
        Ty::Message(_, _) => Some(Value::Object(Map::new())),
        Ty::Time | Ty::Repeated(_) | Ty::Map(_) => None,
    }
}

fn decode_value(ty: &Ty, wire: Wire<'_>, depth: usize) -> Result<Value, ProtobufError> {
    Ok(match ty {
        Ty::String(_) => Value::String(utf8(wire.bytes()?)?),
        Ty::Bytes(_) => Value::String(base64::engine::general_purpose::STANDARD.encode(wire.bytes()?)),
        Ty::Bool(_) => Value::Bool(wire.varint()? != 0),
        Ty::Int64(_) => Value::from(wire.varint()? as i64),
        Ty::Message(table, _) => Value::Object(decode_message(wire.bytes()?, table, depth + 1)?),
        Ty::Time => decode_time(wire.bytes()?)?,
        Ty::StringList => {
            let mut items = Vec::new();
            let mut reader = Reader::new(wire.bytes()?);
            while let Some((number, wire)) = reader.next_field()? {
                if number == 1 {
                    items.push(Value::String(utf8(wire.bytes()?)?));
                }
            }
            Value::Array(items)
        }
        // Nested lists and maps do not occur in Kubernetes messages.
        Ty::Repeated(_) | Ty::Map(_) => return Err(malformed("unsupported nested collection")),
    })
}

fn decode_map_entry(bytes: &[u8], value_ty: &Ty, depth: usize) -> Result<(String, Value), ProtobufError> {
    if depth + 1 >= MAX_DEPTH {
        return Err(malformed("messages nested too deeply"));
    }
    let mut key = String::new();
    let mut value = None;
    let mut reader = Reader::new(bytes);
    while let Some((number, wire)) = reader.next_field()? {
        match number {
            1 => key = utf8(wire.bytes()?)?,
            2 => value = Some(decode_value(value_ty, wire, depth + 1)?),
            _ => {}
        }
    }
    // A missing value is the zero value, as protobuf decodes it.
    let value = value.or_else(|| zero_of(value_ty)).unwrap_or(Value::Null);
    Ok((key, value))
}

/// Earliest and latest instants with a four-digit year, as RFC 3339 requires.
const MIN_SECONDS: i64 = -62_135_596_800; // 0001-01-01T00:00:00Z
const MAX_SECONDS: i64 = 253_402_300_799; // 9999-12-31T23:59:59Z

/// `metav1.Time` {seconds=1, nanos=2}. The zero time is encoded as an empty message and
/// becomes `null` (the field is then dropped). Go's decoder ignores nanos, and its JSON has
/// second precision, so nanos are ignored here too.
fn decode_time(bytes: &[u8]) -> Result<Value, ProtobufError> {
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    let mut seconds: i64 = 0;
    let mut reader = Reader::new(bytes);
    while let Some((number, wire)) = reader.next_field()? {
        match number {
            1 => seconds = wire.varint()? as i64,
            2 => {
                wire.varint()?;
            }
            _ => {}
        }
    }
    if !(MIN_SECONDS..=MAX_SECONDS).contains(&seconds) {
        return Err(malformed("time out of range"));
    }
    let timestamp = jiff::Timestamp::from_second(seconds).map_err(|_| malformed("time out of range"))?;
    Ok(Value::String(
        timestamp.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use k8s_pb::api::authentication::v1 as authn;
    use k8s_pb::api::authorization::v1 as authz;
    use k8s_pb::api::certificates::v1 as certs;
    use k8s_pb::api::core::v1 as core;
    use k8s_pb::api::rbac::v1 as rbac;
    use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
    use k8s_pb::apimachinery::pkg::runtime;
    use prost::Message;
    use serde_json::json;

    fn s(value: &str) -> Option<String> {
        Some(value.to_string())
    }

    /// Wraps an encoded object as client-go does, with Go's empty contentEncoding and
    /// contentType fields.
    fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
        let unknown = runtime::Unknown {
            type_meta: Some(runtime::TypeMeta {
                api_version: s(api_version),
                kind: s(kind),
            }),
            raw: Some(raw),
            content_encoding: s(""),
            content_type: s(""),
        };
        let mut body = MAGIC.to_vec();
        body.extend(unknown.encode_to_vec());
        body
    }

    /// ObjectMeta as Go writes it: every non-pointer field, even when zero.
    fn go_meta(name: &str, namespace: &str) -> meta::ObjectMeta {
        meta::ObjectMeta {
            name: s(name),
            generate_name: s(""),
            namespace: s(namespace),
            self_link: s(""),
            uid: s(""),
            resource_version: s(""),
            generation: Some(0),
            creation_timestamp: Some(meta::Time::default()),
            ..Default::default()
        }
    }

    fn decode_ok(body: &[u8]) -> Value {
        match decode(body) {
            Ok(value) => value,
            Err(err) => panic!("decode failed: {err}"),
        }
    }

    /// What `kubectl certificate approve` sends: the object read back, with a condition.
    #[test]
    fn certificate_signing_request_approval() {
        let csr = certs::CertificateSigningRequest {
            metadata: Some(go_meta("c", "")),
            spec: Some(certs::CertificateSigningRequestSpec {
                request: Some(b"PEM".to_vec()),
                signer_name: s("example.com/s"),
                expiration_seconds: Some(3600),
                usages: vec!["client auth".into()],
                username: s("alice"),
                uid: s(""),
                groups: vec!["g".into()],
                extra: [(
                    "k".to_string(),
                    certs::ExtraValue {
                        items: vec!["v".into()],
                    },
                )]
                .into(),
            }),
            status: Some(certs::CertificateSigningRequestStatus {
                conditions: vec![certs::CertificateSigningRequestCondition {
                    r#type: s("Approved"),
                    status: s("True"),
                    reason: s("KubectlApprove"),
                    message: s(""),
                    last_update_time: Some(meta::Time {
                        seconds: Some(1_700_000_000),
                        nanos: Some(0),
                    }),
                    last_transition_time: Some(meta::Time::default()),
                }],
                certificate: Some(Vec::new()),
            }),
        };
        let body = envelope(
            "certificates.k8s.io/v1",
            "CertificateSigningRequest",
            csr.encode_to_vec(),
        );
        assert_eq!(
            decode_ok(&body),
            json!({"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
                   "metadata": {"name": "c"},
                   "spec": {"request": "UEVN", "signerName": "example.com/s", "expirationSeconds": 3600,
                            "usages": ["client auth"], "username": "alice", "groups": ["g"],
                            "extra": {"k": ["v"]}},
                   "status": {"conditions": [{"type": "Approved", "status": "True",
                                              "reason": "KubectlApprove",
                                              "lastUpdateTime": "2023-11-14T22:13:20Z"}]}})
        );
    }

    #[test]
    fn namespace_with_go_zero_fields() {
        let ns = core::Namespace {
            metadata: Some(go_meta("demo", "")),
            spec: Some(core::NamespaceSpec::default()),
            status: Some(core::NamespaceStatus {
                phase: s(""),
                conditions: vec![],
            }),
        };
        let body = envelope("v1", "Namespace", ns.encode_to_vec());
        assert_eq!(
            decode_ok(&body),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo"}})
        );
    }

    #[test]
    fn namespace_with_everything() {
        let mut metadata = go_meta("demo", "");
        metadata.labels.insert("a".into(), "b".into());
        metadata.annotations.insert("note".into(), "".into());
        metadata.finalizers = vec!["x/y".into()];
        metadata.uid = s("1234");
        metadata.generation = Some(3);
        metadata.creation_timestamp = Some(meta::Time {
            seconds: Some(1_704_164_645),
            nanos: Some(999),
        });
        metadata.deletion_timestamp = Some(meta::Time {
            seconds: Some(0),
            nanos: Some(0),
        });
        metadata.deletion_grace_period_seconds = Some(0);
        metadata.owner_references = vec![meta::OwnerReference {
            api_version: s("v1"),
            kind: s("ConfigMap"),
            name: s("owner"),
            uid: s(""),
            controller: Some(false),
            block_owner_deletion: None,
        }];
        let ns = core::Namespace {
            metadata: Some(metadata),
            spec: Some(core::NamespaceSpec {
                finalizers: vec!["kubernetes".into()],
            }),
            status: Some(core::NamespaceStatus {
                phase: s("Active"),
                conditions: vec![core::NamespaceCondition {
                    r#type: s("NamespaceDeletionDiscoveryFailure"),
                    status: s("False"),
                    last_transition_time: Some(meta::Time::default()),
                    reason: s(""),
                    message: s("m"),
                }],
            }),
        };
        let body = envelope("v1", "Namespace", ns.encode_to_vec());
        assert_eq!(
            decode_ok(&body),
            json!({
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {
                    "name": "demo",
                    "uid": "1234",
                    "generation": 3,
                    "creationTimestamp": "2024-01-02T03:04:05Z",
                    "deletionTimestamp": "1970-01-01T00:00:00Z",
                    "deletionGracePeriodSeconds": 0,
                    "labels": {"a": "b"},
                    "annotations": {"note": ""},
                    "finalizers": ["x/y"],
                    "ownerReferences": [
                        {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": "", "controller": false}
                    ],
                },
                "spec": {"finalizers": ["kubernetes"]},
                "status": {
                    "phase": "Active",
                    "conditions": [{"type": "NamespaceDeletionDiscoveryFailure", "status": "False", "message": "m"}],
                },
            })
        );
    }

    #[test]
    fn service_account() {
        let sa = core::ServiceAccount {
            metadata: Some(go_meta("robot", "demo")),
            secrets: vec![core::ObjectReference {
                name: s("tok"),
                kind: s(""),
                ..Default::default()
            }],
            image_pull_secrets: vec![core::LocalObjectReference { name: s("pull") }],
            automount_service_account_token: Some(false),
        };
        let body = envelope("v1", "ServiceAccount", sa.encode_to_vec());
        assert_eq!(
            decode_ok(&body),
            json!({
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": "robot", "namespace": "demo"},
                "secrets": [{"name": "tok"}],
                "imagePullSecrets": [{"name": "pull"}],
                "automountServiceAccountToken": false,
            })
        );
        // Without the pointer field, it stays absent.
        let sa = core::ServiceAccount {
            metadata: Some(go_meta("robot", "demo")),
            ..Default::default()
        };
        let value = decode_ok(&envelope("v1", "ServiceAccount", sa.encode_to_vec()));
        assert!(value.get("automountServiceAccountToken").is_none());
    }

    #[test]
    fn secret() {
        let mut secret = core::Secret {
            metadata: Some(go_meta("creds", "demo")),
            r#type: s("Opaque"),
            immutable: Some(true),
            ..Default::default()
        };
        secret.data.insert("password".into(), b"hunter2\xff".to_vec());
        secret.data.insert("empty".into(), vec![]);
        secret.string_data.insert("user".into(), "admin".into());
        let body = envelope("v1", "Secret", secret.encode_to_vec());
        assert_eq!(
            decode_ok(&body),
            json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "creds", "namespace": "demo"},
                "data": {"password": "aHVudGVyMv8=", "empty": ""},
                "stringData": {"user": "admin"},
                "type": "Opaque",
                "immutable": true,
            })
        );
    }

    #[test]
    fn config_map() {
        let mut cm = core::ConfigMap {
            metadata: Some(go_meta("cfg", "demo")),
            ..Default::default()
        };
        cm.data.insert("k".into(), "v".into());
        cm.binary_data.insert("b".into(), vec![0, 1, 2]);
        let body = envelope("v1", "ConfigMap", cm.encode_to_vec());
        assert_eq!(
            decode_ok(&body),
            json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "cfg", "namespace": "demo"},
                "data": {"k": "v"},
                "binaryData": {"b": "AAEC"},
            })
        );
    }

    fn rule() -> rbac::PolicyRule {
        rbac::PolicyRule {
            verbs: vec!["get".into(), "list".into()],
            api_groups: vec!["".into()],
            resources: vec!["pods".into()],
            resource_names: vec![],
            non_resource_ur_ls: vec![],
        }
    }

    #[test]
    fn role_and_cluster_role() {
        let role = rbac::Role {
            metadata: Some(go_meta("reader", "demo")),
            rules: vec![rule()],
        };
        let body = envelope(RBAC, "Role", role.encode_to_vec());
        assert_eq!(
            decode_ok(&body),
            json!({
                "apiVersion": RBAC,
                "kind": "Role",
                "metadata": {"name": "reader", "namespace": "demo"},
                "rules": [{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}],
            })
        );

        let mut selector = meta::LabelSelector::default();
        selector.match_labels.insert("agg".into(), "true".into());
        selector.match_expressions.push(meta::LabelSelectorRequirement {
            key: s("tier"),
            operator: s("Exists"),
            values: vec![],
        });
        let cluster_role = rbac::ClusterRole {
            metadata: Some(go_meta("agg", "")),
            rules: vec![rbac::PolicyRule {
                verbs: vec!["get".into()],
                non_resource_ur_ls: vec!["/healthz".into()],
                ..Default::default()
            }],
            aggregation_rule: Some(rbac::AggregationRule {
                cluster_role_selectors: vec![selector],
            }),
        };
        let body = envelope(RBAC, "ClusterRole", cluster_role.encode_to_vec());
        assert_eq!(
            decode_ok(&body),
            json!({
                "apiVersion": RBAC,
                "kind": "ClusterRole",
                "metadata": {"name": "agg"},
                "rules": [{"verbs": ["get"], "nonResourceURLs": ["/healthz"]}],
                "aggregationRule": {"clusterRoleSelectors": [
                    {"matchLabels": {"agg": "true"}, "matchExpressions": [{"key": "tier", "operator": "Exists"}]}
                ]},
            })
        );
    }

    #[test]
    fn role_bindings() {
        let binding = rbac::RoleBinding {
            metadata: Some(go_meta("rb", "demo")),
            subjects: vec![
                rbac::Subject {
                    kind: s("ServiceAccount"),
                    api_group: s(""),
                    name: s("robot"),
                    namespace: s("demo"),
                },
                rbac::Subject {
                    kind: s("User"),
                    api_group: s("rbac.authorization.k8s.io"),
                    name: s("alice"),
                    namespace: s(""),
                },
            ],
            role_ref: Some(rbac::RoleRef {
                api_group: s(""),
                kind: s("Role"),
                name: s("reader"),
            }),
        };
        let expected_subjects = json!([
            {"kind": "ServiceAccount", "name": "robot", "namespace": "demo"},
            {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "alice"},
        ]);
        let body = envelope(RBAC, "RoleBinding", binding.encode_to_vec());
        assert_eq!(
            decode_ok(&body),
            json!({
                "apiVersion": RBAC,
                "kind": "RoleBinding",
                "metadata": {"name": "rb", "namespace": "demo"},
                "subjects": expected_subjects,
                // roleRef's fields have no omitempty: an empty apiGroup stays.
                "roleRef": {"apiGroup": "", "kind": "Role", "name": "reader"},
            })
        );

        let binding = rbac::ClusterRoleBinding {
            metadata: Some(go_meta("crb", "")),
            subjects: binding.subjects.clone(),
            role_ref: Some(rbac::RoleRef {
                api_group: s("rbac.authorization.k8s.io"),
                kind: s("ClusterRole"),
                name: s("view"),
            }),
        };
        let body = envelope(RBAC, "ClusterRoleBinding", binding.encode_to_vec());
        assert_eq!(
            decode_ok(&body),
            json!({
                "apiVersion": RBAC,
                "kind": "ClusterRoleBinding",
                "metadata": {"name": "crb"},
                "subjects": expected_subjects,
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            })
        );
    }

    #[test]
    fn token_request() {
        let request = authn::TokenRequest {
            metadata: Some(go_meta("", "")),
            spec: Some(authn::TokenRequestSpec {
                audiences: vec!["https://kubernetes.default.svc".into()],
                expiration_seconds: Some(3600),
                bound_object_ref: Some(authn::BoundObjectReference {
                    kind: s("Secret"),
                    api_version: s("v1"),
                    name: s("s"),
                    u_id: s("u-1"),
                }),
            }),
            status: Some(authn::TokenRequestStatus {
                token: s(""),
                expiration_timestamp: Some(meta::Time::default()),
            }),
        };
        let body = envelope(AUTHN, "TokenRequest", request.encode_to_vec());
        assert_eq!(
            decode_ok(&body),
            json!({
                "apiVersion": AUTHN,
                "kind": "TokenRequest",
                "spec": {
                    "audiences": ["https://kubernetes.default.svc"],
                    "expirationSeconds": 3600,
                    "boundObjectRef": {"kind": "Secret", "apiVersion": "v1", "name": "s", "uid": "u-1"},
                },
            })
        );
        // kubectl create token without flags: a zero expiration is still sent (pointer).
        let request = authn::TokenRequest {
            metadata: Some(go_meta("", "")),
            spec: Some(authn::TokenRequestSpec {
                expiration_seconds: Some(0),
                ..Default::default()
            }),
            status: None,
        };
        let body = envelope(AUTHN, "TokenRequest", request.encode_to_vec());
        assert_eq!(
            decode_ok(&body),
            json!({"apiVersion": AUTHN, "kind": "TokenRequest", "spec": {"expirationSeconds": 0}})
        );
    }

    #[test]
    fn token_review_and_self_subject_review() {
        let review = authn::TokenReview {
            metadata: Some(go_meta("", "")),
            spec: Some(authn::TokenReviewSpec {
                token: s("abc.def"),
                audiences: vec!["api".into()],
            }),
            status: Some(authn::TokenReviewStatus {
                authenticated: Some(false),
                ..Default::default()
            }),
        };
        let body = envelope(AUTHN, "TokenReview", review.encode_to_vec());
        assert_eq!(
            decode_ok(&body),
            json!({"apiVersion": AUTHN, "kind": "TokenReview", "spec": {"token": "abc.def", "audiences": ["api"]}})
        );

        let review = authn::SelfSubjectReview {
            metadata: Some(go_meta("", "")),
            status: Some(authn::SelfSubjectReviewStatus::default()),
        };
        let body = envelope(AUTHN, "SelfSubjectReview", review.encode_to_vec());
        assert_eq!(
            decode_ok(&body),
            json!({"apiVersion": AUTHN, "kind": "SelfSubjectReview"})
        );
    }

    fn resource_attributes() -> authz::ResourceAttributes {
        authz::ResourceAttributes {
            namespace: s("demo"),
            verb: s("get"),
            group: s(""),
            version: s(""),
            resource: s("pods"),
            subresource: s(""),
            name: s(""),
            field_selector: None,
            label_selector: None,
        }
    }

    #[test]
    fn self_subject_access_review() {
        let review = authz::SelfSubjectAccessReview {
            metadata: Some(go_meta("", "")),
            spec: Some(authz::SelfSubjectAccessReviewSpec {
                resource_attributes: Some(resource_attributes()),
                non_resource_attributes: None,
            }),
            status: Some(authz::SubjectAccessReviewStatus {
                allowed: Some(false),
                denied: Some(false),
                reason: s(""),
                evaluation_error: s(""),
            }),
        };
        let body = envelope(AUTHZ, "SelfSubjectAccessReview", review.encode_to_vec());
        assert_eq!(
            decode_ok(&body),
            json!({
                "apiVersion": AUTHZ,
                "kind": "SelfSubjectAccessReview",
                "spec": {"resourceAttributes": {"namespace": "demo", "verb": "get", "resource": "pods"}},
            })
        );

        let review = authz::SelfSubjectAccessReview {
            metadata: Some(go_meta("", "")),
            spec: Some(authz::SelfSubjectAccessReviewSpec {
                resource_attributes: None,
                non_resource_attributes: Some(authz::NonResourceAttributes {
                    path: s("/logs"),
                    verb: s("get"),
                }),
            }),
            status: None,
        };
        let body = envelope(AUTHZ, "SelfSubjectAccessReview", review.encode_to_vec());
        assert_eq!(
            decode_ok(&body),
            json!({
                "apiVersion": AUTHZ,
                "kind": "SelfSubjectAccessReview",
                "spec": {"nonResourceAttributes": {"path": "/logs", "verb": "get"}},
            })
        );
    }

    #[test]
    fn subject_access_reviews() {
        let mut attributes = resource_attributes();
        attributes.label_selector = Some(authz::LabelSelectorAttributes {
            raw_selector: s("a=b"),
            requirements: vec![meta::LabelSelectorRequirement {
                key: s("a"),
                operator: s("In"),
                values: vec!["b".into()],
            }],
        });
        let mut spec = authz::SubjectAccessReviewSpec {
            resource_attributes: Some(attributes),
            non_resource_attributes: None,
            user: s("alice"),
            groups: vec!["devs".into(), "system:authenticated".into()],
            uid: s(""),
            ..Default::default()
        };
        spec.extra.insert(
            "scopes".into(),
            authz::ExtraValue {
                items: vec!["a".into(), "b".into()],
            },
        );
        spec.extra
            .insert("none".into(), authz::ExtraValue { items: vec![] });
        let expected_spec = json!({
            "resourceAttributes": {
                "namespace": "demo", "verb": "get", "resource": "pods",
                "labelSelector": {"rawSelector": "a=b", "requirements": [{"key": "a", "operator": "In", "values": ["b"]}]},
            },
            "user": "alice",
            "groups": ["devs", "system:authenticated"],
            "extra": {"scopes": ["a", "b"], "none": []},
        });
        let review = authz::SubjectAccessReview {
            metadata: Some(go_meta("", "")),
            spec: Some(spec.clone()),
            status: None,
        };
        let body = envelope(AUTHZ, "SubjectAccessReview", review.encode_to_vec());
        assert_eq!(
            decode_ok(&body),
            json!({"apiVersion": AUTHZ, "kind": "SubjectAccessReview", "spec": expected_spec})
        );

        let review = authz::LocalSubjectAccessReview {
            metadata: Some(go_meta("", "demo")),
            spec: Some(spec),
            status: None,
        };
        let body = envelope(AUTHZ, "LocalSubjectAccessReview", review.encode_to_vec());
        assert_eq!(
            decode_ok(&body),
            json!({
                "apiVersion": AUTHZ,
                "kind": "LocalSubjectAccessReview",
                "metadata": {"namespace": "demo"},
                "spec": expected_spec,
            })
        );
    }

    #[test]
    fn self_subject_rules_review() {
        let review = authz::SelfSubjectRulesReview {
            metadata: Some(go_meta("", "")),
            spec: Some(authz::SelfSubjectRulesReviewSpec { namespace: s("demo") }),
            status: Some(authz::SubjectRulesReviewStatus {
                incomplete: Some(false),
                ..Default::default()
            }),
        };
        let body = envelope(AUTHZ, "SelfSubjectRulesReview", review.encode_to_vec());
        assert_eq!(
            decode_ok(&body),
            json!({"apiVersion": AUTHZ, "kind": "SelfSubjectRulesReview", "spec": {"namespace": "demo"}})
        );
    }

    #[test]
    fn unknown_fields_are_skipped() {
        // A Namespace followed by unknown fields of every wire type, including a nested message.
        let mut raw = core::Namespace {
            metadata: Some(go_meta("demo", "")),
            ..Default::default()
        }
        .encode_to_vec();
        raw.extend([0xa0, 0x06, 0x01]); // field 100 varint
        raw.extend([0xa9, 0x06, 1, 2, 3, 4, 5, 6, 7, 8]); // field 101 fixed64
        raw.extend([0xb2, 0x06, 0x02, 0x0a, 0x00]); // field 102 bytes
        raw.extend([0xbd, 0x06, 1, 2, 3, 4]); // field 103 fixed32
        let body = envelope("v1", "Namespace", raw);
        assert_eq!(
            decode_ok(&body),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo"}})
        );
    }

    #[test]
    fn unsupported_kind_and_bad_magic() {
        let body = envelope("apps/v1", "Deployment", vec![]);
        assert_eq!(
            decode(&body),
            Err(ProtobufError::UnsupportedKind {
                api_version: "apps/v1".into(),
                kind: "Deployment".into()
            })
        );
        assert_eq!(
            decode(b"{\"kind\":\"Namespace\"}"),
            Err(ProtobufError::NotProtobuf)
        );
        assert_eq!(decode(b""), Err(ProtobufError::NotProtobuf));
        // A content encoding (gzip) is not supported.
        let unknown = runtime::Unknown {
            type_meta: Some(runtime::TypeMeta {
                api_version: s("v1"),
                kind: s("Namespace"),
            }),
            raw: Some(vec![]),
            content_encoding: s("gzip"),
            content_type: None,
        };
        let mut body = MAGIC.to_vec();
        body.extend(unknown.encode_to_vec());
        assert!(matches!(decode(&body), Err(ProtobufError::Malformed(_))));
        // Nor is a raw object in another format.
        let unknown = runtime::Unknown {
            type_meta: Some(runtime::TypeMeta {
                api_version: s("v1"),
                kind: s("Namespace"),
            }),
            raw: Some(b"{}".to_vec()),
            content_encoding: s(""),
            content_type: s("application/json"),
        };
        let mut body = MAGIC.to_vec();
        body.extend(unknown.encode_to_vec());
        assert!(matches!(decode(&body), Err(ProtobufError::Malformed(_))));
        // The explicit protobuf content type is accepted.
        let unknown = runtime::Unknown {
            type_meta: Some(runtime::TypeMeta {
                api_version: s("v1"),
                kind: s("Namespace"),
            }),
            raw: Some(vec![]),
            content_encoding: None,
            content_type: s(CONTENT_TYPE),
        };
        let mut body = MAGIC.to_vec();
        body.extend(unknown.encode_to_vec());
        assert_eq!(decode_ok(&body), json!({"apiVersion": "v1", "kind": "Namespace"}));
    }

    fn valid_body() -> Vec<u8> {
        let mut metadata = go_meta("demo", "ns");
        metadata.labels.insert("a".into(), "b".into());
        metadata.creation_timestamp = Some(meta::Time {
            seconds: Some(1_704_164_645),
            nanos: Some(0),
        });
        let mut secret = core::Secret {
            metadata: Some(metadata),
            r#type: s("Opaque"),
            ..Default::default()
        };
        secret.data.insert("k".into(), b"v".to_vec());
        envelope("v1", "Secret", secret.encode_to_vec())
    }

    #[test]
    fn every_truncation_fails_except_at_envelope_field_boundaries() {
        let body = valid_body();
        assert!(decode(&body).is_ok());
        // Protobuf has no end marker: a cut between two envelope fields leaves a shorter
        // valid message. Every other cut lands inside a length-delimited field and must fail.
        let mut boundaries = Vec::new();
        let mut reader = Reader::new(&body[MAGIC.len()..]);
        while reader.next_field().unwrap().is_some() {
            boundaries.push(body.len() - reader.buf.len());
        }
        for len in 0..body.len() {
            let result = decode(&body[..len]);
            if boundaries.contains(&len) || len == MAGIC.len() {
                // Without the raw field, the kind is still known but the object is empty.
                continue;
            }
            assert!(result.is_err(), "truncation to {len} bytes decoded: {result:?}");
        }
    }

    #[test]
    fn garbage_never_panics() {
        let body = valid_body();
        // Flip every byte to a few values; any result is fine as long as it returns.
        for i in 0..body.len() {
            for replacement in [0x00, 0x7f, 0x80, 0xff, 0x0a, 0x12] {
                let mut mutated = body.clone();
                mutated[i] = replacement;
                let _ = decode(&mutated);
            }
        }
        // Pseudo-random bodies behind a valid prefix.
        let mut state: u32 = 12345;
        for _ in 0..2000 {
            let mut garbage = MAGIC.to_vec();
            for _ in 0..(state % 64) {
                state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
                garbage.push((state >> 16) as u8);
            }
            let _ = decode(&garbage);
        }
    }

    #[test]
    fn hostile_lengths_and_varints() {
        // raw claims 2^62 bytes.
        let mut body = MAGIC.to_vec();
        body.extend([0x12, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x40]);
        assert!(matches!(decode(&body), Err(ProtobufError::Malformed(_))));
        // An 11-byte varint.
        let mut body = MAGIC.to_vec();
        body.extend([
            0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ]);
        assert!(matches!(decode(&body), Err(ProtobufError::Malformed(_))));
        // A 10-byte varint whose last byte overflows 64 bits.
        let mut body = MAGIC.to_vec();
        body.extend([0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]);
        assert!(matches!(decode(&body), Err(ProtobufError::Malformed(_))));
        // Groups and the nonexistent wire types.
        for tag in [0x0b, 0x0c, 0x0e, 0x0f] {
            let mut body = MAGIC.to_vec();
            body.push(tag);
            assert!(
                matches!(decode(&body), Err(ProtobufError::Malformed(_))),
                "tag {tag:#x}"
            );
        }
        // Field number 0.
        let mut body = MAGIC.to_vec();
        body.extend([0x00, 0x00]);
        assert!(matches!(decode(&body), Err(ProtobufError::Malformed(_))));
        // A known field with the wrong wire type (metadata as a varint).
        let body = envelope("v1", "Namespace", vec![0x08, 0x01]);
        assert!(matches!(decode(&body), Err(ProtobufError::Malformed(_))));
        // Invalid UTF-8 in a string.
        let body = envelope("v1", "Namespace", vec![0x0a, 0x03, 0x0a, 0x01, 0xff]);
        assert!(matches!(decode(&body), Err(ProtobufError::Malformed(_))));
        // A time outside RFC 3339's years.
        let raw = core::Namespace {
            metadata: Some(meta::ObjectMeta {
                creation_timestamp: Some(meta::Time {
                    seconds: Some(i64::MAX),
                    nanos: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let body = envelope("v1", "Namespace", raw.encode_to_vec());
        assert!(matches!(decode(&body), Err(ProtobufError::Malformed(_))));
    }

    /// A self-referential table: only the depth limit stops the recursion.
    static NODE: [Field; 1] = [Field {
        number: 1,
        name: "child",
        ty: Ty::Message(&NODE, OmitEmpty),
    }];

    fn push_varint(out: &mut Vec<u8>, mut value: usize) {
        loop {
            let byte = (value & 0x7f) as u8;
            value >>= 7;
            if value == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    /// `depth` messages, each field 1 of the one around it.
    fn nested(depth: usize) -> Vec<u8> {
        let mut bytes = Vec::new();
        for _ in 0..depth {
            let mut outer = vec![0x0a];
            push_varint(&mut outer, bytes.len());
            outer.extend(bytes);
            bytes = outer;
        }
        bytes
    }

    #[test]
    fn nesting_is_bounded() {
        assert!(decode_message(&nested(MAX_DEPTH - 1), &NODE, 0).is_ok());
        assert!(matches!(
            decode_message(&nested(MAX_DEPTH), &NODE, 0),
            Err(ProtobufError::Malformed(_))
        ));
        assert!(matches!(
            decode_message(&nested(2000), &NODE, 0),
            Err(ProtobufError::Malformed(_))
        ));
        // Deep nesting inside an unknown field of a real kind is skipped without recursion.
        let mut raw = vec![0xb2, 0x06];
        let inner = nested(2000);
        push_varint(&mut raw, inner.len());
        raw.extend(inner);
        let body = envelope("v1", "Namespace", raw);
        assert_eq!(decode_ok(&body), json!({"apiVersion": "v1", "kind": "Namespace"}));
    }

    #[test]
    fn hand_encoded_wire_bytes() {
        // `create namespace demo` as Go's encoder writes it: every zero field present.
        let body: &[u8] = &[
            0x6b, 0x38, 0x73, 0x00, // magic
            0x0a, 0x0f, 0x0a, 0x02, b'v', b'1', 0x12, 0x09, b'N', b'a', b'm', b'e', b's', b'p', b'a', b'c',
            b'e', 0x12, 0x1c, // raw
            0x0a, 0x14, // metadata
            0x0a, 0x04, b'd', b'e', b'm', b'o', 0x12, 0x00, 0x1a, 0x00, 0x22, 0x00, 0x2a, 0x00, 0x32, 0x00,
            0x38, 0x00, 0x42, 0x00, // creationTimestamp {}
            0x12, 0x00, // spec
            0x1a, 0x02, 0x0a, 0x00, // status {phase: ""}
            0x1a, 0x00, 0x22, 0x00, // contentEncoding, contentType
        ];
        assert_eq!(
            decode_ok(body),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo"}})
        );
        assert!(supports("v1", "Namespace"));
        assert!(!supports("v1", "Pod"));
    }
}
