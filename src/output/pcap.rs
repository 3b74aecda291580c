//! pcapng for Wireshark: each connection becomes a synthetic TCP stream between its real
//! addresses and ports, with the plaintext as payload, so Wireshark's dissectors (HTTP,
//! HTTP/2, ...) read it. Calls whose connection is unknown are left out, never invented.

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};

use crate::diag::{safe, warning};
use crate::event::{Direction, Event};
use crate::output::Output;

/// LINKTYPE_RAW: packets start with an IPv4 or IPv6 header.
const LINKTYPE_RAW: u16 = 101;
/// Payload per synthetic segment, so that IP's 16-bit length always holds it.
const SEGMENT: usize = 32 * 1024;

/// Next sequence number of each side of a stream, keyed by (local, remote).
type Streams = HashMap<(SocketAddr, SocketAddr), (u32, u32)>;

pub struct Pcap<W: Write> {
    out: W,
    streams: Streams,
    /// Added to the kernel's monotonic timestamps to get wall-clock time.
    realtime_offset_ns: u64,
    left_out: u64,
}

impl<W: Write> Pcap<W> {
    pub fn new(mut out: W, realtime_offset_ns: u64) -> io::Result<Self> {
        // Section header: byte-order magic, version 1.0, section length unknown.
        let mut shb = Vec::new();
        shb.extend_from_slice(&0x1A2B_3C4Du32.to_le_bytes());
        shb.extend_from_slice(&1u16.to_le_bytes());
        shb.extend_from_slice(&0u16.to_le_bytes());
        shb.extend_from_slice(&(-1i64).to_le_bytes());
        block(&mut out, 0x0A0D_0D0A, &shb, &[])?;
        // Interface: raw IP, no snap length, nanosecond timestamps (if_tsresol = 9).
        let mut idb = Vec::new();
        idb.extend_from_slice(&LINKTYPE_RAW.to_le_bytes());
        idb.extend_from_slice(&0u16.to_le_bytes());
        idb.extend_from_slice(&0u32.to_le_bytes());
        block(&mut out, 1, &idb, &[(9, &[9])])?;
        Ok(Pcap {
            out,
            streams: HashMap::new(),
            realtime_offset_ns,
            left_out: 0,
        })
    }

    #[cfg(test)]
    pub fn into_inner(self) -> W {
        self.out
    }
}

impl<W: Write> Output for Pcap<W> {
    fn event(&mut self, ev: &Event) -> io::Result<()> {
        if ev.data.is_empty() {
            return Ok(());
        }
        let c = &ev.call;
        let (Some(local), Some(remote)) = (c.conn.local, c.conn.remote) else {
            if self.left_out == 0 {
                warning!("--pcap: calls whose connection is unknown are left out of the capture");
            }
            self.left_out += 1;
            return Ok(());
        };
        let (local_seq, remote_seq) = self.streams.entry((local, remote)).or_insert((1, 1));
        let outgoing = c.direction == Direction::Write;
        // The command name is the traced program's choice: escaped, as on a terminal.
        let comment = format!(
            "pid={} tid={} comm={} func={}",
            c.pid,
            c.tid,
            safe(c.comm.bytes()),
            c.func.name
        );
        let ts = c.end_ns() + self.realtime_offset_ns;
        for chunk in ev.data.chunks(SEGMENT) {
            let packet = if outgoing {
                let p = segment(local, remote, *local_seq, *remote_seq, chunk);
                *local_seq = local_seq.wrapping_add(chunk.len() as u32);
                p
            } else {
                let p = segment(remote, local, *remote_seq, *local_seq, chunk);
                *remote_seq = remote_seq.wrapping_add(chunk.len() as u32);
                p
            };
            let mut epb = Vec::with_capacity(20 + packet.len());
            epb.extend_from_slice(&0u32.to_le_bytes());
            epb.extend_from_slice(&((ts >> 32) as u32).to_le_bytes());
            epb.extend_from_slice(&(ts as u32).to_le_bytes());
            epb.extend_from_slice(&(packet.len() as u32).to_le_bytes());
            epb.extend_from_slice(&(packet.len() as u32).to_le_bytes());
            epb.extend_from_slice(&packet);
            block(&mut self.out, 6, &epb, &[(1, comment.as_bytes())])?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// A pcapng block: type, total length, body and each option (code, value) padded to 4
/// bytes, end of options, total length.
fn block(out: &mut impl Write, kind: u32, body: &[u8], options: &[(u16, &[u8])]) -> io::Result<()> {
    let mut buf = body.to_vec();
    pad(&mut buf);
    for (code, value) in options {
        buf.extend_from_slice(&code.to_le_bytes());
        buf.extend_from_slice(&(value.len() as u16).to_le_bytes());
        buf.extend_from_slice(value);
        pad(&mut buf);
    }
    if !options.is_empty() {
        buf.extend_from_slice(&[0; 4]); // opt_endofopt
    }
    let total = (12 + buf.len()) as u32;
    out.write_all(&kind.to_le_bytes())?;
    out.write_all(&total.to_le_bytes())?;
    out.write_all(&buf)?;
    out.write_all(&total.to_le_bytes())
}

fn pad(buf: &mut Vec<u8>) {
    buf.resize(buf.len().div_ceil(4) * 4, 0);
}

/// An IP packet carrying one TCP segment (PSH|ACK) with `payload`.
fn segment(src: SocketAddr, dst: SocketAddr, seq: u32, ack: u32, payload: &[u8]) -> Vec<u8> {
    let mut tcp = Vec::with_capacity(20 + payload.len());
    tcp.extend_from_slice(&src.port().to_be_bytes());
    tcp.extend_from_slice(&dst.port().to_be_bytes());
    tcp.extend_from_slice(&seq.to_be_bytes());
    tcp.extend_from_slice(&ack.to_be_bytes());
    tcp.extend_from_slice(&[5 << 4, 0x18]);
    tcp.extend_from_slice(&u16::MAX.to_be_bytes());
    tcp.extend_from_slice(&[0, 0, 0, 0]);
    tcp.extend_from_slice(payload);
    let mut ip = Vec::with_capacity(40 + tcp.len());
    // The TCP checksum covers a pseudo-header of the addresses, protocol and length.
    let pseudo_sum = match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            ip.extend_from_slice(&[0x45, 0]);
            ip.extend_from_slice(&((20 + tcp.len()) as u16).to_be_bytes());
            ip.extend_from_slice(&[0, 0, 0x40, 0, 64, 6, 0, 0]);
            ip.extend_from_slice(&s.octets());
            ip.extend_from_slice(&d.octets());
            let sum = checksum(&ip, 0);
            ip[10..12].copy_from_slice(&sum.to_be_bytes());
            sum_words(&ip[12..20]) + 6 + tcp.len() as u32
        }
        (s, d) => {
            let v6 = |a: IpAddr| match a {
                IpAddr::V4(a) => a.to_ipv6_mapped(),
                IpAddr::V6(a) => a,
            };
            ip.extend_from_slice(&[0x60, 0, 0, 0]);
            ip.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
            ip.extend_from_slice(&[6, 64]);
            ip.extend_from_slice(&v6(s).octets());
            ip.extend_from_slice(&v6(d).octets());
            sum_words(&ip[8..40]) + 6 + tcp.len() as u32
        }
    };
    let sum = checksum(&tcp, pseudo_sum);
    tcp[16..18].copy_from_slice(&sum.to_be_bytes());
    ip.extend_from_slice(&tcp);
    ip
}

/// The sum of big-endian 16-bit words, an odd last byte padded with zero.
fn sum_words(data: &[u8]) -> u32 {
    data.chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
        .fold(0u32, u32::wrapping_add)
}

/// The Internet checksum: one's complement of the one's-complement sum of `data`'s
/// words plus `initial` (a pseudo-header's sum).
fn checksum(data: &[u8], initial: u32) -> u16 {
    // A segment is at most 32 KiB, so the u32 sum cannot overflow before folding.
    let mut sum = u64::from(sum_words(data)) + u64::from(initial);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_header_checksum_verifies() {
        let p = segment(
            "127.0.0.1:1000".parse().unwrap(),
            "127.0.0.1:443".parse().unwrap(),
            1,
            1,
            b"hi",
        );
        assert_eq!(
            checksum(&p[..20], 0),
            0,
            "a correct header sums to all ones"
        );
        assert_eq!(u16::from_be_bytes([p[2], p[3]]) as usize, p.len());
        assert_eq!(&p[40..], b"hi");
        let pseudo = sum_words(&p[12..20]) + 6 + (p.len() - 20) as u32;
        assert_eq!(checksum(&p[20..], pseudo), 0, "the TCP checksum verifies");
    }

    #[test]
    fn ipv6_tcp_checksum_verifies_with_an_odd_payload() {
        let p = segment(
            "[::1]:1000".parse().unwrap(),
            "[::1]:443".parse().unwrap(),
            7,
            9,
            b"odd",
        );
        let pseudo = sum_words(&p[8..40]) + 6 + (p.len() - 40) as u32;
        assert_eq!(checksum(&p[40..], pseudo), 0);
    }

    #[test]
    fn a_large_write_becomes_framed_segments() {
        let data = vec![b'x'; SEGMENT + 10];
        let mut ev = crate::event::testing::event("SSL_write", &data);
        ev.call.conn.local = Some("127.0.0.1:40000".parse().unwrap());
        ev.call.conn.remote = Some("127.0.0.1:443".parse().unwrap());
        let mut pcap = Pcap::new(Vec::new(), 0).unwrap();
        pcap.event(&ev).unwrap();
        let out = pcap.into_inner();
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
        assert_eq!(kinds, [0x0A0D_0D0A, 1, 6, 6]);
    }

    #[test]
    fn blocks_are_padded_and_framed() {
        let mut out = Vec::new();
        block(&mut out, 6, &[1, 2, 3, 4, 5], &[(1, b"abc")]).unwrap();
        assert_eq!(out.len() % 4, 0);
        let total = u32::from_le_bytes(out[4..8].try_into().unwrap()) as usize;
        assert_eq!(total, out.len());
        assert_eq!(out[total - 4..], out[4..8]);
    }
}
