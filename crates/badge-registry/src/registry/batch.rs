//! Batched writes of the server's own records (the usage flush): each object is prepared as
//! [`Registry::create`] and [`Registry::update`] prepare it, then all go to the store in one
//! [`Store::write_batch`]. Not for the REST path: there is no admission, no dry run, no
//! generateName, and an update is written once against the state it was made from, never
//! retried; a caller that loses a race reads again and writes later.

use std::sync::Arc;

use badge_api::meta;
use badge_api::resources::Resource;
use badge_api::status::Status;
use badge_store::BatchOp;
use serde_json::Value;

use super::write::{encode, is_finished_deleting, prepare_created, prepare_updated};
use super::*;
use crate::CachedObject;

/// One write of [`Registry::write_batch`].
#[derive(Clone, Debug)]
pub enum BatchWrite {
    /// Creates `object` in `namespace`, as [`Registry::create`] does.
    Create {
        /// What kind of object.
        resource: &'static Resource,
        /// Its namespace ("" for cluster-scoped resources).
        namespace: String,
        /// The object, named.
        object: Value,
    },
    /// Creates an object that writes its stored JSON itself, as [`BatchWrite::Create`]
    /// creates its general form: for kinds whose create changes and checks nothing but
    /// metadata ([`SELF_WRITTEN_KINDS`]). Its outcome is the metadata as created.
    CreateSelfWritten {
        /// What kind of object.
        resource: &'static Resource,
        /// Its namespace ("" for cluster-scoped resources).
        namespace: String,
        /// The object.
        object: Arc<dyn SelfWritten>,
    },
    /// Replaces the status of `current` (as the watch cache holds it) with what `status`
    /// writes from the status stored, as an update of the status subresource does, for
    /// kinds whose status the server alone writes ([`SELF_WRITTEN_KINDS`]): the stored JSON
    /// is written again with only its `status` member changed, rather than decoded, carried
    /// over, checked and encoded. Its outcome is the object's metadata.
    UpdateStatusSelfWritten {
        /// What kind of object.
        resource: &'static Resource,
        /// The object as read, at the revision the write is made against.
        current: Arc<CachedObject>,
        /// Writes the new status.
        status: Arc<dyn SelfWrittenStatus>,
    },
    /// Replaces `current` with `object` through `subresource` ("" for the object itself), as
    /// [`Registry::update`] does, if `current` is still what is stored (its resourceVersion).
    Update {
        /// What kind of object.
        resource: &'static Resource,
        /// "status" for a status update.
        subresource: &'static str,
        /// The object as read (the watch cache's), with its resourceVersion.
        current: Arc<Value>,
        /// Its new state.
        object: Value,
    },
}

/// An object written straight to its stored JSON: a record the server makes by the
/// thousand skips being built as a `Value`, prepared, encoded and dropped.
pub trait SelfWritten: std::fmt::Debug + Send + Sync {
    /// What a create checks and sets: the object with only its `metadata` (name, labels,
    /// annotations).
    fn metadata(&self) -> Value;
    /// Appends the JSON that [`BatchWrite::Create`] would store for the object's general
    /// form given the metadata the server set.
    fn write_stored(&self, server: &ServerMetadata<'_>, out: &mut Vec<u8>);
}

/// A status the server writes from the one stored, for
/// [`BatchWrite::UpdateStatusSelfWritten`].
pub trait SelfWrittenStatus: std::fmt::Debug + Send + Sync {
    /// Appends the new status (a JSON object) given the stored one, if any.
    fn write_status(&self, current: Option<&serde_json::value::RawValue>, out: &mut Vec<u8>);
}

/// The metadata the server sets on an object it creates.
#[derive(Clone, Copy, Debug)]
pub struct ServerMetadata<'a> {
    /// The namespace it is created in ("" for cluster-scoped resources).
    pub namespace: &'a str,
    /// Its new uid.
    pub uid: &'a str,
    /// Its creationTimestamp.
    pub creation_timestamp: &'a str,
}

/// The kinds whose strategy neither changes nor checks anything but metadata on create, so
/// that preparing an object's metadata alone prepares the object, and whose status only the
/// server writes and nothing checks.
pub const SELF_WRITTEN_KINDS: [&Resource; 1] = [badge_api::resources::ISSUEDTOKENS];

/// Refuses a self-written write of a kind not in [`SELF_WRITTEN_KINDS`].
fn written_by_their_owner(resource: &Resource) -> Result<(), Status> {
    if SELF_WRITTEN_KINDS
        .iter()
        .any(|kind| kind.group == resource.group && kind.plural == resource.plural)
    {
        Ok(())
    } else {
        Err(Status::internal(format!(
            "{} are not written by their owner",
            resource.group_resource()
        )))
    }
}

impl Registry {
    /// Writes `writes` in one store batch; each write's outcome at its index: the object
    /// as written, with its resourceVersion, or the Status the single write would answer
    /// (AlreadyExists, Conflict when `current` is no longer stored, NotFound when it is gone,
    /// Invalid). An update that changes nothing is not written.
    pub async fn write_batch(&self, writes: Vec<BatchWrite>) -> Vec<Result<Value, Status>> {
        let mut outcomes: Vec<Result<Value, Status>> = Vec::with_capacity(writes.len());
        // For each op sent: the index of its write, its resource, what it writes, and
        // whether it creates.
        let mut sent: Vec<(usize, &'static Resource, Value, bool)> = Vec::new();
        let mut ops = Vec::new();
        // Namespaces seen open in this batch: a flush creates many records in few.
        let mut open = std::collections::HashSet::new();
        for (index, write) in writes.into_iter().enumerate() {
            let (resource, created, prepared) = match write {
                BatchWrite::Create {
                    resource,
                    namespace,
                    object,
                } => (
                    resource,
                    true,
                    self.prepare_batch_create(resource, &namespace, object, &mut open)
                        .await
                        .map(|(object, op)| (object, Some(op))),
                ),
                BatchWrite::CreateSelfWritten {
                    resource,
                    namespace,
                    object,
                } => (
                    resource,
                    true,
                    self.prepare_batch_self_written(resource, &namespace, &*object, &mut open)
                        .await
                        .map(|(object, op)| (object, Some(op))),
                ),
                BatchWrite::UpdateStatusSelfWritten {
                    resource,
                    current,
                    status,
                } => (
                    resource,
                    false,
                    prepare_batch_status_self_written(resource, &current, &*status),
                ),
                BatchWrite::Update {
                    resource,
                    subresource,
                    current,
                    object,
                } => (
                    resource,
                    false,
                    prepare_batch_update(resource, subresource, &current, object),
                ),
            };
            match prepared {
                Ok((object, Some(op))) => {
                    // Filled in once the store answers.
                    outcomes.push(Ok(Value::Null));
                    sent.push((index, resource, object, created));
                    ops.push(op);
                }
                Ok((object, None)) => outcomes.push(Ok(object)),
                Err(status) => outcomes.push(Err(status)),
            }
        }
        let written = if ops.is_empty() {
            Vec::new()
        } else {
            self.store.write_batch(ops).await
        };
        for ((index, resource, mut object, created), result) in sent.into_iter().zip(written) {
            let gr = resource.group_resource();
            let name = meta::name(&object).to_string();
            outcomes[index] = match result {
                Ok(revision) => {
                    self.wrote(revision);
                    meta::set(&mut object, "resourceVersion", revision.to_string());
                    Ok(object)
                }
                Err(badge_store::Error::AlreadyExists { .. }) => Err(Status::already_exists(gr, &name)),
                Err(badge_store::Error::Conflict { current: None, .. }) if !created => {
                    Err(Status::not_found(gr, &name))
                }
                Err(badge_store::Error::Conflict { .. }) => {
                    Err(Status::conflict(gr, &name, Status::OPTIMISTIC_LOCK_MESSAGE))
                }
                Err(e) => Err(store_error(e)),
            };
        }
        outcomes
    }

    async fn prepare_batch_create(
        &self,
        resource: &Resource,
        namespace: &str,
        mut object: Value,
        open: &mut std::collections::HashSet<String>,
    ) -> Result<(Value, BatchOp), Status> {
        self.place_batch_create(resource, namespace, &mut object, open)
            .await?;
        prepare_created(resource, &mut object)?;
        let op = BatchOp::Create {
            key: resource.key(namespace, meta::name(&object)),
            value: encode(&object)?,
        };
        Ok((object, op))
    }

    /// The create of [`BatchWrite::CreateSelfWritten`]: its metadata placed and prepared as
    /// [`Registry::prepare_batch_create`] does the whole object's, then the object written
    /// with what the server set.
    async fn prepare_batch_self_written(
        &self,
        resource: &Resource,
        namespace: &str,
        object: &dyn SelfWritten,
        open: &mut std::collections::HashSet<String>,
    ) -> Result<(Value, BatchOp), Status> {
        let gr = resource.group_resource();
        written_by_their_owner(resource)?;
        let mut metadata = object.metadata();
        if !metadata.get("metadata").is_some_and(Value::is_object) {
            return Err(Status::internal(format!("{gr} written without metadata")));
        }
        self.place_batch_create(resource, namespace, &mut metadata, open)
            .await?;
        prepare_created(resource, &mut metadata)?;
        let mut value = Vec::with_capacity(1024);
        object.write_stored(
            &ServerMetadata {
                namespace: meta::namespace(&metadata),
                uid: meta::uid(&metadata),
                creation_timestamp: meta::creation_timestamp(&metadata),
            },
            &mut value,
        );
        let op = BatchOp::Create {
            key: resource.key(namespace, meta::name(&metadata)),
            value: value.into(),
        };
        Ok((metadata, op))
    }

    /// Sets a created object's namespace, checking once a batch that it is open.
    async fn place_batch_create(
        &self,
        resource: &Resource,
        namespace: &str,
        object: &mut Value,
        open: &mut std::collections::HashSet<String>,
    ) -> Result<(), Status> {
        if resource.namespaced {
            meta::set(object, "namespace", namespace);
            if !open.contains(namespace) {
                self.check_namespace_open(resource, namespace, meta::name(object))
                    .await?;
                open.insert(namespace.to_string());
            }
        } else {
            meta::remove(object, "namespace");
        }
        Ok(())
    }
}

/// The metadata of `current` with its new stored JSON, the status `status` writes in place
/// of the stored one, and the op writing it; no op when that changes nothing.
fn prepare_batch_status_self_written(
    resource: &Resource,
    current: &CachedObject,
    status: &dyn SelfWrittenStatus,
) -> Result<(Value, Option<BatchOp>), Status> {
    let gr = resource.group_resource();
    written_by_their_owner(resource)?;
    let key = current.key();
    let (namespace, name) = namespace_and_name(resource, key)
        .ok_or_else(|| Status::internal(format!("{gr} read at a key not its own: {key}")))?;
    let mut metadata = serde_json::Map::new();
    metadata.insert("name".into(), Value::String(name.to_string()));
    if resource.namespaced {
        metadata.insert("namespace".into(), Value::String(namespace.to_string()));
    }
    let mut outcome = serde_json::Map::new();
    outcome.insert("metadata".into(), Value::Object(metadata));
    let stored = current.json();
    let value = with_status_written(&stored, status)
        .ok_or_else(|| Status::internal(format!("{gr} \"{name}\": its status could not be written")))?;
    if value == *stored {
        return Ok((Value::Object(outcome), None));
    }
    let op = BatchOp::Update {
        key: key.to_string(),
        value: value.into(),
        expected: current.revision(),
    };
    Ok((Value::Object(outcome), Some(op)))
}

/// The namespace ("" for cluster-scoped kinds) and name an object of `resource` is stored
/// under at `key`.
fn namespace_and_name<'k>(resource: &Resource, key: &'k str) -> Option<(&'k str, &'k str)> {
    let rest = key.strip_prefix(resource.key_prefix().as_str())?;
    if resource.namespaced {
        rest.split_once('/')
    } else {
        Some(("", rest))
    }
}

/// `stored` (a JSON object as serde_json writes one: members in sorted order) with its
/// `status` member written by `status`, the other members copied as they are.
fn with_status_written(stored: &[u8], status: &dyn SelfWrittenStatus) -> Option<Vec<u8>> {
    use serde_json::value::RawValue;
    let mut members: std::collections::BTreeMap<std::borrow::Cow<'_, str>, &RawValue> =
        serde_json::from_slice(stored).ok()?;
    let mut written = Vec::with_capacity(256);
    status.write_status(members.get("status").copied(), &mut written);
    let written: &RawValue = serde_json::from_slice(&written).ok()?;
    if !written.get().starts_with('{') {
        return None;
    }
    members.insert("status".into(), written);
    let mut out = Vec::with_capacity(stored.len() + written.get().len());
    out.push(b'{');
    for (i, (key, value)) in members.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, key).ok()?;
        out.push(b':');
        out.extend_from_slice(value.get().as_bytes());
    }
    out.push(b'}');
    Some(out)
}

/// `object` prepared as the new state of `current`, and the op writing it; no op when that
/// changes nothing.
fn prepare_batch_update(
    resource: &Resource,
    subresource: &str,
    current: &Value,
    mut object: Value,
) -> Result<(Value, Option<BatchOp>), Status> {
    let gr = resource.group_resource();
    let (namespace, name) = (meta::namespace(current), meta::name(current));
    let expected: badge_store::Revision = meta::resource_version(current)
        .parse()
        .map_err(|_| Status::internal(format!("{gr} \"{name}\" was read without a resourceVersion")))?;
    prepare_updated(resource, namespace, name, subresource, &mut object, current)?;
    meta::set(&mut object, "resourceVersion", expected.to_string());
    if object == *current {
        return Ok((object, None));
    }
    if is_finished_deleting(resource, &object) {
        // Removing it is a delete, which batches do not write: the caller reads again.
        return Err(Status::conflict(gr, name, Status::OPTIMISTIC_LOCK_MESSAGE));
    }
    let op = BatchOp::Update {
        key: resource.key(namespace, name),
        value: encode(&object)?,
        expected,
    };
    Ok((object, Some(op)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use badge_api::resources;
    use badge_store::intercept::{Call, Hook, Intercepted};
    use badge_store::sqlite::SqliteStore;
    use serde_json::json;

    use super::*;
    use crate::WriteOptions;

    /// Counts the writes that reach SQLite: each a transaction of its own.
    #[derive(Default)]
    struct Transactions(AtomicUsize);

    impl Hook for Transactions {
        fn before(&self, call: &Call<'_>) -> badge_store::Result<()> {
            if !call.written_keys().is_empty() {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
            Ok(())
        }
    }

    fn token(name: &str) -> Value {
        json!({"apiVersion": "identity.badge.dev/v1", "kind": "IssuedToken",
               "metadata": {"name": name, "labels": {"identity.badge.dev/service-account": "app"}},
               "spec": {"serviceAccountName": "app"}})
    }

    #[tokio::test]
    async fn a_batch_prepares_each_write_as_alone_and_makes_one_store_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let transactions = Arc::new(Transactions::default());
        let sqlite = Arc::new(SqliteStore::open(&dir.path().join("s.db")).unwrap());
        let store = Arc::new(Intercepted::new(sqlite, transactions.clone()));
        let registry = Registry::start(store.clone(), 100).await;
        let (tokens, options) = (resources::ISSUEDTOKENS, WriteOptions::default());
        registry
            .create(
                resources::NAMESPACES,
                "",
                json!({"metadata": {"name": "demo"}}),
                &options,
            )
            .await
            .unwrap();
        for name in ["used", "raced", "gone"] {
            registry
                .create(tokens, "demo", token(name), &options)
                .await
                .unwrap();
        }
        registry.sync_own_writes().await.unwrap();
        let cached = |name: &str| registry.get_cached(tokens, "demo", name).unwrap();
        let (used, raced, gone) = (cached("used"), cached("raced"), cached("gone"));
        registry
            .update(tokens, "demo", "raced", "status", &options, |current| {
                let mut object = current.clone();
                object["status"] = json!({"useCount": 9});
                Ok(object)
            })
            .await
            .unwrap();
        registry
            .delete(tokens, "demo", "gone", &crate::DeleteOptions::default())
            .await
            .unwrap();
        let with_status = |current: &Value, count: i64| {
            let mut object = current.clone();
            object["status"] = json!({"useCount": count});
            // A status update keeps the rest as stored.
            object["spec"]["serviceAccountName"] = json!("someone-else");
            object
        };
        let update = |current: &Arc<Value>, object: Value| BatchWrite::Update {
            resource: tokens,
            subresource: "status",
            current: current.clone(),
            object,
        };
        let create = |namespace: &str, object: Value| BatchWrite::Create {
            resource: tokens,
            namespace: namespace.into(),
            object,
        };
        let before = transactions.0.load(Ordering::SeqCst);
        let outcomes = registry
            .write_batch(vec![
                create("demo", token("new")),
                create("demo", token("used")),
                create("missing", token("elsewhere")),
                create("demo", token("Not_A_Name")),
                update(&used, with_status(&used, 2)),
                update(&raced, with_status(&raced, 1)),
                update(&gone, with_status(&gone, 1)),
                update(&used, (*used).clone()),
            ])
            .await;
        assert_eq!(
            transactions.0.load(Ordering::SeqCst) - before,
            1,
            "one store transaction"
        );
        let new = outcomes[0].as_ref().unwrap();
        assert!(!meta::uid(new).is_empty() && new["metadata"]["creationTimestamp"].is_string());
        assert_eq!(new["metadata"]["namespace"], "demo");
        let code = |i: usize| outcomes[i].as_ref().unwrap_err().reason.clone();
        assert_eq!(code(1), "AlreadyExists");
        assert_eq!(code(2), "NotFound", "{:?}", outcomes[2]);
        assert_eq!(code(3), "Invalid");
        let written = outcomes[4].as_ref().unwrap();
        assert_eq!(written["status"]["useCount"], 2);
        assert_eq!(written["spec"]["serviceAccountName"], "app");
        assert_eq!(code(5), "Conflict");
        assert_eq!(
            outcomes[5].as_ref().unwrap_err().message,
            "Operation cannot be fulfilled on issuedtokens.identity.badge.dev \"raced\": the object has been modified; please apply your changes to the latest version and try again"
        );
        assert_eq!(code(6), "NotFound");
        assert_eq!(
            outcomes[7].as_ref().unwrap(),
            &*used,
            "an unchanged object is not written"
        );

        registry.sync_own_writes().await.unwrap();
        assert_eq!(cached("new").as_ref(), new);
        assert_eq!(cached("used").as_ref(), written);
        assert_eq!(cached("raced")["status"]["useCount"], 9);
    }

    /// An object written as its general form would be: the plumbing around the writer.
    #[derive(Debug)]
    struct WrittenAsValue(Value);

    impl SelfWritten for WrittenAsValue {
        fn metadata(&self) -> Value {
            json!({"metadata": self.0["metadata"].clone()})
        }

        fn write_stored(&self, server: &ServerMetadata<'_>, out: &mut Vec<u8>) {
            let mut object = self.0.clone();
            meta::set(&mut object, "namespace", server.namespace);
            meta::set(&mut object, "uid", server.uid);
            meta::set(&mut object, "creationTimestamp", server.creation_timestamp);
            out.extend_from_slice(&encode(&object).unwrap());
        }
    }

    #[tokio::test]
    async fn a_self_written_create_is_prepared_and_stored_as_its_general_form_would_be() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(&dir.path().join("s.db")).unwrap());
        let registry = Registry::start(store.clone(), 100).await;
        let tokens = resources::ISSUEDTOKENS;
        registry
            .create(
                resources::NAMESPACES,
                "",
                json!({"metadata": {"name": "demo"}}),
                &WriteOptions::default(),
            )
            .await
            .unwrap();
        let written =
            |resource: &'static Resource, namespace: &str, object: Value| BatchWrite::CreateSelfWritten {
                resource,
                namespace: namespace.into(),
                object: Arc::new(WrittenAsValue(object)),
            };
        let mut long_label = token("long-label");
        long_label["metadata"]["labels"]["identity.badge.dev/service-account"] = json!("a".repeat(64));
        let outcomes = registry
            .write_batch(vec![
                written(tokens, "demo", token("written")),
                BatchWrite::Create {
                    resource: tokens,
                    namespace: "demo".into(),
                    object: token("general"),
                },
                written(tokens, "demo", token("Not_A_Name")),
                written(tokens, "demo", long_label.clone()),
                written(tokens, "missing", token("elsewhere")),
                written(resources::CONFIGMAPS, "demo", json!({"metadata": {"name": "cm"}})),
                written(tokens, "demo", json!({"kind": "NoMetadata"})),
                written(tokens, "demo", token("general")),
            ])
            .await;
        let created = outcomes[0].as_ref().unwrap();
        assert_eq!(created["metadata"]["namespace"], "demo");
        assert!(!meta::uid(created).is_empty());
        assert!(!meta::creation_timestamp(created).is_empty());
        assert!(!meta::resource_version(created).is_empty());
        let general = outcomes[1].as_ref().unwrap();
        let mut expected = general.clone();
        for field in ["name", "uid", "creationTimestamp", "resourceVersion"] {
            expected["metadata"][field] = created["metadata"][field].clone();
        }
        let key = tokens.key("demo", "written");
        let stored = store.get(&key).await.unwrap().0.unwrap().value;
        assert_eq!(stored, encode(&expected).unwrap());
        let code = |i: usize| outcomes[i].as_ref().unwrap_err().reason.clone();
        assert_eq!(code(2), "Invalid");
        let general_long_label = registry
            .create(tokens, "demo", long_label, &WriteOptions::default())
            .await
            .unwrap_err();
        assert_eq!(outcomes[3].as_ref().unwrap_err(), &general_long_label);
        assert_eq!(code(4), "NotFound");
        assert_eq!(code(5), "InternalError");
        assert_eq!(code(6), "InternalError");
        assert_eq!(code(7), "AlreadyExists");
        registry.sync_own_writes().await.unwrap();
        let cached = registry.get_cached(tokens, "demo", "written").unwrap();
        assert_eq!(cached["spec"], general["spec"]);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod status_tests {
    use serde_json::json;

    use super::*;

    /// Writes a fixed status, keeping what was stored under `"kept"`.
    #[derive(Debug)]
    struct Fixed;

    impl SelfWrittenStatus for Fixed {
        fn write_status(&self, current: Option<&serde_json::value::RawValue>, out: &mut Vec<u8>) {
            let kept: Value = current.map_or(Value::Null, |raw| serde_json::from_str(raw.get()).unwrap());
            serde_json::to_writer(out, &json!({"useCount": 3, "kept": kept})).unwrap();
        }
    }

    #[test]
    fn a_status_written_in_place_is_the_json_the_decoded_object_encodes_to() {
        let objects = [
            json!({"apiVersion": "identity.badge.dev/v1", "kind": "IssuedToken",
                   "metadata": {"name": "j", "namespace": "n", "labels": {"a": "é\"\\\n"}},
                   "spec": {"audiences": ["x", "\u{2028}"], "expiresAt": "2026-01-01T00:00:00Z"}}),
            json!({"apiVersion": "identity.badge.dev/v1", "kind": "IssuedToken",
                   "metadata": {"name": "j"}, "spec": {}, "status": {"useCount": 1, "lastUsed": {"time": "t"}}}),
            // Members sorting after "status" stay after it.
            json!({"metadata": {}, "zeta": [1, 2.5, null, true]}),
        ];
        for object in objects {
            let stored = serde_json::to_vec(&object).unwrap();
            let written = with_status_written(&stored, &Fixed).unwrap();
            let mut expected = object.clone();
            expected["status"] =
                json!({"useCount": 3, "kept": object.get("status").cloned().unwrap_or(Value::Null)});
            assert_eq!(
                String::from_utf8(written).unwrap(),
                serde_json::to_string(&expected).unwrap(),
                "{object}"
            );
        }
    }

    #[test]
    fn a_status_that_is_no_json_object_is_refused() {
        #[derive(Debug)]
        struct Broken(&'static str);
        impl SelfWrittenStatus for Broken {
            fn write_status(&self, _: Option<&serde_json::value::RawValue>, out: &mut Vec<u8>) {
                out.extend_from_slice(self.0.as_bytes());
            }
        }
        let stored = br#"{"metadata":{"name":"j"},"spec":{}}"#;
        for broken in ["", "[1]", "{\"a\":", "{} {}", "7"] {
            assert!(
                with_status_written(stored, &Broken(broken)).is_none(),
                "{broken:?}"
            );
        }
    }

    #[test]
    fn only_the_kinds_the_server_writes_itself_are_written_so() {
        assert!(written_by_their_owner(badge_api::resources::ISSUEDTOKENS).is_ok());
        let secret =
            CachedObject::new("/registry/secrets/demo/s", br#"{"metadata":{"name":"s"}}"#, 3).unwrap();
        let refused =
            prepare_batch_status_self_written(badge_api::resources::SECRETS, &secret, &Fixed).unwrap_err();
        assert_eq!(refused.code, 500);
        assert!(
            refused.message.contains("are not written by their owner"),
            "{}",
            refused.message
        );
    }

    #[test]
    fn a_record_is_named_by_its_key() {
        let tokens = badge_api::resources::ISSUEDTOKENS;
        assert_eq!(
            namespace_and_name(tokens, "/registry/issuedtokens/demo/abc"),
            Some(("demo", "abc"))
        );
        assert_eq!(namespace_and_name(tokens, "/registry/secrets/demo/abc"), None);
    }
}
