//! Reads and paging: get, and list with selectors and `limit`/`continue`, from the watch
//! cache or (for an exact or old revision) the store, as upstream's `registry.Store` and
//! cacher serve them.

use std::sync::Arc;

use badge_api::meta;
use badge_api::resources::Resource;
use badge_api::selectors::{FieldSelector, LabelSelector};
use badge_api::status::Status;
use badge_store::Revision;
use base64::Engine;
use serde_json::Value;

use crate::cache::{CachedObject, decode_object};
use crate::strategy;

use super::*;

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
    /// The label selector; empty selects everything.
    pub labels: LabelSelector,
    /// The field selector; empty selects everything.
    pub fields: FieldSelector,
}

impl Filter {
    /// Checks that every field in the selector is selectable for the resource.
    pub fn validate(&self, resource: &Resource) -> Result<(), Status> {
        let probe = Value::Object(Default::default());
        for term in &self.fields.terms {
            if strategy::field_value(resource, &probe, &term.field).is_none() {
                return Err(Status::bad_request(format!(
                    "field label not supported: {}",
                    term.field
                )));
            }
        }
        Ok(())
    }

    /// Whether `object` of `resource` passes both selectors.
    pub fn matches(&self, resource: &Resource, object: &Value) -> bool {
        (self.labels.is_empty() || self.labels.matches(&meta::labels(object)))
            && (self.fields.is_empty()
                || self
                    .fields
                    .matches(|f| strategy::field_value(resource, object, f)))
    }
}

/// One page of a list.
#[derive(Debug)]
pub struct ListPage {
    /// The page's objects, in key order.
    pub items: Vec<Arc<Value>>,
    /// The revision the list was read at (the list's `resourceVersion`).
    pub revision: Revision,
    /// `metadata.continue` for the next page, when more remain.
    pub continue_token: Option<String>,
    /// `metadata.remainingItemCount`, when it is known.
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
        } else if self.filter.fields.is_empty() {
            // Labels alone decide: read only them, and build the object once it is kept.
            if !self.filter.labels.matches(&cached.labels()) {
                return;
            }
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

impl Registry {
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

    /// The object `namespace/name` of `resource`, read as `read` asks.
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
                .and_then(|kv| CachedObject::new(&kv.key, &kv.value, kv.mod_revision))
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
}

const CONTINUE_EXPIRED: &str = "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.";

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
