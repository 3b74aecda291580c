//! TLS functions in programs that keep no symbol of them (Bun's BoringSSL, the aws-lc
//! under Deno's and uv's rustls), found by what the code does: the library's source-file
//! strings (`__FILE__`, passed to its error calls) lead to the code that references them,
//! that code to the functions containing it (starts proven two ways), and the set of
//! reason codes each function raises to a signature (`crate::signatures`). Zero or
//! several matches: nothing is attached, and the caller says so.
//!
//! Bounded: the cheap first check (are the strings there at all) is one search of the
//! data segments; only a program that has them pays for the scans of its code, each one
//! linear pass, and the decoding of a few windows around the references.

mod func;
mod image;
mod scan;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::signatures::{Family, Signature};
use func::{Budget, Proof, Starts, MAX_FUNC};
use image::Image;

/// A function recognised, with what proves it.
#[derive(Debug)]
pub struct Recognised {
    pub name: &'static str,
    pub address: u64,
    /// Where its uprobe goes.
    pub offset: u64,
    pub proof: Proof,
    pub reasons: Vec<u32>,
}

#[derive(Debug)]
pub struct Found {
    pub family: &'static Family,
    pub funcs: Vec<Recognised>,
}

/// What a scan of one file concluded.
#[derive(Debug, Default)]
pub struct Report {
    pub found: Vec<Found>,
    /// Families whose strings are there but whose functions were not recognised, each
    /// with the reason: nothing of them is attached.
    pub refused: Vec<String>,
    pub elapsed: Duration,
}

/// Scans an ELF image for the functions of `families`. A file that is not an x86-64
/// ELF program has none.
pub fn scan(data: &[u8], families: &[&'static Family]) -> Report {
    let started = Instant::now();
    let mut report = Report::default();
    if let Ok(image) = Image::parse(data) {
        for &family in families {
            match recognise(&image, family) {
                None => {}
                Some(Ok(funcs)) => report.found.push(Found { family, funcs }),
                Some(Err(why)) => report.refused.push(format!("{}: {why}", family.name)),
            }
        }
    }
    report.elapsed = started.elapsed();
    report
}

/// What is known of a function that references the family's file.
struct Facts {
    proof: Proof,
    reasons: Vec<u32>,
    callees: Vec<u64>,
}

/// More references to a family's file than any build has (Bun has 31) are a hostile
/// file's, and are not examined.
const MAX_REFERENCES: usize = 1024;
/// Direct calls into the windows around the references, at most; and the calls tried
/// for each target before it is taken for bytes that only look like calls.
const MAX_CALLS: usize = 1 << 20;
const CALLS_TRIED: usize = 8;

/// None when the family's strings are not in the file.
fn recognise(image: &Image, family: &Family) -> Option<Result<Vec<Recognised>, String>> {
    let anchors = scan::anchors(image, family.file);
    if anchors.is_empty() {
        return None;
    }
    let targets: Vec<u64> = anchors.iter().flat_map(|a| a.targets.clone()).collect();
    let refs = scan::references(image, &targets, MAX_REFERENCES);
    if refs.is_empty() {
        return Some(Err(format!("no code references {}", family.file)));
    }
    if refs.len() > MAX_REFERENCES {
        return Some(Err(format!(
            "over {MAX_REFERENCES} references to {}, more than any build has",
            family.file
        )));
    }
    let budget = Budget::new();
    let Some(starts) = starts_near(image, &budget, &refs) else {
        return Some(Err(
            "more direct calls near its code than any build has".into()
        ));
    };
    let funcs = functions(image, &budget, &starts, &refs, &targets, family.err_lib);
    if budget.exhausted() {
        return Some(Err(
            "too much code to examine within the scan's bounds".into()
        ));
    }
    let matched: Result<Vec<_>, String> = family
        .signatures
        .iter()
        .map(|sig| matching(image, &funcs, sig))
        .collect();
    Some(matched)
}

/// The function starts the file gives around the references: unwind-table entries,
/// targets of genuine direct calls, pointers.
fn starts_near(image: &Image, budget: &Budget, refs: &[u64]) -> Option<Starts> {
    let windows = scan::Ranges::new(
        refs.iter()
            .map(|&r| (r.saturating_sub(2 * MAX_FUNC), r.saturating_add(MAX_FUNC)))
            .collect(),
    );
    let sites = scan::calls_into(image, &windows, MAX_CALLS)?;
    let mut calls: Vec<u64> = Vec::new();
    for same in sites.chunk_by(|a, b| a.0 == b.0) {
        let mut tried = same.iter().take(CALLS_TRIED);
        if tried.any(|&(_, site)| func::genuine_call(image, budget, site)) {
            calls.push(same[0].0);
        }
    }
    let keep = |a: u64| windows.contains(a) && image.is_code(a);
    let pointers = if image.pie {
        image.relocated_pointers(keep)
    } else {
        image.stored_pointers(keep)
    };
    let mut fde = image.fde_starts(|a| windows.contains(a));
    fde.sort_unstable();
    Some(Starts::new(image, fde, calls, pointers))
}

/// Every function that contains one of the references, by proven start: the nearest
/// proven start before a reference whose decoding reaches it. References that no such
/// start reaches are left out.
fn functions(
    image: &Image,
    budget: &Budget,
    starts: &Starts,
    refs: &[u64],
    targets: &[u64],
    err_lib: u32,
) -> BTreeMap<u64, Facts> {
    let mut funcs = BTreeMap::new();
    let mut proofs: HashMap<u64, Option<Proof>> = HashMap::new();
    for &r in refs {
        let before = starts.all.partition_point(|&s| s <= r);
        let near = starts.all[..before]
            .iter()
            .rev()
            .take_while(|&&s| r - s < MAX_FUNC);
        for &start in near {
            let proof = proofs
                .entry(start)
                .or_insert_with(|| func::prove(image, budget, starts, start));
            let Some(proof) = proof.clone() else {
                continue;
            };
            if funcs.contains_key(&start) {
                break;
            }
            let Some(body) = func::body(image, budget, starts, start) else {
                break;
            };
            if body.instrs.contains_key(&r) {
                let codes = func::error_codes(&body, targets, !image.pie);
                let reasons = codes
                    .into_iter()
                    .filter(|&(lib, _)| lib == err_lib)
                    .map(|(_, reason)| reason)
                    .collect();
                let callees = body.callees;
                funcs.insert(
                    start,
                    Facts {
                        proof,
                        reasons,
                        callees,
                    },
                );
            }
            break;
        }
    }
    funcs
}

/// The one function that matches `sig`, or why there is not exactly one.
fn matching(
    image: &Image,
    funcs: &BTreeMap<u64, Facts>,
    sig: &Signature,
) -> Result<Recognised, String> {
    let raises = |f: &Facts, reasons: &[u32]| f.reasons == reasons;
    let calls_callee = |f: &Facts| {
        sig.callee.is_empty()
            || f.callees
                .iter()
                .any(|c| funcs.get(c).is_some_and(|c| raises(c, sig.callee)))
    };
    let found: Vec<(&u64, &Facts)> = funcs
        .iter()
        .filter(|(_, f)| raises(f, sig.reasons) && calls_callee(f))
        .collect();
    let [(&address, facts)] = found[..] else {
        let at: Vec<String> = found.iter().map(|(a, _)| format!("{a:#x}")).collect();
        return Err(match at.len() {
            0 => format!("no function matches {}", sig.func),
            n => format!("{n} functions match {} ({})", sig.func, at.join(", ")),
        });
    };
    let offset = image
        .offset_of(address)
        .ok_or_else(|| format!("{} at {address:#x} is outside the file", sig.func))?;
    Ok(Recognised {
        name: sig.func,
        address,
        offset,
        proof: facts.proof.clone(),
        reasons: facts.reasons.clone(),
    })
}
