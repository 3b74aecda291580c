//! Renders decoded HTTP (`proto::Http`): text lines for the DATA block of the text
//! output, and the `http` object of the JSON output. Pure: no state, no I/O of its own.

use std::borrow::Cow;
use std::io::{self, Write};

use base64::Engine;
use serde::Serialize;

use crate::escape::escape;
use crate::proto::hpack::{Field, Name};
use crate::proto::http1::{Head, StartLine};
use crate::proto::http2::{self, flag, kind, Frame, Header, Payload};
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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn type_name(k: u8) -> Option<&'static str> {
    const NAMES: [&str; 10] = [
        "DATA",
        "HEADERS",
        "PRIORITY",
        "RST_STREAM",
        "SETTINGS",
        "PUSH_PROMISE",
        "PING",
        "GOAWAY",
        "WINDOW_UPDATE",
        "CONTINUATION",
    ];
    NAMES.get(k as usize).copied()
}

/// The names of the flags set that the type defines.
fn flag_names(k: u8, flags: u8) -> impl Iterator<Item = &'static str> {
    let defined: &[(u8, &str)] = match k {
        kind::DATA => &[(flag::END_STREAM, "END_STREAM"), (flag::PADDED, "PADDED")],
        kind::HEADERS => &[
            (flag::END_STREAM, "END_STREAM"),
            (flag::END_HEADERS, "END_HEADERS"),
            (flag::PADDED, "PADDED"),
            (flag::PRIORITY, "PRIORITY"),
        ],
        kind::PUSH_PROMISE => &[(flag::END_HEADERS, "END_HEADERS"), (flag::PADDED, "PADDED")],
        kind::CONTINUATION => &[(flag::END_HEADERS, "END_HEADERS")],
        kind::SETTINGS | kind::PING => &[(flag::ACK, "ACK")],
        _ => &[],
    };
    defined
        .iter()
        .filter(move |(bit, _)| flags & bit != 0)
        .map(|(_, name)| *name)
}

fn setting_name(id: u16) -> Option<&'static str> {
    Some(match id {
        1 => "HEADER_TABLE_SIZE",
        2 => "ENABLE_PUSH",
        3 => "MAX_CONCURRENT_STREAMS",
        4 => "INITIAL_WINDOW_SIZE",
        5 => "MAX_FRAME_SIZE",
        6 => "MAX_HEADER_LIST_SIZE",
        8 => "ENABLE_CONNECT_PROTOCOL",
        9 => "NO_RFC7540_PRIORITIES",
        _ => return None,
    })
}

/// RFC 9113 §7 error codes; others as hex.
fn error_name(code: u32) -> Cow<'static, str> {
    const NAMES: [&str; 14] = [
        "NO_ERROR",
        "PROTOCOL_ERROR",
        "INTERNAL_ERROR",
        "FLOW_CONTROL_ERROR",
        "SETTINGS_TIMEOUT",
        "STREAM_CLOSED",
        "FRAME_SIZE_ERROR",
        "REFUSED_STREAM",
        "CANCEL",
        "COMPRESSION_ERROR",
        "CONNECT_ERROR",
        "ENHANCE_YOUR_CALM",
        "INADEQUATE_SECURITY",
        "HTTP_1_1_REQUIRED",
    ];
    match NAMES.get(code as usize) {
        Some(name) => Cow::Borrowed(name),
        None => Cow::Owned(format!("0x{code:x}")),
    }
}

/// The JSON `http` object. Field names follow OpenTelemetry's HTTP semantic
/// conventions where one exists (see the README).
#[derive(Serialize)]
pub struct HttpJson<'a> {
    #[serde(rename = "network.protocol.name")]
    protocol: &'static str,
    #[serde(rename = "network.protocol.version")]
    version: &'static str,
    /// HTTP/1: the head's attributes.
    #[serde(flatten)]
    head: Option<HeadJson<'a>>,
    /// HTTP/2: the frames completed in this call.
    #[serde(skip_serializing_if = "Option::is_none")]
    frames: Option<Vec<FrameJson<'a>>>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    preface: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pending: Option<PendingJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    framing_lost_at: Option<usize>,
}

#[derive(Serialize)]
struct HeadJson<'a> {
    #[serde(flatten)]
    message: Message<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body_offset: Option<usize>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    too_many_headers: bool,
}

/// A request's or response's attributes, from an HTTP/1 head or an HTTP/2 header block.
#[derive(Serialize, Default)]
struct Message<'a> {
    #[serde(
        rename = "http.request.method",
        skip_serializing_if = "Option::is_none"
    )]
    method: Option<Cow<'a, str>>,
    #[serde(rename = "url.scheme", skip_serializing_if = "Option::is_none")]
    scheme: Option<Cow<'a, str>>,
    #[serde(rename = "url.path", skip_serializing_if = "Option::is_none")]
    path: Option<Cow<'a, str>>,
    #[serde(rename = "url.query", skip_serializing_if = "Option::is_none")]
    query: Option<Cow<'a, str>>,
    #[serde(rename = "server.address", skip_serializing_if = "Option::is_none")]
    address: Option<Cow<'a, str>>,
    #[serde(rename = "server.port", skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
    #[serde(
        rename = "http.response.status_code",
        skip_serializing_if = "Option::is_none"
    )]
    status: Option<u16>,
    headers: Vec<HeaderJson<'a>>,
}

#[derive(Serialize)]
struct HeaderJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<Cow<'a, str>>,
    /// The dynamic-table index of a name (or whole field) never seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    unknown_index: Option<usize>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    sensitive: bool,
}

#[derive(Serialize, Default)]
struct FrameJson<'a> {
    stream_id: u32,
    #[serde(rename = "type")]
    kind: Cow<'static, str>,
    flags: Vec<&'static str>,
    length: u32,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    started_earlier: bool,
    #[serde(flatten)]
    message: Option<Message<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    header_table: Option<&'static str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    headers_truncated: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    header_block_malformed: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    header_block_skipped: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    continuations: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    promised_stream_id: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    priority: Option<PriorityJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body_encoding: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    frame_continues: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    grpc_messages: Option<Vec<GrpcJson>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    settings: Option<Vec<SettingJson>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    window_size_increment: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    opaque_data: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_code: Option<Cow<'static, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_stream_id: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    debug_data: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    malformed: bool,
}

#[derive(Serialize)]
struct PriorityJson {
    depends_on: u32,
    weight: u16,
    exclusive: bool,
}

#[derive(Serialize)]
struct GrpcJson {
    compressed: bool,
    length: u32,
}

#[derive(Serialize)]
struct SettingJson {
    id: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'static str>,
    value: u32,
}

#[derive(Serialize)]
struct PendingJson {
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_id: Option<u32>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<Cow<'static, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    length: Option<u32>,
    have: u32,
}

/// The JSON `http` object of a call.
pub fn json(http: &Http) -> HttpJson<'_> {
    match http {
        Http::H1(head) => HttpJson {
            protocol: "http",
            version: if head.minor == 0 { "1.0" } else { "1.1" },
            head: Some(head_json(head)),
            frames: None,
            preface: false,
            pending: None,
            framing_lost_at: None,
        },
        Http::H2(call) => HttpJson {
            protocol: "http",
            version: "2",
            head: None,
            frames: Some(call.frames.iter().map(frame_json).collect()),
            preface: call.preface,
            pending: call.pending.map(|p| PendingJson {
                stream_id: p.header.map(|h| h.stream),
                kind: p.header.map(|h| kind_json(h.kind)),
                length: p.header.map(|h| h.len),
                have: p.have,
            }),
            framing_lost_at: call.lost_at,
        },
    }
}

fn head_json(head: &Head) -> HeadJson<'_> {
    let mut message = Message::default();
    match &head.start {
        StartLine::Request { method, target } => {
            message.method = Some(Cow::Borrowed(method));
            set_target(&mut message, target.as_bytes());
        }
        StartLine::Response { status, .. } => message.status = Some(*status),
    }
    for (name, value) in &head.headers {
        if name.eq_ignore_ascii_case("host") {
            set_authority(&mut message, value);
        }
        message.headers.push(HeaderJson {
            name: Some(Cow::Borrowed(name)),
            value: Some(String::from_utf8_lossy(value)),
            unknown_index: None,
            sensitive: false,
        });
    }
    HeadJson {
        message,
        body_offset: head.body_offset,
        too_many_headers: head.too_many_headers,
    }
}

/// A header block's attributes: pseudo-headers give method, scheme, path, authority
/// and status; every field is listed in order.
fn block_message(fields: &[Field]) -> Message<'_> {
    let mut m = Message::default();
    for f in fields {
        let (name, value) = match (&f.name, &f.value) {
            (Name::Known(n), Some(v)) => (Some(n.as_slice()), Some(v.as_slice())),
            (Name::Known(n), None) => (Some(n.as_slice()), None),
            (Name::Unknown(_), v) => (None, v.as_deref()),
        };
        match (name, value) {
            (Some(b":method"), Some(v)) => m.method = Some(String::from_utf8_lossy(v)),
            (Some(b":scheme"), Some(v)) => m.scheme = Some(String::from_utf8_lossy(v)),
            (Some(b":path"), Some(v)) => set_target(&mut m, v),
            (Some(b":authority"), Some(v)) => set_authority(&mut m, v),
            (Some(b":status"), Some(v)) => {
                m.status = std::str::from_utf8(v).ok().and_then(|s| s.parse().ok())
            }
            _ => {}
        }
        m.headers.push(HeaderJson {
            name: name.map(String::from_utf8_lossy),
            value: value.map(String::from_utf8_lossy),
            unknown_index: match f.name {
                Name::Unknown(i) => Some(i),
                Name::Known(_) => None,
            },
            sensitive: f.sensitive,
        });
    }
    m
}

/// `url.path` and `url.query` from a request target.
fn set_target<'a>(m: &mut Message<'a>, target: &'a [u8]) {
    let (path, query) = match target.iter().position(|&b| b == b'?') {
        Some(i) => (&target[..i], Some(&target[i + 1..])),
        None => (target, None),
    };
    m.path = Some(String::from_utf8_lossy(path));
    m.query = query.map(String::from_utf8_lossy);
}

/// `server.address` and `server.port` from a Host header or :authority (`host`,
/// `host:port`, `[v6]:port`).
fn set_authority<'a>(m: &mut Message<'a>, authority: &'a [u8]) {
    let colon = authority.iter().rposition(|&b| b == b':');
    let port = colon.and_then(|i| std::str::from_utf8(&authority[i + 1..]).ok()?.parse().ok());
    let host = match (colon, port) {
        (Some(i), Some(_)) if !authority[..i].contains(&b':') || authority[..i].ends_with(b"]") => {
            m.port = port;
            &authority[..i]
        }
        _ => authority,
    };
    m.address = Some(String::from_utf8_lossy(host));
}

fn kind_json(k: u8) -> Cow<'static, str> {
    match type_name(k) {
        Some(name) => Cow::Borrowed(name),
        None => Cow::Owned(format!("0x{k:02x}")),
    }
}

fn frame_json(f: &Frame) -> FrameJson<'_> {
    let h = f.header;
    let mut j = FrameJson {
        stream_id: h.stream,
        kind: kind_json(h.kind),
        flags: flag_names(h.kind, h.flags).collect(),
        length: h.len,
        started_earlier: f.started_earlier,
        ..FrameJson::default()
    };
    match &f.payload {
        Payload::Data { body, last, grpc } => {
            let (encoding, text) = match std::str::from_utf8(body) {
                Ok(text) => ("utf8", Cow::Borrowed(text)),
                Err(_) => (
                    "base64",
                    Cow::Owned(base64::engine::general_purpose::STANDARD.encode(body)),
                ),
            };
            j.body_encoding = Some(encoding);
            j.body = Some(text);
            j.frame_continues = !last;
            j.grpc_messages = (!grpc.is_empty()).then(|| {
                grpc.iter()
                    .filter_map(|p| p.message)
                    .map(|m| GrpcJson {
                        compressed: m.compressed,
                        length: m.len,
                    })
                    .collect()
            });
        }
        Payload::Headers {
            block,
            priority,
            promised,
            continuations,
            skipped,
        } => {
            j.message = Some(block_message(&block.fields));
            j.header_table = (!block.table_complete).then_some("partial");
            j.headers_truncated = block.truncated;
            j.header_block_malformed = block.malformed;
            j.header_block_skipped = *skipped;
            j.continuations = (*continuations > 0).then_some(*continuations);
            j.promised_stream_id = *promised;
            j.priority = priority.as_ref().map(priority_json);
        }
        other => control_json(&mut j, other),
    }
    j
}

fn control_json<'a>(j: &mut FrameJson<'a>, payload: &'a Payload) {
    match payload {
        Payload::Settings(params) => {
            j.settings = Some(
                params
                    .iter()
                    .map(|&(id, value)| SettingJson {
                        id,
                        name: setting_name(id),
                        value,
                    })
                    .collect(),
            );
        }
        Payload::WindowUpdate(n) => j.window_size_increment = Some(*n),
        Payload::Ping(bytes) => j.opaque_data = Some(hex(bytes)),
        Payload::RstStream(code) => j.error_code = Some(error_name(*code)),
        Payload::GoAway {
            last_stream,
            code,
            debug,
        } => {
            j.last_stream_id = Some(*last_stream);
            j.error_code = Some(error_name(*code));
            j.debug_data = (!debug.is_empty()).then(|| String::from_utf8_lossy(debug));
        }
        Payload::Priority(p) => j.priority = Some(priority_json(p)),
        Payload::Malformed => j.malformed = true,
        Payload::Continuation => j.header_block_skipped = true,
        _ => {}
    }
}

fn priority_json(p: &http2::Priority) -> PriorityJson {
    PriorityJson {
        depends_on: p.depends_on,
        weight: p.weight,
        exclusive: p.exclusive,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::http2::tests::{literals, raw_frame};
    use crate::proto::http2::{Reader, PREFACE};
    use crate::proto::{http1, ConnKey, Decoders, Dir};

    fn text(http: &Http, data: &[u8]) -> String {
        let mut out = Vec::new();
        write_text(&mut out, http, data).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn h2(reader: &mut Reader, data: &[u8]) -> Http {
        Http::H2(reader.feed(data).unwrap())
    }

    /// A late-attach request: :method GET (static), :path and :authority literals, an
    /// entry never seen (index 70), then its body.
    fn request() -> Vec<u8> {
        let mut block = vec![0x82, 0x87];
        block.extend(literals(&[
            (":path", "/api/v1/crates?q=serde"),
            (":authority", "x:8443"),
        ]));
        block.push(0x80 | 70);
        let mut d = raw_frame(kind::HEADERS, flag::END_HEADERS, 1, &block);
        d.extend(raw_frame(kind::DATA, flag::END_STREAM, 1, b"{\"a\":1}"));
        d
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

    fn to_value(http: &Http) -> serde_json::Value {
        serde_json::to_value(json(http)).unwrap()
    }

    #[test]
    fn http2_json_uses_opentelemetry_names() {
        let mut data = request();
        data.extend(raw_frame(kind::DATA, 0, 1, b"\xff\x00"));
        data.extend(raw_frame(kind::SETTINGS, 0, 0, &[0, 4, 0, 1, 0, 0]));
        let v = to_value(&h2(&mut Reader::mid_connection(), &data));
        assert_eq!(v["network.protocol.version"], "2");
        let f = &v["frames"][0];
        assert_eq!(f["stream_id"], 1);
        assert_eq!(f["type"], "HEADERS");
        assert_eq!(f["flags"], serde_json::json!(["END_HEADERS"]));
        assert_eq!(f["http.request.method"], "GET");
        assert_eq!(f["url.scheme"], "https");
        assert_eq!(f["url.path"], "/api/v1/crates");
        assert_eq!(f["url.query"], "q=serde");
        assert_eq!(f["server.address"], "x");
        assert_eq!(f["server.port"], 8443);
        assert_eq!(f["header_table"], "partial");
        assert_eq!(
            f["headers"][0],
            serde_json::json!({"name": ":method", "value": "GET"})
        );
        assert_eq!(f["headers"][4], serde_json::json!({"unknown_index": 70}));
        let body = &v["frames"][1];
        assert_eq!(
            (&body["body_encoding"], &body["body"]),
            (&"utf8".into(), &"{\"a\":1}".into())
        );
        assert_eq!(
            (&v["frames"][2]["body_encoding"], &v["frames"][2]["body"]),
            (&"base64".into(), &"/wA=".into())
        );
        assert_eq!(
            v["frames"][3]["settings"],
            serde_json::json!([{"id": 4, "name": "INITIAL_WINDOW_SIZE", "value": 65536}])
        );
    }

    #[test]
    fn http1_json_and_status() {
        let mut d = Decoders::new();
        let key = ConnKey { pid: 1, conn: 2 };
        let req = d
            .decode(
                key,
                Dir::Write,
                b"POST /p?x=1 HTTP/1.1\r\nHost: [::1]:443\r\n\r\n",
            )
            .unwrap();
        let v = to_value(&req);
        assert_eq!(v["network.protocol.version"], "1.1");
        assert_eq!(v["http.request.method"], "POST");
        assert_eq!(
            (&v["url.path"], &v["url.query"]),
            (&"/p".into(), &"x=1".into())
        );
        assert_eq!(
            (&v["server.address"], &v["server.port"]),
            (&"[::1]".into(), &443.into())
        );
        assert_eq!(
            v["headers"],
            serde_json::json!([{"name": "Host", "value": "[::1]:443"}])
        );
        let resp = d
            .decode(key, Dir::Read, b"HTTP/1.0 503 Busy\r\n\r\n")
            .unwrap();
        let v = to_value(&resp);
        assert_eq!(
            (
                &v["network.protocol.version"],
                &v["http.response.status_code"]
            ),
            (&"1.0".into(), &503.into())
        );
        assert_eq!(v["body_offset"], 21);
    }

    #[test]
    fn http2_response_status_in_json() {
        let data = raw_frame(
            kind::HEADERS,
            flag::END_HEADERS,
            1,
            &[0x8e, 0x40, 1, b'a', 0],
        );
        let v = to_value(&h2(&mut Reader::from_start(false), &data));
        assert_eq!(v["frames"][0]["http.response.status_code"], 500);
        assert!(v["frames"][0].get("header_table").is_none());
        assert_eq!(
            v["frames"][0]["headers"][1],
            serde_json::json!({"name": "a", "value": ""})
        );
    }
}
