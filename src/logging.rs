//! Log output that never makes the gateway wait: each line (at most 8 KiB) goes to a bounded queue that one
//! thread writes to stdout. When stdout stalls (a full pipe, a stuck collector) and the queue is full, lines
//! are dropped and counted (`pgsse_log_lines_dropped_total`, and a line once stdout takes them again).

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// Lines waiting for stdout at most: with [`LINE_BYTES`], 8 MiB.
const QUEUE_LINES: usize = 1024;
/// The most of one line that is kept: a message may quote a table owner's error, of any length.
const LINE_BYTES: usize = 8 * 1024;

static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Lines dropped because stdout did not keep up.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

enum Message {
    Line(Vec<u8>),
    /// Answered once every line before it is written.
    Flush(SyncSender<()>),
}

/// A `MakeWriter` for tracing-subscriber's fmt layer.
#[derive(Clone)]
pub struct Lossy {
    queue: SyncSender<Message>,
}

impl Lossy {
    /// Starts the thread that writes to `out`.
    pub fn new(out: impl Write + Send + 'static) -> Self {
        let (queue, lines) = mpsc::sync_channel(QUEUE_LINES);
        std::thread::Builder::new().name("pgsse-log".into()).spawn(move || write_all(out, lines)).expect("a thread");
        Self { queue }
    }

    pub fn stdout() -> Self {
        Self::new(std::io::stdout())
    }

    /// Waits up to `limit` for the lines logged so far to be written: before the process exits. A stdout
    /// that takes nothing cannot hold the exit longer.
    pub fn flush(&self, limit: Duration) {
        let deadline = std::time::Instant::now() + limit;
        let (done, written) = mpsc::sync_channel(1);
        let mut marker = Message::Flush(done);
        loop {
            match self.queue.try_send(marker) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) if std::time::Instant::now() < deadline => {
                    marker = back;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(_) => return,
            }
        }
        let _ = written.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()));
    }
}

fn write_all(mut out: impl Write, lines: Receiver<Message>) {
    let mut told = 0;
    for message in lines {
        match message {
            Message::Line(line) => {
                let _ = out.write_all(&line);
                let dropped = dropped();
                if dropped > told {
                    let _ = writeln!(out, "pgsse: {} log lines dropped: stdout did not keep up", dropped - told);
                    told = dropped;
                }
                let _ = out.flush();
            }
            Message::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}

/// One event's line, queued whole when the formatter is done with it.
pub struct Line {
    buf: Vec<u8>,
    queue: SyncSender<Message>,
}

impl Write for Line {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        if self.buf.len() > LINE_BYTES {
            let mut end = LINE_BYTES;
            while end > 0 && std::str::from_utf8(&self.buf[..end]).is_err() {
                end -= 1;
            }
            self.buf.truncate(end);
            self.buf.extend_from_slice(b"... (cut)\n");
        }
        match self.queue.try_send(Message::Line(std::mem::take(&mut self.buf))) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(_)) => {
                DROPPED.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl<'a> MakeWriter<'a> for Lossy {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line { buf: Vec::new(), queue: self.queue.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A stdout that takes nothing until told to.
    #[derive(Clone)]
    struct Stuck(Arc<Mutex<Vec<u8>>>, Arc<Mutex<()>>);

    impl Write for Stuck {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let _held = self.1.lock().unwrap();
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stalled_output_drops_lines_instead_of_blocking_and_the_rest_get_through() {
        let gate = Arc::new(Mutex::new(()));
        let out = Stuck(Arc::default(), gate.clone());
        let held = gate.lock().unwrap();
        let log = Lossy::new(out.clone());
        let before = dropped();
        for i in 0..QUEUE_LINES + 10 {
            let mut line = log.make_writer();
            writeln!(line, "line {i}").unwrap();
        }
        assert!(dropped() - before >= 9, "the lines beyond the queue were dropped");
        drop(held);
        log.flush(Duration::from_secs(10));
        let mut last = log.make_writer();
        writeln!(last, "after").unwrap();
        drop(last);
        log.flush(Duration::from_secs(10));
        let written = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert!(written.starts_with("line 0\n") && written.contains("log lines dropped"), "{written}");
        assert!(written.ends_with("after\n"), "{written}");
        let mut long = log.make_writer();
        writeln!(long, "{}", "é".repeat(LINE_BYTES)).unwrap();
        drop(long);
        log.flush(Duration::from_secs(10));
        let written = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let last = written.lines().last().unwrap();
        assert!(last.len() < LINE_BYTES + 16 && last.ends_with("... (cut)"), "{}", last.len());
    }

    #[test]
    fn a_stalled_output_cannot_hold_the_exit() {
        let gate = Arc::new(Mutex::new(()));
        let _held = gate.lock().unwrap();
        let log = Lossy::new(Stuck(Arc::default(), gate.clone()));
        for _ in 0..QUEUE_LINES + 2 {
            writeln!(log.make_writer(), "x").unwrap();
        }
        let started = std::time::Instant::now();
        log.flush(Duration::from_millis(200));
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    }
}
