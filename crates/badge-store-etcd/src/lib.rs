//! badge's [`Store`] over a real etcd cluster, through etcd's v3 gRPC API — the same
//! contract kube-apiserver's storage layer uses: one key per object, writes as
//! transactions comparing the key's mod revision, watches that resume from a revision.
//!
//! Keys: store keys under `/registry/` keep kube-apiserver's layout below `--etcd-prefix`
//! (`/registry/secrets/ns/name` → `{prefix}/secrets/ns/name`); badge's own keys outside
//! the API (`/badge/...`) go beside it, to `{prefix}-badge/...`, so one prefix range holds
//! everything a badge deployment stores and nothing of another's.
//!
//! Failures: every request carries etcd's `hasleader` requirement, so a member that has
//! lost its leader (the cluster lost quorum, or this member is cut off) refuses at once
//! instead of waiting out the election; the request then goes to the next member. A request
//! that never reached a member is retried on the others; a write whose fate is unknown
//! (sent, then the connection broke or the deadline passed) is reported as
//! [`Error::Timeout`], never retried, because a retried compare-and-swap that had in fact
//! committed would report a conflict that did not happen.
//!
//! A member can take a request and then neither answer nor refuse it: it lost or changed
//! its leader after taking it (etcd only gives up on the proposal after its own request
//! timeout), or the process is stopped. A request unanswered for a moment is therefore
//! checked on: the same member is asked for its status, and when it reports no leader or
//! another leader, or does not answer, a read moves on to the next member and a write
//! ends at once as [`Error::Timeout`]. Open watches check on their member the same way,
//! and resume on the next one.

#![warn(missing_docs)]

mod proto;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use badge_store::{
    BatchOp, Error, Event, EventKind, KeyValue, ListOptions, ListResult, Result, Revision, Store, WatchStream,
};
use bytes::Bytes;
use futures::StreamExt;
use http::uri::PathAndQuery;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use proto::{compare, request_op, response_op, watch_request};

/// Paths of the etcd v3 gRPC methods badge calls.
const RANGE: &str = "/etcdserverpb.KV/Range";
const TXN: &str = "/etcdserverpb.KV/Txn";
const COMPACT: &str = "/etcdserverpb.KV/Compact";
const WATCH: &str = "/etcdserverpb.Watch/Watch";
const STATUS: &str = "/etcdserverpb.Maintenance/Status";
const ALARM: &str = "/etcdserverpb.Maintenance/Alarm";

/// The most ops one transaction of a batch holds: etcd's default `--max-txn-ops`.
const MAX_TXN_OPS: usize = 128;
/// The most key and value bytes one transaction of a batch holds, below etcd's default
/// `--max-request-bytes` (1.5 MiB) with room for the request's framing.
const MAX_TXN_BYTES: usize = 1024 * 1024;
/// Keys per request when a list asks for everything: bounds each response's size.
const LIST_PAGE: i64 = 10_000;
/// The largest response badge accepts (a page of large objects, a watch batch).
const MAX_MESSAGE: usize = 256 * 1024 * 1024;
/// Delay between watch reconnection attempts, doubling up to the maximum.
const WATCH_RETRY_MIN: Duration = Duration::from_millis(50);
const WATCH_RETRY_MAX: Duration = Duration::from_secs(2);
/// How long a request keeps going round members that refuse it because they have no
/// leader or cannot be reached: long enough for an election after a member dies, short
/// enough that a cluster without quorum fails writes fast (503).
const NO_LEADER_BUDGET: Duration = Duration::from_secs(2);
/// How long a request waits for its member before checking that the member still answers
/// and has a leader, and between checks.
const STALL_CHECK_INTERVAL: Duration = Duration::from_millis(500);
/// How long that check waits for the member's status: a live member answers at once, even
/// under load; a busy machine must not make a healthy member look stopped.
const STALL_CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// How often an open watch checks on its member: a stopped member's watch stream is as
/// silent as a quiet one, and a watch is long-lived, so it is checked less often.
const WATCH_STALL_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// How to reach the cluster.
#[derive(Clone, Debug)]
pub struct EtcdConfig {
    /// Client URLs of the members, `http://` or `https://`.
    pub endpoints: Vec<String>,
    /// The etcd key every API object lives under (kube-apiserver's `--etcd-prefix`).
    pub prefix: String,
    /// PEM of the CA that signed the members' serving certificates (`https` endpoints).
    pub ca_pem: Option<Vec<u8>>,
    /// PEM client certificate and key, for members that require client authentication.
    pub client_cert_pem: Option<Vec<u8>>,
    /// PEM private key matching `client_cert_pem`.
    pub client_key_pem: Option<Vec<u8>>,
    /// How long one store operation may take, across every member it tries.
    pub request_timeout: Duration,
}

impl EtcdConfig {
    /// Endpoints under the default `/registry` prefix, plaintext, five-second requests.
    pub fn new(endpoints: Vec<String>) -> EtcdConfig {
        EtcdConfig {
            endpoints,
            prefix: "/registry".into(),
            ca_pem: None,
            client_cert_pem: None,
            client_key_pem: None,
            request_timeout: Duration::from_secs(5),
        }
    }
}

/// Why the store could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("no etcd endpoints given")]
    /// No `--etcd-servers` were given.
    NoEndpoints,
    #[error("invalid etcd endpoint {0:?}: {1}")]
    /// An endpoint that is not an `http` or `https` URL, and why.
    Endpoint(String, String),
    #[error("--etcd-prefix must start with '/', not {0:?}")]
    /// A prefix that is not absolute.
    Prefix(String),
    #[error("--etcd-certfile and --etcd-keyfile go together")]
    /// A client certificate without its key, or a key without its certificate.
    HalfIdentity,
}

/// The store over etcd. Cheap to clone; clones share connections.
#[derive(Clone)]
pub struct EtcdStore {
    inner: Arc<Inner>,
}

struct Member {
    url: String,
    channel: Channel,
}

struct Inner {
    members: Vec<Member>,
    /// The member the last successful request went to: requests stick to a working one.
    preferred: AtomicUsize,
    keys: KeyMap,
    timeout: Duration,
}

impl EtcdStore {
    /// Sets up connections to every member. Connecting is lazy: a member that is down now
    /// is tried again on later requests.
    pub fn new(config: EtcdConfig) -> Result<EtcdStore, ConfigError> {
        if config.endpoints.is_empty() {
            return Err(ConfigError::NoEndpoints);
        }
        let keys = KeyMap::new(&config.prefix)?;
        let tls = match (&config.client_cert_pem, &config.client_key_pem) {
            (Some(_), None) | (None, Some(_)) => return Err(ConfigError::HalfIdentity),
            _ => {
                let mut tls = ClientTlsConfig::new();
                if let Some(ca) = &config.ca_pem {
                    tls = tls.ca_certificate(Certificate::from_pem(ca));
                }
                if let (Some(cert), Some(key)) = (&config.client_cert_pem, &config.client_key_pem) {
                    tls = tls.identity(Identity::from_pem(cert, key));
                }
                tls
            }
        };
        let mut members = Vec::new();
        for url in &config.endpoints {
            let url = url.trim().to_string();
            let mut endpoint = Endpoint::from_shared(url.clone())
                .map_err(|e| ConfigError::Endpoint(url.clone(), e.to_string()))?
                .connect_timeout(Duration::from_secs(2))
                .tcp_nodelay(true)
                .tcp_keepalive(Some(Duration::from_secs(30)))
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(5))
                .keep_alive_while_idle(true);
            if url.starts_with("https://") {
                endpoint = endpoint
                    .tls_config(tls.clone())
                    .map_err(|e| ConfigError::Endpoint(url.clone(), e.to_string()))?;
            } else if !url.starts_with("http://") {
                return Err(ConfigError::Endpoint(
                    url,
                    "the scheme must be http or https".into(),
                ));
            }
            members.push(Member {
                url,
                channel: endpoint.connect_lazy(),
            });
        }
        Ok(EtcdStore {
            inner: Arc::new(Inner {
                members,
                preferred: AtomicUsize::new(0),
                keys,
                timeout: config.request_timeout,
            }),
        })
    }

    /// Waits until some member answers a status request, or `timeout` passes.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let attempt: Result<proto::StatusResponse> =
                self.inner.call(STATUS, proto::StatusRequest {}, Call::Read).await;
            match attempt {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Puts `value` at `key` without comparing anything, for copying data in
    /// (`badge migrate`): the key's revisions become etcd's.
    pub async fn put_unconditionally(&self, key: &str, value: Bytes) -> Result<Revision> {
        let request = proto::TxnRequest {
            compare: vec![],
            success: vec![put_op(self.inner.keys.etcd_key(key), value)],
            failure: vec![],
        };
        let response: proto::TxnResponse = self.inner.call(TXN, request, Call::Write).await?;
        Ok(header_revision(&response.header))
    }

    /// Compacts history every `interval` to the revision seen one interval earlier, so
    /// watches and reads may lag by up to one interval. Several servers doing this at once
    /// is harmless: compacting at or below the compacted revision is a no-op.
    pub fn spawn_compactor(&self, interval: Duration) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        tokio::spawn(async move {
            let mut previous: Option<Revision> = None;
            loop {
                tokio::time::sleep(interval).await;
                if let Some(revision) = previous
                    && let Err(e) = store.compact(revision).await
                {
                    tracing::warn!(error = %e, revision, "etcd compaction failed");
                }
                previous = store.current_revision().await.ok();
            }
        })
    }

    async fn range(&self, request: proto::RangeRequest) -> Result<proto::RangeResponse> {
        let requested = request.revision;
        match self.inner.call(RANGE, request, Call::Read).await {
            Err(Error::Compacted { .. }) => Err(Error::Compacted {
                requested,
                compacted: self.compacted_revision().await?,
            }),
            Err(Error::FutureRevision { .. }) => Err(Error::FutureRevision {
                requested,
                current: self.current_revision().await?,
            }),
            other => other,
        }
    }

    /// Whether reads at `revision` still work (it is not below the compacted revision).
    async fn readable_at(&self, revision: Revision) -> Result<bool> {
        let request = proto::RangeRequest {
            key: self.inner.keys.prefix_key(),
            revision,
            count_only: true,
            ..Default::default()
        };
        match self
            .inner
            .call::<_, proto::RangeResponse>(RANGE, request, Call::Read)
            .await
        {
            Ok(_) => Ok(true),
            Err(Error::Compacted { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        compare: Vec<proto::Compare>,
        success: proto::RequestOp,
    ) -> Result<proto::TxnResponse> {
        let etcd_key = self.inner.keys.etcd_key(key);
        let request = proto::TxnRequest {
            compare,
            success: vec![success],
            failure: vec![proto::RequestOp {
                request: Some(request_op::Request::Range(proto::RangeRequest {
                    key: etcd_key,
                    ..Default::default()
                })),
            }],
        };
        self.inner.call(TXN, request, Call::Write).await
    }

    /// Where [`Store::barrier`] writes: outside `/registry/`, so no API object.
    pub const BARRIER_KEY: &'static str = "/badge/revision-barrier";

    /// Applies `operation` if `key` exists at mod revision `expected`; otherwise
    /// [`Error::Conflict`] with the key's current value.
    async fn compare_mod_and(
        &self,
        key: &str,
        expected: Revision,
        operation: proto::RequestOp,
    ) -> Result<Revision> {
        let compare = compare_mod(self.inner.keys.etcd_key(key), expected);
        let response = self.compare_and_swap(key, compare, operation).await?;
        if response.succeeded {
            Ok(header_revision(&response.header))
        } else {
            Err(Error::Conflict {
                key: key.to_string(),
                current: self.current_from_failure(&response),
            })
        }
    }

    /// Writes one chunk of a batch as one transaction comparing every key's create or mod
    /// revision. When a compare fails (or the whole is too large) nothing was written, and
    /// the ops go one by one so that each gets its own outcome and the others still land.
    async fn write_chunk(&self, ops: Vec<BatchOp>) -> Vec<Result<Revision>> {
        if ops.len() > 1 {
            let keys = &self.inner.keys;
            let mut compare = Vec::with_capacity(ops.len());
            let mut success = Vec::with_capacity(ops.len());
            for op in &ops {
                let key = keys.etcd_key(op.key());
                let (target, target_union) = match op {
                    BatchOp::Create { .. } => (proto::TARGET_CREATE, compare::TargetUnion::CreateRevision(0)),
                    BatchOp::Update { expected, .. } => {
                        (proto::TARGET_MOD, compare::TargetUnion::ModRevision(*expected))
                    }
                };
                compare.push(proto::Compare {
                    result: proto::COMPARE_EQUAL,
                    target,
                    key: key.clone(),
                    target_union: Some(target_union),
                });
                success.push(put_op(key, op.value().clone()));
            }
            let request = proto::TxnRequest {
                compare,
                success,
                failure: vec![],
            };
            match self
                .inner
                .call::<_, proto::TxnResponse>(TXN, request, Call::Write)
                .await
            {
                Ok(response) if response.succeeded => {
                    return vec![Ok(header_revision(&response.header)); ops.len()];
                }
                Ok(_) | Err(Error::TooLarge) => {}
                Err(e) => return vec![Err(e); ops.len()],
            }
        }
        let mut outcomes = Vec::with_capacity(ops.len());
        for op in ops {
            outcomes.push(match op {
                BatchOp::Create { key, value } => self.create(&key, value).await,
                BatchOp::Update { key, value, expected } => self.update(&key, value, expected).await,
            });
        }
        outcomes
    }

    /// The key's current value from a failed transaction's read.
    fn current_from_failure(&self, response: &proto::TxnResponse) -> Option<Box<KeyValue>> {
        let kv = response.responses.first().and_then(|op| match &op.response {
            Some(response_op::Response::Range(range)) => range.kvs.first(),
            _ => None,
        })?;
        self.inner.keys.key_value(kv).map(Box::new)
    }
}

/// Splits a batch into what one transaction holds (see [`EtcdStore::write_batch`]). An
/// update expecting revision 0 or below is a chunk of its own: etcd compares an absent key's
/// mod revision as 0, so only the single write's existence check refuses it right.
fn chunks(ops: Vec<BatchOp>) -> Vec<Vec<BatchOp>> {
    let mut chunks: Vec<Vec<BatchOp>> = Vec::new();
    let mut current: Vec<BatchOp> = Vec::new();
    let mut bytes = 0;
    let mut keys = std::collections::HashSet::new();
    for op in ops {
        let size = op.key().len() + op.value().len();
        let alone = matches!(op, BatchOp::Update { expected, .. } if expected <= 0);
        let full = current.len() >= MAX_TXN_OPS
            || (!current.is_empty() && bytes + size > MAX_TXN_BYTES)
            || keys.contains(op.key());
        if full || alone {
            chunks.extend((!current.is_empty()).then(|| std::mem::take(&mut current)));
            bytes = 0;
            keys.clear();
        }
        if alone {
            chunks.push(vec![op]);
            continue;
        }
        bytes += size;
        keys.insert(op.key().to_string());
        current.push(op);
    }
    chunks.extend((!current.is_empty()).then_some(current));
    chunks
}

fn header_revision(header: &Option<proto::ResponseHeader>) -> Revision {
    header.as_ref().map_or(0, |h| h.revision)
}

fn put_op(key: Bytes, value: Bytes) -> proto::RequestOp {
    proto::RequestOp {
        request: Some(request_op::Request::Put(proto::PutRequest { key, value })),
    }
}

/// The key exists and was last modified at `revision` (etcd compares an absent key's mod
/// revision as 0, hence the existence check).
fn compare_mod(key: Bytes, revision: Revision) -> Vec<proto::Compare> {
    vec![
        proto::Compare {
            result: proto::COMPARE_EQUAL,
            target: proto::TARGET_MOD,
            key: key.clone(),
            target_union: Some(compare::TargetUnion::ModRevision(revision)),
        },
        proto::Compare {
            result: proto::COMPARE_NOT_EQUAL,
            target: proto::TARGET_CREATE,
            key,
            target_union: Some(compare::TargetUnion::CreateRevision(0)),
        },
    ]
}

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<(Option<KeyValue>, Revision)> {
        let response = self
            .range(proto::RangeRequest {
                key: self.inner.keys.etcd_key(key),
                ..Default::default()
            })
            .await?;
        let kv = response.kvs.first().and_then(|kv| self.inner.keys.key_value(kv));
        Ok((kv, header_revision(&response.header)))
    }

    async fn list(&self, prefix: &str, options: ListOptions) -> Result<ListResult> {
        let keys = &self.inner.keys;
        let (start, end) = keys.range(prefix);
        let mut from = match &options.start_after {
            Some(after) => {
                let mut key = keys.etcd_key(after).to_vec();
                key.push(0);
                Bytes::from(key).max(start)
            }
            None => start,
        };
        let mut revision = options.revision.unwrap_or(0);
        let mut items = Vec::new();
        let remaining;
        loop {
            let want = if options.limit == 0 {
                LIST_PAGE
            } else {
                (options.limit - items.len()) as i64
            };
            let response = self
                .range(proto::RangeRequest {
                    key: from.clone(),
                    range_end: end.clone(),
                    limit: want,
                    revision,
                    ..Default::default()
                })
                .await?;
            if revision == 0 {
                // Later pages read at the first page's revision: one consistent snapshot.
                revision = header_revision(&response.header);
            }
            let got = response.kvs.len() as i64;
            let last = response.kvs.last().map(|kv| kv.key.clone());
            items.extend(
                response
                    .kvs
                    .iter()
                    .filter_map(|kv| keys.key_value(kv))
                    .filter(|kv| kv.key.starts_with(prefix)),
            );
            let rest = (response.count - got).max(0) as u64;
            match last {
                Some(last) if response.more && rest > 0 => {
                    if options.limit != 0 && items.len() >= options.limit {
                        remaining = rest;
                        break;
                    }
                    let mut next = last.to_vec();
                    next.push(0);
                    from = Bytes::from(next);
                }
                _ => {
                    remaining = 0;
                    break;
                }
            }
        }
        Ok(ListResult {
            items,
            revision,
            remaining,
        })
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<Revision> {
        let etcd_key = self.inner.keys.etcd_key(key);
        let compare = proto::Compare {
            result: proto::COMPARE_EQUAL,
            target: proto::TARGET_CREATE,
            key: etcd_key.clone(),
            target_union: Some(compare::TargetUnion::CreateRevision(0)),
        };
        let response = self
            .compare_and_swap(key, vec![compare], put_op(etcd_key, value))
            .await?;
        if response.succeeded {
            Ok(header_revision(&response.header))
        } else {
            Err(Error::AlreadyExists { key: key.to_string() })
        }
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<Revision> {
        let etcd_key = self.inner.keys.etcd_key(key);
        self.compare_mod_and(key, expected, put_op(etcd_key, value)).await
    }

    async fn delete(&self, key: &str, expected: Revision) -> Result<Revision> {
        let etcd_key = self.inner.keys.etcd_key(key);
        let delete = proto::RequestOp {
            request: Some(request_op::Request::DeleteRange(proto::DeleteRangeRequest {
                key: etcd_key,
                range_end: Bytes::new(),
            })),
        };
        self.compare_mod_and(key, expected, delete).await
    }

    /// One transaction per chunk of at most [`MAX_TXN_OPS`] ops and [`MAX_TXN_BYTES`]
    /// bytes, each key once (etcd refuses a transaction that puts a key twice). Every op of a
    /// chunk that lands shares the chunk's revision, as etcd gives one per transaction.
    async fn write_batch(&self, ops: Vec<BatchOp>) -> Vec<Result<Revision>> {
        let total = ops.len();
        let mut outcomes = Vec::with_capacity(total);
        let mut chunks = chunks(ops).into_iter();
        for chunk in chunks.by_ref() {
            let written = self.write_chunk(chunk).await;
            let failed = written.iter().find_map(|outcome| match outcome {
                Err(e @ (Error::Unavailable(_) | Error::Timeout(_) | Error::NoSpace)) => Some(e.clone()),
                _ => None,
            });
            outcomes.extend(written);
            if let Some(failed) = failed {
                // The cluster cannot take writes now: the rest are not sent, and say why.
                let untried = match failed {
                    Error::Timeout(m) => Error::Unavailable(m),
                    other => other,
                };
                outcomes.resize(total, Err(untried));
                break;
            }
        }
        outcomes
    }

    async fn current_revision(&self) -> Result<Revision> {
        let request = proto::RangeRequest {
            key: self.inner.keys.prefix_key(),
            count_only: true,
            ..Default::default()
        };
        let response: proto::RangeResponse = self.inner.call(RANGE, request, Call::Read).await?;
        Ok(header_revision(&response.header))
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        let (sender, receiver) = tokio::sync::mpsc::channel(64);
        let watcher = Watcher {
            inner: self.inner.clone(),
            prefix: prefix.to_string(),
            next: after + 1,
            sender,
        };
        tokio::spawn(watcher.run());
        Ok(futures::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|batch| (batch, receiver))
        })
        .boxed())
    }

    /// etcd's revision counts every prefix's writes; the marker's revision is one this
    /// store's watchers see.
    async fn barrier(&self) -> Result<Option<Revision>> {
        self.put_unconditionally(Self::BARRIER_KEY, Bytes::new())
            .await
            .map(Some)
    }

    async fn alarms(&self) -> Result<Vec<String>> {
        let response: proto::AlarmResponse = self
            .inner
            .call(ALARM, proto::AlarmRequest::default(), Call::Read)
            .await?;
        let mut names: Vec<String> = response
            .alarms
            .iter()
            .filter_map(|member| match member.alarm {
                0 => None,
                1 => Some("NOSPACE".to_string()),
                2 => Some("CORRUPT".to_string()),
                other => Some(format!("alarm {other}")),
            })
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        let current = self.current_revision().await?;
        if revision > current {
            return Err(Error::FutureRevision {
                requested: revision,
                current,
            });
        }
        let request = proto::CompactionRequest {
            revision,
            physical: false,
        };
        match self
            .inner
            .call::<_, proto::CompactionResponse>(COMPACT, request, Call::Write)
            .await
        {
            Ok(_) | Err(Error::Compacted { .. }) => Ok(()),
            Err(Error::FutureRevision { .. }) => Err(Error::FutureRevision {
                requested: revision,
                current: self.current_revision().await?,
            }),
            Err(e) => Err(e),
        }
    }

    /// etcd does not report its compacted revision directly; reads below it fail and reads
    /// at it succeed, so a binary search over revisions finds it.
    async fn compacted_revision(&self) -> Result<Revision> {
        if self.readable_at(1).await? {
            return Ok(0);
        }
        let (mut unreadable, mut readable) = (1, self.current_revision().await?);
        while readable - unreadable > 1 {
            let middle = unreadable + (readable - unreadable) / 2;
            if self.readable_at(middle).await? {
                readable = middle;
            } else {
                unreadable = middle;
            }
        }
        Ok(readable)
    }
}

/// Whether a request may be retried, and how a failure is reported.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Call {
    /// Reads and anything else safe to repeat.
    Read,
    /// Writes: retried only when the member certainly did not apply them.
    Write,
}

/// What a failed attempt means.
enum Failure {
    /// The member never took the request (unreachable, or without a leader): try another.
    NotTaken(String),
    /// The request may have been applied; only safe requests may be repeated.
    Unknown(String),
    /// A definite answer.
    Final(Error),
}

impl Inner {
    async fn call<Req, Resp>(&self, path: &'static str, request: Req, call: Call) -> Result<Resp>
    where
        Req: prost::Message + Clone + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let started = Instant::now();
        let deadline = started + self.timeout;
        let count = self.members.len();
        let first = self.preferred.load(Ordering::Relaxed);
        let mut last_failure = String::from("no member answered");
        let mut attempt = 0usize;
        let mut stalls = 0usize;
        let mut refusing_since = started;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(match call {
                    Call::Read => Error::Unavailable(last_failure),
                    Call::Write => Error::Timeout(last_failure),
                });
            }
            let index = (first + attempt) % count;
            attempt += 1;
            let member = &self.members[index];
            let mut grpc = tonic::client::Grpc::new(member.channel.clone())
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE);
            let mut message = tonic::Request::new(request.clone());
            message
                .metadata_mut()
                .insert("hasleader", MetadataValue::from_static("true"));
            let sent = std::sync::atomic::AtomicBool::new(false);
            let exchange = tokio::time::timeout(remaining, async {
                grpc.ready()
                    .await
                    .map_err(|e| tonic::Status::unavailable(format!("connect error: {e}")))?;
                sent.store(true, Ordering::Relaxed);
                let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
                grpc.unary(message, PathAndQuery::from_static(path), codec).await
            });
            let outcome = tokio::select! {
                outcome = exchange => outcome,
                stall = stalled(member, STALL_CHECK_INTERVAL, LeaderChange::Stalls) => {
                    // Later requests start elsewhere rather than wait on this member again.
                    self.preferred.store((index + 1) % count, Ordering::Relaxed);
                    let message = format!("{}: {stall}", member.url);
                    if call == Call::Write && sent.load(Ordering::Relaxed) {
                        return Err(Error::Timeout(format!(
                            "{message} with the write in flight; it may or may not have been applied"
                        )));
                    }
                    stalls += 1;
                    if stalls >= count {
                        return Err(Error::Unavailable(message));
                    }
                    tracing::debug!(member = %member.url, %stall, "etcd member stalled; trying the next");
                    last_failure = message;
                    // The others get their own time to refuse.
                    refusing_since = Instant::now();
                    continue;
                }
            };
            let status = match outcome {
                Ok(Ok(response)) => {
                    self.preferred.store(index, Ordering::Relaxed);
                    return Ok(response.into_inner());
                }
                Ok(Err(status)) => status,
                Err(_) => return Err(Error::Timeout(format!("no answer from {} in time", member.url))),
            };
            match classify(&status) {
                Failure::Final(error) => return Err(error),
                Failure::Unknown(message) if call == Call::Write => {
                    return Err(Error::Timeout(format!("{}: {message}", member.url)));
                }
                Failure::NotTaken(message) if refusing_since.elapsed() >= NO_LEADER_BUDGET => {
                    return Err(Error::Unavailable(format!("{}: {message}", member.url)));
                }
                Failure::Unknown(message) | Failure::NotTaken(message) => {
                    tracing::debug!(member = %member.url, %message, "etcd member failed; trying the next");
                    last_failure = format!("{}: {message}", member.url);
                }
            }
            if attempt.is_multiple_of(count) {
                // Every member failed once: give the cluster a moment (an election, a
                // restart) before going round again.
                tokio::time::sleep(Duration::from_millis(100).min(remaining)).await;
            }
        }
    }
}

/// Whether a new leader means what was sent to a member may never be answered.
#[derive(Clone, Copy, PartialEq, Eq)]
enum LeaderChange {
    /// A request: a proposal forwarded to the old leader may be lost without an answer.
    Stalls,
    /// A watch: the member goes on delivering what the new leader commits.
    Harmless,
}

/// Resolves, with the reason, once `member` is seen to have no leader, another leader than
/// at the first check (when that matters), or to have stopped answering; checks every
/// `interval`. Never resolves while the member answers with a leader (a slow request on a
/// healthy member is waited for), nor when the check itself is refused for another reason.
async fn stalled(member: &Member, interval: Duration, leader_change: LeaderChange) -> String {
    let mut first_leader = None;
    loop {
        tokio::time::sleep(interval).await;
        let mut grpc = tonic::client::Grpc::new(member.channel.clone());
        let mut message = tonic::Request::new(proto::StatusRequest {});
        message
            .metadata_mut()
            .insert("hasleader", MetadataValue::from_static("true"));
        let check = tokio::time::timeout(STALL_CHECK_TIMEOUT, async {
            grpc.ready()
                .await
                .map_err(|e| tonic::Status::unavailable(format!("connect error: {e}")))?;
            let codec = tonic_prost::ProstCodec::<proto::StatusRequest, proto::StatusResponse>::default();
            grpc.unary(message, PathAndQuery::from_static(STATUS), codec)
                .await
        })
        .await;
        match check {
            Err(_) => return "the member stopped answering".to_string(),
            Ok(Ok(status)) if status.get_ref().leader == 0 => {
                return "the member lost its leader".to_string();
            }
            Ok(Ok(status)) => {
                let leader = status.get_ref().leader;
                if leader_change == LeaderChange::Stalls && *first_leader.get_or_insert(leader) != leader {
                    return "the member's leader changed".to_string();
                }
            }
            Ok(Err(status)) => match classify(&status) {
                Failure::NotTaken(_) if status.message().contains("no leader") => {
                    return "the member lost its leader".to_string();
                }
                Failure::NotTaken(message) => return message,
                _ => std::future::pending::<()>().await,
            },
        }
    }
}

fn classify(status: &tonic::Status) -> Failure {
    use tonic::Code;
    let message = status.message().to_string();
    let detail = error_chain(status);
    match status.code() {
        Code::OutOfRange if message.contains("compacted") => Failure::Final(Error::Compacted {
            requested: 0,
            compacted: 0,
        }),
        Code::OutOfRange if message.contains("future revision") => Failure::Final(Error::FutureRevision {
            requested: 0,
            current: 0,
        }),
        Code::ResourceExhausted if message.contains("database space exceeded") => {
            Failure::Final(Error::NoSpace)
        }
        Code::ResourceExhausted | Code::InvalidArgument
            if message.contains("too large") || message.contains("larger than max") =>
        {
            Failure::Final(Error::TooLarge)
        }
        Code::Unavailable
            if message.contains("no leader")
                || message.contains("connect error")
                || detail.contains("Connection refused")
                || detail.contains("tcp connect") =>
        {
            Failure::NotTaken(message)
        }
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => {
            Failure::Unknown(format!("{message}{detail}"))
        }
        _ => Failure::Final(Error::Internal(format!("etcd: {message}"))),
    }
}

/// The source chain of a transport error, where the reason (refused, reset) is told.
fn error_chain(status: &tonic::Status) -> String {
    let mut text = String::new();
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(error) = source {
        text.push_str(": ");
        text.push_str(&error.to_string());
        source = error.source();
    }
    text
}

/// One store watch: an etcd watch that moves to another member when its connection
/// breaks and resumes after the last revision it delivered.
struct Watcher {
    inner: Arc<Inner>,
    prefix: String,
    /// The first revision not yet delivered.
    next: Revision,
    sender: tokio::sync::mpsc::Sender<Result<Vec<Event>>>,
}

enum WatchEnd {
    /// The consumer went away, or the watch ended with an error it was told of.
    Done,
    /// The connection broke; resume elsewhere.
    Broken(String),
}

impl Watcher {
    async fn run(mut self) {
        let mut delay = WATCH_RETRY_MIN;
        let mut index = self.inner.preferred.load(Ordering::Relaxed);
        loop {
            let member = index % self.inner.members.len();
            let delivered_before = self.next;
            match self.follow(member).await {
                WatchEnd::Done => return,
                WatchEnd::Broken(reason) => {
                    tracing::debug!(member = %self.inner.members[member].url, %reason, "etcd watch broke; resuming");
                }
            }
            if self.next > delivered_before {
                delay = WATCH_RETRY_MIN;
            }
            index += 1;
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.sender.closed() => return,
            }
            delay = (delay * 2).min(WATCH_RETRY_MAX);
        }
    }

    async fn follow(&mut self, member: usize) -> WatchEnd {
        let keys = &self.inner.keys;
        let (key, range_end) = keys.range(&self.prefix);
        let create = proto::WatchRequest {
            request_union: Some(watch_request::RequestUnion::Create(proto::WatchCreateRequest {
                key,
                range_end,
                start_revision: self.next,
                progress_notify: true,
                prev_kv: true,
            })),
        };
        // The request stream stays open for as long as the watch: etcd ends a watch
        // stream whose client side has finished.
        let (requests, request_stream) = tokio::sync::mpsc::channel::<proto::WatchRequest>(1);
        if requests.send(create).await.is_err() {
            return WatchEnd::Done;
        }
        let request_stream = futures::stream::unfold(request_stream, |mut receiver| async move {
            receiver.recv().await.map(|request| (request, receiver))
        });
        let mut grpc = tonic::client::Grpc::new(self.inner.members[member].channel.clone())
            .max_decoding_message_size(MAX_MESSAGE);
        let mut message = tonic::Request::new(request_stream);
        message
            .metadata_mut()
            .insert("hasleader", MetadataValue::from_static("true"));
        let opened = tokio::time::timeout(self.inner.timeout, async {
            grpc.ready()
                .await
                .map_err(|e| tonic::Status::unavailable(format!("connect error: {e}")))?;
            let codec = tonic_prost::ProstCodec::<proto::WatchRequest, proto::WatchResponse>::default();
            grpc.streaming(message, PathAndQuery::from_static(WATCH), codec)
                .await
        })
        .await;
        let mut responses = match opened {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) => return WatchEnd::Broken(status.message().to_string()),
            Err(_) => return WatchEnd::Broken("no answer in time".into()),
        };
        let member = &self.inner.members[member];
        let stall = stalled(member, WATCH_STALL_CHECK_INTERVAL, LeaderChange::Harmless);
        tokio::pin!(stall);
        loop {
            let response = tokio::select! {
                response = responses.message() => response,
                _ = self.sender.closed() => return WatchEnd::Done,
                reason = &mut stall => return WatchEnd::Broken(reason),
            };
            let response = match response {
                Ok(Some(response)) => response,
                Ok(None) => return WatchEnd::Broken("stream ended".into()),
                Err(status) => return WatchEnd::Broken(status.message().to_string()),
            };
            if response.compact_revision != 0 {
                let _ = self
                    .sender
                    .send(Err(Error::Compacted {
                        requested: self.next,
                        compacted: response.compact_revision,
                    }))
                    .await;
                return WatchEnd::Done;
            }
            if response.canceled {
                return WatchEnd::Broken(format!("canceled: {}", response.cancel_reason));
            }
            let mut batch = Vec::with_capacity(response.events.len());
            for event in &response.events {
                let Some(kv) = &event.kv else { continue };
                if kv.mod_revision >= self.next {
                    self.next = kv.mod_revision + 1;
                }
                let Some(key) = keys.store_key(&kv.key) else {
                    continue;
                };
                if !key.starts_with(self.prefix.as_str()) {
                    continue;
                }
                batch.push(if event.r#type == proto::EVENT_DELETE {
                    let previous = event.prev_kv.as_ref();
                    Event {
                        kind: EventKind::Delete,
                        key,
                        revision: kv.mod_revision,
                        value: previous.map(|p| p.value.clone()).unwrap_or_default(),
                        create_revision: previous.map_or(0, |p| p.create_revision),
                    }
                } else {
                    Event {
                        kind: EventKind::Put,
                        key,
                        revision: kv.mod_revision,
                        value: kv.value.clone(),
                        create_revision: kv.create_revision,
                    }
                });
            }
            if !batch.is_empty() && self.sender.send(Ok(batch)).await.is_err() {
                return WatchEnd::Done;
            }
        }
    }
}

/// Maps store keys to etcd keys and back (see the crate docs).
struct KeyMap {
    /// `--etcd-prefix` without a trailing slash.
    prefix: String,
}

impl KeyMap {
    fn new(prefix: &str) -> Result<KeyMap, ConfigError> {
        if !prefix.starts_with('/') {
            return Err(ConfigError::Prefix(prefix.to_string()));
        }
        Ok(KeyMap {
            prefix: prefix.trim_end_matches('/').to_string(),
        })
    }

    fn etcd_key(&self, key: &str) -> Bytes {
        let mapped = match key.strip_prefix("/registry") {
            Some(rest) if rest.is_empty() || rest.starts_with('/') => format!("{}{rest}", self.prefix),
            _ => format!("{}-{}", self.prefix, key.strip_prefix('/').unwrap_or(key)),
        };
        Bytes::from(mapped)
    }

    fn store_key(&self, key: &[u8]) -> Option<String> {
        let rest = std::str::from_utf8(key)
            .ok()?
            .strip_prefix(self.prefix.as_str())?;
        if rest.is_empty() || rest.starts_with('/') {
            Some(format!("/registry{rest}"))
        } else {
            rest.strip_prefix('-').map(|rest| format!("/{rest}"))
        }
    }

    /// One key inside this deployment's range, for requests that only want a revision.
    fn prefix_key(&self) -> Bytes {
        Bytes::from(self.prefix.clone())
    }

    /// The etcd range `[start, end)` holding every store key that starts with `prefix`.
    /// Prefixes shorter than `/registry/` ("", "/") span both halves of the layout, so
    /// they get the whole deployment range, which callers filter.
    fn range(&self, prefix: &str) -> (Bytes, Bytes) {
        let start = if "/registry/".starts_with(prefix) && prefix != "/registry/" {
            self.prefix_key()
        } else {
            self.etcd_key(prefix)
        };
        let end = prefix_end(&start);
        (start, end)
    }

    fn key_value(&self, kv: &proto::KeyValue) -> Option<KeyValue> {
        Some(KeyValue {
            key: self.store_key(&kv.key)?,
            value: kv.value.clone(),
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
        })
    }
}

/// The smallest key greater than every key starting with `prefix` (etcd's range end for a
/// prefix); `"\0"` (every key) when there is none.
fn prefix_end(prefix: &[u8]) -> Bytes {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Bytes::from(end);
        }
    }
    Bytes::from_static(b"\0")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_full_database_is_told_apart_from_a_large_request() {
        let full = tonic::Status::resource_exhausted("etcdserver: mvcc: database space exceeded");
        assert!(matches!(classify(&full), Failure::Final(Error::NoSpace)));
        assert_eq!(Error::NoSpace.to_string(), badge_store::NO_SPACE_MESSAGE);
        let large = tonic::Status::resource_exhausted("etcdserver: request is too large");
        assert!(matches!(classify(&large), Failure::Final(Error::TooLarge)));
    }

    #[test]
    fn batches_split_where_a_transaction_must_end() {
        let create = |key: &str, size: usize| BatchOp::Create {
            key: key.into(),
            value: Bytes::from(vec![b'x'; size]),
        };
        let sizes = |ops: Vec<BatchOp>| chunks(ops).iter().map(Vec::len).collect::<Vec<_>>();
        let many: Vec<BatchOp> = (0..300).map(|i| create(&format!("/k/{i}"), 10)).collect();
        assert_eq!(sizes(many), [128, 128, 44], "etcd's --max-txn-ops");
        let large: Vec<BatchOp> = (0..5).map(|i| create(&format!("/k/{i}"), 400 * 1024)).collect();
        assert_eq!(sizes(large), [2, 2, 1], "etcd's --max-request-bytes");
        let huge = vec![
            create("/k/a", 1),
            create("/k/b", 4 * 1024 * 1024),
            create("/k/c", 1),
        ];
        assert_eq!(sizes(huge), [1, 1, 1], "an oversized value goes alone");
        let twice = vec![create("/k/a", 1), create("/k/b", 1), create("/k/a", 1)];
        assert_eq!(sizes(twice), [2, 1], "a key once per transaction");
        let unexpected = BatchOp::Update {
            key: "/k/u".into(),
            value: Bytes::new(),
            expected: 0,
        };
        assert_eq!(
            sizes(vec![create("/k/a", 1), unexpected, create("/k/b", 1)]),
            [1, 1, 1]
        );
    }

    #[test]
    fn keys_keep_the_kubernetes_layout() {
        let keys = KeyMap::new("/registry").unwrap();
        assert_eq!(keys.etcd_key("/registry/secrets/ns/a"), "/registry/secrets/ns/a");
        assert_eq!(
            keys.etcd_key("/badge/serviceaccount-keys"),
            "/registry-badge/serviceaccount-keys"
        );
        assert_eq!(keys.etcd_key("/registryx"), "/registry-registryx");
        for key in [
            "/registry/secrets/ns/a",
            "/badge/serviceaccount-keys",
            "/registryx",
            "/a",
        ] {
            assert_eq!(keys.store_key(&keys.etcd_key(key)).as_deref(), Some(key), "{key}");
        }
        assert_eq!(keys.store_key(b"/registry2/x"), None, "another deployment's keys");
        assert_eq!(keys.store_key(b"/other"), None);
    }

    #[test]
    fn other_prefixes_move_everything() {
        let keys = KeyMap::new("/tenant-a/registry/").unwrap();
        assert_eq!(
            keys.etcd_key("/registry/pods/ns/p"),
            "/tenant-a/registry/pods/ns/p"
        );
        assert_eq!(keys.etcd_key("/badge/k"), "/tenant-a/registry-badge/k");
        assert!(KeyMap::new("registry").is_err());
    }

    #[test]
    fn ranges_cover_their_prefix() {
        let keys = KeyMap::new("/registry").unwrap();
        assert_eq!(
            keys.range("/registry/secrets/"),
            ("/registry/secrets/".into(), "/registry/secrets0".into())
        );
        assert_eq!(keys.range(""), ("/registry".into(), "/registrz".into()));
        assert_eq!(keys.range("/"), ("/registry".into(), "/registrz".into()));
        assert_eq!(
            keys.range("/badge/"),
            ("/registry-badge/".into(), "/registry-badge0".into())
        );
        assert_eq!(prefix_end(b"a\xff"), Bytes::from_static(b"b"));
        assert_eq!(prefix_end(b"\xff"), Bytes::from_static(b"\0"));
    }
}
