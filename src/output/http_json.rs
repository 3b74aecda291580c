//! Renders decoded HTTP (`proto::Http`) as the `http` object of the JSON output. Field
//! names follow OpenTelemetry's HTTP semantic conventions where one exists (see the
//! README). Pure: no state, no I/O of its own.

use std::borrow::Cow;

use base64::Engine;
use serde::Serialize;

use super::http_names::{error_name, flag_names, hex, setting_name, type_name};
use crate::proto::hpack::{Field, Name};
use crate::proto::http1::{Head, StartLine};
use crate::proto::http2::{self, Frame, Payload};
use crate::proto::Http;

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
    use crate::proto::http2::{flag, kind, Reader};
    use crate::proto::testing::{h2, raw_frame, request};
    use crate::proto::{ConnKey, Decoders, Dir};

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
