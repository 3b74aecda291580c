//! The Go test subjects' fetch script, shared by the unit tests of `src/golang/` and the
//! end-to-end tests: Debian's Go toolchains and Go programs from npm, in a cache outside
//! the work tree.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/go");

/// Runs the fetch script (one fetch at a time: unit tests run side by side) and returns
/// the path it prints: a GOROOT or an unpacked package.
pub fn fetch(args: &[&str]) -> PathBuf {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let out = Command::new("sh")
        .arg(format!("{FIXTURES}/fetch.sh"))
        .args(args)
        .output()
        .expect("sh runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "fetch.sh {args:?} failed: {stderr}");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}
