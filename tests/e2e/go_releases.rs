//! Go releases beyond the installed one: clients built by Debian's Go 1.21 to 1.24 (fetched
//! by `tests/fixtures/go/fetch.sh`, never installed), and Go 1.26 programs as the npm
//! registry ships them, each captured with its exact plaintext and its socket, with no
//! flag beyond `--format json`.

#[path = "../support/go_fetch.rs"]
mod go_fetch;

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use go_fetch::{fetch, FIXTURES};
use serde_json::Value;

/// `tests/fixtures/go/https.go` built by `go`, into the work directory.
fn build(go: &Path, work: &Workdir, name: &str, flags: &[&str]) -> PathBuf {
    let exe = work.path().join(name);
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("go-cache");
    let out = Command::new(go)
        .arg("build")
        .args(flags)
        .arg("-o")
        .arg(&exe)
        .arg(format!("{FIXTURES}/https.go"))
        .env("GOCACHE", &cache)
        .env("GOPATH", cache.join("path"))
        .env("GOFLAGS", "")
        .env("GOTOOLCHAIN", "local")
        .env("HOME", work.path())
        .env_remove("GOROOT")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", go.display()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{name}: go build failed: {stderr}");
    exe
}

/// The events of one process, in the order they happened.
fn events_of(out: &Output, pid: u32) -> Vec<Value> {
    let mut events: Vec<Value> = json_events(&out.stdout)
        .into_iter()
        .filter(|e| e["pid"] == pid && e["direction"] != "handshake")
        .collect();
    events.sort_by_key(|e| e["ts_ns"].as_u64());
    events
}

fn text(event: &Value) -> &str {
    event["data"].as_str().unwrap_or("")
}

fn wait_for_port(port: u16) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "port {port} never opened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The fixture serving HTTPS on 127.0.0.1, and its address.
fn go_server(exe: &Path) -> (Proc, String) {
    let mut server = Proc::spawn(
        "go server",
        Command::new(exe)
            .args(["server", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped()),
    );
    let stdout = server.child.stdout.take().unwrap();
    let mut addr = String::new();
    BufReader::new(stdout).read_line(&mut addr).unwrap();
    (server, addr.trim().to_string())
}

/// The one event of `events` in `direction` whose data `matches`.
fn exactly<'a>(
    events: &'a [Value],
    direction: &str,
    matches: impl Fn(&str) -> bool,
    out: &Output,
) -> &'a Value {
    let found: Vec<&Value> = events
        .iter()
        .filter(|e| e["direction"] == direction && matches(text(e)))
        .collect();
    assert_eq!(found.len(), 1, "not one such {direction}:\n{}", out.stdout);
    found[0]
}

/// Each build serves and fetches one page; the server runs before sslsniff starts, so the
/// file is traced from the client's first instruction on. Both sides are the release
/// under test, and both name the connection's two ends.
#[test]
fn go_clients_of_debian_releases_are_captured_with_their_socket() {
    if !root_or_skip("go_clients_of_debian_releases_are_captured_with_their_socket") {
        return;
    }
    let work = Workdir::new();
    let mut builds = Vec::new();
    for minor in 21..=24 {
        let go = fetch(&["toolchain", &format!("1.{minor}")]).join("bin/go");
        builds.push(build(&go, &work, &format!("go1.{minor}"), &[]));
        if minor == 24 {
            let flags = ["-buildmode=pie", "-ldflags=-s -w"];
            builds.push(build(&go, &work, "go1.24-pie-stripped", &flags));
        }
    }
    for exe in builds {
        let name = exe.file_name().unwrap().to_str().unwrap().to_string();
        let (server, addr) = go_server(&exe);
        let sniffer = Sniffer::start(&["--format", "json"]);
        let path = marker(&name);
        let client = run_client(
            &name,
            Command::new(&exe)
                .args(["client", &format!("https://{addr}/{path}")])
                .stdout(Stdio::null()),
        );
        let out = sniffer.stop();
        let request = format!(
            "GET /{path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: Go-http-client/1.1\r\nAccept-Encoding: gzip\r\n\r\n"
        );
        let (c, s) = (events_of(&out, client.pid()), events_of(&out, server.pid()));
        let sent = exactly(&c, "write", |d| d == request, &out);
        let received = exactly(&s, "read", |d| d == request, &out);
        // Go writes the answer's head and body in one call.
        let answer = format!("hello from go /{path}\n");
        let whole = |d: &str| d.starts_with("HTTP/1.1 200 OK\r\n") && d.ends_with(&answer);
        let answered = exactly(&s, "write", whole, &out);
        let got = exactly(&c, "read", |d| d.contains(&answer), &out);
        let local = sent["laddr"]
            .as_str()
            .expect("the client's address is known");
        assert_eq!(sent["raddr"], addr.as_str(), "{name}: {sent}");
        assert_eq!(
            (&got["laddr"], &got["raddr"]),
            (&sent["laddr"], &sent["raddr"]),
            "{name}"
        );
        for event in [received, answered] {
            assert_eq!(event["laddr"], addr.as_str(), "{name}: {event}");
            assert_eq!(event["raddr"], local, "{name}: {event}");
        }
        assert!(out.traced(&name, "go"), "{}", out.stderr);
    }
}

/// esbuild serving `dir` over HTTPS with the work directory's certificate, while its
/// standard input stays open; returns when it accepts connections.
fn esbuild_serve(esbuild: &Path, work: &Workdir, dir: &Path) -> (Proc, u16) {
    let port = free_port();
    let server = Proc::spawn(
        "esbuild",
        Command::new(esbuild)
            .arg(format!("--serve=127.0.0.1:{port}"))
            .arg(format!("--servedir={}", dir.display()))
            .args(["--certfile=cert.pem", "--keyfile=key.pem"])
            .current_dir(work.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_for_port(port);
    (server, port)
}

/// esbuild 0.28.2 from npm, Go 1.26.5, stripped and without build information, serving
/// HTTPS to curl: its reads and writes carry the served socket.
#[test]
fn a_go_1_26_server_from_npm_is_captured_with_its_socket() {
    if !root_or_skip("a_go_1_26_server_from_npm_is_captured_with_its_socket") {
        return;
    }
    let esbuild = fetch(&["npm", "@esbuild/linux-x64", "0.28.2"]).join("bin/esbuild");
    let work = Workdir::new();
    let www = work.path().join("www");
    std::fs::create_dir(&www).unwrap();
    let path = marker("esbuild");
    let body = marker("esbuild-body");
    std::fs::write(www.join(&path), &body).unwrap();
    // It runs before sslsniff starts, so that its file is traced before the first request.
    let (server, port) = esbuild_serve(&esbuild, &work, &www);
    let sniffer = Sniffer::start(&["--format", "json"]);
    let mut get = curl(port, &path);
    let client = run_client("curl", get.arg("--http1.1"));
    let out = sniffer.stop();
    let events = events_of(&out, server.pid());
    let request = events
        .iter()
        .find(|e| {
            e["direction"] == "read" && text(e).starts_with(&format!("GET /{path} HTTP/1.1\r\n"))
        })
        .unwrap_or_else(|| panic!("esbuild's request not captured:\n{}", out.stdout));
    let answer = events
        .iter()
        .find(|e| e["direction"] == "write" && text(e).contains(&body))
        .unwrap_or_else(|| panic!("esbuild's answer not captured:\n{}", out.stdout));
    let curl_side = events_of(&out, client.pid());
    let curl_addr = curl_side
        .iter()
        .find_map(|e| e["laddr"].as_str())
        .expect("curl's socket is known");
    for event in [request, answer] {
        assert_eq!(event["laddr"], format!("127.0.0.1:{port}"), "{event}");
        assert_eq!(event["raddr"], curl_addr, "{event}");
    }
    assert!(out.traced("esbuild", "go"), "{}", out.stderr);
}

/// buf 1.70.0 from npm, Go 1.26.3, stripped, as a client: `buf curl` posting a
/// message to the Go fixture, which echoes it.
#[test]
fn a_go_1_26_client_from_npm_is_captured_with_its_socket() {
    if !root_or_skip("a_go_1_26_client_from_npm_is_captured_with_its_socket") {
        return;
    }
    let buf = fetch(&["npm", "@bufbuild/buf-linux-x64", "1.70.0"]).join("bin/buf");
    let work = Workdir::new();
    let echo = build(Path::new("go"), &work, "go-echo", &[]);
    let (_server, addr) = go_server(&echo);
    std::fs::create_dir(work.path().join("proto")).unwrap();
    work.file(
        "proto/echo.proto",
        b"syntax = \"proto3\";\npackage sslsniff.v1;\nmessage Ping { string text = 1; }\n\
          service Echo { rpc Say(Ping) returns (Ping); }\n",
    );
    let text_field = marker("buf");
    // A first buf waits on a listener that never answers, so that its file is traced
    // before sslsniff is ready: the second one is seen from its first instruction.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let holder = Proc::spawn(
        "buf curl (waiting)",
        &mut buf_curl(&buf, &work, "{}", &format!("{silent_addr}")),
    );
    let _unanswered = wait_for_connection(&silent);
    let sniffer = Sniffer::start(&["--format", "json"]);
    // The echo is sent back as octet-stream, which buf refuses: only the traffic counts.
    let data = format!("{{\"text\":\"{text_field}\"}}");
    let mut client = Proc::spawn("buf curl", &mut buf_curl(&buf, &work, &data, &addr));
    client.wait_timeout(Duration::from_secs(30));
    let out = sniffer.stop();
    drop(holder);
    let events = events_of(&out, client.pid());
    let sent = events
        .iter()
        .find(|e| {
            e["direction"] == "write" && text(e).contains("POST /sslsniff.v1.Echo/Say HTTP/1.1\r\n")
        })
        .unwrap_or_else(|| panic!("buf's request not captured:\n{}", out.stdout));
    let payload = |dir: &str| {
        events
            .iter()
            .filter(|e| e["direction"] == dir && text(e).contains(&text_field))
            .count()
    };
    assert!(
        payload("write") >= 1 && payload("read") >= 1,
        "{}",
        out.stdout
    );
    for event in events
        .iter()
        .filter(|e| text(e).contains(&text_field))
        .chain([sent])
    {
        assert_eq!(event["raddr"], addr.as_str(), "{event}");
        assert_eq!(event["laddr"], sent["laddr"], "{event}");
    }
    assert!(out.traced("buf", "go"), "{}", out.stderr);
}

/// `buf curl` of the schema's one method at `addr`, with `data` as the message.
fn buf_curl(buf: &Path, work: &Workdir, data: &str, addr: &str) -> Command {
    let mut cmd = Command::new(buf);
    cmd.args(["curl", "-k", "--schema", "proto", "--data", data])
        .arg(format!("https://{addr}/sslsniff.v1.Echo/Say"))
        .current_dir(work.path())
        .env("HOME", work.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

/// Waits until a client connects to `listener`: the connection, to leave unanswered.
fn wait_for_connection(listener: &TcpListener) -> TcpStream {
    listener.set_nonblocking(true).unwrap();
    let start = Instant::now();
    loop {
        if let Ok((stream, _)) = listener.accept() {
            return stream;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "buf never connected"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A copy of `exe` with `from` replaced by `to` everywhere, made executable.
fn patched_copy(work: &Workdir, exe: &Path, name: &str, from: &[u8], to: &[u8]) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let mut bytes = std::fs::read(exe).unwrap();
    let places: Vec<usize> = (0..bytes.len() - from.len())
        .filter(|&at| &bytes[at..at + from.len()] == from)
        .collect();
    assert!(!places.is_empty(), "{from:?} not in {}", exe.display());
    for at in places {
        bytes[at..at + to.len()].copy_from_slice(to);
    }
    let path = work.file(name, &bytes);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// esbuild as a later Go release would build it: its plaintext is captured and its
/// socket stays unknown (no layout is guessed); and with no Go version at all, one
/// notice says why it is not traced.
#[test]
fn unknown_go_releases_are_never_guessed() {
    if !root_or_skip("unknown_go_releases_are_never_guessed") {
        return;
    }
    let esbuild = fetch(&["npm", "@esbuild/linux-x64", "0.28.2"]).join("bin/esbuild");
    let work = Workdir::new();
    let later = patched_copy(&work, &esbuild, "esbuild-go199", b"go1.26.5", b"go1.99.5");
    let unknown = patched_copy(&work, &esbuild, "esbuild-nover", b"go1.26.5", b"go1.26.x");
    let path = marker("esbuild-later");
    let body = marker("esbuild-later-body");
    std::fs::write(work.path().join(&path), &body).unwrap();
    // Both run before sslsniff starts: examined (and the second refused) before it is ready.
    let (server, port) = esbuild_serve(&later, &work, work.path());
    let (_refused, _) = esbuild_serve(&unknown, &work, work.path());
    let sniffer = Sniffer::start(&["--format", "json"]);
    run_client("curl", curl(port, &path).arg("--http1.1"));
    let out = sniffer.stop();
    let events = events_of(&out, server.pid());
    let answer = exactly(&events, "write", |d| d.contains(&body), &out);
    assert_eq!(
        (&answer["fd"], &answer["laddr"]),
        (&Value::Null, &Value::Null)
    );
    let notices: Vec<String> = out
        .status_lines("notice")
        .iter()
        .chain(&out.status_lines("warning"))
        .filter_map(|n| n["message"].as_str().map(str::to_string))
        .filter(|m| m.contains("esbuild-nover"))
        .collect();
    assert_eq!(notices.len(), 1, "{notices:?}\n{}", out.stderr);
    assert!(notices[0].contains("Go version"), "{notices:?}");
}
