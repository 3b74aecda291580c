//! The measurements: for each size, runs of the load untraced, under the floor probes
//! and under sslsniff.

use std::env;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context, Result};

use crate::floor;
use crate::load::Outcome;
use crate::message::Messages;
use crate::proc::Proc;
use crate::report::size_label;
use crate::sniff::{self, Report};
use crate::verify::{self, Capture};

/// sslsniff is stopped a moment after the traffic ends, as a user would stop it: by then
/// it should have printed everything, so that its stop time is its exit, not a backlog.
const DRAIN_GRACE: Duration = Duration::from_secs(1);

pub struct Plan {
    pub sslsniff: PathBuf,
    /// Message size and calls per run.
    pub sizes: Vec<(usize, u64)>,
    pub runs: u64,
}

pub struct SizeResult {
    pub size: usize,
    pub n: u64,
    pub runs: Vec<Run>,
}

pub struct Run {
    pub untraced: Outcome,
    pub floor: Outcome,
    pub sslsniff: Outcome,
    pub report: Report,
    pub capture: Capture,
}

/// Stops at the first error. Ctrl-C reaches the children too, so a measurement in
/// progress fails at once; `interrupted` tells that apart from a real failure.
pub fn run(plan: &Plan, interrupted: &AtomicBool) -> Result<Vec<SizeResult>> {
    let tmp = tempfile::Builder::new()
        .prefix("sslsniff-bench.")
        .tempdir()
        .context("cannot make a temp dir")?;
    let mut results = Vec::new();
    for &(size, n) in &plan.sizes {
        let mut runs = Vec::new();
        for i in 0..plan.runs {
            let run = match one_run(plan, size, n, tmp.path()) {
                _ if interrupted.load(Ordering::Relaxed) => bail!("interrupted"),
                run => run?,
            };
            eprintln!(
                "sslsniff-bench: {} x {n}, run {}/{}: untraced {:.3} s, floor {:.3} s, sslsniff {:.3} s, {}/{} writes captured",
                size_label(size),
                i + 1,
                plan.runs,
                run.untraced.elapsed_s,
                run.floor.elapsed_s,
                run.sslsniff.elapsed_s,
                run.capture.captured,
                run.capture.made
            );
            runs.push(run);
        }
        results.push(SizeResult { size, n, runs });
    }
    Ok(results)
}

/// The three measurements follow each other within a run, so that the VM's slow spells
/// fall on all three alike rather than on one.
fn one_run(plan: &Plan, size: usize, n: u64, tmp: &Path) -> Result<Run> {
    let untraced = Paused::start(size, n, run_id())?
        .release()
        .context("untraced load")?;
    let load = Paused::start(size, n, run_id())?;
    let floor =
        floor::traced(load.pid(), || load.release()).context("load under the floor probes")?;
    let (sslsniff, report, capture) = under_sslsniff(&plan.sslsniff, size, n, tmp)?;
    Ok(Run {
        untraced,
        floor,
        sslsniff,
        report,
        capture,
    })
}

fn under_sslsniff(
    sslsniff: &Path,
    size: usize,
    n: u64,
    tmp: &Path,
) -> Result<(Outcome, Report, Capture)> {
    let id = run_id();
    let load = Paused::start(size, n, id)?;
    let output = tmp.join(format!("sslsniff-{}.out", load.pid()));
    let file =
        File::create(&output).with_context(|| format!("cannot create {}", output.display()))?;
    let sniffer = sniff::start(sslsniff, load.pid(), file)?;
    let outcome = load.release().context("load under sslsniff")?;
    thread::sleep(DRAIN_GRACE);
    let report = sniffer.stop()?;
    let capture = verify::check(&output, &Messages::new(id, size), n, size)?;
    // Outputs of the large sizes run to gigabytes: do not keep them until the end.
    fs::remove_file(&output)?;
    Ok((outcome, report, capture))
}

/// Different in every load, so that a payload from another run can never pass.
fn run_id() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
}

/// A load child that has finished its handshake and waits to start its timed loop.
struct Paused {
    proc: Proc,
    stdout: BufReader<ChildStdout>,
}

impl Paused {
    fn start(size: usize, n: u64, run_id: u32) -> Result<Self> {
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
        let mut proc = Proc::spawn(&mut cmd)?;
        let mut stdout = BufReader::new(proc.child().stdout.take().expect("stdout is piped"));
        let line = read_line(&mut stdout)?;
        ensure!(
            line == "ready",
            "the load did not get ready (said {line:?})"
        );
        Ok(Paused { proc, stdout })
    }

    fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Lets the timed loop run and returns what the load measured.
    fn release(mut self) -> Result<Outcome> {
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
