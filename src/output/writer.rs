//! Writing an output apart from draining the ring: the reader formats events into
//! batches and hands them to a thread of this output's own, through a queue bounded in
//! bytes. A slow sink (a pipe whose reader is busy, a disk) then stops only its own
//! thread, never the drain: past the bound, the reader keeps each call's row and drops
//! its payload, reported as undelivered as the ring's losses are (see `pump`).

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};

use super::batch::Batch;

/// Batches are handed over at about this size: few and large writes.
pub const BATCH: usize = 256 * 1024;
/// Emptied batches kept for reuse, so that the reader does not fault in fresh pages for
/// every batch; larger ones (a batch that held a large call copied) are freed.
const POOL: usize = 4;
const POOLED_CAPACITY: usize = 2 << 20;

struct Queue {
    batches: VecDeque<Batch>,
    pool: Vec<Batch>,
    /// The sink failed: nothing more is written, and the reader is told at its next push.
    error: Option<io::Error>,
    closed: bool,
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
}

/// The reader's end of one output's queue, and the thread that writes it.
pub struct Writer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    /// Past this many bytes held, payloads are dropped.
    bound: usize,
}

impl Writer {
    /// Starts the thread that writes to `sink`, holding at most about `bound` bytes.
    pub fn spawn(
        sink: impl Write + Send + 'static,
        bound: usize,
        name: &str,
    ) -> io::Result<Writer> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                batches: VecDeque::new(),
                pool: Vec::new(),
                error: None,
                closed: false,
            }),
            held: AtomicUsize::new(0),
            changed: Condvar::new(),
        });
        let theirs = Arc::clone(&shared);
        let thread = thread::Builder::new()
            .name(name.into())
            .spawn(move || write_batches(&theirs, sink))?;
        Ok(Writer {
            shared,
            thread: Some(thread),
            bound,
        })
    }

    /// Whether a call's payload may still be queued.
    pub fn has_room(&self) -> bool {
        self.held() < self.bound
    }

    /// Queues `batch`, leaving an empty one in its place. Rows of calls whose payload was
    /// dropped still go past the bound, up to an eighth more; beyond that the reader
    /// waits, as it did before there was a queue (the ring then fills, and the kernel
    /// counts what it cannot take). Err once the sink has failed.
    pub fn push(&self, batch: &mut Batch) -> io::Result<()> {
        let mut q = self.shared.lock();
        while q.error.is_none() && self.held() > self.bound + self.bound / 8 {
            q = self
                .shared
                .changed
                .wait(q)
                .unwrap_or_else(|e| e.into_inner());
        }
        if let Some(e) = &q.error {
            return Err(io::Error::new(e.kind(), e.to_string()));
        }
        // Room for a whole batch at once: grown from nothing, each new batch was
        // reallocated a dozen times on its way to BATCH.
        let fresh = q.pool.pop().unwrap_or_else(|| Batch::with_capacity(BATCH));
        self.shared.held.fetch_add(batch.size(), Ordering::Relaxed);
        q.batches.push_back(std::mem::replace(batch, fresh));
        drop(q);
        self.shared.changed.notify_all();
        Ok(())
    }

    fn held(&self) -> usize {
        self.shared.held.load(Ordering::Relaxed)
    }

    /// Waits until everything queued is written, ends the thread and returns the sink's
    /// error, if any.
    pub fn finish(&mut self) -> io::Result<()> {
        self.shared.lock().closed = true;
        self.shared.changed.notify_all();
        if let Some(thread) = self.thread.take() {
            // The thread only writes and waits; it cannot panic but through a bug.
            thread
                .join()
                .map_err(|_| io::Error::other("the output thread failed"))?;
        }
        match self.shared.lock().error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// The output thread: writes batches in order until the queue is closed and empty, or
/// the sink fails.
fn write_batches(shared: &Shared, mut sink: impl Write) {
    let mut q = shared.lock();
    loop {
        let Some(mut batch) = q.batches.pop_front() else {
            if q.closed {
                return;
            }
            q = shared.changed.wait(q).unwrap_or_else(|e| e.into_inner());
            continue;
        };
        drop(q);
        let written = batch.write_to(&mut sink);
        let len = batch.size();
        batch.clear();
        q = shared.lock();
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
        shared.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::io::Read;
    use std::os::fd::{FromRawFd, OwnedFd};

    fn pipe() -> (File, File) {
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
        let mut w = Writer::spawn(write, 1 << 20, "test").unwrap();
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
        let w = Writer::spawn(write, 1000, "test").unwrap();
        // Nobody reads: the pipe fills, then the queue.
        let mut pushed = 0;
        while w.has_room() {
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
}
