//! Runs sslsniff on the load child as a user would, and collects what it says about
//! itself and what the kernel says it cost.

use std::ffi::OsStr;
use std::fs;
use std::io::{self, BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{ChildStdout, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

pub use sslsniff::diag::{StatusLine as Status, Summary};

use crate::proc::{Proc, Usage};
use crate::verify;

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
    pub sink: Sink,
}

/// What sslsniff is asked to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
    /// `--pcap -`: the pcapng capture on stdout, nothing else.
    Pcap,
    /// Text on stdout and `--pcap FILE`.
    TextPcap,
    /// `--hexdump`.
    Hexdump,
}

pub const FORMATS: [Format; 5] = [
    Format::Text,
    Format::Json,
    Format::Pcap,
    Format::TextPcap,
    Format::Hexdump,
];

/// Where sslsniff's stdout goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    /// A pipe that the bench reads and checks as it comes.
    Pipe,
    /// A new file, checked once sslsniff has exited.
    File,
    /// /dev/null: what capturing and formatting cost without delivering the bytes to a
    /// reader; the capture is judged from sslsniff's own counts.
    Null,
}

impl Format {
    pub fn label(self) -> &'static str {
        match self {
            Format::Text => "text",
            Format::Json => "json",
            Format::Pcap => "pcapng",
            Format::TextPcap => "text+pcapng",
            Format::Hexdump => "hexdump",
        }
    }

    /// What the checker parses on stdout.
    pub fn stdout(self) -> verify::Format {
        match self {
            Format::Text | Format::TextPcap => verify::Format::Text,
            Format::Json => verify::Format::Json,
            Format::Pcap => verify::Format::Pcap,
            Format::Hexdump => verify::Format::Hexdump,
        }
    }

    /// Output bytes per payload byte, roughly: hexdump rows are five times the bytes.
    pub fn expansion(self) -> u64 {
        match self {
            Format::Hexdump => 5,
            _ => 1,
        }
    }
}

impl Sink {
    pub fn label(self) -> &'static str {
        match self {
            Sink::Pipe => "pipe",
            Sink::File => "file",
            Sink::Null => "null",
        }
    }
}

impl Mode {
    pub const fn both(format: Format, sink: Sink) -> Mode {
        Mode {
            both: true,
            format,
            sink,
        }
    }

    pub fn label(self) -> String {
        let who = if self.both { "both" } else { "writer" };
        format!("{who} {} {}", self.format.label(), self.sink.label())
    }
}

/// What every throughput run measures, in this order: each format to a pipe and to a
/// file, both directions traced; then text with only the writer traced, and text to
/// /dev/null.
pub const MODES: [Mode; 12] = [
    Mode::both(Format::Text, Sink::Pipe),
    Mode::both(Format::Text, Sink::File),
    Mode::both(Format::Json, Sink::Pipe),
    Mode::both(Format::Json, Sink::File),
    Mode::both(Format::Pcap, Sink::Pipe),
    Mode::both(Format::Pcap, Sink::File),
    Mode::both(Format::TextPcap, Sink::Pipe),
    Mode::both(Format::TextPcap, Sink::File),
    Mode::both(Format::Hexdump, Sink::Pipe),
    Mode::both(Format::Hexdump, Sink::File),
    Mode {
        both: false,
        format: Format::Text,
        sink: Sink::Pipe,
    },
    Mode::both(Format::Text, Sink::Null),
];

/// Where a run's files go: stdout's when the sink is a file, and the --pcap file of
/// text+pcapng. Removed when dropped.
pub struct Files {
    pub stdout: PathBuf,
    pub pcap: PathBuf,
}

impl Files {
    pub fn new(dir: &Path, id: u32) -> Files {
        let name = |ext| dir.join(format!("sslsniff-bench.{}.{id}.{ext}", std::process::id()));
        Files {
            stdout: name("out"),
            pcap: name("pcapng"),
        }
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.stdout);
        let _ = fs::remove_file(&self.pcap);
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
/// has attached to libssl and said it is ready, with the pipe its output comes out of
/// when the sink is one.
pub fn start(
    sslsniff: &Path,
    pid: u32,
    mode: Mode,
    files: &Files,
) -> Result<(Sniffer, Option<ChildStdout>)> {
    let mut cmd = Command::new(sslsniff);
    let pid = pid.to_string();
    cmd.args(["-p", &pid, "--max-buffer-size", "0", "--status", "json"]);
    if !mode.both {
        // The load's main thread keeps the process name; the reader thread is bench-server.
        cmd.args(["-c", "sslsniff-bench"]);
    }
    let format_args: &[&OsStr] = match mode.format {
        Format::Text => &[],
        Format::Json => &["--format".as_ref(), "json".as_ref()],
        Format::Pcap => &["--pcap".as_ref(), "-".as_ref()],
        Format::TextPcap => &["--pcap".as_ref(), files.pcap.as_os_str()],
        Format::Hexdump => &["--hexdump".as_ref()],
    };
    cmd.args(format_args);
    let (mut sniffer, stdout) = match mode.sink {
        Sink::Pipe => {
            let (sniffer, stdout) = Sniffer::spawn(&mut cmd)?;
            (sniffer, Some(stdout))
        }
        Sink::File => {
            let file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&files.stdout)
                .with_context(|| format!("cannot create {}", files.stdout.display()))?;
            (Sniffer::spawn_to(&mut cmd, Stdio::from(file))?, None)
        }
        Sink::Null => (Sniffer::spawn_to(&mut cmd, Stdio::null())?, None),
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
