//! Many library copies at once, as on a machine with a container per copy: what sslsniff
//! takes to start, to stop, and in memory, with multi-uprobe links and without them.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::scratch::Scratch;
use crate::sniff::{self, Sniffer, Status};

/// The one-probe-per-link path attaches thousands of perf events: minutes are possible.
const READY_TIMEOUT: Duration = Duration::from_secs(600);
/// Releasing perf-event probes takes about 130 ms each here: the child left to release
/// 9000 of them works for 20 minutes. Waited for this long, then left to finish.
pub const RELEASE_WAIT: Duration = Duration::from_secs(120);

pub struct Scale {
    pub files: usize,
    pub multi: bool,
    /// Copies announced before `ready`.
    pub traced: usize,
    /// From start to `ready`.
    pub ready_s: f64,
    /// bpf_link and perf_event descriptors sslsniff held when ready.
    pub links: usize,
    pub perf_events: usize,
    pub stop_s: f64,
    pub rss_mib: f64,
    /// From SIGINT until a child left to release the probes (per-probe path) is gone;
    /// false when it was still at work after RELEASE_WAIT.
    pub released: Option<(f64, bool)>,
}

/// Starts sslsniff with `n` copies of libssl as --extra-lib, each in its own directory.
pub fn run(sslsniff: &Path, n: usize, multi: bool) -> Result<Scale> {
    let scratch = Scratch::new("scale")?;
    let mut cmd = Command::new(sslsniff);
    cmd.args(["--status", "json"]);
    for i in 0..n {
        let copy = scratch.libssl_copy(i)?;
        cmd.arg("--extra-lib")
            .arg(format!("openssl:{}", copy.display()));
    }
    if !multi {
        cmd.env("SSLSNIFF_WITHOUT", "uprobe-multi");
    }
    let started = Instant::now();
    let (mut sniffer, stdout) = Sniffer::spawn(&mut cmd)?;
    let drained = sniff::drain(stdout);
    let prefix = scratch.path().to_string_lossy().into_owned();
    let deadline = started + READY_TIMEOUT;
    let mut traced = 0;
    loop {
        match sniffer.next_status(deadline)? {
            Some(Status::Tracing { path, .. }) if path.starts_with(&prefix) => traced += 1,
            Some(Status::Ready) => break,
            _ => {}
        }
    }
    let ready_s = started.elapsed().as_secs_f64();
    let (links, perf_events) = (
        fds_named(sniffer.pid(), "anon_inode:bpf_link"),
        fds_named(sniffer.pid(), "anon_inode:[perf_event]"),
    );
    let stopping = Instant::now();
    let report = sniffer.stop()?;
    drained.join().ok();
    let releasers = releasers(&prefix);
    let released = (!releasers.is_empty()).then(|| {
        let alive = || {
            releasers
                .iter()
                .any(|p| Path::new(&format!("/proc/{p}")).exists())
        };
        while alive() && stopping.elapsed() < RELEASE_WAIT {
            thread::sleep(Duration::from_millis(20));
        }
        (stopping.elapsed().as_secs_f64(), !alive())
    });
    Ok(Scale {
        files: n,
        multi,
        traced,
        ready_s,
        links,
        perf_events,
        stop_s: report.stop_s,
        rss_mib: report.usage.max_rss_kib as f64 / 1024.0,
        released,
    })
}

/// How many of `pid`'s descriptors link to `name`.
fn fds_named(pid: u32, name: &str) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |dir| {
        dir.flatten()
            .filter(|e| fs::read_link(e.path()).is_ok_and(|t| t.as_os_str() == name))
            .count()
    })
}

/// The per-probe path leaves a child at exit to release the probes: a fork, so it has
/// our sslsniff's command line, which names this run's scratch directory (other
/// sessions' sslsniff processes do not).
fn releasers(scratch: &str) -> Vec<u32> {
    fs::read_dir("/proc").map_or(Vec::new(), |dir| {
        dir.flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .filter(|pid: &u32| {
                fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(scratch))
            })
            .collect()
    })
}
