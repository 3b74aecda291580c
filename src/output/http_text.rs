//! Renders decoded HTTP (`proto::Http`) as text lines for the DATA block of the text
//! output. Pure: no state, no I/O of its own.

use std::io::{self, Write};

use super::http_names::{error_name, flag_names, hex, setting_name, type_name};
use crate::escape::escape;
use crate::proto::hpack::{Field, Name};
use crate::proto::http2::{self, kind, Frame, Header, Payload};
use crate::proto::Http;

/// The DATA block of one call: an HTTP/1 call as its bytes (its head is text already),
/// an HTTP/2 call as one line per frame, DATA bodies below their frame's line.
pub fn write_text(out: &mut impl Write, http: &Http, data: &[u8]) -> io::Result<()> {
    match http {
        Http::H1(_) => {
            escape(out, data)?;
            out.write_all(b"\n")
        }
        Http::H2(call) => {
            if call.preface {
                out.write_all(b"[PREFACE] PRI * HTTP/2.0\n")?;
            }
            for f in &call.frames {
                frame_text(out, f)?;
            }
            if let Some(p) = &call.pending {
                pending_text(out, p)?;
            }
            if let Some(at) = call.lost_at {
                writeln!(
                    out,
                    "<HTTP/2 framing lost at byte {at} of this call: the rest is not decoded>"
                )?;
            }
            Ok(())
        }
    }
}

fn frame_text(out: &mut impl Write, f: &Frame) -> io::Result<()> {
    label(out, &f.header, f.started_earlier)?;
    let h = &f.header;
    match &f.payload {
        Payload::Data { body, last, grpc } => {
            write!(out, " {} bytes", body.len())?;
            if !last {
                out.write_all(b", the frame goes on in the next call")?;
            }
            out.write_all(b"\n")?;
            data_text(out, body, grpc)?;
            return Ok(());
        }
        Payload::Headers { .. } => headers_text(out, &f.payload)?,
        Payload::Continuation => {
            out.write_all(b" <its HEADERS was not seen: not decoded>")?;
        }
        Payload::Settings(params) => {
            for (id, value) in params {
                match setting_name(*id) {
                    Some(name) => write!(out, " {name}={value}")?,
                    None => write!(out, " 0x{id:x}={value}")?,
                }
            }
        }
        Payload::WindowUpdate(n) => write!(out, " +{n}")?,
        Payload::Ping(bytes) => write!(out, " {}", hex(bytes))?,
        Payload::RstStream(code) => write!(out, " {}", error_name(*code))?,
        Payload::GoAway {
            last_stream,
            code,
            debug,
        } => {
            write!(out, " last stream {last_stream}, {}", error_name(*code))?;
            if !debug.is_empty() {
                out.write_all(b", debug: ")?;
                escape_field(out, debug)?;
            }
        }
        Payload::Priority(p) => write!(out, " {}", priority_words(p))?,
        Payload::Unknown => write!(out, " {} bytes", h.len)?,
        Payload::Malformed => out.write_all(b" <malformed>")?,
    }
    out.write_all(b"\n")
}

/// A header block's line after its label: priority, promised stream, the fields.
fn headers_text(out: &mut impl Write, payload: &Payload) -> io::Result<()> {
    let Payload::Headers {
        block,
        priority,
        promised,
        continuations,
        skipped,
    } = payload
    else {
        return Ok(());
    };
    if *continuations > 0 {
        write!(out, " (+{continuations} CONTINUATION)")?;
    }
    if let Some(p) = promised {
        write!(out, " (promised stream {p})")?;
    }
    if let Some(p) = priority {
        write!(out, " ({})", priority_words(p))?;
    }
    if *skipped {
        out.write_all(b" <header block too long: not decoded>")?;
    }
    fields_text(out, &block.fields)?;
    if block.truncated {
        out.write_all(b"  <more fields not shown>")?;
    }
    if block.malformed {
        out.write_all(b"  <malformed header block: the rest not decoded>")?;
    }
    Ok(())
}

/// `[stream 1 HEADERS END_STREAM END_HEADERS]`; stream 0 (the connection) is not named.
fn label(out: &mut impl Write, h: &Header, started_earlier: bool) -> io::Result<()> {
    out.write_all(b"[")?;
    if h.stream != 0 {
        write!(out, "stream {} ", h.stream)?;
    }
    match type_name(h.kind) {
        Some(name) => out.write_all(name.as_bytes())?,
        None => write!(out, "type 0x{:02x} flags 0x{:02x}", h.kind, h.flags)?,
    }
    for name in flag_names(h.kind, h.flags) {
        write!(out, " {name}")?;
    }
    if started_earlier {
        out.write_all(b", begun in an earlier call")?;
    }
    out.write_all(b"]")
}

/// `  name: value` per field, two spaces apart, as one line.
fn fields_text(out: &mut impl Write, fields: &[Field]) -> io::Result<()> {
    for (i, f) in fields.iter().enumerate() {
        out.write_all(if i == 0 { b" " } else { b"  " })?;
        match &f.name {
            Name::Known(n) => escape_field(out, n)?,
            Name::Unknown(index) => write!(out, "<unknown dynamic index {index}>")?,
        }
        if let Some(v) = &f.value {
            out.write_all(b": ")?;
            escape_field(out, v)?;
        }
    }
    Ok(())
}

/// A DATA body below its frame's line; gRPC message prefixes on lines of their own.
fn data_text(out: &mut impl Write, body: &[u8], grpc: &[http2::GrpcPrefix]) -> io::Result<()> {
    let mut pos = 0;
    for p in grpc {
        body_text(out, body.get(pos..p.start).unwrap_or_default())?;
        match p.message {
            Some(m) => {
                write!(out, "<gRPC message, {} bytes", m.len)?;
                out.write_all(if m.compressed {
                    b", compressed>\n"
                } else {
                    b">\n"
                })?;
            }
            None => out.write_all(b"<gRPC message prefix, goes on in the next DATA frame>\n")?,
        }
        pos = p.end;
    }
    body_text(out, body.get(pos..).unwrap_or_default())
}

fn body_text(out: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    if bytes.is_empty() {
        return Ok(());
    }
    escape(out, bytes)?;
    out.write_all(b"\n")
}

fn priority_words(p: &http2::Priority) -> String {
    let exclusive = if p.exclusive { ", exclusive" } else { "" };
    format!(
        "depends on {}, weight {}{exclusive}",
        p.depends_on, p.weight
    )
}

fn pending_text(out: &mut impl Write, p: &http2::Pending) -> io::Result<()> {
    let Some(h) = p.header else {
        return out.write_all(b"<a frame header goes on in the next call>\n");
    };
    // A DATA frame's bytes so far were shown as its own line.
    if h.kind == kind::DATA && p.have > 0 {
        return Ok(());
    }
    label(out, &h, false)?;
    writeln!(
        out,
        " {} of {} bytes, goes on in the next call",
        p.have, h.len
    )
}

/// `escape`, and line breaks and tabs too: a header value cannot start a line that
/// looks like a frame of its own.
fn escape_field(out: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    let mut rest = bytes;
    while let Some(i) = rest.iter().position(|b| matches!(b, b'\r' | b'\n' | b'\t')) {
        escape(out, &rest[..i])?;
        write!(out, "\\x{:02x}", rest[i])?;
        rest = &rest[i + 1..];
    }
    escape(out, rest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::http1;
    use crate::proto::http2::{flag, Reader, PREFACE};
    use crate::proto::testing::{h2, literals, raw_frame, request};

    fn text(http: &Http, data: &[u8]) -> String {
        let mut out = Vec::new();
        write_text(&mut out, http, data).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn http2_frames_as_text_lines() {
        let mut data = PREFACE.to_vec();
        data.extend(raw_frame(
            kind::SETTINGS,
            0,
            0,
            &[0, 3, 0, 0, 0, 100, 0, 0x42, 0, 0, 0, 1],
        ));
        data.extend(request());
        data.extend(raw_frame(kind::WINDOW_UPDATE, 0, 0, &[0, 0, 0x10, 0]));
        data.extend(raw_frame(kind::PING, flag::ACK, 0, b"\0\0\0\0\0\0\0\x01"));
        data.extend(raw_frame(kind::RST_STREAM, 0, 1, &[0, 0, 0, 8]));
        data.extend(raw_frame(
            kind::GOAWAY,
            0,
            0,
            b"\0\0\0\x01\0\0\0\x0bcalm\x1b[2J",
        ));
        data.extend(raw_frame(kind::PRIORITY, 0, 3, &[0x80, 0, 0, 1, 15]));
        data.extend(raw_frame(0x42, 0x3, 5, b"xyz"));
        let http = h2(&mut Reader::from_start(true), &data);
        assert_eq!(
            text(&http, &data),
            "[PREFACE] PRI * HTTP/2.0\n\
             [SETTINGS] MAX_CONCURRENT_STREAMS=100 0x42=1\n\
             [stream 1 HEADERS END_HEADERS] :method: GET  :scheme: https  \
             :path: /api/v1/crates?q=serde  :authority: x:8443  <unknown dynamic index 70>\n\
             [stream 1 DATA END_STREAM] 7 bytes\n\
             {\"a\":1}\n\
             [WINDOW_UPDATE] +4096\n\
             [PING ACK] 0000000000000001\n\
             [stream 1 RST_STREAM] CANCEL\n\
             [GOAWAY] last stream 1, ENHANCE_YOUR_CALM, debug: calm\\x1b[2J\n\
             [stream 3 PRIORITY] depends on 1, weight 16, exclusive\n\
             [stream 5 type 0x42 flags 0x03] 3 bytes\n"
        );
    }

    #[test]
    fn split_frames_and_lost_framing_are_said() {
        let data = request();
        let mut r = Reader::from_start(false);
        let first = h2(&mut r, &data[..12]);
        assert_eq!(
            text(&first, &data[..12]),
            "[stream 1 HEADERS END_HEADERS] 3 of 52 bytes, goes on in the next call\n"
        );
        let rest = &data[12..data.len() - 3];
        let second = h2(&mut r, rest);
        let t = text(&second, rest);
        assert!(
            t.starts_with("[stream 1 HEADERS END_HEADERS, begun in an earlier call] :method: GET"),
            "{t}"
        );
        assert!(
            t.ends_with(
                "[stream 1 DATA END_STREAM] 4 bytes, the frame goes on in the next call\n{\"a\"\n"
            ),
            "{t}"
        );
        let third = h2(&mut r, &data[data.len() - 3..]);
        assert_eq!(
            text(&third, b""),
            "[stream 1 DATA END_STREAM, begun in an earlier call] 3 bytes\n:1}\n"
        );
        let bad = raw_frame(kind::SETTINGS, 0, 9, b"");
        assert_eq!(
            text(&h2(&mut r, &bad), &bad),
            "<HTTP/2 framing lost at byte 0 of this call: the rest is not decoded>\n"
        );
    }

    #[test]
    fn header_fields_cannot_forge_lines_or_drive_the_terminal() {
        let block = literals(&[("x-evil", "a\r\n[stream 9 HEADERS] :path: /fake\x1b]0;t\x07")]);
        let data = raw_frame(kind::HEADERS, flag::END_HEADERS, 1, &block);
        let t = text(&h2(&mut Reader::from_start(false), &data), &data);
        assert_eq!(
            t,
            "[stream 1 HEADERS END_HEADERS] x-evil: a\\x0d\\x0a[stream 9 HEADERS] :path: /fake\\x1b]0;t\\x07\n"
        );
    }

    #[test]
    fn grpc_prefixes_get_lines_of_their_own() {
        let mut d = raw_frame(
            kind::HEADERS,
            flag::END_HEADERS,
            1,
            &literals(&[("content-type", "application/grpc")]),
        );
        d.extend(raw_frame(kind::DATA, 0, 1, b"\0\0\0\0\x02hi\x01\0"));
        let http = h2(&mut Reader::from_start(false), &d);
        let t = text(&http, &d);
        assert!(
            t.ends_with(
                "[stream 1 DATA] 9 bytes\n<gRPC message, 2 bytes>\nhi\n\
                 <gRPC message prefix, goes on in the next DATA frame>\n"
            ),
            "{t}"
        );
    }

    #[test]
    fn http1_text_is_its_bytes() {
        let data = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let http = Http::H1(http1::parse(data).unwrap());
        assert_eq!(text(&http, data), "GET / HTTP/1.1\r\nHost: a\r\n\r\n\n");
    }
}
