//! Directories of library copies in /dev/shm (memory, not the disk, whose speed is not
//! what these runs measure), removed whichever way the run ends.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

/// The library the follow and scale runs copy: every copy is a new inode, a file
/// sslsniff has never seen.
pub const LIBSSL: &str = "/usr/lib/x86_64-linux-gnu/libssl.so.3";

pub struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    pub fn new(what: &str) -> Result<Self> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = PathBuf::from(format!(
            "/dev/shm/sslsniff-bench-{what}.{}.{nanos}",
            std::process::id()
        ));
        fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Scratch { dir })
    }

    /// Copy `i` of libssl, in a directory of its own as a container's would be.
    pub fn libssl_copy(&self, i: usize) -> Result<PathBuf> {
        let dir = self.dir.join(i.to_string());
        fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let copy = dir.join("libssl.so.3");
        fs::copy(LIBSSL, &copy).with_context(|| format!("cannot copy {LIBSSL}"))?;
        Ok(copy)
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}
