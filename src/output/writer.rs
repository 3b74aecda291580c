//! Writing an output apart from draining the ring: the reader formats events into
//! batches and hands them to a thread of this output's own, through a queue bounded in
//! bytes. A slow sink (a pipe whose reader is busy, a disk) then stops only its own
//! thread, never the drain: past the bound, the reader keeps each call's row and drops
//! its payload, reported as undelivered as the ring's losses are (see `pump`).
//!
//! A sink whose reader is alive but takes nothing (`sslsniff | less`, scrolled back)
//! never holds up the end: once sslsniff is told to stop, nothing waits for room, and
//! what is not written by `FINISH_WITHIN` stays unwritten and is counted undelivered.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::batch::{Batch, Carried};

/// Batches are handed over at about this size: few and large writes.
pub const BATCH: usize = 1024 * 1024;
/// Emptied batches kept for reuse, so that the reader does not fault in fresh pages for
/// every batch; larger ones (a batch that held a large call copied) are freed.
const POOL: usize = 4;
const POOLED_CAPACITY: usize = 2 << 20;
/// How long the end waits for an output to write what is queued, of which the last
/// `LAST_WRITE` only for the batch in the write: with the follower's grace and the
/// detach, sslsniff ends within a second of a signal.
pub const FINISH_WITHIN: Duration = Duration::from_millis(500);
const LAST_WRITE: Duration = Duration::from_millis(100);
/// How often a reader waiting for room looks whether sslsniff was told to stop.
const STOP_CHECK: Duration = Duration::from_millis(20);

/// Where an output's batches go.
pub trait Sink: Write + Send + 'static {
    /// Told before each batch whether the queue is behind (holds more than half its
    /// bound): a sink that spares CPU at the cost of throughput then takes the fast way.
    fn pace(&mut self, _behind: bool) {}
}

impl Sink for File {}
impl Sink for &'static File {}

impl Sink for Box<dyn Sink> {
    fn pace(&mut self, behind: bool) {
        (**self).pace(behind);
    }
}

struct Queue {
    batches: VecDeque<Batch>,
    pool: Vec<Batch>,
    /// The sink failed: nothing more is written, and the reader is told at its next push.
    error: Option<io::Error>,
    closed: bool,
    /// The writer thread has returned.
    ended: bool,
    /// What the batch being written carries.
    writing: Carried,
    /// What was given up unwritten because sslsniff was ending.
    unwritten: Carried,
    /// Who waits on `changed`: a wake-up costs a system call, and every batch would
    /// otherwise pay one or two.
    writer_idle: bool,
    reader_waits: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    /// Bytes queued and being written; read without the lock for every call.
    held: AtomicUsize,
    /// The writer waits here for batches, the reader for room.
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding the lock leaves plain data behind: still usable.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The reader's side waits for a change, at most `limit`.
    fn reader_wait<'q>(
        &self,
        mut q: MutexGuard<'q, Queue>,
        limit: Duration,
    ) -> MutexGuard<'q, Queue> {
        q.reader_waits = true;
        let mut q = match self.changed.wait_timeout(q, limit) {
            Ok((q, _)) => q,
            Err(e) => e.into_inner().0,
        };
        q.reader_waits = false;
        q
    }
}

/// The reader's end of one output's queue, and the thread that writes it.
pub struct Writer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    /// Past this many bytes held, payloads are dropped.
    bound: usize,
    /// Set by the stop signals: a push then gives up rather than wait for room.
    stopping: Arc<AtomicBool>,
}

impl Writer {
    /// Starts the thread that writes to `sink`, holding at most about `bound` bytes;
    /// `stopping` is the flag the stop signals set.
    pub fn spawn(
        sink: impl Sink,
        bound: usize,
        name: &str,
        stopping: Arc<AtomicBool>,
    ) -> io::Result<Writer> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                batches: VecDeque::new(),
                pool: Vec::new(),
                error: None,
                closed: false,
                ended: false,
                writing: Carried::default(),
                unwritten: Carried::default(),
                writer_idle: false,
                reader_waits: false,
            }),
            held: AtomicUsize::new(0),
            changed: Condvar::new(),
        });
        let theirs = Arc::clone(&shared);
        let thread = thread::Builder::new()
            .name(name.into())
            .spawn(move || write_batches(&theirs, sink, bound))?;
        Ok(Writer {
            shared,
            thread: Some(thread),
            bound,
            stopping,
        })
    }

    /// Whether a call's payload may still be queued, `building` bytes being held in the
    /// batch not yet pushed: a batch grows to `BATCH`, far past a small queue's bound.
    pub fn has_room(&self, building: usize) -> bool {
        self.held() + building < self.bound
    }

    /// Queues `batch`, leaving an empty one in its place. Rows of calls whose payload was
    /// dropped still go past the bound, up to an eighth more; beyond that the reader
    /// waits, as it did before there was a queue (the ring then fills, and the kernel
    /// counts what it cannot take), unless sslsniff is ending: the batch is then given
    /// up unwritten. Err once the sink has failed.
    pub fn push(&self, batch: &mut Batch) -> io::Result<()> {
        let mut q = self.shared.lock();
        while q.error.is_none() && self.held() > self.bound + self.bound / 8 {
            if self.stopping.load(Ordering::Relaxed) {
                q.unwritten.add(batch.carried());
                batch.clear();
                return Ok(());
            }
            q = self.shared.reader_wait(q, STOP_CHECK);
        }
        if let Some(e) = &q.error {
            return Err(io::Error::new(e.kind(), e.to_string()));
        }
        // Room for a whole batch at once: grown from nothing, each new batch was
        // reallocated a dozen times on its way to BATCH.
        let fresh = q.pool.pop().unwrap_or_else(|| Batch::with_capacity(BATCH));
        self.shared.held.fetch_add(batch.size(), Ordering::Relaxed);
        q.batches.push_back(std::mem::replace(batch, fresh));
        let wake = q.writer_idle;
        drop(q);
        if wake {
            self.shared.changed.notify_all();
        }
        Ok(())
    }

    fn held(&self) -> usize {
        self.shared.held.load(Ordering::Relaxed)
    }

    /// Waits until everything queued is written or all but `LAST_WRITE` of
    /// `FINISH_WITHIN` has passed, then gives up what is still queued and gives the
    /// batch in the write the rest, so that a file that is merely slow ends on a whole
    /// record. Returns what was given up unwritten, or the sink's error. A thread still
    /// blocked in a write is left to end with the process.
    pub fn finish(&mut self) -> io::Result<Carried> {
        let Some(thread) = self.thread.take() else {
            return Ok(Carried::default());
        };
        let started = Instant::now();
        let mut q = self.shared.lock();
        q.closed = true;
        self.shared.changed.notify_all();
        q = self.wait_for_end(q, started + FINISH_WITHIN - LAST_WRITE);
        if !q.ended {
            give_up_queued(&mut q);
            q = self.wait_for_end(q, started + FINISH_WITHIN);
        }
        if !q.ended {
            let writing = std::mem::take(&mut q.writing);
            q.unwritten.add(writing);
        }
        let ended = q.ended;
        let unwritten = q.unwritten;
        let error = q.error.take();
        drop(q);
        // The thread only writes and waits; it cannot panic but through a bug.
        if ended && thread.join().is_err() {
            return Err(io::Error::other("the output thread failed"));
        }
        error.map_or(Ok(unwritten), Err)
    }

    /// Waits until the writer thread has ended or `deadline` has passed.
    fn wait_for_end<'q>(
        &self,
        mut q: MutexGuard<'q, Queue>,
        deadline: Instant,
    ) -> MutexGuard<'q, Queue> {
        while !q.ended {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            q = self.shared.reader_wait(q, left);
        }
        q
    }
}

/// The end's deadline passed with the sink still behind: what is queued is not written.
fn give_up_queued(q: &mut Queue) {
    for batch in q.batches.drain(..) {
        q.unwritten.add(batch.carried());
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// The output thread: writes batches in order until the queue is closed and empty, or
/// the sink fails.
fn write_batches(shared: &Shared, sink: impl Sink, bound: usize) {
    write_until_closed(shared, sink, bound);
    shared.lock().ended = true;
    shared.changed.notify_all();
}

fn write_until_closed(shared: &Shared, mut sink: impl Sink, bound: usize) {
    let mut q = shared.lock();
    loop {
        let Some(mut batch) = q.batches.pop_front() else {
            if q.closed {
                return;
            }
            q.writer_idle = true;
            q = shared.changed.wait(q).unwrap_or_else(|e| e.into_inner());
            q.writer_idle = false;
            continue;
        };
        q.writing = batch.carried();
        drop(q);
        sink.pace(shared.held.load(Ordering::Relaxed) > bound / 2);
        let written = batch.write_to(&mut sink).and_then(|()| sink.flush());
        let len = batch.size();
        batch.clear();
        q = shared.lock();
        q.writing = Carried::default();
        shared.held.fetch_sub(len, Ordering::Relaxed);
        if batch.capacity() <= POOLED_CAPACITY && q.pool.len() < POOL {
            q.pool.push(batch);
        }
        if let Err(e) = written {
            q.error = Some(e);
            q.batches.clear();
            shared.held.store(0, Ordering::Relaxed);
            shared.changed.notify_all();
            return;
        }
        if q.reader_waits {
            shared.changed.notify_all();
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::fs::File;
    use std::io::Read;
    use std::os::fd::{FromRawFd, OwnedFd};

    /// (read end, write end).
    pub(in crate::output) fn pipe() -> (File, File) {
        let mut fds = [0; 2];
        // SAFETY: pipe fills the two descriptors, which we then own.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: both are fresh descriptors owned by nothing else.
        unsafe {
            (
                File::from(OwnedFd::from_raw_fd(fds[0])),
                File::from(OwnedFd::from_raw_fd(fds[1])),
            )
        }
    }

    #[test]
    fn batches_arrive_whole_and_in_order() {
        let (mut read, write) = pipe();
        let reader = thread::spawn(move || {
            let mut all = Vec::new();
            read.read_to_end(&mut all).unwrap();
            all
        });
        let mut w = Writer::spawn(write, 1 << 20, "test", Arc::default()).unwrap();
        let mut expected = Vec::new();
        for i in 0..100u32 {
            let bytes = i.to_string().repeat(1000).into_bytes();
            expected.extend_from_slice(&bytes);
            let mut batch = Batch::default();
            batch.extend_from_slice(&bytes);
            w.push(&mut batch).unwrap();
            assert!(batch.is_empty());
        }
        w.finish().unwrap();
        drop(w);
        assert_eq!(reader.join().unwrap(), expected);
    }

    #[test]
    fn a_stalled_sink_leaves_no_room_and_a_closed_one_fails_the_push() {
        let (read, write) = pipe();
        let w = Writer::spawn(write, 1000, "test", Arc::default()).unwrap();
        // Nobody reads: the pipe fills, then the queue.
        let mut pushed = 0;
        while w.has_room(0) {
            let mut batch = Batch::default();
            batch.resize(64 * 1024, b'x');
            w.push(&mut batch).unwrap();
            pushed += 1;
            assert!(pushed < 1000, "the queue never filled");
        }
        drop(read);
        let failed = (0..100).any(|_| {
            let mut batch = Batch::default();
            batch.extend_from_slice(b"y");
            let result = w.push(&mut batch);
            thread::sleep(std::time::Duration::from_millis(5));
            result.is_err_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
        });
        assert!(failed, "the reader was never told");
    }

    #[test]
    fn a_stalled_sink_holds_up_no_end_and_what_it_never_took_is_counted() {
        let (_read, write) = pipe();
        let stopping = Arc::new(AtomicBool::new(false));
        let mut w = Writer::spawn(write, 1 << 20, "test", Arc::clone(&stopping)).unwrap();
        let mut pushed = Carried::default();
        let started = Instant::now();
        // Nobody reads: the pipe takes a batch, the queue about 17 more; once stopping,
        // no push waits for room, and the end waits for the pipe no longer than it may.
        stopping.store(true, Ordering::Relaxed);
        for _ in 0..100 {
            let mut batch = Batch::default();
            batch.resize(64 * 1024, b'x');
            batch.carry(64 * 1024);
            pushed.add(batch.carried());
            w.push(&mut batch).unwrap();
        }
        let unwritten = w.finish().unwrap();
        let took = started.elapsed();
        assert!(took >= FINISH_WITHIN && took < FINISH_WITHIN + Duration::from_secs(1));
        // The pipe took a few batches whole; the rest, and the one in the write, not.
        assert!(unwritten.events > 90, "{unwritten:?}");
        assert!(unwritten.events <= pushed.events);
        assert_eq!(unwritten.payload, unwritten.events * 64 * 1024);
    }

    /// Takes every write whole, each after `delay`: a disk slower than the traffic.
    struct Slow(Arc<Mutex<Vec<u8>>>, Duration);

    impl Sink for Slow {}
    impl Sink for io::Sink {}

    impl Write for Slow {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            thread::sleep(self.1);
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_slow_sink_ends_on_a_whole_batch_and_what_it_did_not_reach_is_counted() {
        let written = Arc::new(Mutex::new(Vec::new()));
        let slow = Slow(Arc::clone(&written), Duration::from_millis(150));
        let mut w = Writer::spawn(slow, 1 << 30, "test", Arc::default()).unwrap();
        let size = 1000;
        for i in 0..20u8 {
            let mut batch = Batch::default();
            batch.resize(size, i);
            batch.carry(size);
            w.push(&mut batch).unwrap();
        }
        let unwritten = w.finish().unwrap();
        let written = written.lock().unwrap();
        // Only whole batches reached the sink, and the rest is counted.
        assert_eq!(written.len() % size, 0);
        let reached = (written.len() / size) as u64;
        assert!((2..=5).contains(&reached), "{reached} batches written");
        assert_eq!(unwritten.events, 20 - reached, "{unwritten:?}");
        assert_eq!(unwritten.payload, unwritten.events * size as u64);
    }
}
