//! Which of the table's functions an ELF file defines, and where: the file offsets that
//! uprobes attach to. Reads both the dynamic and the static symbol table, so statically
//! linked executables are found by what they contain, not by their name.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use object::{Object, ObjectSegment, ObjectSymbol, SymbolKind};

/// Defined function symbols of an ELF file, by name, with their file offsets.
pub struct Symbols {
    offsets: HashMap<String, u64>,
    go: bool,
}

impl Symbols {
    pub fn read(path: &Path) -> Result<Self> {
        let data = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        Self::parse(&data).with_context(|| format!("{} is not a readable ELF file", path.display()))
    }

    fn parse(data: &[u8]) -> Result<Self> {
        let file = object::File::parse(data)?;
        // Uprobes take file offsets; symbols give virtual addresses: map through the
        // loadable segment that holds each address.
        let segments: Vec<(u64, u64, u64)> = file
            .segments()
            .map(|s| (s.address(), s.size(), s.file_range().0))
            .collect();
        let to_offset = |addr: u64| {
            segments
                .iter()
                .find(|&&(start, size, _)| addr >= start && addr < start + size)
                .map(|&(start, _, offset)| addr - start + offset)
        };
        // Go binaries record their build in this section, stripped or not.
        let go = file.section_by_name(".go.buildinfo").is_some();
        let mut map = HashMap::new();
        for sym in file.dynamic_symbols().chain(file.symbols()) {
            if sym.kind() != SymbolKind::Text || sym.is_undefined() || sym.address() == 0 {
                continue;
            }
            let (Ok(name), Some(offset)) = (sym.name(), to_offset(sym.address())) else {
                continue;
            };
            // Versioned names (`SSL_read@@OPENSSL_3.0.0`) appear in some tables.
            let name = name.split('@').next().unwrap_or(name);
            map.entry(name.to_string()).or_insert(offset);
        }
        Ok(Symbols { offsets: map, go })
    }

    pub fn offset(&self, name: &str) -> Option<u64> {
        self.offsets.get(name).copied()
    }

    /// A Go program: its goroutine stacks move, which uretprobes do not survive.
    pub fn is_go(&self) -> bool {
        self.go
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_functions_in_this_test_binary() {
        let exe = std::env::current_exe().unwrap();
        let syms = Symbols::read(&exe).unwrap();
        assert!(syms.offset("main").is_some());
        assert!(syms.offset("no_such_function_anywhere").is_none());
    }

    #[test]
    fn rejects_non_elf() {
        assert!(Symbols::parse(b"not an elf file").is_err());
    }
}
