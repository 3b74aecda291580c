//! Tests on real Go executables: `tests/fixtures/go/https.go` built in each way Go programs
//! ship by the installed toolchain (Debian's golang-go, Go 1.19) and by Debian's Go 1.21 to
//! 1.24 (fetched by `tests/fixtures/go/fetch.sh`), and Go programs the npm registry ships,
//! built with Go 1.17 to 1.27. Without `go` or the registries these tests fail: a Go
//! analysis that was never run on Go is not tested.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use iced_x86::{Decoder, DecoderOptions, Mnemonic};

use object::{ObjectSection, ObjectSegment, ObjectSymbol};

use super::*;
use crate::symbols::Symbols;

#[path = "../../tests/support/go_fetch.rs"]
mod go_fetch;
use go_fetch::{fetch, FIXTURES};

/// A built file's analysis (sslsniff maps files in discovery; a test reads them).
fn inspect(path: &Path) -> Result<Option<GoProgram>, GoError> {
    inspect_bytes(&fs::read(path).expect("the fixture is readable"))
}

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

/// Debian's toolchains other than the installed one, fetched into a cache.
const FETCHED: &[u32] = &[21, 22, 23, 24];

/// Go programs from the npm registry: package, version, executable, the Go version it
/// was built with. esbuild's releases since 0.27 carry no build information.
const REGISTRY: &[(&str, &str, &str, &str)] = &[
    ("esbuild-linux-64", "0.13.15", "bin/esbuild", "go1.17.2"),
    ("esbuild-linux-64", "0.14.30", "bin/esbuild", "go1.18"),
    ("@esbuild/linux-x64", "0.17.19", "bin/esbuild", "go1.20.4"),
    ("@esbuild/linux-x64", "0.27.3", "bin/esbuild", "go1.25.7"),
    ("@esbuild/linux-x64", "0.28.2", "bin/esbuild", "go1.26.5"),
    ("@bufbuild/buf-linux-x64", "1.70.0", "bin/buf", "go1.26.3"),
    ("lefthook-linux-x64", "2.2.2", "bin/lefthook", "go1.27.0"),
];

/// The `go` command of Go 1.`minor`: the installed one for 19, else a fetched one.
fn go_command(minor: u32) -> PathBuf {
    if minor == 19 {
        return PathBuf::from("go");
    }
    fetch(&["toolchain", &format!("1.{minor}")]).join("bin/go")
}

/// The target directory's `go-fixtures`: builds and Go's cache, nothing outside it.
fn fixture_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("go-fixtures")
}

/// The path of build `name` by the installed Go, building all of them once per run.
fn built(name: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| build_all(19)).join(name)
}

/// The builds of Go 1.`minor` (normal and stripped PIE for the fetched releases).
fn built_by(minor: u32, name: &str) -> PathBuf {
    static DIRS: Mutex<Vec<(u32, PathBuf)>> = Mutex::new(Vec::new());
    let mut dirs = DIRS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, dir)) = dirs.iter().find(|(m, _)| *m == minor) {
        return dir.join(name);
    }
    let dir = build_all(minor);
    dirs.push((minor, dir.clone()));
    dir.join(name)
}

/// Builds into the cargo target directory with Go's cache there too: no network
/// (standard library only). The tools that read DWARF and type descriptors are built by
/// the installed Go.
fn build_all(minor: u32) -> PathBuf {
    let dir = fixture_dir().join(format!("go1.{minor}"));
    fs::create_dir_all(&dir).expect("create go-fixtures");
    let source = format!("{FIXTURES}/https.go");
    let builds = if minor == 19 { BUILDS } else { &BUILDS[..3] };
    for (name, flags) in builds {
        go_build(minor, &dir, name, flags, &source);
    }
    if minor == 19 {
        for tool in ["dwarf_offsets", "type_offsets"] {
            go_build(19, &dir, tool, &[], &format!("{FIXTURES}/{tool}.go"));
        }
    }
    dir
}

fn go_build(minor: u32, dir: &Path, name: &str, flags: &[&str], source: &str) {
    let go = go_command(minor);
    let out = Command::new(&go)
        .arg("build")
        .args(flags)
        .arg("-o")
        .arg(dir.join(name))
        .arg(source)
        .env("GOCACHE", fixture_dir().join("cache"))
        .env("GOPATH", fixture_dir().join("gopath"))
        .env("GOFLAGS", "")
        .env("GOTOOLCHAIN", "local")
        .env_remove("GOROOT")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} ({e}): make deps", go.display()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "go1.{minor} build {name} failed: {stderr}"
    );
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
        check_funcs(&built(name), &program, name);
    }
}

/// All the targets are found, and each return is a return instruction.
fn check_funcs(path: &Path, program: &GoProgram, what: &str) {
    let names: Vec<&str> = program.funcs.iter().map(|f| f.name).collect();
    let all: Vec<&str> = TARGETS.iter().map(|(t, _)| *t).collect();
    assert_eq!(names, all, "{what}");
    let data = fs::read(path).unwrap();
    for func in &program.funcs {
        assert!(!func.returns.is_empty(), "{what} {}", func.name);
        assert!(func.returns.iter().all(|&r| r > func.entry), "{what}");
        for &at in &func.returns {
            assert_eq!(
                decode_one(&data, at),
                Mnemonic::Ret,
                "{what} {} +{at:#x}",
                func.name
            );
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

/// Runs one of the layout tools on an executable: its "NAME VALUE" lines.
fn tool_lines(tool: &str, args: &[&str]) -> Result<HashMap<String, u64>, String> {
    let out = Command::new(built(tool)).args(args).output().unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let stdout = String::from_utf8(out.stdout).unwrap();
    let parse = |v: &str| match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => v.parse(),
    };
    Ok(stdout
        .lines()
        .filter_map(|line| line.rsplit_once(' '))
        .map(|(name, value)| (name.to_string(), parse(value).expect("a number")))
        .collect())
}

const FIELDS: &[&str] = &[
    "crypto/tls.Conn.conn",
    "net.TCPConn.conn",
    "net.conn.fd",
    "net.netFD.pfd",
    "internal/poll.FD.Sysfd",
];

fn fd_path_of(fields: &HashMap<String, u64>, itab_hash: u64, tcp_conn_hash: u32) -> FdPath {
    FdPath {
        conn: fields["crypto/tls.Conn.conn"],
        itab_hash,
        tcp_conn_hash,
        tcp_conn_fd: fields["net.TCPConn.conn"] + fields["net.conn.fd"],
        netfd_sysfd: fields["net.netFD.pfd"] + fields["internal/poll.FD.Sysfd"],
    }
}

/// The layout as Go's DWARF reader sees it, with the hash from the itab the linker built.
fn dwarf_fd_path(exe: &Path) -> FdPath {
    let exe_arg = exe.to_str().unwrap();
    let fields = tool_lines("dwarf_offsets", &[&[exe_arg], FIELDS].concat())
        .unwrap_or_else(|e| panic!("{}: {e}", exe.display()));
    // From Go 1.23 the DWARF names the itab internal/abi.ITab, its hash Hash.
    let itab_hash = ["runtime.itab.hash", "internal/abi.ITab.Hash"]
        .iter()
        .find_map(|field| tool_lines("dwarf_offsets", &[exe_arg, field]).ok())
        .and_then(|lines| lines.into_values().next())
        .expect("the itab's hash field in the DWARF");
    let data = fs::read(exe).unwrap();
    let file = object::File::parse(&*data).unwrap();
    let image = Image::new(&data, &file).unwrap();
    let itab = file
        .symbols()
        .find(|s| {
            let name = s.name().unwrap_or("");
            name.ends_with("itab.*net.TCPConn,net.Conn") && name.starts_with("go")
        })
        .expect("the itab of *net.TCPConn as a net.Conn");
    let hash = image.bytes(itab.address() + itab_hash, 4).unwrap();
    fd_path_of(
        &fields,
        itab_hash,
        u32::from_le_bytes(hash.try_into().unwrap()),
    )
}

/// The layout as the executable's own type descriptors give it.
fn type_fd_path(exe: &Path) -> FdPath {
    let lines = tool_lines("type_offsets", &[exe.to_str().unwrap()])
        .unwrap_or_else(|e| panic!("{}: {e}", exe.display()));
    let hash = u32::try_from(lines["*net.TCPConn.hash"]).unwrap();
    fd_path_of(&lines, lines["runtime.itab.hash"], hash)
}

/// Every entry of the struct offset table is checked on a real build of each release it
/// covers: DWARF (and the type descriptors) of the builds made here, the type descriptors
/// of the registry's programs. A release nothing here was built with cannot be checked,
/// so its entry fails.
#[test]
fn fd_path_table_matches_real_builds_of_every_release() {
    let mut checked = Vec::new();
    for minor in [19].iter().chain(FETCHED) {
        let exe = built_by(*minor, "normal");
        let dwarf = dwarf_fd_path(&exe);
        assert_eq!(
            type_fd_path(&exe),
            dwarf,
            "Go 1.{minor}: the two readers differ"
        );
        assert_eq!(abi::fd_path(*minor), Some(&dwarf), "Go 1.{minor}");
        assert_eq!(inspect(&exe).unwrap().unwrap().fd_path, Some(&dwarf));
        checked.push(*minor);
    }
    for &(package, version, exe, go) in REGISTRY {
        let exe = fetch(&["npm", package, version]).join(exe);
        let program = inspect(&exe)
            .unwrap_or_else(|e| panic!("{package} {version}: {e}"))
            .unwrap_or_else(|| panic!("{package} {version} not recognised as Go"));
        assert_eq!(program.version, go, "{package} {version}");
        assert_eq!(
            program.fd_path,
            Some(&type_fd_path(&exe)),
            "{package} {version} ({go})"
        );
        checked.push(program.minor);
    }
    for minor in abi::fd_path_releases() {
        assert!(
            checked.contains(&minor),
            "Go 1.{minor}'s entry is not checked"
        );
    }
}

/// Builds by every fetched release, plain and stripped PIE, are read whole.
#[test]
fn fetched_releases_are_found_plain_stripped_and_pie() {
    for &minor in FETCHED {
        for name in ["normal", "stripped", "pie"] {
            let path = built_by(minor, name);
            let program = inspect(&path)
                .unwrap_or_else(|e| panic!("go1.{minor} {name}: {e}"))
                .expect("a Go program");
            assert_eq!(program.minor, minor, "{name}");
            check_funcs(&path, &program, &format!("go1.{minor} {name}"));
        }
    }
}

/// Registry programs: every function they link is found, and its returns are returns.
#[test]
fn registry_programs_are_found_with_or_without_build_information() {
    for &(package, version, exe, go) in REGISTRY {
        let path = fetch(&["npm", package, version]).join(exe);
        let program = inspect(&path).unwrap().unwrap();
        let what = format!("{package} {version} ({go})");
        let data = fs::read(&path).unwrap();
        let file = object::File::parse(&*data).unwrap();
        assert!(by_symtab(&file).is_none(), "{what} has symbols");
        assert!(program.funcs.iter().any(|f| f.role == Role::Read), "{what}");
        assert!(
            program.funcs.iter().any(|f| f.role == Role::Write),
            "{what}"
        );
        for func in &program.funcs {
            assert!(!func.returns.is_empty(), "{what} {}", func.name);
            for &at in &func.returns {
                assert_eq!(decode_one(&data, at), Mnemonic::Ret, "{what} {}", func.name);
            }
        }
    }
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

/// Without build information the runtime's version string decides; where it names a
/// later release the program is traced without a socket layout, and where it is absent
/// or unclear nothing is guessed.
#[test]
fn a_missing_or_unclear_runtime_version_is_never_guessed() {
    let path = fetch(&["npm", "@esbuild/linux-x64", "0.28.2"]).join("bin/esbuild");
    let data = fs::read(path).unwrap();
    assert!(!data.windows(14).any(|w| w == b"\xff Go buildinf:"));
    let later = patched(&data, b"go1.26.5", b"go1.99.5");
    let program = inspect_bytes(&later).unwrap().unwrap();
    assert_eq!((program.minor, program.fd_path), (99, None));
    assert!(!program.funcs.is_empty());
    let none = patched(&data, b"go1.26.5", b"go1.26.x");
    assert!(matches!(inspect_bytes(&none), Err(GoError::Unsupported(_))));
    // A second Go string header, to the "go1.26" of a file name in the read-only data.
    let file = object::File::parse(&*data).unwrap();
    let vaddr_of = |offset: usize| {
        file.segments().find_map(|s| {
            let (at, len) = s.file_range();
            let delta = (offset as u64).checked_sub(at).filter(|&d| d < len)?;
            Some(s.address() + delta)
        })
    };
    let name = b"only_go1.26.go";
    let text = data.windows(name.len()).position(|w| w == name).unwrap() + 5;
    let mut header = vaddr_of(text).unwrap().to_le_bytes().to_vec();
    header.extend(6u64.to_le_bytes());
    let data_start = file
        .section_by_name(".data")
        .unwrap()
        .file_range()
        .unwrap()
        .0;
    let free = (data_start as usize..data.len())
        .step_by(8)
        .find(|&at| data[at..at + 32].iter().all(|&b| b == 0))
        .unwrap();
    let mut two = data.clone();
    two[free + 8..free + 24].copy_from_slice(&header);
    let Err(GoError::Unsupported(why)) = inspect_bytes(&two) else {
        panic!("two versions accepted");
    };
    let mut listed: Vec<&str> = why.rsplit(": ").next().unwrap().split(", ").collect();
    listed.sort();
    assert_eq!(listed, ["go1.26", "go1.26.5"], "{why}");
}

/// Flips bytes where a program without build information is read differently: the
/// runtime's version string and its header, the function table header (with Go 1.26's
/// zero text start) and the module data. It may succeed or fail, never panic.
#[test]
fn mutated_programs_without_build_information_never_panic() {
    let path = fetch(&["npm", "@esbuild/linux-x64", "0.28.2"]).join("bin/esbuild");
    let original = fs::read(path).unwrap();
    let file = object::File::parse(&*original).unwrap();
    let start = |name| file.section_by_name(name).unwrap().file_range().unwrap().0 as usize;
    let version = original.windows(8).position(|w| w == b"go1.26.5").unwrap();
    let regions = [
        (version, 8),
        (start(".data"), 0x4000),
        (start(".gopclntab"), 0x48),
        (start(".go.module"), 0x100),
    ];
    let mut data = original.clone();
    let mut state = 0x2545_f491_4f6c_dd1d;
    for _ in 0..200 {
        let (region, len) = regions[xorshift(&mut state) as usize % regions.len()];
        let at = region + xorshift(&mut state) as usize % len;
        data[at] = xorshift(&mut state) as u8;
        if let Ok(Some(program)) = inspect_bytes(&data) {
            let mut offsets = program
                .funcs
                .iter()
                .flat_map(|f| f.returns.iter().chain([&f.entry]));
            assert!(offsets.all(|&o| o < data.len() as u64));
        }
        data[at] = original[at];
    }
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
