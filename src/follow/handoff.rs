//! What the two threads of the follower pass each other: files found (the listener
//! pushes, the examiner pops, each file once) and files done (the examiner says, the
//! listener, woken at once through an eventfd, lets their held processes go).

use std::collections::{HashSet, VecDeque};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{Context, Result};
use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::event::Found;
use crate::procfs::FileId;

/// Files waiting to be examined at most: a flood of new files beyond this is counted
/// and reported, not queued without bound. Their next exec or mapping reports them again.
const MAX_QUEUED: usize = 4096;

/// Files found and not yet examined, each once, and whether a process waits for each.
#[derive(Default)]
struct Queue {
    files: VecDeque<(Found, bool)>,
    queued: HashSet<FileId>,
    dropped: u64,
    closed: bool,
}

pub struct Handoff {
    queue: Mutex<Queue>,
    ready: Condvar,
    done: Mutex<Vec<FileId>>,
    wake: EventFd,
}

impl Handoff {
    pub fn new() -> Result<Handoff> {
        let wake = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .context("cannot create an eventfd")?;
        Ok(Handoff {
            queue: Mutex::new(Queue::default()),
            ready: Condvar::new(),
            done: Mutex::new(Vec::new()),
            wake,
        })
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        // A panic elsewhere leaves the queue as it was: still usable.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `file` will be examined if pushed now (queued already, or room left).
    pub fn takes(&self, file: FileId) -> bool {
        let q = self.queue();
        q.queued.contains(&file) || q.files.len() < MAX_QUEUED
    }

    /// Queues a file found; `held` says that its process waits for it.
    pub fn push(&self, found: Found, held: bool) {
        let mut q = self.queue();
        if q.queued.contains(&found.file) {
            return;
        }
        if q.files.len() >= MAX_QUEUED {
            q.dropped += 1;
            return;
        }
        q.queued.insert(found.file);
        q.files.push_back((found, held));
        self.ready.notify_one();
    }

    /// The next file to examine, waiting up to `limit`; None when there is none yet or
    /// the handoff is closed.
    pub fn pop(&self, limit: Duration) -> Option<(Found, bool)> {
        let mut q = self.queue();
        if q.files.is_empty() && !q.closed {
            q = self
                .ready
                .wait_timeout(q, limit)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        if q.closed {
            return None;
        }
        let (found, held) = q.files.pop_front()?;
        q.queued.remove(&found.file);
        Some((found, held))
    }

    /// Files not queued because the queue was full, so far.
    pub fn dropped(&self) -> u64 {
        self.queue().dropped
    }

    /// Ends the examiner's wait for good.
    pub fn close(&self) {
        self.queue().closed = true;
        self.ready.notify_all();
    }

    pub fn is_closed(&self) -> bool {
        self.queue().closed
    }

    /// The examiner is done with `file`: wakes the listener.
    pub fn done(&self, file: FileId) {
        self.done
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(file);
        // A full counter still wakes the listener: nothing is lost.
        let _ = self.wake.write(1);
    }

    /// The files done since the last call.
    pub fn take_done(&self) -> Vec<FileId> {
        let _ = self.wake.read();
        std::mem::take(&mut *self.done.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Readable when a file is done.
    pub fn wake_fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }
}
