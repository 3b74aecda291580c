//! Which of the table's functions an ELF file defines, and where: the file offsets that
//! uprobes attach to. Reads both the dynamic and the static symbol table, so statically
//! linked executables are found by what they contain, not by their name.
//!
//! The file is hostile: every bound here keeps the work linear in its size with a small
//! constant (docs/hostile-input.md). Its headers are checked before anything else reads
//! them (`open`); each symbol costs a type check and a comparison of its name in place,
//! never read further than the longest wanted name (a string table whose strings have no
//! end costs nothing); addresses become file offsets only for wanted names, once per
//! name and table.

use std::collections::HashMap;

use anyhow::{bail, Result};
use object::elf::{SHN_UNDEF, SHT_DYNSYM, SHT_SYMTAB, STT_FUNC, STT_GNU_IFUNC};
use object::read::elf::{ElfFile, FileHeader, SectionHeader, Sym};
use object::{Endianness, FileKind, Object, ObjectSegment};

/// Program headers a file may have. Executables and libraries have a dozen (at most 14
/// in each of the 3,142 ELF files under this machine's /usr); the kernel runs no program
/// with more than 73 (they must fit in a page).
pub const MAX_SEGMENTS: usize = 256;
/// Section headers a file may have: at most 74 in the same files (debug-info files).
pub const MAX_SECTIONS: usize = 4096;
/// The longest section name: real ones are a few dozen bytes. Looking a section up by
/// name reads each section's name, so this bounds a lookup to MAX_SECTIONS times it.
pub const MAX_SECTION_NAME: usize = 256;
/// The section name table's size: each section's name, at most MAX_SECTION_NAME bytes
/// and its NUL, fits.
pub const MAX_SECTION_NAMES: usize = MAX_SECTIONS * (MAX_SECTION_NAME + 1);
/// Entries a symbol table may have. The largest here, libLLVM's (190 MB), has 258,578;
/// each entry costs about 10 ns when every one bears a wanted name.
pub const MAX_SYMBOLS: u64 = 4 << 20;

/// The wanted function symbols an ELF file defines, by name, with their file offsets.
pub struct Symbols {
    offsets: HashMap<&'static str, u64>,
}

impl Symbols {
    /// Parses an ELF image (usually a memory map: only the pages of the headers and
    /// symbol tables are touched) and keeps the symbols named in `wanted`, so that a
    /// large executable's hundred thousand other names cost nothing.
    pub fn parse(data: &[u8], wanted: &[&'static str]) -> Result<Self> {
        Self::parse_apart(data, data, wanted)
    }

    /// The symbols of `symbols`, a program's separate debug file, placed in the file
    /// offsets of the program `program` (a debug file keeps addresses, not code).
    pub fn parse_apart(program: &[u8], symbols: &[u8], wanted: &[&'static str]) -> Result<Self> {
        let file = open(symbols)?;
        let segments = Segments::of(&open(program)?);
        let mut offsets = HashMap::new();
        for f in functions(&file, Tables::Both, wanted) {
            if let Some(offset) = segments.offset(f.address) {
                offsets.entry(f.name).or_insert(offset);
            }
        }
        Ok(Symbols { offsets })
    }

    pub fn offset(&self, name: &str) -> Option<u64> {
        self.offsets.get(name).copied()
    }
}

/// A file's loadable segments: uprobes take file offsets, symbols give virtual
/// addresses, and the segment that holds an address maps one to the other.
pub(crate) struct Segments(Vec<(u64, u64, u64)>);

impl Segments {
    pub(crate) fn of(file: &object::File) -> Segments {
        let spans = file
            .segments()
            .map(|s| (s.address(), s.size(), s.file_range().0));
        Segments(spans.collect())
    }

    /// The file offset of `addr`, if a segment holds it. Checked arithmetic: the header
    /// values are the file's, and hostile.
    pub(crate) fn offset(&self, addr: u64) -> Option<u64> {
        self.0
            .iter()
            .find(|&&(start, size, _)| addr.checked_sub(start).is_some_and(|d| d < size))
            .and_then(|&(start, _, offset)| offset.checked_add(addr - start))
    }
}

/// Parses an ELF file whose headers promise bounded work: at most MAX_SEGMENTS program
/// headers and MAX_SECTIONS section headers, section names of at most MAX_SECTION_NAME
/// bytes, symbol tables of at most MAX_SYMBOLS entries. The error is one line.
pub fn open(data: &[u8]) -> Result<object::File<'_>> {
    match FileKind::parse(data)? {
        FileKind::Elf32 => check::<object::elf::FileHeader32<Endianness>>(data)?,
        FileKind::Elf64 => check::<object::elf::FileHeader64<Endianness>>(data)?,
        _ => bail!("not an ELF file"),
    }
    Ok(object::File::parse(data)?)
}

fn check<Elf: FileHeader<Endian = Endianness>>(data: &[u8]) -> Result<()> {
    let header = Elf::parse(data)?;
    let endian = header.endian()?;
    let segments = header.phnum(endian, data)?;
    if segments > MAX_SEGMENTS {
        bail!("{segments} program headers, more than the {MAX_SEGMENTS} a file may have");
    }
    let sections = header.shnum(endian, data)?;
    if sections > MAX_SECTIONS {
        bail!("{sections} section headers, more than the {MAX_SECTIONS} a file may have");
    }
    let headers = header.section_headers(endian, data)?;
    let names = match header.shstrndx(endian, data)? {
        0 => &[][..],
        i => headers
            .get(i as usize)
            .and_then(|s| s.data(endian, data).ok())
            .unwrap_or_default(),
    };
    if names.len() > MAX_SECTION_NAMES {
        bail!(
            "a section name table of {} bytes, more than the {MAX_SECTION_NAMES} a file may have",
            names.len()
        );
    }
    if names
        .split(|&b| b == 0)
        .any(|name| name.len() > MAX_SECTION_NAME)
    {
        bail!("a section name longer than {MAX_SECTION_NAME} bytes");
    }
    let symbols = headers
        .iter()
        .filter(|s| matches!(s.sh_type(endian), SHT_SYMTAB | SHT_DYNSYM))
        .map(|s| s.sh_size(endian).into() / std::mem::size_of::<Elf::Sym>() as u64)
        .max();
    if let Some(n) = symbols.filter(|&n| n > MAX_SYMBOLS) {
        bail!("a symbol table of {n} entries, more than the {MAX_SYMBOLS} a file may have");
    }
    Ok(())
}

/// The symbol tables to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tables {
    /// The dynamic table, then the static one.
    Both,
    Static,
}

/// A defined function symbol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Function<'w> {
    pub name: &'w str,
    pub address: u64,
    pub size: u64,
}

/// The defined function symbols named in `wanted` (a versioned name such as
/// `SSL_read@@OPENSSL_3.0.0` is its name before the `@`): of each name, the first one
/// of each table, in table order.
pub fn functions<'w>(file: &object::File, tables: Tables, wanted: &[&'w str]) -> Vec<Function<'w>> {
    let names = Names::new(wanted);
    match file {
        object::File::Elf32(elf) => elf_functions(elf, tables, &names),
        object::File::Elf64(elf) => elf_functions(elf, tables, &names),
        _ => Vec::new(),
    }
}

fn elf_functions<'w, Elf: FileHeader<Endian = Endianness>>(
    file: &ElfFile<Elf>,
    tables: Tables,
    names: &Names<'_, 'w>,
) -> Vec<Function<'w>> {
    // A file that exports wanted functions (a library, node) answers through its
    // dynamic table's hash, one short chain per name: node's 100 MB took 12 ms to
    // scan, 0.1 ms this way, and a program held until attached waits for it.
    if tables == Tables::Both {
        if let Some(found) = exported(file, names.wanted).filter(|f| !f.is_empty()) {
            return found;
        }
    }
    scan(file, tables, names)
}

/// One pass over each symbol table for the wanted names.
fn scan<'w, Elf: FileHeader<Endian = Endianness>>(
    file: &ElfFile<Elf>,
    tables: Tables,
    names: &Names<'_, 'w>,
) -> Vec<Function<'w>> {
    let endian = file.endian();
    let mut found = Vec::new();
    let dynamic = (tables == Tables::Both).then(|| file.elf_dynamic_symbol_table());
    for table in dynamic.into_iter().chain([file.elf_symbol_table()]) {
        let strings = file
            .elf_section_table()
            .section(table.string_section())
            .ok()
            .and_then(|s| s.data(endian, file.data()).ok())
            .unwrap_or_default();
        // A name ends at a NUL: what follows the table's last one is no name (a real
        // table ends with a NUL; a crafted one costs a vectorized search).
        let strings = &strings[..memchr::memrchr(0, strings).map_or(0, |end| end + 1)];
        let mut seen = vec![false; names.wanted.len()];
        for sym in table.symbols() {
            let address: u64 = sym.st_value(endian).into();
            if !matches!(sym.st_type(), STT_FUNC | STT_GNU_IFUNC)
                || sym.st_shndx(endian) == SHN_UNDEF
                || address == 0
            {
                continue;
            }
            let Some(k) = names.find(strings, sym.st_name(endian)) else {
                continue;
            };
            if !std::mem::replace(&mut seen[k], true) {
                let size = sym.st_size(endian).into();
                let name = names.wanted[k];
                found.push(Function {
                    name,
                    address,
                    size,
                });
            }
        }
    }
    found
}

/// The wanted functions found through the GNU hash table of the dynamic symbols; None
/// when the file has no such table, or one that cannot be right.
fn exported<'w, Elf: FileHeader<Endian = Endianness>>(
    file: &ElfFile<Elf>,
    wanted: &[&'w str],
) -> Option<Vec<Function<'w>>> {
    let (endian, data) = (file.endian(), file.data());
    let sections = file.elf_section_table();
    let header = sections.gnu_hash_header(endian, data).ok()??;
    // The lookup divides by the bucket count and shifts by the bloom shift: a hostile
    // file's zero or oversized values are refused first. Its chains end at the table's
    // end, which `open` bounds.
    let word_bits = 8 * std::mem::size_of::<Elf::Word>() as u32;
    if header.bucket_count.get(endian) == 0
        || header.bloom_count.get(endian) == 0
        || header.bloom_shift.get(endian) >= word_bits
    {
        return None;
    }
    let (hash, link) = sections.gnu_hash(endian, data).ok()??;
    let symbols = sections.symbol_table_by_index(endian, data, link).ok()?;
    let versions = sections.versions(endian, data).ok().flatten();
    let found = wanted.iter().filter_map(|&name| {
        let key = name.as_bytes();
        let (_, sym) = hash.find(
            endian,
            key,
            object::elf::gnu_hash(key),
            None,
            &symbols,
            versions.as_ref().unwrap_or(&Default::default()),
        )?;
        let address: u64 = sym.st_value(endian).into();
        let function = matches!(sym.st_type(), STT_FUNC | STT_GNU_IFUNC)
            && sym.st_shndx(endian) != SHN_UNDEF
            && address != 0;
        function.then(|| Function {
            name,
            address,
            size: sym.st_size(endian).into(),
        })
    });
    Some(found.collect())
}

/// The wanted names, looked up without reading a name further than the longest of them
/// and without hashing: by first byte, then by length, then compared.
struct Names<'n, 'w> {
    wanted: &'n [&'w str],
    /// Whether some wanted name starts with this byte.
    first: [bool; 256],
    /// The indices in `wanted` of the names of each length.
    by_len: Vec<Vec<usize>>,
}

impl<'n, 'w> Names<'n, 'w> {
    fn new(wanted: &'n [&'w str]) -> Self {
        let longest = wanted.iter().map(|n| n.len()).max().unwrap_or(0);
        let mut first = [false; 256];
        let mut by_len = vec![Vec::new(); longest + 1];
        for (k, name) in wanted.iter().enumerate() {
            if let Some(&b) = name.as_bytes().first() {
                first[b as usize] = true;
            }
            by_len[name.len()].push(k);
        }
        Names {
            wanted,
            first,
            by_len,
        }
    }

    /// The wanted name at `offset` of a string table, if it is one.
    fn find(&self, strings: &[u8], offset: u32) -> Option<usize> {
        let rest = strings.get(offset as usize..)?;
        if !self.first[*rest.first()? as usize] {
            return None;
        }
        let window = &rest[..rest.len().min(self.by_len.len())];
        let len = window.iter().position(|&b| b == 0 || b == b'@')?;
        let name = &window[..len];
        self.by_len[len]
            .iter()
            .copied()
            .find(|&k| self.wanted[k].as_bytes() == name)
    }
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
    fn exports_found_through_the_hash_are_those_a_scan_finds() {
        for lib in ["libssl.so.3", "libgnutls.so.30", "libnspr4.so"] {
            let data = std::fs::read(format!("{LIBS}/{lib}")).unwrap();
            let file = ElfFile::<object::elf::FileHeader64<Endianness>>::parse(&*data).unwrap();
            let names = all_names();
            let mut hashed = exported(&file, &names).unwrap();
            let mut scanned = scan(&file, Tables::Both, &Names::new(&names));
            hashed.sort_by_key(|f| f.name);
            scanned.sort_by_key(|f| f.name);
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

#[cfg(test)]
mod fuzz;
