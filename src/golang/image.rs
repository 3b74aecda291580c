//! An ELF file's loadable segments: virtual addresses mapped to the file bytes behind
//! them, every read bounded by the segment's file part (its `.bss` tail is not in the file).

use object::{Object, ObjectSection, ObjectSegment, SegmentFlags};

use super::{malformed, GoError};

const PF_X: u32 = 1;
const PF_W: u32 = 2;

#[derive(Debug, Clone, Copy)]
struct Segment {
    vaddr: u64,
    offset: u64,
    filesz: u64,
    flags: u32,
}

pub struct Image<'a> {
    data: &'a [u8],
    segments: Vec<Segment>,
}

impl<'a> Image<'a> {
    /// Errors when a segment or section runs past the end of the file: a cut copy.
    pub fn new(data: &'a [u8], file: &object::File) -> Result<Self, GoError> {
        let ranges = file
            .segments()
            .map(|s| Some(s.file_range()))
            .chain(file.sections().map(|s| s.file_range()));
        for (offset, size) in ranges.flatten() {
            if offset
                .checked_add(size)
                .is_none_or(|end| end > data.len() as u64)
            {
                return Err(malformed(
                    "a segment or section runs past the end of the file",
                ));
            }
        }
        let segments = file
            .segments()
            .map(|s| {
                let (offset, filesz) = s.file_range();
                let flags = match s.flags() {
                    SegmentFlags::Elf { p_flags } => p_flags,
                    _ => 0,
                };
                Segment {
                    vaddr: s.address(),
                    offset,
                    filesz,
                    flags,
                }
            })
            .collect();
        Ok(Image { data, segments })
    }

    /// The file bytes from `vaddr` to the end of its segment's file part, and the file
    /// offset of `vaddr`.
    fn tail(&self, vaddr: u64, want: impl Fn(u32) -> bool) -> Option<(u64, &'a [u8])> {
        self.segments.iter().find_map(|s| {
            let delta = vaddr.checked_sub(s.vaddr)?;
            if delta >= s.filesz || !want(s.flags) {
                return None;
            }
            let start = s.offset.checked_add(delta)?;
            let end = s.offset.checked_add(s.filesz)?;
            let bytes = self
                .data
                .get(usize::try_from(start).ok()?..usize::try_from(end).ok()?)?;
            Some((start, bytes))
        })
    }

    /// `len` bytes at `vaddr`, when one segment holds them all in the file.
    pub fn bytes(&self, vaddr: u64, len: u64) -> Option<&'a [u8]> {
        let (_, tail) = self.tail(vaddr, |_| true)?;
        tail.get(..usize::try_from(len).ok()?)
    }

    /// Code: `len` bytes at `vaddr` in an executable segment, with their file offset.
    pub fn code(&self, vaddr: u64, len: u64) -> Option<(u64, &'a [u8])> {
        let (offset, tail) = self.tail(vaddr, |flags| flags & PF_X != 0)?;
        Some((offset, tail.get(..usize::try_from(len).ok()?)?))
    }

    /// The file bytes of the writable segments (where `.go.buildinfo`,
    /// `runtime.buildVersion` and the module data live), each byte once however many
    /// segments hold it: `(file offset, bytes)` in file order.
    pub fn writable(&self) -> Vec<(u64, &'a [u8])> {
        self.once(|flags| flags & PF_W != 0)
    }

    /// `len` bytes at `vaddr` in a segment that is neither writable nor executable.
    pub fn read_only(&self, vaddr: u64, len: u64) -> Option<&'a [u8]> {
        let (_, tail) = self.tail(vaddr, |flags| flags & (PF_W | PF_X) == 0)?;
        tail.get(..usize::try_from(len).ok()?)
    }

    /// The file bytes of the data segments (where `.gopclntab` lives: read-only data, or
    /// the relocated read-only data of PIE builds), each byte once however many segments
    /// hold it: `(file offset, bytes)` in file order.
    pub fn data_once(&self) -> Vec<(u64, &'a [u8])> {
        self.once(|flags| flags & PF_X == 0)
    }

    /// The file bytes of the segments whose flags `want` accepts, each byte once, in file
    /// order: a hostile file may have every segment cover the whole file.
    fn once(&self, want: impl Fn(u32) -> bool) -> Vec<(u64, &'a [u8])> {
        let mut ranges: Vec<(u64, u64)> = self
            .segments
            .iter()
            .filter(|s| want(s.flags) && s.filesz > 0)
            .filter_map(|s| Some((s.offset, s.offset.checked_add(s.filesz)?)))
            .collect();
        ranges.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::new();
        for (start, end) in ranges {
            match merged.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        merged
            .into_iter()
            .filter_map(|(start, end)| {
                let bytes = self
                    .data
                    .get(usize::try_from(start).ok()?..usize::try_from(end).ok()?)?;
                Some((start, bytes))
            })
            .collect()
    }

    /// The address at which the first data segment that holds file offset `offset` loads it.
    pub fn data_address(&self, offset: u64) -> Option<u64> {
        self.segments.iter().find_map(|s| {
            let delta = offset.checked_sub(s.offset)?;
            (s.flags & PF_X == 0 && delta < s.filesz).then(|| s.vaddr.checked_add(delta))?
        })
    }
}
