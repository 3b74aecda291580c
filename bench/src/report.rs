//! The results table and the targets sslsniff is held to.

use crate::bench::{Run, SizeResult, Sniffed};
use crate::message::size_label;
use crate::sniff::{Format, Mode, Sink, MODES};

/// sslsniff's added time over the floor's, both directions traced in text, per size.
const RATIO_TARGETS: [(usize, f64); 4] = [
    (100, 1.10),
    (4 << 10, 1.25),
    (64 << 10, 1.5),
    (1 << 20, 1.5),
];
/// JSON's added time over text's, both directions traced, to the same sink.
const JSON_OVER_TEXT: f64 = 1.1;
/// --pcap's (text and a pcapng file) ratio at 4 KiB.
const PCAP_4K: f64 = 1.35;
/// sslsniff's CPU time per GB of payload it captured.
const CPU_S_PER_GB: f64 = 0.5;
/// sslsniff's default ring buffer. The kernel maps its data pages into the reader twice
/// in a row (so that a record that wraps reads as one piece), all at mmap time, and
/// both mappings count in the resident set: the ring alone shows as twice its size.
const RING_MIB: f64 = 64.0;
/// Each output's queue holds as much as the ring, and an eighth more for the rows of
/// calls whose payload it dropped: memory taken only while a reader or a disk lags.
const QUEUE_MIB: f64 = RING_MIB * 9.0 / 8.0;
/// Resident memory besides the ring and the output queues.
const RSS_BESIDES_RING_MIB: f64 = 16.0;

const HEADERS: [&str; 17] = [
    "size",
    "N",
    "traced",
    "untraced(s)",
    "floor(s)",
    "sslsniff(s)",
    "ratio",
    "best",
    "captured/made",
    "wrong",
    "cut",
    "undelivered",
    "behind",
    "cpu(s)",
    "cpu s/GB",
    "peak RSS(MiB)",
    "stop(s)",
];

/// One size and mode's runs boiled down: medians of the timings and of the CPU time,
/// the run that captured fewest calls for the checks, the largest RSS and the slowest
/// stop.
struct ModeSummary<'a> {
    untraced: f64,
    floor: f64,
    sslsniff: f64,
    worst: &'a Sniffed,
    cpu: f64,
    /// sslsniff's CPU seconds per GB (10^9 bytes) of payload it captured.
    cpu_per_gb: f64,
    rss_mib: f64,
    stop: f64,
    /// The ratio from each column's fastest run.
    best_ratio: f64,
}

fn sniffed(run: &Run, mode: Mode) -> &Sniffed {
    run.sniffed
        .iter()
        .find(|s| s.mode == mode)
        .expect("every run measures every mode")
}

impl<'a> ModeSummary<'a> {
    fn of(r: &'a SizeResult, mode: Mode) -> Self {
        let med = |f: &dyn Fn(&'a Run) -> f64| median(r.runs.iter().map(f).collect());
        let min = |f: &dyn Fn(&'a Run) -> f64| r.runs.iter().map(f).fold(f64::INFINITY, f64::min);
        let of_mode = |run: &'a Run| sniffed(run, mode);
        let worst = r
            .runs
            .iter()
            .map(of_mode)
            .min_by_key(|s| s.capture.captured)
            .expect("runs >= 1");
        // Per call, at the run's N: hexdump runs make fewer calls.
        let scaled = |s: &Sniffed| s.outcome.elapsed_s * r.n as f64 / s.n as f64;
        ModeSummary {
            untraced: med(&|run| run.untraced.elapsed_s),
            floor: med(&|run| run.floor.elapsed_s),
            sslsniff: med(&|run| scaled(of_mode(run))),
            worst,
            cpu: med(&|run| of_mode(run).report.usage.cpu_s),
            cpu_per_gb: med(&|run| {
                let s = of_mode(run);
                s.report.usage.cpu_s / (s.report.summary.captured_bytes.max(1) as f64 / 1e9)
            }),
            rss_mib: r
                .runs
                .iter()
                .map(|run| of_mode(run).report.usage.max_rss_kib)
                .max()
                .unwrap_or(0) as f64
                / 1024.0,
            stop: r
                .runs
                .iter()
                .map(|run| of_mode(run).report.stop_s)
                .fold(0.0, f64::max),
            best_ratio: {
                let untraced = min(&|run| run.untraced.elapsed_s);
                (min(&|run| scaled(of_mode(run))) - untraced)
                    / (min(&|run| run.floor.elapsed_s) - untraced)
            },
        }
    }

    /// What sslsniff adds over what the empty probes add.
    fn ratio(&self) -> f64 {
        (self.sslsniff - self.untraced) / (self.floor - self.untraced)
    }
}

/// Why a size's figures cannot be judged, if they cannot: a ratio is only a measurement
/// when the floor costs something and nothing ran faster traced than untraced. Other
/// tracers running are only named (print_others): which library they probe is not
/// visible from outside, and one on another library costs these runs nothing.
fn invalid(r: &SizeResult) -> Option<String> {
    let s = ModeSummary::of(r, MODES[0]);
    if s.floor <= s.untraced {
        return Some(format!(
            "the floor adds nothing over untraced ({:.3} s vs {:.3} s): uprobes already on libssl.so.3 (a tracer left attached?) or a noisy machine",
            s.floor, s.untraced
        ));
    }
    MODES.iter().find_map(|&mode| {
        let s = ModeSummary::of(r, mode);
        (s.sslsniff < s.untraced).then(|| {
            format!(
                "{} ran faster under sslsniff than untraced ({:.3} s vs {:.3} s): noise larger than the cost",
                mode.label(),
                s.sslsniff,
                s.untraced
            )
        })
    })
}

pub fn print(results: &[SizeResult]) {
    let rows: Vec<Vec<String>> = results
        .iter()
        .flat_map(|r| MODES.iter().map(move |&mode| row(r, mode)))
        .collect();
    println!();
    table(&HEADERS, &rows);
    println!();
    println!(
        "Times and cpu are medians of {} run(s); the capture columns show the run that captured fewest calls.",
        results[0].runs.len()
    );
    println!("ratio: (sslsniff - untraced) / (floor - untraced) of the medians; the floor is empty uprobe+uretprobe pairs on the same functions.");
    println!("best: the same of each column's fastest run (the machine's slow spells only add time); the targets are judged on ratio.");
    println!("both: the writer's and the reader's calls are traced; writer: -c picks the writing thread, the reader's calls trap and are dropped in BPF.");
    println!("A call is one SSL_write_ex or SSL_read_ex; 16 KiB TLS records split large writes into several reads. sslsniff runs with --max-buffer-size 0.");
    println!("pcapng: --pcap - (the capture alone on stdout); text+pcapng: text on stdout and --pcap FILE (a file in both sinks); hexdump: --hexdump, a fifth of the calls, times scaled to N.");
    println!("pipe: stdout to a pipe that the bench reads and checks byte for byte as it comes; file: to a new file, checked after the run, as is every pcapng file;");
    println!("null: to /dev/null (capturing and formatting without delivering), judged from sslsniff's own counts.");
    println!("wrong: events printed whole that are no call made (or a repeat, or out of order); cut: truncated or undelivered ones.");
    println!("undelivered: bytes sslsniff reports undelivered in the worst run; behind: of those, the payloads its output queue dropped because the sink (the bench's check on a pipe, or the file) fell behind; the rest the ring buffer could not take.");
    println!("cpu: sslsniff's own CPU time; cpu s/GB: per 10^9 payload bytes captured; peak RSS: largest of the runs; stop: SIGINT to exit, slowest run.");
    print_anomalies(results);
    print_others(results);
    println!();
    print_targets(results);
}

/// Other sslsniff or bpftrace processes seen around the runs: if they probe libssl.so.3,
/// every measurement paid for them, and the floor check may not catch it.
fn print_others(results: &[SizeResult]) {
    let mut others: Vec<&str> = results
        .iter()
        .flat_map(|r| {
            r.runs
                .iter()
                .flat_map(|run| run.others.iter().map(String::as_str))
        })
        .collect();
    others.sort_unstable();
    others.dedup();
    if !others.is_empty() {
        println!();
        println!(
            "Caution: other tracers were running: {}. If they probe libssl.so.3, all times include their probes.",
            others.join(", ")
        );
    }
}

/// What sslsniff said about itself that does not add up: each line names a run.
fn print_anomalies(results: &[SizeResult]) {
    let mut lines = Vec::new();
    for r in results {
        for (i, run) in r.runs.iter().enumerate() {
            for s in &run.sniffed {
                for a in anomalies(s, r.size) {
                    lines.push(format!(
                        "{} {} run {}: {a}",
                        size_label(r.size),
                        s.mode.label(),
                        i + 1
                    ));
                }
            }
        }
    }
    if !lines.is_empty() {
        println!();
        println!("sslsniff's own counts that do not add up:");
        for line in lines {
            println!("  {line}");
        }
    }
}

fn anomalies(s: &Sniffed, size: usize) -> Vec<String> {
    let sum = &s.report.summary;
    let n = s.n;
    let (made, moved) = match s.mode.both {
        true => (s.outcome.writes + s.outcome.reads, 2 * n * size as u64),
        false => (s.outcome.writes, n * size as u64),
    };
    let mut out = Vec::new();
    if sum.calls != made {
        out.push(format!(
            "the kernel saw {} calls, the load made {made}",
            sum.calls
        ));
    }
    if sum.events != sum.calls {
        out.push(format!(
            "{} events printed for {} calls seen",
            sum.events, sum.calls
        ));
    }
    if sum.captured_bytes != moved {
        out.push(format!(
            "{} bytes captured of {moved} moved",
            sum.captured_bytes
        ));
    }
    if sum.malformed_records > 0 {
        out.push(format!("{} malformed records", sum.malformed_records));
    }
    if s.report.loss_warnings > 0 {
        out.push(format!(
            "{} 'undelivered bytes' warnings",
            s.report.loss_warnings
        ));
    }
    out
}

fn row(r: &SizeResult, mode: Mode) -> Vec<String> {
    let s = ModeSummary::of(r, mode);
    let c = &s.worst.capture;
    let (ratio, best) = match invalid(r) {
        Some(_) => ("invalid".to_string(), "invalid".to_string()),
        None => (
            format!("{:.2}x", s.ratio()),
            format!("{:.2}x", s.best_ratio),
        ),
    };
    vec![
        size_label(r.size),
        s.worst.n.to_string(),
        mode.label(),
        format!("{:.3}", s.untraced),
        format!("{:.3}", s.floor),
        format!("{:.3}", s.sslsniff),
        ratio,
        best,
        format!("{}/{}", c.captured, c.made),
        c.wrong.to_string(),
        c.cut.to_string(),
        s.worst
            .report
            .summary
            .worst_output()
            .undelivered_bytes
            .to_string(),
        s.worst
            .report
            .summary
            .worst_output()
            .dropped_bytes
            .to_string(),
        format!("{:.2}", s.cpu),
        format!("{:.2}", s.cpu_per_gb),
        format!("{:.1}", s.rss_mib),
        format!("{:.2}", s.stop),
    ]
}

/// Left-aligned columns as wide as their widest cell, two spaces apart.
pub fn table(headers: &[&str], rows: &[Vec<String>]) {
    let widths: Vec<usize> = (0..headers.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].len())
                .chain([headers[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, &w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(headers.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

fn print_targets(results: &[SizeResult]) {
    println!("Targets:");
    for r in results {
        let label = size_label(r.size);
        for &mode in &MODES {
            let all = r
                .runs
                .iter()
                .all(|run| sniffed(run, mode).capture.all_whole());
            let c = ModeSummary::of(r, mode).worst.capture;
            let detail = format!("{}/{} in the worst run", c.captured, c.made);
            verdict(
                &format!("every call captured whole, {}, {label}", mode.label()),
                Ok((all, detail)),
            );
        }
        print_cost_targets(r);
    }
}

/// The ratios, JSON against text, and the CPU and memory targets of one size.
fn print_cost_targets(r: &SizeResult) {
    let label = size_label(r.size);
    let why = invalid(r);
    let judged = |pass: bool, detail: String| match &why {
        Some(reason) => Err(reason.clone()),
        None => Ok((pass, detail)),
    };
    let of = |format, sink| ModeSummary::of(r, Mode::both(format, sink));
    let text = of(Format::Text, Sink::Pipe);
    if let Some(&(_, target)) = RATIO_TARGETS.iter().find(|&&(size, _)| size == r.size) {
        let o = text.ratio();
        verdict(
            &format!("ratio <= {target:.2}x, both text pipe, {label}"),
            judged(o <= target, format!("{o:.2}x")),
        );
    }
    for sink in [Sink::Pipe, Sink::File] {
        let (text, json) = (of(Format::Text, sink), of(Format::Json, sink));
        let over = (json.sslsniff - json.untraced) / (text.sslsniff - text.untraced);
        verdict(
            &format!(
                "json's added time <= {JSON_OVER_TEXT:.1}x text's, both {}, {label}",
                sink.label()
            ),
            judged(over <= JSON_OVER_TEXT, format!("{over:.2}x")),
        );
        if r.size == 4 << 10 {
            let o = of(Format::TextPcap, sink).ratio();
            verdict(
                &format!(
                    "ratio <= {PCAP_4K:.2}x, both text+pcapng {}, {label}",
                    sink.label()
                ),
                judged(o <= PCAP_4K, format!("{o:.2}x")),
            );
        }
    }
    let json = of(Format::Json, Sink::Pipe);
    for s in [&text, &json] {
        verdict(
            &format!(
                "cpu <= {CPU_S_PER_GB} s/GB, {}, {label}",
                s.worst.mode.label()
            ),
            Ok((
                s.cpu_per_gb <= CPU_S_PER_GB,
                format!("{:.2} s/GB", s.cpu_per_gb),
            )),
        );
    }
    print_memory_target(r, &label);
}

/// The memory target of one size, judged on the mode that comes closest to its limit.
fn print_memory_target(r: &SizeResult, label: &str) {
    // What each mode holds besides the ring, against what it may: its queues' bound
    // on top of the fixed part.
    let queues = |mode: Mode| {
        if mode.format == Format::TextPcap {
            2.0
        } else {
            1.0
        }
    };
    let worst = MODES
        .iter()
        .map(|&mode| {
            let besides = ModeSummary::of(r, mode).rss_mib - 2.0 * RING_MIB;
            (
                besides,
                RSS_BESIDES_RING_MIB + queues(mode) * QUEUE_MIB,
                mode,
            )
        })
        .max_by(|a, b| (a.0 - a.1).total_cmp(&(b.0 - b.1)))
        .expect("MODES is not empty");
    let (besides, limit, mode) = worst;
    verdict(
        &format!("resident memory besides the ring (2 x {RING_MIB} MiB mapped) <= {RSS_BESIDES_RING_MIB} MiB and the output queues ({QUEUE_MIB} MiB each at most), {label}"),
        Ok((
            besides <= limit,
            format!("{besides:.1} MiB in {}, of {limit:.0} MiB", mode.label()),
        )),
    );
}

/// Ok: a judged target; Err: why it could not be judged.
fn verdict(what: &str, result: Result<(bool, String), String>) {
    match result {
        Ok((true, detail)) => println!("  PASS     {what} ({detail})"),
        Ok((false, detail)) => println!("  MISS     {what} ({detail})"),
        Err(why) => println!("  INVALID  {what}: {why}"),
    }
}

pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 0 {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_medians() {
        assert_eq!(size_label(100), "100 B");
        assert_eq!(size_label(4096), "4 KiB");
        assert_eq!(size_label(1 << 20), "1 MiB");
        assert_eq!(size_label(1500), "1500 B");
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
