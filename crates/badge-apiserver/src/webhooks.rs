//! Where a kube-apiserver's token and authorization webhooks post (the server URL of the
//! file `badge webhook-config` writes): TokenReview and SubjectAccessReview in the version
//! the apiserver was told to send (`--authentication-token-webhook-version`,
//! `--authorization-webhook-version`: v1 or v1beta1), answered in that same version. Each
//! path is authorized as what it reviews: `create tokenreviews` or `create
//! subjectaccessreviews`, as upstream requires of a webhook's caller.

use badge_api::request_info::RequestInfo;
use badge_api::{Resource, Status, resources};
use badge_auth::UserInfo;
use bytes::Bytes;
use http::Response;
use http_body_util::BodyExt;
use serde_json::Value;

use crate::ApiServer;
use crate::params::Query;
use crate::response::{self, Body};
use crate::rest::Call;

/// Where the TokenReview webhook is served.
pub const TOKEN_REVIEW_PATH: &str = "/badge/v1/webhooks/tokenreview";
/// Where the SubjectAccessReview webhook is served.
pub const SUBJECT_ACCESS_REVIEW_PATH: &str = "/badge/v1/webhooks/subjectaccessreview";

/// What a webhook path reviews: the review resource it answers as.
#[derive(Clone, Copy, Debug)]
pub struct Review(&'static Resource);

impl PartialEq for Review {
    fn eq(&self, other: &Review) -> bool {
        self.0.is(other.0)
    }
}

impl Eq for Review {}

const TOKEN_REVIEW: Review = Review(resources::TOKENREVIEWS);
const SUBJECT_ACCESS_REVIEW: Review = Review(resources::SUBJECTACCESSREVIEWS);

fn review_of(path: &str) -> Option<Review> {
    match path.trim_end_matches('/') {
        TOKEN_REVIEW_PATH => Some(TOKEN_REVIEW),
        SUBJECT_ACCESS_REVIEW_PATH => Some(SUBJECT_ACCESS_REVIEW),
        _ => None,
    }
}

/// A webhook path's request info: a create of the review resource, so authorization,
/// audit and metrics see what upstream's own review endpoint would.
pub fn as_review(info: RequestInfo) -> RequestInfo {
    if info.is_resource_request || info.verb != "post" {
        return info;
    }
    let Some(review) = review_of(&info.path) else {
        return info;
    };
    RequestInfo {
        is_resource_request: true,
        verb: "create".into(),
        api_prefix: "apis".into(),
        api_group: review.0.group.into(),
        api_version: "v1".into(),
        resource: review.0.plural.into(),
        ..info
    }
}

/// The review a routed request is for, when it came to a webhook path.
pub(crate) fn webhook_review(info: &RequestInfo) -> Option<Review> {
    if !info.is_resource_request || info.verb != "create" {
        return None;
    }
    review_of(&info.path).filter(|r| r.0.plural == info.resource)
}

/// The body as v1 and the version it came in. v1beta1 differs from v1 only in its
/// apiVersion and, for SubjectAccessReview, `spec.group` for v1's `spec.groups`.
fn to_v1(review: Review, body: &[u8]) -> Result<(Value, &'static str), Status> {
    let mut object: Value =
        serde_json::from_slice(body).map_err(|e| Status::bad_request(format!("decoding the review: {e}")))?;
    let api_version = object.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let version = match api_version
        .strip_prefix(review.0.group)
        .and_then(|v| v.strip_prefix('/'))
    {
        Some("v1") => "v1",
        Some("v1beta1") => "v1beta1",
        _ => {
            return Err(Status::bad_request(format!(
                "unsupported apiVersion {api_version:?}: send {group}/v1 or {group}/v1beta1",
                group = review.0.group
            )));
        }
    };
    if object.get("kind").and_then(Value::as_str) != Some(review.0.kind) {
        return Err(Status::bad_request(format!(
            "the body must be a {}",
            review.0.kind
        )));
    }
    object["apiVersion"] = Value::String(format!("{}/v1", review.0.group));
    if version == "v1beta1"
        && review == SUBJECT_ACCESS_REVIEW
        && let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut)
        && let Some(groups) = spec.remove("group")
    {
        spec.insert("groups".into(), groups);
    }
    Ok((object, version))
}

/// A v1 answer put back in `version`.
fn from_v1(review: Review, mut object: Value, version: &str) -> Value {
    object["apiVersion"] = Value::String(format!("{}/{version}", review.0.group));
    if version == "v1beta1"
        && review == SUBJECT_ACCESS_REVIEW
        && let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut)
        && let Some(groups) = spec.remove("groups")
    {
        spec.insert("group".into(), groups);
    }
    object
}

impl ApiServer {
    /// Answers a webhook's review through the v1 review endpoint, in the version it came in.
    pub(crate) async fn webhook(
        &self,
        review: Review,
        info: &RequestInfo,
        body: Bytes,
        user: UserInfo,
    ) -> Result<Response<Body>, Status> {
        let (object, version) = to_v1(review, &body)?;
        let resource = review.0;
        let body =
            serde_json::to_vec(&object).map_err(|e| Status::internal(format!("encoding the review: {e}")))?;
        let call = Call {
            info,
            resource,
            query: Query::parse(None),
            accept: response::JSON,
            content_type: response::JSON,
            body: body.into(),
            user: user.clone(),
        };
        let answered = self.review(&call, &user)?;
        let code = answered.status();
        let bytes = answered
            .into_body()
            .collect()
            .await
            .map_err(|e| Status::internal(format!("reading the review: {e}")))?
            .to_bytes();
        let object: Value = serde_json::from_slice(&bytes)
            .map_err(|e| Status::internal(format!("decoding the review: {e}")))?;
        Ok(response::json(code, &from_v1(review, object, version)))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn webhook_paths_are_authorized_as_review_creates() {
        let info = badge_api::request_info::parse("POST", SUBJECT_ACCESS_REVIEW_PATH, None).unwrap();
        let info = as_review(info);
        assert!(info.is_resource_request);
        assert_eq!(
            (
                info.verb.as_str(),
                info.api_group.as_str(),
                info.resource.as_str()
            ),
            ("create", "authorization.k8s.io", "subjectaccessreviews")
        );
        assert_eq!(webhook_review(&info), Some(SUBJECT_ACCESS_REVIEW));
        // Other methods and paths are left as they were.
        let get = as_review(badge_api::request_info::parse("GET", TOKEN_REVIEW_PATH, None).unwrap());
        assert!(!get.is_resource_request);
        let other = as_review(badge_api::request_info::parse("POST", "/badge/v1/webhooks/x", None).unwrap());
        assert!(!other.is_resource_request);
    }

    #[test]
    fn v1beta1_subject_access_reviews_name_groups_group() {
        let body = json!({
            "apiVersion": "authorization.k8s.io/v1beta1", "kind": "SubjectAccessReview",
            "spec": {"user": "jane", "group": ["g1"]},
        });
        let (v1, version) = to_v1(SUBJECT_ACCESS_REVIEW, &serde_json::to_vec(&body).unwrap()).unwrap();
        assert_eq!(version, "v1beta1");
        assert_eq!(v1["apiVersion"], "authorization.k8s.io/v1");
        assert_eq!(v1["spec"]["groups"], json!(["g1"]));
        assert!(v1["spec"].get("group").is_none());
        assert_eq!(from_v1(SUBJECT_ACCESS_REVIEW, v1, version), body);
        let wrong = json!({"apiVersion": "authorization.k8s.io/v2", "kind": "SubjectAccessReview"});
        assert_eq!(
            to_v1(SUBJECT_ACCESS_REVIEW, &serde_json::to_vec(&wrong).unwrap())
                .unwrap_err()
                .code,
            400
        );
    }
}
