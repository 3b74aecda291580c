//! Go programs: crypto/tls traced with uprobes at entry and at every return instruction,
//! in normal, stripped and PIE builds, under load, and while sslsniff comes and goes.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;
use serde_json::Value;

/// The fixture serving HTTPS on 127.0.0.1, and its URL.
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
    (server, format!("https://{}", addr.trim()))
}

/// Request i's body, as the fixture's `load` makes it.
fn body(marker: &str, i: usize, max: usize) -> Vec<u8> {
    let size = 1 + (i * 7919) % max;
    let mut b = format!("{marker}-{i}-").into_bytes();
    while b.len() < size {
        b.push(b'a' + ((b.len() + i) % 26) as u8);
    }
    b.truncate(size);
    b
}

#[test]
fn go_client_and_server_are_captured_in_every_build() {
    if !root_or_skip("go_client_and_server_are_captured_in_every_build") {
        return;
    }
    let work = Workdir::new();
    let builds = [
        ("go-normal", &[][..]),
        ("go-stripped", &["-ldflags=-s -w"][..]),
        ("go-pie", &["-buildmode=pie", "-ldflags=-s -w"][..]),
    ];
    for (name, flags) in builds {
        let built = build_go(&work, &format!("{name}-built"), flags, &[]);
        let sniffer = Sniffer::start(&["--handshake"]);
        // Server and client each a file written after sslsniff started and run once at
        // once: each is held until attached, so that its first calls are captured.
        let (exe, client_exe) = (
            work.path().join(name),
            work.path().join(format!("{name}-c")),
        );
        std::fs::copy(&built, &exe).unwrap();
        std::fs::copy(&built, &client_exe).unwrap();
        let (server, url) = go_server(&exe);
        let path = marker(name);
        let client = run_client(
            "go client",
            Command::new(&client_exe)
                .args(["client", &format!("{url}/{path}")])
                .stdout(Stdio::null()),
        );
        let out = sniffer.stop();
        let rows = rows(&out.stdout);
        let port = url.rsplit(':').next().unwrap();
        let request = format!(
            "GET /{path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: Go-http-client/1.1\r\nAccept-Encoding: gzip\r\n\r\n"
        );
        let answer = format!("hello from go /{path}\n");
        let find = |pid: u32, func: &str, needle: &str| {
            rows.iter()
                .filter(|r| r.pid == pid && r.func == func && r.data.contains(needle))
                .count()
        };
        let (c, s) = (client.pid(), server.pid());
        // Exactly the bytes Go wrote, in one call; the response body in its own.
        let exact: Vec<_> = rows
            .iter()
            .filter(|r| r.pid == c && r.func == "WRITE/SEND" && r.data == request)
            .collect();
        assert_eq!(
            exact.len(),
            1,
            "{name}: request not captured exactly:\n{}",
            out.stdout
        );
        assert_eq!(find(s, "READ/RECV", &path), 1, "{name}:\n{}", out.stdout);
        assert_eq!(find(s, "WRITE/SEND", &answer), 1, "{name}:\n{}", out.stdout);
        assert_eq!(find(c, "READ/RECV", &answer), 1, "{name}:\n{}", out.stdout);
        // At most one handshake each side: the client's may be under way before its
        // hold takes effect (docs/first-run.md); its request and answer never are.
        for pid in [c, s] {
            let handshakes = rows
                .iter()
                .filter(|r| r.func == "HANDSHAKE" && r.pid == pid);
            assert!(handshakes.count() <= 1, "{name}:\n{}", out.stdout);
        }
        assert!(out.traced(name, "go"), "{}", out.stderr);
        assert!(out.held(name), "{}", out.stderr);
        assert!(out.held(&format!("{name}-c")), "{}", out.stderr);
        drop(server);
    }
}

#[test]
fn a_thousand_concurrent_go_requests_are_each_captured_whole() {
    if !root_or_skip("a_thousand_concurrent_go_requests_are_each_captured_whole") {
        return;
    }
    let work = Workdir::new();
    let exe = build_go(&work, "go-load", &[], &[]);
    let (n, max, tag) = (1000, 64 * 1024, marker("go-load"));
    let sniffer = Sniffer::start(&["--format", "json", "-c", "go-load", "-d"]);
    let (server, url) = go_server(&exe);
    // The subject is load, not a first run: the client starts once the file is attached.
    // A hold that comes late (the listener scheduled late on a busy machine) would
    // otherwise let both programs' first requests run unseen (docs/first-run.md).
    let attached = sniffer.wait_for_status("tracing", &exe);
    let client = run_client(
        "go load",
        Command::new(&exe)
            .args([
                "load",
                &format!("{url}/echo"),
                &n.to_string(),
                "10",
                &max.to_string(),
                &tag,
            ])
            .stdout(Stdio::null()),
    );
    let out = sniffer.stop();
    let (c, s) = (u64::from(client.pid()), u64::from(server.pid()));
    // Every byte is accounted for under any load; every body is whole only when the
    // machine kept up.
    let summary = out.summary();
    let num = |field: &str| summary[field].as_u64().unwrap();
    let marked: u64 = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["undelivered_bytes"].as_u64())
        .map(|n| n.unwrap_or(0))
        .sum();
    assert_undelivered_accounted(&summary, marked, &summary.to_string());
    assert_eq!(num("untracked_calls"), 0, "{summary}");
    let kept_up = num("undelivered_bytes") == 0;
    if !kept_up {
        eprintln!("NOT ASSERTED: every body whole; the machine did not keep up: {summary}");
    }
    let streams = streams(&out.stdout, &[c, s]);
    let connections = streams
        .keys()
        .filter(|k| k.0 == c && k.1 == "write")
        .count();
    assert!(connections <= 10, "{connections} client connections");
    for side in [(c, "write"), (s, "read"), (s, "write"), (c, "read")] {
        let mut seen = vec![0; n];
        for (_, data) in streams.iter().filter(|(k, _)| (k.0, k.1.as_str()) == side) {
            for (i, whole) in bodies_in(data, &tag, max) {
                if whole && i < n {
                    seen[i] += 1;
                }
            }
        }
        for (i, &times) in seen.iter().enumerate() {
            // A body shorter than its own tag cannot be told apart from another's start.
            if body(&tag, i, max).len() > format!("{tag}-{i}-").len() {
                let expected = if kept_up { 1..=1 } else { 0..=1 };
                assert!(
                    expected.contains(&times),
                    "body {i} as {side:?}: {times} times; {summary}; {attached}"
                );
            }
        }
    }
    drop(server);
}

/// (pid, direction, local, remote): one direction of one connection of one process.
type StreamKey = (u64, String, String, String);

/// Each connection's bytes per direction, in call order, from JSON lines; every call
/// must belong to one of `pids` and name its socket.
fn streams(json: &str, pids: &[u64]) -> HashMap<StreamKey, String> {
    let mut calls: HashMap<StreamKey, Vec<(u64, String)>> = HashMap::new();
    for line in json.lines() {
        let ev: Value = serde_json::from_str(line).unwrap();
        if ev["direction"] == "handshake" {
            continue;
        }
        let pid = ev["pid"].as_u64().unwrap();
        assert!(pids.contains(&pid), "a call of another process: {line}");
        let key = (
            pid,
            ev["direction"].as_str().unwrap().to_string(),
            ev["laddr"]
                .as_str()
                .expect("the socket is known")
                .to_string(),
            ev["raddr"].as_str().unwrap().to_string(),
        );
        let data = ev["data"]
            .as_str()
            .expect("the bodies are text")
            .to_string();
        calls
            .entry(key)
            .or_default()
            .push((ev["ts_ns"].as_u64().unwrap(), data));
    }
    calls
        .into_iter()
        .map(|(key, mut calls)| {
            calls.sort();
            (key, calls.into_iter().map(|(_, d)| d).collect())
        })
        .collect()
}

/// Each body found in a stream by its tag, and whether all of it follows there intact.
fn bodies_in(data: &str, tag: &str, max: usize) -> Vec<(usize, bool)> {
    let head = format!("{tag}-");
    data.match_indices(&head)
        .filter_map(|(at, _)| {
            let rest = &data[at + head.len()..];
            let i: usize = rest[..rest.find('-')?].parse().ok()?;
            let want = body(tag, i, max);
            Some((i, data.as_bytes()[at..].starts_with(&want)))
        })
        .collect()
}

#[test]
fn a_go_program_survives_sslsniff_coming_and_going() {
    if !root_or_skip("a_go_program_survives_sslsniff_coming_and_going") {
        return;
    }
    let work = Workdir::new();
    let exe = build_go(&work, "go-churn", &[], &[]);
    let (mut server, url) = go_server(&exe);
    // The server lives through every restart; clients of 10,000 checked requests each
    // follow one another, so that Go code runs under every attach and detach.
    let load = || {
        Proc::spawn(
            "go load",
            Command::new(&exe)
                .args([
                    "load",
                    &format!("{url}/echo"),
                    "10000",
                    "4",
                    "2048",
                    &marker("churn"),
                ])
                .stdout(Stdio::null()),
        )
    };
    let mut client = load();
    for _ in 0..20 {
        let sniffer = Sniffer::start(&["-c", "go-churn"]);
        std::thread::sleep(Duration::from_millis(50));
        let out = sniffer.stop();
        assert!(out.status.success(), "{}", out.stderr);
        if let Some(status) = client.child.try_wait().unwrap() {
            assert!(status.success(), "a Go client failed or crashed: {status}");
            client = load();
        }
    }
    let status = client.wait_timeout(Duration::from_secs(120));
    assert!(
        status.success(),
        "the Go client failed or crashed: {status}"
    );
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the Go server died"
    );
}

#[test]
fn unsupported_or_fake_go_programs_get_a_notice_and_run_on() {
    if !root_or_skip("unsupported_or_fake_go_programs_get_a_notice_and_run_on") {
        return;
    }
    let work = Workdir::new();
    let exe = build_go(&work, "go-old", &[], &[]);
    // The same program, labelled Go 1.16: arguments on the stack, not supported.
    let mut bytes = std::fs::read(&exe).unwrap();
    let (from, to) = (b"go1.19", b"go1.16");
    for at in 0..bytes.len().saturating_sub(from.len()) {
        if &bytes[at..at + from.len()] == from {
            bytes[at..at + to.len()].copy_from_slice(to);
        }
    }
    let old = work.file("go-old116", &bytes);
    set_executable(&old);
    // A C program dressed as Go: a build-info section of junk.
    let junk = work.file("junk", &[0x5a; 64]);
    let fake = work.path().join("fake-go");
    let status = Command::new("objcopy")
        .arg(format!("--add-section=.go.buildinfo={}", junk.display()))
        .args(["/bin/true"])
        .arg(&fake)
        .status()
        .expect("objcopy is installed");
    assert!(status.success());
    let sniffer = Sniffer::start(&[]);
    run_client("Go 1.16 program", Command::new(&old).stdout(Stdio::null()));
    run_client("fake Go program", &mut Command::new(&fake));
    let out = sniffer.stop();
    assert!(out.status.success(), "{}", out.stderr);
    let notices: Vec<String> = out
        .status_lines("notice")
        .iter()
        .filter_map(|n| n["message"].as_str().map(str::to_string))
        .collect();
    let about = |name: &str| notices.iter().filter(|m| m.contains(name)).count();
    assert_eq!(about("go-old116"), 1, "{notices:?}");
    assert!(notices.iter().any(|m| m.contains("go1.16")), "{notices:?}");
    assert!(about("fake-go") <= 1, "{notices:?}");
}

fn set_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}
