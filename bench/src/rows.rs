//! The follow, scale and Go rows: their tables and the targets they are held to. Each
//! row carries the machine's load average when it was measured: the machine is shared.

use std::fs;

use crate::follow::{self, Idle, Latency};
use crate::golang::GoRun;
use crate::report::{median, table};
use crate::scale::Scale;

/// A never-seen file is attached within this long of the event that revealed it (p99).
const LATENCY_P99_US: u64 = 10_000;
/// Following costs at most this share of one CPU at 200 execs/s.
const IDLE_PCT: f64 = 1.0;

/// The 1-, 5- and 15-minute load averages.
pub fn load_avg() -> String {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split(' ').take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".into())
}

pub fn print_latency(l: &Latency, load: &str) {
    let p = |pct| follow::percentile(&l.us, pct).map_or("-".into(), |us| format!("{us} us"));
    println!();
    println!("Attach latency: {} never-seen libssl copies, each mapped by its own short process (sleep with LD_PRELOAD), one at a time; sslsniff -d, from the kernel's event to attached:", l.files);
    println!(
        "  attached {}/{}: p50 {}, p99 {}, max {}  (load {load})",
        l.us.len(),
        l.files,
        p(50),
        p(99),
        p(100)
    );
    let p99 = follow::percentile(&l.us, 99);
    verdict(
        &format!(
            "attach p99 <= {} ms, every copy attached",
            LATENCY_P99_US / 1000
        ),
        l.us.len() == l.files && p99.is_some_and(|us| us <= LATENCY_P99_US),
        &format!("{}/{}, p99 {}", l.us.len(), l.files, p(99)),
    );
}

pub fn print_idle(runs: &[(Idle, String)]) {
    println!();
    println!(
        "Idle cost: /bin/true {} times a second for 10 s, no TLS traffic; sslsniff with default flags or --no-follow:",
        follow::EXEC_RATE
    );
    let rows: Vec<Vec<String>> = runs.iter().map(|(i, load)| idle_row(i, load)).collect();
    table(
        &[
            "sslsniff",
            "execs/s",
            "cpu(%)",
            "follow progs(%)",
            "total(%)",
            "follow runs",
            "ns/run",
            "getppid(ns)",
            "load",
        ],
        &rows,
    );
    println!("cpu: sslsniff's user+system time; follow progs: follow_exec + follow_mmap run time (BPF run-time stats); both per one CPU.");
    println!("follow runs: how often they ran (the mmap hook runs at every mmap exit, or at every system call exit where the mmap tracepoint cannot be used); getppid: ns per call after the load, stats off.");
    // Following's cost is what the follow runs add over sslsniff's --no-follow cost.
    let costs = |follow: bool| -> Vec<f64> {
        runs.iter()
            .filter(|(i, _)| i.sslsniff.as_ref().is_some_and(|s| s.follow == follow))
            .filter_map(|(i, _)| i.cost_pct())
            .collect()
    };
    let (with, without) = (costs(true), costs(false));
    if !with.is_empty() && !without.is_empty() {
        let added = median(with) - median(without);
        verdict(
            &format!(
                "following adds <= {IDLE_PCT}% of one CPU at {} execs/s",
                follow::EXEC_RATE
            ),
            added <= IDLE_PCT,
            &format!("median total, follow minus --no-follow: {added:.2}%"),
        );
    }
}

fn idle_row(i: &Idle, load: &str) -> Vec<String> {
    let pct = |s: f64| format!("{:.2}", s / i.secs * 100.0);
    let (name, cpu, progs, runs, per_run) = match &i.sslsniff {
        None => ("none", "-".into(), "-".into(), "-".into(), "-".into()),
        Some(s) => {
            let (n, ns) = s
                .follow_progs()
                .fold((0, 0), |(n, ns), p| (n + p.runs, ns + p.ns));
            let name = if s.follow { "follow" } else { "--no-follow" };
            let per_run = if n > 0 {
                format!("{:.0}", ns as f64 / n as f64)
            } else {
                "-".into()
            };
            (
                name,
                pct(s.cpu_s),
                pct(ns as f64 / 1e9),
                n.to_string(),
                per_run,
            )
        }
    };
    vec![
        name.into(),
        format!("{:.1}", i.execs as f64 / i.secs),
        cpu,
        progs,
        i.cost_pct().map_or("-".into(), |c| format!("{c:.2}")),
        runs,
        per_run,
        format!("{:.0}", i.syscall_ns),
        load.into(),
    ]
}

pub fn print_scale(runs: &[(Scale, String)]) {
    println!();
    println!(
        "Scale: distinct libssl copies, one directory each, given as --extra-lib openssl:PATH:"
    );
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|(s, load)| {
            vec![
                if s.multi { "multi" } else { "per-probe" }.into(),
                s.files.to_string(),
                s.traced.to_string(),
                format!("{:.2}", s.ready_s),
                s.links.to_string(),
                s.perf_events.to_string(),
                format!("{:.2}", s.stop_s),
                match s.released {
                    None => "-".into(),
                    Some((secs, true)) => format!("{secs:.1}"),
                    Some((secs, false)) => format!("> {secs:.0}"),
                },
                format!("{:.1}", s.rss_mib),
                load.clone(),
            ]
        })
        .collect();
    table(
        &[
            "links",
            "files",
            "traced",
            "ready(s)",
            "bpf links",
            "perf events",
            "stop(s)",
            "released(s)",
            "peak RSS(MiB)",
            "load",
        ],
        &rows,
    );
    println!("ready: start to `ready`; stop: SIGINT to exit; released: SIGINT until the child left to release per-probe links is gone (-: none seen; >: still at work, not waited for).");
    println!("per-probe: SSLSNIFF_WITHOUT=uprobe-multi, one perf-event link per probe, as on kernels before 6.6.");
    for (s, _) in runs {
        verdict(
            &format!(
                "every copy traced, {}",
                if s.multi { "multi" } else { "per-probe" }
            ),
            s.traced == s.files,
            &format!("{}/{}", s.traced, s.files),
        );
    }
}

pub fn print_go(n: u32, runs: &[(GoRun, String)]) {
    println!();
    println!(
        "Go: the HTTPS fixture, {n} POSTs of 1 to {} bytes over {} connections, client and server processes both traced:",
        crate::golang::MAX_BODY,
        crate::golang::CONNS
    );
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|(r, load)| {
            let ratio = (r.sslsniff_s - r.untraced_s) / (r.floor_s - r.untraced_s);
            let sum = &r.report.summary;
            vec![
                format!("{:.3}", r.untraced_s),
                format!("{:.3}", r.floor_s),
                format!("{:.3}", r.sslsniff_s),
                if r.floor_s > r.untraced_s {
                    format!("{ratio:.2}x")
                } else {
                    "invalid".into()
                },
                sum.calls.to_string(),
                sum.events.to_string(),
                sum.undelivered_bytes.to_string(),
                format!("{:.2}", r.report.usage.cpu_s),
                load.clone(),
            ]
        })
        .collect();
    table(
        &[
            "untraced(s)",
            "floor(s)",
            "sslsniff(s)",
            "ratio",
            "calls",
            "events",
            "undelivered",
            "cpu(s)",
            "load",
        ],
        &rows,
    );
    println!("floor: empty uprobes at the entry and every RET of crypto/tls.(*Conn).Read and Write (where sslsniff puts its Go probes; no uretprobes).");
    println!("sslsniff: -c https --max-buffer-size 0, output drained; calls/events/undelivered from its summary; ratio as in the table above.");
}

fn verdict(what: &str, pass: bool, detail: &str) {
    let word = if pass { "PASS" } else { "MISS" };
    println!("  {word:<8} {what} ({detail})");
}
