//! JSON lines: one object per event, with stable field names (see README).

use std::borrow::Cow;
use std::io::{self, Write};

use base64::Engine;
use serde::Serialize;
use serde_json::ser::Formatter;

use crate::event::Event;
use crate::output::payload::is_bidi_control;
use crate::output::Output;

#[derive(Serialize)]
struct Record<'a> {
    ts_ns: u64,
    func: &'static str,
    direction: &'static str,
    comm: Cow<'a, str>,
    pid: u32,
    tid: u32,
    uid: u32,
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

pub struct Json<W: Write> {
    out: W,
}

impl<W: Write> Json<W> {
    pub fn new(out: W) -> Self {
        Json { out }
    }

    #[cfg(test)]
    pub fn into_inner(self) -> W {
        self.out
    }
}

/// serde_json's compact output, except that DEL, C1 controls and bidirectional controls
/// inside strings are written as `\uXXXX` too: JSON allows them raw, but a terminal
/// running `jq` or `cat` on the output would obey them.
struct SafeStrings;

impl Formatter for SafeStrings {
    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let unsafe_char =
            |c: char| c == '\u{7f}' || ('\u{80}'..='\u{9f}').contains(&c) || is_bidi_control(c);
        let mut rest = fragment;
        while let Some(at) = rest.find(unsafe_char) {
            writer.write_all(&rest.as_bytes()[..at])?;
            let c = rest[at..]
                .chars()
                .next()
                .expect("find returned a char boundary");
            write!(writer, "\\u{:04x}", c as u32)?;
            rest = &rest[at + c.len_utf8()..];
        }
        writer.write_all(rest.as_bytes())
    }
}

impl<W: Write> Output for Json<W> {
    fn event(&mut self, ev: &Event) -> io::Result<()> {
        let (encoding, data) = match std::str::from_utf8(&ev.data) {
            Ok(text) => ("utf8", Cow::Borrowed(text)),
            Err(_) => (
                "base64",
                Cow::Owned(base64::engine::general_purpose::STANDARD.encode(&ev.data)),
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
        let mut ser = serde_json::Serializer::with_formatter(&mut self.out, SafeStrings);
        record.serialize(&mut ser)?;
        self.out.write_all(b"\n")
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::testing::event;
    use crate::event::{Comm, Handshake};

    fn render(ev: &Event) -> (String, serde_json::Value) {
        let mut json = Json::new(Vec::new());
        json.event(ev).unwrap();
        let out = String::from_utf8(json.into_inner()).unwrap();
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
}
