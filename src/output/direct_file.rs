//! The --pcap file, written past the page cache (O_DIRECT). A capture moves as many bytes
//! as the traffic it records; through the page cache the kernel copies each of them into
//! fresh pages and writes them back later, on the CPUs the traced programs need
//! (docs/performance.md: 800 MB cost 0.67-1.94 s of CPU buffered, 0.06-0.08 s direct).
//! Direct writes wait for the disk, though: while the output's queue is behind, writes go
//! through the page cache, which takes a burst at the speed of memory.
//!
//! A direct write starts and ends on a block and comes from aligned memory, so bytes are
//! staged in an aligned buffer and written a block at a time. What is left of the last
//! block when a batch is done goes through the page cache, so that the file holds every
//! byte handed to it once a batch is written; it is written again with what follows it.
//! A file system that refuses a direct write gets buffered writes from then on.

use std::fs::File;
use std::io::{self, IoSlice, Write};
use std::os::unix::fs::FileExt;

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::statfs::{fstatfs, TMPFS_MAGIC};

use super::writer::Sink;

/// The alignment of memory, file offsets and lengths that direct writes keep: a multiple
/// of the logical block size of the devices Linux file systems sit on. A file system that
/// wants more fails the write with EINVAL, upon which the file is written buffered.
const ALIGN: usize = 4096;
/// Bytes staged at most: two batches, written at once when full.
const STAGE: usize = 2 << 20;

pub struct DirectFile {
    file: File,
    /// STAGE + ALIGN bytes, of which the STAGE from `start` on are aligned.
    memory: Vec<u8>,
    start: usize,
    /// Bytes staged: the last partial block written, then what came after it.
    staged: usize,
    /// Where the first staged byte goes: always on a block.
    offset: u64,
    /// The file system takes direct writes: it has refused none.
    takes_direct: bool,
    /// The output's queue is behind: write through the page cache.
    behind: bool,
    /// Whether O_DIRECT is set on the file now.
    o_direct: bool,
}

impl DirectFile {
    /// Writes `file`, a regular file open for writing at its start, directly; Err(file)
    /// when its file system has no direct I/O, or keeps files in memory (tmpfs), where
    /// the page cache is the file and a direct write copies as much into it.
    pub fn new(file: File) -> Result<DirectFile, File> {
        let in_memory = fstatfs(&file).is_ok_and(|fs| fs.filesystem_type() == TMPFS_MAGIC);
        if in_memory || fcntl_direct(&file, true).is_err() {
            return Err(file);
        }
        let memory = vec![0; STAGE + ALIGN];
        let start = memory.as_ptr().align_offset(ALIGN);
        Ok(DirectFile {
            file,
            memory,
            start,
            staged: 0,
            offset: 0,
            takes_direct: true,
            behind: false,
            o_direct: true,
        })
    }

    fn stage(&mut self) -> &mut [u8] {
        &mut self.memory[self.start..self.start + STAGE]
    }

    /// Copies what fits of `bytes` into the stage, writing it out when full.
    fn take(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let at = self.staged;
        let n = bytes.len().min(STAGE - at);
        self.stage()[at..at + n].copy_from_slice(&bytes[..n]);
        self.staged += n;
        if self.staged == STAGE {
            self.write_blocks()?;
        }
        Ok(n)
    }

    /// Writes the staged whole blocks, directly unless behind, keeping the rest.
    fn write_blocks(&mut self) -> io::Result<()> {
        let whole = self.staged / ALIGN * ALIGN;
        if whole == 0 {
            return Ok(());
        }
        self.set_direct(self.takes_direct && !self.behind)?;
        self.write_staged(whole)?;
        let staged = self.staged;
        self.stage().copy_within(whole..staged, 0);
        self.staged -= whole;
        self.offset += whole as u64;
        Ok(())
    }

    /// Writes the first `len` staged bytes at `offset`; a direct write the file system
    /// refuses is written buffered, as is everything after it.
    fn write_staged(&mut self, len: usize) -> io::Result<()> {
        let (offset, start) = (self.offset, self.start);
        match self
            .file
            .write_all_at(&self.memory[start..start + len], offset)
        {
            Err(e) if self.o_direct && e.raw_os_error() == Some(libc::EINVAL) => {
                self.takes_direct = false;
                self.set_direct(false)?;
                self.file
                    .write_all_at(&self.memory[start..start + len], offset)
            }
            written => written,
        }
    }

    fn set_direct(&mut self, on: bool) -> io::Result<()> {
        if self.o_direct != on {
            fcntl_direct(&self.file, on)?;
            self.o_direct = on;
        }
        Ok(())
    }
}

impl Write for DirectFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.take(buf)
    }

    /// Takes every slice whole: a batch's formatted bytes and the payloads it refers to
    /// become one stream of blocks.
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut total = 0;
        for buf in bufs {
            let mut rest: &[u8] = buf;
            while !rest.is_empty() {
                let n = self.take(rest)?;
                rest = &rest[n..];
                total += n;
            }
        }
        Ok(total)
    }

    /// Puts every byte taken into the file: the whole blocks, then the partial last one
    /// through the page cache, staged still to be written again with what follows.
    fn flush(&mut self) -> io::Result<()> {
        self.write_blocks()?;
        if self.staged > 0 {
            self.set_direct(false)?;
            self.write_staged(self.staged)?;
        }
        Ok(())
    }
}

impl Sink for DirectFile {
    fn pace(&mut self, behind: bool) {
        self.behind = behind;
    }
}

/// Turns O_DIRECT on or off for `file`; Err when its file system has no direct I/O.
fn fcntl_direct(file: &File, on: bool) -> io::Result<()> {
    let mut flags = OFlag::from_bits_retain(fcntl(file, FcntlArg::F_GETFL)?);
    flags.set(OFlag::O_DIRECT, on);
    fcntl(file, FcntlArg::F_SETFL(flags))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hostile::Rng;
    use std::fs;

    /// Writes pieces of awkward sizes, flushing after some, and checks that the file
    /// holds exactly what was written after every flush. `takes_direct` false: as after
    /// a direct write the file system refused; `behind(i)`: the queue is behind when
    /// piece `i` is written.
    fn writes_whole_after_every_flush(takes_direct: bool, behind: fn(usize) -> bool) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("capture");
        let file = File::create_new(&path).unwrap();
        let mut out = DirectFile::new(file)
            .unwrap_or_else(|_| panic!("{} has no direct I/O", dir.path().display()));
        out.takes_direct = takes_direct;
        let mut expected = Vec::new();
        let sizes = [1, 4095, 4096, 5000, STAGE + 12345, 3, ALIGN * 3, 70_000, 10];
        for (i, &size) in sizes.iter().enumerate() {
            out.pace(behind(i));
            // Random bytes, so that a block written at the wrong offset shows.
            let piece = Rng::new(i as u64).bytes(size);
            let half = size / 2;
            let n = out
                .write_vectored(&[IoSlice::new(&piece[..half]), IoSlice::new(&piece[half..])])
                .unwrap();
            assert_eq!(n, size);
            expected.extend_from_slice(&piece);
            if i % 2 == 1 {
                out.flush().unwrap();
                assert!(fs::read(&path).unwrap() == expected, "after piece {i}");
            }
        }
        out.flush().unwrap();
        assert!(fs::read(&path).unwrap() == expected);
    }

    #[test]
    fn the_file_holds_every_byte_after_every_flush() {
        writes_whole_after_every_flush(true, |_| false);
    }

    #[test]
    fn writes_through_the_page_cache_while_behind_mix_with_direct_ones() {
        writes_whole_after_every_flush(true, |i| i % 3 == 0);
    }

    #[test]
    fn a_file_whose_direct_writes_were_refused_holds_the_same() {
        writes_whole_after_every_flush(false, |_| false);
    }

    #[test]
    fn a_file_in_memory_is_written_buffered() {
        let dir = tempfile::tempdir_in("/dev/shm").expect("this test needs /dev/shm");
        let file = File::create(dir.path().join("capture")).unwrap();
        assert!(DirectFile::new(file).is_err());
    }
}
