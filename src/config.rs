//! What the user asked for, in the terms the tracer needs: built once from the flags
//! (`Cli::config`) and handed down, each part to the module it concerns.

use std::path::PathBuf;

use crate::libs::Library;

pub struct Config {
    pub filter: Filter,
    pub capture: Capture,
    pub discovery: Discovery,
    /// Attach to files that processes start or map while running.
    pub follow: bool,
    /// Hold each process that reveals a never-examined file until the file is attached.
    pub hold: bool,
    pub output: Output,
    /// Say what is attached where, how long it took, and libbpf's messages.
    pub debug: bool,
    /// Only check what this kernel can run (`--check-kernel`).
    pub check_kernel: bool,
}

/// Whose calls are traced; applied in the kernel.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub pid: Option<u32>,
    pub uid: Option<u32>,
    /// At most COMM_LEN bytes, without NUL: what the kernel keeps of a name.
    pub comm: Option<Vec<u8>>,
    /// Only this cgroup and its descendants (`--cgroup`): a path in the cgroup v2
    /// hierarchy, as events show it, or a directory of the mounted hierarchy.
    pub cgroup: Option<PathBuf>,
}

/// What the kernel side captures of each call.
#[derive(Debug, Clone)]
pub struct Capture {
    /// Bytes of a call captured at most; 0: no limit.
    pub max_bytes: u64,
    /// The kernel-to-user ring buffer's size, a power of two.
    pub ring_size: u32,
    pub handshakes: bool,
    /// Attribute calls to sockets (fd, addresses): a hook on every syscall.
    pub connections: bool,
}

/// Which files to trace from the start.
#[derive(Debug, Clone, Default)]
pub struct Discovery {
    /// The libraries traced (those not turned off).
    pub libraries: Vec<&'static Library>,
    /// Files named with `--extra-lib TYPE:PATH`.
    pub extra_libs: Vec<(&'static Library, PathBuf)>,
    /// Files named with `--binary PATH`.
    pub binaries: Vec<PathBuf>,
    /// Debug-symbol files named with `--symbols FILE`, for programs without TLS symbols.
    pub debug_files: Vec<PathBuf>,
}

/// Where events go and how they look.
#[derive(Debug, Clone)]
pub struct Output {
    pub format: Format,
    pub text: TextOptions,
    /// Decode HTTP/1 and HTTP/2 (`--http auto`).
    pub http: bool,
    /// Also write a pcapng capture to this file.
    pub pcap: Option<PathBuf>,
    /// Let `pcap` replace a file of ours.
    pub overwrite: bool,
    /// Flush after every drain rather than every 100 ms (a terminal is reading).
    pub interactive: bool,
    /// Formatted bytes each output holds for a slow reader or disk at most; past that,
    /// payloads are dropped and counted as undelivered.
    pub queue_bytes: usize,
}

/// What stdout carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
    /// The pcapng capture (`--pcap -`), not a `--format` of its own.
    #[value(skip)]
    Pcap,
}

/// The columns and payload form of the text format.
#[derive(Debug, Clone, Copy, Default)]
pub struct TextOptions {
    /// UID, TID and CONTAINER columns (`-x`).
    pub ids: bool,
    /// LAT(ms) column (`-l`).
    pub latency: bool,
    /// FD, LADDR and RADDR columns (`--conn`).
    pub conn: bool,
    pub hexdump: bool,
}

/// The kernel keeps this many bytes of a command name (TASK_COMM_LEN less its NUL).
pub const COMM_LEN: usize = 15;
