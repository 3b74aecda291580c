//! HTTP/2 framing (RFC 9113) for one direction of one connection, fed the plaintext of
//! each TLS call in order. A frame split over calls and many frames in one call are both
//! normal: the frame header and the payloads that need decoding whole (header blocks,
//! control frames) are held between calls; DATA is passed on as it comes, never held.

use std::collections::HashMap;

use super::hpack;

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
/// SETTINGS_MAX_FRAME_SIZE's initial value, and the longest frame taken when looking
/// for frames in a direction whose settings were not seen.
pub const DEFAULT_MAX_FRAME: u32 = 16_384;
/// The longest frame length a header can say (24 bits).
const LONGEST_FRAME: u32 = (1 << 24) - 1;
/// A header block (HEADERS or PUSH_PROMISE and its CONTINUATIONs) held at most; a
/// longer one is skipped and the HPACK table taken as unknown from there.
pub const HEADER_BLOCK_CAP: usize = 64 * 1024;
/// Payload kept of a control frame (SETTINGS, GOAWAY's debug data).
const CONTROL_CAP: usize = 16 * 1024;
/// gRPC streams followed per direction; past it the oldest stream is dropped.
const MAX_GRPC_STREAMS: usize = 128;

/// Frame types.
pub mod kind {
    pub const DATA: u8 = 0;
    pub const HEADERS: u8 = 1;
    pub const PRIORITY: u8 = 2;
    pub const RST_STREAM: u8 = 3;
    pub const SETTINGS: u8 = 4;
    pub const PUSH_PROMISE: u8 = 5;
    pub const PING: u8 = 6;
    pub const GOAWAY: u8 = 7;
    pub const WINDOW_UPDATE: u8 = 8;
    pub const CONTINUATION: u8 = 9;
}

/// Frame flags (ACK shares END_STREAM's bit on SETTINGS and PING).
pub mod flag {
    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const PADDED: u8 = 0x8;
    pub const PRIORITY: u8 = 0x20;
}

/// SETTINGS_MAX_FRAME_SIZE's identifier.
pub const SETTINGS_MAX_FRAME_SIZE: u16 = 5;

/// What one call completed, in order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Call {
    /// The call carried the client preface (or the part of it still due).
    pub preface: bool,
    pub frames: Vec<Frame>,
    /// A frame begun in this call or before, that goes on in a later call.
    pub pending: Option<Pending>,
    /// Framing was lost at this offset of the call (a frame header that cannot be
    /// right): the bytes from here on are not decoded.
    pub lost_at: Option<usize>,
}

/// A frame still being read when the call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    /// `None` while the 9-byte frame header itself is incomplete.
    pub header: Option<Header>,
    /// Bytes read so far: of the payload, or of the frame header while `header` is
    /// `None`.
    pub have: u32,
}

impl Pending {
    /// The frame's bytes seen so far, its header included.
    pub fn bytes(&self) -> usize {
        match self.header {
            Some(_) => FRAME_HEADER + self.have as usize,
            None => self.have as usize,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub len: u32,
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub header: Header,
    /// The frame's first byte came in an earlier call.
    pub started_earlier: bool,
    pub payload: Payload,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// The part of a DATA frame's body (padding removed) that came in this call.
    Data {
        body: Vec<u8>,
        /// The frame ends in this call.
        last: bool,
        /// gRPC message prefixes in `body` (content-type application/grpc).
        grpc: Vec<GrpcPrefix>,
    },
    /// A whole header block: HEADERS or PUSH_PROMISE with its CONTINUATION frames;
    /// the frame's flags include END_HEADERS of the last one.
    Headers {
        block: hpack::Block,
        priority: Option<Priority>,
        /// PUSH_PROMISE's promised stream.
        promised: Option<u32>,
        continuations: u32,
        /// The block was not decoded: longer than `HEADER_BLOCK_CAP`.
        skipped: bool,
    },
    /// A CONTINUATION whose HEADERS was not seen (attached or bytes lost since).
    Continuation,
    Settings(Vec<(u16, u32)>),
    WindowUpdate(u32),
    Ping([u8; 8]),
    RstStream(u32),
    GoAway {
        last_stream: u32,
        code: u32,
        debug: Vec<u8>,
    },
    Priority(Priority),
    /// A type this decoder does not know (ignored, as RFC 9113 says).
    Unknown,
    /// A known type whose payload contradicts itself (padding longer than the frame).
    Malformed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Priority {
    pub exclusive: bool,
    pub depends_on: u32,
    /// 1 to 256.
    pub weight: u16,
}

/// A gRPC message prefix, or the part of one in this body: `body[start..end]` holds
/// its bytes (fewer than 5 when it is split between DATA frames).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcPrefix {
    pub start: usize,
    pub end: usize,
    /// `None` when the prefix goes on in the stream's next DATA frame.
    pub message: Option<GrpcMessage>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcMessage {
    pub compressed: bool,
    pub len: u32,
}

/// The frame whose payload is being read.
struct Current {
    header: Header,
    read: u32,
    started_earlier: bool,
    /// DATA's pad length, once its first payload byte was read.
    pad: Option<u8>,
}

/// A header block waiting for its CONTINUATION frames.
struct OpenBlock {
    header: Header,
    started_earlier: bool,
    priority: Option<Priority>,
    promised: Option<u32>,
    fragments: Vec<u8>,
    continuations: u32,
    skipped: bool,
}

/// Where a gRPC stream is in its messages.
#[derive(Default)]
struct Grpc {
    /// Message bytes still to come before the next prefix.
    need: u64,
    prefix: [u8; 5],
    have: usize,
}

pub struct Reader {
    header: [u8; FRAME_HEADER],
    header_len: usize,
    current: Option<Current>,
    /// The current frame's payload, for the types decoded whole.
    payload: Vec<u8>,
    /// The payload was longer than what is kept.
    payload_cut: bool,
    block: Option<OpenBlock>,
    hpack: hpack::Decoder,
    grpc: HashMap<u32, Grpc>,
    /// The receiver's SETTINGS_MAX_FRAME_SIZE, when its settings were seen.
    max_frame: Option<u32>,
    /// The next byte starts a frame. False after a late attach or lost bytes, until a
    /// call is found that starts with frames.
    aligned: bool,
    /// Bytes of the client preface still to come.
    preface_left: usize,
    /// A frame broke the known maximum frame size: this direction is not HTTP/2.
    dead: bool,
}

impl Reader {
    /// A direction seen from the start of the connection (`preface`: the client side,
    /// which sends the preface first).
    pub fn from_start(preface: bool) -> Self {
        Reader {
            header: [0; FRAME_HEADER],
            header_len: 0,
            current: None,
            payload: Vec::new(),
            payload_cut: false,
            block: None,
            hpack: hpack::Decoder::new(),
            grpc: HashMap::new(),
            max_frame: Some(DEFAULT_MAX_FRAME),
            aligned: true,
            preface_left: if preface { PREFACE.len() } else { 0 },
            dead: false,
        }
    }

    /// A direction whose earlier bytes were not seen: framing is found again by
    /// looking for a call that starts with frames; older HPACK entries are unknown.
    pub fn mid_connection() -> Self {
        Reader {
            hpack: hpack::Decoder::mid_connection(),
            max_frame: None,
            aligned: false,
            ..Reader::from_start(false)
        }
    }

    /// The receiving peer announced its SETTINGS_MAX_FRAME_SIZE (in the other direction).
    /// Only raised: frames sent before a lower value took effect may still be longer.
    pub fn set_max_frame(&mut self, max: u32) {
        let max = max.clamp(DEFAULT_MAX_FRAME, LONGEST_FRAME);
        self.max_frame = Some(self.max_frame.map_or(max, |m| m.max(max)));
    }

    /// The heap this direction holds, itself included: the frame payload and header
    /// block being read (`HEADER_BLOCK_CAP` each at most), the HPACK table and the
    /// gRPC streams followed; about 280 KiB at most.
    pub fn held(&self) -> usize {
        std::mem::size_of::<Reader>()
            + self.payload.capacity()
            + self.block.as_ref().map_or(0, |b| b.fragments.capacity())
            + self.hpack.held()
            + self.grpc.capacity() * std::mem::size_of::<(u32, Grpc)>()
    }

    /// This direction broke HTTP/2 framing where the limits were known.
    pub fn is_dead(&self) -> bool {
        self.dead
    }

    /// Bytes of this direction were lost: find the framing again, trust no HPACK entry.
    pub fn lost(&mut self) {
        self.aligned = false;
        self.header_len = 0;
        self.current = None;
        self.payload.clear();
        self.payload_cut = false;
        self.block = None;
        self.hpack.lost();
        self.grpc.clear();
        self.preface_left = 0;
    }

    /// Decodes one call's bytes. `None` when they were not decoded: the direction is
    /// not aligned on frames and this call does not start with frames (or is dead).
    pub fn feed(&mut self, data: &[u8]) -> Option<Call> {
        if self.dead {
            return None;
        }
        if !self.aligned {
            if !sniff(data, self.max_frame.unwrap_or(DEFAULT_MAX_FRAME)) {
                return None;
            }
            self.aligned = true;
        }
        let mut call = Call::default();
        let mut pos = self.preface(data, &mut call)?;
        // What is under way came from earlier calls.
        let mut earlier = self.header_len > 0;
        if let Some(c) = self.current.as_mut() {
            c.started_earlier = true;
        }
        if let Some(b) = self.block.as_mut() {
            b.started_earlier = true;
        }
        while pos < data.len() {
            if self.current.is_none() {
                let n = (FRAME_HEADER - self.header_len).min(data.len() - pos);
                self.header[self.header_len..self.header_len + n]
                    .copy_from_slice(&data[pos..pos + n]);
                self.header_len += n;
                pos += n;
                if self.header_len < FRAME_HEADER {
                    break;
                }
                self.header_len = 0;
                let header = parse_header(&self.header);
                if !self.valid(&header) {
                    call.lost_at = Some(pos.saturating_sub(FRAME_HEADER));
                    return Some(call);
                }
                self.current = Some(Current {
                    header,
                    read: 0,
                    started_earlier: earlier,
                    pad: None,
                });
                earlier = false;
            }
            pos += self.payload_bytes(&data[pos..], &mut call);
        }
        call.pending = self.pending();
        Some(call)
    }

    /// Skips the preface bytes still due; `None` if the bytes are not the preface.
    fn preface(&mut self, data: &[u8], call: &mut Call) -> Option<usize> {
        if self.preface_left == 0 {
            return Some(0);
        }
        let due = &PREFACE[PREFACE.len() - self.preface_left..];
        let n = due.len().min(data.len());
        if data[..n] != due[..n] {
            self.dead = true;
            return None;
        }
        self.preface_left -= n;
        call.preface = n > 0;
        Some(n)
    }

    fn pending(&self) -> Option<Pending> {
        match &self.current {
            Some(c) => Some(Pending {
                header: Some(c.header),
                have: c.read,
            }),
            None if self.header_len > 0 => Some(Pending {
                header: None,
                have: self.header_len as u32,
            }),
            None => None,
        }
    }

    /// Whether a frame header can be right. One longer than the receiver allows, when
    /// its settings are known, means this is not HTTP/2 at all.
    fn valid(&mut self, h: &Header) -> bool {
        if h.len > self.max_frame.unwrap_or(LONGEST_FRAME) {
            self.dead = self.max_frame.is_some();
            self.lost();
            return false;
        }
        if !consistent(h) {
            self.lost();
            return false;
        }
        true
    }

    /// Takes the current frame's payload bytes from `data`; returns how many.
    fn payload_bytes(&mut self, data: &[u8], call: &mut Call) -> usize {
        let Some(cur) = self.current.as_mut() else {
            return 0;
        };
        let n = ((cur.header.len - cur.read) as usize).min(data.len());
        let chunk = &data[..n];
        let from = cur.read;
        cur.read += n as u32;
        let done = cur.read == cur.header.len;
        if cur.header.kind == kind::DATA {
            self.data_chunk(chunk, from, done, call);
        } else {
            let cap = match cur.header.kind {
                kind::HEADERS | kind::PUSH_PROMISE | kind::CONTINUATION => HEADER_BLOCK_CAP,
                k if k <= kind::CONTINUATION => CONTROL_CAP,
                _ => 0,
            };
            let room = cap.saturating_sub(self.payload.len());
            self.payload.extend_from_slice(&chunk[..n.min(room)]);
            self.payload_cut |= n > room;
        }
        if done {
            self.finish(call);
        }
        n
    }

    /// A piece of a DATA frame (payload bytes from `from` on): padding dropped,
    /// passed on at once.
    fn data_chunk(&mut self, chunk: &[u8], from: u32, done: bool, call: &mut Call) {
        let Some(cur) = self.current.as_mut() else {
            return;
        };
        let h = cur.header;
        let padded = h.flags & flag::PADDED != 0;
        if padded && from == 0 {
            cur.pad = chunk.first().copied();
        }
        let pad = cur.pad.map_or(0, u32::from);
        if padded && pad >= h.len {
            if done {
                call.frames
                    .push(frame(h, cur.started_earlier, Payload::Malformed));
            }
            return;
        }
        // The body is the payload's [body_start, body_end).
        let body_start = u32::from(padded);
        let body_end = h.len - pad;
        let lo = from.max(body_start);
        let hi = (from + chunk.len() as u32).min(body_end);
        let body =
            match chunk.get((lo.saturating_sub(from)) as usize..hi.saturating_sub(from) as usize) {
                Some(b) if lo < hi => b,
                _ => &[],
            };
        if body.is_empty() && !done {
            return;
        }
        let started_earlier = cur.started_earlier;
        let grpc = match self.grpc.get_mut(&h.stream) {
            Some(g) => g.scan(body),
            None => Vec::new(),
        };
        let payload = Payload::Data {
            body: body.to_vec(),
            last: done,
            grpc,
        };
        call.frames.push(frame(h, started_earlier, payload));
    }

    /// The current frame's last byte was read.
    fn finish(&mut self, call: &mut Call) {
        let Some(cur) = self.current.take() else {
            return;
        };
        let payload = std::mem::take(&mut self.payload);
        let cut = std::mem::replace(&mut self.payload_cut, false);
        let h = cur.header;
        // Only CONTINUATION may follow an open header block (RFC 9113 §6.10).
        if self.block.is_some() && h.kind != kind::CONTINUATION {
            self.block = None;
            self.hpack.lost();
        }
        match h.kind {
            kind::DATA => {
                if h.flags & flag::END_STREAM != 0 {
                    self.grpc.remove(&h.stream);
                }
            }
            kind::HEADERS | kind::PUSH_PROMISE => {
                self.open_block(h, cur.started_earlier, &payload, cut, call)
            }
            kind::CONTINUATION => self.continuation(h, cur.started_earlier, &payload, cut, call),
            _ => {
                let p = self.control(h, &payload);
                call.frames.push(frame(h, cur.started_earlier, p));
            }
        }
        self.payload = payload;
        self.payload.clear();
    }

    fn open_block(
        &mut self,
        h: Header,
        started_earlier: bool,
        p: &[u8],
        cut: bool,
        call: &mut Call,
    ) {
        let Some((priority, promised, fragment)) = block_start(h, p) else {
            self.hpack.lost();
            call.frames
                .push(frame(h, started_earlier, Payload::Malformed));
            return;
        };
        self.block = Some(OpenBlock {
            header: h,
            started_earlier,
            priority,
            promised,
            fragments: if cut { Vec::new() } else { fragment.to_vec() },
            continuations: 0,
            skipped: cut,
        });
        if h.flags & flag::END_HEADERS != 0 {
            self.close_block(call);
        }
    }

    fn continuation(
        &mut self,
        h: Header,
        started_earlier: bool,
        p: &[u8],
        cut: bool,
        call: &mut Call,
    ) {
        let Some(block) = self.block.as_mut().filter(|b| b.header.stream == h.stream) else {
            // Its HEADERS was not seen: the fragment cannot be decoded, and may have
            // changed the table.
            self.block = None;
            self.hpack.lost();
            call.frames
                .push(frame(h, started_earlier, Payload::Continuation));
            return;
        };
        block.continuations += 1;
        block.header.flags |= h.flags & flag::END_HEADERS;
        block.header.len = block.header.len.saturating_add(h.len);
        if cut || block.fragments.len() + p.len() > HEADER_BLOCK_CAP {
            block.skipped = true;
            block.fragments = Vec::new();
        } else if !block.skipped {
            block.fragments.extend_from_slice(p);
        }
        if h.flags & flag::END_HEADERS != 0 {
            self.close_block(call);
        }
    }

    /// The header block is whole: decode it, note gRPC streams.
    fn close_block(&mut self, call: &mut Call) {
        let Some(b) = self.block.take() else {
            return;
        };
        let block = if b.skipped {
            self.hpack.lost();
            hpack::Block::default()
        } else {
            self.hpack.decode(&b.fragments)
        };
        if b.header.kind == kind::HEADERS && is_grpc(&block) {
            self.follow_grpc(b.header.stream);
        }
        if b.header.flags & flag::END_STREAM != 0 {
            self.grpc.remove(&b.header.stream);
        }
        let payload = Payload::Headers {
            block,
            priority: b.priority,
            promised: b.promised,
            continuations: b.continuations,
            skipped: b.skipped,
        };
        call.frames
            .push(frame(b.header, b.started_earlier, payload));
    }

    fn follow_grpc(&mut self, stream: u32) {
        if self.grpc.len() >= MAX_GRPC_STREAMS && !self.grpc.contains_key(&stream) {
            if let Some(&oldest) = self.grpc.keys().min() {
                self.grpc.remove(&oldest);
            }
        }
        self.grpc.entry(stream).or_default();
    }

    /// The frames decoded whole (their sizes were checked by `consistent`).
    fn control(&mut self, h: Header, p: &[u8]) -> Payload {
        let u32_at = |i: usize| {
            p.get(i..i + 4)
                .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        };
        match h.kind {
            kind::SETTINGS => Payload::Settings(
                p.chunks_exact(6)
                    .map(|s| (u16::from_be_bytes([s[0], s[1]]), u32_at_slice(&s[2..])))
                    .collect(),
            ),
            kind::WINDOW_UPDATE => Payload::WindowUpdate(u32_at(0) & 0x7fff_ffff),
            kind::PING => Payload::Ping(p.try_into().unwrap_or_default()),
            kind::RST_STREAM => {
                self.grpc.remove(&h.stream);
                Payload::RstStream(u32_at(0))
            }
            kind::GOAWAY => Payload::GoAway {
                last_stream: u32_at(0) & 0x7fff_ffff,
                code: u32_at(4),
                debug: p.get(8..).unwrap_or_default().to_vec(),
            },
            kind::PRIORITY => priority(p).map_or(Payload::Malformed, Payload::Priority),
            _ => Payload::Unknown,
        }
    }
}

impl Grpc {
    /// The message prefixes in `body`, following messages across frames.
    fn scan(&mut self, body: &[u8]) -> Vec<GrpcPrefix> {
        let mut found = Vec::new();
        let mut pos = 0;
        while pos < body.len() {
            if self.need > 0 {
                let n = self.need.min((body.len() - pos) as u64);
                pos += n as usize;
                self.need -= n;
                continue;
            }
            let start = pos;
            let n = (5 - self.have).min(body.len() - pos);
            self.prefix[self.have..self.have + n].copy_from_slice(&body[pos..pos + n]);
            self.have += n;
            pos += n;
            let message = (self.have == 5).then(|| GrpcMessage {
                compressed: self.prefix[0] & 1 != 0,
                len: u32_at_slice(&self.prefix[1..]),
            });
            if let Some(m) = message {
                self.have = 0;
                self.need = m.len.into();
            }
            found.push(GrpcPrefix {
                start,
                end: pos,
                message,
            });
        }
        found
    }
}

fn frame(header: Header, started_earlier: bool, payload: Payload) -> Frame {
    Frame {
        header,
        started_earlier,
        payload,
    }
}

fn u32_at_slice(b: &[u8]) -> u32 {
    match b {
        [a, b, c, d, ..] => u32::from_be_bytes([*a, *b, *c, *d]),
        _ => 0,
    }
}

fn parse_header(b: &[u8; FRAME_HEADER]) -> Header {
    Header {
        len: u32::from_be_bytes([0, b[0], b[1], b[2]]),
        kind: b[3],
        flags: b[4],
        // The reserved bit is ignored (RFC 9113 §4.1).
        stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
    }
}

/// Stream and length rules of each type (RFC 9113 §6); unknown types pass.
fn consistent(h: &Header) -> bool {
    let on_stream = h.stream != 0;
    match h.kind {
        kind::DATA | kind::HEADERS | kind::CONTINUATION | kind::PUSH_PROMISE => on_stream,
        kind::PRIORITY => on_stream && h.len == 5,
        kind::RST_STREAM => on_stream && h.len == 4,
        kind::SETTINGS => !on_stream && h.len % 6 == 0 && (h.flags & flag::ACK == 0 || h.len == 0),
        kind::PING => !on_stream && h.len == 8,
        kind::GOAWAY => !on_stream && h.len >= 8,
        kind::WINDOW_UPDATE => h.len == 4,
        _ => true,
    }
}

/// The flags each known type defines.
fn defined_flags(kind: u8) -> u8 {
    match kind {
        kind::DATA => flag::END_STREAM | flag::PADDED,
        kind::HEADERS => flag::END_STREAM | flag::END_HEADERS | flag::PADDED | flag::PRIORITY,
        kind::PUSH_PROMISE => flag::END_HEADERS | flag::PADDED,
        kind::CONTINUATION => flag::END_HEADERS,
        kind::SETTINGS | kind::PING => flag::ACK,
        _ => 0,
    }
}

/// Whether `data` starts with HTTP/2 frames: every frame header in it is of a known
/// type with only its defined flags, the reserved bit clear, at most `max_frame` long
/// and consistent with its type; the last frame may go on past the call. Text and
/// other protocols fail at the first header (their first bytes make a huge length).
pub fn sniff(data: &[u8], max_frame: u32) -> bool {
    let mut pos = 0;
    while let Some(raw) = data.get(pos..pos + FRAME_HEADER) {
        let raw: &[u8; FRAME_HEADER] = raw.try_into().expect("a 9-byte slice");
        let h = parse_header(raw);
        if h.kind > kind::CONTINUATION
            || h.flags & !defined_flags(h.kind) != 0
            || raw[5] & 0x80 != 0
            || h.len > max_frame
            || !consistent(&h)
        {
            return false;
        }
        pos += FRAME_HEADER + h.len as usize;
    }
    pos > 0
}

/// HEADERS' or PUSH_PROMISE's priority, promised stream and block fragment, with the
/// padding removed; `None` when the padding is longer than the frame.
fn block_start(h: Header, p: &[u8]) -> Option<(Option<Priority>, Option<u32>, &[u8])> {
    let mut rest = p;
    let mut pad = 0;
    if h.flags & flag::PADDED != 0 {
        let (&n, tail) = rest.split_first()?;
        pad = n as usize;
        rest = tail;
    }
    let mut prio = None;
    let mut promised = None;
    if h.kind == kind::HEADERS && h.flags & flag::PRIORITY != 0 {
        prio = Some(priority(rest.get(..5)?)?);
        rest = &rest[5..];
    }
    if h.kind == kind::PUSH_PROMISE {
        promised = Some(u32_at_slice(rest.get(..4)?) & 0x7fff_ffff);
        rest = &rest[4..];
    }
    let end = rest.len().checked_sub(pad)?;
    Some((prio, promised, &rest[..end]))
}

fn priority(p: &[u8]) -> Option<Priority> {
    let dep = u32_at_slice(p.get(..4)?);
    Some(Priority {
        exclusive: dep & 0x8000_0000 != 0,
        depends_on: dep & 0x7fff_ffff,
        weight: u16::from(*p.get(4)?) + 1,
    })
}

/// gRPC's content-type is application/grpc, or application/grpc+proto and the like.
fn is_grpc(block: &hpack::Block) -> bool {
    block.fields.iter().any(|f| {
        matches!(&f.name, hpack::Name::Known(n) if n == b"content-type")
            && f.value.as_deref().is_some_and(|v| {
                v.strip_prefix(b"application/grpc")
                    .is_some_and(|rest| rest.is_empty() || rest[0] == b'+' || rest[0] == b';')
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::hpack::{Field, Name};
    use crate::proto::testing::{literals, raw_frame};

    fn names(block: &hpack::Block) -> Vec<(String, String)> {
        block
            .fields
            .iter()
            .map(|f| match (&f.name, &f.value) {
                (Name::Known(n), Some(v)) => (
                    String::from_utf8_lossy(n).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                ),
                other => panic!("unexpected field {other:?}"),
            })
            .collect()
    }

    /// A client's start: preface, SETTINGS, a request (HPACK: static indices and an
    /// indexed :authority), a body, WINDOW_UPDATE and PING.
    fn client_bytes() -> Vec<u8> {
        let mut d = PREFACE.to_vec();
        d.extend(raw_frame(
            kind::SETTINGS,
            0,
            0,
            &[0, 3, 0, 0, 0, 100, 0, 4, 0, 1, 0, 0],
        ));
        // :method GET, :scheme https, :path /, :authority "x" (incremental indexing).
        let block = [0x82, 0x87, 0x84, 0x41, 0x01, b'x'];
        d.extend(raw_frame(kind::HEADERS, flag::END_HEADERS, 1, &block));
        d.extend(raw_frame(kind::DATA, flag::END_STREAM, 1, b"hello"));
        d.extend(raw_frame(kind::WINDOW_UPDATE, 0, 0, &[0, 0, 0x10, 0]));
        d.extend(raw_frame(kind::PING, 0, 0, b"12345678"));
        d
    }

    /// Everything a sequence of calls gave, with DATA fragments of a frame joined.
    fn feed_all(r: &mut Reader, calls: &[&[u8]]) -> (bool, Vec<Payload>) {
        let mut preface = false;
        let mut out: Vec<Payload> = Vec::new();
        for data in calls {
            let call = r.feed(data).expect("aligned");
            assert_eq!(call.lost_at, None);
            preface |= call.preface;
            for f in call.frames {
                match (out.last_mut(), f.payload) {
                    (
                        Some(Payload::Data {
                            body,
                            last: false,
                            grpc,
                        }),
                        Payload::Data {
                            body: more,
                            last,
                            grpc: g,
                        },
                    ) if f.started_earlier => {
                        let base = body.len();
                        body.extend(more);
                        grpc.extend(g.into_iter().map(|p| GrpcPrefix {
                            start: p.start + base,
                            end: p.end + base,
                            ..p
                        }));
                        if last {
                            let joined = out.pop().unwrap();
                            let Payload::Data { body, grpc, .. } = joined else {
                                unreachable!()
                            };
                            out.push(Payload::Data {
                                body,
                                last: true,
                                grpc,
                            });
                        }
                    }
                    (_, p) => out.push(p),
                }
            }
        }
        (preface, out)
    }

    fn check_client(preface: bool, out: &[Payload]) {
        assert!(preface);
        assert_eq!(out.len(), 5, "{out:?}");
        assert_eq!(out[0], Payload::Settings(vec![(3, 100), (4, 65536)]));
        let Payload::Headers { block, .. } = &out[1] else {
            panic!("{:?}", out[1])
        };
        let want = [
            (":method", "GET"),
            (":scheme", "https"),
            (":path", "/"),
            (":authority", "x"),
        ];
        let want: Vec<_> = want
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        assert_eq!(names(block), want);
        assert!(block.table_complete);
        assert_eq!(
            out[2],
            Payload::Data {
                body: b"hello".to_vec(),
                last: true,
                grpc: vec![]
            }
        );
        assert_eq!(out[3], Payload::WindowUpdate(4096));
        assert_eq!(out[4], Payload::Ping(*b"12345678"));
    }

    #[test]
    fn decodes_a_client_start_in_one_call() {
        let data = client_bytes();
        let mut r = Reader::from_start(true);
        let call = r.feed(&data).unwrap();
        assert_eq!(call.pending, None);
        assert!(call.frames.iter().all(|f| !f.started_earlier));
        let (preface, out) = feed_all(&mut Reader::from_start(true), &[&data]);
        check_client(preface, &out);
    }

    #[test]
    fn any_split_into_two_or_three_calls_gives_the_same_frames() {
        let data = client_bytes();
        for i in 0..=data.len() {
            let (preface, out) = feed_all(&mut Reader::from_start(true), &[&data[..i], &data[i..]]);
            check_client(preface, &out);
        }
        for i in (0..data.len()).step_by(3) {
            for j in (i..=data.len()).step_by(5) {
                let calls = [&data[..i], &data[i..j], &data[j..]];
                let (preface, out) = feed_all(&mut Reader::from_start(true), &calls);
                check_client(preface, &out);
            }
        }
    }

    #[test]
    fn a_frame_split_over_calls_is_flagged_and_pending() {
        let frame_bytes = raw_frame(
            kind::HEADERS,
            flag::END_HEADERS,
            3,
            &literals(&[("a", "b")]),
        );
        let mut r = Reader::from_start(false);
        let call = r.feed(&frame_bytes[..12]).unwrap();
        assert!(call.frames.is_empty());
        let pending = call.pending.unwrap();
        assert_eq!((pending.header.unwrap().stream, pending.have), (3, 3));
        assert_eq!(pending.bytes(), 12);
        let call = r.feed(&frame_bytes[12..]).unwrap();
        assert!(call.frames[0].started_earlier && call.pending.is_none());
        // A header cut short is pending too.
        let call = r.feed(&frame_bytes[..4]).unwrap();
        assert_eq!(
            call.pending,
            Some(Pending {
                header: None,
                have: 4
            })
        );
        assert_eq!(call.pending.unwrap().bytes(), 4);
    }

    #[test]
    fn headers_with_padding_priority_and_continuation() {
        let block = literals(&[(":status", "200"), ("content-type", "text/plain")]);
        let (first, rest) = block.split_at(5);
        let mut payload = vec![3]; // pad length
        payload.extend_from_slice(&[0x80, 0, 0, 1, 15]); // exclusive on 1, weight 16
        payload.extend_from_slice(first);
        payload.extend_from_slice(&[0, 0, 0]);
        let mut d = raw_frame(
            kind::HEADERS,
            flag::PADDED | flag::PRIORITY | flag::END_STREAM,
            5,
            &payload,
        );
        d.extend(raw_frame(kind::CONTINUATION, 0, 5, &rest[..3]));
        d.extend(raw_frame(
            kind::CONTINUATION,
            flag::END_HEADERS,
            5,
            &rest[3..],
        ));
        let call = Reader::from_start(false).feed(&d).unwrap();
        assert_eq!(call.frames.len(), 1);
        let f = &call.frames[0];
        assert_eq!(
            f.header.flags & (flag::END_HEADERS | flag::END_STREAM),
            flag::END_HEADERS | flag::END_STREAM
        );
        let Payload::Headers {
            block,
            priority,
            continuations,
            ..
        } = &f.payload
        else {
            panic!()
        };
        assert_eq!(*continuations, 2);
        assert_eq!(
            *priority,
            Some(Priority {
                exclusive: true,
                depends_on: 1,
                weight: 16
            })
        );
        assert_eq!(
            names(block)[1],
            ("content-type".to_string(), "text/plain".to_string())
        );
    }

    #[test]
    fn padded_data_and_control_frames() {
        let mut d = raw_frame(kind::DATA, flag::PADDED, 1, b"\x02body\0\0");
        d.extend(raw_frame(kind::DATA, flag::PADDED, 1, b"\x09short"));
        d.extend(raw_frame(kind::RST_STREAM, 0, 1, &[0, 0, 0, 8]));
        d.extend(raw_frame(kind::GOAWAY, 0, 0, b"\x80\0\0\x07\0\0\0\x02why"));
        d.extend(raw_frame(kind::PRIORITY, 0, 3, &[0, 0, 0, 1, 255]));
        d.extend(raw_frame(kind::SETTINGS, flag::ACK, 0, b""));
        d.extend(raw_frame(0xfa, 0x3, 7, b"whatever"));
        let call = Reader::from_start(false).feed(&d).unwrap();
        let payloads: Vec<_> = call.frames.iter().map(|f| f.payload.clone()).collect();
        assert_eq!(
            payloads,
            vec![
                Payload::Data {
                    body: b"body".to_vec(),
                    last: true,
                    grpc: vec![]
                },
                Payload::Malformed,
                Payload::RstStream(8),
                Payload::GoAway {
                    last_stream: 7,
                    code: 2,
                    debug: b"why".to_vec()
                },
                Payload::Priority(Priority {
                    exclusive: false,
                    depends_on: 1,
                    weight: 256
                }),
                Payload::Settings(vec![]),
                Payload::Unknown,
            ]
        );
    }

    #[test]
    fn grpc_message_prefixes_across_frames_and_calls() {
        let mut d = raw_frame(
            kind::HEADERS,
            flag::END_HEADERS,
            1,
            &literals(&[(":method", "POST"), ("content-type", "application/grpc")]),
        );
        // Two messages: 3 bytes uncompressed, then 2 bytes compressed, the second
        // prefix split between two DATA frames.
        d.extend(raw_frame(kind::DATA, 0, 1, b"\0\0\0\0\x03abc\x01\0"));
        d.extend(raw_frame(kind::DATA, flag::END_STREAM, 1, b"\0\0\x02zz"));
        for split in 0..=d.len() {
            let (_, out) = feed_all(&mut Reader::from_start(false), &[&d[..split], &d[split..]]);
            let grpc: Vec<_> = out
                .iter()
                .flat_map(|p| match p {
                    Payload::Data { grpc, .. } => grpc
                        .iter()
                        .filter_map(|g| g.message.map(|m| (m.compressed, m.len)))
                        .collect(),
                    _ => vec![],
                })
                .collect();
            assert_eq!(grpc, vec![(false, 3), (true, 2)], "split at {split}");
        }
        let call = Reader::from_start(false).feed(&d).unwrap();
        let message = |compressed, len| Some(GrpcMessage { compressed, len });
        let Payload::Data { grpc, .. } = &call.frames[1].payload else {
            panic!()
        };
        assert_eq!(
            grpc[..],
            [
                GrpcPrefix {
                    start: 0,
                    end: 5,
                    message: message(false, 3)
                },
                GrpcPrefix {
                    start: 8,
                    end: 10,
                    message: None
                },
            ]
        );
        let Payload::Data { grpc, .. } = &call.frames[2].payload else {
            panic!()
        };
        assert_eq!(
            grpc[..],
            [GrpcPrefix {
                start: 0,
                end: 3,
                message: message(true, 2)
            }]
        );
    }

    #[test]
    fn a_late_attach_finds_frames_and_marks_unseen_entries() {
        let mut r = Reader::mid_connection();
        // The middle of a frame: not aligned, not decoded.
        assert!(r.feed(b"tail of an earlier DATA frame").is_none());
        // Then a call that starts with a frame: indexed :method GET, dynamic entry 65
        // never seen, and a literal.
        let mut block = vec![0x82, 0xc1];
        block.extend(literals(&[("x-trace", "7")]));
        let d = raw_frame(
            kind::HEADERS,
            flag::END_HEADERS | flag::END_STREAM,
            9,
            &block,
        );
        let call = r.feed(&d).unwrap();
        let Payload::Headers { block, .. } = &call.frames[0].payload else {
            panic!()
        };
        assert!(!block.table_complete);
        assert_eq!(
            block.fields[1],
            Field {
                name: Name::Unknown(65),
                value: None,
                sensitive: false
            }
        );
        assert_eq!(block.fields.len(), 3);
        // A CONTINUATION whose HEADERS came before the attach.
        let call = r
            .feed(&raw_frame(
                kind::CONTINUATION,
                flag::END_HEADERS,
                9,
                b"\x82",
            ))
            .unwrap();
        assert_eq!(call.frames[0].payload, Payload::Continuation);
    }

    #[test]
    fn sniffing_takes_frames_and_turns_away_the_rest() {
        assert!(sniff(&client_bytes()[PREFACE.len()..], DEFAULT_MAX_FRAME));
        // A frame that goes on past the call is fine.
        let d = raw_frame(kind::DATA, 0, 1, &[0; 100]);
        assert!(sniff(&d[..50], DEFAULT_MAX_FRAME));
        for other in [
            &b"GET / HTTP/1.1\r\n\r\n"[..],
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc",
            b"\0\0\0\x08\x04\xd2\x16\x2f\0",
            b"\0\0\x04",
            &raw_frame(kind::SETTINGS, 0, 1, b""), // SETTINGS on a stream
            &raw_frame(kind::DATA, 0x40, 1, b""),  // undefined flag
            &raw_frame(kind::PING, 0, 0, b"1234"), // PING of 4 bytes
            &raw_frame(0x20, 0, 0, b""),           // unknown type
            &raw_frame(kind::DATA, 0, 1, &[0; 20_000]), // longer than the default max
        ] {
            assert!(
                !sniff(other, DEFAULT_MAX_FRAME),
                "{:02x?}",
                &other[..other.len().min(12)]
            );
        }
    }

    #[test]
    fn a_frame_longer_than_the_known_maximum_ends_http2() {
        let mut r = Reader::from_start(false);
        let mut d = raw_frame(kind::DATA, 0, 1, &[0; 20_000]);
        let call = r.feed(&d).unwrap();
        assert_eq!(call.lost_at, Some(0));
        assert!(r.is_dead() && r.feed(&d).is_none());
        // Once the peer allows it, the same frame is fine.
        let mut r = Reader::from_start(false);
        r.set_max_frame(1 << 20);
        d.extend(raw_frame(kind::PING, 0, 0, b"12345678"));
        assert_eq!(r.feed(&d).unwrap().frames.len(), 2);
        // Where the settings were not seen, a broken header only loses the framing.
        let mut r = Reader::mid_connection();
        assert!(r.feed(&raw_frame(kind::PING, 0, 0, b"12345678")).is_some());
        let mut d = raw_frame(kind::PING, 0, 0, b"12345678");
        d.extend(raw_frame(kind::SETTINGS, 0, 3, b""));
        let call = r.feed(&d).unwrap();
        assert_eq!((call.frames.len(), call.lost_at), (1, Some(17)));
        assert!(!r.is_dead());
    }

    #[test]
    fn random_bytes_never_panic_and_stay_bounded() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..3000 {
            let mut r = if round % 2 == 0 {
                Reader::from_start(round % 4 == 0)
            } else {
                Reader::mid_connection()
            };
            for _ in 0..8 {
                let len = (next() % 400) as usize;
                let mut data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                // Often a plausible header, to reach the payload decoders.
                if len > 9 && next() % 2 == 0 {
                    data[..3].copy_from_slice(&[0, 0, (next() % 64) as u8]);
                    data[3] = (next() % 11) as u8;
                    data[5] = 0;
                }
                let _ = r.feed(&data);
                assert!(r.payload.len() <= HEADER_BLOCK_CAP && r.grpc.len() <= MAX_GRPC_STREAMS);
                if next() % 16 == 0 {
                    r.lost();
                }
            }
        }
    }
}
