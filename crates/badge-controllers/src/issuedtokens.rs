//! The IssuedToken inventory's controller: a record is deleted once its token expires
//! (requeued for that instant, so nothing polls), and legacy token Secrets
//! (`kubernetes.io/service-account-token` with a token) get a record named after the
//! Secret, deleted with the Secret. Each deletion recounts the ServiceAccount's live tokens.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use badge_api::identity::{API_VERSION, SERVICE_ACCOUNT_LABEL, TOKEN_KIND_LABEL};
use badge_api::{Status, meta, resources};
use badge_registry::identity::{UsageUpdate, record_service_account_usage};
use badge_registry::{DeleteOptions, EventType, Registry, WriteOptions};
use base64::Engine;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::runtime::{Action, Controller};
use crate::{leader, namespaced_key};

const LEGACY_TOKEN_TYPE: &str = "kubernetes.io/service-account-token";
const SA_NAME_ANNOTATION: &str = "kubernetes.io/service-account.name";
const SA_UID_ANNOTATION: &str = "kubernetes.io/service-account.uid";

/// Starts the controller; it reconciles while `leading` says this server leads (always when None).
pub fn spawn(registry: Arc<Registry>, leading: Option<leader::Leading>) {
    let expiries = Arc::new(Expiries::default());
    let scheduled = expiries.clone();
    let controller = Controller::new("issuedtoken", registry.clone(), move |event| {
        if let Some((ns, name)) = namespaced_key(&event.key, "/registry/issuedtokens/") {
            // A record's expiry never changes (its spec is immutable): only a new record
            // needs a look. Usage flushes modify records all the time and are skipped.
            if event.kind != EventType::Added {
                return Vec::new();
            }
            let key = format!("token/{ns}/{name}");
            // A bound token's record whose expiry the cache read on the way in is judged
            // here as its reconcile would judge it, without reading it again.
            return match event
                .bound_token_expiry
                .map(|expires| expiry_fate(expires, badge_api::clock::now()))
            {
                Some(Fate::Keep) => Vec::new(),
                Some(Fate::KeepFor(left)) => {
                    scheduled.schedule(key, left + REQUEUE_MARGIN);
                    Vec::new()
                }
                Some(Fate::Delete) | None => vec![key],
            };
        }
        namespaced_key(&event.key, "/registry/secrets/")
            .map(|(ns, name)| vec![format!("secret/{ns}/{name}")])
            .unwrap_or_default()
    });
    let controller = controller.with_leader_election(leading);
    expiries.clone().spawn(controller.clone());
    // Recounts go through the queue, whose keys are unique: a thousand records expiring
    // together queue their ServiceAccount's recount once, not a thousand times.
    let queue = Arc::downgrade(&controller);
    controller.spawn(move |key| {
        let registry = registry.clone();
        let expiries = expiries.clone();
        let queue = queue.clone();
        async move {
            let mut parts = key.splitn(3, '/');
            let action = match (parts.next(), parts.next(), parts.next()) {
                (Some("token"), Some(ns), Some(name)) => {
                    let (action, account) = reconcile_token(&registry, ns, name).await?;
                    if let (Some(account), Some(queue)) = (account, queue.upgrade()) {
                        queue.enqueue(format!("usage/{ns}/{account}"));
                    }
                    action
                }
                (Some("secret"), Some(ns), Some(name)) => reconcile_secret(&registry, ns, name).await?,
                (Some("usage"), Some(ns), Some(account)) => {
                    recount(&registry, ns, account).await?;
                    Action::Done
                }
                _ => Action::Done,
            };
            // Waits are kept in one schedule rather than a timer task per record: a server
            // may hold a hundred thousand live tokens.
            match action {
                Action::RequeueAfter(delay) => {
                    expiries.schedule(key, delay);
                    Ok(Action::Done)
                }
                done => Ok(done),
            }
        }
    });
}

/// When each live record is next due, and one task that queues records as they fall due.
/// Due times are kept to the second, so the tokens issued within one second (a burst of
/// TokenRequests) share one entry, and a record goes at most a second after its token.
/// A server may hold a hundred thousand live records, so each waits as a few bytes
/// ([`DueKeys`]), not as its key's text.
struct Expiries {
    origin: Instant,
    /// Keys by the second after `origin` they fall due in.
    due: Mutex<BTreeMap<u64, DueKeys>>,
    /// The namespaces of the records waiting, numbered: a namespace's name is kept once.
    namespaces: Mutex<Namespaces>,
    wake: Notify,
}

/// Namespace names and their numbers.
#[derive(Default)]
struct Namespaces {
    names: Vec<Box<str>>,
    numbers: std::collections::HashMap<Box<str>, u32>,
}

impl Namespaces {
    fn number(&mut self, namespace: &str) -> Option<u32> {
        if let Some(n) = self.numbers.get(namespace) {
            return Some(*n);
        }
        let n = u32::try_from(self.names.len()).ok()?;
        self.names.push(namespace.into());
        self.numbers.insert(namespace.into(), n);
        Some(n)
    }

    fn name(&self, number: u32) -> &str {
        usize::try_from(number)
            .ok()
            .and_then(|n| self.names.get(n))
            .map_or("", |name| name)
    }
}

/// The keys due in one second. Nearly every key is `token/<namespace>/<jti>` with a jti
/// that is a UUID as the server writes them (lowercase, hyphenated): such a key waits as a
/// namespace number and the UUID's sixteen bytes; any other key as its text.
#[derive(Default)]
struct DueKeys {
    tokens: Vec<(u32, [u8; 16])>,
    others: Vec<Box<str>>,
}

/// The key prefix of an IssuedToken record's reconcile.
const TOKEN_KEY: &str = "token/";

/// A lowercase hyphenated UUID's bytes; None for any other text (which must be kept as it
/// is to be given back the same).
fn uuid_bytes(text: &str) -> Option<[u8; 16]> {
    let text = text.as_bytes();
    if text.len() != 36 {
        return None;
    }
    let mut bytes = [0u8; 16];
    let mut digits = 0;
    for (i, &c) in text.iter().enumerate() {
        let nibble = match c {
            b'-' if matches!(i, 8 | 13 | 18 | 23) => continue,
            b'0'..=b'9' if !matches!(i, 8 | 13 | 18 | 23) => c - b'0',
            b'a'..=b'f' if !matches!(i, 8 | 13 | 18 | 23) => c - b'a' + 10,
            _ => return None,
        };
        bytes[digits / 2] |= nibble << (4 * (1 - digits % 2));
        digits += 1;
    }
    Some(bytes)
}

/// Writes the text of [`uuid_bytes`] to `text`.
fn push_uuid(text: &mut String, bytes: &[u8; 16]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, byte) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            text.push('-');
        }
        text.push(char::from(HEX[usize::from(byte >> 4)]));
        text.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
}

impl Default for Expiries {
    fn default() -> Self {
        Expiries {
            origin: Instant::now(),
            due: Mutex::default(),
            namespaces: Mutex::default(),
            wake: Notify::new(),
        }
    }
}

impl Expiries {
    fn schedule(&self, key: String, delay: Duration) {
        self.schedule_at(key, Instant::now() + delay);
    }

    fn schedule_at(&self, key: String, at: Instant) {
        let since = at.saturating_duration_since(self.origin);
        // Rounded up: a record is never looked at before its time.
        let second = since.as_secs() + u64::from(since.subsec_nanos() > 0);
        let token = key
            .strip_prefix(TOKEN_KEY)
            .and_then(|rest| rest.split_once('/'))
            .and_then(|(namespace, name)| {
                let uuid = uuid_bytes(name)?;
                Some((self.namespaces.lock().number(namespace)?, uuid))
            });
        let mut due = self.due.lock();
        let keys = due.entry(second).or_default();
        match token {
            Some(token) => keys.tokens.push(token),
            None => keys.others.push(key.into_boxed_str()),
        }
        drop(due);
        self.wake.notify_one();
    }

    /// The keys due at `now`, removed from the schedule.
    fn take_due(&self, now: Instant) -> Vec<String> {
        let elapsed = now.saturating_duration_since(self.origin).as_secs();
        let ready = {
            let mut due = self.due.lock();
            let later = due.split_off(&(elapsed + 1));
            std::mem::replace(&mut *due, later)
        };
        let namespaces = self.namespaces.lock();
        let mut keys = Vec::new();
        for (_, due) in ready {
            keys.extend(due.tokens.iter().map(|(namespace, uuid)| {
                let namespace = namespaces.name(*namespace);
                let mut key = String::with_capacity(TOKEN_KEY.len() + namespace.len() + 37);
                key.push_str(TOKEN_KEY);
                key.push_str(namespace);
                key.push('/');
                push_uuid(&mut key, uuid);
                key
            }));
            keys.extend(due.others.into_iter().map(String::from));
        }
        keys
    }

    fn next(&self) -> Option<Instant> {
        let second = *self.due.lock().keys().next()?;
        Some(self.origin + Duration::from_secs(second))
    }

    fn spawn(self: Arc<Self>, controller: Arc<Controller>) {
        tokio::spawn(async move {
            loop {
                for key in self.take_due(Instant::now()) {
                    controller.enqueue(key);
                }
                match self.next() {
                    Some(at) => {
                        tokio::select! {
                            _ = tokio::time::sleep_until(at.into()) => {}
                            _ = self.wake.notified() => {}
                        }
                    }
                    None => self.wake.notified().await,
                }
            }
        });
    }
}

/// What to do with a record at `now`: keep it until `expiresAt`, or delete it.
#[derive(Debug, PartialEq, Eq)]
pub enum Fate {
    /// Keep it: its token has no expiry to wait for (a legacy token whose Secret lives, or one without a readable expiry).
    Keep,
    /// Keep it for this long, then judge again.
    KeepFor(Duration),
    /// Its token expired or its Secret is gone: delete it.
    Delete,
}

/// A record's fate: a bound token's at its expiry; a legacy token's with its Secret.
pub fn fate(record: &Value, secret: Option<&Value>, now: jiff::Timestamp) -> Fate {
    let legacy = record
        .pointer(&format!(
            "/metadata/labels/{}",
            TOKEN_KIND_LABEL.replace('/', "~1")
        ))
        .and_then(Value::as_str)
        == Some("legacy");
    if legacy {
        let bound_uid = record
            .pointer("/spec/boundObjectRef/uid")
            .and_then(Value::as_str)
            .unwrap_or("");
        return match secret {
            Some(s) if meta::uid(s) == bound_uid && meta::deletion_timestamp(s).is_none() => Fate::Keep,
            _ => Fate::Delete,
        };
    }
    let expires = record
        .pointer("/spec/expiresAt")
        .and_then(Value::as_str)
        .and_then(meta::parse_time);
    expiry_fate(expires, now)
}

/// A bound token's record's fate, by its expiry.
fn expiry_fate(expires: Option<jiff::Timestamp>, now: jiff::Timestamp) -> Fate {
    match expires {
        // A bound record without a readable expiry cannot be judged; keep it.
        None => Fate::Keep,
        Some(at) if at <= now => Fate::Delete,
        Some(at) => {
            let nanos = at.as_nanosecond() - now.as_nanosecond();
            Fate::KeepFor(Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX)))
        }
    }
}

/// A bound token record's expiry, read without decoding the record (every record issued
/// passes here); None for a legacy token's record, whose fate needs its Secret.
fn bound_expiry(record: &badge_registry::CachedObject) -> Option<Option<jiff::Timestamp>> {
    badge_registry::identity::with_token_view(record, |view| {
        let view = view?;
        (!view.legacy()).then(|| view.expires_at.and_then(|at| meta::parse_time(&at)))
    })
}

/// How long past its expiry a record is looked at again, so the look sees it expired.
const REQUEUE_MARGIN: Duration = Duration::from_millis(10);

/// Reconciles one record; the ServiceAccount whose live tokens to recount when it was
/// removed.
async fn reconcile_token(
    registry: &Registry,
    ns: &str,
    name: &str,
) -> Result<(Action, Option<String>), Status> {
    let tokens = resources::ISSUEDTOKENS;
    let Some(cached) = registry.get_cached_object(tokens, ns, name) else {
        return Ok((Action::Done, None));
    };
    // Nearly every look finds a bound token not yet expired: judged without decoding it.
    if let Some(expires) = bound_expiry(&cached) {
        match expiry_fate(expires, badge_api::clock::now()) {
            Fate::Keep => return Ok((Action::Done, None)),
            Fate::KeepFor(left) => {
                return Ok((Action::RequeueAfter(left + REQUEUE_MARGIN), None));
            }
            Fate::Delete => {}
        }
    }
    let record = cached.value();
    let secret = registry.get_cached(resources::SECRETS, ns, name);
    match fate(&record, secret.as_deref(), badge_api::clock::now()) {
        Fate::Keep => Ok((Action::Done, None)),
        // A little past the instant, so the next look sees it expired.
        Fate::KeepFor(left) => Ok((Action::RequeueAfter(left + REQUEUE_MARGIN), None)),
        Fate::Delete => {
            let uid = meta::uid(&record);
            let options = DeleteOptions {
                precondition_uid: (!uid.is_empty()).then(|| uid.to_string()),
                ..Default::default()
            };
            match registry.delete(tokens, ns, name, &options).await {
                Err(s) if s.is_not_found() || s.is_conflict() => return Ok((Action::Done, None)),
                Err(s) => return Err(s),
                Ok(_) => {}
            }
            tracing::debug!(
                namespace = ns,
                record = name,
                "removed the record of an expired token"
            );
            let account = record
                .pointer("/spec/serviceAccountName")
                .and_then(Value::as_str)
                .unwrap_or("");
            Ok((Action::Done, (!account.is_empty()).then(|| account.to_string())))
        }
    }
}

/// Recounts a ServiceAccount's live tokens once the cache has seen a change.
async fn recount(registry: &Registry, ns: &str, account: &str) -> Result<(), Status> {
    registry.sync().await?;
    match record_service_account_usage(
        registry,
        ns,
        account,
        &UsageUpdate::default(),
        badge_api::clock::now(),
    )
    .await
    {
        // The namespace is going away with everything in it.
        Err(s) if s.is_not_found() || s.code == 403 => Ok(()),
        other => other,
    }
}

/// The `kid` of a JWT's header, read without verifying anything (it is only recorded).
fn key_id_of(token: &[u8]) -> String {
    let header = token.split(|b| *b == b'.').next().unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .ok()
        .and_then(|h| serde_json::from_slice::<Value>(&h).ok())
        .and_then(|h| h.get("kid").and_then(Value::as_str).map(String::from))
        .unwrap_or_default()
}

/// The record of a legacy token Secret, or None when the Secret holds no such token.
pub fn legacy_record(secret: &Value) -> Option<Value> {
    if secret.get("type").and_then(Value::as_str) != Some(LEGACY_TOKEN_TYPE)
        || meta::deletion_timestamp(secret).is_some()
    {
        return None;
    }
    let token = secret
        .pointer("/data/token")
        .and_then(Value::as_str)
        .and_then(|t| base64::engine::general_purpose::STANDARD.decode(t).ok())
        .filter(|t| !t.is_empty())?;
    let account = meta::annotation(secret, SA_NAME_ANNOTATION).filter(|a| !a.is_empty())?;
    let name = meta::name(secret);
    let mut labels = json!({TOKEN_KIND_LABEL: "legacy"});
    if let Some(account) = badge_api::identity::service_account_label(account) {
        labels[SERVICE_ACCOUNT_LABEL] = json!(account);
    }
    Some(json!({
        "apiVersion": API_VERSION,
        "kind": "IssuedToken",
        "metadata": {
            "name": name,
            "namespace": meta::namespace(secret),
            "labels": labels,
        },
        "spec": {
            "serviceAccountName": account,
            "serviceAccountUID": meta::annotation(secret, SA_UID_ANNOTATION).unwrap_or(""),
            "boundObjectRef": {"kind": "Secret", "name": name, "uid": meta::uid(secret)},
            "keyID": key_id_of(&token),
            "issuedAt": meta::creation_timestamp(secret),
        },
    }))
}

async fn reconcile_secret(registry: &Registry, ns: &str, name: &str) -> Result<Action, Status> {
    let tokens = resources::ISSUEDTOKENS;
    let secret = registry.get_cached(resources::SECRETS, ns, name);
    let existing = registry.get_cached(tokens, ns, name);
    if let Some(existing) = &existing {
        // Gone, replaced, or no longer a token: the record's own reconcile removes it.
        if fate(existing, secret.as_deref(), badge_api::clock::now()) == Fate::Delete {
            let (action, account) = reconcile_token(registry, ns, name).await?;
            if let Some(account) = account {
                recount(registry, ns, &account).await?;
            }
            return Ok(action);
        }
        return Ok(Action::Done);
    }
    let Some(record) = secret.as_deref().and_then(legacy_record) else {
        return Ok(Action::Done);
    };
    let account = record["spec"]["serviceAccountName"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    match registry
        .create(tokens, ns, record, &WriteOptions::default())
        .await
    {
        Ok(_) => {}
        Err(s) if s.is_already_exists() || s.is_not_found() || s.code == 403 => return Ok(Action::Done),
        Err(s) => return Err(s),
    }
    recount(registry, ns, &account).await?;
    Ok(Action::Done)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn now() -> jiff::Timestamp {
        "2026-01-01T00:00:00Z".parse().unwrap()
    }

    #[test]
    fn the_schedule_hands_out_keys_as_they_fall_due() {
        let expiries = Expiries::default();
        let start = expiries.origin + Duration::from_millis(300);
        let second = Duration::from_secs(1);
        expiries.schedule_at("late".into(), start + 60 * second);
        expiries.schedule_at("soon".into(), start);
        assert!(expiries.take_due(start).is_empty(), "never before its time");
        assert_eq!(expiries.take_due(start + second), ["soon"]);
        assert!(expiries.take_due(start + second).is_empty());
        assert!(expiries.next().unwrap() >= start + 60 * second);
        assert!(expiries.take_due(start + 60 * second).is_empty());
        assert_eq!(expiries.take_due(start + 61 * second), ["late"]);
        assert_eq!(expiries.next(), None);
    }

    #[test]
    fn the_schedule_hands_back_every_key_as_it_was_given() {
        let expiries = Expiries::default();
        let at = expiries.origin + Duration::from_secs(5);
        let keys = [
            // As the server names records: kept as a namespace number and sixteen bytes.
            "token/workloads/6f1c2a9e-3b7d-4c1e-9a52-000000000001",
            "token/default/00000000-0000-0000-0000-000000000000",
            "token/default/ffffffff-ffff-ffff-ffff-ffffffffffff",
            "token/workloads/9b8a7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d",
            // Anything else, as text.
            "token/default/6F1C2A9E-3B7D-4C1E-9A52-000000000001",
            "token/default/6f1c2a9e3b7d4c1e9a52000000000001xxxx",
            "token/default/6f1c2a9e-3b7d-4c1e-9a52-00000000000g",
            "token/default/legacy-token",
            "token/default/6f1c2a9e-3b7d-4c1e-9a52-0000000000011",
            "token/x/-f1c2a9e-3b7d-4c1e-9a52-000000000001",
            "secret/default/6f1c2a9e-3b7d-4c1e-9a52-000000000001",
            "token/no-name",
        ];
        for key in keys {
            expiries.schedule_at(key.to_string(), at);
        }
        let due = expiries.due.lock();
        assert_eq!(due.len(), 1);
        let (tokens, others) = (
            due.values().next().unwrap().tokens.len(),
            due.values().next().unwrap().others.len(),
        );
        assert_eq!((tokens, others), (4, 8));
        drop(due);
        let mut given: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        let mut taken = expiries.take_due(at);
        given.sort();
        taken.sort();
        assert_eq!(taken, given);
        for key in keys {
            let name = key.rsplit('/').next().unwrap();
            if let Some(bytes) = uuid_bytes(name) {
                let mut text = String::new();
                push_uuid(&mut text, &bytes);
                assert_eq!(text, name);
            }
        }
    }

    #[test]
    fn tokens_due_in_the_same_second_share_one_entry() {
        let expiries = Expiries::default();
        let at = expiries.origin + Duration::from_secs(3600) + Duration::from_millis(1);
        for i in 0..1000 {
            expiries.schedule_at(format!("token/demo/{i}"), at + Duration::from_micros(i));
        }
        assert_eq!(
            expiries.due.lock().len(),
            1,
            "one entry per second, not per record"
        );
        assert_eq!(expiries.take_due(at + Duration::from_secs(1)).len(), 1000);
    }

    #[test]
    fn bound_records_live_until_their_token_expires() {
        let record = |exp: &str| json!({"spec": {"expiresAt": exp}});
        assert_eq!(fate(&record("2025-12-31T23:59:59Z"), None, now()), Fate::Delete);
        assert_eq!(fate(&record("2026-01-01T00:00:00Z"), None, now()), Fate::Delete);
        assert_eq!(
            fate(&record("2026-01-01T00:10:00Z"), None, now()),
            Fate::KeepFor(Duration::from_secs(600))
        );
    }

    #[test]
    fn legacy_records_live_with_their_secret() {
        let secret = json!({
            "type": LEGACY_TOKEN_TYPE,
            "metadata": {"name": "app-token", "namespace": "demo", "uid": "s1",
                "creationTimestamp": "2025-01-01T00:00:00Z",
                "annotations": {SA_NAME_ANNOTATION: "app", SA_UID_ANNOTATION: "sa1"}},
            // {"alg":"RS256","kid":"k1"} . payload . signature
            "data": {"token": base64::engine::general_purpose::STANDARD.encode("eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.e30.c2ln")},
        });
        let record = legacy_record(&secret).unwrap();
        assert_eq!(record["metadata"]["name"], "app-token");
        assert_eq!(record["metadata"]["labels"][SERVICE_ACCOUNT_LABEL], "app");
        assert_eq!(record["spec"]["keyID"], "k1");
        assert_eq!(record["spec"]["serviceAccountUID"], "sa1");
        assert!(
            record["spec"].get("expiresAt").is_none(),
            "legacy tokens never expire"
        );
        assert_eq!(fate(&record, Some(&secret), now()), Fate::Keep);
        assert_eq!(fate(&record, None, now()), Fate::Delete);
        let mut replaced = secret.clone();
        replaced["metadata"]["uid"] = json!("s2");
        assert_eq!(fate(&record, Some(&replaced), now()), Fate::Delete);

        let mut empty = secret.clone();
        empty["data"] = json!({});
        assert!(legacy_record(&empty).is_none(), "not yet populated");
        let mut opaque = secret;
        opaque["type"] = json!("Opaque");
        assert!(legacy_record(&opaque).is_none());
    }
}
