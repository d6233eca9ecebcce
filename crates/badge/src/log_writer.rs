//! Log output that never holds up a request: formatted lines go through a bounded queue to
//! one thread that writes them to stderr. Writing to stderr directly costs a system call and
//! the process-wide stderr lock per line, on the thread serving the request, and stalls every
//! worker whenever the reader of stderr is slow.
//!
//! The writer thread takes the stderr lock only for each write, never while it waits for
//! lines, so anything else printing to stderr (a usage error, a panic, the final error)
//! cannot be kept waiting by it.

use std::io::BufWriter;

use tracing_appender::non_blocking::{ErrorCounter, NonBlocking, NonBlockingBuilder, WorkerGuard};

/// Lines that may wait for the writer thread; beyond this, new lines are dropped and counted
/// rather than holding up the server.
const QUEUED_LINES: usize = 16_384;

/// Starts the writer thread. Keep the guard until the end of `main`: dropping it writes the
/// queued lines, waiting a bounded time (a reader of stderr that stopped reading must not
/// keep the program from exiting).
pub(crate) fn start() -> (NonBlocking, WorkerGuard) {
    // Buffered: the writer drains every queued line into the buffer and writes it with one
    // system call per batch.
    NonBlockingBuilder::default()
        .buffered_lines_limit(QUEUED_LINES)
        .lossy(true)
        .thread_name("log-writer")
        .finish(BufWriter::with_capacity(64 * 1024, std::io::stderr()))
}

/// Says how many lines the queue dropped, if any, once the writer has stopped.
pub(crate) fn report_dropped(counter: &ErrorCounter) {
    let dropped = counter.dropped_lines();
    if dropped > 0 {
        eprintln!("{dropped} log lines were dropped: stderr was not read fast enough");
    }
}
