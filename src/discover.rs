//! Finds the files to probe: the system's TLS libraries (ld cache and the standard
//! directories) and the ones named on the command line, each file once.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::libs::{self, Func, FuncId, Kind, Library, LIBRARIES};
use crate::symbols::Symbols;
use crate::warn;

/// One file to attach to, with the table functions it defines.
#[derive(Debug)]
pub struct Target {
    pub path: PathBuf,
    pub lib: &'static Library,
    pub probes: Vec<Probe>,
}

#[derive(Debug, Clone, Copy)]
pub struct Probe {
    pub id: FuncId,
    pub func: &'static Func,
    pub offset: u64,
}

/// What the user asked to be traced.
pub struct Request<'a> {
    pub kinds: &'a [Kind],
    pub extra_libs: &'a [(&'static Library, PathBuf)],
}

pub fn targets(req: &Request) -> Result<Vec<Target>> {
    let mut seen = HashSet::new();
    let mut targets = Vec::new();
    for (lib, path) in req.extra_libs {
        let target = probe_file(lib, path)
            .with_context(|| format!("--extra-lib {}:{}", lib.name, path.display()))?;
        if target.probes.is_empty() {
            bail!(
                "--extra-lib {}:{}: the file defines none of {}",
                lib.name,
                path.display(),
                func_names(lib)
            );
        }
        if seen.insert(file_id(path)?) {
            targets.push(target);
        }
    }
    let system = system_libraries();
    for lib in LIBRARIES.iter().filter(|l| req.kinds.contains(&l.kind)) {
        let mut found = targets.iter().any(|t| t.lib.kind == lib.kind);
        for path in system.iter().filter(|p| name_matches(lib, p)) {
            let Ok(id) = file_id(path) else { continue };
            if seen.contains(&id) {
                continue;
            }
            match probe_file(lib, path) {
                Ok(t) if t.probes.is_empty() => {
                    warn!("{} defines none of {}", path.display(), func_names(lib))
                }
                Ok(t) => {
                    seen.insert(id);
                    found = true;
                    targets.push(t);
                }
                Err(e) => warn!("{e:#}"),
            }
        }
        if !found {
            warn!(
                "no {} library found (point to one with --extra-lib {}:PATH)",
                lib.name, lib.name
            );
        }
    }
    Ok(targets)
}

fn probe_file(lib: &'static Library, path: &Path) -> Result<Target> {
    let symbols = Symbols::read(path)?;
    let probes = libs::all_funcs()
        .filter(|(_, l, _)| l.kind == lib.kind)
        .filter_map(|(id, _, func)| {
            let offset = symbols.offset(func.name)?;
            Some(Probe { id, func, offset })
        })
        .collect();
    Ok(Target {
        path: path.to_path_buf(),
        lib,
        probes,
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
    fn matches_library_file_names_only() {
        let openssl = libs::by_name("openssl").unwrap();
        assert!(name_matches(openssl, Path::new("/lib/libssl.so.3")));
        assert!(!name_matches(openssl, Path::new("/lib/libssl3.so")));
    }
}
