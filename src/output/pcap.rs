//! pcapng for Wireshark, between each connection's real addresses and ports. Calls
//! recognised as HTTP go on a second interface as exported PDUs that name their dissector
//! (`http`, `http2`): Wireshark has no HTTP/2 heuristic on TCP and takes port 443 for TLS,
//! so on TCP the plaintext would show as "SSL Continuation Data". Other calls become a
//! synthetic TCP stream, so Wireshark picks dissectors by port. Calls whose connection is
//! unknown are left out, never invented.

use std::collections::{HashMap, HashSet};
use std::io;
use std::mem;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;

use crate::diag::warning;
use crate::escape::escape_inline;
use crate::event::{Direction, Event, Payload};
use crate::output::{Batch, Formatter};
use crate::proto::{http2, Http, MAX_CONNS};

/// LINKTYPE_RAW: packets start with an IPv4 or IPv6 header.
const LINKTYPE_RAW: u16 = 101;
/// LINKTYPE_WIRESHARK_UPPER_PDU: tags (dissector, addresses, ports), then the PDU.
const LINKTYPE_UPPER_PDU: u16 = 252;
/// Interface ids, in the order their blocks are written.
const TCP_IF: u32 = 0;
const PDU_IF: u32 = 1;
/// Payload per synthetic segment, so that IP's 16-bit length always holds it.
const SEGMENT: usize = 32 * 1024;
/// HTTP/2 records are cut on frame boundaries past this size.
const RECORD: usize = 64 * 1024;
/// Wireshark refuses packets over 262144 bytes; the tags take under 100.
const LONGEST_PDU: usize = 262_144 - 128;

/// Next sequence number of each side of a stream, keyed by (local, remote).
type Streams = HashMap<(SocketAddr, SocketAddr), (u32, u32)>;

/// A TLS connection (pid, the library's connection object) and direction (true: write).
type Side = (u32, u64, bool);

/// Blocks are built straight into the output's batch, each payload copied once.
pub struct Pcap {
    streams: Streams,
    /// HTTP/2: the start of a frame that goes on in the next call. Wireshark does not
    /// reassemble exported PDUs, so each record must hold whole frames.
    held: HashMap<Side, Vec<u8>>,
    /// HTTP/1 connections: their body-only calls are exported as `http` too.
    http1: HashSet<(u32, u64)>,
    /// Added to the kernel's monotonic timestamps to get wall-clock time.
    realtime_offset_ns: u64,
    left_out: u64,
    /// The packet comment of the call at hand, its room reused.
    comment: Vec<u8>,
}

impl Pcap {
    /// The format, with the section header and the two interfaces appended to `out`.
    pub fn new(realtime_offset_ns: u64, out: &mut Batch) -> Self {
        // Section header: byte-order magic, version 1.0, section length unknown.
        let mut shb = Vec::new();
        shb.extend_from_slice(&0x1A2B_3C4Du32.to_le_bytes());
        shb.extend_from_slice(&1u16.to_le_bytes());
        shb.extend_from_slice(&0u16.to_le_bytes());
        shb.extend_from_slice(&(-1i64).to_le_bytes());
        block(out, 0x0A0D_0D0A, &[&shb], None, &[]);
        // Interfaces: no snap length, nanosecond timestamps (if_tsresol = 9).
        for linktype in [LINKTYPE_RAW, LINKTYPE_UPPER_PDU] {
            let mut idb = Vec::new();
            idb.extend_from_slice(&linktype.to_le_bytes());
            idb.extend_from_slice(&0u16.to_le_bytes());
            idb.extend_from_slice(&0u32.to_le_bytes());
            block(out, 1, &[&idb], None, &[(9, &[9])]);
        }
        Pcap {
            streams: HashMap::new(),
            held: HashMap::new(),
            http1: HashSet::new(),
            realtime_offset_ns,
            left_out: 0,
            comment: Vec::new(),
        }
    }
}

/// Where a packet comes from and goes to, with what the capture says about it.
struct Packet<'a> {
    src: SocketAddr,
    dst: SocketAddr,
    ts: u64,
    comment: &'a [u8],
}

impl Formatter for Pcap {
    fn event(&mut self, ev: &Event, http: Option<&Http>, out: &mut Batch) -> io::Result<()> {
        let c = &ev.call;
        if ev.data.is_empty() {
            // Nothing to show but a gap in its stream, if it had one.
            if let (Some(local), Some(remote)) = (c.conn.local, c.conn.remote) {
                self.skip(ev, (local, remote));
            }
            return Ok(());
        }
        let (Some(local), Some(remote)) = (c.conn.local, c.conn.remote) else {
            if self.left_out == 0 {
                warning!("--pcap: calls whose connection is unknown are left out of the capture");
            }
            self.left_out += 1;
            return Ok(());
        };
        let outgoing = c.direction == Direction::Write;
        let (src, dst) = if outgoing {
            (local, remote)
        } else {
            (remote, local)
        };
        let mut comment = mem::take(&mut self.comment);
        write_comment(&mut comment, ev);
        let packet = Packet {
            src,
            dst,
            ts: c.end_ns() + self.realtime_offset_ns,
            comment: &comment,
        };
        if ev.data.shared().is_none() {
            out.reserve(ev.data.len() + (ev.data.len() / SEGMENT + 1) * 256);
        }
        let conn = (c.pid, c.tls_conn);
        match http {
            Some(Http::H2(call)) => {
                self.http2(ev, call, (c.pid, c.tls_conn, outgoing), &packet, out)
            }
            Some(Http::H1(_)) => {
                bounded_insert(&mut self.http1, conn);
                pdu(out, &packet, "http", &ev.data, 0..ev.data.len())
            }
            None if self.http1.contains(&conn) => {
                pdu(out, &packet, "http", &ev.data, 0..ev.data.len())
            }
            None => {
                self.tcp(&packet, (local, remote), outgoing, &ev.data, out);
                self.skip(ev, (local, remote));
            }
        }
        self.comment = comment;
        Ok(())
    }
}

/// What each packet says of its call: who made it, what of it is missing, and where
/// its maker lives. Reused from call to call and built without `format!`, which was a
/// third of a small call's block, or a string of its own for any field.
fn write_comment(out: &mut Vec<u8>, ev: &Event) {
    let c = &ev.call;
    let mut n = itoa::Buffer::new();
    out.clear();
    field(out, "pid", n.format(c.pid).as_bytes());
    field(out, "tid", n.format(c.tid).as_bytes());
    // The command name is the traced program's choice: escaped, as on a terminal.
    escaped_field(out, "comm", c.comm.bytes());
    field(out, "func", c.func.name.as_bytes());
    if ev.truncated() > 0 {
        field(out, "truncated", n.format(ev.truncated()).as_bytes());
    }
    if ev.undelivered > 0 {
        field(out, "undelivered", n.format(ev.undelivered).as_bytes());
    }
    // The cgroup's path is the traced side's choice too; it goes last, so that its
    // spaces cannot pose as another field.
    if let Some(cg) = &ev.cgroup {
        if let Some(id) = &cg.container_id {
            field(out, "container", id.as_bytes());
        }
        escaped_field(out, "cgroup", &cg.path);
    }
}

/// `name=value`, after a space unless it is the first.
fn field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    field_name(out, name);
    out.extend_from_slice(value);
}

/// `name=value` with `value` escaped as a terminal sees it, as `diag::safe` does.
fn escaped_field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    field_name(out, name);
    // Writing into a Vec cannot fail.
    let _ = escape_inline(out, value);
}

fn field_name(out: &mut Vec<u8>, name: &str) {
    if !out.is_empty() {
        out.push(b' ');
    }
    out.extend_from_slice(name.as_bytes());
    out.push(b'=');
}

/// Adds to a set that must stay bounded: past the bound it starts over (the connections
/// forgotten are then exported as TCP).
fn bounded_insert(set: &mut HashSet<(u32, u64)>, conn: (u32, u64)) {
    if set.len() >= MAX_CONNS && !set.contains(&conn) {
        set.clear();
    }
    set.insert(conn);
}

impl Pcap {
    /// A synthetic TCP segment per 32 KiB, on the stream's own sequence numbers.
    fn tcp(
        &mut self,
        p: &Packet,
        key: (SocketAddr, SocketAddr),
        outgoing: bool,
        data: &Payload,
        out: &mut Batch,
    ) {
        let (local_seq, remote_seq) = self.streams.entry(key).or_insert((1, 1));
        let (seq, ack) = if outgoing {
            (local_seq, remote_seq)
        } else {
            (remote_seq, local_seq)
        };
        for start in (0..data.len()).step_by(SEGMENT) {
            let range = start..data.len().min(start + SEGMENT);
            *seq = seq.wrapping_add(range.len() as u32);
            segment(
                out,
                p,
                seq.wrapping_sub(range.len() as u32),
                *ack,
                data,
                range,
            );
        }
    }

    /// The bytes of a call that are not in the capture (truncated or undelivered, always
    /// its end) still move its side of the stream on: Wireshark then shows the gap
    /// ("previous segment not captured") where they are missing.
    fn skip(&mut self, ev: &Event, key: (SocketAddr, SocketAddr)) {
        let missing = ev.truncated() + ev.undelivered;
        if missing == 0 {
            return;
        }
        let (local_seq, remote_seq) = self.streams.entry(key).or_insert((1, 1));
        let seq = match ev.call.direction {
            Direction::Write => local_seq,
            _ => remote_seq,
        };
        *seq = seq.wrapping_add(missing as u32);
    }

    /// An HTTP/2 call's whole frames, the start of an unfinished one held for the next
    /// call. The frame boundaries are the decoder's.
    fn http2(&mut self, ev: &Event, call: &http2::Call, side: Side, p: &Packet, out: &mut Batch) {
        let mut buf = self.held.remove(&side).unwrap_or_default();
        // The call starts on a frame boundary: what was held will never complete.
        let fresh = call.preface || call.frames.first().is_some_and(|f| !f.started_earlier);
        if fresh && !buf.is_empty() {
            frames(out, p, &mem::take(&mut buf));
        }
        let data = &ev.data[..call.lost_at.unwrap_or(ev.data.len())];
        let tail = match call.lost_at {
            Some(_) => 0,
            None => call.pending.map_or(0, |pending| pending.bytes()),
        };
        let lossy = ev.truncated() > 0 || ev.undelivered > 0;
        if tail >= data.len() && !lossy {
            // The call is all inside one frame (a DATA frame's part is shown, not held).
            buf.extend_from_slice(data);
        } else {
            let split = data.len().saturating_sub(tail);
            buf.extend_from_slice(&data[..split]);
            frames(out, p, &mem::take(&mut buf));
            buf.extend_from_slice(&data[split..]);
        }
        // The rest of a frame that lost bytes, or one too long to export whole, goes
        // as it is: Wireshark shows it broken rather than not at all.
        if lossy || buf.len() > LONGEST_PDU {
            frames(out, p, &mem::take(&mut buf));
        }
        if !buf.is_empty() {
            if self.held.len() >= 2 * MAX_CONNS {
                self.held.clear();
            }
            self.held.insert(side, buf);
        }
    }
}

/// Whole frames (after the preface, if it leads) as records of about 64 KiB.
fn frames(out: &mut Batch, p: &Packet, buf: &[u8]) {
    for record in frame_records(buf) {
        for piece in record.chunks(LONGEST_PDU) {
            pdu(out, p, "http2", &Payload::Borrowed(piece), 0..piece.len());
        }
    }
}

/// An exported PDU for the named dissector, with the real addresses and ports, of
/// `range` of `data`.
fn pdu(out: &mut Batch, p: &Packet, dissector: &str, data: &Payload, range: Range<usize>) {
    let mut tags = Vec::with_capacity(96);
    let mut tag = |kind: u16, value: &[u8]| {
        tags.extend_from_slice(&kind.to_be_bytes());
        tags.extend_from_slice(&(value.len() as u16).to_be_bytes());
        tags.extend_from_slice(value);
    };
    tag(12, dissector.as_bytes());
    match (p.src.ip(), p.dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            tag(20, &s.octets());
            tag(21, &d.octets());
        }
        (s, d) => {
            tag(22, &v6(s).octets());
            tag(23, &v6(d).octets());
        }
    }
    tag(24, &2u32.to_be_bytes()); // EXP_PDU_PT_TCP
    tag(25, &u32::from(p.src.port()).to_be_bytes());
    tag(26, &u32::from(p.dst.port()).to_be_bytes());
    tag(0, &[]);
    packet_block(out, PDU_IF, p, &tags, data, range);
}

/// Cuts whole HTTP/2 frames into records of at most `RECORD` bytes where frames allow.
fn frame_records(buf: &[u8]) -> Vec<&[u8]> {
    let mut records = Vec::new();
    let mut start = 0;
    let mut at = if buf.starts_with(http2::PREFACE) {
        http2::PREFACE.len()
    } else {
        0
    };
    while at < buf.len() {
        let len = match buf.get(at..at + 3) {
            Some(l) => u32::from_be_bytes([0, l[0], l[1], l[2]]) as usize,
            None => buf.len(),
        };
        let next = at.saturating_add(9).saturating_add(len).min(buf.len());
        if next - start > RECORD && at > start {
            records.push(&buf[start..at]);
            start = at;
        }
        at = next;
    }
    if start < buf.len() {
        records.push(&buf[start..]);
    }
    records
}

fn v6(a: IpAddr) -> std::net::Ipv6Addr {
    match a {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    }
}

/// An enhanced packet block on `interface` whose packet is `head`, then `range` of
/// `data` (written from where it is when it can be), with the call's comment.
fn packet_block(
    out: &mut Batch,
    interface: u32,
    p: &Packet,
    head: &[u8],
    data: &Payload,
    range: Range<usize>,
) {
    let len = (head.len() + range.len()) as u32;
    let mut epb = [0; 20];
    epb[..4].copy_from_slice(&interface.to_le_bytes());
    epb[4..8].copy_from_slice(&((p.ts >> 32) as u32).to_le_bytes());
    epb[8..12].copy_from_slice(&(p.ts as u32).to_le_bytes());
    epb[12..16].copy_from_slice(&len.to_le_bytes());
    epb[16..].copy_from_slice(&len.to_le_bytes());
    block(
        out,
        6,
        &[&epb, head],
        Some((data, range)),
        &[(1, p.comment)],
    );
}

/// A pcapng block appended to `out`: type, total length, the body (`body` one part after
/// the other, then the payload's range if any), padded to 4 bytes, each option (code,
/// value) padded likewise, end of options, total length.
fn block(
    out: &mut Batch,
    kind: u32,
    body: &[&[u8]],
    payload: Option<(&Payload, Range<usize>)>,
    options: &[(u16, &[u8])],
) {
    let body_len = body.iter().map(|part| part.len()).sum::<usize>()
        + payload.as_ref().map_or(0, |(_, range)| range.len());
    let options_len: usize = options
        .iter()
        .map(|(_, v)| 4 + padded(v.len()))
        .sum::<usize>()
        + if options.is_empty() { 0 } else { 4 };
    let total = (12 + padded(body_len) + options_len) as u32;
    let start = out.size();
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(&total.to_le_bytes());
    for part in body {
        out.extend_from_slice(part);
    }
    if let Some((data, range)) = payload {
        out.payload(data, range);
    }
    pad(out, body_len);
    for (code, value) in options {
        out.extend_from_slice(&code.to_le_bytes());
        out.extend_from_slice(&(value.len() as u16).to_le_bytes());
        out.extend_from_slice(value);
        pad(out, value.len());
    }
    if !options.is_empty() {
        out.extend_from_slice(&[0; 4]); // opt_endofopt
    }
    out.extend_from_slice(&total.to_le_bytes());
    debug_assert_eq!(out.size() - start, total as usize);
}

fn padded(len: usize) -> usize {
    len.div_ceil(4) * 4
}

/// The zeros that pad a field of `len` bytes to a multiple of 4.
fn pad(out: &mut Batch, len: usize) {
    out.extend_from_slice(&[0; 3][..padded(len) - len]);
}

/// An enhanced packet block holding an IP packet with one TCP segment (PSH|ACK) of
/// `range` of `data`: the headers are laid out apart, the payload written from where it
/// is, or copied once into the block.
fn segment(out: &mut Batch, p: &Packet, seq: u32, ack: u32, data: &Payload, range: Range<usize>) {
    let payload = &data[range.clone()];
    let mut head = [0u8; 60];
    let tcp_len = 20 + payload.len();
    // The TCP checksum covers a pseudo-header of the addresses, protocol and length.
    let (ip_len, pseudo_sum) = match (p.src.ip(), p.dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            head[..12].copy_from_slice(&[0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 6, 0, 0]);
            head[2..4].copy_from_slice(&((20 + tcp_len) as u16).to_be_bytes());
            head[12..16].copy_from_slice(&s.octets());
            head[16..20].copy_from_slice(&d.octets());
            let sum = checksum(&[&head[..20]], 0);
            head[10..12].copy_from_slice(&sum.to_be_bytes());
            (20, ones_sum(&head[12..20]) + 6 + tcp_len as u64)
        }
        (s, d) => {
            head[..4].copy_from_slice(&[0x60, 0, 0, 0]);
            head[4..6].copy_from_slice(&(tcp_len as u16).to_be_bytes());
            head[6..8].copy_from_slice(&[6, 64]);
            head[8..24].copy_from_slice(&v6(s).octets());
            head[24..40].copy_from_slice(&v6(d).octets());
            (40, ones_sum(&head[8..40]) + 6 + tcp_len as u64)
        }
    };
    let tcp = &mut head[ip_len..ip_len + 20];
    tcp[..2].copy_from_slice(&p.src.port().to_be_bytes());
    tcp[2..4].copy_from_slice(&p.dst.port().to_be_bytes());
    tcp[4..8].copy_from_slice(&seq.to_be_bytes());
    tcp[8..12].copy_from_slice(&ack.to_be_bytes());
    tcp[12..14].copy_from_slice(&[5 << 4, 0x18]);
    tcp[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
    let sum = checksum(&[tcp, payload], pseudo_sum);
    tcp[16..18].copy_from_slice(&sum.to_be_bytes());
    packet_block(out, TCP_IF, p, &head[..ip_len + 20], data, range);
}

/// The sum of `data` as big-endian 16-bit words, an odd last byte padded with zero, not
/// yet wholly folded (`fold` ends it). The checksum reads every payload byte of --pcap,
/// so the words are summed in the machine's own byte order, four bytes a step, which the
/// compiler vectorises: a one's-complement sum in the other byte order is the same sum
/// with its bytes swapped (RFC 1071), so one swap at the end replaces one per word.
fn ones_sum(data: &[u8]) -> u64 {
    let mut words = data.chunks_exact(4);
    // Under 2^32 words of under 2^32 each cannot overflow.
    let native: u64 = words
        .by_ref()
        .map(|w| u64::from(u32::from_ne_bytes(w.try_into().expect("4 bytes"))))
        .sum();
    let mut sum = u64::from(u16::from_be(fold(native)));
    for pair in words.remainder().chunks(2) {
        sum += u64::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
    }
    sum
}

/// A one's-complement sum folded to 16 bits, its carries added back in.
fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The Internet checksum: one's complement of the one's-complement sum of `parts`
/// (each of even length but the last) plus `initial` (a pseudo-header's sum).
fn checksum(parts: &[&[u8]], initial: u64) -> u16 {
    !fold(initial + parts.iter().map(|part| ones_sum(part)).sum::<u64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The IP packet of one segment from `src` to `dst`.
    fn one_segment(src: &str, dst: &str, payload: &[u8]) -> Vec<u8> {
        let p = Packet {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            ts: 1,
            comment: b"c",
        };
        let mut out = Batch::default();
        segment(
            &mut out,
            &p,
            1,
            1,
            &Payload::Borrowed(payload),
            0..payload.len(),
        );
        let mut packets = packets(&written(&out));
        assert_eq!(packets.len(), 1);
        packets.remove(0).1
    }

    #[test]
    fn ipv4_header_checksum_verifies() {
        let p = one_segment("127.0.0.1:1000", "127.0.0.1:443", b"hi");
        assert_eq!(
            checksum(&[&p[..20]], 0),
            0,
            "a correct header sums to all ones"
        );
        assert_eq!(u16::from_be_bytes([p[2], p[3]]) as usize, p.len());
        assert_eq!(&p[40..], b"hi");
        let pseudo = ones_sum(&p[12..20]) + 6 + (p.len() - 20) as u64;
        assert_eq!(
            checksum(&[&p[20..]], pseudo),
            0,
            "the TCP checksum verifies"
        );
    }

    #[test]
    fn ipv6_tcp_checksum_verifies_with_an_odd_payload() {
        let p = one_segment("[::1]:1000", "[::1]:443", b"odd");
        let pseudo = ones_sum(&p[8..40]) + 6 + (p.len() - 40) as u64;
        assert_eq!(checksum(&[&p[40..]], pseudo), 0);
    }

    #[test]
    fn the_wide_sum_folds_to_the_sum_of_16_bit_words() {
        let data: Vec<u8> = (0..5000u32)
            .map(|i| (i * 7919 % 251) as u8 | 0x80)
            .collect();
        for len in [0, 1, 2, 7, 8, 9, 15, 16, 17, 4999, 5000] {
            let words: u64 = data[..len]
                .chunks(2)
                .map(|w| u64::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
                .sum();
            assert_eq!(fold(ones_sum(&data[..len])), fold(words), "{len} bytes");
        }
    }

    #[test]
    fn comments_name_the_caller_with_its_name_escaped_and_what_is_missing() {
        let mut ev = crate::event::testing::event("SSL_write", b"x");
        ev.call.comm = crate::event::Comm::new(b"a\x1b]0;x\n");
        let mut out = b"left over".to_vec();
        write_comment(&mut out, &ev);
        let expected = format!(
            "pid=42 tid=43 comm={} func=SSL_write",
            crate::diag::safe(ev.call.comm.bytes())
        );
        assert_eq!(String::from_utf8_lossy(&out), expected);
        assert!(!expected.contains('\x1b'));
        ev.call.len = 10;
        ev.call.captured = 4;
        ev.undelivered = 3;
        write_comment(&mut out, &ev);
        assert!(String::from_utf8_lossy(&out).ends_with(" truncated=6 undelivered=3"));
    }

    #[test]
    fn bytes_missing_from_a_call_leave_a_gap_in_its_stream() {
        let seq_of = |packet: &[u8]| u32::from_be_bytes(packet[24..28].try_into().unwrap());
        let mut batch = Batch::default();
        let mut pcap = Pcap::new(0, &mut batch);
        let mut first = crate::event::testing::event("SSL_write", b"abcd");
        first.call.len = 10;
        first.undelivered = 2;
        first.call.captured = 6;
        let second = crate::event::testing::event("SSL_write", b"efgh");
        for mut ev in [first, second] {
            ev.call.conn.local = Some("127.0.0.1:40000".parse().unwrap());
            ev.call.conn.remote = Some("127.0.0.1:443".parse().unwrap());
            pcap.event(&ev, None, &mut batch).unwrap();
        }
        let packets = packets(&written(&batch));
        // 4 bytes shown, 2 undelivered and 4 truncated: the next starts 10 further on.
        assert_eq!(seq_of(&packets[1].1) - seq_of(&packets[0].1), 10);
    }

    /// What a batch writes.
    fn written(batch: &Batch) -> Vec<u8> {
        let mut out = Vec::new();
        batch.write_to(&mut out).unwrap();
        out
    }

    #[test]
    fn a_large_write_becomes_framed_segments_written_from_the_call() {
        let data: Vec<u8> = (0..SEGMENT + 10).map(|i| i as u8).collect();
        let mut ev = crate::event::testing::event("SSL_write", &data);
        ev.data = Payload::Shared(std::sync::Arc::new(data.clone()));
        ev.call.conn.local = Some("127.0.0.1:40000".parse().unwrap());
        ev.call.conn.remote = Some("127.0.0.1:443".parse().unwrap());
        let mut batch = Batch::default();
        let mut pcap = Pcap::new(0, &mut batch);
        pcap.event(&ev, None, &mut batch).unwrap();
        assert!(batch.len() < 1024, "the first segment's payload was copied");
        let out = written(&batch);
        let packets = packets(&out);
        assert_eq!(packets[0].1[40..], data[..SEGMENT]);
        assert_eq!(packets[1].1[40..], data[SEGMENT..]);
        // Walk the blocks: section header, interface, then one packet per segment.
        let mut kinds = Vec::new();
        let mut at = 0;
        while at < out.len() {
            let kind = u32::from_le_bytes(out[at..at + 4].try_into().unwrap());
            let len = u32::from_le_bytes(out[at + 4..at + 8].try_into().unwrap()) as usize;
            assert_eq!(len % 4, 0);
            assert_eq!(out[at + 4..at + 8], out[at + len - 4..at + len]);
            kinds.push(kind);
            at += len;
        }
        assert_eq!(kinds, [0x0A0D_0D0A, 1, 1, 6, 6]);
    }

    #[test]
    fn blocks_are_padded_and_framed() {
        let mut batch = Batch::default();
        block(
            &mut batch,
            6,
            &[&[1, 2], &[3, 4]],
            Some((&Payload::Borrowed(b"56789"), 0..1)),
            &[(1, b"abc")],
        );
        let out = &written(&batch)[..];
        assert_eq!(out[8..16], [1, 2, 3, 4, b'5', 0, 0, 0]);
        assert_eq!(out.len() % 4, 0);
        let total = u32::from_le_bytes(out[4..8].try_into().unwrap()) as usize;
        assert_eq!(total, out.len());
        assert_eq!(out[total - 4..], out[4..8]);
    }

    /// The packets of a capture: (interface, packet data).
    fn packets(out: &[u8]) -> Vec<(u32, Vec<u8>)> {
        let mut packets = Vec::new();
        let mut at = 0;
        while at < out.len() {
            let kind = u32::from_le_bytes(out[at..at + 4].try_into().unwrap());
            let len = u32::from_le_bytes(out[at + 4..at + 8].try_into().unwrap()) as usize;
            if kind == 6 {
                let interface = u32::from_le_bytes(out[at + 8..at + 12].try_into().unwrap());
                let cap = u32::from_le_bytes(out[at + 20..at + 24].try_into().unwrap()) as usize;
                packets.push((interface, out[at + 28..at + 28 + cap].to_vec()));
            }
            at += len;
        }
        packets
    }

    #[test]
    fn http2_records_hold_whole_frames_across_calls() {
        use crate::proto::testing::raw_frame;
        use crate::proto::{ConnKey, Decoders, Dir};
        let mut stream = http2::PREFACE.to_vec();
        stream.extend(raw_frame(4, 0, 0, &[]));
        let frame = raw_frame(0, 0, 1, &[b'x'; 100]);
        stream.extend(&frame);
        // The DATA frame is split over three calls, the middle one inside it.
        let cuts = [
            0,
            http2::PREFACE.len() + 9 + 20,
            http2::PREFACE.len() + 9 + 60,
            stream.len(),
        ];
        let mut decoders = Decoders::new();
        let mut out = Batch::default();
        let mut pcap = Pcap::new(0, &mut out);
        for w in cuts.windows(2) {
            let mut ev = crate::event::testing::event("SSL_write", &stream[w[0]..w[1]]);
            ev.call.conn.local = Some("127.0.0.1:40000".parse().unwrap());
            ev.call.conn.remote = Some("127.0.0.2:443".parse().unwrap());
            let http = decoders.decode(ConnKey { pid: 1, conn: 2 }, Dir::Write, &ev.data);
            pcap.event(&ev, http.as_ref(), &mut out).unwrap();
        }
        let packets = packets(&written(&out));
        assert_eq!(
            packets.len(),
            2,
            "one record for the preface and SETTINGS, one for DATA"
        );
        // Tags: the dissector's name, two addresses, the port type, two ports, the end.
        let tags = (4 + 5) + 8 + 8 + 8 + 8 + 8 + 4;
        assert!(packets.iter().all(|(interface, _)| *interface == PDU_IF));
        assert_eq!(&packets[0].1[4..9], b"http2");
        assert_eq!(&packets[0].1[tags..], &stream[..http2::PREFACE.len() + 9]);
        assert_eq!(&packets[1].1[tags..], &frame[..]);
        // Source 127.0.0.1, port 40000 -> 443.
        assert_eq!(&packets[1].1[13..17], &[127, 0, 0, 1]);
        assert_eq!(&packets[1].1[37..41], &40000u32.to_be_bytes());
        assert_eq!(&packets[1].1[45..49], &443u32.to_be_bytes());
    }

    #[test]
    fn large_http2_calls_are_cut_on_frame_boundaries() {
        use crate::proto::testing::raw_frame;
        let frame = raw_frame(0, 0, 1, &[b'y'; 16_000]);
        let buf = frame.repeat(10);
        let records = frame_records(&buf);
        assert_eq!(records.len(), 3);
        assert!(records
            .iter()
            .all(|r| r.len() % frame.len() == 0 && r.len() <= RECORD));
    }
}
