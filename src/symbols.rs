//! Which of the table's functions an ELF file defines, and where: the file offsets that
//! uprobes attach to. Reads both the dynamic and the static symbol table, so statically
//! linked executables are found by what they contain, not by their name.
//!
//! Only the wanted names are looked for, never a whole table built: a file that exports
//! them (a library, node) answers through its dynamic table's GNU hash, one short chain
//! per name; otherwise one pass over the symbol tables rejects almost every name by its
//! first byte. A program held until it is attached waits for this (`follow::hold`):
//! node's 100 MB took 50 ms to search whole, under 0.1 ms through the hash.
//! Go programs are not searched here: their TLS is Go's own (`crate::golang`).

use std::collections::HashMap;

use anyhow::{bail, Result};
use object::elf::{
    FileHeader32, FileHeader64, SHN_UNDEF, SHT_DYNSYM, SHT_SYMTAB, STT_FUNC, STT_GNU_IFUNC,
};
use object::read::elf::{ElfFile, FileHeader, Sym, SymbolTable};
use object::{Endianness, FileKind, Object, ObjectSegment};

/// The wanted function symbols an ELF file defines, by name, with their file offsets.
pub struct Symbols {
    offsets: HashMap<&'static str, u64>,
}

impl Symbols {
    /// Parses an ELF image (usually a memory map: only the pages of the headers and
    /// the symbols looked at are touched) and keeps the symbols named in `wanted`.
    pub fn parse(data: &[u8], wanted: &[&'static str]) -> Result<Self> {
        Self::parse_apart(data, data, wanted)
    }

    /// The symbols of `symbols`, a program's separate debug file, placed in the file
    /// offsets of the program `program` (a debug file keeps addresses, not code).
    pub fn parse_apart(program: &[u8], symbols: &[u8], wanted: &[&'static str]) -> Result<Self> {
        // Uprobes take file offsets; symbols give virtual addresses: map through the
        // loadable segment that holds each address.
        let segments: Vec<(u64, u64, u64)> = object::File::parse(program)?
            .segments()
            .map(|s| (s.address(), s.size(), s.file_range().0))
            .collect();
        // Checked arithmetic: the header values are the file's, and hostile.
        let to_offset = |addr: u64| {
            segments
                .iter()
                .find(|&&(start, size, _)| addr.checked_sub(start).is_some_and(|d| d < size))
                .and_then(|&(start, _, offset)| offset.checked_add(addr - start))
        };
        let found = match FileKind::parse(symbols)? {
            FileKind::Elf64 => defined::<FileHeader64<Endianness>>(symbols, wanted)?,
            FileKind::Elf32 => defined::<FileHeader32<Endianness>>(symbols, wanted)?,
            _ => bail!("not an ELF file"),
        };
        let mut offsets = HashMap::new();
        for (name, addr) in found {
            if let Some(offset) = to_offset(addr) {
                offsets.entry(name).or_insert(offset);
            }
        }
        Ok(Symbols { offsets })
    }

    pub fn offset(&self, name: &str) -> Option<u64> {
        self.offsets.get(name).copied()
    }
}

/// The wanted functions the file defines, with their addresses: those it exports when
/// it exports any, else those of its symbol tables, the dynamic one first.
fn defined<Elf: FileHeader<Endian = Endianness>>(
    data: &[u8],
    wanted: &[&'static str],
) -> Result<Vec<(&'static str, u64)>> {
    let file = ElfFile::<Elf>::parse(data)?;
    let endian = file.endian();
    let sections = file.elf_section_table();
    if let Some(found) = exported(&file, wanted).filter(|f| !f.is_empty()) {
        return Ok(found);
    }
    let mut found = Vec::new();
    for table in [SHT_DYNSYM, SHT_SYMTAB] {
        let symbols = sections.symbols(endian, data, table)?;
        found.extend(scan(&symbols, endian, wanted));
    }
    Ok(found)
}

/// A defined function with an address: what a uprobe can be put on.
fn is_function<Elf: FileHeader>(sym: &Elf::Sym, endian: Elf::Endian) -> bool {
    matches!(sym.st_type(), STT_FUNC | STT_GNU_IFUNC)
        && sym.st_shndx(endian) != SHN_UNDEF
        && sym.st_value(endian).into() != 0
}

/// The wanted functions found through the GNU hash table of the dynamic symbols; None
/// when the file has no such table (or one that cannot be right).
fn exported<Elf: FileHeader<Endian = Endianness>>(
    file: &ElfFile<Elf>,
    wanted: &[&'static str],
) -> Option<Vec<(&'static str, u64)>> {
    let (endian, data) = (file.endian(), file.data());
    let sections = file.elf_section_table();
    let header = sections.gnu_hash_header(endian, data).ok()??;
    // Checked here, as the table's lookup divides by the bucket count and shifts by
    // the bloom shift: a hostile file's zero or oversized values.
    let word_bits = 8 * std::mem::size_of::<Elf::Word>() as u32;
    if header.bucket_count.get(endian) == 0
        || header.bloom_count.get(endian) == 0
        || header.bloom_shift.get(endian) >= word_bits
    {
        return None;
    }
    let (hash, link) = sections.gnu_hash(endian, data).ok()??;
    let symbols = sections.symbol_table_by_index(endian, data, link).ok()?;
    let versions = sections
        .versions(endian, data)
        .ok()
        .flatten()
        .unwrap_or_default();
    let found = wanted.iter().filter_map(|&name| {
        let key = name.as_bytes();
        let hashed = object::elf::gnu_hash(key);
        let (_, sym) = hash.find(endian, key, hashed, None, &symbols, &versions)?;
        is_function::<Elf>(sym, endian).then(|| (name, sym.st_value(endian).into()))
    });
    Some(found.collect())
}

/// One pass over a symbol table for the wanted names. A name is read only when its
/// first byte is one that a wanted name starts with: most names (mangled C++ and Rust,
/// `_`-prefixed) are rejected without finding their end.
fn scan<'a, Elf: FileHeader<Endian = Endianness>>(
    symbols: &'a SymbolTable<'_, Elf>,
    endian: Endianness,
    wanted: &'a [&'static str],
) -> impl Iterator<Item = (&'static str, u64)> + 'a {
    let mut first = [false; 256];
    for name in wanted {
        if let Some(&b) = name.as_bytes().first() {
            first[usize::from(b)] = true;
        }
    }
    let strings = symbols.strings();
    symbols.iter().filter_map(move |sym| {
        if !is_function::<Elf>(sym, endian) {
            return None;
        }
        let head = strings.get(sym.st_name(endian)).ok()?;
        if !head.first().is_some_and(|&b| first[usize::from(b)]) {
            return None;
        }
        // Versioned names (`SSL_read@@OPENSSL_3.0.0`) appear in some tables.
        let bare = head.split(|&b| b == b'@').next().unwrap_or(head);
        let &name = wanted.iter().find(|w| w.as_bytes() == bare)?;
        Some((name, sym.st_value(endian).into()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_only_wanted_functions_in_this_test_binary() {
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let syms = Symbols::parse(&exe, &["main", "no_such_function_anywhere"]).unwrap();
        assert!(syms.offset("main").is_some());
        assert!(syms.offset("no_such_function_anywhere").is_none());
        assert_eq!(syms.offsets.len(), 1, "only wanted names are kept");
    }

    const LIBS: &str = "/usr/lib/x86_64-linux-gnu";

    fn all_names() -> Vec<&'static str> {
        crate::libs::all_funcs().map(|(_, _, f)| f.name).collect()
    }

    fn found(data: &[u8]) -> Vec<(&'static str, u64)> {
        let syms = Symbols::parse(data, &all_names()).unwrap();
        let mut found: Vec<_> = syms.offsets.into_iter().collect();
        found.sort();
        found
    }

    #[test]
    fn exports_found_through_the_hash_are_those_a_whole_scan_finds() {
        for lib in ["libssl.so.3", "libgnutls.so.30", "libnspr4.so"] {
            let data = std::fs::read(format!("{LIBS}/{lib}")).unwrap();
            let file = ElfFile::<FileHeader64<Endianness>>::parse(&*data).unwrap();
            let mut hashed = exported(&file, &all_names()).unwrap();
            hashed.sort();
            let dynsym = file
                .elf_section_table()
                .symbols(file.endian(), &*data, SHT_DYNSYM)
                .unwrap();
            let mut scanned: Vec<_> = scan(&dynsym, file.endian(), &all_names()).collect();
            scanned.sort();
            scanned.dedup();
            assert!(!hashed.is_empty(), "{lib}");
            assert_eq!(hashed, scanned, "{lib}");
        }
    }

    #[test]
    fn a_hash_table_that_cannot_be_right_is_passed_over() {
        let data = std::fs::read(format!("{LIBS}/libssl.so.3")).unwrap();
        let file = object::File::parse(&*data).unwrap();
        let (at, _) = object::ObjectSection::file_range(
            &object::Object::section_by_name(&file, ".gnu.hash").unwrap(),
        )
        .unwrap();
        let want = found(&data);
        // nbuckets, symoffset, bloom_size, bloom_shift: each made impossible in turn.
        for (field, value) in [(0, 0u32), (2, 0), (3, 64), (3, u32::MAX)] {
            let mut broken = data.clone();
            let at = at as usize + 4 * field;
            broken[at..at + 4].copy_from_slice(&value.to_le_bytes());
            assert_eq!(found(&broken), want, "field {field} = {value}");
        }
    }

    #[test]
    fn rejects_non_elf() {
        assert!(Symbols::parse(b"not an elf file", &["main"]).is_err());
        assert!(Symbols::parse(&[0; 4096], &["main"]).is_err());
    }
}
