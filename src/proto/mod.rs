//! HTTP decoding of the plaintext of TLS calls: per connection and direction, find
//! whether the bytes are HTTP/1 or HTTP/2 and decode what each call carries.
//!
//! Detection, per direction: the HTTP/2 client preface; an HTTP/1 request or status
//! line; bytes that parse as HTTP/2 frames (a late attach); or the other direction of
//! the connection already found HTTP/2 or HTTP/1. A direction none of these match in
//! its first `MAX_TRIES` calls with data is left raw for good, so that other traffic
//! costs one map lookup per call.

#[cfg(test)]
mod fuzz;
pub mod hpack;
pub mod http1;
pub mod http2;
mod huffman;
#[cfg(test)]
pub mod testing;

use std::collections::HashMap;

/// One TLS connection: the process and the TLS library's connection object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnKey {
    pub pid: u32,
    pub conn: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    Read,
    Write,
}

/// What one call carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Http {
    H1(http1::Head),
    H2(http2::Call),
}

/// Connections followed at most (one more for the length of a call); past it the
/// least recently used is forgotten (its next call is then decoded as after a late
/// attach).
pub const MAX_CONNS: usize = 512;
/// The heap all connections' HTTP state may hold. One holds at most about 560 KiB (per
/// direction an HPACK table, a header block and a frame payload: `http2::Reader::held`),
/// most a few KiB; past the budget the least recently used connections are forgotten
/// likewise, which is said once. Without it 512 full connections would hold 280 MiB.
pub const MAX_HELD: usize = 64 << 20;
/// Calls with data a direction is given to look like HTTP.
const MAX_TRIES: u8 = 8;
/// Calls an HTTP/2 direction that lost its framing is given to find it again.
const MAX_MISSES: u8 = 32;

enum Side {
    Unknown {
        calls: u8,
    },
    H1,
    H2 {
        reader: Box<http2::Reader>,
        misses: u8,
    },
    Raw,
}

impl Side {
    fn held(&self) -> usize {
        match self {
            Side::H2 { reader, .. } => reader.held(),
            _ => 0,
        }
    }
}

struct Conn {
    /// Read, then write.
    sides: [Side; 2],
    used: u64,
    /// The heap it held after its last call.
    held: usize,
}

impl Conn {
    fn held_now(&self) -> usize {
        std::mem::size_of::<(ConnKey, Conn)>() + self.sides.iter().map(Side::held).sum::<usize>()
    }
}

pub struct Decoders {
    conns: HashMap<ConnKey, Conn>,
    clock: u64,
    /// The heap all connections held after their last calls.
    held: usize,
    budget: usize,
    /// The budget was reached (and said) once.
    over_budget: bool,
}

impl Default for Decoders {
    fn default() -> Self {
        Decoders::with_budget(MAX_HELD)
    }
}

impl Decoders {
    pub fn new() -> Self {
        Self::default()
    }

    fn with_budget(budget: usize) -> Self {
        Decoders {
            conns: HashMap::new(),
            clock: 0,
            held: 0,
            budget,
            over_budget: false,
        }
    }

    /// Decodes a completed call; `None` when it is not (or not yet known as) HTTP, or
    /// its bytes could not be placed in the framing: show it raw.
    pub fn decode(&mut self, key: ConnKey, dir: Dir, data: &[u8]) -> Option<Http> {
        if data.is_empty() {
            return None;
        }
        let (this, other) = self.sides(key, dir);
        let http = match this {
            Side::Raw => None,
            Side::H1 => http1::parse(data).map(Http::H1),
            Side::H2 { .. } => h2(this, other, data),
            Side::Unknown { .. } => detect(this, other, data),
        };
        self.account(key);
        http
    }

    /// Bytes of this direction were lost (a call cut short or not delivered): HTTP/2
    /// must find its framing again and trusts no HPACK entry seen before.
    pub fn gap(&mut self, key: ConnKey, dir: Dir) {
        if let Some(conn) = self.conns.get_mut(&key) {
            if let Side::H2 { reader, .. } = &mut conn.sides[dir as usize] {
                reader.lost();
            }
            self.account(key);
        }
    }

    /// Calls were lost without knowing whose (the ring buffer was full): every
    /// HTTP/2 direction starts over as after a late attach.
    pub fn gap_all(&mut self) {
        self.held = 0;
        for conn in self.conns.values_mut() {
            for side in &mut conn.sides {
                if let Side::H2 { reader, .. } = side {
                    reader.lost();
                }
            }
            conn.held = conn.held_now();
            self.held += conn.held;
        }
    }

    /// Brings the total up to date after a call of `key`'s, and keeps it within the
    /// budget by forgetting other connections, least recently used first.
    fn account(&mut self, key: ConnKey) {
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        let held = conn.held_now();
        self.held = self.held - conn.held + held;
        conn.held = held;
        while self.held > self.budget && self.forget_oldest(key) {
            if !std::mem::replace(&mut self.over_budget, true) {
                crate::diag::notice(&format!(
                    "HTTP decoding reached its {} MiB budget: the connections used least \
                     recently are forgotten, and decode again as after a late attach (said once)",
                    self.budget >> 20
                ));
            }
        }
    }

    /// Forgets the least recently used connection but `keep`; says whether there was one.
    fn forget_oldest(&mut self, keep: ConnKey) -> bool {
        let oldest = self
            .conns
            .iter()
            .filter(|(k, _)| **k != keep)
            .min_by_key(|(_, c)| c.used)
            .map(|(k, _)| *k);
        match oldest.and_then(|k| self.conns.remove(&k)) {
            Some(conn) => {
                self.held -= conn.held;
                true
            }
            None => false,
        }
    }

    /// This direction's side and the other one, tracking the connection if new; the
    /// connection over the bound is dropped on the next call.
    fn sides(&mut self, key: ConnKey, dir: Dir) -> (&mut Side, &mut Side) {
        self.clock += 1;
        if self.conns.len() > MAX_CONNS {
            self.forget_oldest(key);
        }
        let conn = self.conns.entry(key).or_insert_with(|| Conn {
            sides: [Side::Unknown { calls: 0 }, Side::Unknown { calls: 0 }],
            used: 0,
            held: 0,
        });
        conn.used = self.clock;
        let [read, write] = &mut conn.sides;
        match dir {
            Dir::Read => (read, write),
            Dir::Write => (write, read),
        }
    }
}

/// A direction not known yet.
fn detect(this: &mut Side, other: &mut Side, data: &[u8]) -> Option<Http> {
    let Side::Unknown { calls } = *this else {
        return None;
    };
    let from_start = |side: &Side| matches!(side, Side::Unknown { calls: 0 });
    let preface = data.len().min(http2::PREFACE.len());
    if data[..preface] == http2::PREFACE[..preface] {
        // The client side; the server side is from the start too if it had no call yet.
        *this = h2_side(http2::Reader::from_start(true));
        if matches!(other, Side::Unknown { .. } | Side::Raw) {
            *other = h2_side(if from_start(other) {
                http2::Reader::from_start(false)
            } else {
                http2::Reader::mid_connection()
            });
        }
        return h2(this, other, data);
    }
    match other {
        Side::H2 { .. } => {
            *this = h2_side(http2::Reader::mid_connection());
            return h2(this, other, data);
        }
        Side::H1 => {
            *this = Side::H1;
            return http1::parse(data).map(Http::H1);
        }
        _ => {}
    }
    if let Some(head) = http1::parse(data) {
        *this = Side::H1;
        if matches!(other, Side::Unknown { .. } | Side::Raw) {
            *other = Side::H1;
        }
        return Some(Http::H1(head));
    }
    if http2::sniff(data, http2::DEFAULT_MAX_FRAME) {
        *this = h2_side(http2::Reader::mid_connection());
        return h2(this, other, data);
    }
    *this = if calls + 1 >= MAX_TRIES {
        Side::Raw
    } else {
        Side::Unknown { calls: calls + 1 }
    };
    None
}

fn h2_side(reader: http2::Reader) -> Side {
    Side::H2 {
        reader: Box::new(reader),
        misses: 0,
    }
}

/// An HTTP/2 direction's call; settings it carries are applied to the other one.
fn h2(this: &mut Side, other: &mut Side, data: &[u8]) -> Option<Http> {
    let Side::H2 { reader, misses } = this else {
        return None;
    };
    let Some(call) = reader.feed(data) else {
        *misses += 1;
        if reader.is_dead() || *misses > MAX_MISSES {
            *this = Side::Raw;
        }
        return None;
    };
    *misses = 0;
    if let Side::H2 { reader: peer, .. } = other {
        for f in &call.frames {
            if let http2::Payload::Settings(params) = &f.payload {
                params
                    .iter()
                    .filter(|(id, _)| *id == http2::SETTINGS_MAX_FRAME_SIZE)
                    .for_each(|&(_, v)| peer.set_max_frame(v));
            }
        }
    }
    if reader.is_dead() {
        *this = Side::Raw;
    }
    Some(Http::H2(call))
}

#[cfg(test)]
mod tests {
    use super::http2::{flag, kind, Payload, PREFACE};
    use super::testing::{literals, raw_frame};
    use super::*;

    const KEY: ConnKey = ConnKey {
        pid: 1,
        conn: 0xabc,
    };

    fn frames(out: Option<Http>) -> Vec<http2::Frame> {
        match out {
            Some(Http::H2(call)) => call.frames,
            other => panic!("not HTTP/2: {other:?}"),
        }
    }

    fn headers(block_fields: &[(&str, &str)], stream: u32) -> Vec<u8> {
        raw_frame(
            kind::HEADERS,
            flag::END_HEADERS,
            stream,
            &literals(block_fields),
        )
    }

    #[test]
    fn a_client_preface_makes_both_directions_http2_from_the_start() {
        let mut d = Decoders::new();
        let mut write = PREFACE.to_vec();
        write.extend(raw_frame(kind::SETTINGS, 0, 0, &[0, 5, 0, 0x10, 0, 0]));
        write.extend(headers(&[(":path", "/")], 1));
        let f = frames(d.decode(KEY, Dir::Write, &write));
        assert_eq!(f.len(), 2);
        // The response direction is whole from its first byte, and honours the
        // client's SETTINGS_MAX_FRAME_SIZE (1 MiB) for a 20000-byte DATA frame.
        let mut read = raw_frame(kind::SETTINGS, 0, 0, b"");
        read.extend(raw_frame(kind::HEADERS, flag::END_HEADERS, 1, &[0x88]));
        read.extend(raw_frame(kind::DATA, flag::END_STREAM, 1, &[b'x'; 20_000]));
        let f = frames(d.decode(KEY, Dir::Read, &read));
        assert_eq!(f.len(), 3);
        let Payload::Headers { block, .. } = &f[1].payload else {
            panic!()
        };
        assert!(block.table_complete);
    }

    #[test]
    fn a_server_reads_the_preface() {
        let mut d = Decoders::new();
        assert!(d.decode(KEY, Dir::Read, &PREFACE[..10]).is_some());
        let mut rest = PREFACE[10..].to_vec();
        rest.extend(raw_frame(kind::SETTINGS, 0, 0, b""));
        let Some(Http::H2(call)) = d.decode(KEY, Dir::Read, &rest) else {
            panic!()
        };
        assert!(call.preface && call.frames.len() == 1);
        assert!(d
            .decode(
                KEY,
                Dir::Write,
                &raw_frame(kind::SETTINGS, flag::ACK, 0, b"")
            )
            .is_some());
    }

    #[test]
    fn http1_heads_in_both_directions() {
        let mut d = Decoders::new();
        let Some(Http::H1(req)) = d.decode(KEY, Dir::Write, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        else {
            panic!()
        };
        assert_eq!(req.headers.len(), 1);
        assert!(matches!(
            d.decode(KEY, Dir::Read, b"HTTP/1.1 200 OK\r\n\r\nbody"),
            Some(Http::H1(_))
        ));
        // A body call is shown raw.
        assert!(d.decode(KEY, Dir::Read, b"more body").is_none());
        // A response direction given up before the first request is taken back.
        let late = ConnKey { conn: 7, ..KEY };
        for _ in 0..MAX_TRIES {
            assert!(d.decode(late, Dir::Read, b"body of a response").is_none());
        }
        assert!(d
            .decode(late, Dir::Write, b"GET /again HTTP/1.1\r\n\r\n")
            .is_some());
        let head = d.decode(late, Dir::Read, b"HTTP/1.1 304 Not Modified\r\n\r\n");
        assert!(head.is_some());
    }

    #[test]
    fn other_traffic_is_given_up_after_a_few_calls() {
        let mut d = Decoders::new();
        for _ in 0..MAX_TRIES {
            assert!(d.decode(KEY, Dir::Write, b"hello, not http").is_none());
        }
        assert!(matches!(
            d.conns[&KEY].sides[Dir::Write as usize],
            Side::Raw
        ));
        assert!(d
            .decode(KEY, Dir::Write, b"GET / HTTP/1.1\r\n\r\n")
            .is_none());
        // Empty calls do not count.
        let other = ConnKey { conn: 1, ..KEY };
        for _ in 0..20 {
            d.decode(other, Dir::Write, b"");
        }
        assert!(d
            .decode(other, Dir::Write, b"GET / HTTP/1.1\r\n\r\n")
            .is_some());
    }

    #[test]
    fn a_late_attach_finds_http2_from_either_direction() {
        let mut d = Decoders::new();
        // A response direction's DATA tail, then frames.
        assert!(d
            .decode(KEY, Dir::Read, b"\x00\x01 rest of a DATA frame")
            .is_none());
        let mut read = raw_frame(kind::HEADERS, flag::END_HEADERS, 3, &[0x88, 0xbe]);
        read.extend(raw_frame(kind::DATA, 0, 3, b"{}"));
        let f = frames(d.decode(KEY, Dir::Read, &read));
        let Payload::Headers { block, .. } = &f[0].payload else {
            panic!()
        };
        assert_eq!(block.fields[1].name, hpack::Name::Unknown(62));
        // The write direction is HTTP/2 because the read one is.
        let f = frames(d.decode(KEY, Dir::Write, &headers(&[(":path", "/next")], 5)));
        assert_eq!(f[0].header.stream, 5);
    }

    #[test]
    fn lost_bytes_make_http2_find_its_framing_again() {
        let mut d = Decoders::new();
        let mut write = PREFACE.to_vec();
        write.extend(raw_frame(
            kind::HEADERS,
            flag::END_HEADERS,
            1,
            &[0x41, 1, b'a'],
        ));
        frames(d.decode(KEY, Dir::Write, &write));
        d.gap(KEY, Dir::Write);
        assert!(d.decode(KEY, Dir::Write, b"middle of a frame").is_none());
        // Entry 62 was seen before the gap: no longer trusted.
        let f = frames(d.decode(
            KEY,
            Dir::Write,
            &raw_frame(kind::HEADERS, flag::END_HEADERS, 3, &[0xbe]),
        ));
        let Payload::Headers { block, .. } = &f[0].payload else {
            panic!()
        };
        assert_eq!(block.fields[0].name, hpack::Name::Unknown(62));
        d.gap_all();
        for _ in 0..=MAX_MISSES {
            assert!(d.decode(KEY, Dir::Write, b"never frames again").is_none());
        }
        assert!(matches!(
            d.conns[&KEY].sides[Dir::Write as usize],
            Side::Raw
        ));
    }

    #[test]
    fn the_least_recently_used_connection_is_forgotten() {
        let mut d = Decoders::new();
        for conn in 0..MAX_CONNS as u64 {
            d.decode(
                ConnKey { pid: 1, conn },
                Dir::Write,
                b"GET / HTTP/1.1\r\n\r\n",
            );
        }
        // Connection 0 is used again; 1 is now the oldest.
        d.decode(ConnKey { pid: 1, conn: 0 }, Dir::Write, b"x");
        d.decode(ConnKey { pid: 2, conn: 0 }, Dir::Write, b"x");
        d.decode(ConnKey { pid: 2, conn: 0 }, Dir::Write, b"x");
        assert_eq!(d.conns.len(), MAX_CONNS);
        assert!(d.conns.contains_key(&ConnKey { pid: 1, conn: 0 }));
        assert!(!d.conns.contains_key(&ConnKey { pid: 1, conn: 1 }));
    }

    #[test]
    fn http_state_stays_within_its_budget() {
        let budget = 2 << 20;
        let mut d = Decoders::with_budget(budget);
        // Each connection fills its table: a size update to 64 KiB, 60 entries of 1 KiB.
        let mut block = vec![0x3f, 0xe1, 0xff, 0x03];
        for _ in 0..60 {
            block.extend([0x40, 1, b'k', 0x7f, 0xe9, 0x06]);
            block.extend([b'v'; 1000]);
        }
        let mut write = PREFACE.to_vec();
        write.extend(crate::hostile::header_frames(1, &block, 16_384));
        let key = |conn| ConnKey { pid: 1, conn };
        for conn in 0..40 {
            frames(d.decode(key(conn), Dir::Write, &write));
            let total: usize = d.conns.values().map(Conn::held_now).sum();
            assert_eq!(d.held, total);
            assert!(d.held <= budget, "{} over {budget}", d.held);
        }
        assert!(d.over_budget && d.conns.len() < 40, "{}", d.conns.len());
        assert!(d.conns.contains_key(&key(39)) && !d.conns.contains_key(&key(0)));
        // A forgotten connection decodes again, as after a late attach: entry 62 unknown.
        let again = raw_frame(kind::HEADERS, flag::END_HEADERS, 3, &[0x82, 0xbe]);
        let f = frames(d.decode(key(0), Dir::Write, &again));
        let Payload::Headers { block, .. } = &f[0].payload else {
            panic!()
        };
        assert_eq!(block.fields[1].name, hpack::Name::Unknown(62));
        d.gap_all();
        assert_eq!(d.held, d.conns.values().map(Conn::held_now).sum::<usize>());
    }

    /// Calls captured from node's http2 client and server (nghttp2's HPACK: Huffman,
    /// dynamic table), three GETs then a gRPC call: client writes, then server writes.
    const NODE_CLIENT: [&str; 5] = [
        "505249202a20485454502f322e300d0a0d0a534d0d0a0d0a000000040000000000000025010500000001048360f51782418b089d5c0b8170dc0bc0783f867a84495096034086f2b12d424f4f821c64",
        "000000040100000000000011010500000003048a613e0ffe768105b242ff82c086bfbe",
        "00000c01050000000504856133d852ff82c086bfbe",
        "0000220104000000070485611dc8c68f83c0865f8b1d75d0620d263d4c4d656440027465864d833505b11f00000700010000000700000000020909",
        "00000807000000000000000000000000000000080700000000000000000000000000",
    ];
    const NODE_SERVER: [&str; 6] = [
        "000000040000000000",
        "00000004010000000000002d010400000001885f87497ca58ae819aa4085f2b585457f037965736196dc34fd282794d27eea080271410ae34d5c0814c5a37f00000a00010000000168656c6c6f202f6f6e65",
        "00000401040000000388c0bfbe00001200010000000368656c6c6f202f74776f3f713d7365726465",
        "00000401040000000588c0bfbe00000c00010000000568656c6c6f202f7468726565",
        "00000f010400000007885f8b1d75d0620d263d4c4d6564bf0000080001000000070000000003010203",
        "00000807000000000000000007000000000000080700000000000000000700000000",
    ];

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Header lines of each call in turn, `skip` calls per direction left out (a late
    /// attach).
    fn node_headers(skip: usize) -> Vec<String> {
        let mut d = Decoders::new();
        let mut lines = Vec::new();
        for i in skip..NODE_SERVER.len() {
            for (dir, calls) in [
                (Dir::Write, &NODE_CLIENT[..]),
                (Dir::Read, &NODE_SERVER[..]),
            ] {
                let Some(data) = calls.get(i).map(|h| unhex(h)) else {
                    continue;
                };
                for f in frames(d.decode(KEY, dir, &data)) {
                    let Payload::Headers { block, .. } = f.payload else {
                        continue;
                    };
                    let fields: Vec<String> = block
                        .fields
                        .iter()
                        .map(|f| match (&f.name, &f.value) {
                            (hpack::Name::Known(n), Some(v)) => {
                                format!(
                                    "{}={}",
                                    String::from_utf8_lossy(n),
                                    String::from_utf8_lossy(v)
                                )
                            }
                            (name, _) => format!("{name:?}"),
                        })
                        .collect();
                    lines.push(fields.join(" "));
                }
            }
        }
        lines
    }

    #[test]
    fn real_traffic_from_the_start() {
        let lines = node_headers(0);
        assert_eq!(lines.len(), 8);
        assert_eq!(
            lines[1],
            ":path=/two?q=serde :method=GET :authority=127.0.0.1:18081 :scheme=http \
             user-agent=test/1 x-custom=abc"
        );
        assert!(lines[7].starts_with(":status=200 content-type=application/grpc date="));
    }

    #[test]
    fn real_traffic_after_a_late_attach() {
        let lines = node_headers(2);
        // Entries the first two requests inserted are unknown, never guessed; the
        // static and literal fields are there.
        assert_eq!(
            lines[0],
            ":path=/three :method=GET Unknown(64) :scheme=http Unknown(63) Unknown(62)"
        );
        // The gRPC response inserts content-type (now index 62, known) and refers to
        // the date entry from before the attach.
        assert_eq!(
            lines[4],
            ":status=200 content-type=application/grpc Unknown(63)"
        );
    }
}
