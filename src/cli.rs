//! Command-line flags: a superset of bcc's sslsniff.py.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::{Parser, ValueEnum};

use crate::config::{self, Capture, Config, Discovery, Filter, Format, TextOptions, COMM_LEN};
use crate::diag::{self, warning, Status};
use crate::libs::{self, Kind, Library};

#[derive(Debug, Parser)]
#[command(
    name = "sslsniff",
    version,
    about = "Show the plaintext of TLS reads and writes by tracing TLS libraries with eBPF",
    after_help = "Examples:\n  \
        sudo sslsniff                      # every TLS read and write on the machine\n  \
        sudo sslsniff -p 181               # only PID 181\n  \
        sudo sslsniff -c curl              # only processes named curl\n  \
        sudo sslsniff --cgroup /docker/ID  # only one container's processes\n  \
        sudo sslsniff -l --handshake       # with latency, and handshakes\n  \
        sudo sslsniff --hexdump -x         # payload as hexdump -C, with UID and TID\n  \
        sudo sslsniff --conn               # with each call's socket addresses\n  \
        sudo sslsniff --format json | jq . # JSON lines\n  \
        sudo sslsniff --pcap tls.pcapng    # also a capture for Wireshark\n  \
        sudo sslsniff --status json        # stderr as JSON lines, for scripts\n  \
        sudo sslsniff --binary ./envoy     # a statically linked TLS library\n  \
        sudo sslsniff --extra-lib openssl:/opt/app/lib/libssl.so.3"
)]
pub struct Cli {
    /// Trace only this process
    #[arg(short, long)]
    pub pid: Option<u32>,

    /// Trace only this user id
    #[arg(short, long)]
    pub uid: Option<u32>,

    /// Trace only processes with this command name (exact, as in /proc/PID/comm)
    #[arg(short, long)]
    pub comm: Option<String>,

    /// Trace only this cgroup and its descendants: a path in the cgroup v2 hierarchy, as
    /// events show it (/docker/ID), or its directory under the mount
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<PathBuf>,

    /// Show UID, TID and CONTAINER columns
    #[arg(short = 'x', long = "extra")]
    pub ids: bool,

    /// Do not trace OpenSSL (and BoringSSL)
    #[arg(short = 'o', long)]
    pub no_openssl: bool,

    /// Do not trace GnuTLS
    #[arg(short = 'g', long)]
    pub no_gnutls: bool,

    /// Do not trace NSS
    #[arg(short = 'n', long)]
    pub no_nss: bool,

    /// Do not trace wolfSSL
    #[arg(long)]
    pub no_wolfssl: bool,

    /// Do not trace mbedTLS
    #[arg(long)]
    pub no_mbedtls: bool,

    /// Do not trace Go programs' crypto/tls
    #[arg(long)]
    pub no_go: bool,

    /// Do not trace rustls over aws-lc (Deno, uv), which is found by its code
    #[arg(long)]
    pub no_rustls: bool,

    /// Show the latency of each call (LAT(ms) column)
    #[arg(short, long)]
    pub latency: bool,

    /// Also show TLS handshakes, with their latency when -l is given
    #[arg(long)]
    pub handshake: bool,

    /// Show payloads as hexdump -C rows
    #[arg(long)]
    pub hexdump: bool,

    /// Show each call's socket: FD, LADDR and RADDR columns ("-" when the call did no
    /// socket I/O of its own)
    #[arg(long)]
    pub conn: bool,

    /// Output format on stdout: text (bcc's layout) or json (one object per line)
    /// [default: text]
    #[arg(long, value_enum)]
    pub format: Option<Format>,

    /// Decode HTTP/1 and HTTP/2: auto shows HTTP/2 frames and headers in text, an http
    /// object in JSON and HTTP records in --pcap; off shows every call as its bytes
    #[arg(long, value_enum, default_value_t = HttpMode::Auto)]
    pub http: HttpMode,

    /// Also write the capture as pcapng to FILE, for Wireshark (implies --conn tracking).
    /// FILE must not exist yet; it is created readable by its owner only. `-` writes the
    /// capture to stdout instead of text or JSON (`--pcap - | wireshark -k -i -`)
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<PathBuf>,

    /// Let --pcap replace an existing regular file owned by this user (never a symlink)
    #[arg(long, requires = "pcap")]
    pub overwrite: bool,

    /// Messages on stderr as prose (text) or as one JSON object per line, for programs
    #[arg(long, value_enum, default_value_t = Status::Text)]
    pub status: Status,

    /// Also trace this library file; TYPE is openssl, gnutls, nss, wolfssl, mbedtls, go or rustls
    #[arg(long, value_name = "TYPE:PATH", value_parser = parse_extra_lib)]
    pub extra_lib: Vec<(&'static Library, PathBuf)>,

    /// Also trace this executable, which carries a TLS library statically (the kind is
    /// read from its symbols)
    #[arg(long, value_name = "PATH")]
    pub binary: Vec<PathBuf>,

    /// The debug symbols of a program whose TLS functions have none (a `.debug` file):
    /// used for the program with the same build-id
    #[arg(long, value_name = "FILE")]
    pub symbols: Vec<PathBuf>,

    /// Capture at most this many bytes of each call (0: no limit)
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20)]
    pub max_buffer_size: u64,

    /// Size of the kernel-to-user ring buffer, a power of two of at least 4096
    #[arg(long, value_name = "BYTES", default_value_t = 64 << 20, value_parser = parse_ring_size)]
    pub ring_buffer_size: u32,

    /// Do not follow the machine: trace only the files found at start, not those that
    /// programs started or mapped later bring
    #[arg(long)]
    pub no_follow: bool,

    /// Do not hold new programs: by default a process that starts a never-seen
    /// executable or maps a never-seen library waits (through ptrace, at most 1 s) until
    /// its TLS functions are attached, so that its first call is captured. Without it,
    /// a program that calls TLS within ~15 ms of starting loses its first calls
    #[arg(long)]
    pub no_hold: bool,

    /// Print what is attached where, which kernel mechanism each feature uses, and
    /// libbpf's messages
    #[arg(short, long)]
    pub debug: bool,

    /// Check this kernel and exit: load every variant of the BPF programs it can run,
    /// and say which mechanism each feature would use (exit status 1 if any failed)
    #[arg(long)]
    pub check_kernel: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HttpMode {
    Auto,
    Off,
}

impl Cli {
    /// The one Config, checked: a bad value is a one-line error.
    pub fn config(&self) -> Result<Config> {
        if let Some(comm) = &self.comm {
            check_comm(comm)?;
        }
        if self.pcap_to_stdout() && (self.format.is_some() || self.hexdump) {
            bail!("--pcap - writes the capture to stdout: --format and --hexdump would have nothing to write to");
        }
        Ok(Config {
            filter: Filter {
                pid: self.pid,
                uid: self.uid,
                comm: self
                    .comm
                    .as_ref()
                    .map(|c| c.bytes().take(COMM_LEN).collect()),
                cgroup: self.cgroup.clone(),
            },
            capture: Capture {
                max_bytes: self.max_buffer_size,
                ring_size: self.ring_buffer_size,
                handshakes: self.handshake,
                connections: self.tracks_connections(),
            },
            discovery: Discovery {
                libraries: libs::of_kinds(&self.kinds()),
                extra_libs: self.extra_lib.clone(),
                binaries: self.binary.clone(),
                debug_files: self.symbols.clone(),
            },
            follow: !self.no_follow,
            hold: !self.no_follow && !self.no_hold,
            output: self.output(),
            debug: self.debug,
            check_kernel: self.check_kernel,
        })
    }

    fn pcap_to_stdout(&self) -> bool {
        self.pcap.as_deref() == Some(Path::new("-"))
    }

    fn output(&self) -> config::Output {
        let (format, pcap) = match self.pcap_to_stdout() {
            true => (Format::Pcap, None),
            false => (self.format.unwrap_or(Format::Text), self.pcap.clone()),
        };
        config::Output {
            format,
            text: TextOptions {
                ids: self.ids,
                latency: self.latency,
                conn: self.conn,
                hexdump: self.hexdump,
            },
            http: self.http == HttpMode::Auto,
            pcap,
            overwrite: self.overwrite,
            interactive: std::io::stdout().is_terminal(),
            // As much as the ring holds: the two together are what a reader can fall
            // behind by; unlike the ring's, this memory is taken only while it is used.
            queue_bytes: self.ring_buffer_size as usize,
        }
    }

    /// Connection tracking costs a hook on every syscall: only when something shows it.
    fn tracks_connections(&self) -> bool {
        self.conn || self.pcap.is_some() || self.format == Some(Format::Json)
    }

    fn kinds(&self) -> Vec<Kind> {
        let off = [
            (Kind::OpenSsl, self.no_openssl),
            (Kind::GnuTls, self.no_gnutls),
            (Kind::Nss, self.no_nss),
            (Kind::WolfSsl, self.no_wolfssl),
            (Kind::MbedTls, self.no_mbedtls),
            (Kind::Go, self.no_go),
            (Kind::Rustls, self.no_rustls),
        ];
        off.iter()
            .filter(|(_, off)| !off)
            .map(|&(k, _)| k)
            .collect()
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

fn parse_extra_lib(s: &str) -> Result<(&'static Library, PathBuf), String> {
    let names = || {
        libs::LIBRARIES
            .iter()
            .map(|l| l.name)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (kind, path) = s
        .split_once(':')
        .ok_or_else(|| format!("expected TYPE:PATH, TYPE one of {}", names()))?;
    let lib = libs::by_name(kind)
        .ok_or_else(|| format!("unknown library type '{kind}', expected one of {}", names()))?;
    if path.is_empty() {
        return Err("the PATH after TYPE: is empty".into());
    }
    Ok((lib, PathBuf::from(path)))
}

fn parse_ring_size(s: &str) -> Result<u32, String> {
    let n: u32 = s.parse().map_err(|e| format!("{e}"))?;
    if n < 4096 || !n.is_power_of_two() {
        return Err("must be a power of two of at least 4096".into());
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bcc_flags() {
        let cli = Cli::try_parse_from([
            "sslsniff",
            "-p",
            "7",
            "-u",
            "0",
            "-c",
            "curl",
            "-x",
            "-o",
            "-g",
            "-n",
            "-l",
            "--handshake",
            "--hexdump",
        ])
        .unwrap();
        assert_eq!(
            (cli.pid, cli.uid, cli.comm.as_deref()),
            (Some(7), Some(0), Some("curl"))
        );
        assert!(cli.ids && cli.latency && cli.handshake && cli.hexdump);
        assert_eq!(
            cli.kinds(),
            [Kind::WolfSsl, Kind::MbedTls, Kind::Go, Kind::Rustls]
        );
        let cli = Cli::try_parse_from(["sslsniff", "--no-wolfssl", "--no-mbedtls"]).unwrap();
        assert_eq!(
            cli.kinds(),
            [
                Kind::OpenSsl,
                Kind::GnuTls,
                Kind::Nss,
                Kind::Go,
                Kind::Rustls
            ]
        );
    }

    #[test]
    fn extra_lib_needs_a_known_type() {
        let cli =
            Cli::try_parse_from(["sslsniff", "--extra-lib", "gnutls:/x/libgnutls.so.30"]).unwrap();
        assert_eq!(cli.extra_lib[0].0.kind, Kind::GnuTls);
        assert!(Cli::try_parse_from(["sslsniff", "--extra-lib", "schannel:/x"]).is_err());
        assert!(Cli::try_parse_from(["sslsniff", "--extra-lib", "/x"]).is_err());
    }

    #[test]
    fn ring_size_must_be_a_power_of_two() {
        assert!(Cli::try_parse_from(["sslsniff", "--ring-buffer-size", "5000"]).is_err());
        assert_eq!(
            Cli::try_parse_from(["sslsniff", "--ring-buffer-size", "8192"])
                .unwrap()
                .ring_buffer_size,
            8192
        );
    }
}
