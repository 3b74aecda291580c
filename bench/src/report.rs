//! The results table and the targets sslsniff is held to.

use crate::bench::{Run, SizeResult};

/// sslsniff may cost at most this much more per call than empty probes, at 100 B.
const MAX_OVERHEAD: f64 = 1.10;

const HEADERS: [&str; 15] = [
    "size",
    "N",
    "untraced(s)",
    "floor(s)",
    "sslsniff(s)",
    "floor us/call",
    "sslsniff us/call",
    "overhead/floor",
    "captured/made",
    "wrong",
    "cut",
    "bytes lost",
    "cpu(s)",
    "peak RSS(MiB)",
    "stop(s)",
];

/// One size's runs boiled down: medians of the timings and of the CPU time, the run
/// that captured fewest writes for the checks, the largest RSS and the slowest stop.
struct Summary<'a> {
    untraced: f64,
    floor: f64,
    sslsniff: f64,
    /// Probed calls per run: the load's writes and reads.
    calls: f64,
    worst: &'a Run,
    cpu: f64,
    rss_mib: f64,
    stop: f64,
}

impl<'a> Summary<'a> {
    fn of(r: &'a SizeResult) -> Self {
        let med = |f: fn(&Run) -> f64| median(r.runs.iter().map(f).collect());
        let worst = r
            .runs
            .iter()
            .min_by_key(|run| run.capture.captured)
            .expect("runs >= 1");
        Summary {
            untraced: med(|run| run.untraced.elapsed_s),
            floor: med(|run| run.floor.elapsed_s),
            sslsniff: med(|run| run.sslsniff.elapsed_s),
            calls: med(|run| (run.untraced.writes + run.untraced.reads) as f64),
            worst,
            cpu: med(|run| run.report.usage.cpu_s),
            rss_mib: r
                .runs
                .iter()
                .map(|run| run.report.usage.max_rss_kib)
                .max()
                .unwrap_or(0) as f64
                / 1024.0,
            stop: r
                .runs
                .iter()
                .map(|run| run.report.stop_s)
                .fold(0.0, f64::max),
        }
    }

    /// What sslsniff adds per call over what the empty probes add; `None` when the
    /// floor is lost in the noise.
    fn overhead(&self) -> Option<f64> {
        let floor = self.floor - self.untraced;
        (floor > 0.0).then(|| (self.sslsniff - self.untraced) / floor)
    }

    fn us_per_call(&self, traced: f64) -> f64 {
        (traced - self.untraced) / self.calls * 1e6
    }
}

pub fn print(results: &[SizeResult]) {
    let rows: Vec<Vec<String>> = results.iter().map(row).collect();
    println!();
    print_table(&rows);
    println!();
    println!(
        "Times and cpu are medians of {} run(s); the capture columns show the run that captured fewest writes.",
        results[0].runs.len()
    );
    println!("A call is one SSL_write_ex or SSL_read_ex of the load; 16 KiB TLS records split large writes into several reads.");
    println!("sslsniff traces the writer thread (-c sslsniff-bench): the reader's calls still hit the probes and are filtered in the kernel.");
    println!("By default N is 2000 for 1 MiB messages, to keep runs short; sslsniff runs with --max-buffer-size 0.");
    println!("wrong: write events printed whole that are no message sent (or a repeat); cut: TRUNCATED or INCOMPLETE ones.");
    println!("bytes lost: sslsniff's own summary; peak RSS: largest of the runs; stop: SIGINT to exit, slowest run.");
    print_anomalies(results);
    println!();
    print_targets(results);
}

/// What sslsniff said about itself that does not add up: each line names a run.
fn print_anomalies(results: &[SizeResult]) {
    let lines: Vec<String> = results
        .iter()
        .flat_map(|r| {
            r.runs.iter().enumerate().flat_map(move |(i, run)| {
                anomalies(run, r.n, r.size)
                    .into_iter()
                    .map(move |a| format!("{} run {}: {a}", size_label(r.size), i + 1))
            })
        })
        .collect();
    if !lines.is_empty() {
        println!();
        println!("sslsniff's own counts that do not add up:");
        for line in lines {
            println!("  {line}");
        }
    }
}

fn anomalies(run: &Run, n: u64, size: usize) -> Vec<String> {
    let s = &run.report.summary;
    // sslsniff traces the writer thread only (see sniff.rs).
    let made = run.sslsniff.writes;
    let moved = n * size as u64;
    let mut out = Vec::new();
    if s.calls != made {
        out.push(format!(
            "the kernel saw {} calls, the load made {made}",
            s.calls
        ));
    }
    if s.events != s.calls {
        out.push(format!(
            "{} events printed for {} calls seen",
            s.events, s.calls
        ));
    }
    if s.bytes != moved {
        out.push(format!("{} bytes captured of {moved} moved", s.bytes));
    }
    if run.report.loss_warnings > 0 {
        out.push(format!(
            "{} 'lost records' warnings",
            run.report.loss_warnings
        ));
    }
    out
}

fn row(r: &SizeResult) -> Vec<String> {
    let s = Summary::of(r);
    let c = &s.worst.capture;
    vec![
        size_label(r.size),
        r.n.to_string(),
        format!("{:.3}", s.untraced),
        format!("{:.3}", s.floor),
        format!("{:.3}", s.sslsniff),
        format!("{:.2}", s.us_per_call(s.floor)),
        format!("{:.2}", s.us_per_call(s.sslsniff)),
        s.overhead()
            .map_or("n/a".to_string(), |o| format!("{o:.2}x")),
        format!("{}/{}", c.captured, c.made),
        c.wrong.to_string(),
        c.cut.to_string(),
        s.worst.report.summary.lost.to_string(),
        format!("{:.2}", s.cpu),
        format!("{:.1}", s.rss_mib),
        format!("{:.2}", s.stop),
    ]
}

fn print_table(rows: &[Vec<String>]) {
    let widths: Vec<usize> = (0..HEADERS.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].len())
                .chain([HEADERS[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:>w$}"))
            .collect();
        println!("{}", padded.join("  "));
    };
    line(HEADERS.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

fn print_targets(results: &[SizeResult]) {
    let at = |size: usize| results.iter().find(|r| r.size == size);
    let all_whole = |r: &SizeResult| r.runs.iter().all(|run| run.capture.all_writes_whole());
    println!("Targets:");
    for size in [100, 4 << 10, 64 << 10] {
        let what = format!("100% of writes captured whole at {}", size_label(size));
        verdict(&what, at(size).map(|r| (all_whole(r), capture_detail(r))));
    }
    let overhead = at(100).map(|r| match Summary::of(r).overhead() {
        Some(o) => (o <= MAX_OVERHEAD, format!("{o:.2}x")),
        None => (false, "floor not measurable".to_string()),
    });
    verdict(
        &format!("overhead <= {MAX_OVERHEAD:.2}x floor at 100 B"),
        overhead,
    );
    verdict(
        "1 MiB writes captured byte-exact",
        at(1 << 20).map(|r| (all_whole(r), capture_detail(r))),
    );
}

fn capture_detail(r: &SizeResult) -> String {
    let c = Summary::of(r).worst.capture;
    format!("{}/{} in the worst run", c.captured, c.made)
}

fn verdict(what: &str, result: Option<(bool, String)>) {
    match result {
        Some((true, detail)) => println!("  PASS  {what} ({detail})"),
        Some((false, detail)) => println!("  MISS  {what} ({detail})"),
        None => println!("  SKIP  {what} (size not measured)"),
    }
}

pub fn size_label(size: usize) -> String {
    match size {
        s if s >= 1 << 20 && s % (1 << 20) == 0 => format!("{} MiB", s >> 20),
        s if s >= 1 << 10 && s % (1 << 10) == 0 => format!("{} KiB", s >> 10),
        s => format!("{s} B"),
    }
}

fn median(mut values: Vec<f64>) -> f64 {
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
