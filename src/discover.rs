//! Finds the files to probe, each once: the system's TLS libraries (ld cache and the
//! standard directories), the copies that running processes have mapped (containers,
//! bundled copies; opened as the very inode each process maps), executables that carry a
//! TLS library statically, and the files named on the command line.

mod by_code;
mod file;

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use crate::diag::warning;
use crate::golang;
use crate::libs::{self, Abi, Func, FuncId, Kind, Library, LIBRARIES};
use crate::process;
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

    /// Device (as stat(2) gives it) and inode of the file that was checked.
    pub fn file_id(&self) -> (u64, u64) {
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

/// What the user asked to be traced.
pub struct Request<'a> {
    pub kinds: &'a [Kind],
    pub extra_libs: &'a [(&'static Library, PathBuf)],
    pub binaries: &'a [PathBuf],
    pub pid: Option<u32>,
}

#[derive(Default)]
struct Found {
    seen: HashSet<file::FileId>,
    targets: Vec<Target>,
}

impl Found {
    /// Adds the file that `path` opens (named `shown` in messages), with a target for
    /// each of `candidates` whose functions it defines, unless the file was already
    /// added; says whether the file has any.
    fn add(&mut self, candidates: &[&'static Library], path: &Path, shown: &Path) -> Result<bool> {
        // Most mapped copies are one file seen by many processes: skip them unopened.
        if file::id(path).is_some_and(|id| self.seen.contains(&id)) {
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
/// None when the file opened is not the one expected (`is_expected` is given its
/// device, as stat(2) gives it, and inode): a path through /proc can lead elsewhere
/// once its process is gone.
pub fn file_targets(
    candidates: &[&'static Library],
    path: &Path,
    shown: &Path,
    is_expected: impl Fn(u64, u64) -> bool,
) -> Result<Option<Vec<Target>>> {
    let file = file::open(path)?;
    let (dev, ino) = file.id();
    if !is_expected(dev, ino) {
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
        .flat_map(|lib| lib.funcs.iter().map(|f| f.name))
        .collect();
    let map = file.map()?;
    let symbols = Symbols::parse(&map, &wanted)
        .with_context(|| format!("{} is not a readable ELF file", shown.display()))?;
    if symbols.is_go() {
        return go_targets(candidates, &map, file.clone(), shown);
    }
    let target = |lib, probes| Target {
        path: shown.to_path_buf(),
        file: Arc::clone(&file),
        lib,
        probes,
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
        go_layout,
        requested: false,
        found_by: None,
    }])
}

/// The libraries of these kinds.
pub fn enabled(kinds: &[Kind]) -> Vec<&'static Library> {
    LIBRARIES
        .iter()
        .filter(|l| kinds.contains(&l.kind))
        .collect()
}

pub fn targets(req: &Request) -> Result<Vec<Target>> {
    let enabled = enabled(req.kinds);
    let mut found = Found::default();
    for &(lib, ref path) in req.extra_libs {
        let what = format!("--extra-lib {}:{}", lib.name, path.display());
        if !found.add(&[lib], path, path).context(what.clone())? {
            bail!("{what}: the file defines none of {}", func_names(lib));
        }
    }
    for path in req.binaries {
        let what = format!("--binary {}", path.display());
        if !found.add(&enabled, path, path).context(what.clone())? {
            bail!("{what}: the file defines none of the traced functions");
        }
    }
    for t in &mut found.targets {
        t.requested = true;
    }
    if let Some(pid) = req.pid {
        // The executable itself may carry a TLS library statically; most do not.
        // `/proc/PID/exe` opens the very file the process runs, whatever its root.
        let exe = PathBuf::from(format!("/proc/{pid}/exe"));
        let shown = fs::read_link(&exe).map_or_else(|_| exe.clone(), |p| shown_path(pid, &p));
        if let Err(e) = found.add(&enabled, &exe, &shown) {
            warning!("{e:#}");
        }
    }
    let system = system_libraries();
    for lib in &enabled {
        for path in system.iter().filter(|p| name_matches(lib, p)) {
            found.add_found(lib, path, path);
        }
    }
    // After the system's, so that a file both have is shown by its usual name.
    for m in mapped_libraries(&enabled, req.pid) {
        let path = PathBuf::from(format!(
            "/proc/{}/map_files/{:x}-{:x}",
            m.pid, m.start, m.end
        ));
        found.add_found(m.lib, &path, &shown_path(m.pid, &m.path));
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
/// lead to another file.
fn mapped_libraries(enabled: &[&'static Library], pid: Option<u32>) -> Vec<Mapped> {
    let pids = process::pids(pid);
    let mut found = Vec::new();
    for pid in pids {
        let Ok(maps) = fs::read(format!("/proc/{pid}/maps")) else {
            continue;
        };
        for m in mappings(&maps) {
            let path = Path::new(OsStr::from_bytes(m.path));
            if let Some(&lib) = enabled.iter().find(|l| name_matches(l, path)) {
                found.push(Mapped {
                    lib,
                    pid,
                    start: m.start,
                    end: m.end,
                    path: path.to_path_buf(),
                });
            }
        }
    }
    found
}

/// How messages name a file that process `pid` names `path` in `/proc/PID/maps` or
/// `/proc/PID/exe`. The kernel writes those paths from our root through the process's
/// mounts: in our own mount namespace the path is ours as it stands (a chrooted
/// process's included); in another it starts at that namespace's root, which is
/// usually the process's root.
fn shown_path(pid: u32, path: &Path) -> PathBuf {
    let ns = |proc: &str| file::id(Path::new(&format!("/proc/{proc}/ns/mnt")));
    if ns(&pid.to_string()).is_some_and(|id| Some(id) == ns("self")) {
        return path.to_path_buf();
    }
    let mut shown = OsString::from(format!("/proc/{pid}/root"));
    shown.push(path.as_os_str());
    PathBuf::from(shown)
}

/// One file mapping of a `/proc/PID/maps` text.
#[derive(Debug, PartialEq)]
struct Mapping<'a> {
    start: u64,
    end: u64,
    path: &'a [u8],
}

/// The file mappings of a `/proc/PID/maps` text, the first of each file's run only;
/// deleted files are left out. Paths are bytes: file names need not be UTF-8.
fn mappings(maps: &[u8]) -> Vec<Mapping<'_>> {
    let mut found: Vec<Mapping> = maps.split(|&b| b == b'\n').filter_map(mapping).collect();
    found.dedup_by(|a, b| a.path == b.path);
    found
}

/// `START-END PERMS OFFSET DEV INODE   PATH`: the path is the rest of the line.
fn mapping(line: &[u8]) -> Option<Mapping<'_>> {
    let mut fields = line.splitn(6, |&b| b == b' ');
    let range = fields.next()?;
    let dash = range.iter().position(|&b| b == b'-')?;
    let path = fields.nth(4)?.trim_ascii_start();
    if !path.starts_with(b"/") || path.ends_with(b" (deleted)") {
        return None;
    }
    let hex = |digits: &[u8]| u64::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok();
    Some(Mapping {
        start: hex(&range[..dash])?,
        end: hex(&range[dash + 1..])?,
        path,
    })
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
    fn reads_mapped_files() {
        let maps = b"7f00-7f01 r--p 00000000 fd:01 123 /usr/lib/x86_64-linux-gnu/libssl.so.3\n\
            7f01-7f02 r-xp 00001000 fd:01 123 /usr/lib/x86_64-linux-gnu/libssl.so.3\n\
            7f02-7f03 rw-p 00000000 00:00 0 \n\
            00400000-00401000 r-xp 00000000 fd:01 9                  /opt/app/lib with space/libssl.so.3\n\
            7f04-7f05 r-xp 00000000 fd:01 7 /tmp/libssl.so.3 (deleted)\n\
            7f05-7f06 r-xp 00000000 fd:01 8 /tmp/\xff\\012/libssl.so.3\n\
            7f06-zz r-xp 00000000 fd:01 8 /tmp/bad-range\n\
            7ffd-7ffe rw-p 00000000 00:00 0 [stack]\n";
        let m = |start, end, path: &'static [u8]| Mapping { start, end, path };
        assert_eq!(
            mappings(maps),
            [
                m(0x7f00, 0x7f01, b"/usr/lib/x86_64-linux-gnu/libssl.so.3"),
                m(0x400000, 0x401000, b"/opt/app/lib with space/libssl.so.3"),
                m(0x7f05, 0x7f06, b"/tmp/\xff\\012/libssl.so.3"),
            ]
        );
    }

    #[test]
    fn shows_paths_of_other_mount_namespaces_under_the_process_root() {
        let own = Path::new("/lib/libssl.so.3");
        assert_eq!(shown_path(std::process::id(), own), own);
        // No such process: no namespace to compare, so the path is shown as another root's.
        let other = Path::new(OsStr::from_bytes(b"/lib/\xff"));
        assert_eq!(
            shown_path(u32::MAX, other).as_os_str().as_bytes(),
            [format!("/proc/{}/root/lib/", u32::MAX).as_bytes(), b"\xff"].concat()
        );
    }

    #[test]
    fn matches_library_file_names_only() {
        let openssl = libs::by_name("openssl").unwrap();
        assert!(name_matches(openssl, Path::new("/lib/libssl.so.3")));
        assert!(!name_matches(openssl, Path::new("/lib/libssl3.so")));
    }
}
