//! The ELF symbol reader on hostile files: the crafted files as regression cases, and a
//! seeded structured fuzzer that checks for panics, hangs and work (allocations), with
//! object's own symbol API (names read to their end: right, and slow on crafted files)
//! as the reference for what is found.

use std::collections::{HashMap, HashSet};

use object::{ObjectSymbol, SymbolKind};

use super::*;
use crate::hostile::{self, release_ms, timed, Covers, Elf, Rng, Section, Segment};

fn wanted() -> Vec<&'static str> {
    crate::libs::all_funcs().map(|(_, _, f)| f.name).collect()
}

fn refusal(data: &[u8]) -> String {
    match Symbols::parse(data, &wanted()) {
        Ok(_) => panic!("accepted"),
        Err(e) => format!("{e:#}"),
    }
}

/// 70,000 program headers: more than the header's field holds, so the count lives in
/// section 0 (extended numbering).
fn extended_segments() -> Vec<u8> {
    let segment = Segment {
        flags: hostile::PF_R,
        covers: Covers::File(hostile::BASE),
    };
    let elf = Elf {
        segments: vec![segment; 70_000],
        ..Elf::default()
    };
    elf.build()
}

/// A file whose symbol table says it has `entries` entries, whatever it holds.
fn symbol_table_of(entries: u64) -> Vec<u8> {
    let mut data = hostile::wanted_symbols(4, "SSL_read");
    let shoff = u64::from_le_bytes(data[0x28..0x30].try_into().unwrap()) as usize;
    // Section 2 is .symtab; sh_size is at +32 in a section header.
    let size = shoff + 2 * 64 + 32;
    data[size..size + 8].copy_from_slice(&(entries * 24).to_le_bytes());
    data
}

#[test]
fn absurd_headers_are_refused_from_the_headers_alone() {
    let cases = [
        (
            hostile::pclntab_scan(30_000, 0),
            "30000 program headers, more than the 256",
        ),
        (
            hostile::symbol_walk(30_000, 60_000),
            "30000 program headers",
        ),
        (extended_segments(), "70000 program headers"),
        (
            hostile::long_section_names(30_000, 64),
            "30002 section headers, more than the 4096",
        ),
        (
            hostile::long_section_names(16, 100_000),
            "a section name longer than 256 bytes",
        ),
        (
            hostile::long_section_names(16, 2 << 20),
            "a section name table of 2097152 bytes, more than the 1052672",
        ),
        (
            symbol_table_of(MAX_SYMBOLS + 1),
            "a symbol table of 4194305 entries, more than the 4194304",
        ),
    ];
    for (data, expect) in cases {
        let (error, took) = timed(|| refusal(&data));
        assert!(error.contains(expect), "{error}");
        assert_eq!(error.lines().count(), 1, "{error}");
        assert!(took < release_ms(5), "{expect}: {took:?}");
    }
    assert!(Symbols::parse(&symbol_table_of(4), &wanted()).is_ok());
}

/// Before: 24.6 s (each name read to the end of the 8 MiB string), 3.1 s (every
/// symbol's address walked through 30,000 segments).
#[test]
fn names_are_compared_in_place_and_few_addresses_converted() {
    let data = hostile::long_symbol_names(200_000, 8 << 20);
    let (syms, took) = timed(|| Symbols::parse(&data, &wanted()).unwrap());
    assert_eq!(syms.offsets.keys().collect::<Vec<_>>(), [&"SSL_read"]);
    assert!(took < release_ms(50), "{took:?}");

    let data = hostile::symbol_walk(MAX_SEGMENTS, 1_000_000);
    let (syms, took) = timed(|| Symbols::parse(&data, &wanted()).unwrap());
    assert!(syms.offsets.is_empty());
    assert!(took < release_ms(50), "{took:?}");

    // Every symbol bears a wanted name: the most each one costs.
    let data = hostile::wanted_symbols(1_000_000, "SSL_read");
    let (syms, took) = timed(|| Symbols::parse(&data, &wanted()).unwrap());
    assert!(syms.offset("SSL_read").is_some());
    assert!(took < release_ms(50), "{took:?}");
}

/// What the reader finds, by object's symbol API: of each wanted name, the first
/// defined function symbol of each table, its address in a loadable segment.
fn reference(data: &[u8], wanted: &[&'static str]) -> HashMap<&'static str, u64> {
    let file = object::File::parse(data).unwrap();
    let segments = super::Segments::of(&file);
    let mut found = HashMap::new();
    let tables: [Vec<object::Symbol>; 2] =
        [file.dynamic_symbols().collect(), file.symbols().collect()];
    for table in tables {
        let mut seen = HashSet::new();
        for sym in table {
            if sym.kind() != SymbolKind::Text || sym.is_undefined() || sym.address() == 0 {
                continue;
            }
            let Ok(name) = sym.name_bytes() else { continue };
            let name = name.split(|&b| b == b'@').next().unwrap_or(name);
            let Some(&w) = wanted.iter().find(|w| w.as_bytes() == name) else {
                continue;
            };
            if seen.insert(w) {
                if let Some(offset) = segments.offset(sym.address()) {
                    found.entry(w).or_insert(offset);
                }
            }
        }
    }
    found
}

/// A name for a symbol: wanted, versioned, long, or noise.
fn symbol_name(rng: &mut Rng, wanted: &[&str]) -> Vec<u8> {
    let mut name = match rng.below(5) {
        0 | 1 => rng.pick(wanted).as_bytes().to_vec(),
        2 => format!("{}@@OPENSSL_3.0.0", rng.pick(wanted)).into_bytes(),
        3 => vec![b'S'; rng.size(300)],
        _ => {
            let len = rng.size(40);
            rng.bytes(len)
        }
    };
    if rng.one_in(8) {
        name.extend(rng.bytes(3));
    }
    name
}

/// A symbol table (and its strings) of `count` symbols in section 1: mostly functions
/// in `.text`, with wrong types, sections and addresses thrown in.
fn symbols(rng: &mut Rng, count: usize, wanted: &[&str]) -> (Vec<u8>, Vec<u8>) {
    let mut table = vec![0u8; 24];
    let mut strings = vec![0u8];
    for _ in 0..count {
        let name = if rng.one_in(10) {
            rng.below(strings.len() as u64 + 8) as u32
        } else {
            strings.len() as u32
        };
        strings.extend(symbol_name(rng, wanted));
        if !rng.one_in(20) {
            strings.push(0);
        }
        let info = *rng.pick(&[0x12, 0x12, 0x12, 0x1a, 0x11, 0x10, 0x02]);
        let shndx = *rng.pick(&[1, 1, 1, 0, 0xfff1, 7]);
        let value = match rng.below(4) {
            0 => 0,
            1 => rng.next_u64(),
            _ => hostile::TEXT + rng.below(8192),
        };
        table.extend(hostile::symbol(name, info, shndx, value, rng.below(64)));
    }
    (table, strings)
}

fn random_segments(rng: &mut Rng, sections: usize) -> Vec<Segment> {
    (0..rng.upto(6))
        .map(|_| Segment {
            flags: rng.below(8) as u32,
            covers: match rng.below(3) {
                0 => {
                    let anywhere = rng.next_u64();
                    Covers::File(*rng.pick(&[hostile::BASE, hostile::FAR, anywhere]))
                }
                _ => Covers::Section(rng.below(sections as u64) as usize),
            },
        })
        .collect()
}

/// An ELF file with a text section, dynamic and static symbol tables, and segments.
fn random_elf(rng: &mut Rng, wanted: &[&str]) -> Vec<u8> {
    let text = Section::new(
        ".text",
        hostile::SHT_PROGBITS,
        hostile::SHF_ALLOC | hostile::SHF_EXECINSTR,
        hostile::TEXT,
        vec![0xcc; 64 + rng.upto(8192)],
    );
    let mut sections = vec![text];
    for (table, strtab, kind) in [
        (".dynsym", ".dynstr", hostile::SHT_DYNSYM),
        (".symtab", ".strtab", hostile::SHT_SYMTAB),
    ] {
        if rng.one_in(4) {
            continue;
        }
        let count = rng.size(400);
        let (symbols, strings) = symbols(rng, count, wanted);
        let link = sections.len() as u32 + 2;
        sections.push(Section {
            link: if rng.one_in(30) {
                rng.below(9) as u32
            } else {
                link
            },
            entsize: 24,
            ..Section::new(table, kind, 0, 0, symbols)
        });
        sections.push(Section::new(strtab, hostile::SHT_STRTAB, 0, 0, strings));
    }
    if rng.one_in(4) {
        let info = hostile::go_buildinfo("go1.22.1");
        let flags = hostile::SHF_ALLOC | hostile::SHF_WRITE;
        let data = Section::new(
            ".go.buildinfo",
            hostile::SHT_PROGBITS,
            flags,
            hostile::DATA,
            info,
        );
        sections.push(data);
    }
    Elf {
        kind: *rng.pick(&[hostile::ET_EXEC, hostile::ET_DYN]),
        machine: *rng.pick(&[hostile::EM_X86_64, hostile::EM_AARCH64, 3]),
        segments: random_segments(rng, sections.len()),
        sections,
        ..Elf::default()
    }
    .build()
}

#[test]
fn fuzz_elf_symbols() {
    let knobs = hostile::Knobs::from_env(hostile::FUZZ_SECONDS);
    hostile::fuzz("ELF symbols", knobs, hostile::per_input(), |rng| {
        let wanted = wanted();
        let mut data = random_elf(rng, &wanted);
        let mutated = rng.one_in(2);
        if mutated {
            rng.mutate(&mut data);
        }
        let (parsed, allocated) = hostile::allocations(|| Symbols::parse(&data, &wanted));
        // Segments, sections and names cost what their counts allow, never the file.
        assert!(allocated < 64 << 10, "{allocated} bytes allocated");
        if let Ok(found) = parsed {
            if !mutated {
                assert_eq!(found.offsets, reference(&data, &wanted));
            }
        }
    });
}
