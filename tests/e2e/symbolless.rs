//! Programs that keep no symbol of their TLS library, traced with no flags: Bun
//! (BoringSSL), Deno and uv (rustls over aws-lc), each today's build from its registry
//! (tests/subjects/fetch.sh), so that a new release tests the method, not a table.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;

/// Today's build of `name` (bun, deno, uv), fetched once and cached.
fn subject(name: &str) -> PathBuf {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/subjects/fetch.sh");
    let out = Command::new(script)
        .arg(name)
        .stderr(Stdio::inherit())
        .output()
        .expect("tests/subjects/fetch.sh runs");
    assert!(out.status.success(), "cannot fetch {name}");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// The rows of one process.
fn of_pid(rows: &[Row], pid: u32) -> Vec<&Row> {
    rows.iter().filter(|r| r.pid == pid).collect()
}

/// A row's payload, exactly: the text output ends a payload that does not end a line
/// with a newline of its own, and LEN is the byte count, so a stray byte (a content
/// type, padding, a handshake record) shows in one or the other.
fn payload(row: &Row) -> &str {
    let n: usize = row.len.parse().unwrap();
    assert_eq!(row.data.len(), n, "LEN {} but {:?}", row.len, row.data);
    &row.data
}

/// A client started before the sniffer and held at a gate (its stdin) until the
/// sniffer, examining the running programs at start, has attached to it.
struct Gated(Proc);

impl Gated {
    fn start(name: &str, cmd: &mut Command) -> Gated {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        Gated(Proc::spawn(name, cmd))
    }

    /// Opens the gate, waits for the client to finish, and returns its stdout.
    fn run(mut self) -> (u32, String) {
        drop(self.0.child.stdin.take());
        let status = self.0.wait_timeout(Duration::from_secs(30));
        assert!(status.success(), "{} failed: {status}", self.0.name);
        let mut out = String::new();
        std::io::Read::read_to_string(self.0.child.stdout.as_mut().unwrap(), &mut out).unwrap();
        (self.0.pid(), out)
    }
}

/// The sniffer, started with no flags, once `client` exists; its tracing line for the
/// client's program must say that the program was found by its code.
fn sniff(client: &Gated, program: &Path) -> Sniffer {
    let sniffer = Sniffer::start(&[]);
    let line = sniffer.wait_for_status("tracing", program);
    assert!(
        line.contains("error reasons"),
        "{line} (pid {})",
        client.0.pid()
    );
    sniffer
}

#[test]
fn bun_fetch_is_captured_over_tls13_and_tls12() {
    if !root_or_skip("bun_fetch_is_captured_over_tls13_and_tls12") {
        return;
    }
    let bun = subject("bun");
    for version in ["-tls1_3", "-tls1_2"] {
        let work = Workdir::new();
        let (_server, port) = server("openssl s_server", &work, |port| {
            let mut cmd = Command::new("openssl");
            cmd.args(["s_server", "-WWW", "-quiet", version])
                .args(["-cert", "cert.pem", "-key", "key.pem"])
                .args(["-accept", &format!("127.0.0.1:{port}")]);
            cmd
        });
        let path = marker("bun");
        let body = marker("bun-body");
        work.file(&path, body.as_bytes());
        let script = format!(
            "await Bun.stdin.text();\n\
             const r = await fetch('https://127.0.0.1:{port}/{path}');\n\
             process.stdout.write(await r.text());\n"
        );
        let client = Gated::start(
            "bun",
            Command::new(&bun)
                .args(["-e", &script])
                .env("NODE_TLS_REJECT_UNAUTHORIZED", "0")
                .env("HOME", work.path()),
        );
        let sniffer = sniff(&client, &bun);
        let (pid, printed) = client.run();
        assert_eq!(printed, body);
        let out = sniffer.stop();
        let rows = rows(&out.stdout);
        let mine = of_pid(&rows, pid);
        let writes: Vec<&str> = mine
            .iter()
            .filter(|r| r.func == "WRITE/SEND")
            .map(|r| payload(r))
            .collect();
        assert_eq!(writes.len(), 1, "{version}: not one write:\n{}", out.stdout);
        assert!(
            writes[0].starts_with(&format!("GET /{path} HTTP/1.1\r\n"))
                && writes[0].ends_with("\r\n\r\n"),
            "{version}: {:?}",
            writes[0]
        );
        let read: String = mine
            .iter()
            .filter(|r| r.func == "READ/RECV")
            .map(|r| payload(r))
            .collect();
        assert_eq!(
            read,
            format!("HTTP/1.0 200 ok\r\nContent-type: text/plain\r\n\r\n{body}"),
            "{version}:\n{}",
            out.stdout
        );
        assert_eq!(
            with_data(&rows, &body)
                .iter()
                .filter(|r| r.pid == pid)
                .count(),
            1
        );
    }
}

/// node's HTTPS server: HTTP/2 (with HTTP/1.1 by ALPN) for "h2", HTTP/1.1 only for "h1",
/// HTTP/1.1 over TLS 1.2 only for "h1-tls12". Every path is answered with a body naming
/// it and the HTTP version used.
const NODE_SERVER: &str = "const fs = require('fs');\n\
     const [mode, port] = [process.argv[1], +process.argv[2]];\n\
     const opts = {key: fs.readFileSync('key.pem'), cert: fs.readFileSync('cert.pem'), allowHTTP1: true,\n\
       maxVersion: mode === 'h1-tls12' ? 'TLSv1.2' : 'TLSv1.3'};\n\
     const serve = (req, res) => { res.setHeader('content-type', 'text/plain');\n\
       res.end('body of ' + req.url + ' over HTTP/' + req.httpVersion); };\n\
     (mode === 'h2' ? require('http2').createSecureServer(opts, serve)\n\
       : require('https').createServer(opts, serve)).listen(port, '127.0.0.1');\n";

#[test]
fn deno_fetch_is_captured_over_http1_and_http2_and_tls12() {
    if !root_or_skip("deno_fetch_is_captured_over_http1_and_http2_and_tls12") {
        return;
    }
    let deno = subject("deno");
    for (mode, version) in [("h1", "1.1"), ("h2", "2.0"), ("h1-tls12", "1.1")] {
        let work = Workdir::new();
        let (_server, port) = server("node https server", &work, |port| {
            let mut cmd = Command::new("node");
            cmd.args(["-e", NODE_SERVER, mode, &port.to_string()]);
            cmd
        });
        let path = marker(&format!("deno-{mode}"));
        let script = format!(
            "await Deno.stdin.read(new Uint8Array(1));\n\
             const r = await fetch('https://127.0.0.1:{port}/{path}');\n\
             await Deno.stdout.write(new TextEncoder().encode(await r.text()));\n"
        );
        let client = Gated::start(
            "deno",
            Command::new(&deno)
                .args([
                    "eval",
                    "--unsafely-ignore-certificate-errors=127.0.0.1",
                    &script,
                ])
                .env("DENO_DIR", work.path().join("deno"))
                .env("HOME", work.path())
                .env("NO_COLOR", "1"),
        );
        let sniffer = sniff(&client, &deno);
        let (pid, printed) = client.run();
        let body = format!("body of /{path} over HTTP/{version}");
        assert_eq!(printed, body);
        let out = sniffer.stop();
        let rows = rows(&out.stdout);
        let mine = of_pid(&rows, pid);
        let request = match mode {
            "h2" => format!(":path: /{path}"),
            _ => format!("GET /{path} HTTP/1.1\r\n"),
        };
        let writes: Vec<&&Row> = mine.iter().filter(|r| r.data.contains(&request)).collect();
        assert_eq!(writes.len(), 1, "{mode}: request not once:\n{}", out.stdout);
        assert_eq!(writes[0].func, "WRITE/SEND");
        let reads: Vec<&&Row> = mine.iter().filter(|r| r.data.contains(&body)).collect();
        assert_eq!(reads.len(), 1, "{mode}: response not once:\n{}", out.stdout);
        assert_eq!(reads[0].func, "READ/RECV");
        if mode != "h2" {
            let writes: Vec<&str> = mine
                .iter()
                .filter(|r| r.func == "WRITE/SEND")
                .map(|r| payload(r))
                .collect();
            assert_eq!(writes.len(), 1, "{}", out.stdout);
            assert!(writes[0].starts_with(&request) && writes[0].ends_with("\r\n\r\n"));
            let read: String = mine
                .iter()
                .filter(|r| r.func == "READ/RECV")
                .map(|r| payload(r))
                .collect();
            assert!(
                read.starts_with("HTTP/1.1 200 OK\r\n")
                    && read.ends_with(&format!("\r\n\r\n{body}")),
                "{read:?}"
            );
        }
    }
}

/// Writes a wheel of package `name` (version 0.1, one module) and a simple-index page
/// for it (PEP 503) that carries `mark`, into the work directory.
const MAKE_INDEX: &str = "import hashlib, os, sys, zipfile\n\
     name, mark = sys.argv[1], sys.argv[2]\n\
     dist = name.replace('-', '_')\n\
     wheel = f'{dist}-0.1-py3-none-any.whl'\n\
     os.makedirs('files', exist_ok=True)\n\
     info = f'{dist}-0.1.dist-info'\n\
     members = {f'{dist}.py': 'VALUE = 1\\n',\n\
       f'{info}/METADATA': f'Metadata-Version: 2.1\\nName: {name}\\nVersion: 0.1\\n',\n\
       f'{info}/WHEEL': 'Wheel-Version: 1.0\\nGenerator: sslsniff-test\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n'}\n\
     with zipfile.ZipFile(f'files/{wheel}', 'w') as z:\n\
     \x20   for path, text in members.items(): z.writestr(path, text)\n\
     \x20   z.writestr(f'{info}/RECORD', ''.join(f'{p},,\\n' for p in members) + f'{info}/RECORD,,\\n')\n\
     digest = hashlib.sha256(open(f'files/{wheel}', 'rb').read()).hexdigest()\n\
     os.makedirs(f'simple/{name}', exist_ok=True)\n\
     open(f'simple/{name}/index.html', 'w').write(\n\
     \x20   f'<!DOCTYPE html><html><body><!-- {mark} -->'\n\
     \x20   f'<a href=\"/files/{wheel}#sha256={digest}\">{wheel}</a></body></html>\\n')\n";

#[test]
fn uv_pip_install_is_captured() {
    if !root_or_skip("uv_pip_install_is_captured") {
        return;
    }
    let uv = subject("uv");
    let work = Workdir::new();
    let name = marker("uv").to_lowercase();
    let mark = marker("uv-index");
    let made = Command::new("python3")
        .args(["-c", MAKE_INDEX, &name, &mark])
        .current_dir(work.path())
        .status()
        .expect("python3 runs");
    assert!(made.success(), "cannot make the index");
    let (server, port) = python_https_server(&work);
    // `uv pip install` runs for a moment only: a uv that waits (for the python it runs)
    // has the file examined and attached when the sniffer starts, and the install that
    // follows is traced from its first instruction.
    let waiting = Gated::start(
        "uv run",
        Command::new(&uv)
            .args(["run", "--no-project", "--python", "python3", "--"])
            .args(["python3", "-c", "import sys; sys.stdin.read()"])
            .env("HOME", work.path()),
    );
    let sniffer = sniff(&waiting, &uv);
    waiting.run();
    let target = work.path().join("installed");
    let client = run_client(
        "uv pip install",
        Command::new(&uv)
            .args(["pip", "install", "--no-cache", "--python", "python3"])
            .arg("--target")
            .arg(&target)
            .args(["--allow-insecure-host", "127.0.0.1", "--index-url"])
            .arg(format!("https://127.0.0.1:{port}/simple/"))
            .arg(&name)
            .env("HOME", work.path())
            .stdout(Stdio::null()),
    );
    let pid = client.pid();
    let out = sniffer.stop();
    assert!(target
        .join(format!("{}.py", name.replace('-', "_")))
        .exists());
    let rows = rows(&out.stdout);
    let mine = of_pid(&rows, pid);
    let with = |rows: &[&Row], needle: &str, func: &str| -> usize {
        rows.iter()
            .filter(|r| r.func == func && r.data.contains(needle))
            .count()
    };
    let index = format!("GET /simple/{name}/ HTTP/1.1\r\n");
    assert_eq!(with(&mine, &index, "WRITE/SEND"), 1, "{}", out.stdout);
    assert_eq!(with(&mine, &mark, "READ/RECV"), 1, "{}", out.stdout);
    // uv asks for the wheel more than once (a HEAD, then whole downloads): each request
    // it writes is one the server reads, no more, no fewer.
    let served = of_pid(&rows, server.pid());
    for method in ["HEAD", "GET"] {
        let wheel = format!(
            "{method} /files/{}-0.1-py3-none-any.whl",
            name.replace('-', "_")
        );
        let written = with(&mine, &wheel, "WRITE/SEND");
        assert!(written > 0, "{wheel} not written:\n{}", out.stdout);
        assert_eq!(
            written,
            with(&served, &wheel, "READ/RECV"),
            "{}",
            out.stdout
        );
    }
    for r in mine.iter().filter(|r| r.func == "WRITE/SEND") {
        let data = payload(r);
        assert!(
            data.ends_with("\r\n\r\n"),
            "not one whole request: {data:?}"
        );
    }
}

#[test]
fn imitations_get_nothing_attached_and_a_notice() {
    if !root_or_skip("imitations_get_nothing_attached_and_a_notice") {
        return;
    }
    let work = Workdir::new();
    let cases = [
        ("TWO_MATCHES", "BoringSSL: 2 functions match SSL_write ("),
        ("INSIDE", "BoringSSL: no function matches SSL_write"),
    ];
    for (define, why) in cases {
        let exe = build_fixture(&work, "fake_boringssl.S", define, &[&format!("-D{define}")]);
        let client = Gated::start(define, &mut Command::new(&exe));
        let sniffer = Sniffer::start(&[]);
        let shown = exe.display().to_string();
        let notice = sniffer.wait_for_status("notice", &exe);
        assert!(
            notice.contains(&format!("not traced: {shown} [pid {}]", client.0.pid()))
                && notice.contains("not recognised, so nothing is attached")
                && notice.contains(why),
            "{notice}"
        );
        client.run();
        let out = sniffer.stop();
        assert!(!out.traced(&shown, "openssl"), "{}", out.stderr);
    }
}

#[test]
fn a_stripped_program_is_traced_through_its_debug_symbols() {
    if !root_or_skip("a_stripped_program_is_traced_through_its_debug_symbols") {
        return;
    }
    let work = Workdir::new();
    let exe = build_static_client(&work, "stripped_client");
    let debug = work.path().join("stripped_client.debug");
    for args in [&["--only-keep-debug"][..], &["--strip-all"][..]] {
        let mut cmd = Command::new("objcopy");
        cmd.args(args).arg(&exe);
        if args[0] == "--only-keep-debug" {
            cmd.arg(&debug);
        }
        assert!(cmd.status().expect("objcopy runs").success());
    }
    let (_server, port) = https_server(&work);
    let (request, body) = page(&work, "debug-symbols");
    let mut client = Proc::spawn(
        "stripped client",
        Command::new(&exe)
            .arg(port.to_string())
            .arg(&request)
            .env("SSLSNIFF_GATE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::null()),
    );
    let sniffer = Sniffer::start(&["--symbols", debug.to_str().unwrap()]);
    let line = sniffer.wait_for_status("tracing", &exe);
    assert!(
        line.contains("stripped_client.debug (same build-id)"),
        "{line}"
    );
    drop(client.child.stdin.take());
    assert!(client.wait_timeout(Duration::from_secs(20)).success());
    let out = sniffer.stop();
    assert_both_directions(&out, &rows(&out.stdout), client.pid(), &request, &body);

    // A file that names no build can match no program.
    let text = work.file("not-elf", b"no build here");
    let refused = Command::new(SNIFFER)
        .arg("--symbols")
        .arg(&text)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains(&format!(
            "--symbols {}: not an ELF file with a build-id",
            text.display()
        )),
        "{stderr}"
    );
}
