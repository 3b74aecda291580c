//! sslsniff-bench: what sslsniff costs a TLS program, against the cost of the emptiest
//! uprobes on the same functions, and whether it captures every call.
//!
//! The load runs in a child process (this binary, `load` subcommand) so that it can be
//! traced by PID and timed on its own.

mod bench;
mod ceiling;
mod fallbacks;
mod first_run;
mod floor;
mod follow;
mod golang;
mod hostile;
mod load;
mod message;
mod proc;
mod report;
mod rows;
mod scale;
mod scratch;
mod sniff;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use signal_hook::consts::{SIGINT, SIGTERM};

/// Where `cargo build --release` puts sslsniff, whatever directory the bench runs from.
const DEFAULT_SSLSNIFF: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/release/sslsniff");

#[derive(Debug, Parser)]
#[command(
    name = "sslsniff-bench",
    about = "Measure sslsniff's cost on a TLS load and check what it captures (needs root)"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    /// The sslsniff binary to measure
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SSLSNIFF)]
    sslsniff: PathBuf,

    /// Calls per run at every size [default: 100000, fewer from 16 KiB so that a run moves
    /// at most 1 GiB each way; a tenth of that with --quick]
    #[arg(long = "n", value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..message::MAX_CALLS))]
    n: Option<u64>,

    /// Message sizes, comma-separated; K and M suffixes are KiB and MiB
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = parse_size,
          default_value = "100,4K,64K,1M")]
    sizes: Vec<usize>,

    /// Runs of each measurement; the table shows the median [default: 5 (this VM's speed
    /// moves by a third from one run to the next), 1 with --quick]
    #[arg(long, value_name = "RUNS", value_parser = clap::value_parser!(u64).range(1..))]
    runs: Option<u64>,

    /// A smoke run: few calls and one run, unless --n or --runs say otherwise
    #[arg(long)]
    quick: bool,

    /// Run only these parts, comma-separated [default: all]
    #[arg(long, value_name = "PARTS", value_delimiter = ',', value_enum)]
    only: Vec<Part>,

    /// Never-seen library copies mapped for the attach latency
    #[arg(long, value_name = "N", default_value_t = 100)]
    follow_files: usize,

    /// First runs of each kind of file for the first-run latency
    #[arg(long, value_name = "N", default_value_t = 20)]
    first_runs: usize,

    /// Library copies for the scale rows
    #[arg(long, value_name = "N", default_value_t = 1000)]
    scale_files: usize,

    /// Requests of the Go load
    #[arg(long, value_name = "N", default_value_t = 20_000)]
    go_requests: u32,

    /// Where the runs that write to a file put it [default: the temporary directory]
    #[arg(long, value_name = "DIR")]
    file_dir: Option<PathBuf>,
}

/// The parts of the bench, each with its own table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Part {
    /// The TLS load at each size: untraced, floor, sslsniff in every format and sink
    Throughput,
    /// Per format and sink, the highest payload rate captured whole (several runs a size)
    Ceiling,
    /// Attach latency of never-seen files, and idle cost at 200 execs/s
    Follow,
    /// First runs of new programs by size, and what holding costs a loop of execs
    FirstRun,
    /// 1000 library copies: start, stop, memory, with and without multi-uprobe links
    Scale,
    /// The Go HTTPS fixture: untraced, floor, sslsniff
    Go,
    /// What each kernel fallback costs per call (100 B and 64 KiB)
    Fallbacks,
    /// Crafted files and streams: the examination budget, each decoder's worst cost
    Hostile,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The load generator, started by the benchmark itself
    #[command(hide = true)]
    Load(load::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Some(Command::Load(args)) => load::run(args),
        None => run(&cli),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sslsniff-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Root, an sslsniff binary, and a flag that an interrupt sets: an interrupted run then
/// says so rather than reporting a failed load.
fn prepare(cli: &Cli) -> Result<Arc<AtomicBool>> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("needs root to attach uprobes; run it with sudo");
    }
    if !cli.sslsniff.is_file() {
        bail!(
            "no sslsniff binary at {} (run `cargo build --release` in the sslsniff tree, or pass --sslsniff PATH)",
            cli.sslsniff.display()
        );
    }
    let interrupted = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&interrupted))
            .context("cannot install signal handlers")?;
    }
    Ok(interrupted)
}

fn run(cli: &Cli) -> Result<()> {
    let interrupted = prepare(cli)?;
    let runs = cli.runs.unwrap_or(if cli.quick { 1 } else { 5 });
    let wanted = |part| cli.only.is_empty() || cli.only.contains(&part);
    let sizes: Vec<_> = cli
        .sizes
        .iter()
        .map(|&size| (size, calls_for(cli, size)))
        .collect();
    let file_dir = cli.file_dir.clone().unwrap_or_else(std::env::temp_dir);
    if wanted(Part::Throughput) {
        let plan = bench::Plan {
            sslsniff: cli.sslsniff.clone(),
            sizes: sizes.clone(),
            runs,
            file_dir: file_dir.clone(),
        };
        let results = bench::run(&plan, &interrupted)?;
        report::print(&results);
    }
    if wanted(Part::Ceiling) {
        let plan = ceiling::Plan {
            sslsniff: cli.sslsniff.clone(),
            sizes,
            file_dir,
        };
        let searches = ceiling::run(&plan, &interrupted)?;
        ceiling::print(&searches);
    }
    if wanted(Part::Follow) {
        run_follow(cli, runs)?;
    }
    if wanted(Part::FirstRun) {
        run_first_run(cli, runs)?;
    }
    if wanted(Part::Go) {
        run_go(cli, runs)?;
    }
    if wanted(Part::Fallbacks) {
        let sizes = [100, 64 << 10].map(|size| (size, calls_for(cli, size) / 5));
        fallbacks::run(&cli.sslsniff, &sizes, runs)?;
    }
    if wanted(Part::Hostile) {
        hostile::run(&cli.sslsniff)?;
    }
    // Last: the per-probe run leaves a child releasing its probes for minutes.
    if wanted(Part::Scale) {
        run_scale(cli)?;
    }
    Ok(())
}

fn run_go(cli: &Cli, runs: u64) -> Result<()> {
    let fixture = golang::build()?;
    let mut rows = Vec::new();
    for i in 0..runs {
        eprintln!("sslsniff-bench: Go load, run {}/{runs}", i + 1);
        let run = golang::run(&fixture, &cli.sslsniff, cli.go_requests)?;
        rows.push((run, rows::load_avg()));
    }
    rows::print_go(cli.go_requests, &rows);
    Ok(())
}

fn run_first_run(cli: &Cli, runs: u64) -> Result<()> {
    let scratch = scratch::Scratch::new("subjects")?;
    let subjects = first_run::subjects(&scratch)?;
    let latencies = first_run::latencies(&cli.sslsniff, &subjects, cli.first_runs)?;
    first_run::print_latencies(&latencies);
    let static_client = first_run::build_static_client(&scratch)?;
    let mut costs = Vec::new();
    for i in 0..runs {
        // Interleaved, so that a slow spell of the shared machine falls on all three.
        for mode in first_run::Mode::ALL {
            eprintln!("sslsniff-bench: exec cost, run {}/{runs}, {mode:?}", i + 1);
            costs.push(first_run::exec_cost(&cli.sslsniff, &static_client, mode)?);
        }
    }
    first_run::print_exec_costs(&costs);
    Ok(())
}

fn run_scale(cli: &Cli) -> Result<()> {
    let mut rows = Vec::new();
    for multi in [true, false] {
        eprintln!(
            "sslsniff-bench: scale, {} copies, multi-uprobe links: {multi}",
            cli.scale_files
        );
        let run = scale::run(&cli.sslsniff, cli.scale_files, multi)?;
        rows.push((run, rows::load_avg()));
    }
    rows::print_scale(&rows);
    Ok(())
}

fn run_follow(cli: &Cli, runs: u64) -> Result<()> {
    eprintln!(
        "sslsniff-bench: attach latency, {} copies",
        cli.follow_files
    );
    let latency = follow::latency(&cli.sslsniff, cli.follow_files)?;
    rows::print_latency(&latency, &rows::load_avg());
    let mut idle = Vec::new();
    for i in 0..runs {
        // Interleaved, so that a slow spell of the shared machine falls on all three.
        for follow in [None, Some(false), Some(true)] {
            eprintln!(
                "sslsniff-bench: idle cost, run {}/{runs}, follow: {follow:?}",
                i + 1
            );
            idle.push((follow::idle(&cli.sslsniff, follow)?, rows::load_avg()));
        }
    }
    rows::print_idle(&idle);
    Ok(())
}

/// Large messages get fewer calls so that a run stays within seconds: traced both ways,
/// every byte is copied out twice and formatted, and each run measures three modes.
fn calls_for(cli: &Cli, size: usize) -> u64 {
    const BUDGET: u64 = 1 << 30;
    if let Some(n) = cli.n {
        return n;
    }
    let n = (BUDGET / size as u64).clamp(1, 100_000);
    if cli.quick {
        (n / 10).max(1)
    } else {
        n
    }
}

fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, ""),
    };
    let multiplier = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        _ => return Err(format!("unknown unit '{unit}' (use B, K or M)")),
    };
    let n: usize = digits.parse().map_err(|e| format!("'{s}': {e}"))?;
    let size = n * multiplier;
    if size < message::MIN_SIZE {
        return Err(format!(
            "{size} bytes is too small: a message needs at least {}",
            message::MIN_SIZE
        ));
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(parse_size("100"), Ok(100));
        assert_eq!(parse_size("4K"), Ok(4096));
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert!(parse_size("1G").is_err());
        assert!(parse_size("8").is_err());
    }
}
