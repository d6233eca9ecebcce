//! Writes: create, update (patch and apply end here too) and delete, with preconditions,
//! finalizers and graceful deletion, as upstream's `registry.Store` does them.

use badge_api::meta;
use badge_api::resources::{self, Resource};
use badge_api::status::{FieldError, GroupResource, Status, StatusCause};
use serde_json::Value;

use crate::cache::decode_object;
use crate::graceful::{self, GracefulDelete};
use crate::strategy::{self, Deletion};

use super::*;

/// Options of a write.
#[derive(Clone, Debug, Default)]
pub struct WriteOptions {
    /// `dryRun=All`: everything but the store write.
    pub dry_run: bool,
}

/// `DeleteOptions` preconditions and flags.
#[derive(Clone, Debug, Default)]
pub struct DeleteOptions {
    /// `dryRun=All`: decide and answer, write nothing.
    pub dry_run: bool,
    /// `preconditions.uid`: delete only the object with this UID.
    pub precondition_uid: Option<String>,
    /// `preconditions.resourceVersion`: delete only this version of the object.
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

impl Registry {
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
        prepare_created(resource, &mut object)?;
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
        self.wrote(revision);
        meta::set(&mut object, "resourceVersion", revision.to_string());
        Ok(object)
    }

    pub(super) async fn check_namespace_open(
        &self,
        resource: &Resource,
        namespace: &str,
        name: &str,
    ) -> Result<(), Status> {
        let ns_resource = resources::NAMESPACES;
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
            prepare_updated(resource, namespace, name, subresource, &mut object, &current)?;
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
                        self.wrote(revision);
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
                    self.wrote(revision);
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
                resource,
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
                        Ok(revision) => self.wrote(revision),
                        Err(badge_store::Error::Conflict { .. }) => continue,
                        Err(e) => return Err(store_error(e)),
                    };
                    meta::set(&mut object, "resourceVersion", revision.to_string());
                    if lingers {
                        return Ok(DeleteOutcome::Pending(object));
                    }
                    match self.store.delete(&key, revision).await {
                        Ok(revision) => {
                            self.wrote(revision);
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
                if strategy::of(resource).deletion == Deletion::Finalized
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
                        self.wrote(revision);
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
                    self.wrote(revision);
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

/// What a create sets and checks once the name and namespace are known: uid and
/// creationTimestamp, the fields a client may not set, the strategy's defaults, validation.
pub(super) fn prepare_created(resource: &Resource, object: &mut Value) -> Result<(), Status> {
    let now = badge_api::meta::format_time(badge_api::clock::now());
    meta::set(object, "uid", uuid::Uuid::new_v4().to_string());
    meta::set(object, "creationTimestamp", now);
    for field in [
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "selfLink",
    ] {
        meta::remove(object, field);
    }
    strategy::prepare_create(resource, object);
    let mut errors = validate_meta(resource, object);
    errors.extend(strategy::validate(resource, object, None));
    if !errors.is_empty() {
        return Err(Status::invalid(
            resource.group,
            resource.kind,
            meta::name(object),
            &errors,
        ));
    }
    Ok(())
}

/// What an update through `subresource` sets and checks on the new state of `current`: the
/// name and namespace, the metadata the server owns, the strategy's carry-over, validation.
pub(super) fn prepare_updated(
    resource: &Resource,
    namespace: &str,
    name: &str,
    subresource: &str,
    object: &mut Value,
    current: &Value,
) -> Result<(), Status> {
    if meta::name(object) != name {
        return Err(Status::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            meta::name(object)
        )));
    }
    if resource.namespaced {
        let given = meta::namespace(object).to_string();
        if !given.is_empty() && given != namespace {
            return Err(Status::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        meta::set(object, "namespace", namespace);
    }
    // Metadata the server owns.
    let mut errors = Vec::new();
    let given_uid = meta::uid(object).to_string();
    if !given_uid.is_empty() && given_uid != meta::uid(current) {
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
            Some(v) => meta::set(object, field, v.clone()),
            None => meta::remove(object, field),
        }
    }
    strategy::prepare_update(resource, subresource, object, current);
    errors.extend(validate_meta(resource, object));
    errors.extend(strategy::validate_update_of(
        resource,
        subresource,
        object,
        Some(current),
    ));
    if !errors.is_empty() {
        return Err(Status::invalid(resource.group, resource.kind, name, &errors));
    }
    Ok(())
}

fn namespace_finalizers(resource: &Resource, object: &Value) -> bool {
    strategy::of(resource).deletion == Deletion::Finalized
        && object
            .pointer("/spec/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty())
}

/// An object marked for deletion whose finalizers have all run is removed, unless its
/// grace period still runs (`ShouldDeleteDuringUpdate`): a terminating pod stays until its
/// deletion is confirmed.
pub(super) fn is_finished_deleting(resource: &Resource, object: &Value) -> bool {
    let grace_over = object
        .pointer("/metadata/deletionGracePeriodSeconds")
        .and_then(Value::as_i64)
        .is_none_or(|g| g == 0);
    meta::deletion_timestamp(object).is_some()
        && grace_over
        && meta::finalizers(object).is_empty()
        && !namespace_finalizers(resource, object)
}

/// The JSON stored for an object: everything but its resourceVersion, which the store's
/// revision provides. An object with its metadata is written as it is, the resourceVersion
/// skipped, rather than copied to remove it; anything else is first given the metadata
/// [`meta::remove`] makes.
pub(super) fn encode(object: &Value) -> Result<bytes::Bytes, Status> {
    let written = match object {
        Value::Object(fields) if fields.get("metadata").is_some_and(Value::is_object) => {
            serde_json::to_vec(&Stored(fields))
        }
        _ => {
            let mut stored = object.clone();
            meta::remove(&mut stored, "resourceVersion");
            serde_json::to_vec(&stored)
        }
    };
    written
        .map(bytes::Bytes::from)
        .map_err(|e| Status::internal(e.to_string()))
}

/// An object's fields, its metadata without the resourceVersion.
struct Stored<'a>(&'a serde_json::Map<String, Value>);

impl serde::Serialize for Stored<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in self.0 {
            match value {
                Value::Object(metadata) if key == "metadata" => {
                    map.serialize_entry(key, &WithoutResourceVersion(metadata))?;
                }
                _ => map.serialize_entry(key, value)?,
            }
        }
        map.end()
    }
}

struct WithoutResourceVersion<'a>(&'a serde_json::Map<String, Value>);

impl serde::Serialize for WithoutResourceVersion<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        for (key, value) in self.0 {
            if key != "resourceVersion" {
                map.serialize_entry(key, value)?;
            }
        }
        map.end()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The stored JSON as first written: the object copied, its resourceVersion removed.
    fn encode_by_copy(object: &Value) -> bytes::Bytes {
        let mut stored = object.clone();
        meta::remove(&mut stored, "resourceVersion");
        serde_json::to_vec(&stored).unwrap().into()
    }

    #[test]
    fn objects_are_stored_as_a_copy_without_their_resource_version_would_be() {
        let objects = [
            json!({"apiVersion": "identity.badge.dev/v1", "kind": "IssuedToken",
                "metadata": {"name": "6f1c2a9e-3b7d-4c1e-9a52-000000000001", "namespace": "default",
                    "uid": "0d6e3c1a", "creationTimestamp": "2026-12-05T07:00:00Z", "resourceVersion": "42",
                    "labels": {"identity.badge.dev/service-account": "app", "resourceVersion": "kept"}},
                "spec": {"audiences": ["a", "b"], "expiresAt": "2026-12-05T08:00:00Z", "n": 1.5, "t": true},
                "status": {"useCount": 3, "metadata": {"resourceVersion": "kept too"}}}),
            json!({"metadata": {"name": "no-version"}, "data": {"k": "v\"\u{e9}\n"}}),
            json!({"metadata": {"resourceVersion": "1"}}),
            json!({"metadata": {}}),
            json!({"kind": "NoMetadata"}),
            json!({"metadata": "not an object", "kind": "x"}),
            json!({"metadata": null}),
            json!({}),
            json!([1, 2]),
            json!("text"),
            Value::Null,
        ];
        for object in &objects {
            assert_eq!(encode(object).unwrap(), encode_by_copy(object), "{object}");
        }
    }
}
