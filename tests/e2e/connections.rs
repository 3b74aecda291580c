//! Connection objects fed through memory (node's https, Python's asyncio): their calls
//! make no socket syscall, and are tied to their socket by what their thread does
//! around them. Every event must carry the right socket or none, never another one.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;
use serde_json::Value;

fn node_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/node")
        .join(name)
}

/// node running a fixture in the work directory (where the certificate is), waiting
/// for a line on stdin before its first TLS call.
fn gated_node(work: &Workdir, script: &str, args: &[&str]) -> Proc {
    Proc::spawn(
        script,
        Command::new("node")
            .arg(node_fixture(script))
            .args(args)
            .current_dir(work.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit()),
    )
}

/// Lets a gated process go, and waits for it to finish.
fn release_and_wait(proc: &mut Proc) {
    writeln!(proc.child.stdin.take().unwrap()).unwrap();
    let status = proc.wait_timeout(Duration::from_secs(60));
    assert!(status.success(), "{} failed: {status}", proc.name);
}

/// The events of `pid` whose payload contains `needle`.
fn of<'a>(events: &'a [Value], pid: u32, needle: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["pid"] == pid && e["data"].as_str().unwrap_or("").contains(needle))
        .collect()
}

/// The one event of `pid` in `direction` whose payload contains `needle`.
fn one<'a>(events: &'a [Value], pid: u32, direction: &str, needle: &str) -> &'a Value {
    let found: Vec<_> = of(events, pid, needle)
        .into_iter()
        .filter(|e| e["direction"] == direction)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "not one {direction} of {needle} by {pid}: {found:?}"
    );
    found[0]
}

/// Asserts that an event carries a socket (fd, local and remote address), and returns
/// its (local, remote) addresses.
fn socket(e: &Value) -> (String, String) {
    assert!(e["fd"].as_i64().is_some_and(|fd| fd >= 0), "no fd: {e}");
    let addr = |key: &str| {
        e[key]
            .as_str()
            .unwrap_or_else(|| panic!("no {key}: {e}"))
            .to_string()
    };
    (addr("laddr"), addr("raddr"))
}

/// The numbers (ports) that follow `text` in an event's payload, up to its end.
fn numbers_after(e: &Value, text: &str) -> Vec<u16> {
    let data = e["data"].as_str().unwrap();
    let at = data.find(text).unwrap() + text.len();
    data[at..]
        .split_whitespace()
        .map(|n| n.parse().unwrap_or_else(|_| panic!("{e}")))
        .collect()
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':').unwrap().1.parse().unwrap()
}

/// tshark's view of the HTTP packets: (src port, dst port, request uri, response body).
fn pcap_http(pcap: &Path) -> Vec<(u16, u16, String, String)> {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(pcap)
        .args(["-Y", "http", "-T", "fields"])
        .args(["-e", "exported_pdu.src_port", "-e", "exported_pdu.dst_port"])
        .args(["-e", "http.request.uri", "-e", "http.file_data"])
        .output()
        .expect("tshark is installed");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    shown
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let port = |i: usize| f.get(i).and_then(|p| p.parse().ok()).unwrap_or(0);
            let text = |i: usize| f.get(i).unwrap_or(&"").to_string();
            (port(0), port(1), text(2), text(3))
        })
        .collect()
}

#[test]
fn node_https_client_and_server_carry_their_socket() {
    if !root_or_skip("node_https_client_and_server_carry_their_socket") {
        return;
    }
    let work = Workdir::new();
    let script = node_fixture("https_server.js");
    let (server, port) = server("node https server", &work, |port| {
        let mut cmd = Command::new("node");
        cmd.arg(&script).arg(port.to_string());
        cmd
    });
    let path = marker("node-conn");
    let mut client = gated_node(&work, "https_client.js", &[&port.to_string(), &path, "2"]);
    let pcap = work.path().join("node.pcapng");

    // No flag but these: what a new user types.
    let sniffer = Sniffer::start(&["--format", "json", "--pcap", pcap.to_str().unwrap()]);
    release_and_wait(&mut client);
    let out = sniffer.stop();
    assert!(out.status.success(), "{}", out.stderr);
    let events = json_events(&out.stdout);

    let mut exchanges = Vec::new();
    for i in 0..2 {
        let (uri, answer) = (format!("/{path}-{i}"), format!("served /{path}-{i} "));
        let pids = (client.pid(), server.pid());
        let client_port = node_exchange(&events, pids, port, &uri, &answer);
        exchanges.push((uri, answer, client_port));
    }
    assert_ne!(exchanges[0].2, exchanges[1].2, "two connections");
    assert_exchanges_captured(&pcap, port, &exchanges);
}

/// The four calls of one node request (the client's write and read, the server's read
/// and write), each with the connection's socket, the client's port being the one the
/// server saw; returns that port.
fn node_exchange(events: &[Value], pids: (u32, u32), port: u16, uri: &str, answer: &str) -> u16 {
    let (client, server) = pids;
    let request = format!("GET {uri} ");
    let client_write = socket(one(events, client, "write", &request));
    let client_read = socket(one(events, client, "read", answer));
    let server_read = socket(one(events, server, "read", &request));
    let server_write = socket(one(events, server, "write", answer));
    let server_addr = format!("127.0.0.1:{port}");
    assert_eq!(client_write.1, server_addr);
    assert!(client_write.0.starts_with("127.0.0.1:"), "{client_write:?}");
    assert_eq!(client_read, client_write);
    assert_eq!(server_read, (server_addr, client_write.0.clone()));
    assert_eq!(server_write, server_read);
    let seen = format!("{answer}to port ");
    let seen = numbers_after(one(events, server, "write", &seen), &seen);
    assert_eq!(seen, [port_of(&client_write.0)]);
    port_of(&client_write.0)
}

/// In the capture, each exchange's request twice (written by the client, read by the
/// server) from the client's port to the server's, and its answer twice the other way.
/// An exchange is (request uri, text of the answer, client port).
fn assert_exchanges_captured(pcap: &Path, port: u16, exchanges: &[(String, String, u16)]) {
    let packets = pcap_http(pcap);
    for (uri, answer, client_port) in exchanges {
        let requests: Vec<_> = packets.iter().filter(|p| &p.2 == uri).collect();
        assert_eq!(requests.len(), 2, "{packets:?}");
        assert!(requests.iter().all(|p| (p.0, p.1) == (*client_port, port)));
        let answers: Vec<_> = packets.iter().filter(|p| p.3.contains(answer)).collect();
        assert_eq!(answers.len(), 2, "{packets:?}");
        assert!(answers.iter().all(|p| (p.0, p.1) == (port, *client_port)));
    }
}

/// Python's asyncio: `asyncio.open_connection(ssl=...)`, over ssl.MemoryBIO.
const ASYNCIO_CLIENT: &str = "import asyncio, ssl, sys\n\
     async def main(port, path):\n\
     \x20   ctx = ssl.create_default_context()\n\
     \x20   ctx.check_hostname = False\n\
     \x20   ctx.verify_mode = ssl.CERT_NONE\n\
     \x20   for i in range(2):\n\
     \x20       r, w = await asyncio.open_connection('127.0.0.1', port, ssl=ctx)\n\
     \x20       w.write(b'GET /%s-%d HTTP/1.0\\r\\n\\r\\n' % (path.encode(), i))\n\
     \x20       await w.drain()\n\
     \x20       await r.read()\n\
     \x20       w.close()\n\
     \x20       await w.wait_closed()\n\
     asyncio.run(main(int(sys.argv[1]), sys.argv[2]))\n";

#[test]
fn python_asyncio_client_carries_its_socket() {
    if !root_or_skip("python_asyncio_client_carries_its_socket") {
        return;
    }
    let work = Workdir::new();
    let path = marker("asyncio");
    for i in 0..2 {
        work.file(
            &format!("{path}-{i}"),
            format!("body of {path}-{i}\n").as_bytes(),
        );
    }
    let (_server, port) = python_https_server(&work);
    let pcap = work.path().join("asyncio.pcapng");

    let sniffer = Sniffer::start(&["--format", "json", "--pcap", pcap.to_str().unwrap()]);
    let client = run_client(
        "python3 asyncio",
        Command::new("python3")
            .args(["-c", ASYNCIO_CLIENT, &port.to_string(), &path])
            .stdout(Stdio::null()),
    );
    let out = sniffer.stop();
    assert!(out.status.success(), "{}", out.stderr);
    let events = json_events(&out.stdout);

    let mut exchanges = Vec::new();
    for i in 0..2 {
        let (uri, body) = (format!("/{path}-{i}"), format!("body of {path}-{i}"));
        let write = one(&events, client.pid(), "write", &format!("GET {uri} "));
        assert_eq!(write["func"], "SSL_write_ex");
        let (local, remote) = socket(write);
        assert_eq!(remote, format!("127.0.0.1:{port}"), "{}", out.stdout);
        let read = one(&events, client.pid(), "read", &body);
        assert_eq!(socket(read), (local.clone(), remote), "{}", out.stdout);
        exchanges.push((uri, body, port_of(&local)));
    }
    // The second connection's SSL object is often the first one's memory again: its
    // tie ended with SSL_free, and the new one learnt its own.
    assert_ne!(exchanges[0].2, exchanges[1].2, "two connections");
    // The server (Python's blocking ssl) is in the capture too, with its socket.
    assert_exchanges_captured(&pcap, port, &exchanges);
}

#[test]
fn one_event_loop_serving_many_connections_ties_each_to_its_own() {
    if !root_or_skip("one_event_loop_serving_many_connections_ties_each_to_its_own") {
        return;
    }
    const CONNECTIONS: usize = 200;
    let work = Workdir::new();
    let mark = marker("one-loop");
    let mut node = gated_node(&work, "one_loop.js", &[&CONNECTIONS.to_string(), &mark]);
    wait_for_mapping(node.pid(), "node");

    let sniffer = Sniffer::start(&["--format", "json", "-p", &node.pid().to_string()]);
    release_and_wait(&mut node);
    let out = sniffer.wait_exit(Duration::from_secs(20));
    let events = json_events(&out.stdout);

    // Each connection's four calls, told apart by the request's path, each against the
    // ports the server wrote in its answer: the client's calls go from the client port
    // to the server's, the server's the other way.
    for i in 0..CONNECTIONS {
        let request = format!("GET /{mark}-{i} ");
        let answer = format!("{mark} answers /{mark}-{i} on ");
        let ports = numbers_after(one(&events, node.pid(), "write", &answer), &answer);
        let (client, server) = ((ports[0], ports[1]), (ports[1], ports[0]));
        for (direction, needle, expected) in [
            ("write", &request, client),
            ("read", &request, server),
            ("write", &answer, server),
            ("read", &answer, client),
        ] {
            let call = one(&events, node.pid(), direction, needle);
            let (local, remote) = socket(call);
            assert_eq!((port_of(&local), port_of(&remote)), expected, "{call}");
        }
    }
}

/// The held handshake's ports, as the fixture prints them when it is done.
fn held_ports(node: &mut Proc) -> (u16, u16, u16) {
    let mut text = String::new();
    std::io::Read::read_to_string(node.child.stdout.as_mut().unwrap(), &mut text).unwrap();
    let v: Value = serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"));
    let port = |k: &str| v[k].as_u64().unwrap() as u16;
    (port("x"), port("plain"), port("relay"))
}

/// The one event of `pid` in `direction` whose payload starts with `prefix`.
fn starting<'a>(events: &'a [Value], pid: u32, direction: &str, prefix: &str) -> &'a Value {
    let found: Vec<_> = of(events, pid, prefix)
        .into_iter()
        .filter(|e| e["direction"] == direction && e["data"].as_str().unwrap().starts_with(prefix))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "not one {direction} of {prefix} by {pid}: {found:?}"
    );
    found[0]
}

#[test]
fn a_plain_socket_around_a_tls_call_is_never_taken_for_its_socket() {
    if !root_or_skip("a_plain_socket_around_a_tls_call_is_never_taken_for_its_socket") {
        return;
    }
    let work = Workdir::new();
    for answer in ["plain", "record"] {
        let mark = marker(&format!("held-{answer}"));
        let mut node = gated_node(&work, "held_handshake.js", &[&mark, answer]);
        wait_for_mapping(node.pid(), "node");
        let sniffer = Sniffer::start(&["--format", "json", "-p", &node.pid().to_string()]);
        writeln!(node.child.stdin.take().unwrap()).unwrap();
        let (x, plain, relay) = held_ports(&mut node);
        assert!(node.wait_timeout(Duration::from_secs(20)).success());
        let out = sniffer.wait_exit(Duration::from_secs(20));
        let events = json_events(&out.stdout);
        // X's two calls: its write of what came over P, and its read of the echo.
        let x_calls = [
            starting(
                &events,
                node.pid(),
                "write",
                &format!("{mark} via plain hello"),
            ),
            starting(&events, node.pid(), "read", &format!("{mark} echo")),
        ];
        for call in x_calls {
            if call["fd"].is_null() {
                // Not tied: only where P's answer looks like TLS, which makes the two
                // sides of X disagree.
                assert_eq!(answer, "record", "{call}");
                continue;
            }
            let (local, remote) = socket(call);
            let ports = (port_of(&local), port_of(&remote));
            assert_eq!(ports, (x, relay), "P is {plain}: {call}");
        }
    }
}
