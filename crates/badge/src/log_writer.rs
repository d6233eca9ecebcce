//! Log output that never holds up a request: formatted lines go through a bounded queue to
//! one thread that writes them to stderr. Writing to stderr directly costs a system call and
//! the process-wide stderr lock per line, on the thread serving the request, and stalls every
//! worker whenever the reader of stderr is slow.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, channel, sync_channel};
use std::time::{Duration, Instant};

use tracing_subscriber::fmt::MakeWriter;

/// Lines that may wait for the writer thread; beyond this, new lines are dropped and counted.
const QUEUED_LINES: usize = 16_384;
/// How long the writer gathers lines after the first of a batch: short next to anything a
/// reader of the log waits for, long next to one request.
const BATCH_WINDOW: Duration = Duration::from_millis(2);
/// Lines arriving within this of the previous batch mean a busy server: gather a batch.
const BUSY_GAP: Duration = Duration::from_millis(10);
/// How long the end of the program waits for queued lines to be written: a reader of stderr
/// that stopped reading must not keep the program from exiting.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

enum Message {
    Line(Vec<u8>),
    /// Everything sent before has been written: stop.
    Stop,
}

/// The `MakeWriter` handed to the subscriber.
#[derive(Clone)]
pub struct QueuedStderr {
    queue: SyncSender<Message>,
    dropped: Arc<AtomicU64>,
}

/// Stops the writer thread once every queued line is written; dropped at the end of `main`.
pub struct FlushOnDrop {
    queue: SyncSender<Message>,
    /// Signalled by the writer thread when it has written everything and stopped.
    written: Option<Receiver<()>>,
}

/// Starts the writer thread. Falls back to nothing: if the thread cannot start, lines are
/// dropped, which is better than failing to start the program for want of logs.
pub fn spawn() -> (QueuedStderr, FlushOnDrop) {
    let (queue, lines) = sync_channel(QUEUED_LINES);
    let (done, written) = channel();
    let dropped = Arc::new(AtomicU64::new(0));
    let counter = dropped.clone();
    let started = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || {
            write_lines(&lines, &counter);
            // Lines sent from now on fail at once instead of waiting in a queue nobody reads.
            drop(lines);
            let _ = done.send(());
        })
        .is_ok();
    (
        QueuedStderr {
            queue: queue.clone(),
            dropped,
        },
        FlushOnDrop {
            queue,
            written: started.then_some(written),
        },
    )
}

fn write_lines(lines: &Receiver<Message>, dropped: &AtomicU64) {
    let mut stderr = std::io::BufWriter::with_capacity(64 * 1024, std::io::stderr().lock());
    let mut reported = 0;
    let mut last_batch: Option<Instant> = None;
    // Blocks for the first line of a batch; when lines keep coming, lets a short while gather
    // more: a sender wakes this thread only when it is blocked, so a busy server pays one
    // wake-up and one write per batch instead of per line. After a quiet spell a line is
    // written at once (start-up messages are awaited by whoever started the server).
    while let Ok(first) = lines.recv() {
        if last_batch.is_some_and(|at| at.elapsed() < BUSY_GAP) {
            std::thread::sleep(BATCH_WINDOW);
        }
        let mut next = Some(first);
        while let Some(message) = next {
            let Message::Line(line) = message else {
                let _ = stderr.flush();
                return;
            };
            let _ = stderr.write_all(&line);
            next = lines.try_recv().ok();
        }
        let now_dropped = dropped.load(Ordering::Relaxed);
        if now_dropped != reported {
            let _ = writeln!(
                stderr,
                "{} log lines were dropped: stderr is not read fast enough",
                now_dropped - reported
            );
            reported = now_dropped;
        }
        let _ = stderr.flush();
        last_batch = Some(Instant::now());
    }
    let _ = stderr.flush();
}

impl Drop for FlushOnDrop {
    fn drop(&mut self) {
        let Some(written) = &self.written else { return };
        let deadline = Instant::now() + FLUSH_TIMEOUT;
        // The queue may be full while the writer catches up.
        loop {
            match self.queue.try_send(Message::Stop) {
                Ok(()) => break,
                Err(TrySendError::Full(_)) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(_) => return,
            }
        }
        let _ = written.recv_timeout(deadline.saturating_duration_since(Instant::now()));
    }
}

/// One event's line, sent as a whole when the subscriber is done writing it.
pub struct QueuedLine<'a> {
    owner: &'a QueuedStderr,
    line: Vec<u8>,
}

impl<'a> MakeWriter<'a> for QueuedStderr {
    type Writer = QueuedLine<'a>;

    fn make_writer(&'a self) -> QueuedLine<'a> {
        QueuedLine {
            owner: self,
            line: Vec::with_capacity(256),
        }
    }
}

impl Write for QueuedLine<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.line.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for QueuedLine<'_> {
    fn drop(&mut self) {
        if self.line.is_empty() {
            return;
        }
        let line = std::mem::take(&mut self.line);
        match self.owner.queue.try_send(Message::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.owner.dropped.fetch_add(1, Ordering::Relaxed);
            }
            // The writer has stopped: the program is ending.
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_queued_whole_when_its_writer_is_dropped() {
        let (queue, lines) = sync_channel(4);
        let stderr = QueuedStderr {
            queue,
            dropped: Arc::default(),
        };
        {
            let mut writer = stderr.make_writer();
            writer.write_all(b"issued ").unwrap();
            writer.write_all(b"credential\n").unwrap();
            assert!(
                lines.try_recv().is_err(),
                "nothing is sent before the line is complete"
            );
        }
        match lines.try_recv().unwrap() {
            Message::Line(line) => assert_eq!(line, b"issued credential\n"),
            Message::Stop => panic!("expected a line"),
        }
    }

    #[test]
    fn ending_the_program_writes_what_was_queued_and_stops_the_writer() {
        let (stderr, flush) = spawn();
        stderr.make_writer().write_all(b"last words\n").unwrap();
        drop(flush);
        // The writer has stopped: later lines go nowhere and are not counted as dropped.
        stderr.make_writer().write_all(b"too late\n").unwrap();
        assert_eq!(stderr.dropped.load(Ordering::Relaxed), 0);
        assert!(matches!(
            stderr.queue.try_send(Message::Stop),
            Err(TrySendError::Disconnected(_))
        ));
    }

    #[test]
    fn lines_beyond_the_queue_are_dropped_and_counted() {
        let (queue, _lines) = sync_channel(1);
        let stderr = QueuedStderr {
            queue,
            dropped: Arc::default(),
        };
        for _ in 0..3 {
            stderr.make_writer().write_all(b"line\n").unwrap();
        }
        assert_eq!(stderr.dropped.load(Ordering::Relaxed), 2);
    }
}
