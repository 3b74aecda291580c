//! End-to-end: real TLS peers on 127.0.0.1, the real binary, the exact plaintext.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::common::*;

#[test]
fn curl_request_and_response_are_captured() {
    if !root_or_skip("curl_request_and_response_are_captured") {
        return;
    }
    let work = Workdir::new();
    let body = marker("curl-body");
    let path = marker("curl-req");
    work.file(&path, body.as_bytes());
    let (_server, port) = https_server(&work);

    let sniffer = Sniffer::start(&[]);
    let client = run_client("curl", &mut curl(port, &path));
    let out = sniffer.stop();
    let rows = rows(&out.stdout);

    let request = format!("GET /{path} HTTP/1.1");
    let (write, read) = assert_both_directions(&out, &rows, client.pid(), &request, &body);
    assert_eq!((write.comm.as_str(), read.comm.as_str()), ("curl", "curl"));
    assert!(out.status.success(), "{}", out.stderr);
    assert!(out.summary()["calls"].as_u64() >= Some(2), "{}", out.stderr);
}

#[test]
fn one_link_per_probe_fallback_captures_too() {
    if !root_or_skip("one_link_per_probe_fallback_captures_too") {
        return;
    }
    let work = Workdir::new();
    let (request, body) = page(&work, "fallback");
    let (_server, port) = https_server(&work);

    // The path kernels before 6.6 take: perf-event uprobes, one link per probe.
    let sniffer =
        Sniffer::start_with_env(&["-c", "python3"], &[("SSLSNIFF_WITHOUT", "uprobe-multi")]);
    let payload = format!("b'{}'", request.replace("\r\n", "\\r\\n"));
    let client = run_client("python3", &mut python_client(port, &payload, false));
    let out = sniffer.stop();
    assert_both_directions(&out, &rows(&out.stdout), client.pid(), &request, &body);
}

#[test]
fn python_ex_calls_are_labelled_by_direction() {
    if !root_or_skip("python_ex_calls_are_labelled_by_direction") {
        return;
    }
    let work = Workdir::new();
    let body = marker("py-body");
    let request = marker("py-req");
    work.file(&request, body.as_bytes());
    let (_server, port) = https_server(&work);

    let sniffer = Sniffer::start(&[]);
    let client = run_client(
        "python3",
        &mut python_client(port, &http_get(&request), false),
    );
    let out = sniffer.stop();
    let rows = rows(&out.stdout);

    let (write, _) = assert_both_directions(&out, &rows, client.pid(), &request, &body);
    assert_eq!(
        write.len,
        format!("GET /{request} HTTP/1.0\r\n\r\n").len().to_string()
    );
}

/// Sends `request` on a client's stdin and returns the finished client.
fn stdin_client(name: &str, cmd: &mut Command, request: &str) -> Proc {
    let mut proc = Proc::spawn(
        name,
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    proc.child
        .stdin
        .take()
        .unwrap()
        .write_all(request.as_bytes())
        .unwrap();
    let status = proc.wait_timeout(std::time::Duration::from_secs(20));
    assert!(status.success(), "{name} failed: {status}");
    proc
}

#[test]
fn gnutls_client_is_captured() {
    if !root_or_skip("gnutls_client_is_captured") {
        return;
    }
    let work = Workdir::new();
    let (request, body) = page(&work, "gnutls");
    let (_server, port) = https_server(&work);

    let sniffer = Sniffer::start(&["-o", "-n"]);
    let client = stdin_client(
        "gnutls-cli",
        Command::new("gnutls-cli").args(["--insecure", "-p", &port.to_string(), "127.0.0.1"]),
        &request,
    );
    let out = sniffer.stop();
    let rows = rows(&out.stdout);

    let (write, _) = assert_both_directions(&out, &rows, client.pid(), &request, &body);
    assert_eq!(write.comm, "gnutls-cli");
}

#[test]
fn nss_client_is_captured() {
    if !root_or_skip("nss_client_is_captured") {
        return;
    }
    let work = Workdir::new();
    let (request, body) = page(&work, "nss");
    let (_server, port) = https_server(&work);
    let db = work.path().join("nssdb");
    std::fs::create_dir(&db).unwrap();
    let status = Command::new("certutil")
        .arg("-N")
        .arg("-d")
        .arg(&db)
        .arg("--empty-password")
        .status()
        .unwrap();
    assert!(status.success());
    // tstclnt reads the request from a file with PR_Read: that read is file I/O, not TLS,
    // and must not show up.
    let request_file = work.file("request.txt", request.as_bytes());

    let sniffer = Sniffer::start(&["-o", "-g"]);
    let client = run_client(
        "tstclnt",
        Command::new("tstclnt")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-o", "-d"])
            .arg(&db)
            .arg("-A")
            .arg(&request_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let out = sniffer.stop();
    let rows = rows(&out.stdout);

    // Once: as TLS, not also as the file read.
    let (write, _) = assert_both_directions(&out, &rows, client.pid(), &request, &body);
    assert_eq!(write.comm, "tstclnt");
}

#[test]
fn handshake_latency_is_reported() {
    if !root_or_skip("handshake_latency_is_reported") {
        return;
    }
    let work = Workdir::new();
    work.file("h.txt", b"handshake");
    let (_server, port) = https_server(&work);

    let sniffer = Sniffer::start(&["-l", "--handshake", "-c", "curl"]);
    let client = run_client("curl", &mut curl(port, "h.txt"));
    let out = sniffer.stop();
    let rows = rows(&out.stdout);

    assert!(
        out.stdout.lines().next().unwrap().ends_with("LAT(ms)"),
        "{}",
        out.stdout
    );
    let hs: Vec<_> = rows
        .iter()
        .filter(|r| r.func == "HANDSHAKE" && r.pid == client.pid())
        .collect();
    assert_eq!(hs.len(), 1, "one handshake per connection:\n{}", out.stdout);
    assert_eq!(hs[0].len, "1", "SSL_do_handshake returns 1 on success");
    let latency: f64 = hs[0].columns[5].parse().unwrap();
    assert!(latency > 0.0, "{}", out.stdout);
}

#[test]
fn hexdump_shows_hex_rows_and_ascii_gutter() {
    if !root_or_skip("hexdump_shows_hex_rows_and_ascii_gutter") {
        return;
    }
    let work = Workdir::new();
    let (_server, port) = https_server(&work);
    let mark = "HEXMARK0123456789ABC";

    let sniffer = Sniffer::start(&["--hexdump", "-c", "python3"]);
    let request = format!("b'GET /{mark} HTTP/1.0\\r\\n\\r\\n'");
    let _client = run_client("python3", &mut python_client(port, &request, false));
    let out = sniffer.stop();

    // The request line starts `GET /`, so the marker's first 16 bytes begin at offset 5.
    let line = format!("GET /{mark}");
    let hex: Vec<String> = line.bytes().take(16).map(|b| format!("{b:02x}")).collect();
    let expected = format!(
        "00000000  {}  {}  |{}|",
        hex[..8].join(" "),
        hex[8..].join(" "),
        &line[..16]
    );
    assert!(
        out.stdout.contains(&expected),
        "no hexdump row `{expected}` in:\n{}",
        out.stdout
    );
}

#[test]
fn pid_and_comm_filters_select_one_client() {
    if !root_or_skip("pid_and_comm_filters_select_one_client") {
        return;
    }
    let work = Workdir::new();
    let (_server, port) = https_server(&work);
    let (mark_a, mark_b) = (marker("pid-a"), marker("pid-b"));

    let mut a = Proc::spawn(
        "python3 a",
        &mut python_client(port, &http_get(&mark_a), true),
    );
    let mut b = Proc::spawn(
        "python3 b",
        &mut python_client(port, &http_get(&mark_b), true),
    );
    let sniffer = Sniffer::start(&["-p", &a.pid().to_string()]);
    for client in [&mut a, &mut b] {
        writeln!(client.child.stdin.take().unwrap()).unwrap();
        assert!(client
            .wait_timeout(std::time::Duration::from_secs(20))
            .success());
    }
    let out = sniffer.stop();
    assert!(
        out.stdout.contains(&mark_a),
        "-p lost its process:\n{}",
        out.stdout
    );
    assert!(
        !out.stdout.contains(&mark_b),
        "-p let another process through:\n{}",
        out.stdout
    );

    let (mark_curl, mark_py) = (marker("comm-curl"), marker("comm-py"));
    let sniffer = Sniffer::start(&["-c", "curl"]);
    run_client("curl", &mut curl(port, &mark_curl));
    run_client(
        "python3",
        &mut python_client(port, &http_get(&mark_py), false),
    );
    let out = sniffer.stop();
    assert!(
        out.stdout.contains(&mark_curl),
        "-c lost its process:\n{}",
        out.stdout
    );
    assert!(
        !out.stdout.contains(&mark_py),
        "-c let another command through:\n{}",
        out.stdout
    );
}

#[test]
fn control_bytes_are_escaped_never_raw() {
    if !root_or_skip("control_bytes_are_escaped_never_raw") {
        return;
    }
    let work = Workdir::new();
    let (_server, port) = https_server(&work);
    let mark = marker("esc");

    let sniffer = Sniffer::start(&["-c", "python3"]);
    let payload = format!("b'GET /{mark}\\x1b[31mRED\\x00NUL\\xffEND HTTP/1.0\\r\\n\\r\\n'");
    run_client("python3", &mut python_client(port, &payload, false));
    let out = sniffer.stop();

    assert!(
        out.stdout
            .contains(&format!("{mark}\\x1b[31mRED\\x00NUL\\xffEND")),
        "{}",
        out.stdout
    );
    assert!(
        !out.stdout_bytes.contains(&0x1b),
        "a raw ESC reached the terminal"
    );
    assert!(
        !out.stdout_bytes.contains(&0),
        "a raw NUL reached the terminal"
    );
}

#[test]
fn max_buffer_size_truncates_and_says_so() {
    if !root_or_skip("max_buffer_size_truncates_and_says_so") {
        return;
    }
    let work = Workdir::new();
    let (request, _) = page(&work, "truncate");
    let (_server, port) = https_server(&work);

    let sniffer = Sniffer::start(&["-c", "python3", "--max-buffer-size", "16"]);
    let payload = format!("b'{}'", request.replace("\r\n", "\\r\\n"));
    let client = run_client("python3", &mut python_client(port, &payload, false));
    let out = sniffer.stop();

    let rows = rows(&out.stdout);
    let write = rows
        .iter()
        .find(|r| r.func == "WRITE/SEND" && r.pid == client.pid())
        .expect("the write is shown");
    assert_eq!(
        write.len,
        request.len().to_string(),
        "LEN is what the call moved"
    );
    assert_eq!(write.data, request[..16]);
    assert_eq!(
        write.end,
        format!(
            "----- END DATA (TRUNCATED, {} bytes truncated) -----",
            request.len() - 16
        )
    );
}
