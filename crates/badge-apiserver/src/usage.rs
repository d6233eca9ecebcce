//! Token usage: every authentication by a ServiceAccount token (API requests and
//! TokenReview) and every TokenRequest is noted in memory, and written to the
//! `identity.badge.dev` records in batches by [`ApiServer::flush_usage`]: nothing on the
//! request path touches the store. Upstream records only legacy tokens, by the day
//! (`pkg/serviceaccount/legacy.go`); that label is kept too, written from the same batch.
//!
//! A flush is one store batch (one transaction; etcd takes it in transactions of 128): each
//! record written once, compared against the revision it was read at and merged into what
//! another server may have written (counts added, the latest use kept); a write that lost
//! a race is tried again at the next flush.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use badge_api::identity::{
    API_VERSION, LEGACY_TOKEN_LAST_USED_LABEL, SERVICE_ACCOUNT_LABEL, TOKEN_KIND_LABEL, service_account_label,
};
use badge_api::{meta, resources};
use badge_auth::TokenCredential;
use badge_registry::identity::UsageUpdate;
use badge_registry::{BatchWrite, SelfWritten, ServerMetadata, WriteOptions};
use parking_lot::Mutex;
use serde_json::{Map, Value, json};

use crate::ApiServer;

/// How often usage is written unless configured (`--usage-flush-period`).
pub const DEFAULT_FLUSH_PERIOD: Duration = Duration::from_secs(10);
/// A power of two above the cores that could contend.
const SHARDS: usize = 16;
/// The longest user agent kept: a client cannot make a record grow without bound.
const MAX_USER_AGENT: usize = 256;
/// The most IssuedTokens waiting for a flush: past it (the store down for long under a flood
/// of TokenRequests) records are dropped and counted, never the requests.
const MAX_PENDING_ISSUED: usize = 1 << 18;
/// The most writes one store batch of a flush holds: a flush after a long outage, or under
/// a flood of TokenRequests, goes in several transactions so that no other write waits long
/// behind one.
const MAX_FLUSH_BATCH: usize = 1024;
/// How many flushes a use waits for its record to appear (the issuing server flushes it)
/// before it is dropped.
const MAX_MISSES: u8 = 6;

/// The uses of one credential since the last flush.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uses {
    /// How many uses.
    pub count: u64,
    /// When the latest use was.
    pub last: jiff::Timestamp,
    /// None for uses through TokenReview, whose caller is not the token's holder.
    pub source: Option<IpAddr>,
    /// The User-Agent of the latest use.
    pub user_agent: String,
    misses: u8,
}

impl Uses {
    /// Folds `other` in: counts add, the later use's time, address and agent win.
    pub fn merge(&mut self, other: Uses) {
        self.count += other.count;
        if other.last >= self.last {
            self.last = other.last;
            self.source = other.source;
            self.user_agent = other.user_agent;
        }
        self.misses = self.misses.max(other.misses);
    }

    /// The `lastUsed` object of an IssuedToken.
    fn last_used(&self) -> Value {
        json!({
            "time": meta::format_time(self.last),
            "sourceAddress": self.source.map(|a| a.to_string()).unwrap_or_default(),
            "userAgent": self.user_agent,
        })
    }
}

/// One shard: the uses since the last flush, and each credential's latest source address,
/// kept across flushes for as long as the suspicious-use window.
#[derive(Default)]
struct ShardState {
    uses: HashMap<Arc<TokenCredential>, Uses>,
    sources: HashMap<Arc<TokenCredential>, (IpAddr, jiff::Timestamp)>,
}

type Shard = Mutex<ShardState>;

/// The reason a token used from two addresses is flagged with.
pub const MULTIPLE_SOURCES: &str = "MultipleSourceAddresses";
/// The reason a pod-bound token is flagged with when its node binding no longer holds.
pub const NODE_CHANGED: &str = "BoundNodeChanged";
/// The audit annotation of a request whose token was flagged.
pub const SUSPICIOUS_ANNOTATION: &str = "identity.badge.dev/suspicious-token-use";
/// `--suspicious-token-window`'s default.
pub const DEFAULT_SUSPICIOUS_WINDOW: Duration = Duration::from_secs(600);

/// A use its holder alone would not make: the token is likely in two hands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Suspicion {
    /// The machine-readable kind (`MultipleSourceAddresses`).
    pub reason: &'static str,
    /// What was seen, for people.
    pub message: String,
    /// When it was seen.
    pub time: jiff::Timestamp,
}

/// How suspicious use is watched for (`--suspicious-token-window`,
/// `--revoke-suspicious-tokens`).
#[derive(Clone, Copy, Debug)]
pub struct SuspicionPolicy {
    /// Two source addresses within this long are suspicious; zero watches nothing.
    pub window: Duration,
    /// Flagged tokens are revoked too.
    pub revoke: bool,
}

/// A pod-bound token carries the node its pod ran on when it was issued (the
/// `kubernetes.io.node` claim, as the `authentication.kubernetes.io/node-name` and
/// `node-uid` extras). The holder of a stolen token can use it anywhere, but the pod it
/// names stays where it is, so a use is suspicious when, by the watch cache:
/// - the pod it is bound to (the same uid) is assigned to another node than the token
///   names (`spec.nodeName` differs), or
/// - the node the token names exists under another uid than the token carries: the node was
///   replaced, so the token outlived the machine it was issued to.
///
/// A node that is gone is not itself suspicious: its pods go with it, and so does the
/// token's validity. Tokens without a pod, or without node information, are never flagged
/// this way. `pod` is the uid and `spec.nodeName` ("" when unset) of the cached pod named by
/// the extras, `node_uid` the uid of the cached node they name: what the watch cache keeps
/// of each without decoding it, as this runs on every request made with such a token.
pub fn node_binding_suspicion(
    user: &badge_auth::UserInfo,
    pod: Option<(&str, &str)>,
    node_uid: Option<&str>,
    at: jiff::Timestamp,
) -> Option<Suspicion> {
    use badge_token::claims::{NODE_NAME_KEY, NODE_UID_KEY, POD_NAME_KEY, POD_UID_KEY};
    let extra = |key: &str| {
        user.extra
            .get(key)
            .and_then(|values| values.first())
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    };
    let (pod_name, pod_uid, node_name) = (extra(POD_NAME_KEY)?, extra(POD_UID_KEY)?, extra(NODE_NAME_KEY)?);
    if let Some((_, now_on)) =
        pod.filter(|(uid, now_on)| *uid == pod_uid && !now_on.is_empty() && *now_on != node_name)
    {
        return Some(Suspicion {
            reason: NODE_CHANGED,
            message: format!("issued for pod {pod_name} on node {node_name}, which is now on node {now_on}"),
            time: at,
        });
    }
    let token_node_uid = extra(NODE_UID_KEY)?;
    let live_uid = node_uid?;
    (!live_uid.is_empty() && live_uid != token_node_uid).then(|| Suspicion {
        reason: NODE_CHANGED,
        message: format!(
            "issued on node {node_name} (uid {token_node_uid}), which was replaced (uid {live_uid})"
        ),
        time: at,
    })
}

impl Default for SuspicionPolicy {
    fn default() -> Self {
        SuspicionPolicy {
            window: DEFAULT_SUSPICIOUS_WINDOW,
            revoke: false,
        }
    }
}

/// What the request paths note for the next flush.
pub struct UsageRecorder {
    enabled: bool,
    hasher: RandomState,
    shards: Box<[Shard]>,
    /// IssuedToken records of tokens issued since the last flush.
    issued: Mutex<Vec<IssuedRecord>>,
    /// Records dropped at [`MAX_PENDING_ISSUED`] since the last flush.
    issued_dropped: std::sync::atomic::AtomicUsize,
    suspicion: SuspicionPolicy,
    /// Flags to write at the next flush.
    suspicious: Mutex<Vec<(Arc<TokenCredential>, Suspicion)>>,
}

impl Default for UsageRecorder {
    fn default() -> Self {
        UsageRecorder::new(true)
    }
}

impl UsageRecorder {
    /// A recorder; a disabled one notes nothing.
    pub fn new(enabled: bool) -> UsageRecorder {
        UsageRecorder {
            enabled,
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            issued: Mutex::default(),
            issued_dropped: std::sync::atomic::AtomicUsize::new(0),
            suspicion: SuspicionPolicy::default(),
            suspicious: Mutex::default(),
        }
    }

    /// Watches for suspicious use as `policy` says.
    pub fn with_suspicion(mut self, policy: SuspicionPolicy) -> UsageRecorder {
        self.suspicion = policy;
        self
    }

    /// Whether the recorder notes uses.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Notes one authentication with `credential`. One short lock of one shard; the agent
    /// is copied only when it differs from the last one noted. Returns the suspicion the
    /// use raised, if any (it is also noted for the next flush).
    pub fn record(
        &self,
        credential: &Arc<TokenCredential>,
        at: jiff::Timestamp,
        source: Option<IpAddr>,
        user_agent: &str,
    ) -> Option<Suspicion> {
        if !self.enabled {
            return None;
        }
        let user_agent = truncate(user_agent, MAX_USER_AGENT);
        let shard = &self.shards[self.hasher.hash_one(&**credential) as usize % SHARDS];
        let mut state = shard.lock();
        let suspicion = match source {
            Some(address) if !self.suspicion.window.is_zero() => {
                self.note_source(&mut state.sources, credential, address, at)
            }
            _ => None,
        };
        let uses = &mut state.uses;
        match uses.get_mut(&**credential) {
            Some(seen) => {
                seen.count += 1;
                if at >= seen.last {
                    seen.last = at;
                    seen.source = source;
                    if seen.user_agent != user_agent {
                        seen.user_agent = user_agent.to_string();
                    }
                }
            }
            None => {
                uses.insert(
                    credential.clone(),
                    Uses {
                        count: 1,
                        last: at,
                        source,
                        user_agent: user_agent.to_string(),
                        misses: 0,
                    },
                );
            }
        }
        drop(state);
        if let Some(suspicion) = &suspicion {
            self.suspicious
                .lock()
                .push((credential.clone(), suspicion.clone()));
        }
        suspicion
    }

    /// Remembers `address` as the credential's latest source; a different address within
    /// the window is suspicious.
    fn note_source(
        &self,
        sources: &mut HashMap<Arc<TokenCredential>, (IpAddr, jiff::Timestamp)>,
        credential: &Arc<TokenCredential>,
        address: IpAddr,
        at: jiff::Timestamp,
    ) -> Option<Suspicion> {
        let window =
            jiff::SignedDuration::try_from(self.suspicion.window).unwrap_or(jiff::SignedDuration::MAX);
        let previous = sources.insert(credential.clone(), (address, at));
        let (before, seen) = previous?;
        (before != address && at.duration_since(seen) <= window).then(|| Suspicion {
            reason: MULTIPLE_SOURCES,
            message: format!(
                "used from {before} and {address} within {}s",
                self.suspicion.window.as_secs()
            ),
            time: at,
        })
    }

    /// Notes a suspicion found outside [`UsageRecorder::record`] for the next flush, once
    /// per credential and reason until then.
    pub fn flag(&self, credential: &Arc<TokenCredential>, suspicion: Suspicion) {
        if !self.enabled {
            return;
        }
        let mut pending = self.suspicious.lock();
        if !pending
            .iter()
            .any(|(c, s)| c == credential && s.reason == suspicion.reason)
        {
            pending.push((credential.clone(), suspicion));
        }
    }

    /// Whether flagged tokens are revoked too.
    pub fn revokes_suspicious(&self) -> bool {
        self.suspicion.revoke
    }

    fn take_suspicious(&self) -> Vec<(Arc<TokenCredential>, Suspicion)> {
        std::mem::take(&mut *self.suspicious.lock())
    }

    /// Notes an IssuedToken record to create.
    pub fn issued(&self, record: IssuedRecord) {
        if !self.enabled {
            return;
        }
        let mut issued = self.issued.lock();
        if issued.len() < MAX_PENDING_ISSUED {
            issued.push(record);
        } else {
            self.issued_dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Takes every use noted so far, leaving the recorder empty.
    pub fn take(&self) -> Vec<(Arc<TokenCredential>, Uses)> {
        let mut all = Vec::new();
        let now = badge_api::clock::now();
        let window =
            jiff::SignedDuration::try_from(self.suspicion.window).unwrap_or(jiff::SignedDuration::MAX);
        for shard in self.shards.iter() {
            let mut state = shard.lock();
            let taken = std::mem::take(&mut state.uses);
            // Sources older than the window can no longer raise a suspicion.
            state
                .sources
                .retain(|_, (_, seen)| now.duration_since(*seen) <= window);
            all.extend(taken);
        }
        all
    }

    /// Puts back uses a flush could not write, merged with any noted since.
    pub fn restore(&self, credential: Arc<TokenCredential>, uses: Uses) {
        let shard = &self.shards[self.hasher.hash_one(&*credential) as usize % SHARDS];
        let mut state = shard.lock();
        let map = &mut state.uses;
        match map.get_mut(&*credential) {
            Some(seen) => seen.merge(uses),
            None => {
                map.insert(credential, uses);
            }
        }
    }

    fn take_issued(&self) -> Vec<IssuedRecord> {
        std::mem::take(&mut *self.issued.lock())
    }

    fn restore_issued(&self, records: Vec<IssuedRecord>) {
        let mut issued = self.issued.lock();
        let room = MAX_PENDING_ISSUED.saturating_sub(issued.len());
        let dropped = records.len().saturating_sub(room);
        issued.extend(records.into_iter().take(room));
        self.issued_dropped
            .fetch_add(dropped, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A refusal that writing the same record again would meet again: the store's size limit
/// (413), validation (422), a malformed request (400). Anything else (a timeout, an
/// unavailable store, a conflict) may pass at the next flush.
fn refuses_the_record(status: &badge_api::status::Status) -> bool {
    matches!(status.code, 400 | 413 | 422)
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// What one flush wrote, for logs and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// Records created.
    pub created: usize,
    /// Records updated.
    pub updated: usize,
    /// Uses kept for the next flush: their record does not exist yet.
    pub deferred: usize,
    /// Uses or records given up on.
    pub dropped: usize,
    /// Legacy token Secrets given their last-used label.
    pub secrets_labelled: usize,
}

/// The IssuedToken record of a token just issued, as it waits for a flush: its fields
/// rather than the object. A burst of TokenRequests outruns the flush's writes, so a great
/// many can wait at once, and a decoded object takes several times the memory (a map node
/// per field, an allocation per string): what the waiting records take at their peak the
/// allocator keeps long after they are written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedRecord {
    namespace: Box<str>,
    service_account: Box<str>,
    service_account_uid: Box<str>,
    jti: Box<str>,
    key_id: Box<str>,
    audiences: Box<[Box<str>]>,
    /// The bound object's kind, name and uid; rare enough to be kept apart.
    bound: Option<Box<[Box<str>; 3]>>,
    requester: Box<str>,
    issued_at: i64,
    expires_at: i64,
}

impl IssuedRecord {
    /// The record of a token just issued.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        namespace: &str,
        service_account: &str,
        service_account_uid: &str,
        jti: &str,
        key_id: &str,
        audiences: &[String],
        bound: Option<(&str, &str, &str)>,
        requester: &str,
        issued_at: i64,
        expires_at: i64,
    ) -> IssuedRecord {
        IssuedRecord {
            namespace: namespace.into(),
            service_account: service_account.into(),
            service_account_uid: service_account_uid.into(),
            jti: jti.into(),
            key_id: key_id.into(),
            audiences: audiences.iter().map(|a| a.as_str().into()).collect(),
            bound: bound.map(|(kind, name, uid)| Box::new([kind.into(), name.into(), uid.into()])),
            requester: requester.into(),
            issued_at,
            expires_at,
        }
    }

    /// The IssuedToken object to create.
    pub fn to_object(&self) -> Value {
        let mut spec = json!({
            "serviceAccountName": self.service_account,
            "serviceAccountUID": self.service_account_uid,
            "audiences": self.audiences,
            "keyID": self.key_id,
            "requester": {"username": self.requester},
            "issuedAt": api_time(self.issued_at),
            "expiresAt": api_time(self.expires_at),
        });
        if let Some([kind, name, uid]) = self.bound.as_deref() {
            spec["boundObjectRef"] = json!({"kind": kind, "name": name, "uid": uid});
        }
        json!({
            "apiVersion": API_VERSION,
            "kind": "IssuedToken",
            "metadata": self.metadata(),
            "spec": spec,
        })
    }

    /// The metadata of [`IssuedRecord::to_object`], built field by field: `json!` would
    /// serialize each string into its value rather than copy it.
    fn metadata(&self) -> Value {
        let string = |s: &str| Value::String(s.to_string());
        let mut labels = Map::new();
        if let Some(account) = service_account_label(&self.service_account) {
            labels.insert(SERVICE_ACCOUNT_LABEL.into(), string(account));
        }
        labels.insert(TOKEN_KIND_LABEL.into(), string("bound"));
        let mut metadata = Map::new();
        metadata.insert("name".into(), string(&self.jti));
        metadata.insert("namespace".into(), string(&self.namespace));
        metadata.insert("labels".into(), Value::Object(labels));
        Value::Object(metadata)
    }

    /// Appends the JSON the store keeps for [`IssuedRecord::to_object`] created with
    /// `server`'s metadata and `status`: the members in the order serde_json writes a map's
    /// (sorted), strings escaped as it escapes them.
    fn write_stored(&self, server: &ServerMetadata<'_>, status: Option<&Value>, out: &mut Vec<u8>) {
        use crate::audit::encode::string;
        out.extend_from_slice(b"{\"apiVersion\":");
        string(out, API_VERSION);
        out.extend_from_slice(b",\"kind\":\"IssuedToken\",\"metadata\":{\"creationTimestamp\":");
        string(out, server.creation_timestamp);
        out.extend_from_slice(b",\"labels\":{");
        if let Some(account) = service_account_label(&self.service_account) {
            string(out, SERVICE_ACCOUNT_LABEL);
            out.push(b':');
            string(out, account);
            out.push(b',');
        }
        string(out, TOKEN_KIND_LABEL);
        out.extend_from_slice(b":\"bound\"},\"name\":");
        string(out, &self.jti);
        out.extend_from_slice(b",\"namespace\":");
        string(out, server.namespace);
        out.extend_from_slice(b",\"uid\":");
        string(out, server.uid);
        out.extend_from_slice(b"},\"spec\":{\"audiences\":");
        crate::audit::encode::strings(out, &self.audiences);
        if let Some([kind, name, uid]) = self.bound.as_deref() {
            out.extend_from_slice(b",\"boundObjectRef\":{\"kind\":");
            string(out, kind);
            out.extend_from_slice(b",\"name\":");
            string(out, name);
            out.extend_from_slice(b",\"uid\":");
            string(out, uid);
            out.push(b'}');
        }
        out.extend_from_slice(b",\"expiresAt\":");
        string(out, &api_time(self.expires_at));
        out.extend_from_slice(b",\"issuedAt\":");
        string(out, &api_time(self.issued_at));
        out.extend_from_slice(b",\"keyID\":");
        string(out, &self.key_id);
        out.extend_from_slice(b",\"requester\":{\"username\":");
        string(out, &self.requester);
        out.extend_from_slice(b"},\"serviceAccountName\":");
        string(out, &self.service_account);
        out.extend_from_slice(b",\"serviceAccountUID\":");
        string(out, &self.service_account_uid);
        out.push(b'}');
        if let Some(status) = status {
            out.extend_from_slice(b",\"status\":");
            // Writing into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, status);
        }
        out.push(b'}');
    }

    /// The bytes it takes while it waits: itself and what it owns (allocator overhead aside).
    pub fn heap_bytes(&self) -> usize {
        let strings = [
            &self.namespace,
            &self.service_account,
            &self.service_account_uid,
            &self.jti,
            &self.key_id,
            &self.requester,
        ];
        std::mem::size_of::<IssuedRecord>()
            + strings.iter().map(|s| s.len()).sum::<usize>()
            + self
                .audiences
                .iter()
                .map(|a| std::mem::size_of::<Box<str>>() + a.len())
                .sum::<usize>()
            + self.bound.as_deref().map_or(0, |b| {
                std::mem::size_of::<[Box<str>; 3]>() + b.iter().map(|s| s.len()).sum::<usize>()
            })
    }
}

/// A record's time as the API writes it; empty out of range.
fn api_time(seconds: i64) -> String {
    jiff::Timestamp::from_second(seconds)
        .map(badge_api::meta::format_time)
        .unwrap_or_default()
}

/// A new IssuedToken as a flush creates it: written straight to its stored JSON.
#[derive(Debug)]
struct NewIssuedToken {
    record: Arc<IssuedRecord>,
    /// The uses made of the token before its record was written.
    status: Option<Value>,
}

impl SelfWritten for NewIssuedToken {
    fn metadata(&self) -> Value {
        let mut object = Map::new();
        object.insert("metadata".into(), self.record.metadata());
        Value::Object(object)
    }

    fn write_stored(&self, server: &ServerMetadata<'_>, out: &mut Vec<u8>) {
        self.record.write_stored(server, self.status.as_ref(), out);
    }
}

/// The status of a used token's record: its uses merged into the status stored.
#[derive(Debug)]
struct UsedTokenStatus(Uses);

impl badge_registry::SelfWrittenStatus for UsedTokenStatus {
    fn write_status(&self, current: Option<&serde_json::value::RawValue>, out: &mut Vec<u8>) {
        // A stored status that is no JSON object counts as none, as when merged into a
        // decoded record.
        let current: Option<Value> = current.and_then(|raw| serde_json::from_str(raw.get()).ok());
        let merged = merged_token_status(current.as_ref(), &self.0);
        // Writing a Value to a Vec cannot fail.
        let _ = serde_json::to_writer(out, &merged);
    }
}

/// The IssuedToken's status with `uses` merged into the one stored.
fn merged_token_status(current: Option<&Value>, uses: &Uses) -> Value {
    let mut status = current
        .filter(|s| s.is_object())
        .cloned()
        .unwrap_or_else(|| json!({}));
    let count = status.get("useCount").and_then(Value::as_i64).unwrap_or(0);
    let added = i64::try_from(uses.count).unwrap_or(i64::MAX);
    status["useCount"] = json!(count.saturating_add(added));
    let stored = status
        .pointer("/lastUsed/time")
        .and_then(Value::as_str)
        .and_then(meta::parse_time);
    if stored.is_none_or(|stored| uses.last >= stored) {
        status["lastUsed"] = uses.last_used();
    }
    status
}

/// The day upstream writes in `kubernetes.io/legacy-token-last-used` (UTC, `2006-01-02`).
fn day_of(at: jiff::Timestamp) -> String {
    at.strftime("%Y-%m-%d").to_string()
}

/// What a write of a flush's batch carries, to act on its outcome.
/// A write of a flush, planned; IssuedToken objects are built only when their chunk is
/// written.
enum Planned {
    Ready(BatchWrite),
    /// The IssuedToken of the [`Pending::Issued`] beside it.
    NewToken,
    /// The status of the [`Pending::Used`] beside it, merged into the cache's copy.
    UsedToken,
}

enum Pending {
    /// A new IssuedToken, with the uses merged into it when the token was used before its
    /// record was written.
    Issued {
        record: Arc<IssuedRecord>,
        uses: Option<(Arc<TokenCredential>, Uses)>,
    },
    /// A used token's status.
    Used {
        credential: Arc<TokenCredential>,
        uses: Uses,
    },
    /// A ServiceAccountUsage.
    Account {
        namespace: String,
        account: String,
        update: UsageUpdate,
    },
}

impl ApiServer {
    /// Writes what was noted since the last flush in one store batch (a transaction, or one
    /// per [`MAX_FLUSH_BATCH`] writes): the new IssuedTokens, each used token's status merged
    /// into the watch cache's copy, and each ServiceAccountUsage touched. A write that loses
    /// a race with another server's is tried again at the next flush (ServiceAccountUsages at
    /// once, one by one). Then suspicious uses are flagged and the legacy-token label
    /// written. What cannot be written yet is kept for the next flush.
    pub async fn flush_usage(&self) -> FlushReport {
        let mut report = FlushReport::default();
        let now = badge_api::clock::now();
        let tokens = resources::ISSUEDTOKENS;
        let overflowed = self
            .usage
            .issued_dropped
            .swap(0, std::sync::atomic::Ordering::Relaxed);
        if overflowed > 0 {
            tracing::warn!(
                dropped = overflowed,
                "issued tokens went unrecorded: too many waiting for the store"
            );
            report.dropped += overflowed;
        }
        // Updates are made from the cache's copies: the last flush's writes must be in it.
        if let Err(s) = self.registry.sync_own_writes().await {
            tracing::debug!(error = %s.message, "watch cache behind this server's writes");
        }

        let mut writes = Vec::new();
        let mut pending = Vec::new();
        let mut per_account: HashMap<(String, String), UsageUpdate> = HashMap::new();
        // Live tokens the cache does not count yet: those created in this batch.
        let mut unwritten_live: HashMap<(String, String), i64> = HashMap::new();
        let mut new_records: HashMap<(String, String), usize> = HashMap::new();
        for record in self.usage.take_issued() {
            let namespace = record.namespace.to_string();
            let name = record.jti.to_string();
            let account = record.service_account.to_string();
            let issued_at = jiff::Timestamp::from_second(record.issued_at).ok();
            per_account
                .entry((namespace.clone(), account.clone()))
                .or_default()
                .merge(UsageUpdate {
                    last_authenticated: None,
                    last_token_issued: issued_at,
                });
            if self
                .registry
                .get_cached_object(tokens, &namespace, &name)
                .is_some()
            {
                continue;
            }
            let expires = jiff::Timestamp::from_second(record.expires_at).ok();
            if expires.is_none_or(|at| at > now) {
                *unwritten_live.entry((namespace.clone(), account)).or_default() += 1;
            }
            new_records.insert((namespace, name), writes.len());
            writes.push(Planned::NewToken);
            pending.push(Pending::Issued {
                record: Arc::new(record),
                uses: None,
            });
        }

        let mut legacy = Vec::new();
        for (credential, uses) in self.usage.take() {
            let mut last = uses.last_used();
            last["credentialID"] = json!(credential.credential_id());
            per_account
                .entry((credential.namespace.clone(), credential.service_account.clone()))
                .or_default()
                .merge(UsageUpdate {
                    last_authenticated: Some((uses.last, last)),
                    last_token_issued: None,
                });
            let key = (credential.namespace.clone(), credential.record.clone());
            if let Some(&index) = new_records.get(&key)
                && let Pending::Issued { uses: merged, .. } = &mut pending[index]
            {
                *merged = Some((credential, uses));
                continue;
            }
            match self.registry.get_cached_object(tokens, &key.0, &key.1) {
                Some(_) => {
                    writes.push(Planned::UsedToken);
                    pending.push(Pending::Used { credential, uses });
                }
                None => {
                    if credential.legacy {
                        legacy.push((credential.clone(), uses.last));
                    }
                    self.missed(credential, uses, now, &mut report);
                }
            }
        }

        let usages = resources::SERVICEACCOUNTUSAGES;
        for ((namespace, account), update) in per_account {
            // Kept by the watch cache on every record's event: nothing is rescanned.
            let counted = self.registry.cache().live_tokens(&namespace, &account, now);
            let live = counted
                + unwritten_live
                    .get(&(namespace.clone(), account.clone()))
                    .unwrap_or(&0);
            match self.registry.get_cached(usages, &namespace, &account) {
                Some(current) => {
                    let mut object = (*current).clone();
                    object["status"] =
                        badge_registry::identity::merged_usage_status(Some(&current), &update, live);
                    writes.push(Planned::Ready(BatchWrite::Update {
                        resource: usages,
                        subresource: "status",
                        current,
                        object,
                    }));
                }
                None => writes.push(Planned::Ready(BatchWrite::Create {
                    resource: usages,
                    namespace: namespace.clone(),
                    object: json!({
                        "apiVersion": API_VERSION,
                        "kind": "ServiceAccountUsage",
                        "metadata": {"name": account, "namespace": namespace},
                        "status": badge_registry::identity::merged_usage_status(None, &update, live),
                    }),
                })),
            }
            pending.push(Pending::Account {
                namespace,
                account,
                update,
            });
        }

        let mut retry = Vec::new();
        let mut raced_accounts = Vec::new();
        let mut planned = writes.into_iter().zip(pending);
        loop {
            let chunk: Vec<(Planned, Pending)> = planned.by_ref().take(MAX_FLUSH_BATCH).collect();
            if chunk.is_empty() {
                break;
            }
            // The objects of a chunk are built as it is written: a flush of a hundred thousand
            // records never holds them all decoded at once.
            let mut batch = Vec::with_capacity(chunk.len());
            let mut whats = Vec::with_capacity(chunk.len());
            for (plan, what) in chunk {
                match self.materialize(plan, &what) {
                    Some(write) => {
                        batch.push(write);
                        whats.push(what);
                    }
                    // The record went away since it was planned.
                    None => {
                        if let Pending::Used { credential, uses } = what {
                            self.missed(credential, uses, now, &mut report);
                        }
                    }
                }
            }
            for (outcome, what) in self.registry.write_batch(batch).await.into_iter().zip(whats) {
                match what {
                    Pending::Issued { record, uses } => match outcome {
                        Ok(_) => {
                            report.created += 1;
                            report.updated += usize::from(uses.is_some());
                        }
                        // Written meanwhile by a retry of ours that timed out: the uses go to
                        // it at the next flush.
                        Err(s) if s.is_already_exists() => {
                            if let Some((credential, uses)) = uses {
                                self.usage.restore(credential, uses);
                                report.deferred += 1;
                            }
                        }
                        // The namespace went away with its ServiceAccount: nothing to record.
                        Err(s) if s.is_not_found() || s.code == 403 => report.dropped += 1,
                        // Refused for what the record is (too large for the store, invalid):
                        // the next flush would be refused the same, without end.
                        Err(s) if refuses_the_record(&s) => {
                            tracing::error!(
                                namespace = record.namespace,
                                serviceaccount = record.service_account,
                                credential_id = format!("JTI={}", record.jti),
                                code = s.code,
                                error = %s.message,
                                "an issued token cannot be recorded; it is live but not in the inventory"
                            );
                            // Its uses too: they have no record to land in.
                            report.dropped += 1 + usize::from(uses.is_some());
                        }
                        Err(s) => {
                            tracing::warn!(error = %s.message, "recording an issued token failed; retrying at the next flush");
                            retry.push(Arc::unwrap_or_clone(record));
                            if let Some((credential, uses)) = uses {
                                self.usage.restore(credential, uses);
                            }
                        }
                    },
                    Pending::Used { credential, uses } => match outcome {
                        Ok(_) => {
                            report.updated += 1;
                            if credential.legacy {
                                legacy.push((credential, uses.last));
                            }
                        }
                        Err(s) if s.is_not_found() => self.missed(credential, uses, now, &mut report),
                        Err(s) => {
                            if !s.is_conflict() {
                                tracing::warn!(error = %s.message, "recording token usage failed; retrying at the next flush");
                            }
                            self.usage.restore(credential, uses);
                            report.deferred += 1;
                        }
                    },
                    Pending::Account {
                        namespace,
                        account,
                        update,
                    } => match outcome {
                        Ok(_) => {}
                        // Another server wrote it since the cache's copy: merge into theirs.
                        Err(s) if s.is_conflict() || s.is_already_exists() => {
                            raced_accounts.push((namespace, account, update));
                        }
                        Err(s) => {
                            tracing::warn!(namespace, serviceaccount = account, error = %s.message, "recording service account usage failed");
                        }
                    },
                }
            }
        }
        self.usage.restore_issued(retry);

        self.flag_suspicious(tokens).await;
        for (credential, last) in legacy {
            if self.label_legacy_secret(&credential, last).await {
                report.secrets_labelled += 1;
            }
        }
        for (namespace, account, update) in raced_accounts {
            if let Err(s) = badge_registry::identity::record_service_account_usage(
                &self.registry,
                &namespace,
                &account,
                &update,
                now,
            )
            .await
            {
                tracing::warn!(namespace, serviceaccount = account, error = %s.message, "recording service account usage failed");
            }
        }
        report
    }

    /// Uses whose record is not there: kept for the next flush, a few times, unless the
    /// token has expired.
    /// The write a planned one stands for, its object built now.
    fn materialize(&self, plan: Planned, what: &Pending) -> Option<BatchWrite> {
        let tokens = resources::ISSUEDTOKENS;
        match (plan, what) {
            (Planned::Ready(write), _) => Some(write),
            (Planned::NewToken, Pending::Issued { record, uses }) => {
                // A new record has no status to merge into.
                let status = uses.as_ref().map(|(_, uses)| merged_token_status(None, uses));
                Some(BatchWrite::CreateSelfWritten {
                    resource: tokens,
                    namespace: record.namespace.to_string(),
                    object: Arc::new(NewIssuedToken {
                        record: record.clone(),
                        status,
                    }),
                })
            }
            (Planned::UsedToken, Pending::Used { credential, uses }) => {
                let current =
                    self.registry
                        .get_cached_object(tokens, &credential.namespace, &credential.record)?;
                Some(BatchWrite::UpdateStatusSelfWritten {
                    resource: tokens,
                    current,
                    status: Arc::new(UsedTokenStatus(uses.clone())),
                })
            }
            _ => None,
        }
    }

    fn missed(
        &self,
        credential: Arc<TokenCredential>,
        uses: Uses,
        now: jiff::Timestamp,
        report: &mut FlushReport,
    ) {
        let expired = credential.expires_at.is_some_and(|exp| exp < now.as_second());
        if expired || uses.misses >= MAX_MISSES {
            report.dropped += 1;
        } else {
            // Issued by another server whose flush has not landed yet, or a legacy token
            // whose record the controller has yet to write.
            let mut later = uses;
            later.misses += 1;
            self.usage.restore(credential, later);
            report.deferred += 1;
        }
    }

    /// Upstream's day-resolution label on a legacy token's Secret: written when the day of
    /// the last use is later than the one recorded. Whether it was written.
    async fn label_legacy_secret(&self, credential: &TokenCredential, last: jiff::Timestamp) -> bool {
        let secrets = resources::SECRETS;
        let day = day_of(last);
        let needs = |secret: &Value| {
            let pointer = format!(
                "/metadata/labels/{}",
                LEGACY_TOKEN_LAST_USED_LABEL.replace('/', "~1")
            );
            secret
                .pointer(&pointer)
                .and_then(Value::as_str)
                .is_none_or(|recorded| recorded < day.as_str())
        };
        match self
            .registry
            .get_cached(secrets, &credential.namespace, &credential.record)
        {
            Some(secret) if needs(&secret) => {}
            _ => return false,
        }
        let written = self
            .registry
            .update(
                secrets,
                &credential.namespace,
                &credential.record,
                "",
                &WriteOptions::default(),
                |current| {
                    let mut secret = current.clone();
                    if needs(current) {
                        let labels = meta::meta_mut(&mut secret)
                            .entry("labels")
                            .or_insert_with(|| json!({}));
                        if !labels.is_object() {
                            *labels = json!({});
                        }
                        labels[LEGACY_TOKEN_LAST_USED_LABEL] = json!(day);
                    }
                    Ok(secret)
                },
            )
            .await;
        match written {
            Ok(_) => true,
            Err(s) => {
                tracing::warn!(error = %s.message, "failed to update legacy token last-used label");
                false
            }
        }
    }

    /// Checks a pod-bound token's node binding against the watch cache
    /// ([`node_binding_suspicion`]), noting a first suspicion for the next flush. Only
    /// tokens carrying pod and node extras cost two cache lookups.
    pub fn node_binding_check(
        &self,
        credential: &Arc<TokenCredential>,
        user: &badge_auth::UserInfo,
        at: jiff::Timestamp,
    ) -> Option<Suspicion> {
        use badge_token::claims::{NODE_NAME_KEY, POD_NAME_KEY};
        if !self.usage.enabled() || credential.legacy {
            return None;
        }
        let pod_name = user.extra.get(POD_NAME_KEY)?.first()?;
        let node_name = user.extra.get(NODE_NAME_KEY)?.first()?;
        let pod = self
            .registry
            .get_cached_object(resources::PODS, &credential.namespace, pod_name);
        let node = self.registry.get_cached_object(resources::NODES, "", node_name);
        let suspicion = node_binding_suspicion(
            user,
            pod.as_deref()
                .map(|pod| (pod.uid(), pod.node_name().unwrap_or(""))),
            node.as_deref().map(badge_registry::CachedObject::uid),
            at,
        )?;
        let flagged =
            self.registry
                .get_cached(resources::ISSUEDTOKENS, &credential.namespace, &credential.record);
        if flagged.is_none_or(|record| record.pointer("/status/suspicious").is_none()) {
            self.usage.flag(credential, suspicion.clone());
        }
        Some(suspicion)
    }

    /// Writes each suspicion noted since the last flush on its IssuedToken (the first one
    /// stays), and revokes the token when `--revoke-suspicious-tokens` says so. A record not
    /// written yet is tried again at the next flush.
    async fn flag_suspicious(&self, tokens: &'static resources::Resource) {
        let revoke = self.usage.revokes_suspicious();
        for (credential, suspicion) in self.usage.take_suspicious() {
            let (namespace, name) = (&credential.namespace, &credential.record);
            tracing::warn!(
                namespace = %namespace,
                service_account = %credential.service_account,
                credential_id = %credential.credential_id(),
                reason = suspicion.reason,
                message = %suspicion.message,
                revoke,
                "suspicious token use"
            );
            let flagged = self
                .registry
                .update(
                    tokens,
                    namespace,
                    name,
                    "status",
                    &WriteOptions::default(),
                    |current| {
                        let mut object = current.clone();
                        if object.pointer("/status/suspicious").is_none() {
                            if !object.get("status").is_some_and(Value::is_object) {
                                object["status"] = json!({});
                            }
                            object["status"]["suspicious"] = json!({
                                "reason": suspicion.reason,
                                "message": suspicion.message,
                                "time": meta::format_time(suspicion.time),
                            });
                        }
                        Ok(object)
                    },
                )
                .await;
            let revoked = match (&flagged, revoke) {
                (Ok(_), true) => self
                    .registry
                    .update(tokens, namespace, name, "", &WriteOptions::default(), |current| {
                        let mut object = current.clone();
                        object["spec"]["revoked"] = json!(true);
                        Ok(object)
                    })
                    .await
                    .map(|_| ()),
                (Ok(_), false) => Ok(()),
                (Err(s), _) => Err(s.clone()),
            };
            if let Err(s) = revoked {
                let expired = credential
                    .expires_at
                    .is_some_and(|exp| exp < badge_api::clock::now().as_second());
                if !expired {
                    tracing::debug!(error = %s.message, "flagging a suspicious token deferred to the next flush");
                    self.usage.suspicious.lock().push((credential, suspicion));
                }
            }
        }
    }

    /// Flushes usage every `period` until shutdown, then once more; None when tracking is
    /// off.
    pub fn spawn_usage_flusher(self: &Arc<Self>, period: Duration) -> Option<tokio::task::JoinHandle<()>> {
        if !self.usage.enabled() {
            return None;
        }
        let api = self.clone();
        let mut shutdown = self.shutdown.clone();
        Some(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    _ = shutdown.changed() => break,
                }
                let report = api.flush_usage().await;
                if report != FlushReport::default() {
                    tracing::debug!(?report, "token usage flushed");
                }
            }
            api.flush_usage().await;
        }))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn credential(record: &str) -> Arc<TokenCredential> {
        Arc::new(TokenCredential {
            namespace: "demo".into(),
            service_account: "app".into(),
            record: record.into(),
            legacy: false,
            expires_at: None,
        })
    }

    fn at(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    fn pod_bound_record() -> IssuedRecord {
        IssuedRecord::new(
            "workloads",
            "web-frontend",
            "2a4b6c8d-0e1f-4a3b-9c5d-7e9f1a3b5c7d",
            "6f1c2a9e-3b7d-4c1e-9a52-000000000001",
            "Xq3v9k2LrT8wYb5nJm1pQs7uZc4eHg6aDf0iKo2lNr8",
            &["https://kubernetes.default.svc.cluster.local".to_string()],
            Some((
                "Pod",
                "web-frontend-7d9c8b6f5-x2k4q",
                "9b8a7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d",
            )),
            "system:node:worker-17",
            1_796_454_000,
            1_796_457_600,
        )
    }

    #[test]
    fn a_waiting_record_becomes_the_issued_token_object() {
        assert_eq!(
            pod_bound_record().to_object(),
            json!({
                "apiVersion": "identity.badge.dev/v1",
                "kind": "IssuedToken",
                "metadata": {
                    "name": "6f1c2a9e-3b7d-4c1e-9a52-000000000001",
                    "namespace": "workloads",
                    "labels": {"identity.badge.dev/service-account": "web-frontend",
                        "identity.badge.dev/token-kind": "bound"},
                },
                "spec": {
                    "serviceAccountName": "web-frontend",
                    "serviceAccountUID": "2a4b6c8d-0e1f-4a3b-9c5d-7e9f1a3b5c7d",
                    "audiences": ["https://kubernetes.default.svc.cluster.local"],
                    "keyID": "Xq3v9k2LrT8wYb5nJm1pQs7uZc4eHg6aDf0iKo2lNr8",
                    "requester": {"username": "system:node:worker-17"},
                    "boundObjectRef": {"kind": "Pod", "name": "web-frontend-7d9c8b6f5-x2k4q",
                        "uid": "9b8a7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"},
                    "issuedAt": "2026-12-05T07:00:00Z",
                    "expiresAt": "2026-12-05T08:00:00Z",
                },
            })
        );
        let unbound = IssuedRecord::new("ns", "sa", "u", "j", "k", &[], None, "admin", 0, 60);
        assert!(unbound.to_object()["spec"].get("boundObjectRef").is_none());
    }

    /// What the store kept for a new record before it was written straight to bytes: its
    /// object built, given the server's metadata and its uses, and encoded.
    fn stored_by_value(record: &IssuedRecord, server: &ServerMetadata<'_>, uses: Option<&Uses>) -> Vec<u8> {
        let mut object = record.to_object();
        if let Some(uses) = uses {
            object["status"] = merged_token_status(object.get("status"), uses);
        }
        meta::set(&mut object, "namespace", server.namespace);
        meta::set(&mut object, "uid", server.uid);
        meta::set(&mut object, "creationTimestamp", server.creation_timestamp);
        serde_json::to_vec(&object).unwrap()
    }

    #[test]
    fn a_record_writes_the_json_its_object_was_stored_as() {
        let audiences = [
            "https://kubernetes.default.svc".to_string(),
            "vault".into(),
            "a\"b\\c\u{1}\u{e9}\n".into(),
        ];
        let odd = "we\"ird\\na\tme\u{7f}\u{2028}\u{1f600}";
        let records = [
            pod_bound_record(),
            IssuedRecord::new("ns", "sa", "u", "j", "k", &[], None, "admin", 0, 60),
            IssuedRecord::new(
                odd,
                odd,
                odd,
                odd,
                odd,
                &audiences,
                Some((odd, odd, odd)),
                odd,
                -1,
                i64::MAX,
            ),
            IssuedRecord::new(
                "demo",
                "app",
                "uid",
                "jti",
                "kid",
                &audiences[..2],
                None,
                "system:admin",
                1_796_454_000,
                i64::MIN,
            ),
            // A name too long for a label value: the record goes without the label.
            IssuedRecord::new("demo", &"a".repeat(64), "u", "j", "k", &[], None, "admin", 0, 60),
            IssuedRecord::new("demo", &"a".repeat(63), "u", "j", "k", &[], None, "admin", 0, 60),
        ];
        let used = Uses {
            count: 3,
            last: at("2026-12-05T07:30:00.123456Z"),
            source: Some("10.0.0.7".parse().unwrap()),
            user_agent: "kubectl/v1.34 \"quoted\"".into(),
            misses: 0,
        };
        let servers = [
            ServerMetadata {
                namespace: "workloads",
                uid: "0d6e3c1a-1b2c-4d5e-8f90-123456789abc",
                creation_timestamp: "2026-12-05T07:00:01Z",
            },
            ServerMetadata {
                namespace: odd,
                uid: "",
                creation_timestamp: odd,
            },
        ];
        for record in &records {
            for server in &servers {
                for uses in [None, Some(&used)] {
                    let status = uses.map(|uses| merged_token_status(None, uses));
                    let token = NewIssuedToken {
                        record: Arc::new(record.clone()),
                        status,
                    };
                    let mut written = Vec::new();
                    token.write_stored(server, &mut written);
                    assert_eq!(
                        String::from_utf8(written).unwrap(),
                        String::from_utf8(stored_by_value(record, server, uses)).unwrap(),
                        "{record:?}"
                    );
                }
            }
            let mut metadata = record.to_object();
            metadata
                .as_object_mut()
                .unwrap()
                .retain(|key, _| key == "metadata");
            let token = NewIssuedToken {
                record: Arc::new(record.clone()),
                status: None,
            };
            assert_eq!(token.metadata(), metadata);
        }
    }

    #[test]
    fn a_waiting_record_takes_a_fraction_of_a_kibibyte() {
        // A hundred thousand may wait for one flush; as a decoded object the same record
        // took over 2 KiB.
        let bytes = pod_bound_record().heap_bytes();
        assert!(bytes < 512, "{bytes} B");
    }

    #[test]
    fn two_source_addresses_within_the_window_are_suspicious() {
        let recorder = UsageRecorder::new(true).with_suspicion(SuspicionPolicy {
            window: Duration::from_secs(600),
            revoke: true,
        });
        let token = credential("jti-1");
        let (a, b): (IpAddr, IpAddr) = ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
        assert_eq!(
            recorder.record(&token, at("2026-01-01T00:00:00Z"), Some(a), "k"),
            None
        );
        assert_eq!(
            recorder.record(&token, at("2026-01-01T00:01:00Z"), Some(a), "k"),
            None
        );
        // TokenReview uses carry no address and never raise one.
        assert_eq!(
            recorder.record(&token, at("2026-01-01T00:01:30Z"), None, "k"),
            None
        );
        let flagged = recorder
            .record(&token, at("2026-01-01T00:02:00Z"), Some(b), "k")
            .unwrap();
        assert_eq!(flagged.reason, MULTIPLE_SOURCES);
        assert_eq!(flagged.message, "used from 127.0.0.1 and 127.0.0.2 within 600s");
        // Past the window, a move is not suspicious.
        assert_eq!(
            recorder.record(&token, at("2026-01-01T01:00:00Z"), Some(a), "k"),
            None
        );
        // Another token's address says nothing about this one.
        assert_eq!(
            recorder.record(&credential("jti-2"), at("2026-01-01T01:00:01Z"), Some(b), "k"),
            None
        );
        assert_eq!(recorder.take_suspicious().len(), 1);
        assert!(recorder.revokes_suspicious());
    }

    #[test]
    fn a_zero_window_watches_nothing() {
        let recorder = UsageRecorder::new(true).with_suspicion(SuspicionPolicy {
            window: Duration::ZERO,
            revoke: false,
        });
        let token = credential("jti-1");
        for address in ["127.0.0.1", "127.0.0.2"] {
            assert_eq!(
                recorder.record(
                    &token,
                    at("2026-01-01T00:00:00Z"),
                    Some(address.parse().unwrap()),
                    "k"
                ),
                None
            );
        }
    }

    #[test]
    fn uses_are_counted_and_the_latest_kept() {
        let recorder = UsageRecorder::new(true);
        let (a, b) = (credential("a"), credential("b"));
        let here: IpAddr = "10.0.0.1".parse().unwrap();
        recorder.record(&a, at("2026-01-01T00:00:02Z"), Some(here), "kubectl");
        // Out of order: an earlier use counts but does not replace the latest.
        recorder.record(&a, at("2026-01-01T00:00:01Z"), None, "curl");
        recorder.record(&b, at("2026-01-01T00:00:03Z"), None, "x".repeat(1000).as_str());
        let mut taken = recorder.take();
        taken.sort_by(|x, y| x.0.record.cmp(&y.0.record));
        assert_eq!(taken.len(), 2);
        assert_eq!(taken[0].1.count, 2);
        assert_eq!(taken[0].1.last, at("2026-01-01T00:00:02Z"));
        assert_eq!(taken[0].1.source, Some(here));
        assert_eq!(taken[0].1.user_agent, "kubectl");
        assert_eq!(taken[1].1.user_agent.len(), MAX_USER_AGENT);
        assert!(recorder.take().is_empty(), "a take empties the recorder");

        let disabled = UsageRecorder::new(false);
        disabled.record(&a, at("2026-01-01T00:00:02Z"), None, "");
        assert!(disabled.take().is_empty());
    }

    #[test]
    fn restored_uses_merge_with_new_ones() {
        let recorder = UsageRecorder::new(true);
        let a = credential("a");
        recorder.record(&a, at("2026-01-01T00:00:05Z"), None, "new");
        let old = Uses {
            count: 3,
            last: at("2026-01-01T00:00:01Z"),
            source: None,
            user_agent: "old".into(),
            misses: 1,
        };
        recorder.restore(a.clone(), old);
        let taken = recorder.take();
        assert_eq!(taken[0].1.count, 4);
        assert_eq!(taken[0].1.user_agent, "new");
        assert_eq!(taken[0].1.misses, 1);
    }

    #[test]
    fn servers_sharing_a_record_add_counts_and_keep_the_latest_use() {
        let uses = |count, last: &str, agent: &str| Uses {
            count,
            last: at(last),
            source: None,
            user_agent: agent.into(),
            misses: 0,
        };
        // The second server flushes after the first, with an older last use.
        let first = merged_token_status(Some(&json!({})), &uses(2, "2026-01-01T00:00:09Z", "one"));
        let second = merged_token_status(Some(&first), &uses(5, "2026-01-01T00:00:04Z", "two"));
        assert_eq!(second["useCount"], 7);
        assert_eq!(second["lastUsed"]["time"], "2026-01-01T00:00:09Z");
        assert_eq!(second["lastUsed"]["userAgent"], "one");
        // And the other way round.
        let third = merged_token_status(Some(&second), &uses(1, "2026-01-01T00:00:10Z", "two"));
        assert_eq!(third["useCount"], 8);
        assert_eq!(third["lastUsed"]["userAgent"], "two");
    }

    #[test]
    fn legacy_days_are_utc_dates() {
        assert_eq!(day_of(at("2026-03-04T23:59:59Z")), "2026-03-04");
    }

    #[test]
    fn a_pod_bound_token_is_suspicious_once_its_node_binding_no_longer_holds() {
        use badge_token::claims::{NODE_NAME_KEY, NODE_UID_KEY, POD_NAME_KEY, POD_UID_KEY};
        let at = at("2026-01-01T00:00:00Z");
        let mut user = badge_auth::UserInfo::default();
        for (key, value) in [
            (POD_NAME_KEY, "web"),
            (POD_UID_KEY, "p1"),
            (NODE_NAME_KEY, "n1"),
            (NODE_UID_KEY, "u1"),
        ] {
            user.extra.insert(key.into(), vec![value.into()]);
        }
        let pod_on = |node: &'static str| ("p1", node);
        let node = |uid: &'static str| uid;
        let check =
            |pod: Option<(&str, &str)>, node: Option<&str>| node_binding_suspicion(&user, pod, node, at);
        assert_eq!(check(Some(pod_on("n1")), Some(node("u1"))), None);
        // Gone pod or node: the authenticator's concern, not a sign of theft.
        assert_eq!(check(None, None), None);
        let moved = check(Some(pod_on("n2")), Some(node("u1"))).unwrap();
        assert_eq!(moved.reason, NODE_CHANGED);
        assert!(moved.message.contains("now on node n2"), "{}", moved.message);
        let replaced = check(Some(pod_on("n1")), Some(node("u2"))).unwrap();
        assert!(replaced.message.contains("was replaced"), "{}", replaced.message);
        // Another pod of the same name (a new uid) says nothing about this token.
        let other = ("p2", "n2");
        assert_eq!(check(Some(other), Some(node("u1"))), None);
        // Without node information, nothing to compare.
        let mut no_node = user.clone();
        no_node.extra.remove(NODE_NAME_KEY);
        assert_eq!(
            node_binding_suspicion(&no_node, Some(pod_on("n2")), Some(node("u2")), at),
            None
        );
    }
}
