//! The ceiling: for each size, format and sink, the highest payload rate at which
//! sslsniff captures every call whole with both directions traced. A run as fast as the
//! load goes first; if it lost anything, paced runs narrow the rate down.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Result};

use crate::bench::{calls_for, under_sslsniff, Load, Sniffed};
use crate::message::size_label;
use crate::report::table;
use crate::sniff::{Format, Mode, Sink, FORMATS};

/// Paced runs after the first: each halves the rate's uncertainty on a log scale, so
/// that four leave it within 10%.
const STEPS: usize = 4;
/// A paced run lasts about this long: long enough that a reader short of the rate by
/// 2% at 1 GB/s overflows the 64 MiB ring.
const PACED_SECONDS: f64 = 3.0;
/// The first paced rate, against what the load reached unpaced.
const FIRST_STEP: f64 = 0.7;
/// Ceilings closer than this are the same, as far as the search can tell.
const PRECISION: f64 = 0.1;

pub struct Plan {
    pub sslsniff: PathBuf,
    /// Message size and the calls of an unpaced run.
    pub sizes: Vec<(usize, u64)>,
    pub file_dir: PathBuf,
}

/// One search: the runs it made, in order.
pub struct Search {
    pub size: usize,
    pub mode: Mode,
    pub runs: Vec<Tried>,
}

pub struct Tried {
    /// The payload rate the load reached.
    pub rate: f64,
    pub whole: bool,
}

impl Search {
    /// The highest rate reached with every call whole.
    fn ceiling(&self) -> Option<f64> {
        self.runs
            .iter()
            .filter(|t| t.whole)
            .map(|t| t.rate)
            .max_by(f64::total_cmp)
    }
}

pub fn run(plan: &Plan, interrupted: &AtomicBool) -> Result<Vec<Search>> {
    let mut searches = Vec::new();
    for &(size, n) in &plan.sizes {
        for format in FORMATS {
            for sink in [Sink::Pipe, Sink::File] {
                let mode = Mode::both(format, sink);
                let search = match search(plan, mode, size, calls_for(format, n)) {
                    _ if interrupted.load(Ordering::Relaxed) => bail!("interrupted"),
                    search => search?,
                };
                searches.push(search);
            }
        }
    }
    Ok(searches)
}

fn search(plan: &Plan, mode: Mode, size: usize, n: u64) -> Result<Search> {
    let mut runs = Vec::new();
    let first = tried(plan, mode, size, n, None)?;
    let (mut low, mut high) = (None::<f64>, first.rate);
    let whole = first.whole;
    runs.push(first);
    if !whole {
        let mut pace = high * FIRST_STEP;
        for _ in 0..STEPS {
            let calls = ((pace * PACED_SECONDS) / size as f64).clamp(1.0, n as f64) as u64;
            let t = tried(plan, mode, size, calls, Some(pace))?;
            if t.whole {
                low = Some(low.map_or(pace, |l: f64| l.max(pace)));
            } else {
                high = pace;
            }
            runs.push(t);
            pace = match low {
                Some(low) => (low * high).sqrt(),
                None => high / 2.0,
            };
        }
    }
    Ok(Search { size, mode, runs })
}

fn tried(plan: &Plan, mode: Mode, size: usize, n: u64, pace: Option<f64>) -> Result<Tried> {
    let load = Load {
        size,
        n,
        rate: pace.map(|p| p as u64),
    };
    let s = under_sslsniff(&plan.sslsniff, mode, &load, &plan.file_dir)?;
    let t = Tried {
        rate: (n * size as u64) as f64 / s.outcome.elapsed_s,
        whole: whole(&s),
    };
    eprintln!(
        "sslsniff-bench: ceiling, {} {}, {}: {} -> {:.0} MB/s, {}/{} captured, {} undelivered bytes",
        size_label(size),
        mode.label(),
        pace.map_or("unpaced".into(), |p| format!("paced at {:.0} MB/s", p / 1e6)),
        n,
        t.rate / 1e6,
        s.capture.captured,
        s.capture.made,
        s.report.summary.worst_output().undelivered_bytes
    );
    Ok(t)
}

fn whole(s: &Sniffed) -> bool {
    s.capture.all_whole() && s.report.summary.worst_output().undelivered_bytes == 0
}

pub fn print(searches: &[Search]) {
    let rows: Vec<Vec<String>> = searches.iter().map(row).collect();
    println!();
    table(
        &[
            "size",
            "format",
            "sink",
            "unpaced(MB/s)",
            "unpaced whole",
            "ceiling(MB/s)",
            "runs (MB/s reached: whole or lost)",
        ],
        &rows,
    );
    println!();
    println!("Rates are payload bytes a second each way (10^6 B per MB); both directions traced, so sslsniff captures twice that.");
    println!("ceiling: the highest rate reached with every call captured whole and nothing undelivered; '>=' when the unpaced run was whole (the load's own limit under sslsniff).");
    println!("A lossy unpaced run is followed by {STEPS} paced runs of about {PACED_SECONDS} s, each halving the interval on a log scale.");
    print_targets(searches);
}

fn row(s: &Search) -> Vec<String> {
    let first = &s.runs[0];
    let ceiling = match s.ceiling() {
        Some(c) if first.whole => format!(">= {:.0}", c / 1e6),
        Some(c) => format!("{:.0}", c / 1e6),
        None => format!(
            "< {:.0}",
            s.runs.iter().map(|t| t.rate).fold(f64::INFINITY, f64::min) / 1e6
        ),
    };
    let runs: Vec<String> = s
        .runs
        .iter()
        .map(|t| {
            format!(
                "{:.0}:{}",
                t.rate / 1e6,
                if t.whole { "whole" } else { "lost" }
            )
        })
        .collect();
    vec![
        size_label(s.size),
        s.mode.format.label().to_string(),
        s.mode.sink.label().to_string(),
        format!("{:.0}", first.rate / 1e6),
        if first.whole { "yes" } else { "no" }.to_string(),
        ceiling,
        runs.join(" "),
    ]
}

/// JSON and pcapng keep up with text: their ceilings are at least text's, to the same
/// sink, within the search's precision.
fn print_targets(searches: &[Search]) {
    println!();
    println!("Targets:");
    for s in searches.iter().filter(|s| s.mode.format != Format::Text) {
        if !matches!(s.mode.format, Format::Json | Format::Pcap) {
            continue;
        }
        let text = searches
            .iter()
            .find(|t| t.size == s.size && t.mode == Mode::both(Format::Text, s.mode.sink));
        let (Some(text), mine) = (text.and_then(Search::ceiling), s.ceiling()) else {
            continue;
        };
        let pass = mine.is_some_and(|m| m >= text * (1.0 - PRECISION) || s.runs[0].whole);
        let status = if pass { "PASS" } else { "MISS" };
        println!(
            "  {status}     ceiling of {} >= text's, {}, {} ({} against {:.0} MB/s)",
            s.mode.format.label(),
            s.mode.sink.label(),
            size_label(s.size),
            mine.map_or("none".into(), |m| format!("{:.0}", m / 1e6)),
            text / 1e6
        );
    }
}
