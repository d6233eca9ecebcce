//! An event as one JSON line, written field by field. Every request pays for its event, and
//! a general serializer spends most of that escaping strings a byte at a time; here a
//! string is checked eight bytes at a time and copied whole when, as nearly always, nothing
//! in it needs escaping. Bodies (`Value`s, at the Request levels) still go through
//! serde_json. The output is the same JSON as the derived `Serialize` of [`Event`], which
//! the tests check.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde_json::Value;

use super::{AnnotationMap, Event, EventUser, Level, ObjectReference, ResponseStatus, Stage};

/// The user an event names, borrowed from wherever it is held.
pub(crate) struct UserRef<'a> {
    pub(crate) username: &'a str,
    pub(crate) uid: &'a str,
    pub(crate) groups: &'a [String],
    pub(crate) extra: &'a BTreeMap<String, Vec<String>>,
}

impl<'a> From<&'a EventUser> for UserRef<'a> {
    fn from(user: &'a EventUser) -> UserRef<'a> {
        UserRef {
            username: &user.username,
            uid: &user.uid,
            groups: &user.groups,
            extra: &user.extra,
        }
    }
}

impl<'a> From<&'a badge_auth::UserInfo> for UserRef<'a> {
    fn from(user: &'a badge_auth::UserInfo) -> UserRef<'a> {
        UserRef {
            username: &user.name,
            uid: &user.uid,
            groups: &user.groups,
            extra: &user.extra,
        }
    }
}

/// An object reference, borrowed from an event's or straight from the request's path.
#[derive(Default)]
pub(crate) struct RefView<'a> {
    pub(crate) resource: &'a str,
    pub(crate) namespace: &'a str,
    pub(crate) name: &'a str,
    pub(crate) uid: &'a str,
    pub(crate) api_group: &'a str,
    pub(crate) api_version: &'a str,
    pub(crate) resource_version: &'a str,
    pub(crate) subresource: &'a str,
}

impl<'a> From<&'a ObjectReference> for RefView<'a> {
    fn from(reference: &'a ObjectReference) -> RefView<'a> {
        RefView {
            resource: &reference.resource,
            namespace: &reference.namespace,
            name: &reference.name,
            uid: &reference.uid,
            api_group: &reference.api_group,
            api_version: &reference.api_version,
            resource_version: &reference.resource_version,
            subresource: &reference.subresource,
        }
    }
}

impl<'a> From<&'a badge_api::request_info::RequestInfo> for RefView<'a> {
    fn from(info: &'a badge_api::request_info::RequestInfo) -> RefView<'a> {
        RefView {
            resource: &info.resource,
            namespace: &info.namespace,
            name: &info.name,
            api_group: &info.api_group,
            api_version: &info.api_version,
            subresource: &info.subresource,
            ..RefView::default()
        }
    }
}

/// What an event holds from the start of its request: the same in each of its stages.
pub(crate) struct Start<'a> {
    pub(crate) level: Level,
    pub(crate) audit_id: &'a str,
    pub(crate) request_uri: &'a str,
    pub(crate) verb: &'a str,
    pub(crate) user: UserRef<'a>,
    pub(crate) source_ips: &'a [IpAddr],
    pub(crate) user_agent: &'a str,
    pub(crate) received: jiff::Timestamp,
    /// Left for [`Rest`] when the request's body may still complete it.
    pub(crate) object_ref: Option<RefView<'a>>,
}

/// What a stage adds to the start.
pub(crate) struct Rest<'a> {
    pub(crate) stage: Stage,
    pub(crate) stage_timestamp: jiff::Timestamp,
    pub(crate) object_ref: Option<RefView<'a>>,
    pub(crate) impersonated_user: Option<&'a EventUser>,
    pub(crate) response_status: Option<&'a ResponseStatus>,
    pub(crate) request_object: Option<&'a Value>,
    pub(crate) response_object: Option<&'a Value>,
    pub(crate) annotations: &'a AnnotationMap,
}

/// Appends `event` to `out` as JSON (no newline).
pub(crate) fn event(out: &mut Vec<u8>, event: &Event) -> serde_json::Result<()> {
    start(
        out,
        &Start {
            level: event.level,
            audit_id: &event.audit_id,
            request_uri: &event.request_uri,
            verb: &event.verb,
            user: UserRef::from(&event.user),
            source_ips: &event.source_ips,
            user_agent: &event.user_agent,
            received: event.request_received_timestamp.0,
            object_ref: event.object_ref.as_ref().map(RefView::from),
        },
    );
    rest(
        out,
        &Rest {
            stage: event.stage,
            stage_timestamp: event.stage_timestamp.0,
            object_ref: None,
            impersonated_user: event.impersonated_user.as_ref(),
            response_status: event.response_status.as_ref(),
            request_object: event.request_object.as_ref(),
            response_object: event.response_object.as_ref(),
            annotations: &event.annotations,
        },
    )
}

/// Opens an event and writes the members of `start`; [`rest`] closes it. Members are in a
/// different order than upstream's: JSON objects have none.
pub(crate) fn start(out: &mut Vec<u8>, start: &Start<'_>) {
    let mut object = Object::new(out);
    object.str("kind", "Event");
    object.str("apiVersion", "audit.k8s.io/v1");
    object.str("level", start.level.as_str());
    object.str("auditID", start.audit_id);
    object.str("requestURI", start.request_uri);
    object.str("verb", start.verb);
    user(object.key("user"), &start.user);
    if !start.source_ips.is_empty() {
        let out = object.key("sourceIPs");
        out.push(b'[');
        for (i, ip) in start.source_ips.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            address(out, ip);
        }
        out.push(b']');
    }
    object.non_empty("userAgent", start.user_agent);
    time(object.key("requestReceivedTimestamp"), &start.received);
    if let Some(reference) = &start.object_ref {
        object_ref(object.key("objectRef"), reference);
    }
}

/// Writes the members of a stage after a [`start`], and closes the event.
pub(crate) fn rest(out: &mut Vec<u8>, rest: &Rest<'_>) -> serde_json::Result<()> {
    let mut object = Object::resume(out);
    object.str("stage", rest.stage.as_str());
    time(object.key("stageTimestamp"), &rest.stage_timestamp);
    if let Some(reference) = &rest.object_ref {
        object_ref(object.key("objectRef"), reference);
    }
    if let Some(impersonated) = rest.impersonated_user {
        user(object.key("impersonatedUser"), &UserRef::from(impersonated));
    }
    if let Some(status) = rest.response_status {
        response_status(object.key("responseStatus"), status)?;
    }
    if let Some(value) = rest.request_object {
        serde_json::to_writer(&mut *object.key("requestObject"), value)?;
    }
    if let Some(value) = rest.response_object {
        serde_json::to_writer(&mut *object.key("responseObject"), value)?;
    }
    if !rest.annotations.is_empty() {
        let mut annotations = Object::new(object.key("annotations"));
        for (key, value) in rest.annotations {
            annotations.dynamic(key, value);
        }
        annotations.end();
    }
    object.end();
    Ok(())
}

/// An address as a JSON string; IPv4, nearly every one, digit by digit.
fn address(out: &mut Vec<u8>, ip: &IpAddr) {
    out.push(b'"');
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                out.extend_from_slice(itoa(u16::from(*octet), &mut [0; 5]));
            }
        }
        IpAddr::V6(v6) => {
            use std::io::Write as _;
            // Writing to a Vec cannot fail.
            let _ = write!(out, "{v6}");
        }
    }
    out.push(b'"');
}

fn user(out: &mut Vec<u8>, user: &UserRef<'_>) {
    let mut object = Object::new(out);
    object.non_empty("username", user.username);
    object.non_empty("uid", user.uid);
    if !user.groups.is_empty() {
        strings(object.key("groups"), user.groups);
    }
    if !user.extra.is_empty() {
        extra(object.key("extra"), user.extra);
    }
    object.end();
}

fn extra(out: &mut Vec<u8>, extra: &BTreeMap<String, Vec<String>>) {
    let mut object = Object::new(out);
    for (key, values) in extra {
        strings(object.dynamic_key(key), values);
    }
    object.end();
}

fn object_ref(out: &mut Vec<u8>, reference: &RefView<'_>) {
    let mut object = Object::new(out);
    object.non_empty("resource", reference.resource);
    object.non_empty("namespace", reference.namespace);
    object.non_empty("name", reference.name);
    object.non_empty("uid", reference.uid);
    object.non_empty("apiGroup", reference.api_group);
    object.non_empty("apiVersion", reference.api_version);
    object.non_empty("resourceVersion", reference.resource_version);
    object.non_empty("subresource", reference.subresource);
    object.end();
}

fn response_status(out: &mut Vec<u8>, status: &ResponseStatus) -> serde_json::Result<()> {
    let mut object = Object::new(out);
    object.key("metadata").extend_from_slice(b"{}");
    for (key, value) in [
        ("status", &status.status),
        ("message", &status.message),
        ("reason", &status.reason),
    ] {
        if let Some(value) = value {
            object.str(key, value);
        }
    }
    if let Some(details) = &status.details {
        serde_json::to_writer(&mut *object.key("details"), details)?;
    }
    let code = object.key("code");
    code.extend_from_slice(itoa(status.code, &mut [0; 5]));
    object.end();
    Ok(())
}

fn time(out: &mut Vec<u8>, at: &jiff::Timestamp) {
    out.push(b'"');
    out.extend_from_slice(&micro_time_bytes(*at));
    out.push(b'"');
}

/// A MicroTime, `2006-01-02T15:04:05.000000Z`, digit by digit: the formatting machinery's
/// padded integers cost more than the rest of an event.
pub(crate) fn micro_time_bytes(at: jiff::Timestamp) -> [u8; 27] {
    let civil = jiff::tz::Offset::UTC.to_datetime(at);
    let mut out = *b"0000-00-00T00:00:00.000000Z";
    let mut put = |at: usize, width: usize, value: u32| {
        let mut value = value;
        for i in (at..at + width).rev() {
            out[i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, 4, u32::try_from(civil.year()).unwrap_or(0));
    put(5, 2, u32::try_from(civil.month()).unwrap_or(0));
    put(8, 2, u32::try_from(civil.day()).unwrap_or(0));
    put(11, 2, u32::try_from(civil.hour()).unwrap_or(0));
    put(14, 2, u32::try_from(civil.minute()).unwrap_or(0));
    put(17, 2, u32::try_from(civil.second()).unwrap_or(0));
    put(20, 6, u32::try_from(at.subsec_microsecond()).unwrap_or(0));
    out
}

/// `values` as a JSON array of strings.
pub(crate) fn strings<S: AsRef<str>>(out: &mut Vec<u8>, values: &[S]) {
    out.push(b'[');
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        string(out, value.as_ref());
    }
    out.push(b']');
}

/// The decimal digits of `n`, in `buffer`.
fn itoa(mut n: u16, buffer: &mut [u8; 5]) -> &[u8] {
    let mut start = buffer.len();
    loop {
        start -= 1;
        buffer[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buffer[start..];
        }
    }
}

/// An object being written: the braces and the commas between members.
struct Object<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Object<'a> {
    fn new(out: &'a mut Vec<u8>) -> Object<'a> {
        out.push(b'{');
        Object { out, first: true }
    }

    /// Goes on with an object whose first members are written.
    fn resume(out: &'a mut Vec<u8>) -> Object<'a> {
        Object { out, first: false }
    }

    /// Writes the member's name; its value goes into what is returned.
    /// Writes a member's name, one of this module's constants, which need no escaping; its
    /// value goes into what is returned.
    fn key(&mut self, key: &'static str) -> &mut Vec<u8> {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
        self.out
    }

    /// Writes a member's name that came from outside, escaped.
    fn dynamic_key(&mut self, key: &str) -> &mut Vec<u8> {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        string(self.out, key);
        self.out.push(b':');
        self.out
    }

    /// A member whose name and value came from outside.
    fn dynamic(&mut self, key: &str, value: &str) {
        string(self.dynamic_key(key), value);
    }

    fn str(&mut self, key: &'static str, value: &str) {
        string(self.key(key), value);
    }

    /// A string member left out when empty (`omitempty`).
    fn non_empty(&mut self, key: &'static str, value: &str) {
        if !value.is_empty() {
            self.str(key, value);
        }
    }

    fn end(self) {
        self.out.push(b'}');
    }
}

/// Whether any of the eight bytes of `word` needs escaping in a JSON string: a control
/// character (below 0x20), `"` or `\`.
fn needs_escape(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // A byte below n leaves its high bit set in (byte - n) when the byte's own high bit is
    // clear; the equality tests are "x ^ c is zero", i.e. below 1.
    let below = |x: u64, n: u64| x.wrapping_sub(ONES * n) & !x & HIGHS;
    below(word, 0x20) | below(word ^ (ONES * u64::from(b'"')), 1) | below(word ^ (ONES * u64::from(b'\\')), 1)
        != 0
}

/// Whether any byte of `bytes` needs escaping, eight at a time; the last word overlaps the
/// one before it, and a string shorter than a word is padded with a byte that needs none.
pub(crate) fn any_needs_escape(bytes: &[u8]) -> bool {
    let word_at = |i: usize| {
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[i..i + 8]);
        u64::from_le_bytes(word)
    };
    if bytes.len() < 8 {
        let mut word = [b'a'; 8];
        word[..bytes.len()].copy_from_slice(bytes);
        return needs_escape(u64::from_le_bytes(word));
    }
    let mut i = 0;
    while i + 8 <= bytes.len() {
        if needs_escape(word_at(i)) {
            return true;
        }
        i += 8;
    }
    i < bytes.len() && needs_escape(word_at(bytes.len() - 8))
}

/// Appends `s` as a JSON string, escaped as serde_json escapes it.
pub(crate) fn string(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    if any_needs_escape(bytes) {
        escaped(out, bytes);
    } else {
        out.extend_from_slice(bytes);
    }
    out.push(b'"');
}

/// The slow path: byte by byte, copying the runs between escapes.
fn escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if short.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]);
        } else {
            out.extend_from_slice(short);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::audit::{Level, MicroTime, Stage};
    use serde_json::Value;

    fn full_event() -> Event {
        let mut extra = BTreeMap::new();
        extra.insert(
            "authentication.kubernetes.io/credential-id".to_string(),
            vec!["JTI=abc".to_string()],
        );
        extra.insert("a\"b".to_string(), vec![String::new(), "x\ny".to_string()]);
        let user = EventUser {
            username: "system:serviceaccount:ns:app".into(),
            uid: "0b0f3c2e-uid".into(),
            groups: vec!["system:serviceaccounts".into(), "system:authenticated".into()],
            extra,
        };
        let mut annotations = BTreeMap::new();
        annotations.insert("authorization.k8s.io/decision".into(), "forbid".into());
        annotations.insert(
            "authorization.k8s.io/reason\t".into(),
            "RBAC: \"quoted\" \\ back\u{1}slash\ttab é 日本 \u{7f}"
                .to_string()
                .into(),
        );
        Event {
            kind: "Event",
            api_version: "audit.k8s.io/v1",
            level: Level::RequestResponse,
            audit_id: "ae71859b-76b6-4c88-a81d-b4a2d7d4407e".into(),
            stage: Stage::ResponseComplete,
            request_uri: "/api/v1/namespaces/ns/secrets?labelSelector=a%3Db&x=\u{1f}".into(),
            verb: "list".into(),
            user: user.clone(),
            impersonated_user: Some(EventUser {
                username: "bob".into(),
                ..Default::default()
            }),
            source_ips: vec![
                "10.0.0.1".parse().unwrap(),
                "2001:db8::1".parse().unwrap(),
                "127.0.0.255".parse().unwrap(),
            ],
            user_agent: "kubectl/v1.31.0 (linux/amd64) kubernetes/abc\r\n".into(),
            object_ref: Some(ObjectReference {
                resource: "secrets".into(),
                namespace: "ns".into(),
                api_version: "v1".into(),
                ..Default::default()
            }),
            response_status: Some(ResponseStatus {
                details: Some(serde_json::json!({"name": "x", "causes": [{"field": "a\u{8}\u{c}"}]})),
                ..ResponseStatus::failed("Forbidden", "no \"access\"", 403)
            }),
            request_object: Some(serde_json::json!({"kind": "DeleteOptions", "n": 1.5})),
            response_object: Some(serde_json::json!({"items": [], "metadata": {"resourceVersion": "7"}})),
            request_received_timestamp: MicroTime(
                jiff::Timestamp::from_microsecond(1_796_463_184_000_123).unwrap(),
            ),
            stage_timestamp: MicroTime(jiff::Timestamp::from_microsecond(1_796_463_184_900_456).unwrap()),
            annotations,
        }
    }

    fn encoded(e: &Event) -> Vec<u8> {
        let mut out = Vec::new();
        event(&mut out, e).unwrap();
        out
    }

    #[test]
    fn the_line_is_the_json_the_derived_serializer_writes() {
        let full = full_event();
        let mut sparse = full_event();
        sparse.impersonated_user = None;
        sparse.source_ips.clear();
        sparse.user_agent.clear();
        sparse.object_ref = None;
        sparse.response_status = Some(ResponseStatus::code(201));
        sparse.request_object = None;
        sparse.response_object = None;
        sparse.annotations.clear();
        sparse.user = EventUser::default();
        for e in [full, sparse] {
            let line = encoded(&e);
            let parsed: Value = serde_json::from_slice(&line).unwrap();
            assert_eq!(parsed, serde_json::to_value(&e).unwrap());
        }
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let mut samples: Vec<String> = (0u8..0x80).map(|b| char::from(b).to_string()).collect();
        samples.extend(
            [
                "",
                "plain ascii longer than eight bytes",
                "eight ch",
                "1234567\"",
                "\\1234567",
                "1234567\n89",
                "é日本語🙂 mixed\u{0}\u{1f}",
            ]
            .map(String::from),
        );
        // Every escape at every offset of a chunk.
        for offset in 0..17 {
            for special in ["\"", "\\", "\n", "\u{1}", "\u{1f}", "\u{7f}", "é"] {
                samples.push(format!("{}{special}{}", "a".repeat(offset), "b".repeat(9)));
            }
        }
        for sample in samples {
            let mut out = Vec::new();
            string(&mut out, &sample);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(&sample).unwrap(),
                "{sample:?}"
            );
        }
    }
}
