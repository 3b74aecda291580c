//! sslsniff: the plaintext of TLS traffic, from eBPF uprobes on TLS libraries.
//!
//! The data path is one line: discover libraries -> attach probes -> kernel event ->
//! decode and reassemble -> format -> write.

mod bpf;
mod cli;
mod discover;
mod event;
mod libs;
mod output;
mod proto;
mod symbols;
mod tracer;

use std::fs::{self, File};
use std::io::{self, BufWriter, IsTerminal};
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::error::ErrorKind as ClapErrorKind;
use clap::Parser;

use crate::cli::{Cli, Format};
use crate::output::json::Json;
use crate::output::pcap::Pcap;
use crate::output::text::{self, Text};
use crate::output::{Output, Tee};

/// A warning on stderr: something optional is missing and the tool goes on.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => {
        eprintln!("sslsniff: warning: {}", format_args!($($arg)*))
    };
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e)
            if matches!(
                e.kind(),
                ClapErrorKind::DisplayHelp | ClapErrorKind::DisplayVersion
            ) =>
        {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // clap's own message spans several lines; the first one says what is wrong.
            let msg = e.render().to_string();
            let first = msg.lines().next().unwrap_or("invalid arguments");
            eprintln!(
                "sslsniff: {} (see --help)",
                first.trim_start_matches("error: ")
            );
            return ExitCode::from(2);
        }
    };
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sslsniff: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> Result<()> {
    check_privileges()?;
    if let Some(pid) = cli.pid {
        if !Path::new(&format!("/proc/{pid}")).exists() {
            bail!("no process with PID {pid}");
        }
    }
    if cli.debug {
        libbpf_rs::set_print(Some((libbpf_rs::PrintLevel::Debug, |_, msg| {
            eprint!("{msg}")
        })));
    } else {
        libbpf_rs::set_print(None);
    }

    let kinds = cli.kinds();
    let targets = discover::targets(&discover::Request {
        kinds: &kinds,
        extra_libs: &cli.extra_lib,
        binaries: &cli.binary,
        pid: cli.pid,
    })?;

    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("cannot install signal handlers")?;
    }

    let interactive = io::stdout().is_terminal();
    let mut out = outputs(cli)?;

    let cfg = tracer::Config {
        pid: cli.pid,
        uid: cli.uid,
        comm: cli.comm.clone(),
        max_capture: cli.max_buffer_size,
        ring_size: cli.ring_buffer_size,
        handshake: cli.handshake,
        conn: cli.tracks_connections(),
        interactive,
        debug: cli.debug,
    };
    let summary = tracer::run(&cfg, &targets, &mut out, &stop)?;
    if !summary.reader_gone {
        let k = &summary.kernel;
        let c = &summary.counts;
        eprintln!(
            "sslsniff: {} calls seen in the kernel, {} events printed, {} bytes captured, {} bytes lost",
            k.calls,
            c.events,
            c.bytes,
            k.lost_bytes.max(c.missing_bytes)
        );
        if c.malformed > 0 {
            warn!(
                "{} records from the kernel failed validation and were dropped",
                c.malformed
            );
        }
    }
    Ok(())
}

/// stdout in the chosen format, and the --pcap file if asked for.
fn outputs(cli: &Cli) -> Result<Tee> {
    let stdout = BufWriter::with_capacity(1 << 16, io::stdout().lock());
    let mut outputs: Vec<Box<dyn Output>> = vec![match cli.format {
        Format::Text => {
            let opts = text::Options {
                extra: cli.extra,
                latency: cli.latency,
                conn: cli.conn,
                hexdump: cli.hexdump,
            };
            Box::new(Text::new(stdout, opts).context("cannot write the output")?)
        }
        Format::Json => Box::new(Json::new(stdout)),
    }];
    if let Some(path) = &cli.pcap {
        let file =
            File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        let pcap = Pcap::new(BufWriter::new(file), tracer::realtime_offset_ns())
            .with_context(|| format!("cannot write {}", path.display()))?;
        outputs.push(Box::new(pcap));
    }
    Ok(Tee(outputs))
}

/// Creating uprobes takes CAP_SYS_ADMIN (CAP_BPF and CAP_PERFMON alone get EACCES):
/// say so before any BPF work fails in a less clear way.
fn check_privileges() -> Result<()> {
    const CAP_SYS_ADMIN: u32 = 21;
    let status =
        fs::read_to_string("/proc/self/status").context("cannot read /proc/self/status")?;
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    if effective & (1 << CAP_SYS_ADMIN) == 0 {
        bail!("needs root (CAP_SYS_ADMIN) to attach uprobes; run it with sudo");
    }
    Ok(())
}
