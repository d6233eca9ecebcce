//! The embedded backend: one SQLite file in WAL mode with `synchronous=FULL`, so a write
//! that returned has been fsynced and survives a crash or power loss.
//!
//! Layout:
//! - `kv(key, value, create_rev, mod_rev)`: the current state, one row per live key.
//! - `log(rev, key, kind, value, create_rev)`: one row per revision, the history watches
//!   and reads at old revisions are served from. For a delete, `value` is the value the key
//!   held before it.
//! - `meta(name, value)`: `revision` (the last write's) and `compacted`.
//!
//! Every write is one transaction that bumps `revision` and writes `kv`, `log` and `meta`;
//! writes are serialized on one connection. Reads go through a second connection, so they
//! see a consistent snapshot and do not wait for a write's fsync.
//!
//! After a commit the event is published on a broadcast channel. A watch subscribes first,
//! then reads the recorded history from `log` up to the revision current at subscription
//! time, then follows the channel, dropping what it already read. A watcher that falls
//! behind the channel re-reads the missed part from `log` the same way, so it never skips
//! an event; if that part has been compacted meanwhile, its stream ends with
//! [`Error::Compacted`].
//!
//! Compaction at revision C removes the history below C. A list at a revision R >= C
//! needs, for each key changed after R, the key's last row at or below R, which may be
//! below C. Compaction therefore keeps a key's last put below C when the key changes
//! again after C, and a write to a key whose last row has been compacted away first puts
//! that row back (its revision is free again), copying it from `kv`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use tokio::sync::broadcast;

use crate::{
    BatchOp, Error, Event, EventKind, KeyValue, ListOptions, ListResult, Result, Revision, Store, WatchStream,
};

/// The largest value accepted by default, like etcd's default `--max-request-bytes`.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 1536 * 1024;

const KIND_PUT: i64 = 0;
const KIND_DELETE: i64 = 1;
/// Marks the file as a badge store ("bdge"), so another SQLite database is refused.
const APPLICATION_ID: i64 = 0x6264_6765;
const SCHEMA_VERSION: i64 = 1;
/// Events a watcher may fall behind by before it re-reads them from `log`.
const EVENT_BUFFER: usize = 4096;
/// Rows read from `log` per batch while a watcher catches up.
const BACKLOG_PAGE: usize = 1000;
/// At most this many live events are coalesced into one batch.
const LIVE_BATCH: usize = 512;

const SCHEMA: &str = "
CREATE TABLE kv (
    key TEXT PRIMARY KEY NOT NULL,
    value BLOB NOT NULL,
    create_rev INTEGER NOT NULL,
    mod_rev INTEGER NOT NULL
);
CREATE TABLE log (
    rev INTEGER PRIMARY KEY NOT NULL,
    key TEXT NOT NULL,
    kind INTEGER NOT NULL,
    value BLOB NOT NULL,
    create_rev INTEGER NOT NULL
);
CREATE INDEX log_key_rev ON log (key, rev);
CREATE TABLE meta (
    name TEXT PRIMARY KEY NOT NULL,
    value INTEGER NOT NULL
);
INSERT INTO meta (name, value) VALUES ('revision', 0), ('compacted', 0);
";

/// The SQLite-backed [`Store`]. Cloning gives another handle to the same store.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
    max_value_bytes: usize,
}

struct Inner {
    path: PathBuf,
    /// The only connection that writes; holding its lock serializes writes and the
    /// publication of their events, so events are published in revision order.
    writer: Mutex<Connection>,
    reader: Mutex<Connection>,
    /// The last committed revision; stored after the commit and before the event is
    /// published (watch relies on that order).
    revision: AtomicI64,
    compacted: AtomicI64,
    events: broadcast::Sender<Arc<Event>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .field("revision", &self.inner.revision.load(Ordering::SeqCst))
            .finish_non_exhaustive()
    }
}

/// Maps a SQLite failure to [`Error::Internal`], saying what was being done.
fn sql(context: &'static str) -> impl FnOnce(rusqlite::Error) -> Error {
    move |e| Error::Internal(format!("sqlite: {context}: {e}"))
}

fn corrupt(what: impl std::fmt::Display) -> Error {
    Error::Internal(format!("sqlite: database is corrupt or inconsistent: {what}"))
}

impl SqliteStore {
    /// Opens the store at `path`, creating the file and its schema when absent. The
    /// database is checked on open (`PRAGMA quick_check` and the revision bookkeeping);
    /// a damaged or foreign file is reported as [`Error::Internal`], never overwritten.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        Self::open_with_buffer(path, EVENT_BUFFER)
    }

    fn open_with_buffer(path: &Path, event_buffer: usize) -> Result<SqliteStore> {
        let created = !path.exists();
        let writer = open_connection(path, true)?;
        let (revision, compacted) = init_schema(&writer)?;
        if created {
            // The new file's directory entry must be durable too.
            sync_parent_dir(path)?;
        }
        let reader = open_connection(path, false)?;
        let (events, _) = broadcast::channel(event_buffer);
        tracing::info!(path = %path.display(), revision, compacted, "opened sqlite store");
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                writer: Mutex::new(writer),
                reader: Mutex::new(reader),
                revision: AtomicI64::new(revision),
                compacted: AtomicI64::new(compacted),
                events,
            }),
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
        })
    }

    /// Sets the largest value accepted; larger ones fail with [`Error::TooLarge`].
    pub fn with_max_value_bytes(mut self, max: usize) -> SqliteStore {
        self.max_value_bytes = max;
        self
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Stops fsyncing every commit until [`SqliteStore::end_deferred_sync`], for the writes a
    /// server makes at start-up before it answers anyone: nothing acknowledged waits on
    /// them, and fsyncing them together once saves one fsync per object. Commits stay
    /// atomic and the database consistent (WAL with `synchronous=NORMAL`); what a power loss
    /// takes before the end is written again by the next start.
    pub fn defer_sync(&self) -> Result<()> {
        self.inner
            .writer
            .lock()
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(sql("defer sync"))
    }

    /// Makes every commit so far durable and each later one durable as it returns again.
    pub async fn end_deferred_sync(&self) -> Result<()> {
        let inner = Arc::clone(&self.inner);
        blocking(move || {
            // Under the writer's lock no commit is half written while the log is synced.
            let conn = inner.writer.lock();
            conn.pragma_update(None, "synchronous", "FULL")
                .map_err(sql("end deferred sync"))?;
            let wal = wal_path(&inner.path);
            match std::fs::File::open(&wal) {
                Ok(file) => file
                    .sync_all()
                    .map_err(|e| Error::Internal(format!("sync {}: {e}", wal.display())))?,
                // No log: every commit is in the database file, synced when it was moved there.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::Internal(format!("open {}: {e}", wal.display()))),
            }
            // The log may have been created since the store was opened.
            sync_parent_dir(&inner.path)
        })
        .await
    }

    /// Compacts periodically, the way kube-apiserver does: every `interval` it compacts
    /// at the revision that was current one interval earlier, so between one and two
    /// intervals of history stay available to watches. The task ends when the store is
    /// dropped. Needs a Tokio runtime.
    pub fn spawn_compactor(&self, interval: Duration) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut previous: Option<Revision> = None;
            loop {
                ticker.tick().await;
                // Hold the store only between ticks, so dropping it ends the task.
                let Some(inner) = weak.upgrade() else { return };
                let now = inner.revision.load(Ordering::SeqCst);
                if let Some(at) = previous
                    && at > inner.compacted.load(Ordering::SeqCst)
                {
                    let task_inner = Arc::clone(&inner);
                    match blocking(move || compact_blocking(&task_inner, at)).await {
                        Ok(()) => tracing::debug!(revision = at, "compacted sqlite store"),
                        Err(e) => tracing::warn!(revision = at, error = %e, "compaction failed"),
                    }
                }
                previous = Some(now);
            }
        })
    }

    fn check_size(&self, value: &Bytes) -> Result<()> {
        if value.len() > self.max_value_bytes {
            return Err(Error::TooLarge);
        }
        Ok(())
    }

    async fn write(&self, key: &str, op: Write) -> Result<Revision> {
        let inner = Arc::clone(&self.inner);
        let key = key.to_owned();
        blocking(move || write_blocking(&inner, &key, op)).await
    }
}

/// Runs blocking SQLite work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("sqlite task failed: {e}")))?
}

fn open_connection(path: &Path, create: bool) -> Result<Connection> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let conn = Connection::open_with_flags(path, flags).map_err(sql("open"))?;
    conn.busy_timeout(Duration::from_secs(10))
        .map_err(sql("set busy timeout"))?;
    // Setting WAL reads the header first, so a file that is not a database fails here,
    // before anything is written to it.
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(sql("enable WAL"))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::Internal(format!(
            "sqlite: cannot enable WAL mode on {} (got {mode})",
            path.display()
        )));
    }
    // FULL: the WAL is fsynced at every commit, so an acknowledged write is durable.
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(sql("set synchronous"))?;
    // Extra checks on every page read, to report damage instead of misreading it.
    conn.pragma_update(None, "cell_size_check", true)
        .map_err(sql("set cell_size_check"))?;
    conn.pragma_update(None, "foreign_keys", false)
        .map_err(sql("set foreign_keys"))?;
    // Shrink the WAL back after a burst of writes once it has been checkpointed.
    conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)
        .map_err(sql("set journal_size_limit"))?;
    if !create {
        conn.pragma_update(None, "query_only", true)
            .map_err(sql("set query_only"))?;
    }
    Ok(conn)
}

/// Creates the schema in a new file, or checks an existing one; returns the stored
/// (revision, compacted revision).
fn init_schema(conn: &Connection) -> Result<(Revision, Revision)> {
    let check: Vec<String> = {
        let mut stmt = conn
            .prepare("PRAGMA quick_check")
            .map_err(sql("check database"))?;
        let rows = stmt
            .query_map([], |row| row.get::<_, String>(0))
            .map_err(sql("check database"))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(sql("check database"))?
    };
    if check != ["ok"] {
        return Err(corrupt(check.join("; ")));
    }
    let app_id: i64 = conn
        .query_row("PRAGMA application_id", [], |row| row.get(0))
        .map_err(sql("read application_id"))?;
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(sql("read user_version"))?;
    if app_id == 0 && version == 0 {
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_master", [], |row| row.get(0))
            .map_err(sql("read schema"))?;
        if tables != 0 {
            return Err(Error::Internal(
                "sqlite: the file is a database but not a badge store".into(),
            ));
        }
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE; {SCHEMA} PRAGMA application_id = {APPLICATION_ID}; \
             PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
        ))
        .map_err(sql("create schema"))?;
    } else if app_id != APPLICATION_ID {
        return Err(Error::Internal(format!(
            "sqlite: the file is not a badge store (application_id {app_id:#x})"
        )));
    } else if version != SCHEMA_VERSION {
        return Err(Error::Internal(format!(
            "sqlite: unsupported schema version {version} (this build reads {SCHEMA_VERSION})"
        )));
    }
    let (revision, compacted) = read_meta(conn)?;
    // Nothing may be recorded past the stored revision, or the next writes would reuse
    // revisions.
    let (max_log, max_kv): (Option<i64>, Option<i64>) = conn
        .query_row(
            "SELECT (SELECT max(rev) FROM log), (SELECT max(mod_rev) FROM kv)",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .map_err(sql("check revisions"))?;
    if max_log.unwrap_or(0) > revision || max_kv.unwrap_or(0) > revision || compacted > revision {
        return Err(corrupt(format!(
            "revision {revision}, compacted {compacted}, last log entry {max_log:?}, \
             last key modification {max_kv:?}"
        )));
    }
    Ok((revision, compacted))
}

/// The write-ahead log SQLite keeps beside `path`.
fn wal_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

fn sync_parent_dir(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::Internal(format!("sync directory {}: {e}", dir.display())))
}

/// (current revision, compacted revision) as stored.
fn read_meta(conn: &Connection) -> Result<(Revision, Revision)> {
    let (revision, compacted): (Option<i64>, Option<i64>) = conn
        .prepare_cached(
            "SELECT (SELECT value FROM meta WHERE name = 'revision'), \
                    (SELECT value FROM meta WHERE name = 'compacted')",
        )
        .and_then(|mut stmt| stmt.query_row([], |row| Ok((row.get(0)?, row.get(1)?))))
        .map_err(sql("read meta"))?;
    match (revision, compacted) {
        (Some(r), Some(c)) => Ok((r, c)),
        _ => Err(corrupt("meta rows missing")),
    }
}

fn read_kv(conn: &Connection, key: &str) -> Result<Option<KeyValue>> {
    conn.prepare_cached("SELECT value, create_rev, mod_rev FROM kv WHERE key = ?1")
        .and_then(|mut stmt| {
            stmt.query_row([key], |row| {
                Ok(KeyValue {
                    key: key.to_owned(),
                    value: Bytes::from(row.get::<_, Vec<u8>>(0)?),
                    create_revision: row.get(1)?,
                    mod_revision: row.get(2)?,
                })
            })
            .optional()
        })
        .map_err(sql("read key"))
}

/// A key's create and mod revisions, without its value.
fn read_kv_revisions(conn: &Connection, key: &str) -> Result<Option<(Revision, Revision)>> {
    conn.prepare_cached("SELECT create_rev, mod_rev FROM kv WHERE key = ?1")
        .and_then(|mut stmt| {
            stmt.query_row([key], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()
        })
        .map_err(sql("read key"))
}

enum Write {
    Create(Bytes),
    Update(Bytes, Revision),
    Delete(Revision),
}

fn write_blocking(inner: &Inner, key: &str, op: Write) -> Result<Revision> {
    let mut conn = inner.writer.lock();
    // IMMEDIATE: take the write lock up front (dropping `tx` on an early return rolls back).
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql("begin write"))?;
    // The revision comes from the database, not the atomic, so a failed commit can never
    // make two writes share one.
    let (current, compacted) = read_meta(&tx)?;
    let event = stage_write(&tx, key, op, current + 1, compacted)??;
    let revision = event.revision;
    commit_writes(inner, tx, vec![event])?;
    Ok(revision)
}

/// Writes `ops` in one transaction (one fsync), each as [`write_blocking`] would write it
/// alone, with a revision of its own. An op that fails its own check (the key exists, or
/// moved) is left out and the others still land: the caller (a flush of records several
/// servers share) wants every write that can land to land, and retries the others, so
/// all-or-nothing would only turn one conflict into a batch of retries. A failure of the
/// database itself rolls everything back and is every op's outcome.
fn batch_blocking(inner: &Inner, ops: Vec<(String, Write)>) -> Vec<Result<Revision>> {
    let count = ops.len();
    let staged = (|| {
        let mut conn = inner.writer.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql("begin write"))?;
        let (mut current, compacted) = read_meta(&tx)?;
        let mut outcomes = Vec::with_capacity(ops.len());
        let mut events = Vec::new();
        for (key, op) in ops {
            match stage_write(&tx, &key, op, current + 1, compacted)? {
                Ok(event) => {
                    current = event.revision;
                    outcomes.push(Ok(current));
                    events.push(event);
                }
                Err(refused) => outcomes.push(Err(refused)),
            }
        }
        if !events.is_empty() {
            commit_writes(inner, tx, events)?;
        }
        Ok(outcomes)
    })();
    staged.unwrap_or_else(|failed: Error| vec![Err(failed); count])
}

/// Stages one write at `revision` in `tx`: the outer error is the database's (the
/// transaction must roll back), the inner one the op's own refusal (nothing staged).
fn stage_write(
    tx: &rusqlite::Transaction<'_>,
    key: &str,
    op: Write,
    revision: Revision,
    compacted: Revision,
) -> Result<Result<Event>> {
    // The revisions decide; the stored value is read only where it is needed (a delete's
    // event, a conflict's answer, history put back), not for every create and update.
    let existing = read_kv_revisions(tx, key)?;
    let stored = || read_kv(tx, key).map(|kv| kv.map(|kv| kv.value).unwrap_or_default());
    let event = match (op, existing) {
        (Write::Create(_), Some(_)) => {
            return Ok(Err(Error::AlreadyExists { key: key.to_owned() }));
        }
        (Write::Create(value), None) => Event {
            kind: EventKind::Put,
            key: key.to_owned(),
            revision,
            value,
            create_revision: revision,
        },
        (Write::Update(value, expected), Some((create_revision, mod_revision)))
            if mod_revision == expected =>
        {
            Event {
                kind: EventKind::Put,
                key: key.to_owned(),
                revision,
                value,
                create_revision,
            }
        }
        (Write::Delete(expected), Some((create_revision, mod_revision))) if mod_revision == expected => {
            Event {
                kind: EventKind::Delete,
                key: key.to_owned(),
                revision,
                value: stored()?,
                create_revision,
            }
        }
        // Rare: the answer carries what is stored, read now.
        _ => {
            return Ok(Err(Error::Conflict {
                key: key.to_owned(),
                current: read_kv(tx, key)?.map(Box::new),
            }));
        }
    };
    if let Some((create_revision, mod_revision)) = existing
        && mod_revision < compacted
    {
        // The key's last row was compacted away; put it back so reads at revisions
        // between the compaction and this write still see the key (see module docs).
        let value = stored()?;
        tx.prepare_cached(
            "INSERT OR IGNORE INTO log (rev, key, kind, value, create_rev) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                mod_revision,
                key,
                KIND_PUT,
                value.as_ref(),
                create_revision
            ])
        })
        .map_err(sql("restore history"))?;
    }
    match event.kind {
        EventKind::Put => tx
            .prepare_cached(
                "INSERT INTO kv (key, value, create_rev, mod_rev) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value, \
                 create_rev = excluded.create_rev, mod_rev = excluded.mod_rev",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    key,
                    event.value.as_ref(),
                    event.create_revision,
                    revision
                ])
            }),
        EventKind::Delete => tx
            .prepare_cached("DELETE FROM kv WHERE key = ?1")
            .and_then(|mut stmt| stmt.execute([key])),
    }
    .map_err(sql("write key"))?;
    let kind = match event.kind {
        EventKind::Put => KIND_PUT,
        EventKind::Delete => KIND_DELETE,
    };
    tx.prepare_cached("INSERT INTO log (rev, key, kind, value, create_rev) VALUES (?1, ?2, ?3, ?4, ?5)")
        .and_then(|mut stmt| {
            stmt.execute(params![
                revision,
                key,
                kind,
                event.value.as_ref(),
                event.create_revision
            ])
        })
        .map_err(sql("write log"))?;
    Ok(Ok(event))
}

/// Records the last staged revision, commits, and publishes the events in order.
fn commit_writes(inner: &Inner, tx: rusqlite::Transaction<'_>, events: Vec<Event>) -> Result<()> {
    let Some(revision) = events.last().map(|event| event.revision) else {
        return Ok(());
    };
    tx.prepare_cached("UPDATE meta SET value = ?1 WHERE name = 'revision'")
        .and_then(|mut stmt| stmt.execute([revision]))
        .map_err(sql("write revision"))?;
    tx.commit().map_err(sql("commit"))?;
    inner.revision.store(revision, Ordering::SeqCst);
    for event in events {
        // No receivers is not an error.
        let _ = inner.events.send(Arc::new(event));
    }
    Ok(())
}

fn compact_blocking(inner: &Inner, revision: Revision) -> Result<()> {
    let mut conn = inner.writer.lock();
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql("begin compaction"))?;
    let (current, compacted) = read_meta(&tx)?;
    if revision > current {
        return Err(Error::FutureRevision {
            requested: revision,
            current,
        });
    }
    if revision <= compacted {
        return Ok(());
    }
    // Keep a key's row below `revision` only when it is a put and the key's next change
    // comes after `revision`: reads at revisions from `revision` up to that change need
    // it. (When the key has no later change, `kv` holds the same state.)
    let removed = tx
        .execute(
            "DELETE FROM log WHERE rev < ?1 AND NOT (kind = ?2 AND coalesce( \
                (SELECT min(n.rev) FROM log AS n WHERE n.key = log.key AND n.rev > log.rev), \
                0) > ?1)",
            params![revision, KIND_PUT],
        )
        .map_err(sql("compact log"))?;
    tx.execute("UPDATE meta SET value = ?1 WHERE name = 'compacted'", [revision])
        .map_err(sql("write compacted revision"))?;
    tx.commit().map_err(sql("commit compaction"))?;
    inner.compacted.store(revision, Ordering::SeqCst);
    tracing::debug!(revision, removed, "compacted history");
    Ok(())
}

/// The keys starting with `prefix` (and after `after`), as SQL conditions.
#[derive(Clone)]
struct KeyRange {
    prefix: String,
    end: Option<String>,
    after: Option<String>,
}

impl KeyRange {
    fn new(prefix: &str, after: Option<&str>) -> KeyRange {
        KeyRange {
            prefix: prefix.to_owned(),
            end: prefix_end(prefix),
            after: after.map(str::to_owned),
        }
    }

    /// Appends ` AND <column> ...` conditions and their parameters. A range rather than
    /// LIKE/substr, so the key indexes are used; SQLite compares TEXT bytewise, and UTF-8
    /// byte order is code point order.
    fn push_conditions(&self, sql: &mut String, params: &mut Vec<Value>, column: &str) {
        params.push(Value::Text(self.prefix.clone()));
        let _ = write!(sql, " AND {column} >= ?{}", params.len());
        if let Some(end) = &self.end {
            params.push(Value::Text(end.clone()));
            let _ = write!(sql, " AND {column} < ?{}", params.len());
        }
        if let Some(after) = &self.after {
            params.push(Value::Text(after.clone()));
            let _ = write!(sql, " AND {column} > ?{}", params.len());
        }
    }
}

/// The smallest string greater than every string starting with `prefix` (None: no bound).
fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let mut next = u32::from(last) + 1;
        if (0xD800..=0xDFFF).contains(&next) {
            next = 0xE000;
        }
        if let Some(next) = char::from_u32(next) {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// A query yielding (key, value, create_rev, mod_rev) for the keys in `range` as of
/// `at` (None: now).
fn snapshot_query(range: &KeyRange, at: Option<Revision>) -> (String, Vec<Value>) {
    let mut params = Vec::new();
    let mut sql = String::from("SELECT key, value, create_rev, mod_rev FROM kv WHERE 1");
    range.push_conditions(&mut sql, &mut params, "key");
    if let Some(at) = at {
        // Keys unchanged since `at` come from kv; for keys changed after `at`, their last
        // row at or before `at` tells their state then (absent when it is a delete or
        // there is none).
        params.push(Value::Integer(at));
        let at_param = params.len();
        let _ = write!(
            sql,
            " AND mod_rev <= ?{at_param} \
             UNION ALL \
             SELECT l.key, l.value, l.create_rev, l.rev FROM \
             (SELECT DISTINCT key FROM log WHERE rev > ?{at_param}"
        );
        range.push_conditions(&mut sql, &mut params, "key");
        params.push(Value::Integer(KIND_PUT));
        let _ = write!(
            sql,
            ") AS c JOIN log AS l ON l.rev = (SELECT max(m.rev) FROM log AS m \
             WHERE m.key = c.key AND m.rev <= ?{at_param}) WHERE l.kind = ?{}",
            params.len()
        );
    }
    (sql, params)
}

fn get_blocking(inner: &Inner, key: &str) -> Result<(Option<KeyValue>, Revision)> {
    let mut conn = inner.reader.lock();
    let tx = conn.transaction().map_err(sql("begin read"))?;
    let (current, _) = read_meta(&tx)?;
    let kv = read_kv(&tx, key)?;
    Ok((kv, current))
}

fn list_blocking(inner: &Inner, prefix: &str, options: &ListOptions) -> Result<ListResult> {
    let mut conn = inner.reader.lock();
    // One read transaction: one snapshot for the revision check, the page and the count.
    let tx = conn.transaction().map_err(sql("begin read"))?;
    let (current, compacted) = read_meta(&tx)?;
    let at = match options.revision {
        None => current,
        Some(requested) if requested < compacted => {
            return Err(Error::Compacted { requested, compacted });
        }
        Some(requested) if requested > current => {
            return Err(Error::FutureRevision { requested, current });
        }
        Some(requested) => requested,
    };
    let historical = (at < current).then_some(at);
    let range = KeyRange::new(prefix, options.start_after.as_deref());
    let (inner_sql, mut params) = snapshot_query(&range, historical);
    let limit = if options.limit == 0 {
        -1
    } else {
        i64::try_from(options.limit).unwrap_or(i64::MAX)
    };
    params.push(Value::Integer(limit));
    let query = format!(
        "SELECT key, value, create_rev, mod_rev FROM ({inner_sql}) ORDER BY key LIMIT ?{}",
        params.len()
    );
    let items: Vec<KeyValue> = {
        let mut stmt = tx.prepare_cached(&query).map_err(sql("list"))?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(params.iter()), |row| {
                Ok(KeyValue {
                    key: row.get(0)?,
                    value: Bytes::from(row.get::<_, Vec<u8>>(1)?),
                    create_revision: row.get(2)?,
                    mod_revision: row.get(3)?,
                })
            })
            .map_err(sql("list"))?;
        rows.collect::<rusqlite::Result<_>>().map_err(sql("list"))?
    };
    let remaining = match items.last() {
        Some(last) if options.limit != 0 && items.len() == options.limit => {
            let rest = KeyRange::new(prefix, Some(&last.key));
            let (rest_sql, params) = snapshot_query(&rest, historical);
            let count: i64 = tx
                .prepare_cached(&format!("SELECT count(*) FROM ({rest_sql})"))
                .and_then(|mut stmt| {
                    stmt.query_row(rusqlite::params_from_iter(params.iter()), |row| row.get(0))
                })
                .map_err(sql("count remaining"))?;
            u64::try_from(count).unwrap_or(0)
        }
        _ => 0,
    };
    Ok(ListResult {
        items,
        revision: at,
        remaining,
    })
}

/// Recorded events for `range` with `through < rev <= target`, at most one page; returns
/// them and the revision they cover up to.
fn backlog_blocking(
    inner: &Inner,
    range: &KeyRange,
    through: Revision,
    target: Revision,
) -> Result<(Vec<Event>, Revision)> {
    let mut conn = inner.reader.lock();
    let tx = conn.transaction().map_err(sql("begin read"))?;
    let (_, compacted) = read_meta(&tx)?;
    check_history(through, compacted)?;
    let mut params = vec![Value::Integer(through), Value::Integer(target)];
    let mut query =
        String::from("SELECT rev, key, kind, value, create_rev FROM log WHERE rev > ?1 AND rev <= ?2");
    range.push_conditions(&mut query, &mut params, "key");
    params.push(Value::Integer(i64::try_from(BACKLOG_PAGE).unwrap_or(i64::MAX)));
    let _ = write!(query, " ORDER BY rev LIMIT ?{}", params.len());
    let rows: Vec<(Revision, String, i64, Vec<u8>, Revision)> = {
        let mut stmt = tx.prepare_cached(&query).map_err(sql("read history"))?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(params.iter()), |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?))
            })
            .map_err(sql("read history"))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(sql("read history"))?
    };
    let covered = match rows.last() {
        Some((rev, ..)) if rows.len() == BACKLOG_PAGE => *rev,
        _ => target,
    };
    let events = rows
        .into_iter()
        .map(|(revision, key, kind, value, create_revision)| {
            let kind = match kind {
                KIND_PUT => EventKind::Put,
                KIND_DELETE => EventKind::Delete,
                other => return Err(corrupt(format!("log entry {revision} has kind {other}"))),
            };
            Ok(Event {
                kind,
                key,
                revision,
                value: Bytes::from(value),
                create_revision,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((events, covered))
}

/// A watch needs every revision after `after`; history starts at `compacted`.
fn check_history(after: Revision, compacted: Revision) -> Result<()> {
    if after.saturating_add(1) < compacted {
        return Err(Error::Compacted {
            requested: after.saturating_add(1),
            compacted,
        });
    }
    Ok(())
}

enum Phase {
    /// Reading recorded events up to `target` from `log`.
    CatchUp { target: Revision },
    /// Following the broadcast channel.
    Live,
}

struct Watcher {
    /// Weak, so an open watch does not keep the database open; the stream ends with an
    /// error once the store is dropped.
    inner: Weak<Inner>,
    range: KeyRange,
    rx: broadcast::Receiver<Arc<Event>>,
    /// Every event up to this revision has been delivered or filtered out.
    through: Revision,
    phase: Phase,
}

fn store_closed() -> Error {
    Error::Unavailable("the sqlite store was closed".into())
}

impl Watcher {
    /// The next non-empty batch.
    async fn next_batch(&mut self) -> Result<Vec<Event>> {
        loop {
            match self.phase {
                Phase::CatchUp { target } => {
                    if self.through >= target {
                        self.phase = Phase::Live;
                        continue;
                    }
                    let inner = self.inner.upgrade().ok_or_else(store_closed)?;
                    let range = self.range.clone();
                    let through = self.through;
                    let (events, covered) =
                        blocking(move || backlog_blocking(&inner, &range, through, target)).await?;
                    self.through = covered;
                    if !events.is_empty() {
                        return Ok(events);
                    }
                }
                Phase::Live => {
                    let mut batch = Vec::new();
                    match self.rx.recv().await {
                        Ok(event) => self.accept(&event, &mut batch),
                        Err(broadcast::error::RecvError::Lagged(missed)) => {
                            self.resync(missed)?;
                            continue;
                        }
                        Err(broadcast::error::RecvError::Closed) => return Err(store_closed()),
                    }
                    while batch.len() < LIVE_BATCH {
                        match self.rx.try_recv() {
                            Ok(event) => self.accept(&event, &mut batch),
                            Err(broadcast::error::TryRecvError::Lagged(missed)) => {
                                self.resync(missed)?;
                                break;
                            }
                            // Closed is reported by the next recv, after this batch.
                            Err(_) => break,
                        }
                    }
                    if !batch.is_empty() {
                        return Ok(batch);
                    }
                }
            }
        }
    }

    fn accept(&mut self, event: &Event, batch: &mut Vec<Event>) {
        // Events up to `through` were read from the log already.
        if event.revision <= self.through {
            return;
        }
        self.through = event.revision;
        if event.key.starts_with(&self.range.prefix) {
            batch.push(event.clone());
        }
    }

    /// The channel dropped events this watcher had not received: read them from `log`.
    fn resync(&mut self, missed: u64) -> Result<()> {
        let inner = self.inner.upgrade().ok_or_else(store_closed)?;
        // Subscribe before reading the revision: whatever commits after that read is
        // published after the subscription (see `Inner::revision`).
        self.rx = inner.events.subscribe();
        let target = inner.revision.load(Ordering::SeqCst);
        tracing::debug!(
            missed,
            through = self.through,
            target,
            "watcher fell behind; catching up from the log"
        );
        self.phase = Phase::CatchUp { target };
        Ok(())
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn get(&self, key: &str) -> Result<(Option<KeyValue>, Revision)> {
        let inner = Arc::clone(&self.inner);
        let key = key.to_owned();
        blocking(move || get_blocking(&inner, &key)).await
    }

    async fn list(&self, prefix: &str, options: ListOptions) -> Result<ListResult> {
        let inner = Arc::clone(&self.inner);
        let prefix = prefix.to_owned();
        blocking(move || list_blocking(&inner, &prefix, &options)).await
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<Revision> {
        self.check_size(&value)?;
        self.write(key, Write::Create(value)).await
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<Revision> {
        self.check_size(&value)?;
        self.write(key, Write::Update(value, expected)).await
    }

    async fn delete(&self, key: &str, expected: Revision) -> Result<Revision> {
        self.write(key, Write::Delete(expected)).await
    }

    async fn write_batch(&self, ops: Vec<BatchOp>) -> Vec<Result<Revision>> {
        // Oversized values are refused alone, before the transaction.
        let mut outcomes: Vec<Option<Result<Revision>>> = Vec::with_capacity(ops.len());
        let mut writes = Vec::with_capacity(ops.len());
        for op in ops {
            if let Err(e) = self.check_size(op.value()) {
                outcomes.push(Some(Err(e)));
                continue;
            }
            outcomes.push(None);
            writes.push(match op {
                BatchOp::Create { key, value } => (key, Write::Create(value)),
                BatchOp::Update { key, value, expected } => (key, Write::Update(value, expected)),
            });
        }
        let written = if writes.is_empty() {
            Vec::new()
        } else {
            let inner = Arc::clone(&self.inner);
            let count = writes.len();
            blocking(move || Ok(batch_blocking(&inner, writes)))
                .await
                .unwrap_or_else(|failed| vec![Err(failed); count])
        };
        let mut written = written.into_iter();
        outcomes
            .into_iter()
            .map(|outcome| {
                outcome.unwrap_or_else(|| {
                    written
                        .next()
                        .unwrap_or_else(|| Err(Error::Internal("sqlite: a batch outcome is missing".into())))
                })
            })
            .collect()
    }

    async fn current_revision(&self) -> Result<Revision> {
        Ok(self.inner.revision.load(Ordering::SeqCst))
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        // Subscribe first, then read the revision: everything up to it is in the log,
        // everything after it will come through the channel.
        let rx = self.inner.events.subscribe();
        let target = self.inner.revision.load(Ordering::SeqCst);
        check_history(after, self.inner.compacted.load(Ordering::SeqCst))?;
        let watcher = Watcher {
            inner: Arc::downgrade(&self.inner),
            range: KeyRange::new(prefix, None),
            rx,
            through: after,
            phase: Phase::CatchUp { target },
        };
        let stream = futures::stream::unfold(Some(watcher), |state| async move {
            let mut watcher = state?;
            match watcher.next_batch().await {
                Ok(batch) => Some((Ok(batch), Some(watcher))),
                // An error ends the stream.
                Err(e) => Some((Err(e), None)),
            }
        });
        Ok(Box::pin(stream))
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        let inner = Arc::clone(&self.inner);
        blocking(move || compact_blocking(&inner, revision)).await
    }

    async fn compacted_revision(&self) -> Result<Revision> {
        Ok(self.inner.compacted.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    use futures::StreamExt;

    use super::*;

    struct Fixture {
        store: SqliteStore,
        _dir: tempfile::TempDir,
    }

    impl AsRef<dyn Store> for Fixture {
        fn as_ref(&self) -> &(dyn Store + 'static) {
            &self.store
        }
    }

    async fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("store.db")).unwrap();
        Fixture { store, _dir: dir }
    }

    mod conformance {
        crate::conformance_tests!(super::fixture);
    }

    /// The other entry point, sequential on fresh fixtures.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn run_all_passes() {
        crate::conformance::run_all(fixture).await;
    }

    fn wal(path: &Path) -> PathBuf {
        let mut name = path.as_os_str().to_owned();
        name.push("-wal");
        PathBuf::from(name)
    }

    fn value(i: u32) -> Bytes {
        Bytes::from(format!("value {i}"))
    }

    #[test]
    fn prefix_end_is_the_least_upper_bound() {
        assert_eq!(prefix_end(""), None);
        assert_eq!(prefix_end("/a/").as_deref(), Some("/a0"));
        assert_eq!(prefix_end("/a").as_deref(), Some("/b"));
        assert_eq!(prefix_end("/\u{D7FF}").as_deref(), Some("/\u{E000}"));
        assert_eq!(prefix_end("/a\u{10FFFF}").as_deref(), Some("/b"));
        assert_eq!(prefix_end("\u{10FFFF}\u{10FFFF}"), None);
    }

    /// Frames in the WAL: each commit appends the pages it changed, so separate commits of
    /// a hundred small rows append at least a hundred frames, and one commit a few.
    fn wal_frames(path: &Path) -> u64 {
        const HEADER: u64 = 32;
        const FRAME_HEADER: u64 = 24;
        let page: u64 = Connection::open(path)
            .unwrap()
            .query_row("PRAGMA page_size", [], |row| row.get(0))
            .unwrap();
        let len = std::fs::metadata(wal(path)).map_or(0, |m| m.len());
        len.saturating_sub(HEADER) / (page + FRAME_HEADER)
    }

    #[tokio::test]
    async fn a_batch_is_one_commit_with_a_revision_per_op() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let store = SqliteStore::open(&path).unwrap();
        store
            .inner
            .writer
            .lock()
            .pragma_update(None, "wal_autocheckpoint", 0)
            .unwrap();
        let existing = store.create("/b/existing", value(0)).await.unwrap();
        let start = wal_frames(&path);
        let mut ops: Vec<BatchOp> = (1..=100)
            .map(|i| BatchOp::Create {
                key: format!("/b/{i:03}"),
                value: value(i),
            })
            .collect();
        ops.insert(
            50,
            BatchOp::Create {
                key: "/b/existing".into(),
                value: value(0),
            },
        );
        let outcomes = store.write_batch(ops).await;
        let batch_frames = wal_frames(&path) - start;
        let landed: Vec<Revision> = outcomes.iter().filter_map(|o| o.as_ref().ok().copied()).collect();
        assert_eq!(
            landed,
            (existing + 1..=existing + 100).collect::<Vec<_>>(),
            "consecutive revisions, none for the refused op"
        );
        assert!(matches!(outcomes[50], Err(Error::AlreadyExists { .. })));

        let start = wal_frames(&path);
        for i in 101..=200 {
            store.create(&format!("/b/{i:03}"), value(i)).await.unwrap();
        }
        let single_frames = wal_frames(&path) - start;
        assert!(
            single_frames >= 100 && batch_frames * 5 < single_frames,
            "a batch of 100 took {batch_frames} WAL frames, 100 single writes {single_frames}"
        );
    }

    fn synchronous(store: &SqliteStore) -> i64 {
        store
            .inner
            .writer
            .lock()
            .query_row("PRAGMA synchronous", [], |row| row.get(0))
            .unwrap()
    }

    #[tokio::test]
    async fn deferred_sync_keeps_its_commits_and_ends_in_full_sync() {
        const NORMAL: i64 = 1;
        const FULL: i64 = 2;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(synchronous(&store), FULL);
        store.defer_sync().unwrap();
        assert_eq!(synchronous(&store), NORMAL);
        let first = store.create("/a", value(1)).await.unwrap();
        let second = store.create("/b", value(2)).await.unwrap();
        store.end_deferred_sync().await.unwrap();
        assert_eq!(synchronous(&store), FULL);
        let third = store.create("/c", value(3)).await.unwrap();
        drop(store);
        let store = SqliteStore::open(&path).unwrap();
        for (key, revision) in [("/a", first), ("/b", second), ("/c", third)] {
            let (kv, _) = store.get(key).await.unwrap();
            assert_eq!(kv.unwrap().mod_revision, revision, "{key}");
        }
    }

    #[tokio::test]
    async fn reopen_keeps_data_revision_and_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let (r1, r3, r4, r5) = {
            let store = SqliteStore::open(&path).unwrap();
            let r1 = store.create("/a", value(1)).await.unwrap();
            let r2 = store.create("/b", value(2)).await.unwrap();
            let r3 = store.update("/a", value(3), r1).await.unwrap();
            let r4 = store.delete("/b", r2).await.unwrap();
            let r5 = store.create("/c", value(5)).await.unwrap();
            store.compact(r3).await.unwrap();
            (r1, r3, r4, r5)
        };
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.current_revision().await.unwrap(), r5);
        assert_eq!(store.compacted_revision().await.unwrap(), r3);
        let (a, rev) = store.get("/a").await.unwrap();
        assert_eq!(rev, r5);
        assert_eq!(
            a,
            Some(KeyValue {
                key: "/a".into(),
                value: value(3),
                create_revision: r1,
                mod_revision: r3
            })
        );
        let at_r3 = store
            .list(
                "",
                ListOptions {
                    revision: Some(r3),
                    ..ListOptions::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(
            at_r3.items.iter().map(|kv| kv.key.as_str()).collect::<Vec<_>>(),
            ["/a", "/b"]
        );
        assert!(matches!(
            store
                .list(
                    "",
                    ListOptions {
                        revision: Some(r1),
                        ..ListOptions::default()
                    }
                )
                .await,
            Err(Error::Compacted { .. })
        ));
        let mut stream = store.watch("", r3 - 1).await.unwrap();
        let batch = stream.next().await.unwrap().unwrap();
        assert_eq!(batch.iter().map(|e| e.revision).collect::<Vec<_>>(), [r3, r4, r5]);
        assert_eq!(store.create("/d", value(6)).await.unwrap(), r5 + 1);
    }

    #[tokio::test]
    async fn revision_survives_deleting_and_compacting_everything() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let last = {
            let store = SqliteStore::open(&path).unwrap();
            let r1 = store.create("/a", value(1)).await.unwrap();
            let r2 = store.delete("/a", r1).await.unwrap();
            store.compact(r2).await.unwrap();
            r2
        };
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.current_revision().await.unwrap(), last);
        assert_eq!(store.create("/a", value(2)).await.unwrap(), last + 1);
    }

    #[tokio::test]
    async fn reopen_after_unclean_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let store = SqliteStore::open(&path).unwrap();
        let mut last = 0;
        for i in 0..50 {
            last = store.create(&format!("/k/{i:02}"), value(i)).await.unwrap();
        }
        // No close, no checkpoint: the writes live only in the WAL.
        std::mem::forget(store);
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.current_revision().await.unwrap(), last);
        let all = store.list("/k/", ListOptions::default()).await.unwrap();
        assert_eq!(all.items.len(), 50);
        assert!(all.items.iter().zip(0..).all(|(kv, i)| kv.value == value(i)));
    }

    const CRASH_CHILD_ENV: &str = "BADGE_STORE_CRASH_CHILD_DB";

    /// The child process of `survives_sigkill`: writes until killed, printing each
    /// acknowledged write.
    #[tokio::test]
    #[ignore = "run by survives_sigkill in a child process"]
    async fn crash_child() {
        let Ok(path) = std::env::var(CRASH_CHILD_ENV) else {
            return;
        };
        let store = SqliteStore::open(Path::new(&path)).unwrap();
        for i in 0..100_000 {
            let rev = store.create(&format!("/crash/{i:06}"), value(i)).await.unwrap();
            println!("acked {i} {rev}");
        }
    }

    #[test]
    fn survives_sigkill() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("crash.db");
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "sqlite::tests::crash_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CRASH_CHILD_ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Kept open until the child is killed, so it dies of SIGKILL and not of a closed
        // pipe.
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut acked: Option<(u32, Revision)> = None;
        let mut line = String::new();
        while stdout.read_line(&mut line).unwrap() > 0 {
            if let Some(rest) = line.trim_end().strip_prefix("acked ") {
                let (i, rev) = rest.split_once(' ').unwrap();
                acked = Some((i.parse().unwrap(), rev.parse().unwrap()));
                if acked.is_some_and(|(i, _)| i >= 200) {
                    break;
                }
            }
            line.clear();
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        drop(stdout);
        let (acked, acked_rev) = acked.unwrap();
        assert!(acked >= 200, "the child acknowledged only {acked} writes");

        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let store = SqliteStore::open(&path).unwrap();
            let current = store.current_revision().await.unwrap();
            assert!(
                current >= acked_rev,
                "revision went back: {current} < {acked_rev}"
            );
            for i in 0..=acked {
                let (kv, _) = store.get(&format!("/crash/{i:06}")).await.unwrap();
                assert_eq!(kv.map(|kv| kv.value), Some(value(i)), "acknowledged write {i}");
            }
            let all = store.list("/crash/", ListOptions::default()).await.unwrap();
            let count = all.items.len();
            assert!(
                count == acked as usize + 1 || count == acked as usize + 2,
                "{count} keys after {acked} acknowledged writes"
            );
            assert_eq!(all.revision, current);
            assert!(store.create("/after", value(0)).await.unwrap() > current);
        });
    }

    #[tokio::test]
    async fn torn_wal_keeps_earlier_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let store = SqliteStore::open(&path).unwrap();
        // Keep every commit in the WAL for the copy below.
        store
            .inner
            .writer
            .lock()
            .pragma_update(None, "wal_autocheckpoint", 0)
            .unwrap();
        let mut revs = Vec::new();
        for i in 0..20 {
            revs.push(store.create(&format!("/t/{i:02}"), value(i)).await.unwrap());
        }
        // The files as a crash during the last commit's write would leave them: copied
        // while the store is open, then the WAL's last frame torn.
        let copy = dir.path().join("copy.db");
        std::fs::copy(&path, &copy).unwrap();
        std::fs::copy(wal(&path), wal(&copy)).unwrap();
        drop(store);
        let wal_file = std::fs::OpenOptions::new().write(true).open(wal(&copy)).unwrap();
        let len = wal_file.metadata().unwrap().len();
        wal_file.set_len(len - 100).unwrap();
        wal_file.sync_all().unwrap();
        drop(wal_file);

        let store = SqliteStore::open(&copy).unwrap();
        let current = store.current_revision().await.unwrap();
        assert_eq!(current, revs[18], "only the torn last commit is lost");
        let all = store.list("/t/", ListOptions::default()).await.unwrap();
        assert_eq!(all.items.len(), 19);
        for (i, kv) in (0..).zip(&all.items) {
            assert_eq!(kv.value, value(i));
            assert_eq!(kv.mod_revision, revs[i as usize]);
        }
        let mut stream = store.watch("/t/", 0).await.unwrap();
        let events = stream.next().await.unwrap().unwrap();
        assert_eq!(events.iter().map(|e| e.revision).collect::<Vec<_>>(), revs[..19]);
        assert_eq!(store.create("/t/19", value(19)).await.unwrap(), revs[18] + 1);
    }

    /// Writes enough to spread the data over many pages, closes cleanly (checkpointing
    /// it all into the main file) and returns the path.
    async fn checkpointed_store(dir: &Path) -> PathBuf {
        let path = dir.join("store.db");
        let store = SqliteStore::open(&path).unwrap();
        for i in 0..300 {
            let big = Bytes::from(vec![b'x'; 2000 + i as usize]);
            store.create(&format!("/k/{i:04}"), big).await.unwrap();
        }
        drop(store);
        assert!(
            !wal(&path).exists(),
            "a clean close checkpoints and removes the WAL"
        );
        path
    }

    #[tokio::test]
    async fn corrupt_page_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = checkpointed_store(dir.path()).await;
        let mut bytes = std::fs::read(&path).unwrap();
        let middle = bytes.len() / 2 / 4096 * 4096;
        bytes[middle..middle + 4096].fill(0xA5);
        std::fs::write(&path, &bytes).unwrap();
        match SqliteStore::open(&path) {
            Err(Error::Internal(msg)) => {
                assert!(msg.contains("corrupt") || msg.contains("malformed"), "{msg}")
            }
            other => panic!("expected the damage to be reported, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn truncated_database_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = checkpointed_store(dir.path()).await;
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let len = file.metadata().unwrap().len();
        file.set_len(len / 2).unwrap();
        drop(file);
        match SqliteStore::open(&path) {
            Err(Error::Internal(msg)) => assert!(!msg.is_empty()),
            other => panic!("expected the truncation to be reported, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn foreign_files_are_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("notes.txt");
        let content = b"not a database, and it must stay that way\n".repeat(200);
        std::fs::write(&text, &content).unwrap();
        assert!(matches!(SqliteStore::open(&text), Err(Error::Internal(_))));
        assert_eq!(std::fs::read(&text).unwrap(), content);

        let other = dir.path().join("other.db");
        Connection::open(&other)
            .unwrap()
            .execute_batch("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1);")
            .unwrap();
        match SqliteStore::open(&other) {
            Err(Error::Internal(msg)) => assert!(msg.contains("not a badge store"), "{msg}"),
            other => panic!("expected a foreign database to be refused, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn lagging_watcher_catches_up_from_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open_with_buffer(&dir.path().join("store.db"), 4).unwrap();
        let mut stream = store.watch("/l/", 0).await.unwrap();
        let mut revs = Vec::new();
        for i in 0..50 {
            revs.push(store.create(&format!("/l/{i:02}"), value(i)).await.unwrap());
            store.create(&format!("/other/{i:02}"), value(i)).await.unwrap();
        }
        let mut got = Vec::new();
        while got.len() < revs.len() {
            let batch = tokio::time::timeout(Duration::from_secs(10), stream.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            got.extend(batch.into_iter().map(|e| e.revision));
        }
        assert_eq!(got, revs);
        // Live again afterwards.
        let next = store.create("/l/next", value(0)).await.unwrap();
        let batch = stream.next().await.unwrap().unwrap();
        assert_eq!(batch.iter().map(|e| e.revision).collect::<Vec<_>>(), [next]);
    }

    #[tokio::test]
    async fn lagging_watcher_past_compaction_fails() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open_with_buffer(&dir.path().join("store.db"), 4).unwrap();
        let mut stream = store.watch("", 0).await.unwrap();
        for i in 0..20 {
            store.create(&format!("/l/{i:02}"), value(i)).await.unwrap();
        }
        store
            .compact(store.current_revision().await.unwrap())
            .await
            .unwrap();
        match stream.next().await {
            Some(Err(Error::Compacted { .. })) => {}
            other => panic!("expected Compacted, got {other:?}"),
        }
        assert!(stream.next().await.is_none(), "an error ends the stream");
    }

    #[tokio::test]
    async fn watch_ends_when_the_store_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("store.db")).unwrap();
        let mut stream = store.watch("", 0).await.unwrap();
        drop(store);
        match tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .unwrap()
        {
            Some(Err(Error::Unavailable(_))) => {}
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn compactor_compacts_and_stops_with_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("store.db")).unwrap();
        let r1 = store.create("/a", value(1)).await.unwrap();
        let task = store.spawn_compactor(Duration::from_millis(50));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while store.compacted_revision().await.unwrap() < r1 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the compactor never compacted"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (kv, _) = store.get("/a").await.unwrap();
        assert_eq!(kv.map(|kv| kv.value), Some(value(1)));
        drop(store);
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap()
            .unwrap();
    }
}
