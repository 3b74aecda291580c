//! A file the kernel says was never examined (a program that started, an executable
//! mapping) is found in the revealing process, checked for TLS functions, and handed
//! back as targets to attach. Each file is examined once.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::diag;
use crate::discover::{self, Target};
use crate::event::{Found, Reveal};
use crate::libs::Library;
use crate::procfs::{self, FileId};

/// What one revealed file turned out to be.
pub enum Examined {
    /// TLS functions to attach to; `display` names the file for people.
    Targets {
        targets: Vec<Target>,
        display: String,
    },
    /// Nothing to trace (no TLS functions, or a program that cannot be traced).
    Nothing,
    /// The process was gone before its file could be found: not examined, so the file's
    /// next exec or mapping is reported again.
    Gone,
}

pub struct Examiner {
    enabled: Vec<&'static Library>,
    seen: HashSet<FileId>,
}

impl Examiner {
    pub fn new(enabled: Vec<&'static Library>) -> Examiner {
        Examiner {
            enabled,
            seen: HashSet::new(),
        }
    }

    /// Marks a file as examined; says whether it was new.
    pub fn mark(&mut self, file: FileId) -> bool {
        self.seen.insert(file)
    }

    /// A released file: the next process that maps it has it examined again.
    pub fn forget(&mut self, file: FileId) {
        self.seen.remove(&file);
    }

    /// Finds the revealed file in its process and checks it, once per file.
    pub fn examine(&mut self, found: &Found) -> Examined {
        if !self.mark(found.file) {
            return Examined::Nothing;
        }
        let Some((open, display)) = locate(found) else {
            self.seen.remove(&found.file);
            return Examined::Gone;
        };
        // The process may have exited and its pid been reused: trust only the inode of
        // the file actually opened.
        let same = |file| file == found.file;
        match discover::file_targets(&self.enabled, &open, Path::new(&display), same) {
            Ok(Some(targets)) if !targets.is_empty() => Examined::Targets { targets, display },
            Ok(Some(_)) => Examined::Nothing,
            Ok(None) => {
                self.seen.remove(&found.file);
                Examined::Gone
            }
            Err(e) => {
                // Once per file, like every other announcement: a Go program that cannot
                // be traced (its release, its architecture) or a file that is not ELF.
                let reason = format!("{e:#}").replace(&open.display().to_string(), "it");
                diag::notice(&format!(
                    "not traced: {display} [pid {}]: {reason}",
                    found.pid
                ));
                Examined::Nothing
            }
        }
    }
}

/// Every running process (or the one of -p) as if it had just started: executables
/// that carry TLS themselves (node, static builds) are found at start too.
pub fn running_executables(pid: Option<u32>) -> Vec<Found> {
    procfs::pids(pid)
        .into_iter()
        .filter_map(|pid| {
            Some(Found {
                reveal: Reveal::Exec,
                pid,
                file: procfs::exe_id(pid)?,
                ts_ns: 0,
            })
        })
        .collect()
}

/// Every file that some process maps or runs now.
pub fn mapped_files() -> HashSet<FileId> {
    let mut files = HashSet::new();
    for pid in procfs::pids(None) {
        files.extend(procfs::exe_id(pid));
        if let Some(maps) = procfs::maps(pid) {
            files.extend(procfs::mappings(&maps).map(|m| m.file));
        }
    }
    files
}

/// Where to open the revealed file (the mapped inode itself, through /proc, never a path
/// that the traced side could point elsewhere) and how to name it.
fn locate(found: &Found) -> Option<(PathBuf, String)> {
    let pid = found.pid;
    match found.reveal {
        Reveal::Exec => {
            let name = procfs::exe_link(pid)?;
            Some((procfs::exe(pid), diag::safe_path(&name)))
        }
        Reveal::Mmap => {
            let maps = procfs::maps(pid)?;
            let m = procfs::mappings(&maps).find(|m| m.file == found.file)?;
            let open = procfs::map_file(pid, m.start, m.end);
            Some((open, diag::safe_path(m.path())))
        }
    }
}
