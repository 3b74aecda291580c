//! The measurements: for each size, runs of the load untraced, under the floor probes
//! and under sslsniff.

use std::env;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, ensure, Context, Result};

use crate::floor;
use crate::load::Outcome;
use crate::message::size_label;
use crate::message::Messages;
use crate::proc::Proc;
use crate::sniff::{self, Files, Format, Mode, Report, Sink, MODES};
use crate::verify::{self, Capture};

/// sslsniff is stopped a moment after the traffic ends, as a user would stop it: by then
/// it should have printed everything, so that its stop time is its exit, not a backlog.
const DRAIN_GRACE: Duration = Duration::from_secs(1);

pub struct Plan {
    pub sslsniff: PathBuf,
    /// Message size and calls per run.
    pub sizes: Vec<(usize, u64)>,
    pub runs: u64,
    /// Where the file sinks' files go.
    pub file_dir: PathBuf,
}

pub struct SizeResult {
    pub size: usize,
    pub n: u64,
    pub runs: Vec<Run>,
}

pub struct Run {
    pub untraced: Outcome,
    pub floor: Outcome,
    /// One per mode of MODES.
    pub sniffed: Vec<Sniffed>,
    /// Other tracers found running around the run: their probes may be on libssl too.
    pub others: Vec<String>,
}

pub struct Sniffed {
    pub mode: Mode,
    /// Calls the writer made: fewer than the run's for formats whose output is larger
    /// than the payload (`calls_for`).
    pub n: u64,
    pub outcome: Outcome,
    pub report: Report,
    pub capture: Capture,
}

/// The calls of a run in `format`: hexdump's output is five times the payload, so that
/// its runs get a fifth of the calls, to keep its files and checks the size of the others'.
pub fn calls_for(format: Format, n: u64) -> u64 {
    (n / format.expansion()).max(1)
}

/// Stops at the first error. Ctrl-C reaches the children too, so a measurement in
/// progress fails at once; `interrupted` tells that apart from a real failure.
pub fn run(plan: &Plan, interrupted: &AtomicBool) -> Result<Vec<SizeResult>> {
    let mut results = Vec::new();
    for &(size, n) in &plan.sizes {
        let mut runs = Vec::new();
        for i in 0..plan.runs {
            let run = match one_run(plan, size, n) {
                _ if interrupted.load(Ordering::Relaxed) => bail!("interrupted"),
                run => run?,
            };
            let times: Vec<String> = run
                .sniffed
                .iter()
                .map(|s| {
                    format!(
                        "{} {:.3} s {}/{}",
                        s.mode.label(),
                        s.outcome.elapsed_s,
                        s.capture.captured,
                        s.capture.made
                    )
                })
                .collect();
            eprintln!(
                "sslsniff-bench: {} x {n}, run {}/{}: untraced {:.3} s, floor {:.3} s, {}",
                size_label(size),
                i + 1,
                plan.runs,
                run.untraced.elapsed_s,
                run.floor.elapsed_s,
                times.join(", ")
            );
            runs.push(run);
        }
        results.push(SizeResult { size, n, runs });
    }
    Ok(results)
}

/// The measurements follow each other within a run, so that the VM's slow spells fall
/// on all of them alike rather than on one.
fn one_run(plan: &Plan, size: usize, n: u64) -> Result<Run> {
    let mut others = other_tracers();
    let untraced = Paused::start(size, n, run_id(), None)?
        .release()
        .context("untraced load")?;
    let load = Paused::start(size, n, run_id(), None)?;
    let floor =
        floor::traced(load.pid(), || load.release()).context("load under the floor probes")?;
    let sniffed = MODES
        .iter()
        .map(|&mode| {
            let load = Load {
                size,
                n: calls_for(mode.format, n),
                rate: None,
            };
            under_sslsniff(&plan.sslsniff, mode, &load, &plan.file_dir)
        })
        .collect::<Result<_>>()?;
    others.extend(other_tracers());
    others.sort();
    others.dedup();
    Ok(Run {
        untraced,
        floor,
        sniffed,
        others,
    })
}

/// What the load child does: `n` messages of `size` bytes, at most `rate` bytes a second.
pub struct Load {
    pub size: usize,
    pub n: u64,
    pub rate: Option<u64>,
}

/// A pipe sink is read and checked by this process as the output comes: a reader that
/// drops it would not show what a consumer of the output costs. A file sink is a new
/// file in `file_dir`, checked once sslsniff has exited, and removed.
pub fn under_sslsniff(
    sslsniff: &Path,
    mode: Mode,
    load: &Load,
    file_dir: &Path,
) -> Result<Sniffed> {
    let id = run_id();
    let files = Files::new(file_dir, id);
    let messages = Messages::new(id, load.size);
    let paused = Paused::start(load.size, load.n, id, load.rate)?;
    let (sniffer, stdout) = sniff::start(sslsniff, paused.pid(), mode, &files)?;
    let checker = stdout.map(|stdout| {
        let (messages, n, size) = (messages.clone(), load.n, load.size);
        thread::spawn(move || -> Result<Capture> {
            // The reads are known once the load ends; the check needs them only as a count.
            let expected = verify::Expected {
                messages: &messages,
                n,
                size,
                reads: mode.both.then_some(0),
            };
            verify::check(stdout, mode.format.stdout(), &expected)
        })
    });
    let outcome = paused.release().context("load under sslsniff");
    thread::sleep(DRAIN_GRACE);
    let report = sniffer.stop();
    // The checker's error first: one that stops reading makes sslsniff's output fail.
    let checked = match checker {
        Some(c) => Some(
            c.join()
                .map_err(|_| anyhow!("the output checker panicked"))?
                .context("checking sslsniff's output")?,
        ),
        None => None,
    };
    let (outcome, report) = (outcome?, report?);
    let made = load.n + if mode.both { outcome.reads } else { 0 };
    let capture = judged(mode, load, (&messages, &files), checked, (&report, made))?;
    Ok(Sniffed {
        mode,
        n: load.n,
        outcome,
        report,
        capture,
    })
}

/// What a run captured: as the checker of its pipe saw it, else as its files hold it,
/// else (to /dev/null) as sslsniff's counts say; a pcapng file beside the text is
/// checked too, and the worse of the two counts.
fn judged(
    mode: Mode,
    load: &Load,
    (messages, files): (&Messages, &Files),
    checked: Option<Capture>,
    (report, made): (&Report, u64),
) -> Result<Capture> {
    let expected = verify::Expected {
        messages,
        n: load.n,
        size: load.size,
        reads: mode.both.then_some(0),
    };
    let mut capture = match (checked, mode.sink) {
        (Some(checked), _) => checked,
        (None, Sink::File) => check_file(&files.stdout, mode.format.stdout(), &expected)?,
        (None, _) => counted(report, made),
    };
    if mode.format == Format::TextPcap {
        let pcap = check_file(&files.pcap, verify::Format::Pcap, &expected)?;
        capture = capture.worse(&pcap);
    }
    capture.made = made;
    Ok(capture)
}

fn check_file(path: &Path, format: verify::Format, expected: &verify::Expected) -> Result<Capture> {
    let file = fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    verify::check(file, format, expected).with_context(|| format!("checking {}", path.display()))
}

/// The capture of a run whose output was discarded, from sslsniff's own counts: whole
/// when it printed as many events as calls were made, with no byte missing.
fn counted(report: &Report, made: u64) -> Capture {
    let s = &report.summary;
    let whole = s.events == made && s.truncated_bytes == 0 && s.undelivered_bytes == 0;
    Capture {
        made,
        captured: if whole { made } else { 0 },
        cut: u64::from(!whole),
        ..Capture::default()
    }
}

/// sslsniff and bpftrace processes this benchmark did not start (other sessions'
/// tests, a forgotten tracer), by name and PID.
fn other_tracers() -> Vec<String> {
    let me = std::process::id();
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        let comm = comm.trim_end();
        let ppid = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The field after the parenthesised name and the state.
        let ppid: u32 = ppid.rsplit_once(") ")?.1.split(' ').nth(1)?.parse().ok()?;
        (matches!(comm, "sslsniff" | "bpftrace") && ppid != me)
            .then(|| format!("{comm} (pid {pid})"))
    })
    .collect()
}

/// Different in every load, so that a payload from another run can never pass.
pub fn run_id() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
}

/// A load child that has finished its handshake and waits to start its timed loop.
pub struct Paused {
    proc: Proc,
    stdout: BufReader<ChildStdout>,
}

impl Paused {
    pub fn start(size: usize, n: u64, run_id: u32, rate: Option<u64>) -> Result<Self> {
        let exe = env::current_exe().context("cannot find the benchmark's own binary")?;
        let mut cmd = Command::new(exe);
        cmd.arg("load")
            .args([
                "--n",
                &n.to_string(),
                "--size",
                &size.to_string(),
                "--run-id",
                &run_id.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        if let Some(rate) = rate {
            cmd.args(["--rate", &rate.to_string()]);
        }
        let mut proc = Proc::spawn(&mut cmd)?;
        let mut stdout = BufReader::new(proc.child().stdout.take().expect("stdout is piped"));
        let line = read_line(&mut stdout)?;
        ensure!(
            line == "ready",
            "the load did not get ready (said {line:?})"
        );
        Ok(Paused { proc, stdout })
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Lets the timed loop run and returns what the load measured.
    pub fn release(mut self) -> Result<Outcome> {
        let mut stdin = self.proc.child().stdin.take().expect("stdin is piped");
        stdin.write_all(b"\n").context("cannot start the load")?;
        let line = read_line(&mut self.stdout)?;
        let status = self.proc.wait()?;
        ensure!(status.success(), "the load failed ({status})");
        Outcome::parse(&line).with_context(|| format!("the load said {line:?}, not its timing"))
    }
}

fn read_line(r: &mut impl BufRead) -> Result<String> {
    let mut line = String::new();
    r.read_line(&mut line)
        .context("cannot read from the load")?;
    Ok(line.trim_end().to_string())
}
