//! Hostile input: how soon sslsniff refuses (or traces) a crafted file once a process
//! maps it, and what that costs it, with files up to the 2 GiB read at most (the
//! examination budget); and what each decoder costs per byte at its worst, as the CPU
//! time of the running sslsniff on streams sent over a real TLS connection.

#[path = "../../tests/common/hostile.rs"]
mod crafted;
#[path = "../../tests/common/peers.rs"]
mod peers;

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::proc::Proc;
use crate::report::table;
use crate::rows::load_avg;
use crate::scratch::Scratch;
use crate::sniff::{Sniffer, Status, ATTACH_TIMEOUT};

/// The examination budget, from a file's mapping to sslsniff's line about it: a file is
/// read at most once, at about 0.1 to 0.25 ms per MiB here (the first touch of its pages
/// costs most), so 100 ms and 0.3 ms per MiB; 715 ms for the 2 GiB read at most.
fn budget(size: u64) -> Duration {
    Duration::from_millis(100) + Duration::from_micros(300 * (size >> 20))
}
/// How long a case may take before it counts as failed.
const CASE_TIMEOUT: Duration = Duration::from_secs(60);

pub fn run(sslsniff: &Path) -> Result<()> {
    let examined = examination(sslsniff)?;
    print_examination(&examined);
    let decoded = decoders(sslsniff)?;
    print_decoders(&decoded);
    Ok(())
}

// ---- The examination budget ----

struct Case {
    name: &'static str,
    make: fn() -> Vec<u8>,
    /// Run rather than mapped.
    run: bool,
}

fn cases() -> Vec<Case> {
    let case = |name, make, run| Case { name, make, run };
    vec![
        case(
            "30,000 segments, no Go table (1.7 MB)",
            || crafted::pclntab_scan(30_000, 0),
            false,
        ),
        case(
            "30,000 segments, 60,000 symbols (3.5 MB)",
            || crafted::symbol_walk(30_000, 60_000),
            false,
        ),
        case(
            "Go function of 64 KiB of 0xc3, mapped",
            || crafted::go_returns(64 << 10),
            false,
        ),
        case(
            "Go function of 64 KiB of 0xc3, run",
            || crafted::go_returns(64 << 10),
            true,
        ),
        case(
            "Go function of 64 MiB of 0xc3",
            || crafted::go_returns(64 << 20),
            false,
        ),
        case(
            "200,000 names into 8 MiB without an end",
            || crafted::long_symbol_names(200_000, 8 << 20),
            false,
        ),
        case(
            "256 segments over 1 GiB, no Go table",
            || crafted::pclntab_scan(256, 1 << 30),
            false,
        ),
        case(
            "4 Mi symbols all named SSL_read",
            || crafted::wanted_symbols((4 << 20) - 1, "SSL_read"),
            false,
        ),
        case(
            "256 segments over 2 GiB, no Go table",
            || crafted::pclntab_scan(256, (2 << 30) - (1 << 20)),
            false,
        ),
    ]
}

struct Examined {
    name: &'static str,
    size: u64,
    /// From the request to map (or the start) to sslsniff's line about the file.
    latency: Duration,
    /// sslsniff's CPU time meanwhile.
    cpu: Duration,
    /// Its peak resident memory, before and after (mapped file pages included).
    hwm_kib: (u64, u64),
    /// Its anonymous resident memory after (the heap, not the file).
    anon_kib: u64,
    said: String,
}

fn examination(sslsniff: &Path) -> Result<Vec<Examined>> {
    let scratch = Scratch::new("hostile")?;
    let mut cmd = Command::new(sslsniff);
    cmd.args(["--status", "json"]);
    let (mut sniffer, stdout) = Sniffer::spawn(&mut cmd)?;
    let drained = crate::sniff::drain(stdout);
    sniffer.wait_ready(ATTACH_TIMEOUT)?;
    let mut mapper = Mapper::start()?;
    let mut out = Vec::new();
    for (i, case) in cases().iter().enumerate() {
        eprintln!("sslsniff-bench: hostile file: {}", case.name);
        let path = scratch.path().join(format!("crafted-{i}"));
        let bytes = (case.make)();
        fs::write(&path, &bytes).with_context(|| format!("cannot write {}", path.display()))?;
        let size = bytes.len() as u64;
        drop(bytes);
        out.push(examine(&mut sniffer, &mut mapper, case, &path, size)?);
        fs::remove_file(&path).ok();
    }
    sniffer.stop()?;
    drained.join().ok();
    Ok(out)
}

fn examine(
    sniffer: &mut Sniffer,
    mapper: &mut Mapper,
    case: &Case,
    path: &Path,
    size: u64,
) -> Result<Examined> {
    let pid = sniffer.pid();
    let (hwm, cpu) = (peak_kib(pid)?, cpu_time(pid)?);
    let started = Instant::now();
    let _running = if case.run {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(0o755))?;
        Some(Proc::spawn(Command::new(path).stdin(Stdio::null()))?)
    } else {
        mapper.map(path)?;
        None
    };
    let shown = path.to_string_lossy().into_owned();
    let deadline = started + CASE_TIMEOUT;
    let said = loop {
        match sniffer.next_status(deadline)? {
            Some(Status::Notice { message }) if message.contains(&shown) => break message,
            Some(Status::Tracing { path, .. }) if path.contains(&shown) => {
                break format!("tracing {path}")
            }
            _ => {}
        }
    };
    let latency = started.elapsed();
    Ok(Examined {
        name: case.name,
        size,
        latency,
        cpu: cpu_time(pid)?.saturating_sub(cpu),
        hwm_kib: (hwm, peak_kib(pid)?),
        anon_kib: status_kib(pid, "RssAnon:")?,
        said: said.replace(&shown, "FILE"),
    })
}

/// A process that maps, with PROT_EXEC, each file it is told of, and keeps it mapped.
struct Mapper {
    proc: Proc,
    replies: std::io::Lines<BufReader<ChildStdout>>,
}

impl Mapper {
    fn start() -> Result<Mapper> {
        let script = crafted::MAPPER_SCRIPT;
        let mut cmd = Command::new("python3");
        cmd.args(["-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        let mut proc = Proc::spawn(&mut cmd).context("python3 is needed to map files")?;
        let stdout = proc.child().stdout.take().context("piped")?;
        let mut mapper = Mapper {
            proc,
            replies: BufReader::new(stdout).lines(),
        };
        mapper.reply("ready")?;
        Ok(mapper)
    }

    fn map(&mut self, path: &Path) -> Result<()> {
        let stdin = self.proc.child().stdin.as_mut().context("piped")?;
        writeln!(stdin, "{}", path.display())?;
        self.reply("mapped")
    }

    fn reply(&mut self, want: &str) -> Result<()> {
        match self.replies.next() {
            Some(Ok(line)) if line == want => Ok(()),
            other => bail!("the mapper said {other:?}, not {want}"),
        }
    }
}

/// A process's CPU time so far (its threads' time on a CPU, from the scheduler).
fn cpu_time(pid: u32) -> Result<Duration> {
    let stat = fs::read_to_string(format!("/proc/{pid}/schedstat"))?;
    let ns = stat.split_whitespace().next().and_then(|n| n.parse().ok());
    Ok(Duration::from_nanos(ns.context("no schedstat")?))
}

fn peak_kib(pid: u32) -> Result<u64> {
    status_kib(pid, "VmHWM:")
}

/// A `/proc/PID/status` field in KiB.
fn status_kib(pid: u32, field: &str) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with(field));
    let kib = line.and_then(|l| l.split_whitespace().nth(1)?.parse().ok());
    kib.with_context(|| format!("no {field} in /proc/{pid}/status"))
}

fn print_examination(rows: &[Examined]) {
    println!();
    println!(
        "Examination budget: each crafted file written to /dev/shm and mapped with PROT_EXEC by a python3 process (or run), \
         sslsniff --status json (no other flag); time from the request to sslsniff's line about the file, \
         its CPU time meanwhile, its peak RSS before -> after (the file's mapped pages count) (load {}):",
        load_avg()
    );
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.name.to_string(),
                format!("{:.1} MiB", r.size as f64 / (1 << 20) as f64),
                format!("{:.1} ms", r.latency.as_secs_f64() * 1e3),
                format!("{:.1} ms", r.cpu.as_secs_f64() * 1e3),
                format!("{} -> {} MiB", r.hwm_kib.0 >> 10, r.hwm_kib.1 >> 10),
                format!("{} KiB", r.anon_kib),
                format!("{:.0} ms", budget(r.size).as_secs_f64() * 1e3),
                r.said.clone(),
            ]
        })
        .collect();
    let headers = [
        "file",
        "size",
        "to notice",
        "CPU",
        "peak RSS",
        "heap after",
        "budget",
        "sslsniff said",
    ];
    table(&headers, &cells);
    let over: Vec<&str> = rows
        .iter()
        .filter(|r| r.latency > budget(r.size))
        .map(|r| r.name)
        .collect();
    match over[..] {
        [] => println!("  PASS: every file answered within its budget (100 ms + 0.3 ms/MiB)"),
        _ => println!("  FAIL: over budget: {}", over.join(", ")),
    }
}

// ---- The decoders' worst cost per byte ----

/// The thread name of the client: sslsniff traces it alone (-c).
const COMM: &str = "hostile-client";
/// Bytes per write, as HTTP/2 clients write.
const WRITE: usize = 16_384;
/// Blocks of 64 KiB per HTTP/2 stream: 8 MiB.
const BLOCKS: usize = 128;

struct Stream {
    name: &'static str,
    bytes: Vec<u8>,
}

/// HTTP/2's preface and SETTINGS, `blocks` in HEADERS and CONTINUATION frames, then
/// the end mark.
fn h2(blocks: &[Vec<u8>], mark: &str) -> Vec<u8> {
    crafted::h2_client_stream(blocks, ("x-mark", mark))
}

fn streams(mark: &str) -> Vec<Stream> {
    let stream = |name, bytes| Stream { name, bytes };
    let mut references = vec![crafted::hpack_block_a()];
    references.extend(vec![crafted::hpack_block_b(); BLOCKS]);
    // Literal with incremental indexing, a static name, an empty value: two bytes an entry.
    let inserts = [0x41, 0x00].repeat(32 << 10);
    let mut frames = crafted::PREFACE.to_vec();
    for _ in 0..(8 << 20) / 9 {
        frames.extend(crafted::frame(0, 0, 1, &[]));
    }
    frames.extend(&h2(&[], mark)[crafted::PREFACE.len()..]);
    let mut data = crafted::PREFACE.to_vec();
    for _ in 0..(8 << 20) / WRITE {
        data.extend(crafted::frame(0, 0, 1, &[b'd'; WRITE - 9]));
    }
    data.extend(&h2(&[], mark)[crafted::PREFACE.len()..]);
    let mut heads = Vec::new();
    while heads.len() < 8 << 20 {
        heads.extend(b"GET /many HTTP/1.1\r\n");
        for i in 0..127 {
            heads.extend(format!("x-h{i}: v\r\n").as_bytes());
        }
        heads.extend(b"\r\n");
    }
    heads.extend(format!("GET /{mark} HTTP/1.1\r\n\r\n").as_bytes());
    let mut cut = b"GET /".to_vec();
    cut.extend((0..(8 << 20)).map(|i| b"abcdefgh"[i % 8]));
    cut.extend(format!(" HTTP/1.1\r\n\r\nGET /{mark} HTTP/1.1\r\n\r\n").as_bytes());
    vec![
        stream("HTTP/2 DATA frames of 16 KiB", data),
        stream("HTTP/2 empty DATA frames (9 bytes)", frames),
        stream(
            "HPACK ordinary blocks of 64 KiB",
            h2(&vec![crafted::hpack_ordinary(65_536); BLOCKS], mark),
        ),
        stream(
            "HPACK 1-byte references to a 64 KiB entry",
            h2(&references, mark),
        ),
        stream("HPACK 2-byte inserts", h2(&vec![inserts; BLOCKS], mark)),
        stream("HTTP/1 heads of 128 headers", heads),
        stream("HTTP/1 head never ending (16 KiB calls)", cut),
    ]
}

struct Decoded {
    name: &'static str,
    bytes: usize,
    /// sslsniff's CPU time for the stream with --http auto and --http off.
    auto: Duration,
    off: Duration,
}

fn decoders(sslsniff: &Path) -> Result<Vec<Decoded>> {
    let scratch = Scratch::new("streams")?;
    let work = scratch.path();
    let (_server, port) = sink_server(work)?;
    let mark = format!("SSLSNIFF-BENCH-END-{}", std::process::id());
    let mut out = Vec::new();
    for (i, s) in streams(&mark).into_iter().enumerate() {
        eprintln!("sslsniff-bench: hostile stream: {}", s.name);
        let path = work.join(format!("stream-{i}"));
        fs::write(&path, &s.bytes)?;
        let auto = stream_cost(sslsniff, "auto", port, &path, &mark)?;
        let off = stream_cost(sslsniff, "off", port, &path, &mark)?;
        out.push(Decoded {
            name: s.name,
            bytes: s.bytes.len(),
            auto,
            off,
        });
    }
    Ok(out)
}

/// sslsniff's CPU time (`--http MODE`, the client alone) from the stream's first write
/// to its end mark in the output.
fn stream_cost(
    sslsniff: &Path,
    http: &str,
    port: u16,
    stream: &Path,
    mark: &str,
) -> Result<Duration> {
    let mut cmd = Command::new(sslsniff);
    cmd.args(["--status", "json", "-c", COMM, "--http", http]);
    let (mut sniffer, stdout) = Sniffer::spawn(&mut cmd)?;
    let seen = watch_for(stdout, mark.as_bytes().to_vec());
    sniffer.wait_ready(ATTACH_TIMEOUT)?;
    let before = cpu_time(sniffer.pid())?;
    let mut client = client(port, stream)?;
    seen.recv_timeout(CASE_TIMEOUT)
        .with_context(|| format!("the end of {} never came out", stream.display()))?;
    let cost = cpu_time(sniffer.pid())?.saturating_sub(before);
    client.wait()?;
    sniffer.stop()?;
    Ok(cost)
}

/// Reads sslsniff's output to its end; says once when `mark` has gone by.
fn watch_for(mut stdout: ChildStdout, mark: Vec<u8>) -> mpsc::Receiver<()> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = vec![0; 1 << 16];
        let mut tail: Vec<u8> = Vec::new();
        let mut said = false;
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            tail.extend(&buf[..n]);
            if !said && tail.windows(mark.len()).any(|w| w == mark) {
                said = tx.send(()).is_ok();
            }
            let keep = tail.len().saturating_sub(mark.len());
            tail.drain(..keep);
        }
    });
    rx
}

/// A python3 TLS client, named COMM, that sends `stream` in WRITE-byte writes.
fn client(port: u16, stream: &Path) -> Result<Proc> {
    let script = format!(
        "import socket, ssl\n\
         open('/proc/self/comm', 'w').write('{COMM}')\n\
         ctx = ssl.create_default_context()\n\
         ctx.check_hostname = False\n\
         ctx.verify_mode = ssl.CERT_NONE\n\
         data = open('{}', 'rb').read()\n\
         s = ctx.wrap_socket(socket.create_connection(('127.0.0.1', {port})))\n\
         for at in range(0, len(data), {WRITE}): s.sendall(data[at:at + {WRITE}])\n\
         s.close()\n",
        stream.display()
    );
    Proc::spawn(
        Command::new("python3")
            .args(["-c", &script])
            .stdin(Stdio::null()),
    )
}

/// A python3 TLS server, in `dir` (where it makes its certificate), that reads every
/// connection to its end.
fn sink_server(dir: &Path) -> Result<(Proc, u16)> {
    peers::make_certificate(dir).context("openssl is needed for a certificate")?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let script = peers::sink_server_script(port);
    let mut cmd = Command::new("python3");
    // Its stderr says nothing the bench needs (the probe of its port fails a handshake).
    cmd.args(["-c", &script])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let server = Proc::spawn(&mut cmd)?;
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if start.elapsed() > Duration::from_secs(10) {
            bail!("the sink server did not listen");
        }
        thread::sleep(Duration::from_millis(50));
    }
    Ok((server, port))
}

fn print_decoders(rows: &[Decoded]) {
    println!();
    println!(
        "Decoders at their worst: each stream sent over TLS by a python3 client in 16 KiB writes, sslsniff -c on that client \
         (text to a pipe); its CPU time from the first write to the stream's end in the output, with --http auto (decoded) \
         and --http off (the bytes as text, which escapes binary ones) (load {}):",
        load_avg()
    );
    let per_byte = |d: Duration, bytes: usize| d.as_nanos() as f64 / bytes as f64;
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.name.to_string(),
                format!("{:.1} MiB", r.bytes as f64 / (1 << 20) as f64),
                format!("{:.0} ms", r.auto.as_secs_f64() * 1e3),
                format!("{:.1} ns/B", per_byte(r.auto, r.bytes)),
                format!("{:.0} MiB/s", 1e3 / per_byte(r.auto, r.bytes) / 1.048_576),
                format!("{:.0} ms", r.off.as_secs_f64() * 1e3),
            ]
        })
        .collect();
    table(
        &["stream", "bytes", "CPU auto", "per byte", "rate", "CPU off"],
        &cells,
    );
}
