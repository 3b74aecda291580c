//! The HTTP decoders on hostile peers: the HPACK amplification as a regression case, and
//! seeded structured fuzzers for HPACK, HTTP/2 and HTTP/1 that check for panics, hangs
//! and work (allocations, and the memory the decoders hold).

use std::time::Duration;

use super::hpack::{Decoder, MAX_FIELDS, MAX_LIST_BYTES, TABLE_CAP};
use super::http2::{self, PREFACE};
use super::*;
use crate::hostile::{self, Rng};

/// The best of a few runs of `f`: the machine is shared, and a slow run says nothing.
fn best(runs: usize, mut f: impl FnMut()) -> Duration {
    (0..runs)
        .map(|_| hostile::timed(&mut f).1)
        .min()
        .unwrap_or_default()
}

/// Before: each of block B's 65,536 references copied the 65,472-byte entry before the
/// limits were checked, 4 GiB per block: 0.42 MiB/s, where ordinary blocks decode at
/// 136 MiB/s.
#[test]
fn references_to_a_huge_entry_decode_at_the_rate_of_ordinary_blocks() {
    let (a, b) = (hostile::hpack_block_a(), hostile::hpack_block_b());
    let ordinary = hostile::hpack_ordinary(b.len());
    let mut d = Decoder::new();
    d.decode(&a);
    let (block, allocated) = hostile::allocations(|| d.decode(&b));
    // One field kept, the entry copied out once; the rest dropped uncopied.
    assert!(block.truncated && block.fields.len() == 1);
    assert!(
        allocated < 2 * b.len() as u64,
        "{allocated} bytes allocated"
    );
    let hostile = best(5, || drop(d.decode(&b)));
    let mut fresh = Decoder::new();
    let usual = best(5, || drop(fresh.decode(&ordinary)));
    let ratio = hostile.as_secs_f64() / usual.as_secs_f64().max(1e-9);
    assert!(ratio < 10.0, "block B {hostile:?}, ordinary {usual:?}");
}

/// The same blocks as a peer sends them, in HEADERS and CONTINUATION frames.
#[test]
fn hpack_amplification_in_frames_is_bounded_too() {
    let mut d = Decoders::new();
    let key = ConnKey { pid: 1, conn: 1 };
    let mut first = PREFACE.to_vec();
    first.extend(hostile::header_frames(1, &hostile::hpack_block_a(), 16_384));
    assert!(d.decode(key, Dir::Write, &first).is_some());
    let b = hostile::header_frames(3, &hostile::hpack_block_b(), 16_384);
    let (_, allocated) = hostile::allocations(|| {
        for _ in 0..8 {
            let Some(Http::H2(call)) = d.decode(key, Dir::Write, &b) else {
                panic!("not decoded")
            };
            assert_eq!(call.frames.len(), 1);
        }
    });
    assert!(
        allocated < 8 * 4 * b.len() as u64,
        "{allocated} bytes allocated"
    );
}

// ---- HPACK ----

/// An integer with an `prefix`-bit prefix (RFC 7541 §5.1), sometimes over-long.
fn int(rng: &mut Rng, out: &mut Vec<u8>, flags: u8, prefix: u8, mut v: u64) {
    let mask = (1u64 << prefix) - 1;
    if v < mask && !rng.one_in(50) {
        out.push(flags | v as u8);
        return;
    }
    out.push(flags | mask as u8);
    v = v.saturating_sub(mask);
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    if rng.one_in(50) {
        out.extend([0x80; 4]);
    }
    out.push(v as u8);
}

/// A string literal, raw or Huffman-coded; its length now and then wrong.
fn string(rng: &mut Rng, out: &mut Vec<u8>) {
    let len = if rng.one_in(200) {
        rng.upto(70_000)
    } else {
        rng.size(600)
    };
    let raw: Vec<u8> = match rng.below(3) {
        0 => rng.bytes(len),
        _ => (0..len).map(|i| b"abcdefghij-/:0123"[i % 17]).collect(),
    };
    let (flag, bytes) = if rng.one_in(2) {
        (0x80, super::huffman::encode(&raw))
    } else {
        (0, raw)
    };
    let claimed = match rng.below(30) {
        0 => bytes.len() + 1 + rng.upto(3),
        _ => bytes.len(),
    };
    int(rng, out, flag, 7, claimed as u64);
    out.extend(bytes);
}

/// A header block of representations of every kind, about `entries` dynamic entries in
/// the decoder's table so that references reach them.
fn hpack_block(rng: &mut Rng, entries: u64) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..rng.size(300) {
        match rng.below(12) {
            0..=2 => {
                let index = 1 + rng.below(61);
                int(rng, &mut out, 0x80, 7, index);
            }
            3..=5 => {
                let index = 62 + rng.below(entries + 3);
                int(rng, &mut out, 0x80, 7, index);
            }
            6 => {
                let index = rng.next_u64() >> rng.below(64);
                int(rng, &mut out, 0x80, 7, index);
            }
            7..=9 => {
                let (flags, prefix) = *rng.pick(&[(0x40, 6), (0x40, 6), (0x00, 4), (0x10, 4)]);
                let (known, dynamic) = (1 + rng.below(61), 62 + rng.below(entries + 2));
                let name = *rng.pick(&[0, 0, known, dynamic]);
                int(rng, &mut out, flags, prefix, name);
                if name == 0 {
                    string(rng, &mut out);
                }
                string(rng, &mut out);
            }
            10 => {
                let any = rng.next_u64() >> 30;
                let size = *rng.pick(&[0, 256, 4096, 65_536, 1 << 20, any]);
                int(rng, &mut out, 0x20, 5, size);
            }
            _ => {
                let len = rng.upto(8);
                out.extend(rng.bytes(len));
            }
        }
    }
    out
}

#[test]
fn fuzz_hpack() {
    let knobs = hostile::Knobs::from_env(hostile::FUZZ_SECONDS);
    hostile::fuzz("HPACK", knobs, hostile::per_input(), |rng| {
        let mut d = if rng.one_in(2) {
            Decoder::new()
        } else {
            Decoder::mid_connection()
        };
        for _ in 0..1 + rng.below(4) {
            let mut block = hpack_block(rng, 30);
            if rng.one_in(4) {
                rng.mutate(&mut block);
            }
            let (out, allocated) = hostile::allocations(|| d.decode(&block));
            let bytes: usize = out
                .fields
                .iter()
                .map(|f| {
                    let name = match &f.name {
                        hpack::Name::Known(n) => n.len(),
                        hpack::Name::Unknown(_) => 0,
                    };
                    name + f.value.as_ref().map_or(0, Vec::len)
                })
                .sum();
            assert!(out.fields.len() <= MAX_FIELDS && bytes <= MAX_LIST_BYTES);
            assert!(d.held() <= TABLE_CAP + 2048 * 64, "{} held", d.held());
            // Literals are copied a few times (decoded, shared, kept), each small one
            // costs an entry; fields are copied out once, within the block's limits.
            let bound = 32 * block.len() + 2 * MAX_LIST_BYTES + (256 << 10);
            assert!(
                allocated <= bound as u64,
                "{allocated} for {} bytes",
                block.len()
            );
        }
    });
}

// ---- HTTP/2 ----

fn frame(rng: &mut Rng, out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = if rng.one_in(5000) {
        payload.len() as u32 ^ (1 << rng.below(24))
    } else {
        payload.len() as u32
    };
    out.extend(&len.to_be_bytes()[1..]);
    out.extend([kind, flags]);
    out.extend(stream.to_be_bytes());
    out.extend(payload);
}

/// A header block in HEADERS (or PUSH_PROMISE) and CONTINUATION frames, with padding
/// and priority now and then, sometimes left open or interrupted.
fn header_frames(rng: &mut Rng, out: &mut Vec<u8>, stream: u32) {
    let mut block = hpack_block(rng, 20);
    if rng.one_in(3) {
        // gRPC: its DATA carries message prefixes.
        block.extend([0x5f, 16]);
        block.extend(b"application/grpc");
    }
    let tiny = 1 + rng.upto(64);
    let max = *rng.pick(&[16_000, 16_000, 100, tiny]);
    let pieces: Vec<&[u8]> = block.chunks(max).collect();
    let count = pieces.len().max(1);
    for i in 0..count {
        let piece = pieces.get(i).copied().unwrap_or_default();
        let last = i + 1 == count && !rng.one_in(20);
        let end_headers = if last { http2::flag::END_HEADERS } else { 0 };
        if i > 0 {
            frame(
                rng,
                out,
                http2::kind::CONTINUATION,
                end_headers,
                stream,
                piece,
            );
            continue;
        }
        let mut payload = Vec::new();
        let mut flags = end_headers | *rng.pick(&[0, http2::flag::END_STREAM]);
        if rng.one_in(6) {
            flags |= http2::flag::PADDED;
            payload.push(rng.byte() % 40);
        }
        if rng.one_in(6) {
            flags |= http2::flag::PRIORITY;
            payload.extend(rng.bytes(5));
        }
        let pad = payload
            .first()
            .copied()
            .filter(|_| flags & http2::flag::PADDED != 0);
        payload.extend(piece);
        payload.extend(vec![0; pad.unwrap_or(0) as usize]);
        let kind = *rng.pick(&[
            http2::kind::HEADERS,
            http2::kind::HEADERS,
            http2::kind::PUSH_PROMISE,
        ]);
        frame(rng, out, kind, flags, stream, &payload);
    }
}

/// A DATA frame, now and then with gRPC's message prefix, padding, or longer than the
/// receiver allows (then not HTTP/2 after all).
fn data_frame(rng: &mut Rng, out: &mut Vec<u8>, stream: u32) {
    let max = if rng.one_in(50) { 20_000 } else { 16_000 };
    let len = rng.size(max);
    let mut body = rng.bytes(len);
    if rng.one_in(2) && body.len() >= 5 {
        body[0] = 0;
        body[1..5].copy_from_slice(&(rng.below(100) as u32).to_be_bytes());
    }
    let flags = *rng.pick(&[0, 1, 8, 9]);
    if flags & http2::flag::PADDED != 0 {
        body.insert(0, rng.byte());
    }
    frame(rng, out, http2::kind::DATA, flags, stream, &body);
}

fn settings_frame(rng: &mut Rng, out: &mut Vec<u8>) {
    let mut settings = Vec::new();
    for _ in 0..rng.upto(4) {
        let id = *rng.pick(&[1u16, 3, 4, 5, 6, 0x42]);
        settings.extend(id.to_be_bytes());
        let any = rng.next_u64() as u32;
        let value = *rng.pick(&[16_384u32, 1 << 20, (1 << 24) - 1, any]);
        settings.extend(value.to_be_bytes());
    }
    // An acknowledgement has no payload.
    let flags = u8::from(rng.one_in(3));
    if flags != 0 {
        settings.clear();
    }
    frame(rng, out, http2::kind::SETTINGS, flags, 0, &settings);
}

/// GOAWAY, RST_STREAM, WINDOW_UPDATE or PRIORITY, now and then of the wrong length.
fn control_frame(rng: &mut Rng, out: &mut Vec<u8>, stream: u32) {
    use http2::kind;
    let kinds = [
        kind::GOAWAY,
        kind::RST_STREAM,
        kind::WINDOW_UPDATE,
        kind::PRIORITY,
    ];
    let kind = *rng.pick(&kinds);
    let len = match kind {
        _ if rng.one_in(20) => rng.upto(12),
        kind::GOAWAY => 8 + rng.upto(100),
        kind::PRIORITY => 5,
        _ => 4,
    };
    let stream = if kind == kind::GOAWAY { 0 } else { stream };
    let payload = rng.bytes(len);
    frame(rng, out, kind, 0, stream, &payload);
}

/// Frames of every type, most of them well-formed.
fn h2_frames(rng: &mut Rng, out: &mut Vec<u8>) {
    use http2::kind;
    for _ in 0..rng.size(40) {
        // Now and then a stream a frame of its type may not be on: framing is lost.
        let stream = if rng.one_in(40) {
            let any = rng.next_u64() as u32 & 0x7fff_ffff;
            *rng.pick(&[0, any])
        } else {
            *rng.pick(&[1, 3, 5])
        };
        match rng.below(10) {
            0..=2 => header_frames(rng, out, stream),
            3 | 4 => data_frame(rng, out, stream),
            5 => settings_frame(rng, out),
            6 => {
                let payload = rng.bytes(8);
                frame(rng, out, kind::PING, 0, 0, &payload);
            }
            7 => control_frame(rng, out, stream),
            8 => {
                let mut block = hpack_block(rng, 5);
                block.truncate(16_000);
                frame(rng, out, kind::CONTINUATION, 4, stream, &block);
            }
            _ => {
                let (kind, flags, len) = (10 + rng.byte() % 246, rng.byte(), rng.size(64));
                let payload = rng.bytes(len);
                frame(rng, out, kind, flags, stream, &payload);
            }
        }
    }
}

/// One direction's bytes, cut into calls at random points.
fn calls(rng: &mut Rng, bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let n = 1 + rng.size(bytes.len() - at - 1).min(bytes.len() - at - 1);
        out.push(bytes[at..at + n].to_vec());
        at += n;
    }
    out
}

/// The most one connection holds: per direction an HPACK table at its cap with its
/// slots, a header block and a frame payload at theirs, and gRPC streams.
const CONN_HELD: usize = 2 * (TABLE_CAP + 2048 * 64 + 2 * http2::HEADER_BLOCK_CAP + (16 << 10));

#[test]
fn fuzz_http2() {
    let knobs = hostile::Knobs::from_env(hostile::FUZZ_SECONDS);
    hostile::fuzz("HTTP/2", knobs, hostile::per_input(), |rng| {
        let mut d = Decoders::new();
        let mut sent = Vec::new();
        for conn in 0..1 + rng.below(3) {
            for dir in [Dir::Write, Dir::Read] {
                let mut bytes = if dir == Dir::Write && !rng.one_in(4) {
                    PREFACE.to_vec()
                } else {
                    Vec::new()
                };
                h2_frames(rng, &mut bytes);
                if rng.one_in(4) {
                    rng.mutate(&mut bytes);
                }
                let key = ConnKey { pid: 7, conn };
                sent.extend(calls(rng, &bytes).into_iter().map(|c| (key, dir, c)));
            }
        }
        // The two directions of each connection interleave.
        for i in (1..sent.len()).rev() {
            if rng.one_in(3) {
                sent.swap(i, rng.below(i as u64 + 1) as usize);
            }
        }
        let total: usize = sent.iter().map(|(_, _, c)| c.len()).sum();
        let ((), allocated) = hostile::allocations(|| {
            for (key, dir, call) in &sent {
                d.decode(*key, *dir, call);
                match rng.below(40) {
                    0 => d.gap(*key, *dir),
                    1 => d.gap_all(),
                    _ => {}
                }
                let held: usize = d.conns.values().map(Conn::held_now).sum();
                assert_eq!(d.held, held);
                assert!(d.conns.values().all(|c| c.held <= CONN_HELD), "{held} held");
            }
        });
        let bound = 40 * total + 4096 * sent.len() + (1 << 20);
        assert!(allocated <= bound as u64, "{allocated} for {total} bytes");
    });
}

// ---- HTTP/1 ----

/// A request or response head, sometimes cut, damaged or followed by a body.
fn http1_head(rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    let eol: &[u8] = if rng.one_in(5) { b"\n" } else { b"\r\n" };
    if rng.one_in(2) {
        out.extend(*rng.pick(&[&b"GET"[..], b"POST", b"PUT", b"OPTIONS", b"PRI", b"X"]));
        out.push(b' ');
        let len = rng.size(3000);
        out.push(b'/');
        out.extend((0..len).map(|i| b"abc/?=&%20"[i % 10]));
        out.extend(*rng.pick(&[
            &b" HTTP/1.1"[..],
            b" HTTP/1.0",
            b" HTTP/2",
            b" HTTP/1.1 x",
            b"",
        ]));
    } else {
        out.extend(*rng.pick(&[&b"HTTP/1.1 "[..], b"HTTP/1.0 ", b"HTTP/9.9 ", b"HTTP/"]));
        out.extend(format!("{} ", rng.below(1000)).as_bytes());
        let len = rng.size(100);
        out.extend(rng.bytes(len).iter().map(|b| b'A' + b % 26));
    }
    out.extend(eol);
    for _ in 0..rng.size(200) {
        let name_len = 1 + rng.size(40);
        out.extend((0..name_len).map(|i| b"content-typeXx_"[i % 15]));
        out.extend(*rng.pick(&[&b": "[..], b":", b" : "]));
        let value_len = rng.size(5000);
        out.extend(rng.bytes(value_len).iter().map(|b| b' ' + b % 94));
        out.extend(eol);
    }
    out.extend(eol);
    let body = rng.size(100);
    out.extend(rng.bytes(body));
    let cut = rng.upto(out.len());
    if rng.one_in(3) {
        out.truncate(cut);
    }
    out
}

#[test]
fn fuzz_http1() {
    let knobs = hostile::Knobs::from_env(hostile::FUZZ_SECONDS);
    hostile::fuzz("HTTP/1", knobs, hostile::per_input(), |rng| {
        let mut data = http1_head(rng);
        if rng.one_in(4) {
            rng.mutate(&mut data);
        }
        let (head, allocated) = hostile::allocations(|| http1::parse(&data));
        // A head cut by the call is closed on a copy; the headers are copied out.
        assert!(
            allocated <= 3 * data.len() as u64 + (16 << 10),
            "{allocated} for {} bytes",
            data.len()
        );
        if let Some(head) = head {
            assert!(head.headers.len() <= http1::MAX_HEADERS);
            assert!(!head.too_many_headers || head.headers.is_empty());
        }
        let mut d = Decoders::new();
        let key = ConnKey { pid: 1, conn: 1 };
        for call in calls(rng, &data) {
            d.decode(key, Dir::Write, &call);
        }
    });
}
