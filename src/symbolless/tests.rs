//! The finder against today's Bun, Deno and uv, fetched from their registries by
//! tests/subjects/fetch.sh (whatever version is current: nothing here is pinned).

use std::path::PathBuf;
use std::process::Command;

use super::*;

fn subject(name: &str) -> Vec<u8> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/subjects/fetch.sh");
    let out = Command::new(script)
        .arg(name)
        .output()
        .expect("fetch.sh runs");
    assert!(
        out.status.success(),
        "cannot fetch {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
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
    let report = scan(&data);
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
