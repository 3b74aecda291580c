//! The one owner of every link, for the life of the tracer (a dropped link detaches):
//! what is attached to each file, the release of files that no process maps any more (a
//! library replaced by an upgrade, or a container's copy, must not stay pinned by
//! sslsniff for weeks), and the whole detach at exit.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::Result;
use libbpf_rs::Link;

use super::attach::{self, Scope};
use crate::diag;
use crate::discover::Target;
use crate::kernel::{Hook, Kernel};
use crate::procfs::FileId;

/// How often the machine's mappings are checked.
pub const SCAN_INTERVAL: Duration = Duration::from_secs(20);
/// How long a file may go unmapped before it is released: with the scan interval, a
/// file is released within a minute of its last process.
const UNMAPPED_FOR: Duration = Duration::from_secs(35);

struct Attached {
    file: FileId,
    links: Vec<Link>,
    /// Holds the file open as long as its probes live.
    target: Target,
    /// Never released: asked for by name, or following is off (nothing would re-attach).
    keep: bool,
    unmapped_since: Option<Instant>,
}

/// What revealed a target found while running: the process, and when.
pub struct Origin<'a> {
    pub pid: u32,
    pub ts_ns: u64,
    /// The file's name for people (the target's path goes through /proc).
    pub display: &'a str,
    /// The process waited for the attach (`follow::hold`).
    pub held: bool,
    /// CLOCK_MONOTONIC when the file had been examined: the rest is the attach.
    pub examined_ns: u64,
}

pub struct Registry {
    files: Vec<Attached>,
    /// The hooks that are not on files (syscalls, exec): they close in tens of
    /// milliseconds, where perf-event probes close slowly.
    hooks: Vec<Link>,
    scope: Scope,
    multi: bool,
    debug: bool,
    last_scan: Instant,
}

impl Registry {
    pub fn new(scope: Scope, multi: bool, debug: bool) -> Registry {
        Registry {
            files: Vec::new(),
            hooks: Vec::new(),
            scope,
            multi,
            debug,
            last_scan: Instant::now(),
        }
    }

    /// Attaches a target and announces it; says whether it had anything to probe.
    pub fn attach(
        &mut self,
        kernel: &Kernel,
        target: Target,
        origin: Option<&Origin>,
        keep: bool,
    ) -> Result<bool> {
        let links = attach::attach(kernel, self.scope, &target)?;
        if links.is_empty() {
            return Ok(false);
        }
        attach::announce(&target, self.scope, origin, self.debug);
        self.files.push(Attached {
            file: target.file_id(),
            links,
            target,
            keep,
            unmapped_since: None,
        });
        Ok(true)
    }

    pub fn attach_hook(&mut self, kernel: &Kernel, hook: Hook, id: Option<u64>) -> Result<()> {
        self.hooks.push(attach::attach_hook(kernel, hook, id)?);
        Ok(())
    }

    /// The files attached.
    pub fn files(&self) -> impl Iterator<Item = FileId> + '_ {
        self.files.iter().map(|e| e.file)
    }

    pub fn link_count(&self) -> usize {
        self.hooks.len() + self.files.iter().map(|e| e.links.len()).sum::<usize>()
    }

    /// Whether it is time to look at what the machine maps.
    pub fn scan_due(&mut self, now: Instant) -> bool {
        if now.duration_since(self.last_scan) < SCAN_INTERVAL {
            return false;
        }
        self.last_scan = now;
        true
    }

    /// Releases the files that nothing in `mapped` has held for long enough, returning
    /// them (so that a later mapping is examined again) with their names, and their
    /// links to close.
    pub fn release_unmapped(
        &mut self,
        mapped: &HashSet<FileId>,
        now: Instant,
    ) -> (Vec<(FileId, String)>, Vec<Link>) {
        let mut released = Vec::new();
        let mut links = Vec::new();
        self.files.retain_mut(|e| {
            if e.keep || !unmapped_long_enough(&mut e.unmapped_since, mapped.contains(&e.file), now)
            {
                return true;
            }
            released.push((e.file, diag::safe_path(&e.target.path)));
            links.append(&mut e.links);
            false
        });
        released.dedup_by_key(|(file, _)| *file);
        (released, links)
    }

    /// Closes links released while running; off the caller's thread, as closing waits
    /// out grace periods.
    pub fn close_in_background(links: Vec<Link>) {
        if !links.is_empty() {
            std::thread::spawn(move || super::release::close(links));
        }
    }

    /// Detaches everything. The caller has told the programs to stop.
    pub fn detach_all(self) {
        let probes: Vec<Link> = self.files.into_iter().flat_map(|e| e.links).collect();
        let mut hooks = self.hooks;
        if self.multi {
            // Every multi-uprobe link closes within tens of milliseconds: all at once.
            hooks.extend(probes);
            super::release::close(hooks);
        } else {
            // The hooks first: they run on every syscall of the machine, and must not
            // wait behind the probes' slow release.
            super::release::close(hooks);
            super::release::close_at_exit(probes, false);
        }
    }
}

/// Whether a file unmapped since `since` (None: mapped at the last look) has been
/// unmapped long enough to release, given whether it is mapped now.
fn unmapped_long_enough(since: &mut Option<Instant>, mapped: bool, now: Instant) -> bool {
    if mapped {
        *since = None;
        return false;
    }
    now.duration_since(*since.get_or_insert(now)) >= UNMAPPED_FOR
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_released_only_after_it_stayed_unmapped() {
        let t0 = Instant::now();
        let mut since = None;
        assert!(!unmapped_long_enough(&mut since, false, t0));
        // Mapped again in between: the clock starts over.
        assert!(!unmapped_long_enough(
            &mut since,
            true,
            t0 + Duration::from_secs(30)
        ));
        let later = t0 + Duration::from_secs(40);
        assert!(!unmapped_long_enough(&mut since, false, later));
        assert!(!unmapped_long_enough(
            &mut since,
            false,
            later + UNMAPPED_FOR / 2
        ));
        assert!(unmapped_long_enough(
            &mut since,
            false,
            later + UNMAPPED_FOR
        ));
    }
}
