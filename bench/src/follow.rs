//! Following the machine: how soon a never-seen library is attached after a process maps
//! it, and what following costs a machine that runs many short programs and no TLS.

use std::fs;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use libbpf_rs::query::ProgInfoIter;

use crate::proc::Proc;
use crate::scratch::Scratch;
use crate::sniff::{self, Sniffer, Status, ATTACH_TIMEOUT};

/// How long a mapped copy may take to be announced before it counts as not attached.
const ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(2);
/// The exec load of the idle runs: /bin/true this many times a second, for this long.
pub const EXEC_RATE: u32 = 200;
const EXEC_SECS: u64 = 10;
/// getppid calls timed to show what the sys_exit hook adds to every system call.
const SYSCALLS: u32 = 2_000_000;

pub struct Latency {
    /// Copies mapped, one process each.
    pub files: usize,
    /// From the kernel's event to attached, of every copy announced, sorted.
    pub us: Vec<u64>,
}

/// Maps `n` fresh copies of libssl one after the other, each by a short process
/// (`sleep` with the copy preloaded), and collects sslsniff's latency for each.
pub fn latency(sslsniff: &Path, n: usize) -> Result<Latency> {
    let scratch = Scratch::new("follow")?;
    let mut cmd = Command::new(sslsniff);
    cmd.args(["-d", "--status", "json"]);
    let (mut sniffer, stdout) = Sniffer::spawn(&mut cmd)?;
    let drained = sniff::drain(stdout);
    sniffer.wait_ready(ATTACH_TIMEOUT)?;
    let mut us = Vec::new();
    for i in 0..n {
        let copy = scratch.libssl_copy(i)?;
        let mut sleeper = Command::new("sleep");
        sleeper
            .arg("5")
            .env("LD_PRELOAD", &copy)
            .stdout(Stdio::null());
        // Killed once announced (or not): only its mapping matters.
        let _sleeper = Proc::spawn(&mut sleeper)?;
        if let Some(latency) = announced(&mut sniffer, &copy.to_string_lossy())? {
            us.push(latency);
        }
    }
    sniffer.stop()?;
    drained.join().ok();
    us.sort_unstable();
    Ok(Latency { files: n, us })
}

/// The latency of `path`'s `tracing` line, None when it does not come in time.
fn announced(sniffer: &mut Sniffer, path: &str) -> Result<Option<u64>> {
    let deadline = Instant::now() + ANNOUNCE_TIMEOUT;
    while Instant::now() < deadline {
        match sniffer.next_status(deadline) {
            Ok(Some(Status::Tracing {
                path: p,
                latency_us,
                ..
            })) if p == path => {
                return latency_us
                    .map(Some)
                    .with_context(|| format!("{path} announced without latency_us (-d)"))
            }
            Ok(_) => {}
            // The deadline passed; sslsniff's exit shows at stop.
            Err(_) => return Ok(None),
        }
    }
    Ok(None)
}

/// One idle run: sslsniff with or without following while the exec load runs.
pub struct Idle {
    /// Whether sslsniff ran at all (the baseline for the system call cost has none).
    pub sslsniff: Option<Followed>,
    pub execs: u64,
    pub secs: f64,
    /// Nanoseconds per getppid call, after the exec load.
    pub syscall_ns: f64,
}

pub struct Followed {
    pub follow: bool,
    /// sslsniff's own CPU (user + system) during the exec load.
    pub cpu_s: f64,
    /// Its BPF programs' run counts and times during the load, by name.
    pub progs: Vec<ProgRun>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgRun {
    pub name: String,
    pub runs: u64,
    pub ns: u64,
}

impl Idle {
    /// sslsniff's CPU plus its follow programs' time, as a share of one CPU.
    pub fn cost_pct(&self) -> Option<f64> {
        let s = self.sslsniff.as_ref()?;
        let ns: u64 = s.follow_progs().map(|p| p.ns).sum();
        Some((s.cpu_s + ns as f64 / 1e9) / self.secs * 100.0)
    }
}

impl Followed {
    pub fn follow_progs(&self) -> impl Iterator<Item = &ProgRun> {
        self.progs.iter().filter(|p| p.name.starts_with("follow_"))
    }
}

/// `follow`: None runs no sslsniff, Some(false) runs it with --no-follow.
pub fn idle(sslsniff: &Path, follow: Option<bool>) -> Result<Idle> {
    let Some(follow) = follow else {
        let (execs, secs) = exec_load()?;
        return Ok(Idle {
            sslsniff: None,
            execs,
            secs,
            syscall_ns: syscall_ns(),
        });
    };
    let mut cmd = Command::new(sslsniff);
    cmd.args(["--status", "json"]);
    if !follow {
        cmd.arg("--no-follow");
    }
    let (mut sniffer, stdout) = Sniffer::spawn(&mut cmd)?;
    let drained = sniff::drain(stdout);
    sniffer.wait_ready(ATTACH_TIMEOUT)?;
    let pid = sniffer.pid();
    let stats = enable_stats()?;
    let (cpu0, progs0) = (cpu_s(pid)?, prog_runs(pid)?);
    let (execs, secs) = exec_load()?;
    let (cpu1, progs1) = (cpu_s(pid)?, prog_runs(pid)?);
    // Timing each run costs the programs two clock reads: off for the system call timing.
    drop(stats);
    let syscall_ns = syscall_ns();
    sniffer.stop()?;
    drained.join().ok();
    Ok(Idle {
        sslsniff: Some(Followed {
            follow,
            cpu_s: cpu1 - cpu0,
            progs: prog_delta(&progs0, &progs1),
        }),
        execs,
        secs,
        syscall_ns,
    })
}

/// /bin/true EXEC_RATE times a second, each started when its slot comes (not after the
/// previous one plus a pause, which would drift); returns execs and seconds taken.
fn exec_load() -> Result<(u64, f64)> {
    let period = Duration::from_secs(1) / EXEC_RATE;
    let started = Instant::now();
    let end = started + Duration::from_secs(EXEC_SECS);
    let (mut next, mut n) = (started, 0);
    while next < end {
        let status = Command::new("/bin/true")
            .status()
            .context("cannot run /bin/true")?;
        ensure!(status.success(), "/bin/true failed ({status})");
        n += 1;
        next += period;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
    }
    Ok((n, started.elapsed().as_secs_f64()))
}

fn syscall_ns() -> f64 {
    let started = Instant::now();
    for _ in 0..SYSCALLS {
        // SAFETY: getppid takes no arguments and cannot fail; called through syscall()
        // so that no library caches it.
        unsafe { libc::syscall(libc::SYS_getppid) };
    }
    started.elapsed().as_nanos() as f64 / f64::from(SYSCALLS)
}

/// Keeps the kernel's BPF run-time statistics on while the descriptor lives
/// (BPF_ENABLE_STATS: counted with kernel.bpf_stats_enabled, and off again when the last
/// holder closes, even if the bench is killed, unlike a sysctl left at 1).
pub fn enable_stats() -> Result<OwnedFd> {
    // SAFETY: a plain system call wrapper; it returns a new descriptor or a negative errno.
    let fd = unsafe {
        libbpf_rs::libbpf_sys::bpf_enable_stats(libbpf_rs::libbpf_sys::BPF_STATS_RUN_TIME)
    };
    if fd < 0 {
        bail!(
            "cannot enable BPF run-time statistics: {}",
            std::io::Error::from_raw_os_error(-fd)
        );
    }
    // SAFETY: fd is a descriptor the kernel just gave us and nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// user + system seconds of `pid` (fields 14 and 15 of /proc/PID/stat, in clock ticks).
fn cpu_s(pid: u32) -> Result<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    parse_cpu_ticks(&stat)
        .map(|ticks| ticks as f64 / clock_ticks())
        .with_context(|| format!("cannot parse /proc/{pid}/stat"))
}

fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // After the parenthesised name, field 3 (state) comes first: utime and stime are
    // fields 14 and 15.
    let mut rest = stat.rsplit_once(") ")?.1.split(' ').skip(11);
    let utime: u64 = rest.next()?.parse().ok()?;
    let stime: u64 = rest.next()?.parse().ok()?;
    Some(utime + stime)
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as f64
    } else {
        100.0
    }
}

/// The BPF programs `pid` holds (by the prog_id of its descriptors), with their counts.
pub fn prog_runs(pid: u32) -> Result<Vec<(u32, ProgRun)>> {
    let dir = format!("/proc/{pid}/fdinfo");
    let ids: Vec<u32> = fs::read_dir(&dir)
        .with_context(|| format!("cannot list {dir}"))?
        .flatten()
        .filter_map(|e| {
            let info = fs::read_to_string(e.path()).ok()?;
            info.lines()
                .find_map(|l| l.strip_prefix("prog_id:"))
                .and_then(|id| id.trim().parse().ok())
        })
        .collect();
    Ok(ProgInfoIter::default()
        .filter(|p| ids.contains(&p.id))
        .map(|p| {
            let run = ProgRun {
                name: p.name.to_string_lossy().into_owned(),
                runs: p.run_cnt,
                ns: p.run_time_ns,
            };
            (p.id, run)
        })
        .collect())
}

pub fn prog_delta(before: &[(u32, ProgRun)], after: &[(u32, ProgRun)]) -> Vec<ProgRun> {
    after
        .iter()
        .map(|(id, a)| {
            let b = before.iter().find(|(i, _)| i == id).map(|(_, b)| b);
            ProgRun {
                name: a.name.clone(),
                runs: a.runs - b.map_or(0, |b| b.runs.min(a.runs)),
                ns: a.ns - b.map_or(0, |b| b.ns.min(a.ns)),
            }
        })
        .collect()
}

/// The value at rank `pct` percent of sorted `values` (nearest rank).
pub fn percentile(values: &[u64], pct: u32) -> Option<u64> {
    let n = values.len();
    let rank = (n * pct as usize).div_ceil(100).clamp(1, n.max(1));
    values.get(rank - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50), Some(50));
        assert_eq!(percentile(&v, 99), Some(99));
        assert_eq!(percentile(&v, 100), Some(100));
        assert_eq!(percentile(&[7], 99), Some(7));
        assert_eq!(percentile(&[], 50), None);
    }

    #[test]
    fn cpu_ticks_after_a_name_with_spaces_and_parentheses() {
        let stat = "42 (a) b (c) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 5 0 0";
        assert_eq!(parse_cpu_ticks(stat), Some(10));
        assert_eq!(parse_cpu_ticks("42 (x) S 1"), None);
    }

    #[test]
    fn deltas_by_program_id() {
        let run = |name: &str, runs, ns| ProgRun {
            name: name.into(),
            runs,
            ns,
        };
        let before = [(1, run("follow_exec", 10, 100))];
        let after = [
            (1, run("follow_exec", 15, 160)),
            (2, run("follow_mmap", 4, 40)),
        ];
        assert_eq!(
            prog_delta(&before, &after),
            vec![run("follow_exec", 5, 60), run("follow_mmap", 4, 40)]
        );
    }
}
