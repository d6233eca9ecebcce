//! The log backend (`plugin/pkg/audit/log` behind upstream's batching buffer): a request
//! encodes its event as one JSON line into a shared, bounded buffer, and one writer thread
//! takes the whole buffer and writes it in a batch. Encoding where the event was made keeps
//! its strings freed by the thread that allocated them, and leaves the writer nothing but
//! I/O. A request never waits on the writer: a full buffer or a failed write drops the
//! events, counted and logged at most once per interval. The file rotates as upstream's
//! (lumberjack): past `max_size` the file is renamed `<name>-<UTC time><ext>` and a new one
//! started; backups beyond `max_backups` or older than `max_age` days are removed.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use parking_lot::{Condvar, Mutex};

use super::AuditBackend;
use crate::metrics::Metrics;

/// Encoded events waiting for the writer, in bytes; beyond this, new ones are dropped
/// (about ten thousand Metadata-level events).
pub const BUFFER_CAPACITY: usize = 16 << 20;
/// How long the writer gathers events before writing them.
const GATHER: std::time::Duration = std::time::Duration::from_millis(20);
/// lumberjack's size when none is given: 100 MB.
const DEFAULT_MAX_SIZE_MB: u64 = 100;
/// How often a loss of events is logged at most.
const DROP_LOG_INTERVAL_SECONDS: i64 = 10;
/// The timestamp in backup names, to the second (Go's `2006-01-02T15-04-05`, then `.000`).
const BACKUP_TIME_FORMAT: &str = "%Y-%m-%dT%H-%M-%S";

/// Where the log goes (`--audit-log-*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// Events are written to standard output (`--audit-log-path=-`).
    Stdout,
    /// Events are written to a file, rotated as configured.
    File(RotationOptions),
}

/// lumberjack's options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RotationOptions {
    /// The log file.
    pub path: PathBuf,
    /// Megabytes before rotating; 0 is lumberjack's 100.
    pub max_size_mb: u64,
    /// Old files kept; 0 keeps all (subject to `max_age_days`).
    pub max_backups: usize,
    /// Days old files are kept; 0 keeps them regardless of age.
    pub max_age_days: u64,
}

/// Encoded lines waiting for the writer.
#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    lines: u64,
    /// The backend is gone: the writer writes what is left and ends.
    closed: bool,
}

/// What the requests and the writer share.
struct Shared {
    pending: Mutex<Pending>,
    /// Signalled when the buffer stops being empty, or on close.
    filled: Condvar,
}

/// The requests' side of the log; the writer thread ends once it is dropped and the buffer
/// is written.
pub struct LogBackend {
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
    last_drop_log: Arc<AtomicI64>,
}

impl LogBackend {
    /// Opens the destination (so a bad path fails at startup) and starts the writer thread.
    pub fn start(destination: Destination, metrics: Arc<Metrics>) -> io::Result<LogBackend> {
        let output: Box<dyn LineWriter> = match destination {
            Destination::Stdout => Box::new(io::stdout()),
            Destination::File(options) => Box::new(RotatingFile::open(options)?),
        };
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            filled: Condvar::new(),
        });
        let last_drop_log = Arc::new(AtomicI64::new(i64::MIN));
        let writer = Writer {
            output,
            metrics: metrics.clone(),
            last_drop_log: last_drop_log.clone(),
        };
        let for_writer = shared.clone();
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run(&for_writer))?;
        Ok(LogBackend {
            shared,
            metrics,
            last_drop_log,
        })
    }
}

impl Drop for LogBackend {
    fn drop(&mut self) {
        self.shared.pending.lock().closed = true;
        self.shared.filled.notify_one();
    }
}

impl AuditBackend for LogBackend {
    fn process(&self, line: &[u8]) {
        let mut pending = self.shared.pending.lock();
        if pending.bytes.len() + line.len() + 1 > BUFFER_CAPACITY {
            drop(pending);
            return dropped(&self.metrics, &self.last_drop_log, 1, "the audit buffer is full");
        }
        let was_empty = pending.bytes.is_empty();
        pending.bytes.extend_from_slice(line);
        pending.bytes.push(b'\n');
        pending.lines += 1;
        drop(pending);
        // The writer waits only on an empty buffer: one wake-up per batch, not per event.
        if was_empty {
            self.shared.filled.notify_one();
        }
    }
}

fn dropped(metrics: &Metrics, last_log: &AtomicI64, count: u64, why: &str) {
    metrics.audit_events_dropped.fetch_add(count, Ordering::Relaxed);
    let now = badge_api::clock::now().as_second();
    let last = last_log.load(Ordering::Relaxed);
    if now.saturating_sub(last) >= DROP_LOG_INTERVAL_SECONDS
        && last_log
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::error!(
            dropped_total = metrics.audit_events_dropped.load(Ordering::Relaxed),
            "audit events dropped: {why}"
        );
    }
}

/// Something the writer appends lines to.
trait LineWriter: Send {
    fn write_line(&mut self, line: &[u8]) -> io::Result<()>;
    fn flush_batch(&mut self) -> io::Result<()>;

    /// Writes `count` newline-ended lines; how many were written, and the last failure.
    fn write_lines(&mut self, lines: &[u8], count: u64) -> (u64, Option<String>);
}

/// Writes newline-ended `lines` one at a time; how many were written, and the last failure.
fn line_by_line(writer: &mut impl LineWriter, lines: &[u8]) -> (u64, Option<String>) {
    let (mut written, mut failure) = (0, None);
    for line in lines.split_inclusive(|b| *b == b'\n') {
        match writer.write_line(line) {
            Ok(()) => written += 1,
            Err(e) => failure = Some(e.to_string()),
        }
    }
    (written, failure)
}

impl LineWriter for io::Stdout {
    fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        self.lock().write_all(line)
    }
    fn write_lines(&mut self, lines: &[u8], count: u64) -> (u64, Option<String>) {
        match self.lock().write_all(lines) {
            Ok(()) => (count, None),
            Err(e) => (0, Some(e.to_string())),
        }
    }
    fn flush_batch(&mut self) -> io::Result<()> {
        self.lock().flush()
    }
}

struct Writer {
    output: Box<dyn LineWriter>,
    metrics: Arc<Metrics>,
    last_drop_log: Arc<AtomicI64>,
}

impl Writer {
    fn run(mut self, shared: &Shared) {
        let mut batch = Vec::with_capacity(64 * 1024);
        loop {
            {
                let mut pending = shared.pending.lock();
                while pending.bytes.is_empty() && !pending.closed {
                    shared.filled.wait(&mut pending);
                }
                if pending.bytes.is_empty() {
                    return;
                }
            }
            // Gather what else arrives for a moment: while this thread sleeps rather than
            // waits, adding an event costs a request no wake-up.
            std::thread::sleep(GATHER);
            let lines = {
                let mut pending = shared.pending.lock();
                std::mem::swap(&mut pending.bytes, &mut batch);
                std::mem::take(&mut pending.lines)
            };
            let (mut written, mut failure) = self.output.write_lines(&batch, lines);
            if let Err(e) = self.output.flush_batch() {
                // Lines buffered but not flushed are lost with the failed flush.
                written = 0;
                failure = Some(e.to_string());
            }
            let lost = lines.saturating_sub(written);
            if lost > 0 {
                let why = format!("writing the audit log failed: {}", failure.unwrap_or_default());
                dropped(&self.metrics, &self.last_drop_log, lost, &why);
            }
            batch.clear();
            // A burst's buffer is not kept for ever.
            if batch.capacity() > 4 * BUFFER_CAPACITY / 16 {
                batch = Vec::with_capacity(64 * 1024);
            }
        }
    }
}

/// A log file that rotates by size, as lumberjack.
pub struct RotatingFile {
    options: RotationOptions,
    file: Option<io::BufWriter<File>>,
    size: u64,
}

impl RotatingFile {
    /// Opens the log at `options.path`, creating its directory when missing.
    pub fn open(options: RotationOptions) -> io::Result<RotatingFile> {
        if let Some(dir) = options.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = RotatingFile {
            options,
            file: None,
            size: 0,
        };
        file.open_existing()?;
        Ok(file)
    }

    fn max_size(&self) -> u64 {
        let mb = if self.options.max_size_mb == 0 {
            DEFAULT_MAX_SIZE_MB
        } else {
            self.options.max_size_mb
        };
        mb * 1024 * 1024
    }

    fn open_existing(&mut self) -> io::Result<()> {
        let file = open_append(&self.options.path)?;
        self.size = file.metadata()?.len();
        self.file = Some(io::BufWriter::with_capacity(64 * 1024, file));
        Ok(())
    }

    /// Renames the current file to a backup, starts a new one, and removes old backups.
    fn rotate(&mut self) -> io::Result<()> {
        if let Some(mut file) = self.file.take() {
            file.flush()?;
        }
        let backup = backup_name(&self.options.path, badge_api::clock::now());
        if self.options.path.exists() {
            std::fs::rename(&self.options.path, &backup)?;
        }
        let file = open_append(&self.options.path)?;
        self.size = 0;
        self.file = Some(io::BufWriter::with_capacity(64 * 1024, file));
        self.remove_old_backups();
        Ok(())
    }

    fn remove_old_backups(&self) {
        if self.options.max_backups == 0 && self.options.max_age_days == 0 {
            return;
        }
        let mut backups = match list_backups(&self.options.path) {
            Ok(backups) => backups,
            Err(e) => {
                tracing::warn!(error = %e, "listing audit log backups failed");
                return;
            }
        };
        // Newest first.
        backups.sort_by_key(|b| std::cmp::Reverse(b.0));
        let cutoff = (self.options.max_age_days > 0).then(|| {
            badge_api::clock::now().as_second()
                - i64::try_from(self.options.max_age_days.saturating_mul(86_400)).unwrap_or(i64::MAX)
        });
        for (i, (time, path)) in backups.iter().enumerate() {
            let too_many = self.options.max_backups > 0 && i >= self.options.max_backups;
            let too_old = cutoff.is_some_and(|cutoff| time.as_second() < cutoff);
            if (too_many || too_old)
                && let Err(e) = std::fs::remove_file(path)
            {
                tracing::warn!(error = %e, path = %path.display(), "removing an old audit log failed");
            }
        }
    }
}

impl LineWriter for RotatingFile {
    fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        let len = line.len() as u64;
        if len > self.max_size() {
            return Err(io::Error::other(format!(
                "write length {len} exceeds maximum file size {}",
                self.max_size()
            )));
        }
        if self.file.is_none() {
            self.open_existing()?;
        }
        if self.size + len > self.max_size() {
            self.rotate()?;
        }
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("the audit log is not open"))?;
        file.write_all(line)?;
        self.size += len;
        Ok(())
    }

    /// A batch that fits before the next rotation is one write; one that does not goes line
    /// by line, rotating where the size says.
    fn write_lines(&mut self, lines: &[u8], count: u64) -> (u64, Option<String>) {
        let len = lines.len() as u64;
        let fits = self.size + len <= self.max_size();
        if let Some(file) = self.file.as_mut()
            && fits
        {
            return match file.write_all(lines) {
                Ok(()) => {
                    self.size += len;
                    (count, None)
                }
                Err(e) => (0, Some(e.to_string())),
            };
        }
        line_by_line(self, lines)
    }

    fn flush_batch(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(file) => file.flush(),
            None => Ok(()),
        }
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

/// The file name without its extension, and the extension with its dot.
fn name_parts(path: &Path) -> (String, String) {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match path.extension() {
        Some(ext) => {
            let ext = format!(".{}", ext.to_string_lossy());
            (name[..name.len() - ext.len()].to_string(), ext)
        }
        None => (name, String::new()),
    }
}

/// `dir/<stem>-<time><ext>`, as lumberjack names a backup.
pub fn backup_name(path: &Path, at: jiff::Timestamp) -> PathBuf {
    let (stem, ext) = name_parts(path);
    let time = at.strftime(BACKUP_TIME_FORMAT).to_string();
    let millis = at.subsec_millisecond();
    path.with_file_name(format!("{stem}-{time}.{millis:03}{ext}"))
}

/// The backups of `path` with the time in their names.
fn list_backups(path: &Path) -> io::Result<Vec<(jiff::Timestamp, PathBuf)>> {
    let (stem, ext) = name_parts(path);
    let prefix = format!("{stem}-");
    let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => dir.to_path_buf(),
        None => PathBuf::from("."),
    };
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(time) = name
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix(ext.as_str()))
        else {
            continue;
        };
        let Some((seconds, millis)) = time.split_once('.') else {
            continue;
        };
        let parsed = jiff::fmt::strtime::parse(BACKUP_TIME_FORMAT, seconds)
            .and_then(|t| t.to_datetime())
            .and_then(|dt| dt.to_zoned(jiff::tz::TimeZone::UTC))
            .map(|z| z.timestamp());
        let millis = millis.parse::<i64>().ok().filter(|_| millis.len() == 3);
        if let (Ok(at), Some(millis)) = (parsed, millis) {
            let at = at + jiff::SignedDuration::from_millis(millis);
            found.push((at, entry.path()));
        }
    }
    Ok(found)
}

/// A backend that keeps events in memory, for tests and for callers that read them back.
#[derive(Default)]
pub struct MemoryBackend {
    /// Every event processed, in order, decoded (Null for a line that is not JSON).
    pub events: parking_lot::Mutex<Vec<serde_json::Value>>,
}

impl AuditBackend for MemoryBackend {
    fn process(&self, line: &[u8]) {
        let event = serde_json::from_slice(line).unwrap_or(serde_json::Value::Null);
        self.events.lock().push(event);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn options(dir: &Path, max_backups: usize, max_age_days: u64) -> RotationOptions {
        RotationOptions {
            path: dir.join("audit.log"),
            max_size_mb: 1,
            max_backups,
            max_age_days,
        }
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn backups_are_named_as_lumberjack_names_them() {
        let at: jiff::Timestamp = "2026-12-05T03:04:05.678Z".parse().unwrap();
        assert_eq!(
            backup_name(Path::new("/var/log/audit.log"), at),
            PathBuf::from("/var/log/audit-2026-12-05T03-04-05.678.log")
        );
        assert_eq!(
            backup_name(Path::new("audit"), at),
            PathBuf::from("audit-2026-12-05T03-04-05.678")
        );
    }

    #[test]
    fn the_file_rotates_past_its_size_and_keeps_max_backups() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = RotatingFile::open(options(dir.path(), 2, 0)).unwrap();
        let line = vec![b'x'; 300 * 1024];
        // Four lines fit in no 1 MiB file: each fourth line starts a new file.
        for _ in 0..12 {
            file.write_line(&line).unwrap();
            file.flush_batch().unwrap();
            // Backup names are by the millisecond.
            std::thread::sleep(Duration::from_millis(2));
        }
        let names = files(dir.path());
        assert_eq!(names.len(), 3, "the log and two backups: {names:?}");
        assert!(names.contains(&"audit.log".to_string()));
        for name in names.iter().filter(|n| *n != "audit.log") {
            assert!(name.starts_with("audit-") && name.ends_with(".log"), "{name}");
            let len = std::fs::metadata(dir.path().join(name)).unwrap().len();
            assert_eq!(len, 3 * 300 * 1024, "a backup holds whole lines up to the size");
        }
        assert!(std::fs::metadata(dir.path().join("audit.log")).unwrap().len() <= 1024 * 1024);
    }

    #[test]
    fn backups_older_than_max_age_are_removed_and_others_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let old = backup_name(
            &dir.path().join("audit.log"),
            badge_api::clock::now() - jiff::SignedDuration::from_hours(24 * 3),
        );
        std::fs::write(&old, b"old\n").unwrap();
        std::fs::write(dir.path().join("other.log"), b"unrelated\n").unwrap();
        let mut file = RotatingFile::open(options(dir.path(), 0, 2)).unwrap();
        let line = vec![b'y'; 600 * 1024];
        file.write_line(&line).unwrap();
        file.write_line(&line).unwrap();
        file.flush_batch().unwrap();
        let names = files(dir.path());
        assert!(!old.exists(), "{names:?}");
        assert!(names.contains(&"other.log".to_string()));
        assert_eq!(
            names.iter().filter(|n| n.starts_with("audit-")).count(),
            1,
            "{names:?}"
        );
    }

    fn line() -> Vec<u8> {
        let event = crate::audit::Event {
            kind: "Event",
            api_version: "audit.k8s.io/v1",
            level: crate::audit::Level::Metadata,
            audit_id: "a".into(),
            stage: crate::audit::Stage::ResponseComplete,
            request_uri: "/api".into(),
            verb: "get".into(),
            user: Default::default(),
            impersonated_user: None,
            source_ips: Vec::new(),
            user_agent: String::new(),
            object_ref: None,
            response_status: None,
            request_object: None,
            response_object: None,
            request_received_timestamp: crate::audit::MicroTime(jiff::Timestamp::UNIX_EPOCH),
            stage_timestamp: crate::audit::MicroTime(jiff::Timestamp::UNIX_EPOCH),
            annotations: Default::default(),
        };
        let mut line = Vec::new();
        super::super::encode::event(&mut line, &event).unwrap();
        line
    }

    /// Waits, within a bound, for the writer thread to have dropped `n` events.
    fn wait_dropped(metrics: &Metrics, n: u64) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while metrics.audit_events_dropped.load(Ordering::Relaxed) < n {
            assert!(std::time::Instant::now() < deadline, "no drop counted");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_full_disk_drops_and_counts_events_without_blocking() {
        let metrics = Arc::new(Metrics::default());
        let backend = LogBackend::start(
            Destination::File(RotationOptions {
                path: PathBuf::from("/dev/full"),
                max_size_mb: 0,
                max_backups: 0,
                max_age_days: 0,
            }),
            metrics.clone(),
        )
        .unwrap();
        for _ in 0..3 {
            backend.process(&line());
        }
        wait_dropped(&metrics, 3);
        assert_eq!(metrics.audit_events_dropped.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn written_events_are_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let metrics = Arc::new(Metrics::default());
        let backend = LogBackend::start(
            Destination::File(RotationOptions {
                path: path.clone(),
                max_size_mb: 0,
                max_backups: 0,
                max_age_days: 0,
            }),
            metrics.clone(),
        )
        .unwrap();
        for _ in 0..5 {
            backend.process(&line());
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&path).unwrap();
            if text.lines().count() == 5 {
                for line in text.lines() {
                    let value: serde_json::Value = serde_json::from_str(line).unwrap();
                    assert_eq!(value["kind"], "Event");
                }
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{text}");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(metrics.audit_events_dropped.load(Ordering::Relaxed), 0);
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn an_existing_log_is_appended_to() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("audit.log"), b"before\n").unwrap();
        let mut file = RotatingFile::open(options(dir.path(), 0, 0)).unwrap();
        file.write_line(b"after\n").unwrap();
        file.flush_batch().unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("audit.log")).unwrap(),
            "before\nafter\n"
        );
        assert!(file.write_line(&vec![b'z'; 2 * 1024 * 1024]).is_err());
    }
}
