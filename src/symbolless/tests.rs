//! The finder against today's Bun, Deno and uv, fetched from their registries by
//! tests/subjects/fetch.sh (whatever version is current: nothing here is pinned).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::*;
use crate::signatures::FAMILIES;

/// Every family.
fn all() -> Vec<&'static Family> {
    FAMILIES.iter().collect()
}

fn subject(name: &str) -> Vec<u8> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/subjects/fetch.sh");
    let out = Command::new(script).arg(name).output();
    let out = out.expect("fetch.sh runs");
    let why = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "cannot fetch {name}: {why}");
    let path = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    std::fs::read(&path).unwrap()
}

fn show(name: &str, report: &Report) {
    eprintln!("{name}: {:?}", report.elapsed);
    for f in &report.found {
        for r in &f.funcs {
            eprintln!(
                "  {} {:#x} {:?} {:?}",
                r.name, r.address, r.proof.ways, r.reasons
            );
        }
    }
    for r in &report.refused {
        eprintln!("  refused: {r}");
    }
}

fn assert_found(name: &str, family: &str, funcs: &[&str]) {
    let data = subject(name);
    let report = scan(&data, &all());
    show(name, &report);
    assert!(report.refused.is_empty(), "{name}: {:?}", report.refused);
    let [found] = &report.found[..] else {
        panic!("{name}: not one family found: {:?}", report.found);
    };
    assert_eq!(found.family.name, family);
    let names: Vec<_> = found.funcs.iter().map(|f| f.name).collect();
    assert_eq!(names, funcs);
}

#[test]
fn recognises_bun_boringssl() {
    assert_found("bun", "BoringSSL", &["SSL_write", "SSL_read"]);
}

#[test]
fn recognises_deno_aws_lc() {
    assert_found(
        "deno",
        "aws-lc",
        &[
            "EVP_AEAD_CTX_seal",
            "EVP_AEAD_CTX_seal_scatter",
            "EVP_AEAD_CTX_open",
            "EVP_AEAD_CTX_open_gather",
        ],
    );
}

#[test]
fn recognises_uv_aws_lc() {
    assert_found(
        "uv",
        "aws-lc",
        &[
            "EVP_AEAD_CTX_seal",
            "EVP_AEAD_CTX_seal_scatter",
            "EVP_AEAD_CTX_open",
            "EVP_AEAD_CTX_open_gather",
        ],
    );
}

/// tests/fixtures/fake_boringssl.S built with `define`, scanned.
fn scan_fake(define: &str) -> Report {
    let report = scan(&build_fake(define), &all());
    show(define, &report);
    report
}

/// The bytes of tests/fixtures/fake_boringssl.S built with `define`.
fn build_fake(define: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("fake");
    let src = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/fake_boringssl.S"
    );
    let built = Command::new("cc")
        .arg(format!("-D{define}"))
        .arg("-o")
        .arg(&exe)
        .arg(src)
        .status()
        .expect("cc runs");
    assert!(built.success(), "cannot build the fixture with {define}");
    std::fs::read(&exe).unwrap()
}

#[test]
fn survives_damaged_files() {
    let good = build_fake("SINGLE");
    // xorshift: the same damage on every run.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..3000 {
        let mut bad = good.clone();
        // Half the rounds damage the headers (ELF, program and section headers' area).
        let span = if round % 2 == 0 { 1024 } else { bad.len() };
        for _ in 0..1 + round % 16 {
            let at = next() as usize % span.min(bad.len());
            bad[at] = next() as u8;
        }
        if round % 7 == 0 {
            bad.truncate(next() as usize % good.len());
        }
        let report = scan(&bad, &all());
        assert!(
            report.elapsed < Duration::from_secs(1),
            "round {round}: {:?}",
            report.elapsed
        );
    }
}

#[test]
fn accepts_a_faithful_imitation() {
    let report = scan_fake("SINGLE");
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    let names: Vec<_> = report.found[0].funcs.iter().map(|f| f.name).collect();
    assert_eq!(names, ["SSL_write", "SSL_read"]);
}

#[test]
fn refuses_two_matches() {
    let report = scan_fake("TWO_MATCHES");
    assert!(report.found.is_empty());
    assert_eq!(report.refused.len(), 1);
    assert!(
        report.refused[0].starts_with("BoringSSL: 2 functions match SSL_write ("),
        "{:?}",
        report.refused
    );
}

#[test]
fn refuses_a_start_inside_an_instruction() {
    let report = scan_fake("INSIDE");
    assert!(report.found.is_empty());
    assert_eq!(report.refused, ["BoringSSL: no function matches SSL_write"]);
}

#[test]
fn refuses_to_examine_more_references_than_any_build_has() {
    let report = scan_fake("MANY_REFERENCES");
    assert!(report.found.is_empty());
    assert_eq!(
        report.refused,
        ["BoringSSL: over 1024 references to ssl/ssl_lib.cc, more than any build has"]
    );
}

#[test]
fn finds_nothing_in_an_ordinary_program_cheaply() {
    let data = std::fs::read("/bin/ls").unwrap();
    let report = scan(&data, &all());
    eprintln!("/bin/ls: {:?}", report.elapsed);
    assert!(report.found.is_empty() && report.refused.is_empty());
    assert!(scan(b"not an ELF file", &all()).found.is_empty());
}

/// Every program and library of this machine: none may draw a notice (a family's strings
/// without its functions), and the cost of the first check is printed.
#[test]
fn scans_this_machines_programs_without_a_false_notice() {
    let (mut files, mut bytes, mut total) = (0u32, 0u64, Duration::ZERO);
    let mut slowest = (Duration::ZERO, PathBuf::new());
    for dir in ["/usr/bin", "/usr/sbin", "/usr/lib/x86_64-linux-gnu"] {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            let Ok(file) = std::fs::File::open(&path) else {
                continue;
            };
            if !file.metadata().is_ok_and(|m| m.is_file() && m.len() > 0) {
                continue;
            }
            // SAFETY: mapped read-only, as sslsniff maps what it examines (only the
            // pages looked at cost); the machine's own files do not shrink meanwhile.
            let Ok(data) = (unsafe { memmap2::Mmap::map(&file) }) else {
                continue;
            };
            if !data.starts_with(b"\x7fELF") {
                continue;
            }
            let report = scan(&data, &all());
            assert!(
                report.refused.is_empty(),
                "{}: {:?}",
                path.display(),
                report.refused
            );
            for f in &report.found {
                eprintln!("{}: {} found", path.display(), f.family.name);
            }
            (files, bytes, total) = (files + 1, bytes + data.len() as u64, total + report.elapsed);
            if report.elapsed > slowest.0 {
                slowest = (report.elapsed, path);
            }
        }
    }
    eprintln!(
        "{files} ELF files, {} MiB: scans took {total:?} in all, {:?} on average, {:?} at most ({})",
        bytes >> 20,
        total / files.max(1),
        slowest.0,
        slowest.1.display()
    );
}
