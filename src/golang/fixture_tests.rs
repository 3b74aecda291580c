//! Tests on real Go executables: `tests/fixtures/go/https.go` built by the installed Go
//! toolchain (Debian's golang-go, Go 1.19) in each way Go programs ship. Without `go` these
//! tests fail: a Go analysis that was never run on Go is not tested.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use iced_x86::{Decoder, DecoderOptions, Mnemonic};

use object::{ObjectSection, ObjectSegment, ObjectSymbol};

use super::*;
use crate::symbols::Symbols;

/// A built file's analysis (sslsniff maps files in discovery; a test reads them).
fn inspect(path: &Path) -> Result<Option<GoProgram>, GoError> {
    inspect_bytes(&fs::read(path).expect("the fixture is readable"))
}

const SOURCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/go/https.go");
const DWARF_OFFSETS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/go/dwarf_offsets.go"
);

/// Build name and `go build` flags.
const BUILDS: &[(&str, &[&str])] = &[
    ("normal", &[]),
    ("stripped", &["-ldflags=-s -w"]),
    ("pie", &["-buildmode=pie", "-ldflags=-s -w"]),
    ("pie-symbols", &["-buildmode=pie"]),
    // The external linker merges the table into `.data.rel.ro`: found by its header.
    (
        "pie-external",
        &["-buildmode=pie", "-ldflags=-s -w -linkmode=external"],
    ),
];
const STRIPPED: &[&str] = &["stripped", "pie", "pie-external"];
const WITH_SYMBOLS: &[&str] = &["normal", "pie-symbols"];

/// The path of build `name`, building all of them once per test run.
fn built(name: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(build_all).join(name)
}

/// Builds into the cargo target directory (`target/release/go-fixtures`), with Go's cache
/// there too: no network (standard library only), nothing written outside the target.
fn build_all() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("go-fixtures");
    fs::create_dir_all(&dir).expect("create go-fixtures");
    for (name, flags) in BUILDS {
        go_build(&dir, name, flags, SOURCE);
    }
    go_build(&dir, "dwarf_offsets", &[], DWARF_OFFSETS);
    dir
}

fn go_build(dir: &Path, name: &str, flags: &[&str], source: &str) {
    let out = Command::new("go")
        .arg("build")
        .args(flags)
        .arg("-o")
        .arg(dir.join(name))
        .arg(source)
        .env("GOCACHE", dir.join("cache"))
        .env("GOPATH", dir.join("gopath"))
        .env("GOFLAGS", "")
        .env("GOTOOLCHAIN", "local")
        .output()
        .unwrap_or_else(|e| panic!("cannot run `go` ({e}): install golang-go (make deps)"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "go build {name} failed: {stderr}");
}

fn inspect_built(name: &str) -> GoProgram {
    inspect(&built(name))
        .unwrap_or_else(|e| panic!("{name}: {e:#}"))
        .unwrap_or_else(|| panic!("{name} not recognised as Go"))
}

fn decode_one(data: &[u8], offset: u64) -> Mnemonic {
    let mut decoder = Decoder::new(64, &data[offset as usize..], DecoderOptions::NONE);
    decoder.decode().mnemonic()
}

#[test]
fn finds_every_tls_function_in_every_build() {
    for (name, _) in BUILDS {
        let program = inspect_built(name);
        assert_eq!((program.minor, program.arch), (19, Arch::X86_64), "{name}");
        assert!(program.version.starts_with("go1.19"), "{name}");
        let names: Vec<&str> = program.funcs.iter().map(|f| f.name).collect();
        let all: Vec<&str> = TARGETS.iter().map(|(t, _)| *t).collect();
        assert_eq!(names, all, "{name}");
        let data = fs::read(built(name)).unwrap();
        for func in &program.funcs {
            assert!(!func.returns.is_empty(), "{name} {}", func.name);
            assert!(func.returns.iter().all(|&r| r > func.entry), "{name}");
            for &at in &func.returns {
                assert_eq!(
                    decode_one(&data, at),
                    Mnemonic::Ret,
                    "{name} {} +{at:#x}",
                    func.name
                );
            }
        }
    }
}

#[test]
fn stripped_builds_are_read_by_the_function_table() {
    for name in STRIPPED {
        let data = fs::read(built(name)).unwrap();
        let file = object::File::parse(&*data).unwrap();
        assert!(by_symtab(&file).is_none(), "{name} still has .symtab");
    }
    let data = fs::read(built("pie-external")).unwrap();
    let file = object::File::parse(&*data).unwrap();
    assert!(pclntab::SECTIONS
        .iter()
        .all(|s| file.section_by_name(s).is_none()));
}

#[test]
fn function_table_agrees_with_symtab() {
    for name in WITH_SYMBOLS {
        let data = fs::read(built(name)).unwrap();
        let file = object::File::parse(&*data).unwrap();
        let image = Image::new(&data, &file).unwrap();
        let symtab = by_symtab(&file).unwrap();
        assert_eq!(symtab.len(), TARGETS.len(), "{name}");
        assert_eq!(
            by_pclntab(&file, &image, Arch::X86_64, 19),
            Ok(symtab),
            "{name}"
        );
        // And the entries, as file offsets, agree with the existing symbol reader.
        let names: Vec<&'static str> = TARGETS.iter().map(|(n, _)| *n).collect();
        let symbols = Symbols::parse(&fs::read(built(name)).unwrap(), &names).unwrap();
        for func in inspect_built(name).funcs {
            assert_eq!(
                symbols.offset(func.name),
                Some(func.entry),
                "{name} {}",
                func.name
            );
        }
    }
}

/// Go's own disassembler lists the same return instructions.
#[test]
fn returns_agree_with_go_objdump() {
    let path = built("normal");
    let data = fs::read(&path).unwrap();
    let file = object::File::parse(&*data).unwrap();
    let program = inspect_built("normal");
    for (func, extent) in program.funcs.iter().zip(by_symtab(&file).unwrap()) {
        let pattern = format!("^{}$", regex_escape(func.name));
        let out = Command::new("go")
            .args(["tool", "objdump", "-s", &pattern])
            .arg(&path)
            .output()
            .expect("go tool objdump");
        let listing = String::from_utf8_lossy(&out.stdout);
        let theirs: Vec<u64> = listing
            .lines()
            .filter(|line| line.split_whitespace().nth(3) == Some("RET"))
            .filter_map(|line| {
                let addr = line.split_whitespace().nth(1)?.strip_prefix("0x")?;
                u64::from_str_radix(addr, 16).ok()
            })
            .collect();
        let ours: Vec<u64> = func
            .returns
            .iter()
            .map(|r| extent.entry + (r - func.entry))
            .collect();
        assert_eq!(ours, theirs, "{}", func.name);
    }
}

fn regex_escape(name: &str) -> String {
    name.chars()
        .flat_map(|c| "()*.".contains(c).then_some('\\').into_iter().chain([c]))
        .collect()
}

#[test]
fn the_fixture_speaks_https() {
    let out = Command::new(built("pie")).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from go /\n");
}

#[test]
fn other_files_are_not_go() {
    let this = std::env::current_exe().unwrap();
    for path in [this.as_path(), Path::new("/bin/ls")] {
        assert!(matches!(inspect(path), Ok(None)), "{}", path.display());
    }
    for bytes in [&b""[..], b"\x7fEL", b"#!/bin/sh\n"] {
        assert_eq!(inspect_bytes(bytes), Ok(None));
    }
    assert!(inspect_bytes(b"\x7fELF\x02\x01\x01").is_err());
}

#[test]
fn cut_go_files_are_errors() {
    for name in STRIPPED {
        let data = fs::read(built(name)).unwrap();
        // Past the last byte the headers describe, the file holds only page padding.
        let file = object::File::parse(&*data).unwrap();
        let used = file
            .segments()
            .map(|s| s.file_range())
            .map(|(at, len)| at + len)
            .max();
        let used = used.unwrap() as usize;
        for len in (1..8).map(|i| used * i / 8).chain([64, used - 1]) {
            assert!(inspect_bytes(&data[..len]).is_err(), "{name} cut at {len}");
        }
    }
}

/// Patches `from` to `to` at its first place in the file.
fn patched(data: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let at = data
        .windows(from.len())
        .position(|w| w == from)
        .expect("pattern in file");
    let mut copy = data.to_vec();
    copy[at..at + to.len()].copy_from_slice(to);
    copy
}

#[test]
fn refuses_old_versions_and_other_architectures() {
    let data = fs::read(built("stripped")).unwrap();
    let old = patched(&data, b"\x08go1.19", b"\x08go1.16");
    let Err(GoError::Unsupported(why)) = inspect_bytes(&old) else {
        panic!("Go 1.16 accepted");
    };
    assert!(why.contains("go1.16") && why.contains("stack"), "{why}");
    let mut riscv = data.clone();
    riscv[18..20].copy_from_slice(&243u16.to_le_bytes()); // e_machine = EM_RISCV
    assert!(matches!(
        inspect_bytes(&riscv),
        Err(GoError::Unsupported(_))
    ));
    let no_table = patched(&data, &[0xf0, 0xff, 0xff, 0xff, 0, 0, 1, 8], &[0; 4]);
    assert!(matches!(
        inspect_bytes(&no_table),
        Err(GoError::Malformed(_))
    ));
}

/// A small deterministic generator (xorshift): reproducible mutations.
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Flips bytes in what the analysis reads (headers, build info, table header, function
/// table, the TLS functions' code): it may succeed or fail, never panic, never point
/// outside the file.
#[test]
fn mutated_go_files_never_panic() {
    for name in ["stripped", "pie-external", "normal"] {
        let original = fs::read(built(name)).unwrap();
        let program = inspect_built(name);
        let buildinfo = original
            .windows(14)
            .position(|w| w == b"\xff Go buildinf:")
            .unwrap();
        let magic = [0xf0, 0xff, 0xff, 0xff, 0, 0, 1, 8];
        let table = original.windows(8).position(|w| w == magic).unwrap();
        let regions = [
            (0, 0x400),
            (buildinfo, 64),
            (table, 0x40),
            (table + 0x48, 0x20000),
            (program.funcs[1].entry as usize, 0x200),
        ];
        let mut data = original.clone();
        let mut state = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..300 {
            let (start, len) = regions[xorshift(&mut state) as usize % regions.len()];
            let at = start + xorshift(&mut state) as usize % len;
            data[at] = xorshift(&mut state) as u8;
            if let Ok(Some(program)) = inspect_bytes(&data) {
                let offsets = program
                    .funcs
                    .iter()
                    .flat_map(|f| f.returns.iter().chain([&f.entry]));
                assert!(
                    offsets.into_iter().all(|&o| o < data.len() as u64),
                    "{name}"
                );
            }
            data[at] = original[at];
        }
    }
}

/// The toolchain's own `go` command: a Go program built by Debian, not by these tests.
#[test]
fn inspects_the_go_command() {
    let out = Command::new("go")
        .args(["env", "GOROOT"])
        .output()
        .expect("go env");
    let goroot = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let path = Path::new(&goroot).join("bin/go");
    let started = std::time::Instant::now();
    let program = inspect(&path).unwrap().expect("go is a Go program");
    eprintln!(
        "{} {:?} in {:?}",
        path.display(),
        program,
        started.elapsed()
    );
    assert!(program.funcs.iter().any(|f| f.role == Role::Read));
}

/// Every entry of the struct offset table, against Go's own DWARF reader and the itab the
/// linker built, in a build by the installed toolchain: an entry for a release that
/// cannot be built here cannot be checked, so it fails.
#[test]
fn fd_path_table_matches_a_real_build() {
    let program = inspect_built("normal");
    for minor in abi::fd_path_releases() {
        assert_eq!(
            minor, program.minor,
            "Go 1.{minor}'s entry cannot be checked here"
        );
    }
    let path = program.fd_path.expect("an entry for the installed Go");
    let fields = [
        "crypto/tls.Conn.conn",
        "runtime.itab.hash",
        "net.TCPConn.conn",
        "net.conn.fd",
        "net.netFD.pfd",
        "internal/poll.FD.Sysfd",
    ];
    let out = Command::new(built("dwarf_offsets"))
        .arg(built("normal"))
        .args(fields)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let dwarf: Vec<u64> = stdout
        .lines()
        .map(|line| line.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(dwarf.len(), fields.len());
    assert_eq!(path.conn, dwarf[0]);
    assert_eq!(path.itab_hash, dwarf[1]);
    assert_eq!(path.tcp_conn_fd, dwarf[2] + dwarf[3]);
    assert_eq!(path.netfd_sysfd, dwarf[4] + dwarf[5]);

    let data = fs::read(built("normal")).unwrap();
    let file = object::File::parse(&*data).unwrap();
    let image = Image::new(&data, &file).unwrap();
    let itab = file
        .symbols()
        .find(|s| s.name() == Ok("go.itab.*net.TCPConn,net.Conn"))
        .expect("the itab of *net.TCPConn as a net.Conn");
    let hash = image.bytes(itab.address() + path.itab_hash, 4).unwrap();
    assert_eq!(
        u32::from_le_bytes(hash.try_into().unwrap()),
        path.tcp_conn_hash
    );
}

/// PIE: the table's text start is also a load-time relocation. A linker that leaves the
/// field zero (and only the relocation) gives the same answer.
#[test]
fn text_start_relocation_stands_in_for_the_field() {
    let data = fs::read(built("pie")).unwrap();
    let file = object::File::parse(&*data).unwrap();
    let section = file.section_by_name(".data.rel.ro.gopclntab").unwrap();
    let field = section.address() + 24;
    let written = section.data().unwrap()[24..32].try_into().unwrap();
    assert_eq!(
        relative_relocations(&file, &[field, field + 1]),
        [Some(u64::from_le_bytes(written)), None]
    );
    let (at, _) = section.file_range().unwrap();
    let mut zeroed = data.clone();
    zeroed[at as usize + 24..at as usize + 32].fill(0);
    assert_eq!(inspect_bytes(&zeroed), inspect_bytes(&data));
    assert!(inspect_bytes(&data).unwrap().is_some());
}

/// What real Go programs hold, for the bounds on probed functions (MAX_FUNCTION,
/// `disasm::MAX_RETURNS`): each program's function count, its longest function and the
/// one with the most return instructions, and the probed ones'. On any programs:
/// SSLSNIFF_GO_PROGRAMS=PATH:PATH cargo test --release --bin sslsniff measure_go_programs
/// -- --ignored --nocapture
#[test]
#[ignore]
fn measure_go_programs() {
    let paths = std::env::var("SSLSNIFF_GO_PROGRAMS").expect("SSLSNIFF_GO_PROGRAMS=PATH:PATH");
    for path in paths.split(':') {
        let data = fs::read(path).unwrap();
        let file = object::File::parse(&*data).unwrap();
        let image = Image::new(&data, &file).unwrap();
        let program = inspect_bytes(&data).unwrap().unwrap();
        let functions = pclntab::testing::every_function(&file, &image, program.minor);
        let mut counted: Vec<(usize, u64, String)> = functions
            .into_iter()
            .filter_map(|(name, (entry, end))| {
                let (_, code) = image.code(entry, end - entry)?;
                Some((count_returns(code), end - entry, name))
            })
            .collect();
        counted.sort();
        let most = counted.last().cloned().unwrap_or_default();
        let longest = counted
            .iter()
            .max_by_key(|c| c.1)
            .cloned()
            .unwrap_or_default();
        println!(
            "{path}: {} ({} bytes), {} functions",
            program.version,
            data.len(),
            counted.len()
        );
        println!(
            "  most returns: {} in {} ({} bytes)",
            most.0, most.2, most.1
        );
        println!("  longest: {} bytes ({})", longest.1, longest.2);
        for f in &program.funcs {
            let size = counted.iter().find(|c| c.2 == f.name).map_or(0, |c| c.1);
            println!("  {}: {} returns, {size} bytes", f.name, f.returns.len());
        }
    }
}

/// Return instructions in a function's code, past the bound that the finder stops at.
fn count_returns(code: &[u8]) -> usize {
    let mut decoder = Decoder::with_ip(64, code, 0, DecoderOptions::NONE);
    let mut count = 0;
    while decoder.can_decode() {
        let instr = decoder.decode();
        if instr.is_invalid() {
            return 0;
        }
        count += usize::from(instr.mnemonic() == Mnemonic::Ret);
    }
    count
}
