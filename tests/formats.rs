//! Output people can pipe and open: JSON lines, pcapng, and connection attribution.

mod common;

use std::process::Command;

use common::*;

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

#[test]
fn pcapng_opens_in_tshark_as_http() {
    if !root_or_skip("pcapng_opens_in_tshark_as_http") {
        return;
    }
    let work = Workdir::new();
    let path = marker("pcap");
    work.file(&path, b"pcap body\n");
    let (_server, port) = python_https_server(&work);
    let pcap = work.path().join("capture.pcapng");

    let sniffer = Sniffer::start(&["-c", "curl", "--pcap", pcap.to_str().unwrap()]);
    run_client("curl", &mut curl(port, &path));
    let out = sniffer.stop();
    assert!(out.status.success(), "{}", out.stderr);

    let tshark = Command::new("tshark")
        .arg("-r")
        .arg(&pcap)
        .args(["-Y", "http"])
        .output()
        .expect("tshark is installed");
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
