//! JSON lines: one object per event, with stable field names (see README).
//!
//! Written by hand rather than through serde: escaping the payload through serde_json
//! and a checking formatter took three quarters of the reader's time on large payloads.
//! The output is byte for byte what serde_json wrote (the tests hold it to that).

use std::io::{self, Write};
use std::net::SocketAddr;

use base64::Engine;
use serde::Serialize;

use super::http_json;
use super::{write_addr, Batch, Formatter};
use crate::escape::{clean_run, first_char, is_bidi_control};
use crate::event::Event;
use crate::proto::Http;

/// Each line is built straight into the output's batch, payload included: no line of
/// its own that would be copied again.
#[derive(Default)]
pub struct Json;

impl Json {
    pub fn new() -> Self {
        Json
    }
}

/// The batch, whose line being built starts at `start`.
struct Line<'a> {
    batch: &'a mut Batch,
    start: usize,
}

impl std::ops::Deref for Line<'_> {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        self.batch
    }
}

impl std::ops::DerefMut for Line<'_> {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        self.batch
    }
}

/// `"key":` after the first field's `{` or a `,`.
fn key(line: &mut Line, name: &str) {
    let first = line.len() == line.start;
    line.push(if first { b'{' } else { b',' });
    line.push(b'"');
    line.extend_from_slice(name.as_bytes());
    line.extend_from_slice(b"\":");
}

fn int(line: &mut Line, name: &str, value: impl itoa::Integer) {
    key(line, name);
    line.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

fn string(line: &mut Line, name: &str, value: &str) {
    key(line, name);
    escape_str(line, value);
}

fn null(line: &mut Line, name: &str) {
    key(line, name);
    line.extend_from_slice(b"null");
}

/// An address as a string, or null. Written in place: digits, dots, colons and brackets
/// need no escape, and a String per event and address was a measurable part of a row.
fn addr(line: &mut Line, name: &str, value: Option<SocketAddr>) {
    match value {
        Some(a) => {
            key(line, name);
            line.push(b'"');
            write_addr(line, a);
            line.push(b'"');
        }
        None => null(line, name),
    }
}

/// The call's cgroup (its id, and its path and container id or null when unknown),
/// after OpenTelemetry's `container.id`.
fn cgroup(line: &mut Line, ev: &Event) {
    int(line, "cgroup_id", ev.call.cgroup_id);
    let known = ev.cgroup.as_deref();
    match known {
        Some(cg) => string(line, "cgroup", &String::from_utf8_lossy(&cg.path)),
        None => null(line, "cgroup"),
    }
    match known.and_then(|cg| cg.container_id.as_deref()) {
        Some(id) => string(line, "container.id", id),
        None => null(line, "container.id"),
    }
}

/// A JSON string as serde_json writes it (`\"`, `\\`, the short escapes, other C0
/// controls as `\u00XX`), except that DEL, C1 controls and bidirectional controls are
/// written as `\uXXXX` too: JSON allows them raw, but a terminal running `jq` or `cat`
/// on the output would obey them.
fn escape_str(line: &mut Vec<u8>, s: &str) {
    escape_utf8(line, s.as_bytes()).expect("a str is UTF-8");
}

/// Bytes that are not UTF-8 cannot be a JSON string.
#[derive(Debug)]
struct NotUtf8;

/// As `escape_str`, for bytes not yet known to be UTF-8: the escape scan checks them on
/// the way, so that a payload is read once, not once to validate and once to escape.
/// On Err, `line` holds part of the string and must be cut back by the caller.
fn escape_utf8(line: &mut Vec<u8>, bytes: &[u8]) -> Result<(), NotUtf8> {
    line.push(b'"');
    let (mut i, mut clean_from) = (0, 0);
    while i < bytes.len() {
        i += clean_run(&bytes[i..], stops_string);
        let Some(&b) = bytes.get(i) else { break };
        let (c, escape): (char, Option<(&[u8], u32)>) = match b {
            b'"' => ('"', Some((b"\\\"", 0))),
            b'\\' => ('\\', Some((b"\\\\", 0))),
            b'\n' => ('\n', Some((b"\\n", 0))),
            b'\r' => ('\r', Some((b"\\r", 0))),
            b'\t' => ('\t', Some((b"\\t", 0))),
            0x08 => ('\u{8}', Some((b"\\b", 0))),
            0x0c => ('\u{c}', Some((b"\\f", 0))),
            ..0x80 => (char::from(b), Some((b"", u32::from(b)))),
            _ => {
                let c = first_char(&bytes[i..bytes.len().min(i + 4)]).ok_or(NotUtf8)?;
                let unsafe_char = ('\u{80}'..='\u{9f}').contains(&c) || is_bidi_control(c);
                (c, unsafe_char.then_some((b"", c as u32)))
            }
        };
        let width = c.len_utf8();
        if let Some((short, code)) = escape {
            line.extend_from_slice(&bytes[clean_from..i]);
            if short.is_empty() {
                line.extend_from_slice(format!("\\u{code:04x}").as_bytes());
            } else {
                line.extend_from_slice(short);
            }
            clean_from = i + width;
        }
        i += width;
    }
    line.extend_from_slice(&bytes[clean_from..]);
    line.push(b'"');
    Ok(())
}

/// serde_json's compact output, with DEL, C1 and bidirectional controls escaped as
/// `escape_str` does. For the `http` object: rare and nested, where serde's derive is
/// worth its cost; the per-event fields stay hand-written.
struct SafeStrings;

impl serde_json::ser::Formatter for SafeStrings {
    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut clean_from = 0;
        for (i, c) in fragment.char_indices() {
            if c == '\u{7f}' || ('\u{80}'..='\u{9f}').contains(&c) || is_bidi_control(c) {
                writer.write_all(&fragment.as_bytes()[clean_from..i])?;
                write!(writer, "\\u{:04x}", c as u32)?;
                clean_from = i + c.len_utf8();
            }
        }
        writer.write_all(&fragment.as_bytes()[clean_from..])
    }
}

impl Json {
    /// Appends the event's line to `out`.
    fn build(&self, ev: &Event, http: Option<&Http>, out: &mut Batch) -> io::Result<()> {
        let c = &ev.call;
        let start = out.len();
        let line = &mut Line { batch: out, start };
        int(line, "ts_ns", c.start_ns);
        string(line, "func", c.func.name);
        string(line, "direction", c.direction.name());
        string(line, "comm", &String::from_utf8_lossy(c.comm.bytes()));
        int(line, "pid", c.pid);
        int(line, "tid", c.tid);
        int(line, "uid", c.uid);
        cgroup(line, ev);
        int(line, "len", c.len);
        int(line, "latency_ns", c.latency_ns);
        match c.conn.fd {
            Some(fd) => int(line, "fd", fd),
            None => null(line, "fd"),
        }
        addr(line, "laddr", c.conn.local);
        addr(line, "raddr", c.conn.remote);
        int(line, "truncated_bytes", ev.truncated());
        int(line, "undelivered_bytes", ev.undelivered);
        if let Some(h) = ev.handshake {
            string(line, "handshake", h.name());
            int(line, "ret", c.ret);
        }
        let mark = line.batch.mark();
        string(line, "encoding", "utf8");
        key(line, "data");
        if needs_no_escape(&ev.data) {
            // Written as it is: from where it is, when it can be.
            line.push(b'"');
            line.batch.payload(&ev.data, 0..ev.data.len());
            line.push(b'"');
        } else if escape_utf8(line, &ev.data).is_err() {
            line.batch.rollback(mark);
            string(line, "encoding", "base64");
            key(line, "data");
            base64_str(line, &ev.data);
        }
        if let Some(decoded) = http {
            key(line, "http");
            let mut ser = serde_json::Serializer::with_formatter(&mut **line, SafeStrings);
            http_json::json(decoded).serialize(&mut ser)?;
        }
        line.extend_from_slice(b"}\n");
        Ok(())
    }
}

fn base64_str(line: &mut Vec<u8>, data: &[u8]) {
    line.push(b'"');
    let start = line.len();
    let n = base64::encoded_len(data.len(), true).expect("a payload's base64 fits in memory");
    line.resize(start + n, 0);
    let written = base64::engine::general_purpose::STANDARD
        .encode_slice(data, &mut line[start..])
        .expect("the room was sized by encoded_len");
    line.truncate(start + written);
    line.push(b'"');
}

impl Formatter for Json {
    fn event(&mut self, ev: &Event, http: Option<&Http>, out: &mut Batch) -> io::Result<()> {
        let start = out.mark();
        let built = self.build(ev, http, out);
        if built.is_err() {
            // No half line is left for the next one to follow.
            out.rollback(start);
        }
        built
    }
}

/// Whether `bytes` are a JSON string's content as they are: printable ASCII without `"`
/// or `\`.
fn needs_no_escape(bytes: &[u8]) -> bool {
    clean_run(bytes, stops_string) == bytes.len()
}

/// The bytes a JSON string cannot hold as they are (or that `escape_str` writes as
/// `\uXXXX`, or that start a multibyte character).
fn stops_string(b: u8) -> bool {
    (b < 0x20) | (b == b'"') | (b == b'\\') | (b >= 0x7f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    use crate::event::testing::event;
    use crate::event::{Comm, Handshake};

    fn render(ev: &Event) -> (String, serde_json::Value) {
        render_http(ev, None)
    }

    fn render_http(ev: &Event, http: Option<&Http>) -> (String, serde_json::Value) {
        let mut batch = Batch::default();
        Json::new().event(ev, http, &mut batch).unwrap();
        let mut out = Vec::new();
        batch.write_to(&mut out).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert_eq!(out.matches('\n').count(), 1, "one line per event");
        let value = serde_json::from_str(&out).unwrap();
        (out, value)
    }

    #[test]
    fn text_payload_is_a_string() {
        let (_, v) = render(&event("SSL_write", b"GET / HTTP/1.1\r\n\x1b"));
        assert_eq!(v["encoding"], "utf8");
        assert_eq!(v["data"], "GET / HTTP/1.1\r\n\x1b");
        assert_eq!(v["direction"], "write");
        assert_eq!(v["fd"], serde_json::Value::Null);
    }

    #[test]
    fn binary_payload_is_base64() {
        let (_, v) = render(&event("SSL_read", b"\xff\x00\x01"));
        assert_eq!(v["encoding"], "base64");
        assert_eq!(v["data"], "/wAB");
    }

    #[test]
    fn bytes_found_not_utf8_after_escapes_make_the_whole_payload_base64() {
        // Text, escapes and a valid character first: what was escaped must not remain.
        let data = b"ab\"\n\xc3\xa9\xc3\x28";
        let (line, v) = render(&event("SSL_read", data));
        assert_eq!(v["encoding"], "base64");
        assert_eq!(v["data"], "YWIiCsOpwyg=");
        assert_eq!(line.matches("\"data\"").count(), 1, "{line}");
        assert_eq!(line.matches("\"encoding\"").count(), 1, "{line}");
    }

    #[test]
    fn no_raw_control_or_bidi_character_reaches_the_line() {
        let data = "a\u{7f}b\u{9b}c\u{202e}d\u{e9}".as_bytes();
        let mut ev = event("SSL_read", data);
        ev.call.comm = Comm::new(b"x\x1b\x07\n");
        let (line, v) = render(&ev);
        assert!(
            line.trim_end()
                .chars()
                .all(|c| !c.is_control() && !is_bidi_control(c)),
            "{line:?}"
        );
        assert!(line.contains(r"a\u007fb\u009bc\u202ed"), "{line}");
        assert_eq!(v["data"], "a\u{7f}b\u{9b}c\u{202e}d\u{e9}");
        assert_eq!(v["comm"], "x\x1b\x07\n");
    }

    /// An event as serde_json writes it, for `reference`.
    #[derive(serde::Serialize)]
    struct Record<'a> {
        ts_ns: u64,
        func: &'static str,
        direction: &'static str,
        comm: Cow<'a, str>,
        pid: u32,
        tid: u32,
        uid: u32,
        cgroup_id: u64,
        cgroup: Option<Cow<'a, str>>,
        #[serde(rename = "container.id")]
        container_id: Option<&'a str>,
        len: u64,
        latency_ns: u64,
        fd: Option<i32>,
        laddr: Option<String>,
        raddr: Option<String>,
        truncated_bytes: u64,
        undelivered_bytes: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        handshake: Option<&'static str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        ret: Option<i64>,
        encoding: &'static str,
        data: Cow<'a, str>,
    }

    /// What the output was when serde_json wrote it: the hand-written line must not
    /// differ by a byte.
    fn reference(ev: &Event) -> String {
        use serde::Serialize;

        let (encoding, data) = match std::str::from_utf8(&ev.data) {
            Ok(text) => ("utf8", Cow::Borrowed(text)),
            Err(_) => (
                "base64",
                Cow::Owned(base64::engine::general_purpose::STANDARD.encode(&*ev.data)),
            ),
        };
        let c = &ev.call;
        let record = Record {
            ts_ns: c.start_ns,
            func: c.func.name,
            direction: c.direction.name(),
            comm: String::from_utf8_lossy(c.comm.bytes()),
            pid: c.pid,
            tid: c.tid,
            uid: c.uid,
            cgroup_id: c.cgroup_id,
            cgroup: ev
                .cgroup
                .as_ref()
                .map(|cg| String::from_utf8_lossy(&cg.path)),
            container_id: ev.cgroup.as_ref().and_then(|cg| cg.container_id.as_deref()),
            len: c.len,
            latency_ns: c.latency_ns,
            fd: c.conn.fd,
            laddr: c.conn.local.map(|a| a.to_string()),
            raddr: c.conn.remote.map(|a| a.to_string()),
            truncated_bytes: ev.truncated(),
            undelivered_bytes: ev.undelivered,
            handshake: ev.handshake.map(|h| h.name()),
            ret: ev.handshake.map(|_| c.ret),
            encoding,
            data,
        };
        let mut out = Vec::new();
        let mut ser = serde_json::Serializer::with_formatter(&mut out, SafeStrings);
        record.serialize(&mut ser).unwrap();
        out.push(b'\n');
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn output_is_what_serde_json_wrote() {
        let mut payloads: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".repeat(5),
            (0u8..=255).collect(),
            (0u8..=127).cycle().take(300).collect(),
            "\"q\" \\ \u{7f}\u{80}\u{9f}\u{a0} \u{61c}\u{200e}\u{202e}\u{2069}\u{206a} caf\u{e9} \u{2603}\u{1f600}"
                .repeat(3)
                .into_bytes(),
        ];
        // Every byte that needs care at every place of a 32-byte block and its edges.
        for pos in [0, 1, 31, 32, 33, 63, 64, 70] {
            for bad in [0u8, 0x08, 0x0c, b'\n', 0x1f, b'"', b'\\', 0x7f] {
                let mut data = vec![b'a'; 71];
                data[pos] = bad;
                payloads.push(data);
            }
        }
        // Large ones too, which a line refers to when they need no escape.
        payloads.push(b"0123456789abcdef".repeat(1024));
        payloads.push([&b"0123456789abcdef".repeat(1024)[..], b"\n"].concat());
        for data in payloads {
            let mut ev = event("SSL_read", &data);
            ev.call.comm = Comm::new(b"x\x1b\"\xff\n");
            ev.call.conn.fd = Some(-3);
            ev.call.conn.local = Some("[::1]:443".parse().unwrap());
            let (line, _) = render(&ev);
            assert_eq!(line, reference(&ev), "{data:?}");
            ev.data = crate::event::Payload::Shared(std::sync::Arc::new(data.clone()));
            assert_eq!(render(&ev).0, line, "shared: {data:?}");
            let path = format!("/x\u{202e}\n\\/docker-{}.scope", "a".repeat(64));
            ev.cgroup = Some(std::rc::Rc::new(crate::cgroup::Cgroup::new(path.into())));
            let (line, _) = render(&ev);
            assert_eq!(line, reference(&ev), "{data:?}");
        }
        let mut hs = event("SSL_do_handshake", b"");
        hs.call.ret = -1;
        hs.handshake = Some(Handshake::Failed);
        assert_eq!(render(&hs).0, reference(&hs));
    }

    #[test]
    fn handshakes_carry_their_verdict_and_return_value() {
        let mut ev = event("SSL_do_handshake", b"");
        ev.call.ret = -1;
        ev.handshake = Some(Handshake::Failed);
        let (_, v) = render(&ev);
        assert_eq!(
            (&v["direction"], &v["handshake"], &v["ret"]),
            (&"handshake".into(), &"failed".into(), &(-1).into())
        );
    }

    #[test]
    fn http_calls_carry_an_http_object_with_unsafe_characters_escaped() {
        use crate::proto::testing::{literals, raw_frame};
        let mut data = crate::proto::http2::PREFACE.to_vec();
        let block = literals(&[
            (":method", "GET"),
            (":path", "/x"),
            ("a", "b\u{7f}\u{202e}"),
        ]);
        data.extend(raw_frame(1, 0x5, 1, &block));
        let ev = event("SSL_write", &data);
        let key = crate::proto::ConnKey { pid: 1, conn: 2 };
        let http = crate::proto::Decoders::new().decode(key, crate::proto::Dir::Write, &data);
        let (line, v) = render_http(&ev, http.as_ref());
        let http = &v["http"];
        assert_eq!(http["network.protocol.version"], "2");
        assert_eq!(http["frames"][0]["http.request.method"], "GET");
        assert_eq!(http["frames"][0]["url.path"], "/x");
        assert!(line.contains(r#""value":"b\u007f\u202e""#), "{line}");
        let (_, plain) = render(&event("SSL_write", b"raw"));
        assert!(plain.get("http").is_none());
    }
}
