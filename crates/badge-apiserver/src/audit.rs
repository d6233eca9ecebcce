//! Audit: every authenticated request passes this hook, after impersonation and before
//! authorization, so a refused request is recorded as well as an allowed one. The sink
//! decides what to keep; it is never given a credential (the authentication stage removed
//! the header before this point).
//!
//! The audit log (`staging/src/k8s.io/apiserver/pkg/audit`): the policy (`policy`) decides
//! per request a level and the stages left out, a [`Recorder`] follows the request through
//! the chain and hands audit.k8s.io/v1 events to a backend (`log`: the file or stdout,
//! written by another thread). Bodies are recorded only at the Request and
//! RequestResponse levels, and then with Secret data and token fields redacted: no event
//! carries a credential at any level.

pub(crate) mod encode;
pub mod log;
pub mod policy;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use badge_api::Status;
use badge_api::request_info::RequestInfo;
use badge_api::resources;
use badge_auth::UserInfo;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response};
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use serde::Serialize;
use serde_json::Value;

pub use policy::{Level, Policy, Stage};

use crate::metrics::Metrics;
use crate::response::{self, Body};

/// What the hook sees of a request.
pub struct RequestEvent<'a> {
    /// The request, as its path and verb describe it.
    pub info: &'a RequestInfo,
    /// The user the request acts as (the impersonated one, when it impersonates).
    pub user: &'a UserInfo,
}

/// Where audit events go.
pub trait AuditSink: Send + Sync {
    /// Sees one request, once its user is known.
    fn request(&self, event: &RequestEvent<'_>);
}

/// Records nothing: the default until an audit log is configured.
pub struct NoAudit;

impl AuditSink for NoAudit {
    fn request(&self, _: &RequestEvent<'_>) {}
}

/// The user extra key holding the credential a request authenticated with.
pub const CREDENTIAL_ID_KEY: &str = "authentication.kubernetes.io/credential-id";
/// The annotation naming the credential a TokenRequest issued.
pub const ISSUED_CREDENTIAL_ID_ANNOTATION: &str = "authentication.kubernetes.io/issued-credential-id";
/// Annotation key of the authorizer's decision (`allow` or `forbid`).
pub const DECISION_ANNOTATION: &str = "authorization.k8s.io/decision";
/// Annotation key of the authorizer's reason.
pub const REASON_ANNOTATION: &str = "authorization.k8s.io/reason";
/// The header carrying the audit ID (`Audit-ID`), in both directions; a name built once, so
/// that no request lowercases and copies it.
pub const AUDIT_ID: http::HeaderName = http::HeaderName::from_static("audit-id");
/// Where `kubectl apply` keeps the object it last applied.
const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// What redacted values are replaced with.
pub const REDACTED: &str = "<redacted>";

/// An event's annotations: their keys are nearly always constants, and so are many values.
pub type AnnotationMap = BTreeMap<Cow<'static, str>, Cow<'static, str>>;

/// Annotations a handler adds to its request's audit event, carried on the response.
#[derive(Clone, Debug, Default)]
pub struct Annotations(pub Vec<(String, String)>);

/// Adds an annotation to the event of the request `response` answers.
pub fn annotate(response: &mut Response<Body>, key: &str, value: String) {
    let extensions = response.extensions_mut();
    match extensions.get_mut::<Annotations>() {
        Some(annotations) => annotations.0.push((key.to_string(), value)),
        None => {
            extensions.insert(Annotations(vec![(key.to_string(), value)]));
        }
    }
}

/// Receives finished events (`audit.Backend`). Must not block.
pub trait AuditBackend: Send + Sync {
    /// Takes `event` to its destination.
    /// `line` is one event, encoded as JSON (no newline).
    fn process(&self, line: &[u8]);
}

/// An audit.k8s.io/v1 `Event`.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// Always `Event`.
    pub kind: &'static str,
    /// Always `audit.k8s.io/v1`.
    pub api_version: &'static str,
    /// How much of the request the event records.
    pub level: Level,
    #[serde(rename = "auditID")]
    /// The request's unique id, shared by its events of every stage.
    pub audit_id: String,
    /// The stage of the request the event was emitted at.
    pub stage: Stage,
    #[serde(rename = "requestURI")]
    /// The request path with its query.
    pub request_uri: String,
    /// The Kubernetes verb, or the lowercase HTTP method for a non-resource request.
    pub verb: String,
    /// The authenticated user.
    pub user: EventUser,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// The user impersonated, when the request impersonates.
    pub impersonated_user: Option<EventUser>,
    #[serde(rename = "sourceIPs", skip_serializing_if = "Vec::is_empty")]
    /// The client's addresses: `X-Forwarded-For`, `X-Real-Ip`, then the peer.
    pub source_ips: Vec<std::net::IpAddr>,
    #[serde(skip_serializing_if = "String::is_empty")]
    /// The client's User-Agent.
    pub user_agent: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// The object the request is about, for resource requests.
    pub object_ref: Option<ObjectReference>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// The Status the request was answered with.
    pub response_status: Option<ResponseStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// The request body, at Request level and above.
    pub request_object: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// The response body, at RequestResponse level.
    pub response_object: Option<Value>,
    /// When the request reached the server.
    pub request_received_timestamp: MicroTime,
    /// When the request reached this stage.
    pub stage_timestamp: MicroTime,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    /// Notes from the handlers, such as the authorizer's decision.
    pub annotations: AnnotationMap,
}

/// authentication/v1 `UserInfo`, as events spell it.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct EventUser {
    #[serde(skip_serializing_if = "String::is_empty")]
    /// The user name.
    pub username: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    /// The user's UID.
    pub uid: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    /// The user's groups.
    pub groups: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    /// Further attributes the authenticator provided.
    pub extra: BTreeMap<String, Vec<String>>,
}

impl From<&UserInfo> for EventUser {
    fn from(user: &UserInfo) -> EventUser {
        EventUser {
            username: user.name.clone(),
            uid: user.uid.clone(),
            groups: user.groups.clone(),
            extra: user.extra.clone(),
        }
    }
}

/// The meta/v1 `Status` an event records of its response: the code alone for a success.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct ResponseStatus {
    /// Always empty, as upstream writes it.
    pub metadata: EmptyObject,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// `Failure`, for a failed request.
    pub status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// What went wrong.
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// Why, as a Status reason.
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// The failure's details.
    pub details: Option<Value>,
    /// The HTTP status code.
    pub code: u16,
}

impl ResponseStatus {
    /// A success's status: its code.
    pub fn code(code: u16) -> ResponseStatus {
        ResponseStatus {
            code,
            ..Default::default()
        }
    }

    /// A failure's status, from the Status the request was answered with.
    pub fn failure(status: &Status) -> ResponseStatus {
        ResponseStatus {
            status: Some(status.status.clone()),
            message: Some(status.message.clone()),
            reason: Some(status.reason.clone()),
            details: status.details.as_ref().and_then(|d| serde_json::to_value(d).ok()),
            code: status.code,
            ..Default::default()
        }
    }

    fn failed(reason: &str, message: &str, code: u16) -> ResponseStatus {
        ResponseStatus {
            status: Some("Failure".into()),
            message: Some(message.into()),
            reason: Some(reason.into()),
            code,
            ..Default::default()
        }
    }
}

/// `{}`, written without a map behind it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EmptyObject;

impl Serialize for EmptyObject {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        serializer.serialize_map(Some(0))?.end()
    }
}

/// audit.k8s.io/v1 `ObjectReference`.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ObjectReference {
    #[serde(skip_serializing_if = "String::is_empty")]
    /// The resource, plural.
    pub resource: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    /// The object's namespace.
    pub namespace: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    /// The object's name.
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    /// The object's UID, when known.
    pub uid: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    /// The API group, "" for the core group.
    pub api_group: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    /// The API version.
    pub api_version: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    /// The object's resourceVersion, when known.
    pub resource_version: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    /// The subresource.
    pub subresource: String,
}

/// The audit log of a server: its policy and where events go.
pub struct Auditor {
    /// Which requests are recorded, and how much of them.
    pub policy: Policy,
    /// Where finished events go.
    pub backend: Arc<dyn AuditBackend>,
    metrics: Arc<Metrics>,
}

/// What a request brings to its event, borrowed from the request.
pub struct RequestMeta<'a> {
    /// The request's audit id.
    pub audit_id: &'a str,
    /// The request's URI: its path and query are the event's `requestURI`.
    pub uri: &'a http::Uri,
    /// The request's headers: the User-Agent and the forwarding headers.
    pub headers: &'a HeaderMap,
    /// The connection's peer.
    pub remote: Option<std::net::SocketAddr>,
    /// The bearer credential was tried, for a failed authentication's message (read before
    /// authentication removes the header).
    pub bearer: bool,
    /// When the request reached the server.
    pub received: jiff::Timestamp,
}

impl<'a> RequestMeta<'a> {
    /// The request's metadata, reading `bearer` from `headers`.
    pub fn new(
        audit_id: &'a str,
        uri: &'a http::Uri,
        headers: &'a HeaderMap,
        remote: Option<std::net::SocketAddr>,
        received: jiff::Timestamp,
    ) -> RequestMeta<'a> {
        RequestMeta {
            audit_id,
            uri,
            headers,
            remote,
            bearer: bearer_scheme(headers),
            received,
        }
    }

    fn request_uri(&self) -> &'a str {
        self.uri
            .path_and_query()
            .map_or(self.uri.path(), |pq| pq.as_str())
    }

    fn user_agent(&self) -> &'a str {
        self.headers
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

/// Whether the request carries a bearer credential. The scheme alone is looked at: the
/// credential is neither copied nor kept.
pub fn bearer_scheme(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().trim_ascii_start().get(..7))
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case(b"bearer "))
}

/// A new audit ID: a version 4 UUID, random as upstream's `uuid.New()`. Every response
/// carries its ID, to anonymous clients too, so IDs that counted would tell any client how
/// many requests the server served between two of its own. The bits come from the thread's
/// generator (ChaCha, seeded from the system once per thread): no request pays for a call
/// to the system's random source.
pub fn new_audit_id() -> String {
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    encode_audit_id(&mut text).to_string()
}

/// A new audit ID as the response header carries it: encoded in place, without the
/// formatter or an intermediate string.
pub fn new_audit_id_header() -> HeaderValue {
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    HeaderValue::from_str(encode_audit_id(&mut text)).unwrap_or(HeaderValue::from_static(""))
}

fn encode_audit_id(text: &mut [u8; uuid::fmt::Hyphenated::LENGTH]) -> &str {
    uuid::Builder::from_random_bytes(rand::random())
        .into_uuid()
        .hyphenated()
        .encode_lower(text)
}

/// A time in an event, formatted as a MicroTime when the event is written (by the writer
/// thread, not the request).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MicroTime(pub jiff::Timestamp);

impl Serialize for MicroTime {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&micro_time(self.0))
    }
}

/// A MicroTime: RFC 3339 in UTC with microseconds.
pub fn micro_time(at: jiff::Timestamp) -> String {
    // The bytes are ASCII digits and separators.
    String::from_utf8_lossy(&encode::micro_time_bytes(at)).into_owned()
}

/// The client's addresses, as upstream's `SourceIPs`: X-Forwarded-For, then X-Real-Ip,
/// then the connection's peer, without repeats.
fn source_ips(headers: &HeaderMap, remote: Option<std::net::SocketAddr>) -> Vec<std::net::IpAddr> {
    // Looked up by a name made once: a name given as text is parsed at every lookup.
    static X_FORWARDED_FOR: std::sync::LazyLock<http::HeaderName> =
        std::sync::LazyLock::new(|| http::HeaderName::from_static("x-forwarded-for"));
    static X_REAL_IP: std::sync::LazyLock<http::HeaderName> =
        std::sync::LazyLock::new(|| http::HeaderName::from_static("x-real-ip"));
    let mut ips: Vec<std::net::IpAddr> = Vec::with_capacity(1);
    let header = |name: &http::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(forwarded) = header(&X_FORWARDED_FOR) {
        for ip in forwarded.split(',') {
            if let Ok(ip) = ip.trim().parse::<std::net::IpAddr>() {
                ips.push(ip);
            }
        }
    }
    if let Some(real) = header(&X_REAL_IP).and_then(|v| v.trim().parse::<std::net::IpAddr>().ok())
        && !ips.contains(&real)
    {
        ips.push(real);
    }
    if let Some(remote) = remote
        && !ips.contains(&remote.ip())
    {
        ips.push(remote.ip());
    }
    ips
}

/// Which authentication methods a failed request tried, as upstream's `getAuthMethods`.
fn attempted_methods(bearer: bool, client_certificate: bool) -> String {
    let mut methods = Vec::new();
    if bearer {
        methods.push("bearer");
    }
    if client_certificate {
        methods.push("x509");
    }
    format!("Authentication failed, attempted: {}", methods.join(", "))
}

impl Auditor {
    /// An auditor applying `policy` and sending events to `backend`.
    pub fn new(policy: Policy, backend: Arc<dyn AuditBackend>, metrics: Arc<Metrics>) -> Auditor {
        Auditor {
            policy,
            backend,
            metrics,
        }
    }

    fn emit(&self, line: &[u8]) {
        self.metrics.audit_events.fetch_add(1, Ordering::Relaxed);
        self.backend.process(line);
    }

    /// An event that could not be encoded is lost, and counted.
    fn lost(&self) {
        self.metrics.audit_events_dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Encodes and writes a whole event (the rare paths: failed authentications, in-process
    /// writes).
    fn emit_event(&self, event: &Event) {
        let mut line = Vec::with_capacity(1024);
        match encode::event(&mut line, event) {
            Ok(()) => self.emit(&line),
            Err(_) => self.lost(),
        }
    }

    fn base_event(&self, level: Level, meta: &RequestMeta<'_>, info: &RequestInfo) -> Event {
        let object_ref = info.is_resource_request.then(|| ObjectReference {
            resource: info.resource.clone(),
            namespace: info.namespace.clone(),
            name: info.name.clone(),
            api_group: info.api_group.clone(),
            api_version: info.api_version.clone(),
            subresource: info.subresource.clone(),
            ..Default::default()
        });
        let received = MicroTime(meta.received);
        Event {
            kind: "Event",
            api_version: "audit.k8s.io/v1",
            level,
            audit_id: meta.audit_id.to_string(),
            stage: Stage::RequestReceived,
            request_uri: meta.request_uri().to_string(),
            verb: info.verb.clone(),
            user: EventUser::default(),
            impersonated_user: None,
            source_ips: source_ips(meta.headers, meta.remote),
            user_agent: meta.user_agent().to_string(),
            object_ref,
            response_status: None,
            request_object: None,
            response_object: None,
            stage_timestamp: received,
            request_received_timestamp: received,
            annotations: BTreeMap::new(),
        }
    }

    /// Starts the record of an authenticated request, writing its RequestReceived event;
    /// None when the policy records nothing of it.
    pub fn begin(
        self: &Arc<Self>,
        meta: &RequestMeta<'_>,
        info: &RequestInfo,
        user: &UserInfo,
    ) -> Option<Recorder> {
        let decision = self.policy.evaluate(&policy::Attributes {
            user: Some(user),
            info,
        });
        if decision.level == Level::None {
            return None;
        }
        // Below the Request level no body completes the reference: it is written once, with
        // the start, and not kept.
        let bodies = decision.level >= Level::Request;
        let mut line = Vec::with_capacity(1024);
        encode::start(
            &mut line,
            &encode::Start {
                level: decision.level,
                audit_id: meta.audit_id,
                request_uri: meta.request_uri(),
                verb: &info.verb,
                user: encode::UserRef::from(user),
                source_ips: &source_ips(meta.headers, meta.remote),
                user_agent: meta.user_agent(),
                received: meta.received,
                object_ref: (info.is_resource_request && !bodies).then(|| encode::RefView::from(info)),
            },
        );
        let mut recorder = Recorder {
            auditor: self.clone(),
            decision,
            start: line.len(),
            line,
            watch: info.verb == "watch",
            object_ref: (info.is_resource_request && bodies).then(|| ObjectReference {
                resource: info.resource.clone(),
                namespace: info.namespace.clone(),
                name: info.name.clone(),
                api_group: info.api_group.clone(),
                api_version: info.api_version.clone(),
                subresource: info.subresource.clone(),
                ..Default::default()
            }),
            impersonated_user: None,
            response_status: None,
            request_object: None,
            response_object: None,
            annotations: BTreeMap::new(),
            request_body: None,
        };
        recorder.emit(Stage::RequestReceived);
        Some(recorder)
    }

    /// Records a request that failed authentication (`WithFailedAuthenticationAudit`): one
    /// ResponseStarted event with no user.
    pub fn failed_authentication(
        &self,
        meta: &RequestMeta<'_>,
        info: &RequestInfo,
        client_certificate: bool,
    ) {
        let decision = self.policy.evaluate(&policy::Attributes { user: None, info });
        if !decision.records(Stage::ResponseStarted) {
            return;
        }
        let message = attempted_methods(meta.bearer, client_certificate);
        let mut event = self.base_event(decision.level, meta, info);
        event.stage = Stage::ResponseStarted;
        event.stage_timestamp = MicroTime(badge_api::clock::now());
        event.response_status = Some(ResponseStatus {
            message: Some(message),
            ..ResponseStatus::code(401)
        });
        self.emit_event(&event);
    }
}

/// A write made in process (a controller's), which no request brings to the audit log.
pub struct InternalWrite<'a> {
    /// The controller's user.
    pub user: &'a UserInfo,
    /// What the request would have been; its path is built from it.
    pub info: &'a RequestInfo,
    /// The UID of the object written.
    pub uid: &'a str,
    /// The write's failure, if it failed.
    pub failure: Option<&'a Status>,
}

impl Auditor {
    /// Records an in-process write as the policy would record the request making it: one
    /// ResponseComplete event (no request or response body: there is none to show).
    pub fn internal_write(&self, write: &InternalWrite<'_>) {
        let decision = self.policy.evaluate(&policy::Attributes {
            user: Some(write.user),
            info: write.info,
        });
        if !decision.records(Stage::ResponseComplete) {
            return;
        }
        let info = write.info;
        let group_version = if info.api_group.is_empty() {
            format!("/api/{}", info.api_version)
        } else {
            format!("/apis/{}/{}", info.api_group, info.api_version)
        };
        let namespace = if info.namespace.is_empty() {
            String::new()
        } else {
            format!("/namespaces/{}", info.namespace)
        };
        let subresource = if info.subresource.is_empty() {
            String::new()
        } else {
            format!("/{}", info.subresource)
        };
        let path = format!(
            "{group_version}{namespace}/{}/{}{subresource}",
            info.resource, info.name
        );
        // Names are validated path segments; a path that still does not parse is recorded
        // as the root rather than lose the event.
        let uri = path.parse::<http::Uri>().unwrap_or_default();
        let audit_id = new_audit_id();
        let headers = HeaderMap::new();
        let meta = RequestMeta {
            audit_id: &audit_id,
            uri: &uri,
            headers: &headers,
            remote: None,
            bearer: false,
            received: badge_api::clock::now(),
        };
        let mut event = self.base_event(decision.level, &meta, info);
        event.user = EventUser::from(write.user);
        if let Some(reference) = event.object_ref.as_mut() {
            reference.uid = write.uid.to_string();
        }
        event.stage = Stage::ResponseComplete;
        event.stage_timestamp = MicroTime(badge_api::clock::now());
        event.response_status = Some(match write.failure {
            Some(status) => ResponseStatus {
                details: None,
                ..ResponseStatus::failure(status)
            },
            None => ResponseStatus::code(200),
        });
        self.emit_event(&event);
    }
}

/// One request's record, from authentication to the end of its response. What is known
/// when it starts is encoded then, once; each stage appends its own members to that, writes
/// the line and cuts them off again. Nothing of the request is copied into an event.
pub struct Recorder {
    auditor: Arc<Auditor>,
    decision: policy::Decision,
    /// The event's start, then (while a stage is written) that stage's members.
    line: Vec<u8>,
    /// Where the start ends.
    start: usize,
    watch: bool,
    /// The reference a request body may complete (Request levels only).
    object_ref: Option<ObjectReference>,
    impersonated_user: Option<EventUser>,
    response_status: Option<ResponseStatus>,
    request_object: Option<Value>,
    response_object: Option<Value>,
    annotations: AnnotationMap,
    request_body: Option<Bytes>,
}

impl Recorder {
    /// The level the policy chose for this request.
    pub fn level(&self) -> Level {
        self.decision.level
    }

    /// The request acts as another user.
    pub fn impersonated(&mut self, user: &UserInfo) {
        self.impersonated_user = Some(EventUser::from(user));
    }

    /// Adds the annotation `key` to the request's events.
    pub fn annotate(&mut self, key: &'static str, value: impl Into<Cow<'static, str>>) {
        self.annotations.insert(Cow::Borrowed(key), value.into());
    }

    /// The request's body, recorded at the Request level and above.
    pub fn request_body(&mut self, body: Bytes) {
        if self.decision.level >= Level::Request {
            self.request_body = Some(body);
        }
    }

    /// Writes the event of `stage`, when the policy records it.
    fn emit(&mut self, stage: Stage) {
        if !self.decision.records(stage) {
            return;
        }
        let rest = encode::Rest {
            stage,
            stage_timestamp: badge_api::clock::now(),
            object_ref: self.object_ref.as_ref().map(encode::RefView::from),
            impersonated_user: self.impersonated_user.as_ref(),
            response_status: self.response_status.as_ref(),
            request_object: self.request_object.as_ref(),
            response_object: self.response_object.as_ref(),
            annotations: &self.annotations,
        };
        match encode::rest(&mut self.line, &rest) {
            Ok(()) => self.auditor.emit(&self.line),
            Err(_) => self.auditor.lost(),
        }
        self.line.truncate(self.start);
    }

    /// The last event of the request.
    fn finish(mut self, stage: Stage) {
        self.emit(stage);
    }

    /// The request ended before its response: the timeout filter gave up on it, or the
    /// client went away. What it did is unknown, so the event says so rather than vanish.
    pub fn abandoned(mut self) {
        self.response_status = Some(ResponseStatus::failed(
            "Timeout",
            "the request ended before its response: it timed out or its client went away",
            504,
        ));
        self.finish(Stage::ResponseComplete);
    }

    /// The handler panicked: the Panic event, with upstream's 500 status.
    pub fn panicked(mut self) {
        self.response_status = Some(ResponseStatus::failed("InternalError", "APIServer panic'd", 500));
        self.finish(Stage::Panic);
    }

    /// Records the response, writing ResponseComplete (and, for a watch, ResponseStarted
    /// now and ResponseComplete when its stream ends). `failure` is the Status of a failed
    /// request.
    pub async fn respond(mut self, response: Response<Body>, failure: Option<&Status>) -> Response<Body> {
        let code = response.status().as_u16();
        self.response_status = Some(match failure {
            Some(status) => ResponseStatus::failure(status),
            None => ResponseStatus::code(code),
        });
        if let Some(annotations) = response.extensions().get::<Annotations>() {
            for (key, value) in &annotations.0 {
                self.annotations
                    .insert(Cow::Owned(key.clone()), Cow::Owned(value.clone()));
            }
        }
        let (resource, subresource) = self
            .object_ref
            .as_ref()
            .map(|r| (r.resource.clone(), r.subresource.clone()))
            .unwrap_or_default();
        if let Some(body) = self.request_body.take()
            && let Ok(mut value) = serde_json::from_slice::<Value>(&body)
        {
            redact(&mut value, &resource, &subresource);
            if self.decision.omit_managed_fields {
                omit_managed_fields(&mut value);
            }
            // As upstream's `LogRequestObject`: what the path left out of the reference,
            // the object names (a create's name).
            if let Some(reference) = self.object_ref.as_mut()
                && subresource.is_empty()
            {
                let meta = &value["metadata"];
                let field = |name: &str| meta[name].as_str().unwrap_or_default().to_string();
                if reference.namespace.is_empty() {
                    reference.namespace = field("namespace");
                }
                if reference.name.is_empty() {
                    reference.name = field("name");
                }
                if reference.uid.is_empty() {
                    reference.uid = field("uid");
                }
                if reference.resource_version.is_empty() {
                    reference.resource_version = field("resourceVersion");
                }
            }
            self.request_object = Some(value);
        }
        let streaming = self.watch && response.status().is_success();
        if streaming {
            self.emit(Stage::ResponseStarted);
            let (parts, body) = response.into_parts();
            let body = AuditedBody {
                inner: body,
                recorder: Some(self),
            };
            return Response::from_parts(parts, body.boxed_unsync());
        }
        if self.decision.level < Level::RequestResponse {
            self.finish(Stage::ResponseComplete);
            return response;
        }
        let (parts, body) = response.into_parts();
        let bytes = match body.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(never) => match never {},
        };
        if let Ok(mut value) = serde_json::from_slice::<Value>(&bytes) {
            redact(&mut value, &resource, &subresource);
            if self.decision.omit_managed_fields {
                omit_managed_fields(&mut value);
            }
            self.response_object = Some(value);
        }
        self.finish(Stage::ResponseComplete);
        Response::from_parts(parts, response::full(bytes))
    }
}

/// Removes `metadata.managedFields` from an object and a list's items (`omitManagedFields`).
fn omit_managed_fields(value: &mut Value) {
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
    if let Some(items) = value.get_mut("items").and_then(Value::as_array_mut) {
        for item in items {
            if let Some(meta) = item.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.remove("managedFields");
            }
        }
    }
}

/// A streamed response body that records ResponseComplete when it ends or is dropped.
struct AuditedBody {
    inner: Body,
    recorder: Option<Recorder>,
}

impl HttpBody for AuditedBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for AuditedBody {
    fn drop(&mut self) {
        if let Some(recorder) = self.recorder.take() {
            recorder.finish(Stage::ResponseComplete);
        }
    }
}

/// Removes credentials and Secret data from a request or response body: the values of
/// every Secret's `data` and `stringData` (any object of kind Secret, and any object in a
/// body of the secrets resource, patches included), a TokenRequest's `status.token` and a
/// TokenReview's `spec.token`.
pub fn redact(value: &mut Value, resource: &str, subresource: &str) {
    let secrets = resource == resources::SECRETS.plural && subresource.is_empty();
    if secrets && let Value::Array(operations) = value {
        // A JSON patch: every value it writes may be Secret data.
        for operation in operations.iter_mut() {
            if let Some(written) = operation.get_mut("value") {
                *written = Value::String(REDACTED.into());
            }
        }
        return;
    }
    if resource == resources::SERVICEACCOUNTS.plural
        && subresource == "token"
        && let Some(token) = value.pointer_mut("/status/token")
    {
        *token = Value::String(REDACTED.into());
    }
    if resource == resources::TOKENREVIEWS.plural
        && let Some(token) = value.pointer_mut("/spec/token")
    {
        *token = Value::String(REDACTED.into());
    }
    redact_tree(value, secrets);
}

fn redact_tree(value: &mut Value, secrets: bool) {
    match value {
        Value::Object(object) => {
            let kind = object.get("kind").and_then(Value::as_str).unwrap_or_default();
            let is_secret = secrets || kind == "Secret";
            match kind {
                "TokenRequest" => {
                    if let Some(token) = object.get_mut("status").and_then(|s| s.get_mut("token")) {
                        *token = Value::String(REDACTED.into());
                    }
                }
                "TokenReview" => {
                    if let Some(token) = object.get_mut("spec").and_then(|s| s.get_mut("token")) {
                        *token = Value::String(REDACTED.into());
                    }
                }
                _ => {}
            }
            for (key, child) in object.iter_mut() {
                if is_secret && (key == "data" || key == "stringData") {
                    redact_values(child);
                    continue;
                }
                // `kubectl apply` keeps the whole object it applied, data included, in an
                // annotation.
                if is_secret
                    && key == "metadata"
                    && let Some(applied) = child
                        .get_mut("annotations")
                        .and_then(|a| a.get_mut(LAST_APPLIED_ANNOTATION))
                {
                    *applied = Value::String(REDACTED.into());
                }
                redact_tree(child, secrets);
            }
        }
        Value::Array(items) => {
            for item in items {
                redact_tree(item, secrets);
            }
        }
        _ => {}
    }
}

fn redact_values(value: &mut Value) {
    match value {
        Value::Object(entries) => {
            for entry in entries.values_mut() {
                *entry = Value::String(REDACTED.into());
            }
        }
        Value::Null => {}
        other => *other = Value::String(REDACTED.into()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn secret_data_is_redacted_wherever_a_secret_appears() {
        let mut secret = json!({
            "kind": "Secret", "apiVersion": "v1",
            "metadata": {"name": "s", "annotations": {"a": "kept"}},
            "type": "bootstrap.kubernetes.io/token",
            "data": {"token-id": "YWJjZGVm", "token-secret": "MDEyMzQ1Njc4OWFiY2RlZg=="},
            "stringData": {"extra": "plain"},
        });
        redact(&mut secret, "secrets", "");
        assert_eq!(
            secret["data"],
            json!({"token-id": REDACTED, "token-secret": REDACTED})
        );
        assert_eq!(secret["stringData"], json!({"extra": REDACTED}));
        assert_eq!(secret["metadata"]["annotations"]["a"], "kept");

        // A list's items carry no kind; the resource says they are Secrets.
        let mut list =
            json!({"kind": "SecretList", "items": [{"metadata": {"name": "a"}, "data": {"token": "dG9r"}}]});
        redact(&mut list, "secrets", "");
        assert_eq!(list["items"][0]["data"]["token"], REDACTED);

        // A table of another request that includes Secret objects.
        let mut table = json!({"kind": "Table", "rows": [{"cells": ["a"], "object": {"kind": "Secret", "data": {"token": "dG9r"}}}]});
        redact(&mut table, "configmaps", "");
        assert_eq!(table["rows"][0]["object"]["data"]["token"], REDACTED);

        // A ConfigMap's data is not a Secret's.
        let mut config = json!({"kind": "ConfigMap", "data": {"k": "v"}});
        redact(&mut config, "configmaps", "");
        assert_eq!(config["data"]["k"], "v");
    }

    #[test]
    fn patches_to_secrets_are_redacted() {
        let mut merge = json!({"data": {"token": "dG9r"}, "metadata": {"labels": {"x": "y"}}});
        redact(&mut merge, "secrets", "");
        assert_eq!(merge["data"]["token"], REDACTED);
        let mut applied = json!({"kind": "Secret", "metadata": {"annotations": {
            "kubectl.kubernetes.io/last-applied-configuration": "{\"data\":{\"token\":\"dG9r\"}}",
            "other": "kept"}}});
        redact(&mut applied, "namespaces", "");
        assert_eq!(
            applied["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"],
            REDACTED
        );
        assert_eq!(applied["metadata"]["annotations"]["other"], "kept");
        assert_eq!(merge["metadata"]["labels"]["x"], "y");
        let mut json_patch = json!([
            {"op": "add", "path": "/data/token", "value": "dG9r"},
            {"op": "replace", "path": "/data", "value": {"token": "dG9r"}},
            {"op": "remove", "path": "/data/old"},
        ]);
        redact(&mut json_patch, "secrets", "");
        assert_eq!(json_patch[0]["value"], REDACTED);
        assert_eq!(json_patch[1]["value"], REDACTED);
        assert_eq!(json_patch[2], json!({"op": "remove", "path": "/data/old"}));
    }

    #[test]
    fn token_fields_are_redacted() {
        let mut issued = json!({"kind": "TokenRequest", "spec": {"audiences": ["a"]}, "status": {"token": "eyJ.x.y", "expirationTimestamp": "t"}});
        redact(&mut issued, "serviceaccounts", "token");
        assert_eq!(issued["status"]["token"], REDACTED);
        assert_eq!(issued["status"]["expirationTimestamp"], "t");
        assert_eq!(issued["spec"]["audiences"][0], "a");
        let mut kindless = json!({"status": {"token": "eyJ.x.y"}});
        redact(&mut kindless, "serviceaccounts", "token");
        assert_eq!(kindless["status"]["token"], REDACTED);
        let mut review = json!({"spec": {"token": "eyJ.x.y"}, "status": {"authenticated": true}});
        redact(&mut review, "tokenreviews", "");
        assert_eq!(review["spec"]["token"], REDACTED);
        assert_eq!(review["status"]["authenticated"], true);
    }

    fn recorder_for(policy: Policy, backend: Arc<log::MemoryBackend>) -> Option<Recorder> {
        let auditor = Arc::new(Auditor::new(policy, backend, Arc::new(Metrics::default())));
        let uri: http::Uri = "/api/v1/namespaces/a/pods?limit=1".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(http::header::USER_AGENT, "kubectl/v1.35.0".parse().unwrap());
        headers.insert(
            http::header::AUTHORIZATION,
            "Bearer secret-token".parse().unwrap(),
        );
        let meta = RequestMeta::new(
            "id-1",
            &uri,
            &headers,
            "10.1.2.3:4".parse().ok(),
            badge_api::clock::now(),
        );
        let info = badge_api::request_info::parse("GET", uri.path(), uri.query()).unwrap();
        let user = UserInfo::from_certificate("alice", &["devs".to_string()]);
        auditor.begin(&meta, &info, &user)
    }

    #[test]
    fn a_panic_is_the_panic_stage_with_upstreams_status() {
        let backend = Arc::new(log::MemoryBackend::default());
        let policy =
            Policy::parse("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n").unwrap();
        let recorder = recorder_for(policy, backend.clone()).unwrap();
        recorder.panicked();
        let events: Vec<Value> = backend
            .events
            .lock()
            .iter()
            .map(|e| serde_json::to_value(e).unwrap())
            .collect();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0]["stage"], "RequestReceived");
        let panic = &events[1];
        assert_eq!(panic["stage"], "Panic");
        assert_eq!(panic["auditID"], "id-1");
        assert_eq!(panic["requestURI"], "/api/v1/namespaces/a/pods?limit=1");
        assert_eq!(panic["verb"], "list");
        assert_eq!(panic["sourceIPs"], json!(["10.1.2.3"]));
        assert_eq!(panic["userAgent"], "kubectl/v1.35.0");
        assert_eq!(panic["user"]["username"], "alice");
        assert_eq!(panic["responseStatus"]["code"], 500);
        assert_eq!(panic["responseStatus"]["message"], "APIServer panic'd");
        assert!(!format!("{events:?}").contains("secret-token"));
    }

    /// Keeps each event's line as written.
    #[derive(Default)]
    struct Lines(parking_lot::Mutex<Vec<Vec<u8>>>);

    impl AuditBackend for Lines {
        fn process(&self, line: &[u8]) {
            self.0.lock().push(line.to_vec());
        }
    }

    #[tokio::test]
    async fn each_stage_is_one_object_naming_each_member_once() {
        for level in ["Metadata", "Request", "RequestResponse"] {
            let lines = Arc::new(Lines::default());
            let policy = Policy::parse(&format!(
                "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: {level}\n"
            ))
            .unwrap();
            let auditor = Arc::new(Auditor::new(policy, lines.clone(), Arc::new(Metrics::default())));
            let uri: http::Uri = "/api/v1/namespaces/a/configmaps".parse().unwrap();
            let headers = HeaderMap::new();
            let meta = RequestMeta::new("id-2", &uri, &headers, None, badge_api::clock::now());
            let info = badge_api::request_info::parse("POST", uri.path(), None).unwrap();
            let user = UserInfo::from_certificate("alice", &["devs".to_string()]);
            let mut recorder = auditor.begin(&meta, &info, &user).unwrap();
            recorder.impersonated(&UserInfo::from_certificate("bob", &[]));
            recorder.annotate(DECISION_ANNOTATION, "allow");
            recorder.request_body(Bytes::from_static(
                br#"{"kind":"ConfigMap","metadata":{"name":"app","namespace":"a"}}"#,
            ));
            let reply = response::json(http::StatusCode::CREATED, &json!({"kind": "ConfigMap"}));
            recorder.respond(reply, None).await;
            let lines = lines.0.lock();
            assert_eq!(lines.len(), 2, "{level}");
            for (line, stage) in lines.iter().zip(["RequestReceived", "ResponseComplete"]) {
                // The strict reader refuses a member named twice.
                let event = Value::Object(badge_token::json::parse_object(line, 64).unwrap());
                assert_eq!(event["level"], level);
                assert_eq!(event["stage"], stage);
                assert_eq!(event["kind"], "Event");
                assert_eq!(event["user"]["username"], "alice");
                assert_eq!(event["objectRef"]["resource"], "configmaps");
            }
            let complete = Value::Object(badge_token::json::parse_object(&lines[1], 64).unwrap());
            // What the chain learned after the start is in the later stage.
            assert_eq!(complete["impersonatedUser"]["username"], "bob");
            assert_eq!(complete["annotations"][DECISION_ANNOTATION], "allow");
            assert_eq!(complete["responseStatus"], json!({"metadata": {}, "code": 201}));
            // A body completes the reference, at the levels that record bodies.
            let named = complete["objectRef"].get("name").cloned();
            if level == "Metadata" {
                assert_eq!(named, None);
                assert!(complete.get("requestObject").is_none());
            } else {
                assert_eq!(named, Some(json!("app")));
                assert_eq!(complete["requestObject"]["metadata"]["name"], "app");
            }
            assert_eq!(
                complete.get("responseObject").is_some(),
                level == "RequestResponse"
            );
        }
    }

    #[test]
    fn level_none_records_nothing() {
        let backend = Arc::new(log::MemoryBackend::default());
        let policy =
            Policy::parse("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: None\n").unwrap();
        assert!(recorder_for(policy, backend.clone()).is_none());
        assert!(backend.events.lock().is_empty());
    }

    #[test]
    fn managed_fields_are_left_out_of_objects_and_lists() {
        let mut object = json!({"metadata": {"name": "a", "managedFields": [{"manager": "kubectl"}]}});
        omit_managed_fields(&mut object);
        assert_eq!(object, json!({"metadata": {"name": "a"}}));
        let mut list = json!({"items": [{"metadata": {"name": "a", "managedFields": []}}]});
        omit_managed_fields(&mut list);
        assert_eq!(list, json!({"items": [{"metadata": {"name": "a"}}]}));
    }

    #[test]
    fn audit_ids_are_distinct_version_4_uuids() {
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| new_audit_id()).collect();
        assert_eq!(ids.len(), 1000);
        for id in ids.iter().take(10) {
            let parsed = uuid::Uuid::parse_str(id).unwrap();
            assert_eq!(parsed.get_version_num(), 4);
            assert_eq!(parsed.get_variant(), uuid::Variant::RFC4122);
        }
    }

    #[test]
    fn audit_id_headers_are_the_uuids_the_formatter_writes() {
        let mut ids = std::collections::HashSet::new();
        for _ in 0..1000 {
            let header = new_audit_id_header();
            let text = header.to_str().unwrap();
            let parsed = uuid::Uuid::parse_str(text).unwrap();
            assert_eq!(parsed.get_version_num(), 4);
            assert_eq!(parsed.hyphenated().to_string(), text);
            assert!(ids.insert(text.to_string()));
        }
        assert!(ids.insert(new_audit_id()));
    }

    #[test]
    fn audit_ids_do_not_count_requests() {
        // Of two IDs in a row, nothing but the version and variant bits is shared beyond
        // chance: the first ten bytes agreeing (as a seed with a counter in the last six
        // would make them) happens by chance once in 2^74.
        for _ in 0..100 {
            let (a, b) = (new_audit_id(), new_audit_id());
            let (a, b) = (
                uuid::Uuid::parse_str(&a).unwrap(),
                uuid::Uuid::parse_str(&b).unwrap(),
            );
            assert_ne!(a.as_bytes()[..10], b.as_bytes()[..10], "{a} then {b}");
        }
    }

    #[test]
    fn micro_times_have_six_digits_in_utc() {
        let at: jiff::Timestamp = "2026-12-05T03:04:05.678901Z".parse().unwrap();
        assert_eq!(micro_time(at), "2026-12-05T03:04:05.678901Z");
        let whole: jiff::Timestamp = "2026-12-05T03:04:05Z".parse().unwrap();
        assert_eq!(micro_time(whole), "2026-12-05T03:04:05.000000Z");
        // Field by field as strftime writes them, across days, months, leap years.
        let mut at = jiff::Timestamp::from_microsecond(951_782_399_999_999).unwrap();
        for _ in 0..5_000 {
            let expected = format!(
                "{}.{:06}Z",
                at.strftime("%Y-%m-%dT%H:%M:%S"),
                at.subsec_microsecond()
            );
            assert_eq!(micro_time(at), expected);
            at += jiff::SignedDuration::from_micros(86_399_999_937);
        }
    }

    #[test]
    fn source_ips_follow_forwarding_headers_then_the_peer() {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", "10.0.0.1, 10.0.0.2".parse().unwrap());
        headers.insert("x-real-ip", "10.0.0.2".parse().unwrap());
        let remote = "127.0.0.1:5000".parse().ok();
        let names = |ips: Vec<std::net::IpAddr>| ips.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(
            names(source_ips(&headers, remote)),
            ["10.0.0.1", "10.0.0.2", "127.0.0.1"]
        );
        assert_eq!(names(source_ips(&HeaderMap::new(), remote)), ["127.0.0.1"]);
    }

    #[test]
    fn an_in_process_write_is_one_response_complete_event() {
        let backend = Arc::new(log::MemoryBackend::default());
        let auditor = Auditor::new(
            Policy::metadata_for_everything(),
            backend.clone(),
            Arc::new(Metrics::default()),
        );
        let user = UserInfo {
            name: "system:serviceaccount:kube-system:cleaner".into(),
            ..Default::default()
        };
        let info = RequestInfo {
            is_resource_request: true,
            verb: "delete".into(),
            api_prefix: "api".into(),
            api_version: "v1".into(),
            namespace: "shop".into(),
            resource: "serviceaccounts".into(),
            name: "web".into(),
            ..Default::default()
        };
        auditor.internal_write(&InternalWrite {
            user: &user,
            info: &info,
            uid: "u1",
            failure: None,
        });
        let events = backend.events.lock();
        assert_eq!(events.len(), 1);
        let event = serde_json::to_value(&events[0]).unwrap();
        assert_eq!(event["stage"], "ResponseComplete");
        assert_eq!(event["verb"], "delete");
        assert_eq!(
            event["user"]["username"],
            "system:serviceaccount:kube-system:cleaner"
        );
        assert_eq!(event["requestURI"], "/api/v1/namespaces/shop/serviceaccounts/web");
        assert_eq!(event["objectRef"]["uid"], "u1");
        assert_eq!(event["responseStatus"]["code"], 200);
    }
}
