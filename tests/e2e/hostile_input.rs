//! Hostile input end to end (docs/hostile-input.md): files crafted to stall their
//! examination are mapped and run while another program moves traffic, and header
//! blocks crafted to amplify HPACK's work come over a real TLS connection.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::hostile;
use crate::common::*;

/// From a crafted file's mapping (or start) to sslsniff's notice about it: milliseconds
/// on a quiet machine; on a busy one the file may wait behind other new files the
/// machine runs (builds, tests), and the follower's thread for a CPU. What these files
/// cost before they were bounded was 1 to 30 s each.
const NOTICE_BUDGET: Duration = Duration::from_secs(1);
/// The traffic that goes on meanwhile: round trips of this many bytes each way.
const CALLS: usize = 20_000;
const SIZE: usize = 4096;

/// A python3 TLS server that sends back what each connection sends.
fn echo_server(work: &Workdir) -> (Proc, u16) {
    python_server("python3 echo server", work, |port| {
        format!(
            "import socket, ssl, threading\n\
             ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n\
             ctx.load_cert_chain('cert.pem', 'key.pem')\n\
             srv = socket.create_server(('127.0.0.1', {port}))\n\
             def serve(conn):\n\
             \x20   with ctx.wrap_socket(conn, server_side=True) as s:\n\
             \x20       while True:\n\
             \x20           data = s.recv({SIZE})\n\
             \x20           if not data: break\n\
             \x20           s.sendall(data)\n\
             while True:\n\
             \x20   conn, _ = srv.accept()\n\
             \x20   threading.Thread(target=serve, args=(conn,), daemon=True).start()\n"
        )
    })
}

/// CALLS round trips of SIZE printable bytes, each message marked with its index.
fn traffic(port: u16, marker: &str) -> Command {
    let mut cmd = python(&format!(
        "s = ctx.wrap_socket(socket.create_connection(('127.0.0.1', {port})))\n\
         for i in range({CALLS}):\n\
         \x20   s.sendall((f'{marker}-{{i:06d}}-' * 200).encode()[:{SIZE}])\n\
         \x20   got = 0\n\
         \x20   while got < {SIZE}: got += len(s.recv({SIZE} - got))\n"
    ));
    cmd.stdin(Stdio::null()).stdout(Stdio::null());
    cmd
}

/// A process that maps, with PROT_EXEC, each file whose path it reads on stdin, and
/// says `mapped` after each (and `ready` first).
fn mapper() -> Proc {
    let script = hostile::MAPPER_SCRIPT;
    Proc::spawn(
        "python3 mapper",
        Command::new("python3")
            .args(["-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped()),
    )
}

/// A crafted file, how it reaches sslsniff, and what its notice says.
struct Crafted {
    name: &'static str,
    bytes: Vec<u8>,
    run: bool,
    notice: &'static str,
}

fn crafted() -> Vec<Crafted> {
    let case = |name, bytes, run, notice| Crafted {
        name,
        bytes,
        run,
        notice,
    };
    vec![
        case(
            "segments-no-table",
            hostile::pclntab_scan(30_000, 0),
            false,
            "30000 program headers, more than the 256",
        ),
        case(
            "segments-symbols",
            hostile::symbol_walk(30_000, 60_000),
            false,
            "30000 program headers, more than the 256",
        ),
        case(
            "all-returns",
            hostile::go_returns(64 << 10),
            false,
            "65 or more return instructions, more than the 64",
        ),
        case(
            "all-returns-run",
            hostile::go_returns(64 << 10),
            true,
            "65 or more return instructions, more than the 64",
        ),
        case(
            "long-function",
            hostile::go_returns(1 << 20),
            false,
            "1048576 bytes long, more than the 262144",
        ),
    ]
}

/// Waits for sslsniff's one-line notice about `path`; returns when it came.
fn notice_about(sniffer: &Sniffer, path: &Path, says: &str) -> Instant {
    let path = path.to_str().unwrap();
    let found = sniffer.lines.wait_for(Duration::from_secs(20), |line| {
        line.contains(r#""type":"notice""#) && line.contains(path)
    });
    let (at, line) = found.unwrap_or_else(|| panic!("no notice about {path}"));
    assert!(line.contains(says), "{line}");
    at
}

/// Maps or runs each crafted file in turn; returns each one's time to its notice.
fn examine_each(work: &Workdir, sniffer: &Sniffer) -> Vec<(&'static str, Duration)> {
    let mut mapper = mapper();
    let mut mapped = BufReader::new(mapper.child.stdout.take().unwrap()).lines();
    assert_eq!(mapped.next().unwrap().unwrap(), "ready");
    let mut to_map = mapper.child.stdin.take().unwrap();
    let mut running = Vec::new();
    let mut took = Vec::new();
    for file in crafted() {
        let path = work.file(&marker(file.name), &file.bytes);
        let shown = if file.run {
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
            let started = Instant::now();
            running.push(Proc::spawn(
                file.name,
                Command::new(&path).stdin(Stdio::null()),
            ));
            (started, path.clone())
        } else {
            // From before the request: the notice may come before the mapper says so.
            let asked = Instant::now();
            writeln!(to_map, "{}", path.display()).unwrap();
            assert_eq!(mapped.next().unwrap().unwrap(), "mapped");
            (asked, path.clone())
        };
        let at = notice_about(sniffer, &shown.1, file.notice);
        took.push((file.name, at.saturating_duration_since(shown.0)));
    }
    took
}

/// The client's calls in a text capture: write rows with their message indices, and
/// the bytes read. Read line by line: the capture is hundreds of megabytes.
fn client_calls(capture: &Path, pid: u32, marker: &str) -> (usize, HashSet<usize>, usize) {
    let (mut writes, mut indices, mut read_bytes) = (0, HashSet::new(), 0);
    let mut write_row = false;
    let lines = BufReader::new(File::open(capture).unwrap()).lines();
    for line in lines.map_while(Result::ok) {
        let columns: Vec<&str> = line.split_whitespace().take(5).collect();
        if let [func @ ("READ/RECV" | "WRITE/SEND"), _, _, row_pid, len] = columns[..] {
            write_row = false;
            if row_pid != pid.to_string() {
                continue;
            }
            let len: usize = len.parse().unwrap();
            if func == "WRITE/SEND" {
                assert_eq!(len, SIZE, "{line}");
                writes += 1;
                write_row = true;
            } else {
                read_bytes += len;
            }
        } else if let Some(rest) = line
            .strip_prefix(&format!("{marker}-"))
            .filter(|_| write_row)
        {
            indices.insert(rest[..6].parse::<usize>().unwrap());
            write_row = false;
        }
    }
    (writes, indices, read_bytes)
}

#[test]
fn crafted_files_are_refused_in_time_while_every_call_is_captured() {
    if !root_or_skip("crafted_files_are_refused_in_time_while_every_call_is_captured") {
        return;
    }
    let work = Workdir::new();
    let (_server, port) = echo_server(&work);
    let mark = marker("traffic");
    let sniffer = Sniffer::start(&[]);
    let mut client = Proc::spawn("python3 traffic", &mut traffic(port, &mark));
    let took = examine_each(&work, &sniffer);
    let status = client.wait_timeout(Duration::from_secs(300));
    assert!(status.success(), "the traffic failed: {status}");
    let (out, capture) = sniffer.stop_streamed();
    for (name, took) in &took {
        eprintln!("{name}: notice {took:?} after it was mapped or run");
    }
    for (name, took) in took {
        assert!(took <= NOTICE_BUDGET, "{name}: notice after {took:?}");
    }
    assert_every_call(&out, capture.path(), client.pid(), &mark);
}

/// Every call of the traffic client is in the capture, and nothing was undelivered.
fn assert_every_call(out: &Output, capture: &Path, pid: u32, mark: &str) {
    let (writes, indices, read_bytes) = client_calls(capture, pid, mark);
    let summary = out.summary();
    assert_eq!(summary["undelivered_bytes"], 0, "{summary}");
    assert_eq!((writes, indices.len()), (CALLS, CALLS), "{summary}");
    assert_eq!(read_bytes, CALLS * SIZE, "{summary}");
}

/// Crafted files mapped as fast as a process can: each one's examination is short, and
/// the drain must not wait for all of them.
const FLOOD: usize = 1000;

#[test]
fn a_stream_of_crafted_files_leaves_no_call_undelivered() {
    if !root_or_skip("a_stream_of_crafted_files_leaves_no_call_undelivered") {
        return;
    }
    let work = Workdir::new();
    let (_server, port) = echo_server(&work);
    let mark = marker("flood-traffic");
    let prefix = marker("flood");
    let file = hostile::go_returns(64 << 10);
    let paths: Vec<PathBuf> = (0..FLOOD)
        .map(|i| work.file(&format!("{prefix}-{i}"), &file))
        .collect();
    let sniffer = Sniffer::start(&[]);
    let mut client = Proc::spawn("python3 traffic", &mut traffic(port, &mark));
    let mut mapper = mapper();
    let mut ready = BufReader::new(mapper.child.stdout.take().unwrap()).lines();
    assert_eq!(ready.next().unwrap().unwrap(), "ready");
    let mut to_map = mapper.child.stdin.take().unwrap();
    let asked = Instant::now();
    for path in &paths {
        writeln!(to_map, "{}", path.display()).unwrap();
    }
    let mut noticed = 0;
    while noticed < FLOOD {
        let line = sniffer.lines.wait_for(Duration::from_secs(60), |l| {
            l.contains(r#""type":"notice""#) && l.contains(&prefix)
        });
        assert!(line.is_some(), "{noticed} of {FLOOD} files noticed");
        noticed += 1;
    }
    let all_noticed = asked.elapsed();
    let status = client.wait_timeout(Duration::from_secs(300));
    assert!(status.success(), "the traffic failed: {status}");
    let (out, capture) = sniffer.stop_streamed();
    eprintln!("{FLOOD} crafted files noticed within {all_noticed:?} of the first mapping");
    assert_every_call(&out, capture.path(), client.pid(), &mark);
}

/// A python3 client, named `comm`, that for each file in turn waits for a line on
/// stdin, sends the file's bytes on a new TLS connection, 16 KiB per write as HTTP/2
/// clients do, and says `sent`.
fn stream_client(port: u16, comm: &str, files: &[PathBuf]) -> Proc {
    let files: Vec<String> = files.iter().map(|f| format!("'{}'", f.display())).collect();
    let mut cmd = python(&format!(
        "open('/proc/self/comm', 'w').write('{comm}')\n\
         for name in [{}]:\n\
         \x20   sys.stdin.readline()\n\
         \x20   s = ctx.wrap_socket(socket.create_connection(('127.0.0.1', {port})))\n\
         \x20   data = open(name, 'rb').read()\n\
         \x20   for at in range(0, len(data), 16384): s.sendall(data[at:at + 16384])\n\
         \x20   s.close()\n\
         \x20   print('sent', flush=True)\n",
        files.join(", ")
    ));
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
    Proc::spawn("python3 HTTP/2 client", &mut cmd)
}

/// CPU time a process has used (its threads' time on a CPU, from the scheduler).
fn cpu(pid: u32) -> Duration {
    let stat = fs::read_to_string(format!("/proc/{pid}/schedstat")).unwrap();
    Duration::from_nanos(stat.split_whitespace().next().unwrap().parse().unwrap())
}

/// Waits until the capture shows `text`.
fn wait_for_capture(path: &Path, text: &str) {
    let start = Instant::now();
    let shows = || {
        let bytes = fs::read(path).unwrap_or_default();
        bytes.windows(text.len()).any(|w| w == text.as_bytes())
    };
    while !shows() {
        if start.elapsed() > Duration::from_secs(30) {
            let _ = fs::copy(path, "/tmp/hostile/h2capture.txt");
            panic!("{text} never captured");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn hpack_references_to_a_huge_entry_cost_what_ordinary_headers_cost() {
    if !root_or_skip("hpack_references_to_a_huge_entry_cost_what_ordinary_headers_cost") {
        return;
    }
    const BLOCKS: usize = 64;
    let work = Workdir::new();
    let (_server, port) = sink_server(&work);
    let ordinary_mark = marker("h2-ordinary");
    let hostile_mark = marker("h2-hostile");
    let ordinary = vec![hostile::hpack_ordinary(65_536); BLOCKS];
    let mut amplified = vec![hostile::hpack_block_a()];
    amplified.extend(vec![hostile::hpack_block_b(); BLOCKS]);
    let files = [
        work.file(
            "ordinary.h2",
            &hostile::h2_client_stream(&ordinary, ("x-phase", &ordinary_mark)),
        ),
        work.file(
            "amplified.h2",
            &hostile::h2_client_stream(&amplified, ("x-phase", &hostile_mark)),
        ),
    ];
    let comm = "h2amplify";
    let sniffer = Sniffer::start(&["-c", comm]);
    let mut client = stream_client(port, comm, &files);
    let mut gate = client.child.stdin.take().unwrap();
    let mut sent = BufReader::new(client.child.stdout.take().unwrap()).lines();
    let mut costs = Vec::new();
    for mark in [&ordinary_mark, &hostile_mark] {
        let before = cpu(sniffer.pid());
        writeln!(gate, "go").unwrap();
        assert_eq!(sent.next().unwrap().unwrap(), "sent");
        wait_for_capture(sniffer.stdout_path(), &format!("x-phase: {mark}"));
        costs.push(cpu(sniffer.pid()) - before);
    }
    drop(gate);
    assert!(client.wait_timeout(Duration::from_secs(20)).success());
    let out = sniffer.stop();
    eprintln!(
        "sslsniff CPU: ordinary blocks {:?}, amplified {:?}",
        costs[0], costs[1]
    );
    assert!(
        costs[1] < 10 * costs[0].max(Duration::from_millis(10)),
        "amplified blocks cost {:?} of CPU, ordinary ones {:?}",
        costs[1],
        costs[0]
    );
    assert!(out.stdout.contains(&format!("x-phase: {hostile_mark}")));
}
