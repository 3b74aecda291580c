//! What each kernel fallback costs per call against the kernel's own mechanism: the load
//! under sslsniff with the fallback forced (`SSLSNIFF_WITHOUT`), output discarded, so that
//! the difference is the kernel side's. The programs' own run time per call (the
//! kernel's BPF statistics) is the figure that a busy machine does not blur; the load's
//! time is shown beside it.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{ensure, Context, Result};

use crate::bench::{run_id, Paused};
use crate::follow;
use crate::load::Outcome;
use crate::message::size_label;
use crate::report::{median, table};
use crate::rows::load_avg;
use crate::sniff::{Sniffer, ATTACH_TIMEOUT};

/// The mechanisms measured: the kernel's own, each fallback alone, all of them (as on
/// 5.10).
const VARIANTS: [&str; 7] = [
    "",
    "task-storage",
    "cookies",
    "bpf-loop",
    "uprobe-multi",
    "syscall-tracepoint",
    "all",
];

/// One variant's runs at one size.
struct Row {
    without: &'static str,
    size: usize,
    /// Load times, seconds.
    times: Vec<f64>,
    /// The probe programs' run time per call, nanoseconds.
    prog_ns: Vec<f64>,
    calls: u64,
}

/// One run under one variant.
struct Measured {
    outcome: Outcome,
    prog_ns_per_call: f64,
}

/// `runs` runs of `n` calls of each size under every variant, interleaved so that a
/// slow spell of the shared machine falls on all of them.
pub fn run(sslsniff: &Path, sizes: &[(usize, u64)], runs: u64) -> Result<()> {
    let mut rows: Vec<Row> = Vec::new();
    for &(size, n) in sizes {
        for i in 0..runs {
            eprintln!(
                "sslsniff-bench: fallbacks, {}, run {}/{runs}",
                size_label(size),
                i + 1
            );
            for without in VARIANTS {
                let m = under(sslsniff, without, size, n)
                    .with_context(|| format!("the load under SSLSNIFF_WITHOUT={without}"))?;
                let at = rows
                    .iter()
                    .position(|r| r.without == without && r.size == size);
                let row = match at {
                    Some(at) => &mut rows[at],
                    None => {
                        rows.push(Row {
                            without,
                            size,
                            times: Vec::new(),
                            prog_ns: Vec::new(),
                            calls: 0,
                        });
                        rows.last_mut().expect("just pushed")
                    }
                };
                row.times.push(m.outcome.elapsed_s);
                row.prog_ns.push(m.prog_ns_per_call);
                row.calls = m.outcome.writes + m.outcome.reads;
            }
        }
    }
    print(&rows);
    Ok(())
}

/// The load traced on both sides with `without` forced, output to /dev/null; every call
/// must reach sslsniff, none undelivered.
fn under(sslsniff: &Path, without: &str, size: usize, n: u64) -> Result<Measured> {
    let load = Paused::start(size, n, run_id(), None)?;
    let mut cmd = Command::new(sslsniff);
    cmd.args(["-p", &load.pid().to_string(), "--max-buffer-size", "0"])
        .args(["--status", "json"])
        .env("SSLSNIFF_WITHOUT", without);
    let mut sniffer = Sniffer::spawn_to(&mut cmd, Stdio::null())?;
    sniffer.wait_ready(ATTACH_TIMEOUT)?;
    let stats = follow::enable_stats()?;
    let before = follow::prog_runs(sniffer.pid())?;
    let outcome = load.release()?;
    let after = follow::prog_runs(sniffer.pid())?;
    drop(stats);
    let report = sniffer.stop()?;
    // The probes and what serves them (the thread-exit hook of kernels without task
    // storage); not the hooks that follow the machine.
    let prog_ns: u64 = follow::prog_delta(&before, &after)
        .iter()
        .filter(|p| {
            ["tls_", "go_", "thread_exit"]
                .iter()
                .any(|x| p.name.starts_with(x))
        })
        .map(|p| p.ns)
        .sum();
    let s = report.summary;
    ensure!(
        s.events == outcome.writes + outcome.reads && s.undelivered_bytes == 0,
        "{} of {} calls printed, {} bytes undelivered",
        s.events,
        outcome.writes + outcome.reads,
        s.undelivered_bytes
    );
    let calls = (outcome.writes + outcome.reads).max(1);
    Ok(Measured {
        outcome,
        prog_ns_per_call: prog_ns as f64 / calls as f64,
    })
}

fn print(rows: &[Row]) {
    println!();
    println!("Kernel fallbacks: the load traced on both sides, output discarded, medians; BPF ns/call is the probe programs' run time per call (the kernel's statistics, which add two clock reads to each run), added is against the kernel's own mechanisms at the same size (load {}):", load_avg());
    let native = |size| rows.iter().find(|r| r.without.is_empty() && r.size == size);
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let (t, ns) = (median(r.times.clone()), median(r.prog_ns.clone()));
            let added = native(r.size).map_or("-".into(), |base| {
                format!("{:+.0}", ns - median(base.prog_ns.clone()))
            });
            let name = if r.without.is_empty() {
                "none (native)"
            } else {
                r.without
            };
            vec![
                name.to_string(),
                size_label(r.size),
                r.calls.to_string(),
                format!("{t:.3}"),
                format!("{ns:.0}"),
                added,
            ]
        })
        .collect();
    let headers = [
        "SSLSNIFF_WITHOUT",
        "size",
        "calls",
        "load (s)",
        "BPF ns/call",
        "added ns/call",
    ];
    table(&headers, &cells);
}
