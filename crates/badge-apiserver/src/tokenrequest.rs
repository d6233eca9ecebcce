//! TokenRequest's request and reply as typed values (`pkg/registry/core/serviceaccount/storage/
//! token.go` reads a few fields and answers with a fixed shape).
//!
//! Issuing tokens is a hot path, so the usual JSON body is decoded straight into
//! [`TokenRequestInput`] and the reply written from [`TokenRequestReply`]. The typed decoder
//! refuses anything it does not fully understand (unknown, duplicated or null members, other
//! types, other media types); such bodies take the generic path (parse, round-trip through the
//! kind's type, field validation), whose errors and warnings stay the only ones, and which
//! yields the same input. The reply's members are in the order the generic path's sorted maps
//! gave them.

use crate::ApiServer;
use crate::response;
use crate::rest::Call;
use crate::tokenreview::present;
use badge_api::Status;
use badge_api::meta;
use http::{Response, StatusCode};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub(crate) const API_VERSION: &str = "authentication.k8s.io/v1";
pub(crate) const KIND: &str = "TokenRequest";

/// What a TokenRequest asks.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TokenRequestInput {
    /// `metadata.name`, `metadata.namespace`, `metadata.uid` ("" when not given).
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.uid`.
    pub uid: String,
    /// `spec.audiences` (empty: the API audiences).
    pub audiences: Vec<String>,
    /// `spec.expirationSeconds`.
    pub expiration_seconds: Option<i64>,
    /// `spec.boundObjectRef`.
    pub bound_object_ref: Option<BoundObjectRef>,
}

/// `spec.boundObjectRef`, members in the order the reply writes them.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BoundObjectRef {
    #[serde(rename = "apiVersion", default, skip_serializing_if = "Option::is_none")]
    /// The bound object's apiVersion.
    pub api_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// The bound object's kind: Pod, Secret or Node.
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// The bound object's name.
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// The bound object's UID, checked when given.
    pub uid: Option<String>,
}

impl BoundObjectRef {
    /// The apiVersion, "" when absent.
    pub fn api_version(&self) -> &str {
        self.api_version.as_deref().unwrap_or("")
    }

    /// The kind, "" when absent.
    pub fn kind(&self) -> &str {
        self.kind.as_deref().unwrap_or("")
    }

    /// The name, "" when absent.
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }

    /// The UID, "" when absent.
    pub fn uid(&self) -> &str {
        self.uid.as_deref().unwrap_or("")
    }
}

impl TokenRequestInput {
    /// The input from a body the generic path decoded (unknown fields gone, types checked).
    pub fn from_value(request: &Value) -> TokenRequestInput {
        let string = |value: &Value, key: &str| value.get(key).and_then(Value::as_str).map(String::from);
        TokenRequestInput {
            name: meta::name(request).to_string(),
            namespace: meta::namespace(request).to_string(),
            uid: meta::uid(request).to_string(),
            audiences: request
                .pointer("/spec/audiences")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
                .unwrap_or_default(),
            expiration_seconds: request.pointer("/spec/expirationSeconds").and_then(Value::as_i64),
            bound_object_ref: request
                .pointer("/spec/boundObjectRef")
                .filter(|r| r.is_object())
                .map(|r| BoundObjectRef {
                    api_version: string(r, "apiVersion"),
                    kind: string(r, "kind"),
                    name: string(r, "name"),
                    uid: string(r, "uid"),
                }),
        }
    }
}

/// The body as the typed path accepts it; `metadata.creationTimestamp` is checked for validity
/// only, since the reply replaces it. A `status` is left to the generic path: its type requires
/// members clients leave empty.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    #[serde(rename = "apiVersion", default, deserialize_with = "present")]
    api_version: Option<String>,
    #[serde(default, deserialize_with = "present")]
    kind: Option<String>,
    #[serde(default, deserialize_with = "present")]
    metadata: Option<BodyMetadata>,
    spec: BodySpec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BodyMetadata {
    #[serde(rename = "creationTimestamp", default)]
    #[allow(dead_code)] // read only to check it
    creation_timestamp: Option<Time>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    uid: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BodySpec {
    #[serde(default)]
    audiences: Option<Vec<String>>,
    #[serde(rename = "boundObjectRef", default)]
    bound_object_ref: Option<BoundObjectRef>,
    #[serde(rename = "expirationSeconds", default)]
    expiration_seconds: Option<i64>,
}

/// Decodes a JSON TokenRequest body on the typed path; None sends it to the generic path.
pub(crate) fn decode_typed(body: &[u8]) -> Option<TokenRequestInput> {
    let body: Body = serde_json::from_slice(body).ok()?;
    // Exactly the served ones: the generic path's type refuses any other, even empty.
    let type_meta_matches = body.api_version.as_deref().is_none_or(|v| v == API_VERSION)
        && body.kind.as_deref().is_none_or(|k| k == KIND);
    if !type_meta_matches {
        return None;
    }
    let metadata = body.metadata.unwrap_or(BodyMetadata {
        creation_timestamp: None,
        name: None,
        namespace: None,
        uid: None,
    });
    Some(TokenRequestInput {
        name: metadata.name.unwrap_or_default(),
        namespace: metadata.namespace.unwrap_or_default(),
        uid: metadata.uid.unwrap_or_default(),
        audiences: body.spec.audiences.unwrap_or_default(),
        expiration_seconds: body.spec.expiration_seconds,
        bound_object_ref: body.spec.bound_object_ref,
    })
}

/// The TokenRequest returned: the ServiceAccount's identity, the spec as applied, and the
/// token. It holds a credential, so it has no `Debug`.
#[derive(Serialize)]
pub struct TokenRequestReply {
    #[serde(rename = "apiVersion")]
    /// `authentication.k8s.io/v1`.
    pub api_version: &'static str,
    /// `TokenRequest`.
    pub kind: &'static str,
    /// The ServiceAccount's name, namespace and UID.
    pub metadata: ReplyMetadata,
    /// The spec, as applied.
    pub spec: ReplySpec,
    /// The token and when it expires.
    pub status: ReplyStatus,
}

#[derive(Serialize)]
/// The reply's metadata: the ServiceAccount's identity.
pub struct ReplyMetadata {
    #[serde(rename = "creationTimestamp")]
    /// When the token was issued.
    pub creation_timestamp: String,
    /// The ServiceAccount's name.
    pub name: String,
    /// The ServiceAccount's namespace.
    pub namespace: String,
    /// The ServiceAccount's UID.
    pub uid: String,
}

#[derive(Serialize)]
/// The reply's spec.
pub struct ReplySpec {
    /// The audiences the token is for.
    pub audiences: Vec<String>,
    /// Written as null when the request named none, as upstream's reply has it.
    #[serde(rename = "boundObjectRef")]
    pub bound_object_ref: Option<BoundObjectRef>,
    #[serde(rename = "expirationSeconds")]
    /// The lifetime issued, in seconds.
    pub expiration_seconds: i64,
}

#[derive(Serialize)]
/// The reply's status.
pub struct ReplyStatus {
    #[serde(rename = "expirationTimestamp")]
    /// When the token expires, RFC 3339.
    pub expiration_timestamp: String,
    /// The token.
    pub token: badge_token::Token,
}

impl TokenRequestReply {
    /// The reply's JSON, in a buffer sized for the token: the bytes of the derived
    /// `Serialize`, written member by member so the token, most of the reply, is copied
    /// whole rather than escaped a byte at a time.
    pub fn to_bytes(&self) -> Result<Vec<u8>, serde_json::Error> {
        use crate::audit::encode::string;
        let token = self.status.token.expose();
        let mut bytes = Vec::with_capacity(token.len() + 512);
        bytes.extend_from_slice(b"{\"apiVersion\":");
        string(&mut bytes, self.api_version);
        bytes.extend_from_slice(b",\"kind\":");
        string(&mut bytes, self.kind);
        bytes.extend_from_slice(b",\"metadata\":{\"creationTimestamp\":");
        string(&mut bytes, &self.metadata.creation_timestamp);
        bytes.extend_from_slice(b",\"name\":");
        string(&mut bytes, &self.metadata.name);
        bytes.extend_from_slice(b",\"namespace\":");
        string(&mut bytes, &self.metadata.namespace);
        bytes.extend_from_slice(b",\"uid\":");
        string(&mut bytes, &self.metadata.uid);
        bytes.extend_from_slice(b"},\"spec\":{\"audiences\":[");
        for (i, audience) in self.spec.audiences.iter().enumerate() {
            if i > 0 {
                bytes.push(b',');
            }
            string(&mut bytes, audience);
        }
        bytes.extend_from_slice(b"],\"boundObjectRef\":");
        serde_json::to_writer(&mut bytes, &self.spec.bound_object_ref)?;
        bytes.extend_from_slice(b",\"expirationSeconds\":");
        serde_json::to_writer(&mut bytes, &self.spec.expiration_seconds)?;
        bytes.extend_from_slice(b"},\"status\":{\"expirationTimestamp\":");
        string(&mut bytes, &self.status.expiration_timestamp);
        bytes.extend_from_slice(b",\"token\":");
        string(&mut bytes, token);
        bytes.extend_from_slice(b"}}");
        Ok(bytes)
    }
}

impl ApiServer {
    /// `POST .../serviceaccounts/NAME/token`.
    pub(crate) async fn token_request(&self, call: &Call<'_>) -> Result<Response<response::Body>, Status> {
        let issuer = self.token_issuer.as_ref().ok_or_else(Status::path_not_found)?;
        let sub = call
            .resource
            .subresource("token")
            .ok_or_else(Status::path_not_found)?;
        let media = badge_api::decode::media_type(call.content_type)
            .ok_or_else(|| Status::unsupported_media_type(call.content_type))?;
        let typed = match media {
            badge_api::decode::MediaType::Json => crate::tokenrequest::decode_typed(&call.body),
            _ => None,
        };
        let (request, decode_warnings) = match typed {
            Some(request) => {
                // Checked where the generic path checks it: after the body decoded.
                badge_api::decode::FieldValidation::parse(call.query.get("fieldValidation"))?;
                (request, Vec::new())
            }
            None => {
                let (value, duplicates) = if call.body.is_empty() {
                    (serde_json::json!({}), Vec::new())
                } else {
                    badge_api::decode::parse_body(media, &call.body)?
                };
                badge_api::decode::check_type_meta(
                    &value,
                    crate::tokenrequest::API_VERSION,
                    crate::tokenrequest::KIND,
                )?;
                let validation =
                    badge_api::decode::FieldValidation::parse(call.query.get("fieldValidation"))?;
                let decoded =
                    badge_api::decode::decode_object(value, &duplicates, sub.roundtrip, validation)?;
                (
                    crate::tokenrequest::TokenRequestInput::from_value(&decoded.object),
                    decoded.warnings,
                )
            }
        };
        if let Some(node) = crate::node::node_name(&call.user) {
            crate::node::admit_node_token_request(
                &self.registry,
                node,
                &call.info.namespace,
                &call.info.name,
                &request,
                &issuer.config.api_audiences,
            )
            .await?;
        }
        let (reply, mut warnings, issued) = issuer
            .create(
                &self.registry,
                &call.info.namespace,
                &call.info.name,
                request,
                &call.user.name,
                self.usage.enabled(),
            )
            .await?;
        if let Some(record) = issued.record {
            self.usage.issued(record);
        }
        warnings.extend(decode_warnings);
        let bytes = reply
            .to_bytes()
            .map_err(|e| Status::internal(format!("encoding the response: {e}")))?;
        let mut response = response::json_bytes(StatusCode::CREATED, response::JSON, bytes);
        response::add_warnings(&mut response, &warnings);
        self.metrics.token_issued(&call.info.namespace);
        if self.audit_log.is_some() && !issued.jti.is_empty() {
            crate::audit::annotate(
                &mut response,
                crate::audit::ISSUED_CREDENTIAL_ID_ANNOTATION,
                format!("JTI={}", issued.jti),
            );
        }
        Ok(response)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use badge_api::decode::{self, FieldValidation};
    use serde_json::json;

    use super::*;

    /// The input the generic path reads from `body`.
    fn generic_input(body: &str) -> TokenRequestInput {
        let resource = badge_api::resources::SERVICEACCOUNTS;
        let token = resource.subresource("token").unwrap();
        let (value, duplicates) = decode::parse_body(decode::MediaType::Json, body.as_bytes()).unwrap();
        decode::check_type_meta(&value, API_VERSION, KIND).unwrap();
        let decoded =
            decode::decode_object(value, &duplicates, token.roundtrip, FieldValidation::Strict).unwrap();
        assert!(decoded.warnings.is_empty());
        TokenRequestInput::from_value(&decoded.object)
    }

    #[test]
    fn the_typed_path_reads_what_the_generic_path_reads() {
        let bodies = [
            r#"{"apiVersion":"authentication.k8s.io/v1","kind":"TokenRequest","spec":{}}"#,
            r#"{"spec":{"audiences":["vault","api"],"expirationSeconds":3607}}"#,
            r#"{"kind":"TokenRequest","apiVersion":"authentication.k8s.io/v1","metadata":{"creationTimestamp":null},"spec":{"audiences":null,"expirationSeconds":3600,"boundObjectRef":null}}"#,
            r#"{"metadata":{"name":"app","namespace":"default","uid":"u-1"},"spec":{"boundObjectRef":{"kind":"Pod","apiVersion":"v1","name":"web","uid":"p-1"}}}"#,
            r#"{"spec":{"boundObjectRef":{}}}"#,
            r#"{"metadata":{"creationTimestamp":"2030-01-01T00:00:00Z"},"spec":{"boundObjectRef":{"kind":"Secret","name":null}}}"#,
        ];
        for body in bodies {
            let typed = decode_typed(body.as_bytes()).unwrap_or_else(|| panic!("typed path refused {body}"));
            assert_eq!(typed, generic_input(body), "{body}");
        }
    }

    #[test]
    fn bodies_the_generic_path_would_refuse_or_warn_about_are_left_to_it() {
        let bodies = [
            r#"{"spec":{},"surprise":1}"#,
            r#"{"spec":{"audiences":["a"],"audiences":["b"]}}"#,
            r#"{"spec":{"boundObjectRef":{"kind":"Pod","extra":"x"}}}"#,
            r#"{"metadata":{"labels":{"a":"b"}},"spec":{}}"#,
            r#"{"spec":{"expirationSeconds":"3600"}}"#,
            r#"{"spec":{"expirationSeconds":3600.5}}"#,
            r#"{"kind":"TokenReview","spec":{}}"#,
            r#"{"apiVersion":"","spec":{}}"#,
            r#"{"apiVersion":null,"spec":{}}"#,
            r#"{"metadata":null,"spec":{}}"#,
            r#"{"status":{"token":"","expirationTimestamp":null},"spec":{}}"#,
            r#"{"metadata":{"creationTimestamp":"soon"},"spec":{}}"#,
            r#"{"spec":{}} {}"#,
            "{}",
            "",
        ];
        for body in bodies {
            assert!(decode_typed(body.as_bytes()).is_none(), "{body}");
        }
    }

    #[test]
    fn the_reply_is_written_as_the_generic_reply_was() {
        let bound = BoundObjectRef {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some("web".into()),
            uid: None,
        };
        for bound_object_ref in [None, Some(bound)] {
            let reply = TokenRequestReply {
                api_version: API_VERSION,
                kind: KIND,
                metadata: ReplyMetadata {
                    creation_timestamp: "2030-01-01T00:00:00Z".into(),
                    name: "app".into(),
                    namespace: "default".into(),
                    uid: "u-1".into(),
                },
                spec: ReplySpec {
                    audiences: vec!["https://kubernetes.default.svc".into()],
                    bound_object_ref: bound_object_ref.clone(),
                    expiration_seconds: 3600,
                },
                status: ReplyStatus {
                    expiration_timestamp: "2030-01-01T01:00:00Z".into(),
                    token: badge_token::Token::new("a.b.c".into()),
                },
            };
            // The reply as a JSON value, the way it was built before it was typed.
            let generic = json!({
                "apiVersion": API_VERSION,
                "kind": KIND,
                "metadata": {"name": "app", "namespace": "default", "uid": "u-1", "creationTimestamp": "2030-01-01T00:00:00Z"},
                "spec": {"audiences": ["https://kubernetes.default.svc"], "expirationSeconds": 3600,
                    "boundObjectRef": bound_object_ref.map(|r| serde_json::to_value(r).unwrap())},
                "status": {"token": "a.b.c", "expirationTimestamp": "2030-01-01T01:00:00Z"},
            });
            assert_eq!(
                String::from_utf8(reply.to_bytes().unwrap()).unwrap(),
                serde_json::to_string(&generic).unwrap()
            );
        }
    }
    #[test]
    fn the_written_reply_is_the_derived_serialization() {
        let bound = BoundObjectRef {
            api_version: Some("v1".into()),
            kind: Some("Secret".into()),
            name: Some("s\"1\\".into()),
            uid: Some("u\u{7}".into()),
        };
        let cases = [
            (vec![], None, "app", "a.b.c"),
            (
                vec!["api".to_string(), "vault \"x\"".to_string()],
                Some(bound),
                "naïve\n",
                "ey\u{1}.\u{2028}.é",
            ),
        ];
        for (audiences, bound_object_ref, name, token) in cases {
            let reply = TokenRequestReply {
                api_version: API_VERSION,
                kind: KIND,
                metadata: ReplyMetadata {
                    creation_timestamp: "2030-01-01T00:00:00Z".into(),
                    name: name.into(),
                    namespace: "default".into(),
                    uid: "u-1".into(),
                },
                spec: ReplySpec {
                    audiences,
                    bound_object_ref,
                    expiration_seconds: -42,
                },
                status: ReplyStatus {
                    expiration_timestamp: "2030-01-01T01:00:00Z".into(),
                    token: badge_token::Token::new(token.into()),
                },
            };
            assert_eq!(
                String::from_utf8(reply.to_bytes().unwrap()).unwrap(),
                serde_json::to_string(&reply).unwrap()
            );
        }
    }
}
