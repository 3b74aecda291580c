//! Finds the files to probe, each once: the system's TLS libraries (ld cache and the
//! standard directories), the copies that running processes have mapped (containers,
//! bundled copies; opened as the very inode each process maps), executables that carry a
//! TLS library statically, and the files named on the command line.

mod by_code;
mod file;

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use crate::config::Discovery;
use crate::diag::warning;
use crate::golang;
use crate::libs::{self, Abi, Func, FuncId, Library};
use crate::procfs::{self, FileId};
use crate::symbols::Symbols;

pub use by_code::set_debug_files;

/// One file to attach to, with the table functions it defines.
#[derive(Debug)]
pub struct Target {
    /// How messages name the file. Paths of mapped files come from the traced side
    /// (`/proc/PID/maps`): bytes as they are, for whoever prints them to escape.
    pub path: PathBuf,
    /// The file that was checked and read, held open as long as the target lives (to
    /// the end of the run): probes are attached through its descriptor.
    file: Arc<file::Regular>,
    pub lib: &'static Library,
    pub probes: Vec<Probe>,
    /// The library's untie functions the file defines, with their offsets; empty when
    /// it lacks the free among them, and then none of its objects is ever tied.
    pub untie: Vec<(&'static str, u64)>,
    /// Go programs: the index + 1 of the struct layout that leads from a connection to
    /// its socket (`golang::fd_paths`), 0 when the release's layout is unknown.
    pub go_layout: u32,
    /// Named on the command line (--extra-lib, --binary): kept whatever maps it.
    pub requested: bool,
    /// How functions of a file without TLS symbols were found (for the `tracing` line).
    pub found_by: Option<String>,
}

impl Target {
    /// The path to attach probes to: it names the inode whose symbols were read, so
    /// that nothing swapped in at `path` since (a symlink, another file) is probed.
    pub fn attach_path(&self) -> PathBuf {
        self.file.fd_path()
    }

    /// The file that was checked.
    pub fn file_id(&self) -> FileId {
        self.file.id()
    }
}

#[derive(Debug, Clone)]
pub struct Probe {
    pub id: FuncId,
    pub func: &'static Func,
    /// The entry, as a file offset.
    pub offset: u64,
    /// Go: every return instruction (no uretprobes in Go); empty for C functions.
    pub returns: Vec<u64>,
}

#[derive(Default)]
struct Found {
    seen: HashSet<FileId>,
    targets: Vec<Target>,
}

impl Found {
    /// Adds the file that `path` opens (named `shown` in messages), with a target for
    /// each of `candidates` whose functions it defines, unless the file was already
    /// added; says whether the file has any.
    fn add(&mut self, candidates: &[&'static Library], path: &Path, shown: &Path) -> Result<bool> {
        // Most mapped copies are one file seen by many processes: skip them unopened.
        if FileId::of_path(path).is_some_and(|id| self.seen.contains(&id)) {
            return Ok(true);
        }
        let file = file::open(path).map_err(|e| {
            if path == shown {
                e
            } else {
                e.context(shown.display().to_string())
            }
        })?;
        if !self.seen.insert(file.id()) {
            return Ok(true);
        }
        let mut targets = targets_in(candidates, Arc::new(file), shown)?;
        let any = !targets.is_empty();
        self.targets.append(&mut targets);
        Ok(any)
    }

    /// Adds a file that was found, not asked for: problems are warnings.
    fn add_found(&mut self, lib: &'static Library, path: &Path, shown: &Path) {
        match self.add(&[lib], path, shown) {
            Ok(true) => {}
            Ok(false) => warning!("{} defines none of the traced functions", shown.display()),
            Err(e) => warning!("{e:#}"),
        }
    }
}

/// The targets in the file that `path` opens (named `shown` in messages): one for each
/// of `candidates` whose functions it defines.
/// None when the file opened is not the one expected: a path through /proc can lead
/// elsewhere once its process is gone.
pub fn file_targets(
    candidates: &[&'static Library],
    path: &Path,
    shown: &Path,
    is_expected: impl Fn(FileId) -> bool,
) -> Result<Option<Vec<Target>>> {
    let file = file::open(path)?;
    if !is_expected(file.id()) {
        return Ok(None);
    }
    targets_in(candidates, Arc::new(file), shown).map(Some)
}

fn targets_in(
    candidates: &[&'static Library],
    file: Arc<file::Regular>,
    shown: &Path,
) -> Result<Vec<Target>> {
    let wanted: Vec<&'static str> = candidates
        .iter()
        .flat_map(|lib| lib.symbol_names())
        .collect();
    let map = file.map()?;
    // A Go program's TLS is Go's own: its C symbols are not looked for. Its goroutine
    // stacks move, which uretprobes do not survive.
    if golang::is_go(&map) {
        return go_targets(candidates, &map, file.clone(), shown);
    }
    let symbols = Symbols::parse(&map, &wanted)
        .with_context(|| format!("{} is not a readable ELF file", shown.display()))?;
    let target = |lib, probes| Target {
        path: shown.to_path_buf(),
        file: Arc::clone(&file),
        lib,
        probes,
        untie: untie(lib, &symbols),
        go_layout: 0,
        requested: false,
        found_by: None,
    };
    let found: Vec<Target> = candidates
        .iter()
        .filter(|l| l.abi == Abi::C)
        .map(|&lib| target(lib, probes(lib, &symbols)))
        .filter(|t| !t.probes.is_empty())
        .collect();
    if !found.is_empty() {
        return Ok(found);
    }
    by_code::targets(candidates, &map, &file, shown)
}

/// The functions of `lib` that the file defines.
fn probes(lib: &Library, symbols: &Symbols) -> Vec<Probe> {
    libs::all_funcs()
        .filter(|(_, l, _)| l.kind == lib.kind)
        .filter_map(|(id, _, func)| {
            Some(Probe {
                id,
                func,
                offset: symbols.offset(func.name)?,
                returns: Vec::new(),
            })
        })
        .collect()
}

/// The untie functions of `lib` that the file defines, or none when its free is not
/// among them.
fn untie(lib: &Library, symbols: &Symbols) -> Vec<(&'static str, u64)> {
    let found: Vec<(&'static str, u64)> = lib
        .untie
        .iter()
        .filter_map(|&name| Some((name, symbols.offset(name)?)))
        .collect();
    match (lib.untie.first(), found.first()) {
        (Some(free), Some((name, _))) if free == name => found,
        _ => Vec::new(),
    }
}

/// A Go program's crypto/tls functions, entries and returns; an error says why a Go
/// program cannot be traced (its release, its architecture, a broken table).
fn go_targets(
    candidates: &[&'static Library],
    bytes: &[u8],
    file: Arc<file::Regular>,
    shown: &Path,
) -> Result<Vec<Target>> {
    let Some(&lib) = candidates.iter().find(|l| l.abi == Abi::Go) else {
        return Ok(Vec::new());
    };
    let program = golang::inspect_bytes(bytes)
        .with_context(|| format!("{} is a Go program that cannot be traced", shown.display()))?;
    let Some(program) = program else {
        return Ok(Vec::new());
    };
    let probes: Vec<Probe> = program
        .funcs
        .into_iter()
        .filter_map(|f| {
            let (id, _, func) =
                libs::all_funcs().find(|(_, l, func)| l.kind == lib.kind && func.name == f.name)?;
            Some(Probe {
                id,
                func,
                offset: f.entry,
                returns: f.returns,
            })
        })
        .collect();
    if probes.is_empty() {
        return Ok(Vec::new());
    }
    let go_layout = program
        .fd_path
        .and_then(|p| golang::fd_paths().position(|q| q == p))
        .map_or(0, |i| i as u32 + 1);
    Ok(vec![Target {
        path: shown.to_path_buf(),
        file,
        lib,
        probes,
        untie: Vec::new(),
        go_layout,
        requested: false,
        found_by: None,
    }])
}

/// The files to trace from the start (with `-p`, those of that process).
pub fn targets(req: &Discovery, pid: Option<u32>) -> Result<Vec<Target>> {
    let enabled = &req.libraries;
    let mut found = Found::default();
    for &(lib, ref path) in &req.extra_libs {
        let what = format!("--extra-lib {}:{}", lib.name, path.display());
        if !found.add(&[lib], path, path).context(what.clone())? {
            bail!("{what}: the file defines none of {}", func_names(lib));
        }
    }
    for path in &req.binaries {
        let what = format!("--binary {}", path.display());
        if !found.add(enabled, path, path).context(what.clone())? {
            bail!("{what}: the file defines none of the traced functions");
        }
    }
    for t in &mut found.targets {
        t.requested = true;
    }
    if let Some(pid) = pid {
        // The executable itself may carry a TLS library statically; most do not.
        let exe = procfs::exe(pid);
        let shown =
            procfs::exe_link(pid).map_or_else(|| exe.clone(), |p| procfs::shown_path(pid, &p));
        if let Err(e) = found.add(enabled, &exe, &shown) {
            warning!("{e:#}");
        }
    }
    let system = system_libraries();
    for lib in enabled {
        for path in system.iter().filter(|p| name_matches(lib, p)) {
            found.add_found(lib, path, path);
        }
    }
    // After the system's, so that a file both have is shown by its usual name.
    for m in mapped_libraries(enabled, pid) {
        let path = procfs::map_file(m.pid, m.start, m.end);
        found.add_found(m.lib, &path, &procfs::shown_path(m.pid, &m.path));
    }
    // Go is in programs, not in a library file.
    for lib in enabled.iter().filter(|l| l.abi == Abi::C) {
        if !found.targets.iter().any(|t| t.lib.kind == lib.kind) {
            warning!(
                "no {} library found (point to one with --extra-lib {}:PATH)",
                lib.name,
                lib.name
            );
        }
    }
    Ok(found.targets)
}

/// A TLS library that a process maps, and where.
struct Mapped {
    lib: &'static Library,
    pid: u32,
    start: u64,
    end: u64,
    /// As `/proc/PID/maps` names it.
    path: PathBuf,
}

/// TLS libraries that running processes (or one) have mapped. Each is opened later
/// through `/proc/PID/map_files/START-END`, which names the inode mapped there: no path
/// is resolved again, so neither a symlink planted in a process's root (which would
/// resolve against ours) nor a chroot (whose maps paths already start at our root) can
/// lead to another file. Unlinked files are left out: an upgrade's old copy is traced
/// until its last process goes, but not found anew.
fn mapped_libraries(enabled: &[&'static Library], pid: Option<u32>) -> Vec<Mapped> {
    let mut found: Vec<Mapped> = Vec::new();
    for pid in procfs::pids(pid) {
        let Some(maps) = procfs::maps(pid) else {
            continue;
        };
        let mut last = None;
        for m in procfs::mappings(&maps).filter(|m| !m.deleted) {
            // A library is mapped in several runs, one after the other: the first will do.
            if last.replace(m.file) == Some(m.file) {
                continue;
            }
            if let Some(&lib) = enabled.iter().find(|l| name_matches(l, m.path())) {
                found.push(Mapped {
                    lib,
                    pid,
                    start: m.start,
                    end: m.end,
                    path: m.path().to_path_buf(),
                });
            }
        }
    }
    found
}

fn func_names(lib: &Library) -> String {
    lib.funcs
        .iter()
        .map(|f| f.name)
        .collect::<Vec<_>>()
        .join(", ")
}

fn name_matches(lib: &Library, path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| lib.matches_file_name(n))
}

/// Every shared library the dynamic loader knows of, plus the standard directories'
/// contents (the cache can be stale or, on musl systems, absent).
fn system_libraries() -> Vec<PathBuf> {
    let mut paths = ld_cache();
    let triplet = format!("{}-linux-gnu", std::env::consts::ARCH);
    let dirs = [
        "/lib".to_string(),
        "/lib64".to_string(),
        "/usr/lib".to_string(),
        "/usr/lib64".to_string(),
        "/usr/local/lib".to_string(),
        format!("/lib/{triplet}"),
        format!("/usr/lib/{triplet}"),
    ];
    for dir in dirs {
        if let Ok(entries) = fs::read_dir(dir) {
            paths.extend(entries.flatten().map(|e| e.path()));
        }
    }
    paths
}

fn ld_cache() -> Vec<PathBuf> {
    let output = ["ldconfig", "/sbin/ldconfig", "/usr/sbin/ldconfig"]
        .iter()
        .find_map(|cmd| Command::new(cmd).arg("-p").output().ok());
    let Some(output) = output else {
        return Vec::new();
    };
    parse_ld_cache(&String::from_utf8_lossy(&output.stdout))
}

/// `ldconfig -p` lines look like `\tlibssl.so.3 (libc6,x86-64) => /lib/x86_64-linux-gnu/libssl.so.3`.
fn parse_ld_cache(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|line| line.split_once(" => "))
        .map(|(_, path)| PathBuf::from(path.trim()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ldconfig_output() {
        let text = "12 libs found in cache `/etc/ld.so.cache'\n\
            \tlibssl.so.3 (libc6,x86-64) => /lib/x86_64-linux-gnu/libssl.so.3\n\
            \tlibssl3.so (libc6,x86-64) => /lib/x86_64-linux-gnu/libssl3.so\n";
        assert_eq!(
            parse_ld_cache(text),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libssl.so.3"),
                PathBuf::from("/lib/x86_64-linux-gnu/libssl3.so")
            ]
        );
    }

    #[test]
    fn matches_library_file_names_only() {
        let openssl = libs::by_name("openssl").unwrap();
        assert!(name_matches(openssl, Path::new("/lib/libssl.so.3")));
        assert!(!name_matches(openssl, Path::new("/lib/libssl3.so")));
    }
}
