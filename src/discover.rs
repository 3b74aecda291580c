//! Finds the files to probe, each once: the system's TLS libraries (ld cache and the
//! standard directories), the copies that running processes have mapped (containers,
//! bundled copies; opened through the process's own root), executables that carry a TLS
//! library statically, and the files named on the command line.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::diag::warning;
use crate::golang;
use crate::libs::{self, Abi, Func, FuncId, Kind, Library, LIBRARIES};
use crate::symbols::Symbols;

/// One file to attach to, with the table functions it defines.
#[derive(Debug)]
pub struct Target {
    pub path: PathBuf,
    pub lib: &'static Library,
    pub probes: Vec<Probe>,
    /// Go programs: the index + 1 of the struct layout that leads from a connection to
    /// its socket (`golang::fd_paths`), 0 when the release's layout is unknown.
    pub go_layout: u32,
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
    seen: HashSet<(u64, u64)>,
    targets: Vec<Target>,
}

impl Found {
    /// Adds a file's targets, one for each of `candidates` whose functions it defines,
    /// unless the file was already added; says whether the file has any.
    fn add(&mut self, candidates: &[&'static Library], path: &Path) -> Result<bool> {
        let id = file_id(path)?;
        if self.seen.contains(&id) {
            return Ok(true);
        }
        let mut targets = file_targets(candidates, path)?;
        let any = !targets.is_empty();
        self.targets.append(&mut targets);
        self.seen.insert(id);
        Ok(any)
    }

    /// Adds a file that was found, not asked for: problems are warnings.
    fn add_found(&mut self, lib: &'static Library, path: &Path) {
        match self.add(&[lib], path) {
            Ok(true) => {}
            Ok(false) => warning!("{} defines none of the traced functions", path.display()),
            Err(e) => warning!("{e:#}"),
        }
    }
}

/// The targets in one file: one for each of `candidates` whose functions it defines.
/// A Go program is an error: uretprobes crash Go's moving stacks.
pub fn file_targets(candidates: &[&'static Library], path: &Path) -> Result<Vec<Target>> {
    let symbols = Symbols::read(path)?;
    if symbols.is_go() {
        return go_targets(candidates, path);
    }
    let mut targets = Vec::new();
    for &lib in candidates.iter().filter(|l| l.abi == Abi::C) {
        let probes: Vec<Probe> = libs::all_funcs()
            .filter(|(_, l, _)| l.kind == lib.kind)
            .filter_map(|(id, _, func)| {
                Some(Probe {
                    id,
                    func,
                    offset: symbols.offset(func.name)?,
                    returns: Vec::new(),
                })
            })
            .collect();
        if !probes.is_empty() {
            targets.push(Target {
                path: path.to_path_buf(),
                lib,
                probes,
                go_layout: 0,
            });
        }
    }
    Ok(targets)
}

/// A Go program's crypto/tls functions, entries and returns; an error says why a Go
/// program cannot be traced (its release, its architecture, a broken table).
fn go_targets(candidates: &[&'static Library], path: &Path) -> Result<Vec<Target>> {
    let Some(&lib) = candidates.iter().find(|l| l.abi == Abi::Go) else {
        return Ok(Vec::new());
    };
    let Some(program) = golang::inspect(path)? else {
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
        .and_then(|p| golang::fd_paths().position(|q| std::ptr::eq(p, q)))
        .map_or(0, |i| i as u32 + 1);
    Ok(vec![Target {
        path: path.to_path_buf(),
        lib,
        probes,
        go_layout,
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
        if !found.add(&[lib], path).context(what.clone())? {
            bail!("{what}: the file defines none of {}", func_names(lib));
        }
    }
    for path in req.binaries {
        let what = format!("--binary {}", path.display());
        if !found.add(&enabled, path).context(what.clone())? {
            bail!("{what}: the file defines none of the traced functions");
        }
    }
    if let Some(pid) = req.pid {
        // The executable itself may carry a TLS library statically; most do not.
        let exe = PathBuf::from(format!("/proc/{pid}/exe"));
        if let Err(e) = found.add(&enabled, &exe) {
            warning!("{e:#}");
        }
    }
    let system = system_libraries();
    for lib in &enabled {
        for path in system.iter().filter(|p| name_matches(lib, p)) {
            found.add_found(lib, path);
        }
    }
    // After the system's, so that a file both have is shown by its usual name.
    for (lib, path) in mapped_libraries(&enabled, req.pid) {
        found.add_found(lib, &path);
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

/// TLS libraries that running processes (or one) have mapped, as paths through each
/// process's own root: a container's copy is its own file, not the host's.
fn mapped_libraries(
    enabled: &[&'static Library],
    pid: Option<u32>,
) -> Vec<(&'static Library, PathBuf)> {
    let pids: Vec<u32> = match pid {
        Some(pid) => vec![pid],
        None => fs::read_dir("/proc")
            .map(|dir| {
                dir.flatten()
                    .filter_map(|e| e.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default(),
    };
    let mut found = Vec::new();
    for pid in pids {
        let Ok(maps) = fs::read_to_string(format!("/proc/{pid}/maps")) else {
            continue;
        };
        for path in mapped_paths(&maps) {
            if let Some(lib) = enabled.iter().find(|l| name_matches(l, Path::new(path))) {
                found.push((*lib, PathBuf::from(format!("/proc/{pid}/root{path}"))));
            }
        }
    }
    found
}

/// File paths in a `/proc/PID/maps` text, each once; deleted files are left out.
fn mapped_paths(maps: &str) -> Vec<&str> {
    let mut paths: Vec<&str> = maps
        .lines()
        .filter_map(|line| line.splitn(6, char::is_whitespace).nth(5))
        .map(str::trim)
        .filter(|p| p.starts_with('/') && !p.ends_with(" (deleted)"))
        .collect();
    paths.dedup();
    paths
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

/// Device and inode: the same library reached through symlinks or two paths is one file.
fn file_id(path: &Path) -> Result<(u64, u64)> {
    let meta = fs::metadata(path).with_context(|| format!("cannot open {}", path.display()))?;
    Ok((meta.dev(), meta.ino()))
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
    fn reads_mapped_paths() {
        let maps = "7f00-7f01 r--p 00000000 fd:01 123 /usr/lib/x86_64-linux-gnu/libssl.so.3\n\
            7f01-7f02 r-xp 00001000 fd:01 123 /usr/lib/x86_64-linux-gnu/libssl.so.3\n\
            7f02-7f03 rw-p 00000000 00:00 0 \n\
            7f03-7f04 r-xp 00000000 fd:01 9 /opt/app/lib with space/libssl.so.3\n\
            7f04-7f05 r-xp 00000000 fd:01 7 /tmp/libssl.so.3 (deleted)\n\
            7ffd-7ffe rw-p 00000000 00:00 0 [stack]\n";
        assert_eq!(
            mapped_paths(maps),
            [
                "/usr/lib/x86_64-linux-gnu/libssl.so.3",
                "/opt/app/lib with space/libssl.so.3"
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
