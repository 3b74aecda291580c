//! A root tool among hostile files, names and signals (issue 14): planted symlinks,
//! processes that exit, hangups mid-traffic, hostile command names, full disks, and a
//! fast exit on the one-link-per-probe path.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

/// A sniffer started from any command (a wrapper, another stdout), `--status json`
/// already among its arguments; ready when it said so.
struct Running {
    proc: Proc,
    stderr: mpsc::Receiver<String>,
}

impl Running {
    fn start(cmd: &mut Command) -> Running {
        Running::start_within(cmd, Duration::from_secs(30))
    }

    fn start_within(cmd: &mut Command, limit: Duration) -> Running {
        let mut proc = Proc::spawn("sslsniff", cmd.stdin(Stdio::null()).stderr(Stdio::piped()));
        let stderr = await_ready(&mut proc, limit);
        Running { proc, stderr }
    }

    /// Sends SIGINT unless it already ended, and returns its exit status and stderr.
    fn stop(mut self) -> (ExitStatus, String) {
        thread::sleep(Duration::from_millis(300));
        if let Ok(None) = self.proc.child.try_wait() {
            let _ = kill(Pid::from_raw(self.proc.pid() as i32), Signal::SIGINT);
        }
        let status = self.proc.wait_timeout(Duration::from_secs(10));
        let stderr = self.stderr.recv_timeout(Duration::from_secs(10)).unwrap();
        (status, stderr)
    }

    /// Sends `signal` now; returns the exit status, stderr and the time to exit.
    fn stop_with(mut self, signal: Signal) -> (ExitStatus, String, Duration) {
        kill(Pid::from_raw(self.proc.pid() as i32), signal).unwrap();
        let sent = Instant::now();
        let status = self.proc.wait_timeout(Duration::from_secs(10));
        let took = sent.elapsed();
        let stderr = self.stderr.recv_timeout(Duration::from_secs(10)).unwrap();
        (status, stderr, took)
    }
}

/// Runs sslsniff to its end (it must refuse to start) and returns (exit code, stderr).
fn refused(args: &[&str]) -> (Option<i32>, String) {
    let start = Instant::now();
    let out = Command::new(SNIFFER)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "refusing took {:?}",
        start.elapsed()
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_ne!(out.status.code(), Some(0), "{args:?} was not refused");
    assert_eq!(stderr.lines().count(), 1, "not one line:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    (out.status.code(), stderr)
}

/// `cmd` run as nobody.
fn as_nobody(cmd: &str) -> Command {
    let mut c = Command::new("setpriv");
    c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", cmd]);
    c
}

fn assert_untouched(path: &Path, contents: &[u8], mode: u32) {
    let meta = fs::symlink_metadata(path).unwrap();
    assert!(
        meta.file_type().is_file(),
        "{} changed type",
        path.display()
    );
    assert_eq!(
        meta.mode() & 0o7777,
        mode,
        "{} changed mode",
        path.display()
    );
    assert_eq!(
        fs::read(path).unwrap(),
        contents,
        "{} was written",
        path.display()
    );
}

#[test]
fn pcap_refuses_planted_symlinks_and_foreign_files_and_creates_private_files() {
    if !root_or_skip("pcap_refuses_planted_symlinks_and_foreign_files_and_creates_private_files") {
        return;
    }
    let work = Workdir::new();
    // Another user must reach the shared directory, as /tmp is reached.
    fs::set_permissions(work.path(), fs::Permissions::from_mode(0o711)).unwrap();
    let shared = work.path().join("shared");
    fs::create_dir(&shared).unwrap();
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o1777)).unwrap();
    let secret = work.file("secret", b"root only\n");
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();

    // A symlink planted by another user, and one of root's own (which the kernel's
    // protected_symlinks would let through: only O_NOFOLLOW stops it).
    let planted = shared.join("planted.pcapng");
    let status = as_nobody("ln")
        .arg("-s")
        .arg(&secret)
        .arg(&planted)
        .status()
        .unwrap();
    assert!(status.success(), "nobody cannot plant a symlink");
    let own_link = shared.join("own-link.pcapng");
    std::os::unix::fs::symlink(&secret, &own_link).unwrap();
    // A world-writable file of another user's.
    let foreign = shared.join("foreign.pcapng");
    let status = as_nobody("sh")
        .arg("-c")
        .arg(format!("umask 0; echo theirs > {}", foreign.display()))
        .status()
        .unwrap();
    assert!(status.success());

    for link in [&planted, &own_link] {
        for extra in [None, Some("--overwrite")] {
            let mut args = vec!["--pcap", link.to_str().unwrap()];
            args.extend(extra);
            let (_, stderr) = refused(&args);
            assert!(stderr.contains("--pcap"), "{stderr}");
            assert_untouched(&secret, b"root only\n", 0o600);
            assert!(fs::symlink_metadata(link).unwrap().file_type().is_symlink());
        }
    }
    let foreign_arg = foreign.to_str().unwrap();
    let (_, stderr) = refused(&["--pcap", foreign_arg]);
    assert!(stderr.contains("exists"), "{stderr}");
    let (_, stderr) = refused(&["--pcap", foreign_arg, "--overwrite"]);
    assert!(stderr.contains("owned by this user"), "{stderr}");
    assert_untouched(&foreign, b"theirs\n", 0o666);

    // New files are private whatever the umask; --overwrite makes a replaced one so too.
    let fresh = shared.join("fresh.pcapng");
    let mine = work.file("mine.pcapng", b"old contents");
    fs::set_permissions(&mine, fs::Permissions::from_mode(0o644)).unwrap();
    for (path, overwrite) in [(&fresh, ""), (&mine, "--overwrite")] {
        let script = format!(
            "umask 0; exec {SNIFFER} --status json -c nosuchcomm --pcap {} {overwrite}",
            path.display()
        );
        let running = Running::start(
            Command::new("sh")
                .args(["-c", &script])
                .stdout(Stdio::null()),
        );
        let mode = fs::metadata(path).unwrap().mode() & 0o7777;
        let (status, stderr) = running.stop();
        assert!(status.success(), "{stderr}");
        assert_eq!(mode, 0o600, "{} is not private", path.display());
        let bytes = fs::read(path).unwrap();
        assert_eq!(bytes[..4], [0x0a, 0x0d, 0x0d, 0x0a], "not a pcapng file");
    }
}

#[test]
fn pid_of_a_process_that_exits_ends_the_capture_within_a_second() {
    if !root_or_skip("pid_of_a_process_that_exits_ends_the_capture_within_a_second") {
        return;
    }
    let work = Workdir::new();
    let (request, body) = page(&work, "pid-exit");
    let (_server, port) = https_server(&work);
    let payload = format!("b'{}'", request.replace("\r\n", "\\r\\n"));
    let mut client = Proc::spawn("python3", &mut python_client(port, &payload, true));
    let pid = client.pid();
    let sniffer = Sniffer::start(&["-p", &pid.to_string()]);
    writeln!(client.child.stdin.take().unwrap()).unwrap();
    assert!(client.wait_timeout(Duration::from_secs(20)).success());
    // wait_timeout polls every 20 ms: the process ended at most that long ago.
    let out = sniffer.wait_exit(Duration::from_secs(1));
    assert!(out.status.success(), "{}", out.stderr);
    let notices = out.status_lines("notice");
    assert!(
        notices
            .iter()
            .any(|n| n["message"] == format!("process {pid} exited; stopping").as_str()),
        "no exit notice:\n{}",
        out.stderr
    );
    out.summary();
    assert_both_directions(&out, &rows(&out.stdout), pid, &request, &body);

    // A zombie and a kernel thread are refused, each with its reason.
    let zombie = Proc::spawn("true", &mut Command::new("true"));
    thread::sleep(Duration::from_millis(300));
    let (_, stderr) = refused(&["-p", &zombie.pid().to_string()]);
    assert!(stderr.contains("has exited"), "{stderr}");
    // kthreadd is PID 2 on every Linux.
    let (_, stderr) = refused(&["-p", "2"]);
    assert!(stderr.contains("kernel thread"), "{stderr}");
}

/// A python3 client that, once released, writes numbered records of `size` bytes to the
/// sink server until it is killed.
fn endless_writer(port: u16, mark: &str, size: usize) -> Proc {
    let script = format!(
        "sys.stdin.readline()\n\
         s = ctx.wrap_socket(socket.create_connection(('127.0.0.1', {port})))\n\
         i = 0\n\
         while True:\n\
         \x20   head = '{mark}-%08d-' % i\n\
         \x20   s.sendall((head + 'x' * ({size} - len(head))).encode())\n\
         \x20   i += 1\n"
    );
    let mut cmd = python(&script);
    cmd.stdin(Stdio::piped()).stdout(Stdio::null());
    Proc::spawn("python3 writer", &mut cmd)
}

#[test]
fn hangup_during_traffic_ends_cleanly_with_every_record_whole() {
    if !root_or_skip("hangup_during_traffic_ends_cleanly_with_every_record_whole") {
        return;
    }
    let work = Workdir::new();
    let (_server, port) = sink_server(&work);
    let mark = marker("hup");
    let size = 4000;
    let mut writer = endless_writer(port, &mark, size);
    let sniffer = Sniffer::start(&["-p", &writer.pid().to_string()]);
    writeln!(writer.child.stdin.take().unwrap()).unwrap();
    thread::sleep(Duration::from_millis(700));
    let (out, _) = sniffer.stop_with(Signal::SIGHUP);
    assert!(
        writer.child.try_wait().unwrap().is_none(),
        "the writer stopped early"
    );
    drop(writer);

    assert!(out.status.success(), "{}: {}", out.status, out.stderr);
    let summary = out.summary();
    let rows = rows(&out.stdout);
    assert!(rows.len() >= 10, "too little traffic:\n{}", out.stderr);
    assert_eq!(
        summary["events"].as_u64(),
        Some(rows.len() as u64),
        "printed events and rows differ:\n{}",
        out.stderr
    );
    for row in &rows {
        assert_eq!(row.func, "WRITE/SEND");
        assert_eq!(row.len, size.to_string());
        if row.end == "----- END DATA -----" {
            assert_eq!(row.data.len(), size, "a record cut short: {row:?}");
            assert!(row.data.starts_with(&mark), "{row:?}");
        } else {
            assert!(row.end.contains("INCOMPLETE"), "{row:?}");
            assert!(summary["undelivered_bytes"].as_u64() > Some(0));
        }
    }
    assert!(
        out.stdout.ends_with("----- END DATA -----\n\n"),
        "the output ends mid-record"
    );

    // The other stop signals end the capture the same way.
    for signal in [Signal::SIGTERM, Signal::SIGQUIT] {
        let sniffer = Sniffer::start(&["-c", "nosuchcomm"]);
        let (out, took) = sniffer.stop_with(signal);
        assert!(
            out.status.success(),
            "{signal}: {}: {}",
            out.status,
            out.stderr
        );
        out.summary();
        assert!(
            took < Duration::from_secs(2),
            "{signal}: exit took {took:?}"
        );
    }
}

#[test]
fn a_reader_that_takes_nothing_holds_up_no_exit() {
    if !root_or_skip("a_reader_that_takes_nothing_holds_up_no_exit") {
        return;
    }
    let work = Workdir::new();
    let (_server, port) = sink_server(&work);
    let mut writer = endless_writer(port, &marker("stalled"), 4000);
    // The pipe's reader stays open and reads nothing, as `sslsniff | less` scrolled back;
    // a small ring and queue fill at once.
    let pid = writer.pid().to_string();
    let running = Running::start(
        Command::new(SNIFFER)
            .args([
                "--status",
                "json",
                "--ring-buffer-size",
                "1048576",
                "-p",
                &pid,
            ])
            .stdout(Stdio::piped()),
    );
    writeln!(writer.child.stdin.take().unwrap()).unwrap();
    thread::sleep(Duration::from_secs(2));
    let (status, stderr, took) = running.stop_with(Signal::SIGTERM);
    drop(writer);

    assert!(status.success(), "{status}: {stderr}");
    assert!(
        took < Duration::from_secs(2),
        "exit took {took:?}:\n{stderr}"
    );
    assert!(
        stderr.contains("not written, counted undelivered"),
        "the unwritten events are not reported:\n{stderr}"
    );
    let summary = status_lines(&stderr, "summary");
    assert_eq!(summary.len(), 1, "not one summary:\n{stderr}");
    assert!(
        summary[0]["undelivered_bytes"].as_u64() > Some(0),
        "{stderr}"
    );
}

/// The command name the traced client gives itself: ESC ] (a terminal title), BEL,
/// a newline, as bytes of a Python literal. 11 bytes: the kernel keeps them all.
const HOSTILE_COMM: &str = r"a\x1b]0;pwn\x07\nZ";
const HOSTILE_RAW: &[u8] = b"a\x1b]0;pwn\x07\nZ";
/// How every text output must show it.
const HOSTILE_ESCAPED: &str = r"a\x1b]0;pwn\x07\x0aZ";

fn assert_no_raw_controls(what: &str, bytes: &[u8]) {
    for c in [0x1b, 0x07] {
        assert!(
            !bytes.contains(&c),
            "{what}: a raw {c:#04x} byte:\n{}",
            String::from_utf8_lossy(bytes)
        );
    }
}

#[test]
fn hostile_command_name_is_escaped_in_every_output() {
    if !root_or_skip("hostile_command_name_is_escaped_in_every_output") {
        return;
    }
    let work = Workdir::new();
    let (request, _) = page(&work, "comm");
    let (_server, port) = https_server(&work);
    let comm = std::str::from_utf8(HOSTILE_RAW).unwrap();
    let pcap = work.path().join("comm.pcapng");
    let pcap_arg = pcap.to_str().unwrap();
    let text = Sniffer::start(&["-c", comm, "--pcap", pcap_arg]);
    let hex = Sniffer::start(&["-c", comm, "--hexdump"]);
    let json = Sniffer::start(&["-c", comm, "--format", "json"]);
    let script = format!(
        "import ctypes\n\
         ctypes.CDLL(None).prctl(15, b'{HOSTILE_COMM}', 0, 0, 0)\n\
         s = ctx.wrap_socket(socket.create_connection(('127.0.0.1', {port})))\n\
         s.sendall(b'{}')\n\
         while s.recv(65536): pass\n",
        request.replace("\r\n", "\\r\\n")
    );
    run_client("python3 renamed", python(&script).stdout(Stdio::null()));

    for (what, out) in [("text", text.stop()), ("hexdump", hex.stop())] {
        assert_no_raw_controls(what, &out.stdout_bytes);
        let rows = rows(&out.stdout);
        let named: Vec<_> = rows.iter().filter(|r| r.comm == HOSTILE_ESCAPED).collect();
        assert!(
            named.iter().any(|r| r.func == "WRITE/SEND")
                && named.iter().any(|r| r.func == "READ/RECV"),
            "{what}: no rows under the escaped name:\n{}",
            out.stdout
        );
        // One line per row: every line is a header, a row, or part of a DATA block.
        assert!(
            !out.stdout.lines().any(|l| l.starts_with("Z ") || l == "Z"),
            "{what}: a row was split:\n{}",
            out.stdout
        );
    }
    let out = json.stop();
    assert_no_raw_controls("json", &out.stdout_bytes);
    let events: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let mark = request.trim_end();
    let write = events
        .iter()
        .find(|e| e["data"].as_str().unwrap_or("").contains(mark))
        .expect("the request is captured");
    assert_eq!(write["comm"], comm);

    let bytes = fs::read(&pcap).unwrap();
    assert!(
        !bytes.windows(HOSTILE_RAW.len()).any(|w| w == HOSTILE_RAW),
        "the raw name is in the pcap"
    );
    let tshark = Command::new("tshark")
        .arg("-r")
        .arg(&pcap)
        .args(["-T", "fields", "-e", "frame.comment"])
        .output()
        .expect("tshark is installed");
    assert!(tshark.status.success());
    assert_no_raw_controls("pcap comments", &tshark.stdout);
    let comments = String::from_utf8_lossy(&tshark.stdout);
    assert!(
        comments.contains(&format!("comm={HOSTILE_ESCAPED} ")),
        "{comments}"
    );
}

/// Checks that a run that could not write its output said so once, as ENOSPC.
fn assert_no_space(what: &str, status: ExitStatus, stderr: &str) {
    assert!(!status.success(), "{what}: exited 0:\n{stderr}");
    let errors = status_lines(stderr, "error");
    assert_eq!(errors.len(), 1, "{what}: not one error:\n{stderr}");
    let message = errors[0]["message"].as_str().unwrap();
    assert!(
        message.contains("No space left on device"),
        "{what}: {message}"
    );
    assert!(
        !stderr.contains("Operation not permitted"),
        "{what}: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{what}: {stderr}");
}

/// A python3 client that fetches `path` (1 MiB or more: it fills any output buffer).
fn fetch(port: u16, path: &str) {
    run_client("python3", &mut python_client(port, &http_get(path), false));
}

#[test]
fn a_full_output_says_no_space_left_on_device() {
    if !root_or_skip("a_full_output_says_no_space_left_on_device") {
        return;
    }
    let work = Workdir::new();
    let (request, _) = page(&work, "full-small");
    let big = marker("full-big");
    work.file(&big, &vec![b'z'; 1 << 20]);
    let (_server, port) = https_server(&work);
    let request_path = request.split(' ').nth(1).unwrap().trim_start_matches('/');

    // stdout on /dev/full: the error comes at the last flush (a small capture), or in
    // the middle of the run (a large one), in text and in JSON.
    for (format, path) in [("text", request_path), ("text", &big), ("json", &big)] {
        let running = Running::start(
            Command::new(SNIFFER)
                .args(["--status", "json", "-c", "python3", "--format", format])
                .stdout(
                    fs::OpenOptions::new()
                        .write(true)
                        .open("/dev/full")
                        .unwrap(),
                ),
        );
        fetch(port, path);
        let (status, stderr) = running.stop();
        assert_no_space(&format!("stdout {format} {path}"), status, &stderr);
    }

    // --pcap on a full file system: a 64 KiB tmpfs in a private mount namespace.
    let small = work.path().join("small");
    fs::create_dir(&small).unwrap();
    let pcap = small.join("full.pcapng");
    let script = format!(
        "mount -t tmpfs -o size=64k tmpfs {} && exec \"$0\" \"$@\"",
        small.display()
    );
    let running = Running::start(
        Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", &script])
            .args([SNIFFER, "--status", "json", "-c", "python3", "--pcap"])
            .arg(&pcap)
            .stdout(Stdio::null()),
    );
    fetch(port, &big);
    let (status, stderr) = running.stop();
    assert_no_space("--pcap on a full tmpfs", status, &stderr);
}

/// `n` copies of the system's libssl in `dir`, as --extra-lib arguments.
fn libssl_copies(dir: &Path, n: usize) -> Vec<String> {
    (0..n)
        .flat_map(|i| {
            let copy = dir.join(format!("libssl-{i}.so.3"));
            fs::copy("/usr/lib/x86_64-linux-gnu/libssl.so.3", &copy).unwrap();
            [
                "--extra-lib".to_string(),
                format!("openssl:{}", copy.display()),
            ]
        })
        .collect()
}

/// sslsniff on the one-link-per-probe path, with a filter that matches nothing: the
/// exit time is the detach, not the machine's traffic. The kernel creates and releases
/// perf-event uprobes under one mutex, and each release waits for a grace period while
/// holding it: while an earlier run's links are being released (seconds to minutes;
/// other tests' runs too), new ones attach at that pace. Becoming ready may
/// be slow; exiting must not be.
fn start_per_probe(args: &[String]) -> Running {
    Running::start_within(
        Command::new(SNIFFER)
            .args(["--status", "json", "-c", "nosuchcomm"])
            .args(args)
            .env("SSLSNIFF_WITHOUT", "uprobe-multi")
            .stdout(Stdio::null()),
        Duration::from_secs(600),
    )
}

#[test]
fn per_probe_links_exit_fast_even_with_50_library_copies() {
    if !root_or_skip("per_probe_links_exit_fast_even_with_50_library_copies") {
        return;
    }
    let work = Workdir::new();
    let sniffer = start_per_probe(&[]);
    let ids = link_ids(&sniffer.proc.pid().to_string());
    let (status, stderr, took) = sniffer.stop_with(Signal::SIGINT);
    assert!(status.success(), "{stderr}");
    assert!(
        took < Duration::from_secs(1),
        "default libraries: exit took {took:?}"
    );
    wait_released(&ids, Duration::from_secs(600));

    // 50 copies: 400 links, which closed one after another take 40 s here.
    let sniffer = start_per_probe(&libssl_copies(work.path(), 50));
    let ids = link_ids(&sniffer.proc.pid().to_string());
    let (status, stderr, took) = sniffer.stop_with(Signal::SIGINT);
    assert!(status.success(), "{stderr}");
    let traced = status_lines(&stderr, "tracing")
        .iter()
        .filter(|t| t["path"].as_str().unwrap_or("").contains("/libssl-"))
        .count();
    assert_eq!(traced, 50, "not every copy traced:\n{stderr}");
    assert!(
        took < Duration::from_secs(1),
        "50 copies: exit took {took:?}"
    );
    // Released in the background; waited for, so that later tests do not attach behind
    // it.
    wait_released(&ids, Duration::from_secs(600));
}

/// The BPF link ids in the descriptors of `pid`.
fn link_ids(pid: &str) -> Vec<u32> {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| fs::read_to_string(e.path()).ok())
        .filter_map(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("link_id:"))
                .and_then(|id| id.trim().parse().ok())
        })
        .collect()
}

/// The processes that hold any of `ids`.
fn holders(ids: &[u32]) -> Vec<String> {
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|pid| pid.parse::<u32>().is_ok())
        .filter(|pid| link_ids(pid).iter().any(|id| ids.contains(id)))
        .collect()
}

/// Waits until no process holds any of the links `ids` and the kernel has none of them.
/// A process that closes links drops its descriptors at once but releases each link
/// after the previous one, about 0.1 s apart here: the kernel's list is the truth.
fn wait_released(ids: &[u32], limit: Duration) {
    let start = Instant::now();
    loop {
        let alive: Vec<u32> = libbpf_rs::query::LinkInfoIter::default()
            .map(|l| l.id)
            .filter(|id| ids.contains(id))
            .collect();
        let held = holders(ids);
        if alive.is_empty() && held.is_empty() {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "after {limit:?}, links {alive:?} are left, held by {held:?}"
        );
        thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn per_probe_links_are_all_released_after_a_fast_exit() {
    if !root_or_skip("per_probe_links_are_all_released_after_a_fast_exit") {
        return;
    }
    let work = Workdir::new();
    let mut args = libssl_copies(work.path(), 5);
    // Only the copies: every link this run makes is one of theirs (-p of a process
    // without TLS keeps running programs that carry TLS, such as Go's, out).
    let idle = Proc::spawn("sleep", Command::new("sleep").arg("600"));
    let only = [
        "-o",
        "-g",
        "-n",
        "--no-wolfssl",
        "--no-mbedtls",
        "--no-follow",
        "-p",
    ];
    args.extend(only.map(String::from));
    args.push(idle.pid().to_string());
    let sniffer = start_per_probe(&args);
    let ids = link_ids(&sniffer.proc.pid().to_string());
    // Four functions of each copy, an entry and a return probe each.
    assert_eq!(ids.len(), 5 * 4 * 2, "unexpected links: {ids:?}");
    let (status, stderr, took) = sniffer.stop_with(Signal::SIGINT);
    assert!(status.success(), "{stderr}");
    assert!(took < Duration::from_secs(1), "exit took {took:?}");
    // The child that took them over releases them after we are gone.
    wait_released(&ids, Duration::from_secs(300));
}
