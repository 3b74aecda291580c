//! Runs sslsniff on the load child as a user would, and collects what it says about
//! itself and what the kernel says it cost.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::proc::{Proc, Usage};

/// Attaching walks every TLS library on the machine; seconds are normal, a minute is not.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(60);
/// Past this, sslsniff's exit counts as hung and it is killed.
const EXIT_TIMEOUT: Duration = Duration::from_secs(120);
/// The line that says the library the load uses is traced.
const TRACING_LIBSSL: &str = "/libssl.so.3 (openssl)";

pub struct Sniffer {
    proc: Proc,
    stderr: Receiver<String>,
    lines: Vec<String>,
}

/// sslsniff's closing line: `N calls seen in the kernel, M events printed, B bytes
/// captured, L bytes lost`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Summary {
    pub calls: u64,
    pub events: u64,
    pub bytes: u64,
    pub lost: u64,
}

#[derive(Debug, Clone, Copy)]
pub struct Report {
    pub summary: Summary,
    pub usage: Usage,
    /// From SIGINT to exit.
    pub stop_s: f64,
    /// `warning: lost ...` lines: the ring buffer was full.
    pub loss_warnings: usize,
}

/// Starts sslsniff on `pid` with no capture limit, its output going to `out`, and
/// returns once it has attached to libssl.
pub fn start(sslsniff: &Path, pid: u32, out: File) -> Result<Sniffer> {
    let mut cmd = Command::new(sslsniff);
    // The writer only (the load's main thread keeps the process name; the reader thread
    // is bench-server): the reader's calls still trap into the probes and are dropped by
    // the in-kernel filter, and the output is half as large, so that at 64 KiB x 100k it
    // measures sslsniff rather than how fast this machine's disk takes 13 GB.
    cmd.args([
        "-p",
        &pid.to_string(),
        "-c",
        "sslsniff-bench",
        "--max-buffer-size",
        "0",
    ])
    .stdin(Stdio::null())
    .stdout(out)
    .stderr(Stdio::piped());
    let mut proc = Proc::spawn(&mut cmd)?;
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
    let mut sniffer = Sniffer {
        proc,
        stderr: rx,
        lines: Vec::new(),
    };
    sniffer.wait_for_tracing()?;
    Ok(sniffer)
}

impl Sniffer {
    fn wait_for_tracing(&mut self) -> Result<()> {
        let deadline = Instant::now() + ATTACH_TIMEOUT;
        loop {
            match self
                .stderr
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) => {
                    let attached =
                        line.starts_with("sslsniff: tracing ") && line.contains(TRACING_LIBSSL);
                    self.lines.push(line);
                    if attached {
                        return Ok(());
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    bail!("sslsniff did not report tracing libssl.so.3 within {ATTACH_TIMEOUT:?}")
                }
                Err(RecvTimeoutError::Disconnected) => {
                    bail!(
                        "sslsniff exited before tracing libssl.so.3: {}",
                        self.lines.join(" | ")
                    )
                }
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
            .find_map(|l| Summary::parse(l))
            .with_context(|| {
                format!(
                    "sslsniff printed no summary line: {}",
                    self.lines.join(" | ")
                )
            })?;
        let loss_warnings = self
            .lines
            .iter()
            .filter(|l| l.starts_with("sslsniff: warning: lost"))
            .count();
        Ok(Report {
            summary,
            usage,
            stop_s,
            loss_warnings,
        })
    }
}

impl Summary {
    fn parse(line: &str) -> Option<Self> {
        let rest = line.strip_prefix("sslsniff: ")?;
        if !rest.contains(" calls seen in the kernel, ") {
            return None;
        }
        let numbers: Vec<u64> = rest
            .split(", ")
            .map(|part| part.split(' ').next()?.parse().ok())
            .collect::<Option<_>>()?;
        let [calls, events, bytes, lost] = numbers[..] else {
            return None;
        };
        Some(Summary {
            calls,
            events,
            bytes,
            lost,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_summary_line() {
        let s = Summary::parse(
            "sslsniff: 200 calls seen in the kernel, 199 events printed, 20000 bytes captured, 100 bytes lost",
        )
        .unwrap();
        assert_eq!((s.calls, s.events, s.bytes, s.lost), (200, 199, 20000, 100));
        assert!(Summary::parse("sslsniff: tracing /lib/libssl.so.3 (openssl): SSL_read").is_none());
    }
}
