//! The create-only review APIs (`pkg/registry/authentication/*`, `pkg/registry/authorization/*`):
//! nothing is stored; the request comes back with its status filled in.

use std::collections::BTreeMap;

use badge_api::{FieldError, Status};
use badge_auth::{Attributes, Decision, UserInfo};
use http::{Response, StatusCode};
use serde_json::{Map, Value, json};

use crate::ApiServer;
use crate::response::{self, Body};
use crate::rest::Call;
use crate::tokenreview;

const AUTHZ_GROUP: &str = "authorization.k8s.io";

fn invalid(kind: &str, errors: &[FieldError]) -> Status {
    Status::invalid(AUTHZ_GROUP, kind, "", errors)
}

/// The `status` of an access review from an authorizer decision.
fn access_status(decision: Decision) -> Value {
    match decision {
        Decision::Allow => json!({"allowed": true}),
        Decision::Deny(reason) => {
            let mut s = json!({"allowed": false, "denied": true});
            if !reason.is_empty() {
                s["reason"] = json!(reason);
            }
            s
        }
        Decision::NoOpinion(reason) => {
            let mut s = json!({"allowed": false});
            if !reason.is_empty() {
                s["reason"] = json!(reason);
            }
            s
        }
    }
}

/// Attributes from `spec.resourceAttributes` or `spec.nonResourceAttributes`.
fn attributes_of(spec: &Value, user: UserInfo) -> Attributes {
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    if let Some(r) = spec.get("resourceAttributes").filter(|v| v.is_object()) {
        Attributes {
            user,
            verb: s(r, "verb"),
            is_resource_request: true,
            namespace: s(r, "namespace"),
            api_group: s(r, "group"),
            api_version: s(r, "version"),
            resource: s(r, "resource"),
            subresource: s(r, "subresource"),
            name: s(r, "name"),
            path: String::new(),
        }
    } else {
        let n = spec.get("nonResourceAttributes").cloned().unwrap_or(Value::Null);
        Attributes {
            user,
            verb: s(&n, "verb"),
            path: s(&n, "path"),
            ..Default::default()
        }
    }
}

/// Exactly one of resourceAttributes and nonResourceAttributes (`ValidateSubjectAccessReviewSpec`).
fn validate_attributes(spec: &Value) -> Vec<FieldError> {
    let has_resource = spec.get("resourceAttributes").is_some_and(Value::is_object);
    let has_non_resource = spec.get("nonResourceAttributes").is_some_and(Value::is_object);
    match (has_resource, has_non_resource) {
        (true, true) => vec![FieldError::invalid(
            "spec.nonResourceAttributes",
            spec["nonResourceAttributes"].clone(),
            "cannot be specified in combination with resourceAttributes",
        )],
        (false, false) => vec![FieldError::invalid(
            "spec.resourceAttributes",
            Value::Null,
            "exactly one of nonResourceAttributes or resourceAttributes must be specified",
        )],
        _ => Vec::new(),
    }
}

fn metadata_is_empty(object: &Value, allow_namespace: bool) -> bool {
    match object.get("metadata").and_then(Value::as_object) {
        None => true,
        Some(m) => m.iter().all(|(k, v)| {
            v.is_null()
                || (allow_namespace && k == "namespace")
                || v.as_object().is_some_and(Map::is_empty)
                || v.as_str().is_some_and(str::is_empty)
        }),
    }
}

fn user_from_spec(spec: &Value) -> UserInfo {
    let extra: BTreeMap<String, Vec<String>> = spec
        .get("extra")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let values = v
                        .as_array()
                        .map(|a| a.iter().filter_map(|x| x.as_str().map(String::from)).collect())
                        .unwrap_or_default();
                    (k.clone(), values)
                })
                .collect()
        })
        .unwrap_or_default();
    UserInfo {
        name: spec.get("user").and_then(Value::as_str).unwrap_or("").to_string(),
        uid: spec.get("uid").and_then(Value::as_str).unwrap_or("").to_string(),
        // Groups are taken as given: SubjectAccessReview does not expand them.
        groups: spec
            .get("groups")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|x| x.as_str().map(String::from)).collect())
            .unwrap_or_default(),
        extra,
    }
}

fn created(mut object: Value, status: Value) -> Response<Body> {
    object["status"] = status;
    response::json(StatusCode::CREATED, &object)
}

impl ApiServer {
    /// Decodes a review body for a virtual resource.
    fn review_body(&self, call: &Call<'_>) -> Result<Value, Status> {
        let media = badge_api::decode::media_type(call.content_type)
            .ok_or_else(|| Status::unsupported_media_type(call.content_type))?;
        let value = if call.body.is_empty() {
            json!({})
        } else {
            badge_api::decode::parse_body(media, &call.body)?.0
        };
        let validation = badge_api::decode::FieldValidation::parse(call.query.get("fieldValidation"))?;
        Ok(badge_api::decode::decode_for(call.resource, value, &[], validation)?.object)
    }

    /// POST to a create-only review resource.
    pub(crate) fn review(&self, call: &Call<'_>, user: &UserInfo) -> Result<Response<Body>, Status> {
        if call.resource.kind == tokenreview::KIND
            && let Some(response) = self.typed_token_review(call)?
        {
            return Ok(response);
        }
        let mut object = self.review_body(call)?;
        let spec = object.get("spec").cloned().unwrap_or_else(|| json!({}));
        match call.resource.kind {
            "SelfSubjectReview" => {
                let mut user_info = json!({"username": user.name, "groups": user.groups});
                if !user.uid.is_empty() {
                    user_info["uid"] = json!(user.uid);
                }
                if !user.extra.is_empty() {
                    user_info["extra"] = json!(user.extra);
                }
                object["metadata"] =
                    json!({"creationTimestamp": badge_api::meta::format_time(badge_api::clock::now())});
                Ok(created(object, json!({"userInfo": user_info})))
            }
            "SelfSubjectAccessReview" => {
                let errors = validate_attributes(&spec);
                if !errors.is_empty() {
                    return Err(invalid("SelfSubjectAccessReview", &errors));
                }
                let decision = self.authorizer.authorize(&attributes_of(&spec, user.clone()));
                Ok(created(object, access_status(decision)))
            }
            "SubjectAccessReview" | "LocalSubjectAccessReview" => {
                let local = call.resource.kind == "LocalSubjectAccessReview";
                let mut errors = validate_attributes(&spec);
                let subject = user_from_spec(&spec);
                if subject.name.is_empty() && subject.groups.is_empty() {
                    errors.push(FieldError::invalid(
                        "spec.user",
                        "",
                        "at least one of user or group must be specified",
                    ));
                }
                if !metadata_is_empty(&object, local) {
                    errors.push(FieldError::invalid(
                        "metadata",
                        object["metadata"].clone(),
                        "must be empty",
                    ));
                }
                let mut spec = spec;
                if local {
                    if spec.get("nonResourceAttributes").is_some_and(Value::is_object) {
                        errors.push(FieldError::invalid(
                            "spec.nonResourceAttributes",
                            spec["nonResourceAttributes"].clone(),
                            "disallowed on this kind of request",
                        ));
                    }
                    let namespace = call.info.namespace.clone();
                    if let Some(r) = spec.get_mut("resourceAttributes").and_then(Value::as_object_mut) {
                        let given = r
                            .get("namespace")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string();
                        if given.is_empty() {
                            r.insert("namespace".into(), json!(namespace));
                        } else if given != namespace {
                            errors.push(FieldError::invalid(
                                "spec.resourceAttributes.namespace",
                                given,
                                "must match metadata.namespace",
                            ));
                        }
                    }
                    object["spec"] = spec.clone();
                }
                if !errors.is_empty() {
                    return Err(invalid(call.resource.kind, &errors));
                }
                let decision = self.authorizer.authorize(&attributes_of(&spec, subject));
                Ok(created(object, access_status(decision)))
            }
            "SelfSubjectRulesReview" => {
                let namespace = spec.get("namespace").and_then(Value::as_str).unwrap_or("");
                if namespace.is_empty() {
                    return Err(Status::bad_request("no namespace on request"));
                }
                let (resource_rules, non_resource_rules, incomplete, error) = self.rules_for(user, namespace);
                let mut status = json!({
                    "resourceRules": resource_rules,
                    "nonResourceRules": non_resource_rules,
                    "incomplete": incomplete,
                });
                if let Some(error) = error {
                    status["evaluationError"] = json!(error);
                }
                let response = json!({
                    "kind": "SelfSubjectRulesReview",
                    "apiVersion": "authorization.k8s.io/v1",
                    "metadata": {"creationTimestamp": null},
                    "spec": {},
                    "status": status,
                });
                Ok(response::json(StatusCode::CREATED, &response))
            }
            "TokenReview" => self.token_review(object),
            _ => Err(Status::path_not_found()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_validation() {
        assert_eq!(validate_attributes(&json!({})).len(), 1);
        assert_eq!(
            validate_attributes(&json!({"resourceAttributes":{},"nonResourceAttributes":{}})).len(),
            1
        );
        assert!(validate_attributes(&json!({"resourceAttributes":{"verb":"get"}})).is_empty());
    }

    #[test]
    fn subject_access_review_groups_are_not_expanded() {
        let u = user_from_spec(&json!({"user":"system:serviceaccount:a:b","extra":{"k":["v"]}}));
        assert!(u.groups.is_empty());
        assert_eq!(u.extra["k"], vec!["v".to_string()]);
    }
}
