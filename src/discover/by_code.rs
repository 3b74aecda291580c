//! Targets in a file that has no TLS symbols: from the user's debug-symbol file for it
//! (`--symbols`, matched by build-id), else from its code (`crate::symbolless`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use anyhow::{bail, Context, Result};
use memmap2::Mmap;
use object::Object;

use super::{file, probes, untie, Probe, Target};
use crate::diag;
use crate::libs::{self, Abi, Library};
use crate::signatures::{Family, FAMILIES};
use crate::symbolless::{self, Found, Recognised};
use crate::symbols::Symbols;

/// A debug-symbol file named with `--symbols`, mapped for the whole run.
struct DebugFile {
    path: PathBuf,
    build_id: Vec<u8>,
    map: Mmap,
}

static DEBUG_FILES: OnceLock<Vec<DebugFile>> = OnceLock::new();

/// Reads the `--symbols` files once, before discovery: each must be an ELF file with a
/// build-id, by which the program it belongs to is recognised.
pub fn set_debug_files(paths: &[PathBuf]) -> Result<()> {
    let mut files = Vec::new();
    for path in paths {
        let what = || format!("--symbols {}", diag::safe_path(path));
        let map = file::open(path).and_then(|f| f.map()).with_context(what)?;
        let build_id = object::File::parse(&*map)
            .ok()
            .and_then(|f| f.build_id().ok().flatten())
            .map(<[u8]>::to_vec);
        let Some(build_id) = build_id else {
            bail!(
                "{}: not an ELF file with a build-id to match its program by",
                what()
            );
        };
        files.push(DebugFile {
            path: path.clone(),
            build_id,
            map,
        });
    }
    let _ = DEBUG_FILES.set(files);
    Ok(())
}

/// The targets of `map`, a file without TLS symbols; an error when a TLS library's
/// code is there but was not recognised (nothing is attached then).
pub fn targets(
    candidates: &[&'static Library],
    map: &[u8],
    file: &Arc<file::Regular>,
    shown: &Path,
) -> Result<Vec<Target>> {
    // Found by their code, no free is known, so no object is tied; through debug
    // symbols, the untie functions are named.
    let target = |lib, probes, found_by| Target {
        path: shown.to_path_buf(),
        file: Arc::clone(file),
        lib,
        probes,
        untie: Vec::new(),
        go_layout: 0,
        requested: false,
        found_by: Some(found_by),
    };
    if let Some((debug, symbols)) = debug_symbols(candidates, map) {
        let found_by = format!(
            "symbols of {} (same build-id)",
            diag::safe_path(&debug.path)
        );
        let found: Vec<Target> = candidates
            .iter()
            .filter(|l| l.abi == Abi::C)
            .map(|&lib| Target {
                untie: untie(lib, &symbols),
                ..target(lib, probes(lib, &symbols), found_by.clone())
            })
            .filter(|t| !t.probes.is_empty())
            .collect();
        if !found.is_empty() {
            return Ok(found);
        }
    }
    from_code(candidates, map, shown, target)
}

/// The targets that the TLS code in `map` is recognised as, made by `target`.
fn from_code(
    candidates: &[&'static Library],
    map: &[u8],
    shown: &Path,
    target: impl Fn(&'static Library, Vec<Probe>, String) -> Target,
) -> Result<Vec<Target>> {
    let enabled = |kind| candidates.iter().find(|l| l.kind == kind).copied();
    let families: Vec<&Family> = FAMILIES
        .iter()
        .filter(|f| enabled(f.kind).is_some())
        .collect();
    if families.is_empty() {
        return Ok(Vec::new());
    }
    let report = symbolless::scan(map, &families);
    let mut found = Vec::new();
    for f in &report.found {
        if let Some(lib) = enabled(f.family.kind) {
            found.push(target(lib, recognised_probes(lib, f), found_by(f, &report)));
        }
    }
    let refused: Vec<&String> = report.refused.iter().collect();
    if found.is_empty() && !refused.is_empty() {
        bail!(
            "{} has TLS code that was not recognised, so nothing is attached: {}",
            diag::safe_path(shown),
            join(&refused)
        );
    }
    for why in refused {
        diag::notice(&format!(
            "{}: {why}; nothing of it is attached",
            diag::safe_path(shown)
        ));
    }
    Ok(found)
}

fn join(items: &[&String]) -> String {
    items
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The symbols of the `--symbols` file whose build-id is the program's.
fn debug_symbols(
    candidates: &[&'static Library],
    map: &[u8],
) -> Option<(&'static DebugFile, Symbols)> {
    let files = DEBUG_FILES.get()?;
    let build_id = object::File::parse(map).ok()?.build_id().ok()??;
    let debug = files.iter().find(|d| d.build_id == build_id)?;
    let wanted: Vec<&'static str> = candidates
        .iter()
        .flat_map(|lib| lib.symbol_names())
        .collect();
    let symbols = Symbols::parse_apart(map, &debug.map, &wanted).ok()?;
    Some((debug, symbols))
}

fn recognised_probes(lib: &'static Library, found: &Found) -> Vec<Probe> {
    found
        .funcs
        .iter()
        .filter_map(|r: &Recognised| {
            let (id, _, func) =
                libs::all_funcs().find(|(_, l, f)| l.kind == lib.kind && f.name == r.name)?;
            Some(Probe {
                id,
                func,
                offset: r.offset,
                returns: Vec::new(),
            })
        })
        .collect()
}

/// How the functions were found, for the `tracing` line: each one's address, the ways
/// its start was proven and the reason codes it raises.
fn found_by(found: &Found, report: &symbolless::Report) -> String {
    let funcs: Vec<String> = found
        .funcs
        .iter()
        .map(|r| {
            let reasons: Vec<String> = r.reasons.iter().map(u32::to_string).collect();
            format!(
                "{} at {:#x} ({}; reasons {})",
                r.name,
                r.address,
                r.proof.ways.join(", "),
                reasons.join(" ")
            )
        })
        .collect();
    format!(
        "{}'s code, by its error reasons: {}; scanned in {} ms",
        found.family.name,
        funcs.join(", "),
        report.elapsed.as_millis()
    )
}
