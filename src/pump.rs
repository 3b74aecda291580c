//! The drain loop: ring buffer -> decode -> assemble -> protocols -> outputs, until told
//! to stop, with loss reported as it happens and everything still held flushed at the end.
//! The outputs write on threads of their own (`output`): when one falls behind, a call's
//! payload is dropped here, before the protocol stage, and reported as undelivered just
//! as the ring's losses are.

use std::cell::RefCell;
use std::io;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use libbpf_rs::{ErrorKind, RingBuffer};

use crate::assemble::{Assembler, Counts};
use crate::cgroup::Cgroups;
use crate::clock::monotonic_ns;
use crate::diag;
use crate::event::{Direction, Event, Payload};
use crate::kernel::record::decode;
use crate::output::{self, Outputs};
use crate::proto::{ConnKey, Decoders, Dir, Http};

/// How often the ring buffer is drained when the BPF side does not wake us. Waking
/// user space for every event costs the traced program more than the probes do.
const DRAIN_INTERVAL: Duration = Duration::from_millis(10);
/// Output is flushed and losses are reported at least this often.
const REPORT_INTERVAL: Duration = Duration::from_millis(100);

/// Where events go, shared by the ring-buffer callback and the loop.
pub struct Sink<'o> {
    asm: Assembler,
    stage: Stage<'o>,
    error: Option<io::Error>,
}

/// What an assembled event goes through: the cgroup and protocol stages, then the
/// outputs.
struct Stage<'o> {
    /// The protocol stage; `None` with `--http off`.
    http: Option<Decoders>,
    cgroups: Cgroups,
    out: &'o mut Outputs,
    /// Payload bytes dropped because an output fell behind, or had not written them
    /// when sslsniff ended.
    dropped_bytes: u64,
    /// Events an output had not written when sslsniff ended.
    unwritten_events: u64,
}

impl<'o> Sink<'o> {
    pub fn new(out: &'o mut Outputs, http: bool) -> Self {
        Sink {
            asm: Assembler::new(),
            stage: Stage {
                http: http.then(Decoders::new),
                cgroups: Cgroups::new(),
                out,
                dropped_bytes: 0,
                unwritten_events: 0,
            },
            error: None,
        }
    }

    /// The ring-buffer callback: a non-zero return stops the ring's consume.
    pub fn record(&mut self, raw: &[u8]) -> i32 {
        let stage = &mut self.stage;
        if let Err(e) = self.asm.push(decode(raw), &mut |ev| stage.emit(ev)) {
            self.error = Some(e);
            return -1;
        }
        0
    }

    fn tick(&mut self) {
        let stage = &mut self.stage;
        if let Err(e) = self.asm.tick(monotonic_ns(), &mut |ev| stage.emit(ev)) {
            self.error = Some(e);
        }
    }

    /// Calls were lost without knowing whose: no HTTP/2 direction can trust its state.
    fn lost_unknown_calls(&mut self) {
        if let Some(http) = &mut self.stage.http {
            http.gap_all();
        }
    }

    fn flush(&mut self) {
        if let Err(e) = self.stage.out.flush() {
            self.error = Some(e);
        }
    }

    /// What the assembler handed on, less the payloads dropped because an output fell
    /// behind, and the events it never wrote: those are undelivered.
    pub fn counts(&self) -> Counts {
        let mut counts = self.asm.counts;
        counts.events -= self.stage.unwritten_events;
        counts.bytes -= self.stage.dropped_bytes;
        counts.undelivered_bytes += self.stage.dropped_bytes;
        counts
    }

    /// Of the undelivered bytes, those dropped because an output fell behind.
    pub fn dropped_bytes(&self) -> u64 {
        self.stage.dropped_bytes
    }

    /// Reports what is still held and waits for the outputs to write everything, unless
    /// output already failed; returns the output's error, if any.
    pub fn finish(&mut self) -> Option<io::Error> {
        if self.error.is_none() {
            let stage = &mut self.stage;
            if let Err(e) = self.asm.finish(&mut |ev| stage.emit(ev)) {
                self.error = Some(e);
            }
        }
        // The writer threads end either way; a first error is the one reported.
        match self.stage.out.finish() {
            Ok(unwritten) if unwritten.events > 0 => {
                diag::warn(&format!(
                    "the output was not all written within {} ms at the end (its \
                     reader or disk fell behind): {} events ({} payload bytes) not \
                     written, counted undelivered",
                    output::FINISH_WITHIN.as_millis(),
                    unwritten.events,
                    unwritten.payload
                ));
                self.stage.unwritten_events += unwritten.events;
                self.stage.dropped_bytes += unwritten.payload;
            }
            Ok(_) => {}
            Err(e) => {
                self.error.get_or_insert(e);
            }
        }
        self.error.take()
    }
}

impl Stage<'_> {
    /// The cgroup and protocol stages, then the outputs. A call whose payload an output
    /// cannot take now goes on without it, its bytes undelivered: before the protocol
    /// stage, so that the decoders see the gap as they see the ring's.
    fn emit(&mut self, mut ev: Event) -> io::Result<()> {
        ev.cgroup = self.cgroups.get(ev.call.cgroup_id);
        if !ev.data.is_empty() && !self.out.has_room() {
            let n = ev.data.len() as u64;
            self.dropped_bytes += n;
            ev.undelivered += n;
            ev.data = Payload::Borrowed(&[]);
        }
        let decoded = self
            .http
            .as_mut()
            .and_then(|decoders| decode_http(decoders, &ev));
        self.out.event(&ev, decoded.as_ref())
    }
}

/// The call's HTTP, per TLS connection object (a socket is not always known) and
/// direction. Bytes cut by --max-buffer-size or lost in the ring break the stream: the
/// decoder is told after the bytes it has.
fn decode_http(decoders: &mut Decoders, ev: &Event) -> Option<Http> {
    let dir = match ev.call.direction {
        Direction::Read => Dir::Read,
        Direction::Write => Dir::Write,
        Direction::Handshake => return None,
    };
    let key = ConnKey {
        pid: ev.call.pid,
        conn: ev.call.tls_conn,
    };
    let http = decoders.decode(key, dir, &ev.data);
    if ev.truncated() > 0 || ev.undelivered > 0 {
        decoders.gap(key, dir);
    }
    http
}

/// What the loop checks between drains.
pub struct Watch<'a> {
    /// True when the run should end (a signal, or the traced process exited).
    pub stop: &'a dyn Fn() -> bool,
    /// Undelivered bytes the kernel alone knows of (calls user space never saw).
    pub unannounced_bytes: &'a dyn Fn() -> u64,
    /// Flush after every drain (a terminal is reading) rather than every 100 ms.
    pub interactive: bool,
}

/// Drains the ring into the sink until `watch.stop` says so or output fails. Returns
/// the undelivered bytes already reported, for the final report.
pub fn drain(ring: &RingBuffer, sink: &RefCell<Sink>, watch: &Watch) -> Result<Reported> {
    let mut reported = Reported::default();
    let mut unannounced = 0;
    let mut last_report = Instant::now();
    while !(watch.stop)() {
        let polled = ring.poll(DRAIN_INTERVAL);
        // The BPF side mostly submits without a wake-up: drain what poll did not.
        let _ = ring.consume();
        let mut sink = sink.borrow_mut();
        if sink.error.is_some() {
            // The callback's -1 comes back from poll as a bogus errno; the output's own
            // error is the real one, reported by the caller.
            break;
        }
        if let Err(e) = polled {
            if e.kind() != ErrorKind::Interrupted {
                return Err(e).context("reading the ring buffer");
            }
        }
        sink.tick();
        if watch.interactive || last_report.elapsed() >= REPORT_INTERVAL {
            last_report = Instant::now();
            let now_unannounced = (watch.unannounced_bytes)();
            if now_unannounced > unannounced {
                unannounced = now_unannounced;
                sink.lost_unknown_calls();
            }
            sink.flush();
            reported = report_undelivered(reported, &sink, now_unannounced);
        }
        if sink.error.is_some() {
            break;
        }
    }
    Ok(reported)
}

/// Undelivered bytes already warned about, by cause.
#[derive(Debug, Default, Clone, Copy)]
pub struct Reported {
    /// The ring buffer was full.
    pub ring: u64,
    /// An output fell behind.
    pub dropped: u64,
}

/// Warns about bytes undelivered since the last report; returns the new totals. The
/// warnings, the INCOMPLETE markers and the summary all count the same bytes.
/// `unannounced` is the kernel's count of bytes of calls user space never saw.
pub fn report_undelivered(reported: Reported, sink: &Sink, unannounced: u64) -> Reported {
    let dropped = sink.dropped_bytes();
    let now = Reported {
        ring: sink.counts().undelivered_bytes - dropped + unannounced,
        dropped,
    };
    if now.ring > reported.ring {
        diag::undelivered(now.ring - reported.ring);
    }
    if now.dropped > reported.dropped {
        diag::output_behind(now.dropped - reported.dropped);
    }
    now
}
