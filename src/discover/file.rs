//! Opening files that other users and containers control: only regular files, never a
//! blocking open, never more than a stated size, read through a memory map so that only
//! the pages the ELF parser looks at cost memory.

use std::fs::{File, FileType, Metadata, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use memmap2::{Mmap, MmapOptions};

use crate::procfs::FileId;

/// The largest file read for symbols. The largest statically linked TLS programs (Envoy,
/// Chromium-based browsers) stay well under it; anything larger is refused rather than
/// scanned. Examining a file reads each of its bytes at most once, and only where its
/// headers lead (docs/hostile-input.md): about 0.25 ms per MiB at worst here, half a
/// second for a file of this size.
pub const MAX_SIZE: u64 = 2 << 30;

/// A regular file that passed the checks, held open: its inode cannot change under us.
#[derive(Debug)]
pub struct Regular {
    file: File,
    id: FileId,
    size: u64,
}

/// Opens `path` for reading if it is a regular file of at most MAX_SIZE bytes.
///
/// The type is checked before opening, so that no device or FIFO is ever opened (opening
/// a tape drive rewinds it); O_NONBLOCK makes an open that races with a swap to a FIFO
/// return rather than wait for a writer (and an open of a file under a lease fail rather
/// than wait for the lease holder); the checks are repeated on the open descriptor.
pub fn open(path: &Path) -> Result<Regular> {
    let meta = path
        .metadata()
        .with_context(|| format!("cannot open {}", path.display()))?;
    check(path, &meta)?;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let meta = file
        .metadata()
        .with_context(|| format!("cannot read {}", path.display()))?;
    check(path, &meta)?;
    Ok(Regular {
        file,
        id: FileId::of(&meta),
        size: meta.len(),
    })
}

fn check(path: &Path, meta: &Metadata) -> Result<()> {
    if !meta.is_file() {
        bail!(
            "{} is {}, not a regular file",
            path.display(),
            kind(meta.file_type())
        );
    }
    if meta.len() > MAX_SIZE {
        bail!(
            "{} is {} bytes, over the {} GiB limit for a file to read symbols from",
            path.display(),
            meta.len(),
            MAX_SIZE >> 30
        );
    }
    Ok(())
}

fn kind(t: FileType) -> &'static str {
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "of another kind"
    }
}

impl Regular {
    pub fn id(&self) -> FileId {
        self.id
    }

    /// The file's bytes, mapped read-only: pages are read when touched, so a parser that
    /// looks at headers and symbol tables costs those pages, not the file's size.
    pub fn map(&self) -> Result<Mmap> {
        let len = usize::try_from(self.size).context("the file does not fit in memory")?;
        // SAFETY: the map is private and read-only, and every byte read from it goes
        // through a parser that bounds each access, so bytes that the file's owner
        // changes meanwhile are only more hostile input. Truncating the file while it is
        // mapped would end sslsniff with SIGBUS (a crash, not a memory error); only its
        // owner can, and only during the few milliseconds of the parse.
        let map = unsafe { MmapOptions::new().len(len).map(&self.file) };
        map.context("cannot map the file")
    }

    /// A path that names this very inode for as long as it stays open: attaching through
    /// it cannot reach a file swapped in after the checks.
    pub fn fd_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn error(path: &Path) -> String {
        format!("{:#}", open(path).unwrap_err())
    }

    #[test]
    fn refuses_what_is_not_a_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.unwrap().success());
        assert!(error(&fifo).ends_with("fifo is a FIFO, not a regular file"));
        assert!(error(dir.path()).ends_with("is a directory, not a regular file"));
        assert!(
            error(Path::new("/dev/zero")).ends_with("is a character device, not a regular file")
        );
        // A link is followed to what it names, and what it names is checked.
        let link = dir.path().join("link");
        symlink(&fifo, &link).unwrap();
        assert!(error(&link).ends_with("link is a FIFO, not a regular file"));
    }

    #[test]
    fn refuses_files_over_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big");
        File::create(&big).unwrap().set_len(MAX_SIZE + 1).unwrap();
        assert!(error(&big).ends_with(&format!(
            "big is {} bytes, over the 2 GiB limit for a file to read symbols from",
            MAX_SIZE + 1
        )));
    }

    #[test]
    fn maps_a_regular_file_and_names_it_by_descriptor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"contents").unwrap();
        let file = open(&path).unwrap();
        assert_eq!(&file.map().unwrap()[..], b"contents");
        assert_eq!(FileId::of_path(&file.fd_path()), Some(file.id()));
        assert_eq!(FileId::of_path(&path), Some(file.id()));
        let empty = dir.path().join("empty");
        File::create(&empty).unwrap();
        assert!(open(&empty).unwrap().map().unwrap().is_empty());
    }
}
