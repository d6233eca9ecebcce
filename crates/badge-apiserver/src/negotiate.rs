//! Output negotiation for resource requests: which serializer an `Accept` header picks and
//! which conversion (`as`, `g`, `v`) it asks for, as `endpoints/handlers/negotiation` and
//! `RequestScope.AllowsMediaTypeTransform` decide for built-in resources.
//!
//! badge writes only JSON. Where upstream would pick YAML or protobuf it still answers (in
//! JSON, with a JSON Content-Type, which clients decode by); where upstream answers 406,
//! so does badge.

use badge_api::Status;
use serde_json::Value;

/// The serializers of built-in resources, in upstream's order of preference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Serializer {
    /// `application/json`.
    Json,
    /// `application/yaml`.
    Yaml,
    /// `application/vnd.kubernetes.protobuf`.
    Protobuf,
}

const SERIALIZERS: [Serializer; 3] = [Serializer::Json, Serializer::Yaml, Serializer::Protobuf];

/// The message of a 406 when no clause of a list, get or write request can be served.
const MEDIA_TYPES: &str = "application/json, application/yaml, application/vnd.kubernetes.protobuf";
/// The message of a 406 when no clause of a watch can be served as a stream.
const STREAM_MEDIA_TYPES: &str =
    "application/json;stream=watch, application/vnd.kubernetes.protobuf;stream=watch";

impl Serializer {
    fn subtype(self) -> &'static str {
        match self {
            Serializer::Json => "json",
            Serializer::Yaml => "yaml",
            Serializer::Protobuf => "vnd.kubernetes.protobuf",
        }
    }

    /// Whether it frames watch events (YAML has no stream serializer).
    fn streams(self) -> bool {
        self != Serializer::Yaml
    }
}

/// The `meta.k8s.io` versions conversions exist in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetaVersion {
    /// `meta.k8s.io/v1`.
    V1,
    /// `meta.k8s.io/v1beta1`.
    V1Beta1,
}

impl MetaVersion {
    /// The `apiVersion` of this version's kinds.
    pub fn api_version(self) -> &'static str {
        match self {
            MetaVersion::V1 => "meta.k8s.io/v1",
            MetaVersion::V1Beta1 => "meta.k8s.io/v1beta1",
        }
    }
}

/// What the response object becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The object as stored.
    Object,
    /// A `Table`.
    Table,
    /// A `PartialObjectMetadata`: a single object's metadata.
    Metadata(MetaVersion),
    /// A `PartialObjectMetadataList`: the metadata of a list's items.
    MetadataList(MetaVersion),
}

/// The outcome of negotiation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Output {
    /// The serializer upstream would write with.
    pub serializer: Serializer,
    /// What to convert the response to.
    pub target: Target,
}

impl Output {
    /// The second negotiation a watch goes through: the chosen serializer must frame a
    /// stream, or the watch is refused with the stream media types.
    pub fn for_watch(self) -> Result<Output, Status> {
        if self.serializer.streams() {
            Ok(self)
        } else {
            Err(Status::not_acceptable(STREAM_MEDIA_TYPES))
        }
    }
}

/// One clause of an Accept header, as `goautoneg.ParseAccept` reads it.
struct Clause<'a> {
    kind: &'a str,
    subtype: &'a str,
    q: f64,
    params: &'a str,
}

fn trim_spaces(s: &str) -> &str {
    s.trim_matches(' ')
}

/// The `key=value` parameters of a clause, `q` included. As upstream's parser, it skips a
/// parameter without a value or with a second `=` followed by more.
fn params(raw: &str) -> impl Iterator<Item = (&str, &str)> {
    raw.split(';').filter_map(|param| {
        let (key, rest) = param.split_once('=')?;
        let (value, tail) = rest.split_once('=').unwrap_or((rest, ""));
        (!rest.is_empty() && tail.is_empty()).then(|| (trim_spaces(key), value))
    })
}

fn clause(part: &str) -> Option<Clause<'_>> {
    let part = trim_spaces(part);
    let (range, raw_params) = part.split_once(';').unwrap_or((part, ""));
    let (kind, rest) = range.split_once('/').unwrap_or((range, ""));
    let kind = trim_spaces(kind);
    let subtype = if rest.is_empty() {
        // A bare `*` (or `*/`) is `*/*`; any other type needs a subtype.
        if kind != "*" {
            return None;
        }
        "*"
    } else {
        let (subtype, tail) = rest.split_once('/').unwrap_or((rest, ""));
        if !tail.is_empty() {
            return None;
        }
        trim_spaces(subtype)
    };
    // The value is parsed untrimmed; an unparsable q is 0, and a q of 0 still matches:
    // upstream's parser drops neither.
    let q = params(raw_params)
        .filter(|(key, _)| *key == "q")
        .last()
        .map_or(1.0, |(_, value)| value.parse::<f32>().map_or(0.0, f64::from));
    Some(Clause {
        kind,
        subtype,
        q,
        params: raw_params,
    })
}

/// `goautoneg`'s ordering: higher q first, then concrete types before wildcards. It is not
/// a total order, so the sort is the insertion sort Go's `sort.Sort` runs on short slices.
fn precedes(a: &Clause<'_>, b: &Clause<'_>) -> bool {
    a.q > b.q || (a.kind != "*" && b.kind == "*") || (a.subtype != "*" && b.subtype == "*")
}

fn parse_accept(header: &str) -> Vec<Clause<'_>> {
    let mut clauses: Vec<Clause<'_>> = header.split(',').filter_map(clause).collect();
    for i in 1..clauses.len() {
        let mut j = i;
        while j > 0 && precedes(&clauses[j], &clauses[j - 1]) {
            clauses.swap(j, j - 1);
            j -= 1;
        }
    }
    clauses
}

/// The conversion a clause asks for, or None when its parameters name something upstream
/// does not serve for built-ins and the clause is skipped.
fn accepts(clause: &Clause<'_>, serializer: Serializer) -> Option<Target> {
    let (mut kind, mut group, mut version) = (None, None, None);
    let (mut stream, mut server_version) = ("", "");
    // Later duplicates win, as in the map upstream collects parameters into.
    for (key, value) in params(clause.params) {
        let value = trim_spaces(value);
        match key {
            "as" => kind = Some(value),
            "g" => group = Some(value),
            "v" => version = Some(value),
            "stream" => stream = value,
            "sv" => server_version = value,
            _ => {}
        }
    }
    if !stream.is_empty() && (!serializer.streams() || stream != "watch") {
        return None;
    }
    // The server version of the meta group badge's resources are served with.
    if !server_version.is_empty() && server_version != "v1" {
        return None;
    }
    if kind.is_none() && group.is_none() && version.is_none() {
        return Some(Target::Object);
    }
    let version = match (group.unwrap_or(""), version.unwrap_or("")) {
        ("meta.k8s.io", "v1") => MetaVersion::V1,
        ("meta.k8s.io", "v1beta1") => MetaVersion::V1Beta1,
        _ => return None,
    };
    match kind.unwrap_or("") {
        // Tables have no protobuf encoding.
        "Table" if serializer != Serializer::Protobuf => Some(Target::Table),
        "PartialObjectMetadata" => Some(Target::Metadata(version)),
        "PartialObjectMetadataList" => Some(Target::MetadataList(version)),
        _ => None,
    }
}

/// Negotiates the output of a resource request: the first clause, in precedence order, that
/// a serializer matches and whose parameters are served. An empty header is JSON.
pub fn output(accept: &str) -> Result<Output, Status> {
    // The common cases need no parsing.
    if accept.is_empty() || accept == "application/json" {
        return Ok(Output {
            serializer: Serializer::Json,
            target: Target::Object,
        });
    }
    for clause in parse_accept(accept) {
        for serializer in SERIALIZERS {
            let matches = (clause.kind == "application"
                && (clause.subtype == serializer.subtype() || clause.subtype == "*"))
                || (clause.kind == "*" && clause.subtype == "*");
            if !matches {
                continue;
            }
            if let Some(target) = accepts(&clause, serializer) {
                return Ok(Output { serializer, target });
            }
        }
    }
    Err(Status::not_acceptable(MEDIA_TYPES))
}

/// `meta.k8s.io` `PartialObjectMetadata`: an object's metadata and nothing else, written
/// from the borrowed object.
#[derive(serde::Serialize)]
pub struct PartialObjectMetadata<'a> {
    kind: &'static str,
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    metadata: &'a Value,
}

static NO_METADATA: Value = Value::Null;

impl PartialObjectMetadata<'_> {
    /// The metadata of `object`, as `version`'s PartialObjectMetadata.
    pub fn of(object: &Value, version: MetaVersion) -> PartialObjectMetadata<'_> {
        PartialObjectMetadata {
            kind: "PartialObjectMetadata",
            api_version: version.api_version(),
            metadata: object.get("metadata").unwrap_or(&NO_METADATA),
        }
    }
}

/// The Go type upstream names in conversion errors: the internal type of the kind, or of
/// its list (`*core.Secret`, `*rbac.RoleList`).
fn internal_type(resource: &badge_api::Resource, list: bool) -> String {
    let package = match resource.group {
        "" => "core",
        group => group.split('.').next().unwrap_or(group),
    };
    let suffix = if list { "List" } else { "" };
    format!("*{package}.{}{suffix}", resource.kind)
}

fn conversion_refused(message: String) -> Status {
    let mut status = Status::not_acceptable("");
    status.message = message;
    status
}

/// The 406 for `as=PartialObjectMetadata` on a list (`asPartialObjectMetadata`).
pub fn metadata_of_list(resource: &badge_api::Resource) -> Status {
    conversion_refused(format!(
        "you requested PartialObjectMetadata, but the requested object is a list ({})",
        internal_type(resource, true)
    ))
}

/// The 406 for `as=PartialObjectMetadataList` on a single object (`asPartialObjectMetadataList`).
pub fn metadata_list_of_object(resource: &badge_api::Resource) -> Status {
    conversion_refused(format!(
        "you requested PartialObjectMetadataList, but the requested object is not a list ({})",
        internal_type(resource, false)
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn target(accept: &str) -> Target {
        output(accept).unwrap().target
    }

    const METADATA_LIST_V1: &str = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1";

    #[test]
    fn plain_json_and_empty_header_are_the_object() {
        for accept in [
            "",
            "application/json",
            "*/*",
            "application/*",
            "application/json, */*",
        ] {
            assert_eq!(
                output(accept).unwrap(),
                Output {
                    serializer: Serializer::Json,
                    target: Target::Object
                },
                "{accept}"
            );
        }
    }

    #[test]
    fn partial_object_metadata_in_v1_and_v1beta1() {
        assert_eq!(target(METADATA_LIST_V1), Target::MetadataList(MetaVersion::V1));
        assert_eq!(
            target("application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"),
            Target::Metadata(MetaVersion::V1)
        );
        assert_eq!(
            target("application/json;as=PartialObjectMetadata;v=v1beta1;g=meta.k8s.io"),
            Target::Metadata(MetaVersion::V1Beta1)
        );
        // Parameters in any order, with spaces around them.
        assert_eq!(
            target("application/json ; v=v1 ; g=meta.k8s.io ; as=PartialObjectMetadataList"),
            Target::MetadataList(MetaVersion::V1)
        );
    }

    #[test]
    fn client_go_metadata_headers_keep_their_conversion_in_json() {
        // client-go's metadata client prefers protobuf; badge answers that in JSON.
        let list = "application/vnd.kubernetes.protobuf;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json";
        assert_eq!(
            output(list).unwrap(),
            Output {
                serializer: Serializer::Protobuf,
                target: Target::MetadataList(MetaVersion::V1)
            }
        );
        let watch = "application/vnd.kubernetes.protobuf;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json";
        let negotiated = output(watch).unwrap().for_watch().unwrap();
        assert_eq!(negotiated.target, Target::Metadata(MetaVersion::V1));
    }

    #[test]
    fn tables_in_json_or_yaml_never_protobuf() {
        let kubectl = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(target(kubectl), Target::Table);
        assert_eq!(
            target("application/yaml;as=Table;v=v1;g=meta.k8s.io"),
            Target::Table
        );
        // A protobuf Table is skipped for the next clause.
        assert_eq!(
            output("application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io,application/json")
                .unwrap(),
            Output {
                serializer: Serializer::Json,
                target: Target::Object
            }
        );
        assert!(output("application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io").is_err());
    }

    #[test]
    fn unsupported_conversions_are_skipped_then_refused() {
        for accept in [
            "application/json;as=Foo;g=meta.k8s.io;v=v1",
            "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1alpha1",
            "application/json;as=PartialObjectMetadata;v=v1",
            "application/json;as=PartialObjectMetadata",
            "application/json;as=Table;g=meta.k8s.io",
            "application/json;g=meta.k8s.io;v=v1",
            "application/json;v=v1",
        ] {
            let refused = output(accept).unwrap_err();
            assert_eq!(
                (refused.code, refused.reason.as_str()),
                (406, "NotAcceptable"),
                "{accept}"
            );
        }
        // Skipped clauses leave the next one to answer, as upstream's tests show.
        assert_eq!(
            target("application/json;as=PartialObjectMetadata;v=v1alpha1;g=meta.k8s.io, application/json"),
            Target::Object
        );
        assert_eq!(
            target(
                "application/json;as=PartialObjectMetadata;v=v1beta1;g=meta.k8s.io, application/json;as=PartialObjectMetadata;v=v1;g=meta.k8s.io"
            ),
            Target::Metadata(MetaVersion::V1Beta1)
        );
    }

    #[test]
    fn media_types_badge_cannot_name_are_406_with_upstreams_list() {
        for accept in [
            "application/xml",
            "text/html",
            "text/*",
            "*/json",
            " ",
            ",",
            "application/json/x",
        ] {
            let refused = output(accept).unwrap_err();
            assert_eq!(refused.code, 406, "{accept:?}");
            assert_eq!(refused.reason, "NotAcceptable");
            assert_eq!(
                refused.message,
                "only the following media types are accepted: application/json, application/yaml, application/vnd.kubernetes.protobuf"
            );
        }
        // Media types compare case-sensitively upstream.
        assert!(output("Application/JSON").is_err());
        // Any servable clause among unservable ones is enough.
        assert_eq!(
            target("application/xml, text/html;q=0.9, */*;q=0.8"),
            Target::Object
        );
    }

    #[test]
    fn q_values_order_the_clauses() {
        let accept =
            "application/json;q=0.5, application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1";
        assert_eq!(target(accept), Target::MetadataList(MetaVersion::V1));
        let accept = "application/json;as=Table;g=meta.k8s.io;v=v1;q=0.9, application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1;q=0.8";
        assert_eq!(target(accept), Target::Table);
        // At equal q, concrete types precede wildcards whatever their order.
        assert_eq!(
            output("*/*, application/yaml").unwrap().serializer,
            Serializer::Yaml
        );
        assert_eq!(
            output("application/*, application/vnd.kubernetes.protobuf")
                .unwrap()
                .serializer,
            Serializer::Protobuf
        );
        // A wildcard is the first serializer, JSON.
        assert_eq!(
            output("application/yaml;q=0.5, application/*")
                .unwrap()
                .serializer,
            Serializer::Json
        );
        // An unparsable q is 0 and still served.
        assert_eq!(
            output("application/yaml;q=high, application/vnd.kubernetes.protobuf;q=0.1")
                .unwrap()
                .serializer,
            Serializer::Protobuf
        );
        assert_eq!(
            output("application/json;q=0").unwrap().serializer,
            Serializer::Json
        );
    }

    #[test]
    fn stream_and_server_version_parameters() {
        assert_eq!(target("application/json;stream=watch"), Target::Object);
        assert!(output("application/json;stream=other").is_err());
        assert!(output("application/yaml;stream=watch").is_err());
        assert_eq!(target("application/json;sv=v1"), Target::Object);
        assert!(output("application/json;sv=v2").is_err());
        // Unknown parameters are ignored.
        assert_eq!(target("application/json;charset=utf-8;pretty=1"), Target::Object);
    }

    #[test]
    fn watches_need_a_stream_serializer() {
        let yaml = output("application/yaml, application/json").unwrap();
        let refused = yaml.for_watch().unwrap_err();
        assert_eq!(refused.code, 406);
        assert_eq!(
            refused.message,
            "only the following media types are accepted: application/json;stream=watch, application/vnd.kubernetes.protobuf;stream=watch"
        );
        assert!(
            output("application/vnd.kubernetes.protobuf")
                .unwrap()
                .for_watch()
                .is_ok()
        );
    }

    #[test]
    fn conversion_errors_name_the_internal_type() {
        let secrets = badge_api::resources::SECRETS;
        assert_eq!(
            metadata_of_list(secrets).message,
            "you requested PartialObjectMetadata, but the requested object is a list (*core.SecretList)"
        );
        let roles = badge_api::resources::ROLES;
        let refused = metadata_list_of_object(roles);
        assert_eq!((refused.code, refused.reason.as_str()), (406, "NotAcceptable"));
        assert_eq!(
            refused.message,
            "you requested PartialObjectMetadataList, but the requested object is not a list (*rbac.Role)"
        );
    }
}
