//! The kernel matrix: Debian's stock kernels booted under qemu, each running the cases
//! below in a VM of its own, with the same sslsniff. The VM only runs them and sends
//! back what everything printed; every assertion is made here. See docs/kernels.md.
//!
//! A kernel or a case is one line of the tables below.

mod common;
mod vm;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use vm::initramfs::Initramfs;
use vm::kernel::{self, Kernel};

macro_rules! kernels {
    ($($test:ident: $series:literal from $suite:literal;)*) => {
        $(#[test]
        fn $test() {
            matrix(Kernel { series: $series, suite: $suite });
        })*
    };
}

// The newest stock amd64 kernel of each line in its suite, resolved at each run.
kernels! {
    debian_5_10_bullseye: "5.10" from "bullseye";
    debian_6_1_bookworm: "6.1" from "bookworm";
    debian_6_12_bookworm_backports: "6.12" from "bookworm-backports";
}

/// How a case runs in the VM (tests/vm/init.sh says what each does).
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    /// sslsniff starts, then the client runs; then Ctrl-C.
    After,
    /// The client and a decoy exist first, waiting; sslsniff starts (`$CLIENT` is the
    /// client's PID); then both run; then Ctrl-C.
    Before,
    /// Only the client command runs.
    Alone,
}
use Kind::*;

/// tracefs (and debugfs) mounted, as on most hosts, or neither: sslsniff then mounts
/// tracefs privately.
const TRACEFS: &str = "tracefs";
const NO_TRACEFS: &str = "none";

struct Case {
    name: &'static str,
    kind: Kind,
    tracing: &'static str,
    /// sslsniff's arguments (after `--status json`), VM shell.
    sniffer: &'static str,
    /// The client, VM shell: `$PAGE` is the case's page, `$REQUEST` an HTTP/1.0 GET of it.
    client: &'static str,
    check: fn(&Run),
}

const fn case(
    name: &'static str,
    kind: Kind,
    tracing: &'static str,
    sniffer: &'static str,
    client: &'static str,
    check: fn(&Run),
) -> Case {
    Case {
        name,
        kind,
        tracing,
        sniffer,
        client,
        check,
    }
}

const CURL: &str = "curl -sk https://127.0.0.1:4433/$PAGE";
// Its first TLS call at once, as in tests/follow.rs: held until attached.
const STATIC: &str = "openssl-static 4433 \"$REQUEST\"";

// Clients talk to s_server (4433) unless they say otherwise.
#[rustfmt::skip]
const CASES: &[Case] = &[
    case("curl", After, TRACEFS, "", CURL, curl_both_ways),
    case("gnutls", After, TRACEFS, "", "gnutls-cli --insecure -p 4433 127.0.0.1 </srv/$PAGE.req", http10_both_ways),
    case("python", After, TRACEFS, "--format json", "python3 /srv/$PAGE.py", python_ex_calls),
    // asyncio feeds OpenSSL through memory BIOs: its calls are tied to their socket.
    case("asyncio", After, TRACEFS, "--format json", "python3 /srv/$PAGE.asyncio.py", json_addresses_of_python),
    case("go", After, TRACEFS, "", "go-client client https://127.0.0.1:4433/$PAGE", go_both_ways),
    // A static program that starts after sslsniff: found by following.
    case("follow", After, TRACEFS, "", STATIC, held_both_ways),
    case("follow-no-tracefs", After, NO_TRACEFS, "", STATIC, without_tracefs),
    case("json-conn", After, TRACEFS, "--format json --conn -c curl", CURL, json_addresses),
    case("pcap", After, TRACEFS, "-c curl --pcap $OUT/capture.pcapng", "curl -sk https://127.0.0.1:4443/$PAGE", pcap_ports),
    case("handshake", After, TRACEFS, "-l --handshake -c curl", CURL, handshake_latency),
    case("pid", Before, TRACEFS, "-p $CLIENT", "python3 /srv/$PAGE.py", pid_only),
    // libbpf's log (-d): where the kernel refuses a program, the verifier's verdict.
    case("load-log", After, TRACEFS, "-d -c none", "true", |_| {}),
    case("check-kernel", Alone, TRACEFS, "", "sslsniff --check-kernel --status json", check_kernel),
];

/// The servers the cases talk to, started in /srv of the VM: PORT and command.
/// `s_server -WWW` is never seen server side (it goes through OpenSSL's SSL BIO, not
/// SSL_read/SSL_write): the cases assert what the client side did.
const SERVERS: &[(u16, &str)] = &[
    (
        S_SERVER_PORT,
        "openssl s_server -WWW -quiet -cert cert.pem -key key.pem -accept 127.0.0.1:4433",
    ),
    (PYTHON_SERVER_PORT, "python3 https_server.py"),
];
const S_SERVER_PORT: u16 = 4433;
const PYTHON_SERVER_PORT: u16 = 4443;

/// Every boot under its own limit; a run takes 1 to 3 minutes under TCG.
const BOOT_LIMIT: Duration = Duration::from_secs(600);

/// One case's page: the path the client asks for and the body it gets, unique to the
/// run; and a decoy's, which must never be seen.
struct Page {
    path: String,
    body: String,
    decoy: String,
}

impl Page {
    fn new(case: &Case) -> Page {
        Page {
            path: marker(case.name),
            body: marker(&format!("{}-body", case.name)),
            decoy: marker(&format!("{}-decoy", case.name)),
        }
    }
}

fn matrix(kernel: Kernel) {
    let test = format!("kernel {} ({})", kernel.series, kernel.suite);
    if !root_or_skip(&test) {
        return;
    }
    let started = Instant::now();
    let fetched = kernel::fetch(&kernel);
    let fetch_time = started.elapsed();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("kernels")
        .join(kernel.series);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let work = Workdir::new();
    let pages: Vec<Page> = CASES.iter().map(Page::new).collect();
    let built = Instant::now();
    let initrd = dir.join("initrd.cpio");
    let size = initramfs(&work, &pages).write(&initrd);
    eprintln!(
        "{test}: {} {} (resolved in {fetch_time:.1?}), initramfs {:.1} MB in {:.1?}, qemu accel={}; outputs in {}",
        fetched.package,
        fetched.version,
        size as f64 / 1e6,
        built.elapsed(),
        vm::accel(),
        dir.display()
    );
    let boot = vm::boot(&fetched.vmlinuz, &initrd, &dir, BOOT_LIMIT);
    let (failed, mut failures) = check_all(&boot, &pages);
    eprintln!(
        "{test}: the VM ran for {:.1?}; {:.1?} in all",
        boot.took,
        started.elapsed()
    );
    if !boot.finished {
        failures.insert(
            0,
            format!(
                "the VM did not finish within {BOOT_LIMIT:?} (qemu: {}); the console ends:\n{}",
                boot.qemu_stderr.trim(),
                boot.console_tail()
            ),
        );
    }
    assert!(
        failures.is_empty(),
        "{test}, {} {}: {} of {} cases failed:\n\n{}",
        fetched.package,
        fetched.version,
        failed,
        CASES.len(),
        failures.join("\n\n")
    );
}

/// The root file system of a run: sslsniff and the clients with their libraries, the
/// servers, the pages, the cases.
fn initramfs(work: &Workdir, pages: &[Page]) -> Initramfs {
    let mut fs = Initramfs::new();
    fs.install(Path::new(SNIFFER), "/usr/bin/sslsniff");
    for program in [
        "/usr/bin/curl",
        "/usr/bin/openssl",
        "/usr/bin/gnutls-cli",
        "/usr/sbin/bpftool",
    ] {
        fs.program(Path::new(program));
    }
    // encodings.idna: what getaddrinfo() loads on first use.
    let modules = [
        "asyncio",
        "encodings.idna",
        "http.server",
        "socket",
        "ssl",
        "threading",
    ];
    fs.python(&modules);
    fs.tree(Path::new("/etc/ssl"));
    let go = build_go(work, "go-client", &[], &[("CGO_ENABLED", "0")]);
    fs.install(&go, "/usr/bin/go-client");
    let static_client = build_static_client(work, "openssl-static");
    fs.install(&static_client, "/usr/bin/openssl-static");
    fs.file("/init", vm::INIT.as_bytes(), 0o755);
    servers(&mut fs, work);
    cases(&mut fs, pages);
    fs
}

/// /servers, and what they need in /srv: the certificate and python's script.
fn servers(fs: &mut Initramfs, work: &Workdir) {
    for name in ["cert.pem", "key.pem"] {
        let pem = fs::read(work.path().join(name)).unwrap();
        fs.file(&format!("/srv/{name}"), &pem, 0o644);
    }
    let script = https_server_script(PYTHON_SERVER_PORT);
    fs.file("/srv/https_server.py", script.as_bytes(), 0o644);
    let list: String = SERVERS.iter().map(|(p, c)| format!("{p}|{c}\n")).collect();
    fs.file("/servers", list.as_bytes(), 0o644);
}

/// /cases, and each case's pages in /srv.
fn cases(fs: &mut Initramfs, pages: &[Page]) {
    let mut list = String::new();
    for (case, page) in CASES.iter().zip(pages) {
        let gated = case.kind == Before;
        serve(fs, &page.path, &page.body, gated);
        serve(fs, &page.decoy, &page.decoy, gated);
        let kind = match case.kind {
            After => "after",
            Before => "before",
            Alone => "alone",
        };
        list.push_str(&format!(
            "{}|{kind}|{}|{}|{}|{}|{}\n",
            case.name, case.tracing, page.path, page.decoy, case.sniffer, case.client
        ));
    }
    fs.file("/cases", list.as_bytes(), 0o644);
}

/// A page in /srv: its body, the HTTP/1.0 request for it (PAGE.req) and a python3
/// client that sends that request to s_server (PAGE.py; `gated`: it waits for a line
/// on stdin first).
fn serve(fs: &mut Initramfs, path: &str, body: &str, gated: bool) {
    fs.file(&format!("/srv/{path}"), body.as_bytes(), 0o644);
    fs.file(&format!("/srv/{path}.req"), http10(path).as_bytes(), 0o644);
    let python = python_client(S_SERVER_PORT, &http_get(path), gated);
    let script = python.get_args().nth(1).unwrap().to_str().unwrap();
    fs.file(&format!("/srv/{path}.py"), script.as_bytes(), 0o644);
    let script = asyncio_client(S_SERVER_PORT, &http_get(path));
    fs.file(&format!("/srv/{path}.asyncio.py"), script.as_bytes(), 0o644);
}

/// A python3 client over asyncio (`asyncio.open_connection(ssl=...)`) that sends
/// `payload` (a Python bytes literal) and reads until the server closes.
fn asyncio_client(port: u16, payload: &str) -> String {
    format!(
        "import asyncio, ssl\n\
         async def main():\n\
         \x20   ctx = ssl.create_default_context()\n\
         \x20   ctx.check_hostname = False\n\
         \x20   ctx.verify_mode = ssl.CERT_NONE\n\
         \x20   r, w = await asyncio.open_connection('127.0.0.1', {port}, ssl=ctx)\n\
         \x20   w.write({payload})\n\
         \x20   await r.read()\n\
         \x20   w.close()\n\
         asyncio.run(main())\n"
    )
}

fn http10(path: &str) -> String {
    format!("GET /{path} HTTP/1.0\r\n\r\n")
}

/// What one case left in the VM.
struct Run<'a> {
    case: &'a Case,
    page: &'a Page,
    dir: PathBuf,
    sniffer: Output,
}

impl Run<'_> {
    fn text(&self, file: &str) -> String {
        fs::read_to_string(self.dir.join(file)).unwrap_or_default()
    }

    fn number<T: std::str::FromStr>(&self, file: &str) -> Option<T> {
        self.text(file).trim().parse().ok()
    }

    fn client_pid(&self) -> u32 {
        self.number("client.pid").expect("the client's PID")
    }

    /// A time stamp of the case (seconds since boot), if it was reached.
    fn time(&self, what: &str) -> Option<f64> {
        self.text("times").lines().find_map(|l| {
            let (key, value) = l.split_once(' ')?;
            (key == what).then(|| value.parse().ok()).flatten()
        })
    }

    fn between(&self, from: &str, to: &str) -> Option<f64> {
        Some(self.time(to)? - self.time(from)?)
    }

    fn rows(&self) -> Vec<Row> {
        rows(&self.sniffer.stdout)
    }

    fn context(&self) -> String {
        let client = format!(
            "client stdout:\n{}\nclient stderr:\n{}",
            self.text("client.out"),
            self.text("client.err")
        );
        if self.case.kind == Alone {
            return client;
        }
        format!(
            "sslsniff stdout:\n{}\nsslsniff stderr:\n{}\n{client}",
            self.sniffer.stdout, self.sniffer.stderr
        )
    }
}

/// Checks every case and prints a line of times for each; returns how many failed and
/// why, the cases that failed alike under one message.
fn check_all(boot: &vm::Boot, pages: &[Page]) -> (usize, Vec<String>) {
    print_info(boot);
    eprintln!("case               result  ready(s)  exit(ms)  released(s)");
    let mut failed = 0;
    let mut reasons: Vec<(Vec<&str>, String)> = Vec::new();
    // Every failure is in the final message: no panic message for each on the way.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    for (case, page) in CASES.iter().zip(pages) {
        let Err(reason) = check_one(boot, case, page) else {
            continue;
        };
        failed += 1;
        match reasons.iter_mut().find(|(_, r)| *r == reason) {
            Some((names, _)) => names.push(case.name),
            None => reasons.push((vec![case.name], reason)),
        }
    }
    std::panic::set_hook(hook);
    let reasons = reasons
        .into_iter()
        .map(|(names, reason)| format!("{}: {reason}", names.join(", ")))
        .collect();
    (failed, reasons)
}

fn print_info(boot: &vm::Boot) {
    let Some(info) = boot.block("info") else {
        return;
    };
    let read = |f: &str| fs::read_to_string(info.join(f)).unwrap_or_default();
    eprintln!(
        "kernel {}: /init at {} s (uptime); BTF: {}; tracefs in /proc/filesystems: {}",
        read("uname").trim(),
        read("times").trim().trim_start_matches("init "),
        read("btf").trim(),
        read("filesystems").contains("tracefs"),
    );
}

fn check_one(boot: &vm::Boot, case: &Case, page: &Page) -> Result<(), String> {
    let Some(dir) = boot.block(case.name) else {
        eprintln!("{:<18} missing", case.name);
        return Err("not reported (the VM stopped first)".into());
    };
    let run = load(case, page, dir);
    let checked = catch_unwind(AssertUnwindSafe(|| {
        check_common(&run);
        (case.check)(&run)
    }));
    let seconds = |from, to| run.between(from, to).map(|s| format!("{s:.2}"));
    let ms = |from, to| run.between(from, to).map(|s| format!("{:.0}", s * 1e3));
    eprintln!(
        "{:<18} {:<7} {:>8}  {:>8}  {:>11}",
        case.name,
        if checked.is_ok() { "ok" } else { "FAILED" },
        seconds("start", "ready").unwrap_or("-".into()),
        ms("sigint", "exit").unwrap_or("-".into()),
        seconds("exit", "released").unwrap_or("-".into()),
    );
    checked.map_err(|panic| panic_text(&panic))
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panicked".into())
}

fn load<'a>(case: &'a Case, page: &'a Page, dir: PathBuf) -> Run<'a> {
    let stdout_bytes = fs::read(dir.join("sniff.out")).unwrap_or_default();
    let rc: i32 = fs::read_to_string(dir.join("sniff.rc"))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(-1);
    let sniffer = Output {
        stdout: String::from_utf8_lossy(&stdout_bytes).into_owned(),
        stdout_bytes,
        stderr: fs::read_to_string(dir.join("sniff.err")).unwrap_or_default(),
        // The shell's exit code (128 + N for a signal), as a wait status.
        status: std::process::ExitStatus::from_raw((rc & 0xff) << 8),
    };
    Run {
        case,
        page,
        dir,
        sniffer,
    }
}

/// What holds for every case: sslsniff became ready, the clients succeeded, sslsniff
/// exited within a second of Ctrl-C, and once its release was done nothing of it was
/// left in the kernel.
fn check_common(run: &Run) {
    if run.case.kind != Alone {
        assert!(
            run.time("ready").is_some(),
            "sslsniff did not become ready (exit code {}):\n{}",
            run.text("sniff.rc").trim(),
            start_failure(&run.sniffer.stderr)
        );
    }
    assert_eq!(
        run.number::<i32>("client.rc"),
        Some(0),
        "the client failed:\n{}",
        run.context()
    );
    if run.case.kind == Before {
        assert_eq!(run.number::<i32>("decoy.rc"), Some(0), "the decoy failed");
    }
    if run.case.kind != Alone {
        let exit = run.between("sigint", "exit").expect("sslsniff's exit");
        assert!(exit < 1.0, "sslsniff took {exit:.2} s to exit after Ctrl-C");
        assert!(
            run.sniffer.status.success(),
            "sslsniff failed ({}):\n{}",
            run.sniffer.status,
            run.sniffer.stderr
        );
        assert!(
            run.time("released").is_some(),
            "sslsniff's probes were still being released a minute after it exited"
        );
    }
    if run.case.kind != Alone {
        let loaded = bpf_ids(run, "progs.running");
        assert!(
            loaded.difference(&bpf_ids(run, "progs.before")).count() > 0,
            "bpftool saw no program of sslsniff while it ran:\n{}",
            run.text("progs.running")
        );
    }
    for what in ["progs", "links"] {
        let left = bpf_ids(run, &format!("{what}.after"));
        let before = bpf_ids(run, &format!("{what}.before"));
        let new: Vec<_> = left.difference(&before).collect();
        assert!(
            new.is_empty(),
            "BPF {what} left in the kernel after sslsniff exited: ids {new:?}:\n{}",
            run.text(&format!("{what}.after"))
        );
    }
}

/// What sslsniff said on stderr, and of libbpf's log (`-d`) only what failed: for a
/// program the verifier refused, the last lines of its verdict.
fn start_failure(stderr: &str) -> String {
    let mut shown = Vec::new();
    let mut verdict: Option<Vec<&str>> = None;
    for line in stderr.lines() {
        if line.contains("-- BEGIN PROG LOAD LOG --") {
            verdict = Some(Vec::new());
        } else if line.contains("-- END PROG LOAD LOG --") {
            let log = verdict.take().unwrap_or_default();
            shown.extend_from_slice(&log[log.len().saturating_sub(3)..]);
        } else if let Some(log) = verdict.as_mut() {
            log.push(line);
        } else if !line.starts_with("libbpf: ")
            || (line.contains("fail") && !line.contains("optional"))
        {
            shown.push(line);
        }
    }
    shown.join("\n")
}

/// The ids in a `bpftool -j prog|link show` listing.
fn bpf_ids(run: &Run, file: &str) -> BTreeSet<u64> {
    let text = run.text(file);
    let list: Vec<Value> = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("bpftool's {file} is not a JSON list ({e}):\n{text}"));
    list.iter().filter_map(|p| p["id"].as_u64()).collect()
}

/// The request written once, exactly, and the body read once, both by the client.
fn both_ways<'a>(run: &Run, rows: &'a [Row], request: &str) -> (&'a Row, &'a Row) {
    let line = request.lines().next().unwrap();
    let (write, read) =
        assert_both_directions(&run.sniffer, rows, run.client_pid(), line, &run.page.body);
    assert_eq!(
        write.data,
        request,
        "not the exact request:\n{}",
        run.context()
    );
    (write, read)
}

fn curl_request(run: &Run, port: u16) -> String {
    let version = Command::new("curl")
        .arg("--version")
        .output()
        .unwrap()
        .stdout;
    let version = String::from_utf8_lossy(&version);
    let version = version.split_whitespace().nth(1).unwrap();
    format!(
        "GET /{} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: curl/{version}\r\nAccept: */*\r\n\r\n",
        run.page.path
    )
}

fn curl_both_ways(run: &Run) {
    let rows = run.rows();
    both_ways(run, &rows, &curl_request(run, S_SERVER_PORT));
}

fn http10_both_ways(run: &Run) {
    let rows = run.rows();
    both_ways(run, &rows, &http10(&run.page.path));
}

/// A program started after sslsniff, captured because it was held until attached.
fn held_both_ways(run: &Run) {
    assert!(run.sniffer.held("openssl-static"), "{}", run.context());
    http10_both_ways(run);
}

fn without_tracefs(run: &Run) {
    let mounts = run.text("mounts");
    assert!(
        !mounts.contains("tracefs") && !mounts.contains("debugfs"),
        "tracefs was mounted:\n{mounts}"
    );
    held_both_ways(run);
}

fn go_both_ways(run: &Run) {
    let request = format!(
        "GET /{} HTTP/1.1\r\nHost: 127.0.0.1:{S_SERVER_PORT}\r\nUser-Agent: Go-http-client/1.1\r\nAccept-Encoding: gzip\r\n\r\n",
        run.page.path
    );
    let rows = run.rows();
    both_ways(run, &rows, &request);
}

/// The JSON event whose data is `request` exactly, and the one that carries the body:
/// each once, both from the client.
fn json_both_ways(run: &Run, request: &str) -> (Value, Value) {
    let events = json_events(&run.sniffer.stdout);
    let data = |e: &&Value| e["data"].as_str().unwrap_or("").to_string();
    let writes: Vec<_> = events.iter().filter(|e| data(e) == request).collect();
    let reads: Vec<_> = events
        .iter()
        .filter(|e| data(e).contains(&run.page.body))
        .collect();
    assert_eq!(
        writes.len(),
        1,
        "request not captured once:\n{}",
        run.context()
    );
    assert_eq!(reads.len(), 1, "body not captured once:\n{}", run.context());
    for (event, direction) in [(writes[0], "write"), (reads[0], "read")] {
        assert_eq!(event["pid"], run.client_pid(), "{event}");
        assert_eq!(event["direction"], direction, "{event}");
    }
    (writes[0].clone(), reads[0].clone())
}

fn python_ex_calls(run: &Run) {
    let (write, read) = json_both_ways(run, &http10(&run.page.path));
    assert_eq!(write["func"], "SSL_write_ex", "{write}");
    assert_eq!(read["func"], "SSL_read_ex", "{read}");
}

fn json_addresses(run: &Run) {
    let (write, read) = json_both_ways(run, &curl_request(run, S_SERVER_PORT));
    same_connection(&write, &read);
}

fn json_addresses_of_python(run: &Run) {
    let (write, read) = json_both_ways(run, &http10(&run.page.path));
    same_connection(&write, &read);
}

/// Both calls on the client's connection to s_server, with its fd.
fn same_connection(write: &Value, read: &Value) {
    for event in [write, read] {
        assert_eq!(
            event["raddr"],
            format!("127.0.0.1:{S_SERVER_PORT}"),
            "{event}"
        );
        assert!(event["fd"].as_i64().is_some_and(|fd| fd >= 0), "{event}");
    }
    let laddr = write["laddr"].as_str().unwrap_or("");
    assert!(
        laddr.starts_with("127.0.0.1:") && laddr != format!("127.0.0.1:{S_SERVER_PORT}"),
        "{write}"
    );
    assert_eq!(read["laddr"], write["laddr"], "{read}");
}

/// The pcapng, read back by the host's tshark: the request to the server's address
/// and port, the answer and the body from it, on the same connection.
fn pcap_ports(run: &Run) {
    let pcap = run.dir.join("capture.pcapng");
    assert!(pcap.exists(), "no pcap written:\n{}", run.context());
    let mut tshark = Command::new("tshark");
    tshark
        .arg("-r")
        .arg(&pcap)
        .args(["-Y", "http", "-T", "fields"]);
    // sslsniff writes each call as an exported PDU that carries the connection.
    for field in [
        "exported_pdu.ipv4_src",
        "exported_pdu.src_port",
        "exported_pdu.ipv4_dst",
        "exported_pdu.dst_port",
        "http.request.uri",
        "http.response.code",
        "http.file_data",
    ] {
        tshark.args(["-e", field]);
    }
    let shown = kernel::run(&mut tshark);
    let rows: Vec<Vec<&str>> = shown.lines().map(|l| l.split('\t').collect()).collect();
    let find = |column: usize, value: &str| {
        let found: Vec<_> = rows
            .iter()
            .filter(|r| r.get(column) == Some(&value))
            .collect();
        assert_eq!(found.len(), 1, "not one packet with {value}:\n{shown}");
        found[0].clone()
    };
    let request = find(4, &format!("/{}", run.page.path));
    let server = ["127.0.0.1", &PYTHON_SERVER_PORT.to_string()];
    assert_eq!(request[2..4], server, "request not to the server:\n{shown}");
    assert_eq!(request[0], "127.0.0.1", "{shown}");
    for answer in [find(5, "200"), find(6, &run.page.body)] {
        assert_eq!(answer[0..2], server, "answer not from the server:\n{shown}");
        assert_eq!(answer[2..4], request[0..2], "not one connection:\n{shown}");
    }
}

fn handshake_latency(run: &Run) {
    let rows = run.rows();
    both_ways(run, &rows, &curl_request(run, S_SERVER_PORT));
    assert!(
        run.sniffer
            .stdout
            .lines()
            .next()
            .unwrap_or("")
            .ends_with("LAT(ms)"),
        "{}",
        run.sniffer.stdout
    );
    let handshakes: Vec<_> = rows
        .iter()
        .filter(|r| r.func == "HANDSHAKE" && r.pid == run.client_pid())
        .collect();
    assert_eq!(
        handshakes.len(),
        1,
        "not one handshake:\n{}",
        run.sniffer.stdout
    );
    assert_eq!(
        handshakes[0].len, "1",
        "SSL_do_handshake returns 1 on success"
    );
    let latency: f64 = handshakes[0].columns[5].parse().unwrap();
    assert!(latency > 0.0, "{}", run.sniffer.stdout);
}

fn pid_only(run: &Run) {
    http10_both_ways(run);
    assert!(
        !run.sniffer.stdout.contains(&run.page.decoy),
        "-p let another process through:\n{}",
        run.sniffer.stdout
    );
}

/// The verifier's test: every program variant this kernel can take (its own mechanisms,
/// each fallback alone, all of them) loads. Printed whether it passes or not: it says
/// what each feature uses on this kernel.
fn check_kernel(run: &Run) {
    let stderr = run.text("client.err");
    eprintln!("sslsniff --check-kernel:\n{stderr}");
    let lines = status_lines(&stderr, "variant");
    let failed: Vec<_> = lines.iter().filter(|v| v["loaded"] != true).collect();
    assert!(failed.is_empty(), "variants the kernel refused: {failed:?}");
    // Where the kernel lacks every feature, its own set is the all-fallback one.
    assert!(
        lines.iter().any(|v| v["name"] == "native"),
        "--check-kernel did not load the kernel's own variant:\n{stderr}"
    );
}
