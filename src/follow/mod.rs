//! Following the machine, on a thread of its own: files the kernel reports (a program
//! that started, an executable mapping) are examined (`examine`), attached and
//! announced as soon as they are heard of; the kernel's seen set is kept in step; files
//! that no process maps any more are released. The ring of call records is drained by
//! another thread, so no file, however slow or hostile, holds up the capture; and the
//! registry of links is shared, so that no file holds up the exit either: the tracer
//! takes it whether or not the follower is done with a file, and a file examined after
//! that is not attached.

mod examine;

use std::cell::RefCell;
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use libbpf_rs::RingBufferBuilder;

use crate::diag;
use crate::event::Found;
use crate::kernel::record::decode_found;
use crate::kernel::Kernel;
use crate::libs::Library;
use crate::probes::{Origin, Registry};
use examine::{Examined, Examiner};

/// How long the follower waits for news before it looks at the stop flag again.
const POLL: Duration = Duration::from_millis(50);
/// Files waiting to be examined at most: a flood of new files beyond this is counted
/// and reported, not queued without bound. Their next exec or mapping reports them again.
const MAX_QUEUED: usize = 4096;

/// Files found and not yet examined, each once.
#[derive(Default)]
struct Queue {
    files: VecDeque<Found>,
    queued: HashSet<crate::procfs::FileId>,
    dropped: u64,
}

impl Queue {
    fn push(&mut self, found: Found) {
        if self.queued.contains(&found.file) {
            return;
        }
        if self.files.len() >= MAX_QUEUED {
            self.dropped += 1;
            return;
        }
        self.queued.insert(found.file);
        self.files.push_back(found);
    }

    fn pop(&mut self) -> Option<Found> {
        let found = self.files.pop_front()?;
        self.queued.remove(&found.file);
        Some(found)
    }
}

/// The registry of every link, shared by the follower and the tracer; None once the
/// tracer has taken it for the detach.
pub type SharedRegistry = Arc<Mutex<Option<Registry>>>;

pub struct Follower<'k, 'obj> {
    kernel: &'k Kernel<'obj>,
    examiner: Examiner,
    registry: SharedRegistry,
    /// Off with --no-follow: then nothing is released either, as nothing would attach
    /// a released file again.
    enabled: bool,
}

impl<'k, 'obj> Follower<'k, 'obj> {
    /// Takes over the registry of what is attached at start, whose files the kernel is
    /// told it need not report.
    pub fn new(
        kernel: &'k Kernel<'obj>,
        registry: SharedRegistry,
        libraries: Vec<&'static Library>,
        enabled: bool,
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
            enabled,
        }
    }

    /// Examines every running process's executable (node, static builds) as if it had
    /// just started: before the tracer says it is ready.
    pub fn examine_running(&mut self, pid: Option<u32>) {
        for found in examine::running_executables(pid) {
            self.handle(&found);
        }
    }

    /// Follows until `stop` is set; with following off, returns at once.
    pub fn run(mut self, stop: &AtomicBool) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        let queue = RefCell::new(Queue::default());
        let mut builder = RingBufferBuilder::new();
        builder
            .add(self.kernel.found(), |raw| {
                queue.borrow_mut().extend(decode_found(raw));
                0
            })
            .context("cannot open the ring of files found")?;
        let ring = builder
            .build()
            .context("cannot open the ring of files found")?;
        let mut reported = (0, 0);
        while !stop.load(Ordering::Relaxed) {
            // Interrupted polls (signals) and the like only mean looking again.
            let _ = ring.poll(POLL);
            loop {
                // Take in what arrived meanwhile, so that duplicates collapse.
                let _ = ring.consume();
                let Some(found) = queue.borrow_mut().pop() else {
                    break;
                };
                self.handle(&found);
                if stop.load(Ordering::Relaxed) {
                    break;
                }
            }
            reported = self.report_unexamined(queue.borrow().dropped, reported);
            self.release_unmapped();
        }
        Ok(())
    }

    /// Examines a file found, attaches what it offers, and tells the kernel it was seen.
    fn handle(&mut self, found: &Found) {
        let (targets, display) = match self.examiner.examine(found) {
            Examined::Targets { targets, display } => (targets, display),
            Examined::Nothing => (Vec::new(), String::new()),
            Examined::Gone => return,
        };
        let origin = Origin {
            pid: found.pid,
            ts_ns: found.ts_ns,
            display: &display,
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

    /// Warns of files found but not examined since the last report (the queue or the
    /// kernel's ring was full); returns the new totals.
    fn report_unexamined(&self, dropped: u64, reported: (u64, u64)) -> (u64, u64) {
        let unreported = self.kernel.counters().unreported_files;
        let new = (dropped - reported.0) + (unreported - reported.1);
        if new > 0 {
            diag::warn(&format!(
                "{new} new files not examined: more than sslsniff examines at once \
                 (each is examined at its next start or mapping)"
            ));
        }
        (dropped, unreported)
    }

    /// Now and then, releases what no process maps any more.
    fn release_unmapped(&mut self) {
        let now = Instant::now();
        let mut registry = lock(&self.registry);
        let Some(registry) = registry.as_mut() else {
            return;
        };
        if !self.enabled || !registry.scan_due(now) {
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

impl Extend<Found> for Queue {
    fn extend<I: IntoIterator<Item = Found>>(&mut self, iter: I) {
        iter.into_iter().for_each(|f| self.push(f));
    }
}
