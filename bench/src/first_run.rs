//! First runs (`--only first-run`): how soon a never-seen executable or library is
//! attached after the kernel's event that revealed it, by size; and what following
//! costs a loop of execs, of files it has examined and of fresh copies, with holding
//! (the default) and without (--no-hold).
//!
//! Each latency sample is the first run of a fresh copy, APART from the one before: the
//! kernel's first uprobe registration after a quiet spell waits out an RCU grace
//! period, as it does for one new program on a machine (attaches in quick succession
//! share one, which is why the back-to-back copies of the follow part are faster).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};

use crate::follow::percentile;
use crate::proc::Proc;
use crate::report::{median, table};
use crate::rows::load_avg;
use crate::scratch::{Scratch, LIBSSL};
use crate::sniff::{self, Sniffer, Status, ATTACH_TIMEOUT};

const OPENSSL_CLIENT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/openssl_client.c"
);
const GO_FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/go/https.go");
const NODE: &str = "/usr/bin/node";
/// Between two samples: long enough for the kernel's rcu_sync to go idle again.
const APART: Duration = Duration::from_millis(200);
/// How long a fresh copy may take to be announced before it counts as not attached.
const ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(5);
/// Execs per loop: of an examined file, of fresh copies, of fresh TLS programs.
const SEEN_EXECS: u32 = 1000;
const FRESH_EXECS: u32 = 200;
const FRESH_TLS_EXECS: u32 = 20;

/// A kind of file whose first runs are measured.
pub struct Subject {
    pub name: &'static str,
    file: PathBuf,
    size: u64,
    /// How a copy runs until killed: as a program, or preloaded into `sleep`.
    start: fn(&Path) -> Command,
}

/// The subjects, built once into `scratch`: a library, a static OpenSSL program, Go
/// plain and stripped PIE, node.
pub fn subjects(scratch: &Scratch) -> Result<Vec<Subject>> {
    let static_client = build_static_client(scratch)?;
    let go = go_build(scratch, "go", &[])?;
    let go_pie = go_build(scratch, "go-pie", &["-buildmode=pie", "-ldflags=-s -w"])?;
    let subject = |name, file: PathBuf, start| -> Result<Subject> {
        let size = fs::metadata(&file)
            .with_context(|| format!("cannot read {}", file.display()))?
            .len();
        Ok(Subject {
            name,
            file,
            size,
            start,
        })
    };
    Ok(vec![
        subject("libssl.so.3, preloaded", LIBSSL.into(), preloaded)?,
        subject("static OpenSSL program", static_client, gated)?,
        subject("Go program", go, go_server)?,
        subject("Go, stripped PIE", go_pie, go_server)?,
        subject("node", NODE.into(), node)?,
    ])
}

fn preloaded(copy: &Path) -> Command {
    let mut cmd = Command::new("sleep");
    cmd.arg("10").env("LD_PRELOAD", copy);
    cmd
}

/// The fixture client waits for a line on stdin before connecting (never sent).
fn gated(copy: &Path) -> Command {
    let mut cmd = Command::new(copy);
    cmd.args(["1", "x"]).env("SSLSNIFF_GATE", "1");
    cmd
}

fn go_server(copy: &Path) -> Command {
    let mut cmd = Command::new(copy);
    cmd.args(["server", "127.0.0.1:0"]);
    cmd
}

fn node(copy: &Path) -> Command {
    let mut cmd = Command::new(copy);
    cmd.args(["-e", "setTimeout(() => {}, 10000)"]);
    cmd
}

pub fn build_static_client(scratch: &Scratch) -> Result<PathBuf> {
    let exe = scratch.path().join("static_client");
    let status = Command::new("cc")
        .args(["-O2", "-static", "-o"])
        .arg(&exe)
        .arg(OPENSSL_CLIENT)
        .args(["-lssl", "-lcrypto"])
        .stderr(Stdio::null())
        .status()
        .context("cannot run cc")?;
    ensure!(status.success(), "cannot build {OPENSSL_CLIENT} statically");
    Ok(exe)
}

fn go_build(scratch: &Scratch, name: &str, flags: &[&str]) -> Result<PathBuf> {
    let exe = scratch.path().join(name);
    let status = Command::new("go")
        .arg("build")
        .args(flags)
        .arg("-o")
        .arg(&exe)
        .arg(GO_FIXTURE)
        .env("GOCACHE", scratch.path().join("cache"))
        .env("HOME", scratch.path())
        .stdout(Stdio::null())
        .status()
        .context("cannot run `go build` (golang-go installed?)")?;
    ensure!(
        status.success(),
        "go build {flags:?} {GO_FIXTURE} failed ({status})"
    );
    Ok(exe)
}

/// One first run, as sslsniff -d tells it.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// From the kernel's event to attached.
    pub latency_us: u64,
    /// Of which until examined: the wait to be examined and the examination.
    pub examined_us: u64,
    pub held: bool,
}

pub struct Latencies {
    pub subject: &'static str,
    pub size: u64,
    pub runs: usize,
    pub samples: Vec<Sample>,
    pub load: String,
}

/// `n` first runs of each subject under one sslsniff (`-d`, default flags).
pub fn latencies(sslsniff: &Path, subjects: &[Subject], n: usize) -> Result<Vec<Latencies>> {
    let scratch = Scratch::new("first-run")?;
    let mut cmd = Command::new(sslsniff);
    cmd.args(["-d", "--status", "json"]);
    let (mut sniffer, stdout) = Sniffer::spawn(&mut cmd)?;
    let drained = sniff::drain(stdout);
    sniffer.wait_ready(ATTACH_TIMEOUT)?;
    let mut all = Vec::new();
    for subject in subjects {
        eprintln!("sslsniff-bench: first runs of {}, {n} copies", subject.name);
        let mut samples = Vec::new();
        for i in 0..n {
            samples.extend(first_run(&mut sniffer, &scratch, subject, i)?);
            thread::sleep(APART);
        }
        all.push(Latencies {
            subject: subject.name,
            size: subject.size,
            runs: n,
            samples,
            load: load_avg(),
        });
    }
    sniffer.stop()?;
    drained.join().ok();
    Ok(all)
}

/// Copy `i` of the subject, started and kept alive until announced (or not in time).
fn first_run(
    sniffer: &mut Sniffer,
    scratch: &Scratch,
    subject: &Subject,
    i: usize,
) -> Result<Option<Sample>> {
    let dir = scratch.path().join(format!("{}-{i}", subject.size));
    fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let name = subject
        .file
        .file_name()
        .context("a subject without a name")?;
    let copy = dir.join(name);
    fs::copy(&subject.file, &copy)
        .with_context(|| format!("cannot copy {}", subject.file.display()))?;
    let mut cmd = (subject.start)(&copy);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let running = Proc::spawn(&mut cmd)?;
    let sample = announced(sniffer, &copy.to_string_lossy());
    drop(running);
    fs::remove_dir_all(&dir).ok();
    sample
}

fn announced(sniffer: &mut Sniffer, path: &str) -> Result<Option<Sample>> {
    let deadline = Instant::now() + ANNOUNCE_TIMEOUT;
    while Instant::now() < deadline {
        let Ok(status) = sniffer.next_status(deadline) else {
            return Ok(None);
        };
        if let Some(Status::Tracing {
            path: p,
            latency_us,
            examined_us,
            held,
            ..
        }) = status
        {
            if p == path {
                let (Some(latency_us), Some(examined_us)) = (latency_us, examined_us) else {
                    anyhow::bail!("{path} announced without latency_us (-d)");
                };
                return Ok(Some(Sample {
                    latency_us,
                    examined_us,
                    held,
                }));
            }
        }
    }
    Ok(None)
}

pub fn print_latencies(rows: &[Latencies]) {
    println!();
    println!("First runs: fresh copies (new inodes) started one at a time, {} ms apart, under sslsniff -d (default flags); from the kernel's event to examined and to attached:", APART.as_millis());
    let p = |v: &[u64], pct| percentile(v, pct).map_or("-".into(), |us| format!("{us}"));
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|l| {
            let sorted = |f: fn(&Sample) -> u64| {
                let mut v: Vec<u64> = l.samples.iter().map(f).collect();
                v.sort_unstable();
                v
            };
            let (lat, exa) = (sorted(|s| s.latency_us), sorted(|s| s.examined_us));
            let held = l.samples.iter().filter(|s| s.held).count();
            vec![
                l.subject.to_string(),
                format!("{:.1}", l.size as f64 / 1e6),
                format!("{}/{}", l.samples.len(), l.runs),
                format!("{held}"),
                p(&exa, 50),
                p(&exa, 99),
                p(&lat, 50),
                p(&lat, 99),
                l.load.clone(),
            ]
        })
        .collect();
    table(
        &[
            "file",
            "MB",
            "attached",
            "held",
            "examined p50(us)",
            "p99",
            "attached p50(us)",
            "p99",
            "load",
        ],
        &cells,
    );
    println!("held: runs whose process waited, stopped, until its file was attached (its first TLS call then captured); examined: queue wait and examination; the rest of attached is the kernel's uprobe registration.");
}

/// Following with holding, without, or no sslsniff at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    None,
    NoHold,
    Hold,
}

impl Mode {
    pub const ALL: [Mode; 3] = [Mode::None, Mode::NoHold, Mode::Hold];

    fn label(self) -> &'static str {
        match self {
            Mode::None => "none",
            Mode::NoHold => "--no-hold",
            Mode::Hold => "default (hold)",
        }
    }
}

/// Mean wall time of one fork, exec and wait, by kind of file.
pub struct ExecCost {
    pub mode: Mode,
    pub seen_us: f64,
    pub fresh_us: f64,
    pub fresh_tls_ms: f64,
    pub load: String,
}

/// The three exec loops under `mode`: /bin/true (examined at start), fresh copies of
/// /bin/true, fresh copies of the static OpenSSL program (run without arguments: it
/// exits at once).
pub fn exec_cost(sslsniff: &Path, static_client: &Path, mode: Mode) -> Result<ExecCost> {
    let scratch = Scratch::new("exec")?;
    let sniffer = match mode {
        Mode::None => None,
        Mode::NoHold | Mode::Hold => {
            let mut cmd = Command::new(sslsniff);
            cmd.args(["--status", "json"]);
            if mode == Mode::NoHold {
                cmd.arg("--no-hold");
            }
            let (mut sniffer, stdout) = Sniffer::spawn(&mut cmd)?;
            let drained = sniff::drain(stdout);
            sniffer.wait_ready(ATTACH_TIMEOUT)?;
            Some((sniffer, drained))
        }
    };
    let seen = Path::new("/bin/true");
    let seen_us = execs(&scratch, seen, SEEN_EXECS, false)? * 1e6;
    let fresh_us = execs(&scratch, seen, FRESH_EXECS, true)? * 1e6;
    let fresh_tls_ms = execs(&scratch, static_client, FRESH_TLS_EXECS, true)? * 1e3;
    if let Some((sniffer, drained)) = sniffer {
        sniffer.stop()?;
        drained.join().ok();
    }
    Ok(ExecCost {
        mode,
        seen_us,
        fresh_us,
        fresh_tls_ms,
        load: load_avg(),
    })
}

/// Mean seconds per run of `file` (each a fresh copy when `fresh`: the copying is not
/// timed), whatever its exit status.
fn execs(scratch: &Scratch, file: &Path, n: u32, fresh: bool) -> Result<f64> {
    let mut total = Duration::ZERO;
    for i in 0..n {
        let run = if fresh {
            let copy = scratch.path().join(format!("fresh-{i}"));
            fs::copy(file, &copy).with_context(|| format!("cannot copy {}", file.display()))?;
            copy
        } else {
            file.to_path_buf()
        };
        let started = Instant::now();
        Command::new(&run)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .with_context(|| format!("cannot run {}", run.display()))?;
        total += started.elapsed();
        if fresh {
            fs::remove_file(&run).ok();
        }
    }
    Ok(total.as_secs_f64() / f64::from(n))
}

pub fn print_exec_costs(runs: &[ExecCost]) {
    println!();
    println!("Exec cost: fork, exec and wait from the bench, mean per exec: /bin/true {SEEN_EXECS} times (examined at start), {FRESH_EXECS} fresh copies of it, {FRESH_TLS_EXECS} fresh copies of the static OpenSSL program (exits at once); the modes interleaved:");
    let cells: Vec<Vec<String>> = runs
        .iter()
        .map(|c| {
            vec![
                c.mode.label().into(),
                format!("{:.0}", c.seen_us),
                format!("{:.0}", c.fresh_us),
                format!("{:.1}", c.fresh_tls_ms),
                c.load.clone(),
            ]
        })
        .collect();
    table(
        &["sslsniff", "seen(us)", "fresh(us)", "fresh TLS(ms)", "load"],
        &cells,
    );
    for mode in Mode::ALL {
        let of = |f: fn(&ExecCost) -> f64| {
            median(runs.iter().filter(|c| c.mode == mode).map(f).collect())
        };
        println!(
            "  median {:>15}: seen {:.0} us, fresh {:.0} us, fresh TLS {:.1} ms",
            mode.label(),
            of(|c| c.seen_us),
            of(|c| c.fresh_us),
            of(|c| c.fresh_tls_ms)
        );
    }
}
