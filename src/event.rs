//! Turns ring-buffer records into events: size-checked decoding, reassembly of the
//! chunks of one call, and resolving handshakes that need a later call to be judged.

use std::borrow::Cow;
use std::collections::HashMap;
use std::mem::size_of;

use crate::bpf::types::{direction, event_hdr};
use crate::libs::{self, Outcome, Role};

/// How long an unfinished handshake attempt waits for a success before it is reported.
pub const HANDSHAKE_PATIENCE_NS: u64 = 1_000_000_000;

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
        let bytes: Vec<u8> = self.hdr.comm.iter().map(|&c| c as u8).collect();
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        Cow::Owned(String::from_utf8_lossy(&bytes[..end]).into_owned())
    }

    pub fn func_name(&self) -> &'static str {
        libs::by_id(self.hdr.func).map_or("?", |(_, f)| f.name)
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
    last_tick: u64,
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
    tick: u64,
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
        if hdr.offset == 0 {
            if let Some(old) = self.partial.remove(&hdr.tid) {
                self.finish_call(old.hdr, Cow::Owned(old.data), emit)?;
            }
            if data.len() as u64 == hdr.captured {
                return self.finish_call(hdr, Cow::Borrowed(data), emit);
            }
            let mut buf = Vec::with_capacity(hdr.captured as usize);
            buf.extend_from_slice(data);
            let last_tick = self.tick;
            self.partial.insert(
                hdr.tid,
                Partial {
                    hdr,
                    data: buf,
                    last_tick,
                },
            );
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
        p.last_tick = self.tick;
        if p.data.len() as u64 == p.hdr.captured {
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
    /// A call's chunks are all written within one probe run, so a call that made no
    /// progress over two drains has lost the rest.
    pub fn tick<E>(&mut self, now_ns: u64, emit: Emit<'_, E>) -> Result<(), E> {
        self.tick += 1;
        let stale: Vec<u32> = self
            .partial
            .iter()
            .filter(|(_, p)| self.tick - p.last_tick >= 2)
            .map(|(&tid, _)| tid)
            .collect();
        for tid in stale {
            let p = self.partial.remove(&tid).expect("key was just listed");
            self.finish_call(p.hdr, Cow::Owned(p.data), emit)?;
        }
        self.expire_attempts(
            |a| now_ns.saturating_sub(a.hdr.ts_ns + a.hdr.latency_ns) >= HANDSHAKE_PATIENCE_NS,
            emit,
        )
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
