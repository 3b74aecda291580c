//! What each kernel fallback costs per call against the kernel's own mechanism: the load
//! under sslsniff with the fallback forced (`SSLSNIFF_WITHOUT`), output discarded, so that
//! the difference is the kernel side's.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{ensure, Context, Result};

use crate::bench::{run_id, Paused};
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
    calls: u64,
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
                let outcome = under(sslsniff, without, size, n)
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
                            calls: 0,
                        });
                        rows.last_mut().expect("just pushed")
                    }
                };
                row.times.push(outcome.elapsed_s);
                row.calls = outcome.writes + outcome.reads;
            }
        }
    }
    print(&rows);
    Ok(())
}

/// The load traced on both sides with `without` forced, output to /dev/null; every call
/// must reach sslsniff, none undelivered.
fn under(sslsniff: &Path, without: &str, size: usize, n: u64) -> Result<Outcome> {
    let load = Paused::start(size, n, run_id())?;
    let mut cmd = Command::new(sslsniff);
    cmd.args(["-p", &load.pid().to_string(), "--max-buffer-size", "0"])
        .args(["--status", "json"])
        .env("SSLSNIFF_WITHOUT", without);
    let mut sniffer = Sniffer::spawn_to(&mut cmd, Stdio::null())?;
    sniffer.wait_ready(ATTACH_TIMEOUT)?;
    let outcome = load.release()?;
    let report = sniffer.stop()?;
    let s = report.summary;
    ensure!(
        s.events == outcome.writes + outcome.reads && s.undelivered_bytes == 0,
        "{} of {} calls printed, {} bytes undelivered",
        s.events,
        outcome.writes + outcome.reads,
        s.undelivered_bytes
    );
    Ok(outcome)
}

fn print(rows: &[Row]) {
    println!();
    println!("Kernel fallbacks: the load traced on both sides, output discarded, medians; added is against the kernel's own mechanisms at the same size (load {}):", load_avg());
    let native = |size| {
        rows.iter()
            .find(|r| r.without.is_empty() && r.size == size)
            .map(|r| median(r.times.clone()))
    };
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let t = median(r.times.clone());
            let added = native(r.size).map_or("-".into(), |base| {
                format!("{:+.2}", (t - base) * 1e6 / r.calls.max(1) as f64)
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
                added,
            ]
        })
        .collect();
    table(
        &[
            "SSLSNIFF_WITHOUT",
            "size",
            "calls",
            "load (s)",
            "added (us/call)",
        ],
        &cells,
    );
}
