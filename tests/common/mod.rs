//! The end-to-end harness shared by every test: root check, certificates, local TLS
//! peers on 127.0.0.1, the sniffer under test, and cleanup that runs on failure.
#![allow(dead_code)]

pub mod hostile;
pub mod peers;

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;

pub const SNIFFER: &str = env!("CARGO_BIN_EXE_sslsniff");

/// True when the test can run. Without root it fails, so that a run that could not
/// test anything never reports success; SSLSNIFF_SKIP_E2E=1 opts out explicitly (and
/// says so on every test), which `make test` never sets.
pub fn root_or_skip(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var("SSLSNIFF_SKIP_E2E").as_deref() == Ok("1") {
        eprintln!("SKIPPED {test}: needs root to attach uprobes (SSLSNIFF_SKIP_E2E=1)");
        return false;
    }
    panic!("{test}: needs root to attach uprobes; run as root, or set SSLSNIFF_SKIP_E2E=1 to skip the end-to-end tests knowingly");
}

/// A unique marker, so that no other traffic on the machine can match.
pub fn marker(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("SSLSNIFF-{name}-{}-{nanos}", std::process::id())
}

/// A child that is killed when dropped, so a failing assertion leaves nothing behind.
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command) -> Proc {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            child,
            name: name.to_string(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the child to exit by itself, up to a limit.
    pub fn wait_timeout(&mut self, limit: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if start.elapsed() > limit {
                panic!("{} did not exit within {limit:?}", self.name);
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            // Not a blocking wait: a child that a stopped tracer holds is not reaped
            // until the tracer goes on, and a failing test must fail, not hang.
            let start = Instant::now();
            while matches!(self.child.try_wait(), Ok(None))
                && start.elapsed() < Duration::from_secs(5)
            {
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// A work directory with a self-signed certificate and files to serve.
pub struct Workdir {
    pub dir: TempDir,
}

impl Workdir {
    pub fn new() -> Workdir {
        let dir = tempfile::Builder::new()
            .prefix("sslsniff-test")
            .tempdir()
            .unwrap();
        peers::make_certificate(dir.path()).expect("openssl makes a test certificate");
        Workdir { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn file(&self, name: &str, contents: &[u8]) -> PathBuf {
        let path = self.path().join(name);
        fs::write(&path, contents).unwrap();
        path
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "server on port {port} did not come up"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// Starts a server that `command` builds for a free port, in the work directory, and
/// waits until it accepts connections.
pub fn server(name: &str, work: &Workdir, command: impl FnOnce(u16) -> Command) -> (Proc, u16) {
    let port = free_port();
    let mut cmd = command(port);
    cmd.current_dir(work.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let server = Proc::spawn(name, &mut cmd);
    wait_for_port(port);
    (server, port)
}

/// `openssl s_server -WWW`: serves the work directory's files over HTTPS/1.0.
pub fn https_server(work: &Workdir) -> (Proc, u16) {
    server("openssl s_server", work, |port| {
        let mut cmd = Command::new("openssl");
        cmd.args([
            "s_server", "-WWW", "-quiet", "-cert", "cert.pem", "-key", "key.pem",
        ])
        .args(["-accept", &format!("127.0.0.1:{port}")]);
        cmd
    })
}

/// A served file and an HTTP/1.0 request for it, both unique to the test.
pub fn page(work: &Workdir, name: &str) -> (String, String) {
    let path = marker(name);
    let body = marker(&format!("{name}-body"));
    work.file(&path, body.as_bytes());
    (format!("GET /{path} HTTP/1.0\r\n\r\n"), body)
}

/// The sniffer under test. Its stdout goes to a file, as `sslsniff > capture` would: a
/// pipe to this test process would make the test's reading speed part of what is tested.
pub struct Sniffer {
    proc: Proc,
    stdout: tempfile::NamedTempFile,
    stderr: mpsc::Receiver<String>,
    /// Its stderr lines as they come.
    pub lines: Lines,
}

pub struct Output {
    pub stdout: String,
    pub stdout_bytes: Vec<u8>,
    pub stderr: String,
    pub status: std::process::ExitStatus,
}

/// sslsniff's status lines (`--status json`) of one kind, each a JSON object with a
/// `type`.
pub fn status_lines(stderr: &str, kind: &str) -> Vec<serde_json::Value> {
    stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["type"] == kind)
        .collect()
}

impl Output {
    /// sslsniff's status lines of one kind.
    pub fn status_lines(&self, kind: &str) -> Vec<serde_json::Value> {
        status_lines(&self.stderr, kind)
    }

    /// The exit summary.
    pub fn summary(&self) -> serde_json::Value {
        let mut all = self.status_lines("summary");
        assert_eq!(all.len(), 1, "not one summary:\n{}", self.stderr);
        all.remove(0)
    }

    /// Whether a file whose path ends with `path_end` was attached while the process
    /// that revealed it was held (its first call captured).
    pub fn held(&self, path_end: &str) -> bool {
        self.status_lines("tracing")
            .iter()
            .any(|t| t["held"] == true && t["path"].as_str().is_some_and(|p| p.ends_with(path_end)))
    }

    /// Whether a file whose path ends with `path_end` was traced as `library`.
    pub fn traced(&self, path_end: &str, library: &str) -> bool {
        self.status_lines("tracing").iter().any(|t| {
            t["library"] == library && t["path"].as_str().is_some_and(|p| p.ends_with(path_end))
        })
    }
}

/// Reads a sniffer's stderr (`--status json`) in a thread until it ends, and waits up to
/// `limit` for its `ready` line; the receiver gets all of stderr at the end.
pub fn await_ready(proc: &mut Proc, limit: Duration) -> mpsc::Receiver<String> {
    await_ready_live(proc, limit).0
}

/// Like `await_ready`, and each line also comes as it is read, with when.
pub fn await_ready_live(proc: &mut Proc, limit: Duration) -> (mpsc::Receiver<String>, Lines) {
    let err = proc.child.stderr.take().unwrap();
    let (ready_tx, ready) = mpsc::channel();
    let (err_tx, stderr) = mpsc::channel();
    let (live_tx, live) = mpsc::channel();
    thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if line == r#"{"type":"ready"}"# {
                let _ = ready_tx.send(());
            }
            let _ = live_tx.send((Instant::now(), line.clone()));
            all.push_str(&line);
            all.push('\n');
        }
        let _ = err_tx.send(all);
    });
    if ready.recv_timeout(limit).is_err() {
        let _ = proc.child.kill();
        let err = stderr
            .recv_timeout(Duration::from_secs(5))
            .unwrap_or_default();
        panic!("sslsniff did not become ready; stderr:\n{err}");
    }
    (stderr, Lines(live))
}

/// A sniffer's stderr lines as they come, each with the moment it was read.
pub struct Lines(mpsc::Receiver<(Instant, String)>);

impl Lines {
    /// The first line from now on that `wanted` accepts, and when it came; `None` when
    /// none came within `limit`.
    pub fn wait_for(
        &self,
        limit: Duration,
        wanted: impl Fn(&str) -> bool,
    ) -> Option<(Instant, String)> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.0.recv_timeout(left) {
                Ok((at, line)) if wanted(&line) => return Some((at, line)),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }
}

impl Sniffer {
    /// Starts the sniffer and waits until its probes are attached.
    pub fn start(args: &[&str]) -> Sniffer {
        Sniffer::start_with_env(args, &[])
    }

    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Sniffer {
        let stdout = tempfile::NamedTempFile::new().unwrap();
        // A process group of its own, which the child that releases its probes on
        // kernels without multi-uprobe links stays in: `stop` waits for that too.
        let mut proc = Proc::spawn(
            "sslsniff",
            Command::new(SNIFFER)
                .args(["--status", "json"])
                .args(args)
                .envs(env.iter().copied())
                .process_group(0)
                .stdin(Stdio::null())
                .stdout(stdout.reopen().unwrap())
                .stderr(Stdio::piped()),
        );
        let (stderr, lines) = await_ready_live(&mut proc, Duration::from_secs(30));
        Sniffer {
            proc,
            stdout,
            stderr,
            lines,
        }
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Waits up to `limit` for a line of stderr that satisfies `found` (one that came
    /// already counts, unless an earlier wait passed over it), and returns it.
    pub fn wait_for_stderr(&self, limit: Duration, found: impl Fn(&str) -> bool) -> String {
        match self.lines.wait_for(limit, found) {
            Some((_, line)) => line,
            None => panic!("not in sslsniff's stderr within {limit:?}"),
        }
    }

    /// Where its stdout goes, to read while it runs.
    /// Waits up to 30 s for the status line of `kind` (tracing, notice) that names
    /// `file`, and returns it.
    pub fn wait_for_status(&self, kind: &str, file: &Path) -> String {
        let kind = format!(r#""type":"{kind}""#);
        let shown = file.display().to_string();
        self.wait_for_stderr(Duration::from_secs(30), |l| {
            l.contains(&kind) && l.contains(&shown)
        })
    }

    pub fn stdout_path(&self) -> &Path {
        self.stdout.path()
    }

    /// Stops it as `stop` does, and leaves its stdout in the file returned, for the
    /// caller to read line by line: a long capture need not be held in memory.
    pub fn stop_streamed(mut self) -> (Output, tempfile::NamedTempFile) {
        let status = self.interrupt();
        let stderr = self.stderr.recv_timeout(Duration::from_secs(10)).unwrap();
        let out = Output {
            stdout: String::new(),
            stdout_bytes: Vec::new(),
            stderr,
            status,
        };
        (out, self.stdout)
    }

    /// Stops the sniffer the way a user does (Ctrl-C) and returns all it printed.
    pub fn stop(mut self) -> Output {
        let status = self.interrupt();
        self.collect(status)
    }

    /// Ctrl-C, and its exit, and the end of the child that may release its probes.
    fn interrupt(&mut self) -> std::process::ExitStatus {
        // Events are drained on a short timer: give the last ones time to arrive.
        thread::sleep(Duration::from_millis(300));
        kill(Pid::from_raw(self.proc.pid() as i32), Signal::SIGINT).unwrap();
        let status = self.proc.wait_timeout(Duration::from_secs(10));
        // The next test's sslsniff would otherwise attach behind this one's release,
        // which the kernel serialises.
        wait_for_group(self.proc.pid(), Duration::from_secs(600));
        status
    }
}

/// The fields of a `/proc/PID/stat` line after the command name (which may hold anything
/// but the last ')'), the state first.
pub fn stat_fields(stat: &str) -> Option<std::str::Split<'_, char>> {
    Some(stat.rsplit_once(") ")?.1.split(' '))
}

/// Waits until no process of process group `pgid` is left.
pub fn wait_for_group(pgid: u32, limit: Duration) {
    let start = Instant::now();
    let in_group = |stat: &str| {
        stat_fields(stat)
            .and_then(|mut fields| fields.nth(2))
            .is_some_and(|group| group == pgid.to_string())
    };
    loop {
        let left = fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| fs::read_to_string(e.path().join("stat")).ok())
            .any(|stat| in_group(&stat));
        if !left {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "processes of sslsniff's group {pgid} are left after {limit:?}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// One row of text output and its payload.
#[derive(Debug, Clone)]
pub struct Row {
    pub func: String,
    pub comm: String,
    pub pid: u32,
    pub len: String,
    pub columns: Vec<String>,
    pub data: String,
    pub end: String,
}

/// The undelivered bytes that the rows' INCOMPLETE markers name, all rows together.
pub fn marked_undelivered(rows: &[Row]) -> u64 {
    rows.iter()
        .filter_map(|r| r.end.split("(INCOMPLETE, ").nth(1))
        .filter_map(|rest| rest.split(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// One accounting of what was lost: the calls' markers (`marked`) plus the bytes of calls
/// of which nothing reached user space make the summary's undelivered total.
pub fn assert_undelivered_accounted(summary: &serde_json::Value, marked: u64, context: &str) {
    let num = |field: &str| summary[field].as_u64().unwrap();
    assert_eq!(
        marked + num("unannounced_bytes"),
        num("undelivered_bytes"),
        "{context}"
    );
}

/// A row's columns, COMM as one, when `line` is a row: FUNC, TIME, COMM, then
/// `after_comm` columns without spaces (PID, LEN, ...).
fn split_row(line: &str, after_comm: usize) -> Option<Vec<String>> {
    let mut words = line.split_whitespace();
    let (func, time) = (words.next()?, words.next()?);
    if !["READ/RECV", "WRITE/SEND", "HANDSHAKE"].contains(&func) {
        return None;
    }
    let rest: Vec<&str> = words.collect();
    let comm_words = rest.len().checked_sub(after_comm).filter(|&n| n > 0)?;
    let tail = &rest[comm_words..];
    tail.first()?.parse::<u32>().ok()?;
    let mut columns = vec![
        func.to_string(),
        time.to_string(),
        rest[..comm_words].join(" "),
    ];
    columns.extend(tail.iter().map(|w| w.to_string()));
    Some(columns)
}

/// Parses bcc-style text output: a header, then rows, each followed by a DATA block
/// (handshakes have none). Other programs on the machine may be traced too, with any
/// command name (spaces included): a row's columns are read from both ends, FUNC and
/// TIME from the left, the columns after COMM from the right.
pub fn rows(stdout: &str) -> Vec<Row> {
    let mut rows = Vec::new();
    // Split on '\n' only: payload lines keep their '\r', so data compares exactly.
    let mut lines = stdout.split('\n').peekable();
    let header = lines.next().unwrap_or_default();
    let after_comm = header.split_whitespace().count().saturating_sub(3);
    while let Some(line) = lines.next() {
        let Some(columns) = split_row(line, after_comm) else {
            continue;
        };
        let mut row = Row {
            func: columns[0].clone(),
            comm: columns[2].clone(),
            pid: columns[3].parse().unwrap(),
            len: columns[4].clone(),
            columns,
            data: String::new(),
            end: String::new(),
        };
        if lines.peek() == Some(&"----- DATA -----") {
            lines.next();
            let mut data = Vec::new();
            for l in lines.by_ref() {
                if l.starts_with("----- END DATA") {
                    row.end = l.to_string();
                    break;
                }
                data.push(l);
            }
            row.data = data.join("\n");
        }
        rows.push(row);
    }
    rows
}

/// The rows whose payload contains `needle`.
pub fn with_data<'a>(rows: &'a [Row], needle: &str) -> Vec<&'a Row> {
    rows.iter().filter(|r| r.data.contains(needle)).collect()
}

/// Runs a client to completion (it must not hang the test).
pub fn run_client(name: &str, cmd: &mut Command) -> Proc {
    let mut proc = Proc::spawn(name, cmd);
    let status = proc.wait_timeout(Duration::from_secs(20));
    assert!(status.success(), "{name} failed: {status}");
    proc
}

/// Starts a python3 server script (run in the work directory, where the certificate is)
/// that listens on 127.0.0.1 at the port it is given.
pub fn python_server(
    name: &str,
    work: &Workdir,
    script: impl FnOnce(u16) -> String,
) -> (Proc, u16) {
    server(name, work, |port| {
        let mut cmd = Command::new("python3");
        cmd.args(["-c", &script(port)]);
        cmd
    })
}

/// A python3 TLS server that reads each connection to its end, one thread each.
pub fn sink_server(work: &Workdir) -> (Proc, u16) {
    python_server("python3 sink server", work, peers::sink_server_script)
}

/// Python's HTTPS file server for the work directory: unlike `s_server -WWW` it sends
/// Content-Length, so a capture's responses are whole HTTP messages to Wireshark.
pub fn python_https_server(work: &Workdir) -> (Proc, u16) {
    python_server("python3 https server", work, https_server_script)
}

/// The script of python_https_server: serves its working directory, where cert.pem and
/// key.pem are, on 127.0.0.1 at `port`.
pub fn https_server_script(port: u16) -> String {
    format!(
        "import http.server, ssl\n\
         srv = http.server.HTTPServer(('127.0.0.1', {port}), http.server.SimpleHTTPRequestHandler)\n\
         ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n\
         ctx.load_cert_chain('cert.pem', 'key.pem')\n\
         srv.socket = ctx.wrap_socket(srv.socket, server_side=True)\n\
         srv.serve_forever()\n"
    )
}

/// The start of every python3 client script: a TLS context that accepts the test
/// certificate. Python's ssl module calls OpenSSL 3's SSL_write_ex/SSL_read_ex.
pub const PY_CLIENT: &str = "import socket, ssl, sys, threading\n\
     ctx = ssl.create_default_context()\n\
     ctx.check_hostname = False\n\
     ctx.verify_mode = ssl.CERT_NONE\n";

/// A python3 client running `script` (after PY_CLIENT).
pub fn python(script: &str) -> Command {
    let mut cmd = Command::new("python3");
    cmd.args(["-c", &format!("{PY_CLIENT}{script}")]);
    cmd
}

/// curl fetching https://127.0.0.1:PORT/PATH, output discarded.
pub fn curl(port: u16, path: &str) -> Command {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sk",
        "--max-time",
        "20",
        &format!("https://127.0.0.1:{port}/{path}"),
    ])
    .stdout(Stdio::null());
    cmd
}

/// Asserts that `request` was written by `pid` and `body` read by it, each exactly once,
/// and returns the two rows.
pub fn assert_both_directions<'a>(
    out: &Output,
    rows: &'a [Row],
    pid: u32,
    request: &str,
    body: &str,
) -> (&'a Row, &'a Row) {
    let write = with_data(rows, request.trim_end());
    assert_eq!(
        write.len(),
        1,
        "request not captured once:\n{}\n{}",
        out.stdout,
        out.stderr
    );
    assert_eq!(
        (write[0].func.as_str(), write[0].pid),
        ("WRITE/SEND", pid),
        "{}",
        out.stdout
    );
    let read = with_data(rows, body);
    assert_eq!(read.len(), 1, "response not captured once:\n{}", out.stdout);
    assert_eq!(
        (read[0].func.as_str(), read[0].pid),
        ("READ/RECV", pid),
        "{}",
        out.stdout
    );
    (write[0], read[0])
}

/// A python3 TLS client (OpenSSL 3: SSL_write_ex/SSL_read_ex) that sends `payload`
/// (a Python bytes literal) and reads until the server closes. With `gated`, it waits
/// for a line on stdin first, so that it exists before a `-p` sniffer starts.
pub fn python_client(port: u16, payload: &str, gated: bool) -> Command {
    let gate = if gated { "sys.stdin.readline()\n" } else { "" };
    let mut cmd = python(&format!(
        "{gate}\
         s = ctx.wrap_socket(socket.create_connection(('127.0.0.1', {port})))\n\
         s.sendall({payload})\n\
         while s.recv(65536): pass\n"
    ));
    cmd.stdin(if gated { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    cmd
}

/// An HTTP/1.0 request for `path`, as a Python bytes literal.
pub fn http_get(path: &str) -> String {
    format!("b'GET /{path} HTTP/1.0\\r\\n\\r\\n'")
}

/// Compiles a C client from tests/fixtures into the work directory.
pub fn build_fixture(work: &Workdir, source: &str, out: &str, flags: &[&str]) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(source);
    let exe = work.path().join(out);
    let status = Command::new("cc")
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .args(flags)
        .stderr(Stdio::null())
        .status()
        .expect("cc is installed");
    assert!(status.success(), "cannot build {source} with {flags:?}");
    exe
}

/// Waits until process `pid` maps a file whose path contains `needle` (it has exec'd its
/// program and loaded that library): a fixed sleep is too short on a busy machine.
pub fn wait_for_mapping(pid: u32, needle: &str) {
    let start = Instant::now();
    loop {
        let maps = fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
        if maps.contains(needle) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "process {pid} did not map {needle}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

impl Sniffer {
    /// Sends `signal` at once and returns all it printed, with the time it took to exit
    /// after the signal.
    pub fn stop_with(mut self, signal: Signal) -> (Output, Duration) {
        kill(Pid::from_raw(self.proc.pid() as i32), signal).unwrap();
        let sent = Instant::now();
        let status = self.proc.wait_timeout(Duration::from_secs(10));
        let took = sent.elapsed();
        (self.collect(status), took)
    }

    /// Waits for the sniffer to end by itself (`-p` of a process that exits), up to
    /// `limit`, and returns all it printed.
    pub fn wait_exit(mut self, limit: Duration) -> Output {
        let status = self.proc.wait_timeout(limit);
        self.collect(status)
    }

    fn collect(self, status: std::process::ExitStatus) -> Output {
        let stdout_bytes = fs::read(self.stdout.path()).unwrap();
        let stderr = self.stderr.recv_timeout(Duration::from_secs(10)).unwrap();
        Output {
            stdout: String::from_utf8_lossy(&stdout_bytes).into_owned(),
            stdout_bytes,
            stderr,
            status,
        }
    }
}

/// `s_server -WWW` serving the work directory on [::1], and its port.
pub fn https_server_v6(work: &Workdir) -> (Proc, u16) {
    let port = TcpListener::bind("[::1]:0")
        .expect("IPv6 loopback is configured")
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = Command::new("openssl");
    cmd.args([
        "s_server", "-WWW", "-quiet", "-cert", "cert.pem", "-key", "key.pem",
    ])
    .args(["-accept", &format!("[::1]:{port}")])
    .current_dir(work.path())
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let server = Proc::spawn("openssl s_server on ::1", &mut cmd);
    let start = Instant::now();
    while TcpStream::connect(("::1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "server on [::1]:{port} did not come up"
        );
        thread::sleep(Duration::from_millis(50));
    }
    (server, port)
}

/// `--format json` output, one parsed object per line.
pub fn json_events(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// The OpenSSL fixture client linked statically: TLS inside the executable itself.
pub fn build_static_client(work: &Workdir, out: &str) -> PathBuf {
    build_fixture(
        work,
        "openssl_client.c",
        out,
        &["-static", "-lssl", "-lcrypto"],
    )
}

/// The Go fixture (tests/fixtures/go/https.go), built with Debian's Go into the work
/// directory with `flags` and `env` (CGO_ENABLED=0: a static executable).
pub fn build_go(work: &Workdir, name: &str, flags: &[&str], env: &[(&str, &str)]) -> PathBuf {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/go/https.go");
    let exe = work.path().join(name);
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("go-cache");
    let status = Command::new("go")
        .arg("build")
        .args(flags)
        .arg("-o")
        .arg(&exe)
        .arg(fixture)
        .env("GOCACHE", &cache)
        .env("GOPATH", cache.join("path"))
        .env("HOME", work.path())
        .envs(env.iter().copied())
        .status()
        .expect("go is installed (Debian's golang-go)");
    assert!(
        status.success(),
        "cannot build {name} with {flags:?} {env:?}"
    );
    exe
}
