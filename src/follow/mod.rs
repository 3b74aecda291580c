//! Following the machine, on threads of its own: files the kernel reports (a program
//! that started, an executable mapping) are examined (`examine`), attached and
//! announced as soon as they are heard of; the kernel's seen set is kept in step; files
//! that no process maps any more are released. The ring of call records is drained by
//! another thread, so no file, however slow or hostile, holds up the capture; and the
//! registry of links is shared, so that no file holds up the exit either: the tracer
//! takes it whether or not the follower is done with a file, and a file examined after
//! that is not attached.
//!
//! Two threads: the listener hears the kernel, holds each revealing process at once
//! (`hold`) and hands the file on (`handoff`); the examiner examines and attaches files
//! one by one and says when each is done, upon which the listener lets its processes go.
//! A long examination never delays the hold of the next new program.

mod examine;
mod handoff;
mod hold;

use std::cell::RefCell;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use libbpf_rs::{RingBuffer, RingBufferBuilder};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

use crate::event::Found;
use crate::kernel::record::decode_found;
use crate::kernel::Kernel;
use crate::libs::Library;
use crate::probes::{Origin, Registry};
use crate::{clock, diag};
use examine::{Examined, Examiner};
use handoff::Handoff;
use hold::Holds;

pub use hold::HOLD_LIMIT;

/// How long the follower waits for news before it looks at the stop flag again.
const POLL: Duration = Duration::from_millis(50);

/// What following does: nothing (--no-follow), attach what appears, or also hold each
/// new program until attached (the default; --no-hold turns it off).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Following {
    Off,
    Attach,
    Hold,
}

/// The registry of every link, shared by the follower and the tracer; None once the
/// tracer has taken it for the detach.
pub type SharedRegistry = Arc<Mutex<Option<Registry>>>;

pub struct Follower<'k, 'obj> {
    kernel: &'k Kernel<'obj>,
    examiner: Examiner,
    registry: SharedRegistry,
    /// With following off nothing is released either, as nothing would attach a
    /// released file again.
    following: Following,
}

impl<'k, 'obj> Follower<'k, 'obj> {
    /// Takes over the registry of what is attached at start, whose files the kernel is
    /// told it need not report.
    pub fn new(
        kernel: &'k Kernel<'obj>,
        registry: SharedRegistry,
        libraries: Vec<&'static Library>,
        following: Following,
    ) -> Follower<'k, 'obj> {
        let mut examiner = Examiner::new(libraries);
        for file in lock(&registry).iter().flat_map(Registry::files) {
            examiner.mark(file);
            kernel.mark_seen(file);
        }
        Follower {
            kernel,
            examiner,
            registry,
            following,
        }
    }

    /// Examines every running process's executable (node, static builds) as if it had
    /// just started: before the tracer says it is ready.
    pub fn examine_running(&mut self, pid: Option<u32>) {
        for found in examine::running_executables(pid) {
            self.handle(&found, false);
        }
    }

    /// Follows until `stop` is set, calling `listens` once the kernel's reports are
    /// heard; with following off, returns at once.
    pub fn run(mut self, stop: &AtomicBool, listens: impl FnOnce()) -> Result<()> {
        if self.following == Following::Off {
            listens();
            return Ok(());
        }
        let handoff = Handoff::new()?;
        let kernel = self.kernel;
        let hold = self.following == Following::Hold;
        std::thread::scope(|scope| {
            let examining = scope.spawn(|| self.examine_until_closed(&handoff, stop));
            let listened = listen(kernel, &handoff, hold, stop, listens);
            handoff.close();
            examining
                .join()
                .map_err(|_| anyhow::anyhow!("examining new files failed"))?;
            listened
        })
    }

    /// The examiner's thread: each file handed over, in turn, until the handoff closes.
    fn examine_until_closed(&mut self, handoff: &Handoff, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) && !handoff.is_closed() {
            if let Some((found, held)) = handoff.pop(POLL) {
                self.handle(&found, held);
                handoff.done(found.file);
            }
            self.release_unmapped();
        }
    }

    /// Examines a file found, attaches what it offers, and tells the kernel it was seen;
    /// `held` says that the revealing process waits for it.
    fn handle(&mut self, found: &Found, held: bool) {
        let (targets, display) = match self.examiner.examine(found) {
            Examined::Targets { targets, display } => (targets, display),
            Examined::Nothing => (Vec::new(), String::new()),
            Examined::Gone => return,
        };
        let origin = Origin {
            pid: found.pid,
            ts_ns: found.ts_ns,
            display: &display,
            held,
            examined_ns: clock::monotonic_ns(),
        };
        let mut registry = lock(&self.registry);
        let Some(registry) = registry.as_mut() else {
            // The tracer is detaching: attach nothing more.
            return;
        };
        for target in targets {
            if let Err(e) = registry.attach(self.kernel, target, Some(&origin), false) {
                diag::warn(&format!("{e:#}"));
            }
        }
        self.kernel.mark_seen(found.file);
    }

    /// Now and then, releases what no process maps any more.
    fn release_unmapped(&mut self) {
        let now = Instant::now();
        let mut registry = lock(&self.registry);
        let Some(registry) = registry.as_mut() else {
            return;
        };
        if !registry.scan_due(now) {
            return;
        }
        let (released, links) = registry.release_unmapped(&examine::mapped_files(), now);
        for (file, name) in released {
            diag::notice(&format!("no longer traced: {name} (no process maps it)"));
            self.examiner.forget(file);
            self.kernel.forget_seen(file);
        }
        Registry::close_in_background(links);
    }
}

/// The registry, whoever panicked while holding it: its links are still the links.
pub fn lock(registry: &SharedRegistry) -> MutexGuard<'_, Option<Registry>> {
    registry.lock().unwrap_or_else(|e| e.into_inner())
}

/// The listener's thread: hears the kernel, holds what it reveals, hands it on, and
/// lets processes go when their file is done or their hold has lasted too long.
/// `listens` is called once the ring is open: from then on nothing is missed.
fn listen(
    kernel: &Kernel,
    handoff: &Handoff,
    hold: bool,
    stop: &AtomicBool,
    listens: impl FnOnce(),
) -> Result<()> {
    let heard = RefCell::new(Vec::new());
    let mut builder = RingBufferBuilder::new();
    builder
        .add(kernel.found(), |raw| {
            heard.borrow_mut().extend(decode_found(raw));
            0
        })
        .context("cannot open the ring of files found")?;
    let ring = builder
        .build()
        .context("cannot open the ring of files found")?;
    let waiter = Waiter::new(&ring, handoff)?;
    let mut holds = Holds::new(hold);
    listens();
    let mut reported = (0, 0);
    while !stop.load(Ordering::Relaxed) {
        waiter.wait(holds.next_wake(Instant::now()).unwrap_or(POLL).min(POLL));
        // Interrupted polls (signals) and the like only mean looking again.
        let _ = ring.consume();
        for found in heard.borrow_mut().drain(..) {
            // A file the queue cannot take is examined at its next start: its process
            // would wait for nothing.
            let held = handoff.takes(found.file) && holds.hold(found.pid, found.file);
            handoff.push(found, held);
        }
        for file in handoff.take_done() {
            holds.release(file);
        }
        holds.release_expired(Instant::now());
        reported = report_unexamined(kernel, handoff.dropped(), reported);
    }
    holds.release_all();
    Ok(())
}

/// Waits for the ring of files found or for a file done, whichever comes first.
struct Waiter {
    epoll: Epoll,
}

impl Waiter {
    fn new(ring: &RingBuffer, handoff: &Handoff) -> Result<Waiter> {
        let epoll =
            Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).context("cannot create an epoll")?;
        // SAFETY: the ring's epoll descriptor lives as long as the ring, which outlives
        // the waiter (both are the listener's, the ring made first).
        let ring_fd = unsafe { BorrowedFd::borrow_raw(ring.epoll_fd()) };
        for fd in [ring_fd, handoff.wake_fd()] {
            epoll
                .add(fd, EpollEvent::new(EpollFlags::EPOLLIN, 0))
                .context("cannot wait for files found")?;
        }
        Ok(Waiter { epoll })
    }

    fn wait(&self, limit: Duration) {
        let mut events = [EpollEvent::empty(); 2];
        // At least a millisecond, epoll's unit: a shorter wait would spin.
        let limit = EpollTimeout::try_from(limit.max(Duration::from_millis(1)))
            .unwrap_or(EpollTimeout::ZERO);
        // An interrupted wait only means looking again.
        let _ = self.epoll.wait(&mut events, limit);
    }
}

/// Warns of files found but not examined since the last report (the queue or the
/// kernel's ring was full); returns the new totals.
fn report_unexamined(kernel: &Kernel, dropped: u64, reported: (u64, u64)) -> (u64, u64) {
    let unreported = kernel.counters().unreported_files;
    let new = (dropped - reported.0) + (unreported - reported.1);
    if new > 0 {
        diag::warn(&format!(
            "{new} new files not examined: more than sslsniff examines at once \
             (each is examined at its next start or mapping)"
        ));
    }
    (dropped, unreported)
}
