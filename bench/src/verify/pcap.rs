//! sslsniff's pcapng, read back into calls: each enhanced packet carries a comment that
//! names the call's thread and function and what of it is missing, and the packets of
//! one call follow each other with the call's timestamp.

use std::io::BufRead;

use anyhow::{bail, ensure, Context, Result};

use super::Dir;

const SECTION_HEADER: u32 = 0x0A0D_0D0A;
const ENHANCED_PACKET: u32 = 6;
/// sslsniff's interfaces: raw IP packets, and exported PDUs for HTTP.
const TCP_IF: u32 = 0;
const PDU_IF: u32 = 1;
/// Blocks larger than this are no block sslsniff writes (a packet is at most 256 KiB).
const LONGEST_BLOCK: usize = 1 << 20;
/// sslsniff starts each side of a synthetic stream at this sequence number.
const FIRST_SEQ: u32 = 1;

/// One call read back from its packets.
pub struct Call<'a> {
    pub dir: Dir,
    pub payload: &'a [u8],
    /// The comment says that bytes of the call are missing (truncated or undelivered).
    pub cut: bool,
    /// Where the call starts in its side's stream, from its first TCP segment's
    /// sequence number (None for exported PDUs). A call of which no byte was written
    /// leaves no packet but moves the stream on, so later calls still find their place.
    pub stream_pos: Option<u64>,
}

/// The call being put together from its packets.
struct Current {
    ts: u64,
    comment: Vec<u8>,
    dir: Dir,
    cut: bool,
    stream_pos: Option<u64>,
}

/// Reads a capture to its end and hands each call to `call`.
pub fn check(mut r: impl BufRead, call: &mut dyn FnMut(Call)) -> Result<()> {
    let mut current: Option<Current> = None;
    let mut payload = Vec::new();
    let mut block = Vec::new();
    let mut first = true;
    let mut streams = Positions::default();
    while let Some(kind) = next_block(&mut r, &mut block)? {
        if first {
            ensure!(kind == SECTION_HEADER, "not a pcapng file");
            first = false;
        }
        if kind != ENHANCED_PACKET {
            continue;
        }
        let packet = Packet::parse(&block)?;
        if current.as_ref().map(|c| (c.ts, &c.comment[..])) != Some((packet.ts, packet.comment)) {
            if let Some(done) = current.take() {
                call(done.finish(&payload));
            }
            payload.clear();
            let dir = direction(packet.comment)?;
            current = Some(Current {
                ts: packet.ts,
                comment: packet.comment.to_vec(),
                dir,
                cut: is_cut(packet.comment),
                stream_pos: packet.seq().map(|seq| streams.at(dir, seq)),
            });
        }
        payload.extend_from_slice(packet.payload()?);
    }
    if let Some(done) = current {
        call(done.finish(&payload));
    }
    Ok(())
}

impl Current {
    fn finish(self, payload: &[u8]) -> Call<'_> {
        Call {
            dir: self.dir,
            payload,
            cut: self.cut,
            stream_pos: self.stream_pos,
        }
    }
}

/// Each side's position in its stream, unwrapped from 32-bit sequence numbers (the
/// bench's load is one connection, so a side is named by its direction).
#[derive(Default)]
struct Positions {
    last: [Option<(u32, u64)>; 2],
}

impl Positions {
    fn at(&mut self, dir: Dir, seq: u32) -> u64 {
        let side = &mut self.last[usize::from(dir == Dir::Write)];
        let pos = match *side {
            Some((last_seq, last_pos)) => last_pos + u64::from(seq.wrapping_sub(last_seq)),
            None => u64::from(seq.wrapping_sub(FIRST_SEQ)),
        };
        *side = Some((seq, pos));
        pos
    }
}

/// `truncated=N` or `undelivered=N` in a packet's comment.
fn is_cut(comment: &[u8]) -> bool {
    let text = String::from_utf8_lossy(comment);
    text.split(' ')
        .any(|field| field.starts_with("truncated=") || field.starts_with("undelivered="))
}

/// The next block's type, its body in `block` (after type and length); None at the end.
fn next_block(r: &mut impl BufRead, block: &mut Vec<u8>) -> Result<Option<u32>> {
    if r.fill_buf()?.is_empty() {
        return Ok(None);
    }
    let mut head = [0; 8];
    r.read_exact(&mut head)
        .context("a pcapng block cut short")?;
    let kind = u32::from_le_bytes(head[..4].try_into().expect("4 bytes"));
    let len = u32::from_le_bytes(head[4..].try_into().expect("4 bytes")) as usize;
    ensure!(
        (12..=LONGEST_BLOCK).contains(&len) && len % 4 == 0,
        "a pcapng block of {len} bytes"
    );
    block.resize(len - 8, 0);
    r.read_exact(block).context("a pcapng block cut short")?;
    ensure!(
        block[len - 12..] == head[4..],
        "a pcapng block whose lengths differ"
    );
    Ok(Some(kind))
}

struct Packet<'a> {
    interface: u32,
    ts: u64,
    data: &'a [u8],
    comment: &'a [u8],
}

impl<'a> Packet<'a> {
    fn parse(block: &'a [u8]) -> Result<Self> {
        let word = |at: usize| -> Result<u32> {
            let b = block
                .get(at..at + 4)
                .context("an enhanced packet block cut short")?;
            Ok(u32::from_le_bytes(b.try_into().expect("4 bytes")))
        };
        let interface = word(0)?;
        let ts = (u64::from(word(4)?) << 32) | u64::from(word(8)?);
        let captured = word(12)? as usize;
        let data = block
            .get(20..20 + captured)
            .context("a packet longer than its block")?;
        let mut at = 20 + captured.div_ceil(4) * 4;
        let mut comment: &[u8] = &[];
        // Options: code, length, value padded to 4 bytes; code 0 ends them.
        while let Some(opt) = block.get(at..at + 4) {
            let code = u16::from_le_bytes([opt[0], opt[1]]);
            let len = usize::from(u16::from_le_bytes([opt[2], opt[3]]));
            if code == 0 {
                break;
            }
            let value = block
                .get(at + 4..at + 4 + len)
                .context("an option cut short")?;
            if code == 1 {
                comment = value;
            }
            at += 4 + len.div_ceil(4) * 4;
        }
        Ok(Packet {
            interface,
            ts,
            data,
            comment,
        })
    }

    /// The TCP segment's sequence number; None for an exported PDU.
    fn seq(&self) -> Option<u32> {
        if self.interface != TCP_IF {
            return None;
        }
        let tcp = tcp_segment(self.data).ok()?;
        Some(u32::from_be_bytes(tcp.get(4..8)?.try_into().ok()?))
    }

    /// The TCP segment's payload of an IP packet, or an exported PDU's.
    fn payload(&self) -> Result<&'a [u8]> {
        match self.interface {
            TCP_IF => tcp_payload(self.data),
            PDU_IF => pdu_payload(self.data),
            other => bail!("a packet on interface {other}"),
        }
    }
}

fn tcp_payload(ip: &[u8]) -> Result<&[u8]> {
    let tcp = tcp_segment(ip)?;
    let offset = usize::from(tcp.get(12).context("a TCP header cut short")? >> 4) * 4;
    tcp.get(offset..).context("a TCP header cut short")
}

/// The TCP segment of an IP packet, header included.
fn tcp_segment(ip: &[u8]) -> Result<&[u8]> {
    let (header, total) = match ip.first().map(|b| b >> 4) {
        Some(4) => (
            usize::from(ip[0] & 0xf) * 4,
            usize::from(u16::from_be_bytes([ip[2], ip[3]])),
        ),
        Some(6) => (40, 40 + usize::from(u16::from_be_bytes([ip[4], ip[5]]))),
        _ => bail!("a packet that is neither IPv4 nor IPv6"),
    };
    ip.get(header..total).context("an IP packet cut short")
}

/// Tags (type, length, value; big-endian), up to the end tag, then the PDU.
fn pdu_payload(mut data: &[u8]) -> Result<&[u8]> {
    loop {
        let tag = data.get(..4).context("exported PDU tags cut short")?;
        let len = usize::from(u16::from_be_bytes([tag[2], tag[3]]));
        let end = tag[0] == 0 && tag[1] == 0;
        data = data
            .get(4 + len..)
            .context("an exported PDU tag cut short")?;
        if end {
            return Ok(data);
        }
    }
}

/// `pid=.. tid=.. comm=.. func=NAME`: reads and writes by the function's name.
fn direction(comment: &[u8]) -> Result<Dir> {
    let text = String::from_utf8_lossy(comment);
    let func = text
        .rsplit_once("func=")
        .map(|(_, f)| f.to_ascii_lowercase())
        .with_context(|| format!("a packet comment without func=: {text:?}"))?;
    if func.contains("read") {
        Ok(Dir::Read)
    } else if func.contains("write") {
        Ok(Dir::Write)
    } else {
        bail!("a packet of {func}, neither a read nor a write")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sslsniff::event::{testing, Call, Conn, Event, Payload};
    use sslsniff::output::pcap::Pcap;
    use sslsniff::output::{Batch, Formatter};
    use std::sync::Arc;

    /// A call on one connection of 127.0.0.1, whole, ended at `end_ns`.
    fn event<'a>(func: &str, tid: u32, end_ns: u64, data: &'a [u8]) -> Event<'a> {
        let call = Call {
            tid,
            start_ns: end_ns - 1,
            latency_ns: 1,
            conn: Conn {
                fd: Some(3),
                local: Some("127.0.0.1:40000".parse().unwrap()),
                remote: Some("127.0.0.1:443".parse().unwrap()),
            },
            ..testing::call(func, data)
        };
        Event {
            call,
            data: Payload::Shared(Arc::new(data.to_vec())),
            ..testing::event(func, data)
        }
    }

    /// sslsniff's pcapng of `calls`.
    fn capture(calls: &[Event]) -> Vec<u8> {
        let mut batch = Batch::default();
        let mut pcap = Pcap::new(0, &mut batch);
        for ev in calls {
            pcap.event(ev, None, &mut batch).unwrap();
        }
        let mut out = Vec::new();
        batch.write_to(&mut out).unwrap();
        out
    }

    #[test]
    fn sslsniffs_own_capture_reads_back_call_by_call() {
        let big: Vec<u8> = (0..100_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let calls = [
            event("SSL_write_ex", 10, 100, &big),
            event("SSL_read_ex", 11, 200, b"first read"),
            event("SSL_read_ex", 11, 300, b"second read"),
        ];
        let out = capture(&calls);
        let mut got = Vec::new();
        check(&out[..], &mut |call| {
            got.push((call.dir, call.payload.to_vec()))
        })
        .unwrap();
        assert_eq!(
            got,
            [
                (Dir::Write, big.clone()),
                (Dir::Read, b"first read".to_vec()),
                (Dir::Read, b"second read".to_vec()),
            ]
        );
        assert!(check(&out[..out.len() - 1], &mut |_| {}).is_err());
    }

    #[test]
    fn calls_missing_bytes_are_marked_and_leave_later_calls_in_place() {
        let mut lost = event("SSL_read_ex", 11, 200, b"");
        (lost.call.len, lost.call.captured, lost.undelivered) = (7, 7, 7);
        let mut partial = event("SSL_read_ex", 11, 300, b"abc");
        (partial.call.len, partial.call.captured, partial.undelivered) = (5, 5, 2);
        let calls = [
            event("SSL_read_ex", 11, 100, b"first read"),
            lost,
            partial,
            event("SSL_read_ex", 11, 400, b"last"),
        ];
        let out = capture(&calls);
        let mut got = Vec::new();
        check(&out[..], &mut |call| {
            got.push((call.payload.to_vec(), call.cut, call.stream_pos))
        })
        .unwrap();
        assert_eq!(
            got,
            [
                (b"first read".to_vec(), false, Some(0)),
                (b"abc".to_vec(), true, Some(17)),
                (b"last".to_vec(), false, Some(22)),
            ]
        );
    }
}
