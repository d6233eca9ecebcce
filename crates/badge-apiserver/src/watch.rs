//! Watch: a chunked stream of newline-delimited JSON events from the watch cache, filtered
//! by namespace and selectors, with bookmarks, timeouts and 410 for a resourceVersion
//! that left the history (`endpoints/handlers/watch.go`, `storage/cacher`).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use badge_api::{Status, meta};
use badge_registry::{CacheEvent, EventType, Filter, WatchEnd};
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{Value, json};

use crate::ApiServer;
use crate::negotiate::{PartialObjectMetadata, Target};
use crate::response::{self, Body};
use crate::rest::Call;
use crate::table::{self, IncludeObject};

/// How often a quiet watch gets a bookmark when it asked for them.
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(10);
/// The longest watch when the client sets no timeout (upstream: 30 to 60 minutes).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);
/// Initial events are sent in chunks of about this size: one TLS record and one system call
/// per chunk instead of per event. Live events go out one by one, as they happen.
const INITIAL_CHUNK: usize = 64 * 1024;

struct Encoder {
    resource: &'static badge_api::Resource,
    target: Target,
    include: IncludeObject,
    sent_columns: bool,
}

/// Events are written one by one until one cannot be: upstream then ends the watch.
impl Encoder {
    fn event(&mut self, kind: &str, object: &Value) -> Option<Bytes> {
        let mut line = Vec::with_capacity(512);
        self.write_event(&mut line, kind, object)
            .then(|| Bytes::from(line))
    }

    /// Appends one event line; false when the object has no form the client accepts.
    fn write_event(&mut self, out: &mut Vec<u8>, kind: &str, object: &Value) -> bool {
        if self.target == Target::Table {
            let t = table::table(
                self.resource,
                [object],
                json!({"resourceVersion": meta::resource_version(object)}),
                !self.sent_columns,
                self.include,
            );
            self.sent_columns = true;
            write_line(out, kind, &t);
            return true;
        }
        self.write_plain(out, kind, object)
    }

    /// Appends an event line with the object itself or, when asked, its metadata.
    fn write_plain(&self, out: &mut Vec<u8>, kind: &str, object: &Value) -> bool {
        match self.target {
            Target::Metadata(version) => {
                write_line(out, kind, &PartialObjectMetadata::of(object, version));
                true
            }
            // Upstream cannot turn one object into a list, nor encode the untransformed
            // object in the meta group it negotiated: the watch ends without it.
            Target::MetadataList(_) => false,
            Target::Table | Target::Object => {
                write_line(out, kind, object);
                true
            }
        }
    }

    fn plain(&self, kind: &str, object: &Value) -> Option<Bytes> {
        let mut out = Vec::with_capacity(256);
        self.write_plain(&mut out, kind, object).then(|| Bytes::from(out))
    }

    fn bookmark(&self, revision: i64) -> Option<Bytes> {
        let object = json!({
            "kind": self.resource.kind,
            "apiVersion": self.resource.api_version(),
            "metadata": {"resourceVersion": revision.to_string(), "creationTimestamp": null},
        });
        self.plain("BOOKMARK", &object)
    }

    /// The bookmark that ends the initial events of a WatchList.
    fn initial_events_end(&self, revision: i64) -> Option<Bytes> {
        let object = json!({
            "kind": self.resource.kind,
            "apiVersion": self.resource.api_version(),
            "metadata": {
                "resourceVersion": revision.to_string(),
                "creationTimestamp": null,
                "annotations": {"k8s.io/initial-events-end": "true"},
            },
        });
        self.plain("BOOKMARK", &object)
    }

    fn error(status: &Status) -> Bytes {
        line("ERROR", status)
    }
}

/// Appends one event line, `{"type":...,"object":...}` in upstream's field order, without
/// copying the object into an envelope first.
fn write_line(out: &mut Vec<u8>, kind: &str, object: &impl serde::Serialize) {
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\",\"object\":");
    // Writing to a Vec fails only for a map with non-string keys, which these have not.
    let _ = serde_json::to_writer(&mut *out, object);
    out.extend_from_slice(b"}\n");
}

fn line(kind: &str, object: &impl serde::Serialize) -> Bytes {
    let mut out = Vec::with_capacity(256);
    write_line(&mut out, kind, object);
    Bytes::from(out)
}

/// What a watcher sees of a cache event after filtering (upstream cacher semantics: an
/// object that stops matching is DELETED for the watcher, one that starts matching ADDED).
fn visible(
    event: &CacheEvent,
    prefix: &str,
    filter: &Filter,
    resource: &badge_api::Resource,
) -> Option<(EventType, Arc<Value>)> {
    if !event.key.starts_with(prefix) {
        return None;
    }
    let object = event.object.value();
    let now = filter.matches(resource, &object);
    match event.kind {
        EventType::Added if now => Some((EventType::Added, object)),
        EventType::Deleted if now => Some((EventType::Deleted, object)),
        EventType::Modified => {
            let before = event
                .prev
                .as_ref()
                .is_some_and(|p| filter.matches(resource, &p.value()));
            match (before, now) {
                (true, true) => Some((EventType::Modified, object)),
                (false, true) => Some((EventType::Added, object)),
                (true, false) => Some((EventType::Deleted, object)),
                (false, false) => None,
            }
        }
        _ => None,
    }
}

impl ApiServer {
    pub(crate) async fn watch(&self, call: &Call<'_>) -> Result<Response<Body>, Status> {
        let resource = call.resource;
        let output = call.output()?;
        let filter = call.filter()?;
        filter.validate(resource)?;
        // A named watch narrows by the filter's exact name, never by a key prefix (a prefix
        // `a` would also match `ab`).
        let prefix = if resource.namespaced && !call.info.namespace.is_empty() {
            resource.namespace_prefix(&call.info.namespace)
        } else {
            resource.key_prefix()
        };
        // WatchList (`sendInitialEvents=true`): the current state as ADDED events first,
        // then a bookmark marking their end, whatever the resourceVersion.
        let send_initial_events = call.query.flag("sendInitialEvents");
        if send_initial_events && !call.query.flag("allowWatchBookmarks") {
            return Err(Status::invalid(
                "meta.k8s.io",
                "ListOptions",
                "",
                &[badge_api::FieldError::forbidden(
                    "allowWatchBookmarks",
                    "allowWatchBookmarks required when using sendInitialEvents",
                )],
            ));
        }
        let rv = call.query.get("resourceVersion").unwrap_or("");
        let from = match rv {
            "" => {
                self.registry.sync().await?;
                None
            }
            "0" => None,
            v => {
                let n = v
                    .parse::<i64>()
                    .map_err(|_| Status::bad_request(format!("invalid resource version: {v}")))?;
                if send_initial_events {
                    if !self.registry.cache().wait_for(n, Duration::from_secs(3)).await {
                        return Err(Status::timeout(format!(
                            "Too large resource version: {n}, current: {}",
                            self.registry.cache().revision()
                        )));
                    }
                    None
                } else {
                    Some(n)
                }
            }
        };
        let timeout = call
            .query
            .get("timeoutSeconds")
            .and_then(|t| t.parse::<u64>().ok())
            .map_or(DEFAULT_TIMEOUT, Duration::from_secs);
        let bookmarks = call.query.flag("allowWatchBookmarks");
        let target = output.for_watch()?.target;
        let mut encoder = Encoder {
            resource,
            target,
            include: IncludeObject::parse(call.query.get("includeObject")),
            sent_columns: false,
        };
        let content_type = if target == Target::Table {
            response::TABLE_JSON
        } else {
            response::JSON
        };

        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
        match self.registry.cache().watch(&prefix, from) {
            Err(too_old) => {
                let status = Status::resource_expired(format!(
                    "too old resource version: {} ({})",
                    too_old.requested, too_old.oldest
                ));
                let _ = tx.try_send(Encoder::error(&status));
            }
            Ok(mut cache_watch) => {
                let mut shutdown = self.shutdown.clone();
                let revisions = self.registry.cache().revisions();
                tokio::spawn(async move {
                    let deadline = tokio::time::sleep(timeout);
                    tokio::pin!(deadline);
                    let mut last_sent = cache_watch.revision;
                    // Live events follow this snapshot; several may share a revision (one
                    // etcd transaction), so only what the snapshot covered is skipped.
                    let snapshot = cache_watch.revision;
                    let mut chunk = Vec::new();
                    for event in cache_watch.initial.drain(..) {
                        if let Some((kind, object)) = visible(&event, &prefix, &filter, resource) {
                            if !encoder.write_event(&mut chunk, kind.as_str(), &object) {
                                if !chunk.is_empty() {
                                    let _ = tx.send(Bytes::from(chunk)).await;
                                }
                                return;
                            }
                            if chunk.len() >= INITIAL_CHUNK
                                && tx.send(Bytes::from(std::mem::take(&mut chunk))).await.is_err()
                            {
                                return;
                            }
                        }
                        last_sent = last_sent.max(event.revision);
                    }
                    if !chunk.is_empty() && tx.send(Bytes::from(chunk)).await.is_err() {
                        return;
                    }
                    if send_initial_events {
                        let Some(end) = encoder.initial_events_end(last_sent) else {
                            return;
                        };
                        if tx.send(end).await.is_err() {
                            return;
                        }
                    }
                    let mut bookmark_timer = tokio::time::interval(BOOKMARK_INTERVAL);
                    bookmark_timer.tick().await;
                    // Ends at the deadline or shutdown; every other end returns at once.
                    loop {
                        tokio::select! {
                            received = cache_watch.next() => match received {
                                Ok(event) => {
                                    if event.revision <= snapshot && from.is_some() {
                                        continue;
                                    }
                                    last_sent = event.revision;
                                    if let Some((kind, object)) = visible(&event, &prefix, &filter, resource) {
                                        let Some(line) = encoder.event(kind.as_str(), &object) else {
                                            return;
                                        };
                                        if tx.send(line).await.is_err() {
                                            return;
                                        }
                                    }
                                }
                                // The cache relisted: the events this watcher missed are
                                // gone, so it ends with 410 as upstream's cacher ends its
                                // watchers, and the client relists.
                                Err(WatchEnd::Reset) => {
                                    let status = Status::resource_expired(format!(
                                        "too old resource version: {last_sent} ({})",
                                        revisions.borrow().saturating_add(1)
                                    ));
                                    let _ = tx.send(Encoder::error(&status)).await;
                                    return;
                                }
                                // A watcher that fell behind is ended; the client relists.
                                Err(WatchEnd::Lagged | WatchEnd::Closed) => return,
                            },
                            // Only a revision every event of which has been sent: one
                            // ahead of events still queued would have a client that resumes
                            // from it skip them. Otherwise the next tick tries again.
                            _ = bookmark_timer.tick(), if bookmarks => {
                                let Some(revision) = cache_watch.bookmark_revision(last_sent) else {
                                    continue;
                                };
                                let Some(bookmark) = encoder.bookmark(revision) else {
                                    return;
                                };
                                if tx.send(bookmark).await.is_err() {
                                    return;
                                }
                            }
                            _ = &mut deadline => break,
                            _ = shutdown.changed() => break,
                        }
                    }
                    // A transaction half sent is finished first: its writes share the
                    // revision the client will resume from.
                    for event in cache_watch.rest_of_transaction(last_sent).await {
                        if event.revision <= snapshot && from.is_some() {
                            continue;
                        }
                        if let Some((kind, object)) = visible(&event, &prefix, &filter, resource) {
                            let Some(line) = encoder.event(kind.as_str(), &object) else {
                                return;
                            };
                            if tx.send(line).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        }
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv()
                .await
                .map(|bytes| (Ok::<_, Infallible>(Frame::data(bytes)), rx))
        });
        let mut response = Response::new(BodyExt::boxed_unsync(StreamBody::new(stream)));
        *response.status_mut() = StatusCode::OK;
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        response.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache, private"),
        );
        Ok(response)
    }
}
