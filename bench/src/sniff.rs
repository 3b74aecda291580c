//! Runs sslsniff on the load child as a user would, and collects what it says about
//! itself and what the kernel says it cost.

use std::io::{self, BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{ChildStdout, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

pub use sslsniff::diag::{StatusLine as Status, Summary};

use crate::proc::{Proc, Usage};
use crate::verify::Format;

/// Attaching walks every TLS library on the machine; seconds are normal, a minute is not.
pub const ATTACH_TIMEOUT: Duration = Duration::from_secs(60);
/// Past this, sslsniff's exit counts as hung and it is killed.
const EXIT_TIMEOUT: Duration = Duration::from_secs(120);
/// The library the load uses: its `tracing` status line must name it.
const LIBSSL: &str = "/libssl.so.3";

/// How sslsniff is run on the load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode {
    /// Both threads (every read and write), as a user tracing a program does; or the
    /// writer only (-c), the reader's calls still trapping and being filtered in BPF.
    pub both: bool,
    pub format: Format,
    /// The output goes to /dev/null: what capturing and formatting cost without
    /// delivering the bytes to a reader. Its capture is judged from sslsniff's own counts.
    pub discard: bool,
}

/// What every run measures, in this order.
pub const MODES: [Mode; 4] = [
    Mode {
        both: true,
        format: Format::Text,
        discard: false,
    },
    Mode {
        both: true,
        format: Format::Json,
        discard: false,
    },
    Mode {
        both: false,
        format: Format::Text,
        discard: false,
    },
    Mode {
        both: true,
        format: Format::Text,
        discard: true,
    },
];

pub fn mode_label(mode: Mode) -> &'static str {
    match (mode.both, mode.format, mode.discard) {
        (true, Format::Text, false) => "both text",
        (true, Format::Json, false) => "both json",
        (false, Format::Text, false) => "writer text",
        (false, Format::Json, false) => "writer json",
        (true, Format::Text, true) => "both text null",
        (true, Format::Json, true) => "both json null",
        (false, Format::Text, true) => "writer text null",
        (false, Format::Json, true) => "writer json null",
    }
}

pub struct Sniffer {
    proc: Proc,
    stderr: Receiver<String>,
    lines: Vec<String>,
}

#[derive(Debug, Clone, Copy)]
pub struct Report {
    pub summary: Summary,
    pub usage: Usage,
    /// From SIGINT to exit.
    pub stop_s: f64,
    /// `warning` lines with undelivered bytes: the ring buffer was full.
    pub loss_warnings: usize,
}

/// The pipe sslsniff writes its output to: as large as an unprivileged pipe may be by
/// default (fs.pipe-max-size), so that sslsniff's writes rarely wait for the checker.
const PIPE_SIZE: libc::c_int = 1 << 20;

/// Starts sslsniff on `pid` with no capture limit, as `mode` says, and returns once it
/// has attached to libssl and said it is ready, with the pipe its output comes out of.
/// The pipe is None when the mode discards the output.
pub fn start(sslsniff: &Path, pid: u32, mode: Mode) -> Result<(Sniffer, Option<ChildStdout>)> {
    let mut cmd = Command::new(sslsniff);
    let pid = pid.to_string();
    cmd.args(["-p", &pid, "--max-buffer-size", "0", "--status", "json"]);
    if !mode.both {
        // The load's main thread keeps the process name; the reader thread is bench-server.
        cmd.args(["-c", "sslsniff-bench"]);
    }
    if mode.format == Format::Json {
        cmd.args(["--format", "json"]);
    }
    let (mut sniffer, stdout) = if mode.discard {
        (Sniffer::spawn_to(&mut cmd, Stdio::null())?, None)
    } else {
        let (sniffer, stdout) = Sniffer::spawn(&mut cmd)?;
        (sniffer, Some(stdout))
    };
    sniffer.wait_for_tracing()?;
    Ok((sniffer, stdout))
}

/// Reads a pipe to its end and counts the bytes: for runs whose output is not checked.
pub fn drain(mut stdout: ChildStdout) -> JoinHandle<u64> {
    thread::spawn(move || io::copy(&mut stdout, &mut io::sink()).unwrap_or(0))
}

impl Sniffer {
    /// Starts `cmd` (sslsniff and its flags) with `--status json` lines on a pipe that a
    /// thread reads, and returns with the pipe its output comes out of.
    pub fn spawn(cmd: &mut Command) -> Result<(Sniffer, ChildStdout)> {
        let mut sniffer = Sniffer::spawn_to(cmd, Stdio::piped())?;
        let stdout = sniffer.proc.child().stdout.take().expect("stdout is piped");
        // SAFETY: fcntl on a pipe descriptor we own; a failure only leaves the default size.
        unsafe { libc::fcntl(stdout.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE) };
        Ok((sniffer, stdout))
    }

    /// As `spawn`, with the output going to `stdout`.
    pub fn spawn_to(cmd: &mut Command, stdout: Stdio) -> Result<Sniffer> {
        cmd.stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::piped());
        let mut proc = Proc::spawn(cmd)?;
        let stderr = proc.child().stderr.take().expect("stderr is piped");
        let (tx, rx) = mpsc::channel();
        // A thread, so that waiting for a line can time out; it ends when sslsniff does.
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Sniffer {
            proc,
            stderr: rx,
            lines: Vec::new(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// The next status line sslsniff prints before `deadline`, parsed (None for lines the
    /// bench does not act on); Err when the deadline passes or sslsniff exits.
    pub fn next_status(&mut self, deadline: Instant) -> Result<Option<Status>> {
        match self
            .stderr
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            Ok(line) => {
                let status = Status::parse(&line);
                // Debug lines (-d) are many and say nothing the errors need.
                if !line.contains(r#""type":"debug""#) {
                    self.lines.push(line);
                }
                Ok(status)
            }
            Err(RecvTimeoutError::Timeout) => bail!("sslsniff said nothing in time"),
            Err(RecvTimeoutError::Disconnected) => {
                bail!("sslsniff exited: {}", self.lines.join(" | "))
            }
        }
    }

    /// Waits for `ready`; returns how long it took from now.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<Duration> {
        let started = Instant::now();
        let deadline = started + timeout;
        loop {
            let status = self
                .next_status(deadline)
                .with_context(|| format!("sslsniff was not ready within {timeout:?}"))?;
            if status == Some(Status::Ready) {
                return Ok(started.elapsed());
            }
        }
    }

    fn wait_for_tracing(&mut self) -> Result<()> {
        let deadline = Instant::now() + ATTACH_TIMEOUT;
        let mut libssl = false;
        loop {
            let status = self
                .next_status(deadline)
                .context("sslsniff did not trace libssl.so.3 and get ready")?;
            match status {
                Some(Status::Tracing { path, .. }) if path.ends_with(LIBSSL) => libssl = true,
                Some(Status::Ready) if libssl => return Ok(()),
                Some(Status::Ready) => {
                    bail!(
                        "sslsniff is ready without tracing libssl.so.3: {}",
                        self.lines.join(" | ")
                    )
                }
                _ => {}
            }
        }
    }

    /// Stops sslsniff as Ctrl-C would and waits for it to flush and exit.
    pub fn stop(mut self) -> Result<Report> {
        self.proc.interrupt()?;
        let started = Instant::now();
        let (status, usage) = self.proc.wait_with_usage(EXIT_TIMEOUT)?;
        let stop_s = started.elapsed().as_secs_f64();
        // Ends once the reader thread has seen the end of stderr.
        self.lines.extend(self.stderr.iter());
        ensure!(
            status.success(),
            "sslsniff failed ({status}): {}",
            self.lines.join(" | ")
        );
        let summary = self
            .lines
            .iter()
            .find_map(|l| match Status::parse(l) {
                Some(Status::Summary(s)) => Some(s),
                _ => None,
            })
            .with_context(|| {
                format!(
                    "sslsniff printed no summary line: {}",
                    self.lines.join(" | ")
                )
            })?;
        let loss_warnings = self
            .lines
            .iter()
            .filter(|l| {
                matches!(
                    Status::parse(l),
                    Some(Status::Warning {
                        undelivered_bytes: Some(_),
                        ..
                    })
                )
            })
            .count();
        Ok(Report {
            summary,
            usage,
            stop_s,
            loss_warnings,
        })
    }
}
