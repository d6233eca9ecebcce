//! The request path: parse → authenticate → authorize → route, with every failure turned
//! into a `Status` here (upstream's `DefaultBuildHandlerChain`).

use std::sync::Arc;

use badge_api::request_info::{self, PathError, RequestInfo};
use badge_api::status::MAX_REQUEST_BODY_BYTES;
use badge_api::{Status, resources};
use badge_auth::{Attributes, Decision, UserInfo, authorizer::forbidden_message};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};

use crate::params::Query;
use crate::response::{self, Body};
use crate::rest::Call;
use crate::{ApiServer, discovery};

/// The kube-apiserver version badge presents itself as.
pub const KUBERNETES_VERSION: &str = "v1.35.0";

/// Who the connection's client certificate says the caller is, when it presented one.
#[derive(Clone, Debug, Default)]
pub struct PeerIdentity(pub Option<UserInfo>);

impl ApiServer {
    /// Handles one request.
    pub async fn handle<B>(self: Arc<Self>, request: Request<B>, peer: Arc<PeerIdentity>) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        match self.serve(request, &peer).await {
            Ok(response) => response,
            Err(status) => response::status(&status),
        }
    }

    async fn serve<B>(&self, request: Request<B>, peer: &PeerIdentity) -> Result<Response<Body>, Status>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let method = request.method().clone();
        let uri = request.uri().clone();
        let info = request_info::parse(method.as_str(), uri.path(), uri.query()).map_err(|e| match e {
            PathError::InvalidName(_) => Status::bad_request(e.to_string()),
            _ => Status::path_not_found(),
        })?;
        let user = self.authenticate(&request, peer)?;
        let user = self.impersonate(request.headers(), user)?;
        let user = self.authorize(user, &info)?;

        let header = |name: header::HeaderName| {
            request
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        let accept = header(header::ACCEPT);
        let content_type = header(header::CONTENT_TYPE);
        let query = Query::parse(uri.query());

        if !info.is_resource_request {
            if info.path.starts_with("/badge/v1/keys") {
                let body = read_body(request.into_body()).await?;
                return self.keys_api(&method, &info.path, uri.query(), &body).await;
            }
            let if_none_match = header(header::IF_NONE_MATCH);
            return self.non_resource(&method, &info, &accept, &if_none_match);
        }
        let Some(resource) = resources::lookup(&info.api_group, &info.api_version, &info.resource) else {
            if is_custom_resource_definition_list(&info) {
                return Ok(self.custom_resource_definition_list());
            }
            return Err(Status::path_not_found());
        };
        // A namespaced path to a cluster-scoped kind names nothing (CVE-2019-11247).
        if !resource.namespaced && !info.namespace.is_empty() && resource.plural != "namespaces" {
            return Err(Status::path_not_found());
        }
        let body = read_body(request.into_body()).await?;
        let call = Call {
            info: &info,
            resource,
            query,
            accept,
            content_type,
            body,
            user,
        };

        if !info.subresource.is_empty() {
            let sub = resource
                .subresource(&info.subresource)
                .ok_or_else(Status::path_not_found)?;
            if !sub.verbs.contains(&info.verb.as_str()) {
                return Err(Status::method_not_supported(
                    resource.group_resource(),
                    &info.verb,
                ));
            }
            return match (resource.plural, sub.name, info.verb.as_str()) {
                ("serviceaccounts", "token", "create") => self.token_request(&call).await,
                ("namespaces", "finalize", "update") | (_, "status", "update") => self.update(&call).await,
                (_, "status", "get") => self.get(&call).await,
                (_, "status", "patch") => self.patch(&call).await,
                _ => Err(Status::path_not_found()),
            };
        }
        if !resource.allows(&info.verb) {
            return Err(Status::method_not_supported(
                resource.group_resource(),
                &info.verb,
            ));
        }
        if resource.storage == resources::Storage::Virtual {
            return match info.verb.as_str() {
                "create" if info.name.is_empty() => self.review(&call, &call.user),
                _ => Err(Status::method_not_allowed()),
            };
        }
        let named = !info.name.is_empty();
        match info.verb.as_str() {
            "create" | "list" | "watch" | "deletecollection" => {}
            _ if !named => return Err(Status::method_not_allowed()),
            _ => {}
        }
        match info.verb.as_str() {
            "get" => self.get(&call).await,
            "list" => self.list(&call).await,
            "watch" => self.watch(&call).await,
            "create" => {
                if !info.name.is_empty() {
                    return Err(Status::method_not_allowed());
                }
                self.create(&call).await
            }
            "update" => self.update(&call).await,
            "patch" => self.patch(&call).await,
            "delete" => self.delete(&call).await,
            "deletecollection" => self.delete_collection(&call).await,
            _ => Err(Status::method_not_allowed()),
        }
    }

    fn authenticate<B>(&self, request: &Request<B>, peer: &PeerIdentity) -> Result<UserInfo, Status> {
        if let Some(value) = request.headers().get(header::AUTHORIZATION) {
            // A credential that fails is 401, never a fall back to anonymous; why it failed
            // stays in the server (and never includes the token).
            let token = value
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .ok_or_else(Status::unauthorized)?;
            let outcome = match &self.tokens {
                Some(tokens) => tokens.authenticate_token(token, &self.api_audiences),
                None => badge_auth::TokenOutcome::NotMine,
            };
            return match outcome {
                badge_auth::TokenOutcome::Authenticated { user, .. } => Ok(user),
                badge_auth::TokenOutcome::Invalid(reason) => {
                    tracing::debug!(%reason, "bearer token refused");
                    Err(Status::unauthorized())
                }
                badge_auth::TokenOutcome::NotMine => Err(Status::unauthorized()),
            };
        }
        if let Some(user) = &peer.0 {
            return Ok(user.clone());
        }
        if self.anonymous_auth {
            Ok(UserInfo::anonymous())
        } else {
            Err(Status::unauthorized())
        }
    }

    /// Applies `Impersonate-*` headers, each allowed by the `impersonate` verb
    /// (`endpoints/filters/impersonation.go`).
    fn impersonate(&self, headers: &http::HeaderMap, user: UserInfo) -> Result<UserInfo, Status> {
        let value = |v: &http::HeaderValue| {
            v.to_str()
                .map(str::to_string)
                .map_err(|_| Status::bad_request("invalid impersonation header"))
        };
        let target_user = headers.get("impersonate-user").map(value).transpose()?;
        let groups: Vec<String> = headers
            .get_all("impersonate-group")
            .iter()
            .map(value)
            .collect::<Result<_, _>>()?;
        let uid = headers.get("impersonate-uid").map(value).transpose()?;
        let mut extra: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for (name, v) in headers {
            if let Some(key) = name.as_str().strip_prefix("impersonate-extra-") {
                let key = percent_encoding::percent_decode_str(key)
                    .decode_utf8_lossy()
                    .to_string();
                extra.entry(key).or_default().push(value(v)?);
            }
        }
        let Some(target) = target_user else {
            if groups.is_empty() && uid.is_none() && extra.is_empty() {
                return Ok(user);
            }
            return Err(Status::bad_request(format!(
                "requested {:?} without impersonating a user",
                groups.iter().chain(uid.iter()).collect::<Vec<_>>()
            )));
        };
        let check = |verb_target: Attributes| -> Result<(), Status> {
            match self.authorizer.authorize(&verb_target) {
                Decision::Allow => Ok(()),
                _ => {
                    let message = forbidden_message(&verb_target);
                    let gr = badge_api::GroupResource {
                        group: &verb_target.api_group,
                        resource: &verb_target.resource,
                    };
                    Err(Status::forbidden(gr, &verb_target.name, &message))
                }
            }
        };
        let base = |resource: &str, group: &str, name: &str| Attributes {
            user: user.clone(),
            verb: "impersonate".into(),
            is_resource_request: true,
            api_group: group.into(),
            resource: resource.into(),
            name: name.into(),
            ..Default::default()
        };
        let mut impersonated = UserInfo {
            name: target.clone(),
            ..Default::default()
        };
        if let Some(rest) = target.strip_prefix("system:serviceaccount:") {
            let (ns, name) = rest.split_once(':').unwrap_or(("", rest));
            let mut attrs = base("serviceaccounts", "", name);
            attrs.namespace = ns.to_string();
            check(attrs)?;
            impersonated.groups.push("system:serviceaccounts".into());
            impersonated.groups.push(format!("system:serviceaccounts:{ns}"));
        } else {
            check(base("users", "", &target))?;
        }
        for group in &groups {
            check(base("groups", "", group))?;
            impersonated.groups.push(group.clone());
        }
        if let Some(uid) = uid {
            check(base("uids", "authentication.k8s.io", &uid))?;
            impersonated.uid = uid;
        }
        for (key, values) in &extra {
            for v in values {
                let mut attrs = base("userextras", "authentication.k8s.io", v);
                attrs.subresource = key.clone();
                check(attrs)?;
            }
        }
        impersonated.extra = extra;
        if impersonated.name == badge_auth::user::ANONYMOUS {
            impersonated
                .groups
                .push(badge_auth::user::ALL_UNAUTHENTICATED.into());
        } else {
            impersonated.add_authenticated_group();
        }
        Ok(impersonated)
    }

    /// Authorizes the request. The user moves into the attributes and is handed back, so
    /// the caller's identity is not copied on every request.
    fn authorize(&self, user: UserInfo, info: &RequestInfo) -> Result<UserInfo, Status> {
        let attributes = Attributes {
            user,
            verb: info.verb.clone(),
            is_resource_request: info.is_resource_request,
            namespace: info.namespace.clone(),
            api_group: info.api_group.clone(),
            api_version: info.api_version.clone(),
            resource: info.resource.clone(),
            subresource: info.subresource.clone(),
            name: info.name.clone(),
            path: info.path.clone(),
        };
        match self.authorizer.authorize(&attributes) {
            Decision::Allow => Ok(attributes.user),
            Decision::Deny(reason) | Decision::NoOpinion(reason) => {
                let mut message = forbidden_message(&attributes);
                if !reason.is_empty() {
                    message.push_str(": ");
                    message.push_str(&reason);
                }
                if info.is_resource_request {
                    let resource = if info.subresource.is_empty() {
                        info.resource.clone()
                    } else {
                        format!("{}/{}", info.resource, info.subresource)
                    };
                    let gr = badge_api::GroupResource {
                        group: &info.api_group,
                        resource: &resource,
                    };
                    Err(Status::forbidden(gr, &info.name, &message))
                } else {
                    Err(Status::forbidden_path(&message))
                }
            }
        }
    }

    fn non_resource(
        &self,
        method: &Method,
        info: &RequestInfo,
        accept: &str,
        if_none_match: &str,
    ) -> Result<Response<Body>, Status> {
        if method != Method::GET && method != Method::HEAD {
            return Err(Status::method_not_allowed());
        }
        let path = info.path.trim_end_matches('/');
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match parts.as_slice() {
            ["healthz"] | ["livez"] | ["readyz"] => Ok(response::text(StatusCode::OK, "ok")),
            ["version"] => Ok(response::json(StatusCode::OK, &version_info())),
            ["api"] | ["apis"] => {
                let core = parts[0] == "api";
                if let Some(v) = discovery::aggregated_version(accept) {
                    let doc = discovery::aggregated(core, v);
                    let bytes = serde_json::to_vec(&doc).map_err(|e| Status::internal(e.to_string()))?;
                    return Ok(response::json_bytes(
                        StatusCode::OK,
                        &discovery::aggregated_content_type(v),
                        bytes,
                    ));
                }
                let doc = if core {
                    discovery::api_versions()
                } else {
                    discovery::api_group_list()
                };
                Ok(response::json(StatusCode::OK, &doc))
            }
            ["api", version] => discovery::api_resource_list("", version)
                .map(|d| response::json(StatusCode::OK, &d))
                .ok_or_else(Status::path_not_found),
            ["apis", group] => discovery::api_group(group)
                .map(|d| response::json(StatusCode::OK, &d))
                .ok_or_else(Status::path_not_found),
            ["apis", group, version] => discovery::api_resource_list(group, version)
                .map(|d| response::json(StatusCode::OK, &d))
                .ok_or_else(Status::path_not_found),
            [".well-known", "openid-configuration"] | ["openid", "v1", "jwks"] => self.oidc(path),
            ["openapi", "v2"] => Ok(openapi_v2_response(accept, if_none_match)),
            ["openapi", "v3"] => Ok(openapi_response(badge_api::openapi::index_bytes())),
            ["openapi", "v3", rest @ ..] => badge_api::openapi::document_bytes(&rest.join("/"))
                .map(openapi_response)
                .ok_or_else(Status::path_not_found),
            _ => Err(Status::path_not_found()),
        }
    }
}

/// `GET /apis/apiextensions.k8s.io/v1/customresourcedefinitions`, and nothing else of that
/// group.
fn is_custom_resource_definition_list(info: &RequestInfo) -> bool {
    info.verb == "list"
        && info.api_group == "apiextensions.k8s.io"
        && info.api_version == "v1"
        && info.resource == "customresourcedefinitions"
        && info.subresource.is_empty()
        && info.namespace.is_empty()
}

impl ApiServer {
    /// The empty list of CustomResourceDefinitions. kubectl's client-side validation asks for
    /// it whenever OpenAPI v2 has no PATCH operation for a kind (the review kinds), to tell a
    /// custom kind from a built-in one (cli-runtime `query_param_verifier.go`), and fails if
    /// the list fails. badge serves no custom resources, so the honest answer is an empty
    /// list; the group is not advertised, as nothing else of it is served.
    fn custom_resource_definition_list(&self) -> Response<Body> {
        response::json(
            StatusCode::OK,
            &serde_json::json!({
                "kind": "CustomResourceDefinitionList",
                "apiVersion": "apiextensions.k8s.io/v1",
                "metadata": {"resourceVersion": self.registry.cache().revision().to_string()},
                "items": [],
            }),
        )
    }

    /// OIDC discovery and the JWKS, as `pkg/routes/openidmetadata.go` serves them.
    fn oidc(&self, path: &str) -> Result<Response<Body>, Status> {
        let issuer = self.token_issuer.as_ref().ok_or_else(Status::path_not_found)?;
        let first = issuer.config.issuers.first().cloned().unwrap_or_default();
        if !crate::serviceaccount::serves_discovery(&first) {
            return Err(Status::path_not_found());
        }
        let keys = issuer.keys.public_keys();
        let (body, content_type) = if path.ends_with("jwks") {
            (
                badge_token::oidc::jwks(&keys),
                badge_token::oidc::JWKS_CONTENT_TYPE,
            )
        } else {
            (
                badge_token::oidc::openid_configuration(&first, &issuer.config.jwks_uri, &keys),
                badge_token::oidc::CONFIG_CONTENT_TYPE,
            )
        };
        let mut response = response::json_bytes(StatusCode::OK, content_type, body);
        response.headers_mut().insert(
            header::CACHE_CONTROL,
            http::HeaderValue::from_static(badge_token::oidc::CACHE_CONTROL),
        );
        Ok(response)
    }

    /// `/badge/v1/keys`: list (GET), `rotate` and `<kid>/revoke` (POST).
    async fn keys_api(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
        _body: &Bytes,
    ) -> Result<Response<Body>, Status> {
        let issuer = self.token_issuer.as_ref().ok_or_else(Status::path_not_found)?;
        let rest = path.trim_start_matches("/badge/v1/keys").trim_matches('/');
        let parts: Vec<&str> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/').collect()
        };
        match (method, parts.as_slice()) {
            (&Method::GET, []) => Ok(response::json(StatusCode::OK, &issuer.keys.describe())),
            (&Method::POST, ["rotate"]) => {
                let query = crate::params::Query::parse(query);
                let lead = match query.get("publishLeadSeconds") {
                    Some(v) => v
                        .parse::<i64>()
                        .map_err(|_| Status::bad_request(format!("invalid publishLeadSeconds: {v}")))?,
                    None => badge_token::oidc::CACHE_MAX_AGE_SECONDS,
                };
                let kid = issuer.keys.rotate(lead).await?;
                let mut described = issuer.keys.describe();
                described["rotated"] = serde_json::json!(kid);
                Ok(response::json(StatusCode::OK, &described))
            }
            (&Method::POST, [kid, "revoke"]) => {
                issuer.keys.revoke(kid).await?;
                Ok(response::json(StatusCode::OK, &issuer.keys.describe()))
            }
            (&Method::GET | &Method::POST, _) => Err(Status::path_not_found()),
            _ => Err(Status::method_not_allowed()),
        }
    }

    /// `POST .../serviceaccounts/NAME/token`.
    async fn token_request(&self, call: &Call<'_>) -> Result<Response<Body>, Status> {
        let issuer = self.token_issuer.as_ref().ok_or_else(Status::path_not_found)?;
        let sub = call
            .resource
            .subresource("token")
            .ok_or_else(Status::path_not_found)?;
        let media = badge_api::decode::media_type(&call.content_type)
            .ok_or_else(|| Status::unsupported_media_type(&call.content_type))?;
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
            )?;
        }
        let (reply, mut warnings) = issuer
            .create(&self.registry, &call.info.namespace, &call.info.name, request)
            .await?;
        warnings.extend(decode_warnings);
        let bytes = reply
            .to_bytes()
            .map_err(|e| Status::internal(format!("encoding the response: {e}")))?;
        let mut response = response::json_bytes(StatusCode::CREATED, response::JSON, bytes);
        response::add_warnings(&mut response, &warnings);
        Ok(response)
    }
}

fn openapi_response(bytes: &'static [u8]) -> Response<Body> {
    let mut response = response::json_bytes(StatusCode::OK, "application/json", bytes.to_vec());
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache, private"),
    );
    response
}

/// `/openapi/v2` in the form `Accept` asks for, as kube-openapi's handler serves it: one
/// entity tag for both forms, `Vary: Accept`, 304 when the client's copy is current, and an
/// empty 406 when no form is acceptable.
fn openapi_v2_response(accept: &str, if_none_match: &str) -> Response<Body> {
    use badge_api::openapi::v2;
    let mut response = match v2::negotiate(accept) {
        None => {
            let mut response = Response::new(response::full(Bytes::new()));
            *response.status_mut() = StatusCode::NOT_ACCEPTABLE;
            response
        }
        Some(_) if etag_matches(if_none_match, v2::etag()) => {
            let mut response = Response::new(response::full(Bytes::new()));
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            response
                .headers_mut()
                .insert(header::ETAG, http::HeaderValue::from_static(v2::etag()));
            response
        }
        Some(form) => {
            let mut response = Response::new(response::full(Bytes::from_static(form.bytes())));
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static(form.content_type()),
            );
            headers.insert(header::ETAG, http::HeaderValue::from_static(v2::etag()));
            response
        }
    };
    let headers = response.headers_mut();
    headers.insert(header::VARY, http::HeaderValue::from_static("Accept"));
    headers.insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache, private"),
    );
    response
}

/// Whether an `If-None-Match` list names the tag (or is `*`); weak tags compare equal.
fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    if_none_match
        .split(',')
        .map(str::trim)
        .any(|candidate| candidate == "*" || candidate.strip_prefix("W/").unwrap_or(candidate) == etag)
}

/// `/version`, as upstream's `version.Info`.
pub fn version_info() -> serde_json::Value {
    serde_json::json!({
        "major": "1",
        "minor": "35",
        "emulationMajor": "1",
        "emulationMinor": "35",
        "minCompatibilityMajor": "1",
        "minCompatibilityMinor": "34",
        "gitVersion": KUBERNETES_VERSION,
        "gitCommit": "badge",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "rust",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, if cfg!(target_arch = "x86_64") { "amd64" } else { std::env::consts::ARCH }),
    })
}

/// Reads a request body, refusing more than upstream's 3 MiB.
async fn read_body<B>(body: B) -> Result<Bytes, Status>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match Limited::new(body, MAX_REQUEST_BODY_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            Err(Status::request_entity_too_large(MAX_REQUEST_BODY_BYTES))
        }
        Err(e) => Err(Status::bad_request(format!(
            "error reading the request body: {e}"
        ))),
    }
}
