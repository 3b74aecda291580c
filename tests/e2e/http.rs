//! HTTP decoding end to end: HTTP/2 from curl and node in text and JSON, a late attach
//! to an open HTTP/2 connection, pcapng that tshark dissects on port 443, and --http off.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::Value;

/// node's HTTP/2 server (HTTP/1.1 too, by ALPN): answers every path with a marked body
/// and an `x-served-by` header.
const NODE_SERVER: &str = "const http2 = require('http2'), fs = require('fs');\n\
     const [host, port] = [process.argv[1], +process.argv[2]];\n\
     http2.createSecureServer({key: fs.readFileSync('key.pem'), cert: fs.readFileSync('cert.pem'), allowHTTP1: true},\n\
       (req, res) => { res.setHeader('x-served-by', 'node-h2'); res.setHeader('content-type', 'text/plain');\n\
         res.end('body of ' + req.url + '\\n'); }).listen(port, host);\n";

fn node_server(work: &Workdir, host: &str, port: u16) -> Proc {
    let server = Proc::spawn(
        "node http2 server",
        Command::new("node")
            .args(["-e", NODE_SERVER, host, &port.to_string()])
            .current_dir(work.path())
            .stdin(Stdio::null()),
    );
    let start = Instant::now();
    while TcpStream::connect((host, port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "node did not listen"
        );
        thread::sleep(Duration::from_millis(50));
    }
    server
}

/// curl over HTTP/2 (or `--http1.1`) to https://HOST:PORT/PATH.
fn curl_to(version: &str, host: &str, port: u16, path: &str) -> Command {
    let mut cmd = Command::new("curl");
    cmd.args(["-sk", version, "--max-time", "20"])
        .arg(format!("https://{host}:{port}/{path}"))
        .stdout(Stdio::null());
    cmd
}

#[test]
fn http2_headers_are_readable_in_text() {
    if !root_or_skip("http2_headers_are_readable_in_text") {
        return;
    }
    let work = Workdir::new();
    let port = free_port();
    let _server = node_server(&work, "127.0.0.1", port);
    let path = marker("h2text");

    let sniffer = Sniffer::start(&["-c", "curl"]);
    run_client("curl", &mut curl_to("--http2", "127.0.0.1", port, &path));
    let out = sniffer.stop();
    let rows = rows(&out.stdout);
    let request = with_data(&rows, &format!(":path: /{path}"));
    assert_eq!(request.len(), 1, "{}", out.stdout);
    assert_eq!(request[0].func, "WRITE/SEND");
    let data = &request[0].data;
    assert!(
        data.contains("HEADERS") && data.contains(":method: GET"),
        "{data}"
    );
    assert!(
        data.contains(&format!(":authority: 127.0.0.1:{port}")),
        "{data}"
    );
    let response = with_data(&rows, ":status: 200");
    assert_eq!(response.len(), 1, "{}", out.stdout);
    assert_eq!(response[0].func, "READ/RECV");
    assert!(
        response[0].data.contains("x-served-by: node-h2"),
        "{}",
        out.stdout
    );
    let body = with_data(&rows, &format!("body of /{path}"));
    assert_eq!(body.len(), 1, "the body once, as text:\n{}", out.stdout);
    assert_eq!(body[0].func, "READ/RECV");
}

/// Every frame of every event's `http` object.
fn frames(events: &[Value]) -> Vec<(&Value, &Value)> {
    events
        .iter()
        .flat_map(|e| {
            e["http"]["frames"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |f| (e, f))
        })
        .collect()
}

#[test]
fn http2_json_carries_an_http_object() {
    if !root_or_skip("http2_json_carries_an_http_object") {
        return;
    }
    let work = Workdir::new();
    let port = free_port();
    let _server = node_server(&work, "127.0.0.1", port);
    let path = marker("h2json");

    let sniffer = Sniffer::start(&["--format", "json", "-c", "curl"]);
    run_client("curl", &mut curl_to("--http2", "127.0.0.1", port, &path));
    let out = sniffer.stop();
    let events = json_events(&out.stdout);
    let frames = frames(&events);
    let (write, request) = frames
        .iter()
        .find(|(_, f)| f["url.path"] == format!("/{path}").as_str())
        .unwrap_or_else(|| panic!("no request frame in:\n{}", out.stdout));
    assert_eq!(write["direction"], "write");
    assert_eq!(write["http"]["network.protocol.version"], "2");
    assert_eq!(request["type"], "HEADERS");
    assert_eq!(request["http.request.method"], "GET");
    assert_eq!(request["server.address"], "127.0.0.1");
    let names: Vec<&str> = request["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|h| h["name"].as_str())
        .collect();
    assert!(
        names.contains(&":method") && names.contains(&":authority"),
        "{names:?}"
    );
    let (read, response) = frames
        .iter()
        .find(|(_, f)| f["http.response.status_code"] == 200)
        .unwrap_or_else(|| panic!("no response frame in:\n{}", out.stdout));
    assert_eq!(read["direction"], "read");
    assert!(
        response["headers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["name"] == "x-served-by" && h["value"] == "node-h2"),
        "{response}"
    );
    assert!(
        frames
            .iter()
            .any(|(_, f)| f["type"] == "DATA" && f["body"] == format!("body of /{path}\n").as_str()),
        "no DATA body in:\n{}",
        out.stdout
    );
}

/// A node HTTP/2 client: one request, then a second on the same connection when a line
/// comes on stdin. Both carry the same `x-same` header, which the second sends as a
/// dynamic-table index.
const NODE_CLIENT: &str = "const http2 = require('http2');\n\
     const [port, mark] = [process.argv[1], process.argv[2]];\n\
     const c = http2.connect('https://127.0.0.1:' + port, {rejectUnauthorized: false});\n\
     const get = (path, done) => { const r = c.request({':path': path, 'x-same': 'same-' + mark});\n\
       r.on('data', () => {}); r.on('end', done); r.end(); };\n\
     get('/first-' + mark, () => { console.log('first done');\n\
       process.stdin.once('data', () => get('/second-' + mark, () => c.close())); });\n";

#[test]
fn a_late_attach_marks_unknown_entries_and_invents_nothing() {
    if !root_or_skip("a_late_attach_marks_unknown_entries_and_invents_nothing") {
        return;
    }
    let work = Workdir::new();
    let port = free_port();
    let _server = node_server(&work, "127.0.0.1", port);
    let mark = marker("late");
    let mut client = Proc::spawn(
        "node http2 client",
        Command::new("node")
            .args(["-e", NODE_CLIENT, &port.to_string(), &mark])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped()),
    );
    let mut line = String::new();
    BufReader::new(client.child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "first done\n");

    let pid = client.pid().to_string();
    let sniffer = Sniffer::start(&["-p", &pid]);
    client
        .child
        .stdin
        .take()
        .unwrap()
        .write_all(b"go\n")
        .unwrap();
    assert!(client.wait_timeout(Duration::from_secs(20)).success());
    let out = sniffer.stop();
    let rows = rows(&out.stdout);
    let second = with_data(&rows, &format!(":path: /second-{mark}"));
    assert_eq!(second.len(), 1, "{}", out.stdout);
    let data = &second[0].data;
    assert!(
        data.contains(":method: GET"),
        "static entries are decoded: {data}"
    );
    assert!(data.contains("<unknown dynamic index"), "{data}");
    // The value of x-same was sent as an entry of the first request: it is unknown, and
    // if its name is shown its value is the right one.
    for field in data.split("  ").filter(|f| f.contains("x-same")) {
        assert_eq!(field.trim(), format!("x-same: same-{mark}"), "{data}");
    }
    assert!(
        !out.stdout.contains(&format!("/first-{mark}")),
        "{}",
        out.stdout
    );
}

/// tshark's one-line summaries of the packets `filter` matches, with no -d option.
fn tshark(pcap: &std::path::Path, filter: &str) -> String {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(pcap)
        .args(["-Y", filter])
        .output()
        .expect("tshark is installed");
    assert!(
        out.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn pcapng_dissects_http1_and_http2_on_port_443() {
    if !root_or_skip("pcapng_dissects_http1_and_http2_on_port_443") {
        return;
    }
    let work = Workdir::new();
    let hosts = ["127.0.0.1", "127.0.0.2"];
    let _servers: Vec<Proc> = hosts.iter().map(|h| node_server(&work, h, 443)).collect();
    let mark = marker("pcap443");
    let pcap = work.path().join("capture.pcapng");

    let sniffer = Sniffer::start(&["-c", "curl", "--pcap", pcap.to_str().unwrap()]);
    for host in hosts {
        run_client(
            "curl",
            &mut curl_to("--http1.1", host, 443, &format!("h1-{host}-{mark}")),
        );
        run_client(
            "curl",
            &mut curl_to("--http2", host, 443, &format!("h2-{host}-{mark}")),
        );
    }
    let out = sniffer.stop();
    assert!(out.status.success(), "{}", out.stderr);

    let requests = tshark(&pcap, "http.request");
    let headers = tshark(&pcap, "http2.header");
    for host in hosts {
        assert!(
            requests.contains(&format!("127.0.0.1 → {host}"))
                && requests.contains(&format!("GET /h1-{host}-{mark} HTTP/1.1")),
            "no HTTP/1.1 request to {host} in:\n{requests}"
        );
        assert!(
            headers.contains(&format!("GET /h2-{host}-{mark}")),
            "no HTTP/2 request to {host} in:\n{headers}"
        );
    }
    assert!(
        headers.contains("200 OK"),
        "no HTTP/2 response in:\n{headers}"
    );
    // The real ports stay: 443 on the server side of every HTTP packet.
    let ports = Command::new("tshark")
        .arg("-r")
        .arg(&pcap)
        .args([
            "-Y",
            "http2.header",
            "-T",
            "fields",
            "-e",
            "exported_pdu.dst_port",
        ])
        .output()
        .unwrap();
    let ports = String::from_utf8_lossy(&ports.stdout);
    assert!(ports.lines().any(|p| p == "443"), "{ports}");
}

#[test]
fn http_off_keeps_the_raw_bytes() {
    if !root_or_skip("http_off_keeps_the_raw_bytes") {
        return;
    }
    let work = Workdir::new();
    let port = free_port();
    let _server = node_server(&work, "127.0.0.1", port);
    let path = marker("h2off");

    let sniffer = Sniffer::start(&["--http", "off", "-c", "curl"]);
    run_client("curl", &mut curl_to("--http2", "127.0.0.1", port, &path));
    let out = sniffer.stop();
    assert!(out.stdout.contains("PRI * HTTP/2.0"), "{}", out.stdout);
    assert!(
        !out.stdout.contains("[PREFACE]") && !out.stdout.contains("[stream 1"),
        "{}",
        out.stdout
    );
    let rows = rows(&out.stdout);
    let body = with_data(&rows, &format!("body of /{path}"));
    assert_eq!(body.len(), 1, "{}", out.stdout);
    assert!(
        body[0].data.contains("\\x00"),
        "frame headers as escaped bytes: {}",
        body[0].data
    );
}
