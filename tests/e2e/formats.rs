//! Output people can pipe and open: JSON lines, pcapng, and connection attribution.

use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

#[test]
fn json_lines_carry_direction_and_addresses() {
    if !root_or_skip("json_lines_carry_direction_and_addresses") {
        return;
    }
    let work = Workdir::new();
    let path = marker("json-req");
    let body = marker("json-body");
    work.file(&path, body.as_bytes());
    let (_server, port) = https_server(&work);

    let sniffer = Sniffer::start(&["--format", "json", "-c", "python3"]);
    let client = run_client("python3", &mut python_client(port, &http_get(&path), false));
    let out = sniffer.stop();
    let events = json_events(&out.stdout);

    let server = format!("127.0.0.1:{port}");
    let write = events
        .iter()
        .find(|e| e["data"].as_str().unwrap_or("").contains(&path))
        .expect("request captured");
    assert_eq!(write["direction"], "write");
    assert_eq!(write["func"], "SSL_write_ex");
    assert_eq!(write["pid"], client.pid());
    assert_eq!(write["raddr"], server.as_str());
    assert!(write["laddr"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(write["fd"].as_i64().unwrap() >= 0);
    assert_eq!(write["encoding"], "utf8");
    let read = events
        .iter()
        .find(|e| e["data"].as_str().unwrap_or("").contains(&body))
        .expect("response captured");
    assert_eq!(read["direction"], "read");
    assert_eq!(read["raddr"], server.as_str());
    assert_eq!(read["laddr"], write["laddr"]);
}

/// curl fetching a page of a python3 server under `sslsniff -c curl --pcap FILE`.
struct CurlCapture {
    sniffer: Sniffer,
    /// The page's name, a marker.
    path: String,
    pcap: PathBuf,
    _server: Proc,
    _work: Workdir,
}

impl CurlCapture {
    /// Fetches a page named by a marker made of `name`; the sniffer still runs.
    fn fetch(name: &str) -> CurlCapture {
        let work = Workdir::new();
        let path = marker(name);
        work.file(&path, b"pcap body\n");
        let (server, port) = python_https_server(&work);
        let pcap = work.path().join("capture.pcapng");
        let sniffer = Sniffer::start(&["-c", "curl", "--pcap", pcap.to_str().unwrap()]);
        run_client("curl", &mut curl(port, &path));
        CurlCapture {
            sniffer,
            path,
            pcap,
            _server: server,
            _work: work,
        }
    }
}

/// `tshark -r FILE -Y http`.
fn tshark_http(pcap: &Path) -> Output {
    Command::new("tshark")
        .arg("-r")
        .arg(pcap)
        .args(["-Y", "http"])
        .output()
        .expect("tshark is installed")
}

#[test]
fn pcapng_opens_in_tshark_as_http() {
    if !root_or_skip("pcapng_opens_in_tshark_as_http") {
        return;
    }
    let run = CurlCapture::fetch("pcap");
    let out = run.sniffer.stop();
    assert!(out.status.success(), "{}", out.stderr);
    let pcap = run.pcap;
    let path = run.path;

    let tshark = tshark_http(&pcap);
    let shown = String::from_utf8_lossy(&tshark.stdout);
    assert!(
        tshark.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&tshark.stderr)
    );
    assert!(
        shown.contains(&format!("GET /{path} HTTP/1.1")),
        "no request in:\n{shown}"
    );
    assert!(
        shown.contains("HTTP/1.0 200 OK"),
        "no response status in:\n{shown}"
    );

    let comments = Command::new("tshark")
        .arg("-r")
        .arg(&pcap)
        .args(["-Y", "http", "-T", "fields", "-e", "frame.comment"])
        .output()
        .unwrap();
    let comments = String::from_utf8_lossy(&comments.stdout);
    assert!(
        comments.contains("comm=curl"),
        "packets carry no pid/comm comment:\n{comments}"
    );
}

/// The --pcap file holds each call once it is written, not only at the end: direct
/// writes move whole blocks, and the last partial one goes through the page cache.
#[test]
fn the_pcap_file_can_be_read_while_sslsniff_runs() {
    if !root_or_skip("the_pcap_file_can_be_read_while_sslsniff_runs") {
        return;
    }
    let run = CurlCapture::fetch("pcap-live");
    let request = format!("GET /{} HTTP/1.1", run.path);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut shown = String::new();
    while !shown.contains(&request) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(200));
        shown = String::from_utf8_lossy(&tshark_http(&run.pcap).stdout).into_owned();
    }
    let out = run.sniffer.stop();
    assert!(out.status.success(), "{}", out.stderr);
    assert!(
        shown.contains(&request),
        "the request was not in the file while sslsniff ran:\n{shown}"
    );
}

#[test]
fn text_conn_columns_show_the_server() {
    if !root_or_skip("text_conn_columns_show_the_server") {
        return;
    }
    let work = Workdir::new();
    let path = marker("conn");
    work.file(&path, b"conn body");
    let (_server, port) = https_server(&work);

    let sniffer = Sniffer::start(&["--conn", "-c", "curl"]);
    run_client("curl", &mut curl(port, &path));
    let out = sniffer.stop();
    let header: Vec<&str> = out
        .stdout
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(header[5..], ["FD", "LADDR", "RADDR"]);
    let rows = rows(&out.stdout);
    let write = with_data(&rows, &path);
    assert_eq!(write.len(), 1, "{}", out.stdout);
    assert_eq!(
        write[0].columns[7],
        format!("127.0.0.1:{port}"),
        "{}",
        out.stdout
    );
}

#[test]
fn reused_fd_is_attributed_to_each_connection() {
    if !root_or_skip("reused_fd_is_attributed_to_each_connection") {
        return;
    }
    let work = Workdir::new();
    let (_a, port_a) = https_server(&work);
    let (_b, port_b) = https_server(&work);
    let (mark_a, mark_b) = (marker("fd-a"), marker("fd-b"));
    // One process, two connections one after the other: the second socket gets the
    // first one's fd number back.
    let script = format!(
        "for port, mark in (({port_a}, '{mark_a}'), ({port_b}, '{mark_b}')):\n\
         \x20   s = ctx.wrap_socket(socket.create_connection(('127.0.0.1', port)))\n\
         \x20   s.sendall(('GET /' + mark + ' HTTP/1.0\\r\\n\\r\\n').encode())\n\
         \x20   while s.recv(65536): pass\n\
         \x20   s.close()\n"
    );

    let sniffer = Sniffer::start(&["--format", "json", "-c", "python3"]);
    run_client("python3", &mut python(&script));
    let out = sniffer.stop();
    let events = json_events(&out.stdout);
    let find = |mark: &str| {
        events
            .iter()
            .find(|e| e["data"].as_str().unwrap_or("").contains(mark))
            .cloned()
            .expect(mark)
    };
    let (a, b) = (find(&mark_a), find(&mark_b));
    assert_eq!(a["fd"], b["fd"], "the test needs the fd number reused");
    assert_eq!(a["raddr"], format!("127.0.0.1:{port_a}").as_str());
    assert_eq!(b["raddr"], format!("127.0.0.1:{port_b}").as_str());
}

/// What a run whose stdout nobody read while a python3 client sent `calls` writes of
/// `size` bytes, each starting `{tag}:{index:05}:`, to a python3 sink server saw: the
/// client's pid, then stdout and stderr, read once the client was done. The client
/// writes once a millisecond at most, a pace any disk keeps up with: only stdout is
/// to fall behind, and the other output's queue is as small as stdout's.
fn run_with_stdout_stalled(
    args: &[&str],
    tag: &str,
    calls: usize,
    size: usize,
) -> (u32, String, String) {
    let work = Workdir::new();
    let (_server, port) = sink_server(&work);
    let mut proc = Proc::spawn(
        "sslsniff",
        Command::new(SNIFFER)
            .args(["--status", "json", "-c", "python3"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let stdout = proc.child.stdout.take().unwrap();
    let stderr = await_ready(&mut proc, Duration::from_secs(30));
    let client = run_client(
        "python3",
        &mut python(&format!(
            "import time\n\
             s = ctx.wrap_socket(socket.create_connection(('127.0.0.1', {port})))\n\
             for i in range({calls}):\n\
             \x20   head = b'{tag}:%05d:' % i\n\
             \x20   s.sendall(head + b'x' * ({size} - len(head)))\n\
             \x20   time.sleep(0.001)\n\
             s.close()\n"
        )),
    );
    // The reader comes back only now, and reads everything.
    let reader = thread::spawn(move || {
        let mut all = String::new();
        BufReader::new(stdout).read_to_string(&mut all).unwrap();
        all
    });
    thread::sleep(Duration::from_millis(300));
    kill(Pid::from_raw(proc.pid() as i32), Signal::SIGINT).unwrap();
    assert!(proc.wait_timeout(Duration::from_secs(10)).success());
    let stdout = reader.join().unwrap();
    let stderr = stderr.recv_timeout(Duration::from_secs(10)).unwrap();
    (client.pid(), stdout, stderr)
}

/// A reader of stdout that stops reading: the calls go on without their payloads once
/// the output's queue is full, each still shown and marked, and the warnings, the
/// markers and the summary count the same bytes.
#[test]
fn a_stalled_reader_costs_payloads_not_rows_and_every_byte_is_counted() {
    if !root_or_skip("a_stalled_reader_costs_payloads_not_rows_and_every_byte_is_counted") {
        return;
    }
    let tag = marker("stalled");
    const CALLS: usize = 200;
    const SIZE: usize = 16 * 1024;
    // A 64 KiB ring makes a 64 KiB output queue: 3 MiB of rows cannot fit in it and
    // the pipe while nobody reads.
    let (client, stdout, stderr) =
        run_with_stdout_stalled(&["--ring-buffer-size", "65536"], &tag, CALLS, SIZE);
    let summary = &status_lines(&stderr, "summary")[0];
    let count = |field: &str| summary[field].as_u64().unwrap();
    assert!(count("dropped_bytes") > 0, "nothing dropped:\n{stderr}");
    let warned = |cause: &str| -> u64 {
        status_lines(&stderr, "warning")
            .iter()
            .filter(|w| w["message"].as_str().unwrap().contains(cause))
            .filter_map(|w| w["undelivered_bytes"].as_u64())
            .sum()
    };
    assert_eq!(
        warned("the output fell behind"),
        count("dropped_bytes"),
        "{stderr}"
    );
    assert_eq!(
        warned("the output fell behind") + warned("the ring buffer was full"),
        count("undelivered_bytes"),
        "{stderr}"
    );
    // The server is python3 too: its reads count alike.
    let rows = rows(&stdout);
    assert_undelivered_accounted(summary, marked_undelivered(&rows), &stderr);
    // Each call shown is whole and exact, or has no payload and says so.
    let writes = rows
        .iter()
        .filter(|r| r.func == "WRITE/SEND" && r.pid == client);
    let mut whole = 0;
    for w in writes {
        if w.data.is_empty() {
            let lacks = format!("(INCOMPLETE, {SIZE} bytes undelivered)");
            assert!(w.end.contains(&lacks), "{}", w.end);
            continue;
        }
        let index: usize = w.data.split(':').nth(1).unwrap().parse().unwrap();
        let head = format!("{tag}:{index:05}:");
        assert_eq!(w.data, format!("{head}{}", "x".repeat(SIZE - head.len())));
        assert_eq!(w.end, "----- END DATA -----");
        whole += 1;
    }
    assert!(whole > 0, "nothing captured whole:\n{stderr}");
    assert!(whole < CALLS, "nothing dropped:\n{stderr}");
}

#[test]
fn a_stalled_stdout_leaves_the_pcap_file_whole() {
    if !root_or_skip("a_stalled_stdout_leaves_the_pcap_file_whole") {
        return;
    }
    let work = Workdir::new();
    let pcap = work.path().join("capture.pcapng");
    let tag = marker("stalled-pcap");
    const CALLS: usize = 400;
    const SIZE: usize = 16 * 1024;
    // A 4 MiB queue per output: 13 MB of rows cannot fit in stdout's while nobody reads
    // it; the file's writer keeps up.
    let args = [
        "--ring-buffer-size",
        "4194304",
        "--pcap",
        pcap.to_str().unwrap(),
    ];
    let (client, stdout, stderr) = run_with_stdout_stalled(&args, &tag, CALLS, SIZE);

    let summary = &status_lines(&stderr, "summary")[0];
    let file = &summary["pcap_file"];
    let num = |v: &serde_json::Value, field: &str| v[field].as_u64().unwrap();
    assert!(
        num(summary, "dropped_bytes") > 0,
        "stdout dropped nothing:\n{stderr}"
    );
    assert_eq!(
        num(file, "dropped_bytes"),
        0,
        "the --pcap file fell behind although only stdout was stalled:\n{stderr}"
    );
    assert_eq!(
        num(file, "undelivered_bytes"),
        num(summary, "undelivered_bytes") - num(summary, "dropped_bytes"),
        "{stderr}"
    );
    let warned: u64 = status_lines(&stderr, "warning")
        .iter()
        .filter_map(|w| w["pcap_undelivered_bytes"].as_u64())
        .sum();
    assert_eq!(warned, 0, "{stderr}");
    assert_undelivered_accounted(summary, marked_undelivered(&rows(&stdout)), &stderr);

    // Every payload byte the summary counts for the file is in its packets, and each of
    // the client's writes there is whole and exact.
    let packets = Command::new("tshark")
        .arg("-r")
        .arg(&pcap)
        .args([
            "-T",
            "fields",
            "-E",
            "separator=|",
            "-e",
            "frame.comment",
            "-e",
            "tcp.payload",
        ])
        .output()
        .expect("tshark is installed");
    assert!(
        packets.status.success(),
        "{}",
        String::from_utf8_lossy(&packets.stderr)
    );
    let mut in_file = 0;
    let mut writes = 0;
    for line in String::from_utf8(packets.stdout).unwrap().lines() {
        let (comment, hex) = line.rsplit_once('|').unwrap();
        let payload = decode_hex(&hex.replace(':', ""));
        in_file += payload.len() as u64;
        let cut = comment.contains("undelivered=") || comment.contains("truncated=");
        if !cut && comment.contains(&format!("pid={client} ")) && comment.contains("func=SSL_write")
        {
            let text = String::from_utf8(payload).unwrap();
            let index: usize = text.split(':').nth(1).unwrap().parse().unwrap();
            let head = format!("{tag}:{index:05}:");
            assert_eq!(text, format!("{head}{}", "x".repeat(SIZE - head.len())));
            writes += 1;
        }
    }
    assert_eq!(in_file, num(file, "captured_bytes"), "{stderr}");
    assert!(writes > 0, "no write of the client in the file:\n{stderr}");
}

fn decode_hex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}
