//! JSON lines: one object per event, with stable field names (see README).

use std::borrow::Cow;
use std::io::{self, Write};

use base64::Engine;
use serde::Serialize;

use crate::bpf::types::direction;
use crate::event::{Event, Handshake};
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
    truncated: u64,
    lost_bytes: u64,
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

impl<W: Write> Output for Json<W> {
    fn event(&mut self, ev: &Event) -> io::Result<()> {
        let (encoding, data) = match std::str::from_utf8(&ev.data) {
            Ok(text) => ("utf8", Cow::Borrowed(text)),
            Err(_) => (
                "base64",
                Cow::Owned(base64::engine::general_purpose::STANDARD.encode(&ev.data)),
            ),
        };
        let conn = ev.conn();
        let record = Record {
            ts_ns: ev.hdr.ts_ns,
            func: ev.func_name(),
            direction: match ev.hdr.dir {
                direction::DIR_READ => "read",
                direction::DIR_WRITE => "write",
                _ => "handshake",
            },
            comm: ev.comm(),
            pid: ev.hdr.pid,
            tid: ev.hdr.tid,
            uid: ev.hdr.uid,
            len: ev.hdr.len,
            latency_ns: ev.hdr.latency_ns,
            fd: conn.fd,
            laddr: conn.local.map(|a| a.to_string()),
            raddr: conn.remote.map(|a| a.to_string()),
            truncated: ev.truncated(),
            lost_bytes: ev.missing,
            handshake: ev.handshake.map(|h| match h {
                Handshake::Done => "done",
                Handshake::Failed => "failed",
                Handshake::NotCompleted => "not_completed",
            }),
            ret: ev.handshake.map(|_| ev.hdr.ret),
            encoding,
            data,
        };
        serde_json::to_writer(&mut self.out, &record)?;
        self.out.write_all(b"\n")
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf::types::event_hdr;

    fn render(data: &[u8]) -> serde_json::Value {
        let mut hdr = event_hdr {
            len: data.len() as u64,
            captured: data.len() as u64,
            dir: direction::DIR_WRITE,
            ..Default::default()
        };
        // The BPF side says "no fd seen" with -1.
        hdr.conn.fd = -1;
        let ev = Event {
            hdr,
            data: Cow::Borrowed(data),
            missing: 0,
            handshake: None,
        };
        let mut json = Json::new(Vec::new());
        json.event(&ev).unwrap();
        let out = json.into_inner();
        assert_eq!(
            out.iter().filter(|&&b| b == b'\n').count(),
            1,
            "one line per event"
        );
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn text_payload_is_a_string() {
        let v = render(b"GET / HTTP/1.1\r\n\x1b");
        assert_eq!(v["encoding"], "utf8");
        assert_eq!(v["data"], "GET / HTTP/1.1\r\n\x1b");
        assert_eq!(v["direction"], "write");
        assert_eq!(v["fd"], serde_json::Value::Null);
    }

    #[test]
    fn binary_payload_is_base64() {
        let v = render(b"\xff\x00\x01");
        assert_eq!(v["encoding"], "base64");
        assert_eq!(v["data"], "/wAB");
    }
}
