//! Following the machine: a file the kernel says was never examined (a program that
//! started, an executable mapping) is found in the revealing process, checked for TLS
//! functions, and handed back as targets to attach. Each file is examined once.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::diag;
use crate::discover::{self, Target};
use crate::event::{FileId, Found, Reveal};
use crate::libs::Library;
use crate::process;

/// What one revealed file turned out to be.
pub enum Examined {
    /// TLS functions to attach to; `display` names the file for people.
    Targets {
        targets: Vec<Target>,
        display: String,
    },
    /// Nothing to trace (no TLS functions, a Go program, or gone before we looked).
    Nothing,
}

pub struct Follow {
    enabled: Vec<&'static Library>,
    seen: HashSet<FileId>,
}

impl Follow {
    pub fn new(enabled: Vec<&'static Library>) -> Follow {
        Follow {
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
            return Examined::Nothing;
        };
        // The process may have exited and its pid been reused: trust only the inode of
        // the file actually opened.
        let same = |dev, ino| FileId::from_stat(dev, ino) == found.file;
        match discover::file_targets(&self.enabled, &open, Path::new(&display), same) {
            Ok(Some(targets)) if !targets.is_empty() => Examined::Targets { targets, display },
            Ok(_) => Examined::Nothing,
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
    let pids = process::pids(pid);
    pids.into_iter()
        .filter_map(|pid| {
            let m = fs::metadata(format!("/proc/{pid}/exe")).ok()?;
            Some(Found {
                reveal: Reveal::Exec,
                pid,
                file: FileId::from_stat(m.dev(), m.ino()),
                ts_ns: 0,
            })
        })
        .collect()
}

/// Every file that some process maps or runs now, by the kernel's name for it.
pub fn mapped_files() -> HashSet<FileId> {
    let mut files = HashSet::new();
    for pid in process::pids(None) {
        if let Ok(m) = fs::metadata(format!("/proc/{pid}/exe")) {
            files.insert(FileId::from_stat(m.dev(), m.ino()));
        }
        if let Ok(maps) = fs::read_to_string(format!("/proc/{pid}/maps")) {
            files.extend(maps.lines().filter_map(mapping_file));
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
            let exe = PathBuf::from(format!("/proc/{pid}/exe"));
            let name = fs::read_link(&exe).ok()?;
            Some((exe, diag::safe_path(&name)))
        }
        Reveal::Mmap => {
            let maps = fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
            let (range, path) = find_mapping(&maps, found.file)?;
            let open = PathBuf::from(format!("/proc/{pid}/map_files/{range}"));
            Some((open, diag::safe_path(Path::new(path))))
        }
    }
}

/// The address range and path of the first mapping of `file` in a maps text.
fn find_mapping(maps: &str, file: FileId) -> Option<(&str, &str)> {
    maps.lines().find_map(|line| {
        let mut fields = line.splitn(6, char::is_whitespace);
        let range = fields.next()?;
        let path = fields.nth(4)?.trim();
        (mapping_file(line)? == file).then_some((range, path))
    })
}

/// The file a maps line maps (`START-END PERMS OFFSET MAJOR:MINOR INODE PATH`), if any.
fn mapping_file(line: &str) -> Option<FileId> {
    let mut fields = line.splitn(6, char::is_whitespace).skip(3);
    let (dev, ino, path) = (fields.next()?, fields.next()?, fields.next()?);
    let (major, minor) = dev.split_once(':')?;
    let id = FileId::from_major_minor(
        u64::from_str_radix(major, 16).ok()?,
        u64::from_str_radix(minor, 16).ok()?,
        ino.parse().ok()?,
    );
    path.trim().starts_with('/').then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_mapping_by_device_and_inode() {
        let maps = "7f00-7f01 r--p 00000000 fd:01 123 /usr/lib/libssl.so.3\n\
            7f01-7f02 r-xp 00001000 fd:01 123 /usr/lib/libssl.so.3\n\
            7f03-7f04 r-xp 00000000 00:2a 9 /opt/app/lib with space/libssl.so.3\n";
        let ssl = FileId::from_major_minor(0xfd, 1, 123);
        assert_eq!(
            find_mapping(maps, ssl),
            Some(("7f00-7f01", "/usr/lib/libssl.so.3"))
        );
        let app = FileId::from_major_minor(0, 0x2a, 9);
        assert_eq!(
            find_mapping(maps, app),
            Some(("7f03-7f04", "/opt/app/lib with space/libssl.so.3"))
        );
        assert_eq!(
            find_mapping(maps, FileId::from_major_minor(0xfd, 1, 7)),
            None
        );
    }

    #[test]
    fn stat_and_kernel_device_numbers_agree() {
        let meta = fs::metadata("/proc/self/exe").unwrap();
        let id = FileId::from_stat(meta.dev(), meta.ino());
        let maps = fs::read_to_string("/proc/self/maps").unwrap();
        assert!(find_mapping(&maps, id).is_some(), "{id:?} not in\n{maps}");
    }
}
