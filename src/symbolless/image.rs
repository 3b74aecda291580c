//! An ELF executable or library as the loader maps it: its PT_LOAD segments, from
//! virtual addresses to file bytes, and the facts about function starts that the file
//! itself records (the .eh_frame_hdr table, relocated pointers). Every value comes from
//! a hostile file: all arithmetic is checked and every table is bounded.

use anyhow::{bail, Context, Result};
use object::elf;
use object::read::elf::{ElfFile64, FileHeader, ProgramHeader, Rela, SectionHeader};
use object::Endianness;

/// More relocations than this are not read: the largest programs seen have a few
/// hundred thousand.
const MAX_RELOCATIONS: usize = 1 << 22;
/// Function starts kept from one of the file's tables at most; past it the rest is
/// left unread (fewer proofs, never a wrong one).
const MAX_KEPT: usize = 1 << 20;

pub struct Segment {
    pub va: u64,
    pub offset: u64,
    /// Bytes present in the file (the rest of the mapping is zeroes).
    pub size: u64,
    pub exec: bool,
}

pub struct Image<'a> {
    pub data: &'a [u8],
    pub segments: Vec<Segment>,
    /// Position-independent: absolute pointers are relocations, not values in the file.
    pub pie: bool,
    eh_frame_hdr: Option<(u64, &'a [u8])>,
    file: ElfFile64<'a, Endianness>,
}

impl<'a> Image<'a> {
    pub fn parse(data: &'a [u8]) -> Result<Image<'a>> {
        let file = ElfFile64::<Endianness>::parse(data).context("not a 64-bit ELF file")?;
        let endian = file.endian();
        if file.elf_header().e_machine(endian) != elf::EM_X86_64 {
            bail!("not an x86-64 program");
        }
        let mut segments = Vec::new();
        let mut eh_frame_hdr = None;
        for ph in file.elf_program_headers() {
            let (va, offset) = (ph.p_vaddr(endian), ph.p_offset(endian));
            let size = ph.p_filesz(endian);
            let in_file = offset
                .checked_add(size)
                .is_some_and(|end| end <= data.len() as u64);
            match ph.p_type(endian) {
                elf::PT_LOAD if in_file && va.checked_add(size).is_some() => {
                    segments.push(Segment {
                        va,
                        offset,
                        size,
                        exec: ph.p_flags(endian) & elf::PF_X != 0,
                    });
                }
                elf::PT_GNU_EH_FRAME if in_file => {
                    eh_frame_hdr = Some((va, &data[offset as usize..(offset + size) as usize]));
                }
                _ => {}
            }
        }
        Ok(Image {
            data,
            segments,
            pie: file.elf_header().e_type(endian) == elf::ET_DYN,
            eh_frame_hdr,
            file,
        })
    }

    /// The file's bytes of a segment.
    pub fn bytes(&self, s: &Segment) -> &'a [u8] {
        &self.data[s.offset as usize..(s.offset + s.size) as usize]
    }

    /// The executable segment holding `va`, and the bytes from `va` to its end.
    pub fn code_at(&self, va: u64) -> Option<&'a [u8]> {
        let s = self
            .segments
            .iter()
            .find(|s| s.exec && va >= s.va && va - s.va < s.size)?;
        Some(&self.bytes(s)[(va - s.va) as usize..])
    }

    /// The file offset of `va`, for a uprobe.
    pub fn offset_of(&self, va: u64) -> Option<u64> {
        let s = self
            .segments
            .iter()
            .find(|s| va >= s.va && va - s.va < s.size)?;
        Some(s.offset + (va - s.va))
    }

    pub fn is_code(&self, va: u64) -> bool {
        self.code_at(va).is_some()
    }

    /// Function starts as the unwind table lists them (`.eh_frame_hdr`), within `keep`,
    /// when it is in the one encoding compilers write: 4-byte entries relative to the
    /// table itself.
    pub fn fde_starts(&self, keep: impl Fn(u64) -> bool) -> Vec<u64> {
        let Some((va, hdr)) = self.eh_frame_hdr else {
            return Vec::new();
        };
        // version 1; eh_frame_ptr as any; fde_count as udata4 (0x03); table as
        // datarel sdata4 (0x3b).
        if hdr.len() < 12 || hdr[0] != 1 || hdr[2] != 0x03 || hdr[3] != 0x3b {
            return Vec::new();
        }
        let ptr_len = match hdr[1] & 0x0f {
            0x03 | 0x0b => 4,
            0x04 | 0x0c => 8,
            _ => return Vec::new(),
        };
        let Some(count) = hdr.get(4 + ptr_len..8 + ptr_len) else {
            return Vec::new();
        };
        let count = u32::from_le_bytes(count.try_into().unwrap_or_default()) as usize;
        let table = &hdr[(8 + ptr_len).min(hdr.len())..];
        table
            .chunks_exact(8)
            .take(count)
            .filter_map(|e| {
                let rel = i32::from_le_bytes([e[0], e[1], e[2], e[3]]);
                va.checked_add_signed(i64::from(rel))
            })
            .filter(|&a| keep(a))
            .take(MAX_KEPT)
            .collect()
    }

    /// Code addresses that a relocation of the file writes into memory (R_X86_64_RELATIVE
    /// addends: function pointers of a position-independent program), within `keep`.
    pub fn relocated_pointers(&self, keep: impl Fn(u64) -> bool) -> Vec<u64> {
        let endian = self.file.endian();
        let Ok(sections) = self.file.elf_header().sections(endian, self.data) else {
            return Vec::new();
        };
        let mut found = Vec::new();
        let mut seen = 0;
        for section in sections.iter() {
            if section.sh_type(endian) != elf::SHT_RELA {
                continue;
            }
            let Ok(Some((relas, _))) = section.rela(endian, self.data) else {
                continue;
            };
            for rela in relas {
                seen += 1;
                if seen > MAX_RELOCATIONS {
                    return found;
                }
                if rela.r_type(endian, false) == elf::R_X86_64_RELATIVE {
                    let addend = rela.r_addend(endian) as u64;
                    if keep(addend) && found.len() < MAX_KEPT {
                        found.push(addend);
                    }
                }
            }
        }
        found
    }

    /// Code addresses stored as 8-byte values in the file's data (a non-PIE program's
    /// method tables and function pointers), within `keep`.
    pub fn stored_pointers(&self, keep: impl Fn(u64) -> bool) -> Vec<u64> {
        let mut found = Vec::new();
        for s in self.segments.iter().filter(|s| !s.exec) {
            // Pointers are 8-byte aligned in memory; the segment's start need not be.
            let skip = (8 - s.va % 8) % 8;
            let bytes = self.bytes(s).get(skip as usize..).unwrap_or_default();
            for word in bytes.chunks_exact(8) {
                let value = u64::from_le_bytes(word.try_into().unwrap_or_default());
                if keep(value) && found.len() < MAX_KEPT {
                    found.push(value);
                }
            }
        }
        found
    }
}
