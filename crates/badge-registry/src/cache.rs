//! The watch cache: every stored object in memory, fed by one store watch, serving gets,
//! lists and watches. It is never ahead of the store (it only applies what the store
//! committed, in revision order) and a consistent read waits until it has caught up with
//! the store's current revision, as kube-apiserver's cacher does.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use badge_store::transform::Transformer;
use badge_store::{EventKind, Revision, Store};
use futures::StreamExt;
use parking_lot::RwLock;
use serde_json::Value;
use tokio::sync::{broadcast, watch};

use crate::index::{Indexes, PODS_PREFIX};

mod feed;
use crate::live::{LiveToken, LiveTokens};
pub use feed::Sink;

/// The kind of a cache event, as a watch reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    /// The object was created.
    Added,
    /// The object was changed.
    Modified,
    /// The object was removed.
    Deleted,
}

impl EventType {
    /// The watch event's `type`: `ADDED`, `MODIFIED` or `DELETED`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change to one object.
#[derive(Debug)]
pub struct CacheEvent {
    /// Whether the object was added, changed or removed.
    pub kind: EventType,
    /// The object's store key.
    pub key: String,
    /// The store revision of the change.
    pub revision: Revision,
    /// The object after the change; for a delete, its last state with the delete's revision.
    pub object: Arc<CachedObject>,
    /// The object before the change (None for an add).
    pub prev: Option<Arc<CachedObject>>,
    /// For an IssuedToken record of a bound token, added or changed: its `spec.expiresAt`
    /// (None inside when it has none that reads as a time), as the cache read it applying
    /// the change, so the expiry controller need not read the record again. None for
    /// anything else, and for the events of a watch's initial state.
    pub bound_token_expiry: Option<Option<jiff::Timestamp>>,
    /// For an IssuedToken record added or changed: whether its `spec.revoked` is `true`, as
    /// the cache read it applying the change. None for anything else, for a record the cache
    /// could not read as one, and for the events of a watch's initial state.
    pub token_revoked: Option<bool>,
}

/// An object as the cache holds it: its store key and the JSON the store holds, packed
/// ([`crate::packed`]), and the revision it was read at, decoded on each read, plus the
/// metadata the token authenticator checks on every request. A decoded `Value` takes several
/// times the memory of its JSON (a map node per object, an allocation per string), and the
/// cache holds every object.
pub struct CachedObject {
    /// The key, then the JSON with its recurring phrases packed: one allocation, as the
    /// cache's map is keyed by the key held here rather than by a copy of its own.
    bytes: Box<[u8]>,
    /// Where the key ends and the JSON begins in `bytes`.
    key_len: u32,
    revision: Revision,
    /// Where `metadata.uid`, `metadata.deletionTimestamp`, `spec.nodeName` (for the
    /// pods-by-node index), the `kubernetes.io/service-account.name` annotation (for the
    /// Secrets-by-ServiceAccount index) and the `identity.badge.dev/disabled` label lie in
    /// `bytes`: read from there, not kept twice.
    fields: [Span; FIELDS],
    /// The fields `json` spells otherwise than their text (with escapes), which is rare.
    spelled_apart: Option<Box<[Option<Box<str>>; FIELDS]>>,
}

const UID: usize = 0;
const DELETION_TIMESTAMP: usize = 1;
const NODE_NAME: usize = 2;
const SERVICE_ACCOUNT_NAME: usize = 3;
const DISABLED: usize = 4;
const FIELDS: usize = 5;

/// Where a string lies in a packed JSON text.
#[derive(Clone, Copy, Debug)]
struct Span {
    start: u32,
    len: u32,
}

impl Span {
    /// Not in the text: absent, or spelled apart.
    const NONE: Span = Span {
        start: u32::MAX,
        len: 0,
    };
}

/// A string field that is kept only when it is a string: an index must never make an object
/// of some other resource, whose field of that name means something else, undecodable.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum IndexedField<'a> {
    Text(#[serde(borrow)] Text<'a>),
    Other(serde::de::IgnoredAny),
}

impl<'a> IndexedField<'a> {
    fn text(field: Option<&'a Self>) -> Option<&'a std::borrow::Cow<'a, str>> {
        match field? {
            IndexedField::Text(text) => Some(&text.0),
            IndexedField::Other(_) => None,
        }
    }
}

/// A value read only from a JSON object: serde's derived structs also read an array, by
/// position, which the reads that judge a misshapen record do not all do alike.
struct Mapped<T>(T);

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for Mapped<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for Visitor<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(self, map: M) -> Result<T, M::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        deserializer
            .deserialize_map(Visitor(std::marker::PhantomData))
            .map(Mapped)
    }
}

/// A JSON string, borrowed from the text when it is spelled without escapes (serde's own
/// `Cow` always copies).
struct Text<'a>(std::borrow::Cow<'a, str>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(std::borrow::Cow::Borrowed(text)))
            }
            fn visit_str<E>(self, text: &str) -> Result<Text<'de>, E> {
                Ok(Text(std::borrow::Cow::Owned(text.to_string())))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

impl CachedObject {
    /// Keeps the object stored at `key`; None when it is not a JSON object.
    pub fn new(key: &str, json: &[u8], revision: Revision) -> Option<CachedObject> {
        #[derive(serde::Deserialize)]
        struct Object<'a> {
            #[serde(borrow, default)]
            metadata: Option<Metadata<'a>>,
            #[serde(borrow, default)]
            spec: Option<Spec<'a>>,
        }
        #[derive(serde::Deserialize)]
        struct Metadata<'a> {
            #[serde(borrow, default)]
            uid: Option<Text<'a>>,
            #[serde(rename = "deletionTimestamp", borrow, default)]
            deletion_timestamp: Option<Text<'a>>,
            #[serde(borrow, default)]
            annotations: Option<Annotations<'a>>,
            #[serde(borrow, default)]
            labels: Option<Labels<'a>>,
        }
        /// The labels a cached object's fields come from: read from a map, and from
        /// anything else as none, so labels of the wrong shape never make the object
        /// undecodable.
        #[derive(Default)]
        struct Labels<'a> {
            disabled: Option<IndexedField<'a>>,
        }
        impl<'de: 'a, 'a> serde::Deserialize<'de> for Labels<'a> {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct Visitor<'a>(std::marker::PhantomData<Labels<'a>>);
                impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visitor<'a> {
                    type Value = Labels<'a>;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str("labels")
                    }
                    fn visit_map<M: serde::de::MapAccess<'de>>(
                        self,
                        mut map: M,
                    ) -> Result<Labels<'a>, M::Error> {
                        let mut labels = Labels::default();
                        while let Some(key) = map.next_key::<Text<'de>>()? {
                            // The last of a repeated key wins, as in the decoded object.
                            if key.0 == badge_api::identity::DISABLED_LABEL {
                                labels.disabled = Some(map.next_value()?);
                            } else {
                                map.next_value::<serde::de::IgnoredAny>()?;
                            }
                        }
                        Ok(labels)
                    }
                    fn visit_seq<S: serde::de::SeqAccess<'de>>(
                        self,
                        mut seq: S,
                    ) -> Result<Labels<'a>, S::Error> {
                        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                        Ok(Labels::default())
                    }
                    fn visit_bool<E>(self, _: bool) -> Result<Labels<'a>, E> {
                        Ok(Labels::default())
                    }
                    fn visit_i64<E>(self, _: i64) -> Result<Labels<'a>, E> {
                        Ok(Labels::default())
                    }
                    fn visit_u64<E>(self, _: u64) -> Result<Labels<'a>, E> {
                        Ok(Labels::default())
                    }
                    fn visit_f64<E>(self, _: f64) -> Result<Labels<'a>, E> {
                        Ok(Labels::default())
                    }
                    fn visit_str<E>(self, _: &str) -> Result<Labels<'a>, E> {
                        Ok(Labels::default())
                    }
                    fn visit_unit<E>(self) -> Result<Labels<'a>, E> {
                        Ok(Labels::default())
                    }
                }
                deserializer.deserialize_any(Visitor(std::marker::PhantomData))
            }
        }
        #[derive(serde::Deserialize)]
        struct Annotations<'a> {
            #[serde(rename = "kubernetes.io/service-account.name", borrow, default)]
            service_account_name: Option<IndexedField<'a>>,
        }
        #[derive(serde::Deserialize)]
        struct Spec<'a> {
            #[serde(rename = "nodeName", borrow, default)]
            node_name: Option<IndexedField<'a>>,
        }
        let object: Object<'_> = serde_json::from_slice(json).ok()?;
        let metadata = object.metadata.as_ref();
        let texts: [Option<&std::borrow::Cow<'_, str>>; FIELDS] = [
            metadata.and_then(|m| m.uid.as_ref()).map(|t| &t.0),
            metadata.and_then(|m| m.deletion_timestamp.as_ref()).map(|t| &t.0),
            IndexedField::text(object.spec.as_ref().and_then(|s| s.node_name.as_ref())),
            IndexedField::text(
                metadata
                    .and_then(|m| m.annotations.as_ref())
                    .and_then(|a| a.service_account_name.as_ref()),
            ),
            IndexedField::text(
                metadata
                    .and_then(|m| m.labels.as_ref())
                    .and_then(|l| l.disabled.as_ref()),
            ),
        ];
        CachedObject::from_texts(key, json, revision, texts)
    }

    /// An IssuedToken record as [`CachedObject::new`] caches it and its
    /// [`crate::identity::TokenView`], from one parse of its JSON. None when the record is not
    /// shaped as both read it alike (a string where one is read, no member repeated), for
    /// the two reads apart to judge: every record the server writes is shaped so.
    pub(crate) fn new_issued_token<'j>(
        key: &str,
        json: &'j [u8],
        revision: Revision,
    ) -> Option<(CachedObject, crate::identity::TokenView<'j>)> {
        #[derive(serde::Deserialize)]
        struct Record<'a> {
            #[serde(borrow, default)]
            metadata: Option<Mapped<Metadata<'a>>>,
            #[serde(borrow, default)]
            spec: Option<Mapped<Spec<'a>>>,
        }
        #[derive(serde::Deserialize)]
        struct Metadata<'a> {
            #[serde(borrow, default)]
            uid: Option<Text<'a>>,
            #[serde(rename = "deletionTimestamp", borrow, default)]
            deletion_timestamp: Option<Text<'a>>,
            #[serde(borrow, default)]
            annotations: Option<Mapped<Annotations<'a>>>,
            #[serde(borrow, default)]
            labels: Option<Mapped<Labels<'a>>>,
        }
        #[derive(serde::Deserialize)]
        struct Annotations<'a> {
            #[serde(rename = "kubernetes.io/service-account.name", borrow, default)]
            service_account_name: Option<Text<'a>>,
        }
        #[derive(serde::Deserialize)]
        struct Labels<'a> {
            #[serde(rename = "identity.badge.dev/disabled", borrow, default)]
            disabled: Option<Text<'a>>,
            #[serde(rename = "identity.badge.dev/service-account", borrow, default)]
            service_account: Option<Text<'a>>,
            #[serde(rename = "identity.badge.dev/token-kind", borrow, default)]
            token_kind: Option<Text<'a>>,
        }
        #[derive(serde::Deserialize)]
        struct Spec<'a> {
            #[serde(rename = "nodeName", borrow, default)]
            node_name: Option<Text<'a>>,
            #[serde(rename = "serviceAccountName", borrow, default)]
            service_account_name: Option<Text<'a>>,
            #[serde(rename = "expiresAt", borrow, default)]
            expires_at: Option<Text<'a>>,
            #[serde(default)]
            revoked: Option<Value>,
        }
        let Mapped(record): Mapped<Record<'j>> = serde_json::from_slice(json).ok()?;
        let metadata = record.metadata.as_ref().map(|m| &m.0);
        let labels = metadata.and_then(|m| m.labels.as_ref()).map(|l| &l.0);
        let spec = record.spec.as_ref().map(|s| &s.0);
        let texts: [Option<&std::borrow::Cow<'_, str>>; FIELDS] = [
            metadata.and_then(|m| m.uid.as_ref()).map(|t| &t.0),
            metadata.and_then(|m| m.deletion_timestamp.as_ref()).map(|t| &t.0),
            spec.and_then(|s| s.node_name.as_ref()).map(|t| &t.0),
            metadata
                .and_then(|m| m.annotations.as_ref())
                .and_then(|a| a.0.service_account_name.as_ref())
                .map(|t| &t.0),
            labels.and_then(|l| l.disabled.as_ref()).map(|t| &t.0),
        ];
        let object = CachedObject::from_texts(key, json, revision, texts)?;
        let text = |t: Option<&Text<'j>>| t.map(|t| t.0.clone());
        let view = crate::identity::TokenView::of_fields(
            text(labels.and_then(|l| l.service_account.as_ref())),
            text(labels.and_then(|l| l.token_kind.as_ref())),
            text(spec.and_then(|s| s.service_account_name.as_ref())),
            text(spec.and_then(|s| s.expires_at.as_ref())),
            spec.and_then(|s| s.revoked.as_ref()),
        );
        Some((object, view))
    }

    /// The cached form of `json`, keeping where each of `texts` (read from it) lies.
    fn from_texts(
        key: &str,
        json: &[u8],
        revision: Revision,
        texts: [Option<&std::borrow::Cow<'_, str>>; FIELDS],
    ) -> Option<CachedObject> {
        // Where each text spelled as is lies in `json` (a borrowed text points into it).
        let offsets = texts.map(|text| match text {
            Some(std::borrow::Cow::Borrowed(text)) => {
                (text.as_ptr() as usize).checked_sub(json.as_ptr() as usize)
            }
            _ => None,
        });
        let key_len = u32::try_from(key.len()).ok()?;
        let (bytes, packed_offsets) = crate::packed::pack_tracking(key.as_bytes(), json, offsets)?;
        let mut fields = [Span::NONE; FIELDS];
        let mut spelled_apart: [Option<Box<str>>; FIELDS] = Default::default();
        for (i, text) in texts.iter().enumerate() {
            let Some(text) = text else { continue };
            let span = packed_offsets[i].and_then(|start| {
                let span = Span {
                    start: u32::try_from(start).ok()?,
                    len: u32::try_from(text.len()).ok()?,
                };
                let end = start.checked_add(text.len())?;
                (bytes.get(start..end) == Some(text.as_bytes())).then_some(span)
            });
            match span {
                Some(span) => fields[i] = span,
                None => spelled_apart[i] = Some(text.as_ref().into()),
            }
        }
        Some(CachedObject {
            bytes,
            key_len,
            revision,
            fields,
            spelled_apart: spelled_apart
                .iter()
                .any(Option::is_some)
                .then(|| Box::new(spelled_apart)),
        })
    }

    /// One of the fields kept beside the JSON.
    fn field(&self, field: usize) -> Option<&str> {
        let span = self.fields[field];
        if span.start == Span::NONE.start {
            return self.spelled_apart.as_ref().and_then(|f| f[field].as_deref());
        }
        let start = usize::try_from(span.start).ok()?;
        let end = start.checked_add(usize::try_from(span.len).ok()?)?;
        std::str::from_utf8(self.bytes.get(start..end)?).ok()
    }

    /// The store key it is held at.
    pub fn key(&self) -> &str {
        // Written from a `&str`, so always UTF-8.
        std::str::from_utf8(self.key_bytes()).unwrap_or_default()
    }

    fn key_bytes(&self) -> &[u8] {
        self.bytes.get(..self.key_len as usize).unwrap_or_default()
    }

    /// The packed JSON.
    fn packed(&self) -> &[u8] {
        self.bytes.get(self.key_len as usize..).unwrap_or_default()
    }

    /// The object, with its resourceVersion set.
    pub fn value(&self) -> Arc<Value> {
        // Only valid JSON objects are kept, so decoding cannot fail.
        Arc::new(decode_object(&self.json(), self.revision).unwrap_or(Value::Null))
    }

    /// `metadata.labels` with their string values, as `meta::labels` reads them, decoded
    /// without the rest of the object: a label selector over a large list rejects what it
    /// does not match without building each object.
    pub fn labels(&self) -> std::collections::BTreeMap<String, String> {
        #[derive(serde::Deserialize)]
        struct Object<'a> {
            #[serde(borrow, default)]
            metadata: Option<Metadata<'a>>,
        }
        #[derive(serde::Deserialize)]
        struct Metadata<'a> {
            #[serde(borrow, default)]
            labels: Option<std::collections::BTreeMap<std::borrow::Cow<'a, str>, IndexedField<'a>>>,
        }
        let json = self.json();
        let Ok(object) = serde_json::from_slice::<Object<'_>>(&json) else {
            return Default::default();
        };
        object
            .metadata
            .and_then(|m| m.labels)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(key, value)| match value {
                IndexedField::Text(text) => Some((key.into_owned(), text.0.into_owned())),
                IndexedField::Other(_) => None,
            })
            .collect()
    }

    /// The JSON the store holds.
    pub(crate) fn json(&self) -> std::borrow::Cow<'_, [u8]> {
        crate::packed::unpack(self.packed())
    }

    /// Calls `f` with the JSON the store holds, for a reader that needs a few fields of
    /// many objects and would rather not decode each whole.
    pub fn with_json<R>(&self, f: impl FnOnce(&[u8]) -> R) -> R {
        f(&self.json())
    }

    /// The bytes this object takes in the cache, its key included: the shared allocation
    /// and what it owns (allocator overhead aside).
    pub fn heap_bytes(&self) -> usize {
        let spelled_apart = self.spelled_apart.as_deref().map_or(0, |fields| {
            std::mem::size_of_val(fields) + fields.iter().flatten().map(|s| s.len()).sum::<usize>()
        });
        // An `Arc`'s allocation holds two counts before the value.
        2 * std::mem::size_of::<usize>()
            + std::mem::size_of::<CachedObject>()
            + self.bytes.len()
            + spelled_apart
    }

    /// The revision it was written at (its resourceVersion).
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// `metadata.uid` ("" when unset).
    pub fn uid(&self) -> &str {
        self.field(UID).unwrap_or("")
    }

    /// `metadata.deletionTimestamp`, as stored.
    pub fn deletion_timestamp(&self) -> Option<&str> {
        self.field(DELETION_TIMESTAMP)
    }

    /// `spec.nodeName`, when it is a string.
    pub fn node_name(&self) -> Option<&str> {
        self.field(NODE_NAME)
    }

    /// The `kubernetes.io/service-account.name` annotation, when set.
    pub fn service_account_name(&self) -> Option<&str> {
        self.field(SERVICE_ACCOUNT_NAME)
    }

    /// Whether the `identity.badge.dev/disabled` label is `true` (a ServiceAccount that gets
    /// and honours no token): read on every request a ServiceAccount token makes.
    pub fn disabled(&self) -> bool {
        self.field(DISABLED) == Some("true")
    }
}

impl std::fmt::Debug for CachedObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Objects may be Secrets: their content is never printed.
        f.debug_struct("CachedObject")
            .field("revision", &self.revision)
            .field("key", &self.key())
            .field("bytes", &self.packed().len())
            .finish()
    }
}

/// The keys the cache holds: API objects.
const OBJECT_PREFIX: &str = "/registry/";

/// How many past events are kept by default for watches that resume from a resourceVersion.
pub const DEFAULT_HISTORY: usize = 20_000;
/// How many live events a slow watcher may fall behind before it is ended.
const BROADCAST: usize = 8_192;

/// How often values that could not be decrypted are tried again: a KMS plugin that was down
/// may be back. When one reads now, the cache relists, as upstream's reflector retries a
/// list that failed to decrypt until it succeeds.
const UNREADABLE_RETRY: Duration = if cfg!(test) {
    Duration::from_millis(100)
} else {
    Duration::from_secs(5)
};
/// How many unreadable values one retry tries.
const UNREADABLE_PROBES: usize = 16;

/// Why one pass of feeding the cache ended.
enum SyncEnd {
    Store(badge_store::Error),
    /// A value set aside as unreadable reads now: relist.
    Readable,
}

impl From<badge_store::Error> for SyncEnd {
    fn from(error: badge_store::Error) -> SyncEnd {
        SyncEnd::Store(error)
    }
}

/// The cache's objects in key order, each found by the key it holds.
#[derive(Default)]
struct Objects(std::collections::BTreeSet<Held>);

/// An object in [`Objects`], ordered and found by its key.
struct Held(Arc<CachedObject>);

impl std::borrow::Borrow<[u8]> for Held {
    fn borrow(&self) -> &[u8] {
        self.0.key_bytes()
    }
}

impl PartialEq for Held {
    fn eq(&self, other: &Held) -> bool {
        self.0.key_bytes() == other.0.key_bytes()
    }
}

impl Eq for Held {}

impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Held) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Held {
    // Byte order is the keys' string order: UTF-8 keeps it.
    fn cmp(&self, other: &Held) -> std::cmp::Ordering {
        self.0.key_bytes().cmp(other.0.key_bytes())
    }
}

impl FromIterator<Arc<CachedObject>> for Objects {
    fn from_iter<I: IntoIterator<Item = Arc<CachedObject>>>(objects: I) -> Objects {
        Objects(objects.into_iter().map(Held).collect())
    }
}

impl Objects {
    fn get(&self, key: &str) -> Option<&Arc<CachedObject>> {
        self.0.get(key.as_bytes()).map(|held| &held.0)
    }

    /// Holds `object` at its key; the object it replaces.
    fn insert(&mut self, object: Arc<CachedObject>) -> Option<Arc<CachedObject>> {
        self.0.replace(Held(object)).map(|held| held.0)
    }

    fn remove(&mut self, key: &str) -> Option<Arc<CachedObject>> {
        self.0.take(key.as_bytes()).map(|held| held.0)
    }

    /// The objects from `start` on, in key order, with their keys.
    fn from<'a>(
        &'a self,
        start: std::ops::Bound<&str>,
    ) -> impl Iterator<Item = (&'a str, &'a Arc<CachedObject>)> {
        self.0
            .range::<[u8], _>((start.map(str::as_bytes), std::ops::Bound::Unbounded))
            .map(|held| (held.0.key(), &held.0))
    }

    /// The objects whose key starts with `prefix`, in key order, with their keys.
    fn under<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (&'a str, &'a Arc<CachedObject>)> {
        self.from(std::ops::Bound::Included(prefix))
            .take_while(move |(key, _)| key.starts_with(prefix))
    }
}

struct State {
    revision: Revision,
    objects: Objects,
    history: VecDeque<Arc<CacheEvent>>,
    /// Every event with a revision above this is in `history`.
    history_floor: Revision,
    /// Keys whose stored value could not be transformed back (decrypted), with why: reads
    /// of them fail with that reason, and everything else is served as usual.
    unreadable: BTreeMap<String, Box<str>>,
    /// Kept with `objects`, under the same lock.
    indexes: Indexes,
    /// Each ServiceAccount's live IssuedTokens, kept with `objects` too.
    live_tokens: LiveTokens,
}

/// A watch that resumes from a revision older than the history holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooOld {
    /// The revision the watch asked to resume from.
    pub requested: Revision,
    /// The oldest revision the history still holds.
    pub oldest: Revision,
}

/// The start of a cache watch: events to send first, then the live events ([`CacheWatch::next`]).
pub struct CacheWatch {
    /// Events that bring the watcher from its revision to the cache's.
    pub initial: Vec<Arc<CacheEvent>>,
    live: broadcast::Receiver<Arc<CacheEvent>>,
    /// Changes when the cache is replaced by a relist: what happened between its old and
    /// new state was never seen, so no event can tell the watcher about it.
    resets: watch::Receiver<u64>,
    /// The cache's revision, published once every event up to it is broadcast.
    revisions: watch::Receiver<Revision>,
    /// The revision the initial events bring the watcher to.
    pub revision: Revision,
}

/// How long a watcher that ends waits for the rest of a transaction it has begun to send.
const TRANSACTION_WAIT: Duration = Duration::from_secs(1);

/// Why a cache watch delivers no more events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchEnd {
    /// The watcher fell too far behind the live events.
    Lagged,
    /// The cache relisted: the events the watcher missed cannot be replayed.
    Reset,
    /// The cache is gone.
    Closed,
}

impl CacheWatch {
    /// The next live event, in revision order, or why there are no more.
    pub async fn next(&mut self) -> Result<Arc<CacheEvent>, WatchEnd> {
        tokio::select! {
            // A relist is noticed before any event that follows it.
            biased;
            changed = self.resets.changed() => Err(match changed {
                Ok(()) => WatchEnd::Reset,
                Err(_) => WatchEnd::Closed,
            }),
            received = self.live.recv() => match received {
                Ok(_) if self.resets.has_changed().unwrap_or(true) => Err(WatchEnd::Reset),
                Ok(event) => Ok(event),
                Err(broadcast::error::RecvError::Lagged(_)) => Err(WatchEnd::Lagged),
                Err(broadcast::error::RecvError::Closed) => Err(WatchEnd::Closed),
            },
        }
    }

    /// The revision a bookmark may name now, given the revision of the last event taken:
    /// one whose every event this watcher has taken, so a client resuming from it misses
    /// nothing. None while events are queued, or while a transaction whose first events were
    /// taken is still being broadcast (its revision is published after all its events).
    pub fn bookmark_revision(&mut self, last_taken: Revision) -> Option<Revision> {
        // Read before looking at the queue: every event up to a published revision was
        // broadcast before it was published, so an empty queue now holds none of them.
        let published = *self.revisions.borrow_and_update();
        if !self.live.is_empty() || published < last_taken {
            return None;
        }
        Some(published)
    }

    /// The queued events of the transaction at `revision`, whose first events the watcher
    /// has taken: the writes of one etcd transaction share a revision, and a watch that
    /// ended between them would leave its client resuming from that revision without the
    /// rest. Waits (briefly) until the revision is published, when all of them are queued.
    pub async fn rest_of_transaction(&mut self, revision: Revision) -> Vec<Arc<CacheEvent>> {
        let published = tokio::time::timeout(
            TRANSACTION_WAIT,
            self.revisions.wait_for(|published| *published >= revision),
        )
        .await;
        if !matches!(published, Ok(Ok(_))) || self.resets.has_changed().unwrap_or(true) {
            return Vec::new();
        }
        let mut rest = Vec::new();
        while let Ok(event) = self.live.try_recv() {
            if event.revision != revision {
                break;
            }
            rest.push(event);
        }
        rest
    }
}

/// The cache.
pub struct WatchCache {
    history: usize,
    state: RwLock<State>,
    events: broadcast::Sender<Arc<CacheEvent>>,
    revision: watch::Sender<Revision>,
    /// Counts the relists that replaced the state (see [`CacheWatch::next`]).
    resets: watch::Sender<u64>,
    /// The task handing every event to the controllers.
    feed: feed::Feed,
}

impl Default for WatchCache {
    fn default() -> Self {
        WatchCache::new(DEFAULT_HISTORY)
    }
}

impl WatchCache {
    /// A cache keeping `history` past events (at least one).
    pub fn new(history: usize) -> WatchCache {
        let (events, _) = broadcast::channel(BROADCAST);
        let (revision, _) = watch::channel(0);
        let (resets, _) = watch::channel(0);
        WatchCache {
            history: history.max(1),
            state: RwLock::new(State {
                revision: 0,
                objects: Objects::default(),
                history: VecDeque::new(),
                history_floor: 0,
                unreadable: BTreeMap::new(),
                indexes: Indexes::default(),
                live_tokens: LiveTokens::default(),
            }),
            events,
            revision,
            resets,
            feed: feed::Feed::default(),
        }
    }

    /// The last revision applied.
    pub fn revision(&self) -> Revision {
        self.state.read().revision
    }

    /// One object, and the cache revision it was read at.
    pub fn get(&self, key: &str) -> (Option<Arc<Value>>, Revision) {
        let (object, revision) = self.get_cached(key);
        (object.map(|o| o.value()), revision)
    }

    /// One object as the cache holds it, and the cache revision it was read at.
    pub fn get_cached(&self, key: &str) -> (Option<Arc<CachedObject>>, Revision) {
        let state = self.state.read();
        (state.objects.get(key).cloned(), state.revision)
    }

    /// Why the object at `key` cannot be read, when its stored value could not be
    /// transformed back.
    pub fn unreadable(&self, key: &str) -> Option<String> {
        self.state
            .read()
            .unreadable
            .get(key)
            .map(|reason| reason.to_string())
    }

    /// The first key under `prefix` after `start_after` whose value cannot be read, and why.
    pub fn first_unreadable(&self, prefix: &str, start_after: Option<&str>) -> Option<(String, String)> {
        let state = self.state.read();
        state
            .unreadable
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .find(|(k, _)| start_after.is_none_or(|after| k.as_str() > after))
            .map(|(k, reason)| (k.clone(), reason.to_string()))
    }

    /// Objects whose key starts with `prefix` and is after `start_after`, in key order.
    pub fn list(&self, prefix: &str, start_after: Option<&str>) -> (Vec<(String, Arc<Value>)>, Revision) {
        let state = self.state.read();
        let start = match start_after {
            Some(k) if k >= prefix => std::ops::Bound::Excluded(k),
            _ => std::ops::Bound::Included(prefix),
        };
        let items = state
            .objects
            .from(start)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect::<Vec<_>>();
        let revision = state.revision;
        drop(state);
        let items = items.into_iter().map(|(k, v)| (k, v.value())).collect();
        (items, revision)
    }

    /// Calls `f` for each object under `prefix` without copying the list.
    pub fn for_each(&self, prefix: &str, mut f: impl FnMut(&str, &Arc<CachedObject>)) -> Revision {
        let state = self.state.read();
        for (k, v) in state.objects.under(prefix) {
            f(k, v);
        }
        state.revision
    }

    /// How many objects are under `prefix` and the bytes the cache holds for them (map
    /// entries, objects with their keys; allocator overhead aside): the memory a resource
    /// costs.
    pub fn footprint(&self, prefix: &str) -> (usize, usize) {
        let entry = std::mem::size_of::<Held>();
        let (mut objects, mut bytes) = (0, 0);
        self.for_each(prefix, |_, object| {
            objects += 1;
            bytes += entry + object.heap_bytes();
        });
        (objects, bytes)
    }

    /// How many IssuedTokens of `account` in `namespace` are live at `now` (see
    /// [`crate::identity::scan_live_tokens`] for what counts), from the counts kept on every
    /// event: nothing is scanned.
    pub fn live_tokens(&self, namespace: &str, account: &str, now: jiff::Timestamp) -> i64 {
        self.state.read().live_tokens.count(namespace, account, now)
    }

    /// [`WatchCache::live_tokens`] of every ServiceAccount of `namespace` that has any.
    pub fn live_tokens_by_service_account(
        &self,
        namespace: &str,
        now: jiff::Timestamp,
    ) -> std::collections::HashMap<String, i64> {
        self.state.read().live_tokens.counts_in(namespace, now)
    }

    /// The pods bound to `node` (`spec.nodeName`), in `namespace` (all namespaces when
    /// empty), in key order, from the index: no other pod is read.
    pub fn pods_on_node(&self, node: &str, namespace: &str) -> Vec<(String, Arc<CachedObject>)> {
        let state = self.state.read();
        state
            .indexes
            .pods_on_node(node)
            .filter(|key| {
                namespace.is_empty()
                    || key
                        .strip_prefix(PODS_PREFIX)
                        .and_then(|k| k.split_once('/'))
                        .is_some_and(|(ns, _)| ns == namespace)
            })
            .filter_map(|key| state.objects.get(key).map(|o| (key.clone(), o.clone())))
            .collect()
    }

    /// The Secrets in `namespace` whose `kubernetes.io/service-account.name` annotation
    /// names `account`, in key order, from the index.
    pub fn secrets_of_service_account(
        &self,
        namespace: &str,
        account: &str,
    ) -> Vec<(String, Arc<CachedObject>)> {
        let state = self.state.read();
        state
            .indexes
            .secrets_of(namespace, account)
            .filter_map(|key| state.objects.get(key).map(|o| (key.clone(), o.clone())))
            .collect()
    }

    /// Calls `f` for each object under `prefix` after `start_after`, as they were at
    /// `revision`: only when nothing under `prefix` has changed since (the history reaching
    /// back that far shows it), so the current objects are that snapshot. Returns false,
    /// without calling `f`, when that cannot be shown.
    pub fn for_each_as_of(
        &self,
        prefix: &str,
        start_after: &str,
        revision: Revision,
        mut f: impl FnMut(&str, &Arc<CachedObject>),
    ) -> bool {
        use std::ops::Bound;
        let state = self.state.read();
        if state.revision < revision || state.history_floor > revision {
            return false;
        }
        let changed = state
            .history
            .iter()
            .rev()
            .take_while(|event| event.revision > revision)
            .any(|event| event.key.starts_with(prefix));
        if changed {
            return false;
        }
        for (k, v) in state
            .objects
            .from(Bound::Excluded(start_after))
            .take_while(|(k, _)| k.starts_with(prefix))
        {
            f(k, v);
        }
        true
    }

    /// Waits until the cache has applied `revision`; false on timeout.
    pub async fn wait_for(&self, revision: Revision, timeout: Duration) -> bool {
        let mut rx = self.revision.subscribe();
        let wait = rx.wait_for(|r| *r >= revision);
        matches!(tokio::time::timeout(timeout, wait).await, Ok(Ok(_)))
    }

    /// A receiver of the applied revision, for bookmarks and progress.
    pub fn revisions(&self) -> watch::Receiver<Revision> {
        self.revision.subscribe()
    }

    /// Starts a watch of `prefix`. With `from` None, the initial events are ADDED events for
    /// the current state; with `Some(rv)`, the recorded events after `rv`.
    pub fn watch(&self, prefix: &str, from: Option<Revision>) -> Result<CacheWatch, TooOld> {
        let Some(rv) = from else {
            return Ok(self.watch_current(prefix));
        };
        let state = self.state.read();
        if rv < state.history_floor {
            return Err(TooOld {
                requested: rv,
                oldest: state.history_floor + 1,
            });
        }
        let initial = state
            .history
            .iter()
            .filter(|e| e.revision > rv && e.key.starts_with(prefix))
            .cloned()
            .collect();
        Ok(self.watch_under(&state, initial))
    }

    /// Starts a watch of `prefix` whose initial events are ADDED events for the current
    /// state.
    pub fn watch_current(&self, prefix: &str) -> CacheWatch {
        let state = self.state.read();
        let initial = state
            .objects
            .under(prefix)
            .map(|(k, v)| {
                Arc::new(CacheEvent {
                    kind: EventType::Added,
                    key: k.to_string(),
                    revision: state.revision,
                    object: v.clone(),
                    prev: None,
                    bound_token_expiry: None,
                    token_revoked: None,
                })
            })
            .collect();
        self.watch_under(&state, initial)
    }

    /// The watch continuing `initial`, subscribed while `state` is read-locked so no event
    /// falls between them: events are published under the write lock.
    fn watch_under(&self, state: &State, initial: Vec<Arc<CacheEvent>>) -> CacheWatch {
        CacheWatch {
            initial,
            live: self.events.subscribe(),
            // Relists take the write lock, so the count seen here is the state's.
            resets: self.resets.subscribe(),
            revisions: self.revision.subscribe(),
            revision: state.revision,
        }
    }

    /// Replaces the whole state with a fresh list at `revision` (start and relist), and ends
    /// every watch: what changed between the old state and the new one was never seen as
    /// events, so a watcher must relist as upstream's cacher makes it after a re-list.
    fn reset(
        &self,
        items: Vec<Arc<CachedObject>>,
        unreadable: BTreeMap<String, Box<str>>,
        revision: Revision,
    ) {
        let mut state = self.state.write();
        state.objects = items.into_iter().collect();
        state.indexes = Indexes::build(state.objects.under(""));
        let mut live_tokens = LiveTokens::default();
        for (key, object) in state.objects.under(crate::live::ISSUEDTOKENS_PREFIX) {
            if let Some(token) = LiveToken::of_cached(key, object) {
                live_tokens.add(token);
            }
        }
        state.live_tokens = live_tokens;
        state.unreadable = unreadable;
        state.history.clear();
        state.history_floor = revision;
        state.revision = revision;
        // Under the write lock: no event of the new state goes out before the reset shows.
        self.resets.send_modify(|count| *count += 1);
        drop(state);
        self.revision.send_replace(revision);
    }

    /// Applies a batch of store events (in revision order), their values as stored.
    fn apply(&self, events: Vec<badge_store::Event>, transformer: Option<&dyn Transformer>) {
        // Decoded before the lock is taken: readers (every request that looks an object up)
        // wait only for the events to be placed, not for a flush's thousand records to be
        // parsed and packed.
        // What a new state counts for is read then too, from the JSON at hand rather than
        // unpacked.
        type TokenFacts = (Option<LiveToken>, Option<Option<jiff::Timestamp>>, Option<bool>);
        let decoded: Vec<Result<(Option<CachedObject>, TokenFacts), String>> = events
            .iter()
            .map(|event| {
                if !event.key.starts_with(OBJECT_PREFIX) {
                    return Ok((None, (None, None, None)));
                }
                read_value(transformer, &event.key, &event.value).map(|value| {
                    // A record's cached form and what it counts for, from one parse.
                    if event.kind == EventKind::Put
                        && event.key.starts_with(crate::live::ISSUEDTOKENS_PREFIX)
                        && let Some((object, view)) =
                            CachedObject::new_issued_token(&event.key, &value, event.revision)
                    {
                        return (Some(object), LiveToken::of_view(&event.key, view));
                    }
                    let object = CachedObject::new(&event.key, &value, event.revision);
                    let facts = if event.kind == EventKind::Put && object.is_some() {
                        LiveToken::read(&event.key, &value)
                    } else {
                        (None, None, None)
                    };
                    (object, facts)
                })
            })
            .collect();
        let mut state = self.state.write();
        let mut last = state.revision;
        // An etcd transaction of several writes gives them one revision, delivered
        // together: the revision a batch opened takes its other events too, while a
        // revision already applied before the batch is a replay.
        let mut opened = None;
        for (event, decoded) in events.into_iter().zip(decoded) {
            let same_transaction = opened == Some(event.revision);
            if event.revision < state.revision || (event.revision == state.revision && !same_transaction) {
                continue;
            }
            opened = Some(event.revision);
            if !event.key.starts_with(OBJECT_PREFIX) {
                last = event.revision;
                state.revision = event.revision;
                continue;
            }
            let (mut live_token, mut bound_token_expiry, mut token_revoked) = (None, None, None);
            let decoded = match decoded {
                Ok((object, facts)) => {
                    state.unreadable.remove(&event.key);
                    (live_token, bound_token_expiry, token_revoked) = facts;
                    object
                }
                // A delete still removes the object; its last state is the one held.
                Err(reason) => {
                    if event.kind == EventKind::Put {
                        state.unreadable.insert(event.key.clone(), reason.into());
                    } else {
                        state.unreadable.remove(&event.key);
                    }
                    match (event.kind, state.objects.get(&event.key)) {
                        (EventKind::Delete, Some(held)) => {
                            CachedObject::new(&event.key, &held.json(), event.revision)
                        }
                        _ => {
                            if let Some(held) = state.objects.remove(&event.key) {
                                state.indexes.remove(&event.key, &held);
                                if let Some(token) = LiveToken::of_cached(&event.key, &held) {
                                    state.live_tokens.remove(&token);
                                }
                            }
                            None
                        }
                    }
                }
            };
            let object = match decoded {
                Some(o) => Arc::new(o),
                None => {
                    // Skipped, but applied: reads waiting for this revision must not stall.
                    if !state.unreadable.contains_key(&event.key) {
                        tracing::error!(key = %event.key, revision = event.revision, "undecodable object in the store");
                    }
                    last = event.revision;
                    state.revision = event.revision;
                    continue;
                }
            };
            let prev = match event.kind {
                EventKind::Put => state.objects.insert(object.clone()),
                EventKind::Delete => state.objects.remove(&event.key),
            };
            if let Some(prev) = &prev {
                state.indexes.remove(&event.key, prev);
                if let Some(token) = LiveToken::of_cached(&event.key, prev) {
                    state.live_tokens.remove(&token);
                }
            }
            if event.kind == EventKind::Put {
                state.indexes.insert(&event.key, &object);
            }
            if let Some(token) = live_token {
                state.live_tokens.add(token);
            }
            let kind = match event.kind {
                EventKind::Delete => EventType::Deleted,
                EventKind::Put if prev.is_none() => EventType::Added,
                EventKind::Put => EventType::Modified,
            };
            let cache_event = Arc::new(CacheEvent {
                kind,
                key: event.key,
                revision: event.revision,
                object,
                prev,
                bound_token_expiry,
                token_revoked,
            });
            if state.history.len() >= self.history
                && let Some(old) = state.history.pop_front()
            {
                state.history_floor = old.revision;
            }
            state.history.push_back(cache_event.clone());
            last = event.revision;
            state.revision = event.revision;
            // Nobody listening is fine.
            let _ = self.events.send(cache_event);
        }
        drop(state);
        self.revision.send_replace(last);
    }

    /// Feeds the cache from the store until the store's watch ends for good: lists
    /// everything, then watches from the list's revision; relists when the watch breaks.
    pub async fn run(self: Arc<Self>, store: Arc<dyn Store>, ready: tokio::sync::oneshot::Sender<()>) {
        let mut ready = Some(ready);
        // A store that decrypts values is read beneath, value by value, so one value that
        // cannot be decrypted is set aside instead of failing every list and watch.
        let (store, transformer) = match store.transformed() {
            Some((raw, transformer)) => (raw, Some(transformer)),
            None => (store, None),
        };
        let mut relist_readable = false;
        loop {
            match self
                .sync_once(&store, transformer.as_ref(), &mut ready, relist_readable)
                .await
            {
                Ok(()) => return,
                Err(SyncEnd::Readable) => {
                    tracing::info!("objects that could not be decrypted read now; relisting");
                    relist_readable = true;
                }
                Err(SyncEnd::Store(e)) => {
                    relist_readable = false;
                    tracing::warn!(error = %e, "watch cache lost its store watch; relisting");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    async fn sync_once(
        &self,
        store: &Arc<dyn Store>,
        transformer: Option<&Arc<dyn Transformer>>,
        ready: &mut Option<tokio::sync::oneshot::Sender<()>>,
        relist_readable: bool,
    ) -> Result<(), SyncEnd> {
        let list = store.list("/registry/", Default::default()).await?;
        let mut items = Vec::with_capacity(list.items.len());
        let mut unreadable = BTreeMap::new();
        for kv in list.items {
            let value = match read_value(transformer.map(|t| &**t), &kv.key, &kv.value) {
                Ok(value) => value,
                Err(reason) => {
                    unreadable.insert(kv.key, reason.into());
                    continue;
                }
            };
            match CachedObject::new(&kv.key, &value, kv.mod_revision) {
                Some(o) => items.push(Arc::new(o)),
                None => tracing::error!(key = %kv.key, "undecodable object in the store"),
            }
        }
        let revision = list.revision;
        // After values turned readable the list replaces the state even at the same revision.
        if self.revision() == 0
            || self.revision() < revision
            || (relist_readable && self.revision() == revision)
        {
            self.reset(items, unreadable, revision);
        }
        if let Some(tx) = ready.take() {
            let _ = tx.send(());
        }
        // The whole keyspace, not just `/registry/`: a consistent read waits for the store's
        // revision, which writes outside the API (the key ring) advance too.
        let mut stream = store.watch("", self.revision()).await?;
        let mut retry =
            tokio::time::interval_at(tokio::time::Instant::now() + UNREADABLE_RETRY, UNREADABLE_RETRY);
        loop {
            tokio::select! {
                batch = stream.next() => match batch {
                    Some(batch) => self.apply(batch?, transformer.map(|t| &**t)),
                    None => break,
                },
                _ = retry.tick(), if transformer.is_some() => {
                    if let Some(transformer) = transformer
                        && self.unreadable_reads_now(store, transformer).await
                    {
                        return Err(SyncEnd::Readable);
                    }
                }
            }
        }
        Err(SyncEnd::Store(badge_store::Error::Internal(
            "store watch ended".into(),
        )))
    }

    /// Whether one of the values set aside as unreadable decrypts now. Decrypting may wait
    /// on a KMS plugin, so it runs on the blocking pool.
    async fn unreadable_reads_now(&self, store: &Arc<dyn Store>, transformer: &Arc<dyn Transformer>) -> bool {
        let keys: Vec<String> = self
            .state
            .read()
            .unreadable
            .keys()
            .take(UNREADABLE_PROBES)
            .cloned()
            .collect();
        for key in keys {
            let Ok((Some(kv), _)) = store.get(&key).await else {
                continue;
            };
            let transformer = transformer.clone();
            let reads = tokio::task::spawn_blocking(move || {
                badge_store::transform::read_through(&*transformer, &kv.key, &kv.value).is_ok()
            });
            if reads.await.unwrap_or(false) {
                return true;
            }
        }
        false
    }
}

/// A stored value as the API reads it: through the store's transformer, when it has one.
/// Failures are logged here, once per value met.
fn read_value(
    transformer: Option<&dyn Transformer>,
    key: &str,
    stored: &bytes::Bytes,
) -> Result<bytes::Bytes, String> {
    let Some(transformer) = transformer else {
        return Ok(stored.clone());
    };
    badge_store::transform::read_through(transformer, key, stored).map_err(|e| {
        tracing::error!(key, error = %e, "failed to decrypt a stored object; reads of it fail");
        e.0
    })
}

/// Decodes a stored value and sets its resourceVersion.
pub fn decode_object(bytes: &[u8], revision: Revision) -> Option<Value> {
    let mut value: Value = serde_json::from_slice(bytes).ok()?;
    badge_api::meta::set(&mut value, "resourceVersion", revision.to_string());
    Some(value)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use badge_store::sqlite::SqliteStore;

    #[test]
    fn objects_are_found_and_ordered_by_the_key_they_hold_as_a_map_of_keys_would() {
        let keys = [
            "/registry/pods/a/x",
            "/registry/pods/a/x2",
            "/registry/pods/a/",
            "/registry/pods/ab/x",
            "/registry/pods/a/\u{e9}t\u{e9}",
            "/registry/pods/a/Z",
            "/registry/secrets/a/x",
        ];
        let object = |key: &str, revision| Arc::new(CachedObject::new(key, b"{}", revision).unwrap());
        let mut objects: Objects = keys.iter().map(|k| object(k, 1)).collect();
        let mut map: BTreeMap<String, Revision> = keys.iter().map(|k| (k.to_string(), 1)).collect();
        // A put replaces the object held at its key and gives back the one it replaced.
        let replaced = objects.insert(object("/registry/pods/a/x", 2)).unwrap();
        map.insert("/registry/pods/a/x".into(), 2);
        assert_eq!((replaced.key(), replaced.revision()), ("/registry/pods/a/x", 1));
        assert_eq!(objects.get("/registry/pods/a/x").unwrap().revision(), 2);
        assert!(objects.get("/registry/pods/a").is_none());
        assert_eq!(
            objects.remove("/registry/pods/a/Z").unwrap().key(),
            "/registry/pods/a/Z"
        );
        map.remove("/registry/pods/a/Z");
        assert!(objects.remove("/registry/pods/a/Z").is_none());
        let held = |it: &mut dyn Iterator<Item = (&str, &Arc<CachedObject>)>| {
            it.map(|(k, o)| {
                assert_eq!(k, o.key());
                (k.to_string(), o.revision())
            })
            .collect::<Vec<_>>()
        };
        for prefix in [
            "/registry/pods/a/",
            "/registry/pods/",
            "/registry/",
            "/registry/pods/a/x",
            "/zzz",
        ] {
            let expected: Vec<_> = map
                .range(prefix.to_string()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(k, r)| (k.clone(), *r))
                .collect();
            assert_eq!(held(&mut objects.under(prefix)), expected, "under {prefix}");
            let after: Vec<_> = map
                .range::<str, _>((std::ops::Bound::Excluded(prefix), std::ops::Bound::Unbounded))
                .map(|(k, r)| (k.clone(), *r))
                .collect();
            assert_eq!(
                held(&mut objects.from(std::ops::Bound::Excluded(prefix))),
                after,
                "after {prefix}"
            );
        }
    }

    #[test]
    fn labels_read_alone_are_the_labels_of_the_whole_object() {
        let cases: [&[u8]; 5] = [
            br#"{"metadata":{"labels":{"app":"web","tier":"a\"b","n":3,"x":null}},"data":{"k":"dg=="}}"#,
            br#"{"metadata":{"labels":{"k\u00e9y":"v\u00e9"}}}"#,
            br#"{"metadata":{"name":"no-labels"}}"#,
            br#"{"metadata":{"labels":null}}"#,
            br#"{"metadata":{"labels":["not","a","map"]}}"#,
        ];
        for json in cases {
            let cached = CachedObject::new("k", json, 1).unwrap();
            assert_eq!(
                cached.labels(),
                badge_api::meta::labels(&cached.value()),
                "{}",
                String::from_utf8_lossy(json)
            );
        }
        let cached = CachedObject::new("k", cases[0], 1).unwrap();
        assert_eq!(cached.labels().get("tier").map(String::as_str), Some("a\"b"));
        assert!(!cached.labels().contains_key("n"));
    }

    #[test]
    fn the_fields_read_on_every_request_are_read_from_the_json_even_spelled_with_escapes() {
        let plain = br#"{"apiVersion":"v1","kind":"Secret","metadata":{"annotations":{"kubernetes.io/service-account.name":"default"},"name":"s","namespace":"default","uid":"u-1"},"spec":{"nodeName":"n-1"}}"#;
        let cached = CachedObject::new("k", plain, 1).unwrap();
        assert!(
            cached.spelled_apart.is_none(),
            "every field is read from the JSON"
        );
        assert_eq!(cached.uid(), "u-1");
        assert_eq!(cached.service_account_name(), Some("default"));
        assert_eq!(cached.node_name(), Some("n-1"));
        assert_eq!(cached.deletion_timestamp(), None);

        let escaped = br#"{"metadata":{"uid":"u\"2","deletionTimestamp":"\u0032030","annotations":{"kubernetes.io/service-account.name":"caf\u00e9"}},"spec":{"nodeName":"n\\1"}}"#;
        let cached = CachedObject::new("k", escaped, 1).unwrap();
        assert_eq!(cached.uid(), "u\"2");
        assert_eq!(cached.deletion_timestamp(), Some("2030"));
        assert_eq!(cached.service_account_name(), Some("caf\u{e9}"));
        assert_eq!(cached.node_name(), Some("n\\1"));
        assert_eq!(cached.value()["metadata"]["uid"], "u\"2");
    }

    #[test]
    fn a_service_account_is_disabled_exactly_when_its_label_reads_true_as_the_decoded_object_says() {
        let cases: [(&[u8], bool); 11] = [
            (br#"{"metadata":{"name":"a"}}"#, false),
            (
                br#"{"metadata":{"labels":{"identity.badge.dev/disabled":"true"},"name":"a"}}"#,
                true,
            ),
            (
                br#"{"metadata":{"labels":{"app":"x","identity.badge.dev/disabled":"true"}}}"#,
                true,
            ),
            (
                br#"{"metadata":{"labels":{"identity.badge.dev/disabled":"false"}}}"#,
                false,
            ),
            (
                br#"{"metadata":{"labels":{"identity.badge.dev/disabled":"tru\u0065"}}}"#,
                true,
            ),
            (
                br#"{"metadata":{"labels":{"identity.badge.dev/disabled":true}}}"#,
                false,
            ),
            (
                br#"{"metadata":{"labels":{"identity.badge.dev/disabledx":"true"}}}"#,
                false,
            ),
            // Labels of another shape leave the object readable, and not disabled.
            (br#"{"metadata":{"labels":["identity.badge.dev/disabled","true"]}}"#, false),
            (br#"{"metadata":{"labels":"identity.badge.dev/disabled"}}"#, false),
            (br#"{"metadata":{"labels":null}}"#, false),
            (
                br#"{"metadata":{"labels":{"identity.badge.dev/disabled":"false","identity.badge.dev/disabled":"true"}}}"#,
                true,
            ),
        ];
        for (json, disabled) in cases {
            let cached = CachedObject::new("k", json, 1).unwrap();
            let decoded = cached.value()["metadata"]["labels"]["identity.badge.dev/disabled"] == "true";
            assert_eq!(
                (cached.disabled(), decoded),
                (disabled, disabled),
                "{}",
                String::from_utf8_lossy(json)
            );
        }
    }

    #[test]
    fn cached_objects_keep_their_json_and_the_metadata_reviews_read() {
        let json = br#"{"kind":"Secret","metadata":{"name":"s","uid":"u-1","deletionTimestamp":"2030-01-01T00:00:00Z"},"data":{"token":"c2VjcmV0"}}"#;
        let cached = CachedObject::new("k", json, 42).unwrap();
        assert_eq!(cached.uid(), "u-1");
        assert_eq!(cached.deletion_timestamp(), Some("2030-01-01T00:00:00Z"));
        assert_eq!(cached.revision(), 42);
        let value = cached.value();
        assert_eq!(value["metadata"]["resourceVersion"], "42");
        assert_eq!(value["data"]["token"], "c2VjcmV0");
        assert!(
            !format!("{cached:?}").contains("c2VjcmV0"),
            "content is never printed"
        );

        let bare = CachedObject::new("k", br#"{"kind":"ConfigMap"}"#, 1).unwrap();
        assert_eq!(bare.uid(), "");
        assert_eq!(bare.deletion_timestamp(), None);
        assert!(CachedObject::new("k", b"[1]", 1).is_none());
        assert!(CachedObject::new("k", b"{", 1).is_none());
    }

    #[tokio::test]
    async fn writes_outside_the_api_still_advance_the_cache_revision() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("s.db")).unwrap());
        let cache = Arc::new(WatchCache::default());
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(cache.clone().run(store.clone(), tx));
        rx.await.unwrap();
        store
            .create("/registry/serviceaccounts/a/b", bytes::Bytes::from_static(b"{}"))
            .await
            .unwrap();
        let outside = store
            .create("/badge/other", bytes::Bytes::from_static(b"{}"))
            .await
            .unwrap();
        assert!(
            cache.wait_for(outside, Duration::from_secs(5)).await,
            "the cache must reach the store's revision"
        );
        assert!(cache.get("/badge/other").0.is_none(), "only API objects are held");
        assert!(cache.get("/registry/serviceaccounts/a/b").0.is_some());
    }

    /// Reads values marked `sealed:`; anything else under a secret key is unreadable.
    struct Sealed;

    impl Transformer for Sealed {
        fn transform_to_storage(
            &self,
            _key: &str,
            value: &[u8],
        ) -> Result<bytes::Bytes, badge_store::transform::TransformError> {
            Ok([b"sealed:".as_slice(), value].concat().into())
        }
        fn transform_from_storage(
            &self,
            _key: &str,
            stored: &[u8],
        ) -> Result<bytes::Bytes, badge_store::transform::TransformError> {
            stored
                .strip_prefix(b"sealed:")
                .map(bytes::Bytes::copy_from_slice)
                .ok_or_else(|| badge_store::transform::TransformError("secretbox key \"gone\": no".into()))
        }
    }

    pub(super) fn put(key: &str, revision: Revision) -> badge_store::Event {
        badge_store::Event {
            kind: EventKind::Put,
            key: key.into(),
            value: bytes::Bytes::from_static(b"{}"),
            revision,
            create_revision: revision,
        }
    }

    #[tokio::test]
    async fn the_footprint_counts_the_keys_objects_and_entries_of_a_resource() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("s.db")).unwrap());
        let cache = Arc::new(WatchCache::default());
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(cache.clone().run(store.clone(), tx));
        rx.await.unwrap();
        let (mut revision, mut stored) = (0, 0);
        for i in 0..100 {
            // A record as the server writes it for a pod-bound token, used once: typical of a
            // cluster's inventory, where kubelets request most tokens.
            let jti = format!("6f1c2a9e-3b7d-4c1e-9a52-{i:012}");
            let record = serde_json::json!({
                "apiVersion": "identity.badge.dev/v1", "kind": "IssuedToken",
                "metadata": {"name": jti, "namespace": "workloads", "uid": "0d6e3c1a-5f2b-4e7d-8c9a-1b2c3d4e5f60",
                    "creationTimestamp": "2026-12-05T07:00:00Z",
                    "labels": {"identity.badge.dev/service-account": "web-frontend",
                        "identity.badge.dev/token-kind": "bound"}},
                "spec": {"serviceAccountName": "web-frontend",
                    "serviceAccountUID": "2a4b6c8d-0e1f-4a3b-9c5d-7e9f1a3b5c7d",
                    "audiences": ["https://kubernetes.default.svc.cluster.local"],
                    "keyID": "Xq3v9k2LrT8wYb5nJm1pQs7uZc4eHg6aDf0iKo2lNr8",
                    "requester": {"username": "system:node:worker-17"},
                    "boundObjectRef": {"kind": "Pod", "name": "web-frontend-7d9c8b6f5-x2k4q",
                        "uid": "9b8a7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"},
                    "issuedAt": "2026-12-05T07:00:00Z", "expiresAt": "2026-12-05T08:00:00Z"},
                "status": {"lastUsed": {"time": "2026-12-05T07:05:00Z", "sourceAddress": "10.244.17.23",
                    "userAgent": "kubelet/v1.35.0 (linux/amd64) kubernetes/abcdef0"}, "useCount": 1}
            });
            let key = format!("/registry/issuedtokens/workloads/{jti}");
            let json = serde_json::to_vec(&record).unwrap();
            stored += json.len();
            revision = store.create(&key, bytes::Bytes::from(json)).await.unwrap();
        }
        assert!(cache.wait_for(revision, Duration::from_secs(5)).await);
        let (objects, bytes) = cache.footprint("/registry/issuedtokens/");
        assert_eq!(objects, 100);
        // The JSON alone is over 900 B; the goal for the whole record, its key, the map entry
        // and what the object owns, is under 1 KiB.
        assert!(stored / objects > 900);
        assert!(bytes / objects < 1024, "{} B per record", bytes / objects);
        // Beside the packed JSON, which holds the uid: the object and its counts.
        let small = CachedObject::new("k", br#"{"metadata":{"uid":"u-1"}}"#, 1).unwrap();
        assert!(small.packed().len() < 26);
        assert_eq!((small.key(), small.uid()), ("k", "u-1"));
        assert_eq!(
            small.heap_bytes(),
            2 * std::mem::size_of::<usize>() + std::mem::size_of::<CachedObject>() + 1 + small.packed().len()
        );
        assert_eq!(cache.footprint("/registry/secrets/"), (0, 0));
    }

    #[tokio::test]
    async fn values_that_cannot_be_decrypted_are_set_aside_without_stalling() {
        use badge_store::transform::TransformedStore;
        let dir = tempfile::tempdir().unwrap();
        let raw: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("s.db")).unwrap());
        let store: Arc<dyn Store> = Arc::new(TransformedStore::new(raw.clone(), Arc::new(Sealed)));
        raw.create("/registry/secrets/a/broken", bytes::Bytes::from_static(b"{}"))
            .await
            .unwrap();
        store
            .create("/registry/secrets/a/fine", bytes::Bytes::from_static(b"{}"))
            .await
            .unwrap();
        let cache = Arc::new(WatchCache::default());
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(cache.clone().run(store.clone(), tx));
        rx.await.unwrap();
        assert!(cache.get("/registry/secrets/a/fine").0.is_some());
        assert!(cache.get("/registry/secrets/a/broken").0.is_none());
        assert_eq!(
            cache.unreadable("/registry/secrets/a/broken").as_deref(),
            Some("secretbox key \"gone\": no")
        );
        assert_eq!(
            cache
                .first_unreadable("/registry/secrets/", None)
                .map(|(k, _)| k)
                .as_deref(),
            Some("/registry/secrets/a/broken")
        );
        assert!(
            cache
                .first_unreadable("/registry/secrets/a/", Some("/registry/secrets/a/broken"))
                .is_none()
        );

        // A readable object turning unreadable is dropped; the revision is applied all the same.
        let revision = raw
            .update("/registry/secrets/a/fine", bytes::Bytes::from_static(b"{}"), 2)
            .await
            .unwrap();
        assert!(cache.wait_for(revision, Duration::from_secs(5)).await);
        assert!(cache.get("/registry/secrets/a/fine").0.is_none());
        assert!(cache.unreadable("/registry/secrets/a/fine").is_some());

        // Deleting it, or writing it anew, clears it.
        let deleted = raw.delete("/registry/secrets/a/broken", 1).await.unwrap();
        assert!(cache.wait_for(deleted, Duration::from_secs(5)).await);
        assert!(cache.unreadable("/registry/secrets/a/broken").is_none());
        let rewritten = store
            .update(
                "/registry/secrets/a/fine",
                bytes::Bytes::from_static(b"{}"),
                revision,
            )
            .await
            .unwrap();
        assert!(cache.wait_for(rewritten, Duration::from_secs(5)).await);
        assert!(cache.get("/registry/secrets/a/fine").0.is_some());
        assert!(cache.first_unreadable("/registry/", None).is_none());
    }

    /// Reads `sealed:` values only while its key is available (a KMS plugin up or down).
    struct Flaky(Arc<std::sync::atomic::AtomicBool>);

    impl Transformer for Flaky {
        fn transform_to_storage(
            &self,
            key: &str,
            value: &[u8],
        ) -> Result<bytes::Bytes, badge_store::transform::TransformError> {
            Sealed.transform_to_storage(key, value)
        }
        fn transform_from_storage(
            &self,
            key: &str,
            stored: &[u8],
        ) -> Result<bytes::Bytes, badge_store::transform::TransformError> {
            if !self.0.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(badge_store::transform::TransformError(
                    "the plugin is down".into(),
                ));
            }
            Sealed.transform_from_storage(key, stored)
        }
    }

    #[tokio::test]
    async fn values_unreadable_at_the_start_are_read_once_their_key_is_back() {
        use badge_store::transform::TransformedStore;
        let dir = tempfile::tempdir().unwrap();
        let raw: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("s.db")).unwrap());
        let up = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let store: Arc<dyn Store> = Arc::new(TransformedStore::new(raw, Arc::new(Flaky(up.clone()))));
        store
            .create("/registry/secrets/a/s", bytes::Bytes::from_static(b"{}"))
            .await
            .unwrap();
        up.store(false, std::sync::atomic::Ordering::SeqCst);
        let cache = Arc::new(WatchCache::default());
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(cache.clone().run(store.clone(), tx));
        rx.await.unwrap();
        assert!(cache.unreadable("/registry/secrets/a/s").is_some());

        up.store(true, std::sync::atomic::Ordering::SeqCst);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while cache.get("/registry/secrets/a/s").0.is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "the value was never read again"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(cache.unreadable("/registry/secrets/a/s").is_none());
    }

    #[tokio::test]
    async fn a_bookmark_never_names_a_revision_ahead_of_what_the_watcher_has_taken() {
        let cache = WatchCache::new(100);
        cache.reset(Vec::new(), BTreeMap::new(), 1);
        let mut watcher = cache.watch("/registry/configmaps/", None).unwrap();
        assert_eq!(watcher.bookmark_revision(1), Some(1), "nothing queued");
        cache.apply(vec![put("/registry/configmaps/a/one", 2)], None);
        assert_eq!(watcher.bookmark_revision(1), None, "revision 2 is still queued");
        assert_eq!(watcher.next().await.unwrap().revision, 2);
        assert_eq!(watcher.bookmark_revision(2), Some(2));
        // Writes elsewhere move the cache on; the watcher has nothing to take.
        cache.apply(vec![put("/registry/secrets/a/s", 3)], None);
        assert_eq!(watcher.next().await.unwrap().revision, 3);
        assert_eq!(watcher.bookmark_revision(2), Some(3));
        // A transaction taken in part, its revision not yet published (as while the cache
        // is still placing it): no bookmark.
        assert_eq!(watcher.bookmark_revision(4), None);
    }

    #[tokio::test]
    async fn a_watch_that_ends_finishes_the_transaction_it_began() {
        let cache = WatchCache::new(100);
        cache.reset(Vec::new(), BTreeMap::new(), 1);
        let mut watcher = cache.watch("/registry/configmaps/", None).unwrap();
        // One etcd transaction of three writes, then a later write.
        cache.apply(
            vec![
                put("/registry/configmaps/a/one", 2),
                put("/registry/configmaps/a/two", 2),
                put("/registry/configmaps/a/three", 2),
            ],
            None,
        );
        cache.apply(vec![put("/registry/configmaps/a/four", 3)], None);
        assert_eq!(watcher.next().await.unwrap().key, "/registry/configmaps/a/one");
        let rest: Vec<String> = watcher
            .rest_of_transaction(2)
            .await
            .iter()
            .map(|e| e.key.clone())
            .collect();
        assert_eq!(
            rest,
            ["/registry/configmaps/a/two", "/registry/configmaps/a/three"]
        );

        // Nothing half taken: nothing more is sent.
        let mut whole = cache.watch("/registry/configmaps/", None).unwrap();
        cache.apply(vec![put("/registry/configmaps/a/five", 4)], None);
        assert_eq!(whole.next().await.unwrap().revision, 4);
        assert!(whole.rest_of_transaction(4).await.is_empty());
    }

    #[tokio::test]
    async fn a_relist_ends_every_watch_before_any_newer_event() {
        let cache = WatchCache::new(100);
        cache.reset(Vec::new(), BTreeMap::new(), 1);
        cache.apply(vec![put("/registry/configmaps/a/one", 2)], None);
        let mut from_now = cache.watch("/registry/configmaps/", None).unwrap();
        let mut resumed = cache.watch("/registry/secrets/", Some(1)).unwrap();
        cache.apply(vec![put("/registry/configmaps/a/two", 3)], None);
        assert_eq!(from_now.next().await.unwrap().key, "/registry/configmaps/a/two");

        // Events 4..=9 were compacted away while the cache was cut off: it relists at 10.
        let listed = CachedObject::new("/registry/configmaps/a/three", b"{}", 10).unwrap();
        cache.reset(vec![Arc::new(listed)], BTreeMap::new(), 10);
        cache.apply(vec![put("/registry/configmaps/a/four", 11)], None);
        assert_eq!(from_now.next().await.unwrap_err(), WatchEnd::Reset);
        assert_eq!(resumed.next().await.unwrap_err(), WatchEnd::Reset);

        // A watch started after the relist follows it.
        let mut after = cache.watch("/registry/configmaps/", None).unwrap();
        assert_eq!(after.initial.len(), 2);
        cache.apply(vec![put("/registry/configmaps/a/five", 12)], None);
        assert_eq!(after.next().await.unwrap().key, "/registry/configmaps/a/five");
    }

    #[tokio::test]
    async fn writes_of_one_transaction_share_a_revision_and_all_apply() {
        let cache = WatchCache::new(100);
        cache.reset(Vec::new(), BTreeMap::new(), 1);
        let mut watch = cache.watch("/registry/configmaps/", Some(1)).unwrap();
        cache.apply(
            vec![
                put("/registry/configmaps/a/one", 2),
                put("/registry/configmaps/a/two", 3),
                put("/registry/configmaps/a/three", 3),
            ],
            None,
        );
        // Replayed: the revision was applied before this batch.
        cache.apply(vec![put("/registry/configmaps/a/four", 3)], None);
        assert_eq!(cache.revision(), 3);
        let (items, _) = cache.list("/registry/configmaps/", None);
        let keys: Vec<&str> = items.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "/registry/configmaps/a/one",
                "/registry/configmaps/a/three",
                "/registry/configmaps/a/two"
            ]
        );
        for key in ["one", "two", "three"] {
            assert_eq!(
                watch.next().await.unwrap().key,
                format!("/registry/configmaps/a/{key}")
            );
        }
        let later = cache.watch("/registry/configmaps/", Some(2)).unwrap();
        assert_eq!(later.initial.len(), 2, "both writes at 3 follow 2");
    }

    fn put_json(key: &str, value: serde_json::Value, revision: Revision) -> badge_store::Event {
        badge_store::Event {
            kind: EventKind::Put,
            key: key.into(),
            value: serde_json::to_vec(&value).unwrap().into(),
            revision,
            create_revision: revision,
        }
    }

    /// A delete carries the value the key held.
    fn delete(key: &str, held: serde_json::Value, revision: Revision) -> badge_store::Event {
        badge_store::Event {
            kind: EventKind::Delete,
            key: key.into(),
            value: serde_json::to_vec(&held).unwrap().into(),
            revision,
            create_revision: 0,
        }
    }

    fn pod_on(node: &str) -> serde_json::Value {
        serde_json::json!({"metadata": {}, "spec": {"nodeName": node}})
    }

    fn token_secret_of(account: &str) -> serde_json::Value {
        serde_json::json!({"metadata": {"annotations": {"kubernetes.io/service-account.name": account}}})
    }

    fn keys(found: Vec<(String, Arc<CachedObject>)>) -> Vec<String> {
        found.into_iter().map(|(k, _)| k).collect()
    }

    #[test]
    fn pods_are_indexed_by_node_through_add_modify_and_delete() {
        let cache = WatchCache::new(100);
        cache.reset(Vec::new(), BTreeMap::new(), 1);
        cache.apply(
            vec![
                put_json("/registry/pods/a/one", pod_on("n1"), 2),
                put_json("/registry/pods/b/two", pod_on("n1"), 3),
                put_json("/registry/pods/a/three", pod_on("n2"), 4),
                put_json("/registry/pods/a/unscheduled", serde_json::json!({"spec": {}}), 5),
                // Not a pod: its nodeName is not indexed.
                put_json("/registry/configmaps/a/c", pod_on("n1"), 6),
            ],
            None,
        );
        assert_eq!(
            keys(cache.pods_on_node("n1", "")),
            ["/registry/pods/a/one", "/registry/pods/b/two"]
        );
        assert_eq!(keys(cache.pods_on_node("n1", "a")), ["/registry/pods/a/one"]);
        assert_eq!(keys(cache.pods_on_node("n2", "")), ["/registry/pods/a/three"]);
        assert!(cache.pods_on_node("", "").is_empty());

        // Moving a pod to another node moves it in the index.
        cache.apply(vec![put_json("/registry/pods/a/one", pod_on("n2"), 7)], None);
        assert_eq!(keys(cache.pods_on_node("n1", "")), ["/registry/pods/b/two"]);
        assert_eq!(
            keys(cache.pods_on_node("n2", "")),
            ["/registry/pods/a/one", "/registry/pods/a/three"]
        );
        let (_, held) = &cache.pods_on_node("n2", "a")[0];
        assert_eq!(held.revision(), 7, "the index returns the current object");

        cache.apply(vec![delete("/registry/pods/b/two", pod_on("n1"), 8)], None);
        assert!(cache.pods_on_node("n1", "").is_empty());
    }

    #[test]
    fn secrets_are_indexed_by_their_service_account_through_add_modify_and_delete() {
        let cache = WatchCache::new(100);
        cache.reset(Vec::new(), BTreeMap::new(), 1);
        cache.apply(
            vec![
                put_json("/registry/secrets/a/t1", token_secret_of("app"), 2),
                put_json("/registry/secrets/a/t2", token_secret_of("app"), 3),
                put_json("/registry/secrets/b/t3", token_secret_of("app"), 4),
                put_json(
                    "/registry/secrets/a/plain",
                    serde_json::json!({"metadata": {}}),
                    5,
                ),
            ],
            None,
        );
        assert_eq!(
            keys(cache.secrets_of_service_account("a", "app")),
            ["/registry/secrets/a/t1", "/registry/secrets/a/t2"]
        );
        assert_eq!(
            keys(cache.secrets_of_service_account("b", "app")),
            ["/registry/secrets/b/t3"]
        );

        cache.apply(
            vec![put_json("/registry/secrets/a/t1", token_secret_of("other"), 6)],
            None,
        );
        assert_eq!(
            keys(cache.secrets_of_service_account("a", "app")),
            ["/registry/secrets/a/t2"]
        );
        assert_eq!(
            keys(cache.secrets_of_service_account("a", "other")),
            ["/registry/secrets/a/t1"]
        );

        cache.apply(
            vec![delete("/registry/secrets/a/t2", token_secret_of("app"), 7)],
            None,
        );
        assert!(cache.secrets_of_service_account("a", "app").is_empty());
    }

    #[test]
    fn a_relist_rebuilds_the_indexes_from_the_listed_state() {
        let cache = WatchCache::new(100);
        cache.reset(Vec::new(), BTreeMap::new(), 1);
        cache.apply(
            vec![
                put_json("/registry/pods/a/gone", pod_on("n1"), 2),
                put_json("/registry/secrets/a/gone", token_secret_of("app"), 3),
            ],
            None,
        );
        let object = |key: &str, value: serde_json::Value| {
            Arc::new(CachedObject::new(key, &serde_json::to_vec(&value).unwrap(), 10).unwrap())
        };
        cache.reset(
            vec![
                object("/registry/pods/a/listed", pod_on("n1")),
                object("/registry/secrets/a/listed", token_secret_of("app")),
            ],
            BTreeMap::new(),
            10,
        );
        assert_eq!(keys(cache.pods_on_node("n1", "")), ["/registry/pods/a/listed"]);
        assert_eq!(
            keys(cache.secrets_of_service_account("a", "app")),
            ["/registry/secrets/a/listed"]
        );
    }

    /// An IssuedToken record as the scan reads it: its account label (or none) and expiry
    /// (a time, none, or text that is no time).
    fn token_record(account: Option<&str>, expires: Option<&str>, revoked: bool) -> serde_json::Value {
        let mut record = serde_json::json!({"apiVersion": "identity.badge.dev/v1", "kind": "IssuedToken",
            "metadata": {"labels": {"identity.badge.dev/token-kind": "bound"}},
            "spec": {"audiences": ["x"], "revoked": revoked}});
        if let Some(account) = account {
            record["metadata"]["labels"]["identity.badge.dev/service-account"] = account.into();
        }
        if let Some(expires) = expires {
            record["spec"]["expiresAt"] = expires.into();
        }
        record
    }

    /// One parse of a record reads what the cache keeps and what the record counts for
    /// exactly as the two reads apart do, or declines (and the two reads apart judge).
    #[test]
    fn a_record_read_once_is_read_as_the_two_reads_apart_read_it() {
        let key = "/registry/issuedtokens/demo/j1";
        let base = r#"{"apiVersion":"identity.badge.dev/v1","kind":"IssuedToken","metadata":{"creationTimestamp":"2026-01-01T00:00:00Z","labels":{"identity.badge.dev/service-account":"app","identity.badge.dev/token-kind":"bound"},"name":"j1","namespace":"demo","uid":"u-1"},"spec":{"audiences":["a"],"expiresAt":"2026-01-01T01:00:00Z","serviceAccountName":"app"},"status":{"useCount":2}}"#;
        let shaped = [
            base.to_string(),
            base.replace(r#""spec":{"#, r#""spec":{"revoked":true,"#),
            base.replace(r#""spec":{"#, r#""spec":{"revoked":"true","#),
            base.replace(r#""spec":{"#, r#""spec":{"revoked":null,"#),
            base.replace(r#""identity.badge.dev/service-account":"app","#, ""),
            base.replace(r#""bound""#, r#""legacy""#)
                .replace(r#""expiresAt":"2026-01-01T01:00:00Z","#, ""),
            base.replace(r#""u-1""#, r#""u\u002d1""#),
            base.replace(
                r#""labels":{"#,
                r#""labels":{"identity.badge.dev/disabled":"true","#,
            ),
            base.replace(
                r#""labels":{"#,
                r#""annotations":{"kubernetes.io/service-account.name":"app"},"labels":{"#,
            ),
            base.replace(r#""expiresAt":"2026-01-01T01:00:00Z""#, r#""expiresAt":"soon""#),
            base.replace(
                r#","uid":"u-1""#,
                r#","deletionTimestamp":"2026-01-01T00:30:00Z","uid":"u-1""#,
            ),
            base.replace(r#""labels":{"#, r#""labels":null,"ignored":{"#),
        ];
        let misshaped = [
            base.replace(r#""identity.badge.dev/token-kind":"bound""#, r#""identity.badge.dev/token-kind":7"#),
            base.replace(r#""labels":{"#, r#""labels":{"identity.badge.dev/disabled":true,"#),
            base.replace(r#""labels":{"#, r#""labels":{"identity.badge.dev/service-account":"other","#),
            base.replace(r#""uid":"u-1""#, r#""uid":1"#),
            base.replace(r#""spec":{"#, r#""spec":{"nodeName":5,"#),
            base.replace(r#""labels":{"identity.badge.dev/service-account":"app","identity.badge.dev/token-kind":"bound"}"#, r#""labels":["app"]"#),
            base.replace(r#""spec":{"audiences":["a"],"expiresAt":"2026-01-01T01:00:00Z","serviceAccountName":"app"}"#, r#""spec":"x""#),
            base.replace(r#""spec":{"audiences":["a"],"expiresAt":"2026-01-01T01:00:00Z","serviceAccountName":"app"}"#, r#""spec":["2026-01-01T01:00:00Z"]"#),
            base.replace(r#""labels":{"#, r#""annotations":["app"],"labels":{"#),
            base.replace(r#""uid":"u-1""#, r#""uid":"u-1","uid":"u-2""#),
            "[]".to_string(),
        ];
        for (json, expect_once) in shaped
            .iter()
            .map(|j| (j, true))
            .chain(misshaped.iter().map(|j| (j, false)))
        {
            let json = json.as_bytes();
            let once = CachedObject::new_issued_token(key, json, 7);
            assert_eq!(once.is_some(), expect_once, "{}", String::from_utf8_lossy(json));
            let Some((object, view)) = once else { continue };
            let apart = CachedObject::new(key, json, 7).expect("cached apart too");
            assert_eq!(object.key(), apart.key());
            assert_eq!(object.revision(), apart.revision());
            assert_eq!(object.json(), apart.json());
            for field in 0..FIELDS {
                assert_eq!(object.field(field), apart.field(field), "field {field}");
            }
            assert_eq!(
                crate::live::LiveToken::of_view(key, view),
                crate::live::LiveToken::read(key, json),
                "{}",
                String::from_utf8_lossy(json)
            );
        }
    }

    #[tokio::test]
    async fn events_of_bound_records_carry_the_expiry_the_controller_would_read() {
        let cache = WatchCache::new(100);
        cache.reset(Vec::new(), BTreeMap::new(), 1);
        let mut watch = cache.watch("/registry/", Some(1)).unwrap();
        let mut legacy = token_record(Some("a"), None, false);
        legacy["metadata"]["labels"]["identity.badge.dev/token-kind"] = "legacy".into();
        let records = [
            (
                "/registry/issuedtokens/ns/bound",
                token_record(Some("a"), Some("2026-12-05T08:00:00Z"), false),
            ),
            (
                "/registry/issuedtokens/ns/no-expiry",
                token_record(Some("a"), None, false),
            ),
            (
                "/registry/issuedtokens/ns/odd-expiry",
                token_record(None, Some("not a time"), true),
            ),
            ("/registry/issuedtokens/ns/legacy", legacy),
            (
                "/registry/issuedtokens/ns/not-a-record",
                serde_json::json!({"spec": {"expiresAt": 3}}),
            ),
            (
                "/registry/configmaps/ns/other",
                token_record(Some("a"), Some("2026-12-05T08:00:00Z"), false),
            ),
        ];
        for (i, (key, record)) in records.iter().enumerate() {
            cache.apply(vec![put_json(key, record.clone(), 2 + i as Revision)], None);
            let event = watch.next().await.unwrap();
            // What the expiry controller read from the cached record itself.
            let read = key
                .starts_with("/registry/issuedtokens/")
                .then(|| {
                    crate::identity::with_token_view(&event.object, |view| {
                        let view = view?;
                        (!view.legacy())
                            .then(|| view.expires_at.and_then(|at| badge_api::meta::parse_time(&at)))
                    })
                })
                .flatten();
            assert_eq!(event.bound_token_expiry, read, "{key}");
            // What the revocation watch read from the cached record itself.
            let revoked = event.object.with_json(|json| {
                serde_json::from_slice::<serde_json::Value>(json)
                    .ok()
                    .and_then(|v| v.pointer("/spec/revoked").cloned())
                    == Some(serde_json::Value::Bool(true))
            });
            if let Some(carried) = event.token_revoked {
                assert_eq!(carried, revoked, "{key}");
            } else {
                assert!(
                    !key.starts_with("/registry/issuedtokens/ns/")
                        || *key == "/registry/issuedtokens/ns/not-a-record",
                    "{key}"
                );
            }
        }
        // Revoked, then not: each change carries what the record says.
        let key = "/registry/issuedtokens/ns/bound";
        for (revision, revoked) in [(20, true), (21, false), (22, true)] {
            let record = token_record(Some("a"), Some("2026-12-05T08:00:00Z"), revoked);
            cache.apply(vec![put_json(key, record, revision)], None);
            assert_eq!(watch.next().await.unwrap().token_revoked, Some(revoked));
        }
        let bound = cache.watch("/registry/issuedtokens/ns/bound", Some(1)).unwrap();
        assert_eq!(
            bound.initial[0].bound_token_expiry,
            Some(Some("2026-12-05T08:00:00Z".parse().unwrap()))
        );
    }

    #[test]
    fn kept_live_token_counts_match_a_full_scan_through_any_sequence_of_changes() {
        use std::collections::HashMap;
        let accounts = [Some("a"), Some("b"), Some("c"), None];
        let expiries = [
            Some("2026-12-05T07:00:00Z"),
            Some("2026-12-05T07:00:30Z"),
            Some("2026-12-05T07:01:00Z"),
            Some("2026-12-05T07:01:00.5Z"),
            Some("2026-12-05T08:00:00Z"),
            None,
            Some("not a time"),
        ];
        for seed in 1..=20u64 {
            // xorshift: the same sequences on every run.
            let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let mut next = |n: usize| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state % n as u64) as usize
            };
            let cache = WatchCache::new(50);
            cache.reset(Vec::new(), BTreeMap::new(), 1);
            let mut held: HashMap<String, serde_json::Value> = HashMap::new();
            let mut now: jiff::Timestamp = "2026-12-05T06:59:00Z".parse().unwrap();
            let mut revision = 1;
            for _ in 0..300 {
                revision += 1;
                let key = format!("/registry/issuedtokens/{}/t{}", ["ns1", "ns2"][next(2)], next(12));
                match next(7) {
                    // Created, or replaced with another account or expiry.
                    0 | 1 => {
                        let record = token_record(accounts[next(4)], expiries[next(7)], false);
                        cache.apply(vec![put_json(&key, record.clone(), revision)], None);
                        held.insert(key, record);
                    }
                    // Revoked: a change that leaves the count as it was.
                    2 => {
                        if let Some(record) = held.get_mut(&key) {
                            record["spec"]["revoked"] = true.into();
                            record["status"] = serde_json::json!({"useCount": 3});
                            cache.apply(vec![put_json(&key, record.clone(), revision)], None);
                        }
                    }
                    // Deleted (at its expiry or otherwise).
                    3 => {
                        if let Some(record) = held.remove(&key) {
                            cache.apply(vec![delete(&key, record, revision)], None);
                        }
                    }
                    // Time passes: expired records stop counting before they are deleted.
                    4 | 5 => now += jiff::SignedDuration::from_millis(next(40_000) as i64),
                    // A relist rebuilds the counts from the listed records.
                    _ => {
                        let listed = held
                            .iter()
                            .map(|(k, v)| {
                                let json = serde_json::to_vec(v).unwrap();
                                Arc::new(CachedObject::new(k, &json, revision).unwrap())
                            })
                            .collect();
                        cache.reset(listed, BTreeMap::new(), revision);
                    }
                }
                for namespace in ["ns1", "ns2", "ns3"] {
                    let scanned = crate::identity::scan_live_tokens(&cache, namespace, now);
                    assert_eq!(
                        cache.live_tokens_by_service_account(namespace, now),
                        scanned,
                        "seed {seed}, {namespace} at {now}"
                    );
                    for account in ["a", "b", "c", ""] {
                        assert_eq!(
                            cache.live_tokens(namespace, account, now),
                            scanned.get(account).copied().unwrap_or(0),
                            "seed {seed}, {namespace}/{account} at {now}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn an_indexed_field_of_another_type_leaves_the_object_readable() {
        let odd = CachedObject::new("k", br#"{"spec":{"nodeName":{"x":1}},"metadata":{"annotations":{"kubernetes.io/service-account.name":3}}}"#, 1)
            .unwrap();
        assert_eq!(odd.node_name(), None);
        assert_eq!(odd.service_account_name(), None);
    }
}
