//! Go's function table, `.gopclntab`: every function's entry and name, kept in stripped
//! (`-s -w`) and PIE builds because the runtime needs it for stack traces. Layouts:
//! Go 1.16-1.17 (magic 0xfffffffa, absolute entries), 1.18-1.19 (0xfffffff0, entries as
//! 32-bit offsets from the text start) and 1.20+ (0xfffffff1, same fields as 1.18 for
//! what is read here; from 1.26 the header's text start is zero and the function names
//! follow the header without padding). Every read is bounds-checked: the table comes
//! from a traced file.
//!
//! The work is bounded too: the search for a table without a section reads each file
//! byte once, whatever the segments covering it; at most MAX_CANDIDATES tables are tried
//! and MAX_FUNCS functions looked at in all; only the first function of each wanted
//! name has its stack-pointer table read, for no more than the function's extent.

use object::{Object, ObjectSection};

use super::buildinfo::{u64_at, uvarint};
use super::image::Image;
use super::{malformed, moduledata, GoError};

const MAGIC_116: u32 = 0xffff_fffa;
const MAGIC_118: u32 = 0xffff_fff0;
const MAGIC_120: u32 = 0xffff_fff1;
/// Section names: plain builds, and PIE builds by Go's internal linker.
pub const SECTIONS: &[&str] = &[".gopclntab", ".data.rel.ro.gopclntab"];
/// Headers that look right but whose table does not hold together, tried before giving
/// up: real programs have one table, and a stray match of its 8-byte header is rare.
const MAX_CANDIDATES: usize = 4;
/// Functions looked at, over all the tables tried. The largest of nine real Go programs
/// of 2 to 127 MB (Go 1.19 to 1.25) has 138,445; this is that density at 3.7 GB, more
/// than the largest file read (discover/file.rs).
pub const MAX_FUNCS: usize = 4 << 20;

/// `(entry, end)` virtual addresses of a function, end exclusive.
pub type Span = (u64, u64);

/// The values that load-time relocations write at virtual addresses, where the file has
/// them: one pass over the relocations, whatever the number of addresses.
pub type Relocated<'r> = &'r dyn Fn(&[u64]) -> Vec<Option<u64>>;

/// Where the text start and the offset of the function names sit in the 1.18+ header.
const TEXT_START: usize = 24;
const FUNCNAMES: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// Go 1.16-1.17.
    Go116,
    /// Go 1.18 and later.
    Go118,
}

pub struct Table<'a> {
    data: &'a [u8],
    layout: Layout,
    quantum: u64,
    nfunc: usize,
    text_start: u64,
    funcnames: usize,
    pctab: usize,
    functab: usize,
}

/// The spans of `names` (`None` for those the program lacks), from the table of a Go
/// 1.`minor` program; a span is at most `max_span` bytes long.
pub fn lookup(
    file: &object::File,
    image: &Image,
    quantum: u8,
    minor: u32,
    relocated: Relocated,
    names: &[&str],
    max_span: u64,
) -> Result<Vec<Option<Span>>, GoError> {
    let magic = magic_of(minor);
    let candidates = candidates(file, image, magic, quantum)?;
    let starts = text_starts(&candidates, relocated);
    let mut budget = MAX_FUNCS;
    let mut last = malformed("no Go function table (.gopclntab)");
    for ((data, vaddr), text) in candidates.into_iter().zip(starts) {
        // A pass over the writable data each: only for the releases that need it.
        let text = text.or_else(|| {
            let names = vaddr.checked_add(u64_at(data, FUNCNAMES)?)?;
            (minor >= 26).then(|| moduledata::text(image, vaddr, names))?
        });
        let table = Table::parse(data, magic, quantum, text);
        match table.and_then(|t| t.lookup(names, max_span, &mut budget)) {
            Ok(found) => return Ok(found),
            Err(err) => last = err,
        }
    }
    Err(last)
}

fn magic_of(minor: u32) -> u32 {
    match minor {
        ..=17 => MAGIC_116,
        18 | 19 => MAGIC_118,
        _ => MAGIC_120,
    }
}

/// The table's section, or the places in the data where a table's header is.
fn candidates<'a>(
    file: &object::File<'a>,
    image: &'a Image,
    magic: u32,
    quantum: u8,
) -> Result<Vec<(&'a [u8], u64)>, GoError> {
    match SECTIONS.iter().find_map(|name| file.section_by_name(name)) {
        Some(section) => {
            let data = section
                .data()
                .map_err(|_| malformed("Go function table section out of bounds"))?;
            Ok(vec![(data, section.address())])
        }
        // Other linkers (external linking, PIE) merge it into a bigger section, or the
        // section headers are gone: look for the header in the data segments.
        None => Ok(headers(image, magic, quantum)
            .take(MAX_CANDIDATES)
            .collect()),
    }
}

/// Where a table header (magic, then 0, 0, quantum, 8) starts in the data segments, with
/// its address: every 8-byte-aligned file offset once, however many segments cover it.
fn headers<'a>(
    image: &'a Image,
    magic: u32,
    quantum: u8,
) -> impl Iterator<Item = (&'a [u8], u64)> + 'a {
    let mut head = [0; 8];
    head[..4].copy_from_slice(&magic.to_le_bytes());
    head[6] = quantum;
    head[7] = 8;
    image
        .data_once()
        .into_iter()
        .flat_map(move |(offset, bytes)| {
            let skip = ((8 - offset % 8) % 8) as usize;
            let aligned = bytes.get(skip..).unwrap_or_default();
            aligned
                .chunks_exact(8)
                .enumerate()
                .filter(move |(_, word)| *word == head)
                .filter_map(move |(i, _)| {
                    let at = skip + 8 * i;
                    let vaddr = image.data_address(offset + at as u64)?;
                    Some((&bytes[at..], vaddr))
                })
        })
}

/// Each candidate's 1.18+ text start: as written in the table, or, where the linker left
/// the field to a load-time relocation (PIE by some linkers), the value that relocation
/// writes. Go 1.26 leaves it zero, and the module data says it instead (`lookup` asks
/// [`moduledata::text`]). Never the `.text` address: external linkers put C runtime code
/// before Go's text.
fn text_starts(candidates: &[(&[u8], u64)], relocated: Relocated) -> Vec<Option<u64>> {
    let unwritten: Vec<u64> = candidates
        .iter()
        .filter(|(data, _)| u64_at(data, TEXT_START) == Some(0))
        .filter_map(|(_, vaddr)| vaddr.checked_add(TEXT_START as u64))
        .collect();
    let written = if unwritten.is_empty() {
        Vec::new()
    } else {
        relocated(&unwritten)
    };
    candidates
        .iter()
        .map(|&(data, vaddr)| match u64_at(data, TEXT_START)? {
            0 => {
                let field = vaddr.checked_add(TEXT_START as u64)?;
                let i = unwritten.iter().position(|&at| at == field)?;
                written.get(i).copied().flatten()
            }
            start => Some(start),
        })
        .collect()
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    let bytes = data.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

fn usize_at(data: &[u8], at: usize) -> Option<usize> {
    usize::try_from(u64_at(data, at)?).ok()
}

fn cut() -> GoError {
    malformed("Go function table cut short or pointing outside itself")
}

impl<'a> Table<'a> {
    /// Checks the header: magic, instruction size, 8-byte pointers, sub-tables in order
    /// and inside `data`, the function table whole. `text` is the 1.18+ text start.
    fn parse(data: &'a [u8], magic: u32, quantum: u8, text: Option<u64>) -> Result<Self, GoError> {
        let head = data.get(..8).ok_or_else(cut)?;
        if u32_at(head, 0) != Some(magic) || head[4..8] != [0, 0, quantum, 8] {
            return Err(malformed(format!(
                "Go function table header is not the expected {magic:#x}, quantum {quantum}"
            )));
        }
        let layout = if magic == MAGIC_116 {
            Layout::Go116
        } else {
            Layout::Go118
        };
        let word = |i: usize| usize_at(data, 8 + 8 * i).ok_or_else(cut);
        let nfunc = word(0)?;
        let first = match layout {
            Layout::Go116 => 2,
            Layout::Go118 => 3,
        };
        let offsets = [
            word(first)?,
            word(first + 1)?,
            word(first + 2)?,
            word(first + 3)?,
        ];
        let functab = word(first + 4)?;
        let ordered = offsets.windows(2).all(|w| w[0] <= w[1]) && offsets[3] <= functab;
        let field = if layout == Layout::Go116 { 8 } else { 4 };
        let functab_end = nfunc
            .checked_mul(2)
            .and_then(|n| n.checked_add(1)?.checked_mul(field)?.checked_add(functab));
        if nfunc == 0 || !ordered || functab_end.is_none_or(|end| end > data.len()) {
            return Err(cut());
        }
        if nfunc > MAX_FUNCS {
            return Err(malformed(format!(
                "Go function table of {nfunc} functions, more than the {MAX_FUNCS} read"
            )));
        }
        let text_start = match layout {
            Layout::Go116 => 0,
            Layout::Go118 => {
                text.ok_or_else(|| malformed("Go function table without text start"))?
            }
        };
        Ok(Table {
            data,
            layout,
            quantum: u64::from(quantum),
            nfunc,
            text_start,
            funcnames: offsets[0],
            pctab: offsets[3],
            functab,
        })
    }

    /// One pass over the table, checking it is sorted, matching `names`: the first
    /// function of each name counts. Each function looked at takes one from `budget`;
    /// a span longer than `max_span` is an error.
    fn lookup(
        &self,
        names: &[&str],
        max_span: u64,
        budget: &mut usize,
    ) -> Result<Vec<Option<Span>>, GoError> {
        if self.nfunc > *budget {
            return Err(malformed("Go function tables too long to read them all"));
        }
        *budget -= self.nfunc;
        let mut found = vec![None; names.len()];
        let mut next = self.entry(0)?;
        for i in 0..self.nfunc {
            let entry = next;
            next = self.entry(i + 1)?;
            if next < entry {
                return Err(malformed("Go function table out of order"));
            }
            let func = self.func(i)?;
            let Some(k) = self.named(func, names) else {
                continue;
            };
            if found[k].is_some() {
                continue;
            }
            if self.func_entry(func)? != entry {
                return Err(malformed(format!("{}: entry disagrees", names[k])));
            }
            found[k] = Some((entry, self.end(names[k], func, entry, next, max_span)?));
        }
        Ok(found)
    }

    /// Where the function at `entry` ends: its stack-pointer table covers its own bytes,
    /// which ends it before the alignment padding up to the next function (at `next`).
    fn end(
        &self,
        name: &str,
        func: usize,
        entry: u64,
        next: u64,
        max: u64,
    ) -> Result<u64, GoError> {
        let span = next - entry;
        if span > max {
            return Err(malformed(format!(
                "{name}: {span} bytes long, more than the {max} a Go function may be"
            )));
        }
        let end = match self.pcsp_len(func, span)? {
            Some(len) => entry.checked_add(len).filter(|&end| end <= next),
            None => Some(next),
        };
        end.ok_or_else(|| malformed(format!("{name}: runs past its end")))
    }

    /// Entry `i` of the function table (`i == nfunc` is the end of the text).
    fn entry(&self, i: usize) -> Result<u64, GoError> {
        let entry = match self.layout {
            Layout::Go116 => u64_at(self.data, self.functab + 16 * i),
            Layout::Go118 => u32_at(self.data, self.functab + 8 * i)
                .and_then(|off| self.text_start.checked_add(u64::from(off))),
        };
        entry.ok_or_else(cut)
    }

    /// The offset in `data` of function `i`'s record (`_func`).
    fn func(&self, i: usize) -> Result<usize, GoError> {
        let off = match self.layout {
            Layout::Go116 => usize_at(self.data, self.functab + 16 * i + 8),
            Layout::Go118 => u32_at(self.data, self.functab + 8 * i + 4).map(|o| o as usize),
        };
        off.and_then(|off| off.checked_add(self.functab))
            .filter(|&at| at < self.data.len())
            .ok_or_else(cut)
    }

    fn func_entry(&self, func: usize) -> Result<u64, GoError> {
        let entry = match self.layout {
            Layout::Go116 => u64_at(self.data, func),
            Layout::Go118 => {
                u32_at(self.data, func).and_then(|off| self.text_start.checked_add(u64::from(off)))
            }
        };
        entry.ok_or_else(cut)
    }

    /// Offsets of `nameOff` and `pcsp` in `_func` (after a pointer-sized entry in 1.16).
    fn field(&self, field: usize) -> usize {
        match self.layout {
            Layout::Go116 => field + 4,
            Layout::Go118 => field,
        }
    }

    /// Which of `names` function `func` has, comparing in place: a name is never read
    /// further than the one it is compared with.
    fn named(&self, func: usize, names: &[&str]) -> Option<usize> {
        let off = u32_at(self.data, func + self.field(4))?;
        let start = self.funcnames.checked_add(off as usize)?;
        let stored = self.data.get(start..)?;
        names.iter().position(|name| {
            stored
                .get(..=name.len())
                .is_some_and(|s| s[..name.len()] == *name.as_bytes() && s[name.len()] == 0)
        })
    }

    /// The function's size from its stack-pointer table (pc-value pairs: zigzag value
    /// delta, then pc delta in quanta, until a zero value delta); `None` without one.
    /// A real table has a pair per stack change, each covering at least one instruction:
    /// one that goes on past `span` bytes, or has more pairs than quanta in it, is cut.
    fn pcsp_len(&self, func: usize, span: u64) -> Result<Option<u64>, GoError> {
        let pcsp = u32_at(self.data, func + self.field(16)).ok_or_else(cut)? as usize;
        if pcsp == 0 {
            return Ok(None);
        }
        let start = self.pctab.checked_add(pcsp).ok_or_else(cut)?;
        let mut rest = self.data.get(start..).ok_or_else(cut)?;
        let mut pc = 0u64;
        for pair in 0..=span / self.quantum + 1 {
            let (value, used) = uvarint(rest).ok_or_else(cut)?;
            if value == 0 && pair > 0 {
                return Ok(Some(pc));
            }
            let (delta, more) = uvarint(&rest[used..]).ok_or_else(cut)?;
            rest = &rest[used + more..];
            pc = delta
                .checked_mul(self.quantum)
                .and_then(|d| pc.checked_add(d))
                .ok_or_else(cut)?;
            if pc > span {
                return Ok(Some(pc));
            }
        }
        Err(cut())
    }
}

/// Tables made to order, for the tests and the fuzzers.
#[cfg(test)]
pub(super) mod testing {
    use super::*;

    /// Where the tables' text starts (`hostile::TEXT`).
    pub const TEXT: u64 = 0x40_1000;

    /// A table of `funcs` (name, entry offset from TEXT, pcsp size or 0 for none),
    /// ending at `end`, in `layout`.
    pub(super) fn table(layout: Layout, funcs: &[(&str, u32, u8)], end: u32) -> Vec<u8> {
        table_with(layout, funcs, end, |size| vec![2, size, 0])
    }

    /// A table whose functions' stack-pointer tables `pcsp` makes from their sizes; equal
    /// tables are stored once and shared.
    pub(super) fn table_with(
        layout: Layout,
        funcs: &[(&str, u32, u8)],
        end: u32,
        pcsp_of: impl Fn(u8) -> Vec<u8>,
    ) -> Vec<u8> {
        let (magic, words, field) = match layout {
            Layout::Go116 => (MAGIC_116, 7, 8),
            Layout::Go118 => (MAGIC_118, 8, 4),
        };
        let mut names = Vec::new();
        let mut pcsp = vec![0xff]; // offset 0 means "no table"
        let mut stored = std::collections::HashMap::new();
        let mut records = Vec::new();
        for &(name, entry, size) in funcs {
            let mut record = match layout {
                Layout::Go116 => (TEXT + u64::from(entry)).to_le_bytes().to_vec(),
                Layout::Go118 => entry.to_le_bytes().to_vec(),
            };
            record.extend((names.len() as u32).to_le_bytes());
            record.extend([0; 8]); // args, deferreturn
            let at = if size == 0 {
                0
            } else {
                *stored.entry(pcsp_of(size)).or_insert_with_key(|bytes| {
                    pcsp.extend(bytes);
                    (pcsp.len() - bytes.len()) as u32
                })
            };
            record.extend(at.to_le_bytes());
            records.push(record);
            names.extend(name.as_bytes());
            names.push(0);
        }
        let funcnames = 8 + 8 * words;
        let pctab = funcnames + names.len();
        let functab = pctab + pcsp.len();
        let mut header = magic.to_le_bytes().to_vec();
        header.extend([0, 0, 1, 8]);
        let mut fields = vec![funcs.len(), 0];
        if layout == Layout::Go118 {
            fields.push(TEXT as usize);
        }
        fields.extend([funcnames, pctab, pctab, pctab, functab]);
        header.extend(fields.iter().flat_map(|f| (*f as u64).to_le_bytes()));
        let mut ftab = Vec::new();
        let mut record_at = (2 * funcs.len() + 1) * field;
        for (&(_, entry, _), record) in funcs.iter().zip(&records) {
            ftab.extend(entry_bytes(layout, entry));
            ftab.extend(match layout {
                Layout::Go116 => (record_at as u64).to_le_bytes().to_vec(),
                Layout::Go118 => (record_at as u32).to_le_bytes().to_vec(),
            });
            record_at += record.len();
        }
        ftab.extend(entry_bytes(layout, end));
        [header, names, pcsp, ftab, records.concat()].concat()
    }

    fn entry_bytes(layout: Layout, entry: u32) -> Vec<u8> {
        match layout {
            Layout::Go116 => (TEXT + u64::from(entry)).to_le_bytes().to_vec(),
            Layout::Go118 => entry.to_le_bytes().to_vec(),
        }
    }

    /// Every function of an x86-64 Go 1.`minor` program's table, with its span, for
    /// measuring real programs (a written text start only).
    pub fn every_function(file: &object::File, image: &Image, minor: u32) -> Vec<(String, Span)> {
        let magic = magic_of(minor);
        let candidates = candidates(file, image, magic, 1).unwrap_or_default();
        let starts = text_starts(&candidates, &|at: &[u64]| vec![None; at.len()]);
        let mut tables = candidates
            .iter()
            .zip(starts)
            .filter_map(|(&(data, _), text)| Table::parse(data, magic, 1, text).ok());
        let Some(t) = tables.next() else {
            return Vec::new();
        };
        let name = |func: usize| {
            let at = t.funcnames + u32_at(t.data, func + t.field(4))? as usize;
            let stored = t.data.get(at..)?;
            let end = stored.iter().position(|&b| b == 0)?;
            Some(String::from_utf8_lossy(&stored[..end]).into_owned())
        };
        (0..t.nfunc)
            .filter_map(|i| {
                let (entry, next, func) = (t.entry(i).ok()?, t.entry(i + 1).ok()?, t.func(i).ok()?);
                let len = t.pcsp_len(func, next.checked_sub(entry)?).ok()?;
                Some((name(func)?, (entry, len.map_or(next, |len| entry + len))))
            })
            .collect()
    }

    /// A table in the layout and with the magic of Go 1.`minor`.
    pub fn for_release(minor: u32, funcs: &[(&str, u32, u8)], end: u32) -> Vec<u8> {
        let layout = if minor < 18 {
            Layout::Go116
        } else {
            Layout::Go118
        };
        let mut data = table(layout, funcs, end);
        if minor >= 20 {
            data[..4].copy_from_slice(&MAGIC_120.to_le_bytes());
        }
        data
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{table, table_with, TEXT};
    use super::*;

    fn find(data: &[u8], layout: Layout, names: &[&str]) -> Result<Vec<Option<Span>>, GoError> {
        let magic = if layout == Layout::Go116 {
            MAGIC_116
        } else {
            MAGIC_118
        };
        Table::parse(data, magic, 1, Some(TEXT))?.lookup(names, 1 << 20, &mut MAX_FUNCS.clone())
    }

    const FUNCS: &[(&str, u32, u8)] = &[
        ("a", 0, 20),
        ("crypto/tls.(*Conn).Read", 32, 0),
        ("b", 64, 9),
    ];

    #[test]
    fn finds_spans_in_both_layouts() {
        for layout in [Layout::Go116, Layout::Go118] {
            let data = table(layout, FUNCS, 96);
            let found = find(
                &data,
                layout,
                &["b", "crypto/tls.(*Conn).Read", "crypto/tls", "c"],
            );
            let want = vec![
                Some((TEXT + 64, TEXT + 73)),
                Some((TEXT + 32, TEXT + 64)),
                None,
                None,
            ];
            assert_eq!(found, Ok(want), "{layout:?}");
        }
    }

    #[test]
    fn refuses_disorder_overlong_functions_and_mismatched_entries() {
        for layout in [Layout::Go116, Layout::Go118] {
            let disorder = table(layout, &[("a", 32, 0), ("b", 0, 0)], 64);
            assert!(find(&disorder, layout, &["b"]).is_err(), "{layout:?}");
            let overlong = table(layout, &[("a", 0, 40), ("b", 32, 0)], 64);
            assert!(find(&overlong, layout, &["a"]).is_err(), "{layout:?}");
            // Not looked for, not checked: only the names asked for pay for checks.
            assert!(find(&overlong, layout, &["b"]).is_ok(), "{layout:?}");
        }
        let mut moved = table(Layout::Go118, FUNCS, 96);
        let len = moved.len();
        moved[len - 20..len - 16].copy_from_slice(&65u32.to_le_bytes()); // "b"'s own entry
        assert!(find(&moved, Layout::Go118, &["b"]).is_err());
    }

    /// Before: every function of a wanted name had its stack-pointer table read to its
    /// end (10,000 of them here, each 100,000 pairs long: a billion pairs).
    #[test]
    fn reads_one_function_of_a_name_and_no_more_pairs_than_its_bytes() {
        const READ: &str = "crypto/tls.(*Conn).Read";
        let funcs: Vec<(&str, u32, u8)> = (0..10_000).map(|i| (READ, i * 32, 20)).collect();
        // A pair per byte, then 100,000 pairs that cover nothing.
        let long = |size| {
            let mut pairs = vec![2, 1];
            pairs.extend([2, 0].repeat(100_000));
            pairs.extend([2, size - 1, 0]);
            pairs
        };
        let data = table_with(Layout::Go118, &funcs, 10_000 * 32, long);
        let (found, took) = crate::hostile::timed(|| find(&data, Layout::Go118, &[READ]));
        assert_eq!(found, Err(cut()));
        assert!(took < crate::hostile::release_ms(5), "{took:?}");
        let data = table(Layout::Go118, &funcs, 10_000 * 32);
        assert_eq!(
            find(&data, Layout::Go118, &[READ]),
            Ok(vec![Some((TEXT, TEXT + 20))])
        );
    }

    #[test]
    fn refuses_more_functions_than_are_read() {
        let mut data = table(Layout::Go118, FUNCS, 96);
        data[8..16].copy_from_slice(&(MAX_FUNCS as u64 + 1).to_le_bytes());
        // Room for the function table the header claims.
        data.resize(data.len() + 8 * (MAX_FUNCS + 2), 0);
        let refused = Table::parse(&data, MAGIC_118, 1, Some(TEXT)).map(|_| ());
        let want = format!(
            "Go function table of {} functions, more than",
            MAX_FUNCS + 1
        );
        assert!(matches!(refused, Err(GoError::Malformed(m)) if m.starts_with(&want)));
    }

    #[test]
    fn resolves_every_unwritten_text_start_in_one_pass() {
        let mut data = table(Layout::Go118, FUNCS, 96);
        data[TEXT_START..TEXT_START + 8].fill(0);
        let passes = std::cell::Cell::new(0);
        let relocation = |at: &[u64]| {
            passes.set(passes.get() + 1);
            at.iter().map(|_| Some(TEXT)).collect()
        };
        let four: Vec<(&[u8], u64)> = (0..4).map(|i| (&data[..], 0x1000 * i)).collect();
        assert_eq!(text_starts(&four, &relocation), [Some(TEXT); 4]);
        assert_eq!(passes.get(), 1);
    }

    #[test]
    fn refuses_wrong_headers() {
        let data = table(Layout::Go118, FUNCS, 96);
        assert!(Table::parse(&data, MAGIC_120, 1, Some(TEXT)).is_err());
        assert!(Table::parse(&data, MAGIC_118, 4, Some(TEXT)).is_err());
        assert!(Table::parse(&data, MAGIC_118, 1, None).is_err());
    }

    #[test]
    fn takes_an_unwritten_text_start_from_its_relocation() {
        let mut data = table(Layout::Go118, FUNCS, 96);
        let none = |at: &[u64]| vec![None; at.len()];
        assert_eq!(text_starts(&[(&data, 0x1000)], &none), [Some(TEXT)]);
        data[TEXT_START..TEXT_START + 8].fill(0);
        let field = 0x1000 + TEXT_START as u64;
        let relocation = |at: &[u64]| at.iter().map(|&a| (a == field).then_some(TEXT)).collect();
        let both = [(&data[..], 0x1000), (&data[..], 0x2000)];
        assert_eq!(text_starts(&both, &relocation), [Some(TEXT), None]);
    }

    #[test]
    fn never_panics_on_cut_or_flipped_tables() {
        for layout in [Layout::Go116, Layout::Go118] {
            let data = table(layout, FUNCS, 96);
            for len in 0..data.len() {
                let _ = find(&data[..len], layout, &["b", "a"]);
            }
            for at in 0..data.len() {
                for bit in 0..8 {
                    let mut flipped = data.clone();
                    flipped[at] ^= 1 << bit;
                    let _ = find(&flipped, layout, &["b", "a", "crypto/tls.(*Conn).Read"]);
                }
            }
        }
    }
}
