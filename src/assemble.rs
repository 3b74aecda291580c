//! Turns decoded records into whole events: reassembles the chunks of one call, and
//! resolves handshakes that need a later call to be judged.

use std::collections::HashMap;
use std::sync::Arc;

use crate::event::{Call, Direction, Event, Handshake, Payload, Record};
use crate::libs::{Outcome, Role};

/// How long an unfinished handshake attempt waits for a success before it is reported.
pub const HANDSHAKE_PATIENCE_NS: u64 = 1_000_000_000;
/// A call's chunks are written right after it returns, but the writing task can be
/// preempted between chunks: only after this long is a call missing chunks given up on
/// (normally the BPF side says so at once with an empty record).
pub const CHUNK_PATIENCE_NS: u64 = 1_000_000_000;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Events handed on: one per call, or per judged handshake.
    pub events: u64,
    /// Payload bytes handed on.
    pub bytes: u64,
    /// Bytes cut by --max-buffer-size in the events handed on.
    pub truncated_bytes: u64,
    /// Captured bytes that did not reach user space, in the events handed on.
    pub undelivered_bytes: u64,
    /// Records that failed validation.
    pub malformed: u64,
}

struct Partial {
    call: Call,
    data: Vec<u8>,
}

struct Attempt {
    first_start_ns: u64,
    call: Call,
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

pub type Emit<'e, E> = &'e mut dyn FnMut(Event) -> Result<(), E>;

impl Assembler {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push<E>(&mut self, record: Option<Record>, emit: Emit<'_, E>) -> Result<(), E> {
        let Some(r) = record else {
            self.counts.malformed += 1;
            return Ok(());
        };
        if r.call.direction == Direction::Handshake {
            return self.handshake(r.call, emit);
        }
        let tid = r.call.tid;
        if r.offset == 0 {
            // Most calls fit one record: spare them the hashing when nothing is held.
            let held = if self.partial.is_empty() {
                None
            } else {
                self.partial.remove(&tid)
            };
            if let Some(old) = held {
                self.finish_call(old.call, Payload::Shared(Arc::new(old.data)), emit)?;
            }
            if r.ends_short() || r.chunk.len() as u64 == r.call.captured {
                return self.finish_call(r.call, Payload::Borrowed(r.chunk), emit);
            }
            let mut data = Vec::with_capacity(r.call.captured as usize);
            data.extend_from_slice(r.chunk);
            self.partial.insert(tid, Partial { call: r.call, data });
            return Ok(());
        }
        let Some(p) = self.partial.get_mut(&tid) else {
            // Its call was already reported incomplete; these bytes were counted there.
            return Ok(());
        };
        if p.call.start_ns != r.call.start_ns || p.data.len() as u64 != r.offset {
            return Ok(());
        }
        p.data.extend_from_slice(r.chunk);
        if r.ends_short() || p.data.len() as u64 == p.call.captured {
            let p = self.partial.remove(&tid).expect("entry was just looked up");
            self.finish_call(p.call, Payload::Shared(Arc::new(p.data)), emit)?;
        }
        Ok(())
    }

    fn finish_call<E>(&mut self, call: Call, data: Payload, emit: Emit<'_, E>) -> Result<(), E> {
        let undelivered = call.captured - data.len() as u64;
        self.counts.events += 1;
        self.counts.bytes += data.len() as u64;
        self.counts.truncated_bytes += call.len - call.captured;
        self.counts.undelivered_bytes += undelivered;
        emit(Event {
            call,
            data,
            undelivered,
            handshake: None,
            cgroup: None,
        })
    }

    fn handshake<E>(&mut self, call: Call, emit: Emit<'_, E>) -> Result<(), E> {
        let Role::Handshake(rule) = call.func.role else {
            self.counts.malformed += 1;
            return Ok(());
        };
        let key = (call.pid, call.tls_conn);
        let verdict = match rule.outcome(call.ret) {
            Outcome::Done => Handshake::Done,
            Outcome::Failed => Handshake::Failed,
            Outcome::Retry | Outcome::Unsure => {
                self.attempts
                    .entry(key)
                    .and_modify(|a| a.call = call)
                    .or_insert(Attempt {
                        first_start_ns: call.start_ns,
                        call,
                    });
                return Ok(());
            }
        };
        // A handshake that took several non-blocking attempts is one handshake: it
        // started at the first attempt.
        let call = match self.attempts.remove(&key) {
            Some(first) => started_at(first.first_start_ns, call),
            None => call,
        };
        self.emit_handshake(call, verdict, emit)
    }

    fn emit_handshake<E>(
        &mut self,
        call: Call,
        verdict: Handshake,
        emit: Emit<'_, E>,
    ) -> Result<(), E> {
        self.counts.events += 1;
        emit(Event {
            call,
            data: Payload::Borrowed(&[]),
            undelivered: 0,
            handshake: Some(verdict),
            cgroup: None,
        })
    }

    /// Called on every drain of the ring buffer: reports what can no longer complete.
    pub fn tick<E>(&mut self, now_ns: u64, emit: Emit<'_, E>) -> Result<(), E> {
        let overdue = |call: &Call, patience| now_ns.saturating_sub(call.end_ns()) >= patience;
        let stale: Vec<u32> = self
            .partial
            .iter()
            .filter(|(_, p)| overdue(&p.call, CHUNK_PATIENCE_NS))
            .map(|(&tid, _)| tid)
            .collect();
        for tid in stale {
            let p = self.partial.remove(&tid).expect("key was just listed");
            self.finish_call(p.call, Payload::Shared(Arc::new(p.data)), emit)?;
        }
        self.expire_attempts(|a| overdue(&a.call, HANDSHAKE_PATIENCE_NS), emit)
    }

    /// Reports everything still held, at exit.
    pub fn finish<E>(&mut self, emit: Emit<'_, E>) -> Result<(), E> {
        for (_, p) in std::mem::take(&mut self.partial) {
            self.finish_call(p.call, Payload::Shared(Arc::new(p.data)), emit)?;
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
            let call = started_at(a.first_start_ns, a.call);
            self.emit_handshake(call, Handshake::NotCompleted, emit)?;
        }
        Ok(())
    }
}

fn started_at(first_start_ns: u64, mut call: Call) -> Call {
    let end = call.end_ns();
    call.start_ns = first_start_ns;
    call.latency_ns = end - first_start_ns;
    call
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::record::decode;
    use crate::kernel::record::testing::Header;

    /// Feeds records and collects (tid, data, undelivered) of every event.
    fn run(asm: &mut Assembler, records: &[Vec<u8>]) -> Vec<(u32, Vec<u8>, u64)> {
        let mut got = Vec::new();
        for r in records {
            asm.push::<()>(decode(r), &mut |ev| {
                got.push((ev.call.tid, ev.data.to_vec(), ev.undelivered));
                Ok(())
            })
            .unwrap();
        }
        got
    }

    #[test]
    fn interleaved_chunks_of_many_threads_do_not_mix() {
        let mut asm = Assembler::new();
        let a = Header::new(10, 1, 6, "SSL_write");
        let b = Header::new(20, 2, 6, "SSL_read");
        let records = [
            a.record(0, b"aaa"),
            b.record(0, b"bbb"),
            a.record(3, b"AAA"),
            b.record(3, b"BBB"),
        ];
        let got = run(&mut asm, &records);
        assert_eq!(
            got,
            [(10, b"aaaAAA".to_vec(), 0), (20, b"bbbBBB".to_vec(), 0)]
        );
        assert_eq!(asm.counts.events, 2);
    }

    #[test]
    fn a_call_cut_short_is_reported_with_its_undelivered_bytes() {
        let mut asm = Assembler::new();
        let first = Header::new(10, 1, 8, "SSL_write");
        let next = Header::new(10, 2, 2, "SSL_write");
        // The second chunk of the first call never arrived; the thread's next call did.
        let got = run(&mut asm, &[first.record(0, b"1234"), next.record(0, b"ok")]);
        assert_eq!(got, [(10, b"1234".to_vec(), 4), (10, b"ok".to_vec(), 0)]);
        assert_eq!(asm.counts.undelivered_bytes, 4);
    }

    #[test]
    fn an_empty_record_ends_a_call_at_once() {
        let mut asm = Assembler::new();
        let h = Header::new(10, 1, 8, "SSL_read");
        let got = run(&mut asm, &[h.record(0, b"1234"), h.record(4, b"")]);
        assert_eq!(got, [(10, b"1234".to_vec(), 4)]);
        let got = run(
            &mut asm,
            &[Header::new(11, 2, 8, "SSL_read").record(0, b"")],
        );
        assert_eq!(got, [(11, Vec::new(), 8)]);
    }

    #[test]
    fn truncated_bytes_are_counted_apart_from_undelivered_ones() {
        let mut asm = Assembler::new();
        let h = Header::new(10, 1, 10, "SSL_read").captured(4);
        run(&mut asm, &[h.record(0, b"1234")]);
        assert_eq!(
            (asm.counts.truncated_bytes, asm.counts.undelivered_bytes),
            (6, 0)
        );
    }

    #[test]
    fn stale_partial_calls_are_flushed_after_a_while() {
        let mut asm = Assembler::new();
        run(
            &mut asm,
            &[Header::new(10, 1, 8, "SSL_read").record(0, b"1234")],
        );
        let mut got = Vec::new();
        for now in [2, 1 + CHUNK_PATIENCE_NS] {
            asm.tick::<()>(now, &mut |ev| {
                got.push((now, ev.undelivered));
                Ok(())
            })
            .unwrap();
        }
        assert_eq!(got, [(1 + CHUNK_PATIENCE_NS, 4)]);
    }

    #[test]
    fn malformed_records_are_counted_not_trusted() {
        let mut asm = Assembler::new();
        let got = run(&mut asm, &[b"short".to_vec()]);
        assert!(got.is_empty());
        assert_eq!(asm.counts.malformed, 1);
    }

    #[test]
    fn non_blocking_handshake_is_one_event_from_first_attempt() {
        let mut asm = Assembler::new();
        let retry = Header::new(10, 100, 0, "SSL_do_handshake")
            .ret(-1)
            .latency(5);
        let done = Header::new(10, 300, 0, "SSL_do_handshake")
            .ret(1)
            .latency(50);
        let mut got = Vec::new();
        for r in [retry.record(0, b""), done.record(0, b"")] {
            asm.push::<()>(decode(&r), &mut |ev| {
                got.push((ev.handshake, ev.call.start_ns, ev.call.latency_ns));
                Ok(())
            })
            .unwrap();
        }
        assert_eq!(got, [(Some(Handshake::Done), 100, 250)]);
    }

    #[test]
    fn an_unanswered_handshake_retry_is_reported_not_completed() {
        let mut asm = Assembler::new();
        let retry = Header::new(10, 100, 0, "SSL_do_handshake").ret(-1);
        let mut got = Vec::new();
        asm.push::<()>(decode(&retry.record(0, b"")), &mut |_| panic!("not yet"))
            .unwrap();
        asm.tick::<()>(100 + HANDSHAKE_PATIENCE_NS, &mut |ev| {
            got.push(ev.handshake);
            Ok(())
        })
        .unwrap();
        assert_eq!(got, [Some(Handshake::NotCompleted)]);
    }
}
