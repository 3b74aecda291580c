//! Cases issue 12 found missing: the -u filter, IPv6 attribution and pcap, a library
//! file with two names, and the handshake fields of JSON lines.

use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;
use serde_json::Value;

fn with_text<'a>(events: &'a [Value], needle: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["data"].as_str().unwrap_or("").contains(needle))
        .collect()
}

/// `python_client` run as nobody, by the system's python3 (root's own may live where
/// nobody cannot enter).
fn python_client_as_nobody(port: u16, payload: &str) -> Command {
    let python = python_client(port, payload, false);
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid=nobody",
        "--regid=nogroup",
        "--clear-groups",
        "/usr/bin/python3",
    ])
    .args(python.get_args())
    .current_dir("/")
    .stdin(Stdio::null())
    .stdout(Stdio::null());
    cmd
}

#[test]
fn uid_filter_selects_one_user() {
    if !root_or_skip("uid_filter_selects_one_user") {
        return;
    }
    let work = Workdir::new();
    let (_server, port) = https_server(&work);
    let (mark_nobody, mark_root) = (marker("uid-nobody"), marker("uid-root"));
    let nobody = Sniffer::start(&["-u", "65534", "-x", "-c", "python3"]);
    let root = Sniffer::start(&["-u", "0", "-x", "-c", "python3"]);
    run_client(
        "python3 as nobody",
        &mut python_client_as_nobody(port, &http_get(&mark_nobody)),
    );
    run_client(
        "python3 as root",
        &mut python_client(port, &http_get(&mark_root), false),
    );

    for (out, uid, mine, theirs) in [
        (nobody.stop(), "65534", &mark_nobody, &mark_root),
        (root.stop(), "0", &mark_root, &mark_nobody),
    ] {
        let rows = rows(&out.stdout);
        let write: Vec<_> = with_data(&rows, mine)
            .into_iter()
            .filter(|r| r.func == "WRITE/SEND")
            .collect();
        assert_eq!(write.len(), 1, "-u {uid} lost its user:\n{}", out.stdout);
        // -x: UID and TID follow LEN.
        assert_eq!(write[0].columns[5], uid, "{}", out.stdout);
        assert!(
            !out.stdout.contains(theirs.as_str()),
            "-u {uid} let another user through:\n{}",
            out.stdout
        );
        assert!(
            rows.iter().all(|r| r.columns[5] == uid),
            "-u {uid}:\n{}",
            out.stdout
        );
    }
}

#[test]
fn ipv6_connections_are_attributed_and_captured() {
    if !root_or_skip("ipv6_connections_are_attributed_and_captured") {
        return;
    }
    let work = Workdir::new();
    let path = marker("v6");
    work.file(&path, b"v6 body");
    let (_server, port) = https_server_v6(&work);
    let pcap = work.path().join("v6.pcapng");
    let text = Sniffer::start(&["--conn", "-c", "curl"]);
    let json = Sniffer::start(&["--format", "json", "-c", "curl"]);
    let capture = Sniffer::start(&["-c", "curl", "--pcap", pcap.to_str().unwrap()]);
    let mut curl = Command::new("curl");
    curl.args(["-sgk", "--max-time", "20"])
        .arg(format!("https://[::1]:{port}/{path}"))
        .stdout(Stdio::null());
    run_client("curl over IPv6", &mut curl);

    let server = format!("[::1]:{port}");
    let out = text.stop();
    let rows = rows(&out.stdout);
    let write = with_data(&rows, &path);
    assert_eq!(write.len(), 1, "{}", out.stdout);
    // FD, LADDR and RADDR follow LEN.
    assert!(write[0].columns[6].starts_with("[::1]:"), "{}", out.stdout);
    assert_eq!(write[0].columns[7], server, "{}", out.stdout);

    let out = json.stop();
    let events = json_events(&out.stdout);
    let write = with_text(&events, &path);
    assert_eq!(write.len(), 1, "{}", out.stdout);
    assert_eq!(write[0]["direction"], "write");
    assert_eq!(write[0]["raddr"], server.as_str());
    assert!(write[0]["laddr"].as_str().unwrap().starts_with("[::1]:"));
    let read = events
        .iter()
        .find(|e| e["direction"] == "read" && e["pid"] == write[0]["pid"])
        .expect("the response is captured");
    assert_eq!(read["raddr"], server.as_str());
    assert_eq!(read["laddr"], write[0]["laddr"]);

    let out = capture.stop();
    assert!(out.status.success(), "{}", out.stderr);
    let tshark = Command::new("tshark")
        .arg("-r")
        .arg(&pcap)
        // HTTP is written as exported PDUs, whose tags carry the real addresses.
        .args([
            "-Y",
            "http.request && exported_pdu.ipv6_src == ::1 && exported_pdu.ipv6_dst == ::1",
        ])
        .args([
            "-T",
            "fields",
            "-e",
            "http.request.uri",
            "-e",
            "exported_pdu.dst_port",
        ])
        .output()
        .expect("tshark is installed");
    let shown = String::from_utf8_lossy(&tshark.stdout);
    assert!(
        tshark.status.success(),
        "{}",
        String::from_utf8_lossy(&tshark.stderr)
    );
    assert!(
        shown.contains(&format!("/{path}\t{port}")),
        "no IPv6 request in:\n{shown}"
    );
}

/// The `tracing` lines for files under `dir`.
fn traced_under(out: &Output, dir: &Path) -> Vec<Value> {
    let dir = dir.to_str().unwrap();
    out.status_lines("tracing")
        .into_iter()
        .filter(|t| t["path"].as_str().unwrap_or("").contains(dir))
        .collect()
}

/// A python3 client, waiting for a line on stdin, whose libssl comes from `libdir`.
fn gated_python_from(libdir: &Path, port: u16, request: &str) -> Proc {
    let python = python_client(
        port,
        &format!("b'{}'", request.replace("\r\n", "\\r\\n")),
        true,
    );
    let mut cmd = Command::new("python3");
    cmd.args(python.get_args())
        .env("LD_LIBRARY_PATH", libdir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null());
    Proc::spawn("python3 with a linked libssl", &mut cmd)
}

fn release(client: &mut Proc) {
    writeln!(client.child.stdin.take().unwrap()).unwrap();
    assert!(client.wait_timeout(Duration::from_secs(20)).success());
}

#[test]
fn a_library_with_two_names_is_traced_once() {
    if !root_or_skip("a_library_with_two_names_is_traced_once") {
        return;
    }
    let work = Workdir::new();
    let (one, two) = (work.path().join("one"), work.path().join("two"));
    fs::create_dir(&one).unwrap();
    fs::create_dir(&two).unwrap();
    fs::copy(
        "/usr/lib/x86_64-linux-gnu/libssl.so.3",
        one.join("libssl.so.3"),
    )
    .unwrap();
    fs::hard_link(one.join("libssl.so.3"), two.join("libssl.so.3")).unwrap();
    let (_server, port) = https_server(&work);

    // Both names given: one file, traced once; a process that maps it later by the
    // other name is captured without a second attach.
    let extra = |dir: &Path| format!("openssl:{}", dir.join("libssl.so.3").display());
    let (extra_one, extra_two) = (extra(&one), extra(&two));
    let sniffer = Sniffer::start(&["--extra-lib", &extra_one, "--extra-lib", &extra_two]);
    let (request, body) = page(&work, "hardlink-flags");
    let mut client = gated_python_from(&two, port, &request);
    release(&mut client);
    let out = sniffer.stop();
    assert_eq!(traced_under(&out, work.path()).len(), 1, "{}", out.stderr);
    assert_both_directions(&out, &rows(&out.stdout), client.pid(), &request, &body);

    // Two running processes map it, each by its own name.
    let (request_one, body_one) = page(&work, "hardlink-one");
    let (request_two, body_two) = page(&work, "hardlink-two");
    let mut client_one = gated_python_from(&one, port, &request_one);
    let mut client_two = gated_python_from(&two, port, &request_two);
    // Both have loaded their libssl before the sniffer reads their maps.
    wait_for_mapping(client_one.pid(), one.to_str().unwrap());
    wait_for_mapping(client_two.pid(), two.to_str().unwrap());
    let sniffer = Sniffer::start(&[]);
    release(&mut client_one);
    release(&mut client_two);
    let out = sniffer.stop();
    assert_eq!(traced_under(&out, work.path()).len(), 1, "{}", out.stderr);
    let rows = rows(&out.stdout);
    assert_both_directions(&out, &rows, client_one.pid(), &request_one, &body_one);
    assert_both_directions(&out, &rows, client_two.pid(), &request_two, &body_two);
}

#[test]
fn json_handshakes_carry_verdict_return_value_and_connection() {
    if !root_or_skip("json_handshakes_carry_verdict_return_value_and_connection") {
        return;
    }
    let work = Workdir::new();
    let (request, _) = page(&work, "json-handshake");
    let (_server, port) = https_server(&work);
    // A peer that answers the ClientHello with plain text: the handshake fails.
    let plain = TcpListener::bind("127.0.0.1:0").unwrap();
    let plain_port = plain.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut conn in plain.incoming().flatten().take(2) {
            let _ = conn.write_all(b"HTTP/1.0 400 Bad Request\r\n\r\nnot TLS\n");
        }
    });

    let sniffer = Sniffer::start(&["--format", "json", "--handshake"]);
    let payload = format!("b'{}'", request.replace("\r\n", "\\r\\n"));
    let good = run_client("python3", &mut python_client(port, &payload, false));
    let script = format!(
        "try:\n\
         \x20   ctx.wrap_socket(socket.create_connection(('127.0.0.1', {plain_port})))\n\
         \x20   sys.exit('the handshake with a plain-text peer succeeded')\n\
         except ssl.SSLError:\n\
         \x20   pass\n"
    );
    let bad = run_client("python3 failing", python(&script).stdout(Stdio::null()));
    let mut gnutls = Proc::spawn(
        "gnutls-cli",
        Command::new("gnutls-cli")
            .args(["--insecure", "-p", &plain_port.to_string(), "127.0.0.1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let status = gnutls.wait_timeout(Duration::from_secs(20));
    assert!(
        !status.success(),
        "gnutls-cli's handshake with plain text succeeded"
    );
    let out = sniffer.stop();
    let events = json_events(&out.stdout);
    let handshake = |pid: u32| {
        let found: Vec<&Value> = events
            .iter()
            .filter(|e| e["pid"] == pid && e["direction"] == "handshake")
            .collect();
        assert_eq!(
            found.len(),
            1,
            "not one handshake of {pid}:\n{}",
            out.stdout
        );
        found[0].clone()
    };

    let done = handshake(good.pid());
    assert_eq!(done["handshake"], "done", "{done}");
    assert_eq!(done["ret"], 1, "{done}");
    assert_eq!(done["func"], "SSL_do_handshake", "{done}");
    assert_eq!(
        done["raddr"],
        format!("127.0.0.1:{port}").as_str(),
        "{done}"
    );
    assert_eq!((&done["data"], &done["len"]), (&"".into(), &0.into()));
    assert!(done["latency_ns"].as_u64() > Some(0), "{done}");
    let write = with_text(&events, request.trim_end());
    assert_eq!(write.len(), 1, "{}", out.stdout);
    assert_eq!(write[0]["laddr"], done["laddr"]);
    assert!(write[0].get("handshake").is_none() && write[0].get("ret").is_none());

    // OpenSSL's -1 means "retry" or "failed": with no success after it, not completed.
    let unsure = handshake(bad.pid());
    assert_eq!(unsure["handshake"], "not_completed", "{unsure}");
    assert_eq!(unsure["ret"], -1, "{unsure}");
    assert_eq!(
        unsure["raddr"],
        format!("127.0.0.1:{plain_port}").as_str(),
        "{unsure}"
    );
    // GnuTLS says which errors are fatal.
    let failed = handshake(gnutls.pid());
    assert_eq!(failed["handshake"], "failed", "{failed}");
    assert_eq!(failed["func"], "gnutls_handshake", "{failed}");
    assert!(failed["ret"].as_i64() < Some(0), "{failed}");
}
