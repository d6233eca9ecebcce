//! Typed objects over the store: the generic create/get/list/update/delete of upstream's
//! `registry/generic/registry.Store`, driven by the resource table and the strategies.

use std::sync::Arc;
use std::time::Duration;

use badge_api::meta;
use badge_api::resources::{self, Resource};
use badge_api::selectors::{FieldSelector, LabelSelector};
use badge_api::status::{FieldError, GroupResource, Status, StatusCause, StatusDetails};
use badge_store::{Revision, Store};
use base64::Engine;
use rand::Rng;
use serde_json::Value;

use crate::cache::{CachedObject, WatchCache, decode_object};
use crate::graceful::{self, GracefulDelete};
use crate::strategy;

/// How long a consistent read waits for the cache to catch up with the store.
const FRESHNESS_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a consistent read waits for the cache before asking the store for a barrier.
const BARRIER_AFTER: Duration = Duration::from_millis(5);

/// Options of a write.
#[derive(Clone, Debug, Default)]
pub struct WriteOptions {
    /// `dryRun=All`: everything but the store write.
    pub dry_run: bool,
}

/// `DeleteOptions` preconditions and flags.
#[derive(Clone, Debug, Default)]
pub struct DeleteOptions {
    pub dry_run: bool,
    pub precondition_uid: Option<String>,
    pub precondition_resource_version: Option<String>,
    /// `gracePeriodSeconds`: for resources deleted gracefully (pods), how long the
    /// object lingers marked before it is removed; None takes the object's default.
    pub grace_period_seconds: Option<i64>,
}

/// What a delete did.
#[derive(Debug)]
pub enum DeleteOutcome {
    /// The object is gone; this was its last state.
    Deleted(Value),
    /// The object is being deleted (finalizers, namespace termination); its current state.
    Pending(Value),
}

/// Which state a read may observe (`resourceVersion` on get and list).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadFrom {
    /// Unset: at least everything committed before the request (a consistent read).
    Latest,
    /// `0`: whatever the cache holds.
    Any,
    /// The cache, and on a miss the cache once it has caught up with the store: a hot path
    /// that still sees every write acknowledged before the request began (read your writes),
    /// paying for the store round trip only when the object is not (yet) cached.
    Recent,
    /// `N` (NotOlderThan): at least revision N.
    NotOlderThan(Revision),
    /// `N` with `resourceVersionMatch=Exact`: exactly revision N.
    Exact(Revision),
}

/// A list filter: namespace, label and field selectors.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Filter {
    /// Checks that every field in the selector is selectable for the resource.
    pub fn validate(&self, resource: &Resource) -> Result<(), Status> {
        let probe = Value::Object(Default::default());
        for term in &self.fields.terms {
            if strategy::field_value(resource.plural, &probe, &term.field).is_none() {
                return Err(Status::bad_request(format!(
                    "field label not supported: {}",
                    term.field
                )));
            }
        }
        Ok(())
    }

    pub fn matches(&self, resource: &Resource, object: &Value) -> bool {
        (self.labels.is_empty() || self.labels.matches(&meta::labels(object)))
            && (self.fields.is_empty()
                || self
                    .fields
                    .matches(|f| strategy::field_value(resource.plural, object, f)))
    }
}

/// One page of a list.
#[derive(Debug)]
pub struct ListPage {
    pub items: Vec<Arc<Value>>,
    pub revision: Revision,
    pub continue_token: Option<String>,
    pub remaining: Option<u64>,
}

/// Collects one page of a list from the cache: selector matching, the limit, and what
/// remains after it.
struct PageBuilder<'a> {
    resource: &'a Resource,
    filter: &'a Filter,
    limit: usize,
    unfiltered: bool,
    items: Vec<Arc<Value>>,
    last_key: Option<String>,
    more: bool,
    remaining: u64,
}

impl<'a> PageBuilder<'a> {
    fn new(resource: &'a Resource, filter: &'a Filter, limit: usize) -> PageBuilder<'a> {
        PageBuilder {
            resource,
            filter,
            limit,
            unfiltered: filter.labels.is_empty() && filter.fields.is_empty(),
            items: Vec::new(),
            last_key: None,
            more: false,
            remaining: 0,
        }
    }

    fn offer(&mut self, key: &str, cached: &Arc<crate::cache::CachedObject>) {
        // Objects are decoded only when a selector must look at them or they are listed.
        let object = if self.unfiltered {
            None
        } else {
            let object = cached.value();
            if !self.filter.matches(self.resource, &object) {
                return;
            }
            Some(object)
        };
        if self.limit > 0 && self.items.len() >= self.limit {
            self.more = true;
            self.remaining += 1;
            return;
        }
        self.items.push(object.unwrap_or_else(|| cached.value()));
        self.last_key = Some(key.to_string());
    }

    fn finish(self, revision: Revision, prefix: &str) -> ListPage {
        let continue_token = match (self.more, self.last_key) {
            (true, Some(key)) => Some(encode_continue(revision, &key, prefix)),
            _ => None,
        };
        ListPage {
            items: self.items,
            revision,
            remaining: (self.more && self.unfiltered).then_some(self.remaining),
            continue_token,
        }
    }
}

/// The registry.
pub struct Registry {
    store: Arc<dyn Store>,
    cache: Arc<WatchCache>,
    /// When the cache was last confirmed to hold every committed write (see [`Registry::sync`]).
    confirmed: parking_lot::Mutex<std::time::Instant>,
    /// How long the cache may go unconfirmed before it is no longer served as current.
    stale_read_bound: Duration,
}

/// How long after the cache was last confirmed current a consistent read may still be
/// served from it while the store cannot say what its revision is (etcd without quorum).
/// Without quorum nothing new commits, so such reads miss at most the writes committed
/// between the last confirmation and the outage; a server cut off from a majority that
/// goes on writing serves reads this much behind at worst, then answers 503.
pub const STALE_READ_BOUND: Duration = Duration::from_secs(30);
/// How often an idle server confirms its cache is current, so the bound above holds from
/// the moment an outage begins.
const CONFIRM_INTERVAL: Duration = Duration::from_secs(1);
/// How long a readiness probe waits for the store's alarms.
const ALARM_TIMEOUT: Duration = Duration::from_millis(500);

impl Registry {
    /// Starts the watch cache over `store` and returns once it holds the store's state.
    pub async fn start(store: Arc<dyn Store>, watch_history: usize) -> Arc<Registry> {
        Registry::start_with_bound(store, watch_history, STALE_READ_BOUND).await
    }

    /// [`Registry::start`] with another bound than [`STALE_READ_BOUND`].
    pub async fn start_with_bound(
        store: Arc<dyn Store>,
        watch_history: usize,
        stale_read_bound: Duration,
    ) -> Arc<Registry> {
        let cache = Arc::new(WatchCache::new(watch_history));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(cache.clone().run(store.clone(), ready_tx));
        // The sender is only dropped after sending, or if the task ends, which it never does
        // before the first list succeeds.
        let _ = ready_rx.await;
        let registry = Arc::new(Registry {
            store,
            cache,
            confirmed: parking_lot::Mutex::new(std::time::Instant::now()),
            stale_read_bound,
        });
        let weak = Arc::downgrade(&registry);
        tokio::spawn(async move {
            let mut was_current = true;
            loop {
                tokio::time::sleep(CONFIRM_INTERVAL).await;
                let Some(registry) = weak.upgrade() else { return };
                let _ = registry.confirm_current().await;
                let current = registry.confirmed.lock().elapsed() <= registry.stale_read_bound;
                if was_current && !current {
                    tracing::warn!(
                        bound_seconds = registry.stale_read_bound.as_secs(),
                        "the watch cache could not be confirmed current within the stale-read bound; consistent reads fail and /readyz reports etcd failed"
                    );
                } else if !was_current && current {
                    tracing::info!("the watch cache is confirmed current again");
                }
                was_current = current;
            }
        });
        registry
    }

    pub fn cache(&self) -> &Arc<WatchCache> {
        &self.cache
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// How long ago the cache was last confirmed to hold every committed write.
    pub fn unconfirmed_for(&self) -> Duration {
        self.confirmed.lock().elapsed()
    }

    /// How long the cache may go unconfirmed before it is no longer served as current.
    pub fn stale_read_bound(&self) -> Duration {
        self.stale_read_bound
    }

    /// Whether the storage is fit to serve: the cache was confirmed current within the
    /// stale-read bound (by the confirmations reads and the idle loop already make), and the
    /// store raises no alarm that refuses writes (etcd's NOSPACE). The reason when not.
    pub async fn storage_health(&self) -> Result<(), String> {
        let unconfirmed = self.confirmed.lock().elapsed();
        if unconfirmed > self.stale_read_bound {
            return Err(format!(
                "the storage could not be confirmed current for {}s",
                unconfirmed.as_secs()
            ));
        }
        // Unreachable or slow is the confirmation's business, not this probe's.
        match tokio::time::timeout(ALARM_TIMEOUT, self.store.alarms()).await {
            Ok(Ok(alarms)) if !alarms.is_empty() => {
                Err(format!("the storage raised alarms: {}", alarms.join(", ")))
            }
            _ => Ok(()),
        }
    }

    /// Waits until the cache reflects every write committed before this call. When the
    /// store cannot tell its revision (unavailable, or timing out), the cache as it is
    /// stands in for up to [`STALE_READ_BOUND`] after it was last confirmed current.
    pub async fn sync(&self) -> Result<Revision, Status> {
        match self.confirm_current().await {
            Err(badge_store::Error::Unavailable(_) | badge_store::Error::Timeout(_))
                if self.confirmed.lock().elapsed() <= self.stale_read_bound =>
            {
                Ok(self.cache.revision())
            }
            Err(e) => Err(store_error(e)),
            Ok((current, false)) => Err(Status::timeout(format!(
                "Too large resource version: {current}, current: {}",
                self.cache.revision()
            ))),
            Ok((current, true)) => Ok(current),
        }
    }

    /// Asks the store for its revision and waits for the cache to reach it; the revision,
    /// and whether the cache reached it in time.
    async fn confirm_current(&self) -> badge_store::Result<(Revision, bool)> {
        let asked = std::time::Instant::now();
        let mut current = self.store.current_revision().await?;
        if !self.cache.wait_for(current, BARRIER_AFTER).await {
            // Still behind: the watch is lagging, or the revisions between went to keys
            // outside this store (etcd shared under another prefix), which the watch never
            // delivers. A marker written now is delivered after everything before it.
            if let Some(marker) = self.store.barrier().await? {
                current = marker;
            }
            if !self.cache.wait_for(current, FRESHNESS_TIMEOUT).await {
                return Ok((current, false));
            }
        }
        let mut confirmed = self.confirmed.lock();
        *confirmed = (*confirmed).max(asked);
        Ok((current, true))
    }

    async fn wait_read(&self, read: ReadFrom) -> Result<(), Status> {
        match read {
            ReadFrom::Latest => self.sync().await.map(|_| ()),
            ReadFrom::Any | ReadFrom::Recent | ReadFrom::Exact(_) => Ok(()),
            ReadFrom::NotOlderThan(rv) => {
                if self.cache.wait_for(rv, FRESHNESS_TIMEOUT).await {
                    Ok(())
                } else {
                    Err(too_large_resource_version(rv, self.cache.revision()))
                }
            }
        }
    }

    /// An object from the cache as it is now, without waiting (hot paths).
    pub fn get_cached(&self, resource: &Resource, namespace: &str, name: &str) -> Option<Arc<Value>> {
        self.cache.get(&resource.key(namespace, name)).0
    }

    /// An object as the watch cache holds it, without decoding it: for reads of its uid and
    /// deletion timestamp on hot paths.
    pub fn get_cached_object(
        &self,
        resource: &Resource,
        namespace: &str,
        name: &str,
    ) -> Option<Arc<CachedObject>> {
        self.cache.get_cached(&resource.key(namespace, name)).0
    }

    pub async fn get(
        &self,
        resource: &Resource,
        namespace: &str,
        name: &str,
        read: ReadFrom,
    ) -> Result<Arc<Value>, Status> {
        Ok(self.get_object(resource, namespace, name, read).await?.value())
    }

    /// [`Registry::get`] without decoding the object: for reads of its uid on hot paths.
    pub async fn get_object(
        &self,
        resource: &Resource,
        namespace: &str,
        name: &str,
        read: ReadFrom,
    ) -> Result<Arc<CachedObject>, Status> {
        let key = resource.key(namespace, name);
        if let ReadFrom::Exact(rv) = read {
            let list = self
                .store
                .list(
                    &key,
                    badge_store::ListOptions {
                        revision: Some(rv),
                        ..Default::default()
                    },
                )
                .await
                .map_err(store_error)?;
            return list
                .items
                .into_iter()
                .find(|kv| kv.key == key)
                .and_then(|kv| CachedObject::new(&kv.value, kv.mod_revision))
                .map(Arc::new)
                .ok_or_else(|| Status::not_found(resource.group_resource(), name));
        }
        self.wait_read(read).await?;
        if let Some(found) = self.cache.get_cached(&key).0 {
            return Ok(found);
        }
        if read == ReadFrom::Recent {
            self.sync().await?;
            if let Some(found) = self.cache.get_cached(&key).0 {
                return Ok(found);
            }
        }
        if let Some(reason) = self.cache.unreadable(&key) {
            return Err(Status::internal_shown(reason));
        }
        Err(Status::not_found(resource.group_resource(), name))
    }

    /// Lists objects of a resource (in one namespace, or all when `namespace` is empty).
    pub async fn list(
        &self,
        resource: &Resource,
        namespace: &str,
        filter: &Filter,
        read: ReadFrom,
        limit: usize,
        continue_token: Option<&str>,
    ) -> Result<ListPage, Status> {
        filter.validate(resource)?;
        let prefix = if resource.namespaced && !namespace.is_empty() {
            resource.namespace_prefix(namespace)
        } else {
            resource.key_prefix()
        };
        if let Some(token) = continue_token.filter(|t| !t.is_empty()) {
            let (rv, start) = decode_continue(token, &prefix)?;
            self.fail_on_unreadable(&prefix, Some(&start))?;
            // The next page of a snapshot comes from the cache when nothing under the prefix
            // changed since the snapshot's revision (a paged list of a quiet resource);
            // otherwise from the store, which keeps the history.
            let mut page = PageBuilder::new(resource, filter, limit);
            if self
                .cache
                .for_each_as_of(&prefix, &start, rv, |key, cached| page.offer(key, cached))
            {
                return Ok(page.finish(rv, &prefix));
            }
            return self
                .list_from_store(resource, &prefix, filter, rv, Some(start), limit)
                .await;
        }
        if let ReadFrom::Exact(rv) = read {
            return self
                .list_from_store(resource, &prefix, filter, rv, None, limit)
                .await;
        }
        self.wait_read(read).await?;
        self.fail_on_unreadable(&prefix, None)?;
        let mut page = PageBuilder::new(resource, filter, limit);
        let revision = self
            .cache
            .for_each(&prefix, |key, cached| page.offer(key, cached));
        Ok(page.finish(revision, &prefix))
    }

    /// As upstream, a list that meets an object it cannot decrypt fails as a whole.
    fn fail_on_unreadable(&self, prefix: &str, start_after: Option<&str>) -> Result<(), Status> {
        match self.cache.first_unreadable(prefix, start_after) {
            Some((key, reason)) => Err(Status::internal_shown(format!(
                "unable to transform key {key:?}: {reason}"
            ))),
            None => Ok(()),
        }
    }

    async fn list_from_store(
        &self,
        resource: &Resource,
        prefix: &str,
        filter: &Filter,
        revision: Revision,
        mut start_after: Option<String>,
        limit: usize,
    ) -> Result<ListPage, Status> {
        let mut items = Vec::new();
        loop {
            let page = self
                .store
                .list(
                    prefix,
                    badge_store::ListOptions {
                        revision: Some(revision),
                        limit: limit.max(1) * 2,
                        start_after: start_after.clone(),
                    },
                )
                .await
                .map_err(|e| match e {
                    badge_store::Error::Compacted { .. } => Status::resource_expired(CONTINUE_EXPIRED),
                    other => store_error(other),
                })?;
            let exhausted = page.remaining == 0;
            let remaining_in_store = page.remaining;
            let count = page.items.len();
            for (i, kv) in page.items.into_iter().enumerate() {
                start_after = Some(kv.key.clone());
                let Some(object) = decode_object(&kv.value, kv.mod_revision) else {
                    continue;
                };
                if !filter.matches(resource, &object) {
                    continue;
                }
                items.push(Arc::new(object));
                if limit > 0 && items.len() >= limit {
                    let more = !exhausted || i + 1 < count;
                    let token = more.then(|| encode_continue(revision, &kv.key, prefix));
                    // As upstream: without selectors every key left is an item left.
                    let unfiltered = filter.labels.is_empty() && filter.fields.is_empty();
                    let left = (count - i - 1) as u64 + remaining_in_store;
                    return Ok(ListPage {
                        items,
                        revision,
                        continue_token: token,
                        remaining: (more && unfiltered).then_some(left),
                    });
                }
            }
            if exhausted {
                return Ok(ListPage {
                    items,
                    revision,
                    continue_token: None,
                    remaining: None,
                });
            }
        }
    }

    /// Creates an object. `object` has been decoded for the resource.
    pub async fn create(
        &self,
        resource: &Resource,
        namespace: &str,
        mut object: Value,
        options: &WriteOptions,
    ) -> Result<Value, Status> {
        let gr = resource.group_resource();
        if resource.namespaced {
            let given = meta::namespace(&object).to_string();
            if !given.is_empty() && given != namespace {
                return Err(Status::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            meta::set(&mut object, "namespace", namespace);
        } else {
            meta::remove(&mut object, "namespace");
        }
        let generated = meta::name(&object).is_empty() && !meta::generate_name(&object).is_empty();
        if generated {
            let name = generate_name(meta::generate_name(&object));
            meta::set(&mut object, "name", name);
        }
        if resource.namespaced {
            self.check_namespace_open(resource, namespace, meta::name(&object))
                .await?;
        }
        let now = meta::format_time(badge_api::clock::now());
        meta::set(&mut object, "uid", uuid::Uuid::new_v4().to_string());
        meta::set(&mut object, "creationTimestamp", now);
        for field in [
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
        ] {
            meta::remove(&mut object, field);
        }
        strategy::prepare_create(resource.plural, &mut object);
        let mut errors = validate_meta(resource, &object);
        errors.extend(strategy::validate(resource.plural, &object, None));
        if !errors.is_empty() {
            return Err(Status::invalid(
                resource.group,
                resource.kind,
                meta::name(&object),
                &errors,
            ));
        }
        let name = meta::name(&object).to_string();
        if options.dry_run {
            return Ok(object);
        }
        let key = resource.key(namespace, &name);
        let revision = self
            .store
            .create(&key, encode(&object)?)
            .await
            .map_err(|e| match e {
                badge_store::Error::AlreadyExists { .. } => {
                    let mut status = Status::already_exists(gr, &name);
                    if generated {
                        status
                            .message
                            .push_str(", the server was not able to generate a unique name for the object");
                    }
                    status
                }
                other => store_error(other),
            })?;
        meta::set(&mut object, "resourceVersion", revision.to_string());
        Ok(object)
    }

    async fn check_namespace_open(
        &self,
        resource: &Resource,
        namespace: &str,
        name: &str,
    ) -> Result<(), Status> {
        let Some(ns_resource) = resources::lookup("", "v1", "namespaces") else {
            return Ok(());
        };
        let key = ns_resource.key("", namespace);
        let mut found = self.cache.get(&key).0;
        if found.is_none() {
            // A namespace created a moment ago may not be in the cache yet.
            self.sync().await?;
            found = self.cache.get(&key).0;
        }
        let Some(ns) = found else {
            return Err(Status::not_found(ns_resource.group_resource(), namespace));
        };
        if meta::deletion_timestamp(&ns).is_some() {
            let mut status = Status::forbidden(
                resource.group_resource(),
                name,
                &format!(
                    "unable to create new content in namespace {namespace} because it is being terminated"
                ),
            );
            if let Some(details) = status.details.as_mut() {
                details.causes.push(StatusCause {
                    reason: "NamespaceTerminating".into(),
                    message: format!("namespace {namespace} is being terminated"),
                    field: "metadata.namespace".into(),
                });
            }
            return Err(status);
        }
        Ok(())
    }

    /// Reads the object, lets `change` produce its new state, and writes it with a
    /// compare-and-swap, retrying on conflict (`GuaranteedUpdate`). `change` sees the
    /// current object with its resourceVersion and may fail (a stale resourceVersion in a
    /// PUT is its 409). `subresource` selects status-like update rules.
    pub async fn update<F>(
        &self,
        resource: &Resource,
        namespace: &str,
        name: &str,
        subresource: &str,
        options: &WriteOptions,
        mut change: F,
    ) -> Result<Value, Status>
    where
        F: FnMut(&Value) -> Result<Value, Status> + Send,
    {
        let gr = resource.group_resource();
        let key = resource.key(namespace, name);
        for _ in 0..64 {
            let (current_kv, current) = self.read_current(&key, gr, name).await?;
            let mut object = change(&current)?;
            if meta::name(&object) != name {
                return Err(Status::bad_request(format!(
                    "the name of the object ({}) does not match the name on the URL ({name})",
                    meta::name(&object)
                )));
            }
            if resource.namespaced {
                let given = meta::namespace(&object).to_string();
                if !given.is_empty() && given != namespace {
                    return Err(Status::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                meta::set(&mut object, "namespace", namespace);
            }
            // Metadata the server owns.
            let mut errors = Vec::new();
            let given_uid = meta::uid(&object).to_string();
            if !given_uid.is_empty() && given_uid != meta::uid(&current) {
                errors.push(FieldError::invalid(
                    "metadata.uid",
                    given_uid,
                    "field is immutable",
                ));
            }
            for field in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
            ] {
                match current.get("metadata").and_then(|m| m.get(field)) {
                    Some(v) => meta::set(&mut object, field, v.clone()),
                    None => meta::remove(&mut object, field),
                }
            }
            strategy::prepare_update(resource.plural, subresource, &mut object, &current);
            errors.extend(validate_meta(resource, &object));
            errors.extend(strategy::validate_update_of(
                resource.plural,
                subresource,
                &object,
                Some(&current),
            ));
            if !errors.is_empty() {
                return Err(Status::invalid(resource.group, resource.kind, name, &errors));
            }
            meta::set(
                &mut object,
                "resourceVersion",
                current_kv.mod_revision.to_string(),
            );
            if object == current {
                return Ok(object);
            }
            if options.dry_run {
                return Ok(object);
            }
            if is_finished_deleting(resource, &object) {
                match self.store.delete(&key, current_kv.mod_revision).await {
                    Ok(revision) => {
                        meta::set(&mut object, "resourceVersion", revision.to_string());
                        return Ok(object);
                    }
                    Err(badge_store::Error::Conflict { .. }) => continue,
                    Err(e) => return Err(store_error(e)),
                }
            }
            match self
                .store
                .update(&key, encode(&object)?, current_kv.mod_revision)
                .await
            {
                Ok(revision) => {
                    meta::set(&mut object, "resourceVersion", revision.to_string());
                    return Ok(object);
                }
                Err(badge_store::Error::Conflict { .. }) => continue,
                Err(e) => return Err(store_error(e)),
            }
        }
        Err(Status::conflict(
            gr,
            name,
            "too many concurrent updates; please try again",
        ))
    }

    /// The stored object at `key` with its resourceVersion, read from the store (not the
    /// cache) because a compare-and-swap follows.
    async fn read_current(
        &self,
        key: &str,
        gr: GroupResource<'_>,
        name: &str,
    ) -> Result<(badge_store::KeyValue, Value), Status> {
        let (current_kv, _) = self.store.get(key).await.map_err(store_error)?;
        let current_kv = current_kv.ok_or_else(|| Status::not_found(gr, name))?;
        let current = decode_object(&current_kv.value, current_kv.mod_revision)
            .ok_or_else(|| Status::internal("undecodable object in the store"))?;
        Ok((current_kv, current))
    }

    /// Deletes an object: at once, or by marking it when finalizers must run first.
    pub async fn delete(
        &self,
        resource: &Resource,
        namespace: &str,
        name: &str,
        options: &DeleteOptions,
    ) -> Result<DeleteOutcome, Status> {
        let gr = resource.group_resource();
        let key = resource.key(namespace, name);
        for _ in 0..64 {
            let (current_kv, current) = self.read_current(&key, gr, name).await?;
            if let Some(uid) = options.precondition_uid.as_deref()
                && uid != meta::uid(&current)
            {
                return Err(Status::conflict(
                    gr,
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        meta::uid(&current)
                    ),
                ));
            }
            if let Some(rv) = options.precondition_resource_version.as_deref()
                && rv != meta::resource_version(&current)
            {
                return Err(Status::conflict(
                    gr,
                    name,
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                        meta::resource_version(&current)
                    ),
                ));
            }
            match graceful::plan(
                resource.plural,
                &current,
                options.grace_period_seconds,
                badge_api::clock::now(),
            ) {
                GracefulDelete::Immediate => {}
                GracefulDelete::Pending => return Ok(DeleteOutcome::Pending(current)),
                GracefulDelete::Mark {
                    deletion_timestamp,
                    grace_period_seconds,
                } => {
                    let mut object = current.clone();
                    meta::set(&mut object, "deletionTimestamp", deletion_timestamp);
                    meta::set(&mut object, "deletionGracePeriodSeconds", grace_period_seconds);
                    let lingers = grace_period_seconds > 0 || !meta::finalizers(&object).is_empty();
                    if options.dry_run {
                        return Ok(if lingers {
                            DeleteOutcome::Pending(object)
                        } else {
                            DeleteOutcome::Deleted(object)
                        });
                    }
                    // As upstream, the mark is written even when the object goes at once, so
                    // watchers see MODIFIED (with the deletion time) before DELETED.
                    let revision = match self
                        .store
                        .update(&key, encode(&object)?, current_kv.mod_revision)
                        .await
                    {
                        Ok(revision) => revision,
                        Err(badge_store::Error::Conflict { .. }) => continue,
                        Err(e) => return Err(store_error(e)),
                    };
                    meta::set(&mut object, "resourceVersion", revision.to_string());
                    if lingers {
                        return Ok(DeleteOutcome::Pending(object));
                    }
                    match self.store.delete(&key, revision).await {
                        Ok(revision) => {
                            meta::set(&mut object, "resourceVersion", revision.to_string());
                            return Ok(DeleteOutcome::Deleted(object));
                        }
                        Err(badge_store::Error::Conflict { .. }) => {
                            // Another delete finished it after the mark (upstream's
                            // ignoreNotFound): it is gone as asked.
                            if self.store.get(&key).await.map_err(store_error)?.0.is_none() {
                                return Ok(DeleteOutcome::Deleted(object));
                            }
                            // Changed since the mark: decide again from its new state.
                            continue;
                        }
                        Err(e) => return Err(store_error(e)),
                    }
                }
            }
            let needs_finalizing =
                !meta::finalizers(&current).is_empty() || namespace_finalizers(resource, &current);
            if needs_finalizing {
                if meta::deletion_timestamp(&current).is_some() {
                    return Ok(DeleteOutcome::Pending(current));
                }
                let mut object = current.clone();
                meta::set(
                    &mut object,
                    "deletionTimestamp",
                    meta::format_time(badge_api::clock::now()),
                );
                meta::set(&mut object, "deletionGracePeriodSeconds", 0);
                if resource.plural == "namespaces"
                    && let Some(status) = object
                        .as_object_mut()
                        .map(|o| o.entry("status").or_insert_with(|| serde_json::json!({})))
                    && let Some(s) = status.as_object_mut()
                {
                    s.insert("phase".into(), Value::String("Terminating".into()));
                }
                if options.dry_run {
                    return Ok(DeleteOutcome::Pending(object));
                }
                match self
                    .store
                    .update(&key, encode(&object)?, current_kv.mod_revision)
                    .await
                {
                    Ok(revision) => {
                        meta::set(&mut object, "resourceVersion", revision.to_string());
                        return Ok(DeleteOutcome::Pending(object));
                    }
                    Err(badge_store::Error::Conflict { .. }) => continue,
                    Err(e) => return Err(store_error(e)),
                }
            }
            if options.dry_run {
                return Ok(DeleteOutcome::Deleted(current));
            }
            match self.store.delete(&key, current_kv.mod_revision).await {
                Ok(revision) => {
                    let mut object = current;
                    meta::set(&mut object, "resourceVersion", revision.to_string());
                    return Ok(DeleteOutcome::Deleted(object));
                }
                Err(badge_store::Error::Conflict { .. }) => continue,
                Err(e) => return Err(store_error(e)),
            }
        }
        Err(Status::conflict(
            gr,
            name,
            "too many concurrent updates; please try again",
        ))
    }
}

const CONTINUE_EXPIRED: &str = "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.";

fn namespace_finalizers(resource: &Resource, object: &Value) -> bool {
    resource.plural == "namespaces"
        && object
            .pointer("/spec/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty())
}

/// An object marked for deletion whose finalizers have all run is removed, unless its
/// grace period still runs (`ShouldDeleteDuringUpdate`): a terminating pod stays until its
/// deletion is confirmed.
fn is_finished_deleting(resource: &Resource, object: &Value) -> bool {
    let grace_over = object
        .pointer("/metadata/deletionGracePeriodSeconds")
        .and_then(Value::as_i64)
        .is_none_or(|g| g == 0);
    meta::deletion_timestamp(object).is_some()
        && grace_over
        && meta::finalizers(object).is_empty()
        && !namespace_finalizers(resource, object)
}

fn too_large_resource_version(requested: Revision, current: Revision) -> Status {
    let mut status = Status::timeout(format!(
        "Too large resource version: {requested}, current: {current}"
    ));
    status.details = Some(StatusDetails {
        causes: vec![StatusCause {
            reason: "ResourceVersionTooLarge".into(),
            message: "Too large resource version".into(),
            field: String::new(),
        }],
        retry_after_seconds: Some(1),
        ..Default::default()
    });
    status
}

/// The JSON stored for an object: everything but its resourceVersion, which the store's
/// revision provides.
fn encode(object: &Value) -> Result<bytes::Bytes, Status> {
    let mut stored = object.clone();
    meta::remove(&mut stored, "resourceVersion");
    serde_json::to_vec(&stored)
        .map(bytes::Bytes::from)
        .map_err(|e| Status::internal(e.to_string()))
}

/// Maps a store failure to the Status upstream answers with.
pub fn store_error(error: badge_store::Error) -> Status {
    match error {
        badge_store::Error::Compacted { requested, compacted } => {
            Status::resource_expired(format!("too old resource version: {requested} ({compacted})"))
        }
        badge_store::Error::FutureRevision { requested, current } => {
            too_large_resource_version(requested, current)
        }
        badge_store::Error::TooLarge => {
            Status::request_entity_too_large(badge_api::status::MAX_REQUEST_BODY_BYTES)
        }
        badge_store::Error::Unavailable(m) => {
            Status::service_unavailable(format!("storage unavailable: {m}"))
        }
        badge_store::Error::Timeout(m) => Status::timeout(format!("storage timeout: {m}")),
        badge_store::Error::Transform(m) => Status::internal_shown(m),
        // Upstream passes etcd's error through as it is (`ErrorToAPIStatus` on an error that
        // is no Status): 500, reason Unknown, etcd's own text, which tells the operator to
        // compact, defragment and disarm.
        badge_store::Error::NoSpace => {
            let mut status = Status::internal(badge_store::NO_SPACE_MESSAGE);
            status.reason = String::new();
            status.message = badge_store::NO_SPACE_MESSAGE.into();
            status.details = None;
            status
        }
        other => Status::internal(other.to_string()),
    }
}

/// `ValidateObjectMeta`: name or generateName, labels, annotations, finalizers.
fn validate_meta(resource: &Resource, object: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = meta::name(object);
    if name.is_empty() {
        errs.push(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        ));
    } else {
        for m in strategy::name_rule(resource.plural).errors(name) {
            errs.push(FieldError::invalid("metadata.name", name, m));
        }
    }
    if resource.namespaced && meta::namespace(object).is_empty() {
        errs.push(FieldError::required("metadata.namespace", ""));
    }
    if let Some(m) = object.get("metadata").and_then(|m| m.get("labels")) {
        match m.as_object() {
            Some(labels) => errs.extend(badge_api::validation::validate_labels(labels, "metadata.labels")),
            None if !m.is_null() => {
                errs.push(FieldError::invalid("metadata.labels", m.clone(), "must be a map"))
            }
            None => {}
        }
    }
    if let Some(a) = object
        .get("metadata")
        .and_then(|m| m.get("annotations"))
        .and_then(Value::as_object)
    {
        errs.extend(badge_api::validation::validate_annotations(
            a,
            "metadata.annotations",
        ));
    }
    for (i, f) in meta::finalizers(object).iter().enumerate() {
        for m in badge_api::validation::qualified_name_errors(f) {
            errs.push(FieldError::invalid(
                format!("metadata.finalizers[{i}]"),
                f.as_str(),
                m,
            ));
        }
    }
    errs
}

/// `names.SimpleNameGenerator`: the prefix plus five random characters.
fn generate_name(prefix: &str) -> String {
    let prefix = if prefix.len() > 58 { &prefix[..58] } else { prefix };
    format!("{prefix}{}", random_suffix())
}

/// Five characters of `utilrand.String(5)`'s alphabet (no vowels, no look-alikes).
pub fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    v: String,
    rv: Revision,
    start: String,
}

fn encode_continue(revision: Revision, last_key: &str, prefix: &str) -> String {
    let token = ContinueToken {
        v: "meta.k8s.io/v1".into(),
        rv: revision,
        start: last_key.strip_prefix(prefix).unwrap_or(last_key).to_string(),
    };
    let json = serde_json::to_vec(&token).unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

fn decode_continue(token: &str, prefix: &str) -> Result<(Revision, String), Status> {
    let bad = || {
        Status::bad_request(
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        )
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let token: ContinueToken = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    if token.v != "meta.k8s.io/v1" || token.rv <= 0 || token.start.contains("..") {
        return Err(bad());
    }
    Ok((token.rv, format!("{prefix}{}", token.start)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use badge_store::sqlite::SqliteStore;
    use badge_store::{KeyValue, ListOptions, ListResult, WatchStream};
    use bytes::Bytes;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// The embedded store, made unreachable or alarmed at will, as an etcd cluster can be.
    struct Faulty {
        inner: SqliteStore,
        down: AtomicBool,
        alarms: parking_lot::Mutex<Vec<String>>,
    }

    impl Faulty {
        fn reachable(&self) -> badge_store::Result<()> {
            if self.down.load(Ordering::SeqCst) {
                return Err(badge_store::Error::Unavailable("no leader".into()));
            }
            Ok(())
        }
    }

    #[async_trait::async_trait]
    impl Store for Faulty {
        async fn get(&self, key: &str) -> badge_store::Result<(Option<KeyValue>, Revision)> {
            self.reachable()?;
            self.inner.get(key).await
        }
        async fn list(&self, prefix: &str, options: ListOptions) -> badge_store::Result<ListResult> {
            self.reachable()?;
            self.inner.list(prefix, options).await
        }
        async fn create(&self, key: &str, value: Bytes) -> badge_store::Result<Revision> {
            self.reachable()?;
            self.inner.create(key, value).await
        }
        async fn update(&self, key: &str, value: Bytes, expected: Revision) -> badge_store::Result<Revision> {
            self.reachable()?;
            self.inner.update(key, value, expected).await
        }
        async fn delete(&self, key: &str, expected: Revision) -> badge_store::Result<Revision> {
            self.reachable()?;
            self.inner.delete(key, expected).await
        }
        async fn current_revision(&self) -> badge_store::Result<Revision> {
            self.reachable()?;
            self.inner.current_revision().await
        }
        async fn watch(&self, prefix: &str, after: Revision) -> badge_store::Result<WatchStream> {
            self.inner.watch(prefix, after).await
        }
        async fn compact(&self, revision: Revision) -> badge_store::Result<()> {
            self.inner.compact(revision).await
        }
        async fn compacted_revision(&self) -> badge_store::Result<Revision> {
            self.inner.compacted_revision().await
        }
        async fn alarms(&self) -> badge_store::Result<Vec<String>> {
            self.reachable()?;
            Ok(self.alarms.lock().clone())
        }
    }

    async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
        for _ in 0..200 {
            if check().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("timed out waiting for {what}");
    }

    #[tokio::test]
    async fn storage_health_follows_the_confirmations_and_the_alarms() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Faulty {
            inner: SqliteStore::open(&dir.path().join("s.db")).unwrap(),
            down: AtomicBool::new(false),
            alarms: Default::default(),
        });
        let registry = Registry::start_with_bound(store.clone(), 100, Duration::from_millis(300)).await;
        registry.storage_health().await.unwrap();

        // Unreachable: the cache still answers consistent reads within the bound, and past
        // it neither they nor readiness pass.
        store.down.store(true, Ordering::SeqCst);
        eventually("the bound to be crossed", async || {
            registry.storage_health().await.is_err()
        })
        .await;
        let reason = registry.storage_health().await.unwrap_err();
        assert!(
            reason.starts_with("the storage could not be confirmed current for "),
            "{reason}"
        );
        assert_eq!(registry.sync().await.unwrap_err().code, 503);

        store.down.store(false, Ordering::SeqCst);
        eventually("a confirmation", async || registry.storage_health().await.is_ok()).await;
        registry.sync().await.unwrap();

        // Reachable and current, but refusing writes.
        store.alarms.lock().push("NOSPACE".into());
        assert_eq!(
            registry.storage_health().await.unwrap_err(),
            "the storage raised alarms: NOSPACE"
        );
        store.alarms.lock().clear();
        registry.storage_health().await.unwrap();
    }

    #[test]
    fn a_full_store_answers_with_etcds_text() {
        let status = store_error(badge_store::Error::NoSpace);
        assert_eq!(status.code, 500);
        assert_eq!(status.reason, "");
        assert_eq!(status.message, "etcdserver: mvcc: database space exceeded");
    }
}
