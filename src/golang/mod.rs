//! Where to put uprobes in a Go executable, without uretprobes: the entry and every return
//! instruction of `crypto/tls`'s Read, Write and handshake functions, as file offsets.
//!
//! Go's TLS is Go code linked into each program, and a uretprobe crashes Go (it rewrites a
//! return address on a goroutine stack that Go later moves). So the return side is a plain
//! uprobe on each `RET` found by decoding the function's instructions. Functions are found
//! by `.symtab` when the file has one, else by Go's own table `.gopclntab`, which survives
//! `-ldflags=-s -w` and PIE builds. The Go version comes from `.go.buildinfo`, or from
//! the runtime's version string where a packager removed the build information.

mod abi;
mod buildinfo;
mod disasm;
#[cfg(test)]
mod fixture_tests;
#[cfg(test)]
mod fuzz;
mod image;
mod moduledata;
mod pclntab;

use std::fmt;

use object::Object;

pub use abi::{fd_paths, FdPath, Role};
use image::Image;

use crate::symbols::{self, Tables};

/// The longest function probed, in bytes. crypto/tls's Read, Write and handshakes are
/// 0.4 to 3.5 KB in nine real Go programs of 2 to 127 MB (Go 1.19 to 1.25), and the
/// longest of their 441,000 functions is 139 KB: a longer one is crafted, and decoding
/// it would cost time for nothing.
pub const MAX_FUNCTION: u64 = 256 << 10;

/// The functions probed in every Go program that links `crypto/tls`. Handshakes are
/// `clientHandshake`/`serverHandshake`, the `handshakeFn` that `handshakeContext` calls
/// once per handshake: `Handshake`, `HandshakeContext` and `handshakeContext` are entered
/// on every Read and Write too (they return at once when the handshake is done). The same
/// names hold from Go 1.17 (the first register-ABI release) to today.
pub const TARGETS: &[(&str, Role)] = &[
    ("crypto/tls.(*Conn).Write", Role::Write),
    ("crypto/tls.(*Conn).Read", Role::Read),
    ("crypto/tls.(*Conn).clientHandshake", Role::Handshake),
    ("crypto/tls.(*Conn).serverHandshake", Role::Handshake),
];

/// What a Go executable offers to probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoProgram {
    /// As recorded by the toolchain, e.g. `go1.19.8`.
    pub version: String,
    /// The minor release: 19 for `go1.19.8`.
    pub minor: u32,
    pub arch: Arch,
    /// How to read the socket descriptor from the receiver; `None` for releases whose
    /// struct layout has not been checked.
    pub fd_path: Option<&'static FdPath>,
    /// The `TARGETS` the program links, in table order; none when it does not use TLS.
    pub funcs: Vec<GoFunc>,
}

/// One function to probe: uprobes at `entry` and at each of `returns` (file offsets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoFunc {
    pub name: &'static str,
    pub role: Role,
    pub entry: u64,
    pub returns: Vec<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    Arm64,
}

impl Arch {
    /// The first Go release that passes arguments in registers on this architecture.
    fn first_register_abi(self) -> u32 {
        match self {
            Arch::X86_64 => 17,
            Arch::Arm64 => 18,
        }
    }

    /// Instruction size unit, as `.gopclntab` records it (`minLC`).
    fn quantum(self) -> u8 {
        match self {
            Arch::X86_64 => 1,
            Arch::Arm64 => 4,
        }
    }
}

/// Why a Go executable cannot be traced; the message is one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GoError {
    /// A well-formed Go program this tool does not support (version, architecture).
    Unsupported(String),
    /// The file looks like Go, but its tables do not hold together.
    Malformed(String),
}

impl fmt::Display for GoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GoError::Unsupported(why) => write!(f, "{why}"),
            GoError::Malformed(why) => write!(f, "malformed Go executable: {why}"),
        }
    }
}

impl std::error::Error for GoError {}

fn malformed(why: impl Into<String>) -> GoError {
    GoError::Malformed(why.into())
}

/// Inspects an executable's bytes: `None` when they are not a Go executable.
pub fn inspect_bytes(data: &[u8]) -> Result<Option<GoProgram>, GoError> {
    if !data.starts_with(b"\x7fELF") {
        return Ok(None);
    }
    let file = symbols::open(data).map_err(|e| malformed(format!("not a readable ELF: {e}")))?;
    let image = Image::new(data, &file)?;
    let header = buildinfo::find(&file, &image);
    if header.is_none() && !has_go_sections(&file) {
        return Ok(None);
    }
    let arch = arch_of(&file)?;
    let version = match header {
        Some(header) => buildinfo::version(header, &|addr, len| image.bytes(addr, len))?,
        None => buildinfo::runtime_version(&image)?,
    };
    let minor = buildinfo::minor(&version)?;
    if minor < arch.first_register_abi() {
        return Err(GoError::Unsupported(format!(
            "{version} passes arguments on the stack: Go 1.{} or later is needed on {arch:?}",
            arch.first_register_abi()
        )));
    }
    let funcs = locate(&file, &image, arch, minor)?
        .into_iter()
        .map(|f| f.with_returns(&image, arch))
        .collect::<Result<_, _>>()?;
    Ok(Some(GoProgram {
        version,
        minor,
        arch,
        fd_path: abi::fd_path(minor),
        funcs,
    }))
}

/// Whether `data` is a Go executable: its goroutine stacks move, which uretprobes do not
/// survive, so it is probed apart.
pub fn is_go(data: &[u8]) -> bool {
    object::File::parse(data).is_ok_and(|file| has_go_sections(&file))
}

/// Whether the file has a section only Go's linkers write: its build information, its
/// function table (kept by `-s -w`), its build id note (kept by external linking), its
/// module data (Go 1.26+). Build information alone is not enough: packagers remove it.
pub fn has_go_sections(file: &object::File) -> bool {
    pclntab::SECTIONS
        .iter()
        .chain(&[".go.buildinfo", ".note.go.buildid", ".go.module"])
        .any(|name| file.section_by_name(name).is_some())
}

fn arch_of(file: &object::File) -> Result<Arch, GoError> {
    let arch = match file.architecture() {
        object::Architecture::X86_64 => Some(Arch::X86_64),
        object::Architecture::Aarch64 => Some(Arch::Arm64),
        _ => None,
    };
    match arch {
        Some(arch) if file.is_little_endian() && file.is_64() => Ok(arch),
        _ => Err(GoError::Unsupported(format!(
            "Go for {:?} is not supported: only x86-64 and arm64 (little-endian, 64-bit)",
            file.architecture()
        ))),
    }
}

/// A target function's extent, as virtual addresses: `[entry, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Extent {
    name: &'static str,
    role: Role,
    entry: u64,
    end: u64,
}

impl Extent {
    fn with_returns(self, image: &Image, arch: Arch) -> Result<GoFunc, GoError> {
        let len = self.end.saturating_sub(self.entry);
        if len > MAX_FUNCTION {
            return Err(malformed(format!(
                "{}: {len} bytes long, more than the {MAX_FUNCTION} a Go function may be",
                self.name
            )));
        }
        let (offset, code) = image
            .code(self.entry, len)
            .ok_or_else(|| malformed(format!("{} lies outside the executable code", self.name)))?;
        let returns = disasm::returns(arch, code)
            .map_err(|why| malformed(format!("{}: {why}", self.name)))?;
        if returns.is_empty() {
            return Err(malformed(format!("{}: no return instruction", self.name)));
        }
        Ok(GoFunc {
            name: self.name,
            role: self.role,
            entry: offset,
            returns: returns.into_iter().map(|at| offset + at).collect(),
        })
    }
}

/// The targets the program defines, by `.symtab` when it has one, else by `.gopclntab`.
fn locate(
    file: &object::File,
    image: &Image,
    arch: Arch,
    minor: u32,
) -> Result<Vec<Extent>, GoError> {
    match by_symtab(file) {
        Some(found) => Ok(found),
        None => by_pclntab(file, image, arch, minor),
    }
}

/// Dynamic relocations looked at, at most. Go's PIE fixture has 3,500 per MB: a real
/// 2 GiB program would have 7.5 million.
const MAX_RELOCATIONS: usize = 16 << 20;

/// The values the dynamic loader writes at the addresses `at` of a position-independent
/// executable: the addends of its `R_*_RELATIVE` relocations there. One pass over the
/// relocations, MAX_RELOCATIONS of them at most.
fn relative_relocations(file: &object::File, at: &[u64]) -> Vec<Option<u64>> {
    const R_X86_64_RELATIVE: u32 = 8;
    const R_AARCH64_RELATIVE: u32 = 1027;
    let mut found = vec![None; at.len()];
    let relocations = file.dynamic_relocations().into_iter().flatten();
    for (vaddr, relocation) in relocations.take(MAX_RELOCATIONS) {
        let Some(i) = at.iter().position(|&a| a == vaddr) else {
            continue;
        };
        if found[i].is_some() {
            continue;
        }
        found[i] = match relocation.flags() {
            object::RelocationFlags::Elf {
                r_type: R_X86_64_RELATIVE | R_AARCH64_RELATIVE,
            } => u64::try_from(relocation.addend()).ok(),
            _ => None,
        };
    }
    found
}

/// `None` when the file has no static symbol table (stripped).
fn by_symtab(file: &object::File) -> Option<Vec<Extent>> {
    file.symbol_table()?;
    let names: Vec<&str> = TARGETS.iter().map(|(name, _)| *name).collect();
    let mut found: Vec<Extent> = symbols::functions(file, Tables::Static, &names)
        .into_iter()
        .filter(|f| f.size != 0)
        .filter_map(|f| {
            let &(name, role) = TARGETS.iter().find(|(t, _)| *t == f.name)?;
            Some(Extent {
                name,
                role,
                entry: f.address,
                end: f.address.saturating_add(f.size),
            })
        })
        .collect();
    found.sort_by_key(|f| TARGETS.iter().position(|(t, _)| *t == f.name));
    Some(found)
}

fn by_pclntab(
    file: &object::File,
    image: &Image,
    arch: Arch,
    minor: u32,
) -> Result<Vec<Extent>, GoError> {
    let names: Vec<&str> = TARGETS.iter().map(|(name, _)| *name).collect();
    let relocated = |at: &[u64]| relative_relocations(file, at);
    let quantum = arch.quantum();
    let found = pclntab::lookup(
        file,
        image,
        quantum,
        minor,
        &relocated,
        &names,
        MAX_FUNCTION,
    )?;
    Ok(TARGETS
        .iter()
        .zip(found)
        .filter_map(|(&(name, role), extent)| {
            let (entry, end) = extent?;
            Some(Extent {
                name,
                role,
                entry,
                end,
            })
        })
        .collect())
}
