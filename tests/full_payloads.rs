//! Every byte, never a silent loss: whole large calls, many threads at once, and loss
//! that is reported when the ring buffer is too small.

mod common;

use std::time::Duration;

use common::*;

/// Printable, non-repeating text, so a misplaced chunk cannot compare equal.
fn text_of_len(seed: &str, len: usize) -> String {
    let mut s = String::with_capacity(len + 64);
    let mut i = 0u64;
    while s.len() < len {
        s.push_str(&format!("{seed}:{i:010}|"));
        i += 1;
    }
    s.truncate(len);
    s
}

/// A python3 client that sends the work directory's file `payload` in one sendall.
fn send_payload_file(work: &Workdir, port: u16) -> Proc {
    run_client(
        "python3",
        python(&format!(
            "s = ctx.wrap_socket(socket.create_connection(('127.0.0.1', {port})))\n\
             s.sendall(open('payload', 'rb').read())\n\
             s.close()\n"
        ))
        .current_dir(work.path()),
    )
}

#[test]
fn one_mebibyte_response_is_captured_byte_exact() {
    if !root_or_skip("one_mebibyte_response_is_captured_byte_exact") {
        return;
    }
    let work = Workdir::new();
    let name = marker("big");
    let body = text_of_len(&name, 1 << 20);
    work.file(&name, body.as_bytes());
    let (_server, port) = https_server(&work);

    let sniffer = Sniffer::start(&["-c", "curl"]);
    let client = run_client("curl", &mut curl(port, &name));
    let out = sniffer.stop();
    let reads: String = rows(&out.stdout)
        .iter()
        .filter(|r| r.func == "READ/RECV" && r.pid == client.pid())
        .map(|r| {
            assert_eq!(r.end, "----- END DATA -----", "a read was cut");
            r.data.as_str()
        })
        .collect();
    let captured = reads.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    assert_eq!(captured.len(), body.len(), "captured body length");
    assert!(
        captured == body,
        "captured body differs from the served file"
    );
}

#[test]
fn one_mebibyte_write_is_one_whole_event() {
    if !root_or_skip("one_mebibyte_write_is_one_whole_event") {
        return;
    }
    let work = Workdir::new();
    let (_server, port) = sink_server(&work);
    let payload = text_of_len(&marker("bigwrite"), 1 << 20);
    work.file("payload", payload.as_bytes());

    let sniffer = Sniffer::start(&["-c", "python3"]);
    let client = send_payload_file(&work, port);
    let out = sniffer.stop();
    let rows = rows(&out.stdout);
    let writes: Vec<_> = rows
        .iter()
        .filter(|r| r.func == "WRITE/SEND" && r.pid == client.pid())
        .collect();
    assert_eq!(writes.len(), 1, "one call, one event");
    assert_eq!(writes[0].len, (1 << 20).to_string());
    assert!(writes[0].data == payload, "the 1 MiB write differs");
}

#[test]
fn many_threads_each_call_whole_and_attributed() {
    if !root_or_skip("many_threads_each_call_whole_and_attributed") {
        return;
    }
    const THREADS: usize = 64;
    const MESSAGES: usize = 200;
    const SIZE: usize = 20 * 1024;
    let work = Workdir::new();
    let (_server, port) = sink_server(&work);
    let tag = marker("mt");
    // Each message names the thread (its kernel TID) and its index, then filler that
    // repeats the same, so that a chunk of another message cannot pass for it.
    let client_code = format!(
        "def run():\n\
         \x20   s = ctx.wrap_socket(socket.create_connection(('127.0.0.1', {port})))\n\
         \x20   tid = threading.get_native_id()\n\
         \x20   for i in range({MESSAGES}):\n\
         \x20       head = '{tag}:%d:%d:' % (tid, i)\n\
         \x20       s.sendall((head * ({SIZE} // len(head) + 1))[:{SIZE}].encode())\n\
         \x20   s.close()\n\
         ts = [threading.Thread(target=run) for _ in range({THREADS})]\n\
         for t in ts: t.start()\n\
         for t in ts: t.join()\n"
    );

    let sniffer = Sniffer::start(&["-x", "-c", "python3"]);
    let mut client = Proc::spawn("python3 threads", &mut python(&client_code));
    assert!(client.wait_timeout(Duration::from_secs(120)).success());
    let out = sniffer.stop();

    let mut seen = std::collections::HashSet::new();
    for row in rows(&out.stdout)
        .iter()
        .filter(|r| r.func == "WRITE/SEND" && r.data.starts_with(&tag))
    {
        let tid_column: u32 = row.columns[6].parse().unwrap();
        let head: Vec<&str> = row.data.splitn(4, ':').collect();
        let (tid, index): (u32, usize) = (head[1].parse().unwrap(), head[2].parse().unwrap());
        let prefix = format!("{tag}:{tid}:{index}:");
        let expected: String = prefix
            .repeat(SIZE / prefix.len() + 1)
            .chars()
            .take(SIZE)
            .collect();
        assert_eq!(row.len, SIZE.to_string());
        let differs_at = row
            .data
            .bytes()
            .zip(expected.bytes())
            .position(|(a, b)| a != b);
        assert!(
            row.data == expected,
            "message {tid}/{index} was mixed or cut: {} bytes, first difference at {differs_at:?}, {}; stderr:\n{}",
            row.data.len(),
            row.end,
            out.stderr
        );
        assert_eq!(
            tid_column, tid,
            "message {index} attributed to the wrong thread"
        );
        assert!(
            seen.insert((tid, index)),
            "message {tid}/{index} printed twice"
        );
    }
    assert_eq!(
        seen.len(),
        THREADS * MESSAGES,
        "messages captured; stderr:\n{}",
        out.stderr
    );
}

#[test]
fn loss_is_reported_and_calls_are_marked() {
    if !root_or_skip("loss_is_reported_and_calls_are_marked") {
        return;
    }
    let work = Workdir::new();
    let (_server, port) = sink_server(&work);
    let payload = text_of_len(&marker("lossy"), 64 * 1024);
    work.file("payload", payload.as_bytes());

    // A ring of 8 KiB takes chunks of 2 KiB: a 64 KiB call, sent at once, overruns it.
    let sniffer = Sniffer::start(&["-c", "python3", "--ring-buffer-size", "8192"]);
    let client = send_payload_file(&work, port);
    let out = sniffer.stop();

    // One accounting: the warnings as they came, the summary, and the calls' markers plus
    // what never reached user space all count the same bytes.
    let warned: u64 = out
        .status_lines("warning")
        .iter()
        .filter_map(|w| w["undelivered_bytes"].as_u64())
        .sum();
    let summary = out.summary();
    let undelivered = summary["undelivered_bytes"].as_u64().unwrap();
    assert!(undelivered > 0, "no loss reported:\n{}", out.stderr);
    assert_eq!(warned, undelivered, "{}", out.stderr);
    let rows = rows(&out.stdout);
    let marked: u64 = rows
        .iter()
        .filter_map(|r| r.end.split("(INCOMPLETE, ").nth(1))
        .filter_map(|rest| rest.split(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(
        marked + summary["unannounced_bytes"].as_u64().unwrap(),
        undelivered,
        "{}",
        out.stderr
    );
    let write = rows
        .iter()
        .find(|r| r.func == "WRITE/SEND" && r.pid == client.pid())
        .expect("the call is shown");
    assert_eq!(write.len, (64 * 1024).to_string());
    // What arrived is the start of the call, and the marker counts exactly the rest.
    let missing = format!(
        "(INCOMPLETE, {} bytes undelivered)",
        64 * 1024 - write.data.len()
    );
    assert!(write.end.contains(&missing), "{}", write.end);
    assert!(payload.starts_with(&write.data), "{}", write.data);
}
