//! Which of the table's functions an ELF file defines, and where: the file offsets that
//! uprobes attach to. Reads both the dynamic and the static symbol table, so statically
//! linked executables are found by what they contain, not by their name.

use std::collections::{HashMap, HashSet};

use anyhow::Result;
use object::{Object, ObjectSegment, ObjectSymbol, SymbolKind};

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
        let wanted: HashSet<&'static str> = wanted.iter().copied().collect();
        let file = object::File::parse(symbols)?;
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
        let mut map = HashMap::new();
        for sym in file.dynamic_symbols().chain(file.symbols()) {
            if sym.kind() != SymbolKind::Text || sym.is_undefined() || sym.address() == 0 {
                continue;
            }
            let Ok(name) = sym.name() else {
                continue;
            };
            // Versioned names (`SSL_read@@OPENSSL_3.0.0`) appear in some tables.
            let name = name.split('@').next().unwrap_or(name);
            let (Some(&name), Some(offset)) = (wanted.get(name), to_offset(sym.address())) else {
                continue;
            };
            map.entry(name).or_insert(offset);
        }
        Ok(Symbols { offsets: map })
    }

    pub fn offset(&self, name: &str) -> Option<u64> {
        self.offsets.get(name).copied()
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

    #[test]
    fn rejects_non_elf() {
        assert!(Symbols::parse(b"not an elf file", &["main"]).is_err());
        assert!(Symbols::parse(&[0; 4096], &["main"]).is_err());
    }
}
