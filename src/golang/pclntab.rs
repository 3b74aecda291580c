//! Go's function table, `.gopclntab`: every function's entry and name, kept in stripped
//! (`-s -w`) and PIE builds because the runtime needs it for stack traces. Layouts:
//! Go 1.16-1.17 (magic 0xfffffffa, absolute entries), 1.18-1.19 (0xfffffff0, entries as
//! 32-bit offsets from the text start) and 1.20+ (0xfffffff1, same fields as 1.18 for
//! what is read here; from 1.26 the header's text start is zero and the function names
//! follow the header without padding). Every read is bounds-checked: the table comes from a traced file.

use object::{Object, ObjectSection};

use super::buildinfo::{u64_at, uvarint};
use super::image::Image;
use super::{malformed, moduledata, GoError};

const MAGIC_116: u32 = 0xffff_fffa;
const MAGIC_118: u32 = 0xffff_fff0;
const MAGIC_120: u32 = 0xffff_fff1;
/// Section names: plain builds, and PIE builds by Go's internal linker.
pub const SECTIONS: &[&str] = &[".gopclntab", ".data.rel.ro.gopclntab"];
/// Headers that look right but whose table does not hold together, tried before giving up.
const MAX_CANDIDATES: usize = 16;

/// `(entry, end)` virtual addresses of a function, end exclusive.
pub type Span = (u64, u64);

/// The value a load-time relocation writes at a virtual address, if the file has one.
pub type Relocated<'r> = &'r dyn Fn(u64) -> Option<u64>;

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
/// 1.`minor` program.
pub fn lookup<'a>(
    file: &object::File<'a>,
    image: &Image<'a>,
    quantum: u8,
    minor: u32,
    relocated: Relocated,
    names: &[&str],
) -> Result<Vec<Option<Span>>, GoError> {
    let magic = match minor {
        ..=17 => MAGIC_116,
        18 | 19 => MAGIC_118,
        _ => MAGIC_120,
    };
    let parse = |data: &'a [u8], vaddr| {
        let text = Table::text_start(data, vaddr, relocated).or_else(|| {
            moduledata::text(image, vaddr, vaddr.checked_add(u64_at(data, FUNCNAMES)?)?)
        });
        Table::parse(data, magic, quantum, text)?.lookup(names)
    };
    if let Some(section) = SECTIONS.iter().find_map(|name| file.section_by_name(name)) {
        let data = section
            .data()
            .map_err(|_| malformed("Go function table section out of bounds"))?;
        return parse(data, section.address());
    }
    // Other linkers (external linking, PIE) merge it into a bigger section, or the
    // section headers are gone: look for the header in the data segments.
    let mut last = malformed("no Go function table (.gopclntab)");
    let mut head = magic.to_le_bytes().to_vec();
    head.extend([0, 0, quantum, 8]);
    let candidates = image.data_segments().flat_map(|(vaddr, segment)| {
        (0..segment.len())
            .step_by(8)
            .map(move |at| (&segment[at..], vaddr.wrapping_add(at as u64)))
            .filter(|(rest, _)| rest.starts_with(&head))
    });
    for (candidate, vaddr) in candidates.take(MAX_CANDIDATES) {
        match parse(candidate, vaddr) {
            Ok(found) => return Ok(found),
            Err(err) => last = err,
        }
    }
    Err(last)
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
    /// The 1.18+ text start: as written in the file, or, where the linker left the field
    /// to a load-time relocation (PIE by some linkers), the value that relocation writes.
    /// Go 1.26 leaves it zero, and the module data says it instead ([`moduledata::text`]).
    /// Never the `.text` address: external linkers put C runtime code before Go's text.
    fn text_start(data: &[u8], vaddr: u64, relocated: Relocated) -> Option<u64> {
        match u64_at(data, TEXT_START)? {
            0 => relocated(vaddr.checked_add(TEXT_START as u64)?),
            start => Some(start),
        }
    }

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

    /// One pass over the table, checking it is sorted, matching `names`.
    fn lookup(&self, names: &[&str]) -> Result<Vec<Option<Span>>, GoError> {
        let mut found = vec![None; names.len()];
        let mut next = self.entry(0)?;
        for i in 0..self.nfunc {
            let entry = next;
            next = self.entry(i + 1)?;
            if next < entry {
                return Err(malformed("Go function table out of order"));
            }
            let func = self.func(i)?;
            let Some(k) = names.iter().position(|name| self.is_named(func, name)) else {
                continue;
            };
            if self.func_entry(func)? != entry {
                return Err(malformed(format!("{}: entry disagrees", names[k])));
            }
            // The stack-pointer table covers the function's own bytes, which ends it
            // before the alignment padding up to the next function.
            let end = match self.pcsp_len(func)? {
                Some(len) => entry.checked_add(len).filter(|&end| end <= next),
                None => Some(next),
            };
            let end = end.ok_or_else(|| malformed(format!("{}: runs past its end", names[k])))?;
            found[k] = Some((entry, end));
        }
        Ok(found)
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

    fn is_named(&self, func: usize, name: &str) -> bool {
        let Some(off) = u32_at(self.data, func + self.field(4)) else {
            return false;
        };
        let start = self.funcnames.saturating_add(off as usize);
        let stored = start
            .checked_add(name.len())
            .and_then(|end| self.data.get(start..=end));
        stored.is_some_and(|s| s[..name.len()] == *name.as_bytes() && s[name.len()] == 0)
    }

    /// The function's size from its stack-pointer table (pc-value pairs: zigzag value
    /// delta, then pc delta in quanta, until a zero value delta); `None` without one.
    fn pcsp_len(&self, func: usize) -> Result<Option<u64>, GoError> {
        let pcsp = u32_at(self.data, func + self.field(16)).ok_or_else(cut)? as usize;
        if pcsp == 0 {
            return Ok(None);
        }
        let start = self.pctab.checked_add(pcsp).ok_or_else(cut)?;
        let mut rest = self.data.get(start..).ok_or_else(cut)?;
        let mut pc = 0u64;
        let mut first = true;
        loop {
            let (value, used) = uvarint(rest).ok_or_else(cut)?;
            if value == 0 && !first {
                return Ok(Some(pc));
            }
            first = false;
            let (delta, more) = uvarint(&rest[used..]).ok_or_else(cut)?;
            rest = &rest[used + more..];
            pc = delta
                .checked_mul(self.quantum)
                .and_then(|d| pc.checked_add(d))
                .ok_or_else(cut)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: u64 = 0x40_1000;

    /// A table of `funcs` (name, entry offset from TEXT, pcsp size or 0 for none),
    /// ending at `end`, in `layout`.
    fn table(layout: Layout, funcs: &[(&str, u32, u8)], end: u32) -> Vec<u8> {
        let (magic, words, field) = match layout {
            Layout::Go116 => (MAGIC_116, 7, 8),
            Layout::Go118 => (MAGIC_118, 8, 4),
        };
        let mut names = Vec::new();
        let mut pcsp = vec![0xff]; // offset 0 means "no table"
        let mut records = Vec::new();
        for &(name, entry, size) in funcs {
            let mut record = match layout {
                Layout::Go116 => (TEXT + u64::from(entry)).to_le_bytes().to_vec(),
                Layout::Go118 => entry.to_le_bytes().to_vec(),
            };
            record.extend((names.len() as u32).to_le_bytes());
            record.extend([0; 8]); // args, deferreturn
            let at = if size == 0 { 0 } else { pcsp.len() as u32 };
            record.extend(at.to_le_bytes());
            records.push(record);
            names.extend(name.as_bytes());
            names.push(0);
            if size != 0 {
                pcsp.extend([2, size, 0]); // value +1 over `size` bytes, then the end
            }
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

    fn find(data: &[u8], layout: Layout, names: &[&str]) -> Result<Vec<Option<Span>>, GoError> {
        let magic = if layout == Layout::Go116 {
            MAGIC_116
        } else {
            MAGIC_118
        };
        Table::parse(data, magic, 1, Some(TEXT))?.lookup(names)
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
        assert_eq!(Table::text_start(&data, 0x1000, &|_| None), Some(TEXT));
        data[TEXT_START..TEXT_START + 8].fill(0);
        let relocation = |at| (at == 0x1000 + TEXT_START as u64).then_some(TEXT);
        assert_eq!(Table::text_start(&data, 0x1000, &relocation), Some(TEXT));
        assert_eq!(Table::text_start(&data, 0x2000, &relocation), None);
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
