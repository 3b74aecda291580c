//! What is attached, file by file, for the life of the tracer (a dropped link detaches),
//! and the release of files that no process maps any more: a library replaced by an
//! upgrade, or a container's copy, must not stay pinned by sslsniff for weeks.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use libbpf_rs::Link;

use crate::discover::Target;
use crate::event::FileId;

/// How often the machine's mappings are checked.
pub const SCAN_INTERVAL: Duration = Duration::from_secs(20);
/// How long a file may go unmapped before it is released: with the scan interval, a
/// file is released within a minute of its last process.
const UNMAPPED_FOR: Duration = Duration::from_secs(35);

struct Attached {
    /// The file, when it is one (the syscall hooks are not).
    file: Option<FileId>,
    links: Vec<Link>,
    /// Holds the file open as long as its probes live.
    target: Option<Target>,
    /// Never released: asked for by name, or following is off (nothing would re-attach).
    keep: bool,
    unmapped_since: Option<Instant>,
}

pub struct Registry {
    entries: Vec<Attached>,
    last_scan: Instant,
}

impl Registry {
    pub fn new() -> Registry {
        Registry {
            entries: Vec::new(),
            last_scan: Instant::now(),
        }
    }

    pub fn add(
        &mut self,
        file: Option<FileId>,
        links: Vec<Link>,
        target: Option<Target>,
        keep: bool,
    ) {
        self.entries.push(Attached {
            file,
            links,
            target,
            keep,
            unmapped_since: None,
        });
    }

    pub fn link_count(&self) -> usize {
        self.entries.iter().map(|e| e.links.len()).sum()
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
        self.entries.retain_mut(|e| {
            let Some(file) = e.file.filter(|_| !e.keep) else {
                return true;
            };
            if mapped.contains(&file) {
                e.unmapped_since = None;
                return true;
            }
            let since = *e.unmapped_since.get_or_insert(now);
            if now.duration_since(since) < UNMAPPED_FOR {
                return true;
            }
            let name = e
                .target
                .as_ref()
                .map_or_else(String::new, |t| crate::diag::safe_path(&t.path));
            released.push((file, name));
            links.append(&mut e.links);
            false
        });
        released.dedup_by_key(|(file, _)| *file);
        (released, links)
    }

    /// The links of the syscall and exec hooks (tracepoints, which close in tens of
    /// milliseconds), apart from the probes on files.
    pub fn take_hooks(&mut self) -> Vec<Link> {
        let (hooks, files) = std::mem::take(&mut self.entries)
            .into_iter()
            .partition(|e| e.file.is_none() && e.target.is_none());
        self.entries = files;
        hooks.into_iter().flat_map(|e: Attached| e.links).collect()
    }

    /// Every link, for closing at exit.
    pub fn take_links(&mut self) -> Vec<Link> {
        std::mem::take(&mut self.entries)
            .into_iter()
            .flat_map(|e| e.links)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_released_only_after_it_stayed_unmapped() {
        let (a, b) = (FileId { dev: 1, ino: 1 }, FileId { dev: 1, ino: 2 });
        let mut r = Registry::new();
        r.add(Some(a), Vec::new(), None, false);
        r.add(Some(b), Vec::new(), None, true);
        r.add(None, Vec::new(), None, false);
        let t0 = Instant::now();
        let nothing = HashSet::new();
        assert!(r.release_unmapped(&nothing, t0).0.is_empty());
        // Mapped again in between: the clock starts over.
        let only_a: HashSet<_> = [a].into();
        r.release_unmapped(&only_a, t0 + Duration::from_secs(30));
        let later = t0 + Duration::from_secs(40);
        assert!(r.release_unmapped(&nothing, later).0.is_empty());
        let (released, _) = r.release_unmapped(&nothing, later + UNMAPPED_FOR);
        assert_eq!(released, [(a, String::new())]);
        assert_eq!(r.entries.len(), 2, "the kept file and the hooks stay");
    }
}
