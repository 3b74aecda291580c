//! Turns ring-buffer records into events: size-checked decoding, reassembly of the
//! chunks of one call, and resolving handshakes that need a later call to be judged.

use std::borrow::Cow;
use std::collections::HashMap;
use std::mem::size_of;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::bpf::types::{direction, event_hdr};
use crate::libs::{self, Outcome, Role};

/// How long an unfinished handshake attempt waits for a success before it is reported.
pub const HANDSHAKE_PATIENCE_NS: u64 = 1_000_000_000;
/// A call's chunks are written right after it returns, but the writing task can be
/// preempted between chunks: only after this long is a call missing chunks given up on
/// (normally the BPF side says so at once with an empty record).
pub const CHUNK_PATIENCE_NS: u64 = 1_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handshake {
    Done,
    Failed,
    /// Returned a would-block-or-error value and no success followed in time.
    NotCompleted,
}

/// One TLS call, whole.
#[derive(Debug)]
pub struct Event<'a> {
    pub hdr: event_hdr,
    pub data: Cow<'a, [u8]>,
    /// Captured bytes that never reached user space (ring buffer full).
    pub missing: u64,
    pub handshake: Option<Handshake>,
}

impl Event<'_> {
    /// Bytes beyond the capture limit.
    pub fn truncated(&self) -> u64 {
        self.hdr.len - self.hdr.captured
    }

    pub fn end_ns(&self) -> u64 {
        self.hdr.ts_ns + self.hdr.latency_ns
    }

    pub fn comm(&self) -> Cow<'_, str> {
        // SAFETY: i8 and u8 have the same size and alignment, and every bit pattern is
        // valid for both; the slice borrows the header it is made from.
        let bytes: &[u8] = unsafe {
            std::slice::from_raw_parts(self.hdr.comm.as_ptr().cast(), self.hdr.comm.len())
        };
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        String::from_utf8_lossy(&bytes[..end])
    }

    pub fn conn(&self) -> Conn {
        Conn::from_raw(&self.hdr.conn)
    }

    pub fn func_name(&self) -> &'static str {
        libs::by_id(self.hdr.func).map_or("?", |(_, f)| f.name)
    }
}

/// The socket under a call, when connection tracking saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conn {
    pub fd: Option<i32>,
    pub local: Option<SocketAddr>,
    pub remote: Option<SocketAddr>,
}

/// AF_INET and AF_INET6, as the socket ABI fixes them.
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

impl Conn {
    fn from_raw(c: &crate::bpf::types::conn) -> Conn {
        let ip = |raw: &[u8; 16]| match c.family {
            AF_INET => Some(IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))),
            AF_INET6 => Some(IpAddr::V6(Ipv6Addr::from(*raw))),
            _ => None,
        };
        Conn {
            fd: (c.fd >= 0).then_some(c.fd),
            local: ip(&c.laddr).map(|ip| SocketAddr::new(ip, c.lport)),
            remote: ip(&c.raddr).map(|ip| SocketAddr::new(ip, c.rport)),
        }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Events handed on: one per call, or per judged handshake.
    pub events: u64,
    pub bytes: u64,
    /// Captured bytes that did not arrive.
    pub missing_bytes: u64,
    /// Records that failed validation.
    pub malformed: u64,
}

struct Partial {
    hdr: event_hdr,
    data: Vec<u8>,
}

struct Attempt {
    first_ts_ns: u64,
    hdr: event_hdr,
}

#[derive(Default)]
pub struct Assembler {
    /// Calls whose chunks are still arriving, by thread: a thread makes one call at a
    /// time, and the BPF side sends a call's chunks in order.
    partial: HashMap<u32, Partial>,
    /// Handshakes that returned "maybe retry", by process and connection object.
    attempts: HashMap<(u32, u64), Attempt>,
    pub counts: Counts,
}

type Emit<'e, E> = &'e mut dyn FnMut(Event) -> Result<(), E>;

impl Assembler {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push<E>(&mut self, raw: &[u8], emit: Emit<'_, E>) -> Result<(), E> {
        let Some((hdr, data)) = decode(raw) else {
            self.counts.malformed += 1;
            return Ok(());
        };
        if hdr.dir == direction::DIR_HANDSHAKE {
            return self.handshake(hdr, emit);
        }
        let lost_rest = data.is_empty() && hdr.offset < hdr.captured;
        if hdr.offset == 0 {
            if let Some(old) = self.partial.remove(&hdr.tid) {
                self.finish_call(old.hdr, Cow::Owned(old.data), emit)?;
            }
            if lost_rest || data.len() as u64 == hdr.captured {
                return self.finish_call(hdr, Cow::Borrowed(data), emit);
            }
            let mut buf = Vec::with_capacity(hdr.captured as usize);
            buf.extend_from_slice(data);
            self.partial.insert(hdr.tid, Partial { hdr, data: buf });
            return Ok(());
        }
        let Some(p) = self.partial.get_mut(&hdr.tid) else {
            // Its call was already reported incomplete; these bytes were counted missing.
            return Ok(());
        };
        if p.hdr.ts_ns != hdr.ts_ns || p.data.len() as u64 != hdr.offset {
            return Ok(());
        }
        p.data.extend_from_slice(data);
        if lost_rest || p.data.len() as u64 == p.hdr.captured {
            let p = self
                .partial
                .remove(&hdr.tid)
                .expect("entry was just looked up");
            self.finish_call(p.hdr, Cow::Owned(p.data), emit)?;
        }
        Ok(())
    }

    fn finish_call<E>(
        &mut self,
        hdr: event_hdr,
        data: Cow<[u8]>,
        emit: Emit<'_, E>,
    ) -> Result<(), E> {
        let missing = hdr.captured - data.len() as u64;
        self.counts.events += 1;
        self.counts.bytes += data.len() as u64;
        self.counts.missing_bytes += missing;
        emit(Event {
            hdr,
            data,
            missing,
            handshake: None,
        })
    }

    fn handshake<E>(&mut self, hdr: event_hdr, emit: Emit<'_, E>) -> Result<(), E> {
        let Some((_, func)) = libs::by_id(hdr.func) else {
            self.counts.malformed += 1;
            return Ok(());
        };
        let Role::Handshake(rule) = func.role else {
            self.counts.malformed += 1;
            return Ok(());
        };
        let key = (hdr.pid, hdr.ctx);
        let verdict = match rule.outcome(hdr.ret) {
            Outcome::Done => Handshake::Done,
            Outcome::Failed => Handshake::Failed,
            Outcome::Retry | Outcome::Unsure => {
                self.attempts
                    .entry(key)
                    .and_modify(|a| a.hdr = hdr)
                    .or_insert(Attempt {
                        first_ts_ns: hdr.ts_ns,
                        hdr,
                    });
                return Ok(());
            }
        };
        // A handshake that took several non-blocking attempts is one handshake: it
        // started at the first attempt.
        if let Some(first) = self.attempts.remove(&key) {
            return self.emit_handshake(started_at(first.first_ts_ns, hdr), verdict, emit);
        }
        self.emit_handshake(hdr, verdict, emit)
    }

    fn emit_handshake<E>(
        &mut self,
        hdr: event_hdr,
        verdict: Handshake,
        emit: Emit<'_, E>,
    ) -> Result<(), E> {
        self.counts.events += 1;
        emit(Event {
            hdr,
            data: Cow::Borrowed(&[]),
            missing: 0,
            handshake: Some(verdict),
        })
    }

    /// Called on every drain of the ring buffer: reports what can no longer complete.
    pub fn tick<E>(&mut self, now_ns: u64, emit: Emit<'_, E>) -> Result<(), E> {
        let overdue = |hdr: &event_hdr, patience| {
            now_ns.saturating_sub(hdr.ts_ns + hdr.latency_ns) >= patience
        };
        let stale: Vec<u32> = self
            .partial
            .iter()
            .filter(|(_, p)| overdue(&p.hdr, CHUNK_PATIENCE_NS))
            .map(|(&tid, _)| tid)
            .collect();
        for tid in stale {
            let p = self.partial.remove(&tid).expect("key was just listed");
            self.finish_call(p.hdr, Cow::Owned(p.data), emit)?;
        }
        self.expire_attempts(|a| overdue(&a.hdr, HANDSHAKE_PATIENCE_NS), emit)
    }

    /// Reports everything still held, at exit.
    pub fn finish<E>(&mut self, emit: Emit<'_, E>) -> Result<(), E> {
        for (_, p) in std::mem::take(&mut self.partial) {
            self.finish_call(p.hdr, Cow::Owned(p.data), emit)?;
        }
        self.expire_attempts(|_| true, emit)
    }

    fn expire_attempts<E>(
        &mut self,
        expired: impl Fn(&Attempt) -> bool,
        emit: Emit<'_, E>,
    ) -> Result<(), E> {
        let keys: Vec<_> = self
            .attempts
            .iter()
            .filter(|(_, a)| expired(a))
            .map(|(&k, _)| k)
            .collect();
        for key in keys {
            let a = self.attempts.remove(&key).expect("key was just listed");
            self.emit_handshake(
                started_at(a.first_ts_ns, a.hdr),
                Handshake::NotCompleted,
                emit,
            )?;
        }
        Ok(())
    }
}

fn started_at(first_ts_ns: u64, mut hdr: event_hdr) -> event_hdr {
    let end = hdr.ts_ns + hdr.latency_ns;
    hdr.ts_ns = first_ts_ns;
    hdr.latency_ns = end - first_ts_ns;
    hdr
}

/// Splits a record into its header and payload, or None when it is inconsistent.
pub fn decode(raw: &[u8]) -> Option<(event_hdr, &[u8])> {
    let mut hdr = event_hdr::default();
    plain::copy_from_bytes(&mut hdr, raw).ok()?;
    let payload = &raw[size_of::<event_hdr>()..];
    let n = hdr.chunk_len as usize;
    let valid = n <= payload.len()
        && hdr.captured <= hdr.len
        && hdr.offset.checked_add(n as u64)? <= hdr.captured
        && libs::by_id(hdr.func).is_some_and(|(_, f)| f.role.direction() == hdr.dir);
    valid.then(|| (hdr, &payload[..n]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::libs::all_funcs;

    fn func_id(name: &str) -> u32 {
        all_funcs().find(|(_, _, f)| f.name == name).unwrap().0
    }

    fn hdr(tid: u32, ts_ns: u64, len: u64, func: &str) -> event_hdr {
        let id = func_id(func);
        let (_, f) = libs::by_id(id).unwrap();
        event_hdr {
            ts_ns,
            len,
            captured: len,
            pid: 1,
            tid,
            func: id,
            dir: f.role.direction(),
            ..Default::default()
        }
    }

    fn record(mut h: event_hdr, offset: u64, data: &[u8]) -> Vec<u8> {
        h.offset = offset;
        h.chunk_len = data.len() as u32;
        // SAFETY: event_hdr is plain data; viewing it as bytes is what the kernel sends.
        let bytes = unsafe { plain::as_bytes(&h) };
        [bytes, data].concat()
    }

    /// Feeds records and collects (tid, data, missing) of every event.
    fn run(asm: &mut Assembler, records: &[Vec<u8>]) -> Vec<(u32, Vec<u8>, u64)> {
        let mut got = Vec::new();
        for r in records {
            asm.push::<()>(r, &mut |ev| {
                got.push((ev.hdr.tid, ev.data.to_vec(), ev.missing));
                Ok(())
            })
            .unwrap();
        }
        got
    }

    #[test]
    fn connection_addresses_decode_for_both_families() {
        let mut h = hdr(1, 1, 1, "SSL_read");
        h.conn.fd = 7;
        h.conn.family = AF_INET;
        h.conn.lport = 5000;
        h.conn.rport = 443;
        h.conn.laddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        h.conn.raddr[..4].copy_from_slice(&[10, 1, 2, 3]);
        let ev = Event {
            hdr: h,
            data: Cow::Borrowed(b""),
            missing: 0,
            handshake: None,
        };
        let c = ev.conn();
        assert_eq!(c.fd, Some(7));
        assert_eq!(c.local.unwrap().to_string(), "127.0.0.1:5000");
        assert_eq!(c.remote.unwrap().to_string(), "10.1.2.3:443");

        h.conn.family = AF_INET6;
        h.conn.raddr = Ipv6Addr::LOCALHOST.octets();
        let ev = Event {
            hdr: h,
            data: Cow::Borrowed(b""),
            missing: 0,
            handshake: None,
        };
        assert_eq!(ev.conn().remote.unwrap().to_string(), "[::1]:443");

        h.conn.family = 0;
        h.conn.fd = -1;
        let ev = Event {
            hdr: h,
            data: Cow::Borrowed(b""),
            missing: 0,
            handshake: None,
        };
        assert_eq!(
            ev.conn(),
            Conn {
                fd: None,
                local: None,
                remote: None
            }
        );
    }

    #[test]
    fn interleaved_chunks_of_many_threads_do_not_mix() {
        let mut asm = Assembler::new();
        let a = hdr(10, 1, 6, "SSL_write");
        let b = hdr(20, 2, 6, "SSL_read");
        let records = [
            record(a, 0, b"aaa"),
            record(b, 0, b"bbb"),
            record(a, 3, b"AAA"),
            record(b, 3, b"BBB"),
        ];
        let got = run(&mut asm, &records);
        assert_eq!(
            got,
            [(10, b"aaaAAA".to_vec(), 0), (20, b"bbbBBB".to_vec(), 0)]
        );
        assert_eq!(asm.counts.events, 2);
    }

    #[test]
    fn a_call_cut_short_is_reported_with_its_missing_bytes() {
        let mut asm = Assembler::new();
        let first = hdr(10, 1, 8, "SSL_write");
        let next = hdr(10, 2, 2, "SSL_write");
        // The second chunk of the first call never arrived; the thread's next call did.
        let got = run(
            &mut asm,
            &[record(first, 0, b"1234"), record(next, 0, b"ok")],
        );
        assert_eq!(got, [(10, b"1234".to_vec(), 4), (10, b"ok".to_vec(), 0)]);
        assert_eq!(asm.counts.missing_bytes, 4);
    }

    #[test]
    fn an_empty_record_ends_a_call_at_once() {
        let mut asm = Assembler::new();
        let h = hdr(10, 1, 8, "SSL_read");
        let got = run(&mut asm, &[record(h, 0, b"1234"), record(h, 4, b"")]);
        assert_eq!(got, [(10, b"1234".to_vec(), 4)]);
        let got = run(&mut asm, &[record(hdr(11, 2, 8, "SSL_read"), 0, b"")]);
        assert_eq!(got, [(11, Vec::new(), 8)]);
    }

    #[test]
    fn stale_partial_calls_are_flushed_after_a_while() {
        let mut asm = Assembler::new();
        run(&mut asm, &[record(hdr(10, 1, 8, "SSL_read"), 0, b"1234")]);
        let mut got = Vec::new();
        for now in [2, 1 + CHUNK_PATIENCE_NS] {
            asm.tick::<()>(now, &mut |ev| {
                got.push((now, ev.missing));
                Ok(())
            })
            .unwrap();
        }
        assert_eq!(got, [(1 + CHUNK_PATIENCE_NS, 4)]);
    }

    #[test]
    fn malformed_records_are_counted_not_trusted() {
        let mut asm = Assembler::new();
        let mut h = hdr(10, 1, 4, "SSL_read");
        // More payload than the record holds.
        h.chunk_len = 100;
        // SAFETY: as in record().
        let bad = [unsafe { plain::as_bytes(&h) }, b"abcd"].concat();
        let got = run(&mut asm, &[bad, b"short".to_vec(), record(h, 4, b"x")]);
        assert!(got.is_empty());
        assert_eq!(asm.counts.malformed, 3);
    }

    #[test]
    fn non_blocking_handshake_is_one_event_from_first_attempt() {
        let mut asm = Assembler::new();
        let mut retry = hdr(10, 100, 0, "SSL_do_handshake");
        retry.ret = -1;
        retry.latency_ns = 5;
        let mut done = hdr(10, 300, 0, "SSL_do_handshake");
        done.ret = 1;
        done.latency_ns = 50;
        let mut got = Vec::new();
        for r in [record(retry, 0, b""), record(done, 0, b"")] {
            asm.push::<()>(&r, &mut |ev| {
                got.push((ev.handshake, ev.hdr.ts_ns, ev.hdr.latency_ns));
                Ok(())
            })
            .unwrap();
        }
        assert_eq!(got, [(Some(Handshake::Done), 100, 250)]);
    }

    #[test]
    fn an_unanswered_handshake_retry_is_reported_not_completed() {
        let mut asm = Assembler::new();
        let mut retry = hdr(10, 100, 0, "SSL_do_handshake");
        retry.ret = -1;
        let mut got = Vec::new();
        asm.push::<()>(&record(retry, 0, b""), &mut |_| panic!("not yet"))
            .unwrap();
        asm.tick::<()>(100 + HANDSHAKE_PATIENCE_NS, &mut |ev| {
            got.push(ev.handshake);
            Ok(())
        })
        .unwrap();
        assert_eq!(got, [Some(Handshake::NotCompleted)]);
    }
}
