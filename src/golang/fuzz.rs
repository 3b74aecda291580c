//! Go's tables and the return finder on hostile files: the crafted files as regression
//! cases, and seeded structured fuzzers (build information, function tables, return
//! sites, whole programs) that check for panics, hangs and work (allocations).

use iced_x86::{Decoder, DecoderOptions, Mnemonic};

use super::disasm::MAX_RETURNS;
use super::pclntab::testing::for_release;
use super::*;
use crate::hostile::{self, release_ms, timed, Covers, Elf, Rng, Section, Segment};
use crate::symbols::MAX_SEGMENTS;

const READ: &str = "crypto/tls.(*Conn).Read";
/// Where the programs made here keep their function table.
const TABLE: u64 = hostile::BASE + 0x10_0000;

fn malformed_text(result: Result<Option<GoProgram>, GoError>) -> String {
    match result {
        Err(GoError::Malformed(why)) => why,
        other => panic!("not refused as malformed: {other:?}"),
    }
}

/// Before: one return probe per byte, 1,048,576 of them for 1 MiB (109 ms, 16 MB of
/// heap) and 67,108,864 for 64 MiB (1.03 s, 1 GiB).
#[test]
fn a_function_of_nothing_but_returns_is_refused() {
    let cases = [
        (
            64 << 20,
            "Read: 67108864 bytes long, more than the 262144 a Go function may be",
        ),
        (1 << 20, "Read: 1048576 bytes long, more than the 262144"),
        (
            64 << 10,
            "Read: 65 or more return instructions, more than the 64 a Go compiler",
        ),
        (MAX_RETURNS + 1, "Read: 65 or more return instructions"),
    ];
    for (len, expect) in cases {
        let data = hostile::go_returns(len);
        let ((result, allocated), took) = timed(|| hostile::allocations(|| inspect_bytes(&data)));
        let why = malformed_text(result);
        assert!(why.contains(expect), "{why}");
        assert!(
            took < release_ms(5) && allocated < 64 << 10,
            "{took:?}, {allocated}"
        );
    }
    let program = inspect_bytes(&hostile::go_returns(MAX_RETURNS))
        .unwrap()
        .unwrap();
    assert_eq!(program.funcs[0].returns.len(), MAX_RETURNS);
}

/// Before: each segment's bytes were searched, every segment covering the whole file:
/// 29.8 s for the 1.7 MB file of 30,000 segments (now refused by its headers).
#[test]
fn the_function_table_search_reads_each_byte_once() {
    let data = hostile::pclntab_scan(MAX_SEGMENTS, 64 << 20);
    let (result, took) = timed(|| inspect_bytes(&data));
    assert_eq!(malformed_text(result), "no Go function table (.gopclntab)");
    assert!(took < release_ms(50), "{took:?}");
}

/// A Go program of the given release: `code` at `hostile::TEXT`, `table` at `TABLE` in
/// a section named `section` (".rodata": found by its header only), build information.
fn go_program(code: Vec<u8>, table: Vec<u8>, section: &str, version: &str) -> Elf {
    let text = Section::new(
        ".text",
        hostile::SHT_PROGBITS,
        hostile::SHF_ALLOC | hostile::SHF_EXECINSTR,
        hostile::TEXT,
        code,
    );
    let table = Section::new(
        section,
        hostile::SHT_PROGBITS,
        hostile::SHF_ALLOC,
        TABLE,
        table,
    );
    let info = Section::new(
        ".go.buildinfo",
        hostile::SHT_PROGBITS,
        hostile::SHF_ALLOC | hostile::SHF_WRITE,
        hostile::DATA,
        hostile::go_buildinfo(version),
    );
    let segment = |flags, i| Segment {
        flags,
        covers: Covers::Section(i),
    };
    Elf {
        segments: vec![
            segment(hostile::PF_R | hostile::PF_X, 0),
            segment(hostile::PF_R, 1),
            segment(hostile::PF_R | hostile::PF_W, 2),
        ],
        sections: vec![text, table, info],
        ..Elf::default()
    }
}

/// A Go 1.21 table whose only function is `Read`, 20 bytes of which the last returns.
fn read_table() -> (Vec<u8>, Vec<u8>) {
    let mut code = vec![0x90; 19];
    code.push(0xc3);
    code.resize(32, 0xcc);
    (code, for_release(21, &[(READ, 0, 20)], 32))
}

#[test]
fn a_few_table_headers_are_tried_and_no_more() {
    let (code, table) = read_table();
    // Headers that look right and hold nothing, each in its own 64 bytes.
    let mut bad = table[..8].to_vec();
    bad.resize(64, 0);
    for (before, found) in [(3, true), (4, false)] {
        let data = [bad.repeat(before), table.clone()].concat();
        let program = go_program(code.clone(), data, ".rodata", "go1.21.0").build();
        let result = inspect_bytes(&program);
        assert_eq!(result.is_ok(), found, "{before}: {result:?}");
    }
}

/// x86-64 code: instructions that are, contain or look like returns, and noise.
fn x86_code(rng: &mut Rng, len: usize) -> Vec<u8> {
    const PIECES: &[&[u8]] = &[
        &[0xc3],
        &[0xf3, 0xc3],
        &[0xc2, 0x08, 0x00],
        &[0x48, 0xc7, 0xc0, 0xc3, 0, 0, 0],
        &[0x74, 0x01],
        &[0x90],
        &[0x66, 0x90],
        &[0x0f, 0x1f, 0x44, 0, 0],
        &[0xcc],
        &[0x0f, 0x0b],
        &[0xe8, 0, 0, 0, 0],
        &[0xf3, 0x0f, 0x1e, 0xfa],
        &[0x48, 0x89, 0xe5],
        &[0xcb],
    ];
    let mut code = Vec::with_capacity(len + 8);
    while code.len() < len {
        if rng.one_in(16) {
            code.push(rng.byte());
        } else {
            code.extend(*rng.pick(PIECES));
        }
    }
    code.truncate(len);
    code
}

/// arm64 code: returns, literal loads near and far, branches, noise.
fn arm64_code(rng: &mut Rng, words: usize) -> Vec<u8> {
    (0..words)
        .flat_map(|_| {
            let word = match rng.below(8) {
                0 => 0xd65f_03c0,
                1 => *rng.pick(&[0xd65f_0220, 0xd65f_0bff, 0xd65f_0fff]),
                2 => 0x5800_0000 | ((rng.below(16) as u32) << 5),
                3 => *rng.pick(&[0x1800_0000, 0x9c00_0000, 0x9800_0000]) | (rng.byte() as u32) << 5,
                4 => 0xd503_201f,
                5 => 0x1400_0000 | rng.below(1 << 26) as u32,
                _ => rng.next_u64() as u32,
            };
            word.to_le_bytes()
        })
        .collect()
}

/// The decoder builds its tables on first use, once per process: no input's work.
fn warm_up() {
    assert_eq!(disasm::returns(Arch::X86_64, &[0xc3]), Ok(vec![0]));
}

#[test]
fn fuzz_return_sites() {
    let knobs = hostile::Knobs::from_env(hostile::FUZZ_SECONDS);
    warm_up();
    hostile::fuzz("return sites", knobs, hostile::per_input(), |rng| {
        let (arch, code) = if rng.one_in(3) {
            let words = rng.size(2048);
            (Arch::Arm64, arm64_code(rng, words))
        } else {
            let len = rng.size(8192);
            (Arch::X86_64, x86_code(rng, len))
        };
        let (found, allocated) = hostile::allocations(|| disasm::returns(arch, &code));
        // arm64 keeps a word and a flag per instruction; x86-64 only what it finds.
        assert!(
            allocated <= 2 * code.len() as u64 + 4096,
            "{allocated} bytes allocated"
        );
        let Ok(found) = found else { return };
        assert!(found.len() <= MAX_RETURNS && found.windows(2).all(|w| w[0] < w[1]));
        if arch == Arch::X86_64 {
            // Each one is a return instruction, decoded from where it starts.
            for &at in &found {
                let mut decoder =
                    Decoder::with_ip(64, &code[at as usize..], 0, DecoderOptions::NONE);
                assert_eq!(decoder.decode().mnemonic(), Mnemonic::Ret, "+{at:#x}");
            }
        }
    });
}

#[test]
fn fuzz_build_information() {
    let knobs = hostile::Knobs::from_env(hostile::FUZZ_SECONDS);
    hostile::fuzz("build information", knobs, hostile::per_input(), |rng| {
        let mut header = hostile::go_buildinfo(&format!("go1.{}.{}", rng.below(30), rng.below(9)));
        let (any_size, any_flags) = (rng.byte(), rng.byte());
        header[14] = *rng.pick(&[8, 8, 4, any_size]);
        header[15] = *rng.pick(&[0, 2, 2, 3, any_flags]);
        // A pointer to a string header, and the string, in a small fake memory.
        let len = rng.upto(64);
        let memory: Vec<u8> = rng.bytes(len);
        let anywhere = rng.next_u64();
        let base = *rng.pick(&[0x1000u64, anywhere]);
        header[16..24].copy_from_slice(&(base + rng.below(72)).to_le_bytes());
        if rng.one_in(2) {
            rng.mutate(&mut header);
        }
        let read = |addr: u64, len: u64| {
            let at = usize::try_from(addr.checked_sub(base)?).ok()?;
            memory.get(at..at.checked_add(usize::try_from(len).ok()?)?)
        };
        let (version, allocated) = hostile::allocations(|| buildinfo::version(&header, &read));
        assert!(allocated <= 1024, "{allocated} bytes allocated");
        if let Ok(version) = version {
            assert!(version.len() <= 256);
            let _ = buildinfo::minor(&version);
        }
    });
}

/// A Go program with a function table of `funcs` (names among the targets or not),
/// found by `.symtab`, a table section or the table's header, in any release.
fn random_program(rng: &mut Rng) -> Vec<u8> {
    let minor = *rng.pick(&[16, 17, 18, 19, 20, 21, 23, 25]);
    let mut funcs: Vec<(&str, u32, u8)> = Vec::new();
    let mut at = 0u32;
    for _ in 0..rng.upto(12) {
        let name = match rng.below(3) {
            0 => "main.main",
            _ => rng.pick(TARGETS).0,
        };
        let size = rng.byte();
        funcs.push((name, at, size));
        at += u32::from(size) + rng.below(40) as u32;
    }
    let mut table = for_release(minor, &funcs, at);
    if rng.one_in(3) {
        rng.mutate(&mut table);
    }
    let section = *rng.pick(&[".gopclntab", ".data.rel.ro.gopclntab", ".rodata"]);
    let version = match rng.below(5) {
        0 => format!("devel go1.{minor}-abc Mon"),
        1 => String::from_utf8_lossy(&rng.bytes(12)).into_owned(),
        _ => format!("go1.{minor}.{}", rng.below(10)),
    };
    let code = x86_code(rng, at as usize + 64);
    let mut elf = go_program(code, table, section, &version);
    if rng.one_in(3) {
        let list: Vec<(&[u8], u64, u64)> = funcs
            .iter()
            .map(|&(name, entry, size)| {
                (
                    name.as_bytes(),
                    hostile::TEXT + u64::from(entry),
                    u64::from(size),
                )
            })
            .collect();
        let (table, strings) = hostile::symbol_table(&list, 1);
        let strtab = elf.sections.len() + 1;
        elf.sections
            .extend(hostile::symbol_sections(table, strings, strtab));
    }
    if rng.one_in(8) {
        elf.machine = hostile::EM_AARCH64;
    }
    let mut data = elf.build();
    if rng.one_in(4) {
        rng.mutate(&mut data);
    }
    data
}

#[test]
fn fuzz_go_programs() {
    let knobs = hostile::Knobs::from_env(hostile::FUZZ_SECONDS);
    warm_up();
    hostile::fuzz("Go programs", knobs, hostile::per_input(), |rng| {
        let data = random_program(rng);
        let (program, allocated) = hostile::allocations(|| inspect_bytes(&data));
        assert!(allocated < 256 << 10, "{allocated} bytes allocated");
        let Ok(Some(program)) = program else { return };
        for f in &program.funcs {
            assert!(
                !f.returns.is_empty() && f.returns.len() <= MAX_RETURNS,
                "{f:?}"
            );
            assert!(f
                .returns
                .iter()
                .all(|&r| r >= f.entry && r - f.entry < MAX_FUNCTION));
        }
    });
}
