//! TokenReview (`pkg/registry/authentication/tokenreview/storage.go`): the token authenticator
//! API requests use, run on a token someone else was handed.
//!
//! Reviews are a hot path, so the usual body of a review is decoded straight into the few
//! fields it has and the reply written straight from typed values. The typed decoder refuses
//! anything it does not fully understand (unknown or duplicated fields, wrong types, an
//! empty token, other media types), and such bodies take the generic path (parse, round-trip
//! through the kind's type, field validation), whose errors and warnings stay the only ones.
//! A body the typed decoder accepts is one the generic path accepts with no warning, and
//! both paths write the same reply bytes: members in the order the generic path's sorted maps
//! give them.

use std::borrow::Cow;
use std::collections::BTreeMap;

use badge_api::Status;
use http::{Response, StatusCode};

use crate::ApiServer;
use crate::response;
use crate::rest::Call;
use badge_auth::TokenOutcome;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub(crate) const API_VERSION: &str = "authentication.k8s.io/v1";
pub(crate) const KIND: &str = "TokenReview";

/// What a review asks: the token, and the audiences (None: the API's).
pub(crate) struct ReviewRequest<'a> {
    pub token: Cow<'a, str>,
    pub audiences: Option<Vec<String>>,
    /// The token is known to need no escaping in JSON, so the reply copies it unchecked.
    pub plain: bool,
}

/// The review's body as the typed path accepts it. Members it does not list make it refuse
/// the body; `metadata` and `status` are checked for validity only, since the reply replaces
/// them.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body<'a> {
    #[serde(rename = "apiVersion", borrow, default, deserialize_with = "present")]
    api_version: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "present")]
    kind: Option<Cow<'a, str>>,
    #[serde(default, deserialize_with = "present")]
    #[allow(dead_code)] // read only to check it
    metadata: Option<BodyMetadata>,
    #[serde(borrow)]
    spec: BodySpec<'a>,
    #[serde(default, deserialize_with = "present")]
    #[allow(dead_code)] // read only to check it
    status: Option<BodyStatus>,
}

/// A member that, when present, must not be null: the generic path's types refuse null for
/// these, so the typed path leaves such bodies to it.
pub(crate) fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// What Go clients send for an empty ObjectMeta.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BodyMetadata {
    #[serde(rename = "creationTimestamp", default)]
    #[allow(dead_code)] // read only to check it
    creation_timestamp: Option<Time>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BodySpec<'a> {
    #[serde(borrow)]
    token: Cow<'a, str>,
    #[serde(default)]
    audiences: Option<Vec<String>>,
}

/// What Go clients send for an empty status (`{"user":{}}`), and a little more.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // read only to check it
struct BodyStatus {
    #[serde(default)]
    audiences: Option<Vec<String>>,
    #[serde(default)]
    authenticated: Option<bool>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    user: Option<BodyUser>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // read only to check it
struct BodyUser {
    #[serde(default)]
    groups: Option<Vec<String>>,
    #[serde(default)]
    uid: Option<String>,
    #[serde(default)]
    username: Option<String>,
}

/// The bodies clients send most, byte for byte around the token: badge-perf's and curl's
/// minimal one, and client-go's (`metadata` and `status` as its zero values marshal).
const SHAPES: [(&[u8], &[u8]); 2] = [
    (
        br#"{"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","spec":{"token":""#,
        br#""}}"#,
    ),
    (
        br#"{"kind":"TokenReview","apiVersion":"authentication.k8s.io/v1","metadata":{"creationTimestamp":null},"spec":{"token":""#,
        br#""},"status":{"user":{}}}"#,
    ),
];

/// A body of one of [`SHAPES`] whose token is a JSON string with nothing escaped: what
/// [`decode_typed`] reads from it, without running a parser over the token a byte at a time.
fn decode_shape(body: &[u8]) -> Option<ReviewRequest<'_>> {
    SHAPES.iter().find_map(|(before, after)| {
        let token = body.strip_prefix(*before)?.strip_suffix(*after)?;
        // No quote, backslash or control byte: the string's bytes are its value.
        if token.is_empty() || crate::audit::encode::any_needs_escape(token) {
            return None;
        }
        Some(ReviewRequest {
            token: Cow::Borrowed(std::str::from_utf8(token).ok()?),
            audiences: None,
            plain: true,
        })
    })
}

/// Decodes a JSON review body on the typed path; None sends it to the generic path.
pub(crate) fn decode_typed(body: &[u8]) -> Option<ReviewRequest<'_>> {
    if let Some(request) = decode_shape(body) {
        return Some(request);
    }
    let body: Body<'_> = serde_json::from_slice(body).ok()?;
    // Exactly the served ones: the generic path's type refuses any other, even empty.
    let type_meta_matches = body.api_version.as_deref().is_none_or(|v| v == API_VERSION)
        && body.kind.as_deref().is_none_or(|k| k == KIND);
    if !type_meta_matches || body.spec.token.is_empty() {
        return None;
    }
    Some(ReviewRequest {
        token: body.spec.token,
        audiences: body.spec.audiences,
        plain: false,
    })
}

/// The request's fields from a body the generic path decoded (unknown fields gone).
pub(crate) fn request_of(review: &Value) -> Result<ReviewRequest<'_>, Status> {
    let token = review
        .pointer("/spec/token")
        .and_then(Value::as_str)
        .unwrap_or("");
    if token.is_empty() {
        // Upstream's words (`tokenreview/storage.go`), a 400 rather than a 422.
        return Err(Status::bad_request(
            "token is required for TokenReview in authentication",
        ));
    }
    let audiences = review
        .pointer("/spec/audiences")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect());
    Ok(ReviewRequest {
        token: Cow::Borrowed(token),
        audiences,
        plain: false,
    })
}

/// The review's `status`, members in sorted order.
#[derive(Serialize)]
pub(crate) struct ReviewStatus<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    audiences: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    authenticated: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    user: ReviewUser<'a>,
}

#[derive(Serialize, Default)]
struct ReviewUser<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    extra: Option<&'a BTreeMap<String, Vec<String>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    groups: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    uid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<&'a str>,
}

impl<'a> ReviewStatus<'a> {
    /// Upstream's status for an authenticator's answer: the user and audiences when the token
    /// is good, the reason when it is bad, an empty user when no authenticator knows it.
    pub(crate) fn of(outcome: &'a TokenOutcome) -> ReviewStatus<'a> {
        match outcome {
            TokenOutcome::Authenticated { user, audiences, .. } => ReviewStatus {
                audiences: Some(audiences),
                authenticated: Some(true),
                error: None,
                user: ReviewUser {
                    extra: Some(&user.extra).filter(|extra| !extra.is_empty()),
                    groups: Some(&user.groups),
                    uid: Some(user.uid.as_str()).filter(|uid| !uid.is_empty()),
                    username: Some(&user.name),
                },
            },
            TokenOutcome::NotMine => ReviewStatus {
                audiences: None,
                authenticated: None,
                error: None,
                user: ReviewUser::default(),
            },
            TokenOutcome::Invalid(reason) => ReviewStatus {
                audiences: None,
                authenticated: None,
                error: Some(reason),
                user: ReviewUser::default(),
            },
        }
    }
}

/// The reply on the typed path: the request's spec (as the generic path's round trip leaves
/// it: `audiences` only when given), an empty metadata and the status.
pub(crate) fn reply_bytes(request: &ReviewRequest<'_>, status: &ReviewStatus<'_>) -> Result<Vec<u8>, Status> {
    let encoding = |e: serde_json::Error| Status::internal(format!("encoding the response: {e}"));
    // Written by hand around the token, most of the reply, which goes through the fast
    // string encoder rather than serde_json's byte-at-a-time escaping.
    let mut bytes = Vec::with_capacity(request.token.len() + 512);
    bytes.extend_from_slice(b"{\"apiVersion\":");
    crate::audit::encode::string(&mut bytes, API_VERSION);
    bytes.extend_from_slice(b",\"kind\":");
    crate::audit::encode::string(&mut bytes, KIND);
    bytes.extend_from_slice(b",\"metadata\":{\"creationTimestamp\":null},\"spec\":{");
    if let Some(audiences) = request.audiences.as_deref() {
        bytes.extend_from_slice(b"\"audiences\":");
        serde_json::to_writer(&mut bytes, audiences).map_err(encoding)?;
        bytes.push(b',');
    }
    bytes.extend_from_slice(b"\"token\":");
    if request.plain {
        bytes.push(b'"');
        bytes.extend_from_slice(request.token.as_bytes());
        bytes.push(b'"');
    } else {
        crate::audit::encode::string(&mut bytes, &request.token);
    }
    bytes.extend_from_slice(b"},\"status\":");
    status.write(&mut bytes);
    bytes.push(b'}');
    Ok(bytes)
}

impl ReviewStatus<'_> {
    /// The bytes of the derived `Serialize`, written member by member through the fast
    /// string encoder.
    fn write(&self, out: &mut Vec<u8>) {
        use crate::audit::encode::{string, strings};
        out.push(b'{');
        if let Some(audiences) = self.audiences {
            out.extend_from_slice(b"\"audiences\":");
            strings(out, audiences);
            out.push(b',');
        }
        if let Some(authenticated) = self.authenticated {
            out.extend_from_slice(if authenticated {
                b"\"authenticated\":true,"
            } else {
                b"\"authenticated\":false,"
            });
        }
        if let Some(error) = self.error {
            out.extend_from_slice(b"\"error\":");
            string(out, error);
            out.push(b',');
        }
        out.extend_from_slice(b"\"user\":{");
        let user = &self.user;
        let mut first = true;
        let mut member = |out: &mut Vec<u8>, name: &[u8]| {
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(name);
        };
        if let Some(extra) = user.extra {
            member(out, b"\"extra\":{");
            for (i, (key, values)) in extra.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                string(out, key);
                out.push(b':');
                strings(out, values);
            }
            out.push(b'}');
        }
        if let Some(groups) = user.groups {
            member(out, b"\"groups\":");
            strings(out, groups);
        }
        if let Some(uid) = user.uid {
            member(out, b"\"uid\":");
            string(out, uid);
        }
        if let Some(username) = user.username {
            member(out, b"\"username\":");
            string(out, username);
        }
        out.extend_from_slice(b"}}");
    }
}

/// The generic path's reply: the decoded review with its metadata and status replaced.
pub(crate) fn reply_value(mut review: Value, status: &ReviewStatus<'_>) -> Result<Value, Status> {
    review["status"] =
        serde_json::to_value(status).map_err(|e| Status::internal(format!("encoding the response: {e}")))?;
    review["metadata"] = json!({"creationTimestamp": null});
    Ok(review)
}

impl ApiServer {
    /// A TokenReview whose body the typed path understands; None leaves it to the generic path.
    pub(crate) fn typed_token_review(
        &self,
        call: &Call<'_>,
    ) -> Result<Option<Response<response::Body>>, Status> {
        if badge_api::decode::media_type(call.content_type) != Some(badge_api::decode::MediaType::Json) {
            return Ok(None);
        }
        let Some(request) = decode_typed(&call.body) else {
            return Ok(None);
        };
        // Checked where the generic path checks it: after the body decoded.
        badge_api::decode::FieldValidation::parse(call.query.get("fieldValidation"))?;
        let outcome = self.review_token(&request);
        let bytes = reply_bytes(&request, &ReviewStatus::of(&outcome))?;
        Ok(Some(response::json_bytes(
            StatusCode::CREATED,
            response::JSON,
            bytes,
        )))
    }

    /// TokenReview on the generic path: the same token authenticator API requests use, with
    /// the review's audiences (the API audiences when it names none).
    pub(crate) fn token_review(&self, review: Value) -> Result<Response<response::Body>, Status> {
        let outcome = self.review_token(&request_of(&review)?);
        let reply = reply_value(review, &ReviewStatus::of(&outcome))?;
        Ok(response::json(StatusCode::CREATED, &reply))
    }

    /// Authenticates a reviewed token for its audiences.
    pub(crate) fn review_token(&self, request: &ReviewRequest<'_>) -> badge_auth::TokenOutcome {
        let audiences = match request.audiences.as_deref() {
            Some(requested) if !requested.is_empty() => requested,
            _ => &self.api_audiences,
        };
        let outcome = match &self.tokens {
            Some(tokens) => tokens.authenticate_token(&request.token, audiences),
            None => badge_auth::TokenOutcome::NotMine,
        };
        // A review is a use of the token by whoever was handed it; the reviewer's address is
        // not the holder's, so none is recorded.
        if let TokenOutcome::Authenticated {
            user,
            credential: Some(credential),
            ..
        } = &outcome
        {
            let now = badge_api::clock::now();
            if self.usage.record(credential, now, None, "").is_none() {
                self.node_binding_check(credential, user, now);
            }
        }
        outcome
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use badge_api::decode::{self, FieldValidation};
    use badge_auth::UserInfo;

    use super::*;

    fn outcomes() -> Vec<TokenOutcome> {
        let mut extra = BTreeMap::new();
        extra.insert(
            "authentication.kubernetes.io/pod-name".to_string(),
            vec!["web".to_string()],
        );
        vec![
            TokenOutcome::Authenticated {
                user: UserInfo {
                    name: "system:serviceaccount:default:app".into(),
                    uid: "a-uid".into(),
                    groups: vec!["system:serviceaccounts".into(), "system:authenticated".into()],
                    extra,
                },
                audiences: vec!["https://kubernetes.default.svc".into()],
                credential: None,
            },
            TokenOutcome::Authenticated {
                user: UserInfo {
                    name: "plain".into(),
                    ..Default::default()
                },
                audiences: Vec::new(),
                credential: None,
            },
            TokenOutcome::NotMine,
            TokenOutcome::Invalid("token has expired".into()),
        ]
    }

    /// The reply the generic path gives for `body`.
    fn generic_reply(body: &str, status: &ReviewStatus<'_>) -> Vec<u8> {
        let resource = badge_api::resources::TOKENREVIEWS;
        let (value, duplicates) = decode::parse_body(decode::MediaType::Json, body.as_bytes()).unwrap();
        let decoded = decode::decode_for(resource, value, &duplicates, FieldValidation::Strict).unwrap();
        assert!(decoded.warnings.is_empty());
        serde_json::to_vec(&reply_value(decoded.object, status).unwrap()).unwrap()
    }

    #[test]
    fn typed_replies_are_byte_for_byte_the_generic_ones() {
        let bodies = [
            r#"{"spec":{"token":"abc.def.ghi"}}"#,
            r#"{"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","spec":{"token":"abc.def.ghi"}}"#,
            r#"{"kind":"TokenReview","apiVersion":"authentication.k8s.io/v1","metadata":{"creationTimestamp":null},"spec":{"token":"a\"b\\c\u00e9","audiences":["vault","api"]},"status":{"user":{}}}"#,
            r#"{"spec":{"token":"t","audiences":[]},"metadata":{},"status":{"authenticated":false,"user":{"username":"x","groups":["g"]}}}"#,
            r#"{"metadata":{"creationTimestamp":"2024-01-02T03:04:05Z"},"spec":{"audiences":null,"token":"t"}}"#,
            r#"{"spec":{"token":"t"},"status":{"audiences":null,"authenticated":null,"error":null,"user":{"groups":null,"uid":null,"username":null}}}"#,
            r#"{"spec":{"token":"t"},"status":{"audiences":["a"],"authenticated":true,"error":"e","user":null}}"#,
        ];
        for body in bodies {
            let request =
                decode_typed(body.as_bytes()).unwrap_or_else(|| panic!("typed path refused {body}"));
            for outcome in outcomes() {
                let status = ReviewStatus::of(&outcome);
                let typed = reply_bytes(&request, &status).unwrap();
                assert_eq!(
                    String::from_utf8(typed).unwrap(),
                    String::from_utf8(generic_reply(body, &status)).unwrap(),
                    "{body}"
                );
            }
        }
    }

    #[test]
    fn the_shapes_read_what_the_parser_reads() {
        let parsed = |body: &[u8]| {
            let body: Body<'_> = serde_json::from_slice(body).ok()?;
            Some((body.spec.token.into_owned(), body.spec.audiences))
        };
        let tokens = [
            "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln",
            "x",
            "",
            "a\\\"b",
            "a\\u0041",
            "tab\there",
            "naïve €",
            "a\",\"audiences\":[\"x",
        ];
        let mut matched = 0;
        for token in tokens {
            for (before, after) in SHAPES {
                let mut body = before.to_vec();
                body.extend_from_slice(token.as_bytes());
                body.extend_from_slice(after);
                for body in [body.clone(), [&body[..], b" "].concat(), body[1..].to_vec()] {
                    let Some(shaped) = decode_shape(&body) else {
                        continue;
                    };
                    matched += 1;
                    let (token, audiences) = parsed(&body).expect("the parser reads what a shape reads");
                    assert_eq!(shaped.token, token);
                    assert_eq!(shaped.audiences, audiences);
                }
            }
        }
        // The JWT, x and the non-ASCII token, in both shapes, unaltered.
        assert_eq!(matched, 6);
    }

    #[test]
    fn the_written_status_is_the_derived_serialization() {
        let mut extra = BTreeMap::new();
        extra.insert("a\"b".to_string(), vec![]);
        extra.insert("k".to_string(), vec!["v\n1".to_string(), "é\u{1}".to_string()]);
        let mut awkward = outcomes();
        awkward.push(TokenOutcome::Authenticated {
            user: UserInfo {
                name: "system:serviceaccount:\"q\\".into(),
                uid: "u\t".into(),
                groups: Vec::new(),
                extra,
            },
            audiences: vec!["x\u{7f}".into(), "\u{2028}".into()],
            credential: None,
        });
        awkward.push(TokenOutcome::Invalid("bad \"token\"\n".into()));
        for outcome in awkward {
            let status = ReviewStatus::of(&outcome);
            let mut written = Vec::new();
            status.write(&mut written);
            assert_eq!(
                String::from_utf8(written).unwrap(),
                serde_json::to_string(&status).unwrap()
            );
        }
    }

    #[test]
    fn bodies_the_generic_path_would_refuse_or_warn_about_are_left_to_it() {
        let bodies = [
            // Unknown and duplicated fields: Strict refuses them, Warn names them.
            r#"{"spec":{"token":"t","extra":1}}"#,
            r#"{"spec":{"token":"t"},"surprise":true}"#,
            r#"{"spec":{"token":"t","token":"u"}}"#,
            r#"{"metadata":{"name":"x"},"spec":{"token":"t"}}"#,
            r#"{"spec":{"token":"t"},"status":{"user":{"extra":{"k":["v"],"k":["w"]}}}}"#,
            // Errors the generic path words.
            r#"{"spec":{"token":""}}"#,
            r#"{"spec":{}}"#,
            r#"{"spec":{"token":7}}"#,
            r#"{"kind":"TokenRequest","spec":{"token":"t"}}"#,
            r#"{"apiVersion":"authentication.k8s.io/v1beta1","spec":{"token":"t"}}"#,
            r#"{"apiVersion":"","spec":{"token":"t"}}"#,
            r#"{"kind":null,"spec":{"token":"t"}}"#,
            r#"{"metadata":null,"spec":{"token":"t"}}"#,
            r#"{"metadata":{"creationTimestamp":"yesterday"},"spec":{"token":"t"}}"#,
            r#"{"spec":{"token":"t"}} trailing"#,
            "[]",
            "",
        ];
        for body in bodies {
            assert!(decode_typed(body.as_bytes()).is_none(), "{body}");
        }
    }

    #[test]
    fn the_generic_path_reads_the_same_request() {
        let review = json!({"spec": {"token": "t", "audiences": ["a"]}});
        let request = request_of(&review).unwrap();
        assert_eq!(request.token, "t");
        assert_eq!(request.audiences, Some(vec!["a".to_string()]));
        let err = request_of(&json!({"spec": {}})).map(|_| ()).unwrap_err();
        assert_eq!(err.code, 400);
        assert_eq!(err.message, "token is required for TokenReview in authentication");
    }
}
