//! sslsniff: the plaintext of TLS traffic, from eBPF uprobes on TLS libraries.
//!
//! The data path is one line: discover libraries -> attach probes -> kernel record ->
//! decode -> assemble into events -> format -> write.

mod assemble;
mod attach;
mod attached;
mod bpf;
mod cli;
mod config;
mod diag;
mod discover;
mod escape;
mod event;
mod follow;
mod follower;
mod golang;
/// Crafted files and header blocks, and the fuzzers' runner (shared with tests/ and bench/).
#[cfg(test)]
#[path = "../tests/common/hostile.rs"]
mod hostile;
mod kernel;
mod libs;
mod output;
mod process;
mod proto;
mod pump;
mod symbols;
mod tracer;

/// Counts each thread's allocations: the fuzzers' measure of work.
#[cfg(test)]
#[global_allocator]
static ALLOCATOR: hostile::Counting = hostile::Counting;

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, IsTerminal};
use std::mem::ManuallyDrop;
use std::os::fd::FromRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::error::ErrorKind as ClapErrorKind;
use clap::Parser;

use crate::cli::{Cli, Format, HttpMode};
use crate::config::{Config, COMM_LEN};
use crate::diag::warning;
use crate::output::json::Json;
use crate::output::pcap::Pcap;
use crate::output::text::{self, Text};
use crate::output::{Output, Tee};

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
    diag::set_status(cli.status);
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            diag::error(&e);
            ExitCode::FAILURE
        }
    }
}

/// Signals that end the capture cleanly: Ctrl-C, `kill`, a closed terminal or ssh
/// session, Ctrl-\. Installed before any file is read, so none of them can find the
/// tool half-started without a handler.
const STOP_SIGNALS: [i32; 4] = [
    signal_hook::consts::SIGINT,
    signal_hook::consts::SIGTERM,
    signal_hook::consts::SIGHUP,
    signal_hook::consts::SIGQUIT,
];

fn run(cli: &Cli) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in STOP_SIGNALS {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("cannot install signal handlers")?;
    }
    check_privileges()?;
    let watch = match cli.pid {
        Some(pid) => {
            process::check(pid)?;
            Some(process::Watch::new(pid)?)
        }
        None => None,
    };
    if let Some(comm) = &cli.comm {
        check_comm(comm)?;
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
    let mut out = outputs(cli)?;
    let cfg = config(cli);
    let stopped = || {
        if stop.load(Ordering::Relaxed) {
            return true;
        }
        let exited = watch.as_ref().is_some_and(process::Watch::exited);
        if exited {
            diag::notice(&format!(
                "process {} exited; stopping",
                cli.pid.unwrap_or_default()
            ));
            stop.store(true, Ordering::Relaxed);
        }
        exited
    };
    let ended = tracer::run(&cfg, targets, &mut out, &stopped)?;
    if !ended.reader_gone {
        diag::summary(&ended.summary);
    }
    Ok(())
}

fn config(cli: &Cli) -> Config {
    Config {
        pid: cli.pid,
        uid: cli.uid,
        comm: cli.comm.clone(),
        max_capture: cli.max_buffer_size,
        ring_size: cli.ring_buffer_size,
        handshake: cli.handshake,
        conn: cli.tracks_connections(),
        interactive: io::stdout().is_terminal(),
        debug: cli.debug,
        http: cli.http == HttpMode::Auto,
        follow: !cli.no_follow,
        libraries: discover::enabled(&cli.kinds()),
    }
}

/// The kernel keeps 15 bytes of a command name: a longer -c can only ever match its
/// first 15 bytes, and an empty one nothing. Say which.
fn check_comm(comm: &str) -> Result<()> {
    if comm.is_empty() || comm.contains('\0') {
        bail!("-c: a command name is 1 to {COMM_LEN} bytes without NUL");
    }
    if comm.len() > COMM_LEN {
        let kept = &comm.as_bytes()[..COMM_LEN];
        warning!(
            "-c: the kernel keeps only {COMM_LEN} bytes of a command name; matching processes named '{}'",
            diag::safe(kept)
        );
    }
    Ok(())
}

/// stdout in the chosen format, and the --pcap file if asked for.
fn outputs(cli: &Cli) -> Result<Tee> {
    let stdout = BufWriter::with_capacity(1 << 16, raw_stdout());
    let mut outputs: Vec<Box<dyn Output>> = vec![match cli.format {
        Format::Text => {
            let opts = text::Options {
                ids: cli.ids,
                latency: cli.latency,
                conn: cli.conn,
                hexdump: cli.hexdump,
            };
            Box::new(Text::new(stdout, opts).context("cannot write the output")?)
        }
        Format::Json => Box::new(Json::new(stdout)),
    }];
    if let Some(path) = &cli.pcap {
        let file = create_capture(path, cli.overwrite)
            .with_context(|| format!("--pcap {}", diag::safe_path(path)))?;
        let pcap = Pcap::new(BufWriter::new(file), pump::realtime_offset_ns())
            .with_context(|| format!("cannot write {}", path.display()))?;
        outputs.push(Box::new(pcap));
    }
    Ok(Tee(outputs))
}

/// File descriptor 1 without std's line buffering: std's stdout searched every 64 KiB
/// block for its last newline and held the rest back, 4% of the reader's time at
/// 64 KiB payloads, on output that is buffered here already. Never closed: it is not
/// ours to close, and nothing else in sslsniff writes to stdout.
fn raw_stdout() -> &'static File {
    // SAFETY: fd 1 is open for the life of the process (a closed stdout fails the
    // writes, as it would through std); ManuallyDrop keeps this File from closing it.
    let file = ManuallyDrop::new(unsafe { File::from_raw_fd(1) });
    &*Box::leak(Box::new(file))
}

/// A capture file holds everyone's decrypted traffic: it is created new, readable by
/// its owner only, and never through a symlink (in a shared directory another user could
/// plant one pointing at a file root owns). `--overwrite` allows replacing a regular
/// file that we own and that has no other name.
fn create_capture(path: &Path, overwrite: bool) -> Result<File> {
    let mut opts = OpenOptions::new();
    opts.write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK);
    if !overwrite {
        return opts.create_new(true).open(path).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                anyhow::anyhow!("the file exists; sslsniff writes captures only to new files (or add --overwrite)")
            } else {
                anyhow::Error::new(e).context("cannot create the file")
            }
        });
    }
    let file = opts
        .create(true)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => anyhow::anyhow!("the path is a symlink; refused"),
            _ => anyhow::Error::new(e).context("cannot open the file"),
        })?;
    let meta = file.metadata().context("cannot inspect the file")?;
    // SAFETY: geteuid cannot fail and touches no memory.
    let me = unsafe { libc::geteuid() };
    if !meta.file_type().is_file() || meta.uid() != me || meta.nlink() != 1 {
        bail!("--overwrite replaces only a regular file owned by this user with a single name");
    }
    file.set_len(0).context("cannot truncate the file")?;
    file.set_permissions(fs::Permissions::from_mode(0o600))
        .context("cannot make the file private")?;
    Ok(file)
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
