//! The Go row: the HTTPS fixture's load (a client and a server process over crypto/tls)
//! untraced, under empty uprobes where sslsniff puts its Go probes (the entry and every
//! return instruction of crypto/tls.(*Conn).Read and Write; uretprobes crash Go), and
//! under sslsniff.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use sslsniff::golang;

use crate::floor;
use crate::proc::Proc;
use crate::scratch::Scratch;
use crate::sniff::{self, Report, Sniffer, Status, ATTACH_TIMEOUT};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/go/https.go");
const FUNCS: [&str; 2] = ["crypto/tls.(*Conn).Read", "crypto/tls.(*Conn).Write"];
/// Connections and largest body of the load: small bodies, so that the per-call cost
/// shows rather than the copying.
pub const CONNS: u32 = 4;
pub const MAX_BODY: u32 = 100;

/// The fixture, built once per bench run into a scratch directory.
pub struct Fixture {
    _scratch: Scratch,
    pub exe: PathBuf,
    /// File offsets of the functions' entries and return instructions.
    pub offsets: Vec<usize>,
}

pub fn build() -> Result<Fixture> {
    let scratch = Scratch::new("go")?;
    let exe = scratch.path().join("https");
    // Go wants a cache and a home; ours are scratch, so that root's stays untouched.
    let status = Command::new("go")
        .args(["build", "-o"])
        .arg(&exe)
        .arg(FIXTURE)
        .env("GOCACHE", scratch.path().join("cache"))
        .env("HOME", scratch.path())
        .stdout(Stdio::null())
        .status()
        .context("cannot run `go build` (golang-go installed?)")?;
    ensure!(status.success(), "go build {FIXTURE} failed ({status})");
    let offsets = probe_offsets(&exe)?;
    Ok(Fixture {
        _scratch: scratch,
        exe,
        offsets,
    })
}

/// Entry and return-instruction file offsets of FUNCS, found as sslsniff finds them
/// (a probe on a byte that only looks like RET would corrupt the program).
fn probe_offsets(exe: &Path) -> Result<Vec<usize>> {
    let data = fs::read(exe).with_context(|| format!("cannot read {}", exe.display()))?;
    let program = golang::inspect_bytes(&data)
        .map_err(|e| anyhow::anyhow!("the Go fixture cannot be traced: {e}"))?
        .context("the Go fixture is not a Go program")?;
    let mut offsets = Vec::new();
    for name in FUNCS {
        let f = program
            .funcs
            .iter()
            .find(|f| f.name == name)
            .with_context(|| format!("the Go fixture has no {name}"))?;
        ensure!(!f.returns.is_empty(), "{name} has no return instruction");
        offsets.extend(
            std::iter::once(f.entry)
                .chain(f.returns.iter().copied())
                .map(|o| o as usize),
        );
    }
    Ok(offsets)
}

pub struct GoRun {
    pub untraced_s: f64,
    pub floor_s: f64,
    pub sslsniff_s: f64,
    /// sslsniff's account of the run.
    pub report: Report,
}

/// One run of each, in a row: a server, then the client load of `n` requests.
pub fn run(fx: &Fixture, sslsniff: &Path, n: u32) -> Result<GoRun> {
    let untraced_s = with_server(fx, |url| client(fx, url, n)).context("untraced Go load")?;
    let floor_s = with_server(fx, |url| {
        floor::traced_at(&fx.exe, &fx.offsets, || client(fx, url, n))
    })
    .context("Go load under the floor probes")?;
    let (sslsniff_s, report) = with_server(fx, |url| {
        // Started after the server, so that it finds the fixture among the running
        // executables; -c keeps other sessions' TLS out of the run.
        let mut cmd = Command::new(sslsniff);
        cmd.args(["-c", "https", "--status", "json", "--max-buffer-size", "0"]);
        let (mut sniffer, stdout) = Sniffer::spawn(&mut cmd)?;
        let drained = sniff::drain(stdout);
        wait_for_exe(&mut sniffer, &fx.exe)?;
        let secs = client(fx, url, n);
        let report = sniffer.stop();
        drained.join().ok();
        Ok((secs?, report?))
    })
    .context("Go load under sslsniff")?;
    Ok(GoRun {
        untraced_s,
        floor_s,
        sslsniff_s,
        report,
    })
}

fn wait_for_exe(sniffer: &mut Sniffer, exe: &Path) -> Result<()> {
    let exe = exe.to_string_lossy();
    let deadline = Instant::now() + ATTACH_TIMEOUT;
    let mut traced = false;
    loop {
        match sniffer.next_status(deadline)? {
            Some(Status::Tracing { path, .. }) if path == exe => traced = true,
            Some(Status::Ready) if traced => return Ok(()),
            Some(Status::Ready) => bail!("sslsniff is ready without tracing {exe}"),
            _ => {}
        }
    }
}

/// Runs `body` with the fixture's server listening; passes it the server's URL.
fn with_server<T>(fx: &Fixture, body: impl FnOnce(&str) -> Result<T>) -> Result<T> {
    let mut cmd = Command::new(&fx.exe);
    cmd.args(["server", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let mut server = Proc::spawn(&mut cmd)?;
    let stdout = server.child().stdout.take().expect("stdout is piped");
    let mut addr = String::new();
    BufReader::new(stdout)
        .read_line(&mut addr)
        .context("the Go server did not say its address")?;
    ensure!(
        !addr.trim().is_empty(),
        "the Go server exited before listening"
    );
    body(&format!("https://{}/", addr.trim()))
}

/// The client load, timed from start to exit; it checks every echo itself.
fn client(fx: &Fixture, url: &str, n: u32) -> Result<f64> {
    let started = Instant::now();
    let status = Command::new(&fx.exe)
        .args(["load", url, &n.to_string(), &CONNS.to_string()])
        .args([&MAX_BODY.to_string(), "bench"])
        .stdin(Stdio::null())
        .status()
        .context("cannot start the Go client")?;
    ensure!(status.success(), "the Go load failed ({status})");
    Ok(started.elapsed().as_secs_f64())
}
